//! Unmapping: the leaves cut at the two ends are split first (`split.rs`); then one
//! walk ([`PageTable::clear`]) clears the range without taking a frame, cutting whole
//! subtrees off as they are and unlinking tables that become empty. Everything it
//! unlinks goes into the operation's record, held until its flush completes.

use core::sync::atomic::{AtomicU64, Ordering};

use super::held::{Items, Spans, Unlinked, owns, push_frames};
use super::index::{Level, Span, Table};
use super::{PageTable, span_of};
use crate::flush::Ops;
use crate::format::{DescKind, NestedFormat};
use crate::{Error, Flush, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, Result};

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// Removes every translation in `[gpa, gpa + size)`, splitting huge leaves the range
    /// cuts and unlinking tables that become empty.
    ///
    /// Errors: bad input, [`Error::NotMapped`] with the first address of a hole, or
    /// [`Error::NoMemory`] when a split cannot get its table. On error nothing changed.
    pub fn unmap(&mut self, gpa: GuestPhysAddr, size: usize) -> Result<Flush> {
        let range = Self::check_range(gpa, size)?;
        if let Some(hole) = self.find_hole(&range) {
            return Err(Error::NotMapped { gpa: hole });
        }
        self.unmap_span(&range, Spans::new())
    }

    /// Removes the translations of `range` (checked; holes allowed). The leaves in
    /// `owned` (sorted, disjoint ranges) own their frames, which the flush releases
    /// with the tables.
    ///
    /// Inline, the walk apart ([`PageTable::unmap_op`]): the token is built in the
    /// caller from values it holds in registers. Returned through memory from the
    /// walk, its range was stored as two words and then copied as one 16-byte load,
    /// which the store buffer cannot forward: `unmap_1g_1g` took 39 ns on EPT with
    /// the token built there, 36.5 ns with it built here.
    #[inline]
    pub(crate) fn unmap_span(&mut self, range: &GpaRange, owned: Spans) -> Result<Flush> {
        let op = self.unmap_op(range, owned)?;
        Ok(self.flush(Some(*range), Ops::of(op)))
    }

    /// [`PageTable::unmap_span`] up to its token: the number of the operation whose
    /// record holds what it unlinked, 0 for none.
    fn unmap_op(&mut self, range: &GpaRange, owned: Spans) -> Result<u64> {
        let span = span_of(range);
        // One entry's whole block (one huge leaf, one page, or one table's subtree):
        // one walk down, unless a larger leaf covers it and must be split first.
        if let Some(level) = Self::whole_entry(span)
            && !self.general_unmap_only()
        {
            self.reserve_record()?;
            let mut items = Items::new();
            if let Some(unlinked) = self.clear_entry(span.start, level, &owned, &mut items) {
                if unlinked > 0 {
                    // The cache may not name the unlinked tables (no reader runs
                    // meanwhile: that takes `&self`).
                    self.psc.clear();
                    self.tables -= unlinked;
                }
                return Ok(self.hold(items, owned));
            }
        }
        let bounds = [span.start, span.end];
        let cut = |_: u64| true;
        // Everything that can fail comes first: the record's room, then the frames.
        let bound = Self::clear_bound(span);
        let mut items = Items::with_room(bound).map_err(|_| Error::OutOfHeap {
            bytes: bound * core::mem::size_of::<Unlinked>(),
        })?;
        self.reserve_record()?;
        // Most unmaps cut no leaf (ends on leaf boundaries): then the commit walk,
        // which would split nothing, and the empty reserve are skipped.
        let sites = self.plan_splits(bounds, &cut);
        if sites > 0 {
            let mut reserve = self.reserve(sites)?;
            let split = self.split_at(bounds, &cut, &mut reserve);
            self.release(reserve);
            split?;
        }
        // Tables are unlinked below: the cache may not name them any more.
        self.psc.clear();
        let root = self.root_table();
        let (unlinked, _) = self.clear(root, span, &owned, &mut items);
        self.tables -= unlinked;
        // The bound counts every entry touched, which few unmaps unlink: give the
        // rest back when it is worth a reallocation (a pending flush holds little).
        items.trim(SLACK_ITEMS);
        Ok(self.hold(items, owned))
    }

    /// Whether the test hook sends every unmap down the general path.
    #[inline(always)]
    fn general_unmap_only(&self) -> bool {
        #[cfg(test)]
        return self.general_unmap;
        #[cfg(not(test))]
        false
    }

    /// The level of which `span` is exactly one entry's block, if any.
    #[inline(always)]
    fn whole_entry(span: Span) -> Option<Level> {
        let len = span.len();
        if !len.is_power_of_two() || span.start & (len - 1) != 0 {
            return None;
        }
        // A compare per level (unrolled: the root's level is a constant).
        (0..=Self::TOP.get())
            .map(Level::new)
            .find(|l| l.span() == len)
    }

    /// Clears the entry at `level` whose block starts at `gpa`, walking straight down
    /// to it as a query does, then unlinks the tables above that this empties:
    /// exactly what [`PageTable::clear`] does for that span, the same items recorded
    /// in the same order, without its chunk loops and bound. Returns the number of
    /// tables unlinked, or `None`, having changed nothing, when a leaf above `level`
    /// covers the block (it must be split first: the general path).
    fn clear_entry(
        &self,
        gpa: usize,
        level: Level,
        owned: &[Span],
        items: &mut Items,
    ) -> Option<usize> {
        // The tables above `table` on the way down, by depth (the root first).
        let mut path = [self.root; super::MAX_LEVELS];
        let mut depth = 0;
        let mut table = self.root_table();
        let mut unlinked = 0;
        loop {
            let entry = self.entry(table, gpa);
            let raw = entry.load(Ordering::Acquire);
            let l = table.level.get();
            let kind = F::kind(raw, l);
            if table.level == level {
                unlinked += self.clear_whole(table, entry, (raw, kind), gpa, owned, items);
                break;
            }
            match kind {
                DescKind::Table => {
                    path[depth] = table.hpa;
                    depth += 1;
                    table = table.child(F::output_addr(raw, l));
                }
                // A larger leaf covers the block: it needs a split.
                DescKind::Leaf => return None,
                // Nothing below to clear; `clear` skips such an entry too.
                DescKind::Invalid | DescKind::Malformed(_) => break,
            }
        }
        // Unlink what became empty, bottom up (never the root).
        while depth > 0 {
            if !self.emptied(table, gpa) {
                break;
            }
            depth -= 1;
            let parent = Table {
                hpa: path[depth],
                level: Level::new(table.level.get() + 1),
            };
            self.unlink_empty(parent, gpa, table.hpa, items);
            unlinked += 1;
            table = parent;
        }
        Some(unlinked)
    }

    /// Takes back what a map wrote over `span` when its commit ran short (which no
    /// plan lets happen): everything is cleared and held until the table is dropped,
    /// since no flush token covers it. `owns` says whether the leaves own frames.
    pub(crate) fn discard(&mut self, span: Span, owns: bool) {
        let mut owned = Spans::new();
        if owns {
            owned.push(span);
        }
        let bound = Self::clear_bound(span);
        let mut items = Items::with_room(bound).unwrap_or_else(|_| {
            alloc::alloc::handle_alloc_error(core::alloc::Layout::new::<Unlinked>())
        });
        self.psc.clear();
        let root = self.root_table();
        let (unlinked, _) = self.clear(root, span, &owned, &mut items);
        self.tables -= unlinked;
        let _ = self.hold(items, owned);
    }

    /// An upper bound of the items [`PageTable::clear`] records for `span` from the
    /// root, cheap when it is small (the common case, which then needs no heap).
    ///
    /// [`PageTable::clear`] records at most one item per entry it visits (the
    /// leaf's frames, the subtree, or the emptied table below it), and it visits
    /// entries of a level only inside the entries above it that `span` partly
    /// covers. With both ends of `span` on a block boundary of level `L`, no entry
    /// of level `L` or below is partly covered, so none below `L` is visited: the
    /// visits are at most the entries `span` touches at each level from `L` to the
    /// root. When that sum is large, [`Self::walk_bound`] is tighter.
    fn clear_bound(span: Span) -> usize {
        let aligned = (span.start | span.end).trailing_zeros() as usize;
        let lowest = (aligned.saturating_sub(12) / 9).min(Self::TOP.get());
        let mut quick = 0;
        for l in lowest..=Self::TOP.get() {
            let shift = 12 + 9 * l;
            quick += ((span.end - 1) >> shift) - (span.start >> shift) + 1;
        }
        if quick <= Items::INLINE {
            quick
        } else {
            quick.min(Self::walk_bound(Self::TOP, span))
        }
    }

    /// An upper bound of the items [`PageTable::clear`] records for `span` in a
    /// table at `level`: one per entry it touches, plus, for the entries it only
    /// partly covers (at most the first and the last), what the table below records
    /// and that table itself.
    fn walk_bound(level: Level, span: Span) -> usize {
        let shift = 12 + 9 * level.get();
        let touched = ((span.end - 1) >> shift) - (span.start >> shift) + 1;
        if level.is_page() {
            return touched;
        }
        let first = Span::new(
            span.start,
            (level.block(span.start) + level.span()).min(span.end),
        );
        let last = Span::new(level.block(span.end - 1).max(span.start), span.end);
        let mut bound = touched;
        for (i, part) in [first, last].into_iter().enumerate() {
            if (i == 1 && part == first) || part.len() == level.span() {
                continue;
            }
            bound += 1 + Self::walk_bound(level.below(), part);
        }
        bound
    }

    /// Clears `span` in `table`, in which no leaf straddles an end of `span`: whole
    /// entries are cleared (their leaves' frames recorded when `owned`, their
    /// subtrees cut off whole and recorded), partial ones cleared below. Returns the
    /// number of tables unlinked and whether `table` is now empty (never the root).
    pub(crate) fn clear(
        &self,
        table: Table,
        span: Span,
        owned: &[Span],
        items: &mut Items,
    ) -> (usize, bool) {
        let level = table.level;
        let mut unlinked = 0;
        let entries = self.entries(table);
        for chunk in span.chunks(level) {
            let entry = &entries[Self::index(chunk.start, level)];
            let raw = entry.load(Ordering::Acquire);
            let kind = F::kind(raw, level.get());
            match kind {
                DescKind::Invalid => {}
                _ if chunk.whole => {
                    let desc = (raw, kind);
                    unlinked += self.clear_whole(table, entry, desc, chunk.start, owned, items);
                }
                DescKind::Leaf => {
                    debug_assert!(false, "a cut leaf at {:#x} was not split", chunk.start);
                }
                DescKind::Table => {
                    let sub = table.child(F::output_addr(raw, level.get()));
                    let (n, empty) = self.clear(sub, chunk.span(), owned, items);
                    unlinked += n;
                    if empty {
                        self.unlink_empty(table, chunk.start, sub.hpa, items);
                        unlinked += 1;
                    }
                }
                DescKind::Malformed(_) => {}
            }
        }
        let empty = level != Self::TOP
            && (span.len() == level.span() << 9 || self.emptied(table, span.start));
        (unlinked, empty)
    }

    /// Clears `entry` of `table`, which holds `raw` (of `kind`) and translates the block at
    /// `gpa` that an unmap covers whole: a leaf's frames are recorded when `owned`
    /// says so, a table is cut off with its subtree and recorded whole. Returns the
    /// number of tables unlinked.
    #[inline(always)]
    fn clear_whole(
        &self,
        table: Table,
        entry: &AtomicU64,
        (raw, kind): (u64, DescKind),
        gpa: usize,
        owned: &[Span],
        items: &mut Items,
    ) -> usize {
        let l = table.level.get();
        if kind == DescKind::Invalid {
            return 0;
        }
        entry.store(0, Ordering::Release);
        self.count_live(table, gpa, -1);
        match kind {
            // Linear areas own nothing: no search.
            DescKind::Leaf if !owned.is_empty() && owns(owned, gpa) => {
                push_frames(items, F::output_addr(raw, l), table.level);
            }
            DescKind::Table => {
                if table.level == Self::TOP {
                    self.set_live(gpa, 0);
                }
                let sub = table.child(F::output_addr(raw, l));
                let mut unlinked = 0;
                self.subtree_frames(sub, gpa, &[], &mut |_, _| unlinked += 1);
                items.push(Unlinked::subtree(sub, gpa));
                return unlinked;
            }
            _ => {}
        }
        0
    }

    /// Unlinks the table at `child`, which an unmap emptied, from its entry in
    /// `table` (the one translating `gpa`), recording its frame.
    #[inline(always)]
    fn unlink_empty(&self, table: Table, gpa: usize, child: HostPhysAddr, items: &mut Items) {
        self.entry(table, gpa).store(0, Ordering::Release);
        self.count_live(table, gpa, -1);
        if table.level == Self::TOP {
            self.set_live(gpa, 0);
        }
        // Nothing below it: the frame alone (its own item, one allocation), so the
        // flush frees it without reading its zero entries again.
        items.push(Unlinked::frames(child, 1, Level::PAGE));
    }

    /// Whether `table` (not the root), which covers `gpa`, has no entry left: a
    /// table right below the root says by its live count, others by their entries.
    #[inline(always)]
    fn emptied(&self, table: Table, gpa: usize) -> bool {
        if table.level.get() + 1 == Self::TOP.get() {
            self.live(gpa) == 0
        } else {
            self.all_zero(table)
        }
    }

    /// Whether every entry of `table` (not the root) is zero: eight entries OR-ed
    /// per test, which reads the 4 KiB at about one instruction per entry instead of
    /// the three of a test and branch per entry.
    fn all_zero(&self, table: Table) -> bool {
        let (groups, rest) = self.entries(table).as_chunks::<8>();
        debug_assert!(rest.is_empty());
        groups
            .iter()
            .all(|g| g.iter().fold(0, |acc, e| acc | e.load(Ordering::Relaxed)) == 0)
    }
}

/// Unused record items an unmap keeps rather than reallocating (256 bytes).
const SLACK_ITEMS: usize = 16;
