//! Entry from OpenSBI: `_start` on the boot hart (a0 = hart id, a1 = DTB), and
//! `_start_secondary` on a hart started later with SBI HSM `hart_start` (a0 = hart
//! id). Each hart gets the stack of its id from `.stacks`, `tp` = its hart id (the
//! pCPU id the HAL reports), and the FP unit on (the target's code may use it) before
//! Rust runs. The boot hart clears `.bss` first.

use core::arch::global_asm;

/// Bytes of stack per hart: 1 << STACK_SHIFT (a shift, so the entry code needs no
/// multiply; the linker script reserves MAX_HARTS of them).
pub(crate) const STACK_SHIFT: usize = 17;
/// Harts with a stack (hart ids 0..MAX_HARTS); the linker script reserves them.
pub(crate) const MAX_HARTS: usize = 4;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    li      t0, {max_harts}
    bgeu    a0, t0, 9f
    la      sp, __stacks_start
    addi    t0, a0, 1
    slli    t0, t0, {stack_shift}
    add     sp, sp, t0
    mv      tp, a0
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  li      t0, 0x2000
    csrs    sstatus, t0
    call    {main}
9:  wfi
    j       9b

    .global _start_secondary
_start_secondary:
    li      t0, {max_harts}
    bgeu    a0, t0, 9b
    la      sp, __stacks_start
    addi    t0, a0, 1
    slli    t0, t0, {stack_shift}
    add     sp, sp, t0
    mv      tp, a0
    li      t0, 0x2000
    csrs    sstatus, t0
    call    {secondary}
    j       9b
"#,
    max_harts = const MAX_HARTS,
    stack_shift = const STACK_SHIFT,
    main = sym crate::hv_main,
    secondary = sym crate::harts::hv_secondary,
);

unsafe extern "C" {
    /// The secondary harts' entry (above).
    pub(crate) fn _start_secondary();
}

/// This hart's id (kept in `tp` by the entry code).
pub(crate) fn hart_id() -> usize {
    let id: usize;
    // SAFETY: reads a register; nothing else uses tp in this image.
    unsafe { core::arch::asm!("mv {0}, tp", out(reg) id, options(nomem, nostack)) };
    id
}

/// Monotonic time in ticks of QEMU virt's 10 MHz timebase (`time` CSR).
fn ticks() -> u64 {
    let t: u64;
    // SAFETY: reads the time CSR (OpenSBI enables it for S-mode).
    unsafe { core::arch::asm!("csrr {0}, time", out(reg) t, options(nomem, nostack)) };
    t
}

/// Nanoseconds per tick of the 10 MHz timebase of QEMU virt (the DTB's
/// `timebase-frequency`, fixed by the machine model).
const NS_PER_TICK: u64 = 100;

/// Monotonic time in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    ticks().saturating_mul(NS_PER_TICK)
}

/// Spins until `done()` holds or `timeout_ns` have passed; `true` if it held.
pub(crate) fn spin_until(timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = now_ns();
    while !done() {
        if now_ns() - start > timeout_ns {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Waits for an interrupt (a kick): `wfi` wakes when an interrupt enabled in `sie`
/// is pending, whatever `sstatus.SIE` says; then clears the software interrupt.
pub(crate) fn wait_for_kick() {
    // SAFETY: WFI and a write to sip.SSIP (ours to clear).
    unsafe { core::arch::asm!("wfi", "csrc sip, {0}", in(reg) 2u64, options(nomem, nostack)) };
}

/// Powers QEMU off through the SiFive test device at 0x10_0000: 0x5555 exits with
/// status 0; `(code << 16) | 0x3333` with status `code`.
pub(crate) fn power_off(code: u16) -> ! {
    const FINISHER: usize = 0x10_0000;
    let value = if code == 0 {
        0x5555
    } else {
        (u32::from(code) << 16) | 0x3333
    };
    // SAFETY: the test device's register; the write ends the machine.
    unsafe { core::ptr::write_volatile(FINISHER as *mut u32, value) };
    loop {
        // SAFETY: nothing left to do.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
