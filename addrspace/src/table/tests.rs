//! Unit tests of the engine that need its internals.

use super::*;
use crate::testing::{PoolAllocator, StrictAllocator};
use crate::{ArmStage2Ipa40, DescKind, Ept, PageSize, Sv39x4, WalkEnd};

const M2: usize = 0x20_0000;
const G1: usize = 0x4000_0000;

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

fn hpa(v: usize) -> HostPhysAddr {
    HostPhysAddr::from_usize(v)
}

/// A pool of `frames` frames that checks every free names frames of one allocation.
fn strict(frames: usize) -> StrictAllocator {
    StrictAllocator::new(PoolAllocator::new(frames))
}

/// Every frame of `pool` came back, each free within one allocation.
fn assert_all_back(pool: &StrictAllocator) {
    assert_eq!(pool.pool().in_use(), 0);
    assert_eq!(pool.violations(), Vec::<String>::new());
}

fn leaf_sizes<F: NestedFormat>(pt: &PageTable<F, &PoolAllocator>) -> [usize; 3] {
    let mut n = [0; 3];
    pt.for_each_leaf(|_, t| n[t.size.level()] += 1);
    n
}

/// `map` picks the largest leaf that GPA, HPA and the remaining size allow.
#[test]
fn largest_leaves() {
    let pool = PoolAllocator::new(64);
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // GPA and HPA 1G-aligned, 1G + 2M + 4K: one of each.
    // SAFETY: addresses are only numbers in this test.
    unsafe { pt.map(gpa(G1), hpa(2 * G1), G1 + M2 + 0x1000, MappingFlags::RW) }.unwrap();
    assert_eq!(leaf_sizes(&pt), [1, 1, 1]);
    // HPA only 2M-aligned: 2M leaves where 1G would fit the GPA.
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // SAFETY: as above.
    unsafe { pt.map(gpa(G1), hpa(2 * G1 + M2), G1, MappingFlags::RW) }.unwrap();
    assert_eq!(leaf_sizes(&pt), [0, 512, 0]);
    // HPA 4K-offset: 4K pages only.
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // SAFETY: as above.
    unsafe { pt.map(gpa(G1), hpa(2 * G1 + 0x1000), 2 * M2, MappingFlags::RW) }.unwrap();
    assert_eq!(leaf_sizes(&pt), [1024, 0, 0]);
    assert_eq!(pt.table_frames(), 1 + 1 + 1 + 2);
}

/// A walk-cache hit skips the check against the GPA limit (the cache names tables
/// of regions below it only): addresses at and beyond the limit whose region shares
/// a cached region's slot, or whose region's low 12 bits equal its tag, still
/// translate to nothing.
#[test]
fn query_beyond_the_limit_never_hits_the_walk_cache() {
    let pool = PoolAllocator::new(64);
    let mut pt = PageTable::<ArmStage2Ipa40, _>::new(&pool).unwrap();
    // SAFETY: addresses are only numbers in this test.
    unsafe { pt.map(gpa(0x1000), hpa(0x1000), 0x1000, MappingFlags::RW) }.unwrap();
    assert_eq!(pt.query(gpa(0x1234)).map(|t| t.hpa), Some(hpa(0x1234)));
    // Slot 0, tag 1 cached. Region 1024 (the limit), 4096 (tag bits 1) and beyond.
    for far in [1 << 40, 1 << 42, 1 << 44, usize::MAX & !0xffff] {
        assert_eq!(pt.query_cached(gpa(far + 0x1234)), Some(None), "{far:#x}");
        assert_eq!(pt.query(gpa(far + 0x234)), None, "{far:#x}");
    }
    // Below the limit, a region 4096 regions on shares slot and tag bits: a miss.
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // SAFETY: as above.
    unsafe { pt.map(gpa(0x1000), hpa(0x1000), 0x1000, MappingFlags::RW) }.unwrap();
    assert!(pt.query(gpa(0x1000)).is_some());
    assert_eq!(pt.query_cached(gpa((1 << 42) + 0x1000)), None);
    assert_eq!(pt.query(gpa((1 << 42) + 0x1000)), None);
    assert_eq!(pt.query(gpa((1 << 48) + 0x1000)), None);
}

/// The pool names its linear offset, which is `phys_to_virt` for every frame; the
/// allocators that forward pass it on; a table reaches its tables through it.
#[test]
fn linear_offset_is_phys_to_virt_and_forwarded() {
    let pool = PoolAllocator::new(16);
    let off = pool.linear_offset().unwrap();
    let all = pool.alloc_frames(16, 1).unwrap();
    for i in 0..16 {
        let frame = all + i * crate::FRAME_SIZE;
        let virt = pool.phys_to_virt(frame).as_usize();
        assert_eq!(virt, frame.as_usize().wrapping_add(off));
    }
    // SAFETY: the frames were just allocated and are not used.
    unsafe { pool.dealloc_frames(all, 16) };
    assert_eq!(FrameAllocator::linear_offset(&&pool), Some(off));
    let shared = alloc::sync::Arc::new(PoolAllocator::new(4));
    assert_eq!(shared.linear_offset(), (*shared).linear_offset());
    let strict = strict(4);
    assert_eq!(strict.linear_offset(), strict.pool().linear_offset());
    assert!(strict.linear_offset().is_some());
    let pt = PageTable::<Ept, _>::new(&pool).unwrap();
    assert_eq!(pt.linear, Some(off));
}

