//! The physical hart: per-hart HS-mode setup (`init_hart`), what the hart supports
//! ([`HartInfo`]), the hypervisor's own trap vector, and the SBI calls the hypervisor
//! makes to the firmware below it (OpenSBI) for itself: `hart_start`,
//! `hart_status`, `send_ipi`, `system_reset`.

use core::sync::atomic::{AtomicBool, Ordering};

#[cfg(target_arch = "riscv64")]
use addrspace::{HostPhysAddr, Sv39x4, Sv48x4};
#[cfg(target_arch = "riscv64")]
use core::arch::asm;

#[cfg(target_arch = "riscv64")]
use crate::exit::{HEDELEG, HIDELEG};
#[cfg(target_arch = "riscv64")]
use crate::firmware::{EID_HSM, EID_IPI, EID_SRST};
#[cfg(target_arch = "riscv64")]
use crate::regs::{HCOUNTEREN_ALL, csr_read, csr_set, csr_write, henvcfg, hgatp, num};

/// Whether the harts have Sstc (`vstimecmp`), as found by `init_hart`.
static SSTC: AtomicBool = AtomicBool::new(false);

/// Whether the harts have Sstc (`vstimecmp`), as found by `init_hart`.
pub(crate) fn sstc() -> bool {
    SSTC.load(Ordering::Relaxed)
}

/// What `init_hart` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HartInfo {
    /// `hgatp` accepts Sv39x4.
    pub sv39x4: bool,
    /// `hgatp` accepts Sv48x4.
    pub sv48x4: bool,
    /// VMID bits the hart keeps (0..=14).
    pub vmid_bits: u32,
    /// Sstc: the guest timer is `vstimecmp`.
    pub sstc: bool,
}

/// Why a hart cannot run guests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HartError {
    /// `hgatp` keeps neither Sv39x4 nor Sv48x4 (no hypervisor extension, or G-stage
    /// translation not implemented).
    NoGStage {
        /// What `hgatp` read back after writing Sv39x4 with all VMID bits.
        readback: u64,
    },
}

impl core::fmt::Display for HartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoGStage { readback } => write!(
                f,
                "hgatp does not keep Sv39x4 or Sv48x4 (read back {readback:#x})"
            ),
        }
    }
}

/// Sets the hart up for running guests, once per hart in HS-mode: trap delegation to
/// VS-mode (`hedeleg`, `hideleg`), counters for the guest, the guest timer (Sstc),
/// the software interrupt that kicks the hart out of a guest (`sie.SSIE`; `sstatus.SIE`
/// stays 0), the hypervisor's own trap vector, and probes of the G-stage modes and
/// VMID width. A hart without the hypervisor extension traps on the first `hstatus`
/// access; the trap vector then panics with the cause.
#[cfg(target_arch = "riscv64")]
pub fn init_hart() -> Result<HartInfo, HartError> {
    install_trap_vector();
    csr_write!(num::HEDELEG, HEDELEG);
    csr_write!(num::HIDELEG, HIDELEG);
    csr_write!(num::HVIP, 0);
    csr_write!(num::HIE, 0);
    csr_write!(num::HTIMEDELTA, 0);
    csr_write!(num::HCOUNTEREN, HCOUNTEREN_ALL);
    // Each mode with every VMID bit set (root 0): the hart keeps the MODE only if it
    // implements it, and only the VMID bits it has.
    let probe = |value: u64| {
        csr_write!(num::HGATP, value);
        csr_read!(num::HGATP)
    };
    let root = HostPhysAddr::from_usize(0);
    let v39 = probe(Sv39x4::hgatp(root, 0x3fff));
    let v48 = probe(Sv48x4::hgatp(root, 0x3fff));
    csr_write!(num::HGATP, 0);
    crate::tlb::hfence_gvma_all();
    let sv39x4 = hgatp::mode(v39) == Sv39x4::MODE;
    let sv48x4 = hgatp::mode(v48) == Sv48x4::MODE;
    if !sv39x4 && !sv48x4 {
        return Err(HartError::NoGStage { readback: v39 });
    }
    let vmid = hgatp::vmid(if sv39x4 { v39 } else { v48 });
    let vmid_bits = vmid.count_ones();
    // hgatp.VMID is 14 bits wide on RV64.
    crate::tlb::narrow_vmids(vcpu_api::low_u16(vmid));
    let sstc = crate::hart::has_sstc();
    if sstc {
        csr_set!(num::HENVCFG, henvcfg::STCE);
        csr_write!(num::VSTIMECMP, u64::MAX);
    }
    SSTC.store(sstc, Ordering::Relaxed);
    // Kicks arrive as supervisor software interrupts: enabled in sie so they end
    // guest execution (HS interrupts are always enabled while V = 1), while
    // sstatus.SIE = 0 keeps them pending in HS-mode until the next entry.
    csr_set!(num::SIE, 1 << crate::exit::interrupt::SSI);
    Ok(HartInfo {
        sv39x4,
        sv48x4,
        vmid_bits,
        sstc,
    })
}

