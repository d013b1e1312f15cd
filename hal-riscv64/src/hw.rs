//! The instructions: CSR access, the world switch into VS-mode and back, HFENCE,
//! HLV/HLVX with a fault fixup, and calls to the SBI firmware below us (OpenSBI).
//! Only built for riscv64.
//!
//! Hypervisor instructions are emitted with `.insn` (the `riscv64gc` target does not
//! enable the H extension in the assembler): HFENCE.GVMA is `funct7 = 0x31`,
//! HFENCE.VVMA `0x11`, HLV.BU `0x30` with `rs2 = 1`, HSV.B `0x31`... (Privileged
//! Architecture 20211203, section 8.3 and table 8.1 of the opcode map).

use core::arch::{asm, global_asm};

use crate::csr::num;
use crate::vcpu::GuestRegs;

/// Reads CSR `$csr` (a constant: a [`crate::csr::num`] name).
macro_rules! csr_read {
    ($csr:expr) => {{
        let value: u64;
        // SAFETY: reading a CSR has no memory effects; the caller names a CSR that
        // exists in HS-mode.
        unsafe { core::arch::asm!("csrr {0}, {1}", out(reg) value, const $csr, options(nomem, nostack)) };
        value
    }};
}

/// Writes `$value` to CSR `$csr` (a constant, as for `csr_read!`).
macro_rules! csr_write {
    ($csr:expr, $value:expr) => {{
        let value: u64 = $value;
        // SAFETY: the caller names a CSR that exists in HS-mode and a value whose
        // effect it has considered (no CSR write here changes memory mappings of the
        // hypervisor itself).
        unsafe { core::arch::asm!("csrw {1}, {0}", in(reg) value, const $csr, options(nostack)) };
    }};
}

/// Sets bits of CSR `$csr`.
macro_rules! csr_set {
    ($csr:expr, $bits:expr) => {{
        let bits: u64 = $bits;
        // SAFETY: as `csr_write!`.
        unsafe { core::arch::asm!("csrs {1}, {0}", in(reg) bits, const $csr, options(nostack)) };
    }};
}

/// Clears bits of CSR `$csr`.
macro_rules! csr_clear {
    ($csr:expr, $bits:expr) => {{
        let bits: u64 = $bits;
        // SAFETY: as `csr_write!`.
        unsafe { core::arch::asm!("csrc {1}, {0}", in(reg) bits, const $csr, options(nostack)) };
    }};
}

pub(crate) use {csr_clear, csr_read, csr_set, csr_write};

use crate::vcpu::{
    OFF_FCSR, OFF_FP, OFF_FP_LIVE, OFF_HOST, OFF_HOST_FCSR, OFF_HOST_FS, OFF_HOST_STVEC,
    OFF_HSTATUS, OFF_HTINST, OFF_HTVAL, OFF_SCAUSE, OFF_SEPC, OFF_SSTATUS, OFF_STVAL,
};

