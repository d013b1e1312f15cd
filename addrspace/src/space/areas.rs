//! The area records of an address space ([`Areas`]), by start address: the first few
//! kept in place, sorted, more in a B-tree.
//!
//! Most spaces have a few areas (RAM, a device or two, a reserved hole): then a map
//! or an unmap finds, inserts and removes its area among at most [`INLINE`] records
//! without a heap allocation or a tree walk, where a `BTreeMap` allocates its first
//! node and walks and rebalances nodes on each change. Past [`INLINE`] the records
//! move to a `BTreeMap` for good, so many areas (a guest whose `protect` calls cut
//! its RAM into pieces) keep logarithmic searches.

use alloc::collections::BTreeMap;
use alloc::collections::btree_map;
use core::ops::{Bound, RangeBounds};

use super::{Area, Backend};
use crate::{GpaRange, MappingFlags, PAGE_SIZE};

/// Areas kept in place before the records move to a B-tree.
const INLINE: usize = 4;

/// What an unused place holds (never read).
const UNUSED: (usize, Area) = (
    0,
    Area {
        range: GpaRange::from_raw(0, PAGE_SIZE),
        flags: MappingFlags::empty(),
        backend: Backend::Reserved,
    },
);

/// Area records by start address (areas never overlap), with the part of
/// `BTreeMap`'s interface the space uses.
#[derive(Debug)]
pub(crate) enum Areas {
    /// Up to [`INLINE`] records, sorted by start, the first `len` in use.
    Few {
        len: usize,
        buf: [(usize, Area); INLINE],
    },
    Map(BTreeMap<usize, Area>),
}

impl Areas {
    pub(crate) const fn new() -> Self {
        Self::Few {
            len: 0,
            buf: [UNUSED; INLINE],
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few { len, .. } => *len,
            Self::Map(map) => map.len(),
        }
    }

    /// The records in address order.
    pub(crate) fn values(&self) -> impl DoubleEndedIterator<Item = &Area> + '_ {
        self.range(..).map(|(_, a)| a)
    }

    /// The records whose start lies in `range`, in address order.
    #[inline]
    pub(crate) fn range(&self, range: impl RangeBounds<usize>) -> Range<'_> {
        match self {
            Self::Few { len, buf } => {
                let few = &buf[..*len];
                let at = |pred: &dyn Fn(usize) -> bool| few.partition_point(|&(k, _)| pred(k));
                let lo = match range.start_bound() {
                    Bound::Included(&s) => at(&|k| k < s),
                    Bound::Excluded(&s) => at(&|k| k <= s),
                    Bound::Unbounded => 0,
                };
                let hi = match range.end_bound() {
                    Bound::Included(&e) => at(&|k| k <= e),
                    Bound::Excluded(&e) => at(&|k| k < e),
                    Bound::Unbounded => few.len(),
                };
                Range::Few(few[lo..hi.max(lo)].iter())
            }
            Self::Map(map) => Range::Map(map.range(range)),
        }
    }

    /// The record of the area starting at `start`.
    #[inline]
    pub(crate) fn get(&self, start: &usize) -> Option<&Area> {
        match self {
            Self::Few { len, buf } => buf[..*len].iter().find(|(k, _)| k == start).map(|(_, a)| a),
            Self::Map(map) => map.get(start),
        }
    }

    /// The record of the area starting at `start`, to change it in place (its start
    /// stays).
    #[inline]
    pub(crate) fn get_mut(&mut self, start: &usize) -> Option<&mut Area> {
        match self {
            Self::Few { len, buf } => buf[..*len]
                .iter_mut()
                .find(|(k, _)| k == start)
                .map(|(_, a)| a),
            Self::Map(map) => map.get_mut(start),
        }
    }

    /// Records `area` as starting at `start`; returns the record it replaces.
    #[inline]
    pub(crate) fn insert(&mut self, start: usize, area: Area) -> Option<Area> {
        match self {
            Self::Few { len, buf } => {
                let n = *len;
                let i = buf[..n].partition_point(|&(k, _)| k < start);
                if i < n && buf[i].0 == start {
                    return Some(core::mem::replace(&mut buf[i].1, area));
                }
                if n < INLINE {
                    for j in (i..n).rev() {
                        buf[j + 1] = buf[j];
                    }
                    buf[i] = (start, area);
                    *len = n + 1;
                    return None;
                }
                let mut map: BTreeMap<usize, Area> = buf.iter().copied().collect();
                map.insert(start, area);
                *self = Self::Map(map);
                None
            }
            Self::Map(map) => map.insert(start, area),
        }
    }

    /// Removes the record of the area starting at `start`.
    #[inline]
    pub(crate) fn remove(&mut self, start: &usize) -> Option<Area> {
        match self {
            Self::Few { len, buf } => {
                let n = *len;
                let i = buf[..n].iter().position(|(k, _)| k == start)?;
                let area = buf[i].1;
                // Shift the later records down by hand: at most three, and
                // `copy_within` would call `memmove` even for none.
                for j in i..n - 1 {
                    buf[j] = buf[j + 1];
                }
                *len = n - 1;
                Some(area)
            }
            Self::Map(map) => map.remove(start),
        }
    }
}

