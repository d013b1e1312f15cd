//! [`AddrSpace`]: a guest-physical address space made of areas (linear, allocated
//! eagerly or lazily, reserved) over one nested page table.

mod areas;
mod copy;

use alloc::vec::Vec;
use core::fmt;

use crate::fault::{FaultOutcome, FaultPlan};
use crate::format::NestedFormat;
use crate::table::{LeafSlot, PageTable, Span, Spans, Translation, Walk, span_of};
use crate::{
    AccessKind, Error, Flush, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags,
    PAGE_SIZE, PageSize, Result,
};
use areas::Areas;

/// When the frames of an allocated area are obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Populate {
    /// All frames at map time; the area never faults.
    Eager,
    /// One frame per page at its first access (nested page fault).
    Lazy,
    /// Like [`Populate::Lazy`], but a fault maps the whole 2 MiB block around the
    /// address (512 contiguous zeroed frames, one 2 MiB leaf) where the block lies
    /// inside the area, nothing in it is mapped yet and the allocator has such a
    /// block; elsewhere one 4 KiB page. Touching 256 MiB then takes 128 faults
    /// instead of 65,536, and the guest's accesses need fewer TLB entries.
    LazyHuge,
}

/// How an area's guest-physical pages are backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Each GPA maps to `hpa + (gpa - area start)`: identity-mapped RAM, reserved host
    /// memory, pass-through devices. The space does not own the memory.
    Linear {
        /// The host-physical address of the area's first byte.
        hpa: HostPhysAddr,
    },
    /// Frames from the space's allocator, zeroed, owned by the space and freed (after
    /// the flush) when unmapped.
    Alloc(Populate),
    /// Claimed but never mapped: no other area may use the range, and a fault in it
    /// is reported as [`FaultOutcome::Reserved`] (for example emulated MMIO).
    Reserved,
}

/// One area of an address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    /// Where it lies.
    pub range: GpaRange,
    /// What the guest may do there (ignored for reserved areas).
    pub flags: MappingFlags,
    /// How it is backed.
    pub backend: Backend,
}

impl Area {
    /// The area cut to `[start, end)` (which lies inside it).
    fn slice(&self, start: usize, end: usize) -> Area {
        let backend = match self.backend {
            Backend::Linear { hpa } => Backend::Linear {
                hpa: hpa + (start - self.range.start().as_usize()),
            },
            other => other,
        };
        Area {
            range: GpaRange::from_raw(start, end),
            flags: self.flags,
            backend,
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.range, self.flags)?;
        match self.backend {
            Backend::Linear { hpa } => write!(f, "linear -> {hpa:#x}"),
            Backend::Alloc(Populate::Eager) => f.write_str("alloc (eager)"),
            Backend::Alloc(Populate::Lazy) => f.write_str("alloc (lazy)"),
            Backend::Alloc(Populate::LazyHuge) => f.write_str("alloc (lazy, 2 MiB blocks)"),
            Backend::Reserved => f.write_str("reserved"),
        }
    }
}

/// A guest-physical address space: areas in a sorted map over a nested page table of
/// format `F` whose frames come from `A`.
///
/// Every operation validates its whole input before it changes anything, so an error
/// leaves the space as it was, with no frame leaked. Operations that remove or weaken
/// translations return a [`Flush`]: invalidate its range on every vCPU, then give it
/// back with [`AddrSpace::complete_flush`].
///
/// Invariant: every leaf of the page table lies inside one area, and has that area's
/// flags (areas are cut only where their leaves are split).
///
/// ```
/// use addrspace::{AddrSpace, Ept, GuestPhysAddr, MappingFlags, Populate, FaultOutcome, AccessKind};
/// use addrspace::testing::PoolAllocator;
///
/// let pool = PoolAllocator::new(256);
/// let mut space = AddrSpace::<Ept, _>::new(&pool).unwrap();
/// let ram = GuestPhysAddr::from_usize(0x8000_0000);
/// space.map_alloc(ram, 0x10_0000, MappingFlags::RWX, Populate::Lazy).unwrap();
/// assert!(matches!(space.handle_page_fault(ram + 0x42, AccessKind::Write), Ok(FaultOutcome::Mapped { .. })));
/// space.write_obj(ram + 0x40, &0xdead_beef_u32).unwrap();
/// assert_eq!(space.read_obj::<u32>(ram + 0x40).unwrap(), 0xdead_beef);
/// ```
pub struct AddrSpace<F: NestedFormat, A: FrameAllocator> {
    pt: PageTable<F, A>,
    /// Areas by start address; they never overlap.
    areas: Areas,
}

