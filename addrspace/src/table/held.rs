//! What an operation unlinked, held until the caller completes its [`Flush`]: a
//! [`Record`] per operation, owned by exactly the tokens that name it.
//!
//! Unlinked tables are held whole, leaves and all: a subtree cut off the tree keeps
//! naming the guest frames its leaves map, so holding 1 GiB of 4 KiB pages costs one
//! record item, not one entry per page. Which of those leaves own their frame (guest
//! memory of allocated areas, as opposed to linear mappings of someone else's memory)
//! is kept as guest-physical ranges beside the items.
//!
//! [`Flush`]: crate::Flush

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::PageTable;
use super::index::{Level, Span, Table};
use crate::format::{DescKind, NestedFormat};
use crate::{FRAME_SIZE, FrameAllocator, HostPhysAddr};

/// One thing an operation unlinked, in two words: `count` consecutive allocation
/// units of `unit` frames each at `hpa` (the count shifted above the unit's level),
/// or the subtree under a table (the table's address with `level + 1` in its low 12
/// bits) covering guest-physical addresses from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Everything one operation unlinked.
pub(crate) struct Record {
    /// The operation's number, unique in its table.
    pub(crate) op: u64,
    pub(crate) items: Vec<Unlinked>,
    /// Guest-physical ranges (sorted, disjoint) whose leaves own their frames.
    pub(crate) owned: Vec<Span>,
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
pub(crate) fn push_frames(items: &mut Vec<Unlinked>, hpa: HostPhysAddr, level: Level) {
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
    debug_assert!(items.len() < items.capacity(), "record bound too small");
    items.push(Unlinked::frames(hpa, 1, level));
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// Gives back every frame of `record`.
    ///
    /// # Safety
    ///
    /// Nothing can reach the record's frames any more: every TLB that could hold a
    /// translation through them has been invalidated (or no vCPU uses the table).
    pub(crate) unsafe fn free_record(&self, record: Record) {
        self.record_items(&record, &mut |hpa, count| {
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
    fn record_items(&self, record: &Record, f: &mut impl FnMut(HostPhysAddr, usize)) {
        for item in &record.items {
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
        let mut items = Vec::with_capacity(8);
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
    fn ownership_by_range() {
        let owned = [Span::new(0x1000, 0x3000), Span::new(0x8000, 0x9000)];
        let got: Vec<bool> = [0, 0x1000, 0x2fff, 0x3000, 0x8000, 0x9000]
            .iter()
            .map(|&g| owns(&owned, g))
            .collect();
        assert_eq!(got, [false, true, true, false, true, false]);
    }
}
