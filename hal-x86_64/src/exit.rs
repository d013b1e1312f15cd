//! #VMEXIT decoding as pure functions: the exit code and EXITINFO1/EXITINFO2 turned
//! into an [`SvmExit`] (APM vol. 2, 15.6 "#VMEXIT", 15.10.2 "IN and OUT Behavior",
//! 15.11 "MSR Intercepts", 15.25.6 "Nested versus Guest Page Faults", appendix C
//! "SVM Intercept Exit Codes"). Nothing here touches hardware; everything is tested
//! on the host.

use core::fmt;

use addrspace::{AccessKind, GuestPhysAddr};
use vcpu_api::AccessWidth;

/// SVM exit codes (APM vol. 2, appendix C, table C-1).
pub mod code {
    /// First exception intercept (vector 0); vector `n` is `EXCP_BASE + n`.
    pub const EXCP_BASE: u64 = 0x40;
    /// Physical INTR.
    pub const INTR: u64 = 0x60;
    /// Physical NMI.
    pub const NMI: u64 = 0x61;
    /// Physical SMI.
    pub const SMI: u64 = 0x62;
    /// Physical INIT.
    pub const INIT: u64 = 0x63;
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// PAUSE.
    pub const PAUSE: u64 = 0x77;
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// IN/OUT.
    pub const IOIO: u64 = 0x7b;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7c;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u64 = 0x7f;
    /// VMRUN.
    pub const VMRUN: u64 = 0x80;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x81;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// VMRUN failed its consistency checks (-1).
    pub const INVALID: u64 = u64::MAX;
}

/// The #NPF error code in EXITINFO1 (APM 15.25.6; page-fault error code bits 4:0
/// plus bits 32/33 telling which walk faulted).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NpfErrorCode(pub u64);

impl NpfErrorCode {
    /// Bit 0: the nested entry was present (a permission or reserved-bit fault).
    pub const fn present(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: the access was a write.
    pub const fn write(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Bit 2: user access (always set for the final guest-physical access: nested
    /// walks are user accesses, APM 15.25.5).
    pub const fn user(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Bit 3: a reserved bit was set in a nested entry.
    pub const fn reserved_bit(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Bit 4: the access was an instruction fetch.
    pub const fn fetch(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Bit 32: the fault happened on the final guest-physical address.
    pub const fn final_gpa(self) -> bool {
        self.0 & (1 << 32) != 0
    }
    /// Bit 33: the fault happened while translating one of the guest's own page
    /// table entries (the guest page-table walk).
    pub const fn guest_table_walk(self) -> bool {
        self.0 & (1 << 33) != 0
    }

    /// The kind of access: fetch, then write, else read. A guest page-table walk is
    /// reported as a read even when the processor meant to set A/D bits (bit 1 then
    /// says so): our nested tables never map guest page tables read-only, so that
    /// distinction never decides an outcome.
    pub const fn access(self) -> AccessKind {
        if self.fetch() {
            AccessKind::Execute
        } else if self.write() && !self.guest_table_walk() {
            AccessKind::Write
        } else {
            AccessKind::Read
        }
    }
}

impl fmt::Debug for NpfErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NpfErrorCode({:#x}: {}{}{}{}{}{})",
            self.0,
            if self.present() { "P " } else { "!P " },
            if self.write() { "W " } else { "R " },
            if self.user() { "U " } else { "S " },
            if self.reserved_bit() { "RSV " } else { "" },
            if self.fetch() { "I " } else { "" },
            if self.final_gpa() {
                "final"
            } else if self.guest_table_walk() {
                "table-walk"
            } else {
                "?"
            }
        )
    }
}

/// EXITINFO1 of an IOIO intercept (APM 15.10.2, figure 15-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoioInfo {
    /// The port (bits 31:16).
    pub port: u16,
    /// The operand size (SZ8/SZ16/SZ32, bits 6:4).
    pub width: AccessWidth,
    /// IN (bit 0 = 1) or OUT.
    pub is_in: bool,
    /// INS/OUTS (bit 2).
    pub string: bool,
    /// REP prefix (bit 3).
    pub rep: bool,
}

/// Why an exit could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitDecodeError {
    /// IOIO EXITINFO1 with no (or more than one) size bit.
    BadIoSize {
        /// The raw EXITINFO1.
        info1: u64,
    },
    /// RDMSR/WRMSR EXITINFO1 other than 0 or 1.
    BadMsrDirection {
        /// The raw EXITINFO1.
        info1: u64,
    },
}

impl fmt::Display for ExitDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadIoSize { info1 } => write!(f, "IOIO exit with bad size bits ({info1:#x})"),
            Self::BadMsrDirection { info1 } => {
                write!(f, "MSR exit with EXITINFO1 {info1:#x} (expected 0 or 1)")
            }
        }
    }
}

