//! The second physical CPU: powered on with the firmware's PSCI CPU_ON when a guest
//! starts its second vCPU, given one job (run that vCPU), powered off when the job
//! returns. Each vCPU of the test VM thus has a physical CPU of its own (`-smp 2`),
//! so the vCPUs really run concurrently and the TLB invalidation of an unmap must
//! reach the other CPU (`TLBI ..IS`).

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, Ordering};

use hal_aarch64::firmware as psci;
use spin::Mutex;

use crate::boot::{MAX_CPUS, secondary_entry, stack_top};

/// Work for a secondary CPU.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

static JOBS: [Mutex<Option<Job>>; MAX_CPUS] = [const { Mutex::new(None) }; MAX_CPUS];
/// Set from handing out a job until the CPU has finished it.
static BUSY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Why a job could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SmpError {
    /// No such secondary CPU (CPU 0 runs the boot path).
    NoSuchCpu(usize),
    /// The CPU still runs an earlier job.
    Busy(usize),
    /// The firmware refused CPU_ON with this PSCI status.
    Firmware(i64),
}

/// How long to retry CPU_ON while the firmware still sees the CPU on (it finishes
/// its last job just before its CPU_OFF).
const ALREADY_ON_RETRY_NS: u64 = 1_000_000_000;

/// Powers CPU `cpu` on to run `job`, then off again.
pub(crate) fn run_on(cpu: usize, job: Job) -> Result<(), SmpError> {
    if cpu == 0 || cpu >= MAX_CPUS {
        return Err(SmpError::NoSuchCpu(cpu));
    }
    if BUSY[cpu].swap(true, Ordering::SeqCst) {
        return Err(SmpError::Busy(cpu));
    }
    *JOBS[cpu].lock() = Some(job);
    let start = hal_aarch64::cpu::now_ns();
    loop {
        // SAFETY: CPU_ON starts `cpu` at our secondary entry with its own stack.
        let ret = unsafe {
            hal_aarch64::cpu::firmware_psci([
                u64::from(psci::CPU_ON_64),
                cpu as u64,
                secondary_entry(),
                stack_top(cpu),
            ])
        } as i64;
        let already_on = psci::PsciError::AlreadyOn as i64;
        if ret == 0 {
            return Ok(());
        }
        if ret != already_on || hal_aarch64::cpu::now_ns() - start > ALREADY_ON_RETRY_NS {
            JOBS[cpu].lock().take();
            BUSY[cpu].store(false, Ordering::SeqCst);
            return Err(SmpError::Firmware(ret));
        }
        core::hint::spin_loop();
    }
}

/// Waits up to `timeout_ns` for CPU `cpu` to finish its job; `true` when it has.
pub(crate) fn wait_idle(cpu: usize, timeout_ns: u64) -> bool {
    let Some(busy) = BUSY.get(cpu) else {
        return true;
    };
    let start = hal_aarch64::cpu::now_ns();
    while busy.load(Ordering::SeqCst) {
        if hal_aarch64::cpu::now_ns() - start > timeout_ns {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// What a secondary CPU does after its EL2 setup: the job, then power off.
pub(crate) fn secondary_work(cpu: usize) -> ! {
    let job = JOBS.get(cpu).and_then(|j| j.lock().take());
    if let Some(job) = job {
        job();
    }
    if let Some(busy) = BUSY.get(cpu) {
        busy.store(false, Ordering::SeqCst);
    }
    // SAFETY: this CPU has nothing left to do; CPU_OFF does not return.
    unsafe { hal_aarch64::cpu::firmware_psci([u64::from(psci::CPU_OFF), 0, 0, 0]) };
    loop {
        core::hint::spin_loop();
    }
}
