//! The physical frame allocator: a bitmap over the RAM after the hypervisor image
//! and its heap, with contiguous, aligned and fixed-address allocations (what
//! `vm_core::VmHal` asks for). Pure bookkeeping, tested on the host.

use alloc::vec;
use alloc::vec::Vec;

use addrspace::FRAME_SIZE;

/// Why a free was refused (the bitmap is left unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FreeError {
    /// The range is not inside the pool, or not frame-aligned.
    OutOfPool {
        /// The address given.
        hpa: usize,
        /// Frames given.
        count: usize,
    },
    /// Some frame in the range is not allocated.
    NotAllocated {
        /// The first free frame found.
        hpa: usize,
    },
}

/// A pool of `frames` frames from host-physical `base`.
#[derive(Debug)]
pub(crate) struct BitmapFrames {
    base: usize,
    frames: usize,
    /// One bit per frame, set when allocated.
    used: Vec<u64>,
    free: usize,
}

impl BitmapFrames {
    /// A pool over `[base, base + size)`, rounded inwards to whole frames.
    pub(crate) fn new(base: usize, size: usize) -> Self {
        let start = base.next_multiple_of(FRAME_SIZE);
        let end = base.saturating_add(size) & !(FRAME_SIZE - 1);
        let frames = end.saturating_sub(start) / FRAME_SIZE;
        Self {
            base: start,
            frames,
            used: vec![0; frames.div_ceil(64)],
            free: frames,
        }
    }

    /// Frames not allocated.
    pub(crate) fn free_frames(&self) -> usize {
        self.free
    }

    /// Frames in the pool.
    #[cfg(test)]
    fn total_frames(&self) -> usize {
        self.frames
    }

    /// First address of the pool.
    #[cfg(test)]
    fn base(&self) -> usize {
        self.base
    }

    fn is_used(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, first: usize, count: usize, used: bool) {
        for i in first..first + count {
            if used {
                self.used[i / 64] |= 1 << (i % 64);
            } else {
                self.used[i / 64] &= !(1 << (i % 64));
            }
        }
        if used {
            self.free -= count;
        } else {
            self.free += count;
        }
    }

    fn run_is_free(&self, first: usize, count: usize) -> bool {
        (first..first + count).all(|i| !self.is_used(i))
    }

    /// Allocates `count` contiguous frames whose address is a multiple of
    /// `align_frames` frames (rounded up to a power of two); first fit.
    pub(crate) fn alloc(&mut self, count: usize, align_frames: usize) -> Option<usize> {
        if count == 0 || count > self.free {
            return None;
        }
        let align = align_frames.max(1).checked_next_power_of_two()?;
        let align_bytes = align.checked_mul(FRAME_SIZE)?;
        // The first index whose address is aligned.
        let mut i = (self.base.checked_next_multiple_of(align_bytes)? - self.base) / FRAME_SIZE;
        while i.checked_add(count)? <= self.frames {
            match (i..i + count).find(|&j| self.is_used(j)) {
                None => {
                    self.set(i, count, true);
                    return Some(self.base + i * FRAME_SIZE);
                }
                // Skip past the used frame, to the next aligned address.
                Some(j) => {
                    let next =
                        (self.base + (j + 1) * FRAME_SIZE).checked_next_multiple_of(align_bytes)?;
                    i = (next - self.base) / FRAME_SIZE;
                }
            }
        }
        None
    }

    /// Allocates exactly `[hpa, hpa + count frames)`, if all of it is free.
    pub(crate) fn alloc_at(&mut self, hpa: usize, count: usize) -> bool {
        match self.index(hpa, count) {
            Some(first) if count > 0 && self.run_is_free(first, count) => {
                self.set(first, count, true);
                true
            }
            _ => false,
        }
    }

    /// Frees `count` frames at `hpa`, all of which must be allocated.
    pub(crate) fn dealloc(&mut self, hpa: usize, count: usize) -> Result<(), FreeError> {
        let first = self
            .index(hpa, count)
            .ok_or(FreeError::OutOfPool { hpa, count })?;
        if let Some(j) = (first..first + count).find(|&j| !self.is_used(j)) {
            return Err(FreeError::NotAllocated {
                hpa: self.base + j * FRAME_SIZE,
            });
        }
        self.set(first, count, false);
        Ok(())
    }

