//! The vCPU's saved state: [`TrapFrame`] (general registers, ELR/SPSR, FP/SIMD, saved
//! by the entry/exit code on every trap) and [`El1Regs`] (the EL1 system registers,
//! switched by `bind` and `unbind` when a vCPU is bound to or unbound from a
//! physical CPU).

use core::mem::offset_of;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use core::arch::asm;

use static_assertions::const_assert_eq;
use vcpu_api::VCpuResult;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
use crate::regs::{Hcr, mrs, msr};

/// The FP/SIMD registers V0..V31 with FPSR and FPCR.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpRegs {
    /// V0..V31.
    pub v: [u128; 32],
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
}

/// What the exit path saves and the entry path restores, in the layout the
/// assembly uses (offsets checked below).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapFrame {
    /// X0..X30.
    pub x: [u64; 31],
    /// ELR_EL2: the guest PC to return to.
    pub elr: u64,
    /// SPSR_EL2: the guest PSTATE to return to.
    pub spsr: u64,
    /// The hypervisor's stack pointer while the guest runs (set by the entry code).
    pub host_sp: u64,
    /// FP/SIMD state.
    pub fp: FpRegs,
}

/// Offset of [`TrapFrame::elr`] (the assembly stores ELR and SPSR with one STP).
pub const FRAME_ELR: usize = 31 * 8;
/// Offset of [`TrapFrame::host_sp`].
pub const FRAME_HOST_SP: usize = 33 * 8;
/// Offset of [`TrapFrame::fp`].
pub const FRAME_FP: usize = 34 * 8;
/// Offset of [`FpRegs::fpsr`] inside [`FpRegs`].
pub const FP_FPSR: usize = 32 * 16;

const_assert_eq!(offset_of!(TrapFrame, elr), FRAME_ELR);
const_assert_eq!(offset_of!(TrapFrame, spsr), FRAME_ELR + 8);
const_assert_eq!(offset_of!(TrapFrame, host_sp), FRAME_HOST_SP);
const_assert_eq!(offset_of!(TrapFrame, fp), FRAME_FP);
const_assert_eq!(offset_of!(FpRegs, fpsr), FP_FPSR);
const_assert_eq!(offset_of!(FpRegs, fpcr), FP_FPSR + 8);
const_assert_eq!(FRAME_FP % 16, 0);

/// The EL1 (and EL0) system registers a guest owns. The hypervisor runs at EL2 and
/// never uses them, so they are switched only when a vCPU is bound to or unbound
/// from a physical CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct El1Regs {
    /// SCTLR_EL1.
    pub sctlr: u64,
    /// TCR_EL1.
    pub tcr: u64,
    /// TTBR0_EL1.
    pub ttbr0: u64,
    /// TTBR1_EL1.
    pub ttbr1: u64,
    /// MAIR_EL1.
    pub mair: u64,
    /// AMAIR_EL1.
    pub amair: u64,
    /// VBAR_EL1.
    pub vbar: u64,
    /// CONTEXTIDR_EL1.
    pub contextidr: u64,
    /// TPIDR_EL1.
    pub tpidr_el1: u64,
    /// TPIDR_EL0.
    pub tpidr_el0: u64,
    /// TPIDRRO_EL0.
    pub tpidrro_el0: u64,
    /// SP_EL0.
    pub sp_el0: u64,
    /// SP_EL1.
    pub sp_el1: u64,
    /// ELR_EL1.
    pub elr_el1: u64,
    /// SPSR_EL1.
    pub spsr_el1: u64,
    /// ESR_EL1.
    pub esr_el1: u64,
    /// FAR_EL1.
    pub far_el1: u64,
    /// PAR_EL1.
    pub par_el1: u64,
    /// AFSR0_EL1.
    pub afsr0: u64,
    /// AFSR1_EL1.
    pub afsr1: u64,
    /// CPACR_EL1.
    pub cpacr: u64,
    /// CNTKCTL_EL1.
    pub cntkctl: u64,
    /// CSSELR_EL1.
    pub csselr: u64,
    /// CNTV_CTL_EL0.
    pub cntv_ctl: u64,
    /// CNTV_CVAL_EL0.
    pub cntv_cval: u64,
    /// The pointer-authentication keys (APIAKey, APIBKey, APDAKey, APDBKey,
    /// APGAKey; Lo then Hi), switched only on a CPU that has them.
    pub pauth_keys: [u64; 10],
}

