//! Single-address reads: `query` (from the paging-structure cache when it can), the
//! lazy-fault path's `leaf_slot` and `set_free_leaf`, and the diagnostic `walk`.

use core::sync::atomic::Ordering;

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

/// Where a walk stopped: the first descriptor on the way that is not a table.
struct Stop {
    slot: Slot,
    raw: u64,
    kind: DescKind,
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// One walk to the 4 KiB entry of `gpa`, for the lazy-fault path: whether `gpa`
    /// is translated, or where its 4 KiB leaf would go when every table above exists.
    pub(crate) fn leaf_slot(&self, gpa: usize) -> LeafSlot {
        if gpa >= Self::gpa_limit() {
            return LeafSlot::Missing;
        }
        let stop = self.descend(gpa);
        let level = stop.slot.table.level;
        match stop.kind {
            // As `query`: a leaf translates unless it sits above the largest block.
            DescKind::Leaf if level.page_size().is_some() => LeafSlot::Mapped,
            DescKind::Invalid if level.is_page() => LeafSlot::Free(stop.slot),
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
        stop.kind == DescKind::Invalid && !stop.slot.table.level.is_page()
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
        if let Some(hpa) = self.psc.get(gpa) {
            return self.descend_from_level1(gpa, hpa);
        }
        let hpa = match self.psc.get_upper(gpa) {
            Some(hpa) if Self::TOP.get() > 2 => hpa,
            _ => {
                // From the root down to level 2 (no step when the root is level 2).
                let mut table = self.root_table();
                while table.level.get() > 2 {
                    table = match self.step(gpa, table) {
                        Ok(child) => child,
                        Err(stop) => return stop,
                    };
                }
                if Self::TOP.get() > 2 {
                    self.psc.put_upper(gpa, table.hpa);
                }
                table.hpa
            }
        };
        let level2 = Table {
            hpa,
            level: Level::new(2),
        };
        match self.step(gpa, level2) {
            Ok(level1) => {
                self.psc.put(gpa, level1.hpa);
                self.descend_from_level1(gpa, level1.hpa)
            }
            Err(stop) => stop,
        }
    }

    /// The rest of [`PageTable::descend`] from the level-1 table at `hpa`.
    #[inline(always)]
    fn descend_from_level1(&self, gpa: usize, hpa: HostPhysAddr) -> Stop {
        let level1 = Table {
            hpa,
            level: Level::new(1),
        };
        match self.step(gpa, level1) {
            Ok(level0) => self.stop_at(gpa, level0),
            Err(stop) => stop,
        }
    }

    /// One level of a walk: the table the entry of `gpa` in `table` links, or, when
    /// that entry is not a table descriptor (or `table` is at the 4 KiB level),
    /// where the walk stops.
    #[inline(always)]
    fn step(&self, gpa: usize, table: Table) -> Result<Table, Stop> {
        let stop = self.stop_at(gpa, table);
        if stop.kind == DescKind::Table && !table.level.is_page() {
            return Ok(table.child(F::output_addr(stop.raw, table.level.get())));
        }
        Err(stop)
    }

    /// The entry of `gpa` in `table`, read and decoded.
    #[inline(always)]
    fn stop_at(&self, gpa: usize, table: Table) -> Stop {
        let index = Self::index(gpa, table.level);
        let raw = self.entries(table)[index].load(Ordering::Acquire);
        Stop {
            slot: Slot { table, index },
            raw,
            kind: F::kind(raw, table.level.get()),
        }
    }

    /// Translates `gpa`, or `None` when no leaf covers it.
    #[inline(always)]
    pub fn query(&self, gpa: GuestPhysAddr) -> Option<Translation> {
        let gpa = gpa.as_usize();
        if gpa >= Self::gpa_limit() {
            return None;
        }
        let stop = self.descend(gpa);
        if stop.kind != DescKind::Leaf {
            return None;
        }
        let level = stop.slot.table.level;
        let size = level.page_size()?;
        let base = F::output_addr(stop.raw, level.get()).as_usize();
        Some(Translation {
            hpa: HostPhysAddr::from_usize(base + (gpa - level.block(gpa))),
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
