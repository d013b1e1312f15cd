//! `cargo xtask`: the project's automation, the only entry point CI uses.
//!
//! - `test`: rustfmt check, clippy (`-D warnings`), every host test, the bad-input
//!   census's count (`hal-mock/tests/census.rs`), 30 s of the soak (`stress`), a
//!   short run of every fuzz target,
//!   `cargo doc` (`-D warnings`), the bare-metal cross builds, then `qemu` for every
//!   architecture that has a board, then `qemu <arch> --guest linux` for the boards
//!   whose Linux run is part of the tests (riscv64: about a minute of QEMU).
//! - `build --arch <aarch64|riscv64|x86_64>`: cross-builds the portable crates for the
//!   architecture's bare-metal target with Debian's Rust, installing it on first use.
//! - `qemu <arch> [--config <file>] [--guest test|linux] [--no-hypervisor]`: builds the
//!   board's hypervisor image, boots it in QEMU and exits with the guest's verdict;
//!   `--guest linux` runs Debian's Linux (fetched with apt, see `linux.rs`) instead of
//!   the test guest, `--no-hypervisor` boots that Linux on plain QEMU.
//! - `bench [--quick]`: address-space and VM benchmarks against axaddrspace (see
//!   `bench.rs`); `bench --linux [--quick]`: QEMU CPU seconds to Linux's marker, plain
//!   QEMU against the hypervisor, and the exits per boot (see `linux_bench.rs`); not
//!   part of `test`.
//! - `config check PATH... [--host-dtb FILE]`: loads VM config files as a hypervisor
//!   would and says, per file, what VM it describes or why it is refused (see
//!   `config.rs`).
//! - `fuzz --list | fuzz <TARGET|all> [--secs N]`: coverage-guided fuzzing with
//!   libFuzzer (see `fuzz.rs`); `test` runs every target for a short time.
//! - `inspect CONFIG.toml [options]`: the VM of a config built on hal-mock, with
//!   its guest-physical map, audit, walks, fault explanations and pictures (the
//!   `inspect` crate; see `inspect.rs`).
//! - `stress [--secs N]`: the concurrent soak on hal-mock (see `stress.rs`); `test`
//!   runs it for 30 s.
//!
//! It prints every command before running it and stops at the first failure.

mod bench;
mod config;
mod cross;
mod fuzz;
mod inspect;
mod linux;
mod linux_bench;
mod qemu;
mod run;
mod stress;

use std::process::ExitCode;

use run::{Failed, cargo, step};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  test                      fmt check, clippy, host tests, census, 30 s soak, fuzz,
                            docs, cross builds, QEMU suites
  build --arch <arch>       cross-build the portable crates for <arch>
                            (aarch64, riscv64, x86_64)
  qemu <arch> [--config F] [--guest test|linux] [--no-hypervisor]
                            boot the hypervisor and its guest in QEMU (the test
                            guest, or Debian's Linux; --no-hypervisor boots that
                            Linux on plain QEMU)
  bench [--quick]           benchmarks against axaddrspace (target/bench/)
  bench --linux [--quick]   Linux to its marker: plain QEMU vs the hypervisor
  config check PATH... [--host-dtb FILE]
                            load VM config files (or folders of them): per file
                            `ok` and the VM, or why it is refused; then
                            `N loaded, M refused` (exit 1 if any is refused)
  fuzz --list               the fuzz targets
  fuzz <TARGET|all> [--secs N]
                            run a fuzz target (or each) for N seconds (default 60)
  inspect CONFIG [options]  a VM config's guest-physical map, audit (--audit),
                            walks (--walk GPA), fault explanations (--fault GPA
                            --access r|w|x) and pictures (--svg F, --html F);
                            --help lists every option
  stress [--secs N]         vCPU and host threads racing on a mock VM's memory,
                            checked for stale translations, freed frames used,
                            leaked frames and errors that changed state (default 60)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") if args.len() == 1 => test(),
        Some("build") => match arch_arg(&args[1..]) {
            Ok(arch) => cross::build(arch),
            Err(e) => Err(e),
        },
        Some("qemu") => {
            qemu_args(&args[1..]).and_then(|q| qemu::qemu(q.arch, q.config, q.guest, q.hypervisor))
        }
        Some("bench") => {
            let flags: Vec<&str> = args[1..].iter().map(String::as_str).collect();
            let quick = flags.contains(&"--quick");
            match flags.iter().find(|f| !matches!(**f, "--quick" | "--linux")) {
                Some(_) => Err(Failed(format!(
                    "expected bench [--quick] [--linux]\n{USAGE}"
                ))),
                None if flags.contains(&"--linux") => linux_bench::bench(quick),
                None => bench::bench(quick),
            }
        }
        Some("config") => match config::config(&args[1..]) {
            Ok(code) => return code,
            Err(e) => Err(Failed(format!(
                "{}\nusage: cargo xtask {}",
                e.0,
                config::USAGE
            ))),
        },
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("inspect") => inspect::inspect(&args[1..]),
        Some("stress") => stress::stress(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(msg)) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn arch_arg(args: &[String]) -> Result<cross::Arch, Failed> {
    match args {
        [flag, arch] if flag == "--arch" => cross::Arch::parse(arch),
        [arch] if arch.starts_with("--arch=") => cross::Arch::parse(&arch["--arch=".len()..]),
        _ => Err(Failed(format!("expected --arch <arch>\n{USAGE}"))),
    }
}

