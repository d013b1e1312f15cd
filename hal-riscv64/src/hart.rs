//! The hart as the trap handling sees it: [`HartOps`] (instruction fetch with HLVX,
//! the VS CSRs, the guest timer, fences), so the trap handling runs on the host
//! against a model; `HwOps`, the real hart on riscv64, with the fault-tolerant HLVX
//! routine; and `NoHart` for host builds. Guest memory is not among them: the VM
//! layer's copy API is the one path to it.

use crate::context::VsCsr;
#[cfg(target_arch = "riscv64")]
use crate::firmware::EID_RFENCE;
#[cfg(target_arch = "riscv64")]
use crate::regs::{csr_clear, csr_read, csr_write, hvip, num};
use vcpu_api::RemoteFence;

/// What the trap handling needs from the hart: instruction fetch through the
/// guest's translation, the VS CSRs, the timer and fences.
pub(crate) trait HartOps {
    /// HLVX.HU: 16 instruction bits at guest-virtual `gva`, `None` on a fault.
    fn fetch_half(&mut self, gva: u64) -> Option<u16>;
    /// Reads a VS CSR.
    fn vs_csr(&mut self, csr: VsCsr) -> u64;
    /// Writes a VS CSR.
    fn set_vs_csr(&mut self, csr: VsCsr, value: u64);
    /// Whether the guest runs with its own translation off (`vsatp.MODE` = Bare): its
    /// virtual addresses are then guest-physical.
    fn guest_translation_off(&mut self) -> bool {
        self.vs_csr(VsCsr::Vsatp) >> 60 == 0
    }
    /// Arms the guest's timer (`vstimecmp`) and clears a pending injected timer
    /// interrupt; `false` when the hart has no Sstc.
    fn set_guest_timer(&mut self, stime_value: u64) -> bool;
    /// Whether [`HartOps::set_guest_timer`] can work.
    fn has_guest_timer(&mut self) -> bool;
    /// Runs a remote fence for the guest on every hart; returns the SBI error code.
    fn remote_fence(&mut self, fence: RemoteFence) -> i64;
    /// Whether [`HartOps::remote_fence`] can work.
    fn has_remote_fence(&mut self) -> bool;
    /// Clears the supervisor software interrupt that kicked this hart.
    fn clear_kick(&mut self);
}

/// The real hart.
#[cfg(target_arch = "riscv64")]
pub(crate) struct HwOps;

#[cfg(target_arch = "riscv64")]
impl HartOps for HwOps {
    fn fetch_half(&mut self, gva: u64) -> Option<u16> {
        hlvx_hu(gva)
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
        if !crate::cpu::sstc() {
            return false;
        }
        // The guest's time is time + htimedelta (0 here), compared with vstimecmp;
        // hip.VSTIP follows it. Drop a timer interrupt injected through hvip.
        csr_write!(num::VSTIMECMP, stime_value);
        csr_clear!(num::HVIP, hvip::VSTIP);
        true
    }

    fn has_guest_timer(&mut self) -> bool {
        crate::cpu::sstc()
    }

    fn remote_fence(&mut self, fence: RemoteFence) -> i64 {
        // hart_mask_base = -1: every hart. The firmware applies HFENCE.VVMA with the
        // VMID in this hart's hgatp, which is the guest's.
        let all = u64::MAX;
        let (error, _) = match fence {
            RemoteFence::FenceI => crate::cpu::sbi_call(EID_RFENCE, 0, [0, all, 0, 0, 0]),
            RemoteFence::SfenceVma {
                start,
                size,
                asid: None,
            } => crate::cpu::sbi_call(EID_RFENCE, 6, [0, all, start, size, 0]),
            RemoteFence::SfenceVma {
                start,
                size,
                asid: Some(asid),
            } => crate::cpu::sbi_call(EID_RFENCE, 5, [0, all, start, size, asid]),
        };
        error
    }

    fn has_remote_fence(&mut self) -> bool {
        true
    }

    fn clear_kick(&mut self) {
        csr_clear!(num::SIP, 1 << crate::exit::interrupt::SSI);
    }
}

/// A hart that is not there (host builds): every access fails.
#[cfg(not(target_arch = "riscv64"))]
pub(crate) struct NoHart;

#[cfg(not(target_arch = "riscv64"))]
impl HartOps for NoHart {
    fn fetch_half(&mut self, _gva: u64) -> Option<u16> {
        None
    }
    fn vs_csr(&mut self, _csr: VsCsr) -> u64 {
        0
    }
    fn set_vs_csr(&mut self, _csr: VsCsr, _value: u64) {}
    fn set_guest_timer(&mut self, _stime_value: u64) -> bool {
        false
    }
    fn has_guest_timer(&mut self) -> bool {
        false
    }
    fn remote_fence(&mut self, _fence: RemoteFence) -> i64 {
        crate::firmware::error::NOT_SUPPORTED
    }
    fn has_remote_fence(&mut self) -> bool {
        false
    }
    fn clear_kick(&mut self) {}
}

#[cfg(target_arch = "riscv64")]
core::arch::global_asm!(
    r#"
.section .text.hal_rv64_fallible, "ax"
.option push
.option arch, +d
// Accesses that may fault: `fallible name, insn` is a routine that runs `insn` with
// stvec swapped to a local fixup. A fault there comes from HS-mode (V = 0), so it
// leaves hstatus.SPV = 0 and sstatus.SPP = 1; the vCPU rewrites both before the next
// entry. Returns a1 = 1 on success, a1 = 0 and a0 = 0 after a fault.
.macro fallible name, insn:vararg
.balign 4
.global \name
\name:
    la t0, 1f
    csrrw t1, stvec, t0
    \insn
    csrw stvec, t1
    li a1, 1
    ret
.balign 4
1:  csrw stvec, t1
    li a0, 0
    li a1, 0
    ret
.endm

// a0 = guest-virtual address -> a0 = HLVX.HU (execute permission, as the guest's
// instruction fetch would need)
fallible hal_rv64_hlvx_hu, .insn r 0x73, 4, 0x32, a0, a0, x3
// -> a0 = stimecmp if the CSR exists for HS-mode (Sstc and menvcfg.STCE)
fallible hal_rv64_probe_stimecmp, csrr a0, {csr_stimecmp}
.option pop
"#,
    csr_stimecmp = const num::STIMECMP,
);

#[cfg(target_arch = "riscv64")]
unsafe extern "C" {
    fn hal_rv64_hlvx_hu(gva: u64) -> Fallible;
    fn hal_rv64_probe_stimecmp() -> Fallible;
}

/// a0/a1 of the fixup routines: value and success flag.
#[cfg(target_arch = "riscv64")]
#[repr(C)]
struct Fallible {
    value: u64,
    ok: u64,
}

/// HLVX.HU at guest-virtual `gva` (with the guest's privilege from hstatus.SPVP).
#[cfg(target_arch = "riscv64")]
pub(crate) fn hlvx_hu(gva: u64) -> Option<u16> {
    // SAFETY: HLVX only reads guest memory through the guest's translation; a fault
    // is caught by the routine's fixup.
    let r = unsafe { hal_rv64_hlvx_hu(gva) };
    // HLVX.HU zero-extends the halfword it read.
    (r.ok == 1).then_some(vcpu_api::low_u16(r.value))
}

/// Whether HS-mode can use `stimecmp`/`vstimecmp` (Sstc enabled by the firmware).
#[cfg(target_arch = "riscv64")]
pub(crate) fn has_sstc() -> bool {
    // SAFETY: a CSR read whose fault is caught.
    unsafe { hal_rv64_probe_stimecmp() }.ok == 1
}
