//! The constructs of axvisor's VM configs, each as axvisor means it (issue 14), and the
//! keys the project does not know or implement refused by name (issue 11).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use vm_core::{
    BootProtocol, ConfigError, DeviceSpace, DeviceTree, GuestPhysAddr, MapType, MappingFlags,
    VmConfig,
};

const BASE: &str = r#"
[base]
id = 1
name = "vm"
vm_type = 1
cpu_num = 1

[kernel]
entry_point = 0x8020_0000
kernel_path = "guest.bin"
kernel_load_addr = 0x8020_0000
memory_regions = [[0x8000_0000, 0x100_0000, 0x7, 0]]

[devices]
passthrough_devices = []
emu_devices = []
"#;

/// The base config with `from` (unique) replaced by `to`.
fn edit(from: &str, to: &str) -> Result<VmConfig, ConfigError> {
    assert_eq!(BASE.matches(from).count(), 1, "{from} is not unique");
    VmConfig::from_toml(&BASE.replace(from, to))
}

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

/// Issue 11: `interupt_mode` and `phys_cpu_idz` loaded with defaults, silently (the
/// warning went to a logger build scripts never install). Now an unknown key is
/// refused, naming it and the nearest known key, in every table.
#[test]
fn unknown_keys_are_refused_with_the_nearest_known_key() {
    let e = edit(
        "emu_devices = []",
        "emu_devices = []\ninterupt_mode = \"emu\"",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "devices.interupt_mode: unknown key (nearest known key: devices.interrupt_mode)"
    );
    let e = edit("cpu_num = 1", "cpu_num = 1\nphys_cpu_idz = [0]").unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, nearest: "phys_cpu_ids", .. } if key == "phys_cpu_idz"),
        "{e:?}"
    );
    let e = VmConfig::from_toml(&BASE.replace("[kernel]", "[kernal]")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernal: unknown key (nearest known key: kernel)"
    );
    // Inside an inline table too.
    let e = edit(
        "[[0x8000_0000, 0x100_0000, 0x7, 0]]",
        "[{ gpa = 0x8000_0000, size = 0x100_0000, flags = 0x7, map_typ = 0 }]",
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel.memory_regions[0].map_typ: unknown key (nearest known key: kernel.memory_regions[0].map_type)"
    );
}

/// Issue 11: `passthrough_addresses` and `excluded_devices` were dropped and
/// `disk_path` ignored; the first two are now part of the VM, the third is refused
/// as not supported (no axvisor version uses it).
#[test]
fn keys_that_change_the_vm_are_kept_or_refused() {
    let c = edit(
        "emu_devices = []",
        "emu_devices = []\npassthrough_addresses = [[0x2804_1000, 0x1000], { base_gpa = 0x2900_0000, length = 0x10 }]\n\
         excluded_devices = [[\"/pcie@10000000\", \"/timer\"], [\"/watchdog\"]]",
    )
    .unwrap();
    let a = &c.devices.passthrough_addresses;
    assert_eq!((a[0].base_gpa, a[0].length), (gpa(0x2804_1000), 0x1000));
    assert_eq!((a[1].base_gpa, a[1].length), (gpa(0x2900_0000), 0x10));
    assert_eq!(
        c.devices.excluded_devices,
        ["/pcie@10000000", "/timer", "/watchdog"]
    );
    let e = edit(
        "kernel_path = \"guest.bin\"",
        "kernel_path = \"guest.bin\"\ndisk_path = \"disk.img\"",
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::NotSupported { field, .. } if field.path == "kernel.disk_path"),
        "{e:?}"
    );
    // A pass-through address over RAM is refused like a device.
    let e = edit(
        "emu_devices = []",
        "emu_devices = []\npassthrough_addresses = [[0x80ff_f000, 0x2000]]",
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::DeviceOverlapsRam { region: 0, .. }),
        "{e:?}"
    );
}

