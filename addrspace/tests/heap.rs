//! Host heap used by the address space beyond its page tables, measured with a
//! counting global allocator (one test in this binary, so nothing else allocates
//! meanwhile): mapping, unmapping and holding until the flush completes an eager
//! area of 4 KiB pages each stay within 64 KiB, whatever the size, and an eager map
//! the allocator cannot serve fails without building anything proportional to it.
//! (`cargo xtask bench` reports the same figures for 1 GiB.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use addrspace::testing::PoolAllocator;
use addrspace::{AddrSpace, ArmStage2Ipa40, Ept, Error, MappingFlags, NestedFormat, Populate};

mod common;

use common::{G1, K4, M2, gpa};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f`; returns its result, the heap it added (in use after minus before) and
/// its peak above the heap in use before.
fn measured<T>(f: impl FnOnce() -> T) -> (T, isize, usize) {
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    let after = IN_USE.load(Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    (out, after as isize - before as isize, peak)
}

const LIMIT: usize = 64 << 10;

/// Eager map, unmap and pending flush of `size` bytes at `at` (4 KiB pages).
fn check<F: NestedFormat>(pool: &PoolAllocator, at: usize, size: usize) {
    let mut s = AddrSpace::<F, _>::new(pool).unwrap();
    let ((), _, map_peak) = measured(|| {
        s.map_alloc(gpa(at), size, MappingFlags::RW, Populate::Eager)
            .unwrap()
    });
    let (flush, held, unmap_peak) = measured(|| s.unmap(gpa(at), size).unwrap());
    let name = F::NAME;
    eprintln!(
        "{name}: {size:#x} at {at:#x}: map peak {map_peak} B, unmap peak {unmap_peak} B, pending flush {held} B"
    );
    assert!(
        map_peak <= LIMIT,
        "{name}: map of {size:#x} peaked at {map_peak} bytes"
    );
    assert!(
        unmap_peak <= LIMIT,
        "{name}: unmap peaked at {unmap_peak} bytes"
    );
    assert!(
        held <= LIMIT as isize,
        "{name}: the pending flush holds {held} bytes"
    );
    s.complete_flush(flush).unwrap();
    drop(s);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn heap_beyond_page_tables_stays_within_64k() {
    let pool = PoolAllocator::with_base(40_000, 0x10_0000_0000);
    // 128 MiB of 4 KiB pages, 1 GiB-aligned, then cut at both ends by 2 MiB + 4 KiB.
    check::<Ept>(&pool, G1, 128 << 20);
    check::<ArmStage2Ipa40>(&pool, G1 + M2 + K4, (128 << 20) - 2 * (M2 + K4));
    // An eager map far beyond the pool: refused, with no heap proportional to it.
    let mut s = AddrSpace::<Ept, _>::new(&pool).unwrap();
    let (got, _, peak) =
        measured(|| s.map_alloc(gpa(0), 1 << 46, MappingFlags::RW, Populate::Eager));
    assert!(matches!(got, Err(Error::NoMemory { .. })), "{got:?}");
    assert!(peak <= LIMIT, "a refused map peaked at {peak} bytes");
}
