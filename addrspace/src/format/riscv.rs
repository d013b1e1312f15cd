//! RISC-V G-stage translation (hypervisor extension): Sv39x4 and Sv48x4.
//!
//! RISC-V Privileged Architecture (20211203), section 8.5.1 "Guest Physical Address
//! Translation" (the x4 modes: GPA two bits wider than the VA of Sv39/Sv48, a 16 KiB
//! root table aligned to 16 KiB, every G-stage access treated as a U-mode access so
//! leaves need U = 1), section 8.2.10 (`hgatp`), and sections 4.4.1 / 4.5.1 (the Sv39 and
//! Sv48 PTE format: V, R, W, X, U, G, A, D, RSW, PPN; R = 0 with W = 1 is reserved;
//! for non-leaf PTEs D, A and U are reserved and must be zero).

use core::fmt;

use super::{DescKind, FlagBits, NestedFormat, RootRegister, encode_flags, fields};
use crate::{HostPhysAddr, MappingFlags, low_u32, usize_of};

const V: u64 = 1 << 0;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const U: u64 = 1 << 4;
const G: u64 = 1 << 5;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;
/// RSW bit 8 (reserved for supervisor software): we record `DEVICE` here.
const SW_DEVICE: u64 = 1 << 8;
/// RSW bit 9: we record `UNCACHED` here.
const SW_UNCACHED: u64 = 1 << 9;
const PPN_SHIFT: u64 = 10;
/// PPN, bits 53:10.
const PPN_MASK: u64 = ((1 << 44) - 1) << PPN_SHIFT;

/// The flags a leaf records, and where (the RSW bits only for software).
const FLAGS: [FlagBits; 5] = [
    (MappingFlags::READ, R),
    (MappingFlags::WRITE, W),
    (MappingFlags::EXECUTE, X),
    (MappingFlags::DEVICE, SW_DEVICE),
    (MappingFlags::UNCACHED, SW_UNCACHED),
];

/// Whether R/W/X are READ/WRITE/EXECUTE shifted left by 1 and the RSW bits are
/// DEVICE/UNCACHED shifted left by 4 (what `leaf_flags` relies on).
const SHIFTED_BITS: bool = (MappingFlags::READ.bits() as u64) << 1 == R
    && (MappingFlags::WRITE.bits() as u64) << 1 == W
    && (MappingFlags::EXECUTE.bits() as u64) << 1 == X
    && (MappingFlags::DEVICE.bits() as u64) << 4 == SW_DEVICE
    && (MappingFlags::UNCACHED.bits() as u64) << 4 == SW_UNCACHED;

/// RISC-V G-stage tables with `LEVELS` levels: 3 = Sv39x4 (41-bit GPA), 4 = Sv48x4
/// (50-bit GPA). 56-bit physical addresses, 2 MiB and 1 GiB leaves.
///
/// Leaves: V | U | A (| D when writable) and R/W/X from the flags; accessed and dirty
/// are preset so a hart without hardware A/D updating (Svade) raises no fault for
/// them. Without Svpbmt the memory type comes from the platform's PMAs, so `DEVICE`
/// and `UNCACHED` are recorded in the two RSW bits (8 and 9, ignored by hardware),
/// where walk traces and `query` read them back. Non-leaf entries are V only.
/// Write-without-read is a reserved encoding and is refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct RiscvGStage<const LEVELS: usize>;

/// Sv39x4: 3 levels, 41-bit guest-physical addresses, 16 KiB root.
pub type Sv39x4 = RiscvGStage<3>;
/// Sv48x4: 4 levels, 50-bit guest-physical addresses, 16 KiB root.
pub type Sv48x4 = RiscvGStage<4>;

impl<const LEVELS: usize> RiscvGStage<LEVELS> {
    const SUPPORTED: () = assert!(LEVELS == 3 || LEVELS == 4, "Sv39x4 or Sv48x4 only");

    /// The `hgatp` MODE field value: 8 for Sv39x4, 9 for Sv48x4.
    pub const MODE: u64 = if LEVELS == 3 { 8 } else { 9 };

    /// `hgatp` for a root at `root` (16 KiB-aligned) and a VMID (up to 14 bits; the
    /// hart may implement fewer, which software discovers by writing all ones):
    /// MODE in 63:60, VMID in 57:44, PPN in 43:0.
    pub const fn hgatp(root: HostPhysAddr, vmid: u16) -> u64 {
        let () = Self::SUPPORTED;
        (Self::MODE << 60) | (((vmid as u64) & 0x3fff) << 44) | ((root.as_usize() as u64) >> 12)
    }
}

