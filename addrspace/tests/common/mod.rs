//! Helpers shared by addrspace's integration tests (each test binary uses a part).

#![allow(dead_code, clippy::unwrap_used)]

use std::cell::OnceCell;

use addrspace::testing::{PoolAllocator, StrictAllocator};
use addrspace::{GuestPhysAddr, HostPhysAddr};

pub(crate) const K4: usize = 0x1000;
pub(crate) const M2: usize = 0x20_0000;
pub(crate) const G1: usize = 0x4000_0000;

pub(crate) fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

pub(crate) fn hpa(v: usize) -> HostPhysAddr {
    HostPhysAddr::from_usize(v)
}

/// Sequences per format for the model-based tests: CI runs 2,000; `MODEL_CASES`
/// overrides.
pub(crate) fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

thread_local! {
    static POOL: OnceCell<&'static StrictAllocator> = const { OnceCell::new() };
}

/// One strict pool per test thread (`frames` frames at `base`, fixed by the first
/// call), reused by every case: each case gives back all it took, which the case
/// checks, so cases do not pay for fresh host memory. Strict: every free must name
/// frames of one live allocation ([`frees_since`]).
pub(crate) fn thread_pool(frames: usize, base: usize) -> &'static StrictAllocator {
    POOL.with(|p| {
        *p.get_or_init(|| {
            Box::leak(Box::new(StrictAllocator::new(PoolAllocator::with_base(
                frames, base,
            ))))
        })
    })
}

/// The frees that did not name frames of one live allocation since the strict
/// pool had `seen` of them (a case reads the count when it starts).
pub(crate) fn frees_since(strict: &StrictAllocator, seen: usize) -> Vec<String> {
    strict.violations().split_off(seen)
}

/// Runs `op` with `pool` failing once `budget` more frames are handed out (`None`:
/// never), then lifts the limit.
pub(crate) fn with_budget<T>(
    pool: &PoolAllocator,
    budget: Option<usize>,
    op: impl FnOnce() -> T,
) -> T {
    match budget {
        Some(n) => pool.fail_after(n),
        None => pool.never_fail(),
    }
    let out = op();
    pool.never_fail();
    out
}
