//! The table engine: one implementation of map, unmap, protect, query and walk over
//! every [`NestedFormat`].
//!
//! Design rules:
//! - *Reserve, then commit.* Every operation first checks its input and plans the
//!   frames it will take (new tables and guest frames for a map, split tables for an
//!   unmap or a protect), reserves them all on a [`Reserve`](reserve::Reserve),
//!   and only then touches a descriptor. An error therefore leaves the table exactly
//!   as it was and returns every frame.
//!   A linear map below an empty entry (a fresh region) needs no plan: it builds
//!   its new tables unlinked and links them with one store, so nothing is visible
//!   before every frame was obtained and running out frees only unlinked frames.
//! - *The plan is the commit's own walk.* A map is planned by the very walk that
//!   commits it, run without writing (`map.rs`). The leaves an unmap or a protect
//!   cuts are split first, by one walk per end of the range that keeps splitting until
//!   no leaf straddles that end, before any translation changes (`split.rs`); the
//!   walks that then clear or rewrite descriptors take no frame at all. So no history
//!   of earlier operations can make a commit need a frame its plan did not count.
//! - *Largest leaf.* `map` writes a 1 GiB or 2 MiB leaf wherever the GPA, the HPA and
//!   the remaining size allow, 4 KiB pages elsewhere.
//! - *No empty tables.* A table whose last entry is cleared is unlinked at once; its
//!   frame is released when the caller completes the [`Flush`] that reported the
//!   change (after the TLB invalidation), never before. Whole subtrees are unlinked
//!   as they are, with their leaves: the guest frames those leaves name are released
//!   with them (`held.rs`), so holding them costs no memory per page.
//! - Descriptors are read and written as `AtomicU64` (acquire loads, release stores),
//!   so walkers on other threads (vCPUs of the mock HAL, or hardware) see either the
//!   old or the new descriptor, and a new table's contents (zeroed, or every entry
//!   written) before its link.

use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use crate::flush::{Flush, Ops};
use crate::format::{DescKind, NestedFormat};
use crate::{
    Error, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, HostVirtAddr, MappingFlags,
    Result,
};

#[cfg(any(test, feature = "testing"))]
mod audit;
mod cache;
mod held;
mod index;
mod map;
mod protect;
mod query;
mod reserve;
mod scan;
mod source;
mod split;
mod unmap;
mod walk;

pub(crate) use query::LeafSlot;
pub use query::Translation;
pub(crate) use reserve::Reserve;
pub use walk::{MAX_LEVELS, Walk, WalkEnd, WalkStep};

use cache::Psc;
pub(crate) use held::Spans;
use held::{Held, Items, Record};
pub(crate) use index::Span;
use index::{Level, Table};

