//! Mapping: one walk ([`PageTable::map_in`]) that both plans a map (counting the
//! tables and guest frames it needs, refusing what is already mapped) and commits it
//! (writing the largest leaves the source allows), so the two cannot disagree. Below
//! a table the map would create, the plan reads every entry as empty
//! ([`PageTable::plan_new`]), which is what the commit finds in the zeroed table.
//! A linear map whose span lies below an empty entry skips the plan: it can meet no
//! translation, and it builds its new tables unlinked ([`PageTable::map_fresh`]).

use core::sync::atomic::{AtomicU64, Ordering};

use super::index::{Chunk, Level, Span, Table};
use super::reserve::Reserve;
use super::source::{Linear, Reserved, Source};
use super::{PageTable, gpa_of, span_of};
use crate::format::{DescKind, NestedFormat};
use crate::{
    Error, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags, PAGE_SIZE, Result,
};

/// Most subtrees [`PageTable::map_fresh_entries`] builds before it links them
/// (256 bytes of stack): 32 GiB of 4 KiB or 2 MiB leaves below 1 GiB root entries.
/// A span that needs more takes the two-pass map.
const FRESH_SUBTREES: usize = 32;

/// A host-physical address from a raw value.
#[inline(always)]
fn hpa_of(v: usize) -> HostPhysAddr {
    HostPhysAddr::from_usize(v)
}

/// A map being planned or committed.
struct MapOp<'s, S> {
    /// Guest-physical address of the source's offset 0.
    base: usize,
    src: &'s mut S,
    flags: MappingFlags,
    /// Leave translated addresses alone (populating the holes of a range) instead of
    /// refusing them.
    fill_holes: bool,
}

/// What a map needs: new tables, and 4 KiB leaves it writes (one guest frame each,
/// for sources that consume frames).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MapPlan {
    pub(crate) tables: usize,
    pub(crate) pages: usize,
}

