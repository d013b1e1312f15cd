//! The hardware side, built only for bare-metal aarch64: the EL2 vector table, guest
//! entry and exit, system-register access and per-CPU EL2 setup.
//!
//! Entry and exit (Arm ARM D1.3 "Exceptions"): `__hv_guest_enter` saves the
//! hypervisor's callee-saved registers on its stack, keeps the stack pointer in the
//! [`TrapFrame`] and the frame's address in TPIDR_EL2, loads the guest's registers
//! and ERETs. A trap from EL1 lands in the lower-EL vectors (on SP_EL2, the
//! hypervisor's stack), which save the guest's registers into the frame, restore the
//! hypervisor's and return from `__hv_guest_enter` with the exit kind. The EL1 system
//! registers are not touched on this path: [`load_vcpu`] and [`save_el1`] switch them
//! when a vCPU is bound or unbound.

use core::arch::{asm, global_asm};

use crate::context::{El1Regs, FP_FPSR, FRAME_ELR, FRAME_FP, FRAME_HOST_SP, TrapFrame};
use crate::regs::{CNTHCTL_EL2_EL1_TIMER, CPTR_EL2_NO_FP_TRAP, Hcr};

/// `__hv_guest_enter` returned because of a synchronous exception from EL1.
pub(crate) const EXIT_SYNC: u64 = 0;
/// ... because of a physical IRQ.
pub(crate) const EXIT_IRQ: u64 = 1;
/// ... because of a physical FIQ.
pub(crate) const EXIT_FIQ: u64 = 2;
/// ... because of an SError.
pub(crate) const EXIT_SERROR: u64 = 3;
/// ... because of an exception from AArch32 state (never entered on purpose).
pub(crate) const EXIT_AARCH32: u64 = 4;