/// Source of the table identities that tie a [`Flush`] to the table that issued it.
static NEXT_ID: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// A nested page table of format `F` whose frames come from `A`.
///
/// ```
/// use addrspace::{ArmStage2Ipa40, GuestPhysAddr, HostPhysAddr, MappingFlags, PageTable, PageSize};
/// use addrspace::testing::PoolAllocator;
///
/// let pool = PoolAllocator::new(64);
/// let mut pt = PageTable::<ArmStage2Ipa40, _>::new(&pool).unwrap();
/// let (gpa, hpa) = (GuestPhysAddr::from_usize(0x4000_0000), HostPhysAddr::from_usize(0x8000_0000));
/// // SAFETY: the test pool's HPAs are never dereferenced through this mapping.
/// unsafe { pt.map(gpa, hpa, 0x20_0000, MappingFlags::RW).unwrap() };
/// let t = pt.query(gpa + 0x1234).unwrap();
/// assert_eq!((t.hpa, t.size), (hpa + 0x1234, PageSize::Size2M));
/// let flush = pt.unmap(gpa, 0x1000).unwrap(); // splits the 2 MiB block
/// // ... invalidate flush.range() on every vCPU, then:
/// pt.complete_flush(flush).unwrap();
/// ```
pub struct PageTable<F: NestedFormat, A: FrameAllocator> {
    root: HostPhysAddr,
    alloc: A,
    /// The allocator's [`FrameAllocator::linear_offset`], read once (when it agrees
    /// with `phys_to_virt` for the root): how walks reach a table's entries.
    linear: Option<usize>,
    /// Unique among all tables of the process: what a [`Flush`] names.
    id: u64,
    /// Table frames linked into the tree, the root's frames included.
    tables: usize,
    /// What operations unlinked, by operation number, until their flush completes.
    held: Held,
    /// Number of the next operation that unlinks something.
    next_op: u64,
    /// Software paging-structure cache (see [`Psc`]).
    psc: Psc,
    /// For each root entry, the non-zero entries of the table it links (0 when it
    /// links none), so an unmap knows that it emptied one of the tables right below
    /// the root (the ones 1 GiB leaves live in, on four-level formats) without
    /// reading its 512 entries. Only `&mut self` operations change them.
    live: Vec<AtomicU16>,
    /// Test hook: frames a reserve holds back, to exercise a commit whose plan was
    /// short (which no plan is).
    #[cfg(test)]
    plan_deficit: usize,
    /// Test hook: every map takes the two-pass path (plan, reserve, commit), so
    /// tests can compare the one-walk map of fresh tables with it.
    #[cfg(test)]
    two_pass_only: bool,
    /// Test hook: unmaps take the general path even for one entry's block, to check
    /// the single-entry walk against it.
    #[cfg(test)]
    general_unmap: bool,
    _format: PhantomData<F>,
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// The root's level.
    const TOP: Level = Level::new(F::LEVELS - 1);

    /// An empty table: allocates and zeroes the root (`F::ROOT_FRAMES` contiguous
    /// frames aligned to their total size).
    pub fn new(alloc: A) -> Result<Self> {
        // Level 1 is never the root, which the paging-structure cache relies on.
        const { assert!(F::LEVELS >= 3, "nested formats have at least 3 levels") };
        let mut live = Vec::new();
        live.try_reserve_exact(F::ROOT_ENTRIES)
            .map_err(|_| Error::OutOfHeap {
                bytes: F::ROOT_ENTRIES * core::mem::size_of::<AtomicU16>(),
            })?;
        live.resize_with(F::ROOT_ENTRIES, || AtomicU16::new(0));
        let root = alloc
            .alloc_frames(F::ROOT_FRAMES, F::ROOT_FRAMES)
            .ok_or(Error::NoMemory {
                needed: F::ROOT_FRAMES,
                allocated: 0,
            })?;
        let linear = alloc.linear_offset().filter(|&off| {
            alloc.phys_to_virt(root).as_usize() == root.as_usize().wrapping_add(off)
        });
        let pt = Self {
            root,
            alloc,
            linear,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tables: F::ROOT_FRAMES,
            held: Held::default(),
            next_op: 1,
            psc: Psc::new(),
            live,
            #[cfg(test)]
            plan_deficit: 0,
            #[cfg(test)]
            two_pass_only: false,
            #[cfg(test)]
            general_unmap: false,
            _format: PhantomData,
        };
        let ptr = pt.alloc.phys_to_virt(root).as_mut_ptr::<u8>();
        // SAFETY: the root frames were just allocated for this table, are not linked
        // anywhere yet, and the allocator maps them writable and contiguous.
        unsafe { core::ptr::write_bytes(ptr, 0, F::ROOT_FRAMES * crate::FRAME_SIZE) };
        Ok(pt)
    }

    /// The root's host-physical address (for EPTP, nCR3, VTTBR_EL2 or hgatp).
    #[inline]
    pub fn root(&self) -> HostPhysAddr {
        self.root
    }

    /// The allocator.
    #[inline]
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// Table frames currently linked into the tree, the root's frames included.
    #[inline]
    pub fn table_frames(&self) -> usize {
        self.tables
    }

    /// Frames (tables and guest memory) unlinked by operations whose flush has not
    /// completed yet. Counted on demand by walking what is held (a diagnostic).
    pub fn deferred_frames(&self) -> usize {
        self.held.iter().map(|r| self.record_frames(r)).sum()
    }

