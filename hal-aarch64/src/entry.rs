//! The world switch: the EL2 vector table, entry into the guest and the return to the
//! hypervisor at its next trap.
//!
//! Entry and exit (Arm ARM D1.3 "Exceptions"): `__hv_guest_enter` saves the
//! hypervisor's callee-saved registers on its stack, keeps the stack pointer in the
//! [`TrapFrame`] and the frame's address in TPIDR_EL2, loads the guest's registers
//! and ERETs. A trap from EL1 lands in the lower-EL vectors (on SP_EL2, the
//! hypervisor's stack), which save the guest's registers into the frame, restore the
//! hypervisor's and return from `__hv_guest_enter` with the exit kind. The EL1 system
//! registers are not touched on this path: `context.rs` switches them when a vCPU is
//! bound or unbound. The assembly is built only for bare-metal aarch64; elsewhere
//! [`enter`] says there is no EL2.

use crate::context::TrapFrame;
use crate::exit::Trap;

/// What the hardware exit path returned.
#[cfg_attr(
    not(all(target_arch = "aarch64", target_os = "none")),
    allow(dead_code)
)]
pub(crate) enum HwExit {
    /// A synchronous exception from EL1, decoded.
    Sync(Trap),
    /// A physical IRQ.
    Irq,
    /// Another exception kind (FIQ, SError, anything from AArch32), by its number.
    Other(u64),
}

/// `__hv_guest_enter` returned because of a synchronous exception from EL1.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
const EXIT_SYNC: u64 = 0;
/// ... because of a physical IRQ.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
const EXIT_IRQ: u64 = 1;
/// ... because of a physical FIQ.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
const EXIT_FIQ: u64 = 2;
/// ... because of an SError.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
const EXIT_SERROR: u64 = 3;
/// ... because of an exception from AArch32 state (never entered on purpose).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
const EXIT_AARCH32: u64 = 4;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
core::arch::global_asm!(
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
    host_sp = const crate::context::FRAME_HOST_SP,
    elr = const crate::context::FRAME_ELR,
    fp = const crate::context::FRAME_FP,
    fpsr = const crate::context::FP_FPSR,
    fpcr = const crate::context::FP_FPSR + 8,
);

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
unsafe extern "C" {
    static __hv_el2_vectors: u8;
    fn __hv_guest_enter(frame: *mut TrapFrame) -> u64;
}

/// The address of the EL2 vector table (for VBAR_EL2).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) fn vectors() -> u64 {
    core::ptr::addr_of!(__hv_el2_vectors) as u64
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
/// An exception taken at EL2 itself: a hypervisor bug. Reports it through the panic
/// handler of the final binary.
#[unsafe(no_mangle)]
extern "C" fn __hv_el2_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    panic!(
        "exception at EL2 (vector {kind}): {:?}, ELR_EL2 {elr:#x}, FAR_EL2 {far:#x}",
        crate::exit::Esr(esr)
    )
}

/// Runs the guest described by `frame` until the next trap and decodes why it came
/// back.
///
/// The caller (the vCPU's `run`) calls it only while the vCPU is loaded on this CPU
/// (`context::bind`), so VTTBR_EL2 and HCR_EL2 confine the guest to its stage-2
/// tables, and this CPU's VBAR_EL2 points at `__hv_el2_vectors` (`cpu::init_cpu`).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) fn enter(frame: &mut TrapFrame) -> vcpu_api::VCpuResult<HwExit> {
    // SAFETY: per the caller the guest is confined by stage 2 and traps come back
    // through our vectors, which restore every callee-saved register and the stack
    // before returning here.
    let kind = unsafe { __hv_guest_enter(frame) };
    Ok(match kind {
        EXIT_SYNC => {
            let (esr, far, hpfar) = crate::exit::trap_registers();
            HwExit::Sync(crate::exit::decode_trap(esr, far, hpfar))
        }
        EXIT_IRQ => HwExit::Irq,
        other => HwExit::Other(other),
    })
}

/// Off bare-metal aarch64 there is no EL2 to enter a guest from.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
pub(crate) fn enter(_: &mut TrapFrame) -> vcpu_api::VCpuResult<HwExit> {
    Err(crate::cpu::NO_EL2)
}
