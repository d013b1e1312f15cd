//! Mapping permissions and memory attributes, and the kind of a guest access.

use core::fmt;

bitflags::bitflags! {
    /// What a guest may do with a mapping and how the memory behind it is typed.
    ///
    /// Every nested format encodes READ/WRITE/EXECUTE and the DEVICE/UNCACHED memory
    /// types; `USER` is accepted and ignored, because a nested (second-stage)
    /// translation applies to every privilege level of the guest (RISC-V G-stage and
    /// AMD NPT still set their U bit on every leaf, as their manuals require).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MappingFlags: u32 {
        /// The guest may read.
        const READ = 1 << 0;
        /// The guest may write.
        const WRITE = 1 << 1;
        /// The guest may execute.
        const EXECUTE = 1 << 2;
        /// Accessible from guest user mode (no effect on nested translations).
        const USER = 1 << 3;
        /// Device memory: uncached, strongly ordered (MMIO pass-through).
        const DEVICE = 1 << 4;
        /// Normal memory without caching.
        const UNCACHED = 1 << 5;
    }
}

impl MappingFlags {
    /// READ | WRITE.
    pub const RW: Self = Self::READ.union(Self::WRITE);
    /// READ | WRITE | EXECUTE.
    pub const RWX: Self = Self::RW.union(Self::EXECUTE);
    /// READ | WRITE | DEVICE: the usual pass-through MMIO mapping.
    pub const DEVICE_RW: Self = Self::RW.union(Self::DEVICE);
    /// The memory-type flags (DEVICE, UNCACHED); none means normal cached memory.
    pub const MEMORY_TYPE: Self = Self::DEVICE.union(Self::UNCACHED);

    /// The access permissions only (READ, WRITE, EXECUTE).
    #[inline]
    pub const fn access(self) -> Self {
        self.intersection(Self::RWX)
    }

    /// The memory type only (DEVICE, UNCACHED, or empty for normal memory).
    #[inline]
    pub const fn memory_type(self) -> Self {
        self.intersection(Self::MEMORY_TYPE)
    }

    /// Whether these flags let an access of `kind` through.
    #[inline]
    pub const fn allows(self, kind: AccessKind) -> bool {
        self.contains(kind.required())
    }

    /// The flags as a nested translation stores them: `USER` dropped.
    #[inline]
    pub const fn nested(self) -> Self {
        self.difference(Self::USER)
    }
}

impl fmt::Debug for MappingFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MappingFlags {
    /// `rwx` letters with `-` for a missing permission, then ` user`, ` device`,
    /// ` uncached` when set: `rw- device`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bit = |flag, c| if self.contains(flag) { c } else { '-' };
        write!(
            f,
            "{}{}{}",
            bit(Self::READ, 'r'),
            bit(Self::WRITE, 'w'),
            bit(Self::EXECUTE, 'x')
        )?;
        for (flag, name) in [
            (Self::USER, " user"),
            (Self::DEVICE, " device"),
            (Self::UNCACHED, " uncached"),
        ] {
            if self.contains(flag) {
                f.write_str(name)?;
            }
        }
        Ok(())
    }
}

/// The kind of a guest memory access, as reported by a nested page fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    /// A data load.
    Read,
    /// A data store.
    Write,
    /// An instruction fetch.
    Execute,
}

impl AccessKind {
    /// The permission an access of this kind needs.
    #[inline]
    pub const fn required(self) -> MappingFlags {
        match self {
            Self::Read => MappingFlags::READ,
            Self::Write => MappingFlags::WRITE,
            Self::Execute => MappingFlags::EXECUTE,
        }
    }
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Execute => "execute",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_like_ls() {
        assert_eq!(MappingFlags::RW.to_string(), "rw-");
        assert_eq!(MappingFlags::DEVICE_RW.to_string(), "rw- device");
        assert_eq!(
            (MappingFlags::RWX | MappingFlags::USER | MappingFlags::UNCACHED).to_string(),
            "rwx user uncached"
        );
    }

    #[test]
    fn allows_checks_the_needed_bit() {
        assert!(MappingFlags::READ.allows(AccessKind::Read));
        assert!(!MappingFlags::READ.allows(AccessKind::Write));
        assert!(MappingFlags::RWX.allows(AccessKind::Execute));
        assert_eq!(
            (MappingFlags::RW | MappingFlags::USER).nested(),
            MappingFlags::RW
        );
    }
}
