//! The virtual machine control block (VMCB): its control area and state-save area,
//! laid out as AMD64 APM vol. 2 (rev. 3.42), appendix B, tables B-1 and B-2, with
//! every field offset checked at compile time; and the frames a vCPU holds for its
//! VMCB and permission maps.

use core::mem::{offset_of, size_of};

use addrspace::{FrameAllocator, HostPhysAddr, PAGE_SIZE};
use static_assertions::const_assert_eq;
use vcpu_api::{VCpuError, VCpuResult};

use crate::permission::{IOPM_BYTES, MSRPM_BYTES};

/// Bits of the first "miscellaneous" intercept vector (VMCB offset 0x00C, APM table B-1).
pub mod intercept1 {
    /// Physical maskable interrupt (INTR).
    pub const INTR: u32 = 1 << 0;
    /// Non-maskable interrupt.
    pub const NMI: u32 = 1 << 1;
    /// System management interrupt.
    pub const SMI: u32 = 1 << 2;
    /// INIT.
    pub const INIT: u32 = 1 << 3;
    /// CPUID.
    pub const CPUID: u32 = 1 << 18;
    /// PAUSE.
    pub const PAUSE: u32 = 1 << 23;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// INVLPGA.
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT accesses, filtered by the I/O permission map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR, filtered by the MSR permission map.
    pub const MSR_PROT: u32 = 1 << 28;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Bits of the second intercept vector (VMCB offset 0x010, APM table B-1).
pub mod intercept2 {
    /// VMRUN (must be set, or VMRUN fails its consistency checks, APM 15.5.1).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL.
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
}

/// `TLB_CONTROL` values (VMCB offset 0x05C, APM 15.16.1).
pub mod tlb_control {
    /// Do nothing.
    pub const DO_NOTHING: u8 = 0;
    /// Flush the entire TLB (every ASID) on VMRUN.
    pub const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID on VMRUN (needs CPUID Fn8000_000A EDX\[FlushByAsid\]).
    pub const FLUSH_ASID: u8 = 3;
}

/// The control area: VMCB offsets 0x000..0x400 (APM table B-1).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VmcbControl {
    /// 0x000: CR0..15 read intercepts (bits 15:0) and write intercepts (bits 31:16).
    pub intercept_cr: u32,
    /// 0x004: DR0..15 read and write intercepts.
    pub intercept_dr: u32,
    /// 0x008: exception intercepts, one bit per vector.
    pub intercept_exceptions: u32,
    /// 0x00C: [`intercept1`] bits.
    pub intercept1: u32,
    /// 0x010: [`intercept2`] bits.
    pub intercept2: u32,
    /// 0x014: INVLPGB/TLBSYNC and later intercepts.
    pub intercept3: u32,
    /// 0x018..0x03C: reserved.
    pub _reserved1: [u8; 0x24],
    /// 0x03C: PAUSE filter threshold.
    pub pause_filter_threshold: u16,
    /// 0x03E: PAUSE filter count.
    pub pause_filter_count: u16,
    /// 0x040: physical base address of the I/O permission map (IOPM_BASE_PA).
    pub iopm_base_pa: u64,
    /// 0x048: physical base address of the MSR permission map (MSRPM_BASE_PA).
    pub msrpm_base_pa: u64,
    /// 0x050: TSC_OFFSET.
    pub tsc_offset: u64,
    /// 0x058: guest ASID.
    pub guest_asid: u32,
    /// 0x05C: TLB_CONTROL ([`tlb_control`]).
    pub tlb_control: u8,
    /// 0x05D..0x060: reserved.
    pub _reserved2: [u8; 3],
    /// 0x060: V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, V_INTR_VECTOR.
    pub int_control: u64,
    /// 0x068: INTERRUPT_SHADOW (bit 0), GUEST_INTERRUPT_MASK (bit 1).
    pub int_state: u64,
    /// 0x070: EXITCODE.
    pub exit_code: u64,
    /// 0x078: EXITINFO1.
    pub exit_info_1: u64,
    /// 0x080: EXITINFO2.
    pub exit_info_2: u64,
    /// 0x088: EXITINTINFO.
    pub exit_int_info: u64,
    /// 0x090: NP_ENABLE (bit 0), SEV, SEV-ES, ...
    pub nested_ctl: u64,
    /// 0x098: AVIC APIC_BAR.
    pub avic_apic_bar: u64,
    /// 0x0A0: guest physical address of the GHCB.
    pub ghcb_gpa: u64,
    /// 0x0A8: EVENTINJ.
    pub event_inj: u64,
    /// 0x0B0: N_CR3, the nested page table root.
    pub n_cr3: u64,
    /// 0x0B8: LBR virtualization (bit 0), virtual VMSAVE/VMLOAD (bit 1).
    pub virt_ext: u64,
    /// 0x0C0: VMCB clean bits (bits 31:0).
    pub clean_bits: u32,
    /// 0x0C4..0x0C8: reserved.
    pub _reserved3: u32,
    /// 0x0C8: nRIP, the next sequential RIP (with NRIPS).
    pub next_rip: u64,
    /// 0x0D0: number of guest instruction bytes fetched (with DecodeAssists).
    pub insn_len: u8,
    /// 0x0D1..0x0E0: the guest instruction bytes.
    pub insn_bytes: [u8; 15],
    /// 0x0E0..0x400: AVIC pointers, VMSA pointer and reserved space.
    pub _reserved4: [u8; 0x320],
}

