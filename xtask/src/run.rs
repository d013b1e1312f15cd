//! Running commands: print them, run them, turn failures into [`Failed`].

use std::process::Command;

/// A failed step, with what to tell the user.
#[derive(Debug)]
pub(crate) struct Failed(pub(crate) String);

/// Runs `f` as a named step, with a banner.
pub(crate) fn step(name: &str, f: impl FnOnce() -> Result<(), Failed>) -> Result<(), Failed> {
    println!("\n==> {name}");
    let t = std::time::Instant::now();
    f().map_err(|Failed(msg)| Failed(format!("{name}: {msg}")))?;
    println!("<== {name}: ok ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// Prints and runs `cmd`, failing on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result<(), Failed> {
    println!("$ {}", show(cmd));
    let status = cmd
        .status()
        .map_err(|e| Failed(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failed(format!("`{}` failed ({status})", show(cmd))))
    }
}

/// Runs the workspace's cargo (the rustup toolchain pinned by rust-toolchain.toml).
pub(crate) fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), Failed> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(workspace_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or(manifest)
}

/// The command as a shell line, environment overrides first.
pub(crate) fn show(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            s += &format!("{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s += &cmd.get_program().to_string_lossy();
    for a in cmd.get_args() {
        s.push(' ');
        s += &a.to_string_lossy();
    }
    s
}
