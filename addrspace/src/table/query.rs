//! Single-address reads: `query` (from the paging-structure cache when it can), the
//! lazy-fault path's `leaf_slot` and `set_free_leaf`, and the diagnostic `walk`.

use core::sync::atomic::{AtomicU64, Ordering};

use super::PageTable;
use super::index::{Level, Slot, Table};
use super::walk::{MAX_LEVELS, Walk, WalkEnd, WalkStep};
use crate::format::{DescKind, NestedFormat};
use crate::{FrameAllocator, GuestPhysAddr, HostPhysAddr, MappingFlags, PageSize};

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

/// What [`PageTable::leaf_slot`] found on the way to a 4 KiB entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafSlot {
    /// A leaf translates the address.
    Mapped,
    /// Every table down to the 4 KiB level exists; this entry is invalid.
    Free(Slot),
    /// A table on the way is missing (or a descriptor is malformed): the general
    /// map path decides.
    Missing,
}

/// A table a walk reads: its entries, its level and its HPA when the walk knows it
/// (a table found in the paging-structure cache is known by its entries only).
#[derive(Clone, Copy)]
struct Reading<'a> {
    entries: &'a [AtomicU64],
    level: Level,
    hpa: Option<HostPhysAddr>,
}

/// Where a walk stopped: the first descriptor on the way that is not a table.
struct Stop {
    level: Level,
    raw: u64,
    kind: DescKind,
    /// Where the descriptor is, when the walk knows its table's HPA: always at the
    /// 4 KiB level (reached through a descriptor), the one slot anyone writes.
    slot: Option<Slot>,
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// One walk to the 4 KiB entry of `gpa`, for the lazy-fault path: whether `gpa`
    /// is translated, or where its 4 KiB leaf would go when every table above exists.
    ///
    /// Inline into its one caller, `decide_fault`: returned through memory, the slot
    /// was stored in words and copied on with a 16-byte load, which the store buffer
    /// cannot forward (`fault_lazy_work` 24.5 -> 22 ns per fault).
    #[inline]
    pub(crate) fn leaf_slot(&self, gpa: usize) -> LeafSlot {
        if gpa >= Self::gpa_limit() {
            return LeafSlot::Missing;
        }
        let stop = self.descend(gpa);
        match (stop.kind, stop.slot) {
            // As `query`: a leaf translates unless it sits above the largest block.
            (DescKind::Leaf, _) if stop.level.page_size().is_some() => LeafSlot::Mapped,
            (DescKind::Invalid, Some(slot)) if stop.level.is_page() => LeafSlot::Free(slot),
            _ => LeafSlot::Missing,
        }
    }

    /// Whether nothing of the 2 MiB block at `start` (aligned) is mapped: the walk
    /// stops at an invalid entry at the 2 MiB level or above (no table, no leaf).
    pub(crate) fn block_unmapped(&self, start: usize) -> bool {
        if start >= Self::gpa_limit() {
            return false;
        }
        let stop = self.descend(start);
        stop.kind == DescKind::Invalid && !stop.level.is_page()
    }

    /// Writes a 4 KiB leaf to `hpa` with `flags` (checked) into a slot that
    /// [`PageTable::leaf_slot`] found free, with no change to the table since: the
    /// table still links it and needs no new table.
    pub(crate) fn set_free_leaf(&mut self, slot: Slot, hpa: HostPhysAddr, flags: MappingFlags) {
        let entry = &self.entries(slot.table)[slot.index];
        debug_assert_eq!(
            F::kind(entry.load(Ordering::Relaxed), 0),
            DescKind::Invalid,
            "set_free_leaf on a valid entry"
        );
        entry.store(F::leaf(hpa, flags, 0), Ordering::Release);
    }

    /// Walks `gpa` (below the GPA limit) down through table descriptors, from its
    /// region's cached level-1 or level-2 table or else the root, caching the
    /// tables of those levels it passes, and returns the first descriptor that is
    /// not a table. Each start is its own copy of the walk, so every level's shift
    /// and mask is a constant.
    #[inline(always)]
    fn descend(&self, gpa: usize) -> Stop {
        match self.psc.get(gpa) {
            Some(table) => self.descend_from_level1(gpa, Self::cached_level1(table.entries())),
            None => self.descend_uncached(gpa),
        }
    }

