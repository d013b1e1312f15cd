//! The scripted guest: [`Op`]s placed at guest-physical addresses ([`Program`]), the
//! [`Probe`] loop of the coherency tests, and the [`GuestLog`] a guest checks into.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use addrspace::GuestPhysAddr;
use vcpu_api::AccessWidth;

/// Bytes each op occupies (the PC advances by this).
pub const OP_SIZE: u64 = 4;

/// One guest instruction. Every op first fetches its own address (an execute access
/// through the nested tables), like a real instruction fetch.
#[derive(Clone, Debug)]
pub enum Op {
    /// Loads `width` bytes at `gpa` (zero-extended) into register `reg`.
    Read {
        /// Address.
        gpa: GuestPhysAddr,
        /// Width.
        width: AccessWidth,
        /// Destination register.
        reg: usize,
    },
    /// Stores `value` (cut to `width`) at `gpa`.
    Write {
        /// Address.
        gpa: GuestPhysAddr,
        /// Width.
        width: AccessWidth,
        /// Value.
        value: u64,
    },
    /// Stores register `reg` xor `xor` at `gpa`.
    WriteReg {
        /// Address.
        gpa: GuestPhysAddr,
        /// Width.
        width: AccessWidth,
        /// Source register.
        reg: usize,
        /// Mixed into the value.
        xor: u64,
    },
    /// An instruction fetch at `gpa` (an execute access).
    Fetch {
        /// Address.
        gpa: GuestPhysAddr,
    },
    /// Sets register `reg`.
    Set {
        /// Register.
        reg: usize,
        /// Value.
        value: u64,
    },
    /// Records in the [`GuestLog`] whether register `reg` holds `value`.
    Check {
        /// Register.
        reg: usize,
        /// Expected value.
        value: u64,
        /// What is checked.
        what: &'static str,
    },
    /// A hypercall; the result lands in register 0.
    Hypercall {
        /// Number.
        nr: u64,
        /// Arguments.
        args: [u64; 6],
    },
    /// Waits for an interrupt (exits with `Halt`).
    Halt,
    /// Starts another vCPU ([`vcpu_api::FirmwareCall::CpuOn`]); the result lands in
    /// register 0 (see [`crate::reply_word`]).
    CpuUp {
        /// The target's guest CPU id ([`crate::MockVCpuConfig::cpu_id`]; the vCPU
        /// index by default).
        target: u64,
        /// Its entry.
        entry: GuestPhysAddr,
        /// Its argument (register 0 of the target).
        arg: u64,
    },
    /// Any firmware call; the reply lands in register 0 (see [`crate::reply_word`]).
    Call(vcpu_api::FirmwareCall),
    /// Stops this vCPU.
    CpuDown,
    /// Powers the VM off.
    Shutdown,
    /// Asks for a reset.
    Reset,
    /// Continues at `to`.
    Jump {
        /// Target address.
        to: GuestPhysAddr,
    },
    /// Spins reading the probe's page until its `stop` flag is set (see [`Probe`]).
    Probe(std::sync::Arc<Probe>),
    /// x86 `IN` of `width` at `port` into register 0 (merged as x86 merges AL/AX,
    /// see [`AccessWidth::write_register`]): from the host port directly when the
    /// port is passed through, an [`vcpu_api::ExitReason::Io`] otherwise.
    In {
        /// The port.
        port: u16,
        /// The width.
        width: AccessWidth,
    },
    /// x86 `OUT` of `value` (cut to `width`) at `port`: to the host port directly
    /// when passed through, an [`vcpu_api::ExitReason::Io`] otherwise.
    Out {
        /// The port.
        port: u16,
        /// The width.
        width: AccessWidth,
        /// The value.
        value: u64,
    },
}

/// The guest's code: ops placed at guest-physical addresses, each op `OP_SIZE`
/// bytes after the previous one.
#[derive(Clone, Debug, Default)]
pub struct Program {
    segments: Vec<(GuestPhysAddr, Vec<Op>)>,
}