impl El1Regs {
    /// The state of a CPU coming out of reset (or PSCI CPU_ON): MMU off, FP/SIMD
    /// enabled at EL1 (CPACR_EL1.FPEN = 0b11, as firmware leaves it for an OS).
    pub const fn reset() -> Self {
        Self {
            sctlr: crate::regs::SCTLR_EL1_RESET,
            tcr: 0,
            ttbr0: 0,
            ttbr1: 0,
            mair: 0,
            amair: 0,
            vbar: 0,
            contextidr: 0,
            tpidr_el1: 0,
            tpidr_el0: 0,
            tpidrro_el0: 0,
            sp_el0: 0,
            sp_el1: 0,
            elr_el1: 0,
            spsr_el1: 0,
            esr_el1: 0,
            far_el1: 0,
            par_el1: 0,
            afsr0: 0,
            afsr1: 0,
            cpacr: 0b11 << 20,
            cntkctl: 0,
            csselr: 0,
            cntv_ctl: 0,
            cntv_cval: 0,
            pauth_keys: [0; 10],
        }
    }
}

/// Loads a fully configured vCPU onto this CPU: its EL1 system registers, VMPIDR_EL2,
/// VTCR_EL2, VTTBR_EL2 (the caller checked the root) and HCR_EL2.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) fn bind(el1: &El1Regs, hcr: u64, vtcr: u64, vttbr: u64, vmpidr: u64) -> VCpuResult {
    // SAFETY: the vCPU is fully configured (its caller checked the root and setup),
    // it is not bound elsewhere, and the table behind `vttbr` is owned by its VM,
    // which outlives the binding.
    unsafe { load_vcpu(el1, hcr, vtcr, vttbr, vmpidr) };
    Ok(())
}

/// Saves the EL1 registers of the vCPU bound to this CPU and turns stage 2 off.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) fn unbind(el1: &mut El1Regs) -> VCpuResult {
    save_el1(el1);
    Ok(())
}

/// Off bare-metal aarch64 there is no EL2 to bind a vCPU on.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub(crate) fn bind(_: &El1Regs, _: u64, _: u64, _: u64, _: u64) -> VCpuResult {
    Err(crate::cpu::NO_EL2)
}

/// Off bare-metal aarch64 there is no EL2 to unbind from.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub(crate) fn unbind(_: &mut El1Regs) -> VCpuResult {
    Err(crate::cpu::NO_EL2)
}

