//! The record of removed or weakened translations: a [`Flush`] says which guest-physical
//! range every vCPU must invalidate, and holds back the frames freed by the change until
//! the caller confirms the invalidation.

use crate::GpaRange;

/// Translations were removed or changed: invalidate [`Flush::range`] in the TLBs of
/// every vCPU that uses this table, then hand the token back to
/// `complete_flush` of the same table or space, which releases the frames (tables and
/// guest memory) that the change freed.
///
/// Frames are held until then because a vCPU may still reach them through a cached
/// translation or walk: giving them back earlier would let a guest write into memory
/// the host reuses. A token that is dropped instead of completed only delays the
/// release to the next completed token or to the drop of the table.
#[must_use = "invalidate `range()` on every vCPU, then pass this to `complete_flush`"]
#[derive(Debug, PartialEq, Eq)]
pub struct Flush {
    pub(crate) range: Option<GpaRange>,
    /// Sequence number one past the last deferred frame this token covers.
    pub(crate) upto: u64,
    /// Identity of the table that issued it (its root address).
    pub(crate) owner: usize,
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

    /// Combines two tokens of the same table into one that covers both ranges (the
    /// smallest range containing them) and both sets of held frames.
    pub fn merge(self, other: Flush) -> Flush {
        let range = match (self.range, other.range) {
            (Some(a), Some(b)) => Some(a.union(&b)),
            (a, b) => a.or(b),
        };
        Flush {
            range,
            upto: self.upto.max(other.upto),
            owner: self.owner,
        }
    }
}
