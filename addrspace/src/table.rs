//! The table engine: one implementation of map, unmap, protect, query and walk over
//! every [`NestedFormat`].
//!
//! Design rules:
//! - *Reserve, then commit.* Every operation first checks its input and counts the
//!   table frames it will need (new tables for `map`, split tables for `unmap` and
//!   `protect`), allocates them all, and only then touches a descriptor. An error
//!   therefore leaves the table exactly as it was and returns every frame.
//! - *Largest leaf.* `map` writes a 1 GiB or 2 MiB leaf wherever the GPA, the HPA and
//!   the remaining size allow, 4 KiB pages elsewhere.
//! - *No empty tables.* A table whose last entry is cleared is unlinked at once; its
//!   frame is released when the caller completes the [`Flush`] that reported the change
//!   (after the TLB invalidation), never before.
//! - Descriptors are read and written as `AtomicU64` (acquire loads, release stores),
//!   so walkers on other threads (vCPUs of the mock HAL, or hardware) see either the
//!   old or the new descriptor, and a new table's zeroed contents before its link.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::format::{DescKind, NestedFormat};
use crate::{
    Error, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags, PageSize, Result,
    flush::Flush,
};

/// Bytes translated by one entry at engine level `level`.
#[inline(always)]
const fn span(level: usize) -> usize {
    1 << (12 + 9 * level)
}

/// The result of translating one guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host-physical address of the translated byte.
    pub hpa: HostPhysAddr,
    /// The leaf's flags.
    pub flags: MappingFlags,
    /// The leaf's size.
    pub size: PageSize,
}

impl Translation {
    /// Host-physical address of the start of the leaf.
    #[inline]
    pub fn leaf_base(&self) -> HostPhysAddr {
        HostPhysAddr::from_usize(self.hpa.as_usize() & !(self.size.bytes() - 1))
    }
}

/// Where the host-physical address of each mapped page comes from.
pub(crate) trait Source {
    /// HPA for the page at byte `offset` from the start of the mapped range.
    fn hpa(&self, offset: usize) -> usize;
    /// Whether consecutive pages are physically contiguous (huge leaves possible).
    const CONTIGUOUS: bool;
}

/// A linear mapping: `hpa + offset`.
pub(crate) struct Linear(pub(crate) usize);

impl Source for Linear {
    const CONTIGUOUS: bool = true;
    #[inline(always)]
    fn hpa(&self, offset: usize) -> usize {
        self.0 + offset
    }
}

/// One frame per 4 KiB page, in order.
pub(crate) struct Frames<'a>(pub(crate) &'a [HostPhysAddr]);

impl Source for Frames<'_> {
    const CONTIGUOUS: bool = false;
    #[inline(always)]
    fn hpa(&self, offset: usize) -> usize {
        self.0[offset >> 12].as_usize()
    }
}

/// What [`PageTable::leaf_slot`] found on the way to a 4 KiB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafSlot {
    /// A leaf translates the address.
    Mapped,
    /// Every table down to the 4 KiB level exists; entry `index` of `table` is invalid.
    Free {
        /// The 4 KiB-level table.
        table: HostPhysAddr,
        /// The entry's index in it.
        index: usize,
    },
    /// A table on the way is missing (or a descriptor is malformed): the general
    /// map path decides.
    Missing,
}

/// Frames reserved for one operation before it changes any descriptor. Up to eight
/// live inline (a map of a few huge leaves, the splits at the two ends of a range), so
/// the common operations never touch the heap for them.
pub(crate) struct Reserve {
    inline: [HostPhysAddr; Reserve::INLINE],
    len: usize,
    more: Vec<HostPhysAddr>,
}

impl Reserve {
    const INLINE: usize = 8;

    fn with_capacity(n: usize) -> Self {
        Self {
            inline: [HostPhysAddr::from_usize(0); Self::INLINE],
            len: 0,
            more: Vec::with_capacity(n.saturating_sub(Self::INLINE)),
        }
    }

    fn push(&mut self, frame: HostPhysAddr) {
        if self.len < Self::INLINE {
            self.inline[self.len] = frame;
            self.len += 1;
        } else {
            self.more.push(frame);
        }
    }

    fn pop(&mut self) -> Option<HostPhysAddr> {
        if let Some(frame) = self.more.pop() {
            return Some(frame);
        }
        self.len = self.len.checked_sub(1)?;
        Some(self.inline[self.len])
    }

    pub(crate) fn len(&self) -> usize {
        self.len + self.more.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`PageTable::scan`] finds at each step.
enum Piece {
    /// A leaf descriptor `raw` at `level`.
    Leaf { raw: u64, level: usize },
    /// No usable descriptor.
    Hole,
}

/// Where a walk stopped: the first descriptor on the way that is not a table.
struct Stop {
    table: HostPhysAddr,
    level: usize,
    index: usize,
    raw: u64,
    kind: DescKind,
}

/// Frames given back by an operation and held until its flush completes.
struct Deferred {
    seq: u64,
    hpa: HostPhysAddr,
    count: usize,
}

/// A nested page table of format `F` whose frames come from `A`.
///
/// ```
/// use addrspace::{ArmStage2Ipa40, GuestPhysAddr, HostPhysAddr, MappingFlags, PageTable, PageSize};
/// use addrspace::testing::PoolAllocator;
///
/// let pool = PoolAllocator::new(64);
/// let mut pt = PageTable::<ArmStage2Ipa40, _>::new(&pool).unwrap();
/// let (gpa, hpa) = (GuestPhysAddr::from_usize(0x4000_0000), HostPhysAddr::from_usize(0x8000_0000));
/// // SAFETY: the test pool's HPAs are never dereferenced through this mapping.
/// unsafe { pt.map(gpa, hpa, 0x20_0000, MappingFlags::RW).unwrap() };
/// let t = pt.query(gpa + 0x1234).unwrap();
/// assert_eq!((t.hpa, t.size), (hpa + 0x1234, PageSize::Size2M));
/// let flush = pt.unmap(gpa, 0x1000).unwrap(); // splits the 2 MiB block
/// // ... invalidate flush.range() on every vCPU, then:
/// pt.complete_flush(flush);
/// ```
pub struct PageTable<F: NestedFormat, A: FrameAllocator> {
    root: HostPhysAddr,
    alloc: A,
    /// Table frames linked into the tree, the root's frames included.
    tables: usize,
    deferred: VecDeque<Deferred>,
    /// Sequence number of the next deferred entry.
    next_seq: u64,
    /// Software paging-structure cache (see [`Psc`]).
    psc: Psc,
    _format: PhantomData<F>,
}

/// A software paging-structure cache, like the ones hardware walkers keep: for 1 GiB
/// regions of the first 2 TiB of guest-physical space, the level-1 table (the one
/// with 2 MiB entries) a walk last went through, so `query` and the lazy-fault path
/// start there instead of at the root. One slot per region modulo the slot count;
/// each slot is one atomic word (the table's address with `region + 1` in its low 12
/// bits), so a lookup never sees half of an update.
///
/// Invariant: a slot only names a table that is linked into the tree. Tables are
/// only unlinked by `unmap_reserved` (with `&mut self`), which clears every slot.
struct Psc([AtomicU64; Psc::SLOTS]);

impl Psc {
    const SLOTS: usize = 16;
    /// Regions whose tag (`region + 1`) fits in the 12 low bits of a frame address.
    const REGIONS: usize = 2048;

