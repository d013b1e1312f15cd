//! `cargo xtask config check PATH... [--host-dtb FILE]`: checks VM config files (or
//! every `.toml` below a folder) with vm-core's own loader, the `vm-config` binary
//! (xtask depends on no project crate, so it runs it through cargo). Prints `ok` and
//! a one-line summary of the VM, or the refusal naming the field, per file; then
//! `N loaded, M refused`; exits 0 when every file loads, 1 when one is refused.

use std::process::{Command, ExitCode};

use crate::run::{Failed, show, workspace_root};

pub(crate) const USAGE: &str = "config check PATH... [--host-dtb FILE]";

/// Runs the checker on `args` (after `config`).
pub(crate) fn config(args: &[String]) -> Result<ExitCode, Failed> {
    let rest = match args.split_first() {
        Some((command, rest)) if command == "check" && !rest.is_empty() => rest,
        _ => return Err(Failed(format!("expected {USAGE}"))),
    };
    // Paths are the user's, relative to where they run xtask, and are printed as
    // given: the checker runs there, with the workspace's manifest.
    let manifest = workspace_root().join("Cargo.toml");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["run", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .args([
            "--package",
            "vm-core",
            "--features",
            "std",
            "--bin",
            "vm-config",
            "--",
            "check",
        ]);
    cmd.args(rest);
    println!("$ {}", show(&cmd));
    let status = cmd
        .status()
        .map_err(|e| Failed(format!("cannot start cargo: {e}")))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(1) => ExitCode::FAILURE,
        _ => return Err(Failed(format!("`{}` failed ({status})", show(&cmd)))),
    })
}
