//! Physical frames tracked one bit each, written once for every allocator of the
//! workspace: [`FrameBitmap`] (the bookkeeping over a window of host-physical memory,
//! generic over its storage) and [`BitmapFrames`] (a fixed window behind a spin lock,
//! the boards' frame allocator).
//!
//! A window starts with every frame used; RAM is given to it with `add_free`. Frames
//! are handed out first fit, contiguous and aligned to their physical frame number,
//! reserved at a fixed address (identity-mapped guest RAM), and freed with checks:
//! a free outside the window or of a frame that is already free is refused and
//! changes nothing.
//!
//! [`BitmapFrames`] also knows which free frames still read as zero (RAM the platform
//! promised zero with `add_free_zeroed`, not handed out since), so that
//! [`FrameAllocator::alloc_zeroed`] writes only the others: a guest's RAM fresh from
//! the host is not zeroed twice, and a frame freed dirty is zeroed again on reuse.

use core::fmt;
use core::ops::Range;

use crate::{FRAME_SIZE, FrameAllocator, HostPhysAddr, HostVirtAddr, ZeroFn, zero_plain};

/// Why a free was refused; the bitmap is left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The range is not frame-aligned, or not inside the allocator's window.
    OutOfWindow {
        /// The address given.
        hpa: HostPhysAddr,
        /// The frames given.
        count: usize,
    },
    /// A frame of the range is not allocated (a double free).
    NotAllocated {
        /// The first such frame.
        hpa: HostPhysAddr,
    },
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfWindow { hpa, count } => {
                write!(f, "{count} frames at {hpa:#x} are not inside the window")
            }
            Self::NotAllocated { hpa } => {
                write!(f, "frame {hpa:#x} is not allocated (double free)")
            }
        }
    }
}

impl core::error::Error for FreeError {}

/// One bit per frame of the window `[base, base + frames)` (frame numbers), set when
/// the frame is free; `S` holds the bits (`[u64; N]` or `Vec<u64>`).
///
/// Invariants: bits at and past `frames` are clear; `free` counts the set bits; no
/// frame below `hint` is free.
#[derive(Clone, Debug)]
pub(crate) struct FrameBitmap<S> {
    /// Frame number (address / 4 KiB) of bit 0.
    base: usize,
    /// Frames in the window.
    frames: usize,
    bits: S,
    free: usize,
    hint: usize,
}

/// The window of at most `frames` frames from `base` rounded up to a frame, as
/// (first frame number, frames), cut where its end address would not fit in a
/// `usize` (the last frame of the address space is never in a window).
const fn window(base: HostPhysAddr, frames: usize) -> (usize, usize) {
    let first = base.as_usize().div_ceil(FRAME_SIZE);
    let room = (usize::MAX / FRAME_SIZE).saturating_sub(first);
    (first, if frames < room { frames } else { room })
}