global_asm!(
    r#"
.section .text.hv_vectors, "ax"

.macro HV_FAULT_VECTOR kind
    .balign 0x80
    mov     x0, #\kind
    b       __hv_el2_fault
.endm

.macro HV_EXIT_VECTOR kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       __hv_guest_exit
.endm

// The TrapFrame layout, written once for entry (`op` = ldp) and exit (`op` = stp):
// x2..x29 at 8 * n from `base` (x0, x1 and x30 are moved around these by hand)...
.macro HV_GPR_PAIRS op, base
    \op     x2, x3, [\base, #16]
    \op     x4, x5, [\base, #32]
    \op     x6, x7, [\base, #48]
    \op     x8, x9, [\base, #64]
    \op     x10, x11, [\base, #80]
    \op     x12, x13, [\base, #96]
    \op     x14, x15, [\base, #112]
    \op     x16, x17, [\base, #128]
    \op     x18, x19, [\base, #144]
    \op     x20, x21, [\base, #160]
    \op     x22, x23, [\base, #176]
    \op     x24, x25, [\base, #192]
    \op     x26, x27, [\base, #208]
    \op     x28, x29, [\base, #224]
.endm

// ... and V0..V31 at 16 * n from `base` (the frame's FpRegs).
.macro HV_FP_PAIRS op, base
    \op     q0, q1, [\base, #0]
    \op     q2, q3, [\base, #32]
    \op     q4, q5, [\base, #64]
    \op     q6, q7, [\base, #96]
    \op     q8, q9, [\base, #128]
    \op     q10, q11, [\base, #160]
    \op     q12, q13, [\base, #192]
    \op     q14, q15, [\base, #224]
    \op     q16, q17, [\base, #256]
    \op     q18, q19, [\base, #288]
    \op     q20, q21, [\base, #320]
    \op     q22, q23, [\base, #352]
    \op     q24, q25, [\base, #384]
    \op     q26, q27, [\base, #416]
    \op     q28, q29, [\base, #448]
    \op     q30, q31, [\base, #480]
.endm

// VBAR_EL2: 16 entries of 0x80 bytes (Arm ARM D1.3.2 "Exception vectors").
.balign 2048
.global __hv_el2_vectors
__hv_el2_vectors:
    HV_FAULT_VECTOR 0           // current EL, SP_EL0: sync
    HV_FAULT_VECTOR 1           //                     IRQ
    HV_FAULT_VECTOR 2           //                     FIQ
    HV_FAULT_VECTOR 3           //                     SError
    HV_FAULT_VECTOR 4           // current EL, SP_EL2: sync
    HV_FAULT_VECTOR 5           //                     IRQ
    HV_FAULT_VECTOR 6           //                     FIQ
    HV_FAULT_VECTOR 7           //                     SError
    HV_EXIT_VECTOR {sync}       // lower EL, AArch64: sync
    HV_EXIT_VECTOR {irq}        //                    IRQ
    HV_EXIT_VECTOR {fiq}        //                    FIQ
    HV_EXIT_VECTOR {serror}     //                    SError
    HV_EXIT_VECTOR {aarch32}    // lower EL, AArch32: sync
    HV_EXIT_VECTOR {aarch32}    //                    IRQ
    HV_EXIT_VECTOR {aarch32}    //                    FIQ
    HV_EXIT_VECTOR {aarch32}    //                    SError

__hv_el2_fault:
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    bl      __hv_el2_exception
    b       .

// extern "C" fn __hv_guest_enter(frame: *mut TrapFrame) -> u64 (the exit kind)
.section .text.hv_guest_enter, "ax"
.balign 4
.global __hv_guest_enter
__hv_guest_enter:
    // The hypervisor's callee-saved registers (AAPCS64: x19-x30, d8-d15).
    stp     x29, x30, [sp, #-16]!
    stp     x27, x28, [sp, #-16]!
    stp     x25, x26, [sp, #-16]!
    stp     x23, x24, [sp, #-16]!
    stp     x21, x22, [sp, #-16]!
    stp     x19, x20, [sp, #-16]!
    stp     d14, d15, [sp, #-16]!
    stp     d12, d13, [sp, #-16]!
    stp     d10, d11, [sp, #-16]!
    stp     d8, d9, [sp, #-16]!
    mov     x9, sp
    str     x9, [x0, #{host_sp}]
    msr     tpidr_el2, x0
    ldp     x9, x10, [x0, #{elr}]
    msr     elr_el2, x9
    msr     spsr_el2, x10
    add     x9, x0, #{fp}
    HV_FP_PAIRS ldp, x9
    ldr     x10, [x9, #{fpsr}]
    ldr     x11, [x9, #{fpcr}]
    msr     fpsr, x10
    msr     fpcr, x11
    HV_GPR_PAIRS ldp, x0
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0]
    eret

// Reached from a lower-EL vector with the guest's x0 and x1 pushed on SP_EL2 and
// the exit kind in x1.
__hv_guest_exit:
    mrs     x0, tpidr_el2
    HV_GPR_PAIRS stp, x0
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #{elr}]
    add     x2, x0, #{fp}
    HV_FP_PAIRS stp, x2
    mrs     x3, fpsr
    mrs     x4, fpcr
    str     x3, [x2, #{fpsr}]
    str     x4, [x2, #{fpcr}]
    msr     fpcr, xzr
    ldr     x2, [x0, #{host_sp}]
    mov     sp, x2
    mov     x0, x1
    ldp     d8, d9, [sp], #16
    ldp     d10, d11, [sp], #16
    ldp     d12, d13, [sp], #16
    ldp     d14, d15, [sp], #16
    ldp     x19, x20, [sp], #16
    ldp     x21, x22, [sp], #16
    ldp     x23, x24, [sp], #16
    ldp     x25, x26, [sp], #16
    ldp     x27, x28, [sp], #16
    ldp     x29, x30, [sp], #16
    ret
"#,
    sync = const EXIT_SYNC,
    irq = const EXIT_IRQ,
    fiq = const EXIT_FIQ,
    serror = const EXIT_SERROR,
    aarch32 = const EXIT_AARCH32,
    host_sp = const FRAME_HOST_SP,
    elr = const FRAME_ELR,
    fp = const FRAME_FP,
    fpsr = const FP_FPSR,
    fpcr = const FP_FPSR + 8,
);

unsafe extern "C" {
    static __hv_el2_vectors: u8;
    fn __hv_guest_enter(frame: *mut TrapFrame) -> u64;
}

/// An exception taken at EL2 itself: a hypervisor bug. Reports it through the panic
/// handler of the final binary.
#[unsafe(no_mangle)]
extern "C" fn __hv_el2_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    panic!(
        "exception at EL2 (vector {kind}): {:?}, ELR_EL2 {elr:#x}, FAR_EL2 {far:#x}",
        crate::esr::Esr(esr)
    )
}

/// Reads a system register.
macro_rules! mrs {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading this system register at EL2 has no side effect.
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

/// Writes a system register; only inside `unsafe` code that justifies the value.
macro_rules! msr {
    ($name:literal, $value:expr) => {
        core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) $value, options(nostack, preserves_flags))
    };
}

pub(crate) use {mrs, msr};

/// The current exception level (2 when the hypervisor runs as it should).
pub fn current_el() -> u64 {
    (mrs!("CurrentEL") >> 2) & 3
}

/// ID_AA64MMFR0_EL1.PARange: the physical address size this CPU supports.
pub(crate) fn pa_range() -> u8 {
    (mrs!("id_aa64mmfr0_el1") & 0xf) as u8
}

/// ESR_EL2, FAR_EL2 and HPFAR_EL2 of the last trap.
pub(crate) fn trap_registers() -> (u64, u64, u64) {
    (mrs!("esr_el2"), mrs!("far_el2"), mrs!("hpfar_el2"))
}

/// Runs the guest described by `frame` until the next trap; returns the exit kind.
///
/// # Safety
///
/// The vCPU that owns `frame` is loaded on this CPU ([`load_vcpu`]), so VTTBR_EL2
/// and HCR_EL2 confine the guest to its stage-2 tables, and this CPU's VBAR_EL2
/// points at `__hv_el2_vectors` ([`init_cpu`]).
pub(crate) unsafe fn enter(frame: &mut TrapFrame) -> u64 {
    // SAFETY: per the caller the guest is confined by stage 2 and traps come back
    // through our vectors, which restore every callee-saved register and the stack
    // before returning here.
    unsafe { __hv_guest_enter(frame) }
}

/// Prepares this physical CPU for running guests: the EL2 vector table, no FP/SIMD
/// traps, the EL1 timer registers usable by guests, HCR_EL2 without stage 2.
///
/// # Safety
///
/// Runs at EL2 (non-VHE) on the CPU being prepared, once before its first guest; the
/// hypervisor image (which holds the vectors) stays mapped and executable at EL2.
pub unsafe fn init_cpu() {
    let midr = mrs!("midr_el1");
    // SAFETY: per the caller we are at EL2; the vector table is part of this image,
    // and the other values only relax traps for EL1 or clear offsets.
    unsafe {
        msr!("vbar_el2", core::ptr::addr_of!(__hv_el2_vectors) as u64);
        msr!("cptr_el2", CPTR_EL2_NO_FP_TRAP);
        msr!("cnthctl_el2", CNTHCTL_EL2_EL1_TIMER);
        msr!("cntvoff_el2", 0u64);
        msr!("vpidr_el2", midr);
        msr!("mdcr_el2", 0u64);
        msr!("hcr_el2", Hcr::HOST.bits());
        asm!("isb", options(nostack, preserves_flags));
    }
}

/// Loads a vCPU onto this CPU: its EL1 system registers, VMPIDR_EL2, VTCR_EL2,
/// VTTBR_EL2 and HCR_EL2.
///
/// # Safety
///
/// At EL2 on the CPU that will run the vCPU, with no other vCPU loaded; `vttbr`
/// names a complete stage-2 table that stays alive while the vCPU is loaded.
pub(crate) unsafe fn load_vcpu(el1: &El1Regs, hcr: u64, vtcr: u64, vttbr: u64, vmpidr: u64) {
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
        msr!("vmpidr_el2", vmpidr);
        msr!("vtcr_el2", vtcr);
        msr!("vttbr_el2", vttbr);
        msr!("hcr_el2", hcr);
        asm!("isb", options(nostack, preserves_flags));
    }
}

/// Saves the EL1 system registers of the vCPU loaded on this CPU and turns stage 2
/// off again.
pub(crate) fn save_el1(el1: &mut El1Regs) {
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
    // SAFETY: the vCPU is no longer loaded; the hypervisor itself runs at EL2, which
    // stage 2 does not translate, and no guest runs until the next `load_vcpu`.
    unsafe {
        msr!("cntv_ctl_el0", 0u64);
        msr!("hcr_el2", Hcr::HOST.bits());
        asm!("isb", options(nostack, preserves_flags));
    }
}

/// This CPU's index: MPIDR_EL1.Aff0 (QEMU virt numbers CPUs 0..n in Aff0).
pub fn cpu_id() -> usize {
    (mrs!("mpidr_el1") & 0xff) as usize
}

/// Monotonic time from the generic timer: CNTPCT_EL0 scaled by CNTFRQ_EL0.
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
