//! `cargo xtask inspect CONFIG.toml`: builds the VM a config describes on
//! `hal-mock` (simulated host memory, the real nested tables of the chosen format)
//! and answers the troubleshooting guide's questions about it with `vm-core`'s
//! diagnostics: the guest-physical map, the permission and layout audit, per-level
//! walks, what the fault path would do with an access, and a picture of the map.
//!
//! - [`Format`]: the nested formats (`--format`), and the guess from the config's
//!   file name.
//! - [`machine`]: the simulated host a config needs (identity-mapped RAM where the
//!   config asks for it, frames for tables and allocated RAM beside it).
//! - [`Inspected`]: the VM built for a format, behind a format-independent
//!   interface.
//! - [`picture`]: the map as SVG (log-scaled, coloured by kind) and as an HTML page.
//! - [`Unresolved`]: what a config names but only a device tree places (host nodes
//!   of pass-through entries, guest RAM from the guest's tree); [`resolve`] reads the
//!   trees given (`--host-dtb`, `--guest-dtb`), the rest is shown as unresolved.
//!
//! Host-only (`std`); it depends on the portable crates, never the reverse.

pub mod machine;
pub mod picture;

mod format;
mod inspected;
mod unresolved;

pub use format::Format;
pub use inspected::{Built, Error, Inspected, build, build_faulty, inspect};
pub use unresolved::{Unresolved, resolve, take_unresolved};
