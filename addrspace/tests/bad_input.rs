//! Bad inputs: each gives its error variant (naming the bad value) and leaves the space
//! exactly as it was, with no frame leaked.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use addrspace::testing::PoolAllocator;
use addrspace::{
    AccessKind, AddrSpace, Area, ArmStage2Ipa40, Ept, Error, FaultOutcome, GpaRange, GuestPhysAddr,
    MappingFlags, NestedFormat, Npt, Populate, Sv39x4, Translation,
};

mod common;

use common::{K4, M2, gpa, hpa};

type Space<'a, F> = AddrSpace<F, &'a PoolAllocator>;

/// Everything observable about a space.
#[derive(Debug, PartialEq)]
struct Snapshot {
    areas: Vec<Area>,
    leaves: Vec<(GuestPhysAddr, Translation)>,
    in_use: usize,
}

fn snapshot<F: NestedFormat>(space: &Space<'_, F>, pool: &PoolAllocator) -> Snapshot {
    let mut leaves = Vec::new();
    space.page_table().for_each_leaf(|g, t| leaves.push((g, t)));
    Snapshot {
        areas: space.areas().copied().collect(),
        leaves,
        in_use: pool.in_use(),
    }
}

/// A space with a lazy area, an eager area, a linear device area and a reserved area.
fn populated<F: NestedFormat>(pool: &PoolAllocator) -> Space<'_, F> {
    let mut s = AddrSpace::<F, _>::new(pool).unwrap();
    s.map_alloc(
        gpa(0x4000_0000),
        0x10_0000,
        MappingFlags::RWX,
        Populate::Eager,
    )
    .unwrap();
    s.map_alloc(gpa(0x5000_0000), 0x4_0000, MappingFlags::RW, Populate::Lazy)
        .unwrap();
    // SAFETY: a device mapping; the test never reads through it.
    unsafe {
        s.map_linear(
            gpa(0x0900_0000),
            hpa(0x0900_0000),
            K4,
            MappingFlags::DEVICE_RW,
        )
        .unwrap()
    };
    s.map_reserved(gpa(0x0b00_0000), K4).unwrap();
    s
}