    /// The level-1 table the paging-structure cache named.
    #[inline(always)]
    fn cached_level1(entries: &[AtomicU64]) -> Reading<'_> {
        Reading {
            entries,
            level: Level::new(1),
            hpa: None,
        }
    }

    /// [`PageTable::descend`] when the cache names no level-1 table for `gpa`.
    #[inline(always)]
    fn descend_uncached(&self, gpa: usize) -> Stop {
        let level2 = if Self::TOP.get() == 2 {
            self.root_reading()
        } else if let Some(table) = self.psc.get_upper(gpa) {
            Reading {
                entries: table.entries(),
                level: Level::new(2),
                hpa: None,
            }
        } else {
            match self.level2_from_root(gpa) {
                Ok(table) => table,
                Err(stop) => return stop,
            }
        };
        match self.step(gpa, level2) {
            Ok(level1) => {
                // SAFETY: as above, for the level-1 table `step` just reached.
                unsafe { self.psc.put(gpa, level1.entries) };
                self.descend_from_level1(gpa, level1)
            }
            Err(stop) => stop,
        }
    }

    /// The root table, to read.
    #[inline(always)]
    fn root_reading(&self) -> Reading<'_> {
        let root = self.root_table();
        Reading {
            entries: self.entries(root),
            level: root.level,
            hpa: Some(root.hpa),
        }
    }

    /// The walk of [`PageTable::descend`] from a root above level 2 down to level
    /// 2, whose table it caches. Out of line: it runs once per 512 GiB region until
    /// an unmap, and the hit paths stay short without it.
    #[cold]
    #[inline(never)]
    fn level2_from_root(&self, gpa: usize) -> Result<Reading<'_>, Stop> {
        let mut table = self.root_reading();
        while table.level.get() > 2 {
            table = self.step(gpa, table)?;
        }
        // SAFETY: `table` is the level-2 table this tree links for `gpa` (the walk
        // just went through the link), read through the allocator's mapping, and
        // the cache is this tree's.
        unsafe { self.psc.put_upper(gpa, table.entries) };
        Ok(table)
    }

    /// The rest of [`PageTable::descend`] from the level-1 table `level1`.
    #[inline(always)]
    fn descend_from_level1(&self, gpa: usize, level1: Reading<'_>) -> Stop {
        match self.step(gpa, level1) {
            Ok(level0) => self.stop_at(gpa, level0),
            Err(stop) => stop,
        }
    }

    /// One level of a walk: the table the entry of `gpa` in `table` links, or, when
    /// that entry is not a table descriptor (or `table` is at the 4 KiB level),
    /// where the walk stops.
    #[inline(always)]
    fn step<'a>(&'a self, gpa: usize, table: Reading<'a>) -> Result<Reading<'a>, Stop> {
        let stop = self.stop_at(gpa, table);
        if stop.kind == DescKind::Table && !table.level.is_page() {
            let hpa = F::output_addr(stop.raw, table.level.get());
            let child = Table {
                hpa,
                level: table.level.below(),
            };
            return Ok(Reading {
                entries: self.entries(child),
                level: child.level,
                hpa: Some(hpa),
            });
        }
        Err(stop)
    }

    /// The entry of `gpa` in `table`, read and decoded.
    #[inline(always)]
    fn stop_at(&self, gpa: usize, table: Reading<'_>) -> Stop {
        let index = Self::index(gpa, table.level);
        let raw = table.entries[index].load(Ordering::Acquire);
        Stop {
            level: table.level,
            raw,
            kind: F::kind(raw, table.level.get()),
            slot: table.hpa.map(|hpa| Slot {
                table: Table {
                    hpa,
                    level: table.level,
                },
                index,
            }),
        }
    }

    /// Translates `gpa`, or `None` when no leaf covers it.
    #[inline(always)]
    pub fn query(&self, gpa: GuestPhysAddr) -> Option<Translation> {
        match self.query_cached(gpa) {
            Some(answer) => answer,
            None => self.query_uncached(gpa.as_usize()),
        }
    }

    /// [`PageTable::query`] where the paging-structure cache answers: `None` when
    /// it does not (the caller then calls [`PageTable::query`]). It answers beyond
    /// the GPA limit, from a cached level-1 table (4 KiB and 2 MiB leaves), and for
    /// a 1 GiB leaf of a cached level-2 table (or level-2 root).
    ///
    /// Kept short and inline, the rest one call away: the fewer instructions a
    /// translate takes, the more of the cache misses of independent translates the
    /// CPU overlaps (its reorder window holds only a few translates). A cache hit
    /// needs no check against the GPA limit first: the cache names tables of
    /// regions below it only.
    #[inline(always)]
    pub(crate) fn query_cached(&self, gpa: GuestPhysAddr) -> Option<Option<Translation>> {
        let gpa = gpa.as_usize();
        if let Some(table) = self.psc.get(gpa) {
            return Some(self.query_from_level1(gpa, table.entries()));
        }
        if gpa >= Self::gpa_limit() {
            return Some(None);
        }
        let level2 = if Self::TOP.get() == 2 {
            self.root_reading()
        } else {
            Reading {
                entries: self.psc.get_upper(gpa)?.entries(),
                level: Level::new(2),
                hpa: None,
            }
        };
        let stop = self.stop_at(gpa, level2);
        (stop.kind == DescKind::Leaf).then(|| Self::translation(gpa, stop))
    }

    /// The translation of `gpa` by the level-1 table `level1` and the table it
    /// links: [`PageTable::descend_from_level1`] and [`PageTable::translation`] with
    /// each leaf level its own copy, so the offset into the leaf is a constant mask
    /// (not a shift by the level where the walk stopped).
    #[inline(always)]
    fn query_from_level1(&self, gpa: usize, level1: &[AtomicU64]) -> Option<Translation> {
        let block = Level::new(1);
        let raw = level1[Self::index(gpa, block)].load(Ordering::Acquire);
        match F::kind(raw, block.get()) {
            DescKind::Table => {
                let table = Table {
                    hpa: F::output_addr(raw, block.get()),
                    level: Level::PAGE,
                };
                let raw =
                    self.entries(table)[Self::index(gpa, Level::PAGE)].load(Ordering::Acquire);
                (F::kind(raw, 0) == DescKind::Leaf)
                    .then(|| Self::leaf(gpa, raw, Level::PAGE, PageSize::Size4K))
            }
            DescKind::Leaf => Some(Self::leaf(gpa, raw, block, PageSize::Size2M)),
            _ => None,
        }
    }

    /// [`PageTable::query`] when the cache names no level-1 table for `gpa` (below
    /// the GPA limit).
    #[inline(never)]
    fn query_uncached(&self, gpa: usize) -> Option<Translation> {
        Self::translation(gpa, self.descend_uncached(gpa))
    }

    /// What a walk of `gpa` that ended at `stop` translates it to.
    #[inline(always)]
    fn translation(gpa: usize, stop: Stop) -> Option<Translation> {
        if stop.kind != DescKind::Leaf {
            return None;
        }
        let size = stop.level.page_size()?;
        Some(Self::leaf(gpa, stop.raw, stop.level, size))
    }

    /// The translation of `gpa` by `raw`, a leaf of `size` at `level`.
    #[inline(always)]
    fn leaf(gpa: usize, raw: u64, level: Level, size: PageSize) -> Translation {
        let base = F::output_addr(raw, level.get()).as_usize();
        Translation {
            hpa: HostPhysAddr::from_usize(base + (gpa & (size.bytes() - 1))),
            flags: F::leaf_flags(raw),
            size,
        }
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
        let mut table = self.root_table();
        loop {
            let level = table.level.get();
            let index = Self::index(gpa.as_usize(), table.level);
            let raw = self.entries(table)[index].load(Ordering::Acquire);
            let kind = F::kind(raw, level);
            walk.steps[walk.len] = WalkStep {
                level,
                level_name: F::level_name(level),
                table: table.hpa,
                index,
                raw,
                kind,
            };
            walk.len += 1;
            walk.end = match kind {
                DescKind::Table if level > 0 => {
                    table = table.child(F::output_addr(raw, level));
                    continue;
                }
                DescKind::Leaf => match self.query(gpa) {
                    Some(t) => WalkEnd::Translated(t),
                    None => WalkEnd::Fault {
                        level,
                        why: "leaf above the largest supported block size",
                    },
                },
                DescKind::Malformed(why) => WalkEnd::Fault { level, why },
                _ => WalkEnd::Fault {
                    level,
                    why: "translation fault: descriptor not valid",
                },
            };
            return walk;
        }
    }
}
