//! Host heap beyond the page tables for 1 GiB of 4 KiB guest pages (issue 10): the
//! peak while an eager 1 GiB area is mapped, the peak while it is unmapped, and what
//! stays allocated while its flush is pending. Measured with the counting global
//! allocator of this binary ([`Counting`]); the figures are deterministic, so one
//! round is enough. The peer frees at unmap (it has no pending flush).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use addrspace::{AddrSpace, Ept, GuestPhysAddr, MappingFlags, Populate};
use axvm_types::GuestPhysAddr as PeerGpa;

use crate::harness::{Figure, Target};
use crate::pool::{self, PeerHal};

/// The system allocator, counting the bytes in use and their peak.
pub struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Guest-physical base of the measured area.
const GPA: usize = 0x4000_0000;
/// Its size: 1 GiB of 4 KiB pages.
pub const SIZE: usize = 1 << 30;

/// Runs `f`; returns its result, the heap it left allocated and its peak above the
/// heap in use before (the measuring thread is the only one allocating).
fn measured<T>(f: impl FnOnce() -> T) -> (T, isize, usize) {
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    let after = IN_USE.load(Ordering::Relaxed);
    (
        out,
        after as isize - before as isize,
        PEAK.load(Ordering::Relaxed) - before,
    )
}

/// `[map peak, unmap peak, pending flush]` in bytes, for our EPT space.
fn ours() -> Result<[f64; 3], String> {
    let mut s = AddrSpace::<Ept, _>::new(pool::pool()).map_err(|e| format!("ours: new: {e}"))?;
    let gpa = GuestPhysAddr::from_usize(GPA);
    let (r, _, map) = measured(|| s.map_alloc(gpa, SIZE, MappingFlags::RW, Populate::Eager));
    r.map_err(|e| format!("ours: map_alloc 1 GiB: {e}"))?;
    let (flush, held, unmap) = measured(|| s.unmap(gpa, SIZE));
    let flush = flush.map_err(|e| format!("ours: unmap 1 GiB: {e}"))?;
    s.complete_flush(flush)
        .map_err(|e| format!("ours: complete_flush: {e}"))?;
    Ok([map as f64, unmap as f64, held.max(0) as f64])
}

/// `[map peak, unmap peak]` in bytes, for axaddrspace.
fn peer() -> Result<[f64; 2], String> {
    let mut s = axaddrspace::AddrSpace::<PeerHal>::new_empty(4, PeerGpa::from_usize(0), 1 << 48)
        .map_err(|e| format!("peer: new_empty: {e:?}"))?;
    let rw = axaddrspace::MappingFlags::READ | axaddrspace::MappingFlags::WRITE;
    let gpa = PeerGpa::from_usize(GPA);
    let (r, _, map) = measured(|| s.map_alloc(gpa, SIZE, rw, true));
    r.map_err(|e| format!("peer: map_alloc 1 GiB: {e:?}"))?;
    let (r, _, unmap) = measured(|| s.unmap(gpa, SIZE));
    r.map_err(|e| format!("peer: unmap 1 GiB: {e:?}"))?;
    Ok([map as f64, unmap as f64])
}

/// The heap figures.
pub fn run() -> Result<Vec<Figure>, String> {
    let before = pool::in_use();
    let [map, unmap, held] = ours()?;
    let [peer_map, peer_unmap] = peer()?;
    if pool::in_use() != before {
        return Err("heap workload: frames left in the pool".into());
    }
    let limit = Target::OursAtMost(64.0 * 1024.0);
    let note = "host heap beyond the page tables, eager area of 1 GiB in 4 KiB pages";
    Ok(vec![
        Figure::pair("heap_map_1g_4k", "bytes", map, peer_map)
            .target(limit)
            .note(format!("{note}: peak while mapping")),
        Figure::pair("heap_unmap_1g_4k", "bytes", unmap, peer_unmap)
            .target(limit)
            .note(format!("{note}: peak while unmapping")),
        Figure::solo("heap_pending_flush_1g_4k", "bytes", held)
            .target(limit)
            .note(format!(
                "{note}: held until the flush completes (the peer frees at once)"
            )),
    ])
}
