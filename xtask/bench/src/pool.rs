//! The one frame pool every subject draws from: a pre-allocated, pre-touched
//! [`PoolAllocator`] in a global, reached by our address spaces as a
//! [`FrameAllocator`] (`&'static PoolAllocator`) and by axaddrspace through its
//! static-function [`PagingHandler`] ([`PeerHal`]). Both therefore pay the same
//! allocator cost per frame, and the figures compare page-table code, not `malloc`.

use std::cell::Cell;
use std::sync::OnceLock;

use addrspace::testing::PoolAllocator;
use addrspace::{FRAME_SIZE, FrameAllocator, HostPhysAddr, HostVirtAddr};
use ax_memory_addr::{PhysAddr, VirtAddr};
use ax_page_table_multiarch::PagingHandler;

static POOL: OnceLock<PoolAllocator> = OnceLock::new();

/// Host-physical base of the pool (1 GiB-aligned, above every HPA the benchmarks map
/// as plain numbers below it).
pub const POOL_BASE: usize = 0x80_0000_0000;

/// Creates the pool with `frames` frames and touches every byte of it once, so that no
/// measurement pays for the host kernel's first-touch page faults. Later calls return
/// the pool made by the first. It zeroes frames with hal-x86_64's `zero_memory`, as
/// an x86_64 hypervisor's allocator would (non-temporal stores for large blocks,
/// ordinary ones for single frames).
pub fn init(frames: usize) -> Result<&'static PoolAllocator, String> {
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    // SAFETY: `zero_memory` keeps the `ZeroFn` promise (its tests in hal-x86_64).
    let pool = POOL.get_or_init(|| unsafe {
        PoolAllocator::with_base(frames, POOL_BASE).zeroing_with(hal_x86_64::zero_memory)
    });
    let huge = back_with_huge_pages(pool, frames);
    eprintln!(
        "bench: pool of {} MiB, {} MiB of it in 2 MiB host pages",
        (frames * FRAME_SIZE) >> 20,
        huge >> 20
    );
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

unsafe extern "C" {
    /// `madvise(2)` from the C library std already links.
    fn madvise(addr: *mut core::ffi::c_void, len: usize, advice: i32) -> i32;
}

/// Linux `MADV_HUGEPAGE`.
const MADV_HUGEPAGE: i32 = 14;
/// Linux `MADV_COLLAPSE` (6.1+): make the range huge pages now.
const MADV_COLLAPSE: i32 = 25;

/// Asks the host kernel to back the pool with 2 MiB pages, as a hypervisor's direct
/// map is (so `phys_to_virt` memory costs the same host TLB misses as on real
/// hardware: almost none). Returns the bytes that are huge-page backed; failure only
/// costs accuracy, so it is reported, not fatal.
fn back_with_huge_pages(pool: &PoolAllocator, frames: usize) -> usize {
    const M2: usize = 0x20_0000;
    let start = pool
        .phys_to_virt(HostPhysAddr::from_usize(POOL_BASE))
        .as_usize();
    let end = start + frames * FRAME_SIZE;
    let (lo, hi) = (start.next_multiple_of(M2), end & !(M2 - 1));
    if lo >= hi {
        return 0;
    }
    for advice in [MADV_HUGEPAGE, MADV_COLLAPSE] {
        // SAFETY: `[lo, hi)` lies inside the pool's one host allocation, which lives
        // for the whole program; these advices change only how it is backed, never
        // its contents.
        let rc = unsafe { madvise(lo as *mut core::ffi::c_void, hi - lo, advice) };
        if rc != 0 {
            eprintln!(
                "bench: warning: madvise({advice}) on the pool failed: {}",
                std::io::Error::last_os_error()
            );
            return 0;
        }
    }
    hi - lo
}

/// Frames in use in the pool now.
pub fn in_use() -> usize {
    pool().in_use()
}

/// axaddrspace's HAL: static functions over the same global pool. With `ZERO` it
/// also zeroes every frame it hands out, as a HAL must for guest memory (axaddrspace
/// maps the frames of allocated areas as they come; it zeroes only its tables).
pub struct PeerHal<const ZERO: bool = false>;

