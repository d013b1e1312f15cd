//! The `vm-config check` binary behind `cargo xtask config check`: per file `ok` and a
//! summary or `refused` and the field, the `N loaded, M refused` line, exit status 0
//! only when everything loads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::process::Command;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vm-config"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn the_project_configs_all_load() {
    let (code, out) = check(&["../configs"]);
    assert_eq!(code, 0, "{out}");
    // Every board's configs (the test guests', Linux's).
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "toml"))
        })
        .count();
    assert!(files >= 3, "{files} configs");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        files,
        "{out}"
    );
    let summary = format!("{files} loaded, 0 refused");
    assert_eq!(out.lines().last(), Some(summary.as_str()));
}

#[test]
fn the_axvisor_sample_prints_its_summary_line_and_fails() {
    let (code, out) = check(&["tests/data/axvisor-configs/configs"]);
    assert_eq!(code, 1);
    // 298 + 2 loaded (see axvisor_configs.rs), every other file refused.
    assert_eq!(out.lines().last(), Some("300 loaded, 70 refused"));
    let flat = out
        .lines()
        .find(|l| l.contains("E0") || l.contains("arceos-umhv/"))
        .unwrap();
    assert!(
        flat.starts_with("refused ") && flat.contains("flat format of 2024"),
        "{flat}"
    );
}

/// With the host's device tree, a reference to a host node becomes that node's
/// ranges; a node the host does not have is refused naming the entry.
#[test]
fn host_dtb_resolves_device_tree_references() {
    let dir = std::env::temp_dir().join(format!("vm-config-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = |uart: &str| {
        format!(
            "[base]\nid = 1\nname = \"pt\"\nvm_type = 1\ncpu_num = 1\n\
             [kernel]\nkernel_path = \"k\"\nmemory_regions = [[0x4000_0000, 0x100_0000, 0x7, 0]]\n\
             [devices]\npassthrough_devices = [[\"{uart}\"]]\nemu_devices = []\n"
        )
    };
    let good = dir.join("good.toml");
    let bad = dir.join("bad.toml");
    std::fs::write(&good, config("/pl011@9000000")).unwrap();
    std::fs::write(&bad, config("/pl011@9999000")).unwrap();
    let (code, out) = check(&[good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("host tree \"/pl011@9000000\""), "{out}");
    let dtb = "tests/data/qemu-virt-aarch64.dtb";
    let (code, out) = check(&[
        "--host-dtb",
        dtb,
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("pass-through: 1 range (/pl011@9000000)"),
        "{out}"
    );
    assert!(
        out.contains(
            "devices.passthrough_devices[0]: the host device tree has no node \"/pl011@9999000\""
        ),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("1 loaded, 1 refused"));
    let (code, _) = check(&["--host-dtb", "Cargo.toml", good.to_str().unwrap()]);
    assert_eq!(code, 2, "a host tree that does not parse is a usage error");
    std::fs::remove_dir_all(&dir).unwrap();
}
