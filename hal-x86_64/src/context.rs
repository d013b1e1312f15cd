//! The guest's register state: the general registers by their `ArchVCpu` numbering
//! (RAX and RSP live in the VMCB's save area, the others in the array the world
//! switch loads and saves), and the state a guest starts in: 64-bit long mode with
//! flat segments (the VMCB save area, APM vol. 2, appendix B "Layout of VMCB").

use crate::regs::{CR4_PAE, DEFAULT_PAT, EFER_LMA, EFER_LME, EFER_SVME, GUEST_CR0};
use crate::vmcb::{VmcbSave, VmcbSegment};

/// Indices of general registers (the `ArchVCpu` numbering: RAX=0, RCX=1, RDX=2,
/// RBX=3, RSP=4, RBP=5, RSI=6, RDI=7, R8..R15=8..15).
pub(crate) const RAX: usize = 0;
pub(crate) const RCX: usize = 1;
pub(crate) const RDX: usize = 2;
pub(crate) const RBX: usize = 3;
pub(crate) const RSP: usize = 4;
pub(crate) const RSI: usize = 6;
pub(crate) const RDI: usize = 7;
pub(crate) const R8: usize = 8;
pub(crate) const R9: usize = 9;

/// Puts a guest in 64-bit long mode at CPL 0 with flat segments, paging through the
/// tables at `cr3`, interrupts off.
pub(crate) fn long_mode_start(s: &mut VmcbSave, cr3: u64) {
    s.cs = VmcbSegment::CODE64;
    for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
        *seg = VmcbSegment::DATA;
    }
    s.tr = VmcbSegment::TSS64;
    s.ldtr = VmcbSegment::LDT_EMPTY;
    s.gdtr = VmcbSegment::table(0, 0xffff);
    s.idtr = VmcbSegment::table(0, 0);
    s.cpl = 0;
    s.efer = EFER_SVME | EFER_LME | EFER_LMA;
    s.cr0 = GUEST_CR0;
    s.cr3 = cr3;
    s.cr4 = CR4_PAE;
    s.dr6 = 0xffff_0ff0;
    s.dr7 = 0x400;
    s.rflags = 0x2;
    s.g_pat = DEFAULT_PAT;
}
