//! `Populate::LazyHuge` (issue 17): a lazy area whose faults map a whole zeroed
//! 2 MiB block where the block lies in the area and none of it is mapped, a 4 KiB
//! page elsewhere; its blocks are split, unmapped and freed like any leaf, without
//! leaking or double-freeing a frame (the pool panics on a double free).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use addrspace::testing::PoolAllocator;
use addrspace::{
    AccessKind, AddrSpace, ArmStage2Ipa40, Ept, FaultOutcome, FrameAllocator, MappingFlags,
    NestedFormat, PageSize, Populate, Sv39x4,
};

mod common;

use common::{K4, M2, gpa};

/// What a fault at `at` mapped: `(start, size)`.
fn fault<F: NestedFormat>(s: &mut AddrSpace<F, &PoolAllocator>, at: usize) -> (usize, PageSize) {
    match s.handle_page_fault(gpa(at), AccessKind::Write).unwrap() {
        FaultOutcome::Mapped { gpa, size, .. } => (gpa.as_usize(), size),
        other => panic!("{}: fault at {at:#x}: {other:?}", F::NAME),
    }
}

fn blocks_where_they_fit<F: NestedFormat>() {
    let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
    let mut s = AddrSpace::<F, _>::new(&pool).unwrap();
    // Starts 4 KiB past a block boundary and ends 8 KiB into one: only the two
    // blocks in between lie inside the area.
    let (start, end) = (0x4000_1000, 0x4060_2000);
    s.map_alloc(
        gpa(start),
        end - start,
        MappingFlags::RW,
        Populate::LazyHuge,
    )
    .unwrap();
    assert_eq!(fault(&mut s, start + 0x10), (start, PageSize::Size4K));
    assert_eq!(
        fault(&mut s, 0x4020_0000 + 0x1_2345),
        (0x4020_0000, PageSize::Size2M)
    );
    assert_eq!(fault(&mut s, 0x405f_f000), (0x4040_0000, PageSize::Size2M));
    assert_eq!(fault(&mut s, 0x4060_1008), (0x4060_1000, PageSize::Size4K));
    // The whole block translates, zeroed, to one 2 MiB leaf; a second fault in it is
    // spurious and takes nothing.
    let t = s.translate(gpa(0x4020_0000 + 0x1f_f000)).unwrap();
    assert_eq!(t.size, PageSize::Size2M);
    let mut buf = vec![0xffu8; M2];
    s.read(gpa(0x4020_0000), &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "{}: block not zeroed", F::NAME);
    let in_use = pool.in_use();
    assert_eq!(
        s.handle_page_fault(gpa(0x4020_0000 + 0x5000), AccessKind::Read),
        Ok(FaultOutcome::Spurious)
    );
    assert_eq!(pool.in_use(), in_use);
    assert_eq!(s.data_frames(), 2 + 2 * 512);
    // A whole block unmapped gives its 512 frames back with the flush.
    let f = s.unmap(gpa(0x4020_0000), M2).unwrap();
    s.complete_flush(f).unwrap();
    assert_eq!(s.data_frames(), 2 + 512);
    drop(s);
    assert_eq!(pool.in_use(), 0, "{}: frames leaked", F::NAME);
}

#[test]
fn lazy_huge_faults_map_2m_blocks_where_they_fit() {
    blocks_where_they_fit::<Ept>();
    blocks_where_they_fit::<ArmStage2Ipa40>();
    blocks_where_they_fit::<Sv39x4>();
}

/// An EPT space with two 2 MiB blocks of lazy-huge RAM at 0x4000_0000.
fn two_lazy_huge_blocks(pool: &PoolAllocator) -> AddrSpace<Ept, &PoolAllocator> {
    let mut s = AddrSpace::<Ept, _>::new(pool).unwrap();
    s.map_alloc(
        gpa(0x4000_0000),
        2 * M2,
        MappingFlags::RW,
        Populate::LazyHuge,
    )
    .unwrap();
    s
}

/// A block part of which was populated (by the host's copy) is filled page by page.
#[test]
fn lazy_huge_block_with_a_populated_page_faults_in_4k_pages() {
    let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
    let mut s = two_lazy_huge_blocks(&pool);
    s.populate(gpa(0x4000_3000), 1).unwrap();
    s.write(gpa(0x4000_3000), &[7]).unwrap();
    assert_eq!(fault(&mut s, 0x4000_8000), (0x4000_8000, PageSize::Size4K));
    assert_eq!(fault(&mut s, 0x4020_8000), (0x4020_0000, PageSize::Size2M));
    let mut b = [0u8];
    s.read(gpa(0x4000_3000), &mut b).unwrap();
    assert_eq!(b, [7]);
    drop(s);
    assert_eq!(pool.in_use(), 0);
}

