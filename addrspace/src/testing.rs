//! Test support: [`PoolAllocator`], a frame allocator over one host allocation with
//! its own simulated host-physical range, allocation counters and failure injection,
//! on the crate's frame bitmap, and [`StrictAllocator`], a pool that also checks every
//! free names frames of one allocation. Built for tests and benchmarks (feature
//! `testing`), never for a hypervisor image.

mod strict;

pub use strict::StrictAllocator;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::atomic::{AtomicUsize, Ordering};

use spin::mutex::{SpinMutex, SpinMutexGuard};

use crate::bitmap::FrameBitmap;
use crate::{
    FRAME_SIZE, FrameAllocator, FreeError, HostPhysAddr, HostVirtAddr, ZeroFn, zero_plain,
};

/// Frames from one zero-initialised host allocation, addressed as host-physical
/// `[base, base + frames * 4 KiB)`.
///
/// It counts allocations and frees, can be told to fail after a number of frames,
/// and checks every free (double frees and foreign frames panic: this is test code).
/// Frames above every frame handed out so far are still zero (the memory came zeroed
/// from the host), so [`FrameAllocator::alloc_zeroed`] does not zero them again.
pub struct PoolAllocator {
    base: usize,
    frames: usize,
    /// The first frame (`block` aligned up to a frame).
    mem: *mut u8,
    /// The host allocation, one frame larger than the pool.
    block: *mut u8,
    layout: Layout,
    /// Behind a spin lock, as the hypervisor's own allocator ([`crate::BitmapFrames`])
    /// keeps its bitmap: one atomic exchange to take it, a plain store to give it
    /// back, so the benchmarks' frame costs are a hypervisor's (waiting threads
    /// yield, as test threads outnumber the cores).
    bitmap: SpinMutex<FrameBitmap<Vec<u64>>, YieldNow>,
    /// Frames handed out and given back: changed under the bitmap's lock (a load
    /// and a store, no atomic read-modify-write), read without it.
    allocated: AtomicUsize,
    freed: AtomicUsize,
    /// Frames that may still be handed out before allocation fails.
    budget: AtomicUsize,
    /// Every frame from this index on has never been handed out (still zero);
    /// changed under the bitmap's lock.
    untouched: AtomicUsize,
    /// Frames handed out by `alloc_zeroed` without zeroing.
    fresh: AtomicUsize,
    /// How `alloc_zeroed` zeroes frames that are not fresh.
    zero: ZeroFn,
}

// SAFETY: the pool memory is only reached through `phys_to_virt` by users that own
// the frames; the bitmap is behind a lock and the counters are atomic.
unsafe impl Send for PoolAllocator {}
// SAFETY: as above; `&PoolAllocator` only exposes synchronised state.
unsafe impl Sync for PoolAllocator {}

impl PoolAllocator {
    /// A pool of `frames` frames at host-physical 0x8000_0000.
    pub fn new(frames: usize) -> Self {
        Self::with_base(frames, 0x8000_0000)
    }

