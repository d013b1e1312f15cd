//! The physical CPU: per-CPU EL2 bring-up (`init_cpu`), what the CPU supports
//! (PARange), its identity and clock, cache maintenance for code the hypervisor
//! writes for a guest, and the hypervisor's own PSCI calls to the platform firmware.
//! Everything but [`pa_bits`] exists only on bare-metal aarch64.

use vcpu_api::{VCpuError, VCpuResult};

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use core::arch::asm;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use crate::regs::{CNTHCTL_EL2_EL1_TIMER, CPTR_EL2_NO_FP_TRAP, Hcr, mrs, msr};

/// What every hardware step returns off bare-metal aarch64.
#[cfg_attr(all(target_arch = "aarch64", target_os = "none"), allow(dead_code))]
pub(crate) const NO_EL2: VCpuError = VCpuError::Unsupported {
    feature: "EL2 (hal-aarch64 runs guests only on bare-metal aarch64)",
};

/// The number of physical address bits a PARange encoding stands for
/// (ID_AA64MMFR0_EL1.PARange).
pub const fn pa_bits(pa_range: u8) -> u32 {
    match pa_range {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// ID_AA64MMFR0_EL1.PARange of this CPU: the physical address size it supports.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) fn pa_range() -> VCpuResult<u8> {
    Ok((mrs!("id_aa64mmfr0_el1") & 0xf) as u8)
}

/// Off bare-metal aarch64 there is no CPU to ask.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub(crate) fn pa_range() -> VCpuResult<u8> {
    Err(NO_EL2)
}

/// The current exception level (2 when the hypervisor runs as it should).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn current_el() -> u64 {
    (mrs!("CurrentEL") >> 2) & 3
}

/// Prepares this physical CPU for running guests: the EL2 vector table, no FP/SIMD
/// traps, the EL1 timer registers usable by guests, HCR_EL2 without stage 2.
///
/// # Safety
///
/// Runs at EL2 (non-VHE) on the CPU being prepared, once before its first guest; the
/// hypervisor image (which holds the vectors) stays mapped and executable at EL2.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub unsafe fn init_cpu() {
    let midr = mrs!("midr_el1");
    // SAFETY: per the caller we are at EL2; the vector table is part of this image,
    // and the other values only relax traps for EL1 or clear offsets.
    unsafe {
        msr!("vbar_el2", crate::entry::vectors());
        msr!("cptr_el2", CPTR_EL2_NO_FP_TRAP);
        msr!("cnthctl_el2", CNTHCTL_EL2_EL1_TIMER);
        msr!("cntvoff_el2", 0u64);
        msr!("vpidr_el2", midr);
        msr!("mdcr_el2", 0u64);
        msr!("hcr_el2", Hcr::HOST.bits());
        asm!("isb", options(nostack, preserves_flags));
    }
}

/// This CPU's index: MPIDR_EL1.Aff0 (QEMU virt numbers CPUs 0..n in Aff0).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn cpu_id() -> usize {
    (mrs!("mpidr_el1") & 0xff) as usize
}

/// This CPU's index as [`cpu_id`] gives it; 0 off bare-metal aarch64.
pub(crate) fn current_cpu() -> usize {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    return cpu_id();
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    0
}

/// Monotonic time from the generic timer: CNTPCT_EL0 scaled by CNTFRQ_EL0.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn now_ns() -> u64 {
    let freq = mrs!("cntfrq_el0").max(1);
    // SAFETY: ISB only orders the counter read after earlier instructions.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
    let ticks = mrs!("cntpct_el0");
    // Past u64 only after 584 years at any frequency: saturate then.
    u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(freq)).unwrap_or(u64::MAX)
}

/// A PSCI call to the platform firmware (the hypervisor's own CPU_ON, CPU_OFF,
/// SYSTEM_OFF) by `smc #0`; returns x0.
///
/// # Safety
///
/// The call must be one the caller is prepared for: CPU_ON starts another CPU at
/// `x[2]` with `x[3]` in its x0, CPU_OFF and SYSTEM_OFF do not return.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub unsafe fn firmware_psci(x: [u64; 4]) -> u64 {
    let ret: u64;
    // SAFETY: per the caller; an SMC from EL2 goes to the firmware (EL3, or QEMU's
    // built-in PSCI when it emulates no EL3), which preserves x4..x30.
    unsafe {
        asm!(
            "smc #0",
            inlateout("x0") x[0] => ret,
            inlateout("x1") x[1] => _,
            inlateout("x2") x[2] => _,
            inlateout("x3") x[3] => _,
            options(nostack),
        );
    }
    ret
}

/// Cleans the data cache to the point of coherency for `[start, start + len)` of the
/// hypervisor's address space and invalidates every instruction cache in the inner
/// shareable domain: what code written by the hypervisor needs before a guest runs it
/// with its MMU (and so its caches) off.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn sync_code_for_guest(start: usize, len: usize) {
    // CTR_EL0.DminLine, bits 19:16: log2 of the smallest data cache line in words.
    let line = 4usize << ((mrs!("ctr_el0") >> 16) & 0xf);
    let mut addr = start & !(line - 1);
    let end = start.saturating_add(len);
    // SAFETY: cache maintenance by VA and barriers do not change memory contents;
    // the caller names memory the hypervisor maps.
    unsafe {
        while addr < end {
            asm!("dc cvac, {}", in(reg) addr, options(nostack, preserves_flags));
            addr += line;
        }
        asm!(
            "dsb ish",
            "ic ialluis",
            "dsb ish",
            "isb",
            options(nostack, preserves_flags)
        );
    }
}

