//! Regression tests for defects found in this crate (issue 10), each named after the
//! defect and failing on the code before its fix: plans that missed frames after a
//! same-flags protect, eager maps that aborted on sizes the allocator cannot serve,
//! flush tokens that freed other operations' frames, a protect that turned
//! pass-through device memory into copyable RAM, and flushes that freed frames of
//! separate allocations with one call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use addrspace::testing::{PoolAllocator, StrictAllocator};
use addrspace::{
    AccessKind, AddrSpace, ArmStage2Ipa40, ArmStage2Ipa48, Ept, Error, FaultOutcome, MappingFlags,
    NestedFormat, Npt, PageSize, PageTable, Populate, Sv39x4, Sv48x4,
};

mod common;

use common::{K4, M2, gpa, hpa};

/// Every leaf lies inside one area (the invariant the engine's plans rely on).
fn leaves_inside_areas<F: NestedFormat>(s: &AddrSpace<F, &PoolAllocator>) {
    s.page_table().for_each_leaf(|g, t| {
        let area = s.area_at(g).expect("a leaf outside every area");
        let end = g.as_usize() + t.size.bytes();
        assert!(
            end <= area.range.end().as_usize(),
            "{} leaf at {g:#x} straddles the end of area {}",
            t.size,
            area.range
        );
    });
}

/// The sequence: a 2 MiB leaf and a 4 KiB page, a protect with the flags the
/// area already has in the middle of the leaf, then an unmap of the leaf's 2 MiB. It
/// panicked "page-table reserve exhausted" (debug), took a frame outside the plan
/// (release) and, with the allocator exhausted, panicked with the tree half changed.
fn same_flags_protect_then_unmap<F: NestedFormat>() {
    for budget in [None, Some(0), Some(1), Some(2)] {
        let pool = PoolAllocator::with_base(256, 0x4000_0000);
        let mut s = AddrSpace::<F, _>::new(&pool).unwrap();
        // SAFETY: HPAs of the pool's own range, never read through the mapping here.
        unsafe { s.map_linear(gpa(M2), hpa(0x4000_0000), M2 + K4, MappingFlags::RW) }.unwrap();
        let flush = s.protect(gpa(0x2d_0000), 2 * K4, MappingFlags::RW).unwrap();
        assert!(flush.is_empty(), "{}: same flags changed nothing", F::NAME);
        s.complete_flush(flush).unwrap();
        leaves_inside_areas(&s);
        let (in_use, areas) = (pool.in_use(), s.areas().count());
        if let Some(n) = budget {
            pool.fail_after(n);
        }
        match s.unmap(gpa(M2), M2) {
            Ok(flush) => {
                pool.never_fail();
                assert!(s.translate(gpa(M2 + 0x1000)).is_err());
                assert!(
                    s.translate(gpa(2 * M2)).is_ok(),
                    "{}: the 4 KiB page",
                    F::NAME
                );
                s.complete_flush(flush).unwrap();
            }
            Err(Error::NoMemory { .. }) => {
                pool.never_fail();
                assert!(budget.is_some());
                assert_eq!(pool.in_use(), in_use, "{}: failed unmap leaked", F::NAME);
                assert_eq!(s.areas().count(), areas);
                let t = s.translate(gpa(0x2d_0000)).unwrap();
                assert_eq!(t.hpa, hpa(0x400d_0000), "{}: failed unmap changed", F::NAME);
            }
            Err(e) => panic!("{}: {e}", F::NAME),
        }
        s.page_table().audit().unwrap();
        leaves_inside_areas(&s);
    }
}

#[test]
fn same_flags_protect_then_unmap_across_the_cut() {
    same_flags_protect_then_unmap::<Ept>();
    same_flags_protect_then_unmap::<Npt>();
    same_flags_protect_then_unmap::<ArmStage2Ipa40>();
    same_flags_protect_then_unmap::<ArmStage2Ipa48>();
    same_flags_protect_then_unmap::<Sv39x4>();
    same_flags_protect_then_unmap::<Sv48x4>();
}

