//! Conversions between the widths guest state comes in, each named for what it
//! keeps, so that no call site needs an `as` that could truncate unseen
//! (`clippy::cast_possible_truncation` is denied in the workspace). They live in
//! the lowest crate so that every crate above uses the same ones (`vcpu_api`
//! re-exports them).

use crate::GuestPhysAddr;

// The project builds only for 64-bit targets (aarch64, riscv64, x86_64): a `u64`
// (a guest register, a guest-physical address) always fits a `usize`.
const _: () = assert!(usize::BITS == u64::BITS);

/// `v` as `usize`: lossless on the 64-bit targets the project builds for (checked
/// at compile time: the byte view below only type-checks where `usize` has 8 bytes).
pub const fn usize_of(v: u64) -> usize {
    usize::from_le_bytes(v.to_le_bytes())
}

/// The guest-physical address `v` (a register or table entry's value).
pub const fn gpa_of(v: u64) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(usize_of(v))
}

/// The low 32 bits of `v` (x86 EAX of RAX, ECX of RCX, a 32-bit register field).
pub const fn low_u32(v: u64) -> u32 {
    let b = v.to_le_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The low 16 bits of `v`.
pub const fn low_u16(v: u64) -> u16 {
    let b = v.to_le_bytes();
    u16::from_le_bytes([b[0], b[1]])
}

/// The low 8 bits of `v`.
pub const fn low_u8(v: u64) -> u8 {
    v.to_le_bytes()[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_keeps_its_low_bits() {
        let v = 0x0123_4567_89ab_cdef;
        assert_eq!(low_u32(v), 0x89ab_cdef);
        assert_eq!(low_u16(v), 0xcdef);
        assert_eq!(low_u8(v), 0xef);
        assert_eq!(usize_of(u64::MAX), usize::MAX);
        assert_eq!(gpa_of(0x8000_1000).as_usize(), 0x8000_1000);
    }
}
