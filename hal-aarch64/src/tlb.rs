//! Stage-2 TLB maintenance: after a translation is removed or weakened, invalidate it
//! on every physical CPU with the inner-shareable broadcast forms, by IPA and VMID.
//!
//! Arm ARM (DDI 0487K.a) D8.16 "TLB maintenance requirements": after changing a
//! stage-2 descriptor, `DSB ISHST` (the write reaches the walkers), `TLBI IPAS2E1IS`
//! for each page (stage-2-only entries of the current VMID, IPA bits 47:12 in Xt bits 35:0),
//! `DSB ISH`, then `TLBI VMALLE1IS` (combined stage-1+2 entries cache the old output
//! and cannot be found by IPA), `DSB ISH`, `ISB`. The VMID of both TLBIs is the one in
//! VTTBR_EL2, so the target VMID is loaded for the duration. Never the stage-1-only
//! forms (`TLBI VAE1`...), which miss stage-2 entries.

use addrspace::GuestPhysAddr;
use vcpu_api::{VCpuResult, VmTags, usize_of};

/// Above this many pages one `TLBI VMALLS12E1IS` (every stage-1 and stage-2 entry
/// of the VMID) is cheaper than per-page invalidation.
pub const MAX_PAGES_BY_IPA: usize = 256;

/// VMIDs a VM can get: 1..=255 (8-bit VMIDs, which every CPU has; VMID 0 is left
/// to the hypervisor's own host state).
pub const VMIDS: usize = 255;

/// Which live VM holds which VMID.
static TABLE: VmTags<VMIDS> = VmTags::new();

/// Gives VM `vm_id` a VMID no other live VM holds (see [`VmTags::claim`]).
pub fn claim_vmid(vm_id: usize) -> VCpuResult<u16> {
    TABLE.claim(vm_id, VMIDS)
}

/// The VMID of live VM `vm_id`.
pub fn vmid_of(vm_id: usize) -> Option<u16> {
    TABLE.tag_of(vm_id)
}

/// Invalidates every stage-1 and stage-2 translation of VM `vm_id`'s VMID on every
/// CPU (`TLBI VMALLS12E1IS`), then frees the VMID: a VM that gets it next finds none
/// of the old VM's translations, which may lead to frames freed after this.
pub fn release_vmid(vm_id: usize) {
    if let Some(vmid) = TABLE.tag_of(vm_id) {
        flush_all(vmid);
        TABLE.release(vm_id);
    }
}

/// How the range will be invalidated: `Some((first, pages))` by IPA, `None` for a
/// whole-VMID invalidation (size zero means nothing to do: `Some((_, 0))`).
pub fn plan(gpa: GuestPhysAddr, size: usize) -> Option<(u64, usize)> {
    let start = gpa.as_usize() as u64 & !0xfff;
    let end = (gpa.as_usize() as u64).saturating_add(size as u64);
    let pages = usize_of(end.saturating_sub(start).div_ceil(0x1000));
    (pages <= MAX_PAGES_BY_IPA).then_some((start, pages))
}

/// Invalidates the translations of `vmid` for `[gpa, gpa + size)` on every CPU in
/// the inner shareable domain, and returns when that is complete.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn flush_guest_range(vmid: u16, gpa: GuestPhysAddr, size: usize) {
    use core::arch::asm;
    with_vmid(vmid, || match plan(gpa, size) {
        Some((start, pages)) => {
            // SAFETY: TLB maintenance and barriers only drop cached translations of
            // this VMID; they cannot break memory safety.
            unsafe {
                asm!("dsb ishst", options(nostack, preserves_flags));
                for i in 0..pages as u64 {
                    let ipa = start + i * 0x1000;
                    asm!("tlbi ipas2e1is, {}", in(reg) (ipa >> 12) & 0xf_ffff_ffff, options(nostack, preserves_flags));
                }
                asm!(
                    "dsb ish",
                    "tlbi vmalle1is",
                    "dsb ish",
                    "isb",
                    options(nostack, preserves_flags)
                );
            }
        }
        None => flush_vmid_inner(),
    });
}