    /// One past the highest guest-physical address the format translates.
    #[inline]
    pub const fn gpa_limit() -> usize {
        1 << F::GPA_BITS
    }

    // ---------------------------------------------------------------- checks

    /// Validates `[gpa, gpa + size)` as a range this format translates.
    pub(crate) fn check_range(gpa: GuestPhysAddr, size: usize) -> Result<GpaRange> {
        let range = GpaRange::new(gpa, size)?;
        Self::check_gpa(&range)?;
        Ok(range)
    }

    pub(crate) fn check_gpa(range: &GpaRange) -> Result<()> {
        if range.end().as_usize() > Self::gpa_limit() {
            return Err(Error::OutOfRange {
                what: "gpa",
                end: range.end().as_usize(),
                limit: Self::gpa_limit(),
                format: F::NAME,
            });
        }
        Ok(())
    }

    pub(crate) fn check_hpa(hpa: HostPhysAddr, size: usize) -> Result<()> {
        if !hpa.as_usize().is_multiple_of(crate::PAGE_SIZE) {
            return Err(Error::Unaligned {
                what: "hpa",
                value: hpa.as_usize(),
                align: crate::PAGE_SIZE,
            });
        }
        let limit = 1usize << F::HPA_BITS;
        match hpa.as_usize().checked_add(size) {
            Some(end) if end <= limit => Ok(()),
            end => Err(Error::OutOfRange {
                what: "hpa",
                end: end.unwrap_or(usize::MAX),
                limit,
                format: F::NAME,
            }),
        }
    }

    /// Checks flags against the common rules and the format's own.
    pub fn check_flags(flags: MappingFlags) -> Result<()> {
        let reason = if flags.access().is_empty() {
            Some("no READ, WRITE or EXECUTE: a nested entry without access is not present")
        } else if flags.contains(MappingFlags::DEVICE | MappingFlags::UNCACHED) {
            Some("DEVICE and UNCACHED are two different memory types")
        } else {
            F::check_flags(flags).err()
        };
        match reason {
            Some(reason) => Err(Error::InvalidFlags { flags, reason }),
            None => Ok(()),
        }
    }

    // ---------------------------------------------------------------- memory

    /// The root table.
    #[inline(always)]
    fn root_table(&self) -> Table {
        Table {
            hpa: self.root,
            level: Self::TOP,
        }
    }

    /// The entries of `table`.
    #[inline(always)]
    fn entries(&self, table: Table) -> &[AtomicU64] {
        let len = if table.level == Self::TOP {
            F::ROOT_ENTRIES
        } else {
            512
        };
        let ptr = self.table_virt(table.hpa).as_ptr::<AtomicU64>();
        // SAFETY: `table` is the root or a table frame this table allocated and still
        // links or holds (the tree only holds frames from `self.alloc`); the allocator
        // contract maps it readable and writable (the root's frames contiguously),
        // frames are 4 KiB-aligned so every 8-byte slot is aligned for `AtomicU64`,
        // and table memory is only ever accessed atomically once in use. The slice
        // lives no longer than `&self`, and frames are only released through `&mut
        // self` (or by dropping it).
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }

