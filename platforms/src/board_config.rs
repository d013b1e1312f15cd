//! A board's VM config made ready for the machine it boots on: what the config leaves
//! to that machine is read from device trees before the config is validated for
//! `Vm::new` (`VmConfig::into_valid`, which refuses any of it left unresolved).
//!
//! - pass-through entries that name a node of the host's device tree
//!   (`["/soc/serial@10000000"]`, `["/"]` = all but `excluded_devices`) become that
//!   node's ranges and interrupt, read from the tree the board's firmware handed it
//!   (riscv64: OpenSBI's a1; aarch64: QEMU's x0);
//! - `memory_regions = []` with a `dtb_path` takes guest RAM from the `/memory` nodes
//!   of the guest's own device tree, when the board has that tree as bytes (a board
//!   that builds the guest's tree from the config cannot: `into_valid` then refuses
//!   the config, naming `kernel.memory_regions`).

use vm_core::{ConfigError, DeviceTree, VmConfig};

/// Resolves `config`'s device-tree references against the host tree `host_dtb` and,
/// when it takes its RAM from the guest's tree and the board has one, against
/// `guest_dtb`. A tree that does not parse, a node the host lacks or a value too
/// large for the host is the error (naming the entry); `config` is unchanged then.
pub fn resolve_device_trees(
    config: &mut VmConfig,
    host_dtb: &[u8],
    guest_dtb: Option<&[u8]>,
) -> Result<(), ConfigError> {
    let mut resolved = config.clone();
    resolved.resolve_host_devices(&DeviceTree::new(host_dtb)?)?;
    if resolved.memory_from_dtb()
        && let Some(guest) = guest_dtb
    {
        resolved.memory_from_guest_dtb(&DeviceTree::new(guest)?)?;
    }
    *config = resolved;
    Ok(())
}
