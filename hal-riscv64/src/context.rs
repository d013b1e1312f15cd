//! The vCPU's saved state: `GuestRegs` (general and FP registers, the trap CSRs and
//! what the world switch keeps of the host, laid out for the assembly in `entry.rs`)
//! and [`VsCsrs`] (the VS-level CSRs, switched when a vCPU moves between harts).

use core::mem::offset_of;

use crate::exit::TrapInfo;
#[cfg(target_arch = "riscv64")]
use crate::regs::{csr_read, csr_write, num};

// Offsets of `GuestRegs` fields, used by the world switch in `entry.rs`.
pub(crate) const OFF_SEPC: usize = 256;
pub(crate) const OFF_SSTATUS: usize = 264;
pub(crate) const OFF_HSTATUS: usize = 272;
pub(crate) const OFF_SCAUSE: usize = 280;
pub(crate) const OFF_STVAL: usize = 288;
pub(crate) const OFF_HTVAL: usize = 296;
pub(crate) const OFF_HTINST: usize = 304;
pub(crate) const OFF_HOST: usize = 312;
pub(crate) const OFF_HOST_STVEC: usize = 440;
pub(crate) const OFF_FP_LIVE: usize = 448;
pub(crate) const OFF_FCSR: usize = 456;
pub(crate) const OFF_FP: usize = 464;
pub(crate) const OFF_HOST_FCSR: usize = 720;
pub(crate) const OFF_HOST_FS: usize = 728;

/// The guest's registers and what the world switch keeps of the host, laid out for
/// the assembly in `entry.rs`.
#[repr(C)]
#[derive(Clone, Debug)]
pub(crate) struct GuestRegs {
    /// x0..x31 (x0 is never loaded).
    pub(crate) x: [u64; 32],
    /// Guest PC.
    pub(crate) sepc: u64,
    /// sstatus at the last trap (SPP = the guest's privilege then); on entry the
    /// value written before `sret`.
    pub(crate) sstatus: u64,
    /// hstatus, likewise.
    pub(crate) hstatus: u64,
    pub(crate) scause: u64,
    pub(crate) stval: u64,
    pub(crate) htval: u64,
    pub(crate) htinst: u64,
    /// Host ra, sp, gp, tp, s0..s11.
    host: [u64; 16],
    host_stvec: u64,
    /// Non-zero once the guest has FP state in `fp`/`fcsr`.
    pub(crate) fp_live: u64,
    pub(crate) fcsr: u64,
    pub(crate) fp: [u64; 32],
    host_fcsr: u64,
    host_fs: [u64; 12],
}

static_assertions::const_assert_eq!(offset_of!(GuestRegs, sepc), OFF_SEPC);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, sstatus), OFF_SSTATUS);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, hstatus), OFF_HSTATUS);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, scause), OFF_SCAUSE);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, stval), OFF_STVAL);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, htval), OFF_HTVAL);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, htinst), OFF_HTINST);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, host), OFF_HOST);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, host_stvec), OFF_HOST_STVEC);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, fp_live), OFF_FP_LIVE);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, fcsr), OFF_FCSR);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, fp), OFF_FP);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, host_fcsr), OFF_HOST_FCSR);
static_assertions::const_assert_eq!(offset_of!(GuestRegs, host_fs), OFF_HOST_FS);

impl GuestRegs {
    pub(crate) const fn new() -> Self {
        Self {
            x: [0; 32],
            sepc: 0,
            sstatus: 0,
            hstatus: 0,
            scause: 0,
            stval: 0,
            htval: 0,
            htinst: 0,
            host: [0; 16],
            host_stvec: 0,
            fp_live: 0,
            fcsr: 0,
            fp: [0; 32],
            host_fcsr: 0,
            host_fs: [0; 12],
        }
    }

    pub(crate) fn trap(&self) -> TrapInfo {
        TrapInfo {
            scause: self.scause,
            stval: self.stval,
            htval: self.htval,
            htinst: self.htinst,
        }
    }
}

/// The VS-level CSRs the trap handling reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VsCsr {
    Vsstatus,
    Vstvec,
    Vsepc,
    Vscause,
    Vstval,
    Vsatp,
}

/// The VS-level state of a vCPU that lives in hart CSRs while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsCsrs {
    /// `vsstatus`.
    pub vsstatus: u64,
    /// `vsie`.
    pub vsie: u64,
    /// `vstvec`.
    pub vstvec: u64,
    /// `vsscratch`.
    pub vsscratch: u64,
    /// `vsepc`.
    pub vsepc: u64,
    /// `vscause`.
    pub vscause: u64,
    /// `vstval`.
    pub vstval: u64,
    /// `vsatp`.
    pub vsatp: u64,
    /// `hvip` (pending virtual interrupts).
    pub hvip: u64,
    /// `vstimecmp` (when the hart has Sstc).
    pub vstimecmp: u64,
}

impl VsCsrs {
    /// The state an SBI HSM `hart_start` promises: translation off, interrupts
    /// disabled, nothing pending, no timer armed.
    pub const RESET: VsCsrs = VsCsrs {
        vsstatus: 0,
        vsie: 0,
        vstvec: 0,
        vsscratch: 0,
        vsepc: 0,
        vscause: 0,
        vstval: 0,
        vsatp: 0,
        hvip: 0,
        vstimecmp: u64::MAX,
    };
}

#[cfg(target_arch = "riscv64")]
/// The VS CSRs of the vCPU that last ran on this hart.
pub(crate) fn save_vs_csrs() -> VsCsrs {
    VsCsrs {
        vsstatus: csr_read!(num::VSSTATUS),
        vsie: csr_read!(num::VSIE),
        vstvec: csr_read!(num::VSTVEC),
        vsscratch: csr_read!(num::VSSCRATCH),
        vsepc: csr_read!(num::VSEPC),
        vscause: csr_read!(num::VSCAUSE),
        vstval: csr_read!(num::VSTVAL),
        vsatp: csr_read!(num::VSATP),
        hvip: csr_read!(num::HVIP),
        vstimecmp: if crate::cpu::sstc() {
            csr_read!(num::VSTIMECMP)
        } else {
            u64::MAX
        },
    }
}

#[cfg(target_arch = "riscv64")]
/// Loads a vCPU's VS CSRs into this hart.
pub(crate) fn load_vs_csrs(vs: &VsCsrs) {
    csr_write!(num::VSSTATUS, vs.vsstatus);
    csr_write!(num::VSIE, vs.vsie);
    csr_write!(num::VSTVEC, vs.vstvec);
    csr_write!(num::VSSCRATCH, vs.vsscratch);
    csr_write!(num::VSEPC, vs.vsepc);
    csr_write!(num::VSCAUSE, vs.vscause);
    csr_write!(num::VSTVAL, vs.vstval);
    csr_write!(num::VSATP, vs.vsatp);
    csr_write!(num::HVIP, vs.hvip);
    if crate::cpu::sstc() {
        csr_write!(num::VSTIMECMP, vs.vstimecmp);
    }
}
