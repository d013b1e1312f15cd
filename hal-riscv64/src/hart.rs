//! Per-hart HS-mode setup (`init_hart`), what the hart supports ([`HartInfo`]), TLB
//! maintenance for guest-physical translations (HFENCE.GVMA, locally and on every hart
//! through the firmware), and the SBI calls the hypervisor itself makes to the
//! firmware below it (`firmware`).

use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};

#[cfg(target_arch = "riscv64")]
use addrspace::{HostPhysAddr, Sv39x4, Sv48x4};

#[cfg(target_arch = "riscv64")]
use crate::csr::{HCOUNTEREN_ALL, henvcfg, hgatp, hvip, num};
#[cfg(target_arch = "riscv64")]
use crate::hw::{self, csr_clear, csr_read, csr_set, csr_write};
#[cfg(target_arch = "riscv64")]
use crate::sbi::{EID_RFENCE, RemoteFence};
#[cfg(target_arch = "riscv64")]
use crate::trap::{HEDELEG, HIDELEG};
#[cfg(target_arch = "riscv64")]
use crate::vcpu::{HartOps, VsCsr, VsCsrs};

/// The VMID bits the harts keep (narrowed by `init_hart`; 14 is the RV64 field).
static VMID_MASK: AtomicU16 = AtomicU16::new(0x3fff);
/// Whether the harts have Sstc (`vstimecmp`), as found by `init_hart`.
static SSTC: AtomicBool = AtomicBool::new(false);

/// The VMID of VM `vm_id`: its id cut to the VMID bits the harts implement. VMs whose
/// ids differ only above those bits share a VMID; they stay correct because every
/// vCPU flushes its VMID when it is bound to a hart.
pub fn vmid_for(vm_id: usize) -> u16 {
    (vm_id as u16) & VMID_MASK.load(Ordering::Relaxed)
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
    hw::hfence_gvma_all();
    let sv39x4 = hgatp::mode(v39) == Sv39x4::MODE;
    let sv48x4 = hgatp::mode(v48) == Sv48x4::MODE;
    if !sv39x4 && !sv48x4 {
        return Err(HartError::NoGStage { readback: v39 });
    }
    let vmid = hgatp::vmid(if sv39x4 { v39 } else { v48 });
    let vmid_bits = vmid.count_ones();
    VMID_MASK.fetch_and(vmid as u16, Ordering::Relaxed);
    let sstc = hw::has_sstc();
    if sstc {
        csr_set!(num::HENVCFG, henvcfg::STCE);
        csr_write!(num::VSTIMECMP, u64::MAX);
    }
    SSTC.store(sstc, Ordering::Relaxed);
    // Kicks arrive as supervisor software interrupts: enabled in sie so they end
    // guest execution (HS interrupts are always enabled while V = 1), while
    // sstatus.SIE = 0 keeps them pending in HS-mode until the next entry.
    csr_set!(num::SIE, 1 << crate::trap::interrupt::SSI);
    Ok(HartInfo {
        sv39x4,
        sv48x4,
        vmid_bits,
        sstc,
    })
}

/// Invalidates the guest-physical translations of `vmid` for `[gpa, gpa + size)` on
/// this hart: one HFENCE.GVMA per 4 KiB page (rs1 = GPA >> 2, rs2 = VMID), or one for
/// the whole VMID when the range is larger than 64 pages. Never SFENCE.VMA: that one
/// does not cover G-stage translations.
#[cfg(target_arch = "riscv64")]
pub fn hfence_gvma_range(vmid: u16, gpa: u64, size: u64) {
    const PAGE: u64 = 0x1000;
    let vmid = u64::from(vmid);
    // HFENCE.GVMA also orders the page-table stores before it against the G-stage
    // walks after it (privileged spec 8.3.2), so no separate fence is needed.
    if size == 0 || size > 64 * PAGE {
        hw::hfence_gvma_vmid(vmid);
        return;
    }
    let start = gpa & !(PAGE - 1);
    let end = gpa.saturating_add(size);
    let mut page = start;
    while page < end {
        hw::hfence_gvma(page, vmid);
        page += PAGE;
    }
}

