//! The software paging-structure cache ([`Psc`]) that `query` and the lazy-fault path
//! start their walks from.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::{HostPhysAddr, usize_of};

/// A software paging-structure cache, like the ones hardware walkers keep: for 1 GiB
/// regions of the first 2 TiB of guest-physical space, the level-1 table (the one
/// with 2 MiB entries) a walk last went through, so `query` and the lazy-fault path
/// start there instead of at the root. One slot per region modulo the slot count;
/// each slot is one atomic word (the table's address with `region + 1` in its low 12
/// bits), so a lookup never sees half of an update.
///
/// One more slot, `upper`, holds the level-2 table (the one with 1 GiB entries) of
/// the 512 GiB region a walk last went through, for formats with a level above it:
/// walks of 1 GiB leaves, and of regions whose level-1 slot another region took,
/// start there instead of at the root.
///
/// Invariant: a slot only names a table that is linked into the tree. Tables are
/// only unlinked with `&mut` access to the table (unmap, and the rollback of a
/// failed map), which clears every slot first.
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

    /// The cached level-2 table of `gpa`'s 512 GiB region.
    #[inline(always)]
    pub(crate) fn get_upper(&self, gpa: usize) -> Option<HostPhysAddr> {
        let region = gpa >> 39;
        if region >= Self::UPPER_REGIONS {
            return None;
        }
        // Acquire: as in `get`.
        let v = self.upper.load(Ordering::Acquire);
        (v & 0xfff == region as u64 + 1).then(|| HostPhysAddr::from_usize(usize_of(v & !0xfff)))
    }

    /// Remembers `table` as the level-2 table of `gpa`'s 512 GiB region.
    #[inline(always)]
    pub(crate) fn put_upper(&self, gpa: usize, table: HostPhysAddr) {
        let region = gpa >> 39;
        if region < Self::UPPER_REGIONS {
            let v = table.as_usize() as u64 | (region as u64 + 1);
            self.upper.store(v, Ordering::Release);
        }
    }

    /// The cached level-1 table of `gpa`'s 1 GiB region.
    #[inline(always)]
    pub(crate) fn get(&self, gpa: usize) -> Option<HostPhysAddr> {
        let region = gpa >> 30;
        if region >= Self::REGIONS {
            return None;
        }
        // Acquire: pairs with the release in `put`, which itself follows the acquire
        // load of the link to the table, so the table's contents are visible.
        let v = self.slots[region % Self::SLOTS].load(Ordering::Acquire);
        (v & 0xfff == region as u64 + 1).then(|| HostPhysAddr::from_usize(usize_of(v & !0xfff)))
    }

    /// Remembers `table` as the level-1 table of `gpa`'s region.
    #[inline(always)]
    pub(crate) fn put(&self, gpa: usize, table: HostPhysAddr) {
        let region = gpa >> 30;
        if region < Self::REGIONS {
            let v = table.as_usize() as u64 | (region as u64 + 1);
            self.slots[region % Self::SLOTS].store(v, Ordering::Release);
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
