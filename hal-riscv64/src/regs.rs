//! CSR numbers and the fields of the hypervisor's registers (`hstatus`, `sstatus`,
//! `henvcfg`, `hvip`), as the RISC-V Privileged Architecture 20211203 names them
//! (chapter 4 for the S-mode CSRs, chapter 8 "Hypervisor Extension", table 2.2 for the
//! numbers), and the `csr_read!`/`csr_write!`/`csr_set!`/`csr_clear!` instructions
//! that access them (riscv64 only).

/// CSR numbers.
pub mod num {
    /// `sstatus`.
    pub const SSTATUS: u16 = 0x100;
    /// `sie`.
    pub const SIE: u16 = 0x104;
    /// `stvec`.
    pub const STVEC: u16 = 0x105;
    /// `sscratch`.
    pub const SSCRATCH: u16 = 0x140;
    /// `sip`.
    pub const SIP: u16 = 0x144;
    /// `stimecmp` (Sstc).
    pub const STIMECMP: u16 = 0x14d;
    /// `vsstatus`.
    pub const VSSTATUS: u16 = 0x200;
    /// `vsie`.
    pub const VSIE: u16 = 0x204;
    /// `vstvec`.
    pub const VSTVEC: u16 = 0x205;
    /// `vsscratch`.
    pub const VSSCRATCH: u16 = 0x240;
    /// `vsepc`.
    pub const VSEPC: u16 = 0x241;
    /// `vscause`.
    pub const VSCAUSE: u16 = 0x242;
    /// `vstval`.
    pub const VSTVAL: u16 = 0x243;
    /// `vstimecmp` (Sstc with the hypervisor extension).
    pub const VSTIMECMP: u16 = 0x24d;
    /// `vsatp`.
    pub const VSATP: u16 = 0x280;
    /// `hstatus`.
    pub const HSTATUS: u16 = 0x600;
    /// `hedeleg`.
    pub const HEDELEG: u16 = 0x602;
    /// `hideleg`.
    pub const HIDELEG: u16 = 0x603;
    /// `hie`.
    pub const HIE: u16 = 0x604;
    /// `htimedelta`.
    pub const HTIMEDELTA: u16 = 0x605;
    /// `hcounteren`.
    pub const HCOUNTEREN: u16 = 0x606;
    /// `henvcfg`.
    pub const HENVCFG: u16 = 0x60a;
    /// `htval`.
    pub const HTVAL: u16 = 0x643;
    /// `hvip`.
    pub const HVIP: u16 = 0x645;
    /// `htinst`.
    pub const HTINST: u16 = 0x64a;
    /// `hgatp`.
    pub const HGATP: u16 = 0x680;
}

/// `hstatus` fields (section 8.2.1).
pub mod hstatus {
    /// GVA (bit 6): `stval` holds a guest-virtual address after the trap.
    pub const GVA: u64 = 1 << 6;
    /// SPV (bit 7): the trap came from V=1; `sret` returns to V=1 when set.
    pub const SPV: u64 = 1 << 7;
    /// SPVP (bit 8): privilege of the guest at the trap; HLV/HSV access with it.
    pub const SPVP: u64 = 1 << 8;
    /// HU (bit 9): HLV/HSV allowed in U-mode.
    pub const HU: u64 = 1 << 9;
    /// VTVM (bit 20): trap SFENCE.VMA and `satp` accesses in VS-mode.
    pub const VTVM: u64 = 1 << 20;
    /// VTW (bit 21): WFI in VS-mode traps (virtual instruction) if it does not
    /// complete at once.
    pub const VTW: u64 = 1 << 21;
    /// VTSR (bit 22): SRET in VS-mode traps.
    pub const VTSR: u64 = 1 << 22;
    /// VSXL (bits 33:32): XLEN of VS-mode; 2 = 64 bits.
    pub const VSXL_MASK: u64 = 3 << 32;
    /// VSXL = 64.
    pub const VSXL_64: u64 = 2 << 32;

    /// What a vCPU runs with: VS-mode is 64-bit, the trap came "from V=1" so `sret`
    /// enters the guest, HLV/HLVX act with VS privilege. WFI runs in the guest (VTW
    /// clear): an idle vCPU waits on its hart without exits until an interrupt for
    /// it (its timer, an injected IPI) or for the hypervisor (a kick) is pending;
    /// see [`for_guest`].
    pub const GUEST: u64 = VSXL_64 | SPV | SPVP;

    /// `hstatus` for a vCPU: [`GUEST`], with VTW when its WFI must trap (a hypervisor
    /// that shares the hart among vCPUs wants an idle one back).
    pub const fn for_guest(trap_wfi: bool) -> u64 {
        if trap_wfi { GUEST | VTW } else { GUEST }
    }
}