/// Invalidates the guest-physical translations of `vmid` for `[gpa, gpa + size)` on
/// every hart: precisely on this one, then through the firmware's RFENCE
/// `remote_hfence_gvma_vmid` on all harts (which returns once they are done). The
/// remote request covers the whole VMID: OpenSBI up to v1.2 passes the GPA unshifted
/// to HFENCE.GVMA for ranged requests (rs1 must be GPA >> 2), so a ranged request
/// would miss the page; a whole-VMID fence is correct on every version.
#[cfg(target_arch = "riscv64")]
pub fn broadcast_hfence_gvma(vmid: u16, gpa: u64, size: u64) -> Result<(), i64> {
    hfence_gvma_range(vmid, gpa, size);
    firmware::remote_hfence_gvma_vmid_all(vmid)
}

#[cfg(target_arch = "riscv64")]
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
        vstimecmp: if SSTC.load(Ordering::Relaxed) {
            csr_read!(num::VSTIMECMP)
        } else {
            u64::MAX
        },
    }
}

#[cfg(target_arch = "riscv64")]
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
    if SSTC.load(Ordering::Relaxed) {
        csr_write!(num::VSTIMECMP, vs.vstimecmp);
    }
}

/// The real hart.
#[cfg(target_arch = "riscv64")]
pub(crate) struct HwOps;

#[cfg(target_arch = "riscv64")]
impl HwOps {
    /// Runs `f` with the guest's translation off (vsatp = Bare), so HLV/HSV
    /// addresses are guest-physical.
    fn with_bare_vsatp<R>(f: impl FnOnce() -> R) -> R {
        let vsatp = csr_read!(num::VSATP);
        csr_write!(num::VSATP, 0);
        let r = f();
        csr_write!(num::VSATP, vsatp);
        r
    }
}

#[cfg(target_arch = "riscv64")]
impl HartOps for HwOps {
    fn fetch_half(&mut self, gva: u64) -> Option<u16> {
        hw::hlvx_hu(gva)
    }

    fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> usize {
        Self::with_bare_vsatp(|| {
            for (i, b) in buf.iter_mut().enumerate() {
                match hw::hlv_bu(gpa.wrapping_add(i as u64)) {
                    Some(v) => *b = v,
                    None => return i,
                }
            }
            buf.len()
        })
    }

    fn write_guest_phys(&mut self, gpa: u64, bytes: &[u8]) -> usize {
        Self::with_bare_vsatp(|| {
            for (i, b) in bytes.iter().enumerate() {
                if !hw::hsv_b(gpa.wrapping_add(i as u64), *b) {
                    return i;
                }
            }
            bytes.len()
        })
    }

    fn vs_csr(&mut self, csr: VsCsr) -> u64 {
        match csr {
            VsCsr::Vsstatus => csr_read!(num::VSSTATUS),
            VsCsr::Vstvec => csr_read!(num::VSTVEC),
            VsCsr::Vsepc => csr_read!(num::VSEPC),
            VsCsr::Vscause => csr_read!(num::VSCAUSE),
            VsCsr::Vstval => csr_read!(num::VSTVAL),
            VsCsr::Vsatp => csr_read!(num::VSATP),
        }
    }

    fn set_vs_csr(&mut self, csr: VsCsr, value: u64) {
        match csr {
            VsCsr::Vsstatus => csr_write!(num::VSSTATUS, value),
            VsCsr::Vstvec => csr_write!(num::VSTVEC, value),
            VsCsr::Vsepc => csr_write!(num::VSEPC, value),
            VsCsr::Vscause => csr_write!(num::VSCAUSE, value),
            VsCsr::Vstval => csr_write!(num::VSTVAL, value),
            VsCsr::Vsatp => csr_write!(num::VSATP, value),
        }
    }

    fn set_guest_timer(&mut self, stime_value: u64) -> bool {
        if !SSTC.load(Ordering::Relaxed) {
            return false;
        }
        // The guest's time is time + htimedelta (0 here), compared with vstimecmp;
        // hip.VSTIP follows it. Drop a timer interrupt injected through hvip.
        csr_write!(num::VSTIMECMP, stime_value);
        csr_clear!(num::HVIP, hvip::VSTIP);
        true
    }

    fn has_guest_timer(&mut self) -> bool {
        SSTC.load(Ordering::Relaxed)
    }

