//! The board's `vm_core::VmHal`: frames from the bitmap pool, identity physical ↔
//! virtual mapping, per-CPU identity, kicks by GIC SGI, broadcast stage-2 TLB
//! invalidation, time from the generic timer.

use core::sync::atomic::{AtomicUsize, Ordering};

use addrspace::{FRAME_SIZE, HostPhysAddr, HostVirtAddr};
use spin::Mutex;

use crate::boot::MAX_CPUS;
use crate::frames::BitmapFrames;

/// The frame pool (set up once at boot).
static FRAMES: Mutex<Option<BitmapFrames>> = Mutex::new(None);

/// Gives the pool `[base, base + size)` to the allocator.
pub(crate) fn init_frames(base: usize, size: usize) {
    *FRAMES.lock() = Some(BitmapFrames::new(base, size));
}

/// Frames currently free in the pool.
pub(crate) fn free_frames() -> usize {
    FRAMES.lock().as_ref().map_or(0, BitmapFrames::free_frames)
}

const NONE: usize = usize::MAX;
static CURRENT_VM: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(NONE) }; MAX_CPUS];
static CURRENT_VCPU: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(NONE) }; MAX_CPUS];

/// Records which vCPU this physical CPU runs (`None` when idle).
pub(crate) fn set_current(vm_vcpu: Option<(usize, usize)>) {
    let cpu = hal_aarch64::hw::cpu_id();
    let (vm, vcpu) = vm_vcpu.unwrap_or((NONE, NONE));
    if let (Some(a), Some(b)) = (CURRENT_VM.get(cpu), CURRENT_VCPU.get(cpu)) {
        a.store(vm, Ordering::SeqCst);
        b.store(vcpu, Ordering::SeqCst);
    }
}

fn current(table: &[AtomicUsize; MAX_CPUS]) -> Option<usize> {
    table
        .get(hal_aarch64::hw::cpu_id())
        .map(|a| a.load(Ordering::SeqCst))
        .filter(|&v| v != NONE)
}

struct BoardHal;

#[crate_interface::impl_interface]
impl vm_core::VmHal for BoardHal {
    fn alloc_frames(count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        FRAMES
            .lock()
            .as_mut()?
            .alloc(count, align_frames)
            .map(HostPhysAddr::from_usize)
    }

    fn dealloc_frames(hpa: HostPhysAddr, count: usize) {
        let result = FRAMES
            .lock()
            .as_mut()
            .map(|f| f.dealloc(hpa.as_usize(), count));
        if let Some(Err(e)) = result {
            log::error!("freeing {count} frames at {hpa:?}: {e:?}");
        }
    }

    fn alloc_memory_region_at(hpa: HostPhysAddr, size: usize) -> bool {
        FRAMES
            .lock()
            .as_mut()
            .is_some_and(|f| f.alloc_at(hpa.as_usize(), size.div_ceil(FRAME_SIZE)))
    }

    fn dealloc_memory_region_at(hpa: HostPhysAddr, size: usize) {
        Self::dealloc_frames(hpa, size.div_ceil(FRAME_SIZE));
    }

    fn phys_to_virt(hpa: HostPhysAddr) -> HostVirtAddr {
        // The EL2 stage-1 map is the identity (boot.rs).
        HostVirtAddr::from_usize(hpa.as_usize())
    }

    fn virt_to_phys(hva: HostVirtAddr) -> HostPhysAddr {
        HostPhysAddr::from_usize(hva.as_usize())
    }

    fn current_vm_id() -> Option<usize> {
        current(&CURRENT_VM)
    }

    fn current_vcpu_id() -> Option<usize> {
        current(&CURRENT_VCPU)
    }

    fn current_pcpu_id() -> usize {
        hal_aarch64::hw::cpu_id()
    }

    fn inject_irq(_vm_id: usize, _vcpu_id: usize, _irq: usize) -> bool {
        // No virtual interrupt controller yet (the test guest runs with interrupts
        // masked): refused, as the interface allows.
        false
    }

    fn kick_pcpu(pcpu_id: usize) {
        crate::gic::kick(pcpu_id);
    }

    fn broadcast_guest_tlb_invalidate(vmid: usize, gpa: usize, size: usize) -> bool {
        hal_aarch64::tlb::flush_guest_range(
            hal_aarch64::tlb::vmid_of(vmid),
            addrspace::GuestPhysAddr::from_usize(gpa),
            size,
        );
        true
    }

    fn now_ns() -> u64 {
        hal_aarch64::hw::now_ns()
    }
}
