//! The test-guest protocol: hypercalls, check identities and the guest memory layout.
//!
//! Hypercall numbers are abstract ([`Call`]); each architecture maps them onto its
//! calling convention with [`Call::arm_function_id`] (SMCCC vendor-specific hypervisor
//! service, HVC/SMC with the id in x0, arguments x1..x4, result in x0),
//! [`Call::riscv_ids`] (an SBI extension in the experimental range, EID in a7, FID in
//! a6, arguments a0..a3, result in a1 with a0 = 0 for success), and
//! [`Call::x86_number`] (VMMCALL with the number in RAX, arguments RDI, RSI, RDX, RCX,
//! result in RAX).

/// Hypercalls of the test protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Call {
    /// `report(check, passed, detail)`: the guest's verdict on one check.
    Report = 1,
    /// `add(a, b, c, d) -> a + 2b + 3c + 4d` (wrapping): a round trip with arguments
    /// and a return value.
    Add = 2,
    /// `unmap(gpa) -> 0`: the hypervisor unmaps the 4 KiB page at `gpa` (with its TLB
    /// invalidation) before it returns.
    Unmap = 3,
    /// `expect_fault(gpa, kind)`: the next guest access the hypervisor cannot serve
    /// should be at `gpa` with `kind` ([`FAULT_READ`] or [`FAULT_WRITE`]); the
    /// hypervisor then skips the faulting instruction instead of failing the run.
    ExpectFault = 4,
    /// `fault_seen() -> 1 | 0`: whether the armed fault happened (and disarms it).
    FaultSeen = 5,
    /// `print(check, value)`: logs a number for diagnostics.
    Print = 6,
    /// `start_cpu(cpu, entry_gpa, arg) -> 0 | error`: starts vCPU `cpu` at `entry_gpa`
    /// with `arg` in its first argument register, for architectures without a
    /// standard call for it in our guest (x86; Arm uses PSCI CPU_ON, RISC-V SBI HSM).
    StartCpu = 7,
    /// `diagnose(gpa, kind) -> 1 | 0`: the hypervisor prints its diagnostics of the
    /// VM (`vm_core::Vm::diagnostics`: the walk of `gpa`, for [`FAULT_READ`] or
    /// [`FAULT_WRITE`] what the fault path would do with that access, and the
    /// guest-physical map; [`DIAGNOSE_WALK`] for the walk alone) and returns 1 if
    /// `gpa` is translated now, else 0.
    Diagnose = 8,
}

/// `kind` of [`Call::ExpectFault`]: a load.
pub const FAULT_READ: u64 = 0;
/// `kind` of [`Call::ExpectFault`]: a store.
pub const FAULT_WRITE: u64 = 1;
/// `kind` of [`Call::Diagnose`]: no access, the walk alone.
pub const DIAGNOSE_WALK: u64 = 2;

/// SMCCC owner "vendor specific hypervisor service" (OEN 6), fast call, SMC64.
pub const ARM_FUNCTION_BASE: u64 = 0xc600_0000;
/// Our SBI extension id, in the experimental range 0x0800_0000..=0x08ff_ffff ("HVT").
pub const RISCV_EXTENSION_ID: u64 = 0x0848_5654;
/// Our VMMCALL numbers: `0x4856_0000 | call` ("HV").
pub const X86_CALL_BASE: u64 = 0x4856_0000;

impl Call {
    /// All calls.
    pub const ALL: [Call; 8] = [
        Call::Report,
        Call::Add,
        Call::Unmap,
        Call::ExpectFault,
        Call::FaultSeen,
        Call::Print,
        Call::StartCpu,
        Call::Diagnose,
    ];

    /// The call with number `n`.
    pub fn from_number(n: u64) -> Option<Call> {
        Self::ALL.into_iter().find(|c| *c as u64 == n)
    }

    /// The SMCCC function id for HVC/SMC on Arm.
    pub const fn arm_function_id(self) -> u64 {
        ARM_FUNCTION_BASE | self as u64
    }

    /// Decodes an Arm function id (x0).
    pub fn from_arm(function_id: u64) -> Option<Call> {
        (function_id & !0xffff == ARM_FUNCTION_BASE)
            .then(|| Self::from_number(function_id & 0xffff))
            .flatten()
    }

    /// `(EID, FID)` for an SBI call on RISC-V.
    pub const fn riscv_ids(self) -> (u64, u64) {
        (RISCV_EXTENSION_ID, self as u64)
    }

    /// Decodes an SBI call (a7, a6).
    pub fn from_riscv(eid: u64, fid: u64) -> Option<Call> {
        (eid == RISCV_EXTENSION_ID)
            .then(|| Self::from_number(fid))
            .flatten()
    }

    /// The VMMCALL number (RAX) on x86.
    pub const fn x86_number(self) -> u64 {
        X86_CALL_BASE | self as u64
    }

    /// Decodes a VMMCALL number.
    pub fn from_x86(rax: u64) -> Option<Call> {
        (rax & !0xffff == X86_CALL_BASE)
            .then(|| Self::from_number(rax & 0xffff))
            .flatten()
    }
}

/// The checks, in the order the guest runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Check {
    /// RAM reads and writes of every width, across a page boundary.
    RamReadWrite = 0,
    /// A lazily allocated region reads as zero at first touch, then keeps data.
    LazyFaultIn = 1,
    /// A read-only region reads, and a write to it is refused and reported.
    ReadOnlyRefused = 2,
    /// The emulated test device answers 1/2/4/8-byte reads and writes.
    MmioWidths = 3,
    /// The guest printed through its console (the line is checked by xtask too).
    Console = 4,
    /// A hypercall carried arguments and returned a value.
    Hypercall = 5,
    /// After the hypervisor unmapped a page, touching it faults (TLB invalidated).
    UnmapThenFault = 6,
    /// A second vCPU started by the guest ran and reported.
    SecondaryVcpu = 7,
    /// An access outside the VM's regions is reported, not served.
    OutsideAccess = 8,
    /// Reported by the secondary vCPU itself.
    SecondaryRuns = 9,
}