/// A pool whose `linear_offset` is one frame off its `phys_to_virt`: a broken
/// `unsafe impl` (safe code cannot make one).
struct WrongOffset(PoolAllocator);

// SAFETY: every call but `linear_offset` is the pool's; `linear_offset` breaks the
// contract on purpose, for the table to refuse it.
unsafe impl FrameAllocator for WrongOffset {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        self.0.alloc_frames(count, align_frames)
    }
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller's promise is the pool's.
        unsafe { self.0.dealloc_frames(hpa, count) }
    }
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> crate::HostVirtAddr {
        self.0.phys_to_virt(hpa)
    }
    fn linear_offset(&self) -> Option<usize> {
        Some(self.0.linear_offset()?.wrapping_add(crate::FRAME_SIZE))
    }
}

/// A table checks the allocator's linear offset against `phys_to_virt` of its root
/// and, when they disagree, reaches its tables through `phys_to_virt` (with the
/// offset, this map would write next to its tables and the query read there).
#[test]
fn a_linear_offset_that_disagrees_with_phys_to_virt_is_not_used() {
    let frames = WrongOffset(PoolAllocator::new(16));
    let mut pt = PageTable::<Ept, _>::new(&frames).unwrap();
    assert_eq!(pt.linear, None);
    // SAFETY: addresses are only numbers in this test.
    unsafe { pt.map(gpa(G1), hpa(0x5000), 0x1000, MappingFlags::RW) }.unwrap();
    assert_eq!(pt.query(gpa(G1 + 0x123)).map(|t| t.hpa), Some(hpa(0x5123)));
    assert!(pt.audit().is_ok());
}

/// The walk names each level as the manual does, shows the raw descriptors and
/// the translation; a fault names the level where the walk stopped.
#[test]
fn walk_trace_reads_like_the_manual() {
    let pool = PoolAllocator::with_base(64, 0x8000_0000);
    let mut pt = PageTable::<ArmStage2Ipa40, _>::new(&pool).unwrap();
    // SAFETY: as above.
    unsafe {
        pt.map(
            gpa(0x4020_0000),
            hpa(0xc020_0000),
            M2,
            MappingFlags::DEVICE_RW,
        )
    }
    .unwrap();
    let walk = pt.walk(gpa(0x4020_1234));
    let steps = walk.steps();
    assert_eq!(steps.len(), 2);
    assert_eq!((steps[0].level_name, steps[0].index), ("L1", 1));
    assert_eq!(steps[0].kind, DescKind::Table);
    assert_eq!((steps[1].level_name, steps[1].index), ("L2", 1));
    assert_eq!(steps[1].raw, 0x0040_0000_c020_07c5);
    let t = walk.translation().unwrap();
    assert_eq!((t.hpa, t.size), (hpa(0xc020_1234), PageSize::Size2M));
    let text = walk.to_string();
    assert!(
        text.contains("walk of GPA:0x40201234 (Arm stage-2 (40-bit IPA))"),
        "{text}"
    );
    assert!(
        text.contains("block S2AP=0b11(RW) MemAttr=0x1 SH=0x3 AF=0x1 XN=0x2"),
        "{text}"
    );
    assert!(text.contains("=> HPA:0xc0201234 rw- device (2M)"), "{text}");
    let miss = pt.walk(gpa(0x4040_0000));
    assert!(matches!(miss.end, WalkEnd::Fault { level: 1, .. }));
    assert!(miss.to_string().contains("invalid"));
    let far = pt.walk(gpa(1 << 40));
    assert!(matches!(far.end, WalkEnd::OutOfRange { limit } if limit == 1 << 40));
}

/// Protect that only changes flags where they differ: splitting a 1G leaf for a
/// 4K permission change needs two tables, and a no-op protect needs no flush.
#[test]
fn protect_splits_only_when_flags_change() {
    let pool = PoolAllocator::new(64);
    let mut pt = PageTable::<Sv39x4, _>::new(&pool).unwrap();
    // SAFETY: as above.
    unsafe { pt.map(gpa(G1), hpa(G1), G1, MappingFlags::RWX) }.unwrap();
    let same = pt
        .protect(gpa(G1 + 0x5000), 0x1000, MappingFlags::RWX)
        .unwrap();
    assert!(same.is_empty());
    // Sv39x4's 16 KiB root holds the 1 GiB leaf directly.
    assert_eq!(pt.table_frames(), 4);
    pt.complete_flush(same).unwrap();
    let flush = pt
        .protect(gpa(G1 + 0x5000), 0x1000, MappingFlags::READ)
        .unwrap();
    assert_eq!(flush.range().map(|r| r.start()), Some(gpa(G1 + 0x5000)));
    assert_eq!(pt.table_frames(), 4 + 2);
    assert_eq!(
        pt.query(gpa(G1 + 0x5000)).unwrap().flags,
        MappingFlags::READ
    );
    assert_eq!(pt.query(gpa(G1 + 0x6000)).unwrap().flags, MappingFlags::RWX);
    pt.complete_flush(flush).unwrap();
    pt.audit().unwrap();
}