    /// A pool of `frames` frames at host-physical `base` (1 GiB-aligned is best for
    /// huge-leaf tests).
    ///
    /// # Panics
    ///
    /// If `base` is not frame-aligned, the pool's end does not fit in an address,
    /// or the host cannot provide the memory (test code).
    pub fn with_base(frames: usize, base: usize) -> Self {
        let frames = frames.max(1);
        assert!(
            base.is_multiple_of(FRAME_SIZE),
            "pool base {base:#x} not frame-aligned"
        );
        let bytes = frames
            .checked_mul(FRAME_SIZE)
            .filter(|&b| base.checked_add(b).is_some())
            .unwrap_or_else(|| panic!("pool of {frames} frames at {base:#x} overflows"));
        // Allocated with the allocator's own alignment and aligned by hand: a
        // page-aligned `alloc_zeroed` is a malloc and a memset that touches the
        // whole block, where this is a calloc, which takes fresh zero pages from
        // the kernel for large blocks and so costs nothing until a frame is used.
        let layout = bytes
            .checked_add(FRAME_SIZE)
            .and_then(|size| Layout::from_size_align(size, 16).ok())
            .unwrap_or_else(|| panic!("pool of {frames} frames is too large"));
        let start = HostPhysAddr::from_usize(base);
        let mut bitmap = FrameBitmap::new_vec(start, frames);
        bitmap.add_free(start, start + frames * FRAME_SIZE);
        // SAFETY: the layout has a non-zero size.
        let block = unsafe { alloc_zeroed(layout) };
        assert!(
            !block.is_null(),
            "host allocation of {frames} frames failed"
        );
        // The first frame boundary in the block; the block has a frame to spare.
        let mem = block.wrapping_add((FRAME_SIZE - block as usize % FRAME_SIZE) % FRAME_SIZE);
        Self {
            base,
            frames,
            mem,
            block,
            layout,
            bitmap: SpinMutex::new(bitmap),
            allocated: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
            budget: AtomicUsize::new(usize::MAX),
            untouched: AtomicUsize::new(0),
            fresh: AtomicUsize::new(0),
            zero: zero_plain,
        }
    }

    /// The pool zeroing frames with `zero` (a platform's routine, e.g. a HAL's
    /// `zero_memory`) instead of [`zero_plain`], as a hypervisor's allocator would.
    ///
    /// # Safety
    ///
    /// `zero` keeps the [`ZeroFn`] promise: given memory it may write, it writes
    /// zero to every byte of the range and nothing else, its stores ordered as
    /// ordinary stores. The pool hands out what it wrote as zeroed frames.
    #[must_use]
    pub unsafe fn zeroing_with(mut self, zero: ZeroFn) -> Self {
        self.zero = zero;
        self
    }

    /// Frames `alloc_zeroed` handed out without zeroing them (fresh memory).
    pub fn fresh_handed_out(&self) -> usize {
        self.fresh.load(Ordering::Relaxed)
    }

    /// Marks `[hpa, hpa + count frames)` as handed out (under the bitmap's lock);
    /// returns whether all of it was still untouched.
    fn touch(&self, hpa: HostPhysAddr, count: usize) -> bool {
        let first = (hpa.as_usize() - self.base) / FRAME_SIZE;
        let untouched = self.untouched.load(Ordering::Relaxed);
        self.untouched
            .store(untouched.max(first + count), Ordering::Relaxed);
        first >= untouched
    }

    /// Frames handed out so far, by allocations and [`PoolAllocator::alloc_at`]
    /// (each frame of a contiguous allocation counts).
    pub fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Frames given back so far.
    pub fn freed(&self) -> usize {
        self.freed.load(Ordering::Relaxed)
    }

    /// Frames in use now.
    pub fn in_use(&self) -> usize {
        self.allocated() - self.freed()
    }

    /// Lets `n` more frames be allocated, then fails every allocation
    /// ([`PoolAllocator::alloc_at`] is not limited).
    pub fn fail_after(&self, n: usize) {
        self.budget.store(n, Ordering::Relaxed);
    }

    /// Removes the failure limit.
    pub fn never_fail(&self) {
        self.budget.store(usize::MAX, Ordering::Relaxed);
    }

    /// The host-physical range of the pool.
    pub fn phys_range(&self) -> (HostPhysAddr, HostPhysAddr) {
        (
            HostPhysAddr::from_usize(self.base),
            HostPhysAddr::from_usize(self.base + self.frames * FRAME_SIZE),
        )
    }

    /// Takes the `count` frames at `hpa` (a fixed address, e.g. identity-mapped
    /// guest RAM) if all of them are in the pool and free; `false`, and nothing
    /// taken, otherwise or when `count` is 0. Give them back with
    /// [`FrameAllocator::dealloc_frames`].
    pub fn alloc_at(&self, hpa: HostPhysAddr, count: usize) -> bool {
        let mut bitmap = self.lock();
        let taken = bitmap.reserve(hpa, count);
        if taken {
            self.touch(hpa, count);
            count_locked(&self.allocated, count);
        }
        drop(bitmap);
        taken
    }

