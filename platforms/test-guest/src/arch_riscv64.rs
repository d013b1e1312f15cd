//! riscv64 guest entry for the QEMU virt board: the hypervisor enters `_start` in
//! VS-mode with translation off (vsatp = 0) and interrupts disabled, a0 = hart id. The
//! entry code sets the stack from the layout, turns the FP unit on (the target may use
//! it), points `stvec` at a handler that reports an unexpected trap, and runs the
//! shared checks.
//!
//! Everything goes through SBI (ECALL, EID in a7, FID in a6, arguments a0..a5, error
//! in a0 and value in a1): our test protocol is the extension of
//! [`Call::riscv_ids`]; vCPU 1 is started with HSM `hart_start` (it enters
//! `guest_secondary_entry` with a0 = hart id and a1 = the argument) and stops with
//! `hart_stop`; the VM powers off with SRST once `hart_get_status` says vCPU 1 has
//! stopped; the console is DBCN `console_write` when
//! the hypervisor offers it, the legacy `console_putchar` otherwise.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

use platforms::guest::{self, GuestOps, Width};
use platforms::protocol::{Call, GuestLayout};

/// The board's layout (shared with the hypervisor, whose VM config is checked
/// against it).
const LAYOUT: GuestLayout = platforms::layouts::QEMU_VIRT_RISCV64;

/// SBI extensions (SBI specification v2.0).
const EID_BASE: u64 = 0x10;
const EID_LEGACY_PUTCHAR: u64 = 0x01;
const EID_LEGACY_SHUTDOWN: u64 = 0x08;
const EID_HSM: u64 = 0x48_534d;
const EID_SRST: u64 = 0x5352_5354;
const EID_DBCN: u64 = 0x4442_434e;
/// HSM `hart_get_status`: the hart runs.
const HART_STARTED: u64 = 0;

/// What [`trap_report`] prints with [`Call::Print`] (outside the check numbers).
const TRAP_CAUSE: u64 = 0xe0;
const TRAP_PC: u64 = 0xe1;
const TRAP_VALUE: u64 = 0xe2;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    li      sp, {stack0}
    li      t0, 0x2000
    csrs    sstatus, t0
    la      t0, guest_trap
    csrw    stvec, t0
    call    {primary}
1:  j       1b

    .global guest_secondary_entry
guest_secondary_entry:
    // a0 = hart id, a1 = the hart_start argument: passed on as they are.
    li      sp, {stack1}
    li      t0, 0x2000
    csrs    sstatus, t0
    la      t0, guest_trap
    csrw    stvec, t0
    call    {secondary}
1:  j       1b

    .balign 4
guest_trap:
    csrr    a0, scause
    csrr    a1, sepc
    csrr    a2, stval
    call    {trap}
1:  j       1b
"#,
    stack0 = const LAYOUT.stacks[0],
    stack1 = const LAYOUT.stacks[1],
    primary = sym primary_main,
    secondary = sym secondary_main,
    trap = sym trap_report,
);

unsafe extern "C" {
    /// The secondary vCPU's entry (above), given to the hypervisor by HSM hart_start.
    fn guest_secondary_entry();
}

/// Whether the hypervisor offers DBCN (decided once by vCPU 0 before anything prints).
static HAVE_DBCN: AtomicBool = AtomicBool::new(false);

/// vCPU 0's entry, with a0 = its hart id.
extern "C" fn primary_main(hart: u64) -> ! {
    let (error, available) = sbi(EID_BASE, 3, [EID_DBCN, 0, 0, 0]);
    HAVE_DBCN.store(error == 0 && available == 1, Ordering::SeqCst);
    let g = Riscv64 { hart };
    g.print(if HAVE_DBCN.load(Ordering::SeqCst) {
        "guest: console through SBI DBCN\n"
    } else {
        "guest: console through SBI legacy putchar\n"
    });
    guest::run_primary(&g, &LAYOUT)
}

/// vCPU 1's entry, with a0 = its hart id and a1 = the hart_start argument.
extern "C" fn secondary_main(hart: u64, arg: u64) -> ! {
    guest::run_secondary(&Riscv64 { hart }, &LAYOUT, arg)
}