/// The flat format of 2024 is refused with a message naming it and the newer ones.
#[test]
fn the_flat_2024_format_is_refused_by_name() {
    let flat = "id = 1\nname = \"arceos\"\nvm_type = 1\ncpu_num = 1\nentry_point = 0x8020_0000\n\
                kernel_path = \"a.bin\"\nkernel_load_addr = 0x8020_0000\n\
                memory_regions = [[0x8000_0000, 0x400_0000, 0xf]]\nemu_devices = []\n";
    let e = VmConfig::from_toml(flat).unwrap_err();
    assert!(matches!(e, ConfigError::FlatFormat { .. }), "{e:?}");
    let shown = e.to_string();
    assert!(
        shown.contains("flat format of 2024") && shown.contains("[base]"),
        "{shown}"
    );
    assert!(
        shown.contains("device-graph format of axvmconfig 0.8.4"),
        "{shown}"
    );
}

/// Pass-through entries of one to five elements: missing numbers are 0 (axvisor's
/// serde defaults), so a path with nothing else names a host device-tree node, and a
/// name without a length is refused as axvisor refuses it.
#[test]
fn passthrough_entries_of_one_to_five_elements() {
    let c = edit(
        "passthrough_devices = []",
        r#"passthrough_devices = [["/"], ["/soc/uart@9000000"], ["uart", 0x900_0000, 0x900_0000, 0x1000], { name = "rtc", base_gpa = 0x901_0000, base_hpa = 0x901_0000, length = 0x1000, irq_id = 34 }]"#,
    )
    .unwrap();
    let d = &c.devices.passthrough_devices;
    assert!(d[0].host_node && d[0].name == "/");
    assert!(d[1].host_node && d[1].name == "/soc/uart@9000000");
    assert!(!d[2].host_node && d[2].irq == 0 && d[2].length == 0x1000);
    assert_eq!((d[3].name.as_str(), d[3].irq), ("rtc", 34));
    let e = edit(
        "passthrough_devices = []",
        r#"passthrough_devices = [["uart", 0x900_0000]]"#,
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::ZeroSize { .. }), "{e:?}");
    let e = edit(
        "passthrough_devices = []",
        r#"passthrough_devices = [["soc/uart"]]"#,
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::ZeroSize { .. }),
        "a relative name is no node: {e:?}"
    );
    // A config with references cannot build a VM until they are resolved.
    let e = edit(
        "passthrough_devices = []",
        r#"passthrough_devices = [["/"]]"#,
    )
    .unwrap()
    .into_valid()
    .unwrap_err();
    assert!(matches!(e, ConfigError::UnresolvedHostNode { .. }), "{e:?}");
}

/// Inline-table forms of regions and devices (serde reads a struct from a table as
/// well as from an array), with unknown keys refused.
#[test]
fn inline_tables_are_read_like_arrays() {
    let arrays = edit(
        "emu_devices = []",
        r#"emu_devices = [["dev", 0x0b00_0000, 0x1000, 5, 0xe1, [1]]]"#,
    )
    .unwrap();
    let tables = VmConfig::from_toml(
        &BASE
            .replace(
                "[[0x8000_0000, 0x100_0000, 0x7, 0]]",
                "[{ gpa = 0x8000_0000, size = 0x100_0000, flags = 0x7, map_type = 0 }]",
            )
            .replace(
                "emu_devices = []",
                r#"[[devices.emu_devices]]
name = "dev"
base_gpa = 0x0b00_0000
length = 0x1000
irq_id = 5
emu_type = 0xe1
cfg_list = [1]"#,
            ),
    )
    .unwrap();
    assert_eq!(arrays, tables);
    let e = VmConfig::from_toml(&BASE.replace(
        "[[0x8000_0000, 0x100_0000, 0x7, 0]]",
        "[{ gpa = 0x8000_0000, size = 0x100_0000, flags = 0x7 }]",
    ))
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::Missing { field } if field.part == Some("map_type")),
        "{e:?}"
    );
}

