//! The exception syndrome: ESR_EL2 and the registers that come with a trap from EL1
//! (FAR_EL2, HPFAR_EL2), decoded into plain data by pure functions.
//!
//! Arm ARM (DDI 0487K.a) D24.2.43 "ESR_EL2": EC in bits 31:26, IL in bit 25, ISS in
//! bits 24:0, and the ISS encodings per exception class: "ISS encoding for an
//! exception from a Data Abort" (ISV, SAS, SSE, SRT, SF, AR, FnV, EA, CM, S1PTW, WnR,
//! DFSC), "... from an Instruction Abort", "... from HVC or SVC", "... from SMC",
//! "... from a WF* instruction", "... from MSR, MRS or System instruction execution
//! in AArch64 state"; D24.2.68 "HPFAR_EL2" (FIPA).

use core::fmt;

use addrspace::GuestPhysAddr;
use vcpu_api::{AccessWidth, SysRegAddr, gpa_of};

/// The raw value of ESR_EL2.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Esr(pub u64);

impl Esr {
    /// EC, bits 31:26.
    #[inline]
    pub const fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }

    /// IL, bit 25: the trapped instruction is 32 bits long (always set for
    /// exceptions from AArch64 state that have an instruction).
    #[inline]
    pub const fn il(self) -> bool {
        self.0 & (1 << 25) != 0
    }

    /// ISS, bits 24:0.
    #[inline]
    pub const fn iss(self) -> u32 {
        (self.0 & 0x01ff_ffff) as u32
    }

    /// Length in bytes of the instruction that trapped (2 for a 16-bit T32
    /// instruction, else 4).
    #[inline]
    pub const fn insn_len(self) -> u8 {
        if self.il() { 4 } else { 2 }
    }

    /// The exception class.
    #[inline]
    pub const fn class(self) -> ExceptionClass {
        ExceptionClass::from_ec(self.ec())
    }
}

impl fmt::Debug for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ESR_EL2 {:#x} (EC {:#x} {:?}, ISS {:#x})",
            self.0,
            self.ec(),
            self.class(),
            self.iss()
        )
    }
}

/// The exception classes a hypervisor meets (ESR_EL2.EC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExceptionClass {
    /// 0x00: unknown reason (an undefined instruction).
    Unknown,
    /// 0x01: trapped WFI, WFE, WFIT or WFET.
    Wfx,
    /// 0x07: access to SVE, Advanced SIMD or floating point trapped by CPTR_EL2.
    FpAccess,
    /// 0x0e: illegal execution state.
    IllegalState,
    /// 0x15: SVC in AArch64 state.
    Svc64,
    /// 0x16: HVC in AArch64 state.
    Hvc64,
    /// 0x17: SMC in AArch64 state (trapped by HCR_EL2.TSC).
    Smc64,
    /// 0x18: trapped MSR, MRS or System instruction in AArch64 state.
    SysReg64,
    /// 0x20: instruction abort from a lower exception level.
    InstrAbortLower,
    /// 0x21: instruction abort taken without a change of exception level.
    InstrAbortSame,
    /// 0x22: PC alignment fault.
    PcAlignment,
    /// 0x24: data abort from a lower exception level.
    DataAbortLower,
    /// 0x25: data abort taken without a change of exception level.
    DataAbortSame,
    /// 0x26: SP alignment fault.
    SpAlignment,
    /// 0x2f: SError interrupt.
    SError,
    /// 0x3c: BRK in AArch64 state.
    Brk64,
    /// Any other class (AArch32 traps, debug, pointer authentication, ...).
    Other(u8),
}

