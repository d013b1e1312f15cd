//! The MMIO access of a data abort, decoded from its syndrome (ESR_EL2.ISS: ISV, SAS,
//! SSE, SRT, SF, WnR; see `exit.rs`) and the guest's registers by a pure function.

use addrspace::GuestPhysAddr;
use vcpu_api::{AccessWidth, MmioAccess, MmioDecodeError, MmioOp};

use crate::exit::DataAbort;

/// General register `index` as a load/store or MSR/MRS names it: x0..x30, and 31 is
/// XZR, which reads as zero.
pub(crate) fn xreg(regs: &[u64; 31], index: u8) -> u64 {
    regs.get(usize::from(index)).copied().unwrap_or(0)
}

/// The MMIO access a data abort describes, from its syndrome and the registers
/// (`regs[31]` does not exist: register 31 is XZR, which stores 0). A pure function.
pub fn mmio_access(
    ipa: GuestPhysAddr,
    abort: &DataAbort,
    insn_len: u8,
    regs: &[u64; 31],
    pc: u64,
) -> Result<MmioAccess, MmioDecodeError> {
    let Some(s) = abort.syndrome else {
        return Err(MmioDecodeError::NoSyndrome { pc });
    };
    let op = if abort.write {
        MmioOp::Write {
            value: s.width.truncate(xreg(regs, s.reg)),
        }
    } else {
        MmioOp::Read {
            reg: usize::from(s.reg),
            sign_extend: s.sign_extend,
            reg_width: if s.reg64 {
                AccessWidth::Qword
            } else {
                AccessWidth::Dword
            },
        }
    };
    Ok(MmioAccess {
        gpa: ipa,
        width: s.width,
        op,
        insn_len,
    })
}
