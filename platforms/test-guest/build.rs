//! Links the guest for bare-metal targets with `link/<arch>.ld` (the guest's load
//! address is its board's guest RAM base).

fn main() {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    if os == "none" {
        println!("cargo:rustc-link-arg-bins=-T{dir}/link/{arch}.ld");
        println!("cargo:rerun-if-changed=link/{arch}.ld");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