/// Which pass of [`PageTable::map_in`] runs.
enum Pass<'r> {
    /// Count, write nothing.
    Plan(MapPlan),
    /// Write, taking new tables from `reserve`; `short` records that a reserve ran
    /// out (which the plan rules out) and part of the map was left unwritten.
    Commit {
        reserve: &'r mut Reserve,
        added: usize,
        short: bool,
    },
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
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
        let range = Self::check_range(gpa, size)?;
        Self::check_hpa(hpa, size)?;
        Self::check_flags(flags)?;
        self.map_linear(&range, hpa, flags)
    }

    /// Maps `range` (checked) linearly to `hpa` (checked). Inline: the one-walk map
    /// of fresh tables is a few dozen instructions beside its calls; the two-pass map
    /// is a call away.
    #[inline]
    pub(crate) fn map_linear(
        &mut self,
        range: &GpaRange,
        hpa: HostPhysAddr,
        flags: MappingFlags,
    ) -> Result<()> {
        let span = span_of(range);
        match self.map_fresh(span, hpa.as_usize(), flags) {
            Some(made) => {
                self.tables += made?;
                Ok(())
            }
            None => self.map_linear_two_pass(span, hpa, flags),
        }
    }

    /// [`PageTable::map_linear`] by plan, reserve and commit.
    #[inline(never)]
    fn map_linear_two_pass(
        &mut self,
        span: Span,
        hpa: HostPhysAddr,
        flags: MappingFlags,
    ) -> Result<()> {
        let mut src = Linear(hpa.as_usize());
        let plan = self.plan_map(span, &mut src, flags, false)?;
        let mut reserve = self.reserve(plan.tables)?;
        let (added, short) = self.commit_map(span, &mut src, flags, false, &mut reserve);
        self.finish_map(span, false, false, reserve, added, short)
    }

    /// The one-walk map of a linear `span` (checked) to `hpa` that lies inside one
    /// entry at each level down to the first empty entry on its way, or down to a
    /// table where it covers several entries, all empty
    /// ([`PageTable::map_fresh_entries`]): everything below those entries is
    /// untranslated, so no conflict is possible and no plan is needed. A span that
    /// entry can translate gets its leaf there; otherwise the tables the span needs
    /// are built unlinked ([`PageTable::build_fresh`]) and linked with one store.
    /// Nothing is linked before every frame is obtained, so running out of memory
    /// frees the unlinked tables and changes nothing (no translation was visible, no
    /// flush is needed). Returns the tables linked; `None` when the span meets a
    /// translation (the two-pass map does those and names the conflict).
    #[inline]
    fn map_fresh(&self, span: Span, hpa: usize, flags: MappingFlags) -> Option<Result<usize>> {
        #[cfg(test)]
        if self.two_pass_only {
            return None;
        }
        let mut table = self.root_table();
        loop {
            let level = table.level;
            let shift = 12 + 9 * level.get();
            if span.start >> shift != (span.end - 1) >> shift {
                return self.map_fresh_entries(table, span, hpa, flags);
            }
            let whole = span.len() == level.span();
            let entry = self.entry(table, span.start);
            let raw = entry.load(Ordering::Acquire);
            match F::kind(raw, level.get()) {
                DescKind::Invalid if Self::leaf_fits(level, whole, hpa) => {
                    let attrs = F::leaf_attrs(flags, level.get());
                    entry.store(attrs | F::addr_bits(hpa_of(hpa)), Ordering::Release);
                    self.count_live(table, span.start, 1);
                    return Some(Ok(0));
                }
                DescKind::Invalid => {
                    let mut made = 0;
                    let below = level.below();
                    let one = span.len() == below.span() && below.aligned(span.start);
                    let built = if one && Self::leaf_fits(below, true, hpa) {
                        // The common case (a 1 GiB or 2 MiB leaf in a new table)
                        // inline: one table holding one leaf.
                        self.fresh_table(below, true).map(|(t, entries)| {
                            made = 1;
                            let attrs = F::leaf_attrs(flags, below.get());
                            entries[Self::index(span.start, below)]
                                .store(attrs | F::addr_bits(hpa_of(hpa)), Ordering::Relaxed);
                            if below.get() + 1 == Self::TOP.get() {
                                self.set_live(span.start, 1);
                            }
                            t
                        })
                    } else {
                        self.build_fresh(below, span, hpa, flags, &mut made)
                    };
                    let Some(t) = built else {
                        return Some(Err(self.fresh_no_memory(level, span, hpa, flags, made)));
                    };
                    entry.store(F::table(t), Ordering::Release);
                    self.count_live(table, span.start, 1);
                    return Some(Ok(made));
                }
                DescKind::Table if !Self::leaf_fits(level, whole, hpa) => {
                    table = table.child(F::output_addr(raw, level.get()));
                }
                _ => return None,
            }
        }
    }

    /// [`PageTable::map_fresh`] of a span across several entries of `table`, every
    /// one of them empty (on Arm's and Sv39x4's 1 GiB root entries: any span past
    /// 1 GiB): builds the subtree of each entry that takes no leaf, unlinked, then
    /// links them and writes the leaves, in address order. Running out of memory
    /// frees every table built before any entry changed. `None` (the two-pass map)
    /// when an entry is not empty, or when the span needs more than
    /// [`FRESH_SUBTREES`] subtrees.
    #[inline(never)]
    fn map_fresh_entries(
        &self,
        table: Table,
        span: Span,
        hpa: usize,
        flags: MappingFlags,
    ) -> Option<Result<usize>> {
        let level = table.level;
        let entries = self.entries(table);
        let touched = Self::index(span.start, level)..=Self::index(span.end - 1, level);
        let empty =
            |e: &AtomicU64| F::kind(e.load(Ordering::Acquire), level.get()) == DescKind::Invalid;
        // Where each chunk maps from, and whether it is one leaf in its entry.
        let out = |c: Chunk| hpa + (c.start - span.start);
        let leaf = |c: Chunk| Self::leaf_fits(level, c.whole, out(c));
        // The chunks that take a subtree, in address order.
        let subtrees = || span.chunks(level).filter(move |&c| !leaf(c));
        if !entries[touched].iter().all(empty) || subtrees().count() > FRESH_SUBTREES {
            return None;
        }
        let mut built = [HostPhysAddr::from_usize(0); FRESH_SUBTREES];
        let (mut n, mut made) = (0, 0);
        for chunk in subtrees() {
            match self.build_fresh(level.below(), chunk.span(), out(chunk), flags, &mut made) {
                Some(t) => {
                    built[n] = t;
                    n += 1;
                }
                None => {
                    let done = subtrees().zip(&built[..n]);
                    for (c, &t) in done {
                        self.free_unlinked(table.child(t));
                        if level == Self::TOP {
                            // `build_fresh` counted the entries of the table below
                            // this empty root entry, which stays empty.
                            self.set_live(c.start, 0);
                        }
                    }
                    return Some(Err(self.fresh_no_memory(level, span, hpa, flags, made)));
                }
            }
        }
        let (mut k, mut linked) = (0, 0);
        for chunk in span.chunks(level) {
            let desc = if leaf(chunk) {
                F::leaf_attrs(flags, level.get()) | F::addr_bits(hpa_of(out(chunk)))
            } else {
                // The subtrees were built in this order.
                k += 1;
                F::table(built[k - 1])
            };
            entries[Self::index(chunk.start, level)].store(desc, Ordering::Release);
            linked += 1;
        }
        self.count_live(table, span.start, linked);
        Some(Ok(made))
    }

    /// Whether a leaf at `level` translates a chunk (`whole`: the entry's whole
    /// block) from `hpa`: [`PageTable::can_leaf`] for a linear source.
    #[inline(always)]
    fn leaf_fits(level: Level, whole: bool, hpa: usize) -> bool {
        level.is_page() || (level.get() <= F::MAX_LEAF_LEVEL && whole && level.aligned(hpa))
    }

    /// A new table at `level`, zeroed (a page table `span` fills whole is written
    /// whole instead) and linked nowhere, that maps `span` (inside its block)
    /// linearly from `hpa` (at `span.start`) with the largest leaves, and
    /// the new tables below it that needs, all filled before the caller links the
    /// table (one release store publishes them). `made` counts the table frames
    /// taken. `None` when the allocator ran dry: every frame this call took is freed
    /// then (none was ever linked).
    fn build_fresh(
        &self,
        level: Level,
        span: Span,
        hpa: usize,
        flags: MappingFlags,
        made: &mut usize,
    ) -> Option<HostPhysAddr> {
        // A page table the span fills whole gets every entry written below before
        // anything links it: zeroing it first would write its 4 KiB twice.
        let full = level.is_page() && span.len() == level.span() << 9;
        let (frame, entries) = self.fresh_table(level, !full)?;
        *made += 1;
        if level.is_page() {
            // Pages only: one attribute word, consecutive frames.
            let attrs = F::leaf_attrs(flags, 0);
            let first = Self::index(span.start, level);
            for (i, e) in entries[first..first + (span.len() >> 12)]
                .iter()
                .enumerate()
            {
                // Relaxed: unlinked; the link's release store publishes it.
                e.store(
                    attrs | F::addr_bits(hpa_of(hpa + (i << 12))),
                    Ordering::Relaxed,
                );
            }
            return Some(frame);
        }
        let table = Table { hpa: frame, level };
        let mut live = 0;
        for chunk in span.chunks(level) {
            let out = hpa + (chunk.start - span.start);
            let desc = if Self::leaf_fits(level, chunk.whole, out) {
                F::leaf_attrs(flags, level.get()) | F::addr_bits(hpa_of(out))
            } else {
                match self.build_fresh(level.below(), chunk.span(), out, flags, made) {
                    Some(t) => F::table(t),
                    None => {
                        // Unlinked: the tables built so far go back at once.
                        self.free_unlinked(table);
                        return None;
                    }
                }
            };
            // Relaxed: the table is unlinked; the caller's release store of its
            // link publishes these entries.
            entries[Self::index(chunk.start, level)].store(desc, Ordering::Relaxed);
            live += 1;
        }
        if level.get() + 1 == Self::TOP.get() {
            self.set_live(span.start, live);
        }
        Some(frame)
    }

    /// Gives back every table frame of `table`, a subtree [`PageTable::build_fresh`]
    /// built (maybe in part) and nothing ever linked.
    #[cold]
    fn free_unlinked(&self, table: Table) {
        // Linear leaves own no frames, so the subtree's base address is not read.
        self.subtree_frames(table, 0, &[], &mut |t, n| {
            // SAFETY: a table frame of this unlinked subtree, allocated by this map
            // and reachable by nothing else.
            unsafe { self.alloc.dealloc_frames(t, n) }
        });
    }

    /// A new table frame at `level` (below the root), linked nowhere, with its
    /// entries: zeroed, or with `zero` false as the allocator left it (for a caller
    /// that writes every entry before it links the table); `None` when the
    /// allocator is dry.
    #[inline(always)]
    fn fresh_table(&self, level: Level, zero: bool) -> Option<(HostPhysAddr, &[AtomicU64])> {
        let frame = self.alloc.alloc_frame()?;
        if zero {
            // SAFETY: the frame was just allocated for this table and is linked nowhere.
            unsafe { self.zero_table(frame) };
        }
        Some((frame, self.entries(Table { hpa: frame, level })))
    }

    /// The error of a [`PageTable::map_fresh`] of `span` into empty entries at
    /// `level` that got `made` table frames and no more: what the two-pass map
    /// reports in that state (the tables its plan counts, those it obtained).
    #[cold]
    #[inline(never)]
    fn fresh_no_memory(
        &self,
        level: Level,
        span: Span,
        hpa: usize,
        flags: MappingFlags,
        made: usize,
    ) -> Error {
        let mut src = Linear(hpa);
        let op = MapOp {
            base: span.start,
            src: &mut src,
            flags,
            fill_holes: false,
        };
        let mut plan = MapPlan::default();
        Self::plan_new(level, span, &op, &mut plan);
        Error::NoMemory {
            needed: plan.tables,
            allocated: made,
        }
    }

    /// Maps every untranslated page of each span (checked; disjoint) to a zeroed
    /// frame of its own from the allocator, with that span's flags, all or none;
    /// with `fill_holes` false every span must be untranslated. Returns the number of
    /// frames mapped.
    pub(crate) fn map_frames(
        &mut self,
        spans: &[(Span, MappingFlags)],
        fill_holes: bool,
    ) -> Result<usize> {
        debug_assert!(fill_holes || spans.len() == 1, "a rollback undoes one span");
        let mut none = Reserve::new();
        let mut plan = MapPlan::default();
        for &(span, flags) in spans {
            let mut probe = Reserved {
                frames: &mut none,
                alloc: &self.alloc,
            };
            let p = self.plan_map(span, &mut probe, flags, fill_holes)?;
            plan.tables += p.tables;
            plan.pages += p.pages;
        }
        let needed = plan.pages + plan.tables;
        let mut frames = Reserve::alloc_zeroed(&self.alloc, plan.pages)
            .map_err(|allocated| Error::NoMemory { needed, allocated })?;
        let mut reserve = match self.reserve(plan.tables) {
            Ok(r) => r,
            Err(e) => {
                frames.release(&self.alloc);
                return Err(match e {
                    Error::NoMemory { allocated, .. } => Error::NoMemory {
                        needed,
                        allocated: plan.pages + allocated,
                    },
                    e => e,
                });
            }
        };
        let (mut added, mut short) = (0, false);
        for &(span, flags) in spans {
            let mut src = Reserved {
                frames: &mut frames,
                alloc: &self.alloc,
            };
            let (a, s) = self.commit_map(span, &mut src, flags, fill_holes, &mut reserve);
            added += a;
            short |= s;
            if short {
                break;
            }
        }
        debug_assert!(
            short || frames.is_empty(),
            "{} guest frames left",
            frames.len()
        );
        frames.release(&self.alloc);
        // Spans planned one by one may share a new table: the reserve can hold more
        // than the commit took, never less.
        if spans.len() > 1 {
            reserve.release(&self.alloc);
        }
        let whole = spans.first().map(|s| s.0).unwrap_or(Span::new(0, 0));
        self.finish_map(whole, fill_holes, true, reserve, added, short)
            .map(|()| plan.pages)
    }

    /// The plan pass: what mapping `span` from `src` needs, or the first address
    /// already translated (unless `fill_holes`).
    fn plan_map<S: Source>(
        &self,
        span: Span,
        src: &mut S,
        flags: MappingFlags,
        fill_holes: bool,
    ) -> Result<MapPlan> {
        let mut pass = Pass::Plan(MapPlan::default());
        let mut op = MapOp {
            base: span.start,
            src,
            flags,
            fill_holes,
        };
        self.map_in(self.root_table(), span, &mut op, &mut pass)
            .map_err(|gpa| Error::AlreadyMapped { gpa: gpa_of(gpa) })?;
        match pass {
            Pass::Plan(plan) => Ok(plan),
            Pass::Commit { .. } => unreachable!("the plan pass stays a plan"),
        }
    }

    /// The commit pass over a map the plan accepted, taking tables from `reserve`;
    /// returns the tables it linked and whether it ran short.
    fn commit_map<S: Source>(
        &self,
        span: Span,
        src: &mut S,
        flags: MappingFlags,
        fill_holes: bool,
        reserve: &mut Reserve,
    ) -> (usize, bool) {
        let mut pass = Pass::Commit {
            reserve,
            added: 0,
            short: false,
        };
        let mut op = MapOp {
            base: span.start,
            src,
            flags,
            fill_holes,
        };
        // The plan refused every conflict, so the commit meets none.
        let walked = self.map_in(self.root_table(), span, &mut op, &mut pass);
        debug_assert!(walked.is_ok(), "the commit met a conflict the plan passed");
        match pass {
            Pass::Commit { added, short, .. } => (added, short),
            Pass::Plan(_) => unreachable!("the commit pass stays a commit"),
        }
    }

    /// Accounts for a commit's new tables and gives back the reserve's rest. A
    /// commit that ran short (which the plan rules out) is undone, except that a map
    /// of holes keeps the pages it populated (they are as a fault would make them);
    /// `owns` says whether the map's leaves own their frames.
    #[inline]
    fn finish_map(
        &mut self,
        span: Span,
        fill_holes: bool,
        owns: bool,
        reserve: Reserve,
        added: usize,
        short: bool,
    ) -> Result<()> {
        self.tables += added;
        self.release(reserve);
        if !short {
            return Ok(());
        }
        if !fill_holes {
            self.discard(span, owns);
        }
        Err(Error::NoMemory {
            needed: 1,
            allocated: 0,
        })
    }

    /// Whether a leaf at `level` can translate all of `chunk` from the source.
    #[inline(always)]
    fn can_leaf<S: Source>(level: Level, chunk: Chunk, op: &MapOp<'_, S>) -> bool {
        level.is_page()
            || (S::CONTIGUOUS
                && level.get() <= F::MAX_LEAF_LEVEL
                && chunk.whole
                && level.aligned(op.src.peek(chunk.start - op.base)))
    }

    /// The one walk of a map over `span` in `table`. Returns the first translated
    /// address it refuses.
    fn map_in<S: Source>(
        &self,
        table: Table,
        span: Span,
        op: &mut MapOp<'_, S>,
        pass: &mut Pass<'_>,
    ) -> core::result::Result<(), usize> {
        let level = table.level;
        if level.is_page() {
            return self.map_pages(table, span, op, pass);
        }
        let entries = self.entries(table);
        for chunk in span.chunks(level) {
            let entry = &entries[Self::index(chunk.start, level)];
            let raw = entry.load(Ordering::Acquire);
            match F::kind(raw, level.get()) {
                DescKind::Invalid if Self::can_leaf(level, chunk, op) => {
                    if let Pass::Commit { short, .. } = pass {
                        match op.src.take(chunk.start - op.base, level.span()) {
                            Some(hpa) => {
                                let attrs = F::leaf_attrs(op.flags, level.get());
                                entry.store(attrs | F::addr_bits(hpa), Ordering::Release);
                                self.count_live(table, chunk.start, 1);
                            }
                            None => *short = true,
                        }
                    }
                }
                DescKind::Invalid => match pass {
                    Pass::Plan(plan) => {
                        plan.tables += 1;
                        Self::plan_new(level.below(), chunk.span(), op, plan);
                    }
                    Pass::Commit {
                        reserve,
                        added,
                        short,
                    } => match self.new_table(reserve) {
                        Some(t) => {
                            entry.store(F::table(t), Ordering::Release);
                            self.count_live(table, chunk.start, 1);
                            *added += 1;
                            self.map_in(table.child(t), chunk.span(), op, pass)?;
                        }
                        None => *short = true,
                    },
                },
                DescKind::Table => {
                    let sub = table.child(F::output_addr(raw, level.get()));
                    if !op.fill_holes && Self::can_leaf(level, chunk, op) {
                        // Tables are never empty, so something below is mapped.
                        return Err(self
                            .first_where(sub, chunk.span(), true)
                            .unwrap_or(chunk.start));
                    }
                    self.map_in(sub, chunk.span(), op, pass)?;
                }
                DescKind::Leaf | DescKind::Malformed(_) if !op.fill_holes => {
                    return Err(chunk.start);
                }
                DescKind::Leaf | DescKind::Malformed(_) => {}
            }
        }
        Ok(())
    }

    /// The plan pass below a table the map creates at `level`: every entry empty,
    /// decided as [`PageTable::map_in`] decides an empty entry.
    fn plan_new<S: Source>(level: Level, span: Span, op: &MapOp<'_, S>, plan: &mut MapPlan) {
        if level.is_page() {
            plan.pages += span.len() / PAGE_SIZE;
            return;
        }
        for chunk in span.chunks(level) {
            if !Self::can_leaf(level, chunk, op) {
                plan.tables += 1;
                Self::plan_new(level.below(), chunk.span(), op, plan);
            }
        }
    }

    /// The 4 KiB level of [`PageTable::map_in`].
    #[inline(always)]
    fn map_pages<S: Source>(
        &self,
        table: Table,
        span: Span,
        op: &mut MapOp<'_, S>,
        pass: &mut Pass<'_>,
    ) -> core::result::Result<(), usize> {
        let first = Self::index(span.start, table.level);
        let entries = &self.entries(table)[first..first + (span.len() >> 12)];
        match pass {
            Pass::Plan(plan) => {
                for (i, e) in entries.iter().enumerate() {
                    if F::kind(e.load(Ordering::Acquire), 0) == DescKind::Invalid {
                        plan.pages += 1;
                    } else if !op.fill_holes {
                        return Err(span.start + (i << 12));
                    }
                }
            }
            Pass::Commit { short, .. } => {
                let attrs = F::leaf_attrs(op.flags, 0);
                for (i, e) in entries.iter().enumerate() {
                    if op.fill_holes && F::kind(e.load(Ordering::Acquire), 0) != DescKind::Invalid {
                        continue;
                    }
                    match op.src.take(span.start - op.base + (i << 12), PAGE_SIZE) {
                        Some(hpa) => e.store(attrs | F::addr_bits(hpa), Ordering::Release),
                        None => {
                            *short = true;
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