impl<const WORDS: usize> FrameBitmap<[u64; WORDS]> {
    /// A window of up to `WORDS * 64` frames from `base` (see [`window`]), all used.
    pub(crate) const fn new_array(base: HostPhysAddr) -> Self {
        let (base, frames) = window(base, WORDS * 64);
        Self {
            base,
            frames,
            bits: [0; WORDS],
            free: 0,
            hint: 0,
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl FrameBitmap<alloc::vec::Vec<u64>> {
    /// A window of up to `frames` frames from `base` (see [`window`]), all used.
    pub(crate) fn new_vec(base: HostPhysAddr, frames: usize) -> Self {
        let (base, frames) = window(base, frames);
        Self {
            base,
            frames,
            bits: alloc::vec![0; frames.div_ceil(64)],
            free: 0,
            hint: 0,
        }
    }
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> FrameBitmap<S> {
    /// Frames free now.
    pub(crate) fn free_frames(&self) -> usize {
        self.free
    }

    fn is_free(&self, i: usize) -> bool {
        self.bits.as_ref()[i / 64] & (1 << (i % 64)) != 0
    }

    /// Marks frames `range` (indices in the window) free or used, counting changes.
    fn set(&mut self, range: Range<usize>, free: bool) {
        for i in range {
            if self.is_free(i) != free {
                let word = &mut self.bits.as_mut()[i / 64];
                *word ^= 1 << (i % 64);
                if free {
                    self.free += 1;
                } else {
                    self.free -= 1;
                }
            }
        }
    }

    /// The indices of frame numbers `[first, last)`, clipped to the window.
    fn clip(&self, first: usize, last: usize) -> Range<usize> {
        let first = first.saturating_sub(self.base).min(self.frames);
        let last = last.saturating_sub(self.base).min(self.frames);
        first..last.max(first)
    }

    /// The index of `hpa` if it is frame-aligned and `count` frames from it lie in the
    /// window.
    fn index(&self, hpa: HostPhysAddr, count: usize) -> Option<usize> {
        let addr = hpa.as_usize();
        if !addr.is_multiple_of(FRAME_SIZE) {
            return None;
        }
        let i = (addr / FRAME_SIZE).checked_sub(self.base)?;
        (i.checked_add(count)? <= self.frames).then_some(i)
    }

    fn addr(&self, i: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize((self.base + i) * FRAME_SIZE)
    }

    /// Marks the whole frames inside physical `[start, end)` free (rounded inwards,
    /// clipped to the window); returns their indices.
    pub(crate) fn add_free(&mut self, start: HostPhysAddr, end: HostPhysAddr) -> Range<usize> {
        let range = self.clip(
            start.as_usize().div_ceil(FRAME_SIZE),
            end.as_usize() / FRAME_SIZE,
        );
        self.hint = self.hint.min(range.start);
        self.set(range.clone(), true);
        range
    }

    /// Marks every frame touching physical `[start, end)` used (rounded outwards,
    /// clipped to the window); returns their indices.
    pub(crate) fn remove(&mut self, start: HostPhysAddr, end: HostPhysAddr) -> Range<usize> {
        let range = self.clip(
            start.as_usize() / FRAME_SIZE,
            end.as_usize().div_ceil(FRAME_SIZE),
        );
        self.set(range.clone(), false);
        range
    }

    /// The first free index at or after `from`, skipping fully used words.
    fn next_free(&self, from: usize) -> Option<usize> {
        let words = self.bits.as_ref();
        let mut w = from / 64;
        let mut word = words.get(w)? & (u64::MAX << (from % 64));
        while word == 0 {
            w += 1;
            word = *words.get(w)?;
        }
        let i = w * 64 + word.trailing_zeros() as usize;
        (i < self.frames).then_some(i)
    }

    /// The first index at or after `i` whose frame number is a multiple of `align`.
    fn align_up(&self, i: usize, align: usize) -> Option<usize> {
        Some((self.base + i).checked_next_multiple_of(align)? - self.base)
    }

    /// Takes `count` contiguous free frames whose frame number is a multiple of
    /// `align` (a power of two), the lowest such run; `None` when there is none,
    /// `count` is 0 or `align` is not a power of two.
    pub(crate) fn alloc(&mut self, count: usize, align: usize) -> Option<HostPhysAddr> {
        if count == 0 || !align.is_power_of_two() || count > self.free {
            return None;
        }
        // Every run starts on a free frame, and none is free below the hint.
        let mut i = self.align_up(self.next_free(self.hint)?, align)?;
        loop {
            let end = i.checked_add(count).filter(|&e| e <= self.frames)?;
            match (i..end).find(|&j| !self.is_free(j)) {
                None => break,
                Some(used) => i = self.align_up(self.next_free(used + 1)?, align)?,
            }
        }
        // A single frame is the first free one after the hint; a run found at the
        // hint covers it: either way nothing below the run's end is free now.
        if (count == 1 && align == 1) || i == self.hint {
            self.hint = i + count;
        }
        self.set(i..i + count, false);
        Some(self.addr(i))
    }

    /// Takes the `count` frames at `hpa` if all of them are free and in the window;
    /// `false` (and nothing taken) otherwise, or when `count` is 0.
    pub(crate) fn reserve(&mut self, hpa: HostPhysAddr, count: usize) -> bool {
        match self.index(hpa, count) {
            Some(i) if count > 0 && (i..i + count).all(|j| self.is_free(j)) => {
                self.set(i..i + count, false);
                true
            }
            _ => false,
        }
    }

    /// Gives back the `count` frames at `hpa`, all of which must be allocated (by
    /// `alloc` or `reserve`); refused, with nothing changed, otherwise.
    pub(crate) fn dealloc(&mut self, hpa: HostPhysAddr, count: usize) -> Result<(), FreeError> {
        let first = self
            .index(hpa, count)
            .ok_or(FreeError::OutOfWindow { hpa, count })?;
        if count == 1 {
            // One frame (a table, a 4 KiB page: most frees): one bit.
            let (word, bit) = (&mut self.bits.as_mut()[first / 64], 1 << (first % 64));
            if *word & bit != 0 {
                return Err(FreeError::NotAllocated { hpa });
            }
            *word |= bit;
            self.free += 1;
        } else {
            if let Some(j) = (first..first + count).find(|&j| self.is_free(j)) {
                return Err(FreeError::NotAllocated { hpa: self.addr(j) });
            }
            self.set(first..first + count, true);
        }
        self.hint = self.hint.min(first);
        Ok(())
    }
}

/// A frame allocator over the fixed physical window `[base, base + WORDS * 64 *
/// 4 KiB)`, one bit per frame behind a spin lock, for a hypervisor image's `static`.
///
/// Every frame starts used: [`BitmapFrames::add_free`] gives RAM to it and
/// [`BitmapFrames::remove`] takes out what is not (the image, boot data). RAM outside
/// the window is never handed out. The hypervisor sees physical memory at
/// `phys + virt_offset` (a linear map).
///
/// Its [`FrameAllocator`] implementation hands out what it was given as RAM and
/// promises that the hypervisor can use it through that linear map: whoever builds
/// the allocator and gives it memory makes those promises, in the `unsafe`
/// [`BitmapFrames::new`], [`BitmapFrames::add_free`] and [`BitmapFrames::dealloc`].
///
/// ```
/// use addrspace::{BitmapFrames, FrameAllocator, HostPhysAddr};
///
/// let mut ram = vec![0u8; 0x10_0000];
/// let base = HostPhysAddr::from_usize((ram.as_mut_ptr() as usize + 0xfff) & !0xfff);
/// // SAFETY: this test's "physical" addresses are its own heap addresses, seen at
/// // themselves (offset 0).
/// let frames = unsafe { BitmapFrames::<2>::new(base, 0) };
/// // SAFETY: the 128 frames from `base` lie in `ram`, which nothing else uses and
/// // which outlives `frames`' use.
/// unsafe { frames.add_free(base, base + 128 * 0x1000) };
/// let root = frames.alloc_frames(4, 4).unwrap();
/// assert_eq!(root.as_usize() % 0x4000, 0);
/// // SAFETY: `root` was handed out above and nothing uses it.
/// assert_eq!(unsafe { frames.dealloc(root, 4) }, Ok(()));
/// // SAFETY: a double free, which is refused; nothing uses the frames.
/// assert!(unsafe { frames.dealloc(root, 4) }.is_err(), "a double free is refused");
/// ```
pub struct BitmapFrames<const WORDS: usize> {
    inner: spin::Mutex<Frames<WORDS>>,
    virt_offset: usize,
    /// How `alloc_zeroed` zeroes frames that are not known to be zero.
    zero: ZeroFn,
}

/// The state behind [`BitmapFrames`]' lock.
struct Frames<const WORDS: usize> {
    map: FrameBitmap<[u64; WORDS]>,
    /// One bit per frame of the window (indices as in `map`), set only while the frame
    /// reads as zero and is free, or allocated by an `alloc_zeroed` that has not
    /// looked at it yet: set by `add_free_zeroed`, cleared when the frame is handed
    /// out or given as RAM without that promise.
    zero: [u64; WORDS],
    /// Frames `alloc_zeroed` handed out without writing them, and frames it zeroed.
    fresh: usize,
    zeroed: usize,
}

impl<const WORDS: usize> Frames<WORDS> {
    fn is_zero(&self, i: usize) -> bool {
        self.zero[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets or clears the zero bits of frames `range` (indices in the window).
    fn mark_zero(&mut self, range: Range<usize>, zero: bool) {
        for i in range {
            let (word, bit) = (&mut self.zero[i / 64], 1u64 << (i % 64));
            if zero { *word |= bit } else { *word &= !bit }
        }
    }

    /// Clears the zero bits of the `count` frames at `hpa`, which were just handed
    /// out for their holder to write.
    fn handed_out(&mut self, hpa: HostPhysAddr, count: usize) {
        if let Some(i) = self.map.index(hpa, count) {
            self.mark_zero(i..i + count, false);
        }
    }
}

/// Frames `alloc_zeroed` looks at under one hold of the lock (a 2 MiB block): the
/// lock is never held while memory is written.
const ZERO_RUN: usize = 512;

/// How many frames [`FrameAllocator::alloc_zeroed`] handed out without writing them
/// (still zero from the platform) and how many it zeroed
/// ([`BitmapFrames::zeroing`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Zeroing {
    /// Frames handed out as they were: zero since the platform gave them.
    pub fresh: usize,
    /// Frames zeroed before they were handed out (used before, or given without the
    /// promise).
    pub zeroed: usize,
}

impl<const WORDS: usize> BitmapFrames<WORDS> {
    /// An allocator for the window of `WORDS * 64` frames from `base` (rounded up
    /// to a frame, and cut where its end would not fit in a `usize`), with no free
    /// frame yet; physical `hpa` is seen at virtual `hpa + virt_offset` (wrapping).
    ///
    /// # Safety
    ///
    /// For every frame this allocator will be given as RAM (by `add_free`), the
    /// hypervisor may read and write it at `hpa + virt_offset` (wrapping), contiguous
    /// frames at contiguous virtual addresses, for as long as the allocator is used:
    /// [`FrameAllocator::phys_to_virt`] promises exactly that.
    pub const unsafe fn new(base: HostPhysAddr, virt_offset: usize) -> Self {
        // SAFETY: the caller's promise; `zero_plain` keeps the `ZeroFn` promise.
        unsafe { Self::with_zeroing(base, virt_offset, zero_plain) }
    }

    /// As [`BitmapFrames::new`], zeroing frames with the platform's routine `zero`
    /// (its HAL's `zero_memory`) instead of the portable [`zero_plain`]:
    /// [`FrameAllocator::alloc_zeroed`] calls it for each run of frames that is not
    /// known to be zero (up to 2 MiB at a time), through
    /// [`FrameAllocator::zero_frames`].
    ///
    /// # Safety
    ///
    /// As [`BitmapFrames::new`]; and `zero` keeps the [`ZeroFn`] promise: given
    /// memory it may write, it writes zero to every byte of the range and nothing
    /// else, its stores ordered as ordinary stores. The allocator hands
    /// out what it wrote as zeroed frames.
    pub const unsafe fn with_zeroing(base: HostPhysAddr, virt_offset: usize, zero: ZeroFn) -> Self {
        Self {
            inner: spin::Mutex::new(Frames {
                map: FrameBitmap::new_array(base),
                zero: [0; WORDS],
                fresh: 0,
                zeroed: 0,
            }),
            virt_offset,
            zero,
        }
    }

    /// Marks the whole frames inside physical `[start, end)` free (the part inside
    /// the window; partial frames at the edges are left out). Their contents are
    /// unknown: [`FrameAllocator::alloc_zeroed`] zeroes them.
    ///
    /// # Safety
    ///
    /// Those frames are RAM that nothing else uses (not the image, boot data, a
    /// device, or memory already handed out) and that stays so until the allocator
    /// hands them out: they are given to the allocator's users to own.
    pub unsafe fn add_free(&self, start: HostPhysAddr, end: HostPhysAddr) {
        let mut f = self.inner.lock();
        let range = f.map.add_free(start, end);
        f.mark_zero(range, false);
    }

    /// As [`BitmapFrames::add_free`], for RAM that reads as zero:
    /// [`FrameAllocator::alloc_zeroed`] hands these frames out without writing them,
    /// until they were handed out once (a freed frame is zeroed again on reuse).
    ///
    /// # Safety
    ///
    /// As [`BitmapFrames::add_free`]; and every byte of those frames reads as zero
    /// through the linear map (memory the platform zero-filled that nothing wrote
    /// since: not where a loader put images, a device tree or an initrd, not the
    /// hypervisor's own image, stack or heap). A guest would see whatever is there.
    pub unsafe fn add_free_zeroed(&self, start: HostPhysAddr, end: HostPhysAddr) {
        let mut f = self.inner.lock();
        let range = f.map.add_free(start, end);
        f.mark_zero(range, true);
    }

    /// Marks every frame touching physical `[start, end)` used (the image, boot
    /// data).
    pub fn remove(&self, start: HostPhysAddr, end: HostPhysAddr) {
        let mut f = self.inner.lock();
        let range = f.map.remove(start, end);
        f.mark_zero(range, false);
    }

    /// Frames currently free.
    pub fn free_frames(&self) -> usize {
        self.inner.lock().map.free_frames()
    }

    /// What [`FrameAllocator::alloc_zeroed`] did so far: frames handed out still zero
    /// from the platform, and frames it zeroed.
    pub fn zeroing(&self) -> Zeroing {
        let f = self.inner.lock();
        Zeroing {
            fresh: f.fresh,
            zeroed: f.zeroed,
        }
    }

    /// The physical window `[start, end)`: RAM outside it is never handed out.
    pub fn phys_range(&self) -> (HostPhysAddr, HostPhysAddr) {
        let f = self.inner.lock();
        (f.map.addr(0), f.map.addr(f.map.frames))
    }

    /// Takes the `count` frames at `hpa` if all are free and in the window; `false`
    /// (and nothing taken) otherwise, or when `count` is 0.
    pub fn reserve(&self, hpa: HostPhysAddr, count: usize) -> bool {
        let mut f = self.inner.lock();
        let taken = f.map.reserve(hpa, count);
        if taken {
            f.handed_out(hpa, count);
        }
        taken
    }

    /// Gives back `count` frames at `hpa` from [`FrameAllocator::alloc_frames`] or
    /// [`BitmapFrames::reserve`]. A range outside the window or with a frame that
    /// is already free is refused, and nothing changes. (Frames of the window that
    /// were never given with `add_free`, or were taken out with `remove`, look
    /// allocated: freeing them is not caught.) The frames are zeroed again when
    /// `alloc_zeroed` hands them out next.
    ///
    /// # Safety
    ///
    /// The frames were handed out by this allocator and nothing uses them any more
    /// (no table links them, no vCPU can reach them through a cached translation):
    /// the allocator will hand them to someone else.
    pub unsafe fn dealloc(&self, hpa: HostPhysAddr, count: usize) -> Result<(), FreeError> {
        // Their zero bits were cleared when they were handed out.
        self.inner.lock().map.dealloc(hpa, count)
    }
}

impl<const WORDS: usize> fmt::Debug for BitmapFrames<WORDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (start, end) = self.phys_range();
        f.debug_struct("BitmapFrames")
            .field("window", &(start..end))
            .field("free_frames", &self.free_frames())
            .field("zeroing", &self.zeroing())
            .field("virt_offset", &format_args!("{:#x}", self.virt_offset))
            .finish()
    }
}

// SAFETY: a frame is handed out only when its bit says free, and bits become free
// only through `add_free`/`add_free_zeroed` (RAM nobody else uses, per their
// contract) and `dealloc` (frames nobody uses any more, per its contract); it is
// marked used under the lock, so no frame is given twice; the search keeps the
// alignment of the physical frame number; `phys_to_virt` is the linear map `new`'s
// contract promises for every frame given as RAM, contiguous for contiguous frames,
// and `linear_offset` names its offset, which never changes;
// the spin lock makes every method callable from any CPU. `alloc_zeroed` leaves
// unwritten only frames whose zero bit was set: given by `add_free_zeroed` (which
// promises they read as zero) and not handed out since (handing out clears the bit,
// and so do `add_free` and `remove`); it zeroes the others with `zero`, which
// `with_zeroing`'s caller promised keeps the `ZeroFn` promise (`zero_plain` does).
unsafe impl<const WORDS: usize> FrameAllocator for BitmapFrames<WORDS> {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        let mut f = self.inner.lock();
        let hpa = f.map.alloc(count, align_frames)?;
        f.handed_out(hpa, count);
        Some(hpa)
    }

    /// Frames still zero from the platform are handed out as they are; the others
    /// are zeroed, 2 MiB at a time, outside the lock.
    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        let (hpa, first) = {
            let mut f = self.inner.lock();
            let hpa = f.map.alloc(count, align_frames)?;
            (hpa, f.map.index(hpa, count)?)
        };
        // The frames are ours now: their zero bits are read and cleared a run at a
        // time, and the runs that were not zero written with the lock released.
        let mut done = 0;
        while done < count {
            let (zero, run) = {
                let mut f = self.inner.lock();
                let zero = f.is_zero(first + done);
                let limit = (count - done).min(ZERO_RUN);
                let run = (1..limit)
                    .find(|&k| f.is_zero(first + done + k) != zero)
                    .unwrap_or(limit);
                f.mark_zero(first + done..first + done + run, false);
                if zero {
                    f.fresh += run;
                } else {
                    f.zeroed += run;
                }
                (zero, run)
            };
            if !zero {
                // SAFETY: the frames were allocated above, so they are ours alone.
                unsafe { self.zero_frames(hpa + done * FRAME_SIZE, run) };
            }
            done += run;
        }
        Some(hpa)
    }

    /// Zeroes with the routine given to [`BitmapFrames::with_zeroing`].
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        let ptr = self.phys_to_virt(hpa).as_mut_ptr::<u8>();
        // SAFETY: the caller holds the frames, which `new`'s contract maps writable
        // and contiguous at `ptr`; `zero` keeps the `ZeroFn` promise
        // (`with_zeroing`'s contract).
        unsafe { (self.zero)(ptr, count * FRAME_SIZE) };
    }

