//! Trap causes (`scause`) and their decoding into what the hypervisor acts on: [`Trap`].
//!
//! RISC-V Privileged Architecture 20211203: section 4.1.9 (`scause`, table 4.2) and
//! section 8.6.4 (trap cause codes with the hypervisor extension, table 8.7); section
//! 8.2.11 (`htval`: the guest-physical address that faulted, shifted right by 2) and
//! 8.2.12 (`htinst`). Everything here is a pure function of the CSR values, so it is
//! tested on any host.

use addrspace::{AccessKind, GuestPhysAddr};
use vcpu_api::gpa_of;

/// Bit 63 of `scause`: the trap is an interrupt.
pub const SCAUSE_INTERRUPT: u64 = 1 << 63;

/// Exception codes (`scause` with the interrupt bit clear), table 8.7.
pub mod exception {
    /// Instruction address misaligned.
    pub const INSN_MISALIGNED: u64 = 0;
    /// Instruction access fault.
    pub const INSN_ACCESS_FAULT: u64 = 1;
    /// Illegal instruction.
    pub const ILLEGAL_INSN: u64 = 2;
    /// Breakpoint.
    pub const BREAKPOINT: u64 = 3;
    /// Load address misaligned.
    pub const LOAD_MISALIGNED: u64 = 4;
    /// Load access fault.
    pub const LOAD_ACCESS_FAULT: u64 = 5;
    /// Store/AMO address misaligned.
    pub const STORE_MISALIGNED: u64 = 6;
    /// Store/AMO access fault.
    pub const STORE_ACCESS_FAULT: u64 = 7;
    /// Environment call from U-mode or VU-mode.
    pub const ECALL_U: u64 = 8;
    /// Environment call from HS-mode.
    pub const ECALL_HS: u64 = 9;
    /// Environment call from VS-mode.
    pub const ECALL_VS: u64 = 10;
    /// Environment call from M-mode.
    pub const ECALL_M: u64 = 11;
    /// Instruction page fault.
    pub const INSN_PAGE_FAULT: u64 = 12;
    /// Load page fault.
    pub const LOAD_PAGE_FAULT: u64 = 13;
    /// Store/AMO page fault.
    pub const STORE_PAGE_FAULT: u64 = 15;
    /// Instruction guest-page fault.
    pub const INSN_GUEST_PAGE_FAULT: u64 = 20;
    /// Load guest-page fault.
    pub const LOAD_GUEST_PAGE_FAULT: u64 = 21;
    /// Virtual instruction.
    pub const VIRTUAL_INSN: u64 = 22;
    /// Store/AMO guest-page fault.
    pub const STORE_GUEST_PAGE_FAULT: u64 = 23;
}

/// Interrupt codes (`scause` with the interrupt bit set), also the bit numbers in
/// `sip`/`sie`/`hip`/`hie`/`hvip`/`hideleg`.
pub mod interrupt {
    /// Supervisor software interrupt.
    pub const SSI: u64 = 1;
    /// Virtual supervisor software interrupt.
    pub const VSSI: u64 = 2;
    /// Supervisor timer interrupt.
    pub const STI: u64 = 5;
    /// Virtual supervisor timer interrupt.
    pub const VSTI: u64 = 6;
    /// Supervisor external interrupt.
    pub const SEI: u64 = 9;
    /// Virtual supervisor external interrupt.
    pub const VSEI: u64 = 10;
    /// Supervisor guest external interrupt.
    pub const SGEI: u64 = 12;
}

/// The exceptions a guest handles itself (`hedeleg`): instruction misaligned,
/// breakpoint, ECALL from VU-mode and the three VS-stage page faults. The same set KVM
/// delegates; guest-page faults, virtual instructions and ECALL from VS-mode come to
/// the hypervisor.
pub const HEDELEG: u64 = (1 << exception::INSN_MISALIGNED)
    | (1 << exception::BREAKPOINT)
    | (1 << exception::ECALL_U)
    | (1 << exception::INSN_PAGE_FAULT)
    | (1 << exception::LOAD_PAGE_FAULT)
    | (1 << exception::STORE_PAGE_FAULT);

/// The interrupts a guest handles itself (`hideleg`): the three VS-level interrupts.
pub const HIDELEG: u64 = (1 << interrupt::VSSI) | (1 << interrupt::VSTI) | (1 << interrupt::VSEI);

/// The CSR values the hardware left when a trap from the guest reached HS-mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    /// `scause`.
    pub scause: u64,
    /// `stval` (for guest-page faults: the guest-virtual address).
    pub stval: u64,
    /// `htval` (for guest-page faults: the guest-physical address >> 2, or 0).
    pub htval: u64,
    /// `htinst` (a transformed instruction, a pseudoinstruction, or 0).
    pub htinst: u64,
}

