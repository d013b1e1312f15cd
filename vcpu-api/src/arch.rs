//! The trait each architecture's vCPU implements: [`ArchVCpu`], and the view of guest
//! memory its decoders read through: [`GuestMemory`].

use addrspace::{GuestPhysAddr, HostPhysAddr, NestedFormat};

use crate::{
    ExitReason, FirmwareReply, GuestCall, MmioAccess, MmioDecodeError, NestedFault, PortIo,
    Service, SysRegAccess, VCpuError, VCpuResult,
};

/// Read access to guest-physical memory, for decoders that must fetch an
/// instruction or walk the guest's own page tables. It follows the VM's rules for
/// copies: only RAM of the VM, never a device or a pass-through mapping.
pub trait GuestMemory {
    /// Copies guest memory at `gpa` into `buf`; on error (any byte that is not RAM of
    /// the VM) `buf` is unchanged and the address space says why.
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), addrspace::Error>;
}

/// One architecture's virtual CPU.
///
/// The VM layer drives it: `new`, `set_nested_root`, `set_entry`, `setup`, then
/// `bind` on the physical CPU that runs it and `run` in a loop, acting on each
/// [`ExitReason`]. Everything an exit needs to be completed travels in the exit value
/// and comes back in the completion call (`decode_mmio` + `complete_mmio`,
/// `complete_call`, `complete_sysreg`): the vCPU keeps no "last exit" state. Register
/// indices are the architecture's own (x0..x30, RISC-V x0..x31, x86 RAX=0, RCX=1,
/// RDX=2, RBX=3, RSP=4, RBP=5, RSI=6, RDI=7, R8..R15=8..15).
pub trait ArchVCpu: Sized {
    /// The nested page-table format this vCPU's hardware walks.
    type Format: NestedFormat;
    /// Architecture-specific creation parameters (MPIDR, hart id, ...).
    type CreateConfig;
    /// Architecture-specific setup parameters.
    type SetupConfig;

    /// Claims the TLB tag (VMID, ASID) of VM `vm_id`, before its vCPUs are created:
    /// no two live VMs hold the same one. Errors: [`VCpuError::NoVmid`] when every
    /// tag is held by a live VM, [`VCpuError::VmIdInUse`] when a live VM has this
    /// id. The default (hardware without tags) claims nothing.
    ///
    /// [`VCpuError::NoVmid`]: crate::VCpuError::NoVmid
    /// [`VCpuError::VmIdInUse`]: crate::VCpuError::VmIdInUse
    fn claim_vm(vm_id: usize) -> VCpuResult {
        let _ = vm_id;
        Ok(())
    }

    /// Invalidates every translation tagged with VM `vm_id`'s tag on every CPU, then
    /// frees the tag. The VM layer calls it when the VM goes away: after its vCPUs
    /// are dropped, before its memory and page tables are freed (a CPU could
    /// otherwise still hold translations to them under a tag a new VM gets).
    fn release_vm(vm_id: usize) {
        let _ = vm_id;
    }

    /// The TLB tag (VMID, ASID) live VM `vm_id` holds, as the hardware sees it: what
    /// diagnostics print beside the root registers. `None` when the VM holds none
    /// (the default: hardware without tags).
    fn vm_tag(vm_id: usize) -> Option<u16> {
        let _ = vm_id;
        None
    }

    /// Creates vCPU `vcpu_id` (its index in the VM) of VM `vm_id` (which claimed its
    /// tag with [`ArchVCpu::claim_vm`]).
    fn new(vm_id: usize, vcpu_id: usize, config: Self::CreateConfig) -> VCpuResult<Self>;

    /// The id the guest names this vCPU by: its MPIDR affinity (Aff3..Aff0), hart
    /// id, or APIC id, as CPU-on calls and IPI masks carry it. The VM layer maps it to
    /// the vCPU index, and refuses a VM where two vCPUs share one.
    fn cpu_id(&self) -> u64;

