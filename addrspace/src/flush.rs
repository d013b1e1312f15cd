//! The record of removed or weakened translations: a [`Flush`] says which guest-physical
//! range every vCPU must invalidate, and owns the frames its operations unlinked until
//! the caller confirms the invalidation.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use crate::GpaRange;

/// Translations were removed or changed: invalidate [`Flush::range`] in the TLBs of
/// every vCPU that uses this table, then hand the token back to `complete_flush` of
/// the same table or space, which releases exactly the frames (tables and guest
/// memory) that the token's operations unlinked, and no others.
///
/// Frames are held until then because a vCPU may still reach them through a cached
/// translation or walk: giving them back earlier would let a guest write into memory
/// the host reuses. A token names the table that issued it (every table has an
/// identity of its own, never reused), so a token given to another table, or to a
/// new table that got a dropped table's root frame, is refused. A token that is
/// dropped instead of completed keeps its frames held until the table is dropped.
#[must_use = "invalidate `range()` on every vCPU, then pass this to `complete_flush`"]
#[derive(PartialEq, Eq)]
pub struct Flush {
    /// The range to invalidate, `[start, end)`; `end` 0 when nothing changed (a
    /// range never ends at 0). Two words rather than an `Option<GpaRange>` (three):
    /// the token is returned through memory by every unmap and protect, and five
    /// words instead of nine took `unmap_1g_1g` from 1.28x to 1.15x the peer's time.
    start: usize,
    end: usize,
    /// Identity of the table that issued it.
    pub(crate) table: u64,
    /// The operations whose unlinked frames it owns.
    pub(crate) ops: Ops,
}

/// Operation numbers of one table, owned by one token: one in the common case,
/// more once tokens are merged.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Ops {
    /// The first operation number (numbers start at 1), 0 for none.
    first: u64,
    /// The others, once tokens are merged.
    #[expect(
        clippy::box_collection,
        reason = "one word, not three: a token stays five words (see `Flush::start`)"
    )]
    more: Option<Box<Vec<u64>>>,
}

impl Ops {
    /// Operation `op` (numbers start at 1), or none for 0.
    #[inline(always)]
    pub(crate) fn of(op: u64) -> Self {
        Self {
            first: op,
            more: None,
        }
    }

    /// The operation number when there is at most one (0: none), `None` for a
    /// merged token's several.
    #[inline(always)]
    pub(crate) fn single(&self) -> Option<u64> {
        self.more.is_none().then_some(self.first)
    }

    #[inline]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let first = (self.first != 0).then_some(self.first);
        first
            .into_iter()
            .chain(self.more.iter().flat_map(|m| m.iter().copied()))
    }

    fn append(&mut self, other: Ops) {
        for op in other.iter() {
            if self.first == 0 {
                self.first = op;
            } else {
                self.more.get_or_insert_default().push(op);
            }
        }
    }
}

impl Flush {
    /// The guest-physical range whose translations changed, or `None` when nothing
    /// changed and no invalidation is needed.
    #[inline]
    pub fn range(&self) -> Option<GpaRange> {
        (self.end != 0).then(|| GpaRange::from_raw(self.start, self.end))
    }

    /// A token for `range` of `table` owning the records of `ops`.
    #[inline(always)]
    pub(crate) fn new(range: Option<GpaRange>, table: u64, ops: Ops) -> Self {
        let mut flush = Self {
            start: 0,
            end: 0,
            table,
            ops,
        };
        flush.set_range(range);
        flush
    }

    #[inline(always)]
    fn set_range(&mut self, range: Option<GpaRange>) {
        (self.start, self.end) =
            range.map_or((0, 0), |r| (r.start().as_usize(), r.end().as_usize()));
    }

    /// Whether no invalidation is needed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Takes `other`, a token of the same table, into this one, which then covers
    /// both ranges (the smallest range containing them) and owns both sets of frames.
    ///
    /// Errors: [`MergeError`], which hands `other` back, when it comes from another
    /// table; this token is unchanged then.
    pub fn merge(&mut self, other: Flush) -> Result<(), MergeError> {
        if self.table != other.table {
            return Err(MergeError {
                table: self.table,
                other,
            });
        }
        self.set_range(match (self.range(), other.range()) {
            (Some(a), Some(b)) => Some(a.union(&b)),
            (a, b) => a.or(b),
        });
        self.ops.append(other.ops);
        Ok(())
    }
}

impl fmt::Debug for Flush {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flush")
            .field("range", &self.range())
            .field("table", &self.table)
            .field("ops", &self.ops)
            .finish()
    }
}

/// A flush token of another table cannot be merged into this one; here it is back.
#[derive(Debug, PartialEq, Eq)]
pub struct MergeError {
    /// Identity of the table of the token `merge` was called on.
    pub table: u64,
    /// The token given to it, unchanged.
    pub other: Flush,
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a flush token of table #{} cannot be merged into one of table #{}",
            self.other.table, self.table
        )
    }
}

impl core::error::Error for MergeError {}

// Every unmap and protect returns a token: keep it five words (see `Flush::start`).
const _: () = assert!(core::mem::size_of::<Flush>() <= 5 * core::mem::size_of::<u64>());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestPhysAddr;

    fn range(start: usize, end: usize) -> Option<GpaRange> {
        Some(
            GpaRange::from_bounds(
                GuestPhysAddr::from_usize(start),
                GuestPhysAddr::from_usize(end),
            )
            .unwrap(),
        )
    }

    /// The two-word range encoding: an empty token has no range, a merge covers both
    /// ranges (whichever is empty), and every operation survives the merges.
    #[test]
    fn merged_tokens_cover_both_ranges_and_own_every_operation() {
        let empty = Flush::new(None, 7, Ops::default());
        assert!(empty.is_empty() && empty.range().is_none());
        let mut a = Flush::new(None, 7, Ops::default());
        a.merge(Flush::new(range(0x3000, 0x5000), 7, Ops::of(2)))
            .unwrap();
        assert_eq!(a.range(), range(0x3000, 0x5000));
        a.merge(Flush::new(None, 7, Ops::default())).unwrap();
        assert_eq!(a.range(), range(0x3000, 0x5000));
        a.merge(Flush::new(range(0, 0x1000), 7, Ops::of(5)))
            .unwrap();
        a.merge(Flush::new(range(0x8000, 0x9000), 7, Ops::of(9)))
            .unwrap();
        assert_eq!(a.range(), range(0, 0x9000));
        assert!(!a.is_empty());
        assert_eq!(a.ops.iter().collect::<Vec<_>>(), [2, 5, 9]);
        let other = Flush::new(range(0, 0x1000), 8, Ops::of(1));
        assert_eq!(a.merge(other).unwrap_err().other.table, 8);
        assert_eq!(a.range(), range(0, 0x9000));
    }
}
