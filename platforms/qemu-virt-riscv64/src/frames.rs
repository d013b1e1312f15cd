//! The board's physical frame pool: one bit per 4 KiB frame of the free RAM between
//! the hypervisor image and the DTB, with contiguous, aligned allocations (the
//! G-stage roots need 4 frames aligned to 16 KiB) and reservations at a given address
//! (for identity-mapped guest RAM). Pure data structure, tested on the host.

use addrspace::{FRAME_SIZE, HostPhysAddr};
use spin::Mutex;

/// A bitmap allocator of up to `WORDS * 64` frames.
pub(crate) struct BitmapFrames<const WORDS: usize> {
    inner: Mutex<Bitmap<WORDS>>,
}

struct Bitmap<const WORDS: usize> {
    /// Frame number (address / 4 KiB) of bit 0.
    base: usize,
    /// Frames managed (bits past this are never free).
    frames: usize,
    /// Set bits are in use.
    used: [u64; WORDS],
    free: usize,
}

impl<const WORDS: usize> Bitmap<WORDS> {
    fn is_used(&self, i: usize) -> bool {
        i >= self.frames || self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, used: bool) {
        if used {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }

    /// The index of frame `hpa`, if it is in the pool and the run of `count` fits.
    fn index(&self, hpa: HostPhysAddr, count: usize) -> Option<usize> {
        let addr = hpa.as_usize();
        if !addr.is_multiple_of(FRAME_SIZE) {
            return None;
        }
        let i = (addr / FRAME_SIZE).checked_sub(self.base)?;
        (i.checked_add(count)? <= self.frames).then_some(i)
    }
}

impl<const WORDS: usize> BitmapFrames<WORDS> {
    /// An empty pool (every allocation fails until [`BitmapFrames::init`]).
    pub(crate) const fn new() -> Self {
        Self {
            inner: Mutex::new(Bitmap {
                base: 0,
                frames: 0,
                used: [0; WORDS],
                free: 0,
            }),
        }
    }

    /// Hands the pool `[start, end)` (rounded inwards to frames; what does not fit
    /// in the bitmap is left out). Returns the number of frames managed.
    pub(crate) fn init(&self, start: HostPhysAddr, end: HostPhysAddr) -> usize {
        let first = start.as_usize().div_ceil(FRAME_SIZE);
        let last = end.as_usize() / FRAME_SIZE;
        let frames = last.saturating_sub(first).min(WORDS * 64);
        let mut b = self.inner.lock();
        b.base = first;
        b.frames = frames;
        b.used = [0; WORDS];
        b.free = frames;
        frames
    }

    /// Allocates `count` contiguous frames whose address is a multiple of
    /// `align_frames` frames (a power of two; 0 counts as 1).
    pub(crate) fn alloc(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        if count == 0 || !align_frames.max(1).is_power_of_two() {
            return None;
        }
        let align = align_frames.max(1);
        let mut b = self.inner.lock();
        if b.free < count {
            return None;
        }
        // First index whose frame number is a multiple of `align`.
        let mut i = (b.base.next_multiple_of(align)) - b.base;
        while i + count <= b.frames {
            if let Some(j) = (i..i + count).find(|&j| b.is_used(j)) {
                // Restart after the used frame, at the next aligned index.
                i = (b.base + j + 1).next_multiple_of(align) - b.base;
                continue;
            }
            for j in i..i + count {
                b.set(j, true);
            }
            b.free -= count;
            return Some(HostPhysAddr::from_usize((b.base + i) * FRAME_SIZE));
        }
        None
    }

    /// Takes the `count` frames at `hpa` if all of them are in the pool and free.
    pub(crate) fn reserve(&self, hpa: HostPhysAddr, count: usize) -> bool {
        let mut b = self.inner.lock();
        let Some(i) = b.index(hpa, count) else {
            return false;
        };
        if count == 0 || (i..i + count).any(|j| b.is_used(j)) {
            return false;
        }
        for j in i..i + count {
            b.set(j, true);
        }
        b.free -= count;
        true
    }