    const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; Self::SLOTS])
    }

    /// The cached level-1 table of `gpa`'s 1 GiB region.
    #[inline(always)]
    fn get(&self, gpa: usize) -> Option<HostPhysAddr> {
        let region = gpa >> 30;
        if region >= Self::REGIONS {
            return None;
        }
        // Acquire: pairs with the release in `put`, which itself follows the acquire
        // load of the link to the table, so the table's contents are visible.
        let v = self.0[region % Self::SLOTS].load(Ordering::Acquire);
        (v & 0xfff == region as u64 + 1).then(|| HostPhysAddr::from_usize((v & !0xfff) as usize))
    }

    /// Remembers `table` as the level-1 table of `gpa`'s region.
    #[inline(always)]
    fn put(&self, gpa: usize, table: HostPhysAddr) {
        let region = gpa >> 30;
        if region < Self::REGIONS {
            let v = table.as_usize() as u64 | (region as u64 + 1);
            self.0[region % Self::SLOTS].store(v, Ordering::Release);
        }
    }

    /// Forgets everything (before tables are unlinked).
    fn clear(&mut self) {
        for slot in &mut self.0 {
            *slot.get_mut() = 0;
        }
    }
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// An empty table: allocates and zeroes the root (`F::ROOT_FRAMES` contiguous
    /// frames aligned to their total size).
    pub fn new(alloc: A) -> Result<Self> {
        // Level 1 is never the root, which the paging-structure cache relies on.
        const { assert!(F::LEVELS >= 3, "nested formats have at least 3 levels") };
        let root = alloc
            .alloc_frames(F::ROOT_FRAMES, F::ROOT_FRAMES)
            .ok_or(Error::NoMemory {
                needed: F::ROOT_FRAMES,
                allocated: 0,
            })?;
        let pt = Self {
            root,
            alloc,
            tables: F::ROOT_FRAMES,
            deferred: VecDeque::new(),
            next_seq: 0,
            psc: Psc::new(),
            _format: PhantomData,
        };
        // SAFETY: the root frames were just allocated for this table and are not
        // linked anywhere yet.
        unsafe { pt.zero_frames(root, F::ROOT_FRAMES) };
        Ok(pt)
    }

    /// The root's host-physical address (for EPTP, nCR3, VTTBR_EL2 or hgatp).
    #[inline]
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// The allocator.
    #[inline]
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// Table frames currently linked into the tree, the root's frames included.
    #[inline]
    pub fn table_frames(&self) -> usize {
        self.tables
    }

    /// Frames freed by earlier operations and held until their flush completes.
    pub fn deferred_frames(&self) -> usize {
        self.deferred.iter().map(|d| d.count).sum()
    }

    /// One past the highest guest-physical address the format translates.
    #[inline]
    pub const fn gpa_limit() -> usize {
        1 << F::GPA_BITS
    }

    // ---------------------------------------------------------------- checks

    pub(crate) fn check_gpa(range: &GpaRange) -> Result<()> {
        if range.end().as_usize() > Self::gpa_limit() {
            return Err(Error::OutOfRange {
                what: "gpa",
                end: range.end().as_usize(),
                limit: Self::gpa_limit(),
                format: F::NAME,
            });
        }
        Ok(())
    }

    pub(crate) fn check_hpa(hpa: HostPhysAddr, size: usize) -> Result<()> {
        if !hpa.as_usize().is_multiple_of(crate::PAGE_SIZE) {
            return Err(Error::Unaligned {
                what: "hpa",
                value: hpa.as_usize(),
                align: crate::PAGE_SIZE,
            });
        }
        let limit = 1usize << F::HPA_BITS;
        match hpa.as_usize().checked_add(size) {
            Some(end) if end <= limit => Ok(()),
            end => Err(Error::OutOfRange {
                what: "hpa",
                end: end.unwrap_or(usize::MAX),
                limit,
                format: F::NAME,
            }),
        }
    }

    /// Checks flags against the common rules and the format's own.
    pub fn check_flags(flags: MappingFlags) -> Result<()> {
        let reason = if flags.access().is_empty() {
            Some("no READ, WRITE or EXECUTE: a nested entry without access is not present")
        } else if flags.contains(MappingFlags::DEVICE | MappingFlags::UNCACHED) {
            Some("DEVICE and UNCACHED are two different memory types")
        } else {
            F::check_flags(flags).err()
        };
        match reason {
            Some(reason) => Err(Error::InvalidFlags { flags, reason }),
            None => Ok(()),
        }
    }

    // ---------------------------------------------------------------- memory

    /// The entries of the table at `table`, which sits at engine level `level`.
    #[inline(always)]
    fn entries(&self, table: HostPhysAddr, level: usize) -> &[AtomicU64] {
        let len = if level == F::LEVELS - 1 {
            F::ROOT_ENTRIES
        } else {
            512
        };
        let ptr = self.alloc.phys_to_virt(table).as_ptr::<AtomicU64>();
        // SAFETY: `table` is the root or a table frame this table allocated and still
        // links (the tree only holds frames from `self.alloc`); the allocator contract
        // maps it readable and writable (the root's frames contiguously), frames are
        // 4 KiB-aligned so every 8-byte slot is aligned for `AtomicU64`, and table
        // memory is only ever accessed atomically once linked. The slice lives no
        // longer than `&self`, and frames are only released through `&mut self`.
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }

    #[inline(always)]
    fn index(gpa: usize, level: usize) -> usize {
        let mask = if level == F::LEVELS - 1 {
            F::ROOT_ENTRIES - 1
        } else {
            511
        };
        (gpa >> (12 + 9 * level)) & mask
    }

    /// Zeroes `count` frames starting at `hpa`.
    ///
    /// # Safety
    ///
    /// The frames belong to this table and are not linked into the tree.
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        let ptr = self.alloc.phys_to_virt(hpa).as_mut_ptr::<u8>();
        // SAFETY: per the caller, nothing else reads or writes these frames, and the
        // allocator maps them writable.
        unsafe { core::ptr::write_bytes(ptr, 0, count * crate::FRAME_SIZE) };
    }

    /// Allocates `n` single frames, or none.
    fn reserve(&self, n: usize) -> Result<Reserve> {
        let mut frames = Reserve::with_capacity(n);
        for _ in 0..n {
            match self.alloc.alloc_frame() {
                Some(f) => frames.push(f),
                None => {
                    let allocated = frames.len();
                    self.release(&mut frames);
                    return Err(Error::NoMemory {
                        needed: n,
                        allocated,
                    });
                }
            }
        }
        Ok(frames)
    }

    /// Gives back reserved frames that were never linked.
    fn release(&self, frames: &mut Reserve) {
        while let Some(f) = frames.pop() {
            // SAFETY: `f` came from `reserve` (one frame) and was never linked.
            unsafe { self.alloc.dealloc_frames(f, 1) };
        }
    }

    /// Takes a reserved frame, zeroes it and returns it.
    fn take(&self, reserve: &mut Reserve) -> HostPhysAddr {
        // The plan counted every table this operation creates; running out would be an
        // engine bug, so fail loudly in tests and fall back to the allocator otherwise.
        let frame = reserve.pop().or_else(|| {
            debug_assert!(false, "page-table reserve exhausted");
            self.alloc.alloc_frame()
        });
        // The plans are exact (debug builds assert it after every operation and the
        // model-based tests run millions of operations), so this cannot fail unless
        // the engine itself is wrong; continuing would corrupt the tree.
        #[allow(clippy::expect_used)]
        let frame = frame.expect("page-table engine reserve exhausted: plan/commit mismatch");
        // SAFETY: a reserved frame is ours and not yet linked.
        unsafe { self.zero_frames(frame, 1) };
        frame
    }

    /// Defers freeing `count` frames at `hpa` until the next flush completes.
    fn defer(&mut self, hpa: HostPhysAddr, count: usize) {
        self.deferred.push_back(Deferred {
            seq: self.next_seq,
            hpa,
            count,
        });
        self.next_seq += 1;
    }

    pub(crate) fn flush(&self, range: Option<GpaRange>) -> Flush {
        Flush {
            range,
            upto: self.next_seq,
            owner: self.root.as_usize(),
        }
    }

    /// Releases the frames held for `flush` (and for every earlier flush of this
    /// table). Call it after invalidating `flush.range()` on every vCPU.
    pub fn complete_flush(&mut self, flush: Flush) {
        if flush.owner != self.root.as_usize() {
            log::warn!(
                "flush token of table {:#x} completed on table {:#x}: ignored",
                flush.owner,
                self.root.as_usize()
            );
            return;
        }
        while let Some(d) = self.deferred.front() {
            if d.seq >= flush.upto {
                break;
            }
            let (hpa, count) = (d.hpa, d.count);
            self.deferred.pop_front();
            // SAFETY: the frame was unlinked by an earlier operation and the caller has
            // invalidated the translations that could still reach it.
            unsafe { self.alloc.dealloc_frames(hpa, count) };
        }
    }

    /// Queues guest-memory frames (not tables) for release with the next flush.
    pub(crate) fn defer_data_frame(&mut self, hpa: HostPhysAddr) {
        self.defer(hpa, 1);
    }

    // ---------------------------------------------------------------- map

    /// Maps `size` bytes at `gpa` to `hpa` with `flags`, using the largest leaves the
    /// alignment of both addresses allows.
    ///
    /// Errors: unaligned or empty input, ranges beyond the format's widths, flags the
    /// format cannot encode, [`Error::AlreadyMapped`] with the first translated address
    /// in the range, or [`Error::NoMemory`]. On error nothing changed.
    ///
    /// # Safety
    ///
    /// The guest gets access to `[hpa, hpa + size)`: it must be memory or devices this
    /// guest may use, and it must stay so while the mapping exists.
    pub unsafe fn map(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        size: usize,
        flags: MappingFlags,
    ) -> Result<()> {
        let range = GpaRange::new(gpa, size)?;
        Self::check_gpa(&range)?;
        Self::check_hpa(hpa, size)?;
        Self::check_flags(flags)?;
        self.map_source(range, &Linear(hpa.as_usize()), flags)
    }

    /// Maps `range` from `src`. Input already checked; the range may not be mapped.
    pub(crate) fn map_source<S: Source>(
        &mut self,
        range: GpaRange,
        src: &S,
        flags: MappingFlags,
    ) -> Result<()> {
        let (start, end) = (range.start().as_usize(), range.end().as_usize());
        let needed = self
            .plan_map(Some(self.root), F::LEVELS - 1, start, end, start, src)
            .map_err(|gpa| Error::AlreadyMapped {
                gpa: GuestPhysAddr::from_usize(gpa),
            })?;
        let mut reserve = self.reserve(needed)?;
        let added = self.fill(
            self.root,
            F::LEVELS - 1,
            start,
            end,
            start,
            src,
            flags,
            &mut reserve,
        );
        self.tables += added;
        debug_assert!(
            reserve.is_empty(),
            "map plan reserved {} frames too many",
            reserve.len()
        );
        self.release(&mut reserve);
        Ok(())
    }

    /// Whether a leaf at `level` can translate `[gpa, gpa + span)` entirely.
    #[inline(always)]
    fn can_leaf<S: Source>(
        level: usize,
        gpa: usize,
        slot_end: usize,
        base: usize,
        src: &S,
    ) -> bool {
        level == 0
            || (S::CONTIGUOUS
                && level <= F::MAX_LEAF_LEVEL
                && gpa.is_multiple_of(span(level))
                && slot_end - gpa == span(level)
                && src.hpa(gpa - base).is_multiple_of(span(level)))
    }

    /// Counts the tables `fill` will create, or returns the first mapped address.
    /// `table` is `None` for a subtree that does not exist yet.
    fn plan_map<S: Source>(
        &self,
        table: Option<HostPhysAddr>,
        level: usize,
        start: usize,
        end: usize,
        base: usize,
        src: &S,
    ) -> core::result::Result<usize, usize> {
        let Some(table) = table else {
            if level == 0 {
                return Ok(0);
            }
            let mut need = 0;
            let mut gpa = start;
            while gpa < end {
                let slot_end = ((gpa & !(span(level) - 1)) + span(level)).min(end);
                if !Self::can_leaf(level, gpa, slot_end, base, src) {
                    need += 1 + self.plan_map(None, level - 1, gpa, slot_end, base, src)?;
                }
                gpa = slot_end;
            }
            return Ok(need);
        };
        let entries = self.entries(table, level);
        let mut need = 0;
        let mut gpa = start;
        while gpa < end {
            let slot_end = ((gpa & !(span(level) - 1)) + span(level)).min(end);
            let raw = entries[Self::index(gpa, level)].load(Ordering::Acquire);
            match F::kind(raw, level) {
                DescKind::Invalid => {
                    if !Self::can_leaf(level, gpa, slot_end, base, src) {
                        need += 1 + self.plan_map(None, level - 1, gpa, slot_end, base, src)?;
                    }
                }
                DescKind::Table => {
                    let sub = F::output_addr(raw, level);
                    if Self::can_leaf(level, gpa, slot_end, base, src) {
                        // Tables are never empty, so something below is mapped.
                        return Err(self
                            .first_where(sub, level - 1, gpa, slot_end, true)
                            .unwrap_or(gpa));
                    }
                    need += self.plan_map(Some(sub), level - 1, gpa, slot_end, base, src)?;
                }
                DescKind::Leaf | DescKind::Malformed(_) => return Err(gpa),
            }
            gpa = slot_end;
        }
        Ok(need)
    }

    /// Writes the mapping; returns the number of tables created.
    #[allow(clippy::too_many_arguments)]
    fn fill<S: Source>(
        &self,
        table: HostPhysAddr,
        level: usize,
        start: usize,
        end: usize,
        base: usize,
        src: &S,
        flags: MappingFlags,
        reserve: &mut Reserve,
    ) -> usize {
        let entries = self.entries(table, level);
        if level == 0 {
            let attrs = F::leaf_attrs(flags, 0);
            let first = Self::index(start, 0);
            let count = (end - start) >> 12;
            for (i, entry) in entries[first..first + count].iter().enumerate() {
                let hpa = HostPhysAddr::from_usize(src.hpa(start - base + (i << 12)));
                entry.store(attrs | F::addr_bits(hpa), Ordering::Release);
            }
            return 0;
        }
        let attrs = F::leaf_attrs(flags, level);
        let mut added = 0;
        let mut gpa = start;
        while gpa < end {
            let slot_end = ((gpa & !(span(level) - 1)) + span(level)).min(end);
            let entry = &entries[Self::index(gpa, level)];
            if Self::can_leaf(level, gpa, slot_end, base, src) {
                let hpa = HostPhysAddr::from_usize(src.hpa(gpa - base));
                entry.store(attrs | F::addr_bits(hpa), Ordering::Release);
            } else {
                let raw = entry.load(Ordering::Acquire);
                let sub = if F::kind(raw, level) == DescKind::Table {
                    F::output_addr(raw, level)
                } else {
                    let t = self.take(reserve);
                    entry.store(F::table(t), Ordering::Release);
                    added += 1;
                    t
                };
                added += self.fill(sub, level - 1, gpa, slot_end, base, src, flags, reserve);
            }
            gpa = slot_end;
        }
        added
    }

    /// Visits `[start, end)` of the subtree at `table` (at `level`) in address
    /// order: `f(gpa, piece)` for each leaf or hole, `gpa` being where the piece starts
    /// inside the range, until `f` breaks. The one range walker behind the hole and
    /// mapping finders, the guest-memory copy and the leaf visitors.
    fn scan<B>(
        &self,
        table: HostPhysAddr,
        level: usize,
        start: usize,
        end: usize,
        f: &mut impl FnMut(usize, Piece) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let entries = self.entries(table, level);
        let mut gpa = start;
        while gpa < end {
            let slot_end = ((gpa & !(span(level) - 1)) + span(level)).min(end);
            let raw = entries[Self::index(gpa, level)].load(Ordering::Acquire);
            match F::kind(raw, level) {
                DescKind::Table if level > 0 => {
                    self.scan(F::output_addr(raw, level), level - 1, gpa, slot_end, f)?
                }
                DescKind::Leaf => f(gpa, Piece::Leaf { raw, level })?,
                // Invalid, or malformed (which no walker can use).
                _ => f(gpa, Piece::Hole)?,
            }
            gpa = slot_end;
        }
        ControlFlow::Continue(())
    }

    /// The first address in `[start, end)` that the subtree at `table` translates
    /// (`mapped = true`) or does not translate (`mapped = false`).
    fn first_where(
        &self,
        table: HostPhysAddr,
        level: usize,
        start: usize,
        end: usize,
        mapped: bool,
    ) -> Option<usize> {
        let found = self.scan(table, level, start, end, &mut |gpa, piece| match piece {
            Piece::Leaf { .. } if mapped => ControlFlow::Break(gpa),
            Piece::Hole if !mapped => ControlFlow::Break(gpa),
            _ => ControlFlow::Continue(()),
        });
        match found {
            ControlFlow::Break(gpa) => Some(gpa),
            ControlFlow::Continue(()) => None,
        }
    }

    /// The first address of `range` that is not translated, if any.
    pub fn find_hole(&self, range: &GpaRange) -> Option<GuestPhysAddr> {
        if range.end().as_usize() > Self::gpa_limit() {
            return Some(GuestPhysAddr::from_usize(
                range.start().as_usize().max(Self::gpa_limit()),
            ));
        }
        self.first_where(
            self.root,
            F::LEVELS - 1,
            range.start().as_usize(),
            range.end().as_usize(),
            false,
        )
        .map(GuestPhysAddr::from_usize)
    }

    // ---------------------------------------------------------------- split planning

    /// Tables needed to cut `[start, end)` out of a leaf at `level` covering
    /// `[base, base + span(level))` that the range covers only in part.
    fn split_cost(level: usize, base: usize, start: usize, end: usize) -> usize {
        // Splitting yields 512 leaves one level down; 4 KiB leaves are never cut.
        if level == 1 {
            return 1;
        }
        let sub = span(level - 1);
        let lo = start.max(base);
        let hi = end.min(base + span(level));
        let first = lo & !(sub - 1);
        let last = (hi - 1) & !(sub - 1);
        let mut n = 1;
        for blk in [first, last] {
            if start > blk || end < blk + sub {
                n += Self::split_cost(level - 1, blk, start, end);
            }
            if first == last {
                break;
            }
        }
        n
    }

    /// Tables needed to split the leaves that `[start, end)` cuts, skipping leaves
    /// for which `skip(raw)` says no split is necessary.
    fn plan_split(
        &self,
        table: HostPhysAddr,
        level: usize,
        start: usize,
        end: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> usize {
        let sp = span(level);
        let first = start & !(sp - 1);
        let last = (end - 1) & !(sp - 1);
        let entries = self.entries(table, level);
        let mut n = 0;
        for blk in [first, last] {
            if start > blk || end < blk + sp {
                let raw = entries[Self::index(blk, level)].load(Ordering::Acquire);
                match F::kind(raw, level) {
                    DescKind::Table if level > 0 => {
                        n += self.plan_split(
                            F::output_addr(raw, level),
                            level - 1,
                            start.max(blk),
                            end.min(blk + sp),
                            skip,
                        );
                    }
                    DescKind::Leaf if level > 0 && !skip(raw) => {
                        n += Self::split_cost(level, blk, start, end);
                    }
                    _ => {}
                }
            }
            if first == last {
                break;
            }
        }
        n
    }

    /// Replaces the leaf `raw` at `level` (held by `entry`) with a table of 512 leaves
    /// one level down translating the same addresses with the same flags.
    fn split(
        &self,
        entry: &AtomicU64,
        raw: u64,
        level: usize,
        reserve: &mut Reserve,
    ) -> HostPhysAddr {
        let t = self.take(reserve);
        let base = F::output_addr(raw, level).as_usize();
        let attrs = F::leaf_attrs(F::leaf_flags(raw), level - 1);
        for (i, e) in self.entries(t, level - 1).iter().enumerate() {
            let hpa = HostPhysAddr::from_usize(base + i * span(level - 1));
            e.store(attrs | F::addr_bits(hpa), Ordering::Relaxed);
        }
        // Release: the new leaves are visible before the table that holds them.
        entry.store(F::table(t), Ordering::Release);
        t
    }

    // ---------------------------------------------------------------- unmap

    /// Removes every translation in `[gpa, gpa + size)`, splitting huge leaves the range
    /// cuts and unlinking tables that become empty.
    ///
    /// Errors: bad input, [`Error::NotMapped`] with the first address of a hole, or
    /// [`Error::NoMemory`] when a split cannot get its table. On error nothing changed.
    pub fn unmap(&mut self, gpa: GuestPhysAddr, size: usize) -> Result<Flush> {
        let range = GpaRange::new(gpa, size)?;
        Self::check_gpa(&range)?;
        if let Some(hole) = self.find_hole(&range) {
            return Err(Error::NotMapped { gpa: hole });
        }
        self.unmap_range(range, None)
    }

    /// Removes the translations of `range` (holes allowed).
    pub(crate) fn unmap_range(
        &mut self,
        range: GpaRange,
        visit: Option<&mut dyn FnMut(usize, usize, usize)>,
    ) -> Result<Flush> {
        let mut reserve = self.reserve(self.plan_unmap(&range))?;
        self.unmap_reserved(range, visit, &mut reserve);
        debug_assert!(
            reserve.is_empty(),
            "unmap plan reserved {} frames too many",
            reserve.len()
        );
        self.release(&mut reserve);
        Ok(self.flush(Some(range)))
    }

    /// Table frames that unmapping `range` needs for splits.
    pub(crate) fn plan_unmap(&self, range: &GpaRange) -> usize {
        self.plan_split(
            self.root,
            F::LEVELS - 1,
            range.start().as_usize(),
            range.end().as_usize(),
            &|_| false,
        )
    }

    /// Allocates `n` frames for a later `*_reserved` call, or none.
    pub(crate) fn reserve_frames(&self, n: usize) -> Result<Reserve> {
        self.reserve(n)
    }

    /// Returns unused reserved frames.
    pub(crate) fn release_frames(&self, frames: &mut Reserve) {
        self.release(frames)
    }

    /// Removes the translations of `range` (holes allowed) with frames reserved by the
    /// caller, calling `visit(gpa, hpa, bytes)` for each leaf removed when given.
    pub(crate) fn unmap_reserved(
        &mut self,
        range: GpaRange,
        mut visit: Option<&mut dyn FnMut(usize, usize, usize)>,
        reserve: &mut Reserve,
    ) {
        let (start, end) = (range.start().as_usize(), range.end().as_usize());
        // Tables may be unlinked below: the cache may not name them any more.
        self.psc.clear();
        let mut freed = Vec::new();
        let (added, _) = self.clear(
            self.root,
            F::LEVELS - 1,
            start,
            end,
            &mut visit,
            reserve,
            &mut freed,
        );
        self.tables += added;
        self.tables -= freed.len();
        for t in freed {
            self.defer(t, 1);
        }
    }

    /// Clears `[start, end)` in the table at `table`. Returns the tables created by
    /// splits and whether the table is now empty; unlinked tables go to `freed`.
    #[allow(clippy::too_many_arguments)]
    fn clear(
        &self,
        table: HostPhysAddr,
        level: usize,
        start: usize,
        end: usize,
        visit: &mut Option<&mut dyn FnMut(usize, usize, usize)>,
        reserve: &mut Reserve,
        freed: &mut Vec<HostPhysAddr>,
    ) -> (usize, bool) {
        let entries = self.entries(table, level);
        let sp = span(level);
        let mut added = 0;
        let mut gpa = start;
        while gpa < end {
            let slot = gpa & !(sp - 1);
            let slot_end = (slot + sp).min(end);
            let whole = gpa == slot && slot_end == slot + sp;
            let entry = &entries[Self::index(gpa, level)];
            let raw = entry.load(Ordering::Acquire);
            match F::kind(raw, level) {
                DescKind::Invalid => {}
                DescKind::Leaf if whole => {
                    entry.store(0, Ordering::Release);
                    if let Some(v) = visit.as_mut() {
                        v(slot, F::output_addr(raw, level).as_usize(), sp);
                    }
                }
                DescKind::Leaf => {
                    let sub = self.split(entry, raw, level, reserve);
                    added += 1;
                    let (more, _) =
                        self.clear(sub, level - 1, gpa, slot_end, visit, reserve, freed);
                    added += more;
                }
                DescKind::Table => {
                    let sub = F::output_addr(raw, level);
                    if whole && visit.is_none() {
                        entry.store(0, Ordering::Release);
                        self.collect_subtree(sub, level - 1, freed);
                    } else {
                        let (more, empty) =
                            self.clear(sub, level - 1, gpa, slot_end, visit, reserve, freed);
                        added += more;
                        if empty {
                            entry.store(0, Ordering::Release);
                            freed.push(sub);
                        }
                    }
                }
                DescKind::Malformed(_) => {
                    if whole {
                        entry.store(0, Ordering::Release);
                    }
                }
            }
            gpa = slot_end;
        }
        let covered_all = level < F::LEVELS - 1
            && start & (span(level + 1) - 1) == 0
            && end - start == span(level + 1);
        let empty = level < F::LEVELS - 1
            && (covered_all || entries.iter().all(|e| e.load(Ordering::Relaxed) == 0));
        (added, empty)
    }

    /// Pushes every table frame of the subtree at `table` (itself included).
    fn collect_subtree(&self, table: HostPhysAddr, level: usize, out: &mut Vec<HostPhysAddr>) {
        if level > 0 {
            for e in self.entries(table, level) {
                let raw = e.load(Ordering::Acquire);
                if F::kind(raw, level) == DescKind::Table {
                    self.collect_subtree(F::output_addr(raw, level), level - 1, out);
                }
            }
        }
        out.push(table);
    }

    // ---------------------------------------------------------------- protect

    /// Changes the flags of every translation in `[gpa, gpa + size)` to `flags`,
    /// splitting huge leaves the range cuts (unless their flags already match).
    ///
    /// Errors: bad input or flags, [`Error::NotMapped`] with the first address of a
    /// hole, [`Error::NoMemory`]. On error nothing changed. The flush covers the range
    /// when any descriptor changed.
    pub fn protect(
        &mut self,
        gpa: GuestPhysAddr,
        size: usize,
        flags: MappingFlags,
    ) -> Result<Flush> {
        let range = GpaRange::new(gpa, size)?;
        Self::check_gpa(&range)?;
        Self::check_flags(flags)?;
        if let Some(hole) = self.find_hole(&range) {
            return Err(Error::NotMapped { gpa: hole });
        }
        self.protect_range(range, flags)
    }

    /// Protect with holes allowed; flags already checked.
    pub(crate) fn protect_range(&mut self, range: GpaRange, flags: MappingFlags) -> Result<Flush> {
        let (start, end) = (range.start().as_usize(), range.end().as_usize());
        let flags = flags.nested();
        let same = move |raw: u64| F::leaf_flags(raw) == flags;
        let needed = self.plan_split(self.root, F::LEVELS - 1, start, end, &same);
        let mut reserve = self.reserve(needed)?;
        let (added, changed) =
            self.reprotect(self.root, F::LEVELS - 1, start, end, flags, &mut reserve);
        self.tables += added;
        debug_assert!(
            reserve.is_empty(),
            "protect plan reserved {} frames too many",
            reserve.len()
        );
        self.release(&mut reserve);
        Ok(self.flush(changed.then_some(range)))
    }

    /// Returns tables created and whether any descriptor changed.
    fn reprotect(
        &self,
        table: HostPhysAddr,
        level: usize,
        start: usize,
        end: usize,
        flags: MappingFlags,
        reserve: &mut Reserve,
    ) -> (usize, bool) {
        let entries = self.entries(table, level);
        let sp = span(level);
        let attrs = F::leaf_attrs(flags, level);
        let (mut added, mut changed) = (0, false);
        let mut gpa = start;
        while gpa < end {
            let slot = gpa & !(sp - 1);
            let slot_end = (slot + sp).min(end);
            let whole = gpa == slot && slot_end == slot + sp;
            let entry = &entries[Self::index(gpa, level)];
            let raw = entry.load(Ordering::Acquire);
            match F::kind(raw, level) {
                DescKind::Leaf if F::leaf_flags(raw) == flags => {}
                DescKind::Leaf if whole => {
                    entry.store(
                        attrs | F::addr_bits(F::output_addr(raw, level)),
                        Ordering::Release,
                    );
                    changed = true;
                }
                DescKind::Leaf => {
                    let sub = self.split(entry, raw, level, reserve);
                    let (more, _) = self.reprotect(sub, level - 1, gpa, slot_end, flags, reserve);
                    added += 1 + more;
                    changed = true;
                }
                DescKind::Table if level > 0 => {
                    let (more, ch) = self.reprotect(
                        F::output_addr(raw, level),
                        level - 1,
                        gpa,
                        slot_end,
                        flags,
                        reserve,
                    );
                    added += more;
                    changed |= ch;
                }
                _ => {}
            }
            gpa = slot_end;
        }
        (added, changed)
    }

    // ---------------------------------------------------------------- query & walk

    /// Calls `f(gpa, translation of gpa)` for each leaf covering `[start, end)`, in
    /// address order, where `gpa` is `start` or the leaf's first address, whichever is
    /// larger; one descent per table, not per page. Stops at the first address that
    /// is not translated and returns it.
    pub(crate) fn for_each_translation(
        &self,
        start: usize,
        end: usize,
        mut f: impl FnMut(usize, Translation),
    ) -> core::result::Result<(), usize> {
        if end > Self::gpa_limit() {
            // Report what lies below the limit first, as a page-by-page walk would.
            self.leaves_in(
                self.root,
                F::LEVELS - 1,
                start.min(Self::gpa_limit()),
                Self::gpa_limit(),
                &mut f,
            )?;
            return Err(start.max(Self::gpa_limit()));
        }
        self.leaves_in(self.root, F::LEVELS - 1, start, end, &mut f)
    }

    /// The guest-memory copy's walk. It is [`PageTable::scan`] written out: the
    /// copy is hot (`read_64k_vs_memcpy` in `cargo xtask bench`), and going through
    /// `scan`'s closures measured 1-2 % slower there.
    fn leaves_in(
        &self,
        table: HostPhysAddr,
        level: usize,
        start: usize,
        end: usize,
        f: &mut impl FnMut(usize, Translation),
    ) -> core::result::Result<(), usize> {
        let entries = self.entries(table, level);
        let mut gpa = start;
        while gpa < end {
            let slot_end = ((gpa & !(span(level) - 1)) + span(level)).min(end);
            let raw = entries[Self::index(gpa, level)].load(Ordering::Acquire);
            match (F::kind(raw, level), PageSize::at_level(level)) {
                (DescKind::Table, _) if level > 0 => {
                    self.leaves_in(F::output_addr(raw, level), level - 1, gpa, slot_end, f)?
                }
                (DescKind::Leaf, Some(size)) => {
                    let base = F::output_addr(raw, level).as_usize();
                    f(
                        gpa,
                        Translation {
                            hpa: HostPhysAddr::from_usize(base + (gpa & (span(level) - 1))),
                            flags: F::leaf_flags(raw),
                            size,
                        },
                    );
                }
                _ => return Err(gpa),
            }
            gpa = slot_end;
        }
        Ok(())
    }

    /// One walk to the 4 KiB entry of `gpa`, for the lazy-fault path: whether `gpa`
    /// is translated, or where its 4 KiB leaf would go when every table above exists.
    pub(crate) fn leaf_slot(&self, gpa: usize) -> LeafSlot {
        if gpa >= Self::gpa_limit() {
            return LeafSlot::Missing;
        }
        let stop = self.descend(gpa);
        match stop.kind {
            // As `query`: a leaf translates unless it sits above the largest block.
            DescKind::Leaf if PageSize::at_level(stop.level).is_some() => LeafSlot::Mapped,
            DescKind::Invalid if stop.level == 0 => LeafSlot::Free {
                table: stop.table,
                index: stop.index,
            },
            _ => LeafSlot::Missing,
        }
    }

    /// Writes a 4 KiB leaf to `hpa` with `flags` (checked) into a slot that
    /// [`PageTable::leaf_slot`] found free, with no change to the table since: the
    /// table still links it and needs no new table.
    pub(crate) fn set_free_leaf(
        &mut self,
        table: HostPhysAddr,
        index: usize,
        hpa: HostPhysAddr,
        flags: MappingFlags,
    ) {
        let entry = &self.entries(table, 0)[index];
        debug_assert_eq!(
            F::kind(entry.load(Ordering::Relaxed), 0),
            DescKind::Invalid,
            "set_free_leaf on a valid entry"
        );
        entry.store(F::leaf(hpa, flags, 0), Ordering::Release);
    }

    /// Where a walk of `gpa` starts: its region's cached level-1 table, or the root.
    #[inline(always)]
    fn walk_start(&self, gpa: usize) -> (HostPhysAddr, usize) {
        match self.psc.get(gpa) {
            Some(table) => (table, 1),
            None => (self.root, F::LEVELS - 1),
        }
    }

    /// Walks `gpa` (below the GPA limit) down through table descriptors, from its
    /// region's cached level-1 table or the root, caching the level-1 table it passes,
    /// and returns the first descriptor that is not a table.
    #[inline(always)]
    fn descend(&self, gpa: usize) -> Stop {
        let (mut table, mut level) = self.walk_start(gpa);
        loop {
            let index = Self::index(gpa, level);
            let raw = self.entries(table, level)[index].load(Ordering::Acquire);
            let kind = F::kind(raw, level);
            if kind != DescKind::Table || level == 0 {
                return Stop {
                    table,
                    level,
                    index,
                    raw,
                    kind,
                };
            }
            table = F::output_addr(raw, level);
            level -= 1;
            if level == 1 {
                self.psc.put(gpa, table);
            }
        }
    }

    /// Translates `gpa`, or `None` when no leaf covers it.
    #[inline]
    pub fn query(&self, gpa: GuestPhysAddr) -> Option<Translation> {
        let gpa = gpa.as_usize();
        if gpa >= Self::gpa_limit() {
            return None;
        }
        let stop = self.descend(gpa);
        if stop.kind != DescKind::Leaf {
            return None;
        }
        let size = PageSize::at_level(stop.level)?;
        let base = F::output_addr(stop.raw, stop.level).as_usize();
        Some(Translation {
            hpa: HostPhysAddr::from_usize(base + (gpa & (span(stop.level) - 1))),
            flags: F::leaf_flags(stop.raw),
            size,
        })
    }

    /// The translation trace of `gpa`: every level's table, index, raw descriptor and
    /// decoded meaning, as a person debugging a fault reads it.
    pub fn walk(&self, gpa: GuestPhysAddr) -> Walk {
        let mut walk = Walk {
            gpa,
            format: F::NAME,
            steps: [WalkStep::EMPTY; MAX_LEVELS],
            len: 0,
            end: WalkEnd::OutOfRange {
                limit: Self::gpa_limit(),
            },
            describe: F::describe,
        };
        if gpa.as_usize() >= Self::gpa_limit() {
            return walk;
        }
        let mut table = self.root;
        let mut level = F::LEVELS - 1;
        loop {
            let index = Self::index(gpa.as_usize(), level);
            let raw = self.entries(table, level)[index].load(Ordering::Acquire);
            let kind = F::kind(raw, level);
            walk.steps[walk.len] = WalkStep {
                level,
                level_name: F::level_name(level),
                table,
                index,
                raw,
                kind,
            };
            walk.len += 1;
            match kind {
                DescKind::Table if level > 0 => {
                    table = F::output_addr(raw, level);
                    level -= 1;
                }
                DescKind::Leaf => {
                    walk.end = match self.query(gpa) {
                        Some(t) => WalkEnd::Translated(t),
                        None => WalkEnd::Fault {
                            level,
                            why: "leaf above the largest supported block size",
                        },
                    };
                    return walk;
                }
                DescKind::Malformed(why) => {
                    walk.end = WalkEnd::Fault { level, why };
                    return walk;
                }
                _ => {
                    walk.end = WalkEnd::Fault {
                        level,
                        why: "translation fault: descriptor not valid",
                    };
                    return walk;
                }
            }
        }
    }

    /// Checks the tree's invariants and returns the number of tables found below the
    /// root: every table is reachable once, no non-root table is empty, no descriptor
    /// is malformed, and the count matches [`PageTable::table_frames`]. For tests.
    #[cfg(any(test, feature = "testing"))]
    pub fn audit(&self) -> core::result::Result<usize, alloc::string::String> {
        use alloc::format;
        fn go<F: NestedFormat, A: FrameAllocator>(
            pt: &PageTable<F, A>,
            table: HostPhysAddr,
            level: usize,
            base: usize,
        ) -> core::result::Result<usize, alloc::string::String> {
            let mut tables = 0;
            let mut valid = 0;
            for (i, e) in pt.entries(table, level).iter().enumerate() {
                let raw = e.load(Ordering::Acquire);
                let gpa = base + i * span(level);
                match F::kind(raw, level) {
                    DescKind::Invalid if raw != 0 => {
                        return Err(format!(
                            "stale bits {raw:#x} in an invalid entry at {gpa:#x}"
                        ));
                    }
                    DescKind::Invalid => {}
                    DescKind::Malformed(why) => {
                        return Err(format!("malformed at {gpa:#x}: {why}"));
                    }
                    DescKind::Table => {
                        valid += 1;
                        tables += 1 + go(pt, F::output_addr(raw, level), level - 1, gpa)?;
                    }
                    DescKind::Leaf => {
                        valid += 1;
                        if level > F::MAX_LEAF_LEVEL {
                            return Err(format!("leaf above the largest block at {gpa:#x}"));
                        }
                    }
                }
            }
            if valid == 0 && level != F::LEVELS - 1 {
                return Err(format!("empty table at level {level} covering {base:#x}"));
            }
            Ok(tables)
        }
        let below = go(self, self.root, F::LEVELS - 1, 0)?;
        if below + F::ROOT_FRAMES != self.tables {
            return Err(format!(
                "table count {} but the tree holds {} + {} root frames",
                self.tables,
                below,
                F::ROOT_FRAMES
            ));
        }
        Ok(below)
    }

    /// Visits every leaf as `(gpa of the leaf, translation of its first byte)` in
    /// address order.
    pub fn for_each_leaf(&self, f: impl FnMut(GuestPhysAddr, Translation)) {
        self.leaves(0, Self::gpa_limit(), f);
    }

    /// Visits the leaves that overlap `range`, in address order.
    pub fn for_each_leaf_in(&self, range: &GpaRange, f: impl FnMut(GuestPhysAddr, Translation)) {
        let end = range.end().as_usize().min(Self::gpa_limit());
        self.leaves(range.start().as_usize().min(end), end, f);
    }

    fn leaves(&self, start: usize, end: usize, mut f: impl FnMut(GuestPhysAddr, Translation)) {
        let _ = self.scan::<()>(self.root, F::LEVELS - 1, start, end, &mut |gpa, piece| {
            if let Piece::Leaf { raw, level } = piece
                && let Some(size) = PageSize::at_level(level)
            {
                f(
                    GuestPhysAddr::from_usize(gpa & !(span(level) - 1)),
                    Translation {
                        hpa: F::output_addr(raw, level),
                        flags: F::leaf_flags(raw),
                        size,
                    },
                );
            }
            ControlFlow::Continue(())
        });
    }
}