/// An eager allocation of 128 TiB on a pool of 64 frames built a `Vec` of one entry
/// per 4 KiB page first, which the host could not allocate: the process aborted.
#[test]
fn huge_eager_map_on_a_small_pool_returns_no_memory() {
    let pool = PoolAllocator::new(64);
    let mut s = AddrSpace::<Ept, _>::new(&pool).unwrap();
    let in_use = pool.in_use();
    let got = s.map_alloc(gpa(0), 1 << 47, MappingFlags::RW, Populate::Eager);
    assert!(matches!(got, Err(Error::NoMemory { .. })), "{got:?}");
    assert_eq!(pool.in_use(), in_use);
    assert_eq!(s.areas().count(), 0);
    // The page table alone too: 128 TiB of 4 KiB pages needs 2^26 tables.
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // SAFETY: HPAs are only numbers here.
    let got = unsafe { pt.map(gpa(0), hpa(0x1000), 1 << 47, MappingFlags::RW) };
    assert!(matches!(got, Err(Error::NoMemory { .. })), "{got:?}");
}

/// Completing one operation's token freed the frames of every earlier operation,
/// whose tokens were still pending: their TLB entries may not have been invalidated.
#[test]
fn completing_one_token_keeps_other_tokens_frames() {
    let pool = PoolAllocator::new(64);
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // SAFETY: HPAs are only numbers here.
    unsafe { pt.map(gpa(0), hpa(0x1000_0000), 2 * K4, MappingFlags::RW) }.unwrap();
    // SAFETY: as above.
    unsafe { pt.map(gpa(1 << 39), hpa(0x2000_0000), K4, MappingFlags::RW) }.unwrap();
    let first = pt.unmap(gpa(0), K4).unwrap();
    assert_eq!(
        pt.deferred_frames(),
        0,
        "the 4 KiB table still holds a page"
    );
    let second = pt.unmap(gpa(1 << 39), K4).unwrap();
    let held = pt.deferred_frames();
    assert_eq!(held, 3, "three tables below the root");
    let third = pt.unmap(gpa(K4), K4).unwrap();
    let all = pt.deferred_frames();
    assert_eq!(all, held + 3);
    // Completing the third must not release the second's tables.
    pt.complete_flush(third).unwrap();
    assert_eq!(
        pt.deferred_frames(),
        held,
        "another token's frames were freed"
    );
    pt.complete_flush(first).unwrap();
    assert_eq!(pt.deferred_frames(), held);
    pt.complete_flush(second).unwrap();
    assert_eq!(pt.deferred_frames(), 0);
    assert_eq!(pool.in_use(), 1);
}

/// A token was matched to its table by root address only: a new table that got the
/// dropped table's root frame accepted the stale token and released its own frames.
#[test]
fn stale_token_of_a_dropped_table_is_refused() {
    let pool = PoolAllocator::new(64);
    let mut a = PageTable::<Ept, _>::new(&pool).unwrap();
    let root = a.root();
    // SAFETY: HPAs are only numbers here.
    unsafe { a.map(gpa(0), hpa(0x1000_0000), K4, MappingFlags::RW) }.unwrap();
    // SAFETY: as above.
    unsafe { a.map(gpa(1 << 39), hpa(0x1000_0000), K4, MappingFlags::RW) }.unwrap();
    let _pending = a.unmap(gpa(0), K4).unwrap();
    let stale = a.unmap(gpa(1 << 39), K4).unwrap();
    drop(a);
    let mut b = PageTable::<Ept, _>::new(&pool).unwrap();
    assert_eq!(b.root(), root, "the pool hands the root frame out again");
    // SAFETY: as above.
    unsafe { b.map(gpa(0), hpa(0x1000_0000), K4, MappingFlags::RW) }.unwrap();
    let mine = b.unmap(gpa(0), K4).unwrap();
    let held = b.deferred_frames();
    assert_eq!(held, 3);
    assert!(matches!(
        b.complete_flush(stale),
        Err(Error::ForeignFlush { .. })
    ));
    assert_eq!(b.deferred_frames(), held, "a stale token released frames");
    b.complete_flush(mine).unwrap();
    assert_eq!(b.deferred_frames(), 0);
}

