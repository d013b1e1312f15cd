//! [`MockHal`]: `vm_core::VmHal` on the host, forwarding every call to the calling
//! thread's [`Machine`](crate::Machine).

use addrspace::{FrameAllocator, GpaRange, HostPhysAddr, HostVirtAddr};
use vm_core::{GrantKind, GrantedRange, HostGrant, VmConfig};

use crate::machine::Machine;

/// The host HAL. Linking `hal-mock` provides the `VmHal` implementation; each
/// thread that calls into `vm-core` must have entered a machine
/// ([`Machine::enter`]), and every thread that touches a VM the same one.
#[derive(Debug)]
pub struct MockHal;

/// The frames of the calling thread's machine.
struct MachineFrames;

/// The one [`MachineFrames`] `MockHal::memory` returns.
static FRAMES: MachineFrames = MachineFrames;

// SAFETY: every call goes to the calling thread's machine, and every thread that
// touches a VM has entered the VM's machine (the crate's rule): frames go back to the
// pool they came from. The machine's pool hands out frames of its own memory block,
// owned until freed, which `phys_to_virt` maps contiguously; its `alloc_zeroed`
// leaves unwritten only frames never handed out (the block came zeroed from the host).
unsafe impl FrameAllocator for MachineFrames {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        Machine::current().alloc_frames(count, align_frames)
    }

    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        Machine::current().alloc_zeroed(count, align_frames)
    }

    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller holds the frames, which came from this machine's pool.
        unsafe { Machine::current().zero_frames(hpa, count) }
    }

    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        Machine::current().dealloc_frames(hpa, count)
    }

    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        Machine::current().phys_to_virt(hpa)
    }
}

// SAFETY: `memory` returns the same `MachineFrames` every time; a broadcast
// invalidation returns `true` only after every software TLB of the VM dropped the
// range (`Machine::broadcast_invalidate`; a test may inject a fault that breaks this
// on purpose, to show that the checks catch it).
#[crate_interface::impl_interface]
unsafe impl vm_core::VmHal for MockHal {
    fn memory() -> &'static (dyn FrameAllocator + Sync) {
        &FRAMES
    }

    fn inject_irq(vm_id: usize, vcpu_id: usize, irq: usize) -> bool {
        Machine::current().inject(vm_id, vcpu_id, irq)
    }

    fn current_pcpu_id() -> usize {
        Machine::current_pcpu()
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

/// A grant of every pass-through device range `config` names (widened to whole
/// pages) and of its pass-through ports, for building mock VMs: the mock never
/// reaches device memory (its vCPUs fault on a DEVICE mapping, vm-core's copies
/// refuse device areas), so any address is safe to grant as a device, and its host
/// ports are byte latches ([`crate::Machine::port_in`]). Reserved RAM is not
/// granted: it would have to be the machine's memory.
pub fn grant_devices(config: &VmConfig) -> HostGrant {
    let devices = &config.devices;
    let ranges = devices
        .passthrough_devices
        .iter()
        .map(|d| (d.base_hpa.as_usize(), d.length))
        .chain(
            devices
                .passthrough_addresses
                .iter()
                .map(|a| (a.base_gpa.as_usize(), a.length)),
        )
        .map(|(start, len)| {
            let first = start & !(addrspace::PAGE_SIZE - 1);
            let end = start
                .saturating_add(len)
                .saturating_add(addrspace::PAGE_SIZE - 1)
                & !(addrspace::PAGE_SIZE - 1);
            GrantedRange::new(
                HostPhysAddr::from_usize(first),
                end - first,
                GrantKind::Device,
            )
        });
    let ports = devices
        .passthrough_ports
        .iter()
        .map(|p| GrantedRange::ports(p.base, p.length));
    // SAFETY: device ranges, which nothing in the mock dereferences, and the
    // machine's port latches, which reach no memory (above).
    unsafe { HostGrant::new(ranges.chain(ports)) }
}
