//! Why a vCPU stopped running guest code: [`ExitReason`], each carrying what the VM
//! layer needs to act on it (the fault with what the hardware said about the
//! instruction, the decoded call, the port or register access), so nothing about an
//! exit is left behind in the arch layer.

use addrspace::{AccessKind, GuestPhysAddr};

use crate::{FaultInsn, GuestCall};

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
        match self {
            Self::Byte => 8,
            Self::Word => 16,
            Self::Dword => 32,
            Self::Qword => 64,
        }
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

impl SysRegAddr {
    /// The Arm system register `S<op0>_<op1>_C<crn>_C<crm>_<op2>` as ESR_EL2.ISS of a
    /// trapped MSR/MRS packs it (Arm ARM D24.2.40, ISS encoding for exception class
    /// 0x18: Op0 \[21:20\], Op2 \[19:17\], Op1 \[16:14\], CRn \[13:10\], CRm \[4:1\]).
    pub const fn arm(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> Self {
        Self(
            ((op0 & 3) << 20)
                | ((op2 & 7) << 17)
                | ((op1 & 7) << 14)
                | ((crn & 0xf) << 10)
                | ((crm & 0xf) << 1),
        )
    }
}

/// A trapped system-register access (Arm MRS/MSR, x86 RDMSR/WRMSR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SysRegAccess {
    /// Which register.
    pub addr: SysRegAddr,
    /// Read into a general register, or write of a value.
    pub op: SysRegOp,
}

/// The direction of a [`SysRegAccess`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SysRegOp {
    /// A read into general register `reg` (x86 RDMSR: EDX:EAX).
    Read {
        /// Destination general register.
        reg: usize,
    },
    /// A write of `value`.
    Write {
        /// The value written.
        value: u64,
    },
}

/// An x86 `IN` or `OUT`; the guest's RIP is already past the instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortIo {
    /// The port.
    pub port: u16,
    /// The width.
    pub width: AccessWidth,
    /// `IN` (the caller writes the value to the accumulator with
    /// `set_gpr(0, ..)`, see [`AccessWidth::write_register`]) or `OUT` of `data`.
    pub op: PortOp,
}

/// The direction of a [`PortIo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortOp {
    /// `IN`.
    Read,
    /// `OUT` of `data` (cut to the width).
    Write {
        /// The value written.
        data: u64,
    },
}

/// A nested page fault: the access the nested translation did not allow (the page
/// is not mapped: lazy RAM, MMIO or outside the VM; or lacks the permission), and
/// what the exit says about the instruction, for
/// [`crate::ArchVCpu::decode_mmio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedFault {
    /// The guest-physical address of the access (with the page offset).
    pub gpa: GuestPhysAddr,
    /// Load, store or instruction fetch.
    pub access: AccessKind,
    /// What the hardware said about the instruction.
    pub insn: FaultInsn,
}

/// Why [`crate::ArchVCpu::run`] returned: what the hardware reported, decoded and
/// nothing more. Every value is decoded from hardware state the guest controls; the
/// VM layer validates it before acting. This is the arch layer's word to the VM
/// layer; what the VM layer leaves to its own caller after acting on it (resolving
/// faults, emulating devices, answering firmware calls) is a different type,
/// `vm_core::VmExit`. The set is closed (not `non_exhaustive`): a new exit is a
/// change the VM layer must handle, so adding one fails its build until it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The nested translation did not allow an access. The VM layer resolves it
    /// through the address space, or as MMIO with [`crate::ArchVCpu::decode_mmio`].
    NestedPageFault(NestedFault),
    /// A call to the guest's firmware or hypervisor (PSCI, SBI, CPUID, a
    /// hypercall); answered with [`crate::ArchVCpu::complete_call`].
    Call(GuestCall),
    /// x86 port I/O.
    Io(PortIo),
    /// A trapped system-register access; completed with
    /// [`crate::ArchVCpu::complete_sysreg`].
    SysReg(SysRegAccess),
    /// The guest waits for an interrupt (WFI, HLT, `wfi`); the PC is past the
    /// instruction.
    Halt,
    /// A physical interrupt arrived while the guest ran.
    ExternalInterrupt {
        /// Vector or interrupt number.
        vector: u64,
    },
    /// The processor reset the vCPU by itself (an x86 triple fault).
    Reset,
    /// The vCPU left the guest because another CPU kicked it (TLB shootdown or an
    /// interrupt to inject); nothing for the caller to do.
    Kicked,
    /// The hardware refused to enter the guest.
    FailEntry {
        /// The hardware's reason code.
        reason: u64,
    },
}
