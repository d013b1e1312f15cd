//! Test support: [`PoolAllocator`], a frame allocator over one host allocation with
//! its own simulated host-physical range, allocation counters and failure injection.
//! Built for tests and benchmarks (feature `testing`), never for a hypervisor image.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{FRAME_SIZE, FrameAllocator, HostPhysAddr, HostVirtAddr};

/// Frames from one zero-initialised host allocation, addressed as host-physical
/// `[base, base + frames * 4 KiB)`.
///
/// It counts allocations and frees, can be told to fail after a number of frames,
/// and checks every free (double frees and foreign frames panic: this is test code).
pub struct PoolAllocator {
    base: usize,
    frames: usize,
    mem: *mut u8,
    layout: Layout,
    state: Mutex<State>,
    allocated: AtomicUsize,
    freed: AtomicUsize,
    /// Frames that may still be handed out before allocation fails.
    budget: AtomicUsize,
}

struct State {
    /// One bit per frame, set when in use.
    used: Vec<u64>,
    /// No free frame below this index.
    hint: usize,
}

// SAFETY: the pool memory is only reached through `phys_to_virt` by users that own
// the frames; the bitmap is behind a mutex and the counters are atomic.
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
    /// If the host cannot provide the memory (test code).
    pub fn with_base(frames: usize, base: usize) -> Self {
        let frames = frames.max(1);
        let layout = Layout::from_size_align(frames * FRAME_SIZE, FRAME_SIZE)
            .unwrap_or_else(|_| panic!("pool of {frames} frames is too large"));
        // SAFETY: the layout has a non-zero size.
        let mem = unsafe { alloc_zeroed(layout) };
        assert!(!mem.is_null(), "host allocation of {frames} frames failed");
        Self {
            base,
            frames,
            mem,
            layout,
            state: Mutex::new(State {
                used: vec![0; frames.div_ceil(64)],
                hint: 0,
            }),
            allocated: AtomicUsize::new(0),
            freed: AtomicUsize::new(0),
            budget: AtomicUsize::new(usize::MAX),
        }
    }

    /// Frames handed out so far (each frame of a contiguous allocation counts).
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

    /// Lets `n` more frames be allocated, then fails every allocation.
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

    fn take_budget(&self, n: usize) -> bool {
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

fn bit(used: &[u64], i: usize) -> bool {
    used[i / 64] & (1 << (i % 64)) != 0
}

// SAFETY: frames are tracked in a bitmap and handed out once, aligned as asked;
// `phys_to_virt` maps the whole pool contiguously and the pool lives as long as `self`.
unsafe impl FrameAllocator for PoolAllocator {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        if count == 0 || !align_frames.is_power_of_two() || !self.take_budget(count) {
            return None;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = st.hint;
        // The first candidate index whose physical frame number is aligned.
        let fix = |i: usize| {
            let pfn = self.base / FRAME_SIZE + i;
            i + (align_frames - pfn % align_frames) % align_frames
        };
        if count == 1 {
            // Fast path: skip full words.
            while i < self.frames {
                let w = st.used[i / 64];
                if w == u64::MAX {
                    i = (i / 64 + 1) * 64;
                    continue;
                }
                if !bit(&st.used, i) {
                    break;
                }
                i += 1;
            }
        } else {
            i = fix(i);
            while i + count <= self.frames {
                match (i..i + count).find(|&j| bit(&st.used, j)) {
                    Some(busy) => i = fix(busy + 1),
                    None => break,
                }
            }
        }
        if i + count > self.frames {
            return None;
        }
        for j in i..i + count {
            st.used[j / 64] |= 1 << (j % 64);
        }
        // A single-frame search scanned `[hint, i)` and found every frame used, so
        // nothing below `i + 1` is free now. (Moving the hint only when `i == hint`
        // left it behind the first used frame for good, and every later allocation
        // rescanned everything allocated since: O(n) per frame.)
        if count == 1 || i == st.hint {
            st.hint = st.hint.max(i + count);
        }
        self.allocated.fetch_add(count, Ordering::Relaxed);
        Some(HostPhysAddr::from_usize(self.base + i * FRAME_SIZE))
    }

    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        let off = hpa.as_usize().wrapping_sub(self.base);
        assert!(
            off.is_multiple_of(FRAME_SIZE) && off / FRAME_SIZE + count <= self.frames,
            "freeing {hpa:?} ({count} frames), not from this pool"
        );
        let first = off / FRAME_SIZE;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for j in first..first + count {
            assert!(
                bit(&st.used, j),
                "double free of {:#x}",
                self.base + j * FRAME_SIZE
            );
            st.used[j / 64] &= !(1 << (j % 64));
        }
        st.hint = st.hint.min(first);
        self.freed.fetch_add(count, Ordering::Relaxed);
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
}

impl Drop for PoolAllocator {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_base` with this layout.
        unsafe { dealloc(self.mem, self.layout) };
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
}
