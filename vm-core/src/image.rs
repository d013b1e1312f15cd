//! Linux kernel image headers: where a boot loader puts the kernel and how much RAM
//! it needs after it. arm64 here ([`Arm64Header`]); the layout is Linux's
//! `Documentation/arch/arm64/booting.rst`, "Call the kernel image":
//!
//! ```text
//! 0x00 u32 code0, u32 code1   executable code (an EFI stub starts with "MZ")
//! 0x08 u64 text_offset        image load offset from a 2 MiB-aligned base, LE
//! 0x10 u64 image_size         effective image size (bss included), LE
//! 0x18 u64 flags              bit 0 big-endian, bits 2:1 page size, bit 3
//!                             placement (0: near the start of RAM, 1: anywhere)
//! 0x20 u64 res2, res3, res4
//! 0x38 u32 magic              "ARM\x64" (0x644d5241)
//! 0x3c u32 res5               PE/COFF header offset
//! ```
//!
//! Images from before Linux 3.17 have `image_size` 0 and a `text_offset` of
//! 0x80000 of unspecified endianness: the loader assumes 0x80000 and the file's
//! own length.

use core::fmt;

use addrspace::{GuestPhysAddr, gpa_of};

/// The magic at offset 0x38 of an arm64 Image.
pub const ARM64_MAGIC: u32 = 0x644d_5241;
/// The alignment of the base an arm64 Image's `text_offset` counts from.
pub const ARM64_BASE_ALIGN: u64 = 0x20_0000;
/// The header length.
pub const ARM64_HEADER_LEN: usize = 64;
/// `text_offset` of images with `image_size` 0 (before Linux 3.17).
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;

/// Why an image cannot be booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the header.
    TooShort {
        /// Its length.
        len: usize,
    },
    /// No arm64 magic at 0x38.
    BadMagic {
        /// The word found there.
        found: u32,
    },
    /// A gzip stream (`1f 8b`): a `vmlinuz` still compressed; gunzip it first.
    Compressed,
    /// A big-endian kernel (flags bit 0), which this loader does not start.
    BigEndian,
    /// `text_offset` is not a multiple of 4 KiB below 2 MiB.
    BadLayout {
        /// text_offset.
        text_offset: u64,
        /// image_size.
        image_size: u64,
    },
    /// The image does not fit in the RAM given (from the first 2 MiB-aligned
    /// address in it).
    DoesNotFit {
        /// The bytes it needs (`image_size`, or the file's length).
        needs: u64,
        /// The first usable 2 MiB-aligned base.
        base: u64,
        /// The end of RAM.
        ram_end: u64,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => write!(
                f,
                "kernel image of {len} bytes is shorter than the {ARM64_HEADER_LEN}-byte header"
            ),
            Self::BadMagic { found } => write!(
                f,
                "no arm64 Image magic (\"ARM\\x64\") at offset 0x38: found {found:#010x}"
            ),
            Self::Compressed => f.write_str("kernel image is gzip-compressed: gunzip it first"),
            Self::BigEndian => f.write_str("kernel image is big-endian"),
            Self::BadLayout {
                text_offset,
                image_size,
            } => write!(
                f,
                "kernel header text_offset {text_offset:#x} / image_size {image_size:#x} is not \
                 a valid layout"
            ),
            Self::DoesNotFit {
                needs,
                base,
                ram_end,
            } => write!(
                f,
                "kernel needs {needs:#x} bytes from {base:#x}, RAM ends at {ram_end:#x}"
            ),
        }
    }
}

impl core::error::Error for ImageError {}

/// The kernel's page size (flags bits 2:1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// Not given.
    Unspecified,
    /// 4 KiB.
    K4,
    /// 16 KiB.
    K16,
    /// 64 KiB.
    K64,
}

