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

/// One thing an operation unlinked, in two words: `count` frames at `hpa`, or the
/// subtree under a table (the table's address with `level + 1` in its low 12 bits)
/// covering guest-physical addresses from `base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unlinked {
    head: usize,
    word: usize,
}

/// [`Unlinked`] unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// Guest frames cleared from a table that stays linked.
    Frames { hpa: HostPhysAddr, count: usize },
    /// A table cut off the tree with everything below it.
    Subtree { table: Table, base: usize },
}

impl Unlinked {
    pub(crate) fn frames(hpa: HostPhysAddr, count: usize) -> Self {
        Self {
            head: hpa.as_usize(),
            word: count,
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
                count: self.word,
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

/// Appends frames to `items`, merging them into the last item when they follow it.
pub(crate) fn push_frames(items: &mut Vec<Unlinked>, hpa: HostPhysAddr, count: usize) {
    if let Some(last) = items.last_mut()
        && let Item::Frames { hpa: h, count: c } = last.item()
        && h.as_usize() + c * FRAME_SIZE == hpa.as_usize()
    {
        *last = Unlinked::frames(h, c + count);
        return;
    }
    debug_assert!(items.len() < items.capacity(), "record bound too small");
    items.push(Unlinked::frames(hpa, count));
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// Gives back every frame of `record`.
    ///
    /// # Safety
    ///
    /// Nothing can reach the record's frames any more: every TLB that could hold a
    /// translation through them has been invalidated (or no vCPU uses the table).
    pub(crate) unsafe fn free_record(&self, record: Record) {
        for item in &record.items {
            match item.item() {
                // SAFETY: per the caller nothing reaches them; they were handed out
                // by this allocator (tables singly, guest memory by its area).
                Item::Frames { hpa, count } => unsafe { self.alloc.dealloc_frames(hpa, count) },
                // SAFETY: as above.
                Item::Subtree { table, base } => unsafe {
                    self.free_subtree(table, base, &record.owned)
                },
            }
        }
    }

    /// Gives back the tables of the subtree at `table` (covering addresses from
    /// `base`) and the frames of its leaves inside `owned`.
    ///
    /// # Safety
    ///
    /// As [`PageTable::free_record`]: the subtree is unlinked and unreachable.
    unsafe fn free_subtree(&self, table: Table, base: usize, owned: &[Span]) {
        let span = table.level.span();
        if !overlaps(owned, Span::new(base, base + (span << 9))) {
            // No leaf below owns a frame: only the tables go back (their leaves
            // are not read).
            // SAFETY: as above.
            return unsafe { self.free_tables(table) };
        }
        for (i, e) in self.entries(table).iter().enumerate() {
            let raw = e.load(Ordering::Relaxed);
            let gpa = base + i * span;
            match F::kind(raw, table.level.get()) {
                DescKind::Table if !table.level.is_page() => {
                    let child = table.child(F::output_addr(raw, table.level.get()));
                    // SAFETY: part of the unreachable subtree.
                    unsafe { self.free_subtree(child, gpa, owned) }
                }
                DescKind::Leaf if owns(owned, gpa) => {
                    let hpa = F::output_addr(raw, table.level.get());
                    // SAFETY: a guest frame (or block) of an allocated area, no longer
                    // reachable.
                    unsafe { self.alloc.dealloc_frames(hpa, span / FRAME_SIZE) }
                }
                _ => {}
            }
        }
        // SAFETY: a table frame of this tree, allocated singly, now unreachable.
        unsafe { self.alloc.dealloc_frames(table.hpa, 1) };
    }

    /// Frames (tables and owned guest frames) that `record` holds.
    pub(crate) fn record_frames(&self, record: &Record) -> usize {
        record
            .items
            .iter()
            .map(|item| match item.item() {
                Item::Frames { count, .. } => count,
                Item::Subtree { table, base } => self.subtree_frames(table, base, &record.owned),
            })
            .sum()
    }

    fn subtree_frames(&self, table: Table, base: usize, owned: &[Span]) -> usize {
        let span = table.level.span();
        if !overlaps(owned, Span::new(base, base + (span << 9))) {
            return self.count_tables(table);
        }
        let mut n = 1;
        for (i, e) in self.entries(table).iter().enumerate() {
            let raw = e.load(Ordering::Relaxed);
            let gpa = base + i * span;
            match F::kind(raw, table.level.get()) {
                DescKind::Table if !table.level.is_page() => {
                    let child = table.child(F::output_addr(raw, table.level.get()));
                    n += self.subtree_frames(child, gpa, owned);
                }
                DescKind::Leaf if owns(owned, gpa) => n += span / FRAME_SIZE,
                _ => {}
            }
        }
        n
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
            Unlinked::frames(f, 3).item(),
            Item::Frames { hpa: f, count: 3 }
        );
    }

    #[test]
    fn frames_that_follow_merge() {
        let mut items = Vec::with_capacity(4);
        let h = HostPhysAddr::from_usize;
        push_frames(&mut items, h(0x1000), 1);
        push_frames(&mut items, h(0x2000), 2);
        push_frames(&mut items, h(0x8000), 1);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].item(),
            Item::Frames {
                hpa: h(0x1000),
                count: 3
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
