//! `vm-config check [--host-dtb FILE] PATH...`, what `cargo xtask config check` runs:
//! loads each VM config (each `.toml` below a folder) as a hypervisor would, and
//! prints `ok PATH: <summary>` or `refused PATH: <field>: <why>`, then
//! `N loaded, M refused`. Exit status 0 when every file loads, 1 when one is
//! refused, 2 on bad arguments.
//!
//! With `--host-dtb`, pass-through entries that name host device-tree nodes are
//! resolved against that tree (a board resolves them against its own at boot);
//! without it they are checked for form and left for boot. RAM taken from a guest
//! device tree (`memory_regions = []`) is read when `dtb_path` names a file that
//! exists (relative to the config's folder).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vm_core::{DeviceTree, VmConfig};

const USAGE: &str = "usage: vm-config check [--host-dtb FILE] PATH...";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((command, rest)) if command == "check" => check(rest),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Every `.toml` file at or below `path`, sorted.
fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => return out.push(path.to_path_buf()),
        };
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "toml") {
                files(&e, out);
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
}

fn load(path: &Path, host: Option<&DeviceTree<'_>>) -> Result<VmConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut config = VmConfig::from_toml(&text).map_err(|e| e.to_string())?;
    if let Some(host) = host {
        config
            .resolve_host_devices(host)
            .map_err(|e| e.to_string())?;
    }
    if config.memory_from_dtb()
        && let Some(dtb) = &config.kernel.dtb_path
    {
        let guest = path.parent().unwrap_or(Path::new(".")).join(dtb);
        if let Ok(bytes) = std::fs::read(&guest) {
            let tree = DeviceTree::new(&bytes)
                .map_err(|e| format!("kernel.dtb_path: {}: {e}", guest.display()))?;
            config
                .memory_from_guest_dtb(&tree)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(config)
}

fn check(args: &[String]) -> ExitCode {
    let mut host_dtb = None;
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--host-dtb" => match it.next() {
                Some(f) => host_dtb = Some(f.clone()),
                None => {
                    eprintln!("--host-dtb needs a file\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let bytes = match host_dtb.as_deref().map(std::fs::read).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("--host-dtb: {e}");
            return ExitCode::from(2);
        }
    };
    let host = match bytes.as_deref().map(DeviceTree::new).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("--host-dtb: {e}");
            return ExitCode::from(2);
        }
    };
    let mut all = Vec::new();
    for p in &paths {
        files(p, &mut all);
    }
    let (mut loaded, mut refused) = (0, 0);
    for file in &all {
        match load(file, host.as_ref()) {
            Ok(config) => {
                loaded += 1;
                println!("ok      {}: {}", file.display(), config.summary());
            }
            Err(e) => {
                refused += 1;
                println!("refused {}: {e}", file.display());
            }
        }
    }
    println!("{loaded} loaded, {refused} refused");
    if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
