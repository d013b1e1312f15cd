//! What a config names but only a device tree can place ([`Unresolved`]): pass-through
//! entries naming a node of the host's tree (`["/pl011@9000000"]`, `["/"]`), and guest
//! RAM that comes from the guest's own tree (`memory_regions = []` with a `dtb_path`).
//! [`resolve`] reads the trees that were given (`--host-dtb`, `--guest-dtb`);
//! [`take_unresolved`] takes out what is left, so the rest of the config can be built
//! and shown: the output names what was left out and never invents an address for it.

use std::fmt;

use vm_core::{ConfigError, DeviceTree, VmConfig};

/// A part of a config that has no address until a device tree is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// `devices.passthrough_devices[index]` names node `path` of the host's tree: its
    /// address, size and interrupt are that node's (`--host-dtb FILE`).
    HostNode {
        /// The entry's index in the config.
        index: usize,
        /// The node's path.
        path: String,
    },
    /// The guest RAM is the `/memory` nodes of the guest's tree, `dtb_path`
    /// (`--guest-dtb FILE`).
    GuestRam {
        /// The config's `dtb_path`.
        dtb_path: String,
    },
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HostNode { index, path } => write!(
                f,
                "devices.passthrough_devices[{index}] \"{path}\": pass-through of a host \
                 device-tree node, unresolved (--host-dtb FILE places it)"
            ),
            Self::GuestRam { dtb_path } => write!(
                f,
                "kernel.memory_regions = []: guest RAM from the guest device tree \
                 \"{dtb_path}\", unresolved (--guest-dtb FILE places it)"
            ),
        }
    }
}

/// Resolves `config` against the trees given: `host` for the pass-through entries
/// naming host nodes, `guest` for RAM from the guest's tree. What is left is taken
/// out by [`crate::inspect`] and named in [`crate::Inspected::unresolved`]. Errors: a
/// tree that does not parse, a node the host tree lacks, RAM the guest tree cannot
/// give.
pub fn resolve(
    config: &mut VmConfig,
    host: Option<&[u8]>,
    guest: Option<&[u8]>,
) -> Result<(), ConfigError> {
    if let Some(bytes) = host {
        config.resolve_host_devices(&DeviceTree::new(bytes)?)?;
    }
    if let Some(bytes) = guest {
        config.memory_from_guest_dtb(&DeviceTree::new(bytes)?)?;
    }
    Ok(())
}

/// Takes the unresolved parts out of `config` (host-node entries are removed; RAM
/// from the guest's tree stays absent) and returns them.
pub fn take_unresolved(config: &mut VmConfig) -> Vec<Unresolved> {
    let devices = &mut config.devices.passthrough_devices;
    let mut out: Vec<Unresolved> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.host_node)
        .map(|(index, d)| Unresolved::HostNode {
            index,
            path: d.name.clone(),
        })
        .collect();
    devices.retain(|d| !d.host_node);
    if config.memory_from_dtb() {
        out.push(Unresolved::GuestRam {
            dtb_path: config.kernel.dtb_path.clone().unwrap_or_default(),
        });
    }
    out
}