/// A trap the guest did not expect (nothing is delegated to it on purpose): tell the
/// hypervisor what and where, then power off. The checks not yet reported then count
/// as failed.
extern "C" fn trap_report(cause: u64, pc: u64, value: u64) -> ! {
    // The hart id is not known here; the checks that use it are over.
    let g = Riscv64 { hart: u64::MAX };
    g.print("guest: unexpected trap\n");
    g.call(Call::Print, [TRAP_CAUSE, cause, 0, 0]);
    g.call(Call::Print, [TRAP_PC, pc, 0, 0]);
    g.call(Call::Print, [TRAP_VALUE, value, 0, 0]);
    g.shutdown()
}

/// ECALL: `(a0, a1)` = (error, value).
fn sbi(eid: u64, fid: u64, a: [u64; 4]) -> (i64, u64) {
    let (error, value): (i64, u64);
    // SAFETY: ECALL traps to the hypervisor, which writes a0 and a1 and nothing else
    // of ours (SBI specification, section 3.1).
    unsafe {
        asm!(
            "ecall",
            inlateout("a0") a[0] => error,
            inlateout("a1") a[1] => value,
            in("a2") a[2],
            in("a3") a[3],
            in("a6") fid,
            in("a7") eid,
            options(nostack),
        );
    }
    (error, value)
}

/// The guest's operations on the hart whose id (a0 at entry) is `hart`.
struct Riscv64 {
    hart: u64,
}

impl GuestOps for Riscv64 {
    fn call(&self, call: Call, args: [u64; 4]) -> u64 {
        let (eid, fid) = call.riscv_ids();
        match sbi(eid, fid, args) {
            (0, value) => value,
            // An SBI error: never a value the checks expect.
            (_, _) => u64::MAX,
        }
    }

    fn print(&self, s: &str) {
        if HAVE_DBCN.load(Ordering::SeqCst) {
            // DBCN takes a physical address; the guest's translation is off.
            let mut rest = s.as_bytes();
            while !rest.is_empty() {
                match sbi(EID_DBCN, 0, [rest.len() as u64, rest.as_ptr() as u64, 0, 0]) {
                    (0, n) if n > 0 => {
                        let n = usize::try_from(n).map_or(rest.len(), |n| n.min(rest.len()));
                        rest = &rest[n..];
                    }
                    _ => break,
                }
            }
        } else {
            for b in s.bytes() {
                sbi(EID_LEGACY_PUTCHAR, 0, [u64::from(b), 0, 0, 0]);
            }
        }
    }

    fn cpu_id(&self) -> Option<u64> {
        Some(self.hart)
    }

    fn start_secondary(&self, cpu: u64, arg: u64) -> bool {
        let entry = guest_secondary_entry as *const () as usize as u64;
        sbi(EID_HSM, 0, [cpu, entry, arg, 0]).0 == 0
    }

    fn stop_self(&self) -> ! {
        sbi(EID_HSM, 1, [0; 4]);
        loop {
            // SAFETY: WFI only waits; a hart_stop that returned leaves nothing to do.
            unsafe { asm!("wfi", options(nomem, nostack)) };
        }
    }

    fn shutdown(&self) -> ! {
        // Power off only once vCPU 1 has stopped (HSM hart_get_status): the checks
        // wait for its mailbox answer, not for its report, which it makes after.
        // Bounded, so a vCPU 1 that never stops cannot keep the VM alive.
        for _ in 0..20_000 {
            match sbi(EID_HSM, 2, [LAYOUT.cpu_ids[1], 0, 0, 0]) {
                (0, HART_STARTED) => (0..1000).for_each(|_| core::hint::spin_loop()),
                _ => break,
            }
        }
        sbi(EID_SRST, 0, [0, 0, 0, 0]);
        sbi(EID_LEGACY_SHUTDOWN, 0, [0; 4]);
        self.stop_self()
    }

    unsafe fn load_signed(&self, addr: u64, width: Width) -> u64 {
        let v: u64;
        // SAFETY: per the caller (an aligned address of the layout).
        unsafe {
            match width {
                Width::W8 => {
                    asm!("lb {v}, 0({a})", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W16 => {
                    asm!("lh {v}, 0({a})", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W32 => {
                    asm!("lw {v}, 0({a})", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
                Width::W64 => {
                    asm!("ld {v}, 0({a})", a = in(reg) addr, v = out(reg) v, options(nostack, readonly))
                }
            }
        }
        v
    }
}
