//! The small types the engine's walks pass around instead of raw `usize`s: a
//! [`Level`] of the tree, a [`Table`] (a frame and its level), a [`Slot`] (one entry of
//! one table) and a [`Span`] of guest-physical addresses cut into [`Chunk`]s, one per
//! entry of a level.

use crate::{HostPhysAddr, PageSize};

/// An engine level: 0 holds 4 KiB pages, 1 2 MiB blocks, 2 1 GiB blocks, and so on up
/// to the root at `F::LEVELS - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Level(usize);

impl Level {
    /// The 4 KiB level.
    pub(crate) const PAGE: Self = Self(0);

    #[inline(always)]
    pub(crate) const fn new(level: usize) -> Self {
        Self(level)
    }

    /// The level as the formats number it.
    #[inline(always)]
    pub(crate) const fn get(self) -> usize {
        self.0
    }

    /// The level below (towards the 4 KiB pages). Never called on [`Level::PAGE`].
    #[inline(always)]
    pub(crate) const fn below(self) -> Self {
        Self(self.0 - 1)
    }

    /// Whether this is the 4 KiB level.
    #[inline(always)]
    pub(crate) const fn is_page(self) -> bool {
        self.0 == 0
    }

    /// Bytes one entry of this level translates.
    #[inline(always)]
    pub(crate) const fn span(self) -> usize {
        1 << (12 + 9 * self.0)
    }

    /// The first address of the entry's block containing `gpa`.
    #[inline(always)]
    pub(crate) const fn block(self, gpa: usize) -> usize {
        gpa & !(self.span() - 1)
    }

    /// Whether `gpa` is on an entry boundary of this level.
    #[inline(always)]
    pub(crate) const fn aligned(self, gpa: usize) -> bool {
        gpa & (self.span() - 1) == 0
    }

    /// The size of a leaf at this level, if leaves exist here.
    #[inline(always)]
    pub(crate) const fn page_size(self) -> Option<PageSize> {
        PageSize::at_level(self.0)
    }
}

/// A table of the tree: its frame and the level of its entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) hpa: HostPhysAddr,
    pub(crate) level: Level,
}

impl Table {
    /// The table one level down at `hpa`.
    #[inline(always)]
    pub(crate) const fn child(self, hpa: HostPhysAddr) -> Self {
        Self {
            hpa,
            level: self.level.below(),
        }
    }
}

/// One entry of one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) table: Table,
    pub(crate) index: usize,
}

/// A half-open guest-physical interval `[start, end)` inside an operation's range
/// (4 KiB-aligned, below the format's GPA limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Span {
    #[inline(always)]
    pub(crate) const fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Bytes in the span.
    #[inline(always)]
    pub(crate) const fn len(self) -> usize {
        self.end - self.start
    }

    /// The pieces of the span covered by each entry of a table at `level`, in order.
    #[inline(always)]
    pub(crate) fn chunks(self, level: Level) -> Chunks {
        Chunks {
            cur: self.start,
            end: self.end,
            span: level.span(),
        }
    }
}

/// The part of a [`Span`] one entry covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// First address of the part.
    pub(crate) start: usize,
    /// One past its last address.
    pub(crate) end: usize,
    /// Whether the part is the entry's whole block.
    pub(crate) whole: bool,
}

impl Chunk {
    #[inline(always)]
    pub(crate) const fn span(self) -> Span {
        Span::new(self.start, self.end)
    }
}

/// Iterator of [`Span::chunks`].
pub(crate) struct Chunks {
    cur: usize,
    end: usize,
    span: usize,
}

impl Iterator for Chunks {
    type Item = Chunk;

    #[inline(always)]
    fn next(&mut self) -> Option<Chunk> {
        if self.cur >= self.end {
            return None;
        }
        let block = self.cur & !(self.span - 1);
        let end = (block + self.span).min(self.end);
        let chunk = Chunk {
            start: self.cur,
            end,
            whole: self.cur == block && end == block + self.span,
        };
        self.cur = end;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_at_entry_boundaries() {
        let l1 = Level::new(1);
        let c: Vec<_> = Span::new(0x1f_f000, 0x60_1000).chunks(l1).collect();
        assert_eq!(
            c,
            [
                Chunk {
                    start: 0x1f_f000,
                    end: 0x20_0000,
                    whole: false
                },
                Chunk {
                    start: 0x20_0000,
                    end: 0x40_0000,
                    whole: true
                },
                Chunk {
                    start: 0x40_0000,
                    end: 0x60_0000,
                    whole: true
                },
                Chunk {
                    start: 0x60_0000,
                    end: 0x60_1000,
                    whole: false
                },
            ]
        );
        assert_eq!(l1.block(0x3f_ffff), 0x20_0000);
        assert!(l1.aligned(0x40_0000) && !l1.aligned(0x40_1000));
        assert_eq!(Level::new(2).span(), 1 << 30);
    }
}
