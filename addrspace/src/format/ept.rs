//! Intel EPT (extended page tables), 4-level, 48-bit guest-physical addresses.
//!
//! Intel SDM vol. 3C, section 29.3.2 "EPT Translation Mechanism" (tables 29-1 to 29-6,
//! the format of EPT paging-structure entries) and 29.3.7 "EPT and Memory Typing";
//! the EPTP is described in section 25.6.11 "Extended-Page-Table Pointer (EPTP)".

use core::fmt;

use super::{DescKind, FlagBits, NestedFormat, RootRegister, encode_flags, fields};
use crate::{HostPhysAddr, MappingFlags};

const R: u64 = 1 << 0;
const W: u64 = 1 << 1;
const X: u64 = 1 << 2;
const MEMTYPE_SHIFT: u64 = 3;
const MEMTYPE_MASK: u64 = 0b111 << MEMTYPE_SHIFT;
const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7 of a PDPTE/PDE: this entry maps a 1 GiB / 2 MiB page.
const PAGE_SIZE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// READ, WRITE and EXECUTE are bits 0, 1 and 2 of every EPT entry.
const ACCESS: [FlagBits; 3] = [
    (MappingFlags::READ, R),
    (MappingFlags::WRITE, W),
    (MappingFlags::EXECUTE, X),
];

/// Whether READ/WRITE/EXECUTE have the bit values of R/W/X.
const ACCESS_SAME_BITS: bool = MappingFlags::READ.bits() as u64 == R
    && MappingFlags::WRITE.bits() as u64 == W
    && MappingFlags::EXECUTE.bits() as u64 == X;

/// The memory-type flags of each EPT memory type (UC = DEVICE, WC = UNCACHED).
const MEMTYPE_FLAGS: [MappingFlags; 8] = [
    MappingFlags::DEVICE,
    MappingFlags::UNCACHED,
    MappingFlags::empty(),
    MappingFlags::empty(),
    MappingFlags::empty(),
    MappingFlags::empty(),
    MappingFlags::empty(),
    MappingFlags::empty(),
];

/// EPT memory types (SDM 29.3.7.1, table 12-8 "Memory Types That Can Be Encoded").
const MT_UC: u64 = 0;
const MT_WC: u64 = 1;
const MT_WB: u64 = 6;

/// Intel EPT with 4-level walks (48-bit GPA, 52-bit HPA), 2 MiB and 1 GiB leaves.
///
/// Leaves: R/W/X from the flags; memory type WB with the guest PAT honoured for
/// normal memory, UC with "ignore PAT" for `DEVICE`, WC with "ignore PAT" for
/// `UNCACHED` (the closest x86 type to Arm's Normal Non-cacheable). Tables grant
/// R|W|X, since EPT permissions are the AND of every level. Accessed/dirty flags are
/// not enabled (bits 8/9 stay 0). Write-without-read is refused: the SDM calls it an
/// EPT misconfiguration (29.3.3.1). Execute-only pages need the CPU's execute-only
/// support (IA32_VMX_EPT_VPID_CAP bit 0).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ept;

impl Ept {
    /// The EPTP for a table rooted at `root`: write-back paging-structure memory type
    /// (bits 2:0 = 6), page-walk length 4 (bits 5:3 = 3), accessed/dirty flags off.
    pub const fn eptp(root: HostPhysAddr) -> u64 {
        (root.as_usize() as u64 & ADDR_MASK) | (3 << 3) | MT_WB
    }
}

impl NestedFormat for Ept {
    const NAME: &'static str = "x86 EPT";
    const LEVELS: usize = 4;
    const GPA_BITS: u32 = 48;
    const HPA_BITS: u32 = 52;

    fn root_registers(root: HostPhysAddr, _vmid: u16) -> [Option<RootRegister>; 2] {
        let eptp = RootRegister {
            name: "EPTP",
            value: Self::eptp(root),
        };
        [Some(eptp), None]
    }

