//! What an operation unlinked, held until the caller completes its [`Flush`]: a
//! [`Record`] per operation, owned by exactly the tokens that name it.
//!
//! Unlinked tables are held whole, leaves and all: a subtree cut off the tree keeps
//! naming the guest frames its leaves map, so holding 1 GiB of 4 KiB pages costs one
//! record item, not one entry per page. Which of those leaves own their frame (guest
//! memory of allocated areas, as opposed to linear mappings of someone else's memory)
//! is kept as guest-physical ranges beside the items.
//!
//! Most operations unlink one or a few items (an unmap of one huge leaf: the table
//! it empties) over at most one owned range, and most tables have at most one
//! flush pending: records keep that many in place ([`Few`]) and the table keeps its
//! first pending record in place ([`Held`]), so the common unmap and its flush
//! touch no heap. More spill to the heap, reserved before anything changes.
//!
//! [`Flush`]: crate::Flush

use alloc::collections::TryReserveError;
use alloc::vec::Vec;
use core::ops::Deref;
use core::sync::atomic::Ordering;

use super::PageTable;
use super::index::{Level, Span, Table};
use crate::format::{DescKind, NestedFormat};
use crate::{FRAME_SIZE, FrameAllocator, HostPhysAddr};

/// One thing an operation unlinked, in two words: `count` consecutive allocation
/// units of `unit` frames each at `hpa` (the count shifted above the unit's level),
/// or the subtree under a table (the table's address with `level + 1` in its low 12
/// bits) covering guest-physical addresses from `base`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Unlinked {
    head: usize,
    word: usize,
}

/// [`Unlinked`] unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// Frames cleared from a table that stays linked (or a table's own frame):
    /// `count` units of `level.span()` bytes at `hpa`, each freed on its own, since
    /// each may be (a part of) a different allocation.
    Frames {
        hpa: HostPhysAddr,
        count: usize,
        level: Level,
    },
    /// A table cut off the tree with everything below it.
    Subtree { table: Table, base: usize },
}

impl Unlinked {
    /// `count` units of `level.span()` bytes at `hpa`.
    pub(crate) fn frames(hpa: HostPhysAddr, count: usize, level: Level) -> Self {
        Self {
            head: hpa.as_usize(),
            word: count << UNIT_BITS | level.get(),
        }
    }

    pub(crate) fn subtree(table: Table, base: usize) -> Self {
        Self {
            head: table.hpa.as_usize() | (table.level.get() + 1),
            word: base,
        }
    }

    pub(crate) fn item(self) -> Item {
        match self.head & (FRAME_SIZE - 1) {
            0 => Item::Frames {
                hpa: HostPhysAddr::from_usize(self.head),
                count: self.word >> UNIT_BITS,
                level: Level::new(self.word & ((1 << UNIT_BITS) - 1)),
            },
            tag => Item::Subtree {
                table: Table {
                    hpa: HostPhysAddr::from_usize(self.head & !(FRAME_SIZE - 1)),
                    level: Level::new(tag - 1),
                },
                base: self.word,
            },
        }
    }
}

/// A list of up to `N` values kept in place, more on the heap: what an operation
/// records is one or a few values in the common case, which then cost no
/// allocation. Room is made ahead ([`Few::with_room`], [`Few::try_push`]), so the
/// walks that fill a list never allocate.
#[derive(Debug)]
pub(crate) enum Few<T, const N: usize> {
    Inline { len: usize, buf: [T; N] },
    Heap(Vec<T>),
}

impl<T: Copy + Default, const N: usize> Few<T, N> {
    /// Values kept in place.
    pub(crate) const INLINE: usize = N;

    pub(crate) fn new() -> Self {
        Self::Inline {
            len: 0,
            buf: [T::default(); N],
        }
    }

    /// An empty list with room for `n` values.
    pub(crate) fn with_room(n: usize) -> Result<Self, TryReserveError> {
        if n <= N {
            return Ok(Self::new());
        }
        let mut v = Vec::new();
        v.try_reserve_exact(n)?;
        Ok(Self::Heap(v))
    }

    /// Whether one more value fits without an allocation.
    pub(crate) fn has_room(&self) -> bool {
        match self {
            Self::Inline { len, .. } => *len < N,
            Self::Heap(v) => v.len() < v.capacity(),
        }
    }

