//! Zeroing guest memory without reading it first: [`zero_memory`], the
//! [`addrspace::ZeroFn`] of x86_64 (the boards' frame allocator, and any x86_64
//! host's, give it to `BitmapFrames::with_zeroing` or call it from their own
//! `FrameAllocator::zero_frames`).
//!
//! An ordinary store to a line not in the cache first reads the line from memory
//! (read for ownership) and writes it back when it is evicted: zeroing a 2 MiB block
//! moves about 4 MiB. Two instructions claim a whole line without reading it:
//! - `CLZERO` (AMD; CPUID Fn8000_0008 EBX bit 0; AMD APM vol. 3, "CLZERO") zeroes
//!   the 64-byte line at an address, one instruction per line;
//! - `MOVNTI` (SSE2, so every x86_64) stores 8 bytes through the write-combining
//!   buffers, which write a filled line without reading it (Intel SDM vol. 1,
//!   10.4.6.2 "Caching of Temporal vs. Non-Temporal Data"), and leaves nothing in
//!   the cache.
//!
//! Both are weakly ordered: an `SFENCE` follows them, before anything that publishes
//! the memory (the page-table entry a fault then writes). They pay off for the large
//! blocks a guest's memory comes in (2 MiB faults, identity-mapped regions); a 4 KiB
//! frame the guest touches right away, or a page-table frame the walk reads next, is
//! zeroed with ordinary stores, which leave it in the cache: below [`STREAM_MIN`]
//! bytes this routine uses those. Both take a general register at most, so the
//! hypervisor's SSE state (which it does not save) is untouched.
//!
//! Figures (bench, AMD EPYC host, 256 MiB in 2 MiB blocks then one store per 4 KiB
//! page, best of 9, cold caches): ordinary stores 9.7-13 ms, `MOVNTI` 7.4-11 ms
//! (the page stores then miss), `CLZERO` 4.5 ms; one 256 MiB `memset` 3.4 ms.

use core::sync::atomic::{AtomicU8, Ordering};

use addrspace::{aligned_part, zero_plain};

/// Bytes from which [`zero_memory`] clears whole lines without reading them: above
/// a few frames, far below the 2 MiB blocks of `Populate::LazyHuge` faults and
/// identity-mapped regions.
pub const STREAM_MIN: usize = 0x1_0000;

/// A cache line, the unit both line instructions write.
const LINE: usize = 64;

/// How [`zero_memory`] clears whole lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineZeroing {
    /// `CLZERO`, one instruction per line (AMD).
    Clzero,
    /// `MOVNTI`, eight 8-byte non-temporal stores per line.
    Movnti,
}

impl LineZeroing {
    /// The choice for a CPU whose CPUID says: `max_ext` (Fn8000_0000 EAX, the
    /// highest extended leaf), `ext8_ebx` (Fn8000_0008 EBX, bit 0 = CLZERO) and
    /// `leaf1_ebx` (Fn0000_0001 EBX, bits 15:8 = the CLFLUSH line size in 8-byte
    /// units): `CLZERO` where it exists and clears 64-byte lines.
    #[must_use]
    pub fn from_cpuid(max_ext: u32, ext8_ebx: u32, leaf1_ebx: u32) -> Self {
        let line = ((leaf1_ebx >> 8) & 0xff) * 8;
        if max_ext >= 0x8000_0008 && ext8_ebx & 1 != 0 && line == 64 {
            Self::Clzero
        } else {
            Self::Movnti
        }
    }

