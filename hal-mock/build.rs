//! Embeds the board configs of `configs/` the way a board does: parse and validate
//! each TOML file with vm-core (feature `std`), then write Rust that rebuilds it.

use std::fmt::Write;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"))
        .join("../configs");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("configs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    names.sort();
    let mut out = String::new();
    for path in names {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(&path).expect("read config");
        let config = vm_core::VmConfig::from_toml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().expect("stem").to_string_lossy();
        let ident = stem.replace('-', "_");
        out.push_str(&config.to_rust_source(&ident));
        let _ = writeln!(
            out,
            "/// The TOML text of `configs/{stem}.toml`.\npub const {}_TOML: &str = include_str!({:?});",
            ident.to_uppercase(),
            path.canonicalize().expect("path").display().to_string()
        );
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("configs.rs");
    std::fs::write(dest, out).expect("write configs.rs");
}