    fn check_flags(flags: MappingFlags) -> Result<(), &'static str> {
        if flags.contains(MappingFlags::WRITE) && !flags.contains(MappingFlags::READ) {
            return Err("WRITE without READ is an EPT misconfiguration (SDM 29.3.3.1)");
        }
        Ok(())
    }

    #[inline]
    fn table(next: HostPhysAddr) -> u64 {
        (next.as_usize() as u64 & ADDR_MASK) | R | W | X
    }

    #[inline]
    fn leaf_attrs(flags: MappingFlags, level: usize) -> u64 {
        let mut raw = encode_flags(flags, &ACCESS);
        raw |= if flags.contains(MappingFlags::DEVICE) {
            (MT_UC << MEMTYPE_SHIFT) | IGNORE_PAT
        } else if flags.contains(MappingFlags::UNCACHED) {
            (MT_WC << MEMTYPE_SHIFT) | IGNORE_PAT
        } else {
            MT_WB << MEMTYPE_SHIFT
        };
        if level > 0 {
            raw |= PAGE_SIZE;
        }
        raw
    }

    #[inline]
    fn addr_bits(hpa: HostPhysAddr) -> u64 {
        hpa.as_usize() as u64 & ADDR_MASK
    }

    #[inline]
    fn kind(raw: u64, level: usize) -> DescKind {
        // R set: valid and never write-without-read. Every table and every readable
        // leaf has it, so a walk through them decodes each level with one bit test
        // (and bit 7 above level 0); the rest is decoded out of that path.
        if raw & R == 0 {
            if raw & (W | X) == 0 {
                return DescKind::Invalid;
            } else if raw & W != 0 {
                return DescKind::Malformed("write without read (EPT misconfiguration)");
            }
        }
        if level == 0 || raw & PAGE_SIZE != 0 {
            if level > 2 {
                DescKind::Malformed("bit 7 set in a PML4 entry")
            } else {
                DescKind::Leaf
            }
        } else {
            DescKind::Table
        }
    }

    #[inline]
    fn output_addr(raw: u64, _level: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize((raw & ADDR_MASK) as usize)
    }

    #[inline]
    fn leaf_flags(raw: u64) -> MappingFlags {
        // R/W/X sit in bits 0..2 like READ/WRITE/EXECUTE (asserted below), so the
        // permissions are one mask; the memory type picks DEVICE or UNCACHED.
        const { assert!(ACCESS_SAME_BITS) };
        let access = MappingFlags::from_bits_retain((raw & (R | W | X)) as u32);
        access.union(MEMTYPE_FLAGS[((raw & MEMTYPE_MASK) >> MEMTYPE_SHIFT) as usize])
    }

    fn level_name(level: usize) -> &'static str {
        ["PT", "PD", "PDPT", "PML4"]
            .get(level)
            .copied()
            .unwrap_or("?")
    }

    fn describe(raw: u64, level: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leaf = level == 0 || raw & PAGE_SIZE != 0;
        fields(
            f,
            &[("R", raw & R), ("W", (raw & W) >> 1), ("X", (raw & X) >> 2)],
        )?;
        if leaf {
            let mt = (raw & MEMTYPE_MASK) >> MEMTYPE_SHIFT;
            let name = match mt {
                0 => "UC",
                1 => "WC",
                4 => "WT",
                5 => "WP",
                6 => "WB",
                _ => "reserved",
            };
            write!(f, " MT={mt}({name}) IPAT={}", (raw & IGNORE_PAT) >> 6)?;
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
    use crate::format::DescKind;

    fn hpa(v: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(v)
    }

    #[test]
    fn round_trip() {
        crate::format::tests::round_trip::<Ept>();
    }

    /// SDM table 29-6 (EPT PTE that maps a 4-KByte page): bits 2:0 R/W/X, bits 5:3
    /// memory type, bit 6 ignore PAT, bits 51:12 the page frame.
    #[test]
    fn pte_4k_rw_write_back() {
        // R=1 W=1 X=0, MT=6 (WB) -> 6 << 3 = 0x30, address 0x1234_5000.
        assert_eq!(
            Ept::leaf(hpa(0x1234_5000), MappingFlags::RW, 0),
            0x1234_5033
        );
        // R=1 X=1, WB: 0b101 | 0x30 = 0x35.
        let rx = MappingFlags::READ | MappingFlags::EXECUTE;
        assert_eq!(Ept::leaf(hpa(0x5000), rx, 0), 0x5035);
    }

    /// SDM table 29-4 (EPT PDE that maps a 2-MByte page): bit 7 must be 1.
    /// Device memory: MT=0 (UC), ignore PAT bit 6 set -> 0x40 | 0x80 | 0b011.
    #[test]
    fn pde_2m_device_is_uc_ignore_pat() {
        let raw = Ept::leaf(hpa(0xfe00_0000), MappingFlags::DEVICE_RW, 1);
        assert_eq!(raw, 0xfe00_00c3);
        assert_eq!(Ept::kind(raw, 1), DescKind::Leaf);
        assert_eq!(Ept::leaf_flags(raw), MappingFlags::DEVICE_RW);
    }

    /// SDM table 29-2 (EPT PDPTE that maps a 1-GByte page): bit 7 = 1, MT=1 (WC) for
    /// uncached normal memory with ignore PAT: 0x08 | 0x40 | 0x80 | 0b111 = 0xcf.
    #[test]
    fn pdpte_1g_uncached_is_wc() {
        let flags = MappingFlags::RWX | MappingFlags::UNCACHED;
        assert_eq!(Ept::leaf(hpa(0x1_4000_0000), flags, 2), 0x1_4000_00cf);
    }

    /// SDM table 29-1 (PML4E) and 29-3/29-5 (entries that reference a table): R/W/X
    /// all set so the walk's AND keeps the leaf's permissions, bit 7 clear.
    #[test]
    fn table_entries_grant_everything() {
        let raw = Ept::table(hpa(0x7fff_f000));
        assert_eq!(raw, 0x7fff_f007);
        assert_eq!(Ept::kind(raw, 3), DescKind::Table);
        assert_eq!(
            Ept::kind(raw | PAGE_SIZE, 3),
            DescKind::Malformed("bit 7 set in a PML4 entry")
        );
        assert_eq!(
            Ept::kind(0x1002, 0),
            DescKind::Malformed("write without read (EPT misconfiguration)")
        );
    }

    /// SDM 25.6.11: EPTP bits 2:0 memory type (6 = WB), bits 5:3 walk length - 1.
    #[test]
    fn eptp_layout() {
        assert_eq!(Ept::eptp(hpa(0x10_0000)), 0x10_001e);
    }

    #[test]
    fn write_only_refused() {
        assert!(Ept::check_flags(MappingFlags::WRITE).is_err());
        assert!(Ept::check_flags(MappingFlags::EXECUTE).is_ok());
    }

    #[test]
    fn geometry() {
        assert_eq!(Ept::ROOT_ENTRIES, 512);
        assert_eq!(Ept::ROOT_FRAMES, 1);
        assert_eq!(Ept::level_name(3), "PML4");
    }
}