/// One segment register in the state-save area (selector, attributes, limit, base).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcbSegment {
    /// Selector.
    pub selector: u16,
    /// Attributes, packed: descriptor bits 47:40 in 7:0 (type, S, DPL, P) and
    /// bits 55:52 in 11:8 (AVL, L, D/B, G), APM 15.5.1.
    pub attrib: u16,
    /// Segment limit.
    pub limit: u32,
    /// Segment base.
    pub base: u64,
}

impl VmcbSegment {
    /// A flat 64-bit code segment (L = 1, P, S, DPL 0, execute/read/accessed).
    pub const CODE64: Self = Self {
        selector: 0x08,
        attrib: 0x029b,
        limit: 0xffff_ffff,
        base: 0,
    };
    /// A flat data segment (G, D/B, P, S, DPL 0, read/write/accessed).
    pub const DATA: Self = Self {
        selector: 0x10,
        attrib: 0x0c93,
        limit: 0xffff_ffff,
        base: 0,
    };
    /// A busy 64-bit TSS (type 0xB, P).
    pub const TSS64: Self = Self {
        selector: 0x18,
        attrib: 0x008b,
        limit: 0x67,
        base: 0,
    };
    /// An LDT that is present but empty (type 2, P).
    pub const LDT_EMPTY: Self = Self {
        selector: 0,
        attrib: 0x0082,
        limit: 0,
        base: 0,
    };
    /// A descriptor-table register (GDTR/IDTR use only base and limit).
    pub const fn table(base: u64, limit: u32) -> Self {
        Self {
            selector: 0,
            attrib: 0,
            limit,
            base,
        }
    }
}