    fn lock(&self) -> SpinMutexGuard<'_, FrameBitmap<Vec<u64>>> {
        self.bitmap.lock()
    }

    /// Allocates and counts `count` frames; with whether they were never handed out
    /// before (still zero).
    fn alloc_counted(&self, count: usize, align_frames: usize) -> Option<(HostPhysAddr, bool)> {
        if count == 0 || !align_frames.is_power_of_two() || !self.take_budget(count) {
            return None;
        }
        let mut bitmap = self.lock();
        let hpa = bitmap.alloc(count, align_frames)?;
        let fresh = self.touch(hpa, count);
        count_locked(&self.allocated, count);
        drop(bitmap);
        Some((hpa, fresh))
    }

    fn take_budget(&self, n: usize) -> bool {
        // No limit (the common case): nothing to take, no atomic update.
        if self.budget.load(Ordering::Relaxed) == usize::MAX {
            return true;
        }
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                if b == usize::MAX {
                    Some(b)
                } else {
                    b.checked_sub(n)
                }
            })
            .is_ok()
    }
}

/// Adds `n` to `counter`, which only changes under the pool's lock (held by the
/// caller): a load and a store, where an atomic add would cost a locked
/// instruction more per allocation and free.
#[inline]
fn count_locked(counter: &AtomicUsize, n: usize) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// How a thread waits for the pool's lock: it yields, since tests run more
/// threads than there are cores and the holder may be descheduled.
struct YieldNow;

impl spin::RelaxStrategy for YieldNow {
    #[inline]
    fn relax() {
        std::thread::yield_now();
    }
}

// SAFETY: frames are tracked in the bitmap and handed out once, aligned as asked;
// `phys_to_virt` maps the whole pool contiguously and the pool lives as long as `self`,
// by the offset `linear_offset` names (`mem` and `base` never change);
// `alloc_zeroed` skips zeroing only frames at or above `untouched`, which nothing has
// written since the host handed the memory out zeroed; `dealloc_frames` takes any run
// of allocated frames (the bitmap tracks frames, not allocations).
unsafe impl FrameAllocator for PoolAllocator {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        self.alloc_counted(count, align_frames).map(|(hpa, _)| hpa)
    }

    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        let (hpa, fresh) = self.alloc_counted(count, align_frames)?;
        if fresh {
            self.fresh.fetch_add(count, Ordering::Relaxed);
        } else {
            // SAFETY: just allocated, so ours alone.
            unsafe { self.zero_frames(hpa, count) };
        }
        Some(hpa)
    }

    /// Zeroes with the pool's routine ([`PoolAllocator::zeroing_with`]).
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        let ptr = self.phys_to_virt(hpa).as_mut_ptr::<u8>();
        // SAFETY: the caller holds the frames, which the pool maps contiguously and
        // writable at `ptr`; `zero` keeps the `ZeroFn` promise (`zeroing_with`).
        unsafe { (self.zero)(ptr, count * FRAME_SIZE) };
    }

    /// # Panics
    ///
    /// On a double free or frames not from this pool (the bugs tests look for).
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        let mut bitmap = self.lock();
        match bitmap.dealloc(hpa, count) {
            Ok(()) => count_locked(&self.freed, count),
            Err(e) => {
                drop(bitmap);
                match e {
                    FreeError::NotAllocated { hpa } => panic!("double free of {hpa:#x}"),
                    FreeError::OutOfWindow { .. } => {
                        panic!("freeing {hpa:?} ({count} frames), not from this pool")
                    }
                }
            }
        }
    }

    #[inline]
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        let off = hpa.as_usize().wrapping_sub(self.base);
        debug_assert!(
            off < self.frames * FRAME_SIZE,
            "{hpa:?} is outside the pool"
        );
        HostVirtAddr::from_usize(self.mem as usize + off)
    }

    /// `mem - base`: `phys_to_virt` above is that linear map (without its
    /// debug-build check that `hpa` is a pool frame, which page tables then make by
    /// comparing with `phys_to_virt`).
    #[inline]
    fn linear_offset(&self) -> Option<usize> {
        Some((self.mem as usize).wrapping_sub(self.base))
    }
}