    fn remote_fence(&mut self, fence: RemoteFence) -> i64 {
        // hart_mask_base = -1: every hart. The firmware applies HFENCE.VVMA with the
        // VMID in this hart's hgatp, which is the guest's.
        let all = u64::MAX;
        let (error, _) = match fence {
            RemoteFence::FenceI => hw::sbi_call(EID_RFENCE, 0, [0, all, 0, 0, 0]),
            RemoteFence::SfenceVma {
                start,
                size,
                asid: None,
            } => hw::sbi_call(EID_RFENCE, 6, [0, all, start, size, 0]),
            RemoteFence::SfenceVma {
                start,
                size,
                asid: Some(asid),
            } => hw::sbi_call(EID_RFENCE, 5, [0, all, start, size, asid]),
        };
        error
    }

    fn clear_kick(&mut self) {
        csr_clear!(num::SIP, 1 << crate::trap::interrupt::SSI);
    }
}

/// A hart that is not there (host builds): every access fails.
#[cfg(not(target_arch = "riscv64"))]
pub(crate) struct NoHart;

#[cfg(not(target_arch = "riscv64"))]
impl crate::vcpu::HartOps for NoHart {
    fn fetch_half(&mut self, _gva: u64) -> Option<u16> {
        None
    }
    fn read_guest_phys(&mut self, _gpa: u64, _buf: &mut [u8]) -> usize {
        0
    }
    fn write_guest_phys(&mut self, _gpa: u64, _bytes: &[u8]) -> usize {
        0
    }
    fn vs_csr(&mut self, _csr: crate::vcpu::VsCsr) -> u64 {
        0
    }
    fn set_vs_csr(&mut self, _csr: crate::vcpu::VsCsr, _value: u64) {}
    fn set_guest_timer(&mut self, _stime_value: u64) -> bool {
        false
    }
    fn has_guest_timer(&mut self) -> bool {
        false
    }
    fn remote_fence(&mut self, _fence: crate::sbi::RemoteFence) -> i64 {
        crate::sbi::error::NOT_SUPPORTED
    }
    fn clear_kick(&mut self) {}
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
        crate::trap::exception_name(scause)
    };
    panic!(
        "trap in HS-mode: {what} (scause {scause:#x}) at pc {sepc:#x}, stval {stval:#x}, htval {htval:#x}"
    );
}

/// SBI calls the hypervisor makes to the firmware (OpenSBI) for itself.
#[cfg(target_arch = "riscv64")]
pub mod firmware {
    use crate::hw::sbi_call;
    use crate::sbi::{EID_HSM, EID_IPI, EID_RFENCE, EID_SRST};

    fn result((error, value): (i64, u64)) -> Result<u64, i64> {
        if error == 0 { Ok(value) } else { Err(error) }
    }

    /// HSM `hart_start`: hart `hart` starts in S-mode at `start_addr` (physical)
    /// with a0 = its hart id and a1 = `opaque`.
    pub fn hart_start(hart: u64, start_addr: u64, opaque: u64) -> Result<(), i64> {
        result(sbi_call(EID_HSM, 0, [hart, start_addr, opaque, 0, 0])).map(|_| ())
    }

    /// HSM `hart_get_status`.
    pub fn hart_status(hart: u64) -> Result<u64, i64> {
        result(sbi_call(EID_HSM, 2, [hart, 0, 0, 0, 0]))
    }

    /// IPI `send_ipi` to one hart: a supervisor software interrupt there (the kick).
    pub fn send_ipi(hart: u64) -> Result<(), i64> {
        let (mask, base) = (1u64 << (hart % 64), hart - hart % 64);
        result(sbi_call(EID_IPI, 0, [mask, base, 0, 0, 0])).map(|_| ())
    }

    /// RFENCE `remote_hfence_gvma_vmid` for the whole VMID on every hart.
    pub fn remote_hfence_gvma_vmid_all(vmid: u16) -> Result<(), i64> {
        result(sbi_call(
            EID_RFENCE,
            3,
            [0, u64::MAX, 0, 0, u64::from(vmid)],
        ))
        .map(|_| ())
    }

    /// SRST `system_reset` (0 shutdown, 1 cold reboot, 2 warm reboot; reason 0 none,
    /// 1 system failure). Returns only if the firmware refused.
    pub fn system_reset(reset_type: u32, reason: u32) -> i64 {
        sbi_call(
            EID_SRST,
            0,
            [u64::from(reset_type), u64::from(reason), 0, 0, 0],
        )
        .0
    }
}