/// A flush token of another table is refused, and its frames stay held by the table
/// that issued it until that table completes it (or drops).
#[test]
fn foreign_flush_is_refused() {
    let pool = strict(64);
    let mut a = PageTable::<Ept, _>::new(&pool).unwrap();
    let mut b = PageTable::<Ept, _>::new(&pool).unwrap();
    // SAFETY: as above.
    unsafe { a.map(gpa(0), hpa(0), 0x1000, MappingFlags::RW) }.unwrap();
    let flush = a.unmap(gpa(0), 0x1000).unwrap();
    assert_eq!(a.deferred_frames(), 3);
    assert!(matches!(
        b.complete_flush(flush),
        Err(Error::ForeignFlush { token, table }) if token == a.id && table == b.id
    ));
    assert_eq!(a.deferred_frames(), 3);
    drop(a);
    drop(b);
    assert_all_back(&pool);
}

/// `complete_flush` frees exactly what the token's operations unlinked, whichever
/// form the token has: none (nothing unlinked), one operation, or several merged;
/// the frames of the operations it does not name stay held.
#[test]
fn each_form_of_token_frees_exactly_its_operations() {
    let pool = strict(64);
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // Four 1 GiB leaves under four root entries: each unmap empties and unlinks
    // its own level-2 table, one frame held per operation.
    let at = |i: usize| gpa(i << 39);
    for i in 0..4 {
        // SAFETY: addresses are only numbers in this test.
        unsafe { pt.map(at(i), hpa(i * G1), G1, MappingFlags::RW) }.unwrap();
    }
    let mut tokens: Vec<Flush> = (0..4).map(|i| pt.unmap(at(i), G1).unwrap()).collect();
    assert_eq!(pt.deferred_frames(), 4);
    // A token that unlinked nothing: a protect that changes no right.
    // SAFETY: as above.
    unsafe { pt.map(gpa(0), hpa(0), 0x1000, MappingFlags::RW) }.unwrap();
    let none = pt.protect(gpa(0), 0x1000, MappingFlags::RW).unwrap();
    let in_use = pool.pool().in_use();
    pt.complete_flush(none).unwrap();
    assert_eq!((pt.deferred_frames(), pool.pool().in_use()), (4, in_use));
    // One operation: its frame only.
    pt.complete_flush(tokens.remove(1)).unwrap();
    assert_eq!(
        (pt.deferred_frames(), pool.pool().in_use()),
        (3, in_use - 1)
    );
    // Three merged: all three.
    let mut merged = tokens.remove(0);
    for t in tokens.drain(..) {
        merged.merge(t).unwrap();
    }
    pt.complete_flush(merged).unwrap();
    assert_eq!(
        (pt.deferred_frames(), pool.pool().in_use()),
        (0, in_use - 4)
    );
    drop(pt);
    assert_all_back(&pool);
}

/// A commit whose reserve comes up short (no plan does; the test hook holds frames
/// back) takes its tables from the allocator; when that is dry too, a map is undone
/// and the splits of an unmap change no translation: no panic, nothing lost.
#[test]
fn a_short_reserve_is_survived() {
    let pool = strict(64);
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    pt.plan_deficit = 1;
    pt.two_pass_only = true;
    // The allocator covers the missing frame.
    // SAFETY: as above.
    unsafe { pt.map(gpa(0), hpa(M2), M2, MappingFlags::RW) }.unwrap();
    assert_eq!(pt.table_frames(), 3);
    pt.audit().unwrap();
    // Now the allocator is dry at the commit: the map is undone.
    let before = pt.table_frames();
    pool.pool().fail_after(1);
    // SAFETY: as above.
    let got = unsafe { pt.map(gpa(G1), hpa(M2 + 0x1000), 0x2000, MappingFlags::RW) };
    pool.pool().never_fail();
    assert!(matches!(got, Err(Error::NoMemory { .. })), "{got:?}");
    assert!(pt.query(gpa(G1)).is_none());
    assert_eq!(pt.table_frames(), before);
    pt.audit().unwrap();
    // An unmap whose split cannot get its table changes no translation.
    pool.pool().fail_after(0);
    let got = pt.unmap(gpa(0x1000), 0x1000);
    pool.pool().never_fail();
    assert!(matches!(got, Err(Error::NoMemory { .. })), "{got:?}");
    assert_eq!(pt.query(gpa(0x1000)).unwrap().hpa, hpa(M2 + 0x1000));
    pt.audit().unwrap();
    pt.plan_deficit = 0;
    drop(pt);
    assert_all_back(&pool);
}

