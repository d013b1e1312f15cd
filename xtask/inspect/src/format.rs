//! [`Format`]: the nested formats `--format` names, and the guess from a config's
//! file name when it names none.

use std::fmt;
use std::path::Path;

use addrspace::{ArmStage2Ipa40, ArmStage2Ipa48, Ept, NestedFormat, Npt, Sv39x4, Sv48x4};
use vm_core::VmConfig;

/// A nested page-table format of `addrspace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Intel EPT.
    Ept,
    /// AMD NPT.
    Npt,
    /// Arm stage-2, 40-bit IPA.
    Arm40,
    /// Arm stage-2, 48-bit IPA.
    Arm48,
    /// RISC-V Sv39x4.
    Sv39,
    /// RISC-V Sv48x4.
    Sv48,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 6] = [
        Format::Ept,
        Format::Npt,
        Format::Arm40,
        Format::Arm48,
        Format::Sv39,
        Format::Sv48,
    ];

    /// The name `--format` takes.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ept => "ept",
            Self::Npt => "npt",
            Self::Arm40 => "arm40",
            Self::Arm48 => "arm48",
            Self::Sv39 => "sv39",
            Self::Sv48 => "sv48",
        }
    }

    /// The format named `s`.
    pub fn parse(s: &str) -> Option<Format> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// One past the highest guest-physical address it translates.
    pub const fn gpa_limit(self) -> u64 {
        1 << match self {
            Self::Ept => Ept::GPA_BITS,
            Self::Npt => Npt::GPA_BITS,
            Self::Arm40 => ArmStage2Ipa40::GPA_BITS,
            Self::Arm48 => ArmStage2Ipa48::GPA_BITS,
            Self::Sv39 => Sv39x4::GPA_BITS,
            Self::Sv48 => Sv48x4::GPA_BITS,
        }
    }

    /// The format for a config at `path` whose highest address is `top`: the
    /// architecture the file name names (x86 → NPT, which QEMU emulates; riscv →
    /// Sv39x4; aarch64 and Arm boards → 40-bit IPA), widened (Sv48x4, 48-bit IPA)
    /// when `top` is beyond it; with the reason, for the output.
    pub fn guess(path: &Path, top: u64) -> (Format, &'static str) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let has = |words: &[&str]| words.iter().any(|w| name.contains(w));
        let (narrow, wide, why) = if has(&["x86", "nuc"]) {
            (
                Format::Npt,
                Format::Npt,
                "an x86 config (NPT, as QEMU emulates)",
            )
        } else if has(&["riscv", "rv64"]) {
            (Format::Sv39, Format::Sv48, "a riscv64 config")
        } else if has(&[
            "aarch64", "arm", "rk3", "phytium", "e2000", "a1000", "rstiny",
        ]) {
            (Format::Arm40, Format::Arm48, "an aarch64 config")
        } else {
            (
                Format::Arm48,
                Format::Arm48,
                "the file name names no architecture we have a format for",
            )
        };
        if top <= narrow.gpa_limit() {
            (narrow, why)
        } else {
            (wide, why)
        }
    }
}

impl Format {
    /// [`Format::guess`] for `config` read from `path`.
    pub fn for_config(path: &Path, config: &VmConfig) -> (Format, &'static str) {
        let top = config
            .kernel
            .memory_regions
            .iter()
            .map(|r| (r.gpa.as_usize() as u64).saturating_add(r.size as u64))
            .max()
            .unwrap_or(0);
        Self::guess(path, top)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_follow_the_file_name_and_the_addresses() {
        let g = |p: &str, top| Format::guess(Path::new(p), top).0;
        assert_eq!(g("configs/qemu-virt-aarch64.toml", 1 << 32), Format::Arm40);
        assert_eq!(g("configs/qemu-virt-aarch64.toml", 1 << 41), Format::Arm48);
        assert_eq!(g("configs/qemu-virt-riscv64.toml", 1 << 32), Format::Sv39);
        assert_eq!(g("x/linux-riscv64-qemu.toml", 1 << 45), Format::Sv48);
        assert_eq!(g("configs/qemu-pc-x86_64.toml", 1 << 32), Format::Npt);
        assert_eq!(g("vm-arceos-aarch64-rk3568.toml", 1 << 32), Format::Arm40);
        assert_eq!(g("loongarch64.toml", 1 << 32), Format::Arm48);
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(Format::parse("vmx"), None);
    }
}