/// The hypervisor's own trap vector: a trap in HS-mode outside the guest is a bug,
/// reported by a panic that names the cause.
#[cfg(target_arch = "riscv64")]
fn install_trap_vector() {
    unsafe extern "C" {
        fn hal_rv64_host_trap();
    }
    csr_write!(num::STVEC, hal_rv64_host_trap as *const () as usize as u64);
}

#[cfg(target_arch = "riscv64")]
core::arch::global_asm!(
    r#"
.section .text.hal_rv64_host_trap, "ax"
.balign 4
.global hal_rv64_host_trap
hal_rv64_host_trap:
    addi sp, sp, -16
    sd ra, 8(sp)
    csrr a0, scause
    csrr a1, sepc
    csrr a2, stval
    csrr a3, {csr_htval}
    call hal_rv64_host_trap_rust
1:  j 1b
"#,
    csr_htval = const num::HTVAL,
);

#[cfg(target_arch = "riscv64")]
#[unsafe(no_mangle)]
extern "C" fn hal_rv64_host_trap_rust(scause: u64, sepc: u64, stval: u64, htval: u64) -> ! {
    let what = if scause >> 63 == 1 {
        "interrupt"
    } else {
        crate::exit::exception_name(scause)
    };
    panic!(
        "trap in HS-mode: {what} (scause {scause:#x}) at pc {sepc:#x}, stval {stval:#x}, htval {htval:#x}"
    );
}

/// An SBI `(error, value)` pair as a `Result`.
#[cfg(target_arch = "riscv64")]
pub(crate) fn sbi_result((error, value): (i64, u64)) -> Result<u64, i64> {
    if error == 0 { Ok(value) } else { Err(error) }
}

/// HSM `hart_start`: hart `hart` starts in S-mode at `start_addr` (physical)
/// with a0 = its hart id and a1 = `opaque`.
#[cfg(target_arch = "riscv64")]
pub fn hart_start(hart: u64, start_addr: u64, opaque: u64) -> Result<(), i64> {
    sbi_result(sbi_call(EID_HSM, 0, [hart, start_addr, opaque, 0, 0])).map(|_| ())
}

/// HSM `hart_get_status`.
#[cfg(target_arch = "riscv64")]
pub fn hart_status(hart: u64) -> Result<u64, i64> {
    sbi_result(sbi_call(EID_HSM, 2, [hart, 0, 0, 0, 0]))
}

/// IPI `send_ipi` to one hart: a supervisor software interrupt there (the kick).
#[cfg(target_arch = "riscv64")]
pub fn send_ipi(hart: u64) -> Result<(), i64> {
    let (mask, base) = (1u64 << (hart % 64), hart - hart % 64);
    sbi_result(sbi_call(EID_IPI, 0, [mask, base, 0, 0, 0])).map(|_| ())
}

/// SRST `system_reset` (0 shutdown, 1 cold reboot, 2 warm reboot; reason 0 none,
/// 1 system failure). Returns only if the firmware refused.
#[cfg(target_arch = "riscv64")]
pub fn system_reset(reset_type: u32, reason: u32) -> i64 {
    sbi_call(
        EID_SRST,
        0,
        [u64::from(reset_type), u64::from(reason), 0, 0, 0],
    )
    .0
}

/// An SBI call to the firmware: `(error, value)`.
#[cfg(target_arch = "riscv64")]
pub(crate) fn sbi_call(eid: u64, fid: u64, args: [u64; 5]) -> (i64, u64) {
    let (error, value): (i64, u64);
    // SAFETY: ECALL to M-mode firmware, which preserves every register but a0/a1
    // (SBI specification, section 3.1).
    unsafe {
        asm!(
            "ecall",
            inlateout("a0") args[0] => error,
            inlateout("a1") args[1] => value,
            in("a2") args[2],
            in("a3") args[3],
            in("a4") args[4],
            in("a6") fid,
            in("a7") eid,
            options(nostack)
        )
    };
    (error, value)
}
