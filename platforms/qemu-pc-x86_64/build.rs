//! Embeds what the image needs at build time: the VM config (`configs/qemu-pc-x86_64.toml`,
//! or `$HV_VM_CONFIG`) turned into Rust by vm-core's code generator, the test guest's
//! flat binary (`$HV_GUEST_IMAGE`, set by `cargo xtask qemu x86_64`; empty otherwise),
//! and, on bare metal, the linker script.

use std::path::{Path, PathBuf};

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));

    let config = std::env::var_os("HV_VM_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("../../configs/qemu-pc-x86_64.toml"));
    println!("cargo:rerun-if-env-changed=HV_VM_CONFIG");
    println!("cargo:rerun-if-changed={}", config.display());
    let text = std::fs::read_to_string(&config)
        .unwrap_or_else(|e| panic!("VM config {}: {e}", config.display()));
    let parsed = vm_core::VmConfig::from_toml(&text)
        .unwrap_or_else(|e| panic!("VM config {}: {e}", config.display()));
    write(
        &out.join("vm_config.rs"),
        parsed.to_rust_source("vm_config").as_bytes(),
    );

    println!("cargo:rerun-if-env-changed=HV_GUEST_IMAGE");
    let guest = match std::env::var_os("HV_GUEST_IMAGE") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            std::fs::read(&path)
                .unwrap_or_else(|e| panic!("HV_GUEST_IMAGE {}: {e}", path.display()))
        }
        None => Vec::new(),
    };
    write(&out.join("guest.bin"), &guest);

    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "none" {
        let script = dir.join("link/qemu-pc-x86_64.ld");
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rerun-if-changed={}", script.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// Writes `bytes` unless the file already holds them (keeps rebuilds incremental).
fn write(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
