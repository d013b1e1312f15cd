//! Arm VMSAv8-64 stage-2 translation with the 4 KiB granule.
//!
//! Arm ARM (DDI 0487K.a): D8.3 "Translation table descriptor formats" (D8.3.1 table
//! descriptors, D8.3.2 block and page descriptors), D8.4.2 "Stage 2 data access
//! permissions" (S2AP), D8.6.5 "Stage 2 memory type and Cacheability attributes when
//! FEAT_S2FWB is disabled" (MemAttr), the rules for concatenated translation tables at
//! the initial stage 2 lookup level (D8.2), and the register descriptions of VTCR_EL2
//! and VTTBR_EL2.

use core::fmt;

use super::{DescKind, FlagBits, NestedFormat, RootRegister, encode_flags, fields};
use crate::{HostPhysAddr, MappingFlags, low_u8, usize_of};

const VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3) when set, block when clear.
const TABLE_OR_PAGE: u64 = 1 << 1;
const MEMATTR_SHIFT: u64 = 2;
const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
/// S2AP[0]: read allowed. S2AP[1]: write allowed.
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
const SH_SHIFT: u64 = 8;
const SH_INNER: u64 = 0b11 << SH_SHIFT;
const AF: u64 = 1 << 10;
/// XN[1] (bit 54): execute never at EL1 and EL0 (with XN[0] = bit 53 clear).
const XN: u64 = 0b10 << 53;
const XN_MASK: u64 = 0b11 << 53;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// S2AP: the read and write permissions.
const S2AP: [FlagBits; 2] = [(MappingFlags::READ, S2AP_R), (MappingFlags::WRITE, S2AP_W)];

/// Whether S2AP >> 6 is READ/WRITE's bit pattern.
const S2AP_SAME_ORDER: bool = MappingFlags::READ.bits() as u64 == S2AP_R >> 6
    && MappingFlags::WRITE.bits() as u64 == S2AP_W >> 6;

/// The memory-type flags of each MemAttr value: 0b00xx Device, 0b0101 Normal
/// Non-cacheable, anything else cacheable Normal memory.
const MEMATTR_FLAGS: [MappingFlags; 16] = {
    let mut t = [MappingFlags::empty(); 16];
    t[0b0000] = MappingFlags::DEVICE;
    t[0b0001] = MappingFlags::DEVICE;
    t[0b0010] = MappingFlags::DEVICE;
    t[0b0011] = MappingFlags::DEVICE;
    t[usize_of(MEMATTR_NORMAL_NC)] = MappingFlags::UNCACHED;
    t
};

/// MemAttr for Normal, Outer and Inner Write-Back Cacheable.
const MEMATTR_NORMAL_WB: u64 = 0b1111;
/// MemAttr for Normal, Outer and Inner Non-cacheable.
const MEMATTR_NORMAL_NC: u64 = 0b0101;
/// MemAttr for Device-nGnRE.
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;

/// Arm stage-2 tables for an `IPA_BITS`-bit intermediate physical address space
/// (32 to 48), 4 KiB granule, 48-bit output addresses.
///
/// Up to 42 bits the walk starts at level 1 with concatenated root tables (2 for a
/// 40-bit IPA, aligned to their total size); from 43 bits it starts at level 0 with a
/// 4-level walk. Leaves: AF = 1, SH = Inner Shareable, S2AP from READ/WRITE, XN =
/// 0b10 unless EXECUTE, MemAttr 0b1111 (Normal WB), 0b0101 (`UNCACHED`, Normal NC)
/// or 0b0001 (`DEVICE`, Device-nGnRE).
#[derive(Clone, Copy, Debug, Default)]
pub struct ArmStage2<const IPA_BITS: u32>;

/// 40-bit IPA: 3-level walk from level 1 with 2 concatenated root tables.
pub type ArmStage2Ipa40 = ArmStage2<40>;
/// 48-bit IPA: 4-level walk from level 0.
pub type ArmStage2Ipa48 = ArmStage2<48>;

