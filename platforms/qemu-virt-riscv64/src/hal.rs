//! The board's `vm_core::VmHal`: frames from [`FRAMES`] (the RAM between the image and
//! the DTB), physical memory seen as is (the hypervisor runs with `satp` = Bare), the
//! hart id in `tp` as the pCPU id, kicks as SBI IPIs (a supervisor software interrupt
//! that makes the guest on that hart exit), and guest TLB shootdowns as HFENCE.GVMA
//! here plus a remote HFENCE.GVMA through the firmware on every hart.

use core::sync::atomic::{AtomicUsize, Ordering};

use addrspace::{BitmapFrames, GpaRange, HostPhysAddr};

use crate::boot::{MAX_HARTS, hart_id, now_ns};

/// QEMU virt's RAM starts here.
const RAM_BASE: usize = 0x8000_0000;

/// Frames of the first 2 GiB of RAM (xtask gives QEMU 128 MiB for the test guest and
/// 2 GiB for Linux; RAM past the window is left out), one bit each (64 KiB of
/// bitmap); physical memory is seen as is.
/// Frames are zeroed with `hal_riscv64::zero_memory`.
// SAFETY: HS-mode runs with translation off (bare), so every frame of the window
// given as RAM is readable and writable at its physical address; `zero_memory`
// keeps the `ZeroFn` promise (its tests).
pub(crate) static FRAMES: BitmapFrames<8192> = unsafe {
    BitmapFrames::with_zeroing(
        HostPhysAddr::from_usize(RAM_BASE),
        0,
        hal_riscv64::zero_memory,
    )
};

/// Per hart: the VM and vCPU it runs (`usize::MAX`: none).
static CURRENT: [(AtomicUsize, AtomicUsize); MAX_HARTS] =
    [const { (AtomicUsize::new(usize::MAX), AtomicUsize::new(usize::MAX)) }; MAX_HARTS];

/// Records what this hart runs, for `current_vm_id`/`current_vcpu_id`.
pub(crate) fn set_current(vm: Option<usize>, vcpu: Option<usize>) {
    if let Some((v, c)) = CURRENT.get(hart_id()) {
        v.store(vm.unwrap_or(usize::MAX), Ordering::SeqCst);
        c.store(vcpu.unwrap_or(usize::MAX), Ordering::SeqCst);
    }
}

/// The vCPU this hart runs, if any.
pub(crate) fn current_vcpu() -> Option<usize> {
    current(|c| &c.1)
}

fn current(pick: impl Fn(&(AtomicUsize, AtomicUsize)) -> &AtomicUsize) -> Option<usize> {
    let v = pick(CURRENT.get(hart_id())?).load(Ordering::SeqCst);
    (v != usize::MAX).then_some(v)
}

// SAFETY: `memory` always returns `FRAMES`, the one pool every frame comes from;
// `broadcast_guest_tlb_invalidate` returns `true` only when the firmware's remote
// HFENCE.GVMA of the whole VMID returned success, which it does once every hart has
// fenced (`broadcast_hfence_gvma`).
platforms::board_vm_hal!(unsafe impl VmHal for BoardHal, memory = FRAMES);

fn current_pcpu_id() -> usize {
    hart_id()
}

/// No virtual interrupt controller on this board yet.
fn inject_irq(_vm_id: usize, _vcpu_id: usize, _irq: usize) -> bool {
    false
}

fn kick_pcpu(pcpu_id: usize) {
    if let Err(e) = hal_riscv64::cpu::send_ipi(pcpu_id as u64) {
        log::error!("kick of hart {pcpu_id}: SBI send_ipi failed with {e}");
    }
}

fn broadcast_guest_tlb_invalidate(vm_id: usize, range: GpaRange) -> bool {
    // No live VM with this id: nothing of it can be in a TLB.
    let Some(vmid) = hal_riscv64::vmid_for(vm_id) else {
        return true;
    };
    let (gpa, size) = (range.start().as_usize() as u64, range.size() as u64);
    match hal_riscv64::broadcast_hfence_gvma(vmid, gpa, size) {
        Ok(()) => true,
        Err(e) => {
            // vm-core falls back to kicking the vCPUs in the guest.
            log::warn!("remote HFENCE.GVMA failed with SBI error {e}; kicking instead");
            false
        }
    }
}
