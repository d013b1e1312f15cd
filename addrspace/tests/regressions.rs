//! Regression tests for the failures found in axaddrspace (the crates we replace),
//! each checked against our behaviour: partial unmaps inside huge leaves, a second
//! fault on a mapped lazy page, byte reads over unfaulted lazy pages and past an
//! area's end, unmapping a never-mapped range, and a populate that fails half-way.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use addrspace::testing::PoolAllocator;
use addrspace::{
    AccessKind, AddrSpace, ArmStage2Ipa48, Ept, Error, FaultOutcome, MappingFlags, PageSize,
    PageTable, Populate, Sv48x4,
};

mod common;

use common::{G1, K4, M2, gpa, hpa};

/// axaddrspace refused (or corrupted) unmaps that cut a 2 MiB leaf: we split it.
#[test]
fn partial_unmap_inside_a_2m_leaf() {
    let pool = PoolAllocator::new(64);
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    // SAFETY: the HPAs are only numbers here; nothing is accessed through them.
    unsafe {
        pt.map(gpa(0x4000_0000), hpa(0x8000_0000), M2, MappingFlags::RW)
            .unwrap()
    };
    assert_eq!(pt.query(gpa(0x4000_0000)).unwrap().size, PageSize::Size2M);
    let flush = pt.unmap(gpa(0x4000_5000), 3 * K4).unwrap();
    pt.complete_flush(flush).unwrap();
    for page in (0x4000_0000..0x4000_0000 + M2).step_by(K4) {
        let t = pt.query(gpa(page));
        if (0x4000_5000..0x4000_8000).contains(&page) {
            assert!(t.is_none(), "{page:#x} still mapped");
        } else {
            let t = t.expect("neighbour lost");
            assert_eq!(t.hpa.as_usize(), 0x8000_0000 + (page - 0x4000_0000));
            assert_eq!(t.size, PageSize::Size4K);
            assert_eq!(t.flags, MappingFlags::RW);
        }
    }
    pt.audit().unwrap();
}

/// The same inside a 1 GiB leaf: one 2 MiB-level table and one 4 KiB-level table.
#[test]
fn partial_unmap_inside_a_1g_leaf() {
    let pool = PoolAllocator::new(64);
    let mut pt = PageTable::<ArmStage2Ipa48, _>::new(&pool).unwrap();
    // SAFETY: as above.
    unsafe { pt.map(gpa(G1), hpa(4 * G1), G1, MappingFlags::RWX).unwrap() };
    let tables = pt.table_frames();
    let flush = pt.unmap(gpa(G1 + 0x1234_5000), K4).unwrap();
    assert_eq!(pt.table_frames(), tables + 2);
    pt.complete_flush(flush).unwrap();
    assert!(pt.query(gpa(G1 + 0x1234_5000)).is_none());
    let t = pt.query(gpa(G1 + 0x1234_6000)).unwrap();
    assert_eq!(
        (t.hpa.as_usize(), t.size),
        (4 * G1 + 0x1234_6000, PageSize::Size4K)
    );
    let t = pt.query(gpa(G1 + 0x3000_0000)).unwrap();
    assert_eq!(t.size, PageSize::Size2M);
    assert_eq!(t.hpa.as_usize(), 4 * G1 + 0x3000_0000);
    pt.audit().unwrap();
}

/// axaddrspace allocated (and leaked) a new frame on every fault of a mapped lazy
/// page, losing its data: a second fault is spurious, allocates nothing, keeps data.
#[test]
fn second_fault_on_a_mapped_lazy_page() {
    let pool = PoolAllocator::new(64);
    let mut s = AddrSpace::<Sv48x4, _>::new(&pool).unwrap();
    s.map_alloc(
        gpa(0x8000_0000),
        0x10_0000,
        MappingFlags::RW,
        Populate::Lazy,
    )
    .unwrap();
    assert!(matches!(
        s.handle_page_fault(gpa(0x8000_1010), AccessKind::Write)
            .unwrap(),
        FaultOutcome::Mapped { .. }
    ));
    s.write_obj(gpa(0x8000_1010), &0x1122_3344_u32).unwrap();
    let in_use = pool.in_use();
    for access in [AccessKind::Read, AccessKind::Write] {
        assert_eq!(
            s.handle_page_fault(gpa(0x8000_1ff8), access).unwrap(),
            FaultOutcome::Spurious
        );
    }
    assert_eq!(pool.in_use(), in_use, "a refault allocated");
    assert_eq!(s.read_obj::<u32>(gpa(0x8000_1010)).unwrap(), 0x1122_3344);
}

