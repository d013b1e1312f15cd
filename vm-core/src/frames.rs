//! [`HalFrames`]: the frame allocator of every VM's address space, backed by the
//! platform's [`VmHal`](crate::VmHal).

use addrspace::{FrameAllocator, HostPhysAddr, HostVirtAddr};

/// A zero-sized [`FrameAllocator`] that forwards to the [`VmHal`](crate::VmHal)
/// implementation linked into the binary.
#[derive(Clone, Copy, Debug, Default)]
pub struct HalFrames;

// SAFETY: `VmHal` implementations promise the same contract as `FrameAllocator`
// (contiguous aligned frames owned until freed, `phys_to_virt` mapping them for the
// hypervisor), and the HAL is callable from every CPU.
unsafe impl FrameAllocator for HalFrames {
    #[inline]
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        crate_interface::call_interface!(crate::hal::VmHal::alloc_frames(count, align_frames))
    }

    #[inline]
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        crate_interface::call_interface!(crate::hal::VmHal::dealloc_frames(hpa, count))
    }

    #[inline]
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        crate_interface::call_interface!(crate::hal::VmHal::phys_to_virt(hpa))
    }
}
