//! [`VmTags`]: which live VM holds which TLB tag (Arm or RISC-V VMID, x86 ASID). The
//! hardware keeps the translations of different VMs apart by these tags, so two live
//! VMs must never share one. Each HAL's `tlb.rs` keeps one table for the whole
//! machine: a tag is claimed when a VM is created ([`ArchVCpu::claim_vm`]) and
//! released, after it has been invalidated on every CPU, when the VM goes away
//! ([`ArchVCpu::release_vm`]).
//!
//! [`ArchVCpu::claim_vm`]: crate::ArchVCpu::claim_vm
//! [`ArchVCpu::release_vm`]: crate::ArchVCpu::release_vm

use spin::Mutex;

use crate::{VCpuError, VCpuResult};

/// A table of at most `N` live VMs, each with its own tag in `1..=limit`
/// (`limit <= N`; tag 0 is left to the host).
pub struct VmTags<const N: usize> {
    /// `slots[t - 1]` is the VM id holding tag `t`.
    slots: Mutex<[Option<usize>; N]>,
}

impl<const N: usize> VmTags<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            slots: Mutex::new([None; N]),
        }
    }

    /// Gives VM `vm_id` the lowest free tag in `1..=limit` (at most `N`).
    ///
    /// Errors: [`VCpuError::VmIdInUse`] when `vm_id` holds a tag already (two live
    /// VMs with one id could not be told apart), [`VCpuError::NoVmid`] when every tag
    /// is held by a live VM.
    pub fn claim(&self, vm_id: usize, limit: usize) -> VCpuResult<u16> {
        let tags = limit.min(N).min(usize::from(u16::MAX));
        let mut slots = self.slots.lock();
        if slots.contains(&Some(vm_id)) {
            return Err(VCpuError::VmIdInUse { vm_id });
        }
        let free = slots[..tags].iter().position(Option::is_none);
        let Some(i) = free else {
            return Err(VCpuError::NoVmid {
                vm_id,
                available: u32::try_from(tags).unwrap_or(u32::MAX),
            });
        };
        slots[i] = Some(vm_id);
        // `i < tags <= u16::MAX`, so the tag fits.
        Ok(u16::try_from(i + 1).unwrap_or(u16::MAX))
    }

    /// The tag VM `vm_id` holds.
    pub fn tag_of(&self, vm_id: usize) -> Option<u16> {
        let slots = self.slots.lock();
        let i = slots.iter().position(|s| *s == Some(vm_id))?;
        u16::try_from(i + 1).ok()
    }

    /// Frees the tag of VM `vm_id` and returns it (`None` when it held none). The
    /// caller has invalidated the tag's translations on every CPU first.
    pub fn release(&self, vm_id: usize) -> Option<u16> {
        let mut slots = self.slots.lock();
        let i = slots.iter().position(|s| *s == Some(vm_id))?;
        slots[i] = None;
        u16::try_from(i + 1).ok()
    }

    /// How many VMs hold a tag.
    pub fn live(&self) -> usize {
        self.slots.lock().iter().filter(|s| s.is_some()).count()
    }
}

impl<const N: usize> Default for VmTags<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Debug for VmTags<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmTags")
            .field("capacity", &N)
            .field("live", &self.live())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the HALs derived the tag from the VM id (`vm_id % 255 + 1` on
    /// aarch64, the id cut to the VMID bits on riscv64), so VMs 1 and 256 shared
    /// VMID 2. A table hands out distinct tags whatever the ids.
    #[test]
    fn live_vms_never_share_a_tag() {
        let t = VmTags::<255>::new();
        assert_eq!(t.claim(1, 255), Ok(1));
        assert_eq!(t.claim(256, 255), Ok(2));
        assert_eq!(t.claim(511, 255), Ok(3));
        assert_eq!(t.tag_of(256), Some(2));
        assert_eq!(t.claim(256, 255), Err(VCpuError::VmIdInUse { vm_id: 256 }));
        assert_eq!(t.release(256), Some(2));
        assert_eq!(t.tag_of(256), None);
        assert_eq!(t.release(256), None);
        assert_eq!(t.claim(7, 255), Ok(2), "the lowest free tag again");
        assert_eq!(t.live(), 3);
    }

    #[test]
    fn a_full_table_refuses_with_a_typed_error() {
        let t = VmTags::<4>::new();
        for (id, tag) in (0..3).zip(1u16..) {
            assert_eq!(t.claim(id, 3), Ok(tag));
        }
        assert_eq!(
            t.claim(3, 3),
            Err(VCpuError::NoVmid {
                vm_id: 3,
                available: 3
            })
        );
        assert_eq!(t.claim(3, 100), Ok(4), "the limit is cut to the capacity");
        assert_eq!(
            t.claim(4, 100),
            Err(VCpuError::NoVmid {
                vm_id: 4,
                available: 4
            })
        );
        assert_eq!(
            t.claim(5, 0),
            Err(VCpuError::NoVmid {
                vm_id: 5,
                available: 0
            })
        );
        t.release(0);
        assert_eq!(t.claim(4, 4), Ok(1));
    }
}
