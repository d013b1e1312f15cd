//! The error type of every fallible operation: each variant carries what a person needs
//! to find the bad input (which address, which existing area, which flag).

use core::fmt;

use crate::{GpaRange, GuestPhysAddr, MappingFlags};

/// Why an address-space or page-table operation was refused.
///
/// On every error the space is exactly as it was before the call and no frame leaked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `what` (`"gpa"`, `"hpa"` or `"size"`) is not a multiple of `align`.
    Unaligned {
        /// Which input.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The alignment it needs.
        align: usize,
    },
    /// A range of zero bytes was requested at `gpa`.
    ZeroSize {
        /// Start of the empty range.
        gpa: GuestPhysAddr,
    },
    /// `gpa + size` does not fit in the address type.
    Overflow {
        /// Start of the range.
        gpa: GuestPhysAddr,
        /// Its size.
        size: usize,
    },
    /// The range ends beyond what the format can translate (`what` is `"gpa"`) or
    /// address (`"hpa"`).
    OutOfRange {
        /// Which input.
        what: &'static str,
        /// One past the last byte requested.
        end: usize,
        /// One past the last address the format allows.
        limit: usize,
        /// The nested format, e.g. `"Arm stage-2 (40-bit IPA)"`.
        format: &'static str,
    },
    /// The requested range overlaps an existing area.
    Overlap {
        /// What was asked for.
        requested: GpaRange,
        /// The area already there.
        existing: GpaRange,
    },
    /// The page table already translates `gpa` (a lower-level `map` over a mapping).
    AlreadyMapped {
        /// First translated address in the requested range.
        gpa: GuestPhysAddr,
    },
    /// Part of the range given to `unmap`/`protect` is not mapped, starting at `gpa`.
    NotMapped {
        /// First address of the hole.
        gpa: GuestPhysAddr,
    },
    /// No area covers `gpa` (a hole in the guest-physical space).
    NoArea {
        /// The address in the hole.
        gpa: GuestPhysAddr,
    },
    /// `gpa` lies in a lazily allocated area and its page has not been faulted in.
    NotPopulated {
        /// The address of the missing page.
        gpa: GuestPhysAddr,
    },
    /// `gpa` lies in device memory, which the copy API does not touch.
    DeviceMemory {
        /// The address in the device area.
        gpa: GuestPhysAddr,
    },
    /// `gpa` lies in a reserved area, which has no backing memory.
    Reserved {
        /// The address in the reserved area.
        gpa: GuestPhysAddr,
    },
    /// The format cannot encode these flags.
    InvalidFlags {
        /// The flags requested.
        flags: MappingFlags,
        /// Why they cannot be encoded, naming the flag and the manual's rule.
        reason: &'static str,
    },
    /// The frame allocator ran out after handing out `allocated` of the `needed`
    /// frames (all of which were given back).
    NoMemory {
        /// Frames the operation needed.
        needed: usize,
        /// Frames obtained before the allocator failed.
        allocated: usize,
    },
    /// The host heap could not provide `bytes` for the operation's bookkeeping.
    OutOfHeap {
        /// Bytes asked for.
        bytes: usize,
    },
    /// `protect` asked for another memory type than the mapping's: the memory type
    /// (normal, `DEVICE`, `UNCACHED`) is fixed when a range is mapped, and `protect`
    /// changes access rights only (flags without a memory type keep the mapping's).
    MemoryType {
        /// The first address whose mapping has another type.
        gpa: GuestPhysAddr,
        /// The flags it is mapped with.
        mapped: MappingFlags,
        /// The flags asked for.
        requested: MappingFlags,
    },
    /// A flush token was completed on another table or space than the one that
    /// issued it (or on one that reuses the root frame of a dropped one); nothing was
    /// released.
    ForeignFlush {
        /// Identity of the table that issued the token.
        token: u64,
        /// Identity of the table it was given to.
        table: u64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unaligned { what, value, align } => {
                write!(f, "{what} {value:#x} is not aligned to {align:#x}")
            }
            Self::ZeroSize { gpa } => write!(f, "zero-sized range at {gpa:#x}"),
            Self::Overflow { gpa, size } => {
                write!(f, "range at {gpa:#x} of size {size:#x} overflows")
            }
            Self::OutOfRange {
                what,
                end,
                limit,
                format,
            } => write!(
                f,
                "{what} range ends at {end:#x}, beyond the limit {limit:#x} of {format}"
            ),
            Self::Overlap {
                requested,
                existing,
            } => write!(f, "{requested} overlaps the existing area {existing}"),
            Self::AlreadyMapped { gpa } => write!(f, "{gpa:#x} is already mapped"),
            Self::NotMapped { gpa } => write!(f, "{gpa:#x} is not mapped"),
            Self::NoArea { gpa } => write!(f, "no area covers {gpa:#x}"),
            Self::NotPopulated { gpa } => {
                write!(f, "lazy page at {gpa:#x} has not been faulted in")
            }
            Self::DeviceMemory { gpa } => write!(f, "{gpa:#x} is device memory"),
            Self::Reserved { gpa } => write!(f, "{gpa:#x} is in a reserved area"),
            Self::InvalidFlags { flags, reason } => {
                write!(f, "flags {flags} cannot be encoded: {reason}")
            }
            Self::NoMemory { needed, allocated } => write!(
                f,
                "out of frames: needed {needed}, got {allocated} (all returned)"
            ),
            Self::OutOfHeap { bytes } => write!(f, "out of heap: {bytes} bytes of bookkeeping"),
            Self::MemoryType {
                gpa,
                mapped,
                requested,
            } => write!(
                f,
                "{gpa:#x} is mapped {mapped}; protect cannot make it {requested} (the memory \
                 type is fixed at map time; give access flags only)"
            ),
            Self::ForeignFlush { token, table } => write!(
                f,
                "flush token of table #{token} completed on table #{table}: refused"
            ),
        }
    }
}

impl core::error::Error for Error {}

impl From<Error> for axerrno::AxError {
    /// Maps each variant to the closest `AxError`; log the [`Error`] first when the
    /// detail matters, since `AxError` cannot carry it.
    fn from(e: Error) -> Self {
        use axerrno::AxError as Ax;
        match e {
            Error::Unaligned { .. }
            | Error::ZeroSize { .. }
            | Error::Overflow { .. }
            | Error::InvalidFlags { .. } => Ax::InvalidInput,
            Error::OutOfRange { .. } => Ax::OutOfRange,
            Error::Overlap { .. } | Error::AlreadyMapped { .. } => Ax::AlreadyExists,
            Error::NotMapped { .. } | Error::NoArea { .. } | Error::NotPopulated { .. } => {
                Ax::NotFound
            }
            Error::DeviceMemory { .. } | Error::Reserved { .. } => Ax::BadAddress,
            Error::NoMemory { .. } | Error::OutOfHeap { .. } => Ax::NoMemory,
            Error::MemoryType { .. } => Ax::InvalidInput,
            Error::ForeignFlush { .. } => Ax::BadState,
        }
    }
}
