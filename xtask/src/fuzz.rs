//! `cargo xtask fuzz`: coverage-guided fuzzing with libFuzzer through cargo-fuzz.
//!
//! - `fuzz --list`: the targets (the `[[bin]]`s of `xtask/fuzz/Cargo.toml`).
//! - `fuzz TARGET [--secs N]`: builds the target and runs it for N seconds (default
//!   60); `fuzz all [--secs N]` runs every target in turn (`cargo xtask test` runs it
//!   with a short time).
//!
//! The targets live in `xtask/fuzz/`, a workspace of their own (excluded from ours), so
//! their dependencies (libfuzzer-sys, arbitrary, iced-x86) never enter the product
//! crates' graph. cargo-fuzz is installed from crates.io on first use (`cargo install
//! cargo-fuzz --version CARGO_FUZZ_VERSION --locked`). The build uses the workspace's
//! pinned toolchain: the sanitizer-free mode needs only stable `-C` flags (SanitizerCoverage
//! through `-Cpasses=sancov-module`), so no nightly toolchain is needed; debug
//! assertions and overflow checks are on.
//!
//! The working corpus grows in `target/fuzz/corpus/TARGET`, seeded from directories
//! that are never written (`xtask/fuzz/seeds/TARGET`; for `vm_config` the project's and
//! axvisor's configs); a failing input is
//! saved in `target/fuzz/artifacts/TARGET/` and the command to replay it is printed.
//! Each run ends with one line: executions, coverage (libFuzzer's `cov`: covered
//! edges, and `ft`: features), corpus size.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::run::{Failed, cargo, show, workspace_root};

/// The cargo-fuzz release xtask installs.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The default run time of one target, in seconds.
pub(crate) const DEFAULT_SECS: u64 = 60;

/// `cargo xtask fuzz ARGS`.
pub(crate) fn fuzz(args: &[String]) -> Result<(), Failed> {
    let usage = || {
        Failed(format!(
            "expected fuzz --list | fuzz <TARGET|all> [--secs N]\ntargets: {}",
            targets().map(|t| t.join(", ")).unwrap_or_default()
        ))
    };
    let (name, secs) = match args {
        [list] if list == "--list" => {
            for t in targets()? {
                println!("{t}");
            }
            return Ok(());
        }
        [name] => (name, DEFAULT_SECS),
        [name, flag, secs] if flag == "--secs" => (name, secs.parse().map_err(|_| usage())?),
        _ => return Err(usage()),
    };
    let all = targets()?;
    if name == "all" {
        run_all(secs)
    } else if all.iter().any(|t| t == name) {
        build(Some(name))?;
        run_one(name, secs).map(drop)
    } else {
        Err(Failed(format!(
            "no fuzz target `{name}` (targets: {})",
            all.join(", ")
        )))
    }
}

/// Checks the fuzz workspace's formatting, builds every target, then runs each for
/// `secs` seconds; one summary line each.
pub(crate) fn run_all(secs: u64) -> Result<(), Failed> {
    let manifest = fuzz_dir().join("Cargo.toml").to_string_lossy().into_owned();
    cargo(&["fmt", "--manifest-path", &manifest, "--", "--check"], &[])?;
    build(None)?;
    let mut lines = Vec::new();
    for t in targets()? {
        lines.push(run_one(&t, secs)?);
    }
    println!("\nfuzz summary ({secs} s per target):");
    for l in lines {
        println!("  {l}");
    }
    Ok(())
}

/// The fuzz workspace.
fn fuzz_dir() -> PathBuf {
    workspace_root().join("xtask").join("fuzz")
}

/// Where the targets are built (outside `xtask/fuzz/`, under the workspace's `target/`).
fn build_dir() -> PathBuf {
    workspace_root().join("target").join("fuzz-build")
}