    /// Appends `value` within the room made ahead: in place inline, the rest one
    /// call away.
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        debug_assert!(self.has_room(), "no room made for a record value");
        match self {
            Self::Inline { len, buf } if *len < N => {
                buf[*len] = value;
                *len += 1;
            }
            _ => self.push_beyond(value),
        }
    }

    /// [`Few::push`] past the values kept in place.
    #[inline(never)]
    fn push_beyond(&mut self, value: T) {
        match self {
            Self::Inline { buf, .. } => {
                let mut v = Vec::with_capacity(2 * N);
                v.extend_from_slice(buf);
                v.push(value);
                *self = Self::Heap(v);
            }
            Self::Heap(v) => v.push(value),
        }
    }

    /// Appends `value`, making room on the heap when there is none.
    pub(crate) fn try_push(&mut self, value: T) -> Result<(), TryReserveError> {
        match self {
            Self::Inline { len, .. } if *len == N => {
                let mut v = Vec::new();
                v.try_reserve(2 * N)?;
                v.extend_from_slice(self);
                *self = Self::Heap(v);
            }
            Self::Heap(v) => v.try_reserve(1)?,
            Self::Inline { .. } => {}
        }
        self.push(value);
        Ok(())
    }

    /// The last value.
    pub(crate) fn last_mut(&mut self) -> Option<&mut T> {
        match self {
            Self::Inline { len, buf } => buf[..*len].last_mut(),
            Self::Heap(v) => v.last_mut(),
        }
    }

    /// Gives back heap room beyond `slack` unused values.
    pub(crate) fn trim(&mut self, slack: usize) {
        if let Self::Heap(v) = self
            && v.capacity() - v.len() > slack
        {
            v.shrink_to_fit();
        }
    }
}

impl<T, const N: usize> Deref for Few<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Self::Inline { len, buf } => &buf[..*len],
            Self::Heap(v) => v,
        }
    }
}

/// Items of one record kept in place: one per level, enough for an unmap inside
/// one table of each level (one 4 KiB page, or one 1 GiB leaf and the table it
/// empties).
const INLINE_ITEMS: usize = super::MAX_LEVELS;

/// What one operation unlinked.
pub(crate) type Items = Few<Unlinked, INLINE_ITEMS>;

/// Guest-physical ranges (sorted, disjoint) whose leaves own their frames: one in
/// place (an unmap inside one allocated area).
pub(crate) type Spans = Few<Span, 1>;

/// Everything one operation unlinked.
#[derive(Debug)]
pub(crate) struct Record {
    /// The operation's number, unique in its table.
    pub(crate) op: u64,
    pub(crate) items: Items,
    /// Guest-physical ranges (sorted, disjoint) whose leaves own their frames.
    pub(crate) owned: Spans,
}

/// The records of a table whose flush has not completed, by operation number: the
/// first in place (the common case of one pending flush), the others on the heap
/// in increasing order.
#[derive(Debug, Default)]
pub(crate) struct Held {
    first: Option<Record>,
    more: Vec<Record>,
}

impl Held {
    /// Makes room for one more record.
    pub(crate) fn reserve(&mut self) -> Result<(), TryReserveError> {
        match self.first {
            None => Ok(()),
            Some(_) => self.more.try_reserve(1),
        }
    }

    /// Keeps `record`, whose operation number is above every held one's, in the
    /// room made by [`Held::reserve`] (or, without it, allocating).
    #[inline]
    pub(crate) fn push(&mut self, record: Record) {
        debug_assert!(self.iter().all(|r| r.op < record.op));
        match self.first {
            None => self.first = Some(record),
            Some(_) => self.more.push(record),
        }
    }

    /// The record of operation `op`, if held.
    #[inline]
    pub(crate) fn get(&self, op: u64) -> Option<&Record> {
        match &self.first {
            Some(r) if r.op == op => Some(r),
            _ => self
                .more
                .binary_search_by_key(&op, |r| r.op)
                .ok()
                .map(|i| &self.more[i]),
        }
    }