// The world switch. `hal_rv64_run_guest(regs)` saves the host's callee-saved
// registers (and sp, gp, tp) in `regs`, loads the guest's sstatus (SPP = guest
// privilege), hstatus (SPV = 1) and sepc, points stvec at the exit path and sscratch
// at `regs`, loads the guest's GPRs and `sret`s into VS-mode. Every trap from the
// guest lands in `hal_rv64_guest_exit`, which stores the guest's GPRs and trap CSRs
// in `regs`, restores stvec and the host registers, and returns from
// `hal_rv64_run_guest`. sstatus.SIE stays 0 in HS-mode, so nothing else can run
// between the two halves.
global_asm!(
    r#"
.section .text.hal_rv64_guest, "ax"
// Module-level assembly does not see the target's FP features: name them.
.option push
.option arch, +d
.balign 4
.global hal_rv64_run_guest
hal_rv64_run_guest:
    // Host ra, sp, gp, tp, s0..s11.
    sd ra, {host}+0*8(a0)
    sd sp, {host}+1*8(a0)
    sd gp, {host}+2*8(a0)
    sd tp, {host}+3*8(a0)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    sd s\n, {host}+(4+\n)*8(a0)
    .endr
    // Host fs0..fs11 and fcsr (callee-saved in the lp64d ABI) are kept in `regs`;
    // the guest's FP registers are loaded when it has FP state (fp_live), before
    // sstatus is written so the guest starts with FS = Clean and a later Dirty
    // means it changed them.
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    fsd fs\n, {host_fs}+\n*8(a0)
    .endr
    frcsr t0
    sd t0, {host_fcsr}(a0)
    ld t0, {fp_live}(a0)
    beqz t0, 2f
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    fld f\n, {fp}+\n*8(a0)
    .endr
    ld t0, {fcsr}(a0)
    fscsr t0
2:
    ld t0, {sstatus}(a0)
    csrw sstatus, t0
    ld t0, {hstatus}(a0)
    csrw {csr_hstatus}, t0
    ld t0, {sepc}(a0)
    csrw sepc, t0
    la t0, hal_rv64_guest_exit
    csrrw t0, stvec, t0
    sd t0, {host_stvec}(a0)
    csrw sscratch, a0
    // The guest's x1..x31, a0 (x10, the base register) last.
    .irp n, 1,2,3,4,5,6,7,8,9,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    ld x\n, \n*8(a0)
    .endr
    ld x10, 10*8(a0)
    sret

.balign 4
.global hal_rv64_guest_exit
hal_rv64_guest_exit:
    // a0 <-> sscratch: the guest's a0 is stored from sscratch after the others.
    csrrw a0, sscratch, a0
    .irp n, 1,2,3,4,5,6,7,8,9,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    sd x\n, \n*8(a0)
    .endr
    csrr t0, sscratch
    sd t0, 10*8(a0)
    csrw sscratch, zero
    csrr t0, sepc
    sd t0, {sepc}(a0)
    csrr t0, sstatus
    sd t0, {sstatus}(a0)
    // The guest changed its FP registers (FS = Dirty): keep them.
    srli t1, t0, 13
    andi t1, t1, 3
    li t2, 3
    bne t1, t2, 3f
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    fsd f\n, {fp}+\n*8(a0)
    .endr
    frcsr t1
    sd t1, {fcsr}(a0)
    li t1, 1
    sd t1, {fp_live}(a0)
3:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    fld fs\n, {host_fs}+\n*8(a0)
    .endr
    ld t1, {host_fcsr}(a0)
    fscsr t1
    csrr t0, {csr_hstatus}
    sd t0, {hstatus}(a0)
    csrr t0, scause
    sd t0, {scause}(a0)
    csrr t0, stval
    sd t0, {stval}(a0)
    csrr t0, {csr_htval}
    sd t0, {htval}(a0)
    csrr t0, {csr_htinst}
    sd t0, {htinst}(a0)
    ld t0, {host_stvec}(a0)
    csrw stvec, t0
    ld ra, {host}+0*8(a0)
    ld sp, {host}+1*8(a0)
    ld gp, {host}+2*8(a0)
    ld tp, {host}+3*8(a0)
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11
    ld s\n, {host}+(4+\n)*8(a0)
    .endr
    ret

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
// a0 = guest address -> a0 = HLV.BU
fallible hal_rv64_hlv_bu, .insn r 0x73, 4, 0x30, a0, a0, x1
// a0 = guest address, a1 = byte -> HSV.B
fallible hal_rv64_hsv_b, .insn r 0x73, 4, 0x31, x0, a0, a1
// -> a0 = stimecmp if the CSR exists for HS-mode (Sstc and menvcfg.STCE)
fallible hal_rv64_probe_stimecmp, csrr a0, {csr_stimecmp}
.option pop
"#,
    host = const OFF_HOST,
    sstatus = const OFF_SSTATUS,
    hstatus = const OFF_HSTATUS,
    sepc = const OFF_SEPC,
    scause = const OFF_SCAUSE,
    stval = const OFF_STVAL,
    htval = const OFF_HTVAL,
    htinst = const OFF_HTINST,
    host_stvec = const OFF_HOST_STVEC,
    fp_live = const OFF_FP_LIVE,
    fcsr = const OFF_FCSR,
    fp = const OFF_FP,
    host_fcsr = const OFF_HOST_FCSR,
    host_fs = const OFF_HOST_FS,
    csr_hstatus = const num::HSTATUS,
    csr_htval = const num::HTVAL,
    csr_htinst = const num::HTINST,
    csr_stimecmp = const num::STIMECMP,
);

