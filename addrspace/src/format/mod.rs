//! Nested page-table descriptor formats: one small type per architecture that encodes
//! and decodes descriptors. The table engine ([`crate::PageTable`]) is generic over them.
//!
//! Levels are numbered from the leaf: engine level 0 holds 4 KiB pages, level 1 2 MiB
//! blocks, level 2 1 GiB blocks, and so on up to `LEVELS - 1`, the root. Each format
//! names its levels the way its manual does ([`NestedFormat::level_name`]).

use core::fmt;

use crate::{HostPhysAddr, MappingFlags};

mod arm;
mod ept;
mod npt;
mod riscv;

pub use arm::{ArmStage2, ArmStage2Ipa40, ArmStage2Ipa48, Vtcr};
pub use ept::Ept;
pub use npt::Npt;
pub use riscv::{RiscvGStage, Sv39x4, Sv48x4};

/// What a descriptor is, as the hardware walker would read it at a given level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescKind {
    /// Not valid: the walk stops with a translation fault.
    Invalid,
    /// Points to the next-level table.
    Table,
    /// Maps a page or block.
    Leaf,
    /// Valid but with a reserved encoding; the walk stops with a fault.
    Malformed(&'static str),
}

/// A register a HAL loads to point the hardware at a nested table, with its value
/// (for diagnostics: [`NestedFormat::root_registers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootRegister {
    /// The manual's name: `"EPTP"`, `"nCR3"`, `"VTTBR_EL2"`, `"hgatp"`.
    pub name: &'static str,
    /// Its value.
    pub value: u64,
}

impl fmt::Display for RootRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:#018x}", self.name, self.value)
    }
}

/// A nested (second-stage) page-table format.
///
/// Implementations are zero-sized; every method is a pure function of its arguments.
/// Addresses handed to [`NestedFormat::addr_bits`] are 4 KiB-aligned and below
/// `1 << HPA_BITS`; the engine checks this before it encodes anything.
pub trait NestedFormat: Send + Sync + 'static {
    /// Human-readable name, e.g. `"x86 EPT"`.
    const NAME: &'static str;
    /// Number of translation levels.
    const LEVELS: usize;
    /// Width of the guest-physical addresses this format translates.
    const GPA_BITS: u32;
    /// Width of the host-physical addresses its descriptors can hold.
    const HPA_BITS: u32;
    /// The highest engine level that can hold a leaf (2 = 1 GiB blocks).
    const MAX_LEAF_LEVEL: usize = 2;

    /// Entries in the root table (more than 512 for concatenated or widened roots).
    const ROOT_ENTRIES: usize = 1 << (Self::GPA_BITS as usize - (12 + 9 * (Self::LEVELS - 1)));
    /// 4 KiB frames in the root table; the root is aligned to its own size.
    const ROOT_FRAMES: usize = if Self::ROOT_ENTRIES > 512 {
        Self::ROOT_ENTRIES / 512
    } else {
        1
    };

    /// Checks the format-specific rules on `flags` (the engine has already refused
    /// flags without any of READ/WRITE/EXECUTE and DEVICE together with UNCACHED).
    /// The error names the flag and the manual's rule.
    fn check_flags(flags: MappingFlags) -> Result<(), &'static str>;

    /// A descriptor at `level` pointing to the next-level table at `next`.
    fn table(next: HostPhysAddr) -> u64;

    /// The attribute bits of a leaf at `level` with `flags` (no address).
    fn leaf_attrs(flags: MappingFlags, level: usize) -> u64;

    /// The address field holding `hpa` (4 KiB-aligned), to be or-ed with attributes.
    fn addr_bits(hpa: HostPhysAddr) -> u64;

    /// How the walker reads `raw` at `level`.
    fn kind(raw: u64, level: usize) -> DescKind;

    /// The output address of a table or leaf descriptor (the base of the block for
    /// huge leaves).
    fn output_addr(raw: u64, level: usize) -> HostPhysAddr;

    /// The flags of a leaf descriptor: `leaf_flags(leaf_attrs(f, l)) == f.nested()`.
    fn leaf_flags(raw: u64) -> MappingFlags;

    /// The manual's name for engine level `level` (`"PML4"`, `"L1"`, `"level 2"`).
    fn level_name(level: usize) -> &'static str;

    /// Writes the raw fields of a valid descriptor in the manual's terms, for walk
    /// traces: `S2AP=RW MemAttr=0b1111 SH=IS AF=1 XN=0`.
    fn describe(raw: u64, level: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// The registers a HAL loads to walk a table of this format rooted at `root`
    /// for a VM tagged `vmid` (VMID; ignored where the tag lives elsewhere), built
    /// with the format's own helpers: EPTP; nCR3; VTTBR_EL2 and VTCR_EL2; hgatp.
    /// For diagnostics: a HAL may add what only it knows (a wider VMID, the CPU's
    /// PA range).
    fn root_registers(root: HostPhysAddr, vmid: u16) -> [Option<RootRegister>; 2];

    /// A complete leaf descriptor.
    #[inline]
    fn leaf(hpa: HostPhysAddr, flags: MappingFlags, level: usize) -> u64 {
        Self::leaf_attrs(flags, level) | Self::addr_bits(hpa)
    }
}

