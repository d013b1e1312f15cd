//! [`Reserve`]: the frames an operation reserved before it changes a descriptor
//! (tables it will link, guest frames it will map), held without heap: the queue's
//! bookkeeping lives in the queued frames themselves, so reserving frames for any
//! size costs no allocation proportional to that size.

use crate::{FRAME_SIZE, FrameAllocator, HostPhysAddr, usize_of};

/// Entries a batch frame holds after its link word.
const PER_BATCH: usize = FRAME_SIZE / 8 - 1;
/// The link of the last batch.
const NO_BATCH: u64 = u64::MAX;

/// Frames allocated singly from one allocator for one operation, not linked anywhere
/// and used by nothing else, handed out in about the order they were allocated (so
/// guest frames allocated in address order map guest pages in address order).
///
/// The frames are grouped in batches: a *batch* frame holds, in its first word, the
/// address of the next batch frame, then the addresses of up to 511 other frames.
/// A batch's frames come out first, then the batch frame itself (whose contents are
/// its bookkeeping: every frame taken out has unspecified contents).
///
/// Whoever holds a reserve gives its frames back with [`Reserve::release`] or takes
/// them all; dropping a non-empty reserve would leak them (debug builds assert).
#[must_use = "release the frames of a reserve that is not used up"]
pub(crate) struct Reserve {
    /// The batch frames are taken from, and how many of its entries are taken.
    head: Option<HostPhysAddr>,
    taken: usize,
    /// The batch frames are added to, and how many entries it holds.
    tail: Option<HostPhysAddr>,
    filled: usize,
    len: usize,
    /// Whether the frames came zeroed from the allocator ([`Reserve::alloc_zeroed`]):
    /// all but the batch frames still read as zero.
    zeroed: bool,
}

impl Reserve {
    /// An empty reserve.
    pub(crate) const fn new() -> Self {
        Self {
            head: None,
            taken: 0,
            tail: None,
            filled: 0,
            len: 0,
            zeroed: false,
        }
    }

    /// `n` frames from `alloc`, or none: when the allocator runs dry after `k`
    /// frames, those are given back and `Err(k)` returned.
    pub(crate) fn alloc<A: FrameAllocator>(alloc: &A, n: usize) -> Result<Self, usize> {
        Self::alloc_with(alloc, n, false)
    }

    /// As [`Reserve::alloc`], with frames from [`FrameAllocator::alloc_zeroed`]: guest
    /// frames, taken out with [`Reserve::pop_zeroed`]. An allocator that knows its
    /// fresh frames are zero hands them out unwritten, so they are not zeroed twice.
    pub(crate) fn alloc_zeroed<A: FrameAllocator>(alloc: &A, n: usize) -> Result<Self, usize> {
        Self::alloc_with(alloc, n, true)
    }

    fn alloc_with<A: FrameAllocator>(alloc: &A, n: usize, zeroed: bool) -> Result<Self, usize> {
        let mut reserve = Self::new();
        reserve.zeroed = zeroed;
        while reserve.len < n {
            let frame = if zeroed {
                alloc.alloc_zeroed(1, 1)
            } else {
                alloc.alloc_frame()
            };
            match frame {
                Some(frame) => reserve.push(alloc, frame),
                None => {
                    let got = reserve.len;
                    reserve.release(alloc);
                    return Err(got);
                }
            }
        }
        Ok(reserve)
    }

    /// Frames left.
    #[inline]
    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Whether no frame is left.
    #[inline]
    pub(crate) const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The words of a batch frame.
    #[inline(always)]
    fn words<A: FrameAllocator>(alloc: &A, batch: HostPhysAddr) -> *mut u64 {
        alloc.phys_to_virt(batch).as_mut_ptr::<u64>()
    }

    /// Adds `frame`, which was just allocated singly from `alloc` for this reserve.
    fn push<A: FrameAllocator>(&mut self, alloc: &A, frame: HostPhysAddr) {
        match self.tail {
            Some(tail) if self.filled < PER_BATCH => {
                self.filled += 1;
                // SAFETY: `tail` is a frame of this reserve (allocated for it, linked
                // nowhere, used by nothing else), mapped writable by the allocator
                // contract; word `filled <= 511` lies inside it and is 8-byte aligned.
                unsafe {
                    Self::words(alloc, tail)
                        .add(self.filled)
                        .write(frame.as_usize() as u64)
                };
            }
            tail => {
                // SAFETY: `frame` was just allocated for this reserve (see above).
                unsafe { Self::words(alloc, frame).write(NO_BATCH) };
                match tail {
                    // SAFETY: as above, for the full batch before it.
                    Some(t) => unsafe { Self::words(alloc, t).write(frame.as_usize() as u64) },
                    None => self.head = Some(frame),
                }
                self.tail = Some(frame);
                self.filled = 0;
            }
        }
        self.len += 1;
    }