/// Iterator of [`Areas::range`].
pub(crate) enum Range<'a> {
    Few(core::slice::Iter<'a, (usize, Area)>),
    Map(btree_map::Range<'a, usize, Area>),
}

impl<'a> Iterator for Range<'a> {
    type Item = (&'a usize, &'a Area);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Few(it) => it.next().map(|(k, a)| (k, a)),
            Self::Map(it) => it.next(),
        }
    }
}

impl DoubleEndedIterator for Range<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Self::Few(it) => it.next_back().map(|(k, a)| (k, a)),
            Self::Map(it) => it.next_back(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(start: usize) -> Area {
        Area {
            range: GpaRange::from_raw(start, start + PAGE_SIZE),
            flags: MappingFlags::RW,
            backend: Backend::Reserved,
        }
    }

    /// The records answer as a `BTreeMap` does, in place and after they moved to
    /// the tree: inserts (new and replacing), removes, lookups and ranges of
    /// every bound kind, checked against a `BTreeMap` after each step.
    #[test]
    fn areas_answer_as_a_btree_map_does_in_place_and_beyond() {
        let keys = [5, 1, 9, 3, 7, 1, 11, 2, 6, 8, 0, 4, 10, 12, 3];
        for removes_until in [3, 4, 5, 15] {
            let mut areas = Areas::new();
            let mut model = BTreeMap::new();
            let mut ever_above = false;
            for (step, &k) in keys.iter().enumerate() {
                let start = k * PAGE_SIZE;
                if step % 4 == 3 && step < removes_until {
                    assert_eq!(areas.remove(&start), model.remove(&start), "step {step}");
                } else {
                    let a = area(start);
                    assert_eq!(
                        areas.insert(start, a),
                        model.insert(start, a),
                        "step {step}"
                    );
                }
                assert_eq!(areas.len(), model.len());
                // In place until more than INLINE at once, then in the tree for good.
                ever_above |= model.len() > INLINE;
                assert_eq!(matches!(areas, Areas::Map(_)), ever_above, "step {step}");
                let all: Vec<_> = areas.values().copied().collect();
                assert_eq!(all, model.values().copied().collect::<Vec<_>>());
                for probe in 0..14 {
                    let p = probe * PAGE_SIZE;
                    assert_eq!(areas.get(&p), model.get(&p));
                    let q = p + 3 * PAGE_SIZE;
                    let got: Vec<_> = areas.range(p..q).map(|(k, _)| *k).collect();
                    let want: Vec<_> = model.range(p..q).map(|(k, _)| *k).collect();
                    assert_eq!(got, want, "{p:#x}..{q:#x}");
                    assert_eq!(
                        areas.range(..=p).next_back().map(|(k, _)| *k),
                        model.range(..=p).next_back().map(|(k, _)| *k)
                    );
                    assert_eq!(
                        areas
                            .range((Bound::Excluded(p), Bound::Included(q)))
                            .count(),
                        model
                            .range((Bound::Excluded(p), Bound::Included(q)))
                            .count()
                    );
                }
            }
            if let Some(a) = areas.get_mut(&(7 * PAGE_SIZE)) {
                a.flags = MappingFlags::READ;
            }
            assert!(
                areas
                    .get(&(7 * PAGE_SIZE))
                    .is_none_or(|a| a.flags == MappingFlags::READ)
            );
        }
    }
}
