//! `cargo xtask inspect` on configs that need a device tree: without one, what only
//! the tree places is listed as unresolved and left out of the map (no invented
//! address); with `--host-dtb FILE` the pass-through entries naming host nodes are
//! placed from it, with `--guest-dtb FILE` the RAM of `memory_regions = []` comes
//! from the guest's tree. Runs the command itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use vm_core::{GuestPhysAddr, GuestTreeOptions, MapType, MappingFlags, Populate, VmConfigBuilder};

mod common;

use common::{has, workspace};

/// Runs `inspect` with `args`; its standard output, which must be a success.
fn inspect(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "inspect {args:?}: {stderr}\n{stdout}");
    stdout
}

const QEMU_AARCH64_DTB: &str = "vm-core/tests/data/qemu-virt-aarch64.dtb";
/// An axvisor config whose RAM is the guest tree's (`memory_regions = []`).
const RAM_FROM_TREE: &str = "vm-core/tests/data/axvisor-configs/configs/axvisor/\
                             configs~vms~arceos-aarch64-rk3568-smp1__2025-09-03_24d0d499.toml";

/// The aarch64 Linux config passes through the PL011 by its host node: without the
/// host tree it is named unresolved and absent from the map; with QEMU's tree it is
/// a pass-through region at the node's address, and nothing is left unresolved.
#[test]
fn host_nodes_are_unresolved_without_host_dtb_and_placed_with_it() {
    let config = "configs/qemu-virt-aarch64-linux.toml";
    let page = Path::new(env!("CARGO_TARGET_TMPDIR")).join("linux-aarch64-unresolved.html");
    let without = inspect(&[config, "--map", "--html", page.to_str().expect("utf-8")]);
    let page = std::fs::read_to_string(&page).expect("the page");
    has(&page, "<h2>Unresolved");
    has(
        &page,
        "&quot;/pl011@9000000&quot;: pass-through of a host device-tree node",
    );
    has(&without, "unresolved (named by the config");
    has(
        &without,
        "devices.passthrough_devices[0] \"/pl011@9000000\": pass-through of a host \
         device-tree node, unresolved (--host-dtb FILE places it)",
    );
    assert_eq!(
        mapped(&without, "pass-through"),
        0,
        "an address was invented:\n{without}"
    );
    let with = inspect(&[config, "--host-dtb", QEMU_AARCH64_DTB]);
    assert!(!with.contains("unresolved"), "{with}");
    assert!(mapped(&with, "pass-through") > 0, "{with}");
}

/// Lines of `text` outside the unresolved list that mention `kind`.
fn mapped(text: &str, kind: &str) -> usize {
    text.lines()
        .filter(|l| l.contains(kind) && !l.contains("unresolved"))
        .count()
}

/// A guest tree whose /memory is 256 MiB at 0x7000_0000 (where `RAM_FROM_TREE`
/// loads its kernel and tree), made with vm-core's guest-tree builder; its path.
fn guest_tree_file() -> PathBuf {
    let with_ram = VmConfigBuilder::new(1, "guest", 1)
        .entry_point(GuestPhysAddr::from_usize(0x7008_0000))
        .memory_region(
            GuestPhysAddr::from_usize(0x7000_0000),
            0x1000_0000,
            MappingFlags::RWX,
            MapType::Alloc,
            Populate::Eager,
        )
        .build()
        .expect("builds");
    let tree = vm_core::guest_tree(&with_ram, &GuestTreeOptions::default()).expect("tree");
    let dtb = vm_core::fdt::to_dtb(&tree).expect("blob");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-ram-0x7000_0000.dtb");
    std::fs::write(&path, dtb).expect("write");
    path
}

/// A config with `memory_regions = []`: without the guest tree the map has no RAM
/// and names it unresolved; with the guest's tree the RAM is its /memory,
/// identity-mapped where the host placed it, and nothing is unresolved.
#[test]
fn guest_ram_is_unresolved_without_guest_dtb_and_read_with_it() {
    let without = inspect(&[RAM_FROM_TREE, "--map", "--audit"]);
    has(
        &without,
        "kernel.memory_regions = []: guest RAM from the guest device tree",
    );
    has(&without, "unresolved (--guest-dtb FILE places it)");
    for kind in [
        "RAM eager",
        "RAM lazy",
        "RAM identical",
        "RAM reserved",
        "RAM linear",
    ] {
        assert_eq!(mapped(&without, kind), 0, "RAM was invented:\n{without}");
    }
    let tree = guest_tree_file();
    let with = inspect(&[RAM_FROM_TREE, "--guest-dtb", tree.to_str().expect("utf-8")]);
    assert!(!with.contains("unresolved"), "{with}");
    assert!(mapped(&with, "RAM identical") > 0, "{with}");
    has(&with, "256 MiB");
}

/// A tree that is not one, or a missing file, is an error that names it.
#[test]
fn bad_trees_are_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args([RAM_FROM_TREE, "--guest-dtb", "Cargo.toml"])
        .current_dir(workspace())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    has(&err, "device tree");
    let out = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args([
            "configs/qemu-virt-aarch64-linux.toml",
            "--host-dtb",
            "no/such.dtb",
        ])
        .current_dir(workspace())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    has(&String::from_utf8_lossy(&out.stderr), "no/such.dtb");
}
