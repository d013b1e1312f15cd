//! aarch64 guest entry for the QEMU virt board: the hypervisor enters `_start` at
//! EL1 (SPSR EL1h, interrupts masked) with the MMU off. The entry code sets the stack
//! from the layout and turns the MMU on with an identity map (so RAM is Normal
//! memory and only the device window is Device memory), then runs the shared checks.
//!
//! Hypercalls are `hvc #0` with the SMCCC function id of [`Call::arm_function_id`]
//! in x0 and arguments in x1..x4, result in x0. PSCI (CPU_ON, CPU_OFF, SYSTEM_OFF)
//! goes through HVC or SMC: the guest asks PSCI_VERSION by HVC first and uses SMC
//! when the hypervisor answers NOT_SUPPORTED (its PSCI conduit is then SMC). The
//! console is the PL011 at 0x0900_0000, passed through by the hypervisor.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

use platforms::guest::{self, GuestOps, Width};
use platforms::protocol::{Call, GuestLayout};

/// The board's layout (shared with the hypervisor, whose VM config is checked
/// against it).
const LAYOUT: GuestLayout = platforms::layouts::QEMU_VIRT_AARCH64;

/// The PL011 the hypervisor passes through: data register at its base, flag register
/// at +0x18 (FR.TXFF, bit 5: transmit FIFO full).
const UART_DR: u64 = platforms::layouts::QEMU_VIRT_AARCH64_UART;
const UART_FR: u64 = UART_DR + 0x18;
const UART_TXFF: u32 = 1 << 5;

/// PSCI function ids (Arm DEN0022): PSCI_VERSION, CPU_OFF, CPU_ON (SMC64),
/// SYSTEM_OFF.
const PSCI_VERSION: u64 = 0x8400_0000;
const PSCI_CPU_OFF: u64 = 0x8400_0002;
const PSCI_CPU_ON_64: u64 = 0xc400_0003;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// SMCCC's "unknown function" answer.
const SMCCC_NOT_SUPPORTED: u64 = u64::MAX;

/// The identity map, one level-1 table with 1 GiB blocks (VMSAv8-64, 4 KiB granule,
/// T0SZ = 32: VA bits 31:30 index it): [0, 1 GiB) Device-nGnRE and never executable
/// (the UART and the test device); [1 GiB, 2 GiB) Normal write-back, inner shareable
/// (RAM, the lazy and read-only regions, and the "outside" address, which faults at
/// stage 2). Descriptor bits: 0b01 block, AttrIndx in 4:2 (MAIR index), SH in 9:8,
/// AF in 10, PXN 53, UXN 54.
#[repr(C, align(4096))]
struct Table([u64; 4]);

/// MAIR index of the Device-nGnRE attribute (AttrIndx 0, see `MAIR` below).
const ATTR_DEVICE: u64 = 0;

static IDENTITY_MAP: Table = Table([
    (1 << 54) | (1 << 53) | (1 << 10) | (ATTR_DEVICE << 2) | 0b01,
    0x4000_0000 | (1 << 10) | (0b11 << 8) | (1 << 2) | 0b01,
    0,
    0,
]);

/// MAIR_EL1: attribute 0 Device-nGnRE (0x04), attribute 1 Normal WB RW-allocate
/// (0xff).
const MAIR: u64 = 0xff_04;
/// TCR_EL1: T0SZ = 32, IRGN0 = ORGN0 = WB WA (0b01), SH0 = inner shareable, TG0 =
/// 4 KiB, EPD1 (no TTBR1 walks), IPS = 40 bits.
const TCR: u64 = 32 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (0b010 << 32);
/// SCTLR_EL1: the RES1 bits, M (MMU), C (data cache), I (instruction cache).
const SCTLR: u64 = 0x30d0_0800 | (1 << 0) | (1 << 2) | (1 << 12);

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    ldr     x9, ={stack0}
    mov     sp, x9
    bl      {mmu_on}
    bl      {primary}
    b       .

    .global guest_secondary_entry
guest_secondary_entry:
    // x0 = the CPU_ON context argument.
    ldr     x9, ={stack1}
    mov     sp, x9
    mov     x19, x0
    bl      {mmu_on}
    mov     x0, x19
    bl      {secondary}
    b       .
"#,
    stack0 = const LAYOUT.stacks[0],
    stack1 = const LAYOUT.stacks[1],
    mmu_on = sym mmu_on,
    primary = sym primary_main,
    secondary = sym secondary_main,
);

unsafe extern "C" {
    /// The secondary vCPU's entry (above), given to the hypervisor by PSCI CPU_ON.
    fn guest_secondary_entry();
}

/// Turns the stage-1 MMU on with [`IDENTITY_MAP`]. Runs before any Rust code that
/// touches memory other than its stack; with the MMU off every access is Device
/// memory, which faults on unaligned accesses.
extern "C" fn mmu_on() {
    // SAFETY: the identity map covers this code, the stacks and every address the
    // checks use with the same addresses, so turning the MMU on changes no address;
    // TLBs are invalidated before the MMU starts using the new table.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) TCR,
            ttbr0 = in(reg) core::ptr::addr_of!(IDENTITY_MAP) as u64,
            sctlr = in(reg) SCTLR,
            options(nostack),
        );
    }
}

/// Whether PSCI goes through SMC (decided once by vCPU 0 before it starts vCPU 1).
static PSCI_BY_SMC: AtomicBool = AtomicBool::new(false);