impl From<ExitDecodeError> for vcpu_api::VCpuError {
    fn from(e: ExitDecodeError) -> Self {
        match e {
            ExitDecodeError::BadIoSize { info1 } => Self::InvalidValue {
                what: "EXITINFO1 of an IOIO exit (size bits)",
                value: info1,
            },
            ExitDecodeError::BadMsrDirection { info1 } => Self::InvalidValue {
                what: "EXITINFO1 of an MSR exit (neither 0 nor 1)",
                value: info1,
            },
        }
    }
}

impl IoioInfo {
    /// Decodes EXITINFO1 of an IOIO exit.
    pub fn decode(info1: u64) -> Result<Self, ExitDecodeError> {
        let width = match (info1 >> 4) & 0b111 {
            0b001 => AccessWidth::Byte,
            0b010 => AccessWidth::Word,
            0b100 => AccessWidth::Dword,
            _ => return Err(ExitDecodeError::BadIoSize { info1 }),
        };
        Ok(Self {
            port: vcpu_api::low_u16(info1 >> 16),
            width,
            is_in: info1 & 1 != 0,
            string: info1 & (1 << 2) != 0,
            rep: info1 & (1 << 3) != 0,
        })
    }
}

/// A decoded #VMEXIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmExit {
    /// Nested page fault at `gpa`.
    NestedPageFault {
        /// EXITINFO2: the faulting guest-physical address.
        gpa: GuestPhysAddr,
        /// EXITINFO1.
        error: NpfErrorCode,
    },
    /// IN/OUT; `next_rip` is EXITINFO2 (the RIP after the instruction).
    Io {
        /// EXITINFO1 decoded.
        info: IoioInfo,
        /// The guest RIP after the instruction.
        next_rip: u64,
    },
    /// VMMCALL (3 bytes: 0F 01 D9).
    Vmmcall,
    /// HLT (1 byte: F4).
    Hlt,
    /// PAUSE (2 bytes: F3 90).
    Pause,
    /// CPUID (2 bytes: 0F A2); leaf in EAX, subleaf in ECX.
    Cpuid,
    /// RDMSR (0F 32) or WRMSR (0F 30); MSR index in ECX.
    Msr {
        /// WRMSR.
        write: bool,
    },
    /// The guest triple-faulted.
    Shutdown,
    /// A physical interrupt (the host's; INTR is intercepted so kicks work).
    Intr,
    /// A physical NMI.
    Nmi,
    /// An intercepted exception.
    Exception {
        /// Its vector.
        vector: u8,
        /// Its error code (EXITINFO1), when it has one.
        error_code: u64,
    },
    /// The guest executed VMRUN (nested virtualization is not offered).
    Vmrun,
    /// VMRUN refused the VMCB (consistency checks, APM 15.5.1).
    Invalid,
    /// An exit code we do not intercept, reported with its raw value.
    Other {
        /// EXITCODE.
        code: u64,
    },
}

impl SvmExit {
    /// Decodes EXITCODE, EXITINFO1 and EXITINFO2 of the VMCB.
    pub fn decode(code: u64, info1: u64, info2: u64) -> Result<Self, ExitDecodeError> {
        Ok(match code {
            code::NPF => Self::NestedPageFault {
                gpa: vcpu_api::gpa_of(info2),
                error: NpfErrorCode(info1),
            },
            code::IOIO => Self::Io {
                info: IoioInfo::decode(info1)?,
                next_rip: info2,
            },
            code::VMMCALL => Self::Vmmcall,
            code::HLT => Self::Hlt,
            code::PAUSE => Self::Pause,
            code::CPUID => Self::Cpuid,
            code::MSR => match info1 {
                0 => Self::Msr { write: false },
                1 => Self::Msr { write: true },
                _ => return Err(ExitDecodeError::BadMsrDirection { info1 }),
            },
            code::SHUTDOWN => Self::Shutdown,
            code::INTR => Self::Intr,
            code::NMI => Self::Nmi,
            code::VMRUN => Self::Vmrun,
            code::INVALID => Self::Invalid,
            c if (code::EXCP_BASE..code::EXCP_BASE + 32).contains(&c) => Self::Exception {
                vector: vcpu_api::low_u8(c - code::EXCP_BASE),
                error_code: info1,
            },
            c => Self::Other { code: c },
        })
    }

