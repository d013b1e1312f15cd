//! Zeroing guest memory: [`zero_memory`], the [`addrspace::ZeroFn`] of riscv64 (the
//! board's frame allocator gives it to `BitmapFrames::with_zeroing`), the same
//! entry point as the other HALs' so boards and hosts pick their routine the same
//! way.
//!
//! It uses ordinary stores. The instruction that would zero a cache block without
//! reading it, Zicboz `cbo.zero`, is usable in HS-mode only where the hart has the
//! extension (reported by the firmware's device tree, `riscv,isa-extensions`) and
//! M-mode enabled it (`menvcfg.CBZE`, which HS-mode cannot read: without it the
//! instruction traps); the block size comes from `riscv,cboz-block-size`. The board
//! reads none of that yet, so `cbo.zero` is left for when it does: QEMU 7.2, the one
//! xtask installs, has no Zicboz (no `zicboz` CPU property, none in its tree's
//! `riscv,isa`, no `riscv,cboz-block-size`; `cbo.zero` in S-mode traps as an
//! illegal instruction), although its OpenSBI v1.1 sets `menvcfg.CBZE`. RISC-V stores
//! (RVWMO) are ordered as ordinary stores: whatever barrier publishes a page-table
//! entry after them covers these.

/// Sets `len` bytes at `ptr` to zero with ordinary stores.
///
/// # Safety
///
/// `[ptr, ptr + len)` is memory the caller may write that nothing else reads or
/// writes during the call.
pub unsafe fn zero_memory(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's promise.
    unsafe { addrspace::zero_plain(ptr, len) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_memory_zeroes_exactly_its_range() {
        addrspace::testing::check_zero_fn(zero_memory);
    }
}