/// Emulated-device type numbers axvisor does not define are refused, as its parser
/// refuses them; on x86 a console or PIT below 0x1_0000 is a port-I/O device, not a
/// guest-physical range (so it may sit "over" RAM at GPA 0x3f8).
#[test]
fn emulated_devices_types_and_port_io() {
    let e = edit(
        "emu_devices = []",
        r#"emu_devices = [["virtio", 0x0a00_0000, 0x200, 1, 5, [1]]]"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "devices.emu_devices[0].emu_type: unknown emulated device type 0x5 (axvisor defines 0-3, 0xa, 0x20-0x25, 0x30, 0xe1-0xe3)"
    );
    let x86 = BASE
        .replace("0x8000_0000, 0x100_0000", "0x0, 0x100_0000")
        .replace("0x8020_0000", "0x20_0000")
        .replace(
            "emu_devices = []",
            r#"emu_devices = [["x86-com1", 0x3f8, 8, 4, 2, []], ["x86-pit", 0x40, 4, 0, 0x24, []], ["ioapic", 0xfec0_0000, 0x1000, 0, 0x23, []]]
passthrough_ports = [[0x60, 0x10]]"#,
        );
    let c = VmConfig::from_toml(&x86).unwrap();
    let spaces: Vec<_> = c.devices.emu_devices.iter().map(|d| d.space).collect();
    assert_eq!(
        spaces,
        [DeviceSpace::Port, DeviceSpace::Port, DeviceSpace::Mmio]
    );
    assert_eq!(
        (
            c.devices.passthrough_ports[0].base,
            c.devices.passthrough_ports[0].length
        ),
        (0x60, 0x10)
    );
    // Ports are checked against each other.
    let e = VmConfig::from_toml(&x86.replace("[[0x60, 0x10]]", "[[0x3f0, 0x10]]")).unwrap_err();
    assert!(
        matches!(e, ConfigError::DeviceOverlap { at: 0x3f8, .. }),
        "{e:?}"
    );
    let e = VmConfig::from_toml(&x86.replace("[[0x60, 0x10]]", "[[0xfff0, 0x20]]")).unwrap_err();
    assert!(matches!(e, ConfigError::PortRange { .. }), "{e:?}");
}

/// `enable_bios` and `boot_protocol` together, as axvmconfig 0.8 checks them.
#[test]
fn boot_protocols() {
    let bios = |extra: &str| {
        edit(
            "kernel_path = \"guest.bin\"",
            &format!("kernel_path = \"guest.bin\"\n{extra}"),
        )
    };
    let c =
        bios("enable_bios = true\nbios_path = \"bios.bin\"\nbios_load_addr = 0x8000_8000").unwrap();
    assert_eq!(c.kernel.boot_protocol, BootProtocol::Multiboot);
    let e = bios("enable_bios = true\nbios_path = \"bios.bin\"").unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::NoFirmware {
                protocol: BootProtocol::Multiboot,
                ..
            }
        ),
        "{e:?}"
    );
    let e = bios("boot_protocol = \"uefi\"").unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::BootProtocolConflict {
                enable_bios: false,
                ..
            }
        ),
        "{e:?}"
    );
    let e = bios("enable_bios = true\nboot_protocol = \"direct\"").unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::BootProtocolConflict {
                enable_bios: true,
                ..
            }
        ),
        "{e:?}"
    );
    let e = bios("enable_bios = true\nboot_protocol = \"uefi\"\nbios_load_addr = 0x8000_0000")
        .unwrap_err();
    assert!(
        matches!(e, ConfigError::NoFirmware { field, protocol: BootProtocol::Uefi } if field.path == "kernel.uefi_firmware_path"),
        "{e:?}"
    );
    let c = bios("enable_bios = true\nboot_protocol = \"efi\"\nuefi_firmware_path = \"OVMF.fd\"\nbios_load_addr = 0x8000_0000").unwrap();
    assert_eq!(c.kernel.boot_protocol, BootProtocol::Uefi);
}

/// `entry_point` / `kernel_load_addr` left out (axvisor's configs of 2025-12 to
/// 2026-01, read by the axvm of that time): the kernel goes 2 MiB into the first
/// memory region and starts at its load address.
#[test]
fn omitted_entry_and_load_address_come_from_the_layout() {
    let c = VmConfig::from_toml(
        &BASE
            .replace("entry_point = 0x8020_0000\n", "")
            .replace("kernel_load_addr = 0x8020_0000\n", ""),
    )
    .unwrap();
    assert_eq!(c.kernel.kernel_load_addr, gpa(0x8020_0000));
    assert_eq!(c.kernel.entry_point, gpa(0x8020_0000));
    let small = BASE
        .replace("entry_point = 0x8020_0000\n", "")
        .replace("kernel_load_addr = 0x8020_0000\n", "")
        .replace("0x100_0000, 0x7, 0", "0x20_0000, 0x7, 0");
    let e = VmConfig::from_toml(&small).unwrap_err();
    assert!(matches!(e, ConfigError::NoKernelPlace { .. }), "{e:?}");
}

