//! [`HalFrames`]: the frame allocator of every VM's address space, backed by the
//! platform's [`VmHal::memory`](crate::VmHal::memory).

use addrspace::{FrameAllocator, HostPhysAddr, HostVirtAddr};

/// A zero-sized [`FrameAllocator`] that forwards to the allocator the
/// [`VmHal`](crate::VmHal) implementation linked into the binary gives.
#[derive(Clone, Copy, Debug, Default)]
pub struct HalFrames;

/// The platform's allocator.
#[inline]
fn memory() -> &'static (dyn FrameAllocator + Sync) {
    crate_interface::call_interface!(crate::hal::VmHal::memory())
}

// SAFETY: every call goes to the one allocator `VmHal::memory` returns on every call
// (the unsafe trait's promise), whose own `FrameAllocator` implementation keeps the
// contract; it is `Sync`, so any CPU may call it.
unsafe impl FrameAllocator for HalFrames {
    #[inline]
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        memory().alloc_frames(count, align_frames)
    }

    #[inline]
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: forwarded: the caller's promise about `hpa` and `count` holds for
        // the allocator they came from, which is this one.
        unsafe { memory().dealloc_frames(hpa, count) }
    }

    #[inline]
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        memory().phys_to_virt(hpa)
    }

    /// The platform allocator's: the boards' are linear maps.
    #[inline]
    fn linear_offset(&self) -> Option<usize> {
        memory().linear_offset()
    }

    /// The platform's own `alloc_zeroed`: frames it knows are still zero are not
    /// zeroed again.
    #[inline]
    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        memory().alloc_zeroed(count, align_frames)
    }

    /// The platform's own routine (its HAL's `zero_memory`).
    #[inline]
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: forwarded: the caller holds the frames, from this same allocator.
        unsafe { memory().zero_frames(hpa, count) }
    }
}