/// Loads a vCPU onto this CPU: its EL1 system registers, VMPIDR_EL2, VTCR_EL2,
/// VTTBR_EL2 and HCR_EL2.
///
/// # Safety
///
/// At EL2 on the CPU that will run the vCPU, with no other vCPU loaded; `vttbr`
/// names a complete stage-2 table that stays alive while the vCPU is loaded.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
unsafe fn load_vcpu(el1: &El1Regs, hcr: u64, vtcr: u64, vttbr: u64, vmpidr: u64) {
    // SAFETY: per the caller; the EL1 registers only affect the guest.
    unsafe {
        msr!("sctlr_el1", el1.sctlr);
        msr!("tcr_el1", el1.tcr);
        msr!("ttbr0_el1", el1.ttbr0);
        msr!("ttbr1_el1", el1.ttbr1);
        msr!("mair_el1", el1.mair);
        msr!("amair_el1", el1.amair);
        msr!("vbar_el1", el1.vbar);
        msr!("contextidr_el1", el1.contextidr);
        msr!("tpidr_el1", el1.tpidr_el1);
        msr!("tpidr_el0", el1.tpidr_el0);
        msr!("tpidrro_el0", el1.tpidrro_el0);
        msr!("sp_el0", el1.sp_el0);
        msr!("sp_el1", el1.sp_el1);
        msr!("elr_el1", el1.elr_el1);
        msr!("spsr_el1", el1.spsr_el1);
        msr!("esr_el1", el1.esr_el1);
        msr!("far_el1", el1.far_el1);
        msr!("par_el1", el1.par_el1);
        msr!("afsr0_el1", el1.afsr0);
        msr!("afsr1_el1", el1.afsr1);
        msr!("cpacr_el1", el1.cpacr);
        msr!("cntkctl_el1", el1.cntkctl);
        msr!("csselr_el1", el1.csselr);
        msr!("cntv_cval_el0", el1.cntv_cval);
        msr!("cntv_ctl_el0", el1.cntv_ctl);
        if crate::cpu::has_pauth() {
            let k = &el1.pauth_keys;
            msr!("S3_0_C2_C1_0", k[0]);
            msr!("S3_0_C2_C1_1", k[1]);
            msr!("S3_0_C2_C1_2", k[2]);
            msr!("S3_0_C2_C1_3", k[3]);
            msr!("S3_0_C2_C2_0", k[4]);
            msr!("S3_0_C2_C2_1", k[5]);
            msr!("S3_0_C2_C2_2", k[6]);
            msr!("S3_0_C2_C2_3", k[7]);
            msr!("S3_0_C2_C3_0", k[8]);
            msr!("S3_0_C2_C3_1", k[9]);
        }
        msr!("vmpidr_el2", vmpidr);
        msr!("vtcr_el2", vtcr);
        msr!("vttbr_el2", vttbr);
        msr!("hcr_el2", hcr);
        asm!("isb", options(nostack, preserves_flags));
    }
}

/// Saves the EL1 system registers of the vCPU loaded on this CPU and turns stage 2
/// off again.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
fn save_el1(el1: &mut El1Regs) {
    el1.sctlr = mrs!("sctlr_el1");
    el1.tcr = mrs!("tcr_el1");
    el1.ttbr0 = mrs!("ttbr0_el1");
    el1.ttbr1 = mrs!("ttbr1_el1");
    el1.mair = mrs!("mair_el1");
    el1.amair = mrs!("amair_el1");
    el1.vbar = mrs!("vbar_el1");
    el1.contextidr = mrs!("contextidr_el1");
    el1.tpidr_el1 = mrs!("tpidr_el1");
    el1.tpidr_el0 = mrs!("tpidr_el0");
    el1.tpidrro_el0 = mrs!("tpidrro_el0");
    el1.sp_el0 = mrs!("sp_el0");
    el1.sp_el1 = mrs!("sp_el1");
    el1.elr_el1 = mrs!("elr_el1");
    el1.spsr_el1 = mrs!("spsr_el1");
    el1.esr_el1 = mrs!("esr_el1");
    el1.far_el1 = mrs!("far_el1");
    el1.par_el1 = mrs!("par_el1");
    el1.afsr0 = mrs!("afsr0_el1");
    el1.afsr1 = mrs!("afsr1_el1");
    el1.cpacr = mrs!("cpacr_el1");
    el1.cntkctl = mrs!("cntkctl_el1");
    el1.csselr = mrs!("csselr_el1");
    el1.cntv_ctl = mrs!("cntv_ctl_el0");
    el1.cntv_cval = mrs!("cntv_cval_el0");
    if crate::cpu::has_pauth() {
        el1.pauth_keys = [
            mrs!("S3_0_C2_C1_0"),
            mrs!("S3_0_C2_C1_1"),
            mrs!("S3_0_C2_C1_2"),
            mrs!("S3_0_C2_C1_3"),
            mrs!("S3_0_C2_C2_0"),
            mrs!("S3_0_C2_C2_1"),
            mrs!("S3_0_C2_C2_2"),
            mrs!("S3_0_C2_C2_3"),
            mrs!("S3_0_C2_C3_0"),
            mrs!("S3_0_C2_C3_1"),
        ];
    }
    // SAFETY: the vCPU is no longer loaded; the hypervisor itself runs at EL2, which
    // stage 2 does not translate, and no guest runs until the next `load_vcpu`.
    unsafe {
        msr!("cntv_ctl_el0", 0u64);
        msr!("hcr_el2", Hcr::HOST.bits());
        asm!("isb", options(nostack, preserves_flags));
    }
}
