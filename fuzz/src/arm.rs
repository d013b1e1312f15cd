//! Models of the aarch64 trap decoding, written from the Arm ARM's ESR_EL2 and
//! HPFAR_EL2 descriptions (DDI 0487, D24.2.49 ESR_EL2, D24.2.78 HPFAR_EL2), field by
//! field, independently of `hal_aarch64::exit`.

use addrspace::GuestPhysAddr;
use hal_aarch64::exit::{FaultKind, FaultStatus, SysRegAccess, Trap};
use vcpu_api::{AccessWidth, SysRegAddr};

fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & ((1u64 << (hi - lo + 1)) - 1)
}

fn bit(v: u64, n: u32) -> bool {
    v >> n & 1 == 1
}

/// DFSC/IFSC: the kind and level, from the ISS encoding table.
pub fn fault_status(code: u64) -> (FaultKind, Option<u8>) {
    let level = Some((code & 3) as u8);
    match code {
        0x00..=0x03 => (FaultKind::AddressSize, level),
        0x04..=0x07 => (FaultKind::Translation, level),
        0x08..=0x0b => (FaultKind::AccessFlag, level),
        0x0c..=0x0f => (FaultKind::Permission, level),
        0x10 => (FaultKind::SyncExternal, None),
        0x14..=0x17 => (FaultKind::SyncExternalOnWalk, level),
        0x21 => (FaultKind::Alignment, None),
        0x30 => (FaultKind::TlbConflict, None),
        _ => (FaultKind::Other, None),
    }
}

fn check_status(s: &FaultStatus, iss: u64) {
    let code = bits(iss, 5, 0);
    assert_eq!(u64::from(s.code), code, "status code");
    assert_eq!((s.kind, s.level), fault_status(code), "status of {code:#x}");
}

/// The IPA of a stage-2 abort: HPFAR_EL2.FIPA (bits 43:4 = IPA 51:12), the page
/// offset from FAR_EL2 unless FnV.
pub fn fault_ipa(hpfar: u64, far: u64, fnv: bool) -> GuestPhysAddr {
    let offset = if fnv { 0 } else { far & 0xfff };
    GuestPhysAddr::from_usize((bits(hpfar, 43, 4) << 12 | offset) as usize)
}

/// Checks `decode_trap(esr, far, hpfar)` against the ESR_EL2 description.
pub fn check_trap(trap: &Trap, esr: u64, far: u64, hpfar: u64) {
    let ec = bits(esr, 31, 26);
    let iss = bits(esr, 24, 0);
    let len = if bit(esr, 25) { 4 } else { 2 };
    match (ec, trap) {
        (0x24, Trap::DataAbort { ipa, abort, insn_len }) => {
            assert_eq!(*insn_len, len);
            assert_eq!(*ipa, fault_ipa(hpfar, far, bit(iss, 10)), "data abort IPA");
            assert_eq!(abort.far_not_valid, bit(iss, 10));
            assert_eq!(abort.external, bit(iss, 9));
            assert_eq!(abort.cache_maintenance, bit(iss, 8));
            assert_eq!(abort.s1ptw, bit(iss, 7));
            assert_eq!(abort.write, bit(iss, 6));
            check_status(&abort.status, iss);
            match abort.syndrome {
                None => assert!(!bit(iss, 24), "ISV set but no syndrome"),
                Some(s) => {
                    assert!(bit(iss, 24), "a syndrome without ISV");
                    assert_eq!(s.width.bytes(), 1 << bits(iss, 23, 22), "SAS");
                    assert_eq!(s.sign_extend, bit(iss, 21), "SSE");
                    assert_eq!(u64::from(s.reg), bits(iss, 20, 16), "SRT");
                    assert_eq!(s.reg64, bit(iss, 15), "SF");
                    assert_eq!(s.acquire_release, bit(iss, 14), "AR");
                }
            }
        }
        (0x20, Trap::InstrAbort { ipa, abort }) => {
            assert_eq!(*ipa, fault_ipa(hpfar, far, bit(iss, 10)), "instruction abort IPA");
            assert_eq!(abort.far_not_valid, bit(iss, 10));
            assert_eq!(abort.s1ptw, bit(iss, 7));
            check_status(&abort.status, iss);
        }
        (0x16, Trap::Hvc { imm }) | (0x17, Trap::Smc { imm }) => {
            assert_eq!(u64::from(*imm), bits(iss, 15, 0));
        }
        // TI, bits 1:0: WFI, WFE, WFIT, WFET.
        (0x01, Trap::Wfi) => assert!(!bit(iss, 0)),
        (0x01, Trap::Wfe) => assert!(bit(iss, 0)),
        (0x18, Trap::SysReg(access)) => check_sysreg(access, iss),
        (0x01 | 0x16 | 0x17 | 0x18 | 0x20 | 0x24, other) => {
            panic!("EC {ec:#x} decoded as {other:?}")
        }
        (_, Trap::Other(e)) => assert_eq!(e.0, esr, "the raw syndrome is kept"),
        (_, other) => panic!("EC {ec:#x} decoded as {other:?}"),
    }
}

/// A trapped MSR/MRS: Op0 21:20, Op2 19:17, Op1 16:14, CRn 13:10, Rt 9:5, CRm 4:1,
/// Direction 0.
fn check_sysreg(access: &SysRegAccess, iss: u64) {
    let field = |hi, lo| bits(iss, hi, lo) as u32;
    let (op0, op2, op1, crn, crm) = (field(21, 20), field(19, 17), field(16, 14), field(13, 10), field(4, 1));
    let id = SysRegAddr(op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | crm << 1);
    assert_eq!(access.addr, id, "register id");
    assert_eq!(hal_aarch64::exit::sysreg_id(op0, op1, crn, crm, op2), id, "sysreg_id packs as the ISS");
    assert_eq!(u64::from(access.reg), bits(iss, 9, 5), "Rt");
    assert_eq!(access.read, bit(iss, 0), "direction");
}

/// The value a store through register `reg` writes (31 is XZR), cut to `width`.
pub fn store_value(regs: &[u64; 31], reg: u8, width: AccessWidth) -> u64 {
    let v = if reg == 31 { 0 } else { regs[usize::from(reg)] };
    if width == AccessWidth::Qword {
        v
    } else {
        v & ((1u64 << width.bits()) - 1)
    }
}

/// The destination register after a load of `loaded` (the device's value, whose bytes
/// beyond `width` are ignored): LDR/LDRB/LDRH zero-extend, LDRS* sign-extend, to 64
/// bits for an `Xt` and to 32 bits for a `Wt`, whose upper half is cleared.
pub fn load_result(loaded: u64, width: AccessWidth, sign_extend: bool, reg64: bool) -> u64 {
    let bits = width.bits();
    let v = if bits == 64 { loaded } else { loaded & ((1u64 << bits) - 1) };
    let v = if sign_extend && bits < 64 && v >> (bits - 1) & 1 == 1 {
        v | !((1u64 << bits) - 1)
    } else {
        v
    };
    if reg64 { v } else { v & 0xffff_ffff }
}
