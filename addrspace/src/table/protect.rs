//! Changing access rights: the leaves cut at the two ends whose flags change are split
//! first (`split.rs`); one walk ([`PageTable::reprotect`]) then rewrites whole leaves
//! without taking a frame. A leaf's memory type never changes.

use core::ops::ControlFlow;
use core::sync::atomic::Ordering;

use super::index::{Span, Table};
use super::scan::Piece;
use super::{PageTable, gpa_of, span_of};
use crate::flush::Ops;
use crate::format::{DescKind, NestedFormat};
use crate::{Error, Flush, FrameAllocator, GpaRange, GuestPhysAddr, MappingFlags, Result};

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// Sets the access rights (READ, WRITE, EXECUTE) of every translation in `[gpa,
    /// gpa + size)` to those of `flags`, splitting huge leaves the range cuts (unless
    /// their flags already match). Each leaf keeps its memory type: `flags` names
    /// none (then every leaf keeps its own) or the one every leaf has.
    ///
    /// Errors: bad input or flags, [`Error::NotMapped`] with the first address of a
    /// hole, [`Error::MemoryType`] at the first leaf of another memory type,
    /// [`Error::NoMemory`]. On error nothing changed. The flush covers the range when
    /// any descriptor changed.
    pub fn protect(
        &mut self,
        gpa: GuestPhysAddr,
        size: usize,
        flags: MappingFlags,
    ) -> Result<Flush> {
        let range = Self::check_range(gpa, size)?;
        Self::check_flags(flags)?;
        if let Some(hole) = self.find_hole(&range) {
            return Err(Error::NotMapped { gpa: hole });
        }
        self.protect_span(&range, flags)
    }

    /// [`PageTable::protect`] with holes allowed; `range` checked.
    pub(crate) fn protect_span(&mut self, range: &GpaRange, flags: MappingFlags) -> Result<Flush> {
        let span = span_of(range);
        let flags = flags.nested();
        let access = flags.access();
        self.check_memory_types(span, flags)?;
        let needs = |raw: u64| {
            let old = F::leaf_flags(raw);
            old.memory_type() | access != old
        };
        let bounds = [span.start, span.end];
        let mut reserve = self.reserve(self.plan_splits(bounds, &needs))?;
        let split = self.split_at(bounds, &needs, &mut reserve);
        self.release(reserve);
        split?;
        let changed = self.reprotect(self.root_table(), span, access);
        Ok(self.flush(changed.then_some(*range), Ops::default()))
    }

    /// Refuses a memory type in `flags` that differs from a leaf's in `span`, and
    /// access rights the format cannot encode with a memory type present there.
    fn check_memory_types(&self, span: Span, flags: MappingFlags) -> Result<()> {
        let requested = flags.memory_type();
        let mut seen = [false; 3];
        let found = self.scan(self.root_table(), span, &mut |gpa, piece| {
            let Piece::Leaf { raw, .. } = piece else {
                return ControlFlow::Continue(());
            };
            let mapped = F::leaf_flags(raw);
            let kind = mapped.memory_type();
            if !requested.is_empty() && kind != requested {
                return ControlFlow::Break(Error::MemoryType {
                    gpa: gpa_of(gpa),
                    mapped,
                    requested: flags,
                });
            }
            seen[usize::from(kind.contains(MappingFlags::DEVICE))
                + 2 * usize::from(kind.contains(MappingFlags::UNCACHED))] = true;
            ControlFlow::Continue(())
        });
        if let ControlFlow::Break(e) = found {
            return Err(e);
        }
        let types = [
            MappingFlags::empty(),
            MappingFlags::DEVICE,
            MappingFlags::UNCACHED,
        ];
        for (kind, _) in types.iter().zip(seen).filter(|(_, s)| *s) {
            Self::check_flags(*kind | flags.access())?;
        }
        Ok(())
    }

    /// Gives every whole leaf of `span` in `table` the access rights `access`, keeping
    /// its memory type. No leaf whose flags change straddles an end of `span`.
    /// Returns whether any descriptor changed.
    fn reprotect(&self, table: Table, span: Span, access: MappingFlags) -> bool {
        let level = table.level;
        let mut changed = false;
        let entries = self.entries(table);
        for chunk in span.chunks(level) {
            let entry = &entries[Self::index(chunk.start, level)];
            let raw = entry.load(Ordering::Acquire);
            match F::kind(raw, level.get()) {
                DescKind::Leaf => {
                    let old = F::leaf_flags(raw);
                    let new = old.memory_type() | access;
                    if new == old {
                        continue;
                    }
                    if !chunk.whole {
                        debug_assert!(false, "a cut leaf at {:#x} was not split", chunk.start);
                        continue;
                    }
                    let hpa = F::output_addr(raw, level.get());
                    entry.store(F::leaf(hpa, new, level.get()), Ordering::Release);
                    changed = true;
                }
                DescKind::Table if !level.is_page() => {
                    let sub = table.child(F::output_addr(raw, level.get()));
                    changed |= self.reprotect(sub, chunk.span(), access);
                }
                _ => {}
            }
        }
        changed
    }
}