impl Drop for PoolAllocator {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_base` with this layout.
        unsafe { dealloc(self.block, self.layout) };
    }
}

/// Checks that `zero` zeroes exactly the range it is given, for ranges of odd sizes
/// (from none to past 2 MiB, so a routine's block or streaming path and its plain
/// edges all run) at odd offsets from a page boundary: the memory around and inside
/// each range is dirtied, the range zeroed, then every byte in it must read zero and
/// every byte of the guard bytes either side must be as it was.
///
/// # Panics
///
/// At the first byte that is wrong, naming the size and offset (test code).
pub fn check_zero_fn(zero: ZeroFn) {
    const GUARD: usize = 256;
    const M2: usize = 0x20_0000;
    const SIZES: [usize; 17] = [
        0,
        1,
        7,
        8,
        63,
        64,
        65,
        127,
        4095,
        4096,
        4097,
        0x1_0000 - 1,
        0x1_0000,
        0x1_0000 + 72,
        M2 - 1,
        M2,
        M2 + FRAME_SIZE + 3,
    ];
    const OFFSETS: [usize; 6] = [0, 1, 8, 63, 64, 4095];
    let mut buf = vec![0u8; 2 * FRAME_SIZE + 2 * GUARD + M2 + FRAME_SIZE + 3 + 4096];
    let base = buf.as_ptr().align_offset(FRAME_SIZE) + FRAME_SIZE;
    for size in SIZES {
        for off in OFFSETS {
            let start = base + off;
            let window = start - GUARD..start + size + GUARD;
            buf[window.clone()].fill(0xa5);
            // SAFETY: `[start, start + size)` lies inside `buf`, which nothing else
            // uses while it is borrowed here.
            unsafe { zero(buf.as_mut_ptr().add(start), size) };
            for i in window {
                let want = if (start..start + size).contains(&i) {
                    0
                } else {
                    0xa5
                };
                assert_eq!(
                    buf[i],
                    want,
                    "zeroing {size} bytes at page offset {off}: byte {} of the range",
                    i.wrapping_sub(start).cast_signed()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_aligned_and_counted() {
        let pool = PoolAllocator::with_base(64, 0x1000);
        let one = pool.alloc_frame().unwrap();
        assert_eq!(one.as_usize(), 0x1000);
        let four = pool.alloc_frames(4, 4).unwrap();
        assert_eq!(four.as_usize() % 0x4000, 0);
        assert_eq!(pool.in_use(), 5);
        pool.fail_after(1);
        assert!(pool.alloc_frame().is_some());
        assert!(pool.alloc_frame().is_none());
        pool.never_fail();
        // SAFETY: frames from this pool, not in use.
        unsafe { pool.dealloc_frames(four, 4) };
        // SAFETY: as above.
        unsafe { pool.dealloc_frames(one, 1) };
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn alloc_at_takes_only_free_frames_of_the_pool() {
        let pool = PoolAllocator::with_base(256, 0x4000_0000);
        let hpa = HostPhysAddr::from_usize;
        assert!(pool.alloc_at(hpa(0x4001_0000), 2));
        assert!(!pool.alloc_at(hpa(0x4001_1000), 1), "taken");
        assert!(!pool.alloc_at(hpa(0x3fff_f000), 2), "below the pool");
        assert!(!pool.alloc_at(hpa(0x400f_f000), 2), "runs past the end");
        assert!(!pool.alloc_at(hpa(0x4002_0800), 1), "unaligned");
        assert!(!pool.alloc_at(hpa(0x4002_0000), 0), "empty");
        assert_eq!(pool.in_use(), 2);
        // Not limited by the failure budget, and never handed out again.
        pool.fail_after(0);
        assert!(pool.alloc_at(hpa(0x4000_0000), 1));
        pool.never_fail();
        assert_eq!(pool.alloc_frame(), Some(hpa(0x4000_1000)));
        // SAFETY: frames from this pool, not in use.
        unsafe { pool.dealloc_frames(hpa(0x4001_0000), 2) };
        assert!(pool.alloc_at(hpa(0x4001_1000), 1), "free again");
        assert_eq!(pool.in_use(), 3);
    }

    /// The pool's memory is only reserved address space until frames are used:
    /// hal-mock simulates hosts of several GiB (identity-mapped guest RAM) whose
    /// pages a VM mostly never touches. The pool used to zero its whole block at
    /// creation (the 4 KiB-aligned `alloc_zeroed` is a malloc plus a memset), so a
    /// 2 GiB pool took 2 GiB of RAM and seconds.
    #[test]
    fn pool_memory_is_not_touched_until_used() {
        fn resident() -> usize {
            let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
            let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
            pages * 4096
        }
        let before = resident();
        let pool = PoolAllocator::with_base(2 << 18, 0x1_0000_0000);
        let frame = pool.alloc_frame().unwrap();
        // The memory reads as zero and is writable.
        let p = pool.phys_to_virt(frame).as_mut_ptr::<u8>();
        // SAFETY: a frame of this pool, allocated above and not shared.
        unsafe {
            assert_eq!(p.add(100).read(), 0);
            p.write(1);
        }
        let grown = resident().saturating_sub(before);
        assert!(
            grown < 256 << 20,
            "a 2 GiB pool made {grown} bytes resident"
        );
        // SAFETY: from this pool, not in use.
        unsafe { pool.dealloc_frames(frame, 1) };
    }

    #[test]
    fn alloc_zeroed_skips_only_frames_never_handed_out() {
        let pool = PoolAllocator::with_base(16, 0x1000);
        let a = pool.alloc_zeroed(2, 1).unwrap();
        assert_eq!(pool.fresh_handed_out(), 2);
        let p = pool.phys_to_virt(a).as_mut_ptr::<u8>();
        // SAFETY: the frames are ours; the pool maps them writable.
        unsafe { std::ptr::write_bytes(p, 0xa5, 2 * FRAME_SIZE) };
        // SAFETY: from this pool, not in use; given back in two parts.
        unsafe { pool.dealloc_frames(a + FRAME_SIZE, 1) };
        // SAFETY: as above.
        unsafe { pool.dealloc_frames(a, 1) };
        // The dirtied frames come back first: zeroed now, not counted fresh.
        let b = pool.alloc_zeroed(2, 1).unwrap();
        assert_eq!((b, pool.fresh_handed_out()), (a, 2));
        let q = pool.phys_to_virt(b).as_ptr::<u8>();
        // SAFETY: as above.
        assert!((0..2 * FRAME_SIZE).all(|i| unsafe { *q.add(i) } == 0));
        let c = pool.alloc_zeroed(4, 4).unwrap();
        assert_eq!(pool.fresh_handed_out(), 6, "{c:?}");
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let pool = PoolAllocator::with_base(4, 0x1000);
        let a = pool.alloc_frame().unwrap();
        // SAFETY: from this pool, not in use.
        unsafe { pool.dealloc_frames(a, 1) };
        // SAFETY: the double free under test; nothing uses the frame.
        unsafe { pool.dealloc_frames(a, 1) };
    }

    #[test]
    #[should_panic(expected = "not from this pool")]
    fn foreign_free_is_caught() {
        let pool = PoolAllocator::with_base(4, 0x1000);
        // SAFETY: the bad free under test; the frame is not the pool's.
        unsafe { pool.dealloc_frames(HostPhysAddr::from_usize(0x5000), 1) };
    }
}