/// The table visitor reports the root once, then each table with the level and the
/// first GPA it covers; the count agrees with `table_frames`.
#[test]
fn tables_are_listed_with_what_they_cover() {
    let pool = PoolAllocator::with_base(64, 0x8000_0000);
    let mut pt = PageTable::<Sv39x4, _>::new(&pool).unwrap();
    // SAFETY: the test pool's HPAs are never dereferenced through this mapping.
    unsafe { pt.map(gpa(0x4020_1000), hpa(0xc000_0000), 0x1000, MappingFlags::RW) }.unwrap();
    let mut seen = Vec::new();
    pt.for_each_table(|level, table, base| seen.push((level, table, base.as_usize())));
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((seen[0].0, seen[0].1, seen[0].2), (2, pt.root(), 0));
    assert_eq!((seen[1].0, seen[1].2), (1, 0x4000_0000));
    assert_eq!((seen[2].0, seen[2].2), (0, 0x4020_0000));
    // The root of Sv39x4 is 4 frames; the others one each.
    assert_eq!(pt.table_frames(), 4 + 2);
}

/// The live-entry counts of the tables right below the root follow every change:
/// maps of 1 GiB leaves and of tables, a split of a root-level 1 GiB leaf (Arm: the
/// new table holds 512 leaves), unmaps that empty those tables piece by piece; the
/// audit compares each count with the table's contents, and the last unmap leaves
/// only the root.
#[test]
fn live_counts_follow_maps_splits_and_unmaps() {
    fn check<F: NestedFormat>(pool: &StrictAllocator) {
        let mut pt = PageTable::<F, _>::new(pool).unwrap();
        // Two 1 GiB leaves and 2 MiB of 4 KiB pages beside them.
        // SAFETY: addresses are only numbers in this test.
        unsafe { pt.map(gpa(G1), hpa(4 * G1), 2 * G1, MappingFlags::RW) }.unwrap();
        // SAFETY: as above.
        unsafe { pt.map(gpa(3 * G1), hpa(8 * G1 + 0x1000), M2, MappingFlags::RW) }.unwrap();
        pt.audit().unwrap();
        // Cut a page out of the second 1 GiB leaf (splits it), then unmap the rest
        // in three pieces, in an order that empties tables last.
        for (start, size) in [
            (2 * G1 + 0x5000, 0x1000),
            (G1, G1),
            (2 * G1 + 0x6000, G1 - 0x6000),
            (3 * G1, M2),
            (2 * G1, 0x5000),
        ] {
            let flush = pt.unmap(gpa(start), size).unwrap();
            pt.audit().unwrap();
            pt.complete_flush(flush).unwrap();
        }
        assert_eq!(pt.table_frames(), F::ROOT_FRAMES, "{}", F::NAME);
        assert_eq!(pt.deferred_frames(), 0);
    }
    let pool = strict(256);
    check::<Ept>(&pool);
    check::<ArmStage2Ipa40>(&pool);
    check::<Sv39x4>(&pool);
    assert_all_back(&pool);
}

/// Every leaf of `pt` as (gpa, size, hpa, flags), in address order.
fn leaves<F: NestedFormat, A: FrameAllocator>(
    pt: &PageTable<F, A>,
) -> Vec<(usize, usize, usize, MappingFlags)> {
    let mut out = Vec::new();
    pt.for_each_leaf(|g, t| out.push((g.as_usize(), t.size.bytes(), t.hpa.as_usize(), t.flags)));
    out
}

/// Regression test for the one-walk map skipping the zeroing of a page table it
/// fills whole: over frames full of stale bytes (`alloc_frames` promises no
/// contents), maps that fill part of a page table, a whole one between two parts,
/// or a whole one alone leave exactly their own leaves, in every format.
#[test]
fn fresh_tables_over_stale_frames_hold_only_the_new_leaves() {
    fn check<F: NestedFormat>() {
        let pool = PoolAllocator::new(64);
        let all = pool.alloc_frames(64, 1).unwrap();
        // SAFETY: every frame of the pool, just allocated, mapped writable.
        unsafe {
            core::ptr::write_bytes(pool.phys_to_virt(all).as_mut_ptr::<u8>(), 0xa5, 64 * 4096)
        };
        // SAFETY: allocated above, no longer used.
        unsafe { pool.dealloc_frames(all, 64) };
        let mut pt = PageTable::<F, _>::new(&pool).unwrap();
        let mut want = Vec::new();
        for (g, size) in [
            (G1 + 0x3000, 0x2000),
            (2 * G1 + M2 - 0x1000, M2 + 0x2000),
            (3 * G1, M2),
        ] {
            // Off 2 MiB alignment by a page: 4 KiB leaves only.
            let h = 8 * G1 + g % G1 + 0x1000;
            // SAFETY: addresses are only numbers in this test.
            unsafe { pt.map(gpa(g), hpa(h), size, MappingFlags::RW) }.unwrap();
            want.extend((0..size / 0x1000).map(|i| (g + i * 0x1000, 0x1000, h + i * 0x1000)));
            pt.audit().unwrap();
            let got: Vec<_> = leaves(&pt).iter().map(|l| (l.0, l.1, l.2)).collect();
            assert_eq!(got, want, "{}: {g:#x}+{size:#x}", F::NAME);
        }
    }
    check::<Ept>();
    check::<ArmStage2Ipa40>();
    check::<Sv39x4>();
}

