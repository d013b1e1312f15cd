//! Multiboot 1 (specification 0.6.96, section 3): the header constants a kernel
//! image carries (a.out kludge, because QEMU's `-kernel` refuses ELF64 images) and
//! the boot information the loader hands over, in particular its memory map
//! (section 3.3, `mmap_*`).

/// Header magic.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// Header flags: bit 1 (memory information wanted) | bit 16 (the address fields of
/// the header are valid: the a.out kludge).
pub const HEADER_FLAGS: u32 = 0x0001_0002;
/// The value EAX holds when a multiboot loader starts the kernel.
pub const BOOT_MAGIC: u32 = 0x2bad_b002;

/// Boot-information flag: `mem_lower`/`mem_upper` are valid.
pub const INFO_MEM: u32 = 1 << 0;
/// Boot-information flag: `mmap_length`/`mmap_addr` are valid.
pub const INFO_MMAP: u32 = 1 << 6;

/// Why the boot information cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultibootError {
    /// EAX was not [`BOOT_MAGIC`].
    BadMagic {
        /// What EAX held.
        eax: u32,
    },
    /// The information is shorter than its fixed part.
    Truncated,
    /// The loader gave no memory map (flag bit 6 clear).
    NoMemoryMap,
}

/// The fields of the boot information we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// `flags`.
    pub flags: u32,
    /// `mem_upper` (KiB above 1 MiB), when `flags` has [`INFO_MEM`].
    pub mem_upper_kib: u32,
    /// `mmap_length` in bytes.
    pub mmap_length: u32,
    /// `mmap_addr` (physical).
    pub mmap_addr: u32,
}

impl BootInfo {
    /// Bytes of the fixed part we read (up to and including `mmap_addr`).
    pub const LEN: usize = 52;

    /// Decodes the first [`BootInfo::LEN`] bytes of the boot information, after
    /// checking the loader's magic.
    pub fn parse(eax: u32, info: &[u8]) -> Result<Self, MultibootError> {
        if eax != BOOT_MAGIC {
            return Err(MultibootError::BadMagic { eax });
        }
        let word = |off: usize| -> Result<u32, MultibootError> {
            let b = info.get(off..off + 4).ok_or(MultibootError::Truncated)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let flags = word(0)?;
        if flags & INFO_MMAP == 0 {
            return Err(MultibootError::NoMemoryMap);
        }
        Ok(Self {
            flags,
            mem_upper_kib: if flags & INFO_MEM != 0 { word(8)? } else { 0 },
            mmap_length: word(44)?,
            mmap_addr: word(48)?,
        })
    }
}

/// One entry of the memory map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Physical start.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// `type` 1: RAM available to the OS.
    pub available: bool,
}

/// Iterates the memory map in `mmap` (the `mmap_length` bytes at `mmap_addr`).
/// Each entry is `size` (u32, not counting itself), `base_addr` (u64), `length`
/// (u64), `type` (u32); a truncated last entry ends the map.
pub fn memory_map(mmap: &[u8]) -> impl Iterator<Item = MemoryRegion> + '_ {
    let mut off = 0usize;
    core::iter::from_fn(move || {
        let size_bytes = mmap.get(off..off + 4)?;
        let size = u32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]])
            as usize;
        let entry = mmap.get(off + 4..off + 4 + size.max(20))?;
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&entry[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let kind = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]);
        off += 4 + size.max(20);
        Some(MemoryRegion {
            base: u64_at(0),
            len: u64_at(8),
            available: kind == 1,
        })
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn entry(base: u64, len: u64, kind: u32) -> Vec<u8> {
        let mut e = 20u32.to_le_bytes().to_vec();
        e.extend_from_slice(&base.to_le_bytes());
        e.extend_from_slice(&len.to_le_bytes());
        e.extend_from_slice(&kind.to_le_bytes());
        e
    }

    #[test]
    fn qemu_pc_128m_map() {
        // What QEMU's multiboot loader reports for `-m 128M` (from the e820 table).
        let mut map = entry(0, 0x9fc00, 1);
        map.extend(entry(0x9fc00, 0x400, 2));
        map.extend(entry(0xf0000, 0x10000, 2));
        map.extend(entry(0x10_0000, 0x7ee_0000, 1));
        map.extend(entry(0x7fe_0000, 0x2_0000, 2));
        map.extend(entry(0xfffc_0000, 0x4_0000, 2));
        let regions: Vec<_> = memory_map(&map).collect();
        assert_eq!(regions.len(), 6);
        assert_eq!(
            regions[3],
            MemoryRegion {
                base: 0x10_0000,
                len: 0x7ee_0000,
                available: true
            }
        );
        assert!(!regions[5].available);
        // A cut entry ends the map instead of reading past it.
        assert_eq!(memory_map(&map[..map.len() - 3]).count(), 5);
    }

    #[test]
    fn boot_info_fields() {
        let mut info = [0u8; 52];
        info[0..4].copy_from_slice(&(INFO_MEM | INFO_MMAP).to_le_bytes());
        info[8..12].copy_from_slice(&0x1fb80u32.to_le_bytes());
        info[44..48].copy_from_slice(&144u32.to_le_bytes());
        info[48..52].copy_from_slice(&0x9000u32.to_le_bytes());
        let b = BootInfo::parse(BOOT_MAGIC, &info).unwrap();
        assert_eq!(
            (b.mmap_length, b.mmap_addr, b.mem_upper_kib),
            (144, 0x9000, 0x1fb80)
        );
        assert_eq!(
            BootInfo::parse(0x1234, &info),
            Err(MultibootError::BadMagic { eax: 0x1234 })
        );
        assert_eq!(
            BootInfo::parse(BOOT_MAGIC, &info[..40]),
            Err(MultibootError::Truncated)
        );
        info[0] = vcpu_api::low_u8(u64::from(INFO_MEM));
        assert_eq!(
            BootInfo::parse(BOOT_MAGIC, &info),
            Err(MultibootError::NoMemoryMap)
        );
    }

    #[test]
    fn header_checksum() {
        // magic + flags + checksum must be 0 (mod 2^32).
        let checksum = 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(HEADER_FLAGS));
        assert_eq!(
            HEADER_MAGIC
                .wrapping_add(HEADER_FLAGS)
                .wrapping_add(checksum),
            0
        );
        assert_eq!(checksum, 0xe451_4ffc);
    }
}
