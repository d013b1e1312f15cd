//! The one frame pool every subject draws from: a pre-allocated, pre-touched
//! [`PoolAllocator`] in a global, reached by our address spaces as a
//! [`FrameAllocator`] (`&'static PoolAllocator`) and by axaddrspace through its
//! static-function [`PagingHandler`] ([`PeerHal`]). Both therefore pay the same
//! allocator cost per frame, and the figures compare page-table code, not `malloc`.

use std::sync::OnceLock;

use addrspace::testing::PoolAllocator;
use addrspace::{FRAME_SIZE, FrameAllocator, HostPhysAddr};
use ax_memory_addr::{PhysAddr, VirtAddr};
use ax_page_table_multiarch::PagingHandler;

static POOL: OnceLock<PoolAllocator> = OnceLock::new();

/// Host-physical base of the pool (1 GiB-aligned, above every HPA the benchmarks map
/// as plain numbers below it).
pub const POOL_BASE: usize = 0x80_0000_0000;

/// Creates the pool with `frames` frames and touches every byte of it once, so that no
/// measurement pays for the host kernel's first-touch page faults. Later calls return
/// the pool made by the first.
pub fn init(frames: usize) -> Result<&'static PoolAllocator, String> {
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let pool = POOL.get_or_init(|| PoolAllocator::with_base(frames, POOL_BASE));
    let all = pool
        .alloc_frames(frames, 1)
        .ok_or_else(|| format!("cannot take all {frames} frames of a fresh pool"))?;
    let hva = pool.phys_to_virt(all).as_mut_ptr::<u8>();
    // SAFETY: `all` is the whole pool, allocated just above and used by nothing else;
    // the pool maps it contiguously and writable.
    unsafe { std::ptr::write_bytes(hva, 0, frames * FRAME_SIZE) };
    // SAFETY: the allocation above, given back whole, no longer used.
    unsafe { pool.dealloc_frames(all, frames) };
    Ok(pool)
}

/// The pool made by [`init`].
///
/// # Panics
///
/// If [`init`] has not run: `main` calls it before any benchmark.
pub fn pool() -> &'static PoolAllocator {
    #[allow(clippy::expect_used)] // main initialises the pool first
    POOL.get().expect("pool::init runs before any benchmark")
}

/// Frames in use in the pool now.
pub fn in_use() -> usize {
    pool().in_use()
}

/// axaddrspace's HAL: static functions over the same global pool.
pub struct PeerHal;

impl PagingHandler for PeerHal {
    #[inline]
    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        pool()
            .alloc_frames(num, (align / FRAME_SIZE).max(1))
            .map(|hpa| PhysAddr::from_usize(hpa.as_usize()))
    }

    #[inline]
    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        // SAFETY: axaddrspace gives back only frames it obtained from `alloc_frames`
        // above, with the same count, once it no longer links them (its own contract
        // with `PagingHandler`); the pool panics on anything else.
        unsafe { pool().dealloc_frames(HostPhysAddr::from_usize(paddr.as_usize()), num) }
    }

    #[inline]
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        VirtAddr::from_usize(
            pool()
                .phys_to_virt(HostPhysAddr::from_usize(paddr.as_usize()))
                .as_usize(),
        )
    }
}