/// Identical regions are placed by the host, so they may overlap on paper (with each
/// other and with alloc RAM), may be uncached host memory, and may hold a kernel
/// written outside them when they come first; allocated RAM may not be DEVICE.
#[test]
fn identical_regions_overlap_on_paper() {
    let c = edit(
        "[[0x8000_0000, 0x100_0000, 0x7, 0]]",
        "[[0x4000_0000, 0x4000_0000, 0x7, 1], [0x0, 0x10_f000, 0x37, 1], [0x4000_0000, 0x1000, 0x3, 0]]",
    )
    .unwrap();
    assert_eq!(
        c.kernel.memory_regions[1].flags,
        MappingFlags::from_bits(0x37).unwrap()
    );
    assert_eq!(c.kernel.memory_regions[0].map_type, MapType::Identical);
    let e = edit(
        "[[0x8000_0000, 0x100_0000, 0x7, 0]]",
        "[[0x8000_0000, 0x100_0000, 0x17, 0]]",
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::DeviceFlagOnRam { .. }), "{e:?}");
    // The entry keeps its offset from the load address, inside the first region.
    let e = VmConfig::from_toml(
        &BASE
            .replace("entry_point = 0x8020_0000", "entry_point = 0x4000_0000")
            .replace(
                "kernel_load_addr = 0x8020_0000",
                "kernel_load_addr = 0x4010_0000",
            )
            .replace("0x100_0000, 0x7, 0", "0x100_0000, 0x7, 1"),
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::EntryOutsideKernelRegion { .. }),
        "{e:?}"
    );
}

/// The device-graph format of axvmconfig 0.8.4 and later: `guest_type`, physical
/// devices by device-tree path, unknown keys refused (the sectioned keys too).
#[test]
fn the_device_graph_format() {
    let graph = r#"
[base]
id = 1
name = "GuestVM-aarch64"
guest_type = "passthrough"
cpu_num = 1
phys_cpu_sets = [1]

[kernel]
entry_point = 0x4008_0000
kernel_path = "arceos-aarch64.bin"
kernel_load_addr = 0x4008_0000
image_location = "fs"
memory_regions = [[0x8000_0000, 0x4000_0000, 0x7, 1]]

[devices]
passthrough = [{ path = "/soc/uart@9000000" }]
disabled = [{ path = "/pcie@10000000" }]
"#;
    let c = VmConfig::from_toml(graph).unwrap();
    let d = &c.devices.passthrough_devices;
    assert_eq!(d.len(), 2);
    assert!(
        d[0].host_node && d[0].name == "/",
        "pass-through guest: every host device"
    );
    assert_eq!(d[1].name, "/soc/uart@9000000");
    assert_eq!(c.devices.excluded_devices, ["/pcie@10000000"]);
    let e = VmConfig::from_toml(&graph.replace("disabled = [", "emu_devices = []\ndisabled = ["))
        .unwrap_err();
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, .. } if key == "emu_devices"),
        "{e:?}"
    );
    let e = VmConfig::from_toml(&graph.replace("/pcie@10000000", "/soc/uart@9000000")).unwrap_err();
    assert!(matches!(e, ConfigError::BadNodePath { .. }), "{e:?}");
    let e =
        VmConfig::from_toml(&graph.replace("{ path = \"/soc/uart@9000000\" }", "{ path = \"/\" }"))
            .unwrap_err();
    assert!(matches!(e, ConfigError::BadNodePath { .. }), "{e:?}");
    let e = VmConfig::from_toml(&format!(
        "{graph}\n[[devices.virtual]]\nid = \"console0\"\nmodel = \"arm-pl011\"\n"
    ))
    .unwrap_err();
    assert!(matches!(e, ConfigError::NotSupported { .. }), "{e:?}");
    let virtualized =
        VmConfig::from_toml(&graph.replace("\"passthrough\"", "\"virtualized\"")).unwrap();
    assert_eq!(virtualized.devices.passthrough_devices.len(), 1);
}

