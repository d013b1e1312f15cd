//! The board's `vm_core::VmHal`: frames from the bitmap pool (identity physical ↔
//! virtual mapping), the CPU id, kicks by GIC SGI, broadcast stage-2 TLB
//! invalidation, time from the generic timer.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use addrspace::{BitmapFrames, GpaRange, HostPhysAddr};
// The VmHal functions `board_vm_hal!` calls, under the trait's names.
use hal_aarch64::cpu::{cpu_id as current_pcpu_id, now_ns};

use crate::boot::MAX_CPUS;
use crate::gic::kick as kick_pcpu;

/// The frame pool: the first 1 GiB of QEMU virt's RAM (from 0x4000_0000), one bit
/// per frame (32 KiB). xtask gives QEMU 512 MiB; RAM past the window is left out.
/// Boot gives it the RAM after the image and the heap; the EL2 map is the identity.
/// Frames are zeroed with `DC ZVA` (`hal_aarch64::zero_memory`).
// SAFETY: the EL2 map is the identity for all of RAM (boot code), so every frame of
// the window given as RAM is readable and writable at its physical address, as
// Normal memory (which `DC ZVA` needs; every CPU turns its MMU on before it runs
// anything that allocates); `zero_memory` keeps the `ZeroFn` promise (its tests).
pub(crate) static FRAMES: BitmapFrames<4096> = unsafe {
    BitmapFrames::with_zeroing(
        HostPhysAddr::from_usize(0x4000_0000),
        0,
        hal_aarch64::zero_memory,
    )
};

/// Frames currently free in the pool.
pub(crate) fn free_frames() -> usize {
    FRAMES.free_frames()
}

/// How [`inject_irq`] reaches a VM's virtual interrupt controller: `(vcpu,
/// irq) -> delivered`.
pub(crate) type Injector = Arc<dyn Fn(usize, usize) -> bool + Send + Sync>;

/// The VMs with a virtual interrupt controller, by VM id.
static INJECTORS: spin::Mutex<Vec<(usize, Injector)>> = spin::Mutex::new(Vec::new());

/// Makes [`inject_irq`] reach VM `vm_id` through `inject` until
/// [`unregister_injector`].
pub(crate) fn register_injector(vm_id: usize, inject: Injector) {
    let mut all = INJECTORS.lock();
    all.retain(|(id, _)| *id != vm_id);
    all.push((vm_id, inject));
}

/// VM `vm_id` is gone.
pub(crate) fn unregister_injector(vm_id: usize) {
    INJECTORS.lock().retain(|(id, _)| *id != vm_id);
}

const NONE: usize = usize::MAX;
static CURRENT_VM: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(NONE) }; MAX_CPUS];
static CURRENT_VCPU: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(NONE) }; MAX_CPUS];

/// Records which vCPU this physical CPU runs (`None` when idle).
pub(crate) fn set_current(vm_vcpu: Option<(usize, usize)>) {
    let cpu = hal_aarch64::cpu::cpu_id();
    let (vm, vcpu) = vm_vcpu.unwrap_or((NONE, NONE));
    if let (Some(a), Some(b)) = (CURRENT_VM.get(cpu), CURRENT_VCPU.get(cpu)) {
        a.store(vm, Ordering::SeqCst);
        b.store(vcpu, Ordering::SeqCst);
    }
}

/// The vCPU this physical CPU runs, if any (the doorbell's `current_vcpu`).
pub(crate) fn current_vcpu() -> Option<usize> {
    current(&CURRENT_VCPU)
}

fn current(table: &[AtomicUsize; MAX_CPUS]) -> Option<usize> {
    table
        .get(hal_aarch64::cpu::cpu_id())
        .map(|a| a.load(Ordering::SeqCst))
        .filter(|&v| v != NONE)
}

/// Makes vCPU `vcpu_id` of VM `vm_id` see interrupt `irq` through the VM's
/// registered injector; `false` when no such VM (or the injector refuses it).
pub(crate) fn inject_irq(vm_id: usize, vcpu_id: usize, irq: usize) -> bool {
    // The injector is cloned out so the VM's own locks are taken without ours.
    let inject = INJECTORS
        .lock()
        .iter()
        .find(|(id, _)| *id == vm_id)
        .map(|(_, f)| f.clone());
    inject.is_some_and(|f| f(vcpu_id, irq))
}

// SAFETY: `memory` always returns `FRAMES`, the one pool every frame comes from;
// `broadcast_guest_tlb_invalidate` returns `true` after `TLBI IPAS2E1IS` /
// `VMALLE1IS` and `DSB ISH` have completed on every CPU of the inner shareable
// domain (`flush_guest_range`).
platforms::board_vm_hal!(unsafe impl VmHal for BoardHal, memory = FRAMES);

fn broadcast_guest_tlb_invalidate(vm_id: usize, range: GpaRange) -> bool {
    // No live VM with this id: nothing of it can be in a TLB.
    if let Some(vmid) = hal_aarch64::tlb::vmid_of(vm_id) {
        hal_aarch64::tlb::flush_guest_range(vmid, range.start(), range.size());
    }
    true
}