impl ExceptionClass {
    /// The class of `ec`.
    pub const fn from_ec(ec: u8) -> Self {
        match ec {
            0x00 => Self::Unknown,
            0x01 => Self::Wfx,
            0x07 => Self::FpAccess,
            0x0e => Self::IllegalState,
            0x15 => Self::Svc64,
            0x16 => Self::Hvc64,
            0x17 => Self::Smc64,
            0x18 => Self::SysReg64,
            0x20 => Self::InstrAbortLower,
            0x21 => Self::InstrAbortSame,
            0x22 => Self::PcAlignment,
            0x24 => Self::DataAbortLower,
            0x25 => Self::DataAbortSame,
            0x26 => Self::SpAlignment,
            0x2f => Self::SError,
            0x3c => Self::Brk64,
            other => Self::Other(other),
        }
    }
}

/// What kind of fault a DFSC/IFSC reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Address size fault (an output or input address out of range).
    AddressSize,
    /// Translation fault: no valid descriptor.
    Translation,
    /// Access flag fault: the descriptor's AF is clear.
    AccessFlag,
    /// Permission fault: the descriptor does not allow the access.
    Permission,
    /// Synchronous external abort, not on a table walk.
    SyncExternal,
    /// Synchronous external abort on a table walk.
    SyncExternalOnWalk,
    /// Alignment fault.
    Alignment,
    /// TLB conflict abort.
    TlbConflict,
    /// Any other status code (parity/ECC, tag check, unsupported atomic, ...).
    Other,
}

/// A decoded fault status code (DFSC, ISS bits 5:0, or IFSC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultStatus {
    /// The raw 6-bit code.
    pub code: u8,
    /// Its kind.
    pub kind: FaultKind,
    /// The translation level the fault happened at, for the kinds that have one.
    pub level: Option<u8>,
}

impl FaultStatus {
    /// Decodes a 6-bit DFSC/IFSC (Arm ARM, ESR_EL2 ISS "DFSC" field).
    pub const fn decode(code: u8) -> Self {
        let code = code & 0x3f;
        let level = code & 0b11;
        let (kind, level) = match code {
            0b00_0000..=0b00_0011 => (FaultKind::AddressSize, Some(level)),
            0b00_0100..=0b00_0111 => (FaultKind::Translation, Some(level)),
            0b00_1000..=0b00_1011 => (FaultKind::AccessFlag, Some(level)),
            0b00_1100..=0b00_1111 => (FaultKind::Permission, Some(level)),
            0b01_0000 => (FaultKind::SyncExternal, None),
            0b01_0100..=0b01_0111 => (FaultKind::SyncExternalOnWalk, Some(level)),
            0b10_0001 => (FaultKind::Alignment, None),
            0b11_0000 => (FaultKind::TlbConflict, None),
            _ => (FaultKind::Other, None),
        };
        Self { code, kind, level }
    }
}

/// The access description a data abort carries when ESR_EL2.ISS.ISV = 1: enough to
/// emulate a single-register load or store without fetching the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccessSyndrome {
    /// SAS, bits 23:22: the access size.
    pub width: AccessWidth,
    /// SSE, bit 21: the load sign-extends.
    pub sign_extend: bool,
    /// SRT, bits 20:16: the transfer register (31 means XZR/WZR).
    pub reg: u8,
    /// SF, bit 15: the register is 64 bits wide (`Xt`) rather than 32 (`Wt`).
    pub reg64: bool,
    /// AR, bit 14: acquire/release semantics.
    pub acquire_release: bool,
}

/// A data abort's ISS (ESR_EL2 EC 0x24/0x25).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DataAbort {
    /// The instruction syndrome, when ISV = 1 (bit 24).
    pub syndrome: Option<AccessSyndrome>,
    /// FnV, bit 10: FAR_EL2 is not valid.
    pub far_not_valid: bool,
    /// EA, bit 9: external abort type.
    pub external: bool,
    /// CM, bit 8: the fault came from a cache maintenance or address translation
    /// instruction.
    pub cache_maintenance: bool,
    /// S1PTW, bit 7: the stage-2 fault happened on a stage-1 table walk.
    pub s1ptw: bool,
    /// WnR, bit 6: the access was a write.
    pub write: bool,
    /// DFSC, bits 5:0.
    pub status: FaultStatus,
}

