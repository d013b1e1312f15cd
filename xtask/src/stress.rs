//! `cargo xtask stress [--secs N]`: the concurrent soak on hal-mock (see
//! `hal-mock/src/stress.rs`): a VM with four vCPU threads reading, writing and
//! fetching while two host threads map, unmap, protect and copy overlapping ranges,
//! checked for uses of removed translations and freed frames, leaked frames and
//! errors that changed state. It ends with one summary line and fails on any
//! violation. It runs as the ignored test `soak` of `hal-mock/tests/stress.rs`, so
//! it reuses the host tests' build (same command shape as theirs); `cargo xtask test` runs it for [`TEST_SECS`].

use crate::run::{Failed, cargo};

/// Seconds of soak in `cargo xtask test`.
pub(crate) const TEST_SECS: u64 = 30;

/// The default length of `cargo xtask stress`.
const DEFAULT_SECS: u64 = 60;

/// `cargo xtask stress ARGS`.
pub(crate) fn stress(args: &[String]) -> Result<(), Failed> {
    let secs = match args {
        [] => DEFAULT_SECS,
        [flag, secs] if flag == "--secs" => secs
            .parse()
            .map_err(|_| Failed(format!("--secs wants a number of seconds, not `{secs}`")))?,
        _ => return Err(Failed("expected stress [--secs N]".into())),
    };
    run(secs)
}

/// Runs the soak for `secs` seconds.
pub(crate) fn run(secs: u64) -> Result<(), Failed> {
    cargo(
        &[
            "test",
            "--workspace",
            "--quiet",
            "--test",
            "stress",
            "--",
            "--ignored",
            "--exact",
            "soak",
            "--nocapture",
        ],
        &[("HVCORE_STRESS_SECS", &secs.to_string())],
    )
}
