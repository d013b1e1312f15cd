//! Where the host-physical address of each page a map writes comes from: a linear
//! range ([`Linear`]) or guest frames reserved on a [`Reserve`] ([`Reserved`]).

use super::reserve::Reserve;
use crate::{FrameAllocator, HostPhysAddr, PAGE_SIZE};

/// The pages of one map, in address order.
pub(crate) trait Source {
    /// Whether consecutive pages are consecutive in host-physical memory, so that
    /// huge leaves are possible.
    const CONTIGUOUS: bool;

    /// The host-physical address of the page at `offset` bytes from the map's start,
    /// without taking it (only asked of contiguous sources, to check a huge leaf's
    /// alignment).
    fn peek(&self, offset: usize) -> usize;

    /// The host-physical address of the leaf of `bytes` at `offset`, taken: the
    /// commit pass asks once per leaf, in address order. `None` only when a
    /// reserve ran out, which the map's plan rules out.
    fn take(&mut self, offset: usize, bytes: usize) -> Option<HostPhysAddr>;
}

/// A linear mapping: `hpa + offset`.
pub(crate) struct Linear(pub(crate) usize);

impl Source for Linear {
    const CONTIGUOUS: bool = true;

    #[inline(always)]
    fn peek(&self, offset: usize) -> usize {
        self.0 + offset
    }

    #[inline(always)]
    fn take(&mut self, offset: usize, _bytes: usize) -> Option<HostPhysAddr> {
        Some(HostPhysAddr::from_usize(self.0 + offset))
    }
}

/// Guest frames of a reserve (from [`Reserve::alloc_zeroed`]), one per 4 KiB page,
/// zero when they are taken.
pub(crate) struct Reserved<'s, A: FrameAllocator> {
    pub(crate) frames: &'s mut Reserve,
    pub(crate) alloc: &'s A,
}

impl<A: FrameAllocator> Source for Reserved<'_, A> {
    const CONTIGUOUS: bool = false;

    fn peek(&self, _offset: usize) -> usize {
        0
    }

    #[inline]
    fn take(&mut self, _offset: usize, bytes: usize) -> Option<HostPhysAddr> {
        debug_assert_eq!(bytes, PAGE_SIZE, "reserved guest frames make 4 KiB leaves");
        self.frames.pop_zeroed(self.alloc)
    }
}
