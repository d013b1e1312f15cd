//! Zeroing memory: [`ZeroFn`], the routine a platform gives its frame allocator (the
//! HALs' `zero_memory`: non-temporal stores, `DC ZVA`), [`zero_plain`], the portable
//! one every allocator uses unless given another, and [`aligned_part`], the split a
//! routine that clears whole lines or blocks makes.
//!
//! Guest memory is zeroed as it is handed out, often a 2 MiB block that the guest then
//! touches a page at a time: ordinary stores first read every line they fill (read for
//! ownership) and write it back later, about twice the memory traffic of stores that
//! claim a line without reading it. The architecture code for those lives in the HALs;
//! this crate only calls a [`ZeroFn`].

use core::ops::Range;

/// A routine that sets `len` bytes at `ptr` to zero.
///
/// Calling it is unsafe: `[ptr, ptr + len)` must be memory the caller may write that
/// nothing else reads or writes during the call. What an allocator given one relies
/// on (its constructor is `unsafe` for that): it writes zero to every byte of that
/// range and to nothing else, and when it returns its stores are ordered with the
/// caller's later stores as ordinary stores of this CPU would be (a routine using
/// weakly ordered stores, such as x86 non-temporal stores, fences them), so the
/// barrier that publishes a page-table entry after ordinary stores covers them.
pub type ZeroFn = unsafe fn(ptr: *mut u8, len: usize);

/// Zeroes `len` bytes at `ptr` with ordinary stores (`write_bytes`), which leave the
/// lines in the cache: the portable [`ZeroFn`], and what the faster routines use for
/// small ranges and for the edges of large ones.
///
/// # Safety
///
/// `[ptr, ptr + len)` is memory the caller may write that nothing else reads or
/// writes during the call.
#[inline]
pub unsafe fn zero_plain(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's promise is `write_bytes`'s (a `u8` has no alignment).
    unsafe { core::ptr::write_bytes(ptr, 0, len) };
}

/// The offsets of the part of `[addr, addr + len)` made of whole `align`-aligned
/// blocks (`align` a power of two): the bytes before its start and after its end are
/// the unaligned edges. Empty (`len..len`) when no whole block fits.
#[must_use]
pub fn aligned_part(addr: usize, len: usize, align: usize) -> Range<usize> {
    debug_assert!(align.is_power_of_two());
    let head = addr.wrapping_neg() & (align - 1);
    let body = len.saturating_sub(head) & !(align - 1);
    if body == 0 {
        return len..len;
    }
    head..head + body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_part_keeps_whole_blocks_inside_the_range() {
        assert_eq!(aligned_part(0x1000, 0x2000, 64), 0..0x2000);
        assert_eq!(aligned_part(0x1001, 0x2000, 64), 63..0x1fc0 + 63);
        assert_eq!(aligned_part(0x1001, 10, 64), 10..10);
        assert_eq!(aligned_part(0x1001, 63, 64), 63..63);
        assert_eq!(aligned_part(0x1001, 127, 64), 63..127);
        assert_eq!(aligned_part(0x1001, 126, 64), 126..126);
        assert_eq!(aligned_part(0x40, 0, 64), 0..0);
        assert_eq!(aligned_part(usize::MAX - 63, 64, 64), 0..64);
        // Every split of every small range: the part is aligned, whole blocks, and
        // the edges are shorter than a block.
        for addr in 0..130usize {
            for len in 0..300usize {
                let r = aligned_part(addr, len, 64);
                assert!(r.start <= r.end && r.end <= len);
                assert_eq!(r.len() % 64, 0);
                if r.is_empty() {
                    assert!(len < 64 + (addr.wrapping_neg() & 63), "{addr} {len}");
                } else {
                    assert_eq!((addr + r.start) % 64, 0, "{addr} {len}");
                    assert!(r.start < 64 && len - r.end < 64, "{addr} {len}");
                }
            }
        }
    }

    #[test]
    fn zero_plain_zeroes_exactly_its_range() {
        crate::testing::check_zero_fn(zero_plain);
    }
}
