//! The world switch into VS-mode and back, riscv64 only: `hal_rv64_run_guest` and
//! [`enter`], which loads what a vCPU needs on this hart before each entry (hgatp,
//! its VS CSRs when they moved, a fence of its VMID, injected interrupts, sstatus and
//! hstatus for `sret`).
//!
//! Hypervisor instructions are emitted with `.insn` (the `riscv64gc` target does not
//! enable the H extension in the assembler; Privileged Architecture 20211203, section
//! 8.3 and table 8.1 of the opcode map).

use crate::context::{GuestRegs, VsCsrs, load_vs_csrs};
use crate::context::{
    OFF_FCSR, OFF_FP, OFF_FP_LIVE, OFF_HOST, OFF_HOST_FCSR, OFF_HOST_FS, OFF_HOST_STVEC,
    OFF_HSTATUS, OFF_HTINST, OFF_HTVAL, OFF_SCAUSE, OFF_SEPC, OFF_SSTATUS, OFF_STVAL,
};
use crate::regs::{csr_read, csr_set, csr_write, num, sstatus};

// The world switch. `hal_rv64_run_guest(regs)` saves the host's callee-saved
// registers (and sp, gp, tp) in `regs`, loads the guest's sstatus (SPP = guest
// privilege), hstatus (SPV = 1) and sepc, points stvec at the exit path and sscratch
// at `regs`, loads the guest's GPRs and `sret`s into VS-mode. Every trap from the
// guest lands in `hal_rv64_guest_exit`, which stores the guest's GPRs and trap CSRs
// in `regs`, restores stvec and the host registers, and returns from
// `hal_rv64_run_guest`. sstatus.SIE stays 0 in HS-mode, so nothing else can run
// between the two halves.
core::arch::global_asm!(
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
);

unsafe extern "C" {
    fn hal_rv64_run_guest(regs: *mut GuestRegs);
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

/// What changes on the hart before an entry besides the registers.
pub(crate) struct EntryState<'a> {
    /// The vCPU's `hgatp`.
    pub(crate) hgatp: u64,
    /// Its VS CSRs, when they must be loaded (a reset, or the vCPU moved).
    pub(crate) load_vs: Option<&'a VsCsrs>,
    /// Fence this VMID's guest translations on this hart first.
    pub(crate) flush_vmid: Option<u16>,
    /// Virtual interrupts to raise in `hvip`.
    pub(crate) inject: u64,
    /// The `hstatus` to enter with (`regs::hstatus::for_guest`).
    pub(crate) hstatus: u64,
}

/// Loads the per-entry state into the hart and runs the guest until its next trap.
///
/// The caller (the vCPU's `run`) passes its own `regs` and state: `hgatp` holds its
/// VM's root (`set_nested_root` checked it), whose tables only map memory given to
/// the guest.
pub(crate) fn enter(regs: &mut GuestRegs, state: EntryState<'_>) {
    csr_write!(num::HGATP, state.hgatp);
    if let Some(vs) = state.load_vs {
        load_vs_csrs(vs);
    }
    if let Some(vmid) = state.flush_vmid {
        crate::tlb::hfence_gvma_vmid(u64::from(vmid));
        crate::tlb::hfence_vvma_all();
    }
    if state.inject != 0 {
        csr_set!(num::HVIP, state.inject);
    }
    let host = csr_read!(num::SSTATUS);
    let fs = if regs.fp_live != 0 {
        sstatus::FS_CLEAN
    } else {
        host & sstatus::FS_MASK
    };
    regs.sstatus = (host & !(sstatus::SPP | sstatus::SPIE | sstatus::SIE | sstatus::FS_MASK))
        | (regs.sstatus & sstatus::SPP)
        | fs;
    regs.hstatus = state.hstatus;
    // SAFETY: hgatp holds this VM's root (see above); hstatus has SPV, sstatus has
    // SIE clear; `regs` is borrowed mutably, so no other hart runs it.
    unsafe { run_guest(regs) };
}
