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
        (region < Self::UPPER_REGIONS).then(|| read(&self.upper, region))?
    }

    /// Remembers `table` as the level-2 table of `gpa`'s 512 GiB region.
    #[inline(always)]
    pub(crate) fn put_upper(&self, gpa: usize, table: HostPhysAddr) {
        let region = gpa >> 39;
        if region < Self::UPPER_REGIONS {
            write(&self.upper, region, table);
        }
    }

    /// The cached level-1 table of `gpa`'s 1 GiB region.
    #[inline(always)]
    pub(crate) fn get(&self, gpa: usize) -> Option<HostPhysAddr> {
        let region = gpa >> 30;
        (region < Self::REGIONS).then(|| read(&self.slots[region % Self::SLOTS], region))?
    }

    /// Remembers `table` as the level-1 table of `gpa`'s region.
    #[inline(always)]
    pub(crate) fn put(&self, gpa: usize, table: HostPhysAddr) {
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

/// The table `slot` names for `region`, if it names one for that region.
#[inline(always)]
fn read(slot: &AtomicU64, region: usize) -> Option<HostPhysAddr> {
    // Acquire: pairs with the release in `write`, which itself follows the acquire
    // load of the link to the table, so the table's contents are visible.
    let v = slot.load(Ordering::Acquire);
    (v & 0xfff == region as u64 + 1).then(|| HostPhysAddr::from_usize(usize_of(v & !0xfff)))
}

/// Makes `slot` name `table` for `region` (tagged `region + 1` in the low 12 bits).
#[inline(always)]
fn write(slot: &AtomicU64, region: usize, table: HostPhysAddr) {
    slot.store(
        table.as_usize() as u64 | (region as u64 + 1),
        Ordering::Release,
    );
}
