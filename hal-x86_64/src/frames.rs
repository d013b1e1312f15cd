//! [`BitmapFrames`]: the hypervisor's physical frame allocator, one bit per 4 KiB
//! frame of a fixed window of physical memory, filled from the multiboot memory map.
//! Contiguous, aligned allocations (first fit), frees, and reservations of a given
//! range (for identity-mapped guest RAM). Pure code, tested on the host.

use addrspace::{FRAME_SIZE, FrameAllocator, HostPhysAddr, HostVirtAddr};

/// The allocator's state; `WORDS * 64` frames starting at `base`.
#[derive(Debug)]
struct Bitmap<const WORDS: usize> {
    /// Bit set = frame free.
    free: [u64; WORDS],
    base: u64,
    free_frames: usize,
}

impl<const WORDS: usize> Bitmap<WORDS> {
    const FRAMES: usize = WORDS * 64;

    fn is_free(&self, i: usize) -> bool {
        self.free[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, free: bool) {
        if self.is_free(i) != free {
            if free {
                self.free[i / 64] |= 1 << (i % 64);
                self.free_frames += 1;
            } else {
                self.free[i / 64] &= !(1 << (i % 64));
                self.free_frames -= 1;
            }
        }
    }

    /// The frame range of physical `[start, end)`, clipped to the window, rounded
    /// inwards to whole frames.
    fn frames_in(&self, start: u64, end: u64) -> core::ops::Range<usize> {
        let fs = FRAME_SIZE as u64;
        let window_end = self.base + (Self::FRAMES as u64) * fs;
        let start = start.max(self.base).div_ceil(fs) * fs;
        let end = (end.min(window_end) / fs) * fs;
        if end <= start {
            return 0..0;
        }
        ((start - self.base) / fs) as usize..((end - self.base) / fs) as usize
    }
}

/// A bitmap frame allocator over the physical window `[base, base + WORDS * 64 *
/// 4 KiB)`. Every frame starts used; [`BitmapFrames::add_free`] gives RAM to it.
/// The hypervisor sees physical memory at `phys + virt_offset`.
pub struct BitmapFrames<const WORDS: usize> {
    inner: spin::Mutex<Bitmap<WORDS>>,
    virt_offset: usize,
}

impl<const WORDS: usize> BitmapFrames<WORDS> {
    /// An allocator for the window starting at `base` (frame aligned), with no
    /// free frame yet.
    pub const fn new(base: u64, virt_offset: usize) -> Self {
        Self {
            inner: spin::Mutex::new(Bitmap {
                free: [0; WORDS],
                base,
                free_frames: 0,
            }),
            virt_offset,
        }
    }

    /// Marks the whole frames inside physical `[start, end)` free (the part inside
    /// the window).
    pub fn add_free(&self, start: u64, end: u64) {
        let mut b = self.inner.lock();
        for i in b.frames_in(start, end) {
            b.set(i, true);
        }
    }