impl<F: NestedFormat, A: FrameAllocator> AddrSpace<F, A> {
    /// An empty space with its root table allocated.
    pub fn new(alloc: A) -> Result<Self> {
        Ok(Self {
            pt: PageTable::new(alloc)?,
            areas: Areas::new(),
        })
    }

    /// The nested table's root (for EPTP, nCR3, VTTBR_EL2, hgatp).
    #[inline]
    pub fn root(&self) -> HostPhysAddr {
        self.pt.root()
    }

    /// The page table, for queries and walks.
    #[inline]
    pub fn page_table(&self) -> &PageTable<F, A> {
        &self.pt
    }

    /// The allocator.
    #[inline]
    pub fn allocator(&self) -> &A {
        self.pt.allocator()
    }

    /// The areas in address order.
    pub fn areas(&self) -> impl Iterator<Item = &Area> + '_ {
        self.areas.values()
    }

    /// The area containing `gpa`.
    pub fn area_at(&self, gpa: GuestPhysAddr) -> Option<&Area> {
        self.areas
            .range(..=gpa.as_usize())
            .next_back()
            .map(|(_, a)| a)
            .filter(|a| a.range.contains(gpa))
    }

    /// Guest-memory frames currently mapped by allocated areas (held frames
    /// excluded). Counted on demand by walking those areas' leaves (a diagnostic).
    pub fn data_frames(&self) -> usize {
        let mut n = 0;
        for area in self.areas.values() {
            if let Backend::Alloc(_) = area.backend {
                self.pt
                    .for_each_leaf_in(&area.range, |_, t| n += t.size.bytes() / PAGE_SIZE);
            }
        }
        n
    }

    /// Page-table frames currently linked, the root's included.
    #[inline]
    pub fn table_frames(&self) -> usize {
        self.pt.table_frames()
    }

    /// Frames (tables and guest memory) held until a flush completes.
    #[inline]
    pub fn deferred_frames(&self) -> usize {
        self.pt.deferred_frames()
    }

    /// The translation trace of `gpa`.
    pub fn walk(&self, gpa: GuestPhysAddr) -> Walk {
        self.pt.walk(gpa)
    }

    /// Releases exactly the frames held for `flush`; call it once every vCPU has
    /// invalidated `flush.range()`.
    ///
    /// Errors: [`Error::ForeignFlush`] when another space (or table) issued `flush`.
    #[inline]
    pub fn complete_flush(&mut self, flush: Flush) -> Result<()> {
        self.pt.complete_flush(flush)
    }

    // ---------------------------------------------------------------- checks

    /// Errors with the first existing area that overlaps `range`. Areas never
    /// overlap, so the last one starting before the range's end reaches furthest:
    /// one search tells whether any overlaps.
    #[inline]
    fn check_free(&self, range: &GpaRange) -> Result<()> {
        match self.areas.range(..range.end().as_usize()).next_back() {
            Some((_, last)) if last.range.end() > range.start() => Err(self.first_overlap(range)),
            _ => Ok(()),
        }
    }

    /// The error naming the first area that overlaps `range` (one does).
    #[cold]
    #[inline(never)]
    fn first_overlap(&self, range: &GpaRange) -> Error {
        let before = self
            .areas
            .range(..=range.start().as_usize())
            .next_back()
            .map(|(_, a)| a);
        let inside = self
            .areas
            .range(range.start().as_usize()..range.end().as_usize())
            .next()
            .map(|(_, a)| a);
        let first = [before, inside]
            .into_iter()
            .flatten()
            .find(|a| a.range.overlaps(range));
        debug_assert!(first.is_some(), "no area overlaps {range}");
        Error::Overlap {
            requested: *range,
            existing: first.map_or(*range, |a| a.range),
        }
    }

    /// Calls `f` with the pieces of areas covering `range` in order, up to the first
    /// address no area covers, which it returns (`None` when all is covered). Stops
    /// at the first error of `f`. Allocates nothing.
    fn each_piece(
        &self,
        range: &GpaRange,
        mut f: impl FnMut(Area) -> Result<()>,
    ) -> Result<Option<usize>> {
        let (start, end) = (range.start().as_usize(), range.end().as_usize());
        let mut cursor = start;
        let first = self
            .areas
            .range(..=start)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(start);
        for area in self.areas.range(first..end).map(|(_, a)| a) {
            let (a_start, a_end) = (area.range.start().as_usize(), area.range.end().as_usize());
            if a_end <= cursor {
                continue;
            }
            if a_start > cursor {
                break;
            }
            let piece_end = a_end.min(end);
            f(area.slice(cursor, piece_end))?;
            cursor = piece_end;
            if cursor == end {
                return Ok(None);
            }
        }
        Ok(Some(cursor))
    }

    /// Calls `f` with the pieces covering all of `range`, in order, after checking
    /// that areas cover it: [`Error::NotMapped`] at the first address none covers
    /// (before `f` sees any piece).
    fn each_covering(&self, range: &GpaRange, f: impl FnMut(Area) -> Result<()>) -> Result<()> {
        if let Some(gpa) = self.each_piece(range, |_| Ok(()))? {
            return Err(Error::NotMapped { gpa: gpa_of(gpa) });
        }
        self.each_piece(range, f).map(|_| ())
    }

    fn insert(&mut self, area: Area) {
        self.areas.insert(area.range.start().as_usize(), area);
    }

    // ---------------------------------------------------------------- map

    /// Maps `[gpa, gpa + size)` to `[hpa, hpa + size)` with `flags`, with the largest
    /// leaves the alignment allows. Use `DEVICE` for MMIO. The memory type in `flags`
    /// (normal, `DEVICE` or `UNCACHED`) is the area's for as long as it exists.
    ///
    /// Errors: unaligned, empty or overflowing input, beyond the format's widths, bad
    /// flags, [`Error::Overlap`] naming the existing area, [`Error::NoMemory`].
    ///
    /// # Safety
    ///
    /// The guest gets access to `[hpa, hpa + size)`: it must be memory or devices this
    /// guest may use for as long as the area exists. Unless `flags` has `DEVICE`, it
    /// must be RAM that the allocator's `phys_to_virt` maps, because
    /// [`AddrSpace::read`] and [`AddrSpace::write`] copy through it.
    pub unsafe fn map_linear(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        size: usize,
        flags: MappingFlags,
    ) -> Result<()> {
        let range = PageTable::<F, A>::check_range(gpa, size)?;
        PageTable::<F, A>::check_hpa(hpa, size)?;
        PageTable::<F, A>::check_flags(flags)?;
        self.check_free(&range)?;
        self.pt.map_linear(&range, hpa, flags)?;
        self.insert(Area {
            range,
            flags: flags.nested(),
            backend: Backend::Linear { hpa },
        });
        Ok(())
    }

    /// Maps `[gpa, gpa + size)` to zeroed frames from the allocator, all now
    /// ([`Populate::Eager`]) or each at its first fault ([`Populate::Lazy`], and
    /// [`Populate::LazyHuge`] in 2 MiB blocks where it can; they allocate nothing,
    /// not even tables, up front).
    ///
    /// Errors: as [`AddrSpace::map_linear`]; with `Eager`, [`Error::NoMemory`] when the
    /// allocator cannot provide every frame, after which every frame taken is given
    /// back. No host memory proportional to `size` is used besides the frames.
    pub fn map_alloc(
        &mut self,
        gpa: GuestPhysAddr,
        size: usize,
        flags: MappingFlags,
        populate: Populate,
    ) -> Result<()> {
        let range = PageTable::<F, A>::check_range(gpa, size)?;
        PageTable::<F, A>::check_flags(flags)?;
        self.check_free(&range)?;
        if populate == Populate::Eager {
            self.pt.map_frames(&[(span_of(&range), flags)], false)?;
        }
        self.insert(Area {
            range,
            flags: flags.nested(),
            backend: Backend::Alloc(populate),
        });
        Ok(())
    }

    /// Claims `[gpa, gpa + size)` without mapping it (see [`Backend::Reserved`]).
    pub fn map_reserved(&mut self, gpa: GuestPhysAddr, size: usize) -> Result<()> {
        let range = PageTable::<F, A>::check_range(gpa, size)?;
        self.check_free(&range)?;
        self.insert(Area {
            range,
            flags: MappingFlags::empty(),
            backend: Backend::Reserved,
        });
        Ok(())
    }

    // ---------------------------------------------------------------- unmap / protect

    /// Removes `[gpa, gpa + size)`, which must be covered by areas (parts of areas are
    /// fine: the areas are cut). Frames of allocated areas are released when the
    /// returned flush completes.
    ///
    /// Errors: bad input, [`Error::NotMapped`] at the first address no area covers,
    /// [`Error::NoMemory`] when a huge leaf must be split and no table frame is left.
    pub fn unmap(&mut self, gpa: GuestPhysAddr, size: usize) -> Result<Flush> {
        let range = PageTable::<F, A>::check_range(gpa, size)?;
        // The common cases, the range inside one area: no walk over the areas.
        let start = range.start().as_usize();
        if let Some(&area) = self.areas.get(&start)
            && area.range.contains_range(&range)
        {
            let flush = self
                .pt
                .unmap_span(&range, Self::owned_inside(&area, &range))?;
            self.areas.remove(&start);
            self.keep_outside(&area, &range);
            return Ok(flush);
        }
        if let Some(&area) = self.area_at(range.start())
            && area.range.contains_range(&range)
        {
            let flush = self
                .pt
                .unmap_span(&range, Self::owned_inside(&area, &range))?;
            self.cut_area(&area, &range);
            return Ok(flush);
        }
        // The guest frames of allocated areas go with the flush: their ranges,
        // neighbours merged.
        let mut owned = Spans::new();
        self.each_covering(&range, |piece| match piece.backend {
            Backend::Alloc(_) => push_span(&mut owned, span_of(&piece.range)),
            _ => Ok(()),
        })?;
        let flush = self.pt.unmap_span(&range, owned)?;
        self.remove_areas(&range);
        Ok(flush)
    }

    /// Sets the access rights of `[gpa, gpa + size)`, which must be covered by areas,
    /// to those of `flags`: present translations are rewritten (huge leaves split
    /// where the range cuts them), lazy pages get them when they fault in. Each area
    /// keeps its memory type, fixed at map time: `flags` names none (each area keeps
    /// its own) or the one every area of the range has. Areas whose flags do not
    /// change are left whole.
    ///
    /// Errors: bad input or flags, [`Error::NotMapped`] at the first address no area
    /// covers, [`Error::MemoryType`] at the first area of another memory type,
    /// [`Error::NoMemory`] for a split. The flush covers the range when any
    /// translation changed.
    pub fn protect(
        &mut self,
        gpa: GuestPhysAddr,
        size: usize,
        flags: MappingFlags,
    ) -> Result<Flush> {
        let range = PageTable::<F, A>::check_range(gpa, size)?;
        PageTable::<F, A>::check_flags(flags)?;
        let flags = flags.nested();
        self.each_covering(&range, |piece| {
            if piece.backend == Backend::Reserved {
                return Ok(());
            }
            let kind = piece.flags.memory_type();
            if !flags.memory_type().is_empty() && flags.memory_type() != kind {
                return Err(Error::MemoryType {
                    gpa: piece.range.start(),
                    mapped: piece.flags,
                    requested: flags,
                });
            }
            PageTable::<F, A>::check_flags(kind | flags.access())
        })?;
        let flush = self.pt.protect_span(&range, flags)?;
        self.reflag_areas(&range, flags.access());
        Ok(flush)
    }

    /// The ranges whose leaves own their frames among those of `range`, which lies
    /// inside `area`.
    fn owned_inside(area: &Area, range: &GpaRange) -> Spans {
        let mut owned = Spans::new();
        if matches!(area.backend, Backend::Alloc(_)) {
            owned.push(span_of(range));
        }
        owned
    }

    /// Removes `range` from the area records; the parts of areas outside it stay.
    fn remove_areas(&mut self, range: &GpaRange) {
        self.take_overlapping(range, |space, area| space.keep_outside(&area, range));
    }

    /// Removes `range`, which lies inside `area` (a record of the map), from the
    /// records, rewriting `area`'s entry in place when a part before the range stays.
    fn cut_area(&mut self, area: &Area, range: &GpaRange) {
        let (a_start, a_end) = (area.range.start().as_usize(), area.range.end().as_usize());
        let (start, end) = (range.start().as_usize(), range.end().as_usize());
        if a_start < start {
            if let Some(entry) = self.areas.get_mut(&a_start) {
                *entry = area.slice(a_start, start);
            }
        } else {
            self.areas.remove(&a_start);
        }
        if a_end > end {
            self.insert(area.slice(end, a_end));
        }
    }

    /// Gives the parts inside `range` of the areas whose access rights differ from
    /// `access` those rights (cutting them at the range's ends); others stay whole.
    fn reflag_areas(&mut self, range: &GpaRange, access: MappingFlags) {
        self.take_overlapping(range, |space, area| {
            if area.backend == Backend::Reserved || area.flags.memory_type() | access == area.flags
            {
                space.insert(area);
                return;
            }
            space.keep_outside(&area, range);
            let (start, end) = (
                area.range.start().max(range.start()).as_usize(),
                area.range.end().min(range.end()).as_usize(),
            );
            let mut mid = area.slice(start, end);
            mid.flags = area.flags.memory_type() | access;
            space.insert(mid);
        });
    }

    /// Takes the areas overlapping `range` out of the map one at a time, in order,
    /// and gives each to `f`, which may insert records inside the area it got (they
    /// are not visited again). Allocates nothing itself.
    fn take_overlapping(&mut self, range: &GpaRange, mut f: impl FnMut(&mut Self, Area)) {
        let end = range.end().as_usize();
        let mut from = self
            .area_at(range.start())
            .map_or(range.start().as_usize(), |a| a.range.start().as_usize());
        while from < end {
            let Some(key) = self.areas.range(from..end).next().map(|(k, _)| *k) else {
                break;
            };
            let Some(area) = self.areas.remove(&key) else {
                break;
            };
            // Areas never overlap: the next one starts at or after this one's end.
            from = area.range.end().as_usize();
            f(self, area);
        }
    }

    /// Puts back the parts of `area` outside `range`.
    fn keep_outside(&mut self, area: &Area, range: &GpaRange) {
        let (a_start, a_end) = (area.range.start().as_usize(), area.range.end().as_usize());
        let (start, end) = (range.start().as_usize(), range.end().as_usize());
        if a_start < start {
            self.insert(area.slice(a_start, start));
        }
        if a_end > end {
            self.insert(area.slice(end, a_end));
        }
    }

    // ---------------------------------------------------------------- translate / fault

    /// Translates `gpa`. Errors name why it is not translated: [`Error::NoArea`],
    /// [`Error::Reserved`], [`Error::NotPopulated`] (lazy page not faulted in yet).
    ///
    /// Inline are only the walk cache's answers (`PageTable::query_cached`, a few
    /// dozen instructions), the rest is one call away: the CPU's reorder window
    /// holds a few translates, so the fewer instructions each takes, the more of
    /// their cache misses overlap (cold translates are bound by that, not by the
    /// misses themselves). Always inline: that is a few dozen instructions, a call
    /// and a return are a large part of it.
    #[inline(always)]
    pub fn translate(&self, gpa: GuestPhysAddr) -> Result<Translation> {
        match self.pt.query_cached(gpa) {
            Some(Some(t)) => Ok(t),
            _ => self.translate_uncached(gpa),
        }
    }

    /// [`AddrSpace::translate`] when the walk cache does not translate `gpa`.
    #[inline(never)]
    fn translate_uncached(&self, gpa: GuestPhysAddr) -> Result<Translation> {
        match self.pt.query(gpa) {
            Some(t) => Ok(t),
            None => Err(self.why_untranslated(gpa)),
        }
    }

    #[cold]
    #[inline(never)]
    fn why_untranslated(&self, gpa: GuestPhysAddr) -> Error {
        match self.area_at(gpa).map(|a| a.backend) {
            None => Error::NoArea { gpa },
            Some(Backend::Reserved) => Error::Reserved { gpa },
            Some(_) => Error::NotPopulated { gpa },
        }
    }

    /// What [`AddrSpace::handle_page_fault`] would do with an access of kind
    /// `access` at `gpa`, without doing it: the dry run a person asks for when
    /// chasing a fault. It is the fault path's own decision (one function), so it
    /// names exactly what the next fault there would do (unless the space changes
    /// in between).
    pub fn explain_fault(&self, gpa: GuestPhysAddr, access: AccessKind) -> FaultPlan {
        self.decide_fault(gpa, access).0
    }

    /// The fault path's decision, with the 4 KiB slot its walk found (so mapping a
    /// lazy page needs no second walk).
    fn decide_fault(&self, gpa: GuestPhysAddr, access: AccessKind) -> (FaultPlan, LeafSlot) {
        let outcome = |o| (FaultPlan::Outcome(o), LeafSlot::Missing);
        let Some(area) = self.area_at(gpa).copied() else {
            return outcome(FaultOutcome::NoArea);
        };
        if area.backend == Backend::Reserved {
            return outcome(FaultOutcome::Reserved { area: area.range });
        }
        if !area.flags.allows(access) {
            return outcome(FaultOutcome::PermissionViolation {
                area: area.range,
                flags: area.flags,
                access,
            });
        }
        let slot = self.pt.leaf_slot(gpa.as_usize());
        if slot == LeafSlot::Mapped {
            return outcome(FaultOutcome::Spurious);
        }
        let page = GuestPhysAddr::from_usize(gpa.as_usize() & !(PAGE_SIZE - 1));
        (FaultPlan::Map { page, area }, slot)
    }

    /// Handles a nested page fault at `gpa` for an access of kind `access`.
    ///
    /// Lazy pages are allocated, zeroed and mapped here (one frame, even when several
    /// vCPUs fault on the page: the second sees [`FaultOutcome::Spurious`]). Guest
    /// addresses are untrusted: any value gives an outcome, never a panic. The only
    /// error is [`Error::NoMemory`]. [`AddrSpace::explain_fault`] tells what this
    /// would do.
    pub fn handle_page_fault(
        &mut self,
        gpa: GuestPhysAddr,
        access: AccessKind,
    ) -> Result<FaultOutcome> {
        let (page, area, slot) = match self.decide_fault(gpa, access) {
            (FaultPlan::Outcome(o), _) => return Ok(o),
            (FaultPlan::Map { page, area }, slot) => (page, area, slot),
        };
        if area.backend == Backend::Alloc(Populate::LazyHuge)
            && let Some(outcome) = self.fault_block(gpa, &area)?
        {
            return Ok(outcome);
        }
        let range = GpaRange::from_raw(page.as_usize(), page.as_usize() + PAGE_SIZE);
        let hpa = match area.backend {
            Backend::Linear { hpa } => {
                // Linear areas are mapped whole at creation; re-create a lost page.
                let hpa = hpa + (page - area.range.start());
                self.pt.map_linear(&range, hpa, area.flags)?;
                hpa
            }
            _ => {
                let frame = self
                    .pt
                    .allocator()
                    .alloc_zeroed(1, 1)
                    .ok_or(Error::NoMemory {
                        needed: 1,
                        allocated: 0,
                    })?;
                match slot {
                    // The common lazy fault: the tables exist, one walk found the entry.
                    LeafSlot::Free(slot) => self.pt.set_free_leaf(slot, frame, area.flags),
                    _ => {
                        if let Err(e) = self.pt.map_linear(&range, frame, area.flags) {
                            // SAFETY: allocated above and never mapped.
                            unsafe { self.pt.allocator().dealloc_frames(frame, 1) };
                            return Err(e);
                        }
                    }
                }
                frame
            }
        };
        Ok(FaultOutcome::Mapped {
            gpa: page,
            hpa,
            flags: area.flags,
            size: PageSize::Size4K,
        })
    }

    /// The 2 MiB-block fault of a [`Populate::LazyHuge`] area (`area`, whose flags
    /// allow the access): maps the block around `gpa` to 512 new zeroed frames with
    /// one leaf, when the block lies in the area, none of it is mapped and the
    /// allocator has an aligned block. `None` when one of those does not hold (the
    /// caller maps a 4 KiB page instead).
    fn fault_block(&mut self, gpa: GuestPhysAddr, area: &Area) -> Result<Option<FaultOutcome>> {
        let block_size = PageSize::Size2M.bytes();
        let start = gpa.as_usize() & !(block_size - 1);
        let Some(end) = start.checked_add(block_size) else {
            return Ok(None);
        };
        if start < area.range.start().as_usize()
            || end > area.range.end().as_usize()
            || !self.pt.block_unmapped(start)
        {
            return Ok(None);
        }
        let frames = block_size / PAGE_SIZE;
        let Some(block) = self.pt.allocator().alloc_zeroed(frames, frames) else {
            return Ok(None);
        };
        let range = GpaRange::from_raw(start, end);
        if let Err(e) = self.pt.map_linear(&range, block, area.flags) {
            // SAFETY: allocated above and never mapped.
            unsafe { self.pt.allocator().dealloc_frames(block, frames) };
            return Err(e);
        }
        Ok(Some(FaultOutcome::Mapped {
            gpa: GuestPhysAddr::from_usize(start),
            hpa: block,
            flags: area.flags,
            size: PageSize::Size2M,
        }))
    }

    /// Makes `[gpa, gpa + len)` (any bytes) ready for the host to copy: checks the
    /// whole range first (every byte in an area with memory: not a hole, a reserved
    /// area or device memory), then maps each lazy page of it that has not faulted
    /// in yet to a zeroed frame, whatever the guest's access rights (an
    /// execute-only or write-only area is populated as well). All or nothing: the
    /// frames are reserved before any is mapped, and on error nothing changed.
    /// Returns the frames it mapped.
    ///
    /// Errors, at the first offending address: [`Error::NoArea`],
    /// [`Error::Reserved`], [`Error::DeviceMemory`]; [`Error::Overflow`];
    /// [`Error::NoMemory`] when the allocator cannot provide every frame.
    pub fn populate(&mut self, gpa: GuestPhysAddr, len: usize) -> Result<usize> {
        if len == 0 {
            return Ok(0);
        }
        let overflow = Error::Overflow { gpa, size: len };
        let end = gpa.as_usize().checked_add(len).ok_or(overflow)?;
        let page_end = end.checked_next_multiple_of(PAGE_SIZE).ok_or(overflow)?;
        let range = GpaRange::from_raw(gpa.as_usize() & !(PAGE_SIZE - 1), page_end);
        let at = |piece_start: GuestPhysAddr| piece_start.max(gpa);
        let mut lazy = Vec::new();
        let hole = self.each_piece(&range, |piece| match piece.backend {
            Backend::Reserved => Err(Error::Reserved {
                gpa: at(piece.range.start()),
            }),
            // Device memory, linear or allocated: the copies refuse it too.
            _ if piece.flags.contains(MappingFlags::DEVICE) => Err(Error::DeviceMemory {
                gpa: at(piece.range.start()),
            }),
            Backend::Linear { .. } => Ok(()),
            Backend::Alloc(_) => {
                lazy.try_reserve(1).map_err(|_| Error::OutOfHeap {
                    bytes: core::mem::size_of::<(Span, MappingFlags)>(),
                })?;
                lazy.push((span_of(&piece.range), piece.flags));
                Ok(())
            }
        })?;
        if let Some(hole) = hole {
            return Err(Error::NoArea {
                gpa: at(gpa_of(hole)),
            });
        }
        if lazy.is_empty() {
            return Ok(0);
        }
        self.pt.map_frames(&lazy, true)
    }
}

