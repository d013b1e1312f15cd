//! Zeroing guest memory without reading it first: [`zero_memory`], the
//! [`addrspace::ZeroFn`] of aarch64 (the board's frame allocator gives it to
//! `BitmapFrames::with_zeroing`).
//!
//! An ordinary store to a line not in the cache first reads the line from memory
//! (read for ownership) and writes it back when it is evicted. `DC ZVA` zeroes a
//! whole block (DCZID_EL0.BS, 64 bytes on most cores) without reading it and
//! behaves, for ordering, as ordinary stores to each of its bytes (Arm ARM, "DC
//! ZVA" and "DCZID_EL0"); implementations keep the block in the cache, so it suits
//! small ranges as well as 2 MiB blocks. This routine uses it for every whole block
//! of the range, ordinary stores for the unaligned edges, and ordinary stores for
//! everything when DCZID_EL0.DZP prohibits it; whatever barrier publishes a
//! page-table entry after ordinary stores covers these too.

use addrspace::{aligned_part, zero_plain};

/// The `DC ZVA` block size DCZID_EL0 describes, or `None` when DZP (bit 4)
/// prohibits the instruction: 4 bytes << BS (bits 3:0).
#[must_use]
pub fn zva_block(dczid: u64) -> Option<usize> {
    (dczid & 0x10 == 0).then(|| 4usize << (dczid & 0xf))
}

/// Sets `len` bytes at `ptr` to zero: `DC ZVA` for the whole blocks of the range
/// where the CPU allows it, ordinary stores for the rest.
///
/// # Safety
///
/// `[ptr, ptr + len)` is memory the caller may write that nothing else reads or
/// writes during the call, mapped as Normal memory (`DC ZVA` faults on Device
/// memory).
pub unsafe fn zero_memory(ptr: *mut u8, len: usize) {
    let Some(block) = zva_block(hw::dczid()) else {
        // SAFETY: the caller's promise.
        unsafe { zero_plain(ptr, len) };
        return;
    };
    let blocks = aligned_part(ptr as usize, len, block);
    // SAFETY: the three parts split `[ptr, ptr + len)`, which the caller lets us
    // write; the middle one is whole `block`-byte blocks (`aligned_part`), and DZP
    // allows `DC ZVA`.
    unsafe {
        zero_plain(ptr, blocks.start);
        hw::zero_blocks(ptr.add(blocks.start), blocks.len(), block);
        zero_plain(ptr.add(blocks.end), len - blocks.end);
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    use core::arch::asm;

    /// DCZID_EL0: the `DC ZVA` block size and whether it is prohibited.
    pub(super) fn dczid() -> u64 {
        let v: u64;
        // SAFETY: reading DCZID_EL0 has no side effect and is allowed at EL2.
        unsafe { asm!("mrs {}, dczid_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    /// `DC ZVA` over `len` bytes at `ptr` (both multiples of `block`).
    ///
    /// # Safety
    ///
    /// As `zero_memory`; `block` is DCZID_EL0's block size and DZP is clear.
    pub(super) unsafe fn zero_blocks(ptr: *mut u8, len: usize, block: usize) {
        let mut p = ptr as usize;
        let end = p + len;
        while p < end {
            // SAFETY: `p` is a `block`-aligned block of the range the caller lets
            // us write, Normal memory, and DZP allows the instruction.
            unsafe { asm!("dc zva, {}", in(reg) p, options(nostack, preserves_flags)) };
            p += block;
        }
    }
}

/// Off bare-metal aarch64 (host tests): `DC ZVA` is never used.
#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
mod hw {
    /// As if DCZID_EL0.DZP were set.
    pub(super) fn dczid() -> u64 {
        0x10
    }

    /// Ordinary stores (never reached: [`dczid`] prohibits `DC ZVA`).
    ///
    /// # Safety
    ///
    /// As `zero_memory`.
    pub(super) unsafe fn zero_blocks(ptr: *mut u8, len: usize, _block: usize) {
        // SAFETY: the caller's promise.
        unsafe { addrspace::zero_plain(ptr, len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zva_block_follows_dczid() {
        // BS = 4: 64-byte blocks (Cortex-A, Neoverse); BS = 9: 2 KiB; DZP set.
        assert_eq!(zva_block(4), Some(64));
        assert_eq!(zva_block(9), Some(2048));
        assert_eq!(zva_block(0x14), None);
    }

    #[test]
    fn zero_memory_zeroes_exactly_its_range() {
        addrspace::testing::check_zero_fn(zero_memory);
    }
}