impl<F: NestedFormat, A: FrameAllocator> Drop for PageTable<F, A> {
    /// Frees every table and every held frame. Drop a table only once no vCPU can use
    /// it any more (its VMID/ASID invalidated).
    fn drop(&mut self) {
        let mut tables = Vec::new();
        for e in self.entries(self.root, F::LEVELS - 1) {
            let raw = e.load(Ordering::Acquire);
            if F::kind(raw, F::LEVELS - 1) == DescKind::Table {
                self.collect_subtree(
                    F::output_addr(raw, F::LEVELS - 1),
                    F::LEVELS - 2,
                    &mut tables,
                );
            }
        }
        for t in tables {
            // SAFETY: every collected frame is a table of this tree, allocated singly,
            // and the tree is going away with no user left.
            unsafe { self.alloc.dealloc_frames(t, 1) };
        }
        while let Some(d) = self.deferred.pop_front() {
            // SAFETY: held frames were unlinked earlier; at drop nothing can reach them.
            unsafe { self.alloc.dealloc_frames(d.hpa, d.count) };
        }
        // SAFETY: the root was allocated in `new` with this count.
        unsafe { self.alloc.dealloc_frames(self.root, F::ROOT_FRAMES) };
    }
}

impl<F: NestedFormat, A: FrameAllocator> fmt::Debug for PageTable<F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("format", &F::NAME)
            .field("root", &self.root)
            .field("tables", &self.tables)
            .field("deferred", &self.deferred.len())
            .finish()
    }
}

