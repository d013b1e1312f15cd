//! The hardware abstraction each platform implements once, as a `crate_interface`
//! link-time trait: memory, identity, interrupts, cross-CPU kicks and time.

use addrspace::{GpaRange, HostPhysAddr, HostVirtAddr};

/// What `vm-core` needs from the platform. Implement it with
/// `#[crate_interface::impl_interface] impl VmHal for MyHal { .. }` in exactly one
/// crate of the final binary.
#[crate_interface::def_interface]
pub trait VmHal {
    /// Allocates `count` contiguous 4 KiB frames aligned to `align_frames` frames.
    fn alloc_frames(count: usize, align_frames: usize) -> Option<HostPhysAddr>;

    /// Frees frames from [`VmHal::alloc_frames`]: a contiguous run of frames of one
    /// allocation, all of it or a part (a 2 MiB block of lazily populated guest
    /// memory is freed whole, or page by page after an unmap split it).
    fn dealloc_frames(hpa: HostPhysAddr, count: usize);

    /// Reserves the host-physical range `[hpa, hpa + size)` for a VM's identity-mapped
    /// RAM; `false` when any part of it is not free RAM.
    fn alloc_memory_region_at(hpa: HostPhysAddr, size: usize) -> bool;

    /// Gives back a range from [`VmHal::alloc_memory_region_at`].
    fn dealloc_memory_region_at(hpa: HostPhysAddr, size: usize);

    /// Where the hypervisor sees host-physical `hpa`.
    fn phys_to_virt(hpa: HostPhysAddr) -> HostVirtAddr;

    /// The host-physical address behind hypervisor-virtual `hva`.
    fn virt_to_phys(hva: HostVirtAddr) -> HostPhysAddr;

    /// Id of the VM running on this physical CPU, if any.
    fn current_vm_id() -> Option<usize>;

    /// Id of the vCPU running on this physical CPU, if any.
    fn current_vcpu_id() -> Option<usize>;

    /// Id of this physical CPU.
    fn current_pcpu_id() -> usize;

    /// Makes vCPU `vcpu_id` of VM `vm_id` see interrupt `irq` (injecting it now or
    /// at its next entry); `false` when no such vCPU exists.
    fn inject_irq(vm_id: usize, vcpu_id: usize, irq: usize) -> bool;

    /// Forces physical CPU `pcpu_id` out of guest mode soon (an IPI on hardware, a
    /// flag the software vCPU polls on the mock). The vCPU returns
    /// `ExitReason::Kicked` unless another exit comes first.
    fn kick_pcpu(pcpu_id: usize);

    /// Invalidates the nested translations of VM `vm_id` (under the VMID the
    /// platform gives it) for `range` on every physical CPU with a broadcast
    /// operation (Arm `TLBI IPAS2E1IS` + `VMALLE1IS`, RISC-V remote `HFENCE.GVMA`) and
    /// returns `true` once complete; returns `false` when the platform has no
    /// broadcast, and vm-core then kicks each vCPU in guest mode and waits for its
    /// acknowledgement.
    fn broadcast_guest_tlb_invalidate(vm_id: usize, range: GpaRange) -> bool;

    /// Monotonic time in nanoseconds.
    fn now_ns() -> u64;
}
