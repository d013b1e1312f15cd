//! Control register, EFER and MSR layouts the hypervisor uses (AMD64 APM vol. 2:
//! 3.1 "System-Control Registers", 3.1.7 "Extended Feature Enable Register", 15.30
//! "SVM Related MSRs"), and the values a guest starts with.

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57 (5-level paging).
pub const CR4_LA57: u64 = 1 << 12;

/// RFLAGS.VM: virtual-8086 mode.
pub const RFLAGS_VM: u64 = 1 << 17;

/// EFER.
pub const MSR_EFER: u32 = 0xc000_0080;
/// VM_CR.
pub const MSR_VM_CR: u32 = 0xc001_0114;
/// VM_HSAVE_PA.
pub const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
/// EFER.SVME.
pub const EFER_SVME: u64 = 1 << 12;
/// EFER.NXE (the nested walk honours NX only with the host's EFER.NXE set).
pub const EFER_NXE: u64 = 1 << 11;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// VM_CR.SVMDIS.
pub const VM_CR_SVMDIS: u64 = 1 << 4;

/// CR0 of the guest: PE, MP, ET, NE, WP, PG.
pub const GUEST_CR0: u64 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | CR0_PG;
/// The power-on PAT value (APM vol. 2, 7.8.2), given to the guest as G_PAT.
pub const DEFAULT_PAT: u64 = 0x0007_0406_0007_0406;