/// Appends `span` to `owned` (sorted, disjoint), merged with the last span when they
/// touch; [`Error::OutOfHeap`] when no room is left.
fn push_span(owned: &mut Spans, span: Span) -> Result<()> {
    match owned.last_mut() {
        Some(last) if last.end == span.start => last.end = span.end,
        _ => owned.try_push(span).map_err(|_| Error::OutOfHeap {
            bytes: core::mem::size_of::<Span>(),
        })?,
    }
    Ok(())
}

/// A guest-physical address from a raw value.
fn gpa_of(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

impl<F: NestedFormat, A: FrameAllocator> Drop for AddrSpace<F, A> {
    /// Gives back every frame of allocated areas; the page table then frees its
    /// tables. Drop a space only when no vCPU can use it any more.
    fn drop(&mut self) {
        for area in self.areas.values() {
            if let Backend::Alloc(_) = area.backend {
                self.pt.for_each_leaf_in(&area.range, |_, t| {
                    // SAFETY: the leaf's frames were allocated for this allocated
                    // area (singly, or as one block for a huge leaf) and are only
                    // reachable through this space, which is going away.
                    unsafe {
                        self.pt
                            .allocator()
                            .dealloc_frames(t.hpa, t.size.bytes() / PAGE_SIZE)
                    }
                });
            }
        }
    }
}

impl<F: NestedFormat, A: FrameAllocator> fmt::Debug for AddrSpace<F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddrSpace")
            .field("format", &F::NAME)
            .field("root", &self.pt.root())
            .field("areas", &self.areas.len())
            .field("data_frames", &self.data_frames())
            .field("table_frames", &self.pt.table_frames())
            .finish()
    }
}

impl<F: NestedFormat, A: FrameAllocator> fmt::Display for AddrSpace<F, A> {
    /// One line per area: the region dump a person reads when chasing a bug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} address space, root {:#x}:", F::NAME, self.pt.root())?;
        for area in self.areas.values() {
            writeln!(f, "  {area}")?;
        }
        Ok(())
    }
}