/// The target names, from `xtask/fuzz/Cargo.toml`'s `[[bin]]` sections.
pub(crate) fn targets() -> Result<Vec<String>, Failed> {
    let manifest = fuzz_dir().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| Failed(format!("cannot read {}: {e}", manifest.display())))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(v) = line.strip_prefix("name")
            && in_bin
        {
            let v = v
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            names.push(v.to_string());
        }
    }
    Ok(names)
}

/// Installs cargo-fuzz unless that version is there.
fn ensure_cargo_fuzz() -> Result<(), Failed> {
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new(cargo_bin)
        .args(["fuzz", "--version"])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    println!("xtask: cargo-fuzz {CARGO_FUZZ_VERSION} is missing; installing it from crates.io");
    cargo(
        &[
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ],
        &[],
    )
}

/// Builds one target, or all of them.
fn build(target: Option<&str>) -> Result<(), Failed> {
    ensure_cargo_fuzz()?;
    let fuzz = fuzz_dir().to_string_lossy().into_owned();
    let out = build_dir().to_string_lossy().into_owned();
    let mut args = vec![
        "fuzz",
        "build",
        "--fuzz-dir",
        &fuzz,
        "--sanitizer",
        "none",
        "--target-dir",
        &out,
    ];
    args.extend(target);
    cargo(&args, &[])
}

/// The binary of a built target.
fn binary(target: &str) -> PathBuf {
    build_dir()
        .join("x86_64-unknown-linux-gnu")
        .join("release")
        .join(target)
}

/// The read-only seed directories of a target that exist: `xtask/fuzz/seeds/TARGET`, and
/// for `vm_config` the project's configs and axvisor's (vm-core's test data).
fn seeds(target: &str) -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = vec![fuzz_dir().join("seeds").join(target)];
    if target == "vm_config" {
        dirs.push(root.join("configs"));
        dirs.push(root.join("vm-core/tests/data/axvisor-configs"));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Runs a built target for `secs` seconds; returns its summary line.
fn run_one(target: &str, secs: u64) -> Result<String, Failed> {
    let root = workspace_root();
    let corpus = root.join("target").join("fuzz").join("corpus").join(target);
    let artifacts = root
        .join("target")
        .join("fuzz")
        .join("artifacts")
        .join(target);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut cmd = Command::new(binary(target));
    cmd.current_dir(&root)
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-timeout=20")
        .arg("-rss_limit_mb=4096")
        .arg("-print_final_stats=1")
        .arg(&corpus)
        .args(seeds(target));
    println!("$ {}", show(&cmd));
    let started = std::time::Instant::now();
    let output = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Failed(format!("cannot start {}: {e}", binary(target).display())))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let stats = Stats::parse(&log);
    if !output.status.success() {
        // The whole report: the panic message, the model's disagreement, the input.
        eprintln!("{log}");
        return Err(Failed(format!(
            "fuzz target {target} failed ({}); the input is in {} (replay: {} FILE)",
            output.status,
            artifacts.display(),
            binary(target).display()
        )));
    }
    let line = format!(
        "{target}: {} executions in {:.0} s, cov {} ft {}, corpus {}",
        stats.runs,
        started.elapsed().as_secs_f64(),
        stats.cov,
        stats.ft,
        stats.corpus
    );
    println!("{line}");
    Ok(line)
}

/// The figures of libFuzzer's last status line and final statistics.
#[derive(Default)]
struct Stats {
    runs: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
}

impl Stats {
    fn parse(log: &str) -> Stats {
        let mut s = Stats::default();
        let field = |line: &str, key: &str| -> Option<u64> {
            let mut words = line.split_whitespace();
            words.find(|w| *w == key)?;
            words.next()?.split('/').next()?.parse().ok()
        };
        for line in log.lines() {
            if line.starts_with('#') {
                s.cov = field(line, "cov:").unwrap_or(s.cov);
                s.ft = field(line, "ft:").unwrap_or(s.ft);
                s.corpus = field(line, "corp:").unwrap_or(s.corpus);
            }
            if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
                s.runs = v.trim().parse().unwrap_or(s.runs);
            }
        }
        s
    }
}