    /// Where the hypervisor sees the table frame `hpa`: `phys_to_virt`, or the
    /// same by one addition when the allocator named its linear offset.
    #[inline(always)]
    fn table_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        match self.linear {
            Some(off) => {
                let hva = HostVirtAddr::from_usize(hpa.as_usize().wrapping_add(off));
                debug_assert_eq!(
                    hva,
                    self.alloc.phys_to_virt(hpa),
                    "linear_offset disagrees with phys_to_virt"
                );
                hva
            }
            None => {
                // Laid out of the straight path: the allocators of the boards and
                // of the benches are linear.
                core::hint::cold_path();
                self.alloc.phys_to_virt(hpa)
            }
        }
    }

    /// Adds `delta` (1 or -1) to the live-entry count of `table` when it is a table
    /// right below the root (`gpa` is an address it covers); other tables keep none.
    #[inline(always)]
    fn count_live(&self, table: Table, gpa: usize, delta: i16) {
        if table.level.get() + 1 == Self::TOP.get() {
            let c = &self.live[Self::index(gpa, Self::TOP)];
            // Load and store, not an atomic add: only `&mut self` operations get here.
            let n = c.load(Ordering::Relaxed).wrapping_add_signed(delta);
            debug_assert!(n <= 512, "live-entry count {n}");
            c.store(n, Ordering::Relaxed);
        }
    }

    /// Sets the live-entry count of the table right below the root that covers
    /// `gpa` (when it is linked or unlinked).
    #[inline(always)]
    fn set_live(&self, gpa: usize, n: u16) {
        self.live[Self::index(gpa, Self::TOP)].store(n, Ordering::Relaxed);
    }

    /// The live-entry count of the table right below the root that covers `gpa`.
    #[inline(always)]
    fn live(&self, gpa: usize) -> u16 {
        self.live[Self::index(gpa, Self::TOP)].load(Ordering::Relaxed)
    }

    /// The index of `gpa`'s entry in a table at `level`.
    #[inline(always)]
    fn index(gpa: usize, level: Level) -> usize {
        let mask = if level == Self::TOP {
            F::ROOT_ENTRIES - 1
        } else {
            511
        };
        (gpa >> (12 + 9 * level.get())) & mask
    }

    /// The entry of `table` that translates `gpa`.
    #[inline(always)]
    fn entry(&self, table: Table, gpa: usize) -> &AtomicU64 {
        &self.entries(table)[Self::index(gpa, table.level)]
    }

    /// A zeroed frame for a new table: from `reserve`, or (when a plan was short,
    /// which no plan is) straight from the allocator; `None` when both are empty.
    fn new_table(&self, reserve: &mut Reserve) -> Option<HostPhysAddr> {
        let frame = match reserve.pop(&self.alloc) {
            Some(frame) => frame,
            None => {
                debug_assert!(
                    self.short_plan_allowed(),
                    "a plan was short of a table frame"
                );
                self.alloc.alloc_frame()?
            }
        };
        // SAFETY: the frame is ours (reserved or just allocated) and not linked yet.
        unsafe { self.zero_table(frame) };
        Some(frame)
    }

    /// Zeroes `frame`, a table frame taken for a new table, before anything links it.
    ///
    /// # Safety
    ///
    /// `frame` came from `self.alloc` for this table (just allocated, or from a
    /// reserve of this table), is linked nowhere and used by nothing else.
    #[inline(always)]
    unsafe fn zero_table(&self, frame: HostPhysAddr) {
        let ptr = self.table_virt(frame).as_mut_ptr::<u8>();
        // SAFETY: the caller's promise makes the frame ours alone; the allocator
        // maps it writable at `table_virt`.
        unsafe { core::ptr::write_bytes(ptr, 0, crate::FRAME_SIZE) };
    }

    /// Whether a reserve may run short: only under the test hook.
    fn short_plan_allowed(&self) -> bool {
        #[cfg(test)]
        return self.plan_deficit > 0;
        #[cfg(not(test))]
        false
    }

    /// Reserves `n` frames for an operation, or none.
    fn reserve(&self, n: usize) -> Result<Reserve> {
        #[cfg(test)]
        let n = n.saturating_sub(self.plan_deficit);
        Reserve::alloc(&self.alloc, n).map_err(|allocated| Error::NoMemory {
            needed: n,
            allocated,
        })
    }

    /// Gives back reserved frames an operation did not use (none, with exact plans).
    fn release(&self, mut reserve: Reserve) {
        debug_assert!(
            reserve.is_empty(),
            "a plan reserved {} frames too many",
            reserve.len()
        );
        reserve.release(&self.alloc);
    }

    // ---------------------------------------------------------------- flushes

    /// Keeps `record` until a flush naming its operation completes; returns the
    /// operation's number for that flush (0 when the operation unlinked nothing).
    /// The caller has reserved room in `held`.
    #[inline(always)]
    fn hold(&mut self, items: Items, owned: Spans) -> u64 {
        if items.is_empty() {
            return 0;
        }
        let op = self.next_op;
        self.next_op += 1;
        self.held.push(Record { op, items, owned });
        op
    }

    /// Reserves room to hold one more operation's record.
    fn reserve_record(&mut self) -> Result<()> {
        self.held.reserve().map_err(|_| Error::OutOfHeap {
            bytes: core::mem::size_of::<Record>(),
        })
    }

    /// A flush token of this table for `range` owning the records of `ops`.
    pub(crate) fn flush(&self, range: Option<GpaRange>, ops: Ops) -> Flush {
        Flush::new(range, self.id, ops)
    }

    /// Releases exactly the frames that the operations behind `flush` unlinked (none
    /// of any other operation). Call it after invalidating `flush.range()` on every
    /// vCPU.
    ///
    /// Errors: [`Error::ForeignFlush`] when `flush` was issued by another table
    /// (including a dropped one whose root frame this table reuses); nothing is
    /// released then.
    #[inline]
    pub fn complete_flush(&mut self, flush: Flush) -> Result<()> {
        if flush.table != self.id {
            return Err(Error::ForeignFlush {
                token: flush.table,
                table: self.id,
            });
        }
        // This part is inline in the caller and the record lookup (`complete_op`)
        // is not, so the caller reads the token's fields one by one where the unmap
        // stored them. Passed by value to an outlined function, the token was first
        // copied with 16-byte loads over those 8-byte stores, which the store buffer
        // cannot forward (`unmap_1g_1g` 47 -> 39 ns on EPT, 28 -> 19 ns on Arm).
        // Most tokens name no operation (nothing unlinked) or one.
        match flush.ops.single() {
            Some(0) => {}
            Some(op) => self.complete_op(op),
            None => self.complete_ops(flush.ops),
        }
        Ok(())
    }

    /// Frees what operation `op` unlinked, if still held.
    #[inline(never)]
    fn complete_op(&mut self, op: u64) {
        if let Some(record) = self.held.get(op) {
            // SAFETY: the caller invalidated the flush's range on every vCPU, and
            // the record holds only what this operation unlinked in that range.
            unsafe { self.free_record(record) };
            self.held.remove(op);
        }
    }

    /// Frees what the operations of a merged token unlinked.
    #[inline(never)]
    fn complete_ops(&mut self, ops: Ops) {
        for op in ops.iter() {
            self.complete_op(op);
        }
    }
}

