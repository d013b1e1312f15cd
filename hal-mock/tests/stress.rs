//! The soak (`cargo xtask stress [--secs N]` runs [`soak`]; `cargo xtask test` runs
//! it for 30 s) and the checks of its checker: with the mock's invalidation broken
//! (a missing shootdown, an early free) it must report violations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use hal_mock::InvalidationFault;
use hal_mock::stress::{StressConfig, Summary, round_kind, stress};

/// The soak's length, from `HVCORE_STRESS_SECS` (set by `cargo xtask stress`).
const SECS_VAR: &str = "HVCORE_STRESS_SECS";

fn run(config: StressConfig) -> Summary {
    stress(config, |i, s| {
        let (format, broadcast) = round_kind(i);
        let style = if broadcast { "broadcast" } else { "kicks" };
        eprintln!("  round {i} ({format}, {style}): {s}");
    })
}

/// The soak: no violation in `HVCORE_STRESS_SECS` seconds (default 30); prints one
/// summary line.
#[test]
#[ignore = "long: run by `cargo xtask stress` and `cargo xtask test`"]
fn soak() {
    let secs = std::env::var(SECS_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs());
    let summary = run(StressConfig {
        duration: Duration::from_secs(secs),
        seed,
        ..StressConfig::default()
    });
    println!("{summary} [{secs} s, seed {seed:#x}]");
    assert!(
        summary.violations() == 0 && summary.operations > 0 && summary.shootdowns > 0,
        "violations:\n{}",
        summary.reports.join("\n")
    );
}

/// `fault` injected in round kind `first_round`, 2 s at a time (at most 5 times)
/// until `seen` holds for what the checker counted.
fn broken(fault: InvalidationFault, first_round: usize, seen: fn(&Summary) -> bool) {
    let mut runs = Vec::new();
    for _ in 0..5 {
        let summary = run(StressConfig {
            duration: Duration::from_secs(2),
            fault,
            first_round,
            ..StressConfig::default()
        });
        if seen(&summary) {
            return;
        }
        runs.push(summary.to_string());
    }
    panic!("{fault:?} not caught in 5 runs:\n{}", runs.join("\n"));
}

/// A missing shootdown (broadcasts that invalidate nothing, Arm-style rounds) is
/// seen: translations used after their removal and freed frames used.
#[test]
fn the_soak_catches_a_missing_broadcast_shootdown() {
    broken(InvalidationFault::Dropped, 1, |s| {
        s.stale_translations > 0 && s.stale_frames > 0
    });
}

/// A missing shootdown with kicks (x86-style: the vCPUs drop their invalidations).
#[test]
fn the_soak_catches_a_missing_kick_shootdown() {
    broken(InvalidationFault::Dropped, 2, |s| s.stale_translations > 0);
}

/// An early free (the broadcast returns before it invalidated, so the caller frees
/// frames TLBs still hold) is seen.
#[test]
fn the_soak_catches_an_early_free() {
    broken(InvalidationFault::Late, 0, |s| s.stale_frames > 0);
}