    /// Marks every frame touching physical `[start, end)` used (the image, boot
    /// data).
    pub fn remove(&self, start: u64, end: u64) {
        let fs = FRAME_SIZE as u64;
        let mut b = self.inner.lock();
        for i in b.frames_in(start / fs * fs, end.div_ceil(fs) * fs) {
            b.set(i, false);
        }
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> usize {
        self.inner.lock().free_frames
    }

    /// Takes the `count` frames at `hpa` if all are free; `false` (and nothing
    /// taken) otherwise.
    pub fn reserve(&self, hpa: HostPhysAddr, count: usize) -> bool {
        let mut b = self.inner.lock();
        let start = hpa.as_usize() as u64;
        let Some(end) = (count as u64)
            .checked_mul(FRAME_SIZE as u64)
            .and_then(|n| n.checked_add(start))
        else {
            return false;
        };
        if !start.is_multiple_of(FRAME_SIZE as u64) {
            return false;
        }
        let range = b.frames_in(start, end);
        if range.len() != count || !range.clone().all(|i| b.is_free(i)) {
            return false;
        }
        for i in range {
            b.set(i, false);
        }
        true
    }
}

// SAFETY: frames are handed out only when their bits are free and marked used
// under the lock, so no frame is given twice; `phys_to_virt` is the platform's
// fixed linear mapping (`virt_offset`), contiguous for contiguous frames; the
// spin lock makes every method callable from any CPU.
unsafe impl<const WORDS: usize> FrameAllocator for BitmapFrames<WORDS> {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        if count == 0 || !align_frames.is_power_of_two() {
            return None;
        }
        let mut b = self.inner.lock();
        if b.free_frames < count {
            return None;
        }
        let base_frame = (b.base / FRAME_SIZE as u64) as usize;
        // Index i is frame base_frame + i; alignment is of the physical frame number.
        let mut i = (base_frame.div_ceil(align_frames) * align_frames) - base_frame;
        while i + count <= Bitmap::<WORDS>::FRAMES {
            match (i..i + count).find(|&j| !b.is_free(j)) {
                None => {
                    for j in i..i + count {
                        b.set(j, false);
                    }
                    return Some(HostPhysAddr::from_usize(b.base as usize + i * FRAME_SIZE));
                }
                Some(used) => {
                    let next = used + 1;
                    i = ((base_frame + next).div_ceil(align_frames) * align_frames) - base_frame;
                }
            }
        }
        None
    }

    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        let start = hpa.as_usize() as u64;
        let mut b = self.inner.lock();
        for i in b.frames_in(start, start + (count * FRAME_SIZE) as u64) {
            debug_assert!(!b.is_free(i), "double free of frame {i}");
            b.set(i, true);
        }
    }

    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        HostVirtAddr::from_usize(hpa.as_usize() + self.virt_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(v: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(v)
    }

    #[test]
    fn only_added_ram_is_handed_out() {
        // 128 frames from 0x10_0000.
        let f = BitmapFrames::<2>::new(0x10_0000, 0);
        assert_eq!(f.alloc_frame(), None);
        f.add_free(0x10_0000, 0x18_0000);
        f.remove(0x10_0000, 0x12_0800); // the "image": 32 frames + a partial one
        assert_eq!(f.free_frames(), 128 - 33);
        assert_eq!(f.alloc_frame(), Some(hpa(0x12_1000)));
        // Unaligned edges of free RAM are rounded inwards.
        let g = BitmapFrames::<1>::new(0, 0);
        g.add_free(0x800, 0x3800);
        assert_eq!(g.free_frames(), 2);
    }

    #[test]
    fn aligned_contiguous_allocations() {
        let f = BitmapFrames::<4>::new(0x10_0000, 0);
        f.add_free(0, u64::MAX);
        assert_eq!(f.free_frames(), 256);
        assert_eq!(f.alloc_frames(1, 1), Some(hpa(0x10_0000)));
        // 4 frames aligned to 16 KiB... and to 2 MiB (512 frames: none in window).
        assert_eq!(f.alloc_frames(4, 4), Some(hpa(0x10_4000)));
        assert_eq!(f.alloc_frames(1, 512), None);
        // 3 frames: the hole at 0x10_1000..0x10_4000 fits exactly.
        assert_eq!(f.alloc_frames(3, 1), Some(hpa(0x10_1000)));
        assert_eq!(f.alloc_frames(2, 2), Some(hpa(0x10_8000)));
        // SAFETY: freeing what was allocated just above.
        unsafe { f.dealloc_frames(hpa(0x10_4000), 4) };
        assert_eq!(f.alloc_frames(4, 1), Some(hpa(0x10_4000)));
        assert_eq!(f.alloc_frames(0, 1), None);
        assert_eq!(
            f.alloc_frames(1, 3),
            None,
            "alignment must be a power of two"
        );
    }

    #[test]
    fn exhaustion_and_reservation() {
        let f = BitmapFrames::<1>::new(0, 0x1000_0000);
        f.add_free(0, 64 * 0x1000);
        assert!(f.reserve(hpa(0x8000), 8));
        assert!(!f.reserve(hpa(0x8000), 1), "already taken");
        assert!(!f.reserve(hpa(0x3f000), 2), "past the window");
        assert!(!f.reserve(hpa(0x800), 1), "unaligned");
        assert!(!f.reserve(hpa(usize::MAX & !0xfff), usize::MAX));
        assert_eq!(f.free_frames(), 56);
        assert_eq!(f.alloc_frames(57, 1), None);
        assert_eq!(f.alloc_frames(8, 1), Some(hpa(0)));
        assert_eq!(f.alloc_frames(48, 1), Some(hpa(0x10000)));
        assert_eq!(f.alloc_frame(), None);
        assert_eq!(f.phys_to_virt(hpa(0x1000)).as_usize(), 0x1000_1000);
    }
}