    /// Drops the record of operation `op` (held).
    #[inline]
    pub(crate) fn remove(&mut self, op: u64) {
        if self.first.as_ref().is_some_and(|r| r.op == op) {
            self.first = None;
        } else if let Ok(i) = self.more.binary_search_by_key(&op, |r| r.op) {
            self.more.remove(i);
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Record> + '_ {
        self.first.iter().chain(&self.more)
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Takes out every record.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = Record> + use<> {
        let more = core::mem::take(&mut self.more);
        self.first.take().into_iter().chain(more)
    }
}

/// Whether the leaf at `gpa` owns its frames.
pub(crate) fn owns(owned: &[Span], gpa: usize) -> bool {
    let i = owned.partition_point(|s| s.end <= gpa);
    owned.get(i).is_some_and(|s| s.start <= gpa)
}

/// Whether any range of `owned` overlaps `span`.
fn overlaps(owned: &[Span], span: Span) -> bool {
    let i = owned.partition_point(|s| s.end <= span.start);
    owned.get(i).is_some_and(|s| s.start < span.end)
}

/// Bits of an [`Unlinked`] frames item's second word that hold the unit's level.
const UNIT_BITS: u32 = 3;

/// Appends the frames of the leaf at `level` mapping `hpa` to `items`, as one more
/// unit of the last item when that item's units are of the same size and end at
/// `hpa`. Leaves that follow each other in host-physical memory may come from
/// separate allocations (every 4 KiB page of an eager area is one), so the flush
/// frees each unit with its own call: the item only saves record room.
pub(crate) fn push_frames(items: &mut Items, hpa: HostPhysAddr, level: Level) {
    if let Some(last) = items.last_mut()
        && let Item::Frames {
            hpa: h,
            count: c,
            level: l,
        } = last.item()
        && l == level
        && h.as_usize() + c * level.span() == hpa.as_usize()
    {
        *last = Unlinked::frames(h, c + 1, level);
        return;
    }
    items.push(Unlinked::frames(hpa, 1, level));
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// Gives back every frame of `record`.
    ///
    /// # Safety
    ///
    /// Nothing can reach the record's frames any more: every TLB that could hold a
    /// translation through them has been invalidated (or no vCPU uses the table).
    pub(crate) unsafe fn free_record(&self, record: &Record) {
        self.record_items(record, &mut |hpa, count| {
            // SAFETY: per the caller nothing reaches them; they were handed out by
            // this allocator (tables singly, guest memory by its area) and are held
            // only by this record.
            unsafe { self.alloc.dealloc_frames(hpa, count) }
        });
    }

    /// Frames (tables and owned guest frames) that `record` holds.
    pub(crate) fn record_frames(&self, record: &Record) -> usize {
        let mut n = 0;
        self.record_items(record, &mut |_, count| n += count);
        n
    }

    /// Calls `f(hpa, count)` for every run of frames `record` holds, one allocation
    /// unit (a leaf's frames or a table) at a time.
    #[inline]
    fn record_items(&self, record: &Record, f: &mut impl FnMut(HostPhysAddr, usize)) {
        for item in record.items.iter() {
            match item.item() {
                Item::Frames { hpa, count, level } => {
                    let frames = level.span() / FRAME_SIZE;
                    for i in 0..count {
                        f(hpa + i * level.span(), frames);
                    }
                }
                Item::Subtree { table, base } => self.subtree_frames(table, base, &record.owned, f),
            }
        }
    }

    /// Calls `f(hpa, count)` for the frames of each leaf inside `owned` of the
    /// subtree at `table` (which covers addresses from `base`), then for each of its
    /// tables, children before parents. Leaves are read only where `owned` overlaps
    /// the subtree.
    pub(crate) fn subtree_frames(
        &self,
        table: Table,
        base: usize,
        owned: &[Span],
        f: &mut impl FnMut(HostPhysAddr, usize),
    ) {
        let (level, span) = (table.level, table.level.span());
        let leaves = overlaps(owned, Span::new(base, base + (span << 9)));
        if leaves || !level.is_page() {
            for (i, e) in self.entries(table).iter().enumerate() {
                let raw = e.load(Ordering::Relaxed);
                let gpa = base + i * span;
                match F::kind(raw, level.get()) {
                    DescKind::Table if !level.is_page() => {
                        let child = table.child(F::output_addr(raw, level.get()));
                        self.subtree_frames(child, gpa, owned, f);
                    }
                    DescKind::Leaf if leaves && owns(owned, gpa) => {
                        f(F::output_addr(raw, level.get()), span / FRAME_SIZE)
                    }
                    _ => {}
                }
            }
        }
        f(table.hpa, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pack_into_two_words() {
        assert_eq!(core::mem::size_of::<Unlinked>(), 16);
        let t = Table {
            hpa: HostPhysAddr::from_usize(0x8_1234_5000),
            level: Level::new(3),
        };
        assert_eq!(
            Unlinked::subtree(t, 0x40_0000).item(),
            Item::Subtree {
                table: t,
                base: 0x40_0000
            }
        );
        let f = HostPhysAddr::from_usize(0x9000);
        assert_eq!(
            Unlinked::frames(f, 3, Level::new(2)).item(),
            Item::Frames {
                hpa: f,
                count: 3,
                level: Level::new(2)
            }
        );
    }

    #[test]
    fn frames_that_follow_share_an_item_and_free_unit_by_unit() {
        let mut items = Items::new();
        let h = HostPhysAddr::from_usize;
        let block = Level::new(1);
        push_frames(&mut items, h(0x1000), Level::PAGE);
        push_frames(&mut items, h(0x2000), Level::PAGE);
        push_frames(&mut items, h(0x3000), block);
        push_frames(&mut items, h(0x20_3000), block);
        push_frames(&mut items, h(0x8000), Level::PAGE);
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0].item(),
            Item::Frames {
                hpa: h(0x1000),
                count: 2,
                level: Level::PAGE
            }
        );
        assert_eq!(
            items[1].item(),
            Item::Frames {
                hpa: h(0x3000),
                count: 2,
                level: block
            }
        );
    }

    #[test]
    fn few_values_stay_in_place_and_more_spill_to_the_heap() {
        let mut few = Few::<u32, 2>::new();
        few.push(1);
        few.try_push(2).unwrap();
        assert!(matches!(few, Few::Inline { len: 2, .. }) && !few.has_room());
        few.try_push(3).unwrap();
        assert!(matches!(few, Few::Heap(_)));
        *few.last_mut().unwrap() += 1;
        assert_eq!(&*few, &[1, 2, 4]);
        assert!(matches!(
            Few::<u32, 2>::with_room(2).unwrap(),
            Few::Inline { .. }
        ));
        let mut big = Few::<u32, 2>::with_room(100).unwrap();
        assert!(matches!(&big, Few::Heap(v) if v.capacity() >= 100));
        big.push(7);
        big.trim(4);
        assert!(matches!(&big, Few::Heap(v) if v.capacity() < 100));
        assert_eq!(&*big, &[7]);
    }

    #[test]
    fn held_records_are_found_by_operation_whichever_is_in_place() {
        let record = |op| Record {
            op,
            items: Items::new(),
            owned: Spans::new(),
        };
        let mut held = Held::default();
        for op in 0..4 {
            held.reserve().unwrap();
            held.push(record(op));
        }
        assert_eq!(held.len(), 4);
        assert_eq!(held.get(0).map(|r| r.op), Some(0));
        held.remove(0);
        assert!(held.get(0).is_none());
        // The place of the first is free again: a later operation takes it.
        held.reserve().unwrap();
        held.push(record(4));
        assert_eq!(held.get(2).map(|r| r.op), Some(2));
        held.remove(2);
        let ops: Vec<u64> = held.iter().map(|r| r.op).collect();
        assert_eq!(ops, [4, 1, 3]);
        let all: Vec<u64> = held.take_all().map(|r| r.op).collect();
        assert_eq!(all, [4, 1, 3]);
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn ownership_by_range() {
        let owned = [Span::new(0x1000, 0x3000), Span::new(0x8000, 0x9000)];
        let got: Vec<bool> = [0, 0x1000, 0x2fff, 0x3000, 0x8000, 0x9000]
            .iter()
            .map(|&g| owns(&owned, g))
            .collect();
        assert_eq!(got, [false, true, true, false, true, false]);
    }
}