    /// Length of the instruction that caused an instruction intercept whose
    /// encoding is fixed (the processors QEMU emulates lack NRIPS, so the next RIP
    /// is computed, not read from the VMCB).
    pub const fn fixed_insn_len(&self) -> Option<u64> {
        match self {
            Self::Vmmcall => Some(3),
            Self::Hlt => Some(1),
            Self::Pause | Self::Cpuid | Self::Msr { .. } => Some(2),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npf_error_code_bits() {
        // Not-present read of a final GPA by guest user access: P=0 W=0 U=1, bit 32.
        let e = NpfErrorCode((1 << 32) | 0b100);
        assert!(!e.present() && !e.write() && e.user() && !e.fetch());
        assert!(e.final_gpa() && !e.guest_table_walk());
        assert_eq!(e.access(), AccessKind::Read);
        // Write to a present read-only page: P=1 W=1 U=1.
        let e = NpfErrorCode((1 << 32) | 0b111);
        assert!(e.present() && e.write());
        assert_eq!(e.access(), AccessKind::Write);
        // Instruction fetch from a non-executable page: P=1 ID=1.
        let e = NpfErrorCode((1 << 32) | 0b1_0101);
        assert!(e.fetch());
        assert_eq!(e.access(), AccessKind::Execute);
        // Reserved bit during the guest's page-table walk, with the A/D write bit.
        let e = NpfErrorCode((1 << 33) | 0b1111);
        assert!(e.reserved_bit() && e.guest_table_walk() && !e.final_gpa());
        assert_eq!(e.access(), AccessKind::Read);
    }

    #[test]
    fn npf_decodes_gpa_from_exitinfo2() {
        let exit = SvmExit::decode(code::NPF, (1 << 32) | 0b110, 0xd000_0008).unwrap();
        assert_eq!(
            exit,
            SvmExit::NestedPageFault {
                gpa: GuestPhysAddr::from_usize(0xd000_0008),
                error: NpfErrorCode((1 << 32) | 0b110),
            }
        );
    }

    #[test]
    fn ioio_fields() {
        // `out dx, al` to 0x3f8: port 0x3f8 << 16, SZ8 (bit 4), type OUT (bit 0 = 0),
        // A64 (bit 9).
        let info1 = (0x3f8 << 16) | (1 << 9) | (1 << 4);
        let exit = SvmExit::decode(code::IOIO, info1, 0x10_0042).unwrap();
        assert_eq!(
            exit,
            SvmExit::Io {
                info: IoioInfo {
                    port: 0x3f8,
                    width: AccessWidth::Byte,
                    is_in: false,
                    string: false,
                    rep: false
                },
                next_rip: 0x10_0042
            }
        );
        // `rep insd` from port 0x1f0: IN, STR, REP, SZ32.
        let info = IoioInfo::decode((0x1f0 << 16) | (1 << 6) | 0b1101).unwrap();
        assert_eq!(info.port, 0x1f0);
        assert_eq!(info.width, AccessWidth::Dword);
        assert!(info.is_in && info.string && info.rep);
        // `in ax, dx`.
        let info = IoioInfo::decode((0x604 << 16) | (1 << 5) | 1).unwrap();
        assert_eq!((info.width, info.is_in), (AccessWidth::Word, true));
        assert_eq!(
            IoioInfo::decode(0x3f8 << 16),
            Err(ExitDecodeError::BadIoSize { info1: 0x3f8 << 16 })
        );
        assert!(IoioInfo::decode((1 << 4) | (1 << 5)).is_err());
    }

    #[test]
    fn instruction_intercepts() {
        assert_eq!(SvmExit::decode(code::VMMCALL, 0, 0), Ok(SvmExit::Vmmcall));
        assert_eq!(SvmExit::decode(code::HLT, 0, 0), Ok(SvmExit::Hlt));
        assert_eq!(SvmExit::decode(code::PAUSE, 0, 0), Ok(SvmExit::Pause));
        assert_eq!(SvmExit::decode(code::CPUID, 0, 0), Ok(SvmExit::Cpuid));
        assert_eq!(
            SvmExit::decode(code::MSR, 0, 0),
            Ok(SvmExit::Msr { write: false })
        );
        assert_eq!(
            SvmExit::decode(code::MSR, 1, 0),
            Ok(SvmExit::Msr { write: true })
        );
        assert_eq!(
            SvmExit::decode(code::MSR, 2, 0),
            Err(ExitDecodeError::BadMsrDirection { info1: 2 })
        );
        assert_eq!(SvmExit::decode(code::SHUTDOWN, 0, 0), Ok(SvmExit::Shutdown));
        assert_eq!(SvmExit::decode(code::INVALID, 0, 0), Ok(SvmExit::Invalid));
        assert_eq!(SvmExit::decode(code::INTR, 0, 0), Ok(SvmExit::Intr));
        assert_eq!(
            SvmExit::decode(0x4e, 0x2, 0),
            Ok(SvmExit::Exception {
                vector: 14,
                error_code: 2
            })
        );
        assert_eq!(
            SvmExit::decode(0x65, 0, 0),
            Ok(SvmExit::Other { code: 0x65 })
        );
    }

    #[test]
    fn fixed_lengths() {
        assert_eq!(SvmExit::Vmmcall.fixed_insn_len(), Some(3));
        assert_eq!(SvmExit::Hlt.fixed_insn_len(), Some(1));
        assert_eq!(SvmExit::Cpuid.fixed_insn_len(), Some(2));
        assert_eq!(SvmExit::Msr { write: true }.fixed_insn_len(), Some(2));
        assert_eq!(SvmExit::Shutdown.fixed_insn_len(), None);
    }
}