    /// A bad free (outside the window, or of a free frame) is refused and logged.
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the trait's contract for `dealloc_frames` is `dealloc`'s.
        if let Err(e) = unsafe { self.dealloc(hpa, count) } {
            log::error!("dealloc_frames({hpa:?}, {count}) refused: {e}");
        }
    }

    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        HostVirtAddr::from_usize(hpa.as_usize().wrapping_add(self.virt_offset))
    }

    /// `virt_offset`: `phys_to_virt` above is that linear map, fixed at `new`.
    #[inline]
    fn linear_offset(&self) -> Option<usize> {
        Some(self.virt_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usize_of;

    fn hpa(v: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(v)
    }

    /// An allocator over a window whose frames these tests never touch (they only
    /// check the bookkeeping; no table or guest memory lives in them).
    fn frames_at<const W: usize>(base: HostPhysAddr, virt_offset: usize) -> BitmapFrames<W> {
        // SAFETY: nothing reads or writes the frames' memory (see above).
        unsafe { BitmapFrames::new(base, virt_offset) }
    }

    fn add_ram<const W: usize>(f: &BitmapFrames<W>, start: HostPhysAddr, end: HostPhysAddr) {
        // SAFETY: as in `frames_at`: the frames are only numbers here.
        unsafe { f.add_free(start, end) }
    }

    fn give_back<const W: usize>(
        f: &BitmapFrames<W>,
        hpa: HostPhysAddr,
        count: usize,
    ) -> Result<(), FreeError> {
        // SAFETY: as in `frames_at`; bad frees are what some tests check.
        unsafe { f.dealloc(hpa, count) }
    }

    /// A window whose end does not fit in an address (`usize::MAX & !0xfff` plus 64
    /// frames) overflowed computing its range: it is cut where addresses end, and so
    /// is every window, whatever its base (unaligned bases round up).
    #[test]
    fn bitmap_window_at_the_top_of_the_address_space_does_not_overflow() {
        let top = frames_at::<1>(hpa(usize::MAX & !0xfff), 0);
        assert_eq!(
            top.phys_range(),
            (hpa(usize::MAX & !0xfff), hpa(usize::MAX & !0xfff))
        );
        add_ram(&top, hpa(0), hpa(usize::MAX));
        assert_eq!((top.free_frames(), top.alloc_frame()), (0, None));
        let near = frames_at::<1>(hpa(usize::MAX - 0x3_0fff), 0);
        assert_eq!(
            near.phys_range(),
            (hpa(usize::MAX - 0x3_0fff), hpa(usize::MAX & !0xfff))
        );
        add_ram(&near, hpa(0), hpa(usize::MAX));
        assert_eq!(near.free_frames(), 0x30);
        assert!(give_back(&near, hpa(usize::MAX & !0xfff), 1).is_err());
        let unaligned = frames_at::<1>(hpa(0x1234), 0x100);
        assert_eq!(unaligned.phys_range(), (hpa(0x2000), hpa(0x42000)));
        let a = unaligned.alloc_frame();
        assert_eq!(a, None, "no RAM given yet");
        add_ram(&unaligned, hpa(0), hpa(0x42000));
        let a = unaligned.alloc_frame().unwrap();
        assert_eq!(unaligned.phys_to_virt(a).as_usize(), 0x2100);
        assert_eq!(unaligned.linear_offset(), Some(0x100));
        let wrap = frames_at::<1>(hpa(0x1000), usize::MAX);
        assert_eq!(wrap.phys_to_virt(hpa(0x1000)).as_usize(), 0xfff);
    }

    // ---------------------------------------------------------------- windows

    #[test]
    fn only_added_ram_is_handed_out() {
        // 128 frames from 0x10_0000.
        let f = frames_at::<2>(hpa(0x10_0000), 0);
        assert_eq!(f.phys_range(), (hpa(0x10_0000), hpa(0x18_0000)));
        assert_eq!(f.alloc_frame(), None);
        add_ram(&f, hpa(0x10_0000), hpa(0x18_0000));
        f.remove(hpa(0x10_0000), hpa(0x12_0800)); // the "image": 32 frames + a partial one
        assert_eq!(f.free_frames(), 128 - 33);
        assert_eq!(f.alloc_frame(), Some(hpa(0x12_1000)));
        // Unaligned edges of free RAM are rounded inwards.
        let g = frames_at::<1>(hpa(0), 0);
        add_ram(&g, hpa(0x800), hpa(0x3800));
        assert_eq!(g.free_frames(), 2);
    }

    #[test]
    fn added_ram_rounds_inwards_and_is_capped_by_the_window() {
        let f = frames_at::<2>(hpa(0x8040_0000), 0);
        assert_eq!(f.alloc_frames(1, 1), None, "empty before RAM is added");
        add_ram(&f, hpa(0x8040_0800), hpa(0x8041_0000));
        assert_eq!(f.free_frames(), 15);
        assert_eq!(f.alloc_frames(1, 1), Some(hpa(0x8040_1000)));
        let big = frames_at::<1>(hpa(0), 0);
        add_ram(&big, hpa(0), hpa(1 << 30));
        assert_eq!(big.free_frames(), 64);
        // RAM of 3 frames from half a frame in: 2 whole frames, the first one up.
        let base = 0x4100_0000;
        let g = frames_at::<1>(hpa(base), 0);
        add_ram(&g, hpa(base + 0x800), hpa(base + 0x800 + 3 * FRAME_SIZE));
        assert_eq!(g.free_frames(), 2);
        assert_eq!(g.alloc_frames(1, 1), Some(hpa(base + FRAME_SIZE)));
    }

    // ---------------------------------------------------------------- first fit

    #[test]
    fn aligned_contiguous_allocations() {
        let f = frames_at::<4>(hpa(0x10_0000), 0);
        add_ram(&f, hpa(0), hpa(usize::MAX));
        assert_eq!(f.free_frames(), 256);
        assert_eq!(f.alloc_frames(1, 1), Some(hpa(0x10_0000)));
        // 4 frames aligned to 16 KiB... and to 2 MiB (512 frames: none in window).
        assert_eq!(f.alloc_frames(4, 4), Some(hpa(0x10_4000)));
        assert_eq!(f.alloc_frames(1, 512), None);
        // 3 frames: the hole at 0x10_1000..0x10_4000 fits exactly.
        assert_eq!(f.alloc_frames(3, 1), Some(hpa(0x10_1000)));
        assert_eq!(f.alloc_frames(2, 2), Some(hpa(0x10_8000)));
        assert_eq!(give_back(&f, hpa(0x10_4000), 4), Ok(()));
        assert_eq!(f.alloc_frames(4, 1), Some(hpa(0x10_4000)));
        assert_eq!(f.alloc_frames(0, 1), None);
        assert_eq!(
            f.alloc_frames(1, 3),
            None,
            "alignment must be a power of two"
        );
    }

    /// A G-stage root: 4 frames aligned to 16 KiB, after a single frame that breaks
    /// the alignment of the first free frame.
    #[test]
    fn aligned_runs_and_first_fit_holes() {
        let f = frames_at::<4>(hpa(0x8040_0000), 0);
        add_ram(&f, hpa(0x8040_1000), hpa(0x8050_0000));
        assert_eq!(f.alloc_frames(1, 1), Some(hpa(0x8040_1000)));
        assert_eq!(f.alloc_frames(4, 4), Some(hpa(0x8040_4000)));
        assert_eq!(
            f.alloc_frames(1, 1),
            Some(hpa(0x8040_2000)),
            "first fit fills the hole"
        );
        assert_eq!(f.alloc_frames(2, 2), Some(hpa(0x8040_8000)));
        assert_eq!(f.alloc_frames(1, 3), None, "not a power of two");
        assert_eq!(f.alloc_frames(0, 1), None);
    }

    /// A concatenated stage-2 root (2 frames aligned to 8 KiB) and a 64 KiB-aligned
    /// run, in a pool that starts one frame past a 64 KiB boundary.
    #[test]
    fn stage2_root_alignments() {
        const BASE: usize = 0x4100_0000;
        let f = frames_at::<2>(hpa(BASE), 0);
        add_ram(&f, hpa(BASE + 0x1000), hpa(BASE + 0x1000 + 64 * FRAME_SIZE));
        assert_eq!(f.free_frames(), 64);
        let a = f.alloc_frames(1, 1).unwrap();
        assert_eq!(a, hpa(BASE + 0x1000));
        // Two frames aligned to 8 KiB: skips one.
        let b = f.alloc_frames(2, 2).unwrap();
        assert_eq!(b, hpa(BASE + 0x2000));
        assert_eq!(b.as_usize() % 0x2000, 0);
        // 16 frames aligned to 64 KiB.
        let c = f.alloc_frames(16, 16).unwrap();
        assert_eq!(c.as_usize() % 0x1_0000, 0);
        assert_eq!(f.free_frames(), 64 - 19);
        give_back(&f, b, 2).unwrap();
        assert_eq!(f.alloc_frames(1, 1), Some(hpa(BASE + 0x2000)));
    }

    #[test]
    fn exhaustion_and_fragmentation() {
        const BASE: usize = 0x4100_0000;
        let f = frames_at::<1>(hpa(BASE), 0);
        add_ram(&f, hpa(BASE), hpa(BASE + 8 * FRAME_SIZE));
        let all: Vec<_> = (0..8).map(|_| f.alloc_frames(1, 1).unwrap()).collect();
        assert_eq!(f.alloc_frames(1, 1), None);
        give_back(&f, all[2], 1).unwrap();
        give_back(&f, all[4], 1).unwrap();
        // Two free frames, but not adjacent.
        assert_eq!(f.alloc_frames(2, 1), None);
        assert_eq!(f.alloc_frames(1, 1), Some(all[2]));
        assert_eq!(f.alloc_frames(9, 1), None);
        assert_eq!(f.alloc_frames(0, 1), None);
    }

    // ---------------------------------------------------------------- reservations

    #[test]
    fn exhaustion_and_reservation() {
        let f = frames_at::<1>(hpa(0), 0x1000_0000);
        add_ram(&f, hpa(0), hpa(64 * 0x1000));
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

    #[test]
    fn reservations() {
        let f = frames_at::<2>(hpa(0x8000_0000), 0);
        add_ram(&f, hpa(0x8000_0000), hpa(0x8008_0000));
        assert!(f.reserve(hpa(0x8001_0000), 16));
        assert!(!f.reserve(hpa(0x8001_f000), 2), "overlaps the reservation");
        assert!(!f.reserve(hpa(0x8007_f000), 2), "runs past the pool");
        assert!(!f.reserve(hpa(0x7fff_f000), 1), "below the pool");
        assert!(!f.reserve(hpa(0x8002_0800), 1), "unaligned");
        assert!(!f.reserve(hpa(0x8003_0000), 0), "empty");
        // 17 frames from 0x8000_0000 would run into the reservation: the next
        // 16-frame-aligned start after it.
        assert_eq!(f.alloc_frames(17, 16), Some(hpa(0x8002_0000)));
        assert_eq!(give_back(&f, hpa(0x8001_0000), 16), Ok(()));
        assert!(f.reserve(hpa(0x8001_0000), 16));
    }

    #[test]
    fn fixed_address_allocations() {
        const BASE: usize = 0x4100_0000;
        let f = frames_at::<1>(hpa(BASE), 0);
        add_ram(&f, hpa(BASE), hpa(BASE + 16 * FRAME_SIZE));
        assert!(f.reserve(hpa(BASE + 4 * FRAME_SIZE), 4));
        assert!(!f.reserve(hpa(BASE + 6 * FRAME_SIZE), 4), "overlaps");
        assert!(!f.reserve(hpa(BASE + 14 * FRAME_SIZE), 4), "past the end");
        assert!(!f.reserve(hpa(BASE - FRAME_SIZE), 1), "below the pool");
        assert!(!f.reserve(hpa(BASE + 1), 1), "unaligned");
        assert_eq!(f.alloc_frames(4, 4), Some(hpa(BASE)));
        assert_eq!(f.alloc_frames(4, 4), Some(hpa(BASE + 8 * FRAME_SIZE)));
    }

    // ---------------------------------------------------------------- frees

    #[test]
    fn exhaustion_and_dealloc() {
        let f = frames_at::<1>(hpa(0), 0);
        add_ram(&f, hpa(0x1000), hpa(0x1000 + 8 * 0x1000));
        let a = f.alloc_frames(6, 1).unwrap();
        assert_eq!(f.alloc_frames(3, 1), None);
        assert_eq!(f.free_frames(), 2);
        assert_eq!(give_back(&f, a, 6), Ok(()));
        assert_eq!(
            give_back(&f, a, 6),
            Err(FreeError::NotAllocated { hpa: a }),
            "double free"
        );
        assert_eq!(f.free_frames(), 8, "double free changes nothing");
        assert_eq!(f.alloc_frames(8, 1), Some(hpa(0x1000)));
        assert_eq!(
            give_back(&f, hpa(0x10_0000), 1),
            Err(FreeError::OutOfWindow {
                hpa: hpa(0x10_0000),
                count: 1
            }),
            "outside the pool"
        );
    }

    #[test]
    fn bad_frees_are_refused() {
        const BASE: usize = 0x4100_0000;
        let mut f = FrameBitmap::new_vec(hpa(BASE), 4);
        f.add_free(hpa(BASE), hpa(BASE + 4 * FRAME_SIZE));
        let a = f.alloc(2, 1).unwrap();
        assert_eq!(
            f.dealloc(a, 3),
            Err(FreeError::NotAllocated {
                hpa: a + 2 * FRAME_SIZE
            })
        );
        assert_eq!(
            f.dealloc(hpa(BASE + 4 * FRAME_SIZE), 1),
            Err(FreeError::OutOfWindow {
                hpa: hpa(BASE + 4 * FRAME_SIZE),
                count: 1
            })
        );
        assert_eq!(
            f.dealloc(hpa(BASE + 1), 1),
            Err(FreeError::OutOfWindow {
                hpa: hpa(BASE + 1),
                count: 1
            }),
            "unaligned"
        );
        f.dealloc(a, 2).unwrap();
        assert_eq!(f.free_frames(), 4);
        // A single frame takes its own path: refused as well, nothing changed.
        assert!(matches!(
            f.dealloc(a, 1),
            Err(FreeError::NotAllocated { .. })
        ));
        assert_eq!(f.free_frames(), 4);
        let one = f.alloc(1, 1).unwrap();
        assert_eq!(f.free_frames(), 3);
        f.dealloc(one, 1).unwrap();
        assert_eq!((f.free_frames(), f.alloc(4, 1)), (4, Some(hpa(BASE))));
    }

    /// `FrameAllocator::dealloc_frames` refuses (and logs) what `dealloc` refuses.
    #[test]
    fn the_trait_free_is_checked_too() {
        let f = frames_at::<1>(hpa(0x1000), 0);
        add_ram(&f, hpa(0), hpa(usize::MAX));
        let a = f.alloc_frame().unwrap();
        // SAFETY: allocated just above, not used.
        unsafe { f.dealloc_frames(a, 1) };
        assert_eq!(f.free_frames(), 64);
        // SAFETY: a double free and a foreign free, which the allocator refuses;
        // nothing uses those frames.
        unsafe {
            f.dealloc_frames(a, 1);
            f.dealloc_frames(hpa(0), 1);
        }
        assert_eq!(f.free_frames(), 64);
        assert_eq!(f.alloc_frames(64, 1), Some(a));
    }

    // ---------------------------------------------------------------- zeroing

    /// `W * 64` frames of real memory (a heap buffer seen at its own address) and
    /// an allocator over them.
    struct Ram<const W: usize> {
        _buf: Vec<u8>,
        base: HostPhysAddr,
        frames: BitmapFrames<W>,
    }

    fn ram<const W: usize>() -> Ram<W> {
        ram_zeroing_with(zero_plain)
    }

    /// A [`Ram`] whose allocator zeroes with `zero`.
    fn ram_zeroing_with<const W: usize>(zero: ZeroFn) -> Ram<W> {
        // Aligned to its size, so that aligned allocations start at its first frame.
        let buf = vec![0u8; 2 * W * 64 * FRAME_SIZE];
        let base = hpa((buf.as_ptr() as usize).next_multiple_of(W * 64 * FRAME_SIZE));
        // SAFETY: the window's frames lie in `buf`, which lives as long as the
        // allocator (same struct) and is reached only through it; offset 0: the
        // "physical" addresses are the buffer's own; `zero` is `zero_plain` or the
        // recording routine below, which zeroes exactly its range.
        let frames = unsafe { BitmapFrames::with_zeroing(base, 0, zero) };
        Ram {
            _buf: buf,
            base,
            frames,
        }
    }

    /// Fills `frames` frames at `at` (of a [`Ram`]) with `byte`.
    fn fill<const W: usize>(f: &BitmapFrames<W>, at: HostPhysAddr, frames: usize, byte: u8) {
        let ptr = f.phys_to_virt(at).as_mut_ptr::<u8>();
        // SAFETY: frames of a `Ram` buffer this test owns.
        unsafe { core::ptr::write_bytes(ptr, byte, frames * FRAME_SIZE) };
    }

    /// Hands out each of `frames` (frame numbers from `base`), writes into it and
    /// frees it: those frames are no longer known zero.
    fn dirty_frames<const W: usize>(f: &BitmapFrames<W>, base: HostPhysAddr, frames: &[usize]) {
        for &at in frames {
            assert!(f.reserve(base + at * FRAME_SIZE, 1));
            fill(f, base + at * FRAME_SIZE, 1, 9);
            give_back(f, base + at * FRAME_SIZE, 1).unwrap();
        }
    }

    /// Whether `frames` frames at `at` (of a [`Ram`]) read as zero.
    fn zero<const W: usize>(f: &BitmapFrames<W>, at: HostPhysAddr, frames: usize) -> bool {
        let ptr = f.phys_to_virt(at).as_ptr::<u8>();
        // SAFETY: frames of a `Ram` buffer this test owns.
        unsafe { core::slice::from_raw_parts(ptr, frames * FRAME_SIZE) }
            .iter()
            .all(|&b| b == 0)
    }

    /// Frames the platform promised zero are handed out by `alloc_zeroed` without
    /// being written (the counter says so, and a byte planted behind the promise's
    /// back shows it: the contract is the caller's), once; frames given without the
    /// promise are zeroed.
    #[test]
    fn fresh_frames_are_not_written() {
        let r = ram::<1>();
        let (f, base) = (&r.frames, r.base);
        // SAFETY: the first 32 frames of the buffer read as zero (vec![0; ..]).
        unsafe { f.add_free_zeroed(base, base + 32 * FRAME_SIZE) };
        fill(f, base + 3 * FRAME_SIZE, 1, 0xa5); // a broken promise, to observe
        let a = f.alloc_zeroed(8, 1).unwrap();
        assert_eq!(a, base);
        assert_eq!(
            f.zeroing(),
            Zeroing {
                fresh: 8,
                zeroed: 0
            }
        );
        assert!(!zero(f, a + 3 * FRAME_SIZE, 1), "a fresh frame was written");
        fill(f, a + 3 * FRAME_SIZE, 1, 0);
        // Frames given without the promise are zeroed.
        let dirty = base + 32 * FRAME_SIZE;
        fill(f, dirty, 32, 0x5a);
        add_ram(f, dirty, dirty + 32 * FRAME_SIZE);
        let b = f.alloc_zeroed(32, 32).unwrap();
        assert_eq!(b, dirty);
        assert!(zero(f, b, 32));
        assert_eq!(
            f.zeroing(),
            Zeroing {
                fresh: 8,
                zeroed: 32
            }
        );
        // Frames handed out by `alloc_frames` or `reserve` lose the promise.
        let c = f.alloc_frame().unwrap();
        assert!(f.reserve(base + 10 * FRAME_SIZE, 2));
        fill(f, c, 1, 1);
        fill(f, base + 10 * FRAME_SIZE, 2, 1);
        give_back(f, c, 1).unwrap();
        give_back(f, base + 10 * FRAME_SIZE, 2).unwrap();
        // 9..32 are free: 8 (dirty, was `c`), 9 fresh, 10..12 dirty, 12..32 fresh.
        let d = f.alloc_zeroed(24, 8).unwrap();
        assert_eq!(d, base + 8 * FRAME_SIZE);
        assert!(zero(f, d, 24));
        assert_eq!(
            f.zeroing(),
            Zeroing {
                fresh: 8 + 21,
                zeroed: 32 + 3
            }
        );
    }

    /// The regression for the zeroing promise: a frame the guest dirtied and gave
    /// back comes back zero from `alloc_zeroed`, whole or in part, and `add_free`
    /// or `remove` over promised frames withdraws the promise.
    #[test]
    fn a_dirtied_then_freed_frame_comes_back_zero() {
        let r = ram::<1>();
        let (f, base) = (&r.frames, r.base);
        // SAFETY: the buffer's 64 frames read as zero.
        unsafe { f.add_free_zeroed(base, base + 64 * FRAME_SIZE) };
        let a = f.alloc_zeroed(4, 4).unwrap();
        fill(f, a, 4, 0xee);
        give_back(f, a + FRAME_SIZE, 2).unwrap();
        let b = f.alloc_zeroed(2, 1).unwrap();
        assert_eq!(b, a + FRAME_SIZE);
        assert!(zero(f, b, 2), "freed data leaked");
        give_back(f, a, 1).unwrap();
        give_back(f, a + 3 * FRAME_SIZE, 1).unwrap();
        give_back(f, b, 2).unwrap();
        let c = f.alloc_zeroed(8, 1).unwrap();
        assert_eq!(c, a);
        assert!(zero(f, c, 8), "freed data leaked");
        // RAM given again without the promise, or taken out and given back, is
        // zeroed too.
        let e = base + 32 * FRAME_SIZE;
        fill(f, e, 2, 3);
        add_ram(f, e, e + 2 * FRAME_SIZE);
        f.remove(e + 2 * FRAME_SIZE, e + 3 * FRAME_SIZE);
        fill(f, e + 2 * FRAME_SIZE, 1, 3);
        add_ram(f, e + 2 * FRAME_SIZE, e + 3 * FRAME_SIZE);
        assert!(f.reserve(base + 8 * FRAME_SIZE, 24));
        let g = f.alloc_zeroed(3, 1).unwrap();
        assert_eq!(g, e);
        assert!(zero(f, g, 3), "unpromised data leaked");
        assert_eq!(f.zeroing().zeroed, 2 + 4 + 3);
    }

    /// A run of more than [`ZERO_RUN`] frames mixing fresh and dirty frames is
    /// zeroed exactly where it was dirty, across the lock's runs.
    #[test]
    fn long_mixed_runs_are_zeroed_where_dirty() {
        let r = ram::<16>();
        let (f, base) = (&r.frames, r.base);
        // SAFETY: the buffer's 1024 frames read as zero.
        unsafe { f.add_free_zeroed(base, base + 1024 * FRAME_SIZE) };
        dirty_frames(f, base, &[100, 700, 701]);
        let a = f.alloc_zeroed(1024, 1).unwrap();
        assert_eq!(a, base);
        assert!(zero(f, a, 1024), "freed data leaked");
        assert_eq!(
            f.zeroing(),
            Zeroing {
                fresh: 1021,
                zeroed: 3
            }
        );
    }

    /// The ranges [`recording_zero`] was given: `(address, bytes)`.
    static ZEROED: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

    /// A platform routine that records its calls (used by one test only).
    unsafe fn recording_zero(ptr: *mut u8, len: usize) {
        ZEROED.lock().unwrap().push((ptr as usize, len));
        // SAFETY: the caller's promise.
        unsafe { zero_plain(ptr, len) };
    }

    /// `alloc_zeroed` zeroes through the routine given at construction, and only
    /// the runs that are not known zero, 2 MiB at most per call.
    #[test]
    fn the_platform_routine_zeroes_what_is_not_known_zero() {
        let r = ram_zeroing_with::<16>(recording_zero);
        let (f, base) = (&r.frames, r.base);
        // SAFETY: the buffer's first 1024 frames read as zero.
        unsafe { f.add_free_zeroed(base, base + 1024 * FRAME_SIZE) };
        dirty_frames(f, base, &[100, 700, 701]);
        let a = f.alloc_zeroed(1024, 1).unwrap();
        assert!(zero(f, a, 1024), "freed data leaked");
        let at = |frame: usize| base.as_usize() + frame * FRAME_SIZE;
        assert_eq!(
            core::mem::take(&mut *ZEROED.lock().unwrap()),
            [(at(100), FRAME_SIZE), (at(700), 2 * FRAME_SIZE)]
        );
        // All of it dirty now: two calls of 2 MiB.
        fill(f, a, 1024, 7);
        give_back(f, a, 1024).unwrap();
        let b = f.alloc_zeroed(1024, 1).unwrap();
        assert!(zero(f, b, 1024), "freed data leaked");
        assert_eq!(
            core::mem::take(&mut *ZEROED.lock().unwrap()),
            [(at(0), 0x20_0000), (at(512), 0x20_0000)]
        );
    }

    // ---------------------------------------------------------------- the hint

    /// The search hint never hides a free frame: frees below it, RAM added below
    /// it and aligned runs that skip free frames all leave first fit exact.
    #[test]
    fn the_hint_never_hides_a_free_frame() {
        let f = |i: usize| hpa(i * FRAME_SIZE);
        let mut b = FrameBitmap::new_vec(hpa(0), 200);
        b.add_free(f(2), f(200));
        // Single frames move the hint past each.
        assert_eq!(b.alloc(1, 1), Some(f(2)));
        assert_eq!(b.alloc(1, 1), Some(f(3)));
        // An aligned run skips frames 4..8: they must stay reachable.
        assert_eq!(b.alloc(4, 8), Some(f(8)));
        assert_eq!(b.alloc(2, 1), Some(f(4)));
        // A free below the hint is found again.
        b.dealloc(f(2), 1).unwrap();
        assert_eq!(b.alloc(1, 1), Some(f(2)));
        // RAM added below the hint is found too.
        b.add_free(f(0), f(1));
        assert_eq!(b.alloc(1, 1), Some(f(0)));
        // The rest comes frame by frame in order, across words, to the last frame.
        let rest: Vec<_> = core::iter::from_fn(|| b.alloc(1, 1)).collect();
        let want: Vec<_> = [6, 7].into_iter().chain(12..200).map(f).collect();
        assert_eq!(rest, want);
        assert_eq!(b.free_frames(), 0);
    }

    /// The first fit matches a reference search over a plain `Vec<bool>` for
    /// every sequence of allocations, reservations and frees tried.
    #[test]
    fn first_fit_matches_a_reference_model() {
        const FRAMES: usize = 150;
        let base = 3; // frame number: the window starts unaligned for align > 1
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let mut b = FrameBitmap::new_vec(hpa(base * FRAME_SIZE), FRAMES);
            b.add_free(hpa(0), hpa(usize::MAX));
            let mut used = [false; FRAMES];
            let mut live: Vec<(HostPhysAddr, usize)> = Vec::new();
            for _ in 0..300 {
                match next() % 4 {
                    0 | 1 => {
                        let count = (next() % 9) as usize + 1;
                        let align = 1 << (next() % 4);
                        let want = (0..=FRAMES - count.min(FRAMES)).find(|&i| {
                            (base + i).is_multiple_of(align)
                                && i + count <= FRAMES
                                && used[i..i + count].iter().all(|u| !u)
                        });
                        let got = b.alloc(count, align);
                        assert_eq!(got, want.map(|i| hpa((base + i) * FRAME_SIZE)));
                        if let Some(i) = want {
                            used[i..i + count].iter_mut().for_each(|u| *u = true);
                            live.push((got.unwrap(), count));
                        }
                    }
                    2 => {
                        let i = usize_of(next()) % FRAMES;
                        let count = ((next() % 4) as usize + 1).min(FRAMES - i);
                        let free = used[i..i + count].iter().all(|u| !u);
                        let at = hpa((base + i) * FRAME_SIZE);
                        assert_eq!(b.reserve(at, count), free);
                        if free {
                            used[i..i + count].iter_mut().for_each(|u| *u = true);
                            live.push((at, count));
                        }
                    }
                    _ if !live.is_empty() => {
                        let (at, count) = live.swap_remove(usize_of(next()) % live.len());
                        assert_eq!(b.dealloc(at, count), Ok(()));
                        let i = at.as_usize() / FRAME_SIZE - base;
                        used[i..i + count].iter_mut().for_each(|u| *u = false);
                    }
                    _ => {}
                }
                assert_eq!(b.free_frames(), used.iter().filter(|u| !**u).count());
            }
        }
    }
}
