//! [`MockHal`]: `vm_core::VmHal` on the host, forwarding every call to the calling
//! thread's [`Machine`](crate::Machine).

use addrspace::{GpaRange, HostPhysAddr, HostVirtAddr};

use crate::machine::Machine;

/// The host HAL. Linking `hal-mock` provides the `VmHal` implementation; each
/// thread that calls into `vm-core` must have entered a machine
/// ([`Machine::enter`]).
#[derive(Debug)]
pub struct MockHal;

#[crate_interface::impl_interface]
impl vm_core::VmHal for MockHal {
    fn alloc_frames(count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        Machine::current().alloc_frames(count, align_frames)
    }

    fn dealloc_frames(hpa: HostPhysAddr, count: usize) {
        Machine::current().dealloc_frames(hpa, count)
    }

    fn alloc_memory_region_at(hpa: HostPhysAddr, size: usize) -> bool {
        Machine::current().alloc_at(hpa, size)
    }

    fn dealloc_memory_region_at(hpa: HostPhysAddr, size: usize) {
        Machine::current().dealloc_frames(hpa, size / addrspace::FRAME_SIZE)
    }

    fn phys_to_virt(hpa: HostPhysAddr) -> HostVirtAddr {
        Machine::current().phys_to_virt(hpa)
    }

    fn virt_to_phys(hva: HostVirtAddr) -> HostPhysAddr {
        Machine::current().virt_to_phys(hva)
    }

    fn current_vm_id() -> Option<usize> {
        Machine::running().map(|(vm, _)| vm)
    }

    fn current_vcpu_id() -> Option<usize> {
        Machine::running().map(|(_, vcpu)| vcpu)
    }

    fn current_pcpu_id() -> usize {
        Machine::current_pcpu()
    }

    fn inject_irq(vm_id: usize, vcpu_id: usize, irq: usize) -> bool {
        Machine::current().inject(vm_id, vcpu_id, irq)
    }

    fn kick_pcpu(pcpu_id: usize) {
        Machine::current().kick(pcpu_id)
    }

    fn broadcast_guest_tlb_invalidate(vm_id: usize, range: GpaRange) -> bool {
        Machine::current().broadcast_invalidate(vm_id, range)
    }

    /// vm-core reads the time only in its wait loops; a thread that has polled it
    /// for [`SPIN_BUDGET_NS`](crate::SPIN_BUDGET_NS) without a pause also gives up
    /// its host CPU (see [`Machine::now_ns_polled`]).
    fn now_ns() -> u64 {
        Machine::current().now_ns_polled()
    }
}