/// axaddrspace panicked on byte reads of unfaulted lazy pages and past an area's end.
#[test]
fn byte_reads_over_unfaulted_lazy_pages_and_past_the_end() {
    let pool = PoolAllocator::new(64);
    let mut s = AddrSpace::<Ept, _>::new(&pool).unwrap();
    s.map_alloc(gpa(0x1000_0000), 2 * K4, MappingFlags::RW, Populate::Lazy)
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        s.read(gpa(0x1000_0fff), &mut byte),
        Err(Error::NotPopulated {
            gpa: gpa(0x1000_0fff)
        })
    );
    s.handle_page_fault(gpa(0x1000_0000), AccessKind::Read)
        .unwrap();
    s.handle_page_fault(gpa(0x1000_1000), AccessKind::Read)
        .unwrap();
    assert_eq!(s.read(gpa(0x1000_1fff), &mut byte), Ok(()));
    assert_eq!(
        s.read(gpa(0x1000_2000), &mut byte),
        Err(Error::NoArea {
            gpa: gpa(0x1000_2000)
        })
    );
    let mut two = [0u8; 2];
    assert_eq!(
        s.read(gpa(0x1000_1fff), &mut two),
        Err(Error::NoArea {
            gpa: gpa(0x1000_2000)
        })
    );
}

/// axaddrspace "succeeded" when unmapping a range it never mapped.
#[test]
fn unmap_of_a_never_mapped_range() {
    let pool = PoolAllocator::new(16);
    let mut s = AddrSpace::<Ept, _>::new(&pool).unwrap();
    assert_eq!(
        s.unmap(gpa(0x4000_0000), K4),
        Err(Error::NotMapped {
            gpa: gpa(0x4000_0000)
        })
    );
    let mut pt = PageTable::<Ept, _>::new(&pool).unwrap();
    assert_eq!(
        pt.unmap(gpa(0x4000_0000), M2),
        Err(Error::NotMapped {
            gpa: gpa(0x4000_0000)
        })
    );
}

/// axaddrspace leaked the frames of a populate that failed half-way.
#[test]
fn populate_failing_half_way_leaks_nothing() {
    let pool = PoolAllocator::new(1024);
    let mut s = AddrSpace::<Ept, _>::new(&pool).unwrap();
    let before = pool.in_use();
    pool.fail_after(100);
    let err = s
        .map_alloc(
            gpa(0x4000_0000),
            256 * K4,
            MappingFlags::RW,
            Populate::Eager,
        )
        .unwrap_err();
    // 256 guest frames and the three tables under the root (PDPT, PD, PT).
    assert!(matches!(
        err,
        Error::NoMemory {
            needed: 259,
            allocated: 100
        }
    ));
    pool.never_fail();
    assert_eq!(pool.in_use(), before);
    assert_eq!(s.areas().count(), 0);
    // And it still works afterwards.
    s.map_alloc(
        gpa(0x4000_0000),
        256 * K4,
        MappingFlags::RW,
        Populate::Eager,
    )
    .unwrap();
    drop(s);
    assert_eq!(pool.in_use(), 0);
}

/// Frames: after unmapping everything only the root remains, and after drop nothing.
#[test]
fn frame_accounting_after_unmap_and_drop() {
    let pool = PoolAllocator::new(4096);
    {
        let mut s = AddrSpace::<ArmStage2Ipa48, _>::new(&pool).unwrap();
        s.map_alloc(gpa(0x4000_0000), 2 * M2, MappingFlags::RWX, Populate::Eager)
            .unwrap();
        // SAFETY: a device mapping, never read through.
        unsafe {
            s.map_linear(
                gpa(2 * G1),
                hpa(8 * G1),
                G1 + M2 + K4,
                MappingFlags::DEVICE_RW,
            )
            .unwrap()
        };
        s.map_alloc(gpa(0x1_0000_0000), M2, MappingFlags::RW, Populate::Lazy)
            .unwrap();
        s.handle_page_fault(gpa(0x1_0000_3000), AccessKind::Write)
            .unwrap();
        assert_eq!(s.data_frames(), 2 * 512 + 1);
        let flush = s.unmap(gpa(0x4000_0000), 2 * M2).unwrap();
        // Frames are held until the flush completes: 1024 guest frames, the two
        // 4 KiB-level tables and the now-empty 2 MiB-level table above them.
        assert_eq!(s.deferred_frames(), 2 * 512 + 3);
        s.complete_flush(flush).unwrap();
        let flush = s.unmap(gpa(2 * G1), G1 + M2 + K4).unwrap();
        s.complete_flush(flush).unwrap();
        let flush = s.unmap(gpa(0x1_0000_0000), M2).unwrap();
        s.complete_flush(flush).unwrap();
        assert_eq!(s.table_frames(), 1);
        assert_eq!(pool.in_use(), 1, "only the root frame remains");
    }
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.allocated(), pool.freed());
}
