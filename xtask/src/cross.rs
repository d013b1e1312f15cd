//! Cross builds for the bare-metal targets with Debian's Rust 1.96 and its library
//! source (`-Zbuild-std`), installed with apt on first use. See
//! `../shared/design/TOOLCHAIN.md` for why this toolchain and not rustup's.

use std::path::Path;
use std::process::Command;

use crate::run::{Failed, run, workspace_root};

/// An architecture we build for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arch {
    Aarch64,
    Riscv64,
    X86_64,
}

impl Arch {
    pub(crate) const ALL: [Arch; 3] = [Arch::Aarch64, Arch::Riscv64, Arch::X86_64];

    pub(crate) fn parse(s: &str) -> Result<Arch, Failed> {
        match s {
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "riscv64" | "riscv" => Ok(Arch::Riscv64),
            "x86_64" | "x86-64" | "x86" => Ok(Arch::X86_64),
            other => Err(Failed(format!(
                "unknown architecture `{other}` (aarch64, riscv64, x86_64)"
            ))),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The architecture's HAL crate.
    pub(crate) fn hal(self) -> &'static str {
        match self {
            Arch::Aarch64 => "hal-aarch64",
            Arch::Riscv64 => "hal-riscv64",
            Arch::X86_64 => "hal-x86_64",
        }
    }

    pub(crate) fn target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none",
            Arch::Riscv64 => "riscv64gc-unknown-none-elf",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }
}

/// The crates that must build for every bare-metal target.
pub(crate) const PORTABLE: &[&str] = &["addrspace", "vcpu-api", "vm-core"];

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CLIPPY: &str = "/usr/bin/cargo-clippy";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";

/// Installs Debian's Rust toolchain and library source unless already there.
pub(crate) fn ensure_toolchain() -> Result<(), Failed> {
    let ready = Path::new(DEBIAN_CARGO).exists()
        && Path::new(DEBIAN_CLIPPY).exists()
        && Path::new(RUST_SRC).exists()
        && Command::new(DEBIAN_RUSTC)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if ready {
        return Ok(());
    }
    println!("xtask: Debian's Rust toolchain for cross builds is missing; installing it");
    apt_install(&[
        "rustc-web",
        "cargo-web",
        "rust-web-src",
        "libstd-rust-web-dev",
        "rust-web-clippy",
        "lld",
    ])
}

/// `apt-get install` (after `apt-get update`), as root or through sudo.
pub(crate) fn apt_install(packages: &[&str]) -> Result<(), Failed> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let apt = |args: &[&str]| {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        // Wait for another apt or dpkg (a second xtask, unattended upgrades) instead of
        // failing on its lock.
        cmd.args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut cmd)
    };
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)
}

/// A `cargo` command of Debian's toolchain set up for `-Zbuild-std` on `arch`.
pub(crate) fn cross_cargo(arch: Arch, subcommand: &str) -> Command {
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.arg(subcommand)
        .args(["--target", arch.target()])
        .args([
            "-Zbuild-std=core,alloc",
            "-Zbuild-std-features=compiler-builtins-mem",
        ])
        .env("RUSTC", DEBIAN_RUSTC)
        // ld.lld from Debian's `lld` for every target, always, so switching between
        // library and image builds never changes the linker (which rebuilds core).
        .env(linker_var(arch), "ld.lld")
        // The x86 multiboot stub uses absolute 32-bit addresses: no static-pie.
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS",
            "-C relocation-model=static",
        )
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", cross_target_dir())
        .current_dir(workspace_root());
    cmd
}

/// Where cross builds go: `target/cross`, or `$XTASK_CROSS_DIR` (lets concurrent
/// developers keep separate build directories).
pub(crate) fn cross_target_dir() -> std::path::PathBuf {
    std::env::var_os("XTASK_CROSS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("cross"))
}

fn linker_var(arch: Arch) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        arch.target().to_uppercase().replace('-', "_")
    )
}

/// Builds the portable crates for `arch`.
pub(crate) fn build(arch: Arch) -> Result<(), Failed> {
    ensure_toolchain()?;
    let mut cmd = cross_cargo(arch, "build");
    for krate in PORTABLE {
        cmd.args(["-p", krate]);
    }
    run(&mut cmd)
}

/// Runs clippy (`-D warnings`) on the bare-metal code of `arch`, which host clippy
/// never sees (boot code, trap vectors, world switches): the HAL and the board
/// together, then the test guest on its own (it links without the hypervisor's
/// allocator, so it must not share a build with the board).
pub(crate) fn clippy(arch: Arch, board: &str) -> Result<(), Failed> {
    ensure_toolchain()?;
    // The board's build script embeds a guest image; clippy needs none.
    let dir = cross_target_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Failed(format!("{}: {e}", dir.display())))?;
    let empty_guest = dir.join("no-guest.bin");
    std::fs::write(&empty_guest, [])
        .map_err(|e| Failed(format!("{}: {e}", empty_guest.display())))?;
    for packages in [vec![arch.hal(), board], vec!["test-guest"]] {
        let mut cmd = cross_cargo(arch, "clippy");
        // Debian's cargo runs the `cargo-clippy` it finds first on PATH: its own.
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("/usr/bin:{path}"))
            .env("HV_GUEST_IMAGE", &empty_guest);
        for p in packages {
            cmd.args(["-p", p]);
        }
        cmd.args(["--", "-D", "warnings"]);
        run(&mut cmd)?;
    }
    Ok(())
}
