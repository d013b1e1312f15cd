//! The guest's calls to its firmware or hypervisor: [`GuestCall`] (what was asked,
//! decoded by the arch layer, and how it arrived), and [`FirmwareReply`] (what the VM
//! layer answers, encoded by the arch layer in the conventions of the interface).
//!
//! The calls are protocol-neutral where the protocols mean the same thing (PSCI
//! CPU_ON and SBI HSM `hart_start` are both [`FirmwareCall::CpuOn`]), so the VM layer
//! decides once what is supported, which vCPU a call targets and what it answers; the
//! arch layer keeps the function numbers, register conventions and error codes.

use addrspace::GuestPhysAddr;

/// How a call reached the hypervisor: the arch layer encodes the reply for it and
/// steps the guest past the calling instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conduit {
    /// Arm `hvc` (its preferred return address is already the next instruction).
    Hvc,
    /// Arm `smc`, trapped to EL2 (HCR_EL2.TSC).
    Smc,
    /// RISC-V `ecall` from VS-mode, SBI v0.2+ convention (a0 error, a1 value).
    Ecall,
    /// RISC-V `ecall` of a legacy SBI extension (EIDs 0x00..=0x0f: one value in a0).
    EcallLegacy,
    /// x86 `VMMCALL` (the result in RAX).
    Vmmcall,
    /// x86 `CPUID` (the result in EAX, EBX, ECX, EDX).
    Cpuid,
    /// Arm `MRS` of an ID register, trapped by HCR_EL2.TID3: the reply's value goes to
    /// general register `rt` (31: XZR, discarded).
    Mrs {
        /// The destination register.
        rt: u8,
    },
}

/// A firmware service a guest can ask about (PSCI_FEATURES, SBI `probe_extension`)
/// and the VM layer decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// The interface's own queries (version, features, implementation ids).
    Base,
    /// Starting, stopping and querying vCPUs (PSCI CPU_ON/CPU_OFF/AFFINITY_INFO,
    /// SBI HSM).
    CpuPower,
    /// Powering the VM off or resetting it (PSCI SYSTEM_OFF/SYSTEM_RESET, SBI SRST and
    /// legacy shutdown).
    SystemPower,
    /// PSCI MIGRATE_INFO_TYPE.
    MigrateInfo,
    /// The guest timer (SBI TIME and legacy `set_timer`).
    Timer,
    /// Inter-processor interrupts (SBI IPI).
    Ipi,
    /// Fences of the guest's own translations on other vCPUs (SBI RFENCE).
    RemoteFence,
    /// The firmware console (SBI DBCN, legacy `console_putchar`/`console_getchar`).
    Console,
    /// A hypercall interface outside the standard ones (an SBI extension id of the
    /// board's own).
    Hypercall {
        /// Its number (the SBI EID).
        nr: u64,
    },
}

/// Which guest CPUs a call targets, as the guest names them (SBI `hart_mask` and
/// `hart_mask_base`: bit `i` is CPU `base + i`; a base of `u64::MAX` means all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuMask {
    /// The bit vector.
    pub mask: u64,
    /// The guest CPU id of bit 0, or `u64::MAX` for every CPU.
    pub base: u64,
}

impl CpuMask {
    /// Whether the guest CPU `id` is a target.
    pub fn contains(&self, id: u64) -> bool {
        if self.base == u64::MAX {
            return true;
        }
        id.checked_sub(self.base)
            .is_some_and(|bit| bit < 64 && self.mask & (1 << bit) != 0)
    }
}

/// Which fence of the guest's own translations a remote fence asks for (SBI RFENCE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoteFence {
    /// FENCE.I on the targets.
    FenceI,
    /// SFENCE.VMA of `[start, start + size)` (size 0 or all-ones: everything),
    /// optionally for one ASID.
    SfenceVma {
        /// First guest-virtual address.
        start: u64,
        /// Size in bytes.
        size: u64,
        /// Only this ASID, when given.
        asid: Option<u64>,
    },
}

/// The four registers of a CPUID answer: EAX, EBX, ECX, EDX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuidRegs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// A hypercall of an interface the VM layer does not own (the board's): an SMCCC
/// call by HVC outside PSCI, an SBI extension of the board's own, a `VMMCALL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Hypercall {
    /// The call number: Arm x0 (the SMCCC function id), RISC-V a7 (the extension
    /// id), x86 RAX.
    pub nr: u64,
    /// RISC-V: the SBI function id (a6); 0 on the other architectures.
    pub function: u64,
    /// Arguments: Arm x1..x6, RISC-V a0..a5, x86 RDI, RSI, RDX, RCX, R8, R9.
    pub args: [u64; 6],
}