/// The ID register an EL1 read trapped by HCR_EL2.TID3 names: `(CRm, op2)` of
/// `S3_0_C0_C<CRm>_<op2>` with CRm 1..7 (Arm ARM D19.2 "General system control
/// registers", the ID group 3 of HCR_EL2.TID3); `None` for any other register.
pub const fn id_register(addr: vcpu_api::SysRegAddr) -> Option<(u32, u32)> {
    let a = addr.0;
    let (op0, op2, op1, crn, crm) = (
        (a >> 20) & 3,
        (a >> 17) & 7,
        (a >> 14) & 7,
        (a >> 10) & 0xf,
        (a >> 1) & 0xf,
    );
    if op0 == 3 && op1 == 0 && crn == 0 && crm >= 1 && crm <= 7 {
        Some((crm, op2))
    } else {
        None
    }
}

/// Reads ID register `S3_0_C0_C<crm>_<op2>` (CRm 1..7) on this CPU; 0 for others.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) fn read_id_register(crm: u32, op2: u32) -> u64 {
    macro_rules! row {
        ($c:literal) => {{
            let v: u64;
            // SAFETY: reading an ID register at EL2 has no side effect; the encodings
            // of ID group 3 that name no register are RAZ.
            unsafe {
                match op2 {
                    0 => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_0"), out(reg) v, options(nomem, nostack, preserves_flags)),
                    1 => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_1"), out(reg) v, options(nomem, nostack, preserves_flags)),
                    2 => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_2"), out(reg) v, options(nomem, nostack, preserves_flags)),
                    3 => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_3"), out(reg) v, options(nomem, nostack, preserves_flags)),
                    4 => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_4"), out(reg) v, options(nomem, nostack, preserves_flags)),
                    5 => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_5"), out(reg) v, options(nomem, nostack, preserves_flags)),
                    6 => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_6"), out(reg) v, options(nomem, nostack, preserves_flags)),
                    _ => asm!(concat!("mrs {}, S3_0_C0_C", $c, "_7"), out(reg) v, options(nomem, nostack, preserves_flags)),
                }
            }
            v
        }};
    }
    match crm {
        1 => row!(1),
        2 => row!(2),
        3 => row!(3),
        4 => row!(4),
        5 => row!(5),
        6 => row!(6),
        7 => row!(7),
        _ => 0,
    }
}

/// Off bare-metal aarch64 there are no ID registers to read: zeros.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub(crate) fn read_id_register(_crm: u32, _op2: u32) -> u64 {
    0
}

/// Whether a CPU with these ID_AA64ISAR1_EL1 and ID_AA64ISAR2_EL1 values has
/// pointer authentication (APA \[7:4\], API \[11:8\], GPA \[27:24\], GPI \[31:28\];
/// ISAR2 GPA3 \[11:8\], APA3 \[15:12\]).
pub const fn pauth(isar1: u64, isar2: u64) -> bool {
    isar1 & 0xff00_0ff0 != 0 || isar2 & 0xff00 != 0
}

/// Whether this CPU has pointer authentication.
pub(crate) fn has_pauth() -> bool {
    pauth(read_id_register(6, 1), read_id_register(6, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::sysreg_id;

    #[test]
    fn id_register_space() {
        // ID_AA64PFR0_EL1 = S3_0_C0_C4_0, ID_AA64ISAR1_EL1 = S3_0_C0_C6_1.
        assert_eq!(id_register(sysreg_id(3, 0, 0, 4, 0)), Some((4, 0)));
        assert_eq!(id_register(sysreg_id(3, 0, 0, 6, 1)), Some((6, 1)));
        // MIDR_EL1 (CRm 0) is not ID group 3; neither is CTR_EL0 (op1 3) nor
        // SCTLR_EL1 (CRn 1).
        assert_eq!(id_register(sysreg_id(3, 0, 0, 0, 0)), None);
        assert_eq!(id_register(sysreg_id(3, 3, 0, 0, 1)), None);
        assert_eq!(id_register(sysreg_id(3, 0, 1, 0, 0)), None);
        assert_eq!(id_register(sysreg_id(3, 0, 0, 8, 0)), None);
    }

    #[test]
    fn pointer_authentication_fields() {
        assert!(!pauth(0, 0));
        assert!(pauth(0x100, 0)); // API = 1 (implementation defined, pauth-impdef)
        assert!(pauth(0x10, 0)); // APA = 1 (QARMA5)
        assert!(pauth(0, 0x1000)); // APA3 (QARMA3)
        assert!(!pauth(0x000f_f00f, 0x00ff)); // other fields only
    }
}