extern "C" fn primary_main() -> ! {
    let g = Aarch64;
    let by_hvc = hvc([PSCI_VERSION, 0, 0, 0, 0]);
    let by_smc = by_hvc == SMCCC_NOT_SUPPORTED;
    PSCI_BY_SMC.store(by_smc, Ordering::SeqCst);
    g.print(if by_smc {
        "guest: PSCI through SMC\n"
    } else {
        "guest: PSCI through HVC\n"
    });
    guest::run_primary(&g, &LAYOUT)
}

extern "C" fn secondary_main(arg: u64) -> ! {
    guest::run_secondary(&Aarch64, &LAYOUT, arg)
}

/// `hvc #0` with x0..x4; returns x0.
fn hvc(x: [u64; 5]) -> u64 {
    let ret: u64;
    // SAFETY: HVC traps to the hypervisor, which writes x0 and nothing else of ours.
    unsafe {
        asm!(
            "hvc #0",
            inlateout("x0") x[0] => ret,
            in("x1") x[1],
            in("x2") x[2],
            in("x3") x[3],
            in("x4") x[4],
            options(nostack),
        );
    }
    ret
}

/// `smc #0` with x0..x3; returns x0.
fn smc(x: [u64; 4]) -> u64 {
    let ret: u64;
    // SAFETY: as for HVC: trapped by the hypervisor (HCR_EL2.TSC), only x0 changes.
    unsafe {
        asm!(
            "smc #0",
            inlateout("x0") x[0] => ret,
            in("x1") x[1],
            in("x2") x[2],
            in("x3") x[3],
            options(nostack),
        );
    }
    ret
}

/// A PSCI call through the conduit the hypervisor uses.
fn psci(x: [u64; 4]) -> u64 {
    if PSCI_BY_SMC.load(Ordering::SeqCst) {
        smc(x)
    } else {
        hvc([x[0], x[1], x[2], x[3], 0])
    }
}

struct Aarch64;

impl GuestOps for Aarch64 {
    fn call(&self, call: Call, args: [u64; 4]) -> u64 {
        hvc([call.arm_function_id(), args[0], args[1], args[2], args[3]])
    }

    fn print(&self, s: &str) {
        for b in s.bytes() {
            if b == b'\n' {
                putc(b'\r');
            }
            putc(b);
        }
    }

    fn start_secondary(&self, cpu: u64, arg: u64) -> bool {
        let entry = guest_secondary_entry as *const () as usize as u64;
        psci([PSCI_CPU_ON_64, cpu, entry, arg]) == 0
    }

    /// MPIDR_EL1's affinity fields (Aff3 in 39:32, Aff2..Aff0 in 23:0): what the
    /// hypervisor set in VMPIDR_EL2.
    fn cpu_id(&self) -> Option<u64> {
        let mpidr: u64;
        // SAFETY: reading MPIDR_EL1 has no side effect.
        unsafe {
            asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack, preserves_flags))
        };
        Some(mpidr & 0xff_00ff_ffff)
    }

    fn stop_self(&self) -> ! {
        psci([PSCI_CPU_OFF, 0, 0, 0]);
        loop {
            // SAFETY: WFI only waits; a CPU_OFF that returned leaves nothing to do.
            unsafe { asm!("wfi", options(nomem, nostack)) };
        }
    }

    /// `YIELD`: the spin-wait hint. QEMU's single-threaded TCG switches to the
    /// other vCPU on it (a plain spin would hold the CPU for its whole time slice);
    /// elsewhere it costs nothing.
    fn relax(&self) {
        // SAFETY: a hint without architectural effect.
        unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
    }

    fn shutdown(&self) -> ! {
        psci([PSCI_SYSTEM_OFF, 0, 0, 0]);
        self.stop_self()
    }

    // Loads and stores by explicit single-register instructions without writeback,
    // so a trapped access always carries its syndrome (ESR_EL2.ISV = 1).
    unsafe fn load(&self, addr: u64, width: Width) -> u64 {
        let v: u64;
        // SAFETY: per the caller (an aligned address of the layout).
        unsafe {
            match width {
                Width::W8 => {
                    asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W16 => {
                    asm!("ldrh {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W32 => {
                    asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W64 => {
                    asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
            }
        }
        v
    }

    unsafe fn load_signed(&self, addr: u64, width: Width) -> u64 {
        let v: u64;
        // SAFETY: per the caller (an aligned address of the layout).
        unsafe {
            match width {
                Width::W8 => {
                    asm!("ldrsb {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W16 => {
                    asm!("ldrsh {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W32 => {
                    asm!("ldrsw {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W64 => {
                    asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
            }
        }
        v
    }

    unsafe fn store(&self, addr: u64, width: Width, value: u64) {
        // SAFETY: per the caller (an aligned address of the layout it may overwrite).
        unsafe {
            match width {
                Width::W8 => {
                    asm!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack))
                }
                Width::W16 => {
                    asm!("strh {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack))
                }
                Width::W32 => {
                    asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack))
                }
                Width::W64 => {
                    asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack))
                }
            }
        }
    }
}

fn putc(b: u8) {
    // SAFETY: the PL011 registers, mapped into the guest as a pass-through device.
    unsafe {
        while core::ptr::read_volatile(UART_FR as *const u32) & UART_TXFF != 0 {}
        core::ptr::write_volatile(UART_DR as *mut u32, u32::from(b));
    }
}