/// The VTCR_EL2 fields that go with a stage-2 format (Arm ARM, register VTCR_EL2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vtcr {
    /// T0SZ, bits 5:0: the IPA size is 64 - T0SZ bits.
    pub t0sz: u8,
    /// SL0, bits 7:6: starting level with TG0 = 4 KiB (0b01 = level 1, 0b10 = level 0).
    pub sl0: u8,
    /// IRGN0, bits 9:8: inner cacheability of table walks (0b01 = WB WA).
    pub irgn0: u8,
    /// ORGN0, bits 11:10: outer cacheability of table walks (0b01 = WB WA).
    pub orgn0: u8,
    /// SH0, bits 13:12: shareability of table walks (0b11 = Inner Shareable).
    pub sh0: u8,
    /// TG0, bits 15:14: granule (0b00 = 4 KiB).
    pub tg0: u8,
    /// PS, bits 18:16: physical address size of the output.
    pub ps: u8,
    /// VS, bit 19: 16-bit VMID.
    pub vs: bool,
}

impl Vtcr {
    /// RES1 bit 31 of VTCR_EL2.
    const RES1: u64 = 1 << 31;

    /// The register value.
    pub const fn bits(self) -> u64 {
        (self.t0sz as u64 & 0x3f)
            | ((self.sl0 as u64 & 3) << 6)
            | ((self.irgn0 as u64 & 3) << 8)
            | ((self.orgn0 as u64 & 3) << 10)
            | ((self.sh0 as u64 & 3) << 12)
            | ((self.tg0 as u64 & 3) << 14)
            | ((self.ps as u64 & 7) << 16)
            | ((self.vs as u64) << 19)
            | Self::RES1
    }
}

impl<const IPA_BITS: u32> ArmStage2<IPA_BITS> {
    const SUPPORTED: () = assert!(
        IPA_BITS >= 32 && IPA_BITS <= 48,
        "Arm stage-2 IPA size must be 32 to 48 bits"
    );

    /// VTCR_EL2 for this format. `pa_range` is ID_AA64MMFR0_EL1.PARange (the PS
    /// encoding: 0b000 = 32 bits ... 0b101 = 48 bits, 0b110 = 52 bits); PS is capped at
    /// 48 bits because these descriptors hold 48-bit output addresses. The IPA size
    /// must not exceed the PA size the CPU reports. `vmid16` sets VS (16-bit VMIDs,
    /// when ID_AA64MMFR1_EL1.VMIDBits says so).
    pub const fn vtcr(pa_range: u8, vmid16: bool) -> Vtcr {
        let () = Self::SUPPORTED;
        Vtcr {
            t0sz: low_u8((64 - IPA_BITS) as u64),
            sl0: if <Self as NestedFormat>::LEVELS == 4 {
                0b10
            } else {
                0b01
            },
            irgn0: 0b01,
            orgn0: 0b01,
            sh0: 0b11,
            tg0: 0b00,
            ps: if pa_range > 0b101 { 0b101 } else { pa_range },
            vs: vmid16,
        }
    }

    /// VTTBR_EL2: BADDR (the root, aligned to the size of the concatenated root) with
    /// the VMID in bits 63:48.
    pub const fn vttbr(root: HostPhysAddr, vmid: u16) -> u64 {
        (root.as_usize() as u64 & ADDR_MASK) | ((vmid as u64) << 48)
    }
}