    /// Gives back `count` frames at `hpa`. Frames outside the pool or already free are
    /// ignored (and reported by the return value: the number actually freed).
    pub(crate) fn dealloc(&self, hpa: HostPhysAddr, count: usize) -> usize {
        let mut b = self.inner.lock();
        let Some(i) = b.index(hpa, count) else {
            return 0;
        };
        let mut freed = 0;
        for j in i..i + count {
            if b.is_used(j) {
                b.set(j, false);
                freed += 1;
            }
        }
        b.free += freed;
        freed
    }

    /// Free frames.
    pub(crate) fn free_frames(&self) -> usize {
        self.inner.lock().free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(v: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(v)
    }

    #[test]
    fn init_rounds_inwards_and_caps() {
        let f = BitmapFrames::<2>::new();
        assert_eq!(f.alloc(1, 1), None, "empty before init");
        assert_eq!(f.init(hpa(0x8040_0800), hpa(0x8041_0000)), 15);
        assert_eq!(f.alloc(1, 1), Some(hpa(0x8040_1000)));
        let big = BitmapFrames::<1>::new();
        assert_eq!(big.init(hpa(0), hpa(1 << 30)), 64);
    }

    /// A G-stage root: 4 frames aligned to 16 KiB, after a single frame that breaks
    /// the alignment of the pool start.
    #[test]
    fn aligned_runs() {
        let f = BitmapFrames::<4>::new();
        f.init(hpa(0x8040_1000), hpa(0x8050_0000));
        assert_eq!(f.alloc(1, 1), Some(hpa(0x8040_1000)));
        assert_eq!(f.alloc(4, 4), Some(hpa(0x8040_4000)));
        assert_eq!(
            f.alloc(1, 1),
            Some(hpa(0x8040_2000)),
            "first fit fills the hole"
        );
        assert_eq!(f.alloc(2, 2), Some(hpa(0x8040_8000)));
        assert_eq!(f.alloc(1, 3), None, "not a power of two");
        assert_eq!(f.alloc(0, 1), None);
    }

    #[test]
    fn exhaustion_and_dealloc() {
        let f = BitmapFrames::<1>::new();
        f.init(hpa(0x1000), hpa(0x1000 + 8 * 0x1000));
        let a = f.alloc(6, 1).unwrap();
        assert_eq!(f.alloc(3, 1), None);
        assert_eq!(f.free_frames(), 2);
        assert_eq!(f.dealloc(a, 6), 6);
        assert_eq!(f.dealloc(a, 6), 0, "double free changes nothing");
        assert_eq!(f.free_frames(), 8);
        assert_eq!(f.alloc(8, 1), Some(hpa(0x1000)));
        assert_eq!(f.dealloc(hpa(0x10_0000), 1), 0, "outside the pool");
    }

    #[test]
    fn reservations() {
        let f = BitmapFrames::<2>::new();
        f.init(hpa(0x8000_0000), hpa(0x8008_0000));
        assert!(f.reserve(hpa(0x8001_0000), 16));
        assert!(!f.reserve(hpa(0x8001_f000), 2), "overlaps the reservation");
        assert!(!f.reserve(hpa(0x8007_f000), 2), "runs past the pool");
        assert!(!f.reserve(hpa(0x7fff_f000), 1), "below the pool");
        assert!(!f.reserve(hpa(0x8002_0800), 1), "unaligned");
        // 17 frames from 0x8000_0000 would run into the reservation: the next
        // 16-frame-aligned start after it.
        assert_eq!(f.alloc(17, 16), Some(hpa(0x8002_0000)));
        assert_eq!(f.dealloc(hpa(0x8001_0000), 16), 16);
        assert!(f.reserve(hpa(0x8001_0000), 16));
    }
}
