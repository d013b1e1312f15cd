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
/// Invariant: a slot only names a table that is linked into the tree. Tables are
/// only unlinked with `&mut` access to the table (unmap, and the rollback of a
/// failed map), which clears every slot first.
pub(crate) struct Psc([AtomicU64; Psc::SLOTS]);

impl Psc {
    const SLOTS: usize = 16;
    /// Regions whose tag (`region + 1`) fits in the 12 low bits of a frame address.
    const REGIONS: usize = 2048;

    pub(crate) const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; Self::SLOTS])
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
        let v = self.0[region % Self::SLOTS].load(Ordering::Acquire);
        (v & 0xfff == region as u64 + 1).then(|| HostPhysAddr::from_usize(usize_of(v & !0xfff)))
    }

    /// Remembers `table` as the level-1 table of `gpa`'s region.
    #[inline(always)]
    pub(crate) fn put(&self, gpa: usize, table: HostPhysAddr) {
        let region = gpa >> 30;
        if region < Self::REGIONS {
            let v = table.as_usize() as u64 | (region as u64 + 1);
            self.0[region % Self::SLOTS].store(v, Ordering::Release);
        }
    }

    /// Forgets everything (before tables are unlinked).
    pub(crate) fn clear(&mut self) {
        for slot in &mut self.0 {
            *slot.get_mut() = 0;
        }
    }
}