/// `sstatus` fields (section 4.1.1).
pub mod sstatus {
    /// SIE (bit 1).
    pub const SIE: u64 = 1 << 1;
    /// SPIE (bit 5).
    pub const SPIE: u64 = 1 << 5;
    /// SPP (bit 8): the privilege before the trap (1 = S, or VS with V=1).
    pub const SPP: u64 = 1 << 8;
    /// FS (bits 14:13): floating-point unit state.
    pub const FS_MASK: u64 = 3 << 13;
    /// FS = Initial.
    pub const FS_INITIAL: u64 = 1 << 13;
    /// FS = Clean.
    pub const FS_CLEAN: u64 = 2 << 13;
    /// FS = Dirty.
    pub const FS_DIRTY: u64 = 3 << 13;
}

/// `henvcfg` fields (section 8.2.5, and the Sstc extension).
pub mod henvcfg {
    /// STCE (bit 63): the guest may use `vstimecmp` (and `stimecmp` as VS).
    pub const STCE: u64 = 1 << 63;
}

/// `hcounteren`: CY, TM, IR (bits 0..2): the guest may read `cycle`, `time`,
/// `instret`.
pub const HCOUNTEREN_ALL: u64 = 0b111;

/// `hvip` bits: pending VS-level interrupts the hypervisor injects (section 8.2.3).
pub mod hvip {
    use crate::exit::interrupt;
    /// VSSIP.
    pub const VSSIP: u64 = 1 << interrupt::VSSI;
    /// VSTIP.
    pub const VSTIP: u64 = 1 << interrupt::VSTI;
    /// VSEIP.
    pub const VSEIP: u64 = 1 << interrupt::VSEI;
}

/// `hgatp` fields (section 8.2.10), to read a value back. The values are built by the
/// G-stage formats of `addrspace` (`Sv39x4::hgatp`, `Sv48x4::hgatp`, with their
/// `MODE`).
pub mod hgatp {
    /// VMID field, bits 57:44.
    pub const VMID_SHIFT: u32 = 44;
    /// VMID field width in RV64.
    pub const VMID_MAX_BITS: u32 = 14;
    /// The MODE of an `hgatp` value.
    pub const fn mode(value: u64) -> u64 {
        value >> 60
    }
    /// The VMID of an `hgatp` value.
    pub const fn vmid(value: u64) -> u64 {
        (value >> VMID_SHIFT) & ((1 << VMID_MAX_BITS) - 1)
    }
}

/// Reads CSR `$csr` (a constant: a [`num`] name). riscv64 only.
#[cfg(target_arch = "riscv64")]
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
#[cfg(target_arch = "riscv64")]
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
#[cfg(target_arch = "riscv64")]
macro_rules! csr_set {
    ($csr:expr, $bits:expr) => {{
        let bits: u64 = $bits;
        // SAFETY: as `csr_write!`.
        unsafe { core::arch::asm!("csrs {1}, {0}", in(reg) bits, const $csr, options(nostack)) };
    }};
}

/// Clears bits of CSR `$csr`.
#[cfg(target_arch = "riscv64")]
macro_rules! csr_clear {
    ($csr:expr, $bits:expr) => {{
        let bits: u64 = $bits;
        // SAFETY: as `csr_write!`.
        unsafe { core::arch::asm!("csrc {1}, {0}", in(reg) bits, const $csr, options(nostack)) };
    }};
}

#[cfg(target_arch = "riscv64")]
pub(crate) use {csr_clear, csr_read, csr_set, csr_write};

#[cfg(test)]
mod tests {
    use super::*;
    use addrspace::{HostPhysAddr, Sv39x4, Sv48x4};

    /// QEMU's reset value of hstatus under OpenSBI is 0x2_0000_0000 (VSXL = 2, as the
    /// probe printed); our guest value adds SPV and SPVP, and VTW (bit 21) only for a
    /// vCPU whose WFI must trap.
    #[test]
    fn hstatus_guest_value() {
        assert_eq!(hstatus::GUEST, 0x2_0000_0180);
        assert_eq!(hstatus::GUEST & hstatus::VSXL_MASK, 0x2_0000_0000);
        assert_eq!(hstatus::for_guest(false), hstatus::GUEST);
        assert_eq!(hstatus::for_guest(true), 0x2_0020_0180);
    }

    #[test]
    fn hgatp_fields_agree_with_addrspace() {
        let root = HostPhysAddr::from_usize(0x8040_4000);
        // MODE 8 = Sv39x4, 9 = Sv48x4 (table 8.4).
        let v = Sv39x4::hgatp(root, 0x2a);
        assert_eq!(hgatp::mode(v), 8);
        assert_eq!(hgatp::vmid(v), 0x2a);
        let v = Sv48x4::hgatp(root, 0x3fff);
        assert_eq!(hgatp::mode(v), 9);
        assert_eq!(hgatp::vmid(v), 0x3fff);
    }

    #[test]
    fn fs_and_interrupt_bits() {
        assert_eq!(sstatus::FS_DIRTY, 0x6000);
        assert_eq!(hvip::VSSIP | hvip::VSTIP | hvip::VSEIP, 0x444);
    }
}
