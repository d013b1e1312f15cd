//! Why a vCPU stopped running guest code: [`ExitReason`], and the decoded MMIO access
//! ([`MmioAccess`]) the VM layer emulates.

use core::fmt;

use addrspace::{AccessKind, GuestPhysAddr};

/// The size of a memory or port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessWidth {
    /// 1 byte.
    Byte,
    /// 2 bytes.
    Word,
    /// 4 bytes.
    Dword,
    /// 8 bytes.
    Qword,
}

impl AccessWidth {
    /// The width of a `bytes`-byte access, if it is 1, 2, 4 or 8.
    pub const fn from_bytes(bytes: usize) -> Option<Self> {
        match bytes {
            1 => Some(Self::Byte),
            2 => Some(Self::Word),
            4 => Some(Self::Dword),
            8 => Some(Self::Qword),
            _ => None,
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Self::Byte => 1,
            Self::Word => 2,
            Self::Dword => 4,
            Self::Qword => 8,
        }
    }

    /// Size in bits.
    pub const fn bits(self) -> u32 {
        self.bytes() as u32 * 8
    }

    /// `value` cut to this width.
    pub const fn truncate(self, value: u64) -> u64 {
        match self {
            Self::Qword => value,
            _ => value & ((1u64 << self.bits()) - 1),
        }
    }

    /// A 64-bit register holding `old` after `value` is written to its low part of
    /// this width: 8 and 16 bits keep the other bits (x86 `AL`, `AX`), 32 bits clear
    /// the upper half (Arm `Wt`, x86 32-bit operands), 64 bits replace it.
    pub const fn write_register(self, old: u64, value: u64) -> u64 {
        match self {
            Self::Byte => (old & !0xff) | (value & 0xff),
            Self::Word => (old & !0xffff) | (value & 0xffff),
            Self::Dword => value & 0xffff_ffff,
            Self::Qword => value,
        }
    }

    /// `value` (of this width) sign-extended to 64 bits.
    pub const fn sign_extend(self, value: u64) -> u64 {
        let shift = 64 - self.bits();
        (((value << shift) as i64) >> shift) as u64
    }
}

/// An architecture-specific system-register identifier (Arm op0/op1/CRn/CRm/op2
/// packed as in ESR_EL2.ISS, a RISC-V CSR number, an x86 MSR index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysRegAddr(pub u32);

/// What a decoded MMIO instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOp {
    /// A load into general register `reg`.
    Read {
        /// Destination register index (the architecture's numbering).
        reg: usize,
        /// Sign-extend the loaded value to the register width.
        sign_extend: bool,
        /// Width of the destination register (4 bytes for an Arm `Wn` or an x86
        /// 32-bit destination, whose upper half the hardware clears; 8 otherwise).
        reg_width: AccessWidth,
    },
    /// A store of `value` (already cut to the access width).
    Write {
        /// The value stored.
        value: u64,
    },
}

/// A decoded MMIO access of a trapped guest instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The guest-physical address accessed.
    pub gpa: GuestPhysAddr,
    /// The access width.
    pub width: AccessWidth,
    /// Load or store.
    pub op: MmioOp,
    /// Bytes to advance the guest PC by once the access is emulated.
    pub insn_len: u8,
}

impl MmioAccess {
    /// What the destination register of this load holds once it returned `loaded`,
    /// given the register's value `old` before: the value cut to the access width,
    /// sign-extended if the instruction says so, then written at the register's width.
    /// A 32-bit destination clears the upper half (Arm `Wt`, x86 32-bit operands); an
    /// 8- or 16-bit one (x86 `AL`, `AX`) keeps the register's other bits, so `old`
    /// only matters there. For a store it returns `old`.
    pub const fn load_result(&self, old: u64, loaded: u64) -> u64 {
        let MmioOp::Read {
            sign_extend,
            reg_width,
            ..
        } = self.op
        else {
            return old;
        };
        let value = self.width.truncate(loaded);
        let value = if sign_extend {
            self.width.sign_extend(value)
        } else {
            value
        };
        reg_width.write_register(old, value)
    }
}

/// Why an MMIO access could not be decoded. The guest is not resumed; the VM layer
/// reports this (with the PC) instead of retrying forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDecodeError {
    /// The hardware gave no syndrome and the instruction at `pc` is not a load/store
    /// the decoder knows (raw bytes of the first 8 bytes, little-endian).
    Unsupported {
        /// Guest PC (virtual) of the instruction.
        pc: u64,
        /// Its first bytes.
        insn: u64,
    },
    /// The instruction could not be fetched (guest page tables or memory).
    Fetch {
        /// Guest PC (virtual).
        pc: u64,
    },
    /// The hardware reported no valid syndrome and decoding is not implemented for
    /// this exception (for example Arm load/store pair, with ISV = 0).
    NoSyndrome {
        /// Guest PC (virtual).
        pc: u64,
    },
    /// The last exit was not a memory fault.
    NotAFault,
}

impl fmt::Display for MmioDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported { pc, insn } => {
                write!(f, "cannot decode MMIO instruction {insn:#x} at pc {pc:#x}")
            }
            Self::Fetch { pc } => write!(f, "cannot fetch the instruction at pc {pc:#x}"),
            Self::NoSyndrome { pc } => {
                write!(f, "MMIO access without a valid syndrome at pc {pc:#x}")
            }
            Self::NotAFault => f.write_str("the last exit was not a memory fault"),
        }
    }
}

