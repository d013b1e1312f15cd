//! `cargo xtask bench [--quick]`: builds the benchmark crate `xtask/bench` in release
//! and runs it. That crate is its own workspace (excluded from ours), so its peer
//! dependency, axaddrspace, never enters the product crates' graph or `Cargo.lock`.
//! Results go to `target/bench/`: `summary.json` and `map_time.svg`; the table goes to
//! the terminal. Not part of `cargo xtask test`.

use crate::run::{Failed, cargo, workspace_root};

/// Builds and runs the benchmarks; `quick` runs fewer rounds (under two minutes on two
/// cores, build included).
pub(crate) fn bench(quick: bool) -> Result<(), Failed> {
    let root = workspace_root();
    let manifest = root.join("xtask").join("bench").join("Cargo.toml");
    let out = root.join("target").join("bench");
    let manifest = manifest.to_string_lossy().into_owned();
    let out = out.to_string_lossy().into_owned();
    // Keep the build out of `xtask/bench/target` unless the caller chose a directory.
    let target_dir = root.join("target").join("bench-build");
    let target_dir = target_dir.to_string_lossy().into_owned();
    let mut args = vec![
        "run",
        "--release",
        "--locked",
        "--quiet",
        "--manifest-path",
        &manifest,
    ];
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        args.extend(["--target-dir", &target_dir]);
    }
    args.extend(["--", "--out", &out]);
    if quick {
        args.push("--quick");
    }
    cargo(&args, &[])
}
