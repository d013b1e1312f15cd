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

/// Monotonic time from the generic timer: CNTPCT_EL0 scaled by CNTFRQ_EL0.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub fn now_ns() -> u64 {
    let freq = mrs!("cntfrq_el0").max(1);
    // SAFETY: ISB only orders the counter read after earlier instructions.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
    let ticks = mrs!("cntpct_el0");
    (u128::from(ticks) * 1_000_000_000 / u128::from(freq)) as u64
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
