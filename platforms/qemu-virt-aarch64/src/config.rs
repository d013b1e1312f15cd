//! The VM config a run uses: the embedded one with its host device-tree references
//! resolved against the tree QEMU hands the hypervisor (issue 14), through
//! [`platforms::board_config::resolve_device_trees`]. A pass-through entry may name a
//! host node (`["/pl011@9000000"]`, `["/"]` for every device but `excluded_devices`);
//! its address, size and interrupt come from that node, as axvisor reads them. A
//! config taking its RAM from a guest device tree (`memory_regions = []`) is left for
//! `into_valid` to refuse: this board builds its guests' trees from the config, so it
//! has no guest tree to read. Tested on the host with QEMU's own tree.

use alloc::format;
use alloc::string::String;

use vm_core::VmConfig;

/// `config` with every pass-through entry that names a host node replaced by that
/// node's devices in `host_dtb` (the blob QEMU placed at the start of RAM, exactly its
/// `totalsize` bytes; `None` when there was none).
pub(crate) fn resolve(mut config: VmConfig, host_dtb: Option<&[u8]>) -> Result<VmConfig, String> {
    match host_dtb {
        Some(dtb) => platforms::board_config::resolve_device_trees(&mut config, dtb, None)
            .map_err(|e| format!("the VM config against the host device tree: {e}"))?,
        None if config
            .devices
            .passthrough_devices
            .iter()
            .any(|d| d.host_node) =>
        {
            return Err(
                "the VM config names host device-tree nodes and QEMU gave no device tree".into(),
            );
        }
        None => {}
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU virt's own tree (`-M virt,virtualization=on,gic-version=3`, dumped with
    /// `dumpdtb`), vm-core's test data.
    fn qemu_dtb() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../vm-core/tests/data/qemu-virt-aarch64.dtb"
        );
        std::fs::read(path).unwrap()
    }

    fn config(name: &str) -> VmConfig {
        let path = format!("{}/../../configs/{name}", env!("CARGO_MANIFEST_DIR"));
        VmConfig::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The Linux config names the PL011 by its host path; resolved, it is the host's
    /// UART page with SPI 1 (INTID 33), identity-mapped.
    #[test]
    fn the_linux_configs_pl011_comes_from_the_host_tree() {
        let unresolved = config("qemu-virt-aarch64-linux.toml");
        assert!(unresolved.devices.passthrough_devices[0].host_node);
        let c = resolve(unresolved, Some(&qemu_dtb())).unwrap();
        let uart = &c.devices.passthrough_devices[..];
        assert_eq!(uart.len(), 1, "{uart:?}");
        assert_eq!(uart[0].name, "/pl011@9000000");
        assert_eq!(uart[0].base_gpa.as_usize(), 0x900_0000);
        assert_eq!(uart[0].base_hpa.as_usize(), 0x900_0000);
        assert_eq!(uart[0].length, 0x1000);
        assert_eq!(uart[0].irq, 33);
        assert!(c.into_valid().is_ok());
    }

    /// Without a host tree a config naming host nodes is refused, one without them
    /// (the test guest's) is left as it was; a path the tree lacks is named; a bad
    /// blob is an error, not a panic.
    #[test]
    fn unresolvable_configs_are_refused_by_reason() {
        let err = resolve(config("qemu-virt-aarch64-linux.toml"), None).unwrap_err();
        assert!(err.contains("no device tree"), "{err}");
        let test = config("qemu-virt-aarch64.toml");
        assert_eq!(resolve(test.clone(), None).unwrap(), test);
        let mut missing = config("qemu-virt-aarch64-linux.toml");
        missing.devices.passthrough_devices[0].name = String::from("/pl011@1234");
        let err = resolve(missing, Some(&qemu_dtb())).unwrap_err();
        assert!(err.contains("/pl011@1234"), "{err}");
        let dtb = qemu_dtb();
        for cut in [0, 8, 40, dtb.len() - 1] {
            let err = resolve(config("qemu-virt-aarch64.toml"), Some(&dtb[..cut])).unwrap_err();
            assert!(err.contains("device tree"), "{err}");
        }
    }

    /// RAM from a guest device tree cannot be read here: `into_valid` refuses the
    /// config, naming the field.
    #[test]
    fn ram_from_a_guest_tree_is_refused() {
        let mut c = config("qemu-virt-aarch64-linux.toml");
        c.kernel.memory_regions.clear();
        let c = resolve(c, Some(&qemu_dtb())).unwrap();
        let err = c.into_valid().unwrap_err().to_string();
        assert!(err.contains("kernel.memory_regions"), "{err}");
    }
}
