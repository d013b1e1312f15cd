//! The hardware abstraction each platform implements once, as a `crate_interface`
//! link-time trait: the host memory VMs are built from, which physical CPU runs, how
//! to kick one out of a guest, broadcast TLB invalidation, and time.

use addrspace::{FrameAllocator, GpaRange};

/// What `vm-core` needs from the platform. Implement it with
/// `#[crate_interface::impl_interface] unsafe impl VmHal for MyHal { .. }` in exactly
/// one crate of the final binary.
///
/// # Safety
///
/// vm-core's memory safety rests on two promises of the implementation:
/// - [`VmHal::memory`] returns the same allocator on every call, from every CPU:
///   every frame of every VM (page tables, allocated guest RAM, identical regions,
///   vCPU state) comes from it and goes back to it, and [`crate::HalFrames`]' own
///   [`FrameAllocator`] contract (frames owned until given back, mapped for the
///   hypervisor by `phys_to_virt`) is that allocator's.
/// - [`VmHal::broadcast_guest_tlb_invalidate`] returns `true` only once no CPU can
///   use a translation of the range for that VM any more: vm-core then gives the
///   frames the range mapped back to the allocator, and the guest must not reach
///   them again.
///
/// The other functions promise nothing vm-core's memory safety depends on: a lost
/// kick, a wrong CPU id or a clock that stalls makes a shootdown wait (and warn),
/// never free early.
#[crate_interface::def_interface]
pub unsafe trait VmHal {
    /// The host memory every VM's frames come from.
    fn memory() -> &'static (dyn FrameAllocator + Sync);

    /// Id of this physical CPU (what [`VmHal::kick_pcpu`] takes).
    fn current_pcpu_id() -> usize;

    /// Delivers interrupt `irq` to vCPU `vcpu_id` of VM `vm_id` through the
    /// platform's interrupt controller for that VM (now or at its next entry);
    /// `false` when the platform knows no such VM or vCPU, or has no controller.
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