    /// The index of frame `hpa` if `[hpa, + count frames)` lies in the pool.
    fn index(&self, hpa: usize, count: usize) -> Option<usize> {
        if !hpa.is_multiple_of(FRAME_SIZE) || hpa < self.base {
            return None;
        }
        let first = (hpa - self.base) / FRAME_SIZE;
        (first.checked_add(count)? <= self.frames).then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: usize = 0x4100_0000;

    #[test]
    fn contiguous_aligned_allocations() {
        let mut f = BitmapFrames::new(BASE + 0x1000, 64 * FRAME_SIZE);
        assert_eq!(f.total_frames(), 64);
        let a = f.alloc(1, 1).unwrap();
        assert_eq!(a, BASE + 0x1000);
        // Two frames aligned to 8 KiB (a concatenated stage-2 root): skips one.
        let b = f.alloc(2, 2).unwrap();
        assert_eq!(b, BASE + 0x2000);
        assert_eq!(b % 0x2000, 0);
        // 16 frames aligned to 64 KiB.
        let c = f.alloc(16, 16).unwrap();
        assert_eq!(c % 0x1_0000, 0);
        assert_eq!(f.free_frames(), 64 - 19);
        f.dealloc(b, 2).unwrap();
        assert_eq!(f.alloc(1, 1), Some(BASE + 0x2000));
    }

    #[test]
    fn exhaustion_and_fragmentation() {
        let mut f = BitmapFrames::new(BASE, 8 * FRAME_SIZE);
        let all: Vec<_> = (0..8).map(|_| f.alloc(1, 1).unwrap()).collect();
        assert_eq!(f.alloc(1, 1), None);
        f.dealloc(all[2], 1).unwrap();
        f.dealloc(all[4], 1).unwrap();
        // Two free frames, but not adjacent.
        assert_eq!(f.alloc(2, 1), None);
        assert_eq!(f.alloc(1, 1), Some(all[2]));
        assert_eq!(f.alloc(9, 1), None);
        assert_eq!(f.alloc(0, 1), None);
    }

    #[test]
    fn fixed_address_allocations() {
        let mut f = BitmapFrames::new(BASE, 16 * FRAME_SIZE);
        assert!(f.alloc_at(BASE + 4 * FRAME_SIZE, 4));
        assert!(!f.alloc_at(BASE + 6 * FRAME_SIZE, 4), "overlaps");
        assert!(!f.alloc_at(BASE + 14 * FRAME_SIZE, 4), "past the end");
        assert!(!f.alloc_at(BASE - FRAME_SIZE, 1), "below the pool");
        assert!(!f.alloc_at(BASE + 1, 1), "unaligned");
        assert_eq!(f.alloc(4, 4), Some(BASE));
        assert_eq!(f.alloc(4, 4), Some(BASE + 8 * FRAME_SIZE));
    }

    #[test]
    fn bad_frees_are_refused() {
        let mut f = BitmapFrames::new(BASE, 4 * FRAME_SIZE);
        let a = f.alloc(2, 1).unwrap();
        assert_eq!(
            f.dealloc(a, 3),
            Err(FreeError::NotAllocated {
                hpa: a + 2 * FRAME_SIZE
            })
        );
        assert_eq!(
            f.dealloc(BASE + 4 * FRAME_SIZE, 1),
            Err(FreeError::OutOfPool {
                hpa: BASE + 4 * FRAME_SIZE,
                count: 1
            })
        );
        f.dealloc(a, 2).unwrap();
        assert_eq!(f.free_frames(), 4);
        assert!(matches!(
            f.dealloc(a, 1),
            Err(FreeError::NotAllocated { .. })
        ));
    }

    #[test]
    fn unaligned_pool_bounds_round_inwards() {
        let f = BitmapFrames::new(BASE + 0x800, 3 * FRAME_SIZE);
        assert_eq!(f.base(), BASE + FRAME_SIZE);
        assert_eq!(f.total_frames(), 2);
    }
}
