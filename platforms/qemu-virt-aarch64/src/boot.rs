//! Boot: the entry from QEMU at EL2 (CPU 0) and from PSCI CPU_ON (the others), the
//! per-CPU stacks, and the EL2 stage-1 identity map that turns on the MMU and caches.

use core::arch::{asm, global_asm};

/// Bytes of stack per physical CPU (the linker script reserves `MAX_CPUS` of them).
pub(crate) const STACK_SIZE: usize = 0x4_0000;
/// Physical CPUs this board drives (the linker script's `.stacks` holds this many).
pub(crate) const MAX_CPUS: usize = 2;

/// CPTR_EL2 without FP/SIMD traps: Rust code uses NEON registers.
const CPTR_EL2: u64 = hal_aarch64::regs::CPTR_EL2_NO_FP_TRAP;

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // Only CPU 0 comes here (QEMU holds the others off until PSCI CPU_ON).
    mrs     x9, mpidr_el1
    and     x9, x9, #0xff
    cbnz    x9, 9f
    ldr     x9, =__stacks_start
    add     x9, x9, #{stack_size}
    mov     sp, x9
    mov     x9, #{cptr}
    msr     cptr_el2, x9
    isb
    ldr     x9, =__bss_start
    ldr     x10, =__bss_end
1:  cmp     x9, x10
    b.hs    2f
    str     xzr, [x9], #8
    b       1b
2:  bl      {primary}
9:  wfe
    b       9b

    // PSCI CPU_ON entry of the other CPUs: x0 = the stack top (the context id).
    .global __secondary_start
__secondary_start:
    mov     sp, x0
    mov     x9, #{cptr}
    msr     cptr_el2, x9
    isb
    bl      {secondary}
    b       .
"#,
    stack_size = const STACK_SIZE,
    cptr = const CPTR_EL2,
    primary = sym crate::primary_main,
    secondary = sym crate::secondary_main,
);

unsafe extern "C" {
    static __stacks_start: u8;
    static __image_end: u8;
    fn __secondary_start();
}

/// The top of physical CPU `cpu`'s stack.
pub(crate) fn stack_top(cpu: usize) -> u64 {
    core::ptr::addr_of!(__stacks_start) as u64 + ((cpu + 1) * STACK_SIZE) as u64
}

/// The first address after the image (2 MiB aligned).
pub(crate) fn image_end() -> usize {
    core::ptr::addr_of!(__image_end) as usize
}

/// Where PSCI CPU_ON starts the other CPUs.
pub(crate) fn secondary_entry() -> u64 {
    __secondary_start as *const () as usize as u64
}

/// The EL2 stage-1 identity map, 1 GiB blocks (VMSAv8-64, 4 KiB granule, T0SZ = 32):
/// [0, 1 GiB) Device-nGnRE, execute-never (UART, GIC, test device); [1 GiB, 4 GiB)
/// Normal write-back inner shareable (RAM from 0x4000_0000). Block descriptor:
/// 0b01, AttrIndx in 4:2, AP[1] (bit 6, RES1 in the EL2 regime), SH in 9:8, AF bit 10,
/// XN bit 54.
#[repr(C, align(4096))]
struct L1([u64; 4]);

const DEVICE_BLOCK: u64 = (1 << 54) | (1 << 10) | (1 << 6) | 0b01;
const NORMAL_BLOCK: u64 = (1 << 10) | (0b11 << 8) | (1 << 6) | (1 << 2) | 0b01;

static EL2_MAP: L1 = L1([
    DEVICE_BLOCK,
    0x4000_0000 | NORMAL_BLOCK,
    0x8000_0000 | NORMAL_BLOCK,
    0xc000_0000 | NORMAL_BLOCK,
]);

/// MAIR_EL2: attribute 0 Device-nGnRE, attribute 1 Normal WB RW-allocate.
const MAIR_EL2: u64 = 0xff_04;
/// TCR_EL2 (without VHE): T0SZ = 32, IRGN0 = ORGN0 = WB WA, SH0 = inner shareable,
/// TG0 = 4 KiB, PS = 40 bits, RES1 bits 31 and 23.
const TCR_EL2: u64 =
    32 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (0b010 << 16) | (1 << 23) | (1 << 31);
/// SCTLR_EL2 (without VHE): RES1 bits, M, C, I.
const SCTLR_EL2: u64 = 0x30c5_0830 | (1 << 0) | (1 << 2) | (1 << 12);

/// Turns on this CPU's EL2 MMU and caches with the identity map.
///
/// # Safety
///
/// At EL2, before anything relies on the MMU being off; the identity map keeps every
/// address the same, so code, stack and data stay where they are.
pub(crate) unsafe fn enable_el2_mmu() {
    // SAFETY: per the caller; the table is a static of this image, TLBs of the EL2
    // regime are invalidated before the MMU uses it.
    unsafe {
        asm!(
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {ttbr}",
            "isb",
            "tlbi alle2",
            "dsb nsh",
            "isb",
            "msr sctlr_el2, {sctlr}",
            "isb",
            mair = in(reg) MAIR_EL2,
            tcr = in(reg) TCR_EL2,
            ttbr = in(reg) core::ptr::addr_of!(EL2_MAP) as u64,
            sctlr = in(reg) SCTLR_EL2,
            options(nostack),
        );
    }
}