/// Runs `bad` on a populated space and checks it fails with an error matching
/// `expect`, changing nothing.
fn refused<F: NestedFormat>(
    bad: impl FnOnce(&mut Space<'_, F>) -> Result<(), Error>,
    expect: impl FnOnce(&Error) -> bool,
) {
    let pool = PoolAllocator::new(4096);
    let mut space = populated::<F>(&pool);
    let before = snapshot(&space, &pool);
    let err = bad(&mut space).expect_err("bad input accepted");
    pool.never_fail();
    assert!(expect(&err), "{}: unexpected error {err:?}", F::NAME);
    assert_eq!(
        snapshot(&space, &pool),
        before,
        "{}: {err} changed the space",
        F::NAME
    );
}

#[test]
fn unaligned_gpa_hpa_size() {
    refused::<Ept>(
        |s| s.map_alloc(gpa(0x6000_0800), K4, MappingFlags::RW, Populate::Lazy),
        |e| {
            matches!(
                e,
                Error::Unaligned {
                    what: "gpa",
                    value: 0x6000_0800,
                    align: 0x1000
                }
            )
        },
    );
    refused::<Ept>(
        // SAFETY: refused before anything is mapped.
        |s| unsafe { s.map_linear(gpa(0x6000_0000), hpa(0x8000_0010), K4, MappingFlags::RW) },
        |e| {
            matches!(
                e,
                Error::Unaligned {
                    what: "hpa",
                    value: 0x8000_0010,
                    ..
                }
            )
        },
    );
    refused::<Ept>(
        |s| s.map_alloc(gpa(0x6000_0000), 0x1800, MappingFlags::RW, Populate::Eager),
        |e| {
            matches!(
                e,
                Error::Unaligned {
                    what: "size",
                    value: 0x1800,
                    ..
                }
            )
        },
    );
    refused::<Ept>(
        |s| s.unmap(gpa(0x4000_0010), K4).map(drop),
        |e| matches!(e, Error::Unaligned { what: "gpa", .. }),
    );
    refused::<Ept>(
        |s| {
            s.protect(gpa(0x4000_0000), 0x10, MappingFlags::READ)
                .map(drop)
        },
        |e| matches!(e, Error::Unaligned { what: "size", .. }),
    );
}

#[test]
fn zero_size_and_overflow() {
    refused::<Npt>(
        |s| s.map_alloc(gpa(0x6000_0000), 0, MappingFlags::RW, Populate::Eager),
        |e| matches!(e, Error::ZeroSize { gpa } if gpa.as_usize() == 0x6000_0000),
    );
    refused::<Npt>(
        |s| s.unmap(gpa(0x4000_0000), 0).map(drop),
        |e| matches!(e, Error::ZeroSize { .. }),
    );
    refused::<Npt>(
        |s| s.map_reserved(gpa(usize::MAX & !0xfff), 0x2000),
        |e| matches!(e, Error::Overflow { size: 0x2000, .. }),
    );
}

#[test]
fn beyond_the_format_widths() {
    // Arm stage-2 with a 40-bit IPA: the range may not end above 1 << 40.
    refused::<ArmStage2Ipa40>(
        |s| {
            s.map_alloc(
                gpa((1 << 40) - K4),
                2 * K4,
                MappingFlags::RW,
                Populate::Lazy,
            )
        },
        |e| matches!(e, Error::OutOfRange { what: "gpa", end, limit, .. } if *end == (1 << 40) + K4 && *limit == 1 << 40),
    );
    // Sv39x4 translates 41 bits.
    refused::<Sv39x4>(
        |s| s.map_reserved(gpa(1 << 41), K4),
        |e| matches!(e, Error::OutOfRange { what: "gpa", limit, .. } if *limit == 1 << 41),
    );
    // Arm descriptors hold 48-bit output addresses.
    refused::<ArmStage2Ipa40>(
        // SAFETY: refused before anything is mapped.
        |s| unsafe { s.map_linear(gpa(0x6000_0000), hpa(1 << 48), K4, MappingFlags::RW) },
        |e| matches!(e, Error::OutOfRange { what: "hpa", limit, .. } if *limit == 1 << 48),
    );
}

#[test]
fn overlap_partial_and_full_names_the_existing_area() {
    let eager = GpaRange::new(gpa(0x4000_0000), 0x10_0000).unwrap();
    refused::<Ept>(
        |s| s.map_alloc(gpa(0x3fff_f000), 0x2000, MappingFlags::RW, Populate::Lazy),
        |e| matches!(e, Error::Overlap { existing, .. } if *existing == eager),
    );
    refused::<Ept>(
        |s| {
            s.map_alloc(
                gpa(0x4000_0000),
                0x10_0000,
                MappingFlags::RW,
                Populate::Eager,
            )
        },
        |e| matches!(e, Error::Overlap { requested, existing } if *existing == eager && *requested == eager),
    );
    refused::<Ept>(
        |s| {
            s.map_alloc(
                gpa(0x3000_0000),
                0x3000_0000,
                MappingFlags::RW,
                Populate::Lazy,
            )
        },
        |e| matches!(e, Error::Overlap { existing, .. } if *existing == eager),
    );
    refused::<Ept>(
        |s| s.map_reserved(gpa(0x0b00_0000), K4),
        |e| matches!(e, Error::Overlap { existing, .. } if existing.start().as_usize() == 0x0b00_0000),
    );
}

#[test]
fn unmap_and_protect_of_a_hole() {
    refused::<Sv39x4>(
        |s| s.unmap(gpa(0x7000_0000), K4).map(drop),
        |e| matches!(e, Error::NotMapped { gpa } if gpa.as_usize() == 0x7000_0000),
    );
    // A range that starts in an area and runs past its end: the hole's first address.
    refused::<Sv39x4>(
        |s| s.unmap(gpa(0x400f_f000), 0x2000).map(drop),
        |e| matches!(e, Error::NotMapped { gpa } if gpa.as_usize() == 0x4010_0000),
    );
    refused::<Sv39x4>(
        |s| {
            s.protect(gpa(0x7000_0000), K4, MappingFlags::READ)
                .map(drop)
        },
        |e| matches!(e, Error::NotMapped { .. }),
    );
}

#[test]
fn flags_a_format_cannot_encode() {
    refused::<Ept>(
        |s| s.map_alloc(gpa(0x6000_0000), K4, MappingFlags::WRITE, Populate::Eager),
        |e| matches!(e, Error::InvalidFlags { flags, .. } if *flags == MappingFlags::WRITE),
    );
    refused::<Npt>(
        |s| {
            s.protect(gpa(0x4000_0000), K4, MappingFlags::EXECUTE)
                .map(drop)
        },
        |e| matches!(e, Error::InvalidFlags { .. }),
    );
    refused::<Sv39x4>(
        |s| s.map_alloc(gpa(0x6000_0000), K4, MappingFlags::empty(), Populate::Lazy),
        |e| matches!(e, Error::InvalidFlags { .. }),
    );
    refused::<ArmStage2Ipa40>(
        |s| {
            s.map_alloc(
                gpa(0x6000_0000),
                K4,
                MappingFlags::RW | MappingFlags::DEVICE | MappingFlags::UNCACHED,
                Populate::Lazy,
            )
        },
        |e| matches!(e, Error::InvalidFlags { .. }),
    );
}

#[test]
fn allocator_exhausted_at_first_middle_and_last_frame_of_a_populate() {
    let frames = 64;
    // The last value lets every data frame through and fails on the page table.
    for fail_at in [0, frames / 2, frames - 1, frames] {
        refused::<Ept>(
            |s| {
                s.allocator().fail_after(fail_at);
                s.map_alloc(
                    gpa(0x6000_0000),
                    frames * K4,
                    MappingFlags::RW,
                    Populate::Eager,
                )
            },
            |e| matches!(e, Error::NoMemory { allocated, .. } if *allocated == fail_at),
        );
    }
}

#[test]
fn fault_outside_any_area_and_on_reserved() {
    let pool = PoolAllocator::new(4096);
    let mut space = populated::<Ept>(&pool);
    let before = snapshot(&space, &pool);
    for g in [0, 0x7000_0000, 0x4010_0000, usize::MAX, 1 << 60] {
        assert_eq!(
            space.handle_page_fault(gpa(g), AccessKind::Read).unwrap(),
            FaultOutcome::NoArea
        );
    }
    assert!(matches!(
        space
            .handle_page_fault(gpa(0x0b00_0004), AccessKind::Write)
            .unwrap(),
        FaultOutcome::Reserved { .. }
    ));
    assert_eq!(snapshot(&space, &pool), before);
}

#[test]
fn read_and_write_across_a_hole_copy_nothing() {
    let pool = PoolAllocator::new(4096);
    let space = populated::<Ept>(&pool);
    // The eager area ends at 0x4010_0000; a 16-byte write across its end fails at
    // the first byte of the hole and writes nothing.
    let end = 0x4010_0000;
    let err = space.write(gpa(end - 8), &[0xee; 16]).unwrap_err();
    assert_eq!(err, Error::NoArea { gpa: gpa(end) });
    assert_eq!(space.read_obj::<u64>(gpa(end - 8)).unwrap(), 0);
    let mut buf = [0x55u8; 16];
    assert_eq!(
        space.read(gpa(end - 8), &mut buf),
        Err(Error::NoArea { gpa: gpa(end) })
    );
    assert_eq!(buf, [0x55; 16]);
    // Reserved and device areas are refused by name.
    assert_eq!(
        space.read_obj::<u32>(gpa(0x0b00_0000)),
        Err(Error::Reserved {
            gpa: gpa(0x0b00_0000)
        })
    );
    assert_eq!(
        space.write_obj(gpa(0x0900_0000), &1u32),
        Err(Error::DeviceMemory {
            gpa: gpa(0x0900_0000)
        })
    );
    // A copy whose end overflows the address space.
    assert!(matches!(
        space.read(gpa(usize::MAX - 3), &mut buf),
        Err(Error::Overflow { .. })
    ));
}

#[test]
fn every_format_refuses_the_same_ranges() {
    fn check<F: NestedFormat>() {
        refused::<F>(
            |s| s.map_alloc(gpa(0x4000_0000), K4, MappingFlags::RW, Populate::Lazy),
            |e| matches!(e, Error::Overlap { .. }),
        );
        refused::<F>(
            |s| s.unmap(gpa(0x6000_0000), M2).map(drop),
            |e| matches!(e, Error::NotMapped { .. }),
        );
    }
    check::<Ept>();
    check::<Npt>();
    check::<ArmStage2Ipa40>();
    check::<addrspace::ArmStage2Ipa48>();
    check::<Sv39x4>();
    check::<addrspace::Sv48x4>();
}
