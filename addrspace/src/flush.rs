//! The record of removed or weakened translations: a [`Flush`] says which guest-physical
//! range every vCPU must invalidate, and owns the frames its operations unlinked until
//! the caller confirms the invalidation.

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
#[derive(Debug, PartialEq, Eq)]
pub struct Flush {
    pub(crate) range: Option<GpaRange>,
    /// Identity of the table that issued it.
    pub(crate) table: u64,
    /// The operations whose unlinked frames it owns.
    pub(crate) ops: Ops,
}

/// Operation numbers of one table, owned by one token: one in the common case,
/// more once tokens are merged.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Ops {
    first: Option<u64>,
    more: Vec<u64>,
}

impl Ops {
    pub(crate) fn one(op: u64) -> Self {
        Self {
            first: Some(op),
            more: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }

    fn append(&mut self, other: Ops) {
        for op in other.iter() {
            match self.first {
                None => self.first = Some(op),
                Some(_) => self.more.push(op),
            }
        }
    }
}

impl Flush {
    /// The guest-physical range whose translations changed, or `None` when nothing
    /// changed and no invalidation is needed.
    #[inline]
    pub fn range(&self) -> Option<GpaRange> {
        self.range
    }

    /// Whether no invalidation is needed.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.range.is_none()
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
        self.range = match (self.range, other.range) {
            (Some(a), Some(b)) => Some(a.union(&b)),
            (a, b) => a.or(b),
        };
        self.ops.append(other.ops);
        Ok(())
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