impl<const ZERO: bool> PagingHandler for PeerHal<ZERO> {
    #[inline]
    fn alloc_frames(num: usize, align: usize) -> Option<PhysAddr> {
        let hpa = pool().alloc_frames(num, (align / FRAME_SIZE).max(1))?;
        if ZERO {
            let hva = pool().phys_to_virt(hpa).as_mut_ptr::<u8>();
            // SAFETY: the frames were just allocated and are not yet handed out; the
            // pool maps them contiguously and writable.
            unsafe { std::ptr::write_bytes(hva, 0, num * FRAME_SIZE) };
        }
        Some(PhysAddr::from_usize(hpa.as_usize()))
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

/// The pool through an allocator that knows which of its free frames are zero: the
/// frames the next `frames` single-frame allocations will take (the pool hands out
/// the lowest free frames first), zeroed once when it is made, outside any timing.
/// Its `alloc_zeroed` skips the zeroing of those frames, as an allocator of memory
/// fresh from the host does, and zeroes any other; every other call goes to the pool
/// unchanged, so a fault over it costs what the peer's costs but for the zeroing
/// (`fault_lazy_work`). Any frame given back makes every frame count as dirty again.
pub struct KnownZero {
    /// One bit per pool frame: zeroed by [`KnownZero::new`] and not handed out since.
    clean: Vec<u64>,
    /// Set by the first `dealloc_frames`: `clean` no longer holds.
    dirty: Cell<bool>,
    /// Frames `alloc_zeroed` handed out without zeroing.
    fresh: Cell<usize>,
}

impl KnownZero {
    /// Takes the next `frames` frames of the pool one by one, zeroes them and gives
    /// them back.
    ///
    /// # Safety
    ///
    /// While the result is alive, nothing but it takes frames from the pool (or
    /// nothing that writes them): a frame another user writes and gives back would
    /// be handed out as zero.
    pub unsafe fn new(frames: usize) -> Result<Self, String> {
        let (start, end) = pool().phys_range();
        let mut clean = vec![0u64; ((end.as_usize() - start.as_usize()) / FRAME_SIZE).div_ceil(64)];
        let mut taken = Vec::with_capacity(frames);
        while taken.len() < frames {
            let Some(f) = pool().alloc_frame() else { break };
            let hva = pool().phys_to_virt(f).as_mut_ptr::<u8>();
            // SAFETY: a frame just allocated, which the pool maps writable.
            unsafe { std::ptr::write_bytes(hva, 0, FRAME_SIZE) };
            let i = (f.as_usize() - start.as_usize()) / FRAME_SIZE;
            clean[i / 64] |= 1 << (i % 64);
            taken.push(f);
        }
        for &f in &taken {
            // SAFETY: allocated above, used by nothing.
            unsafe { pool().dealloc_frames(f, 1) };
        }
        if taken.len() < frames {
            return Err(format!("pool: {} of {frames} frames to zero", taken.len()));
        }
        Ok(Self {
            clean,
            dirty: Cell::new(false),
            fresh: Cell::new(0),
        })
    }

    /// Frames handed out as zero without zeroing them.
    pub fn fresh(&self) -> usize {
        self.fresh.get()
    }

    /// Whether the `count` frames at `hpa` were zeroed by `new` and not handed out
    /// since (they are being handed out now).
    #[inline]
    fn is_clean(&self, hpa: HostPhysAddr, count: usize) -> bool {
        let first = (hpa.as_usize() - POOL_BASE) / FRAME_SIZE;
        !self.dirty.get()
            && (first..first + count).all(|i| self.clean[i / 64] & (1 << (i % 64)) != 0)
    }
}

// SAFETY: every call but `alloc_zeroed` is the pool's; `alloc_zeroed` returns pool
// frames that are zero: zeroed here unless `clean` marks them, which holds frames
// zeroed by `new` that nobody has had since (a frame handed out leaves the pool's free
// frames, and only comes back through `dealloc_frames`, which ends `clean`; `new`'s
// caller promises no other user of the pool gives back frames meanwhile).
unsafe impl FrameAllocator for KnownZero {
    #[inline]
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        pool().alloc_frames(count, align_frames)
    }

    #[inline]
    fn alloc_zeroed(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        let hpa = pool().alloc_frames(count, align_frames)?;
        if self.is_clean(hpa, count) {
            self.fresh.set(self.fresh.get() + count);
        } else {
            // SAFETY: just allocated, so ours alone.
            unsafe { pool().zero_frames(hpa, count) };
        }
        Some(hpa)
    }

    #[inline]
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        self.dirty.set(true);
        // SAFETY: the caller's promise for this allocator is the pool's.
        unsafe { pool().dealloc_frames(hpa, count) }
    }

    #[inline]
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        pool().phys_to_virt(hpa)
    }

    #[inline]
    fn linear_offset(&self) -> Option<usize> {
        pool().linear_offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every byte of `count` frames at `hpa` as zero.
    fn zero(hpa: HostPhysAddr, count: usize) -> bool {
        let p = pool().phys_to_virt(hpa).as_ptr::<u8>();
        // SAFETY: frames the test holds; the pool maps them contiguously.
        (0..count * FRAME_SIZE).all(|i| unsafe { *p.add(i) } == 0)
    }

    #[test]
    fn known_zero_skips_only_the_frames_it_zeroed() {
        let frames = 64;
        init(frames).unwrap();
        // A previous owner's bytes in every frame.
        let all = pool().alloc_frames(frames, 1).unwrap();
        let p = pool().phys_to_virt(all).as_mut_ptr::<u8>();
        // SAFETY: the whole pool, just allocated; then given back unused.
        unsafe {
            std::ptr::write_bytes(p, 0xa5, frames * FRAME_SIZE);
            pool().dealloc_frames(all, frames);
        }
        // SAFETY: this test is the pool's only user.
        let kz = unsafe { KnownZero::new(8) }.unwrap();
        let known: Vec<HostPhysAddr> = (0..8).map(|_| kz.alloc_zeroed(1, 1).unwrap()).collect();
        assert_eq!(kz.fresh(), 8);
        assert!(known.iter().all(|&f| zero(f, 1)));
        // Beyond the frames it zeroed, it zeroes.
        let other = kz.alloc_zeroed(2, 1).unwrap();
        assert_eq!(kz.fresh(), 8);
        assert!(zero(other, 2));
        // A frame given back may be dirty: from then on every frame is zeroed.
        // SAFETY: allocated above, unused.
        unsafe { kz.dealloc_frames(known[0], 1) };
        assert_eq!(kz.alloc_zeroed(1, 1), Some(known[0]));
        assert_eq!(kz.fresh(), 8);
        // SAFETY: allocated above, unused.
        unsafe {
            kz.dealloc_frames(other, 2);
            for &f in &known {
                kz.dealloc_frames(f, 1);
            }
        }
        assert_eq!(in_use(), 0);
    }
}
