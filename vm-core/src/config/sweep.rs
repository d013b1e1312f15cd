//! Overlap detection among many ranges in O(n log n): sort by start, then one sweep
//! that remembers the range reaching furthest so far. Shared by the memory-region and
//! device checks, so validation of n entries never compares every pair.

use alloc::vec::Vec;

/// A `[start, end)` interval tagged with its entry's index (in file order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span<K> {
    pub start: K,
    pub end: K,
    pub index: usize,
}

/// Sorts `spans` by start and returns the first overlapping pair the sweep meets for
/// which `conflict(earlier_in_sweep, later_in_sweep)` holds, as (the pair, the first
/// common point). Pairs for which `conflict` is false may overlap (pass-through ranges
/// with the same GPA→HPA offset): the sweep stays correct because overlap among
/// compatible spans is transitive for the `conflict` relations used here (see
/// `validate.rs`).
///
/// Every span that overlaps an earlier one overlaps the one reaching furthest, so one
/// comparison per span suffices.
pub(crate) fn first_conflict<K: Ord + Copy>(
    spans: &mut [Span<K>],
    mut conflict: impl FnMut(&Span<K>, &Span<K>) -> bool,
) -> Option<(Span<K>, Span<K>, K)> {
    spans.sort_unstable_by_key(|s| (s.start, s.index));
    let mut furthest: Option<Span<K>> = None;
    for s in spans.iter() {
        if let Some(f) = furthest {
            if s.start < f.end && conflict(&f, s) {
                return Some((f, *s, s.start));
            }
            if s.end > f.end {
                furthest = Some(*s);
            }
        } else {
            furthest = Some(*s);
        }
    }
    None
}

/// Sorted `[start, end)` ranges that do not overlap, for "which one contains x" in
/// O(log n).
pub(crate) struct Disjoint<K> {
    spans: Vec<Span<K>>,
}

impl<K: Ord + Copy> Disjoint<K> {
    /// `spans` must not overlap (checked by [`first_conflict`] first).
    pub(crate) fn new(mut spans: Vec<Span<K>>) -> Self {
        spans.sort_unstable_by_key(|s| s.start);
        Self { spans }
    }

    /// The span containing `x`.
    pub(crate) fn containing(&self, x: K) -> Option<&Span<K>> {
        let i = self.spans.partition_point(|s| s.start <= x);
        let s = self.spans.get(i.checked_sub(1)?)?;
        (x < s.end).then_some(s)
    }

    /// The first span (lowest start) overlapping `[start, end)`, with the first common
    /// point.
    pub(crate) fn overlapping(&self, start: K, end: K) -> Option<(&Span<K>, K)> {
        // Spans are disjoint and sorted, so their ends are sorted too.
        let i = self.spans.partition_point(|s| s.end <= start);
        let s = self.spans.get(i)?;
        (s.start < end).then(|| (s, s.start.max(start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use core::cmp::Ordering;

    /// A key that counts how often it is compared.
    #[derive(Clone, Copy, Debug)]
    struct Counted<'a>(u64, &'a Cell<u64>);

    impl PartialEq for Counted<'_> {
        fn eq(&self, o: &Self) -> bool {
            self.cmp(o) == Ordering::Equal
        }
    }
    impl Eq for Counted<'_> {}
    impl PartialOrd for Counted<'_> {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Counted<'_> {
        fn cmp(&self, o: &Self) -> Ordering {
            self.1.set(self.1.get() + 1);
            self.0.cmp(&o.0)
        }
    }

    /// Issue 10: validating 20,000 regions took up to 1.2 s because every region was
    /// compared with every earlier one (n²/2 = 2·10⁸ comparisons). The sweep needs
    /// O(n log n): here at most 4·n·log₂n key comparisons, for disjoint ranges given
    /// in reverse order and for ranges that all overlap a long first one.
    #[test]
    fn overlap_search_is_not_quadratic_in_the_number_of_ranges() {
        let n: u64 = 20_000;
        let bound = 4 * n * u64::from(n.ilog2() + 1);
        let count = Cell::new(0);
        let k = |v| Counted(v, &count);
        let mut disjoint: Vec<_> = (0..n)
            .rev()
            .map(|i| Span {
                start: k(i * 0x2000),
                end: k(i * 0x2000 + 0x1000),
                index: addrspace::usize_of(i),
            })
            .collect();
        assert!(first_conflict(&mut disjoint, |_, _| true).is_none());
        assert!(count.get() <= bound, "{} comparisons", count.get());
        count.set(0);
        // One long range covering everything, then n short ones inside it that do
        // not conflict with it (compatible pass-through ranges).
        let mut nested: Vec<_> = core::iter::once(Span {
            start: k(0),
            end: k(n * 0x1000 + 1),
            index: 0,
        })
        .chain((1..n).map(|i| Span {
            start: k(i * 0x1000),
            end: k(i * 0x1000 + 0x800),
            index: addrspace::usize_of(i),
        }))
        .collect();
        assert!(first_conflict(&mut nested, |_, _| false).is_none());
        assert!(count.get() <= bound, "{} comparisons", count.get());
    }

    #[test]
    fn the_sweep_finds_an_overlap_whatever_the_order() {
        let s = |start, end, index| Span { start, end, index };
        let mut spans = [s(50, 60, 0), s(0, 100, 1), s(200, 300, 2)];
        let (a, b, at) = first_conflict(&mut spans, |_, _| true).unwrap();
        assert_eq!((a.index, b.index, at), (1, 0, 50));
        // A conflict hidden behind a compatible pair: [0] and [1] may overlap, [2]
        // overlaps [0] only through the furthest-reaching [1].
        let mut spans = [s(0, 10, 0), s(5, 40, 1), s(20, 30, 2)];
        let (a, b, at) = first_conflict(&mut spans, |a, b| a.index == 2 || b.index == 2).unwrap();
        assert_eq!((a.index, b.index, at), (1, 2, 20));
        let d = Disjoint::new(vec![s(30, 40, 0), s(0, 10, 1)]);
        assert_eq!(d.containing(35).map(|s| s.index), Some(0));
        assert_eq!(d.containing(10), None);
        assert_eq!(
            d.overlapping(5, 35).map(|(s, at)| (s.index, at)),
            Some((1, 5))
        );
        assert_eq!(d.overlapping(10, 30), None);
        assert_eq!(
            d.overlapping(39, 50).map(|(s, at)| (s.index, at)),
            Some((0, 39))
        );
    }
}
