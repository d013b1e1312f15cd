//! The two implementations under test behind one small trait, [`Subject`], so every
//! workload is written once and runs the same code against each: [`Ours`] (our
//! `addrspace::AddrSpace` in any nested format) and [`Peer`] (axaddrspace 0.5.15's
//! `AddrSpace`, x86 EPT on this host).

use addrspace::testing::PoolAllocator;
use addrspace::{
    AccessKind, AddrSpace, FRAME_SIZE, FaultOutcome, FrameAllocator, GuestPhysAddr, HostPhysAddr,
    MappingFlags, NestedFormat, Populate,
};
use axvm_types::GuestPhysAddr as PeerGpa;

use crate::pool::{self, KnownZero, PeerHal};

/// What a workload needs from an address space. Errors are benchmark failures, carried
/// as text to `main`.
pub trait Subject: Sized {
    /// Name in tables.
    const NAME: &'static str;
    /// Page-table frames of an empty space (its root).
    const ROOT_FRAMES: usize;

    /// An empty space covering at least the first 1 TiB of guest-physical addresses.
    fn new() -> Result<Self, String>;
    /// Maps `[gpa, gpa + size)` to `[hpa, hpa + size)` read-write.
    fn map_linear(&mut self, gpa: usize, hpa: usize, size: usize) -> Result<(), String>;
    /// Maps `[gpa, gpa + size)` to frames from the pool, now or at first fault.
    fn map_alloc(&mut self, gpa: usize, size: usize, populate: bool) -> Result<(), String>;
    /// Removes `[gpa, gpa + size)`, frames released (ours completes the flush at once).
    fn unmap(&mut self, gpa: usize, size: usize) -> Result<(), String>;
    /// The host-physical address of `gpa`, if translated.
    fn translate(&self, gpa: usize) -> Option<usize>;
    /// Handles a write fault at `gpa`; whether the guest may resume.
    fn fault(&mut self, gpa: usize) -> bool;
    /// Copies guest memory at `gpa` into `buf`.
    fn read(&self, gpa: usize, buf: &mut [u8]) -> Result<(), String>;
    /// Frames handed out as already zero (not zeroed by the allocator), when the
    /// subject's allocator knows such frames.
    fn frames_known_zero(&self) -> Option<usize> {
        None
    }
    /// Where the hypervisor reads the leaf descriptor that translates each of
    /// `gpas` (all translated), for the cold-translate floor; `None` when the
    /// subject does not say (the peer).
    fn leaf_descriptors(&self, _gpas: &[usize]) -> Option<Vec<*const u64>> {
        None
    }
}

/// Where an [`Ours`] subject gets its frames: the shared pool, or the pool through
/// [`KnownZero`].
pub trait Frames: FrameAllocator + Sized {
    /// The allocator for a new space.
    fn for_space() -> Result<Self, String>;
    /// See [`Subject::frames_known_zero`].
    fn known_zero(&self) -> Option<usize> {
        None
    }
}

impl Frames for &'static PoolAllocator {
    fn for_space() -> Result<Self, String> {
        Ok(pool::pool())
    }
}

/// Frames one lazy area of [`crate::space::ALLOC_AREA`] takes (data and tables),
/// with room to spare.
const KNOWN_ZERO_FRAMES: usize = crate::space::ALLOC_AREA / FRAME_SIZE + 1024;

impl Frames for KnownZero {
    fn for_space() -> Result<Self, String> {
        // SAFETY: the bench runs one workload at a time on one thread: while this
        // space lives, only it takes frames from the pool.
        unsafe { KnownZero::new(KNOWN_ZERO_FRAMES) }
    }
    fn known_zero(&self) -> Option<usize> {
        Some(self.fresh())
    }
}

/// Our address space in format `F`, frames from the shared pool (`A` says how).
pub struct Ours<F: NestedFormat, A: Frames = &'static PoolAllocator>(pub AddrSpace<F, A>);

impl<F: NestedFormat, A: Frames> Subject for Ours<F, A> {
    const NAME: &'static str = F::NAME;
    const ROOT_FRAMES: usize = F::ROOT_FRAMES;

    fn new() -> Result<Self, String> {
        AddrSpace::new(A::for_space()?)
            .map(Ours)
            .map_err(|e| format!("ours ({}): new: {e}", F::NAME))
    }

    fn frames_known_zero(&self) -> Option<usize> {
        self.0.allocator().known_zero()
    }

    #[inline]
    fn map_linear(&mut self, gpa: usize, hpa: usize, size: usize) -> Result<(), String> {
        // SAFETY: no guest runs. The benchmarks only copy through linear mappings of
        // pool frames (`read`); every other linear HPA is a number never dereferenced.
        unsafe {
            self.0.map_linear(
                GuestPhysAddr::from_usize(gpa),
                HostPhysAddr::from_usize(hpa),
                size,
                MappingFlags::RW,
            )
        }
        .map_err(|e| format!("ours ({}): map_linear: {e}", F::NAME))
    }

    #[inline]
    fn map_alloc(&mut self, gpa: usize, size: usize, populate: bool) -> Result<(), String> {
        let populate = if populate {
            Populate::Eager
        } else {
            Populate::Lazy
        };
        self.0
            .map_alloc(
                GuestPhysAddr::from_usize(gpa),
                size,
                MappingFlags::RW,
                populate,
            )
            .map_err(|e| format!("ours ({}): map_alloc: {e}", F::NAME))
    }