/// `Flush::merge` took a token of another table and kept the first token's owner, so
/// completing the merge on one table released frames the other's token covered
/// (by sequence number). A foreign token is refused and handed back; a merge of
/// one table's tokens owns exactly both operations' frames.
#[test]
fn merge_of_tokens_of_two_tables_is_refused() {
    let pool = PoolAllocator::new(64);
    let mut a = PageTable::<Ept, _>::new(&pool).unwrap();
    let mut b = PageTable::<Ept, _>::new(&pool).unwrap();
    for pt in [&mut a, &mut b] {
        for g in [0, 1 << 39, 2 << 39] {
            // SAFETY: HPAs are only numbers here.
            unsafe { pt.map(gpa(g), hpa(0x1000_0000), K4, MappingFlags::RW) }.unwrap();
        }
    }
    let mut a0 = a.unmap(gpa(0), K4).unwrap();
    let a1 = a.unmap(gpa(1 << 39), K4).unwrap();
    let a2 = a.unmap(gpa(2 << 39), K4).unwrap();
    let b0 = b.unmap(gpa(0), K4).unwrap();
    let refused = a0.merge(b0).unwrap_err();
    assert_eq!(a0.range().map(|r| r.size()), Some(K4), "a0 unchanged");
    a0.merge(a2).unwrap();
    assert_eq!(a0.range().map(|r| r.size()), Some((2 << 39) + K4));
    a.complete_flush(a0).unwrap();
    assert_eq!(a.deferred_frames(), 3, "only a1's tables are left");
    b.complete_flush(refused.other).unwrap();
    assert_eq!(b.deferred_frames(), 0);
    a.complete_flush(a1).unwrap();
    assert_eq!(a.deferred_frames(), 0);
}

/// `protect` with flags lacking `DEVICE` on a pass-through range turned it into RAM
/// that `read` copied through `phys_to_virt` of a device address.
#[test]
fn protect_without_device_keeps_pass_through_device_memory() {
    let pool = PoolAllocator::new(64);
    let mut s = AddrSpace::<ArmStage2Ipa40, _>::new(&pool).unwrap();
    let mmio = gpa(0x0900_0000);
    // SAFETY: a device mapping of an address outside the pool; never read through.
    unsafe { s.map_linear(mmio, hpa(0x0900_0000), K4, MappingFlags::DEVICE_RW) }.unwrap();
    // Flags without a memory type keep the area's; another type is refused.
    let f = s.protect(mmio, K4, MappingFlags::READ).unwrap();
    s.complete_flush(f).unwrap();
    assert_eq!(
        s.protect(mmio, K4, MappingFlags::RW | MappingFlags::UNCACHED),
        Err(Error::MemoryType {
            gpa: mmio,
            mapped: MappingFlags::DEVICE | MappingFlags::READ,
            requested: MappingFlags::RW | MappingFlags::UNCACHED,
        })
    );
    let t = s.translate(mmio).unwrap();
    assert_eq!(t.flags, MappingFlags::DEVICE | MappingFlags::READ);
    assert_eq!(s.area_at(mmio).unwrap().flags, t.flags);
    let mut buf = [0u8; 4];
    assert_eq!(
        s.read(mmio, &mut buf),
        Err(Error::DeviceMemory { gpa: mmio })
    );
}

