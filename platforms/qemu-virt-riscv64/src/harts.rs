//! The second hart: started with SBI HSM `hart_start`, it sets itself up for guests
//! and then runs whatever vCPU the boot hart hands it ([`post`]), one at a time.
//!
//! Why a second hart rather than scheduling vCPU 1 on the boot hart: the test guest's
//! vCPU 0 waits for vCPU 1 in a loop that never leaves the guest, so sharing one hart
//! would need a preemption timer; with one vCPU per hart each runs to completion, and
//! the TLB shootdown of `unmap_region` really crosses harts (remote HFENCE.GVMA).

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hal_riscv64::firmware::hart_state;
use spin::Mutex;

use crate::boot::{MAX_HARTS, spin_until, wait_for_kick};
use crate::console::println;

/// Work for the second hart.
type Job = Box<dyn FnOnce() + Send>;

static JOB: Mutex<Option<Job>> = Mutex::new(None);
/// A job was posted and has not finished.
static BUSY: AtomicBool = AtomicBool::new(false);
/// The second hart has finished its setup.
static READY: AtomicBool = AtomicBool::new(false);
/// Its hart id (`u64::MAX`: none).
static SECOND: AtomicU64 = AtomicU64::new(u64::MAX);

/// Starts the first stopped hart other than `boot_hart`; returns its id once it is
/// ready for guests, or `None` (no other hart, or it did not come up within 1 s).
pub(crate) fn start_second_hart(boot_hart: usize) -> Option<u64> {
    let entry = crate::boot::_start_secondary as *const () as usize as u64;
    for hart in (0..MAX_HARTS as u64).filter(|&h| h != boot_hart as u64) {
        if hal_riscv64::cpu::hart_status(hart) != Ok(hart_state::STOPPED) {
            continue;
        }
        if let Err(e) = hal_riscv64::cpu::hart_start(hart, entry, 0) {
            println!("hart {hart}: SBI hart_start failed with {e}");
            continue;
        }
        if !spin_until(1_000_000_000, || READY.load(Ordering::SeqCst)) {
            println!("hart {hart}: started but not ready after 1 s");
            return None;
        }
        SECOND.store(hart, Ordering::SeqCst);
        return Some(hart);
    }
    None
}

/// Hands `job` to the second hart; `false` when there is none or it is busy.
pub(crate) fn post(job: Job) -> bool {
    let hart = SECOND.load(Ordering::SeqCst);
    if hart == u64::MAX || BUSY.swap(true, Ordering::SeqCst) {
        return false;
    }
    *JOB.lock() = Some(job);
    // Wake it from `wfi`.
    let _ = hal_riscv64::cpu::send_ipi(hart);
    true
}

/// Waits up to `timeout_ns` for the second hart's job to finish; `true` if it did.
pub(crate) fn wait_idle(timeout_ns: u64) -> bool {
    spin_until(timeout_ns, || !BUSY.load(Ordering::SeqCst))
}

/// The second hart's Rust entry (from `_start_secondary`).
pub(crate) extern "C" fn hv_secondary(hart: u64) -> ! {
    match hal_riscv64::init_hart() {
        Ok(_) => READY.store(true, Ordering::SeqCst),
        Err(e) => {
            println!("hart {hart}: cannot run guests: {e}");
            loop {
                wait_for_kick();
            }
        }
    }
    loop {
        let job = JOB.lock().take();
        match job {
            Some(job) => {
                job();
                BUSY.store(false, Ordering::SeqCst);
            }
            None => wait_for_kick(),
        }
    }
}
