//! x86_64 guest entry for the QEMU pc board (AMD SVM): the hypervisor enters
//! `_start` in 64-bit mode at CPL 0 with identity page tables, flat segments and
//! interrupts off. Hypercalls are VMMCALL (number in RAX, arguments in RDI, RSI,
//! RDX, RCX, result in RAX); the console is COM1 at port 0x3f8, emulated by the
//! hypervisor; power-off is a 16-bit write of [`SHUTDOWN_VALUE`] to port
//! [`SHUTDOWN_PORT`] (the QEMU/Bochs ACPI PM1a convention), also emulated.

use core::arch::{asm, global_asm};

use platforms::guest::{self, GuestOps, Width};
use platforms::protocol::{Call, GuestLayout};

/// The board's layout (shared with the hypervisor, whose VM config is checked
/// against it).
const LAYOUT: GuestLayout = platforms::layouts::QEMU_PC_X86_64;

use platforms::layouts::{
    QEMU_PC_X86_64_COM1 as COM1, QEMU_PC_X86_64_SHUTDOWN_PORT as SHUTDOWN_PORT,
    QEMU_PC_X86_64_SHUTDOWN_VALUE as SHUTDOWN_VALUE,
};

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    mov     rsp, {stack0}
    xor     ebp, ebp
    call    {primary}
    ud2
    .global guest_secondary_entry
guest_secondary_entry:
    // RDI = the start argument, left in place for the call.
    mov     rsp, {stack1}
    xor     ebp, ebp
    call    {secondary}
    ud2
"#,
    stack0 = const LAYOUT.stacks[0],
    stack1 = const LAYOUT.stacks[1],
    primary = sym primary_main,
    secondary = sym secondary_main,
);

unsafe extern "C" {
    /// The secondary vCPU's entry (above), given to the hypervisor by `StartCpu`.
    fn guest_secondary_entry();
}

extern "C" fn primary_main() -> ! {
    guest::run_primary(&X86, &LAYOUT)
}

extern "C" fn secondary_main(arg: u64) -> ! {
    guest::run_secondary(&X86, &LAYOUT, arg)
}

struct X86;

impl GuestOps for X86 {
    fn call(&self, call: Call, args: [u64; 4]) -> u64 {
        let ret: u64;
        // SAFETY: VMMCALL exits to the hypervisor, which writes only RAX and RIP.
        unsafe {
            asm!(
                "vmmcall",
                inlateout("rax") call.x86_number() => ret,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("rcx") args[3],
                options(nostack),
            );
        }
        ret
    }

    fn print(&self, s: &str) {
        for b in s.bytes() {
            // SAFETY: port I/O to COM1, emulated by the hypervisor; no memory effect.
            unsafe {
                asm!("out dx, al", in("dx") COM1, in("al") b, options(nomem, nostack, preserves_flags));
            }
        }
    }

    /// CPUID reports the host's APIC id, not the vCPU's: the guest cannot see its
    /// own.
    fn cpu_id(&self) -> Option<u64> {
        None
    }

    fn start_secondary(&self, cpu: u64, arg: u64) -> bool {
        let entry = guest_secondary_entry as *const () as usize as u64;
        self.call(Call::StartCpu, [cpu, entry, arg, 0]) == 0
    }

    fn stop_self(&self) -> ! {
        loop {
            // SAFETY: with interrupts off HLT stops this vCPU for good (the
            // hypervisor intercepts it).
            unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
        }
    }

    fn shutdown(&self) -> ! {
        // SAFETY: port I/O the hypervisor emulates as power-off.
        unsafe {
            asm!("out dx, ax", in("dx") SHUTDOWN_PORT, in("ax") SHUTDOWN_VALUE, options(nomem, nostack, preserves_flags));
        }
        self.stop_self()
    }

    fn relax(&self) {
        // SAFETY: PAUSE is a hint with no effect on memory.
        unsafe { asm!("pause", options(nomem, nostack, preserves_flags)) };
    }

    unsafe fn load_signed(&self, addr: u64, width: Width) -> u64 {
        let v: u64;
        // SAFETY: per the caller (an aligned address of the layout).
        unsafe {
            match width {
                Width::W8 => {
                    asm!("movsx {v}, byte ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W16 => {
                    asm!("movsx {v}, word ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W32 => {
                    asm!("movsxd {v}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W64 => {
                    asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
            }
        }
        v
    }
}