/// The state-save area: VMCB offsets 0x400..0x698 (APM table B-2).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VmcbSave {
    /// 0x400: ES.
    pub es: VmcbSegment,
    /// 0x410: CS.
    pub cs: VmcbSegment,
    /// 0x420: SS.
    pub ss: VmcbSegment,
    /// 0x430: DS.
    pub ds: VmcbSegment,
    /// 0x440: FS.
    pub fs: VmcbSegment,
    /// 0x450: GS.
    pub gs: VmcbSegment,
    /// 0x460: GDTR.
    pub gdtr: VmcbSegment,
    /// 0x470: LDTR.
    pub ldtr: VmcbSegment,
    /// 0x480: IDTR.
    pub idtr: VmcbSegment,
    /// 0x490: TR.
    pub tr: VmcbSegment,
    /// 0x4A0..0x4CB: reserved.
    pub _reserved1: [u8; 0x2b],
    /// 0x4CB: CPL.
    pub cpl: u8,
    /// 0x4CC..0x4D0: reserved.
    pub _reserved2: u32,
    /// 0x4D0: EFER.
    pub efer: u64,
    /// 0x4D8..0x548: reserved.
    pub _reserved3: [u8; 0x70],
    /// 0x548: CR4.
    pub cr4: u64,
    /// 0x550: CR3.
    pub cr3: u64,
    /// 0x558: CR0.
    pub cr0: u64,
    /// 0x560: DR7.
    pub dr7: u64,
    /// 0x568: DR6.
    pub dr6: u64,
    /// 0x570: RFLAGS.
    pub rflags: u64,
    /// 0x578: RIP.
    pub rip: u64,
    /// 0x580..0x5D8: reserved.
    pub _reserved4: [u8; 0x58],
    /// 0x5D8: RSP.
    pub rsp: u64,
    /// 0x5E0: S_CET.
    pub s_cet: u64,
    /// 0x5E8: SSP.
    pub ssp: u64,
    /// 0x5F0: ISST_ADDR.
    pub isst_addr: u64,
    /// 0x5F8: RAX.
    pub rax: u64,
    /// 0x600: STAR.
    pub star: u64,
    /// 0x608: LSTAR.
    pub lstar: u64,
    /// 0x610: CSTAR.
    pub cstar: u64,
    /// 0x618: SFMASK.
    pub sfmask: u64,
    /// 0x620: KernelGsBase.
    pub kernel_gs_base: u64,
    /// 0x628: SYSENTER_CS.
    pub sysenter_cs: u64,
    /// 0x630: SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// 0x638: SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// 0x640: CR2.
    pub cr2: u64,
    /// 0x648..0x668: reserved.
    pub _reserved5: [u8; 0x20],
    /// 0x668: G_PAT, the guest's PAT (used with nested paging).
    pub g_pat: u64,
    /// 0x670: DBGCTL.
    pub dbgctl: u64,
    /// 0x678: BR_FROM.
    pub br_from: u64,
    /// 0x680: BR_TO.
    pub br_to: u64,
    /// 0x688: LASTEXCPFROM.
    pub last_excp_from: u64,
    /// 0x690: LASTEXCPTO.
    pub last_excp_to: u64,
}

/// A whole VMCB: one 4 KiB page.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug)]
pub struct Vmcb {
    /// Offsets 0x000..0x400.
    pub control: VmcbControl,
    /// Offsets 0x400..0x698.
    pub save: VmcbSave,
    /// The rest of the page.
    pub _tail: [u8; 0x1000 - 0x698],
}