/// Found by the `addrspace_ops` fuzz target: `populate` refused device memory only
/// in linear areas, so allocated memory mapped `DEVICE` got frames for lazy pages
/// (and `Ok`), although the copy that follows a populate refuses it with
/// `DeviceMemory`: a refused host copy (vm-core's `with_populated`) changed the space.
#[test]
fn populate_refuses_allocated_device_memory() {
    let pool = PoolAllocator::new(64);
    let mut s = AddrSpace::<Npt, _>::new(&pool).unwrap();
    let (lazy, eager) = (gpa(0x1000_0000), gpa(0x2000_0000));
    let dev = MappingFlags::DEVICE_RW;
    s.map_alloc(lazy, 2 * K4, dev, Populate::Lazy).unwrap();
    s.map_alloc(eager, K4, dev, Populate::Eager).unwrap();
    let frames = pool.in_use();
    assert_eq!(
        s.populate(lazy + 0x10, K4),
        Err(Error::DeviceMemory { gpa: lazy + 0x10 })
    );
    assert_eq!(
        s.populate(eager, 8),
        Err(Error::DeviceMemory { gpa: eager })
    );
    assert_eq!(pool.in_use(), frames, "a refused populate took frames");
    assert_eq!(s.translate(lazy), Err(Error::NotPopulated { gpa: lazy }));
    // What the copy after a populate would say.
    assert_eq!(
        s.read(eager, &mut [0u8; 8]),
        Err(Error::DeviceMemory { gpa: eager })
    );
}

/// Found by the table team: an unmap's deferred-free record merged the frames of
/// leaves that followed each other in host-physical memory into one run, so the
/// flush gave back frames of two (or 1,024) separate allocations with one
/// `dealloc_frames` call, which the `FrameAllocator` contract forbids and a buddy
/// allocator does not survive. Eager pages (each frame its own allocation), lazy
/// pages and two 2 MiB blocks of a `LazyHuge` area come out adjacent from the
/// lowest-first pool; one unmap of each run and its flush must free them one
/// allocation at a time.
fn deferred_free_of_adjacent_allocations<F: NestedFormat>() {
    let strict = StrictAllocator::new(PoolAllocator::with_base(2048, 0x4000_0000));
    let mut s = AddrSpace::<F, _>::new(&strict).unwrap();
    // Two adjacent eager areas and a lazy one, inside one page table.
    let at = 0x10_0000;
    s.map_alloc(gpa(at), 2 * K4, MappingFlags::RW, Populate::Eager)
        .unwrap();
    s.map_alloc(gpa(at + 2 * K4), 3 * K4, MappingFlags::RW, Populate::Eager)
        .unwrap();
    s.map_alloc(gpa(at + 5 * K4), 2 * K4, MappingFlags::RW, Populate::Lazy)
        .unwrap();
    for page in [5, 6] {
        s.handle_page_fault(gpa(at + page * K4), AccessKind::Write)
            .unwrap();
    }
    // Two 2 MiB blocks faulted into a level-1 table that already exists.
    s.map_alloc(gpa(2 * M2), 2 * M2, MappingFlags::RW, Populate::LazyHuge)
        .unwrap();
    let mut blocks = Vec::new();
    for block in [2 * M2, 3 * M2] {
        match s.handle_page_fault(gpa(block), AccessKind::Write).unwrap() {
            FaultOutcome::Mapped { hpa, size, .. } => {
                assert_eq!(size, PageSize::Size2M, "{}", F::NAME);
                blocks.push(hpa.as_usize());
            }
            o => panic!("{}: {o:?}", F::NAME),
        }
    }
    assert_eq!(
        blocks[1],
        blocks[0] + M2,
        "{}: blocks not adjacent",
        F::NAME
    );
    let before = strict.violations();
    assert!(before.is_empty(), "{}: {before:?}", F::NAME);
    for (start, size) in [(at, 7 * K4), (2 * M2, 2 * M2)] {
        let flush = s.unmap(gpa(start), size).unwrap();
        s.complete_flush(flush).unwrap();
    }
    let bad = strict.violations();
    assert!(bad.is_empty(), "{}: {bad:?}", F::NAME);
    drop(s);
    assert_eq!(strict.pool().in_use(), 0, "{}", F::NAME);
}

#[test]
fn deferred_free_never_merges_frames_of_separate_allocations() {
    deferred_free_of_adjacent_allocations::<Ept>();
    deferred_free_of_adjacent_allocations::<Npt>();
    deferred_free_of_adjacent_allocations::<ArmStage2Ipa40>();
    deferred_free_of_adjacent_allocations::<ArmStage2Ipa48>();
    deferred_free_of_adjacent_allocations::<Sv39x4>();
    deferred_free_of_adjacent_allocations::<Sv48x4>();
}
