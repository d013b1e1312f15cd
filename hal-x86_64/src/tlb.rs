//! Nested TLB maintenance: each VM's ASID (APM vol. 2, 15.16 "TLB Control") and the
//! TLB_CONTROL value that flushes one guest's translations before its next VMRUN.

use vcpu_api::{VCpuResult, VmTags};

use crate::cpu::SvmFeatures;
use crate::vmcb::tlb_control;

impl SvmFeatures {
    /// The TLB_CONTROL value that flushes one guest's translations: by ASID when
    /// the processor can, else the whole TLB (QEMU's models lack FlushByAsid, and
    /// values 3 and 7 are reserved without it).
    pub const fn flush_control(&self) -> u8 {
        if self.flush_by_asid {
            tlb_control::FLUSH_ASID
        } else {
            tlb_control::FLUSH_ALL
        }
    }

    /// Gives VM `vm_id` an ASID no other live VM holds, in `1..nasid` (ASID 0 is the
    /// host's, APM 15.16); see [`VmTags::claim`].
    pub fn claim_asid(&self, vm_id: usize) -> VCpuResult<u32> {
        let asids = (self.nasid as usize).saturating_sub(1);
        TABLE.claim(vm_id, asids).map(u32::from)
    }
}

/// The most VMs that can live at once (fewer when the processor has fewer ASIDs).
pub const MAX_VMS: usize = 1024;

/// Which live VM holds which ASID.
static TABLE: VmTags<MAX_VMS> = VmTags::new();

/// The ASID of live VM `vm_id`.
pub fn asid_of(vm_id: usize) -> Option<u32> {
    TABLE.tag_of(vm_id).map(u32::from)
}

/// Frees the ASID of VM `vm_id`. SVM has no broadcast invalidation; instead a vCPU
/// flushes its ASID (TLB_CONTROL) before its first VMRUN after it is created or
/// bound to a CPU, so a VM that gets this ASID next never meets the old VM's
/// translations on any CPU.
pub fn release_asid(vm_id: usize) {
    TABLE.release(vm_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_control_by_asid_when_offered() {
        // QEMU 7.2 `-cpu EPYC`: no FlushByAsid.
        let f = SvmFeatures::from_cpuid(0x75, 1, 16, 1).unwrap();
        assert_eq!(f.flush_control(), tlb_control::FLUSH_ALL);
        let f = SvmFeatures::from_cpuid(1 << 2, 1, 32768, 0xcf).unwrap();
        assert_eq!(f.flush_control(), tlb_control::FLUSH_ASID);
    }

    /// Regression (the x86 half of the VMID defect): ASIDs were `vm_id + 1`, so two
    /// live VMs with one id shared an ASID and ids past `nasid - 2` had none. ASIDs
    /// are claimed now: distinct, in `1..nasid`, a typed error when none is left.
    /// (The table is shared by this crate's tests: ids no other test uses.)
    #[test]
    fn live_vms_never_share_an_asid() {
        let f = SvmFeatures::from_cpuid(0x75, 1, 16, 1).unwrap();
        let ids = [2_000_000, 2_000_001 + usize::MAX / 2];
        let a = f.claim_asid(ids[0]).unwrap();
        let b = f.claim_asid(ids[1]).unwrap();
        assert!(a != b && (1..16).contains(&a) && (1..16).contains(&b));
        assert_eq!(asid_of(ids[1]), Some(b));
        assert_eq!(
            f.claim_asid(ids[0]),
            Err(vcpu_api::VCpuError::VmIdInUse { vm_id: ids[0] })
        );
        let none = SvmFeatures::from_cpuid(0x75, 1, 1, 1).unwrap();
        assert_eq!(
            none.claim_asid(2_000_002),
            Err(vcpu_api::VCpuError::NoVmid {
                vm_id: 2_000_002,
                available: 0
            })
        );
        for id in ids {
            release_asid(id);
            assert_eq!(asid_of(id), None);
        }
    }
}