/// No aligned 2 MiB of free frames: the fault maps a 4 KiB page instead of failing.
#[test]
fn lazy_huge_without_a_free_block_maps_a_page() {
    let pool = PoolAllocator::with_base(600, 0x1_0000_0000);
    let hog = pool.alloc_frames(1, 1).unwrap();
    let mut s = AddrSpace::<Ept, _>::new(&pool).unwrap();
    s.map_alloc(gpa(0x4000_0000), M2, MappingFlags::RW, Populate::LazyHuge)
        .unwrap();
    // 600 frames with the first taken hold no 512-aligned run of 512.
    assert_eq!(fault(&mut s, 0x4000_0000), (0x4000_0000, PageSize::Size4K));
    drop(s);
    // SAFETY: allocated above, unused.
    unsafe { pool.dealloc_frames(hog, 1) };
    assert_eq!(pool.in_use(), 0);
}

/// Unmapping and protecting parts of a block split it; each of its frames is given
/// back exactly once, whether with the flush of a partial unmap, of the rest, or at
/// drop.
#[test]
fn lazy_huge_block_split_by_unmap_and_protect_frees_each_frame_once() {
    let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
    let mut s = two_lazy_huge_blocks(&pool);
    assert_eq!(fault(&mut s, 0x4000_0000), (0x4000_0000, PageSize::Size2M));
    assert_eq!(fault(&mut s, 0x4020_0000), (0x4020_0000, PageSize::Size2M));
    s.write(gpa(0x4000_7000), &[1, 2, 3]).unwrap();
    let base = pool.in_use();
    // One page out of the first block: it alone is freed by the flush.
    let f = s.unmap(gpa(0x4000_4000), K4).unwrap();
    assert!(s.translate(gpa(0x4000_4000)).is_err());
    let held = pool.in_use();
    s.complete_flush(f).unwrap();
    assert_eq!(pool.in_use(), held - 1, "the unmapped page's frame");
    assert!(pool.in_use() > base - 1, "a split table was added");
    // A protect in the second block splits it, data and frames stay.
    let f = s.protect(gpa(0x4020_1000), K4, MappingFlags::READ).unwrap();
    s.complete_flush(f).unwrap();
    assert_eq!(
        s.translate(gpa(0x4020_1000)).unwrap().flags,
        MappingFlags::READ
    );
    let mut b = [0u8; 3];
    s.read(gpa(0x4000_7000), &mut b).unwrap();
    assert_eq!(b, [1, 2, 3]);
    // The rest of the first block, then drop with the split second block mapped.
    for (at, len) in [(0x4000_0000, 4 * K4), (0x4000_5000, M2 - 5 * K4)] {
        let f = s.unmap(gpa(at), len).unwrap();
        s.complete_flush(f).unwrap();
    }
    drop(s);
    assert_eq!(pool.in_use(), 0, "frames leaked");
}

/// The ranges [`recording_zero`] was given, in bytes.
static ZEROED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// A platform routine that records the size of each call and zeroes (used by one
/// test only).
unsafe fn recording_zero(ptr: *mut u8, len: usize) {
    ZEROED.lock().unwrap().push(len);
    // SAFETY: the caller's promise.
    unsafe { addrspace::zero_plain(ptr, len) };
}

/// Over frames a previous owner filled, a 2 MiB fault's block reaches the guest
/// zeroed, by one call of the allocator's routine for the whole block (what lets a
/// platform zero it without read-for-ownership); a 4 KiB fault's page too.
#[test]
fn lazy_huge_block_over_dirty_frames_is_zeroed_by_the_allocators_routine() {
    let frames = 2048;
    // SAFETY: `recording_zero` zeroes exactly its range with ordinary stores.
    let pool =
        unsafe { PoolAllocator::with_base(frames, 0x1_0000_0000).zeroing_with(recording_zero) };
    let all = pool.alloc_frames(frames, 1).unwrap();
    let p = pool.phys_to_virt(all).as_mut_ptr::<u8>();
    // SAFETY: the whole pool, just allocated; given back unused.
    unsafe {
        p.write_bytes(0xa5, frames * K4);
        pool.dealloc_frames(all, frames);
    }
    let mut s = two_lazy_huge_blocks(&pool);
    ZEROED.lock().unwrap().clear();
    assert_eq!(fault(&mut s, 0x4020_0018), (0x4020_0000, PageSize::Size2M));
    assert!(
        ZEROED.lock().unwrap().contains(&M2),
        "the block was not zeroed whole"
    );
    let mut buf = vec![0xffu8; M2];
    s.read(gpa(0x4020_0000), &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0),
        "the guest sees a previous owner's data"
    );
    // A populated page makes the other block fault page by page: zeroed too.
    s.populate(gpa(0x4000_3000), 1).unwrap();
    assert_eq!(fault(&mut s, 0x4000_8000), (0x4000_8000, PageSize::Size4K));
    let mut page = vec![0xffu8; K4];
    for at in [0x4000_3000, 0x4000_8000] {
        s.read(gpa(at), &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0), "page {at:#x} not zeroed");
    }
    drop(s);
    assert_eq!(pool.in_use(), 0);
}
