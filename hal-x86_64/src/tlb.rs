//! Nested TLB maintenance: each VM's ASID (APM vol. 2, 15.16 "TLB Control") and the
//! TLB_CONTROL value that flushes one guest's translations before its next VMRUN.

use crate::cpu::{SvmError, SvmFeatures};
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

    /// The ASID of VM `vm_id`: `vm_id + 1` (ASID 0 is the host's, APM 15.16).
    pub fn asid_for_vm(&self, vm_id: usize) -> Result<u32, SvmError> {
        let asid = vm_id.checked_add(1).and_then(|a| u32::try_from(a).ok());
        match asid {
            Some(a) if a < self.nasid => Ok(a),
            _ => Err(SvmError::NoAsid {
                vm_id,
                nasid: self.nasid,
            }),
        }
    }
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

    #[test]
    fn asids() {
        let f = SvmFeatures::from_cpuid(0x75, 1, 16, 1).unwrap();
        assert_eq!(f.asid_for_vm(0), Ok(1));
        assert_eq!(f.asid_for_vm(14), Ok(15));
        assert_eq!(
            f.asid_for_vm(15),
            Err(SvmError::NoAsid {
                vm_id: 15,
                nasid: 16
            })
        );
        assert!(f.asid_for_vm(usize::MAX).is_err());
    }
}
