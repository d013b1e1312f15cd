//! The board's `vm_core::VmHal`: frames from the multiboot memory map
//! ([`FRAMES`]), identity-mapped physical memory, one physical CPU.
//!
//! One pCPU runs every vCPU (see `run.rs`), so while the hypervisor runs no vCPU is
//! in guest mode: `kick_pcpu` never has a guest to interrupt and TLB coherency
//! reduces to the flush-on-next-entry half of vm-core's protocol
//! (`invalidate_guest_tlb` sets TLB_CONTROL for the next VMRUN).

use addrspace::{BitmapFrames, GpaRange, HostPhysAddr};

/// Frames of the first 1 GiB of physical memory, one bit each; physical memory is
/// identity-mapped (virt = phys) by the boot code, which maps the first 4 GiB.
/// Frames are zeroed with `hal_x86_64::zero_memory` (`CLZERO` or `MOVNTI` for
/// large blocks).
// SAFETY: the boot code identity-maps the first 4 GiB, which holds the whole window,
// so every frame given as RAM is readable and writable at its physical address;
// `zero_memory` keeps the `ZeroFn` promise (its tests).
pub(crate) static FRAMES: BitmapFrames<4096> =
    unsafe { BitmapFrames::with_zeroing(HostPhysAddr::from_usize(0), 0, hal_x86_64::zero_memory) };

// SAFETY: `memory` always returns `FRAMES`, the one pool every frame comes from;
// `broadcast_guest_tlb_invalidate` never claims to have invalidated anything (it
// returns `false`).
platforms::board_vm_hal!(unsafe impl VmHal for BoardHal, memory = FRAMES);

fn current_pcpu_id() -> usize {
    0
}

/// The test VM has no interrupt controller (interrupt_mode = "no_irq").
fn inject_irq(_vm_id: usize, _vcpu_id: usize, _irq: usize) -> bool {
    false
}

fn kick_pcpu(pcpu_id: usize) {
    // pCPU 0 is the only one and is running this code, so no guest runs on it.
    if pcpu_id != 0 {
        log::error!("kick of pCPU {pcpu_id}, which this board does not have");
    }
}

/// No broadcast on x86: vm-core falls back to kicks (none needed here) and the
/// flush before each vCPU's next VMRUN.
fn broadcast_guest_tlb_invalidate(_vm_id: usize, _range: GpaRange) -> bool {
    false
}

fn now_ns() -> u64 {
    // SAFETY: RDTSC has no side effects. QEMU's TSC ticks at its nominal frequency
    // (about 1 GHz or more), so cycles are a usable upper bound of ns.
    unsafe { core::arch::x86_64::_rdtsc() }
}
