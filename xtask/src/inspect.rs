//! `cargo xtask inspect CONFIG.toml [options]`: runs the `inspect` tool (a VM
//! config built on hal-mock, its map, audit, walks, fault explanations and
//! pictures), and installs the SVG renderer the tests check its pictures with.

use std::process::{Command, Stdio};

use crate::cross::apt_install;
use crate::run::{Failed, run, workspace_root};

/// The renderer the picture tests use, and the Debian package that has it.
const RSVG: &str = "rsvg-convert";
const RSVG_PACKAGE: &str = "librsvg2-bin";

/// Runs the tool with `args` from the caller's directory (so relative paths work).
pub(crate) fn inspect(args: &[String]) -> Result<(), Failed> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = workspace_root().join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "--quiet", "--package", "inspect", "--manifest-path"])
        .arg(manifest)
        .arg("--")
        .args(args);
    run(&mut cmd)
}

/// Installs `rsvg-convert` unless it is there (the picture tests render with it).
pub(crate) fn ensure_renderer() -> Result<(), Failed> {
    let present = Command::new(RSVG)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    println!("xtask: {RSVG} is missing; installing {RSVG_PACKAGE}");
    apt_install(&[RSVG_PACKAGE])
}