/// The one-walk map of a span below empty entries, out of memory at each table it
/// builds: the same error as the two-pass map (the tables needed, those obtained),
/// no translation, no table linked, every frame back (each free naming one
/// allocation); with enough frames both maps build the same tree. Each shape is
/// `(gpa, hpa, size, tables needed, under an existing 1 GiB leaf at 1 GiB)`.
fn out_of_memory_at_each_table<F: NestedFormat>(shapes: &[(usize, usize, usize, usize, bool)]) {
    let pool = strict(256);
    for &(g, h, size, needed, under_existing) in shapes {
        let mut fast = PageTable::<F, _>::new(&pool).unwrap();
        let mut slow = PageTable::<F, _>::new(&pool).unwrap();
        slow.two_pass_only = true;
        if under_existing {
            for pt in [&mut fast, &mut slow] {
                // A 1 GiB leaf beside: on EPT the level-2 table of the range exists.
                // SAFETY: addresses are only numbers in this test.
                unsafe { pt.map(gpa(G1), hpa(9 * G1), G1, MappingFlags::RW) }.unwrap();
            }
        }
        for n in 0..needed {
            let (before, tables, in_use) =
                (leaves(&fast), fast.table_frames(), pool.pool().in_use());
            let mut got = Vec::new();
            for pt in [&mut fast, &mut slow] {
                pool.pool().fail_after(n);
                // SAFETY: as above.
                got.push(unsafe { pt.map(gpa(g), hpa(h), size, MappingFlags::RW) });
                pool.pool().never_fail();
            }
            let want = Error::NoMemory {
                needed,
                allocated: n,
            };
            let at = format!("{}: {g:#x}+{size:#x}, {n} frames", F::NAME);
            assert_eq!(got, [Err(want), Err(want)], "{at}");
            assert_eq!(leaves(&fast), before, "{at}");
            assert_eq!(fast.table_frames(), tables, "{at}");
            assert_eq!(pool.pool().in_use(), in_use, "{at}");
            fast.audit().unwrap();
        }
        let tables = fast.table_frames();
        for pt in [&mut fast, &mut slow] {
            // SAFETY: as above.
            unsafe { pt.map(gpa(g), hpa(h), size, MappingFlags::RW) }.unwrap();
            pt.audit().unwrap();
        }
        assert_eq!(fast.table_frames(), tables + needed, "{}: {g:#x}", F::NAME);
        assert_eq!(leaves(&fast), leaves(&slow));
        assert_eq!(fast.table_frames(), slow.table_frames());
        assert_eq!(pool.violations(), Vec::<String>::new());
    }
    assert_all_back(&pool);
}

/// [`out_of_memory_at_each_table`] over spans inside one entry down to an empty one
/// and over spans across several empty entries of one table (the root's on Arm,
/// where a failure can come after whole sibling subtrees were built).
#[test]
fn one_walk_map_out_of_memory_at_each_table_changes_nothing() {
    out_of_memory_at_each_table::<Ept>(&[
        // A 4 KiB page in an empty table: 3 new tables.
        (0x1000, 3 * G1 + 0x5000, 0x1000, 3, false),
        // 1 GiB of 2 MiB leaves.
        (G1, 5 * G1 + M2, G1, 2, false),
        // A page below an existing level-2 table.
        (2 * G1 + 0x3000, 6 * G1 + 0x3000, 0x1000, 2, true),
        // 4 KiB pages across three 2 MiB blocks below it: a level-1 table and three
        // page tables (the failure can come after sibling tables were built).
        (2 * G1 + M2 - 0x1000, 7 * G1 + 0x1000, M2 + 0x2000, 4, true),
        // Two pages across a 1 GiB boundary below it: two empty level-2 entries,
        // a level-1 table and a page table in each.
        (3 * G1 - 0x1000, 7 * G1 + 0x5000, 0x2000, 4, true),
    ]);
    out_of_memory_at_each_table::<ArmStage2Ipa40>(&[
        // Two pages across a root entry's (1 GiB) boundary: a level-1 table and a
        // page table in each entry.
        (2 * G1 - 0x1000, 7 * G1 + 0x1000, 0x2000, 4, false),
        // A 1 GiB leaf in the root between two entries holding a 2 MiB leaf each.
        (G1 - M2, 5 * G1 - M2, G1 + 2 * M2, 2, false),
        // 4 GiB of 2 MiB leaves over four root entries, beside a leaf in the root.
        (2 * G1, 8 * G1 + M2, 4 * G1, 4, true),
        // Pages across three root entries, the middle one whole in 2 MiB leaves.
        (3 * G1 - 0x1000, 7 * G1 + M2 - 0x1000, G1 + 0x2000, 5, true),
    ]);
}