/// The arguments of `qemu`.
struct QemuArgs {
    arch: cross::Arch,
    config: Option<std::path::PathBuf>,
    guest: qemu::Guest,
    hypervisor: bool,
}

fn qemu_args(args: &[String]) -> Result<QemuArgs, Failed> {
    let usage = || Failed(format!("expected qemu <arch> [options]\n{USAGE}"));
    let (arch, mut rest) = args.split_first().ok_or_else(usage)?;
    let mut q = QemuArgs {
        arch: cross::Arch::parse(arch)?,
        config: None,
        guest: qemu::Guest::Test,
        hypervisor: true,
    };
    while let Some((flag, tail)) = rest.split_first() {
        rest = tail;
        match flag.as_str() {
            "--no-hypervisor" => q.hypervisor = false,
            "--config" | "--guest" => {
                let (value, tail) = rest.split_first().ok_or_else(usage)?;
                rest = tail;
                if flag == "--config" {
                    q.config = Some(value.into());
                } else {
                    q.guest = match value.as_str() {
                        "test" => qemu::Guest::Test,
                        "linux" => qemu::Guest::Linux,
                        other => {
                            return Err(Failed(format!("unknown guest `{other}` (test, linux)")));
                        }
                    };
                }
            }
            _ => return Err(usage()),
        }
    }
    if !q.hypervisor && q.guest != qemu::Guest::Linux {
        return Err(Failed("--no-hypervisor needs --guest linux".into()));
    }
    Ok(q)
}

/// Seconds each fuzz target runs in `test`.
const FUZZ_SECS: u64 = 20;

/// Everything CI checks, in order of cost.
fn test() -> Result<(), Failed> {
    let started = std::time::Instant::now();
    step("rustfmt", || cargo(&["fmt", "--all", "--", "--check"], &[]))?;
    step("clippy", || {
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    })?;
    // The picture tests render with rsvg-convert.
    step("test tools", inspect::ensure_renderer)?;
    step("host tests", || {
        cargo(&["test", "--workspace", "--quiet"], &[])
    })?;
    // The census's count (built by the host tests: the same features, no rebuild).
    step("census", || {
        cargo(
            &[
                "test",
                "--workspace",
                "--quiet",
                "--test",
                "census",
                "--",
                "--nocapture",
                "census",
            ],
            &[],
        )
    })?;
    step("stress", || stress::run(stress::TEST_SECS))?;
    step("fuzz", || fuzz::run_all(FUZZ_SECS))?;
    step("docs", || {
        cargo(
            &["doc", "--workspace", "--no-deps", "--quiet"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    })?;
    for arch in cross::Arch::ALL {
        step(&format!("cross build {}", arch.name()), || {
            cross::build(arch)
        })?;
        step(&format!("cross clippy {}", arch.name()), || {
            cross::clippy(arch, qemu::board(arch).package)
        })?;
    }
    for arch in cross::Arch::ALL {
        step(&format!("qemu {}", arch.name()), || {
            qemu::qemu(arch, None, qemu::Guest::Test, true)
        })?;
    }
    for arch in cross::Arch::ALL {
        if qemu::board(arch).linux.is_some_and(|l| l.in_test) {
            step(&format!("qemu {} --guest linux", arch.name()), || {
                qemu::qemu(arch, None, qemu::Guest::Linux, true)
            })?;
        }
    }
    println!(
        "xtask: all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