unsafe extern "C" {
    fn hal_rv64_run_guest(regs: *mut GuestRegs);
    fn hal_rv64_hlvx_hu(gva: u64) -> Fallible;
    fn hal_rv64_hlv_bu(addr: u64) -> Fallible;
    fn hal_rv64_hsv_b(addr: u64, byte: u64) -> Fallible;
    fn hal_rv64_probe_stimecmp() -> Fallible;
}

/// a0/a1 of the fixup routines: value and success flag.
#[repr(C)]
struct Fallible {
    value: u64,
    ok: u64,
}

/// Enters the guest described by `regs` and returns at its next trap, with the trap
/// CSRs stored in `regs`.
///
/// # Safety
///
/// `hgatp` holds a valid G-stage root whose mappings give the guest only memory the
/// hypervisor does not use for itself; `regs.hstatus` has SPV set and
/// `regs.sstatus` SIE clear; no other hart runs a guest with `regs`.
pub(crate) unsafe fn run_guest(regs: &mut GuestRegs) {
    // SAFETY: per the caller, the guest can only reach its own memory; the routine
    // saves and restores every register the calling convention asks it to keep.
    unsafe { hal_rv64_run_guest(regs) }
}

/// HLVX.HU at guest-virtual `gva` (with the guest's privilege from hstatus.SPVP).
pub(crate) fn hlvx_hu(gva: u64) -> Option<u16> {
    // SAFETY: HLVX only reads guest memory through the guest's translation; a fault
    // is caught by the routine's fixup.
    let r = unsafe { hal_rv64_hlvx_hu(gva) };
    (r.ok == 1).then_some(r.value as u16)
}

/// HLV.BU at guest `addr` (guest-virtual, translated by vsatp then hgatp).
pub(crate) fn hlv_bu(addr: u64) -> Option<u8> {
    // SAFETY: as `hlvx_hu`.
    let r = unsafe { hal_rv64_hlv_bu(addr) };
    (r.ok == 1).then_some(r.value as u8)
}

/// HSV.B at guest `addr`.
pub(crate) fn hsv_b(addr: u64, byte: u8) -> bool {
    // SAFETY: HSV writes guest memory through the guest's translation with the
    // guest's permissions: it cannot reach hypervisor memory. Faults are caught.
    unsafe { hal_rv64_hsv_b(addr, u64::from(byte)) }.ok == 1
}

/// Whether HS-mode can use `stimecmp`/`vstimecmp` (Sstc enabled by the firmware).
pub(crate) fn has_sstc() -> bool {
    // SAFETY: a CSR read whose fault is caught.
    unsafe { hal_rv64_probe_stimecmp() }.ok == 1
}

/// HFENCE.GVMA for one guest-physical page of `vmid` (rs1 = GPA >> 2).
pub(crate) fn hfence_gvma(gpa: u64, vmid: u64) {
    // SAFETY: a TLB fence has no memory effects beyond ordering.
    unsafe {
        asm!(".insn r 0x73, 0, 0x31, x0, {0}, {1}", in(reg) gpa >> 2, in(reg) vmid, options(nostack))
    };
}

/// HFENCE.GVMA for every guest-physical address of `vmid`.
pub(crate) fn hfence_gvma_vmid(vmid: u64) {
    // SAFETY: as `hfence_gvma`.
    unsafe { asm!(".insn r 0x73, 0, 0x31, x0, x0, {0}", in(reg) vmid, options(nostack)) };
}

/// HFENCE.GVMA for everything.
pub(crate) fn hfence_gvma_all() {
    // SAFETY: as `hfence_gvma`.
    unsafe { asm!(".insn r 0x73, 0, 0x31, x0, x0, x0", options(nostack)) };
}

/// HFENCE.VVMA for every VS-stage translation of the VMID in hgatp.
pub(crate) fn hfence_vvma_all() {
    // SAFETY: as `hfence_gvma`.
    unsafe { asm!(".insn r 0x73, 0, 0x11, x0, x0, x0", options(nostack)) };
}

/// An SBI call to the firmware: `(error, value)`.
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