mod one_walk {
    use proptest::prelude::*;

    use super::*;

    /// A map or an unmap of a range in a 4 GiB window: pages, 2 MiB-scale (often
    /// off by a few pages), 1 GiB-scale, or across 1 GiB boundaries (several root
    /// entries on Arm and Sv39x4), with an HPA keeping the GPA's alignment
    /// or shifted; a budget of frames for maps.
    #[derive(Clone, Debug)]
    struct Step {
        map: bool,
        gpa: usize,
        size: usize,
        hpa: usize,
        budget: Option<usize>,
    }

    fn step() -> impl Strategy<Value = Step> {
        let range = prop_oneof![
            (0..4 * G1 / 0x1000, 1..=4usize).prop_map(|(p, n)| (p * 0x1000, n * 0x1000)),
            (0..4 * G1 / M2, 1..=3usize, 0..3usize, 0..3usize)
                .prop_map(|(b, n, lo, hi)| (b * M2 + lo * 0x1000, n * M2 - hi * 0x1000)),
            (0..4usize, 1..=2usize).prop_map(|(g, n)| (g * G1, n * G1)),
            // Across 1 GiB boundaries (several root entries on Arm and Sv39x4,
            // several level-2 entries on EPT), ends off by 2 MiB blocks and pages.
            (
                1..4usize,
                0..=1usize,
                0..=2usize,
                0..=2usize,
                0..3usize,
                0..3usize
            )
                .prop_map(|(g, k, a, b, lo, hi)| {
                    let start = g * G1 - a * M2 - lo * 0x1000;
                    (start, (g + k) * G1 + b * M2 + hi * 0x1000 + 0x1000 - start)
                }),
        ]
        .prop_filter("inside the window", |(g, s)| g + s <= 4 * G1);
        (
            prop::bool::weighted(0.7),
            range,
            0..4usize,
            prop_oneof![3 => Just(None), 1 => (0..4usize).prop_map(Some)],
        )
            .prop_map(|(map, (gpa, size), shift, budget)| {
                // Keep the alignment (huge leaves), shift by 2 MiB or a page, or
                // align to 2 MiB (pages only for small ranges: few leaves).
                let hpa = 8 * G1
                    + match shift {
                        1 => gpa % G1 + M2,
                        2 if size <= 4 * M2 => gpa % G1 + 0x1000,
                        // 2 MiB-aligned whatever the GPA's alignment.
                        3 if size <= 4 * M2 => gpa % G1 - gpa % M2,
                        _ => gpa % G1,
                    };
                Step {
                    map,
                    gpa,
                    size,
                    hpa,
                    budget,
                }
            })
    }

    /// Runs `steps` on a table with the one-walk map and on one with the two-pass
    /// map only: every result, the leaves, the table count and the frames in use
    /// agree after every step.
    fn agree<F: NestedFormat>(steps: &[Step]) -> Result<(), TestCaseError> {
        let pool = strict(4096);
        {
            let mut fast = PageTable::<F, _>::new(&pool).unwrap();
            let mut slow = PageTable::<F, _>::new(&pool).unwrap();
            slow.two_pass_only = true;
            for (i, s) in steps.iter().enumerate() {
                let mut got = Vec::new();
                for pt in [&mut fast, &mut slow] {
                    let before = pool.pool().in_use() as isize;
                    match s.budget {
                        Some(n) if s.map => pool.pool().fail_after(n),
                        _ => pool.pool().never_fail(),
                    }
                    let r = if s.map {
                        // SAFETY: addresses are only numbers in this test.
                        unsafe { pt.map(gpa(s.gpa), hpa(s.hpa), s.size, MappingFlags::RW) }
                    } else {
                        pt.unmap(gpa(s.gpa), s.size)
                            .and_then(|flush| pt.complete_flush(flush))
                    };
                    pool.pool().never_fail();
                    got.push((r, pool.pool().in_use() as isize - before));
                    pt.audit()
                        .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
                }
                // The same result, and the same frames taken or given back.
                prop_assert_eq!(&got[0], &got[1], "step {}: {:?}", i, s);
                prop_assert_eq!(leaves(&fast), leaves(&slow), "step {}: {:?}", i, s);
                prop_assert_eq!(fast.table_frames(), slow.table_frames(), "step {}", i);
            }
        }
        prop_assert_eq!(pool.pool().in_use(), 0);
        prop_assert_eq!(pool.violations(), Vec::<String>::new());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The one-walk map (below an empty entry) and the two-pass map build the
        /// same tree and fail alike, over trees made by earlier maps and unmaps.
        #[test]
        fn one_walk_maps_agree_with_two_pass_maps(steps in prop::collection::vec(step(), 1..24)) {
            agree::<Ept>(&steps)?;
            agree::<ArmStage2Ipa40>(&steps)?;
            agree::<Sv39x4>(&steps)?;
        }
    }
}

