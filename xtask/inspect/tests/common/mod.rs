//! What the inspect tests share: where the workspace is, its board configs, and a
//! text check that shows the whole text when it fails (each test binary uses a part).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vm_core::VmConfig;

/// The workspace root, which the tests' paths are relative to.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace")
        .to_path_buf()
}

/// The board config `configs/<name>.toml`: its path and the config it loads.
pub(crate) fn board_config(name: &str) -> (PathBuf, VmConfig) {
    let path = workspace().join("configs").join(format!("{name}.toml"));
    let config =
        VmConfig::from_toml(&std::fs::read_to_string(&path).expect("read")).expect("loads");
    (path, config)
}

/// `text` contains `want`.
pub(crate) fn has(text: &str, want: &str) {
    assert!(text.contains(want), "no {want:?} in\n{text}");
}