/// What a trap from the guest means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// A G-stage translation refused an access (instruction, load or store/AMO
    /// guest-page fault).
    GuestPageFault {
        /// The guest-physical address, or `None` when the hart wrote 0 to `htval`
        /// (allowed by the specification; the address is then unknown).
        gpa: Option<GuestPhysAddr>,
        /// The kind of access.
        access: AccessKind,
        /// The guest-virtual address (`stval`).
        gva: u64,
        /// `htinst`.
        htinst: u64,
    },
    /// The guest ran an instruction that HS-mode traps in VS-mode (WFI with
    /// `hstatus.VTW`, a hypervisor CSR, ...). `insn` is `stval`: the instruction
    /// bits, or 0 when the hart does not report them.
    VirtualInstruction {
        /// The instruction bits.
        insn: u64,
    },
    /// ECALL from VS-mode: an SBI call.
    SbiCall,
    /// An interrupt for HS-mode arrived while the guest ran.
    Interrupt {
        /// The interrupt code ([`interrupt`]).
        code: u64,
    },
    /// Any other exception (not delegated, or from an unexpected mode).
    Exception {
        /// The exception code.
        code: u64,
        /// `stval`.
        stval: u64,
    },
}

impl TrapInfo {
    /// Decodes the trap. Never fails: unknown causes become [`Trap::Exception`].
    pub fn decode(&self) -> Trap {
        if self.scause & SCAUSE_INTERRUPT != 0 {
            return Trap::Interrupt {
                code: self.scause & !SCAUSE_INTERRUPT,
            };
        }
        let access = match self.scause {
            exception::INSN_GUEST_PAGE_FAULT => Some(AccessKind::Execute),
            exception::LOAD_GUEST_PAGE_FAULT => Some(AccessKind::Read),
            exception::STORE_GUEST_PAGE_FAULT => Some(AccessKind::Write),
            _ => None,
        };
        if let Some(access) = access {
            return Trap::GuestPageFault {
                gpa: fault_gpa(self.htval, self.stval),
                access,
                gva: self.stval,
                htinst: self.htinst,
            };
        }
        match self.scause {
            exception::VIRTUAL_INSN => Trap::VirtualInstruction { insn: self.stval },
            exception::ECALL_VS => Trap::SbiCall,
            code => Trap::Exception {
                code,
                stval: self.stval,
            },
        }
    }
}

/// The guest-physical address of a guest-page fault: the page from `htval << 2`, the
/// offset in the page from `stval` (section 8.2.11: `htval` holds the faulting GPA
/// shifted right by 2, possibly without its low bits; the page offset is the same in
/// the guest-virtual address of `stval`). `None` when `htval` is 0.
pub const fn fault_gpa(htval: u64, stval: u64) -> Option<GuestPhysAddr> {
    if htval == 0 {
        return None;
    }
    let gpa = ((htval << 2) & !0xfff) | (stval & 0xfff);
    Some(gpa_of(gpa))
}

