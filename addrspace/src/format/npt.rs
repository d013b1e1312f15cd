//! AMD nested page tables (NPT): the x86-64 long-mode page-table format walked with
//! the host's paging rules, 4 levels, 48-bit guest-physical addresses.
//!
//! AMD64 APM vol. 2, section 5.3.3 "4-Kbyte Page Translation" and 5.4 "Page-Translation-
//! Table Entry Fields" (figures 5-18 to 5-25, long-mode entries), and 15.25.5 "Nested
//! Table Walk": the nested walk treats every guest access as a user access, so the U/S
//! bit must be set at every level.

use core::fmt;

use super::{DescKind, NestedFormat, RootRegister, fields};
use crate::{HostPhysAddr, MappingFlags, usize_of};

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
/// Bit 7 of a PDPE/PDE: page size (this entry is a 1 GiB / 2 MiB leaf).
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The memory-type flags of each PCD:PWT combination (PAT index with the reset PAT):
/// 0 WB, 1 WT, 2 UC- (`UNCACHED`), 3 UC (`DEVICE`).
const CACHE_FLAGS: [MappingFlags; 4] = [
    MappingFlags::empty(),
    MappingFlags::empty(),
    MappingFlags::UNCACHED,
    MappingFlags::DEVICE,
];

/// AMD NPT: long-mode entries, 48-bit GPA, 52-bit HPA, 2 MiB and 1 GiB leaves.
///
/// Tables: P | R/W | U/S | A. Leaves: P | U/S | A | D (accessed and dirty preset, so
/// the walker never writes back into tables the hypervisor rewrites), R/W for WRITE,
/// NX unless EXECUTE (the hypervisor must run with EFER.NXE = 1). Memory type through
/// the PAT index with the default PAT: `DEVICE` = PCD|PWT (index 3, UC), `UNCACHED` =
/// PCD (index 2, UC-). A present x86 entry is always readable, so READ is required.
#[derive(Clone, Copy, Debug, Default)]
pub struct Npt;

impl NestedFormat for Npt {
    const NAME: &'static str = "AMD NPT";
    const LEVELS: usize = 4;
    const GPA_BITS: u32 = 48;
    const HPA_BITS: u32 = 52;

    /// nCR3 (VMCB offset 0xB0) is the root's address with PWT = PCD = 0; the ASID
    /// lives in the VMCB, not here.
    fn root_registers(root: HostPhysAddr, _vmid: u16) -> [Option<RootRegister>; 2] {
        let ncr3 = RootRegister {
            name: "nCR3",
            value: root.as_usize() as u64 & ADDR_MASK,
        };
        [Some(ncr3), None]
    }