/// What the guest asked its firmware or hypervisor for, decoded by the arch layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FirmwareCall {
    /// The interface's version (PSCI_VERSION, SBI `get_spec_version`).
    Version,
    /// Whether a service is there (PSCI_FEATURES, SBI `probe_extension`); `None`
    /// when the guest asked about a function or extension the arch layer does not
    /// know.
    Probe {
        /// The service asked about.
        service: Option<Service>,
    },
    /// The implementation's id (SBI `get_impl_id`).
    ImplId,
    /// The implementation's version (SBI `get_impl_version`).
    ImplVersion,
    /// The machine's vendor, architecture or implementation id (SBI
    /// `get_mvendorid`, `get_marchid`, `get_mimpid`).
    MachineId,
    /// Whether a Trusted OS needs migrating (PSCI MIGRATE_INFO_TYPE).
    MigrateInfoType,
    /// Start the vCPU the guest names `target` (PSCI CPU_ON, SBI HSM `hart_start`).
    CpuOn {
        /// The target as the guest names it (MPIDR affinity, hart id, APIC id).
        target: u64,
        /// Where it starts (guest-physical: it starts with its MMU off).
        entry: GuestPhysAddr,
        /// The argument it receives (PSCI `context_id` in x0, SBI `opaque` in a1).
        arg: u64,
    },
    /// Stop the calling vCPU (PSCI CPU_OFF, SBI HSM `hart_stop`).
    CpuOff,
    /// Whether the vCPU the guest names `target` runs (PSCI AFFINITY_INFO at level
    /// 0, SBI HSM `hart_get_status`).
    CpuStatus {
        /// The target as the guest names it.
        target: u64,
    },
    /// Power the VM off (PSCI SYSTEM_OFF, SBI SRST shutdown, legacy shutdown).
    SystemOff,
    /// Reset the VM (PSCI SYSTEM_RESET, SBI SRST cold or warm reboot).
    SystemReset,
    /// Arm the calling vCPU's timer (SBI TIME `set_timer`, legacy `set_timer`).
    SetTimer {
        /// The absolute time of the next timer interrupt.
        deadline: u64,
    },
    /// Send a software interrupt to other vCPUs (SBI IPI `send_ipi`).
    SendIpi {
        /// The targets.
        targets: CpuMask,
    },
    /// Fence the guest's own translations on other vCPUs (SBI RFENCE).
    RemoteFence {
        /// The targets.
        targets: CpuMask,
        /// What to fence.
        fence: RemoteFence,
    },
    /// Write `len` bytes at guest-physical `gpa` to the console (SBI DBCN
    /// `console_write`).
    ConsoleWrite {
        /// The buffer.
        gpa: GuestPhysAddr,
        /// Its length.
        len: u64,
    },
    /// Read up to `len` bytes from the console into guest-physical `gpa` (SBI DBCN
    /// `console_read`).
    ConsoleRead {
        /// The buffer.
        gpa: GuestPhysAddr,
        /// Its length.
        len: u64,
    },
    /// Write one byte to the console (SBI DBCN `console_write_byte`, legacy
    /// `console_putchar`).
    ConsoleWriteByte {
        /// The byte.
        byte: u8,
    },
    /// Read one byte from the console, -1 when there is none (legacy
    /// `console_getchar`).
    ConsoleReadByte,
    /// CPUID: what the guest asked and what the physical CPU answers.
    Cpuid {
        /// EAX.
        leaf: u32,
        /// ECX.
        subleaf: u32,
        /// The host's answer.
        host: CpuidRegs,
    },
    /// An Arm ID register read (ID_AA64PFR0_EL1 and the rest of the ID space the
    /// guest's MRS reaches): which register and what the physical CPU holds; the VM
    /// layer answers what the guest sees.
    IdRegister {
        /// The register.
        id: crate::SysRegAddr,
        /// The physical CPU's value.
        host: u64,
    },
    /// A hypercall the board answers.
    Hypercall(Hypercall),
    /// A call whose parameters the interface itself defines as invalid (SBI SRST
    /// with a reserved reset type).
    InvalidParameters {
        /// The function or extension id (Arm x0, RISC-V a7).
        nr: u64,
        /// RISC-V: the SBI function id (a6); 0 on the other architectures.
        function: u64,
    },
    /// A function of a firmware interface that is not implemented (PSCI
    /// CPU_SUSPEND, an SBI function id that does not exist, an SMC outside PSCI).
    Unsupported {
        /// The function or extension id (Arm x0, RISC-V a7).
        nr: u64,
        /// RISC-V: the SBI function id (a6); 0 on the other architectures.
        function: u64,
    },
}

/// A guest's call as it arrived: what it asks and how (the reply's encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCall {
    /// What it asks.
    pub call: FirmwareCall,
    /// How it arrived.
    pub conduit: Conduit,
}

/// Why the VM layer refused a call; the arch layer encodes the interface's code
/// (PSCI return codes, SBI errors, SMCCC NOT_SUPPORTED, RAX = -1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FirmwareError {
    /// Not supported (PSCI NOT_SUPPORTED, SBI ERR_NOT_SUPPORTED, SMCCC -1).
    NotSupported,
    /// A parameter is wrong (PSCI INVALID_PARAMETERS, SBI ERR_INVALID_PARAM): an
    /// unknown target, a buffer the guest cannot give.
    InvalidParameters,
    /// The target is already on (PSCI ALREADY_ON, SBI ERR_ALREADY_AVAILABLE).
    AlreadyOn,
    /// An address is not one the call accepts (PSCI INVALID_ADDRESS, SBI
    /// ERR_INVALID_ADDRESS).
    InvalidAddress,
    /// It failed for another reason (PSCI INTERNAL_FAILURE, SBI ERR_FAILED).
    Failed,
}

/// Whether a vCPU runs, as a status call reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuState {
    /// It runs (PSCI ON, SBI STARTED).
    On,
    /// It does not (PSCI OFF, SBI STOPPED).
    Off,
    /// It was started and has not run yet (PSCI ON_PENDING, SBI START_PENDING).
    OnPending,
}

/// The VM layer's answer to a [`GuestCall`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareReply {
    /// Success with a value (PSCI x0, SBI a1 with a0 = 0, legacy SBI a0, RAX).
    Value(u64),
    /// A refusal.
    Error(FirmwareError),
    /// The answer to a [`FirmwareCall::Probe`]: whether the service is there (PSCI
    /// 0 or NOT_SUPPORTED, SBI 1 or 0).
    Offered(bool),
    /// The interface version (PSCI `major << 16 | minor`, SBI `major << 24 | minor`).
    Version {
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// The state of the vCPU a [`FirmwareCall::CpuStatus`] asked about.
    CpuState(CpuState),
    /// CPUID's answer.
    Cpuid(CpuidRegs),
}