impl Check {
    /// All checks.
    pub const ALL: [Check; 10] = [
        Check::RamReadWrite,
        Check::LazyFaultIn,
        Check::ReadOnlyRefused,
        Check::MmioWidths,
        Check::Console,
        Check::Hypercall,
        Check::UnmapThenFault,
        Check::SecondaryVcpu,
        Check::OutsideAccess,
        Check::SecondaryRuns,
    ];

    /// The check with number `n`.
    pub fn from_number(n: u64) -> Option<Check> {
        Self::ALL.into_iter().find(|c| *c as u64 == n)
    }

    /// A short name for the log.
    pub const fn name(self) -> &'static str {
        match self {
            Check::RamReadWrite => "ram read/write",
            Check::LazyFaultIn => "lazy fault-in",
            Check::ReadOnlyRefused => "read-only write refused",
            Check::MmioWidths => "mmio 1/2/4/8-byte",
            Check::Console => "guest console",
            Check::Hypercall => "hypercall round trip",
            Check::UnmapThenFault => "unmap then fault",
            Check::SecondaryVcpu => "second vCPU started",
            Check::OutsideAccess => "access outside the VM",
            Check::SecondaryRuns => "second vCPU checks",
        }
    }
}

/// The test device's registers (offsets from [`GuestLayout::mmio_base`]).
pub mod test_device {
    /// Read-only identification value ([`ID_VALUE`]).
    pub const ID: u64 = 0x00;
    /// Scratch register: reads return the last value written, cut to the last
    /// write's width and zero-extended.
    pub const SCRATCH: u64 = 0x08;
    /// Counts every access (reads return the count so far).
    pub const COUNTER: u64 = 0x10;
    /// Reads return [`NEGATIVE`] (to check sign-extending loads).
    pub const NEGATIVE_REG: u64 = 0x18;
    /// The device's size.
    pub const SIZE: u64 = 0x1000;
    /// The value of [`ID`].
    pub const ID_VALUE: u64 = 0x4856_5445_5354_0001;
    /// The value of [`NEGATIVE_REG`]: every width reads as -2 in that width.
    pub const NEGATIVE: u64 = 0xffff_ffff_ffff_fffe;
}

/// The first 8 bytes of the read-only region, written by the hypervisor before the
/// guest starts ("RO_PATTR").
pub const RO_PATTERN: u64 = 0x5254_5441_505f_4f52;

/// What the secondary vCPU writes to the mailbox: its start argument xor this.
pub const MAILBOX_MAGIC: u64 = 0x5345_434f_4e44_4152;

/// Where things are in the test VM's guest-physical space. Each board has one in
/// [`crate::layouts`]; its embedded VM config must agree (checked at boot by
/// `platforms::host::check_config`, and on the host by this crate's tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    /// Start of the guest RAM (eagerly mapped RWX).
    pub ram_base: u64,
    /// Its size.
    pub ram_size: u64,
    /// A lazily allocated RW region.
    pub lazy_base: u64,
    /// Its size.
    pub lazy_size: u64,
    /// A read-only region (RAM, mapped R).
    pub ro_base: u64,
    /// Its size.
    pub ro_size: u64,
    /// The emulated test device.
    pub mmio_base: u64,
    /// A RAM page the guest asks the hypervisor to unmap.
    pub unmap_page: u64,
    /// An address in no region at all.
    pub outside: u64,
    /// Where the secondary vCPU writes its answer (inside RAM).
    pub mailbox: u64,
    /// Two RAM pages the RAM check may overwrite.
    pub scratch: u64,
    /// Stack tops for vCPU 0 and vCPU 1 (inside RAM).
    pub stacks: [u64; 2],
    /// Where the guest image is loaded and entered (inside RAM).
    pub image: u64,
    /// The ids the guest names vCPU 0 and vCPU 1 by (MPIDR affinity, hart id, APIC
    /// id): the board creates its vCPUs with them, the guest starts vCPU 1 by its id.
    /// On Arm and RISC-V they are not the vCPU indexes, so the hypervisor's mapping
    /// from guest CPU ids to vCPUs is exercised.
    pub cpu_ids: [u64; 2],
}

impl GuestLayout {
    /// The layout every board uses, around its own addresses: 16 MiB of RAM at
    /// `ram_base` with the image at `ram_base + image_offset`, a 2 MiB lazy region, a
    /// 4 KiB read-only region, the test device, an address in no region, and inside
    /// RAM the unmap page (+0xF0_0000), the mailbox (+0xE0_0000), two scratch pages
    /// (+0xE1_0000) and the two stack tops (+0xD0_0000, +0xD8_0000); the vCPUs'
    /// guest ids `cpu_ids`.
    pub const fn standard(
        ram_base: u64,
        image_offset: u64,
        lazy_base: u64,
        ro_base: u64,
        mmio_base: u64,
        outside: u64,
        cpu_ids: [u64; 2],
    ) -> Self {
        Self {
            ram_base,
            ram_size: 0x100_0000,
            lazy_base,
            lazy_size: 0x20_0000,
            ro_base,
            ro_size: 0x1000,
            mmio_base,
            unmap_page: ram_base + 0xf0_0000,
            outside,
            mailbox: ram_base + 0xe0_0000,
            scratch: ram_base + 0xe1_0000,
            stacks: [ram_base + 0xd0_0000, ram_base + 0xd8_0000],
            image: ram_base + image_offset,
            cpu_ids,
        }
    }
}