impl DataAbort {
    /// Decodes the ISS of a data abort.
    pub const fn decode(iss: u32) -> Self {
        let isv = iss & (1 << 24) != 0;
        let syndrome = if isv {
            let width = match (iss >> 22) & 0b11 {
                0 => AccessWidth::Byte,
                1 => AccessWidth::Word,
                2 => AccessWidth::Dword,
                _ => AccessWidth::Qword,
            };
            Some(AccessSyndrome {
                width,
                sign_extend: iss & (1 << 21) != 0,
                reg: ((iss >> 16) & 0x1f) as u8,
                reg64: iss & (1 << 15) != 0,
                acquire_release: iss & (1 << 14) != 0,
            })
        } else {
            None
        };
        Self {
            syndrome,
            far_not_valid: iss & (1 << 10) != 0,
            external: iss & (1 << 9) != 0,
            cache_maintenance: iss & (1 << 8) != 0,
            s1ptw: iss & (1 << 7) != 0,
            write: iss & (1 << 6) != 0,
            status: FaultStatus::decode((iss & 0x3f) as u8),
        }
    }
}

/// An instruction abort's ISS (ESR_EL2 EC 0x20/0x21).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstrAbort {
    /// FnV, bit 10: FAR_EL2 is not valid.
    pub far_not_valid: bool,
    /// S1PTW, bit 7: the stage-2 fault happened on a stage-1 table walk.
    pub s1ptw: bool,
    /// IFSC, bits 5:0.
    pub status: FaultStatus,
}

impl InstrAbort {
    /// Decodes the ISS of an instruction abort.
    pub const fn decode(iss: u32) -> Self {
        Self {
            far_not_valid: iss & (1 << 10) != 0,
            s1ptw: iss & (1 << 7) != 0,
            status: FaultStatus::decode((iss & 0x3f) as u8),
        }
    }
}

/// The bits of a trapped MSR/MRS ISS that name the register (Op0 21:20, Op2 19:17,
/// Op1 16:14, CRn 13:10, CRm 4:1), without Rt and Direction.
pub const SYSREG_ID_MASK: u32 = 0x003f_fc1e;

/// The [`SysRegAddr`] of system register `S<op0>_<op1>_C<crn>_C<crm>_<op2>`, as found
/// in a trapped access's ISS.
pub const fn sysreg_id(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> SysRegAddr {
    SysRegAddr::arm(op0, op1, crn, crm, op2)
}

/// A trapped MSR/MRS (ESR_EL2 EC 0x18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysRegAccess {
    /// The register (ISS with Rt and Direction masked off).
    pub addr: SysRegAddr,
    /// Rt, bits 9:5: the general register read or written (31 = XZR).
    pub reg: u8,
    /// Direction, bit 0: `true` for a read (MRS).
    pub read: bool,
}

impl SysRegAccess {
    /// Decodes the ISS of a trapped system-register access.
    pub const fn decode(iss: u32) -> Self {
        Self {
            addr: SysRegAddr(iss & SYSREG_ID_MASK),
            reg: ((iss >> 5) & 0x1f) as u8,
            read: iss & 1 != 0,
        }
    }
}

/// The intermediate physical address of a stage-2 fault: the page from
/// HPFAR_EL2.FIPA (bits 43:4 hold IPA bits 51:12) and the offset in the page from
/// FAR_EL2 (whose upper bits are the guest's virtual address, not the IPA). When FAR
/// is not valid (`far_valid = false`) the offset is 0.
pub const fn fault_ipa(hpfar: u64, far: u64, far_valid: bool) -> GuestPhysAddr {
    let page = ((hpfar >> 4) & ((1 << 40) - 1)) << 12;
    let offset = if far_valid { far & 0xfff } else { 0 };
    gpa_of(page | offset)
}