mod whole_entry_unmap {
    //! The single-entry unmap walk (`clear_entry`) against the general path it
    //! shortcuts: two tables with the same history on two pools with the same
    //! base (so the same frames), one forced down the general path, must record the
    //! same items in the same order, free the same frames whichever way their
    //! tokens are completed (in order, the last alone, merged), translate the same
    //! through their walk caches (which must not name a table an unmap unlinked),
    //! and end up identical after every step.

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::table::index::Span;

    const WINDOW: usize = 4 * G1;
    const BASE: usize = 0x100_0000_0000;

    #[derive(Clone, Debug)]
    enum Op {
        /// Linear map of `size` at `gpa` to `hpa`.
        Linear { gpa: usize, hpa: usize, size: usize },
        /// Allocated frames (owned by the leaves) for `[gpa, gpa + size)`.
        Frames { gpa: usize, size: usize },
        /// Unmap one entry's block at `level`, index `i` in the window.
        Whole { level: usize, i: usize },
        /// Unmap the block at `level` around the `nth` address (modulo their
        /// number) the history has mapped or unmapped so far: whole entries where
        /// there are translations, which empty tables and cut subtrees far more
        /// often than blocks anywhere in the window.
        WholeAt { level: usize, nth: usize },
        /// Unmap any page-aligned range (splits, partial tables).
        Any { gpa: usize, size: usize },
        /// Complete pending flushes: every one in order (`0`), the last one only
        /// (`1`), or every one merged into one token (`2`).
        Complete(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..4usize, 0..512usize, 1..=2usize, any::<bool>()).prop_map(|(g, m, n, big)| {
                let (gpa, size) = if big { (g * G1, n * G1) } else { (g * G1 + m * M2, n * M2) };
                Op::Linear { gpa, hpa: 64 * G1 + gpa, size: size.min(WINDOW - gpa) }
            }),
            1 => (0..WINDOW / K4, 1..=8usize).prop_map(|(p, n)| Op::Linear {
                gpa: p * K4, hpa: 128 * G1 + p * K4, size: (n * K4).min(WINDOW - p * K4)
            }),
            2 => (0..WINDOW / M2, 0..512usize, 1..=2usize).prop_map(|(b, p, n)| Op::Frames {
                gpa: b * M2 + p % 2 * (p * K4 % M2), size: (n * M2).min(WINDOW - b * M2)
            }),
            6 => (0..=3usize, 0..(WINDOW / K4)).prop_map(|(level, i)| Op::Whole { level, i }),
            4 => (0..=3usize, any::<usize>()).prop_map(|(level, nth)| Op::WholeAt { level, nth }),
            2 => (0..WINDOW / K4, 1..=1024usize).prop_map(|(p, n)| Op::Any {
                gpa: p * K4, size: (n * K4 * 97).min(WINDOW - p * K4)
            }),
            1 => (0..3u8).prop_map(Op::Complete),
        ]
    }

    const K4: usize = 0x1000;

    /// The frame-owning ranges inside `span` among `owned` (sorted, disjoint).
    fn owned_in(owned: &[(usize, usize)], span: Span) -> Spans {
        let mut spans = Spans::new();
        for &(s, e) in owned {
            let (s, e) = (s.max(span.start), e.min(span.end));
            if s < e {
                spans.try_push(Span::new(s, e)).unwrap();
            }
        }
        spans
    }

    /// `owned` without `span`.
    fn remove(owned: &mut Vec<(usize, usize)>, span: Span) {
        let mut out = Vec::new();
        for &(s, e) in owned.iter() {
            if s < span.start {
                out.push((s, e.min(span.start)));
            }
            if e > span.end {
                out.push((s.max(span.end), e));
            }
        }
        *owned = out;
    }

    /// Everything the two tables must agree on.
    fn state<F: NestedFormat>(
        pt: &PageTable<F, &PoolAllocator>,
        probes: &BTreeSet<usize>,
    ) -> String {
        let mut leaves = Vec::new();
        pt.for_each_leaf(|g, t| leaves.push((g, t)));
        let live: Vec<u16> = pt.live.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let held: Vec<_> = pt
            .held
            .iter()
            .map(|r| (r.op, r.items.to_vec(), r.owned.to_vec()))
            .collect();
        // Translations through the walk cache, which these queries also fill, at
        // both ends of every range the history mapped or unmapped: a cache that
        // still names a table an unmap unlinked answers from the old table.
        let queries: Vec<_> = probes.iter().map(|&g| pt.query(super::gpa(g))).collect();
        format!(
            "{leaves:?} tables {} live {live:?} held {held:?} queries {queries:?} in use {}",
            pt.tables,
            pt.alloc.in_use()
        )
    }

    /// The block at `level` around `gpa`, if the format translates it.
    fn whole<F: NestedFormat>(level: usize, gpa: usize) -> Option<Span> {
        let len = Level::new(level).span();
        let start = gpa & !(len - 1);
        (start + len <= PageTable::<F, &PoolAllocator>::gpa_limit())
            .then_some(Span::new(start, start + len))
    }

    fn run<F: NestedFormat>(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let (pa, pb) = (
            PoolAllocator::with_base(16 * 1024, BASE),
            PoolAllocator::with_base(16 * 1024, BASE),
        );
        let mut fast = PageTable::<F, _>::new(&pa).unwrap();
        let mut general = PageTable::<F, _>::new(&pb).unwrap();
        general.general_unmap = true;
        let mut owned: Vec<(usize, usize)> = Vec::new();
        let mut flushes = Vec::new();
        let mut probes = BTreeSet::new();
        let top = PageTable::<F, &PoolAllocator>::TOP.get();
        for (step, op) in ops.into_iter().enumerate() {
            let unmap = match op {
                Op::Linear { gpa, hpa, size } => {
                    // SAFETY: the HPAs are only numbers in this test.
                    let a = unsafe {
                        fast.map(super::gpa(gpa), super::hpa(hpa), size, MappingFlags::RW)
                    };
                    // SAFETY: as above.
                    let b = unsafe {
                        general.map(super::gpa(gpa), super::hpa(hpa), size, MappingFlags::RW)
                    };
                    prop_assert_eq!(a, b);
                    None
                }
                Op::Frames { gpa, size } => {
                    let span = Span::new(gpa, gpa + size);
                    let mut mapped = false;
                    fast.for_each_leaf_in(&GpaRange::from_raw(gpa, gpa + size), |_, _| {
                        mapped = true
                    });
                    let a = if !mapped {
                        let a = fast.map_frames(&[(span, MappingFlags::RW)], false);
                        let b = general.map_frames(&[(span, MappingFlags::RW)], false);
                        prop_assert_eq!(&a, &b);
                        a.is_ok()
                    } else {
                        false
                    };
                    if a {
                        owned.push((span.start, span.end));
                        owned.sort_unstable();
                    }
                    None
                }
                Op::Whole { level, i } => whole::<F>(level.min(top), i * K4),
                Op::WholeAt { level, nth } => match probes.len() {
                    0 => None,
                    n => probes
                        .iter()
                        .nth(nth % n)
                        .and_then(|&g| whole::<F>(level.min(top), g)),
                },
                Op::Any { gpa, size } => Some(Span::new(gpa, gpa + size)),
                Op::Complete(how) => {
                    let pending: Vec<(Flush, Flush)> = match how {
                        0 => core::mem::take(&mut flushes),
                        1 => flushes.pop().into_iter().collect(),
                        _ => flushes
                            .drain(..)
                            .reduce(|(mut a, mut b), (c, d)| {
                                a.merge(c).unwrap();
                                b.merge(d).unwrap();
                                (a, b)
                            })
                            .into_iter()
                            .collect(),
                    };
                    for (a, b) in pending {
                        fast.complete_flush(a).unwrap();
                        general.complete_flush(b).unwrap();
                    }
                    None
                }
            };
            if let Some(span) = unmap {
                let range = GpaRange::from_raw(span.start, span.end);
                let a = fast.unmap_span(&range, owned_in(&owned, span));
                let b = general.unmap_span(&range, owned_in(&owned, span));
                prop_assert_eq!(a.is_ok(), b.is_ok(), "step {}: {:?} / {:?}", step, a, b);
                if let (Ok(a), Ok(b)) = (a, b) {
                    prop_assert_eq!(a.range(), b.range());
                    flushes.push((a, b));
                    remove(&mut owned, span);
                }
            }
            if let Op::Linear { gpa, size, .. } | Op::Frames { gpa, size } | Op::Any { gpa, size } =
                op
            {
                probes.extend([gpa, gpa + size - K4]);
            }
            if let Some(span) = unmap {
                probes.extend([span.start, span.end - K4]);
            }
            prop_assert_eq!(
                state(&fast, &probes),
                state(&general, &probes),
                "step {}: {:?}",
                step,
                op
            );
            fast.audit().map_err(TestCaseError::fail)?;
        }
        for (a, b) in flushes {
            fast.complete_flush(a).unwrap();
            general.complete_flush(b).unwrap();
        }
        prop_assert_eq!(state(&fast, &probes), state(&general, &probes));
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn whole_entry_unmaps_match_the_general_path_ept(ops in prop::collection::vec(op(), 1..32)) {
            run::<Ept>(ops)?;
        }
        #[test]
        fn whole_entry_unmaps_match_the_general_path_arm(ops in prop::collection::vec(op(), 1..32)) {
            run::<ArmStage2Ipa40>(ops)?;
        }
        #[test]
        fn whole_entry_unmaps_match_the_general_path_sv39(ops in prop::collection::vec(op(), 1..32)) {
            run::<Sv39x4>(ops)?;
        }
    }
}
