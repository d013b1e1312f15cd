//! Where page-table and guest-memory frames come from: the [`FrameAllocator`] trait.
//! It is taken by value or by reference (methods take `&self`), so two address spaces
//! with different allocators live side by side; nothing here is global.

use crate::{HostPhysAddr, HostVirtAddr, zero_plain};

/// Bytes in a frame.
pub const FRAME_SIZE: usize = 0x1000;

/// Hands out 4 KiB host-physical frames and tells where the hypervisor sees them.
///
/// # Safety
///
/// Implementations promise that:
/// - `alloc_frames(count, align)` returns the first of `count` contiguous frames whose
///   address is a multiple of `align * FRAME_SIZE`, used by nothing else until they are
///   given back with `dealloc_frames`;
/// - `phys_to_virt(hpa)` returns an address at which the hypervisor may read and write
///   the frame of `hpa` for as long as that frame is allocated, with contiguous frames
///   of one allocation contiguous in the virtual view as well;
/// - `alloc_zeroed` (when overridden) returns frames as `alloc_frames` does whose
///   every byte reads as zero;
/// - `zero_frames` (when overridden) writes zero to every byte of the frames it is
///   given and nothing else, its stores ordered with the caller's later stores as
///   ordinary stores are (weakly ordered stores are fenced before it returns);
/// - `linear_offset` (when overridden) returns the same value for the allocator's
///   whole life, and when that is `Some(off)`, `phys_to_virt(hpa)` is
///   `hpa + off` (wrapping) for every frame it hands out;
/// - `dealloc_frames` takes back any contiguous run of frames of one earlier
///   allocation (a 2 MiB block of guest memory is given back whole, or page by page
///   after an unmap split it);
/// - all methods may be called from any thread if the type is `Sync`.
pub unsafe trait FrameAllocator {
    /// Allocates `count` contiguous frames aligned to `align_frames` frames (a power of
    /// two). The contents are unspecified. Returns `None` when out of memory.
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr>;

    /// Gives back frames obtained from [`FrameAllocator::alloc_frames`].
    ///
    /// # Safety
    ///
    /// `hpa` and `count` name a contiguous run of frames of one earlier allocation
    /// from this allocator (all of it or a part) that has not been given back;
    /// nothing uses those frames any more (no table links to them, no vCPU can still
    /// reach them through a cached translation).
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize);

    /// The hypervisor's virtual address of `hpa`.
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr;

    /// `Some(off)` when [`FrameAllocator::phys_to_virt`] is the linear map
    /// `hpa + off` (wrapping) for every frame, for the allocator's whole life (see
    /// the trait's contract); `None` (the default) when it is anything else or not
    /// known. A page table reads it once, when it is created, and then reaches its
    /// tables by one addition instead of a `phys_to_virt` call: on the path of every
    /// walk, including each cold translate.
    #[inline]
    fn linear_offset(&self) -> Option<usize> {
        None
    }

    /// Allocates one frame.
    #[inline]
    fn alloc_frame(&self) -> Option<HostPhysAddr> {
        self.alloc_frames(1, 1)
    }

    /// Allocates as [`FrameAllocator::alloc_frames`] frames whose every byte is zero:
    /// what a guest gets. The default zeroes them through `phys_to_virt`; an
    /// allocator that knows which of its frames are still zero (memory fresh from the
    /// host, never handed out) overrides it so they are not zeroed twice.
    #[inline]
    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        let hpa = self.alloc_frames(count, align_frames)?;
        // SAFETY: the frames were just allocated, so they are ours alone.
        unsafe { self.zero_frames(hpa, count) };
        Some(hpa)
    }

    /// Zeroes the `count` frames at `hpa`: how `alloc_zeroed` clears frames. The
    /// default writes them through `phys_to_virt` with ordinary stores
    /// ([`zero_plain`]); an allocator overrides it with its platform's routine (a
    /// HAL's `zero_memory`: stores that do not read the lines first, for the large
    /// blocks a guest's memory comes in), as [`BitmapFrames::with_zeroing`] does.
    ///
    /// # Safety
    ///
    /// The caller holds those frames (allocated from this allocator, not given back)
    /// and nothing else reads or writes them during the call.
    ///
    /// [`BitmapFrames::with_zeroing`]: crate::BitmapFrames::with_zeroing
    #[inline]
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        let ptr = self.phys_to_virt(hpa).as_mut_ptr::<u8>();
        // SAFETY: the caller holds the frames, which the contract maps writable and
        // contiguously at `ptr`.
        unsafe { zero_plain(ptr, count * FRAME_SIZE) };
    }
}

// SAFETY: forwards every call to `A`, which upholds the contract.
unsafe impl<A: FrameAllocator + ?Sized> FrameAllocator for &A {
    #[inline]
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        (**self).alloc_frames(count, align_frames)
    }
    #[inline]
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller upholds the contract for `A`.
        unsafe { (**self).dealloc_frames(hpa, count) }
    }
    #[inline]
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        (**self).phys_to_virt(hpa)
    }
    #[inline]
    fn linear_offset(&self) -> Option<usize> {
        (**self).linear_offset()
    }
    #[inline]
    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        (**self).alloc_zeroed(count, align_frames)
    }
    #[inline]
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller upholds the contract for `A`.
        unsafe { (**self).zero_frames(hpa, count) }
    }
}

// SAFETY: forwards every call to `A`, which upholds the contract.
unsafe impl<A: FrameAllocator + ?Sized> FrameAllocator for alloc::sync::Arc<A> {
    #[inline]
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        (**self).alloc_frames(count, align_frames)
    }
    #[inline]
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller upholds the contract for `A`.
        unsafe { (**self).dealloc_frames(hpa, count) }
    }
    #[inline]
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        (**self).phys_to_virt(hpa)
    }
    #[inline]
    fn linear_offset(&self) -> Option<usize> {
        (**self).linear_offset()
    }
    #[inline]
    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        (**self).alloc_zeroed(count, align_frames)
    }
    #[inline]
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller upholds the contract for `A`.
        unsafe { (**self).zero_frames(hpa, count) }
    }
}