/// The deepest walk of any format.
pub const MAX_LEVELS: usize = 5;

/// One level of a [`Walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStep {
    /// Engine level (0 = 4 KiB).
    pub level: usize,
    /// The manual's name for the level.
    pub level_name: &'static str,
    /// The table read at this level.
    pub table: HostPhysAddr,
    /// The index of the entry in it.
    pub index: usize,
    /// The raw descriptor.
    pub raw: u64,
    /// What the walker made of it.
    pub kind: DescKind,
}

impl WalkStep {
    const EMPTY: Self = Self {
        level: 0,
        level_name: "",
        table: HostPhysAddr::from_usize(0),
        index: 0,
        raw: 0,
        kind: DescKind::Invalid,
    };
}

/// How a [`Walk`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// A leaf translated the address.
    Translated(Translation),
    /// The walk stopped at `level` with a fault.
    Fault {
        /// The level of the descriptor that stopped it.
        level: usize,
        /// Why.
        why: &'static str,
    },
    /// The address is beyond the format's GPA width.
    OutOfRange {
        /// One past the last translatable address.
        limit: usize,
    },
}

/// The per-level translation trace of one guest-physical address (see
/// [`PageTable::walk`]). `Display` prints it for a person:
///
/// ```text
/// walk of GPA:0x40201000 (Arm stage-2 (40-bit IPA))
///   L1[  1] table HPA:0x80001000 = 0x0000000080003003  table
///   L2[  1] table HPA:0x80003000 = 0x00400000c02007c5  block S2AP=0b11(RW) MemAttr=0x1 ...
///   => HPA:0xc0201000 rw- device (2M)
/// ```
#[derive(Clone, Copy)]
pub struct Walk {
    /// The address walked.
    pub gpa: GuestPhysAddr,
    /// The format's name.
    pub format: &'static str,
    steps: [WalkStep; MAX_LEVELS],
    len: usize,
    /// How it ended.
    pub end: WalkEnd,
    describe: fn(u64, usize, &mut fmt::Formatter<'_>) -> fmt::Result,
}

impl Walk {
    /// The levels visited, root first.
    pub fn steps(&self) -> &[WalkStep] {
        &self.steps[..self.len]
    }

