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
        (
            0x24,
            Trap::DataAbort {
                ipa,
                abort,
                insn_len,
            },
        ) => {
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
            assert_eq!(
                *ipa,
                fault_ipa(hpfar, far, bit(iss, 10)),
                "instruction abort IPA"
            );
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
    let (op0, op2, op1, crn, crm) = (
        field(21, 20),
        field(19, 17),
        field(16, 14),
        field(13, 10),
        field(4, 1),
    );
    let id = SysRegAddr(op0 << 20 | op2 << 17 | op1 << 14 | crn << 10 | crm << 1);
    assert_eq!(access.addr, id, "register id");
    assert_eq!(
        hal_aarch64::exit::sysreg_id(op0, op1, crn, crm, op2),
        id,
        "sysreg_id packs as the ISS"
    );
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
    let v = if bits == 64 {
        loaded
    } else {
        loaded & ((1u64 << bits) - 1)
    };
    let v = if sign_extend && bits < 64 && v >> (bits - 1) & 1 == 1 {
        v | !((1u64 << bits) - 1)
    } else {
        v
    };
    if reg64 { v } else { v & 0xffff_ffff }
}

/// What a guest's HVC/SMC with x0..x6 is, by the SMCCC and PSCI (DEN0028 §2.5 function
/// ids; DEN0022D §5.1 PSCI ids, §5.1.4 SMC32 arguments use only W registers): PSCI
/// functions on the conduit that carries PSCI, other HVCs as the board's hypercalls,
/// other SMCs unsupported.
pub fn expected_call(
    x: &[u64; 7],
    conduit: vcpu_api::Conduit,
    psci_by_smc: bool,
) -> vcpu_api::FirmwareCall {
    use vcpu_api::{Conduit, FirmwareCall as C, Hypercall, Service};
    let psci_here = matches!(
        (conduit, psci_by_smc),
        (Conduit::Hvc, false) | (Conduit::Smc, true)
    );
    let id = x[0];
    // Fast call (bit 31), owner 4 "standard secure service" (bits 29:24), function
    // 0..=0x1f, bits 23:16 zero; bit 30 SMC64.
    let psci = id >> 32 == 0 && id & 0xbfff_ffe0 == 0x8400_0000;
    if psci_here && psci {
        let smc64 = id & 0x4000_0000 != 0;
        let w = |v: u64| if smc64 { v } else { v & 0xffff_ffff };
        let affinity = |v: u64| w(v) & 0xff_00ff_ffff; // Aff3 39:32, Aff2..0 23:0
        let unsupported = C::Unsupported {
            nr: id,
            function: 0,
        };
        let service = |f: u64| match f {
            0x8400_0000 | 0x8400_000a => Some(Service::Base),
            0x8400_0006 => Some(Service::MigrateInfo),
            0x8400_0002 | 0x8400_0003 | 0xc400_0003 | 0x8400_0004 | 0xc400_0004 => {
                Some(Service::CpuPower)
            }
            0x8400_0008 | 0x8400_0009 => Some(Service::SystemPower),
            _ => None,
        };
        return match (id & 0x1f, smc64) {
            (0x00, false) => C::Version,
            (0x02, false) => C::CpuOff,
            (0x03, _) => C::CpuOn {
                target: affinity(x[1]),
                entry: GuestPhysAddr::from_usize(w(x[2]) as usize),
                arg: w(x[3]),
            },
            // AFFINITY_INFO at the lowest affinity level 0 only.
            (0x04, _) if w(x[2]) == 0 => C::CpuStatus {
                target: affinity(x[1]),
            },
            (0x06, false) => C::MigrateInfoType,
            (0x08, false) => C::SystemOff,
            (0x09, false) => C::SystemReset,
            (0x0a, false) => C::Probe {
                service: service(x[1] & 0xffff_ffff),
            },
            _ => unsupported,
        };
    }
    match conduit {
        Conduit::Hvc => C::Hypercall(Hypercall {
            nr: id,
            function: 0,
            args: [x[1], x[2], x[3], x[4], x[5], x[6]],
        }),
        _ => C::Unsupported {
            nr: id,
            function: 0,
        },
    }
}

/// x0 of a reply (DEN0022D §5.2.2 return codes, §5.1.1 version `major << 16 | minor`,
/// §5.7.1 AFFINITY_INFO states, §5.15 PSCI_FEATURES 0 or NOT_SUPPORTED).
pub fn expected_x0(reply: vcpu_api::FirmwareReply) -> Option<u64> {
    use vcpu_api::{CpuState, FirmwareError as E, FirmwareReply as R};
    let code = |c: i64| c as u64;
    Some(match reply {
        R::Value(v) => v,
        R::Error(E::NotSupported) | R::Offered(false) => code(-1),
        R::Error(E::InvalidParameters) => code(-2),
        R::Error(E::AlreadyOn) => code(-4),
        R::Error(E::Failed) => code(-6),
        R::Error(E::InvalidAddress) => code(-9),
        R::Offered(true) => 0,
        R::Version { major, minor } => u64::from(major) << 16 | u64::from(minor),
        R::CpuState(CpuState::On) => 0,
        R::CpuState(CpuState::Off) => 1,
        R::CpuState(CpuState::OnPending) => 2,
        R::Cpuid(_) => return None,
    })
}