    /// Points the vCPU at the nested page table rooted at `root` (EPTP, nCR3,
    /// VTTBR_EL2 or hgatp, with the VM's VMID/ASID).
    fn set_nested_root(&mut self, root: HostPhysAddr) -> VCpuResult;

    /// Sets the guest PC for the first entry (and resets the vCPU to the state a
    /// started CPU has).
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

    /// Puts `arg` where a secondary vCPU started by CPU on finds its start argument:
    /// Arm x0 (PSCI CPU_ON `context_id`), RISC-V a1 (SBI HSM `opaque`, with a0 =
    /// hart id), x86 RDI (our `StartCpu` convention). Called by the VM layer before
    /// the vCPU's first run, after [`ArchVCpu::set_entry`].
    fn set_start_arg(&mut self, arg: u64) -> VCpuResult;

    /// Queues interrupt `vector` for the guest.
    fn inject_interrupt(&mut self, vector: usize) -> VCpuResult;

    /// Invalidates every guest translation this vCPU may cache for its VM (stage-2 /
    /// combined TLB entries of the VMID/ASID), on the current physical CPU, before
    /// the next entry. Called by the VM layer after a shootdown request.
    fn invalidate_guest_tlb(&mut self);

    /// Whether this vCPU carries out `service` itself when the VM layer grants a call
    /// of it (RISC-V: [`Service::Timer`] with Sstc, [`Service::RemoteFence`]). The
    /// VM layer offers such a service only where this says so.
    fn provides(&self, service: Service) -> bool {
        let _ = service;
        false
    }

    /// Decodes the memory access of `fault` (an exit of this vCPU, which has not run
    /// since): from what the exit carries, with the registers for a store's value,
    /// and by fetching the instruction through `mem` in the guest's current mode when
    /// the exit carries nothing.
    fn decode_mmio(
        &self,
        fault: &NestedFault,
        mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError>;

    /// Completes an emulated access: for a load, writes `read_value` (cut to the
    /// access width, sign-extended if the instruction says so) to the destination
    /// register; then steps the PC over the instruction. With `read_value = None` a
    /// load is skipped without touching its register (a refused access).
    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult;

    /// Answers `call` (an exit of this vCPU, which has not run since) with `reply`,
    /// in the registers and codes of the call's conduit, carrying out what a granted
    /// call asks of the vCPU itself (see [`ArchVCpu::provides`]), and steps the PC
    /// over the calling instruction.
    fn complete_call(&mut self, call: &GuestCall, reply: FirmwareReply) -> VCpuResult;

    /// Completes a trapped system-register access: a read puts `read_value` in its
    /// destination register (nothing with `None`); then the PC steps over the
    /// instruction.
    fn complete_sysreg(&mut self, access: &SysRegAccess, read_value: Option<u64>) -> VCpuResult;

    /// Completes port I/O `io` (an [`ExitReason::Io`] of this vCPU, which has not run
    /// since; the PC is already past the instruction): an `IN` puts `read_value` in
    /// the accumulator (x86 AL/AX/EAX, see [`crate::AccessWidth::write_register`]);
    /// an `OUT` or `None` changes nothing. Architectures without port I/O refuse
    /// it (the default).
    fn complete_io(&mut self, io: &PortIo, read_value: Option<u64>) -> VCpuResult {
        let _ = (io, read_value);
        Err(VCpuError::Unsupported {
            feature: "port I/O",
        })
    }

    /// Lets the guest reach host ports `[first, first + count)` directly: its `IN`
    /// and `OUT` there no longer exit (x86: the I/O permission map's bits cleared).
    /// The VM layer calls it before the first run, only for ports the platform
    /// granted. Architectures without port I/O refuse it (the default).
    fn pass_through_ports(&mut self, first: u16, count: u16) -> VCpuResult {
        let _ = (first, count);
        Err(VCpuError::Unsupported {
            feature: "port I/O",
        })
    }
}