/// What a trap from EL1 was, decoded from ESR_EL2, FAR_EL2 and HPFAR_EL2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// A stage-2 data abort at `ipa`.
    DataAbort {
        /// The faulting IPA (page from HPFAR_EL2, offset from FAR_EL2).
        ipa: GuestPhysAddr,
        /// The decoded ISS.
        abort: DataAbort,
        /// Length of the faulting instruction.
        insn_len: u8,
    },
    /// A stage-2 instruction abort at `ipa`.
    InstrAbort {
        /// The faulting IPA.
        ipa: GuestPhysAddr,
        /// The decoded ISS.
        abort: InstrAbort,
    },
    /// `HVC #imm` (ELR_EL2 already points past it).
    Hvc {
        /// The immediate.
        imm: u16,
    },
    /// `SMC #imm` trapped by HCR_EL2.TSC (ELR_EL2 points at it).
    Smc {
        /// The immediate.
        imm: u16,
    },
    /// A trapped WFI (or WFIT) (ELR_EL2 points at it).
    Wfi,
    /// A trapped WFE (or WFET) (ELR_EL2 points at it).
    Wfe,
    /// A trapped MSR/MRS (ELR_EL2 points at it).
    SysReg(SysRegAccess),
    /// Anything else: the raw syndrome, for the error report.
    Other(Esr),
}

/// Decodes a synchronous trap from EL1 (a pure function of the three registers).
pub const fn decode_trap(esr: u64, far: u64, hpfar: u64) -> Trap {
    let esr = Esr(esr);
    let iss = esr.iss();
    match esr.class() {
        ExceptionClass::DataAbortLower => {
            let abort = DataAbort::decode(iss);
            Trap::DataAbort {
                ipa: fault_ipa(hpfar, far, !abort.far_not_valid),
                abort,
                insn_len: esr.insn_len(),
            }
        }
        ExceptionClass::InstrAbortLower => {
            let abort = InstrAbort::decode(iss);
            Trap::InstrAbort {
                ipa: fault_ipa(hpfar, far, !abort.far_not_valid),
                abort,
            }
        }
        ExceptionClass::Hvc64 => Trap::Hvc {
            imm: (iss & 0xffff) as u16,
        },
        ExceptionClass::Smc64 => Trap::Smc {
            imm: (iss & 0xffff) as u16,
        },
        // ISS.TI, bits 1:0: 0b00 WFI, 0b01 WFE, 0b10 WFIT, 0b11 WFET.
        ExceptionClass::Wfx => {
            if iss & 1 == 0 {
                Trap::Wfi
            } else {
                Trap::Wfe
            }
        }
        ExceptionClass::SysReg64 => Trap::SysReg(SysRegAccess::decode(iss)),
        _ => Trap::Other(esr),
    }
}

