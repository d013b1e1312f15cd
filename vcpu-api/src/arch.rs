//! The trait each architecture's vCPU implements: [`ArchVCpu`].

use addrspace::{AccessKind, GuestPhysAddr, HostPhysAddr, NestedFormat};

use crate::{ExitReason, MmioAccess, MmioDecodeError, VCpuResult};

/// Read access to guest-physical memory, for decoders that must fetch an
/// instruction or walk the guest's own page tables.
pub trait GuestMemory {
    /// Copies guest memory at `gpa` into `buf`; `false` when any byte is not RAM.
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool;
}

/// One architecture's virtual CPU.
///
/// The VM layer drives it: `new`, `set_nested_root`, `set_entry`, `setup`, then
/// `bind` on the physical CPU that runs it and `run` in a loop, acting on each
/// [`ExitReason`]. Register indices are the architecture's own (x0..x30, RISC-V x0..x31,
/// x86 RAX=0, RCX=1, RDX=2, RBX=3, RSP=4, RBP=5, RSI=6, RDI=7, R8..R15=8..15).
pub trait ArchVCpu: Sized {
    /// The nested page-table format this vCPU's hardware walks.
    type Format: NestedFormat;
    /// Architecture-specific creation parameters (MPIDR, hart id, APIC id, ...).
    type CreateConfig;
    /// Architecture-specific setup parameters.
    type SetupConfig;

    /// Creates vCPU `vcpu_id` of VM `vm_id`.
    fn new(vm_id: usize, vcpu_id: usize, config: Self::CreateConfig) -> VCpuResult<Self>;

    /// Points the vCPU at the nested page table rooted at `root` (EPTP, nCR3,
    /// VTTBR_EL2 or hgatp, with the VM's VMID/ASID).
    fn set_nested_root(&mut self, root: HostPhysAddr) -> VCpuResult;

    /// Sets the guest PC for the first entry.
    fn set_entry(&mut self, entry: GuestPhysAddr) -> VCpuResult;

    /// Finishes setup (system registers, traps) before the first run.
    fn setup(&mut self, config: Self::SetupConfig) -> VCpuResult;

    /// Binds the vCPU to the current physical CPU (loads per-CPU state).
    fn bind(&mut self) -> VCpuResult;

    /// Unbinds it from the current physical CPU.
    fn unbind(&mut self) -> VCpuResult;

    /// Enters the guest and returns at the next exit.
    fn run(&mut self) -> VCpuResult<ExitReason>;

    /// Reads general register `index`.
    fn gpr(&self, index: usize) -> VCpuResult<u64>;

    /// Writes general register `index`.
    fn set_gpr(&mut self, index: usize, value: u64) -> VCpuResult;

    /// The guest PC.
    fn pc(&self) -> u64;

    /// Puts `arg` where a secondary vCPU started by CPU up finds its start argument:
    /// Arm x0 (PSCI CPU_ON `context_id`), RISC-V a1 (SBI HSM `opaque`, with a0 =
    /// hart id), x86 RDI (our `StartCpu` convention). Called by the VM layer before
    /// the vCPU's first run, after [`ArchVCpu::set_entry`].
    ///
    /// The default refuses with [`VCpuError::Unsupported`](crate::VCpuError::Unsupported), so a vCPU that has not
    /// implemented it fails the CPU up visibly instead of starting with a wrong
    /// register. (Added after the first contract; additive.)
    fn set_start_arg(&mut self, arg: u64) -> VCpuResult {
        let _ = arg;
        Err(crate::VCpuError::Unsupported {
            feature: "ArchVCpu::set_start_arg",
        })
    }

    /// Sets the result of the hypercall, PSCI or SBI call that caused the last exit
    /// (and steps over the calling instruction where the architecture needs it).
    fn set_return_value(&mut self, value: u64);

    /// Queues interrupt `vector` for the guest.
    fn inject_interrupt(&mut self, vector: usize) -> VCpuResult;

    /// Invalidates every guest translation this vCPU may cache for its VM (stage-2 /
    /// combined TLB entries of the VMID/ASID), on the current physical CPU, before
    /// the next entry. Called by the VM layer after a shootdown request.
    fn invalidate_guest_tlb(&mut self);

    /// Decodes the memory access of the last [`ExitReason::NestedPageFault`] at `gpa`
    /// (from the hardware syndrome when there is one, otherwise by fetching the
    /// instruction through `mem`).
    fn decode_mmio(
        &mut self,
        gpa: GuestPhysAddr,
        access: AccessKind,
        mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError>;

    /// Completes an emulated access: for a load, writes `read_value` (cut to the
    /// access width, sign-extended if the instruction says so) to the destination
    /// register; then steps the PC over the instruction. With `read_value = None` a
    /// load is skipped without touching its register (a refused access).
    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult;
}