    /// The translation, when the walk reached a leaf.
    pub fn translation(&self) -> Option<Translation> {
        match self.end {
            WalkEnd::Translated(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Debug for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walk")
            .field("gpa", &self.gpa)
            .field("format", &self.format)
            .field("steps", &self.steps())
            .field("end", &self.end)
            .finish()
    }
}

impl PartialEq for Walk {
    fn eq(&self, other: &Self) -> bool {
        self.gpa == other.gpa
            && self.format == other.format
            && self.steps() == other.steps()
            && self.end == other.end
    }
}

impl Eq for Walk {}

impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "walk of {:#x} ({})", self.gpa, self.format)?;
        for s in self.steps() {
            write!(
                f,
                "  {}[{:4}] table {:#x} = {:#018x}  ",
                s.level_name, s.index, s.table, s.raw
            )?;
            match s.kind {
                DescKind::Invalid => f.write_str("invalid")?,
                DescKind::Malformed(why) => write!(f, "malformed: {why}")?,
                _ => (self.describe)(s.raw, s.level, f)?,
            }
            writeln!(f)?;
        }
        match self.end {
            WalkEnd::Translated(t) => write!(f, "  => {:#x} {} ({})", t.hpa, t.flags, t.size),
            WalkEnd::Fault { level, why } => write!(f, "  => fault at engine level {level}: {why}"),
            WalkEnd::OutOfRange { limit } => write!(f, "  => beyond the GPA limit {limit:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PoolAllocator;
    use crate::{ArmStage2Ipa40, Ept, Sv39x4};

    const M2: usize = 0x20_0000;
    const G1: usize = 0x4000_0000;

    fn gpa(v: usize) -> GuestPhysAddr {
        GuestPhysAddr::from_usize(v)
    }

    fn hpa(v: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(v)
    }

    fn leaf_sizes<F: NestedFormat>(pt: &PageTable<F, &PoolAllocator>) -> [usize; 3] {
        let mut n = [0; 3];
        pt.for_each_leaf(|_, t| n[t.size.level()] += 1);
        n
    }

    /// `map` picks the largest leaf that GPA, HPA and the remaining size allow.
    #[test]
    fn largest_leaves() {
        let pool = PoolAllocator::new(64);
        let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
        // GPA and HPA 1G-aligned, 1G + 2M + 4K: one of each.
        // SAFETY: addresses are only numbers in this test.
        unsafe { pt.map(gpa(G1), hpa(2 * G1), G1 + M2 + 0x1000, MappingFlags::RW) }.unwrap();
        assert_eq!(leaf_sizes(&pt), [1, 1, 1]);
        // HPA only 2M-aligned: 2M leaves where 1G would fit the GPA.
        let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
        // SAFETY: as above.
        unsafe { pt.map(gpa(G1), hpa(2 * G1 + M2), G1, MappingFlags::RW) }.unwrap();
        assert_eq!(leaf_sizes(&pt), [0, 512, 0]);
        // HPA 4K-offset: 4K pages only.
        let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
        // SAFETY: as above.
        unsafe { pt.map(gpa(G1), hpa(2 * G1 + 0x1000), 2 * M2, MappingFlags::RW) }.unwrap();
        assert_eq!(leaf_sizes(&pt), [1024, 0, 0]);
        assert_eq!(pt.table_frames(), 1 + 1 + 1 + 2);
    }

    /// The walk names each level as the manual does, shows the raw descriptors and
    /// the translation; a fault names the level where the walk stopped.
    #[test]
    fn walk_trace_reads_like_the_manual() {
        let pool = PoolAllocator::with_base(64, 0x8000_0000);
        let mut pt = PageTable::<ArmStage2Ipa40, _>::new(&pool).unwrap();
        // SAFETY: as above.
        unsafe {
            pt.map(
                gpa(0x4020_0000),
                hpa(0xc020_0000),
                M2,
                MappingFlags::DEVICE_RW,
            )
        }
        .unwrap();
        let walk = pt.walk(gpa(0x4020_1234));
        let steps = walk.steps();
        assert_eq!(steps.len(), 2);
        assert_eq!((steps[0].level_name, steps[0].index), ("L1", 1));
        assert_eq!(steps[0].kind, DescKind::Table);
        assert_eq!((steps[1].level_name, steps[1].index), ("L2", 1));
        assert_eq!(steps[1].raw, 0x0040_0000_c020_07c5);
        let t = walk.translation().unwrap();
        assert_eq!((t.hpa, t.size), (hpa(0xc020_1234), PageSize::Size2M));
        let text = walk.to_string();
        assert!(
            text.contains("walk of GPA:0x40201234 (Arm stage-2 (40-bit IPA))"),
            "{text}"
        );
        assert!(
            text.contains("block S2AP=0b11(RW) MemAttr=0x1 SH=0x3 AF=0x1 XN=0x2"),
            "{text}"
        );
        assert!(text.contains("=> HPA:0xc0201234 rw- device (2M)"), "{text}");
        let miss = pt.walk(gpa(0x4040_0000));
        assert!(matches!(miss.end, WalkEnd::Fault { level: 1, .. }));
        assert!(miss.to_string().contains("invalid"));
        let far = pt.walk(gpa(1 << 40));
        assert!(matches!(far.end, WalkEnd::OutOfRange { limit } if limit == 1 << 40));
    }

    /// Protect that only changes flags where they differ: splitting a 1G leaf for a
    /// 4K permission change needs two tables, and a no-op protect needs no flush.
    #[test]
    fn protect_splits_only_when_flags_change() {
        let pool = PoolAllocator::new(64);
        let mut pt = PageTable::<Sv39x4, _>::new(&pool).unwrap();
        // SAFETY: as above.
        unsafe { pt.map(gpa(G1), hpa(G1), G1, MappingFlags::RWX) }.unwrap();
        let same = pt
            .protect(gpa(G1 + 0x5000), 0x1000, MappingFlags::RWX)
            .unwrap();
        assert!(same.is_empty());
        // Sv39x4's 16 KiB root holds the 1 GiB leaf directly.
        assert_eq!(pt.table_frames(), 4);
        pt.complete_flush(same);
        let flush = pt
            .protect(gpa(G1 + 0x5000), 0x1000, MappingFlags::READ)
            .unwrap();
        assert_eq!(flush.range().map(|r| r.start()), Some(gpa(G1 + 0x5000)));
        assert_eq!(pt.table_frames(), 4 + 2);
        assert_eq!(
            pt.query(gpa(G1 + 0x5000)).unwrap().flags,
            MappingFlags::READ
        );
        assert_eq!(pt.query(gpa(G1 + 0x6000)).unwrap().flags, MappingFlags::RWX);
        pt.complete_flush(flush);
        pt.audit().unwrap();
    }

    /// A flush token of another table is ignored (frames stay held until drop).
    #[test]
    fn foreign_flush_is_ignored() {
        let pool = PoolAllocator::new(64);
        let mut a = PageTable::<Ept, _>::new(&pool).unwrap();
        let mut b = PageTable::<Ept, _>::new(&pool).unwrap();
        // SAFETY: as above.
        unsafe { a.map(gpa(0), hpa(0), 0x1000, MappingFlags::RW) }.unwrap();
        let flush = a.unmap(gpa(0), 0x1000).unwrap();
        let held = a.deferred_frames();
        assert_eq!(held, 3);
        b.complete_flush(flush);
        assert_eq!(a.deferred_frames(), held);
        drop(a);
        drop(b);
        assert_eq!(pool.in_use(), 0);
    }
}