impl Vmcb {
    /// An all-zero VMCB (every intercept off, every register zero).
    pub const fn zeroed() -> Self {
        // SAFETY: `Vmcb` is plain integers and arrays of integers; all-zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

// APM vol. 2, table B-1 (control area).
const_assert_eq!(size_of::<VmcbControl>(), 0x400);
const_assert_eq!(offset_of!(VmcbControl, intercept_cr), 0x000);
const_assert_eq!(offset_of!(VmcbControl, intercept_dr), 0x004);
const_assert_eq!(offset_of!(VmcbControl, intercept_exceptions), 0x008);
const_assert_eq!(offset_of!(VmcbControl, intercept1), 0x00c);
const_assert_eq!(offset_of!(VmcbControl, intercept2), 0x010);
const_assert_eq!(offset_of!(VmcbControl, intercept3), 0x014);
const_assert_eq!(offset_of!(VmcbControl, pause_filter_threshold), 0x03c);
const_assert_eq!(offset_of!(VmcbControl, pause_filter_count), 0x03e);
const_assert_eq!(offset_of!(VmcbControl, iopm_base_pa), 0x040);
const_assert_eq!(offset_of!(VmcbControl, msrpm_base_pa), 0x048);
const_assert_eq!(offset_of!(VmcbControl, tsc_offset), 0x050);
const_assert_eq!(offset_of!(VmcbControl, guest_asid), 0x058);
const_assert_eq!(offset_of!(VmcbControl, tlb_control), 0x05c);
const_assert_eq!(offset_of!(VmcbControl, int_control), 0x060);
const_assert_eq!(offset_of!(VmcbControl, int_state), 0x068);
const_assert_eq!(offset_of!(VmcbControl, exit_code), 0x070);
const_assert_eq!(offset_of!(VmcbControl, exit_info_1), 0x078);
const_assert_eq!(offset_of!(VmcbControl, exit_info_2), 0x080);
const_assert_eq!(offset_of!(VmcbControl, exit_int_info), 0x088);
const_assert_eq!(offset_of!(VmcbControl, nested_ctl), 0x090);
const_assert_eq!(offset_of!(VmcbControl, avic_apic_bar), 0x098);
const_assert_eq!(offset_of!(VmcbControl, ghcb_gpa), 0x0a0);
const_assert_eq!(offset_of!(VmcbControl, event_inj), 0x0a8);
const_assert_eq!(offset_of!(VmcbControl, n_cr3), 0x0b0);
const_assert_eq!(offset_of!(VmcbControl, virt_ext), 0x0b8);
const_assert_eq!(offset_of!(VmcbControl, clean_bits), 0x0c0);
const_assert_eq!(offset_of!(VmcbControl, next_rip), 0x0c8);
const_assert_eq!(offset_of!(VmcbControl, insn_len), 0x0d0);
const_assert_eq!(offset_of!(VmcbControl, insn_bytes), 0x0d1);

// APM vol. 2, table B-2 (state-save area), as offsets from the VMCB start.
const_assert_eq!(size_of::<VmcbSegment>(), 16);
const_assert_eq!(offset_of!(Vmcb, save), 0x400);
const_assert_eq!(0x400 + offset_of!(VmcbSave, es), 0x400);
const_assert_eq!(0x400 + offset_of!(VmcbSave, cs), 0x410);
const_assert_eq!(0x400 + offset_of!(VmcbSave, ss), 0x420);
const_assert_eq!(0x400 + offset_of!(VmcbSave, ds), 0x430);
const_assert_eq!(0x400 + offset_of!(VmcbSave, fs), 0x440);
const_assert_eq!(0x400 + offset_of!(VmcbSave, gs), 0x450);
const_assert_eq!(0x400 + offset_of!(VmcbSave, gdtr), 0x460);
const_assert_eq!(0x400 + offset_of!(VmcbSave, ldtr), 0x470);
const_assert_eq!(0x400 + offset_of!(VmcbSave, idtr), 0x480);
const_assert_eq!(0x400 + offset_of!(VmcbSave, tr), 0x490);
const_assert_eq!(0x400 + offset_of!(VmcbSave, cpl), 0x4cb);
const_assert_eq!(0x400 + offset_of!(VmcbSave, efer), 0x4d0);
const_assert_eq!(0x400 + offset_of!(VmcbSave, cr4), 0x548);
const_assert_eq!(0x400 + offset_of!(VmcbSave, cr3), 0x550);
const_assert_eq!(0x400 + offset_of!(VmcbSave, cr0), 0x558);
const_assert_eq!(0x400 + offset_of!(VmcbSave, dr7), 0x560);
const_assert_eq!(0x400 + offset_of!(VmcbSave, dr6), 0x568);
const_assert_eq!(0x400 + offset_of!(VmcbSave, rflags), 0x570);
const_assert_eq!(0x400 + offset_of!(VmcbSave, rip), 0x578);
const_assert_eq!(0x400 + offset_of!(VmcbSave, rsp), 0x5d8);
const_assert_eq!(0x400 + offset_of!(VmcbSave, s_cet), 0x5e0);
const_assert_eq!(0x400 + offset_of!(VmcbSave, rax), 0x5f8);
const_assert_eq!(0x400 + offset_of!(VmcbSave, star), 0x600);
const_assert_eq!(0x400 + offset_of!(VmcbSave, lstar), 0x608);
const_assert_eq!(0x400 + offset_of!(VmcbSave, cstar), 0x610);
const_assert_eq!(0x400 + offset_of!(VmcbSave, sfmask), 0x618);
const_assert_eq!(0x400 + offset_of!(VmcbSave, kernel_gs_base), 0x620);
const_assert_eq!(0x400 + offset_of!(VmcbSave, sysenter_cs), 0x628);
const_assert_eq!(0x400 + offset_of!(VmcbSave, sysenter_esp), 0x630);
const_assert_eq!(0x400 + offset_of!(VmcbSave, sysenter_eip), 0x638);
const_assert_eq!(0x400 + offset_of!(VmcbSave, cr2), 0x640);
const_assert_eq!(0x400 + offset_of!(VmcbSave, g_pat), 0x668);
const_assert_eq!(0x400 + offset_of!(VmcbSave, dbgctl), 0x670);
const_assert_eq!(0x400 + offset_of!(VmcbSave, last_excp_to), 0x690);
const_assert_eq!(size_of::<Vmcb>(), 0x1000);

/// A VMCB, IOPM and MSRPM held by the vCPU.
pub(crate) struct Frames<F: FrameAllocator> {
    alloc: F,
    pub(crate) vmcb: HostPhysAddr,
    pub(crate) iopm: HostPhysAddr,
    pub(crate) msrpm: HostPhysAddr,
}

impl<F: FrameAllocator> Frames<F> {
    /// Allocates the three from `alloc`, every port and MSR intercepted, the VMCB
    /// zeroed.
    pub(crate) fn new(alloc: F) -> VCpuResult<Self> {
        let oom = VCpuError::OutOfMemory {
            what: "the VMCB and permission maps",
            frames: 1 + (IOPM_BYTES + MSRPM_BYTES) / PAGE_SIZE,
        };
        let vmcb = alloc.alloc_frame().ok_or(oom)?;
        let Some(iopm) = alloc.alloc_frames(IOPM_BYTES / PAGE_SIZE, 1) else {
            // SAFETY: `vmcb` came from `alloc` just above and is not used.
            unsafe { alloc.dealloc_frames(vmcb, 1) };
            return Err(oom);
        };
        let Some(msrpm) = alloc.alloc_frames(MSRPM_BYTES / PAGE_SIZE, 1) else {
            // SAFETY: both came from `alloc` just above and are not used.
            unsafe {
                alloc.dealloc_frames(vmcb, 1);
                alloc.dealloc_frames(iopm, IOPM_BYTES / PAGE_SIZE);
            }
            return Err(oom);
        };
        let frames = Self {
            alloc,
            vmcb,
            iopm,
            msrpm,
        };
        // Intercept every port and every MSR: all bits set.
        for (pa, len) in [(iopm, IOPM_BYTES), (msrpm, MSRPM_BYTES)] {
            let va = frames.alloc.phys_to_virt(pa).as_usize() as *mut u8;
            // SAFETY: `len` bytes of frames we own, contiguous in the virtual view.
            unsafe { core::ptr::write_bytes(va, 0xff, len) };
        }
        // SAFETY: the VMCB frame is ours; all-zero is a valid `Vmcb`.
        unsafe { frames.vmcb_ptr().write(Vmcb::zeroed()) };
        Ok(frames)
    }

    /// Where the hypervisor sees the VMCB.
    pub(crate) fn vmcb_ptr(&self) -> *mut Vmcb {
        self.alloc.phys_to_virt(self.vmcb).as_usize() as *mut Vmcb
    }

    /// The I/O permission map (one intercept bit per port).
    pub(crate) fn iopm_mut(&mut self) -> &mut [u8] {
        let va = self.alloc.phys_to_virt(self.iopm).as_usize() as *mut u8;
        // SAFETY: `IOPM_BYTES` bytes of frames this value owns, contiguous in the
        // hypervisor's view (FrameAllocator contract); `&mut self` makes the borrow
        // unique. The processor reads the map only during VMRUN, which needs
        // `&mut` of the vCPU too.
        unsafe { core::slice::from_raw_parts_mut(va, IOPM_BYTES) }
    }
}

impl<F: FrameAllocator> Drop for Frames<F> {
    fn drop(&mut self) {
        // SAFETY: the three allocations came from `alloc` in `new`; the vCPU is
        // being dropped, so no VMRUN uses them any more.
        unsafe {
            self.alloc.dealloc_frames(self.vmcb, 1);
            self.alloc.dealloc_frames(self.iopm, IOPM_BYTES / PAGE_SIZE);
            self.alloc
                .dealloc_frames(self.msrpm, MSRPM_BYTES / PAGE_SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_attributes_follow_the_descriptor_layout() {
        // APM 15.5.1: attrib = descriptor bits 47:40 | (bits 55:52) << 8.
        // 64-bit code: type 0xB, S=1, DPL=0, P=1 -> 0x9B; L=1 (bit 53 -> attrib bit 9).
        assert_eq!(VmcbSegment::CODE64.attrib & 0xff, 0x9b);
        assert_eq!(VmcbSegment::CODE64.attrib >> 9 & 1, 1, "L");
        assert_eq!(
            VmcbSegment::CODE64.attrib >> 10 & 1,
            0,
            "D must be 0 with L"
        );
        // Data: type 3, S, P; D/B and G set.
        assert_eq!(VmcbSegment::DATA.attrib, 0xc93);
    }

    #[test]
    fn zeroed_vmcb_has_no_intercepts() {
        let v = Vmcb::zeroed();
        assert_eq!(v.control.intercept1 | v.control.intercept2, 0);
        assert_eq!(v.save.rip, 0);
    }
}
