//! The software paging-structure cache ([`Psc`]) that `query` and the lazy-fault path
//! start their walks from.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::{HostVirtAddr, usize_of};

/// A software paging-structure cache, like the ones hardware walkers keep: for 1 GiB
/// regions of the first 2 TiB of guest-physical space, the level-1 table (the one
/// with 2 MiB entries) a walk last went through, so `query` and the lazy-fault path
/// start there instead of at the root. One slot per region modulo the slot count;
/// each slot is one atomic word (the table's hypervisor virtual address, 4 KiB
/// aligned, with `region + 1` in its low 12 bits), so a lookup never sees half of an
/// update. Slots hold the HVA, not the HPA: a hit reads the table's entry without
/// asking the allocator where the frame is mapped (three instructions of about forty
/// on the path of a cold translate, whose misses overlap less the more instructions
/// each translate takes).
///
/// One more slot, `upper`, holds the level-2 table (the one with 1 GiB entries) of
/// the 512 GiB region a walk last went through, for formats with a level above it:
/// walks of 1 GiB leaves, and of regions whose level-1 slot another region took,
/// start there instead of at the root.
///
/// Invariant: a slot only names a table that is linked into the tree. Tables are
/// only unlinked with `&mut` access to the table (unmap, and the rollback of a
/// failed map), which clears every slot first. Walks only run below the format's
/// GPA limit, so a slot names regions below it only, and a hit needs no check
/// against the limit (`query_cached` relies on it; the tag compares the whole
/// region, never its low bits alone).
pub(crate) struct Psc {
    slots: [AtomicU64; Psc::SLOTS],
    upper: AtomicU64,
}

impl Psc {
    const SLOTS: usize = 16;
    /// Regions whose tag (`region + 1`) fits in the 12 low bits of a frame address.
    const REGIONS: usize = 2048;
    /// 512 GiB regions whose tag fits likewise.
    const UPPER_REGIONS: usize = 4095;

    pub(crate) const fn new() -> Self {
        Self {
            slots: [const { AtomicU64::new(0) }; Self::SLOTS],
            upper: AtomicU64::new(0),
        }
    }

    /// The entries of the cached level-2 table of `gpa`'s 512 GiB region.
    #[inline(always)]
    pub(crate) fn get_upper(&self, gpa: usize) -> Option<Cached<'_>> {
        read(&self.upper, gpa >> 39)
    }

    /// Remembers `table` as the level-2 table of `gpa`'s 512 GiB region.
    ///
    /// # Safety
    ///
    /// `table` is the entries of the level-2 table that the tree owning this cache
    /// links for `gpa` (see [`Psc::put`]).
    #[inline(always)]
    pub(crate) unsafe fn put_upper(&self, gpa: usize, table: &[AtomicU64]) {
        let region = gpa >> 39;
        if region < Self::UPPER_REGIONS {
            write(&self.upper, region, table);
        }
    }

    /// The entries of the cached level-1 table of `gpa`'s 1 GiB region.
    #[inline(always)]
    pub(crate) fn get(&self, gpa: usize) -> Option<Cached<'_>> {
        let region = gpa >> 30;
        read(&self.slots[region % Self::SLOTS], region)
    }

    /// Remembers `table` as the level-1 table of `gpa`'s region.
    ///
    /// # Safety
    ///
    /// `table` is the entries (all 512) of the level-1 table that the tree owning
    /// this cache links for `gpa`, through the allocator's mapping of its frame: the
    /// invariant above then keeps that memory a live, linked table for as long as
    /// the slot names it, which is what [`Psc::get`] hands out.
    #[inline(always)]
    pub(crate) unsafe fn put(&self, gpa: usize, table: &[AtomicU64]) {
        let region = gpa >> 30;
        if region < Self::REGIONS {
            write(&self.slots[region % Self::SLOTS], region, table);
        }
    }

    /// Forgets everything (before tables are unlinked).
    pub(crate) fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot.get_mut() = 0;
        }
        *self.upper.get_mut() = 0;
    }
}

/// A table a slot of a [`Psc`] named, valid while the cache is borrowed. A plain
/// address, not a reference, so that `Option<Cached>` is told apart by the tag
/// compare alone (an `Option<&_>` also tests the pointer for null).
#[derive(Clone, Copy)]
pub(crate) struct Cached<'a> {
    hva: u64,
    cache: PhantomData<&'a Psc>,
}

impl<'a> Cached<'a> {
    /// The table's 512 entries.
    #[inline(always)]
    pub(crate) fn entries(self) -> &'a [AtomicU64] {
        let table = HostVirtAddr::from_usize(usize_of(self.hva)).as_ptr::<AtomicU64>();
        // SAFETY: a slot names this address only after `put`/`put_upper`, whose
        // callers promise it is the mapping of a table the tree links (512 entries,
        // 8-byte aligned, only accessed atomically); tables are unlinked and freed
        // only through `&mut` access to the tree, which clears every slot first, so
        // the table stays live and linked while the cache (a part of the tree) is
        // borrowed for `'a`.
        unsafe { core::slice::from_raw_parts(table, 512) }
    }
}

/// The table `slot` names for `region`, if it names one for that region. No range
/// check: a region too large for a tag has `region + 1` above every tag (12 bits),
/// so it never matches (the whole word is compared).
#[inline(always)]
fn read(slot: &AtomicU64, region: usize) -> Option<Cached<'_>> {
    // Acquire: pairs with the release in `write`, which itself follows the acquire
    // load of the link to the table, so the table's contents are visible.
    let v = slot.load(Ordering::Acquire);
    (v & 0xfff == region as u64 + 1).then_some(Cached {
        hva: v & !0xfff,
        cache: PhantomData,
    })
}

/// Makes `slot` name `table` for `region` (tagged `region + 1` in the low 12 bits),
/// when the table's address leaves the tag bits free (any sane allocator maps
/// frames 4 KiB-aligned; otherwise the table is simply not cached).
#[inline(always)]
fn write(slot: &AtomicU64, region: usize, table: &[AtomicU64]) {
    let hva = table.as_ptr() as usize as u64;
    if hva & 0xfff == 0 {
        slot.store(hva | (region as u64 + 1), Ordering::Release);
    }
}