fn qemu_dtb(arch: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/qemu-virt-{arch}.dtb",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Host device-tree references resolved against QEMU's own virt trees: `"/"` is every
/// device but the excluded subtrees, a node path is that node with its first
/// interrupt as the ID a hypervisor injects (GIC SPI n = 32 + n).
#[test]
fn host_nodes_resolve_against_qemu_virt_trees() {
    let bytes = qemu_dtb("aarch64");
    let host = DeviceTree::new(&bytes).unwrap();
    let mut c = edit(
        "passthrough_devices = []",
        "passthrough_devices = [[\"/pl011@9000000\"], [\"/\"]]\nexcluded_devices = [[\"/pcie@10000000\"], [\"/intc@8000000\"], [\"/virtio_mmio@a000000\"]]",
    )
    .unwrap();
    c.resolve_host_devices(&host).unwrap();
    let d = &c.devices.passthrough_devices;
    assert_eq!(
        (
            d[0].name.as_str(),
            d[0].base_gpa,
            d[0].base_hpa.as_usize(),
            d[0].length,
            d[0].irq
        ),
        ("/pl011@9000000", gpa(0x900_0000), 0x900_0000, 0x1000, 33)
    );
    let names: Vec<&str> = d.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"/pl031@9010000") && names.contains(&"/virtio_mmio@a000200"));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("/intc") || n.starts_with("/pcie"))
    );
    assert!(!names.contains(&"/virtio_mmio@a000000"), "excluded");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("/memory") || n.starts_with("/cpus"))
    );
    assert!(!d.iter().any(|p| p.host_node));
    // The uart twice (by path and under "/") is one mapping with one offset: fine.
    let valid = c.into_valid().unwrap();
    assert_eq!(valid.cpu_num, 1);
    // riscv64: the devices under /soc (empty `ranges`: identity).
    let bytes = qemu_dtb("riscv64");
    let host = DeviceTree::new(&bytes).unwrap();
    let mut c = edit(
        "passthrough_devices = []",
        "passthrough_devices = [[\"/soc/serial@10000000\"]]",
    )
    .unwrap();
    c.resolve_host_devices(&host).unwrap();
    let d = &c.devices.passthrough_devices[0];
    assert_eq!((d.base_gpa, d.length, d.irq), (gpa(0x1000_0000), 0x100, 10));
    let mut c = edit(
        "passthrough_devices = []",
        "passthrough_devices = [[\"/soc/nothing\"]]",
    )
    .unwrap();
    let e = c.resolve_host_devices(&host).unwrap_err();
    assert!(matches!(e, ConfigError::NoSuchNode { .. }), "{e:?}");
}

/// `memory_regions = []` with a `dtb_path`: the guest RAM is the `/memory` nodes of
/// that device tree, identical RAM as axvisor adds it; without a `dtb_path` there is
/// no RAM at all.
#[test]
fn memory_from_the_guest_device_tree() {
    let mut c = edit(
        "memory_regions = [[0x8000_0000, 0x100_0000, 0x7, 0]]",
        "memory_regions = []\ndtb_path = \"guest.dtb\"",
    )
    .unwrap();
    assert!(c.memory_from_dtb());
    let e = c.clone().into_valid().unwrap_err();
    assert!(matches!(e, ConfigError::MemoryNotRead { .. }), "{e:?}");
    let bytes = qemu_dtb("riscv64");
    c.memory_from_guest_dtb(&DeviceTree::new(&bytes).unwrap())
        .unwrap();
    let r = &c.kernel.memory_regions;
    assert_eq!(
        (r.len(), r[0].gpa, r[0].size, r[0].map_type),
        (1, gpa(0x8000_0000), 128 << 20, MapType::Identical)
    );
    c.into_valid().unwrap();
    let e = edit(
        "memory_regions = [[0x8000_0000, 0x100_0000, 0x7, 0]]",
        "memory_regions = []",
    )
    .unwrap_err();
    assert!(matches!(e, ConfigError::NoMemory), "{e:?}");
}

/// A device tree that is not one is an error, never a panic.
#[test]
fn a_bad_device_tree_is_an_error() {
    assert!(matches!(
        DeviceTree::new(b"not a device tree"),
        Err(ConfigError::DeviceTree { .. })
    ));
    let mut bytes = qemu_dtb("aarch64");
    bytes.truncate(bytes.len() / 2);
    assert!(DeviceTree::new(&bytes).is_err());
}
