//! Embeds the board's VM config (`configs/qemu-virt-riscv64.toml`, or the file named
//! by `HV_VM_CONFIG`) as Rust code through vm-core's generator, embeds the test
//! guest's flat binary named by `HV_GUEST_IMAGE` (xtask builds it first), and links
//! bare-metal builds with `link/qemu-virt-riscv64.ld`.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));

    println!("cargo:rerun-if-env-changed=HV_VM_CONFIG");
    let config_path = std::env::var("HV_VM_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| dir.join("../../configs/qemu-virt-riscv64.toml"));
    println!("cargo:rerun-if-changed={}", config_path.display());
    let text = std::fs::read_to_string(&config_path)
        .unwrap_or_else(|e| panic!("{}: {e}", config_path.display()));
    let config = vm_core::VmConfig::from_toml(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", config_path.display()));
    std::fs::write(out.join("vm_config.rs"), config.to_rust_source("vm_config"))
        .expect("write vm_config.rs");

    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    println!("cargo:rerun-if-env-changed=HV_GUEST_IMAGE");
    let guest = match std::env::var("HV_GUEST_IMAGE") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            format!(
                "/// The test guest's flat binary.\npub(crate) static GUEST_IMAGE: &[u8] = include_bytes!({path:?});\n"
            )
        }
        // Host builds (clippy, tests) have no guest; a bare-metal image without one
        // would boot to nothing, so refuse it here with the way to build it.
        Err(_) if os == "none" => panic!(
            "HV_GUEST_IMAGE is not set: build and run this board with `cargo xtask qemu riscv64`"
        ),
        Err(_) => "/// Host build: no guest image.\n#[allow(dead_code)]\npub(crate) static GUEST_IMAGE: &[u8] = &[];\n".to_string(),
    };
    std::fs::write(out.join("guest_image.rs"), guest).expect("write guest_image.rs");

    if os == "none" {
        let script = dir.join("link/qemu-virt-riscv64.ld");
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rerun-if-changed={}", script.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