    #[inline]
    fn unmap(&mut self, gpa: usize, size: usize) -> Result<(), String> {
        let flush = self
            .0
            .unmap(GuestPhysAddr::from_usize(gpa), size)
            .map_err(|e| format!("ours ({}): unmap: {e}", F::NAME))?;
        // No vCPU uses this space: the invalidation is trivially done.
        self.0
            .complete_flush(flush)
            .map_err(|e| format!("ours ({}): complete_flush: {e}", F::NAME))
    }

    // Always inline (both subjects): the translate rows measure each API called from
    // the loop, not this adapter; whether the compiler inlined it was chance (ours on
    // Arm yes, on EPT no).
    #[inline(always)]
    fn translate(&self, gpa: usize) -> Option<usize> {
        self.0
            .translate(GuestPhysAddr::from_usize(gpa))
            .ok()
            .map(|t| t.hpa.as_usize())
    }

    #[inline]
    fn fault(&mut self, gpa: usize) -> bool {
        matches!(
            self.0
                .handle_page_fault(GuestPhysAddr::from_usize(gpa), AccessKind::Write),
            Ok(FaultOutcome::Mapped { .. } | FaultOutcome::Spurious)
        )
    }

    #[inline]
    fn read(&self, gpa: usize, buf: &mut [u8]) -> Result<(), String> {
        self.0
            .read(GuestPhysAddr::from_usize(gpa), buf)
            .map_err(|e| format!("ours ({}): read: {e}", F::NAME))
    }

    fn leaf_descriptors(&self, gpas: &[usize]) -> Option<Vec<*const u64>> {
        let pt = self.0.page_table();
        gpas.iter()
            .map(|&g| {
                let walk = pt.walk(GuestPhysAddr::from_usize(g));
                walk.translation()?;
                let last = walk.steps().last()?;
                let table = self.0.allocator().phys_to_virt(last.table).as_ptr::<u64>();
                Some(table.wrapping_add(last.index))
            })
            .collect()
    }
}

/// axaddrspace 0.5.15's address space (4-level EPT on x86_64), frames from the pool;
/// with `ZERO`, through a HAL that zeroes the frames it hands out.
pub struct Peer<const ZERO: bool = false>(axaddrspace::AddrSpace<PeerHal<ZERO>>);

/// The peer's flags for read-write normal memory (EPT R+W, write-back).
const PEER_RW: axaddrspace::MappingFlags =
    axaddrspace::MappingFlags::READ.union(axaddrspace::MappingFlags::WRITE);

impl<const ZERO: bool> Subject for Peer<ZERO> {
    const NAME: &'static str = if ZERO {
        "axaddrspace 0.5.15 (EPT, zeroing HAL)"
    } else {
        "axaddrspace 0.5.15 (EPT)"
    };
    const ROOT_FRAMES: usize = 1;

    fn new() -> Result<Self, String> {
        axaddrspace::AddrSpace::new_empty(4, PeerGpa::from_usize(0), 1 << 48)
            .map(Peer)
            .map_err(|e| format!("peer: new_empty: {e:?}"))
    }

    #[inline]
    fn map_linear(&mut self, gpa: usize, hpa: usize, size: usize) -> Result<(), String> {
        self.0
            .map_linear(
                PeerGpa::from_usize(gpa),
                ax_memory_addr::PhysAddr::from_usize(hpa),
                size,
                PEER_RW,
            )
            .map_err(|e| format!("peer: map_linear: {e:?}"))
    }

    #[inline]
    fn map_alloc(&mut self, gpa: usize, size: usize, populate: bool) -> Result<(), String> {
        self.0
            .map_alloc(PeerGpa::from_usize(gpa), size, PEER_RW, populate)
            .map_err(|e| format!("peer: map_alloc: {e:?}"))
    }

    #[inline]
    fn unmap(&mut self, gpa: usize, size: usize) -> Result<(), String> {
        self.0
            .unmap(PeerGpa::from_usize(gpa), size)
            .map_err(|e| format!("peer: unmap: {e:?}"))
    }

    // Always inline (both subjects): the translate rows measure each API called from
    // the loop, not this adapter; whether the compiler inlined it was chance (ours on
    // Arm yes, on EPT no).
    #[inline(always)]
    fn translate(&self, gpa: usize) -> Option<usize> {
        self.0
            .translate(PeerGpa::from_usize(gpa))
            .map(|p| p.as_usize())
    }

    #[inline]
    fn fault(&mut self, gpa: usize) -> bool {
        self.0
            .handle_page_fault(PeerGpa::from_usize(gpa), axaddrspace::MappingFlags::WRITE)
    }

    #[inline]
    fn read(&self, gpa: usize, buf: &mut [u8]) -> Result<(), String> {
        // The peer's only guest-memory read: translate to host slices, then copy.
        let pieces = self
            .0
            .translated_byte_buffer(PeerGpa::from_usize(gpa), buf.len())
            .ok_or_else(|| format!("peer: translated_byte_buffer({gpa:#x}) failed"))?;
        let mut off = 0;
        for piece in pieces {
            let n = piece.len().min(buf.len() - off);
            buf[off..off + n].copy_from_slice(&piece[..n]);
            off += n;
        }
        if off == buf.len() {
            Ok(())
        } else {
            Err(format!("peer: read {off} of {} bytes", buf.len()))
        }
    }
}