impl<const LEVELS: usize> NestedFormat for RiscvGStage<LEVELS> {
    const NAME: &'static str = if LEVELS == 3 {
        "RISC-V Sv39x4"
    } else {
        "RISC-V Sv48x4"
    };
    const LEVELS: usize = LEVELS;
    // Sv39x4 / Sv48x4: the guest's Sv39 / Sv48 widened by 2 bits.
    const GPA_BITS: u32 = if LEVELS == 3 { 41 } else { 50 };
    const HPA_BITS: u32 = 56;

    fn root_registers(root: HostPhysAddr, vmid: u16) -> [Option<RootRegister>; 2] {
        let hgatp = RootRegister {
            name: "hgatp",
            value: Self::hgatp(root, vmid),
        };
        [Some(hgatp), None]
    }

    fn check_flags(flags: MappingFlags) -> Result<(), &'static str> {
        let () = Self::SUPPORTED;
        if flags.contains(MappingFlags::WRITE) && !flags.contains(MappingFlags::READ) {
            return Err("WRITE without READ is a reserved PTE encoding (privileged spec 4.3.1)");
        }
        Ok(())
    }

    #[inline]
    fn table(next: HostPhysAddr) -> u64 {
        ((next.as_usize() as u64 >> 12) << PPN_SHIFT) | V
    }

    #[inline]
    fn leaf_attrs(flags: MappingFlags, _level: usize) -> u64 {
        // DEVICE with UNCACHED is refused before encoding; D goes with W.
        let raw = V | U | A | encode_flags(flags, &FLAGS);
        if raw & W != 0 { raw | D } else { raw }
    }

    #[inline]
    fn addr_bits(hpa: HostPhysAddr) -> u64 {
        (hpa.as_usize() as u64 >> 12) << PPN_SHIFT
    }

    #[inline]
    fn kind(raw: u64, level: usize) -> DescKind {
        if raw & V == 0 {
            DescKind::Invalid
        } else if raw & (R | W) == W {
            DescKind::Malformed("W without R (reserved)")
        } else if raw & (R | X) != 0 {
            // Any level may hold a leaf (a 512 GiB one at level 3 of Sv48x4 too, though
            // this engine never builds it).
            DescKind::Leaf
        } else if level == 0 {
            DescKind::Malformed("pointer PTE at level 0")
        } else {
            DescKind::Table
        }
    }

    #[inline]
    fn output_addr(raw: u64, _level: usize) -> HostPhysAddr {
        HostPhysAddr::from_usize(usize_of(((raw & PPN_MASK) >> PPN_SHIFT) << 12))
    }

    #[inline]
    fn leaf_flags(raw: u64) -> MappingFlags {
        // R/W/X sit one bit above READ/WRITE/EXECUTE (asserted), the RSW bits eight
        // above DEVICE/UNCACHED's... so each group is one shift and mask.
        const { assert!(SHIFTED_BITS) };
        let access = (raw >> 1) & 0b111;
        let memtype = (raw >> 4) & (0b11 << 4);
        MappingFlags::from_bits_retain(low_u32(access | memtype))
    }

    fn level_name(level: usize) -> &'static str {
        ["level 0", "level 1", "level 2", "level 3"]
            .get(level)
            .copied()
            .unwrap_or("?")
    }

    fn describe(raw: u64, _level: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fields(
            f,
            &[
                ("V", raw & V),
                ("R", (raw & R) >> 1),
                ("W", (raw & W) >> 2),
                ("X", (raw & X) >> 3),
                ("U", (raw & U) >> 4),
                ("G", (raw & G) >> 5),
                ("A", (raw & A) >> 6),
                ("D", (raw & D) >> 7),
                ("RSW", (raw >> 8) & 3),
            ],
        )
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
        crate::format::tests::round_trip::<Sv39x4>();
        crate::format::tests::round_trip::<Sv48x4>();
    }

    /// Section 4.4.1: PPN in bits 53:10 = PA >> 12 << 10. A leaf RW page at
    /// 0x8020_0000: PPN 0x80200 << 10 = 0x2008_0000; V|R|W|U|A|D = 0xd7.
    #[test]
    fn leaf_rw_has_u_a_d() {
        assert_eq!(
            Sv39x4::leaf(hpa(0x8020_0000), MappingFlags::RW, 0),
            0x2008_00d7
        );
        // Read+execute: V|R|X|U|A = 0x5b, no D.
        let rx = MappingFlags::READ | MappingFlags::EXECUTE;
        assert_eq!(Sv48x4::leaf(hpa(0x1000), rx, 1), 0x45b);
    }

    /// Section 4.3.1: a non-leaf PTE has R = W = X = 0 and, per 4.4.1, A, D and U
    /// clear: only V and the PPN.
    #[test]
    fn table_is_valid_only() {
        let raw = Sv39x4::table(hpa(0x8040_4000));
        assert_eq!(raw, 0x2010_1001);
        assert_eq!(Sv39x4::kind(raw, 2), DescKind::Table);
        assert!(matches!(Sv39x4::kind(raw, 0), DescKind::Malformed(_)));
        assert!(matches!(Sv39x4::kind(0x5, 0), DescKind::Malformed(_)));
    }

    /// Section 8.5.1: Sv39x4 translates 41-bit GPAs with a 2048-entry (16 KiB) root;
    /// Sv48x4 50-bit GPAs.
    #[test]
    fn geometry() {
        assert_eq!(Sv39x4::GPA_BITS, 41);
        assert_eq!(Sv39x4::ROOT_ENTRIES, 2048);
        assert_eq!(Sv39x4::ROOT_FRAMES, 4);
        assert_eq!(Sv48x4::GPA_BITS, 50);
        assert_eq!(Sv48x4::ROOT_FRAMES, 4);
    }

    /// hgatp: MODE = 8 (Sv39x4) in 63:60, VMID in 57:44, PPN of the root in 43:0.
    #[test]
    fn hgatp_layout() {
        assert_eq!(Sv39x4::hgatp(hpa(0x8040_0000), 3), 0x8000_3000_0008_0400);
        assert_eq!(Sv48x4::hgatp(hpa(0x8040_0000), 0) >> 60, 9);
    }

    /// DEVICE is kept in RSW so a walk shows it; hardware ignores RSW.
    #[test]
    fn device_recorded_in_rsw() {
        let raw = Sv39x4::leaf(hpa(0x1000_0000), MappingFlags::DEVICE_RW, 0);
        assert_eq!(raw & (3 << 8), 1 << 8);
        assert_eq!(Sv39x4::leaf_flags(raw), MappingFlags::DEVICE_RW);
    }
}
