//! The MMIO access of a data abort, decoded from its syndrome (ESR_EL2.ISS: ISV, SAS,
//! SSE, SRT, SF, WnR, S1PTW; see `exit.rs`) and the guest's registers by a pure
//! function, at the exit: the exit carries it ([`vcpu_api::FaultInsn`]).

use vcpu_api::{AccessWidth, FaultInsn, MmioDecodeError, MmioInsn, MmioOp};

use crate::exit::DataAbort;

/// General register `index` as a load/store or MSR/MRS names it: x0..x30, and 31 is
/// XZR, which reads as zero.
pub(crate) fn xreg(regs: &[u64; 31], index: u8) -> u64 {
    regs.get(usize::from(index)).copied().unwrap_or(0)
}

/// What a data abort at `pc` says about its instruction: the access its syndrome
/// describes (a store's value read from `regs` now; `regs[31]` does not exist:
/// register 31 is XZR, which stores 0), or why it cannot be emulated: a fault of the
/// guest's own stage-1 walk, or no syndrome (ISV = 0: load/store pair, writeback).
pub fn fault_insn(abort: &DataAbort, insn_len: u8, regs: &[u64; 31], pc: u64) -> FaultInsn {
    if abort.s1ptw {
        return FaultInsn::Refused(MmioDecodeError::TableWalk { pc });
    }
    let Some(s) = abort.syndrome else {
        return FaultInsn::Refused(MmioDecodeError::NoSyndrome { pc });
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
    FaultInsn::Decoded(MmioInsn {
        width: s.width,
        op,
        len: insn_len,
    })
}