/// One flag and the descriptor bits that encode it.
pub(crate) type FlagBits = (MappingFlags, u64);

/// The or of the bits of every flag of `table` that `flags` contains.
#[inline(always)]
pub(crate) fn encode_flags(flags: MappingFlags, table: &[FlagBits]) -> u64 {
    table
        .iter()
        .filter(|(f, _)| flags.contains(*f))
        .fold(0, |raw, (_, bits)| raw | bits)
}

/// Writes `name=value` pairs separated by spaces.
pub(crate) fn fields(f: &mut fmt::Formatter<'_>, pairs: &[(&str, u64)]) -> fmt::Result {
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{name}={value:#x}")?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flags::MappingFlags as M;

    /// The diagnostic register values are the ones the helpers build (the HALs
    /// load those): EPTP with WB and walk length 4, nCR3 the bare root, VTTBR with
    /// the VMID in 63:48 beside the VTCR the aarch64 HAL programs, hgatp with MODE.
    #[test]
    fn root_registers_are_the_helpers_values() {
        use crate::{ArmStage2Ipa40, ArmStage2Ipa48, Ept, Npt, Sv39x4, Sv48x4};
        let root = HostPhysAddr::from_usize(0x8_0000_4000);
        let one = |r: [Option<RootRegister>; 2]| (r[0].map(|r| (r.name, r.value)), r[1]);
        assert_eq!(
            one(Ept::root_registers(root, 7)),
            (Some(("EPTP", 0x8_0000_401e)), None)
        );
        assert_eq!(
            one(Npt::root_registers(root, 7)),
            (Some(("nCR3", 0x8_0000_4000)), None)
        );
        let arm = ArmStage2Ipa40::root_registers(root, 2);
        assert_eq!(arm[0].map(|r| r.value), Some((2 << 48) | 0x8_0000_4000));
        assert_eq!(
            arm[1].map(|r| (r.name, r.value)),
            Some(("VTCR_EL2", ArmStage2Ipa40::vtcr(5, false).bits()))
        );
        // T0SZ = 16 and SL0 = 0b10 for the 4-level walk.
        assert_eq!(
            ArmStage2Ipa48::root_registers(root, 2)[1].map(|r| r.value & 0xff),
            Some(0x80 | 16)
        );
        let hgatp = |r: [Option<RootRegister>; 2]| r[0].map(|r| r.value);
        assert_eq!(
            hgatp(Sv39x4::root_registers(root, 3)),
            Some((8 << 60) | (3 << 44) | 0x80_0004)
        );
        assert_eq!(
            hgatp(Sv48x4::root_registers(root, 3)),
            Some((9 << 60) | (3 << 44) | 0x80_0004)
        );
        let text = Ept::root_registers(root, 0)[0].unwrap().to_string();
        assert_eq!(text, "EPTP = 0x000000080000401e");
    }

    /// Every flag combination a format accepts round-trips through a leaf at every
    /// leaf level, and decodes as a leaf there; tables decode as tables.
    pub(crate) fn round_trip<F: NestedFormat>() {
        let hpa = HostPhysAddr::from_usize(0x4000_0000);
        for bits in 0..64u32 {
            let flags = M::from_bits_truncate(bits);
            if flags.access().is_empty()
                || flags.contains(M::DEVICE | M::UNCACHED)
                || F::check_flags(flags).is_err()
            {
                continue;
            }
            for level in 0..=F::MAX_LEAF_LEVEL {
                let raw = F::leaf(hpa, flags, level);
                assert_eq!(
                    F::kind(raw, level),
                    DescKind::Leaf,
                    "{} {flags} L{level}",
                    F::NAME
                );
                assert_eq!(F::leaf_flags(raw), flags.nested(), "{} {flags}", F::NAME);
                assert_eq!(F::output_addr(raw, level), hpa);
            }
        }
        for level in 1..F::LEVELS {
            let raw = F::table(HostPhysAddr::from_usize(0x1234_5000));
            assert_eq!(F::kind(raw, level), DescKind::Table, "{} L{level}", F::NAME);
            assert_eq!(
                F::output_addr(raw, level),
                HostPhysAddr::from_usize(0x1234_5000)
            );
        }
        assert_eq!(F::kind(0, 0), DescKind::Invalid);
        assert_eq!(F::kind(0, F::LEVELS - 1), DescKind::Invalid);
        // The widest address the format holds survives encoding.
        let top = HostPhysAddr::from_usize((1usize << F::HPA_BITS) - 0x1000);
        assert_eq!(F::output_addr(F::leaf(top, M::READ, 0), 0), top);
    }
}
