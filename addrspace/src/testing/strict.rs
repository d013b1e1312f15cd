//! [`StrictAllocator`]: a [`PoolAllocator`] that remembers every allocation and
//! checks that each `dealloc_frames` names frames of one of them, as the
//! [`FrameAllocator`] contract asks (a buddy allocator corrupts its free lists when a
//! free spans two allocations; the pool's bitmap would not notice).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::PoolAllocator;
use crate::{FRAME_SIZE, FrameAllocator, HostPhysAddr, HostVirtAddr};

/// A [`PoolAllocator`] that records each allocation's frame range and every
/// `dealloc_frames` that does not lie inside the not-yet-freed part of one
/// allocation ([`StrictAllocator::violations`]). Frees are forwarded to the pool
/// either way, so its counters stay right.
pub struct StrictAllocator {
    pool: PoolAllocator,
    /// Still-allocated parts of allocations: start to end (host-physical). Freeing
    /// the middle of an allocation leaves its two ends as two parts, which no later
    /// free may join (the freed middle lies between them).
    live: Mutex<BTreeMap<usize, usize>>,
    violations: Mutex<Vec<String>>,
}

impl StrictAllocator {
    /// Checks the allocations of `pool`, which must have none outstanding.
    pub fn new(pool: PoolAllocator) -> Self {
        assert_eq!(pool.in_use(), 0, "the pool has allocations outstanding");
        Self {
            pool,
            live: Mutex::new(BTreeMap::new()),
            violations: Mutex::new(Vec::new()),
        }
    }

    /// The pool underneath (counters, failure injection).
    pub fn pool(&self) -> &PoolAllocator {
        &self.pool
    }

    /// Every free so far that did not name frames of one live allocation, described.
    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the `count` frames at `hpa` as [`PoolAllocator::alloc_at`] does and, when
    /// it did, records them as one allocation (a reservation is freed like any other).
    pub fn alloc_at(&self, hpa: HostPhysAddr, count: usize) -> bool {
        let taken = self.pool.alloc_at(hpa, count);
        if taken {
            self.record(Some(hpa), count);
        }
        taken
    }

    /// Frees as [`FrameAllocator::dealloc_frames`] does and says whether the frames
    /// were a run of one live allocation: `Err` with the violation's description
    /// (also kept in [`StrictAllocator::violations`]) when not. The frames go back to
    /// the pool either way.
    ///
    /// # Safety
    ///
    /// As [`FrameAllocator::dealloc_frames`].
    pub unsafe fn dealloc_checked(&self, hpa: HostPhysAddr, count: usize) -> Result<(), String> {
        let start = hpa.as_usize();
        let owned = self.forget(start, start + count * FRAME_SIZE);
        // SAFETY: the caller's contract is the pool's (which checks what it can).
        unsafe { self.pool.dealloc_frames(hpa, count) };
        if owned {
            return Ok(());
        }
        let what = format!("dealloc_frames({hpa:?}, {count}) is not a run of one live allocation");
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what.clone());
        Err(what)
    }

    fn record(&self, hpa: Option<HostPhysAddr>, count: usize) -> Option<HostPhysAddr> {
        if let Some(h) = hpa {
            let start = h.as_usize();
            self.live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(start, start + count * FRAME_SIZE);
        }
        hpa
    }

    /// Removes `[start, end)` from the live parts; whether it lay inside one part.
    fn forget(&self, start: usize, end: usize) -> bool {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let hit: Vec<(usize, usize)> = live
            .range(..end)
            .rev()
            .take_while(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for &(s, e) in &hit {
            live.remove(&s);
            if s < start {
                live.insert(s, start);
            }
            if e > end {
                live.insert(end, e);
            }
        }
        matches!(hit.as_slice(), [(s, e)] if *s <= start && end <= *e)
    }
}

// SAFETY: every call is forwarded to the pool, which upholds the contract; the
// bookkeeping only watches.
unsafe impl FrameAllocator for StrictAllocator {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        self.record(self.pool.alloc_frames(count, align_frames), count)
    }

    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        self.record(self.pool.alloc_zeroed(count, align_frames), count)
    }

    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller holds the frames, which came from the pool.
        unsafe { self.pool.zero_frames(hpa, count) }
    }

    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller's contract; a violation is recorded, not returned.
        let _ = unsafe { self.dealloc_checked(hpa, count) };
    }

    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        self.pool.phys_to_virt(hpa)
    }

    fn linear_offset(&self) -> Option<usize> {
        self.pool.linear_offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_across_two_allocations_is_a_violation() {
        let strict = StrictAllocator::new(PoolAllocator::with_base(64, 0x1000));
        let a = strict.alloc_frames(2, 1).unwrap();
        let b = strict.alloc_frames(2, 1).unwrap();
        assert_eq!(b, a + 2 * FRAME_SIZE, "lowest-first: adjacent");
        // SAFETY: frames of `a` then of `b`, not in use.
        unsafe { strict.dealloc_frames(a + FRAME_SIZE, 2) };
        assert_eq!(strict.violations().len(), 1);
        // SAFETY: the rest of `a` and of `b`, each a part of one allocation.
        unsafe { strict.dealloc_frames(a, 1) };
        // SAFETY: as above.
        unsafe { strict.dealloc_frames(b + FRAME_SIZE, 1) };
        assert_eq!(strict.violations().len(), 1);
        assert_eq!(strict.pool().in_use(), 0);
    }

    #[test]
    fn a_reservation_is_one_allocation() {
        let strict = StrictAllocator::new(PoolAllocator::with_base(64, 0x1000));
        let at = HostPhysAddr::from_usize(0x1000 + 8 * FRAME_SIZE);
        assert!(strict.alloc_at(at, 2));
        assert!(!strict.alloc_at(at + FRAME_SIZE, 1), "taken");
        // SAFETY: the two frames of the reservation, not in use, each freed once.
        let parts = unsafe {
            [
                strict.dealloc_checked(at + FRAME_SIZE, 1),
                strict.dealloc_checked(at, 1),
            ]
        };
        assert_eq!(parts, [Ok(()), Ok(())]);
        // Reserved again, and the frame after it reserved on its own: one free of
        // the three spans two allocations.
        assert!(strict.alloc_at(at, 2));
        assert!(strict.alloc_at(at + 2 * FRAME_SIZE, 1));
        // SAFETY: the three frames, reserved above and not in use.
        let merged = unsafe { strict.dealloc_checked(at, 3) };
        let what = merged.expect_err("a free across two reservations");
        assert_eq!(strict.violations(), vec![what]);
        assert_eq!(strict.pool().in_use(), 0);
    }

    #[test]
    fn parts_of_one_allocation_free_cleanly() {
        let strict = StrictAllocator::new(PoolAllocator::with_base(64, 0x1000));
        let a = strict.alloc_frames(4, 4).unwrap();
        // SAFETY: parts of `a`, not in use, each freed once.
        unsafe {
            strict.dealloc_frames(a + FRAME_SIZE, 2);
            strict.dealloc_frames(a + 3 * FRAME_SIZE, 1);
            strict.dealloc_frames(a, 1);
        }
        assert!(strict.violations().is_empty(), "{:?}", strict.violations());
        assert_eq!(strict.pool().in_use(), 0);
    }
}