    /// Takes a frame out (contents unspecified), or `None` when empty.
    pub(crate) fn pop<A: FrameAllocator>(&mut self, alloc: &A) -> Option<HostPhysAddr> {
        let head = self.head?;
        let words = Self::words(alloc, head);
        let entries = if self.head == self.tail {
            self.filled
        } else {
            PER_BATCH
        };
        self.len -= 1;
        if self.taken < entries {
            self.taken += 1;
            // SAFETY: `head` is a batch frame of this reserve whose words
            // 1..=entries hold frame addresses written by `push`.
            let frame = unsafe { words.add(self.taken).read() };
            return Some(HostPhysAddr::from_usize(usize_of(frame)));
        }
        // SAFETY: as above; word 0 holds the next batch's link.
        let next = unsafe { words.read() };
        self.taken = 0;
        if next == NO_BATCH {
            (self.head, self.tail, self.filled) = (None, None, 0);
        } else {
            self.head = Some(HostPhysAddr::from_usize(usize_of(next)));
        }
        Some(head)
    }

    /// Takes a frame out, zeroed: a frame of a reserve from [`Reserve::alloc_zeroed`]
    /// is zero already unless it held the bookkeeping (a batch frame, 1 in 512);
    /// any other is zeroed here.
    pub(crate) fn pop_zeroed<A: FrameAllocator>(&mut self, alloc: &A) -> Option<HostPhysAddr> {
        let batch = self.head;
        let frame = self.pop(alloc)?;
        if !self.zeroed || Some(frame) == batch {
            let ptr = Self::words(alloc, frame).cast::<u8>();
            // SAFETY: taken out of this reserve: allocated for it, linked nowhere,
            // used by nothing else; the allocator maps it writable.
            unsafe { core::ptr::write_bytes(ptr, 0, FRAME_SIZE) };
        }
        Some(frame)
    }

    /// Gives every frame left back to `alloc`.
    #[inline]
    pub(crate) fn release<A: FrameAllocator>(&mut self, alloc: &A) {
        if self.len == 0 {
            return;
        }
        while let Some(frame) = self.pop(alloc) {
            // SAFETY: the frame was allocated singly for this reserve, never linked.
            unsafe { alloc.dealloc_frames(frame, 1) };
        }
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        debug_assert!(self.len == 0, "{} reserved frames dropped", self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PoolAllocator;

    /// Every frame comes back once, batches included, across several batches, in
    /// allocation order but for each batch frame, which comes after its entries; the
    /// pool is whole again after a release.
    #[test]
    fn every_frame_comes_back_once_in_about_allocation_order() {
        let pool = PoolAllocator::new(2000);
        let mut r = Reserve::alloc(&pool, 1500).unwrap();
        assert_eq!((r.len(), pool.in_use()), (1500, 1500));
        let got: Vec<HostPhysAddr> = (0..1100).map(|_| r.pop(&pool).unwrap()).collect();
        assert_eq!(r.len(), 400);
        let frame = |i: usize| pool.phys_range().0 + i * FRAME_SIZE;
        // Batch frames are frames 0 and 512; their entries follow them.
        let want: Vec<HostPhysAddr> = (1..512)
            .chain([0])
            .chain(513..1024)
            .chain([512])
            .chain(1025..1101)
            .map(frame)
            .collect();
        assert_eq!(got, want);
        for f in &got {
            // SAFETY: taken out of the reserve, owned here, unused.
            unsafe { pool.dealloc_frames(*f, 1) };
        }
        r.release(&pool);
        assert!(r.is_empty() && r.pop(&pool).is_none());
        assert_eq!(pool.in_use(), 0);
    }

    /// Frames of a zeroed reserve come out zero, batch frames included, and only
    /// the batch frames are written (the pool's fresh frames stay unwritten).
    #[test]
    fn zeroed_reserves_write_only_their_batch_frames() {
        let pool = PoolAllocator::new(2000);
        // Dirty frames the reserve will take again.
        let dirty = pool.alloc_frames(8, 1).unwrap();
        // SAFETY: ours, mapped writable by the pool.
        unsafe {
            core::ptr::write_bytes(
                pool.phys_to_virt(dirty).as_mut_ptr::<u8>(),
                7,
                8 * FRAME_SIZE,
            )
        };
        // SAFETY: allocated above, unused.
        unsafe { pool.dealloc_frames(dirty, 8) };
        let mut r = Reserve::alloc_zeroed(&pool, 1100).unwrap();
        assert_eq!(pool.fresh_handed_out(), 1100 - 8);
        let mut got = Vec::new();
        while let Some(f) = r.pop_zeroed(&pool) {
            let p = pool.phys_to_virt(f).as_ptr::<u8>();
            // SAFETY: a frame of the reserve, ours; the pool maps it.
            let bytes = unsafe { core::slice::from_raw_parts(p, FRAME_SIZE) };
            assert!(bytes.iter().all(|&b| b == 0), "frame {f:?} is not zero");
            got.push(f);
        }
        assert_eq!(got.len(), 1100);
        for f in got {
            // SAFETY: taken out of the reserve, owned here, unused.
            unsafe { pool.dealloc_frames(f, 1) };
        }
        assert_eq!(pool.in_use(), 0);
    }

    /// A reserve the allocator cannot serve takes nothing.
    #[test]
    fn a_short_allocator_leaves_nothing_taken() {
        let pool = PoolAllocator::new(600);
        assert_eq!(Reserve::alloc(&pool, 601).err(), Some(600));
        assert_eq!(pool.in_use(), 0);
    }
}
