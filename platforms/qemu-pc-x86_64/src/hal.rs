//! The board's `vm_core::VmHal`: frames from the multiboot memory map
//! ([`FRAMES`]), identity-mapped physical memory, one physical CPU.
//!
//! One pCPU runs every vCPU (see `run.rs`), so while the hypervisor runs no vCPU is
//! in guest mode: `kick_pcpu` never has a guest to interrupt and TLB coherency
//! reduces to the flush-on-next-entry half of vm-core's protocol
//! (`invalidate_guest_tlb` sets TLB_CONTROL for the next VMRUN).

use core::sync::atomic::{AtomicUsize, Ordering};

use addrspace::{BitmapFrames, FRAME_SIZE, FrameAllocator, GpaRange, HostPhysAddr, HostVirtAddr};
use vm_core::VmHal;

/// Frames of the first 1 GiB of physical memory, one bit each; physical memory is
/// identity-mapped (virt = phys) by the boot code, which maps the first 4 GiB.
// SAFETY: the boot code identity-maps the first 4 GiB, which holds the whole window,
// so every frame given as RAM is readable and writable at its physical address.
pub(crate) static FRAMES: BitmapFrames<4096> =
    unsafe { BitmapFrames::new(HostPhysAddr::from_usize(0), 0) };

/// The vCPU running now (`usize::MAX`: none), for `current_vcpu_id`.
pub(crate) static CURRENT_VCPU: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The VM running now (`usize::MAX`: none).
pub(crate) static CURRENT_VM: AtomicUsize = AtomicUsize::new(usize::MAX);

struct BoardHal;

#[crate_interface::impl_interface]
impl VmHal for BoardHal {
    fn alloc_frames(count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        FRAMES.alloc_frames(count, align_frames)
    }

    fn dealloc_frames(hpa: HostPhysAddr, count: usize) {
        // SAFETY: vm-core gives back frames `alloc_frames` handed out (an allocation
        // or a run of its frames, as VmHal::dealloc_frames allows), once
        // nothing (no table, no vCPU translation) uses it any more.
        unsafe { FRAMES.dealloc_frames(hpa, count) }
    }

    fn alloc_memory_region_at(hpa: HostPhysAddr, size: usize) -> bool {
        size.is_multiple_of(FRAME_SIZE) && FRAMES.reserve(hpa, size / FRAME_SIZE)
    }

    fn dealloc_memory_region_at(hpa: HostPhysAddr, size: usize) {
        // SAFETY: the range was reserved by `alloc_memory_region_at` and the VM
        // that used it is gone.
        unsafe { FRAMES.dealloc_frames(hpa, size / FRAME_SIZE) }
    }

    fn phys_to_virt(hpa: HostPhysAddr) -> HostVirtAddr {
        FRAMES.phys_to_virt(hpa)
    }

    fn virt_to_phys(hva: HostVirtAddr) -> HostPhysAddr {
        HostPhysAddr::from_usize(hva.as_usize())
    }

    fn current_vm_id() -> Option<usize> {
        let id = CURRENT_VM.load(Ordering::Relaxed);
        (id != usize::MAX).then_some(id)
    }

    fn current_vcpu_id() -> Option<usize> {
        let id = CURRENT_VCPU.load(Ordering::Relaxed);
        (id != usize::MAX).then_some(id)
    }

    fn current_pcpu_id() -> usize {
        0
    }

    fn inject_irq(_vm_id: usize, _vcpu_id: usize, _irq: usize) -> bool {
        // The test VM has no interrupt controller (interrupt_mode = "no_irq").
        false
    }

    fn kick_pcpu(pcpu_id: usize) {
        // pCPU 0 is the only one and is running this code, so no guest runs on it.
        if pcpu_id != 0 {
            log::error!("kick of pCPU {pcpu_id}, which this board does not have");
        }
    }

    fn broadcast_guest_tlb_invalidate(_vm_id: usize, _range: GpaRange) -> bool {
        // No broadcast on x86: vm-core falls back to kicks (none needed here) and
        // the flush before each vCPU's next VMRUN.
        false
    }

    fn now_ns() -> u64 {
        // SAFETY: RDTSC has no side effects. QEMU's TSC ticks at its nominal
        // frequency (about 1 GHz or more), so cycles are a usable upper bound of ns.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}