/// Invalidates every stage-1 and stage-2 translation of `vmid` on every CPU in the
/// inner shareable domain (a new root for the VMID, or a huge range).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn flush_guest_all(vmid: u16) {
    with_vmid(vmid, flush_vmid_inner);
}

/// Invalidates every translation of `vmid` on this CPU only.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn flush_guest_local(vmid: u16) {
    use core::arch::asm;
    with_vmid(vmid, || {
        // SAFETY: as in `flush_guest_range`.
        unsafe {
            asm!(
                "dsb nshst",
                "tlbi vmalls12e1",
                "dsb nsh",
                "isb",
                options(nostack, preserves_flags)
            )
        }
    });
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
fn flush_vmid_inner() {
    // SAFETY: as in `flush_guest_range`.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        )
    }
}

/// Runs `f` with `vmid` in VTTBR_EL2.VMID (the VMID the TLBI instructions act on),
/// then puts the previous value back. The hypervisor runs at EL2 with interrupts
/// masked, so nothing else on this CPU sees the temporary value.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
fn with_vmid(vmid: u16, f: impl FnOnce()) {
    use crate::regs::{mrs, msr};
    let saved = mrs!("vttbr_el2");
    let temporary = (saved & 0x0000_ffff_ffff_ffff) | (u64::from(vmid) << 48);
    // SAFETY: no guest runs on this CPU while the hypervisor executes, and EL2's own
    // translation does not use VTTBR_EL2; the old value is restored below.
    unsafe {
        if temporary != saved {
            msr!("vttbr_el2", temporary);
            core::arch::asm!("isb", options(nostack, preserves_flags));
        }
    }
    f();
    // SAFETY: restores the value read above.
    unsafe {
        if temporary != saved {
            msr!("vttbr_el2", saved);
            core::arch::asm!("isb", options(nostack, preserves_flags));
        }
    }
}

/// What the vCPU calls to drop its VMID's translations on this CPU: [`flush_guest_local`]
/// on bare-metal aarch64; elsewhere nothing can hold a guest translation.
pub(crate) fn flush_local(vmid: u16) {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    flush_guest_local(vmid);
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    let _ = vmid;
}

/// What the vCPU calls to drop its VMID's translations on every CPU
/// ([`flush_guest_all`] on bare-metal aarch64).
pub(crate) fn flush_all(vmid: u16) {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    flush_guest_all(vmid);
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    let _ = vmid;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_rounds_to_pages() {
        let g = GuestPhysAddr::from_usize;
        assert_eq!(plan(g(0x4000_0000), 0x1000), Some((0x4000_0000, 1)));
        assert_eq!(plan(g(0x4000_0ff8), 0x10), Some((0x4000_0000, 2)));
        assert_eq!(plan(g(0x4000_0000), 0), Some((0x4000_0000, 0)));
        assert_eq!(
            plan(g(0x4000_0000), MAX_PAGES_BY_IPA * 0x1000),
            Some((0x4000_0000, MAX_PAGES_BY_IPA))
        );
        assert_eq!(plan(g(0x4000_0000), 0x20_0000 + 0x1000), None);
    }

    /// Regression: the VMID was `vm_id % 255 + 1`, so live VMs 1 and 256 shared VMID 2
    /// (and VM 255 had VMID 1 like VM 0). VMIDs are claimed now: distinct for live
    /// VMs, never 0, free again once the VM is released. (The table is shared by the
    /// tests of this crate, so this one uses ids no other test uses.)
    #[test]
    fn live_vms_never_share_a_vmid() {
        let ids = [1_000_001, 1_000_256, 1_000_511];
        let vmids = ids.map(|id| claim_vmid(id).unwrap());
        assert!(vmids.iter().all(|&v| v != 0));
        assert!(vmids[0] != vmids[1] && vmids[1] != vmids[2] && vmids[0] != vmids[2]);
        assert_eq!(vmid_of(ids[1]), Some(vmids[1]));
        assert_eq!(
            claim_vmid(ids[1]),
            Err(vcpu_api::VCpuError::VmIdInUse { vm_id: ids[1] })
        );
        for id in ids {
            release_vmid(id);
            assert_eq!(vmid_of(id), None);
        }
    }
}
