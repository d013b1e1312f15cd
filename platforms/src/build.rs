//! Build-script support shared by the boards (feature `build`, host only): embed the
//! board's VM config as Rust code through vm-core's generator, embed the test guest's
//! flat binary and, for Linux runs, the kernel and initramfs, and link bare-metal
//! builds with the board's linker script.

extern crate std;

use std::path::{Path, PathBuf};
use std::string::String;
use std::{format, println};

/// Does everything a board's `build.rs` needs, for board `board` (its config is
/// `configs/<board>.toml` unless `HV_VM_CONFIG` names another file, its linker script
/// `link/<board>.ld`) whose xtask architecture is `arch`. Writes `vm_config.rs` (a
/// `vm_config()` function), `guest_image.rs` (a `GUEST_IMAGE` static) and
/// `linux_images.rs` (`LINUX_KERNEL` and `LINUX_INITRD`: the files `HV_LINUX_KERNEL` and
/// `HV_LINUX_INITRD` name, empty when unset) to `OUT_DIR`.
///
/// # Panics
///
/// On a config that does not parse or validate (with the file and the error), and on
/// a bare-metal build without `HV_GUEST_IMAGE` (with the command that sets it): both
/// are build errors, reported by cargo.
pub fn board(board: &str, arch: &str) {
    let dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR"));
    let bare_metal = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none");

    println!("cargo:rerun-if-env-changed=HV_VM_CONFIG");
    let config_path = std::env::var_os("HV_VM_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join(format!("../../configs/{board}.toml")));
    println!("cargo:rerun-if-changed={}", config_path.display());
    let text = std::fs::read_to_string(&config_path)
        .unwrap_or_else(|e| panic!("VM config {}: {e}", config_path.display()));
    let config = vm_core::VmConfig::from_toml(&text)
        .unwrap_or_else(|e| panic!("VM config {}: {e}", config_path.display()));
    write(
        &out.join("vm_config.rs"),
        &config.to_rust_source("vm_config"),
    );

    println!("cargo:rerun-if-env-changed=HV_GUEST_IMAGE");
    let guest = match std::env::var("HV_GUEST_IMAGE") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            format!(
                "/// The test guest's flat binary (`HV_GUEST_IMAGE`).\n\
                 #[allow(dead_code)] // host builds (clippy, tests) never boot it\n\
                 pub(crate) static GUEST_IMAGE: &[u8] = include_bytes!({path:?});\n"
            )
        }
        // An image without its guest would boot to nothing: refuse, saying how.
        Err(_) if bare_metal => panic!(
            "HV_GUEST_IMAGE is not set: build and run this board with `cargo xtask qemu {arch}`"
        ),
        Err(_) => String::from(
            "/// Host build: no guest image.\n\
             #[allow(dead_code)]\n\
             pub(crate) static GUEST_IMAGE: &[u8] = &[];\n",
        ),
    };
    write(&out.join("guest_image.rs"), &guest);

    let mut linux = String::new();
    for (var, name, what) in [
        (
            "HV_LINUX_KERNEL",
            "LINUX_KERNEL",
            "The Linux kernel's boot image",
        ),
        (
            "HV_LINUX_INITRD",
            "LINUX_INITRD",
            "The Linux guest's initramfs",
        ),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        let bytes = match std::env::var(var) {
            Ok(path) => {
                println!("cargo:rerun-if-changed={path}");
                format!("include_bytes!({path:?})")
            }
            Err(_) => String::from("&[]"),
        };
        linux += &format!(
            "/// {what} (`{var}`; empty when unset).\n\
             #[allow(dead_code)] // only Linux runs use it\n\
             pub(crate) static {name}: &[u8] = {bytes};\n"
        );
    }
    write(&out.join("linux_images.rs"), &linux);

    if bare_metal {
        let script = dir.join(format!("link/{board}.ld"));
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rerun-if-changed={}", script.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is set by cargo for build scripts"))
}

/// Writes `text` unless the file already holds it (keeps rebuilds incremental).
fn write(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