/// Why [`crate::ArchVCpu::run`] returned. Every value is decoded from hardware
/// state the guest controls; the VM layer validates it before acting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// The nested translation did not allow an access: the page is not mapped (lazy
    /// RAM, MMIO, or outside the VM) or lacks the permission. The VM layer resolves it
    /// through the address space, or as MMIO with [`crate::ArchVCpu::decode_mmio`].
    NestedPageFault {
        /// The guest-physical address of the access (with the page offset).
        gpa: GuestPhysAddr,
        /// Load, store or instruction fetch.
        access: AccessKind,
    },
    /// A decoded MMIO load no device claimed: the caller emulates it and completes it
    /// with [`crate::ArchVCpu::complete_mmio`].
    MmioRead {
        /// Address read.
        addr: GuestPhysAddr,
        /// Access width.
        width: AccessWidth,
        /// Destination register.
        reg: usize,
        /// Destination register width.
        reg_width: AccessWidth,
        /// Whether the load sign-extends.
        signed_ext: bool,
    },
    /// A decoded MMIO store no device claimed.
    MmioWrite {
        /// Address written.
        addr: GuestPhysAddr,
        /// Access width.
        width: AccessWidth,
        /// Value stored.
        data: u64,
    },
    /// x86 `IN`: the caller writes the value to the accumulator (`set_gpr(0, ..)`).
    IoRead {
        /// Port.
        port: u16,
        /// Width.
        width: AccessWidth,
    },
    /// x86 `OUT`.
    IoWrite {
        /// Port.
        port: u16,
        /// Width.
        width: AccessWidth,
        /// Value written.
        data: u64,
    },
    /// A trapped system-register read into general register `reg`.
    SysRegRead {
        /// Which register.
        addr: SysRegAddr,
        /// Destination general register.
        reg: usize,
    },
    /// A trapped system-register write.
    SysRegWrite {
        /// Which register.
        addr: SysRegAddr,
        /// Value written.
        value: u64,
    },
    /// A hypercall (HVC, VMMCALL, or an SBI call of an extension the arch layer does
    /// not serve itself). The result goes back with
    /// [`crate::ArchVCpu::set_return_value`].
    Hypercall {
        /// Call number (Arm x0 / SMCCC function id, x86 RAX, RISC-V a7 extension id).
        nr: u64,
        /// Arguments (Arm x1..x6, x86 RDI, RSI, RDX, RCX, R8, R9, RISC-V a0..a5).
        args: [u64; 6],
    },
    /// The guest asked to start another vCPU (PSCI CPU_ON, SBI HSM hart_start, INIT-SIPI).
    CpuUp {
        /// Target CPU as the guest names it (MPIDR, hart id, APIC id).
        target_cpu: u64,
        /// Where the target starts.
        entry_point: GuestPhysAddr,
        /// The argument the target receives in its first argument register.
        arg: u64,
    },
    /// The guest stopped this vCPU (PSCI CPU_OFF, SBI HSM hart_stop).
    CpuDown {
        /// Architecture-specific power state.
        state: u64,
    },
    /// The guest waits for an interrupt (WFI, HLT, `wfi`).
    Halt,
    /// A physical interrupt arrived while the guest ran.
    ExternalInterrupt {
        /// Vector or interrupt number.
        vector: u64,
    },
    /// The guest powered the system off (PSCI SYSTEM_OFF, SBI SRST shutdown).
    SystemShutdown,
    /// The guest asked for a reset (PSCI SYSTEM_RESET, SBI SRST reboot).
    SystemReset,
    /// The vCPU left the guest because another CPU kicked it (TLB shootdown or an
    /// interrupt to inject); nothing for the caller to do.
    Kicked,
    /// The hardware refused to enter the guest.
    FailEntry {
        /// The hardware's reason code.
        reason: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::*;

    fn load(width: AccessWidth, sign_extend: bool, reg_width: AccessWidth) -> MmioAccess {
        MmioAccess {
            gpa: GuestPhysAddr::from_usize(0x1000),
            width,
            op: MmioOp::Read {
                reg: 0,
                sign_extend,
                reg_width,
            },
            insn_len: 4,
        }
    }

    /// x86 destinations: 8/16-bit merge, 32-bit zero-extends, 64-bit replaces.
    #[test]
    fn load_results_x86() {
        let old = 0xaaaa_aaaa_aaaa_aaaa;
        let r = |w, s, rw, v| load(w, s, rw).load_result(old, v);
        assert_eq!(r(Byte, false, Byte, 0x1ff), 0xaaaa_aaaa_aaaa_aaff);
        assert_eq!(r(Word, false, Word, 0xfffe), 0xaaaa_aaaa_aaaa_fffe);
        assert_eq!(r(Word, false, Dword, 0xfffe), 0xfffe);
        assert_eq!(r(Word, true, Qword, 0xfffe), 0xffff_ffff_ffff_fffe);
        assert_eq!(r(Byte, true, Dword, 0xfe), 0xffff_fffe);
        assert_eq!(r(Dword, true, Qword, 0xffff_fffe), 0xffff_ffff_ffff_fffe);
        assert_eq!(r(Dword, false, Dword, u64::MAX), 0xffff_ffff);
        assert_eq!(r(Qword, false, Qword, 7), 7);
    }

    /// Arm destinations: `Xt` takes the (sign-extended) value, `Wt` its low half.
    #[test]
    fn load_results_arm() {
        let r = |w, s, rw, v| load(w, s, rw).load_result(0, v);
        assert_eq!(r(Byte, true, Qword, 0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(r(Byte, true, Dword, 0x80), 0xffff_ff80);
        assert_eq!(r(Word, false, Qword, 0x1_8000), 0x8000);
        assert_eq!(r(Dword, true, Qword, 0x8000_0000), 0xffff_ffff_8000_0000);
        assert_eq!(r(Qword, false, Qword, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_store_leaves_the_register() {
        let store = MmioAccess {
            op: MmioOp::Write { value: 1 },
            ..load(Qword, false, Qword)
        };
        assert_eq!(store.load_result(5, 9), 5);
    }
}
