//! Range walks that read: [`PageTable::scan`] (the one visitor of leaves and holes
//! behind the finders and leaf visitors), the guest-memory copy's own walk, and the
//! table visitor of the diagnostics.

use core::ops::ControlFlow;
use core::sync::atomic::Ordering;

use super::index::{Span, Table};
use super::query::Translation;
use super::{PageTable, gpa_of};
use crate::format::{DescKind, NestedFormat};
use crate::{FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, PAGE_SIZE, PageSize};

/// What [`PageTable::scan`] finds at each step.
pub(crate) enum Piece {
    /// A leaf descriptor `raw` of `table`'s level.
    Leaf { raw: u64, table: Table },
    /// No usable descriptor.
    Hole,
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// Visits `span` of the subtree at `table` in address order: `f(gpa, piece)` for
    /// each leaf or hole, `gpa` being where the piece starts inside the span, until
    /// `f` breaks.
    pub(crate) fn scan<B>(
        &self,
        table: Table,
        span: Span,
        f: &mut impl FnMut(usize, Piece) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        let level = table.level;
        let entries = self.entries(table);
        for chunk in span.chunks(level) {
            let raw = entries[Self::index(chunk.start, level)].load(Ordering::Acquire);
            match F::kind(raw, level.get()) {
                DescKind::Table if !level.is_page() => {
                    let sub = table.child(F::output_addr(raw, level.get()));
                    self.scan(sub, chunk.span(), f)?
                }
                DescKind::Leaf => f(chunk.start, Piece::Leaf { raw, table })?,
                // Invalid, or malformed (which no walker can use).
                _ => f(chunk.start, Piece::Hole)?,
            }
        }
        ControlFlow::Continue(())
    }

    /// The first address in `span` that the subtree at `table` translates
    /// (`mapped = true`) or does not translate (`mapped = false`).
    pub(crate) fn first_where(&self, table: Table, span: Span, mapped: bool) -> Option<usize> {
        let found = self.scan(table, span, &mut |gpa, piece| match piece {
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
            return Some(gpa_of(range.start().as_usize().max(Self::gpa_limit())));
        }
        let span = Span::new(range.start().as_usize(), range.end().as_usize());
        self.first_where(self.root_table(), span, false).map(gpa_of)
    }

    /// Visits every leaf as `(gpa of the leaf, translation of its first byte)` in
    /// address order.
    pub fn for_each_leaf(&self, f: impl FnMut(GuestPhysAddr, Translation)) {
        self.leaves(Span::new(0, Self::gpa_limit()), f);
    }

    /// Visits the leaves that overlap `range`, in address order.
    pub fn for_each_leaf_in(&self, range: &GpaRange, f: impl FnMut(GuestPhysAddr, Translation)) {
        let end = range.end().as_usize().min(Self::gpa_limit());
        self.leaves(Span::new(range.start().as_usize().min(end), end), f);
    }

    /// Visits every table of the tree, the root first, then depth-first in address
    /// order: `f(level, table, first guest-physical address it covers)`. The root
    /// is visited once (its [`NestedFormat::ROOT_FRAMES`] frames together). For
    /// diagnostics: which frames hold the tables and what each one maps.
    pub fn for_each_table(&self, mut f: impl FnMut(usize, HostPhysAddr, GuestPhysAddr)) {
        fn go<F: NestedFormat, A: FrameAllocator>(
            pt: &PageTable<F, A>,
            table: Table,
            base: usize,
            f: &mut impl FnMut(usize, HostPhysAddr, GuestPhysAddr),
        ) {
            f(table.level.get(), table.hpa, gpa_of(base));
            if table.level.is_page() {
                return;
            }
            for (i, e) in pt.entries(table).iter().enumerate() {
                let raw = e.load(Ordering::Acquire);
                if F::kind(raw, table.level.get()) == DescKind::Table {
                    let child = table.child(F::output_addr(raw, table.level.get()));
                    go(pt, child, base + i * table.level.span(), f);
                }
            }
        }
        go(self, self.root_table(), 0, &mut f);
    }

    fn leaves(&self, span: Span, mut f: impl FnMut(GuestPhysAddr, Translation)) {
        if span.start == span.end {
            return;
        }
        let _ = self.scan::<()>(self.root_table(), span, &mut |gpa, piece| {
            if let Piece::Leaf { raw, table } = piece
                && let Some(size) = table.level.page_size()
            {
                f(
                    gpa_of(table.level.block(gpa)),
                    Translation {
                        hpa: F::output_addr(raw, table.level.get()),
                        flags: F::leaf_flags(raw),
                        size,
                    },
                );
            }
            ControlFlow::Continue(())
        });
    }

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
        let limit = Self::gpa_limit();
        if end > limit {
            // Report what lies below the limit first, as a page-by-page walk would.
            if start < limit {
                self.leaves_in(self.root_table(), Span::new(start, limit), &mut f)?;
            }
            return Err(start.max(limit));
        }
        self.leaves_in(self.root_table(), Span::new(start, end), &mut f)
    }

    /// The guest-memory copy's walk. It is [`PageTable::scan`] written out: the
    /// copy is hot (`read_64k_vs_memcpy` in `cargo xtask bench`), and going through
    /// `scan`'s closures measured 1-2 % slower there.
    fn leaves_in(
        &self,
        table: Table,
        span: Span,
        f: &mut impl FnMut(usize, Translation),
    ) -> core::result::Result<(), usize> {
        let level = table.level;
        let entries = self.entries(table);
        if level.is_page() {
            // The last level, where a copy spends its time, as one loop over its
            // entries (one per 4 KiB): 35 fewer instructions a page than the
            // chunked walk (callgrind).
            let mut gpa = span.start;
            let last = Self::index(span.end - 1, level);
            for entry in &entries[Self::index(span.start, level)..=last] {
                let raw = entry.load(Ordering::Acquire);
                if F::kind(raw, 0) != DescKind::Leaf {
                    return Err(gpa);
                }
                f(
                    gpa,
                    Translation {
                        hpa: F::output_addr(raw, 0) + (gpa & (PAGE_SIZE - 1)),
                        flags: F::leaf_flags(raw),
                        size: PageSize::Size4K,
                    },
                );
                gpa = (gpa | (PAGE_SIZE - 1)) + 1;
            }
            return Ok(());
        }
        for chunk in span.chunks(level) {
            let raw = entries[Self::index(chunk.start, level)].load(Ordering::Acquire);
            match (F::kind(raw, level.get()), level.page_size()) {
                (DescKind::Table, _) if !level.is_page() => {
                    let sub = table.child(F::output_addr(raw, level.get()));
                    self.leaves_in(sub, chunk.span(), f)?
                }
                (DescKind::Leaf, Some(size)) => {
                    let base = F::output_addr(raw, level.get()).as_usize();
                    f(
                        chunk.start,
                        Translation {
                            hpa: HostPhysAddr::from_usize(
                                base + (chunk.start - level.block(chunk.start)),
                            ),
                            flags: F::leaf_flags(raw),
                            size,
                        },
                    );
                }
                _ => return Err(chunk.start),
            }
        }
        Ok(())
    }
}