impl Program {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `ops` at `entry`.
    pub fn at(mut self, entry: GuestPhysAddr, ops: Vec<Op>) -> Self {
        self.segments.push((entry, ops));
        self
    }

    /// The op at `pc`.
    pub fn op_at(&self, pc: u64) -> Option<&Op> {
        self.segments.iter().find_map(|(entry, ops)| {
            let base = entry.as_usize() as u64;
            let off = pc.checked_sub(base)?;
            if !off.is_multiple_of(OP_SIZE) {
                return None;
            }
            ops.get(usize::try_from(off / OP_SIZE).ok()?)
        })
    }
}

/// What a guest checked.
#[derive(Debug, Default)]
pub struct GuestLog {
    entries: Mutex<Vec<(usize, &'static str, bool, String)>>,
}

impl GuestLog {
    /// Records a check of vCPU `vcpu`.
    pub fn record(&self, vcpu: usize, what: &'static str, passed: bool, detail: String) {
        self.entries
            .lock()
            .expect("guest log")
            .push((vcpu, what, passed, detail));
    }

    /// `(passed, failed)` counts.
    pub fn counts(&self) -> (usize, usize) {
        let e = self.entries.lock().expect("guest log");
        let passed = e.iter().filter(|x| x.2).count();
        (passed, e.len() - passed)
    }

    /// The failed checks, printable.
    pub fn failures(&self) -> Vec<String> {
        self.entries
            .lock()
            .expect("guest log")
            .iter()
            .filter(|x| !x.2)
            .map(|(v, what, _, d)| format!("vCPU {v}: {what}: {d}"))
            .collect()
    }

    /// Whether check `what` passed on vCPU `vcpu`.
    pub fn passed(&self, vcpu: usize, what: &str) -> bool {
        self.entries
            .lock()
            .expect("guest log")
            .iter()
            .any(|x| x.0 == vcpu && x.1 == what && x.2)
    }
}

/// The read loop of the coherency tests. The host moves `epoch` through
/// 0 (mapped) → 1 (after `unmap_region` returned) → 2 (remapping) → 3 (after the
/// new data is written); each successful read the guest does is classified by the
/// epoch it observed (SeqCst) *before* translating and again *after* the access
/// (a read during which the epoch changed counts as `transitional`):
/// - epoch 1: any read that succeeds went through a stale translation (`stale`);
/// - epoch 3: a read must return `expect` (`good`), anything else is `wrong`.
#[derive(Debug, Default)]
pub struct Probe {
    /// The page read (8 bytes at its start).
    pub gpa: GuestPhysAddr,
    /// The host's phase.
    pub epoch: AtomicU64,
    /// Ends the loop.
    pub stop: AtomicBool,
    /// The value expected in epoch 3.
    pub expect: AtomicU64,
    /// Reads in epoch 0.
    pub before: AtomicU64,
    /// Bit `i` set once vCPU `i` read in epoch 0.
    pub before_vcpus: AtomicU64,
    /// Successful reads in epoch 1 (must stay 0).
    pub stale: AtomicU64,
    /// Faults in epoch 1 (the expected outcome).
    pub faults_unmapped: AtomicU64,
    /// Reads in epoch 2, or during which the epoch changed (anything goes).
    pub transitional: AtomicU64,
    /// Correct reads in epoch 3.
    pub good: AtomicU64,
    /// Bit `i` set once vCPU `i` read the expected value in epoch 3.
    pub good_vcpus: AtomicU64,
    /// Wrong reads in epoch 3 (must stay 0).
    pub wrong: AtomicU64,
}

impl Probe {
    /// A probe of the page at `gpa`.
    pub fn new(gpa: GuestPhysAddr) -> Self {
        Self {
            gpa,
            ..Self::default()
        }
    }

    /// Moves to `epoch`.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Reads the counter `c`.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::SeqCst)
    }
}
