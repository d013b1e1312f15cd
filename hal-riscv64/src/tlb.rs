//! Guest-physical TLB maintenance: HFENCE.GVMA by GPA (shifted right by 2) and VMID on
//! this hart and, through the firmware's RFENCE, on every hart; never SFENCE.VMA,
//! which does not cover G-stage translations. And the VMIDs of VMs.

use core::sync::atomic::{AtomicU16, Ordering};

use vcpu_api::{VCpuResult, VmTags};

#[cfg(target_arch = "riscv64")]
use core::arch::asm;

#[cfg(target_arch = "riscv64")]
use crate::firmware::EID_RFENCE;

/// The VMID bits the harts keep (narrowed by `init_hart`; 14 is the RV64 field).
static VMID_MASK: AtomicU16 = AtomicU16::new(0x3fff);

/// The most VMs that can live at once (fewer when the harts have fewer VMIDs).
pub const MAX_VMS: usize = 1024;

/// Which live VM holds which VMID (tag `t` is VMID `t - 1`: VMID 0 is a guest's
/// like any other in HS-mode).
static TABLE: VmTags<MAX_VMS> = VmTags::new();

/// Gives VM `vm_id` a VMID no other live VM holds, among those the harts implement
/// (see [`VmTags::claim`]).
pub fn claim_vmid(vm_id: usize) -> VCpuResult<u16> {
    let vmids = usize::from(VMID_MASK.load(Ordering::Relaxed)) + 1;
    TABLE.claim(vm_id, vmids).map(|t| t - 1)
}

/// The VMID of live VM `vm_id`.
pub fn vmid_for(vm_id: usize) -> Option<u16> {
    TABLE.tag_of(vm_id).map(|t| t - 1)
}

/// Invalidates every guest-physical translation of VM `vm_id`'s VMID on every hart
/// (HFENCE.GVMA here, RFENCE `remote_hfence_gvma_vmid` on all), then frees the
/// VMID: a VM that gets it next finds none of the old VM's translations, which may
/// lead to frames freed after this.
pub fn release_vmid(vm_id: usize) {
    let Some(vmid) = vmid_for(vm_id) else {
        return;
    };
    #[cfg(target_arch = "riscv64")]
    if let Err(e) = broadcast_hfence_gvma(vmid, 0, 0) {
        // Without the firmware's fence the other harts may keep translations of the
        // VMID: keep it out of use rather than hand it to another VM.
        log::error!("VMID {vmid}: remote HFENCE.GVMA failed with SBI error {e}; VMID retired");
        return;
    }
    let _ = vmid;
    TABLE.release(vm_id);
}

/// Narrows the VMIDs to the bits a hart keeps (`init_hart`).
pub(crate) fn narrow_vmids(vmid_mask: u16) {
    VMID_MASK.fetch_and(vmid_mask, Ordering::Relaxed);
}

/// Invalidates the guest-physical translations of `vmid` for `[gpa, gpa + size)` on
/// this hart: one HFENCE.GVMA per 4 KiB page (rs1 = GPA >> 2, rs2 = VMID), or one for
/// the whole VMID when the range is larger than 64 pages. Never SFENCE.VMA: that one
/// does not cover G-stage translations.
#[cfg(target_arch = "riscv64")]
pub fn hfence_gvma_range(vmid: u16, gpa: u64, size: u64) {
    const PAGE: u64 = 0x1000;
    let vmid = u64::from(vmid);
    // HFENCE.GVMA also orders the page-table stores before it against the G-stage
    // walks after it (privileged spec 8.3.2), so no separate fence is needed.
    if size == 0 || size > 64 * PAGE {
        hfence_gvma_vmid(vmid);
        return;
    }
    let start = gpa & !(PAGE - 1);
    let end = gpa.saturating_add(size);
    let mut page = start;
    while page < end {
        hfence_gvma(page, vmid);
        page += PAGE;
    }
}