/// A parsed arm64 Image header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arm64Header {
    /// Offset of the image from its 2 MiB-aligned base.
    pub text_offset: u64,
    /// The bytes the kernel occupies from where it is loaded (bss included); at
    /// least the file's length.
    pub image_size: u64,
    /// The kernel's page size.
    pub page_size: PageSize,
    /// Flags bit 3: the base may be anywhere in RAM (else as close to the start of
    /// RAM as possible).
    pub anywhere: bool,
}

/// Where a kernel goes in guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The address to copy the image to and to enter (base + text_offset).
    pub load: GuestPhysAddr,
    /// The first address after the kernel's footprint (load + image_size).
    pub end: GuestPhysAddr,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Arm64Header {
    /// Parses the header of the arm64 Image `image` (the whole file: its length
    /// bounds `image_size` from below).
    pub fn parse(image: &[u8]) -> Result<Self, ImageError> {
        if image.starts_with(&[0x1f, 0x8b]) {
            return Err(ImageError::Compressed);
        }
        if image.len() < ARM64_HEADER_LEN {
            return Err(ImageError::TooShort { len: image.len() });
        }
        let magic = u32::from_le_bytes([image[0x38], image[0x39], image[0x3a], image[0x3b]]);
        if magic != ARM64_MAGIC {
            return Err(ImageError::BadMagic { found: magic });
        }
        let (mut text_offset, mut image_size, flags) =
            (u64_at(image, 8), u64_at(image, 16), u64_at(image, 24));
        if image_size == 0 {
            // Before Linux 3.17 (booting.rst): 0x80000 and no size given.
            text_offset = LEGACY_TEXT_OFFSET;
        } else if flags & 1 != 0 {
            return Err(ImageError::BigEndian);
        }
        let bad = ImageError::BadLayout {
            text_offset,
            image_size,
        };
        if !text_offset.is_multiple_of(0x1000) || text_offset >= ARM64_BASE_ALIGN {
            return Err(bad);
        }
        image_size = image_size.max(image.len() as u64);
        Ok(Self {
            text_offset,
            image_size,
            page_size: match (flags >> 1) & 3 {
                0 => PageSize::Unspecified,
                1 => PageSize::K4,
                2 => PageSize::K16,
                _ => PageSize::K64,
            },
            anywhere: flags & (1 << 3) != 0,
        })
    }

    /// Places the kernel in RAM `[ram_start, ram_start + ram_size)`: at the first
    /// 2 MiB-aligned base in it, plus `text_offset` (as close to the start of RAM as
    /// possible, which every kernel accepts).
    pub fn place(&self, ram_start: GuestPhysAddr, ram_size: u64) -> Result<Placement, ImageError> {
        let start = ram_start.as_usize() as u64;
        let ram_end = start.saturating_add(ram_size);
        let base = start
            .checked_next_multiple_of(ARM64_BASE_ALIGN)
            .unwrap_or(u64::MAX);
        let end = base
            .checked_add(self.text_offset)
            .and_then(|l| l.checked_add(self.image_size));
        match end {
            Some(end) if end <= ram_end && usize::try_from(end).is_ok() => Ok(Placement {
                load: gpa_of(base + self.text_offset),
                end: gpa_of(end),
            }),
            _ => Err(ImageError::DoesNotFit {
                needs: self.text_offset.saturating_add(self.image_size),
                base,
                ram_end,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use addrspace::usize_of;
    use proptest::prelude::*;

    use super::*;

    /// A header like Debian bookworm's 6.1 arm64 kernel: EFI stub ("MZ" in code0),
    /// text_offset 0, image_size 0x2010000, flags 0xa (LE, 4 KiB pages, anywhere).
    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[0..4].copy_from_slice(&[0x4d, 0x5a, 0x40, 0xfa]);
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[0x38..0x3c].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn debian_like_header() {
        let h = Arm64Header::parse(&header(0, 0x201_0000, 0xa)).unwrap();
        assert_eq!(
            h,
            Arm64Header {
                text_offset: 0,
                image_size: 0x201_0000,
                page_size: PageSize::K4,
                anywhere: true,
            }
        );
        // RAM from 0x4000_0000: loaded there; from 0x4010_0000: the next 2 MiB.
        let ram = GuestPhysAddr::from_usize(0x4000_0000);
        assert_eq!(
            h.place(ram, 0x2000_0000),
            Ok(Placement {
                load: ram,
                end: GuestPhysAddr::from_usize(0x4201_0000)
            })
        );
        let p = h
            .place(GuestPhysAddr::from_usize(0x4010_0000), 0x2000_0000)
            .unwrap();
        assert_eq!(p.load, GuestPhysAddr::from_usize(0x4020_0000));
        assert_eq!(
            h.place(ram, 0x200_0000),
            Err(ImageError::DoesNotFit {
                needs: 0x201_0000,
                base: 0x4000_0000,
                ram_end: 0x4200_0000
            })
        );
    }

    #[test]
    fn text_offset_and_legacy_images() {
        let h = Arm64Header::parse(&header(0x8_0000, 0x100_0000, 2)).unwrap();
        let p = h
            .place(GuestPhysAddr::from_usize(0x4000_0000), 1 << 30)
            .unwrap();
        assert_eq!(p.load, GuestPhysAddr::from_usize(0x4008_0000));
        assert!(!h.anywhere);
        // image_size 0: text_offset 0x80000 whatever the field says, the file's size.
        let h = Arm64Header::parse(&header(0x1234_5678, 0, 1)).unwrap();
        assert_eq!((h.text_offset, h.image_size), (0x8_0000, 4096));
        // image_size below the file's length: the file's length.
        assert_eq!(
            Arm64Header::parse(&header(0, 16, 0)).unwrap().image_size,
            4096
        );
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(
            Arm64Header::parse(&[0x1f, 0x8b, 8, 0]),
            Err(ImageError::Compressed)
        );
        assert_eq!(
            Arm64Header::parse(&[0; 63]),
            Err(ImageError::TooShort { len: 63 })
        );
        let mut riscv = header(0x20_0000, 0x100_0000, 0);
        riscv[0x38..0x3c].copy_from_slice(b"RSC\x05");
        assert_eq!(
            Arm64Header::parse(&riscv),
            Err(ImageError::BadMagic { found: 0x0543_5352 })
        );
        assert_eq!(
            Arm64Header::parse(&header(0, 0x1000, 1)),
            Err(ImageError::BigEndian)
        );
        assert_eq!(
            Arm64Header::parse(&header(0x20_0000, 0x1000, 0)),
            Err(ImageError::BadLayout {
                text_offset: 0x20_0000,
                image_size: 0x1000
            })
        );
        assert!(Arm64Header::parse(&header(0x100, 0x1000, 0)).is_err());
        // Placement near the end of the address space overflows into an error.
        let h = Arm64Header::parse(&header(0x1000, 0x1000, 0)).unwrap();
        assert!(
            h.place(GuestPhysAddr::from_usize(usize::MAX - 0x1000), 0x1000)
                .is_err()
        );
    }

    proptest! {
        /// Any bytes: a header or an error, never a panic; a header always places
        /// inside the RAM it was given.
        #[test]
        fn any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128),
                     magic in any::<bool>(), start in any::<u64>(), size in any::<u64>()) {
            let mut bytes = bytes;
            if magic && bytes.len() >= 64 {
                bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
            }
            if let Ok(h) = Arm64Header::parse(&bytes) {
                let start = usize_of(start);
                if let Ok(p) = h.place(GuestPhysAddr::from_usize(start), size) {
                    prop_assert!(p.load.as_usize() >= start);
                    prop_assert_eq!((p.load.as_usize() as u64 - h.text_offset) % ARM64_BASE_ALIGN, 0);
                    prop_assert!(p.end.as_usize() as u64 <= (start as u64).saturating_add(size));
                }
            }
        }
    }
}