/// A short name of an exception code, for logs.
pub const fn exception_name(code: u64) -> &'static str {
    match code {
        exception::INSN_MISALIGNED => "instruction address misaligned",
        exception::INSN_ACCESS_FAULT => "instruction access fault",
        exception::ILLEGAL_INSN => "illegal instruction",
        exception::BREAKPOINT => "breakpoint",
        exception::LOAD_MISALIGNED => "load address misaligned",
        exception::LOAD_ACCESS_FAULT => "load access fault",
        exception::STORE_MISALIGNED => "store address misaligned",
        exception::STORE_ACCESS_FAULT => "store access fault",
        exception::ECALL_U => "ecall from U/VU-mode",
        exception::ECALL_HS => "ecall from HS-mode",
        exception::ECALL_VS => "ecall from VS-mode",
        exception::ECALL_M => "ecall from M-mode",
        exception::INSN_PAGE_FAULT => "instruction page fault",
        exception::LOAD_PAGE_FAULT => "load page fault",
        exception::STORE_PAGE_FAULT => "store page fault",
        exception::INSN_GUEST_PAGE_FAULT => "instruction guest-page fault",
        exception::LOAD_GUEST_PAGE_FAULT => "load guest-page fault",
        exception::VIRTUAL_INSN => "virtual instruction",
        exception::STORE_GUEST_PAGE_FAULT => "store guest-page fault",
        _ => "unknown exception",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpa(v: usize) -> Option<GuestPhysAddr> {
        Some(GuestPhysAddr::from_usize(v))
    }

    /// A load from the test device at GPA 0x0b00_0018 with the guest's paging off:
    /// scause 21, stval = GVA = GPA, htval = GPA >> 2 = 0x02c0_0006, and the
    /// transformed LD htinst (rd = a0: 0x0000_3503).
    #[test]
    fn load_guest_page_fault() {
        let t = TrapInfo {
            scause: 21,
            stval: 0x0b00_0018,
            htval: 0x02c0_0006,
            htinst: 0x3503,
        };
        assert_eq!(
            t.decode(),
            Trap::GuestPageFault {
                gpa: gpa(0x0b00_0018),
                access: AccessKind::Read,
                gva: 0x0b00_0018,
                htinst: 0x3503,
            }
        );
    }

    /// A store at a guest-virtual address whose page maps elsewhere: the page comes
    /// from htval, the offset from stval. GVA 0xffff_ffc0_0000_1abc maps to GPA page
    /// 0x9100_0000: htval = 0x9100_0abc >> 2 = 0x2440_02af (low bits of the offset
    /// dropped by the shift are recovered from stval).
    #[test]
    fn store_fault_takes_the_offset_from_stval() {
        let t = TrapInfo {
            scause: 23,
            stval: 0xffff_ffc0_0000_1abc,
            htval: 0x9100_0abc >> 2,
            htinst: 0,
        };
        let Trap::GuestPageFault { gpa: g, access, .. } = t.decode() else {
            panic!("not a guest-page fault: {:?}", t.decode());
        };
        assert_eq!(g, gpa(0x9100_0abc));
        assert_eq!(access, AccessKind::Write);
    }

    /// A hart may leave only the page in htval (bits 1:0 are always lost to the shift).
    #[test]
    fn offset_bits_below_the_shift_come_from_stval() {
        assert_eq!(fault_gpa(0x0b00_0000 >> 2, 0x0b00_0007), gpa(0x0b00_0007));
        assert_eq!(fault_gpa(0, 0x1234), None);
        // Sv48x4 GPAs are 50 bits wide: htval carries bits 49:2.
        assert_eq!(
            fault_gpa(0x3_0000_0000_1000 >> 2, 0x1008),
            gpa(0x3_0000_0000_1008)
        );
    }

    #[test]
    fn instruction_fetch_fault() {
        let t = TrapInfo {
            scause: 20,
            stval: 0xa000_0000,
            htval: 0xa000_0000 >> 2,
            htinst: 0,
        };
        assert!(matches!(
            t.decode(),
            Trap::GuestPageFault {
                access: AccessKind::Execute,
                ..
            }
        ));
    }

    /// WFI (0x1050_0073) with hstatus.VTW = 1 traps as a virtual instruction, stval
    /// holding the instruction.
    #[test]
    fn virtual_instruction_and_ecall() {
        let t = TrapInfo {
            scause: 22,
            stval: 0x1050_0073,
            ..TrapInfo::default()
        };
        assert_eq!(t.decode(), Trap::VirtualInstruction { insn: 0x1050_0073 });
        let t = TrapInfo {
            scause: 10,
            ..TrapInfo::default()
        };
        assert_eq!(t.decode(), Trap::SbiCall);
    }

    /// scause of a supervisor timer interrupt: 0x8000_0000_0000_0005.
    #[test]
    fn interrupts() {
        let t = TrapInfo {
            scause: 0x8000_0000_0000_0005,
            ..TrapInfo::default()
        };
        assert_eq!(
            t.decode(),
            Trap::Interrupt {
                code: interrupt::STI
            }
        );
        let t = TrapInfo {
            scause: 0x8000_0000_0000_0009,
            ..TrapInfo::default()
        };
        assert_eq!(
            t.decode(),
            Trap::Interrupt {
                code: interrupt::SEI
            }
        );
    }

    #[test]
    fn other_exceptions_keep_their_code() {
        let t = TrapInfo {
            scause: 2,
            stval: 0xffff_ffff,
            ..TrapInfo::default()
        };
        assert_eq!(
            t.decode(),
            Trap::Exception {
                code: 2,
                stval: 0xffff_ffff
            }
        );
        assert_eq!(exception_name(2), "illegal instruction");
        assert_eq!(exception_name(99), "unknown exception");
    }

    /// KVM's default delegation: 0xb109 (bits 0, 3, 8, 12, 13, 15); VS interrupts 0x444.
    #[test]
    fn delegation_masks() {
        assert_eq!(HEDELEG, 0xb109);
        assert_eq!(HIDELEG, 0x444);
    }
}