/// Invalidates the guest-physical translations of `vmid` for `[gpa, gpa + size)` on
/// every hart: precisely on this one, then through the firmware's RFENCE
/// `remote_hfence_gvma_vmid` on all harts (which returns once they are done). The
/// remote request covers the whole VMID: OpenSBI up to v1.2 passes the GPA unshifted
/// to HFENCE.GVMA for ranged requests (rs1 must be GPA >> 2), so a ranged request
/// would miss the page; a whole-VMID fence is correct on every version.
#[cfg(target_arch = "riscv64")]
pub fn broadcast_hfence_gvma(vmid: u16, gpa: u64, size: u64) -> Result<(), i64> {
    hfence_gvma_range(vmid, gpa, size);
    remote_hfence_gvma_vmid_all(vmid)
}

/// RFENCE `remote_hfence_gvma_vmid` for the whole VMID on every hart.
#[cfg(target_arch = "riscv64")]
fn remote_hfence_gvma_vmid_all(vmid: u16) -> Result<(), i64> {
    crate::cpu::sbi_result(crate::cpu::sbi_call(
        EID_RFENCE,
        3,
        [0, u64::MAX, 0, 0, u64::from(vmid)],
    ))
    .map(|_| ())
}

/// HFENCE.GVMA for one guest-physical page of `vmid` (rs1 = GPA >> 2).
#[cfg(target_arch = "riscv64")]
pub(crate) fn hfence_gvma(gpa: u64, vmid: u64) {
    // SAFETY: a TLB fence has no memory effects beyond ordering.
    unsafe {
        asm!(".insn r 0x73, 0, 0x31, x0, {0}, {1}", in(reg) gpa >> 2, in(reg) vmid, options(nostack))
    };
}

/// HFENCE.GVMA for every guest-physical address of `vmid`.
#[cfg(target_arch = "riscv64")]
pub(crate) fn hfence_gvma_vmid(vmid: u64) {
    // SAFETY: as `hfence_gvma`.
    unsafe { asm!(".insn r 0x73, 0, 0x31, x0, x0, {0}", in(reg) vmid, options(nostack)) };
}

/// HFENCE.GVMA for everything.
#[cfg(target_arch = "riscv64")]
pub(crate) fn hfence_gvma_all() {
    // SAFETY: as `hfence_gvma`.
    unsafe { asm!(".insn r 0x73, 0, 0x31, x0, x0, x0", options(nostack)) };
}

/// HFENCE.VVMA for every VS-stage translation of the VMID in hgatp.
#[cfg(target_arch = "riscv64")]
pub(crate) fn hfence_vvma_all() {
    // SAFETY: as `hfence_gvma`.
    unsafe { asm!(".insn r 0x73, 0, 0x11, x0, x0, x0", options(nostack)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the VMID was the VM id cut to the VMID bits, so live VMs whose ids
    /// differ above them (1 and 0x4001 with 14 bits) shared one. VMIDs are claimed
    /// now: distinct for live VMs, free again once the VM is released. (The table is
    /// shared by this crate's tests, so this one uses ids no other test uses.)
    #[test]
    fn live_vms_never_share_a_vmid() {
        let ids = [1_000_001, 1_000_001 + 0x4000, 1_000_001 + 0x8000];
        let vmids = ids.map(|id| claim_vmid(id).unwrap());
        assert!(vmids[0] != vmids[1] && vmids[1] != vmids[2] && vmids[0] != vmids[2]);
        assert!(vmids.iter().all(|&v| v <= 0x3fff));
        assert_eq!(vmid_for(ids[2]), Some(vmids[2]));
        assert_eq!(
            claim_vmid(ids[0]),
            Err(vcpu_api::VCpuError::VmIdInUse { vm_id: ids[0] })
        );
        for id in ids {
            release_vmid(id);
            assert_eq!(vmid_for(id), None);
        }
    }
}