impl<F: NestedFormat, A: FrameAllocator> Drop for PageTable<F, A> {
    /// Frees every table and every held frame (not the guest frames live leaves
    /// name: [`crate::AddrSpace`] frees those of its areas first). Drop a table only
    /// once no vCPU can use it any more (its VMID/ASID invalidated).
    fn drop(&mut self) {
        let root = self.root_table();
        for e in self.entries(root) {
            let raw = e.load(Ordering::Acquire);
            if F::kind(raw, root.level.get()) == DescKind::Table {
                let child = root.child(F::output_addr(raw, root.level.get()));
                // The tables only: AddrSpace gave back its guest frames first.
                self.subtree_frames(child, 0, &[], &mut |hpa, count| {
                    // SAFETY: a table of this tree, which is going away with no user
                    // left.
                    unsafe { self.alloc.dealloc_frames(hpa, count) }
                });
            }
        }
        for record in self.held.take_all() {
            // SAFETY: held frames were unlinked earlier; at drop nothing reaches them.
            unsafe { self.free_record(&record) };
        }
        // SAFETY: the root was allocated in `new` with this count.
        unsafe { self.alloc.dealloc_frames(self.root, F::ROOT_FRAMES) };
    }
}

impl<F: NestedFormat, A: FrameAllocator> fmt::Debug for PageTable<F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("format", &F::NAME)
            .field("id", &self.id)
            .field("root", &self.root)
            .field("tables", &self.tables)
            .field("held_operations", &self.held.len())
            .finish()
    }
}

/// A checked range as a raw span.
#[inline(always)]
pub(crate) fn span_of(range: &GpaRange) -> Span {
    Span::new(range.start().as_usize(), range.end().as_usize())
}

/// A guest-physical address from a raw value.
#[inline(always)]
fn gpa_of(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

#[cfg(test)]
mod tests;