    fn check_flags(flags: MappingFlags) -> Result<(), &'static str> {
        if !flags.contains(MappingFlags::READ) {
            return Err("x86 page tables cannot express a present page without READ (APM 5.6)");
        }
        Ok(())
    }

    #[inline]
    fn table(next: HostPhysAddr) -> u64 {
        (next.as_usize() as u64 & ADDR_MASK) | P | RW | US | A
    }

    #[inline]
    fn leaf_attrs(flags: MappingFlags, level: usize) -> u64 {
        let mut raw = P | US | A | D;
        if flags.contains(MappingFlags::WRITE) {
            raw |= RW;
        }
        if !flags.contains(MappingFlags::EXECUTE) {
            raw |= NX;
        }
        if flags.contains(MappingFlags::DEVICE) {
            raw |= PCD | PWT;
        } else if flags.contains(MappingFlags::UNCACHED) {
            raw |= PCD;
        }
        if level > 0 {
            raw |= PS;
        }
        raw
    }

    #[inline]
    fn addr_bits(hpa: HostPhysAddr) -> u64 {
        hpa.as_usize() as u64 & ADDR_MASK
    }

    #[inline]
    fn kind(raw: u64, level: usize) -> DescKind {
        if raw & P == 0 {
            DescKind::Invalid
        } else if level == 0 || raw & PS != 0 {
            if level > 2 {
                DescKind::Malformed("PS set in a PML4 entry (reserved)")
            } else {
                DescKind::Leaf
            }
        } else {
            DescKind::Table
        }
    }

    #[inline]
    fn output_addr(raw: u64, level: usize) -> HostPhysAddr {
        // In 2M/1G leaves bit 12 is the PAT bit, not an address bit.
        let mask = if level > 0 && raw & PS != 0 {
            ADDR_MASK & !(1 << 12)
        } else {
            ADDR_MASK
        };
        HostPhysAddr::from_usize(usize_of(raw & mask))
    }

    #[inline]
    fn leaf_flags(raw: u64) -> MappingFlags {
        // R/W is bit 1 like WRITE (asserted); NX clear means executable; PCD/PWT pick
        // the memory type by table (index = PCD:PWT).
        const { assert!(MappingFlags::WRITE.bits() as u64 == RW) };
        let mut flags =
            MappingFlags::from_bits_retain((raw & RW) as u32 | MappingFlags::READ.bits());
        if raw & NX == 0 {
            flags |= MappingFlags::EXECUTE;
        }
        flags.union(CACHE_FLAGS[((raw >> 3) & 0b11) as usize])
    }

    fn level_name(level: usize) -> &'static str {
        ["PTE", "PDE", "PDPE", "PML4E"]
            .get(level)
            .copied()
            .unwrap_or("?")
    }

    fn describe(raw: u64, level: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fields(
            f,
            &[
                ("P", raw & P),
                ("RW", (raw & RW) >> 1),
                ("US", (raw & US) >> 2),
                ("PWT", (raw & PWT) >> 3),
                ("PCD", (raw & PCD) >> 4),
                ("A", (raw & A) >> 5),
            ],
        )?;
        if level == 0 || raw & PS != 0 {
            write!(f, " D={} NX={}", (raw & D) >> 6, raw >> 63)?;
            if level > 0 {
                f.write_str(" PS=1")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(v: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(v)
    }

    #[test]
    fn round_trip() {
        crate::format::tests::round_trip::<Npt>();
    }

    /// APM figure 5-21 (4-Kbyte PTE, long mode): P=1, R/W=1, U/S=1, A=1, D=1 -> 0x67,
    /// NX (bit 63) set for a non-executable page.
    #[test]
    fn pte_4k_rw_no_exec() {
        assert_eq!(
            Npt::leaf(hpa(0x8_0000), MappingFlags::RW, 0),
            0x8000_0000_0008_0067
        );
        // Read-only and executable: R/W clear, NX clear -> 0x65.
        let rx = MappingFlags::READ | MappingFlags::EXECUTE;
        assert_eq!(Npt::leaf(hpa(0x9000), rx, 0), 0x9065);
    }

    /// APM figure 5-24 (2-Mbyte PDE, long mode): PS (bit 7) set; device memory uses
    /// PCD|PWT (PAT index 3 = UC with the reset PAT): 0x67 | 0x18 | 0x80 = 0xff.
    #[test]
    fn pde_2m_device() {
        let raw = Npt::leaf(hpa(0xfee0_0000), MappingFlags::DEVICE_RW, 1);
        assert_eq!(raw, 0x8000_0000_fee0_00ff);
        assert_eq!(Npt::kind(raw, 1), DescKind::Leaf);
        assert_eq!(Npt::leaf_flags(raw), MappingFlags::DEVICE_RW);
    }

    /// APM 15.25.5: U/S must be set in every nested entry, tables included; a table
    /// entry is P | R/W | U/S (| A preset) = 0x27.
    #[test]
    fn tables_are_user_writable() {
        let raw = Npt::table(hpa(0x20_3000));
        assert_eq!(raw, 0x20_3027);
        assert_eq!(Npt::kind(raw, 3), DescKind::Table);
        assert_eq!(Npt::kind(raw, 1), DescKind::Table);
        assert_eq!(Npt::kind(raw & !P, 1), DescKind::Invalid);
    }

    /// In a 1-Gbyte PDPE (APM figure 5-25) bit 12 is PAT, not an address bit.
    #[test]
    fn huge_leaf_address_skips_pat_bit() {
        let raw = Npt::leaf(hpa(0x4000_0000), MappingFlags::READ, 2) | (1 << 12);
        assert_eq!(Npt::output_addr(raw, 2), hpa(0x4000_0000));
    }

    #[test]
    fn read_is_required() {
        assert!(Npt::check_flags(MappingFlags::EXECUTE).is_err());
        assert!(Npt::check_flags(MappingFlags::WRITE).is_err());
        assert!(Npt::check_flags(MappingFlags::READ).is_ok());
    }
}