impl<const IPA_BITS: u32> NestedFormat for ArmStage2<IPA_BITS> {
    const NAME: &'static str = match IPA_BITS {
        40 => "Arm stage-2 (40-bit IPA)",
        48 => "Arm stage-2 (48-bit IPA)",
        _ => "Arm stage-2",
    };
    const LEVELS: usize = if IPA_BITS <= 42 { 3 } else { 4 };
    const GPA_BITS: u32 = IPA_BITS;
    const HPA_BITS: u32 = 48;

    /// VTTBR_EL2 with the VMID, and VTCR_EL2 for a CPU whose PA range is 48 bits or
    /// more (PS = 0b101) with 8-bit VMIDs, as the aarch64 HAL programs it on QEMU's
    /// `-cpu max`.
    fn root_registers(root: HostPhysAddr, vmid: u16) -> [Option<RootRegister>; 2] {
        let vttbr = RootRegister {
            name: "VTTBR_EL2",
            value: Self::vttbr(root, vmid),
        };
        let vtcr = RootRegister {
            name: "VTCR_EL2",
            value: Self::vtcr(0b101, false).bits(),
        };
        [Some(vttbr), Some(vtcr)]
    }

    fn check_flags(_flags: MappingFlags) -> Result<(), &'static str> {
        let () = Self::SUPPORTED;
        // S2AP encodes every read/write combination and XN is independent.
        Ok(())
    }

    #[inline]
    fn table(next: HostPhysAddr) -> u64 {
        (next.as_usize() as u64 & ADDR_MASK) | TABLE_OR_PAGE | VALID
    }

    #[inline]
    fn leaf_attrs(flags: MappingFlags, level: usize) -> u64 {
        let mut raw = VALID | AF | SH_INNER;
        if level == 0 {
            raw |= TABLE_OR_PAGE;
        }
        raw |= encode_flags(flags, &S2AP);
        if !flags.contains(MappingFlags::EXECUTE) {
            raw |= XN;
        }
        let attr = if flags.contains(MappingFlags::DEVICE) {
            MEMATTR_DEVICE_NGNRE
        } else if flags.contains(MappingFlags::UNCACHED) {
            MEMATTR_NORMAL_NC
        } else {
            MEMATTR_NORMAL_WB
        };
        raw | (attr << MEMATTR_SHIFT)
    }

    #[inline]
    fn addr_bits(hpa: HostPhysAddr) -> u64 {
        hpa.as_usize() as u64 & ADDR_MASK
    }

    #[inline]
    fn kind(raw: u64, level: usize) -> DescKind {
        if raw & VALID == 0 {
            DescKind::Invalid
        } else if level == 0 {
            if raw & TABLE_OR_PAGE != 0 {
                DescKind::Leaf
            } else {
                DescKind::Malformed("block descriptor at level 3 (reserved encoding)")
            }
        } else if raw & TABLE_OR_PAGE != 0 {
            DescKind::Table
        } else if level <= 2 {
            DescKind::Leaf
        } else {
            DescKind::Malformed("block descriptor at level 0 (needs 52-bit FEAT_LPA2)")
        }
    }

    #[inline]
    fn output_addr(raw: u64, _level: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize((raw & ADDR_MASK) as usize)
    }

    #[inline]
    fn leaf_flags(raw: u64) -> MappingFlags {
        // S2AP[1:0] (bits 7:6) are WRITE/READ in the order of their flag bits
        // (asserted), the memory type picks DEVICE or UNCACHED by table.
        const { assert!(S2AP_SAME_ORDER) };
        let mut flags = MappingFlags::from_bits_retain(((raw >> 6) & 0b11) as u32);
        if raw & XN_MASK == 0 {
            flags |= MappingFlags::EXECUTE;
        }
        flags.union(MEMATTR_FLAGS[((raw & MEMATTR_MASK) >> MEMATTR_SHIFT) as usize])
    }

    fn level_name(level: usize) -> &'static str {
        ["L3", "L2", "L1", "L0"].get(level).copied().unwrap_or("?")
    }

    fn describe(raw: u64, level: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if Self::kind(raw, level) == DescKind::Table {
            return f.write_str("table");
        }
        let s2ap = (raw >> 6) & 3;
        let ap = ["none", "RO", "WO", "RW"][s2ap as usize];
        write!(
            f,
            "{} S2AP={s2ap:#b}({ap}) ",
            if level == 0 { "page" } else { "block" }
        )?;
        fields(
            f,
            &[
                ("MemAttr", (raw & MEMATTR_MASK) >> MEMATTR_SHIFT),
                ("SH", (raw >> SH_SHIFT) & 3),
                ("AF", (raw & AF) >> 10),
                ("XN", (raw & XN_MASK) >> 53),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type S2 = ArmStage2Ipa40;

    fn hpa(v: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(v)
    }

    #[test]
    fn round_trip() {
        crate::format::tests::round_trip::<ArmStage2Ipa40>();
        crate::format::tests::round_trip::<ArmStage2Ipa48>();
        crate::format::tests::round_trip::<ArmStage2<32>>();
    }

    /// D8.3.2 page descriptor at level 3: bits[1:0] = 0b11. Normal WB RW, executable:
    /// MemAttr 0b1111 << 2 = 0x3c, S2AP 0b11 << 6 = 0xc0, SH 0b11 << 8 = 0x300,
    /// AF = 0x400 -> 0x7ff.
    #[test]
    fn page_normal_rwx() {
        assert_eq!(
            S2::leaf(hpa(0x4020_0000), MappingFlags::RWX, 0),
            0x4020_07ff
        );
    }

    /// Block at level 2 (2 MiB): bits[1:0] = 0b01; device RW, not executable: MemAttr
    /// 0b0001 << 2 = 0x4, S2AP RW = 0xc0, SH = 0x300, AF = 0x400, XN[1] = bit 54.
    #[test]
    fn block_2m_device() {
        let raw = S2::leaf(hpa(0x0900_0000), MappingFlags::DEVICE_RW, 1);
        assert_eq!(raw, 0x0040_0000_0900_07c5);
        assert_eq!(S2::kind(raw, 1), DescKind::Leaf);
        assert_eq!(S2::leaf_flags(raw), MappingFlags::DEVICE_RW);
    }

    /// D8.4.2: S2AP = 0b01 is read-only; Normal non-cacheable is MemAttr 0b0101.
    #[test]
    fn block_1g_read_only_uncached() {
        let flags = MappingFlags::READ | MappingFlags::UNCACHED;
        // 0x1 | 0x14 (0b0101 << 2) | 0x40 | 0x300 | 0x400 | XN
        assert_eq!(S2::leaf(hpa(0x8000_0000), flags, 2), 0x0040_0000_8000_0755);
    }

    /// D8.3.1 table descriptor: bits[1:0] = 0b11, next-level table address in 47:12.
    /// Level-3 descriptors with bits[1:0] = 0b01 are reserved.
    #[test]
    fn table_and_reserved_encodings() {
        let raw = S2::table(hpa(0x4100_1000));
        assert_eq!(raw, 0x4100_1003);
        assert_eq!(S2::kind(raw, 2), DescKind::Table);
        assert!(matches!(S2::kind(0x4100_1001, 0), DescKind::Malformed(_)));
        assert!(matches!(
            ArmStage2Ipa48::kind(0x4100_1001, 3),
            DescKind::Malformed(_)
        ));
        assert_eq!(S2::kind(0x4100_1002, 0), DescKind::Invalid);
    }

    /// A 40-bit IPA starting at level 1 resolves bits 39:30 at the root: 1024 entries,
    /// two concatenated 4 KiB tables; a 48-bit IPA starts at level 0 with 512.
    #[test]
    fn root_geometry() {
        assert_eq!(ArmStage2Ipa40::LEVELS, 3);
        assert_eq!(ArmStage2Ipa40::ROOT_ENTRIES, 1024);
        assert_eq!(ArmStage2Ipa40::ROOT_FRAMES, 2);
        assert_eq!(ArmStage2Ipa48::LEVELS, 4);
        assert_eq!(ArmStage2Ipa48::ROOT_ENTRIES, 512);
        assert_eq!(ArmStage2Ipa48::ROOT_FRAMES, 1);
        assert_eq!(ArmStage2Ipa40::level_name(2), "L1");
    }

    /// VTCR_EL2 for a 40-bit IPA: T0SZ = 24 (0x18), SL0 = 0b01 (0x40), IRGN0 = ORGN0 =
    /// 0b01 (0x500), SH0 = 0b11 (0x3000), TG0 = 4K, PS = 0b010 (40 bits, 0x20000),
    /// RES1 bit 31.
    #[test]
    fn vtcr_values() {
        assert_eq!(ArmStage2Ipa40::vtcr(0b010, false).bits(), 0x8002_3558);
        // 48-bit IPA on a CPU with 52-bit PARange: T0SZ = 16, SL0 = 0b10, PS capped at
        // 0b101, 16-bit VMID.
        let v = ArmStage2Ipa48::vtcr(0b110, true);
        assert_eq!((v.t0sz, v.sl0, v.ps), (16, 0b10, 0b101));
        assert_eq!(v.bits(), 0x800d_3590);
    }

    #[test]
    fn vttbr_holds_vmid() {
        assert_eq!(
            ArmStage2Ipa40::vttbr(hpa(0x4008_2000), 5),
            0x0005_0000_4008_2000
        );
    }
}