    /// This CPU's choice, read from CPUID on the first call.
    #[must_use]
    pub fn current() -> Self {
        /// 0: not read yet, else 1 + the choice.
        static CHOICE: AtomicU8 = AtomicU8::new(0);
        match CHOICE.load(Ordering::Relaxed) {
            1 => Self::Clzero,
            2 => Self::Movnti,
            _ => {
                let how = Self::detect();
                CHOICE.store(if how == Self::Clzero { 1 } else { 2 }, Ordering::Relaxed);
                how
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn detect() -> Self {
        use crate::cpu::cpuid;
        let (max_ext, ..) = cpuid(0x8000_0000, 0);
        let ext8_ebx = if max_ext >= 0x8000_0008 {
            cpuid(0x8000_0008, 0).1
        } else {
            0
        };
        Self::from_cpuid(max_ext, ext8_ebx, cpuid(1, 0).1)
    }

    /// Off x86_64 (host tests on another architecture) nothing is executed.
    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> Self {
        Self::Movnti
    }
}

/// Sets `len` bytes at `ptr` to zero: ordinary stores below [`STREAM_MIN`] bytes and
/// for the unaligned edges, the CPU's [`LineZeroing`] for the whole lines in between,
/// then an `SFENCE`, so every store is ordered before the caller's next one.
///
/// # Safety
///
/// `[ptr, ptr + len)` is memory the caller may write that nothing else reads or
/// writes during the call.
pub unsafe fn zero_memory(ptr: *mut u8, len: usize) {
    // SAFETY: the caller's promise.
    unsafe { zero_with(ptr, len, LineZeroing::current()) }
}

/// [`zero_memory`] with lines cleared by `how`.
///
/// # Safety
///
/// As [`zero_memory`]; `how` is [`LineZeroing::Movnti`] or the CPU has `CLZERO`.
unsafe fn zero_with(ptr: *mut u8, len: usize, how: LineZeroing) {
    if len < STREAM_MIN {
        // SAFETY: the caller's promise.
        unsafe { zero_plain(ptr, len) };
        return;
    }
    let lines = aligned_part(ptr as usize, len, LINE);
    // SAFETY: the three parts split `[ptr, ptr + len)`, which the caller lets us
    // write; the middle one is whole lines (`aligned_part`).
    unsafe {
        zero_plain(ptr, lines.start);
        zero_lines(ptr.add(lines.start), lines.len(), how);
        zero_plain(ptr.add(lines.end), len - lines.end);
    }
}

/// Zeroes `len` bytes at `ptr` (both multiples of [`LINE`]) with `how`, then fences.
///
/// # Safety
///
/// As [`zero_with`]; `ptr` and `len` are multiples of [`LINE`].
#[cfg(target_arch = "x86_64")]
unsafe fn zero_lines(ptr: *mut u8, len: usize, how: LineZeroing) {
    use core::arch::asm;
    if len == 0 {
        return;
    }
    match how {
        // SAFETY: each `CLZERO` clears the 64-byte line at `rax`, a line of
        // `[ptr, ptr + len)` (whole lines, which the caller lets us write; the line
        // size was checked with the feature); the caller checked the CPU has it.
        LineZeroing::Clzero => unsafe {
            asm!(
                "2:",
                "clzero",
                "add rax, 64",
                "sub {n}, 64",
                "jnz 2b",
                "sfence",
                inout("rax") ptr => _,
                n = inout(reg) len => _,
                options(nostack),
            );
        },
        // SAFETY: the loop writes `[ptr, ptr + len)` (whole lines, which the caller
        // lets us write) eight bytes at a time and nothing else; `MOVNTI` and
        // `SFENCE` are SSE2, part of x86_64; no SIMD register is used.
        LineZeroing::Movnti => unsafe {
            asm!(
                "2:",
                "movnti qword ptr [{p}], {z}",
                "movnti qword ptr [{p} + 8], {z}",
                "movnti qword ptr [{p} + 16], {z}",
                "movnti qword ptr [{p} + 24], {z}",
                "movnti qword ptr [{p} + 32], {z}",
                "movnti qword ptr [{p} + 40], {z}",
                "movnti qword ptr [{p} + 48], {z}",
                "movnti qword ptr [{p} + 56], {z}",
                "add {p}, 64",
                "sub {n}, 64",
                "jnz 2b",
                "sfence",
                p = inout(reg) ptr => _,
                n = inout(reg) len => _,
                z = in(reg) 0u64,
                options(nostack),
            );
        },
    }
}

/// Off x86_64 (host tests of this crate on another architecture): ordinary stores.
///
/// # Safety
///
/// As [`zero_with`].
#[cfg(not(target_arch = "x86_64"))]
unsafe fn zero_lines(ptr: *mut u8, len: usize, _how: LineZeroing) {
    // SAFETY: the caller's promise.
    unsafe { zero_plain(ptr, len) };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly
    extern crate std;

    use super::*;
    use addrspace::testing::{PoolAllocator, check_zero_fn};
    use addrspace::{
        AccessKind, AddrSpace, FRAME_SIZE, FaultOutcome, FrameAllocator, GuestPhysAddr,
        MappingFlags, Npt, PageSize, Populate,
    };

    #[test]
    fn zero_memory_zeroes_exactly_its_range() {
        check_zero_fn(zero_memory);
    }

    /// `MOVNTI` lines, whatever this CPU would choose.
    unsafe fn with_movnti(ptr: *mut u8, len: usize) {
        // SAFETY: the caller's promise; every x86_64 has `MOVNTI`.
        unsafe { zero_with(ptr, len, LineZeroing::Movnti) }
    }

    #[test]
    fn movnti_lines_zero_exactly_their_range() {
        check_zero_fn(with_movnti);
    }

    /// `CLZERO` lines, on a CPU that has them (the test checks nothing elsewhere:
    /// `zero_memory_zeroes_exactly_its_range` covers what such a CPU runs).
    unsafe fn with_clzero(ptr: *mut u8, len: usize) {
        assert_eq!(LineZeroing::current(), LineZeroing::Clzero);
        // SAFETY: the caller's promise; the CPU has `CLZERO` (asserted).
        unsafe { zero_with(ptr, len, LineZeroing::Clzero) }
    }

    #[test]
    fn clzero_lines_zero_exactly_their_range() {
        if LineZeroing::current() == LineZeroing::Clzero {
            check_zero_fn(with_clzero);
        }
    }

    #[test]
    fn clzero_only_where_cpuid_says_it_clears_64_byte_lines() {
        let line64 = 8 << 8;
        assert_eq!(
            LineZeroing::from_cpuid(0x8000_0020, 1, line64),
            LineZeroing::Clzero
        );
        // No CLZERO bit, a leaf 8000_0008 the CPU does not have, another line size.
        assert_eq!(
            LineZeroing::from_cpuid(0x8000_0020, 0, line64),
            LineZeroing::Movnti
        );
        assert_eq!(
            LineZeroing::from_cpuid(0x8000_0007, 1, line64),
            LineZeroing::Movnti
        );
        assert_eq!(
            LineZeroing::from_cpuid(0x8000_0020, 1, 16 << 8),
            LineZeroing::Movnti
        );
    }

    /// The routine a pool gets is the one its `alloc_zeroed` uses: a 2 MiB block and
    /// a 4 KiB page faulted in over frames a previous owner filled read back zero.
    #[test]
    fn lazy_faults_over_dirty_frames_read_zero_with_zero_memory() {
        const M2: usize = 0x20_0000;
        let frames = 2048;
        // SAFETY: `zero_memory` keeps the `ZeroFn` promise (checked above).
        let pool =
            unsafe { PoolAllocator::with_base(frames, 0x1_0000_0000).zeroing_with(zero_memory) };
        // A previous owner's bytes in every frame (so none is fresh).
        let all = pool.alloc_frames(frames, 1).unwrap();
        let p = pool.phys_to_virt(all).as_mut_ptr::<u8>();
        // SAFETY: the whole pool, just allocated; given back unused.
        unsafe {
            p.write_bytes(0xa5, frames * FRAME_SIZE);
            pool.dealloc_frames(all, frames);
        }
        let mut s = AddrSpace::<Npt, _>::new(&pool).unwrap();
        let base = 0x4000_0000;
        let gpa = GuestPhysAddr::from_usize;
        s.map_alloc(gpa(base), 2 * M2, MappingFlags::RW, Populate::LazyHuge)
            .unwrap();
        s.map_alloc(gpa(base + 2 * M2), M2, MappingFlags::RW, Populate::Lazy)
            .unwrap();
        for (at, size) in [
            (base + 0x1234, PageSize::Size2M),
            (base + 2 * M2, PageSize::Size4K),
        ] {
            match s.handle_page_fault(gpa(at), AccessKind::Write).unwrap() {
                FaultOutcome::Mapped { size: got, .. } => assert_eq!(got, size),
                other => panic!("fault at {at:#x}: {other:?}"),
            }
        }
        let mut block = std::vec![0xffu8; M2];
        s.read(gpa(base), &mut block).unwrap();
        assert!(block.iter().all(|&b| b == 0), "2 MiB block not zeroed");
        let mut page = std::vec![0xffu8; FRAME_SIZE];
        s.read(gpa(base + 2 * M2), &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0), "4 KiB page not zeroed");
        assert_eq!(pool.fresh_handed_out(), 0);
    }
}