/// ESR_EL2, FAR_EL2 and HPFAR_EL2 of the last trap (bare-metal aarch64 only).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) fn trap_registers() -> (u64, u64, u64) {
    use crate::regs::mrs;
    (mrs!("esr_el2"), mrs!("far_el2"), mrs!("hpfar_el2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ldr x3, [x1]` at EL1 to an IPA without a stage-2 mapping, as QEMU 7.2 reported
    /// it in the reference probe: ESR_EL2 0x93c38007, FAR_EL2 0x80001000, HPFAR_EL2
    /// 0x800010. EC 0x24, IL, ISV, SAS 0b11 (8 bytes), SRT 3, SF, read, DFSC 0b000111
    /// (translation fault, level 3).
    #[test]
    fn data_abort_ldr_x3_translation_l3() {
        let trap = decode_trap(0x93c3_8007, 0x8000_1000, 0x80_0010);
        let Trap::DataAbort {
            ipa,
            abort,
            insn_len,
        } = trap
        else {
            panic!("{trap:?}");
        };
        assert_eq!(ipa, GuestPhysAddr::from_usize(0x8000_1000));
        assert_eq!(insn_len, 4);
        assert!(!abort.write && !abort.s1ptw && !abort.far_not_valid);
        assert_eq!(
            abort.syndrome,
            Some(AccessSyndrome {
                width: AccessWidth::Qword,
                sign_extend: false,
                reg: 3,
                reg64: true,
                acquire_release: false,
            })
        );
        assert_eq!(
            abort.status,
            FaultStatus {
                code: 7,
                kind: FaultKind::Translation,
                level: Some(3)
            }
        );
    }

    /// Syndromes QEMU 7.2 (`-cpu max`) reported for the test guest's accesses under
    /// this hypervisor: (ESR_EL2, FAR_EL2, HPFAR_EL2) -> IPA, width, sign-extend,
    /// register, 64-bit register, write, fault kind and level.
    #[test]
    fn syndromes_captured_from_qemu() {
        use AccessWidth::*;
        use FaultKind::*;
        #[rustfmt::skip]
        type Case = (u64, u64, u64, u64, AccessWidth, bool, u8, bool, bool, FaultKind, u8);
        #[rustfmt::skip]
        let cases: [Case; 16] = [
            // (ESR_EL2, FAR_EL2, HPFAR_EL2, IPA, width, SSE, SRT, SF, WnR, kind, level)
            // ldr x9, first touch of the lazy region (no table below level 2)
            (0x93c9_8006, 0x5000_0000, 0x50_0000, 0x5000_0000, Qword, false, 9, true, false, Translation, 2),
            // ldr x9 at the end of the lazy region, level-3 table present
            (0x93c9_8007, 0x501f_fff8, 0x501_ff0, 0x501f_fff8, Qword, false, 9, true, false, Translation, 3),
            // str x9 to the read-only region: permission fault
            (0x93c9_804f, 0x5100_0008, 0x51_0000, 0x5100_0008, Qword, false, 9, true, true, Permission, 3),
            // strb/ldrb, strh/ldrh, str/ldr w, str/ldr x on the test device's SCRATCH
            (0x9309_0046, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Byte, false, 9, false, true, Translation, 2),
            (0x9309_0006, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Byte, false, 9, false, false, Translation, 2),
            (0x9349_0046, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Word, false, 9, false, true, Translation, 2),
            (0x934a_0006, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Word, false, 10, false, false, Translation, 2),
            (0x9389_0046, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Dword, false, 9, false, true, Translation, 2),
            (0x938a_0006, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Dword, false, 10, false, false, Translation, 2),
            (0x93c9_8046, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Qword, false, 9, true, true, Translation, 2),
            (0x93ca_8006, 0x0b00_0008, 0xb_0000, 0x0b00_0008, Qword, false, 10, true, false, Translation, 2),
            // ldrsb x9, ldrsh x9, ldrsw x9 on NEGATIVE_REG
            (0x9329_8006, 0x0b00_0018, 0xb_0000, 0x0b00_0018, Byte, true, 9, true, false, Translation, 2),
            (0x9369_8006, 0x0b00_0018, 0xb_0000, 0x0b00_0018, Word, true, 9, true, false, Translation, 2),
            (0x93a9_8006, 0x0b00_0018, 0xb_0000, 0x0b00_0018, Dword, true, 9, true, false, Translation, 2),
            // ldr w9 of COUNTER
            (0x9389_0006, 0x0b00_0010, 0xb_0000, 0x0b00_0010, Dword, false, 9, false, false, Translation, 2),
            // the probe's ldr x3 (reference/qemu-probe output)
            (0x93c3_8007, 0x8000_1000, 0x80_0010, 0x8000_1000, Qword, false, 3, true, false, Translation, 3),
        ];
        for (esr, far, hpfar, ipa, width, sse, reg, reg64, write, kind, level) in cases {
            let Trap::DataAbort {
                ipa: got,
                abort,
                insn_len,
            } = decode_trap(esr, far, hpfar)
            else {
                panic!("{esr:#x} is not a data abort");
            };
            assert_eq!(got, gpa_of(ipa), "{esr:#x}");
            assert_eq!(insn_len, 4);
            assert_eq!(abort.write, write, "{esr:#x}");
            assert_eq!(
                (abort.status.kind, abort.status.level),
                (kind, Some(level)),
                "{esr:#x}"
            );
            let s = abort.syndrome.expect("ISV");
            assert_eq!(
                (s.width, s.sign_extend, s.reg, s.reg64),
                (width, sse, reg, reg64),
                "{esr:#x}"
            );
        }
        // hvc #0 and smc #0 as trapped (the SMC by HCR_EL2.TSC).
        assert_eq!(decode_trap(0x5a00_0000, 0, 0), Trap::Hvc { imm: 0 });
        assert_eq!(
            decode_trap(0x5e00_0000, 0x40f0_0000, 0x40_f000),
            Trap::Smc { imm: 0 }
        );
    }

    /// The page offset comes from FAR_EL2 (the guest VA), the page from HPFAR_EL2:
    /// with the guest's MMU on the two differ above bit 11.
    #[test]
    fn ipa_combines_hpfar_page_and_far_offset() {
        assert_eq!(
            fault_ipa(0xb_0000, 0xffff_0000_1234_5018, true),
            GuestPhysAddr::from_usize(0x0b00_0018)
        );
        // A 48-bit IPA: HPFAR_EL2.FIPA holds bits 47:12 in bits 39:4.
        assert_eq!(
            fault_ipa(0x0000_00ab_cdef_0120, 0x0, true),
            GuestPhysAddr::from_usize(0xabcd_ef01_2000)
        );
        // FnV: no page offset.
        assert_eq!(
            fault_ipa(0x50_0000, 0x777, false),
            GuestPhysAddr::from_usize(0x5000_0000)
        );
        // Bits above FIPA (bit 63 NS, RES0 44..62) do not leak into the IPA.
        assert_eq!(
            fault_ipa(1 << 63 | 0x10, 0, true),
            GuestPhysAddr::from_usize(0x1000)
        );
    }

    /// Every DFSC the hypervisor acts on, with its level (Arm ARM, ESR_EL2 "DFSC").
    #[test]
    fn fault_status_codes() {
        let cases = [
            (0b00_0000, FaultKind::AddressSize, Some(0)),
            (0b00_0101, FaultKind::Translation, Some(1)),
            (0b00_1010, FaultKind::AccessFlag, Some(2)),
            (0b00_1111, FaultKind::Permission, Some(3)),
            (0b01_0000, FaultKind::SyncExternal, None),
            (0b01_0101, FaultKind::SyncExternalOnWalk, Some(1)),
            (0b10_0001, FaultKind::Alignment, None),
            (0b11_0000, FaultKind::TlbConflict, None),
            (0b11_0001, FaultKind::Other, None),
        ];
        for (code, kind, level) in cases {
            let s = FaultStatus::decode(code);
            assert_eq!((s.kind, s.level), (kind, level), "DFSC {code:#08b}");
        }
    }

    /// Each SAS encoding with SSE and a 32-bit register: `ldrsh w5, [x0]` to MMIO
    /// gives ISS ISV | SAS 0b01 | SSE | SRT 5, SF = 0.
    #[test]
    fn syndrome_fields() {
        let iss = (1 << 24) | (0b01 << 22) | (1 << 21) | (5 << 16) | 0b00_0111;
        let a = DataAbort::decode(iss);
        let s = a.syndrome.expect("ISV set");
        assert_eq!(s.width, AccessWidth::Word);
        assert!(s.sign_extend && !s.reg64);
        assert_eq!(s.reg, 5);
        for (sas, width) in [
            (0, AccessWidth::Byte),
            (1, AccessWidth::Word),
            (2, AccessWidth::Dword),
            (3, AccessWidth::Qword),
        ] {
            let s = DataAbort::decode((1 << 24) | (sas << 22)).syndrome.unwrap();
            assert_eq!(s.width, width);
        }
        // Store-release: AR and WnR.
        let a = DataAbort::decode((1 << 24) | (1 << 14) | (1 << 6) | 0b00_1111);
        assert!(a.write && a.syndrome.unwrap().acquire_release);
    }

    /// A load pair (`ldp x0, x1, [x2]`) gives no syndrome: ISV = 0.
    #[test]
    fn no_syndrome_without_isv() {
        let a = DataAbort::decode(0b00_0111);
        assert_eq!(a.syndrome, None);
        // S1PTW: the guest's own table walk hit a stage-2 hole (level 1 translation).
        let a = DataAbort::decode((1 << 7) | 0b00_0101);
        assert!(a.s1ptw);
        assert_eq!(a.status.level, Some(1));
    }

    /// HVC #0 from AArch64: ESR 0x5a000000 (EC 0x16, IL); `hvc #0x42` keeps its
    /// immediate in ISS 15:0. SMC #0 trapped by TSC: 0x5e000000.
    #[test]
    fn hvc_and_smc() {
        assert_eq!(decode_trap(0x5a00_0000, 0, 0), Trap::Hvc { imm: 0 });
        assert_eq!(decode_trap(0x5a00_0042, 0, 0), Trap::Hvc { imm: 0x42 });
        assert_eq!(decode_trap(0x5e00_0000, 0, 0), Trap::Smc { imm: 0 });
    }

    /// Trapped WFI/WFE (HCR_EL2.TWI/TWE) as QEMU encodes them: EC 0x01, IL, CV = 1,
    /// COND = 0b1110, TI in bits 1:0.
    #[test]
    fn wfi_and_wfe() {
        assert_eq!(decode_trap(0x07e0_0000, 0, 0), Trap::Wfi);
        assert_eq!(decode_trap(0x07e0_0001, 0, 0), Trap::Wfe);
    }

    /// `mrs x2, cntpct_el0` trapped: Op0 3, Op1 3, CRn 14, CRm 0, Op2 1, Rt 2, read.
    /// `msr mdscr_el1, x7`: Op0 2, Op1 0, CRn 0, CRm 2, Op2 2, Rt 7, write.
    #[test]
    fn sysreg_traps() {
        let cntpct = sysreg_id(3, 3, 14, 0, 1);
        let esr = (0x18u64 << 26) | (1 << 25) | u64::from(cntpct.0) | (2 << 5) | 1;
        assert_eq!(esr, 0x6232_f841);
        assert_eq!(
            decode_trap(esr, 0, 0),
            Trap::SysReg(SysRegAccess {
                addr: cntpct,
                reg: 2,
                read: true
            })
        );
        let mdscr = sysreg_id(2, 0, 0, 2, 2);
        let esr = (0x18u64 << 26) | (1 << 25) | u64::from(mdscr.0) | (7 << 5);
        assert_eq!(
            decode_trap(esr, 0, 0),
            Trap::SysReg(SysRegAccess {
                addr: mdscr,
                reg: 7,
                read: false
            })
        );
    }

    #[test]
    fn other_classes_keep_the_syndrome() {
        // BRK #0 from EL1 (EC 0x3c) and an undefined instruction (EC 0x00, IL).
        assert_eq!(
            decode_trap(0xf200_0000, 0, 0),
            Trap::Other(Esr(0xf200_0000))
        );
        assert_eq!(Esr(0x0200_0000).class(), ExceptionClass::Unknown);
        assert_eq!(Esr(0xbe00_0000).class(), ExceptionClass::SError);
        assert_eq!(Esr(0x0400_0000).class(), ExceptionClass::Wfx);
        assert_eq!(Esr(0x4400_0000).class(), ExceptionClass::Other(0x11));
    }
}
