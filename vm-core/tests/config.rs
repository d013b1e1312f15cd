//! VM config loading: the board configs of `configs/` load with the board layouts
//! (`platforms::layouts`), and each bad config gives its field-named error. This test binary
//! uses only the config part of vm-core and links without any `VmHal`
//! implementation, as a board's build script does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use vm_core::{
    ConfigError, DeviceSpace, GuestPhysAddr, ImageLocation, InterruptMode, MapType, MappingFlags,
    Populate, VmConfig,
};

fn load(name: &str) -> VmConfig {
    let path = format!("{}/../configs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    VmConfig::from_toml(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

/// Checks the layout common to the three boards, with RAM at `ram`.
fn check_layout(c: &VmConfig, ram: usize, entry: usize, lazy: usize, ro: usize, mmio: usize) {
    assert_eq!(c.cpu_num, 2);
    assert_eq!(c.kernel.entry_point, gpa(entry));
    assert_eq!(c.kernel.kernel_load_addr, gpa(entry));
    assert_eq!(c.kernel.image_location, ImageLocation::Memory);
    let r = &c.kernel.memory_regions;
    assert_eq!(r.len(), 3);
    assert_eq!(
        (
            r[0].gpa,
            r[0].size,
            r[0].flags,
            r[0].map_type,
            r[0].populate
        ),
        (
            gpa(ram),
            0x100_0000,
            MappingFlags::RWX,
            MapType::Alloc,
            Populate::Eager
        )
    );
    assert_eq!(
        (
            r[1].gpa,
            r[1].size,
            r[1].flags,
            r[1].map_type,
            r[1].populate
        ),
        (
            gpa(lazy),
            0x20_0000,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy
        )
    );
    assert_eq!(
        (r[2].gpa, r[2].size, r[2].flags, r[2].populate),
        (gpa(ro), 0x1000, MappingFlags::READ, Populate::Eager)
    );
    // The MMIO devices (the x86 board adds its COM1 on the port bus).
    let d: Vec<_> = c
        .devices
        .emu_devices
        .iter()
        .filter(|d| d.space == DeviceSpace::Mmio)
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].name.as_str(), d[0].base_gpa, d[0].length),
        ("test-device", gpa(mmio), 0x1000)
    );
    assert_eq!(c.devices.interrupt_mode, InterruptMode::NoIrq);
}

#[test]
fn board_configs_load() {
    let a = load("qemu-virt-aarch64.toml");
    check_layout(
        &a,
        0x4000_0000,
        0x4000_0000,
        0x5000_0000,
        0x5100_0000,
        0x0b00_0000,
    );
    let pt = &a.devices.passthrough_devices;
    assert_eq!(pt.len(), 1);
    assert_eq!(
        (
            pt[0].name.as_str(),
            pt[0].base_gpa.as_usize(),
            pt[0].base_hpa.as_usize(),
            pt[0].length,
            pt[0].irq
        ),
        ("pl011@9000000", 0x0900_0000, 0x0900_0000, 0x1000, 33)
    );
    let r = load("qemu-virt-riscv64.toml");
    check_layout(
        &r,
        0x8000_0000,
        0x8000_0000,
        0x9000_0000,
        0x9100_0000,
        0x0b00_0000,
    );
    assert!(r.devices.passthrough_devices.is_empty());
    let x = load("qemu-pc-x86_64.toml");
    check_layout(&x, 0, 0x10_0000, 0x4000_0000, 0x4100_0000, 0xd000_0000);
    assert!(x.devices.passthrough_devices.is_empty());
    // The guest's COM1 is a port device (x86 console type 2 below port 0x1_0000).
    let com1: Vec<_> = x
        .devices
        .emu_devices
        .iter()
        .filter(|d| d.space == DeviceSpace::Port)
        .map(|d| (d.name.as_str(), d.base_gpa.as_usize(), d.length))
        .collect();
    assert_eq!(com1, [("com1", 0x3f8, 8)]);
}

#[test]
fn axvisor_example_loads_unchanged() {
    // axvisor's classic x86 example (comments trimmed), with its extra keys.
    let c = VmConfig::from_toml(
        r#"
        [base]
        id = 1
        name = "arceos"
        vm_type = 1
        cpu_num = 1
        phys_cpu_sets = [1]
        [kernel]
        entry_point = 0x20_0000
        image_location = "fs"
        bios_path = "axvm-bios.bin"
        bios_load_addr = 0x8000
        kernel_path = "helloworld_x86_64-qemu-q35.bin"
        kernel_load_addr = 0x20_0000
        memory_regions = [
            [0x0000_0000, 0x100_0000, 0x7, 0],
        ]
        [devices]
        emu_devices = []
        passthrough_devices = [
            ["IO APIC", 0xfec0_0000, 0xfec0_0000, 0x1000, 0x1],
            ["Local APIC", 0xfee0_0000, 0xfee0_0000, 0x1000, 0x1],
            ["HPET", 0xfed0_0000, 0xfed0_0000, 0x1000, 0x1],
        ]
        "#,
    )
    .unwrap();
    assert_eq!(c.phys_cpu_sets, Some(vec![1]));
    assert_eq!(c.kernel.bios_load_addr, Some(gpa(0x8000)));
    assert_eq!(c.devices.passthrough_devices.len(), 3);
}

/// A valid base config with `edit` applied to its text (a plain replacement of a
/// unique substring).
fn variant(from: &str, to: &str) -> Result<VmConfig, ConfigError> {
    let base = r#"
[base]
id = 1
name = "vm"
vm_type = 1
cpu_num = 2
phys_cpu_ids = [0, 1]

[kernel]
entry_point = 0x8000_0000
image_location = "memory"
kernel_path = "guest.bin"
kernel_load_addr = 0x8000_0000
memory_regions = [
    [0x8000_0000, 0x100_0000, 0x7, 0],
    [0x9000_0000, 0x20_0000, 0x3, 0, 1],
]

[devices]
passthrough_devices = [["uart", 0x0900_0000, 0x0900_0000, 0x1000, 33]]
emu_devices = [["dev", 0x0b00_0000, 0x1000, 0, 0, []]]
interrupt_mode = "no_irq"
"#;
    if !from.is_empty() {
        assert_eq!(base.matches(from).count(), 1, "{from} is not unique");
    }
    VmConfig::from_toml(&base.replace(from, to))
}

fn field(e: &ConfigError) -> String {
    let s = e.to_string();
    s.split(':').next().unwrap().to_string()
}

#[test]
fn the_base_variant_is_valid() {
    variant("", "").unwrap();
}

/// `populate = 2`: lazy in 2 MiB blocks (issue 17), and back through the generated
/// builder source.
#[test]
fn populate_2_is_lazy_in_2m_blocks() {
    let c = variant(
        "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
        "[0x9000_0000, 0x20_0000, 0x3, 0, 2]",
    )
    .unwrap();
    assert_eq!(c.kernel.memory_regions[1].populate, Populate::LazyHuge);
    assert!(
        c.to_rust_source("vm")
            .contains("::vm_core::Populate::LazyHuge"),
        "{}",
        c.to_rust_source("vm")
    );
    let e = variant(
        "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
        "[0x9000_0000, 0x20_0000, 0x3, 2, 2]",
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::LazyNotAlloc { map_type: 2, .. }),
        "{e}"
    );
}

/// (text to replace, replacement, expected variant, expected start of the message)
type Case = (
    &'static str,
    &'static str,
    fn(&ConfigError) -> bool,
    &'static str,
);

#[test]
fn bad_configs_name_their_field() {
    use ConfigError as E;
    let cases: Vec<Case> = vec![
        // 1. overlapping regions, the issue's example
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x80f0_0000, 0x20_0000, 0x3, 0, 1]",
            |e| {
                matches!(
                    e,
                    E::Overlap {
                        other: 0,
                        at: 0x80f0_0000,
                        ..
                    }
                )
            },
            "kernel.memory_regions[1]: overlaps [0] at 0x80f0_0000",
        ),
        // 2. DEVICE flag on RAM
        (
            "[0x8000_0000, 0x100_0000, 0x7, 0]",
            "[0x8000_0000, 0x100_0000, 0x13, 0]",
            |e| matches!(e, E::DeviceFlagOnRam { .. }),
            "kernel.memory_regions[0].flags",
        ),
        // 3. size not page-aligned
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x9000_0000, 0x20_0800, 0x3, 0, 1]",
            |e| {
                matches!(
                    e,
                    E::Unaligned {
                        value: 0x20_0800,
                        ..
                    }
                )
            },
            "kernel.memory_regions[1].size",
        ),
        // 4. unknown map_type
        (
            "[0x8000_0000, 0x100_0000, 0x7, 0]",
            "[0x8000_0000, 0x100_0000, 0x7, 3]",
            |e| matches!(e, E::UnknownMapType { value: 3, .. }),
            "kernel.memory_regions[0].map_type",
        ),
        // 5. gpa not page-aligned
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x9000_0010, 0x20_0000, 0x3, 0, 1]",
            |e| {
                matches!(
                    e,
                    E::Unaligned {
                        value: 0x9000_0010,
                        ..
                    }
                )
            },
            "kernel.memory_regions[1].gpa",
        ),
        // 6. zero size
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x9000_0000, 0, 0x3, 0, 1]",
            |e| matches!(e, E::ZeroSize { .. }),
            "kernel.memory_regions[1]",
        ),
        // 7. unknown flag bits
        (
            "[0x8000_0000, 0x100_0000, 0x7, 0]",
            "[0x8000_0000, 0x100_0000, 0x47, 0]",
            |e| matches!(e, E::UnknownFlags { value: 0x47, .. }),
            "kernel.memory_regions[0].flags",
        ),
        // 8. no access at all
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x9000_0000, 0x20_0000, 0x8, 0, 1]",
            |e| matches!(e, E::NoAccess { .. }),
            "kernel.memory_regions[1].flags",
        ),
        // 9. lazy on an identical region
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x9000_0000, 0x20_0000, 0x3, 1, 1]",
            |e| matches!(e, E::LazyNotAlloc { map_type: 1, .. }),
            "kernel.memory_regions[1].populate",
        ),
        // 10. unknown populate
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x9000_0000, 0x20_0000, 0x3, 0, 3]",
            |e| matches!(e, E::UnknownPopulate { value: 3, .. }),
            "kernel.memory_regions[1].populate",
        ),
        // 11. a region with 3 elements
        (
            "[0x9000_0000, 0x20_0000, 0x3, 0, 1]",
            "[0x9000_0000, 0x20_0000, 0x3]",
            |e| matches!(e, E::TupleLength { len: 3, .. }),
            "kernel.memory_regions[1]",
        ),
        // 12. entry point outside RAM
        (
            "entry_point = 0x8000_0000",
            "entry_point = 0x7000_0000",
            |e| {
                matches!(
                    e,
                    E::NotInRam {
                        value: 0x7000_0000,
                        ..
                    }
                )
            },
            "kernel.entry_point",
        ),
        // 13. load address outside RAM
        (
            "kernel_load_addr = 0x8000_0000",
            "kernel_load_addr = 0xa000_0000",
            |e| {
                matches!(
                    e,
                    E::NotInRam {
                        value: 0xa000_0000,
                        ..
                    }
                )
            },
            "kernel.kernel_load_addr",
        ),
        // 14. cpu_num 0
        (
            "cpu_num = 2",
            "cpu_num = 0",
            |e| matches!(e, E::NoCpus),
            "base.cpu_num",
        ),
        // 15. phys_cpu_ids of the wrong length
        (
            "phys_cpu_ids = [0, 1]",
            "phys_cpu_ids = [0]",
            |e| {
                matches!(
                    e,
                    E::CpuListLength {
                        len: 1,
                        cpu_num: 2,
                        ..
                    }
                )
            },
            "base.phys_cpu_ids",
        ),
        // 16. the same physical CPU twice
        (
            "phys_cpu_ids = [0, 1]",
            "phys_cpu_ids = [1, 1]",
            |e| matches!(e, E::DuplicateCpuId { id: 1, .. }),
            "base.phys_cpu_ids[1]",
        ),
        // 17. a pass-through device over RAM
        (
            r#"["uart", 0x0900_0000, 0x0900_0000, 0x1000, 33]"#,
            r#"["uart", 0x80ff_f000, 0x0900_0000, 0x2000, 33]"#,
            |e| {
                matches!(
                    e,
                    E::DeviceOverlapsRam {
                        region: 0,
                        at: 0x80ff_f000,
                        ..
                    }
                )
            },
            "devices.passthrough_devices[0]",
        ),
        // 17b. GPA and HPA at different offsets in their page
        (
            r#"["uart", 0x0900_0000, 0x0900_0000, 0x1000, 33]"#,
            r#"["uart", 0x0900_0800, 0x0900_0000, 0x100, 33]"#,
            |e| {
                matches!(
                    e,
                    E::PageOffsetMismatch {
                        gpa: 0x0900_0800,
                        ..
                    }
                )
            },
            "devices.passthrough_devices[0]",
        ),
        // 18. an emulated device over RAM
        (
            r#"["dev", 0x0b00_0000, 0x1000, 0, 0, []]"#,
            r#"["dev", 0x9010_0000, 0x1000, 0, 0, []]"#,
            |e| {
                matches!(
                    e,
                    E::DeviceOverlapsRam {
                        region: 1,
                        at: 0x9010_0000,
                        ..
                    }
                )
            },
            "devices.emu_devices[0]",
        ),
        // 19. an emulated device over a pass-through device
        (
            r#"["dev", 0x0b00_0000, 0x1000, 0, 0, []]"#,
            r#"["dev", 0x0900_0800, 0x100, 0, 0, []]"#,
            |e| {
                matches!(
                    e,
                    E::DeviceOverlap {
                        at: 0x0900_0000,
                        ..
                    }
                )
            },
            "devices.emu_devices[0]",
        ),
        // 20. missing key
        (
            "kernel_path = \"guest.bin\"\n",
            "",
            |e| matches!(e, E::Missing { .. }),
            "kernel.kernel_path",
        ),
        // 21. wrong type
        (
            "cpu_num = 2",
            "cpu_num = \"two\"",
            |e| {
                matches!(
                    e,
                    E::WrongType {
                        expected: "integer",
                        ..
                    }
                )
            },
            "base.cpu_num",
        ),
        // 22. negative number
        (
            "id = 1",
            "id = -1",
            |e| matches!(e, E::OutOfRange { value: -1, .. }),
            "base.id",
        ),
        // 23. unknown interrupt mode
        (
            "interrupt_mode = \"no_irq\"",
            "interrupt_mode = \"msi\"",
            |e| matches!(e, E::UnknownName { .. }),
            "devices.interrupt_mode",
        ),
        // 24. unknown image location
        (
            "image_location = \"memory\"",
            "image_location = \"disk\"",
            |e| matches!(e, E::UnknownName { .. }),
            "kernel.image_location",
        ),
        // 25. unknown vm_type
        (
            "vm_type = 1",
            "vm_type = 7",
            |e| matches!(e, E::UnknownVmType { value: 7, .. }),
            "base.vm_type",
        ),
        // 26. a pass-through device of length 0
        (
            r#"["uart", 0x0900_0000, 0x0900_0000, 0x1000, 33]"#,
            r#"["uart", 0x0900_0000, 0x0900_0000, 0, 33]"#,
            |e| matches!(e, E::ZeroSize { .. }),
            "devices.passthrough_devices[0]",
        ),
        // 27. empty name
        (
            "name = \"vm\"",
            "name = \"\"",
            |e| matches!(e, E::Empty { .. }),
            "base.name",
        ),
        // 28. TOML syntax
        (
            "cpu_num = 2",
            "cpu_num = = 2",
            |e| matches!(e, E::Syntax { .. }),
            "TOML syntax",
        ),
        // 29. no memory at all
        (
            "memory_regions = [\n    [0x8000_0000, 0x100_0000, 0x7, 0],\n    [0x9000_0000, 0x20_0000, 0x3, 0, 1],\n]",
            "memory_regions = []",
            |e| matches!(e, E::NoMemory),
            "kernel.memory_regions",
        ),
        // 30. pass-through entry of the wrong shape
        (
            r#"["uart", 0x0900_0000, 0x0900_0000, 0x1000, 33]"#,
            r#"["uart", 0x0900_0000, 0x0900_0000, 0x1000, 33, 0]"#,
            |e| matches!(e, E::TupleLength { len: 6, .. }),
            "devices.passthrough_devices[0]",
        ),
    ];
    let mut distinct = std::collections::HashSet::new();
    for (from, to, is_expected, text) in &cases {
        let err = variant(from, to).expect_err(to);
        assert!(is_expected(&err), "{to}: got {err:?}");
        let shown = err.to_string();
        assert!(
            shown.starts_with(text) || field(&err) == *text,
            "{to}: `{shown}` should name `{text}`"
        );
        distinct.insert(shown);
    }
    assert_eq!(
        distinct.len(),
        cases.len(),
        "every bad config gives its own error"
    );
    assert!(cases.len() >= 15);
}

#[test]
fn overflow_is_refused_by_the_builder() {
    // TOML integers stop at i64::MAX, so an overflowing region comes from code.
    let e = vm_core::VmConfigBuilder::new(1, "vm", 1)
        .entry_point(gpa(0x1000))
        .memory_region(
            gpa(0x1000),
            0x1000,
            MappingFlags::RWX,
            MapType::Alloc,
            Populate::Eager,
        )
        .memory_region(
            gpa(usize::MAX & !0xfff),
            0x2000,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Eager,
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(e, ConfigError::Overflow { size: 0x2000, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("kernel.memory_regions[1]: 0xffff_ffff_ffff_f000 + 0x2000 overflows")
    );
}

#[test]
fn builder_and_validate_agree_with_toml() {
    let built = vm_core::VmConfigBuilder::new(1, "vm", 2)
        .phys_cpu_ids(&[0, 1])
        .kernel(ImageLocation::Memory, "guest.bin", gpa(0x8000_0000))
        .entry_point(gpa(0x8000_0000))
        .memory_region(
            gpa(0x8000_0000),
            0x100_0000,
            MappingFlags::RWX,
            MapType::Alloc,
            Populate::Eager,
        )
        .memory_region(
            gpa(0x9000_0000),
            0x20_0000,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy,
        )
        .passthrough_device(
            "uart",
            gpa(0x0900_0000),
            vm_core::HostPhysAddr::from_usize(0x0900_0000),
            0x1000,
            33,
        )
        .emu_device("dev", gpa(0x0b00_0000), 0x1000, 0, 0, &[])
        .build()
        .unwrap();
    assert_eq!(built, variant("", "").unwrap());
    // The generated source names the builder calls that rebuild it (compiled and
    // compared in hal-mock's tests, whose build script includes it).
    let src = built.to_rust_source("vm");
    assert!(src.contains(".memory_region(::vm_core::GuestPhysAddr::from_usize(0x90000000), 0x200000, ::vm_core::MappingFlags::from_bits_retain(0x3), ::vm_core::MapType::Alloc, ::vm_core::Populate::Lazy)"));
}

/// Issue 10: `cpu_num` had no upper bound; 2^63-1 panicked in `Vm::new` ("capacity
/// overflow") and 2^40 aborted. Both are refused here, naming `base.cpu_num`.
#[test]
fn cpu_num_beyond_the_limit_is_refused() {
    for n in ["9223372036854775807", "1099511627776", "1025"] {
        let e = variant("cpu_num = 2\nphys", &format!("cpu_num = {n}\nphys")).unwrap_err();
        assert!(
            matches!(e, ConfigError::TooManyCpus { max: 1024, .. }),
            "{n}: {e:?}"
        );
        assert!(e.to_string().starts_with("base.cpu_num: "), "{e}");
    }
    // The limit itself is fine (the CPU lists must follow it).
    let ids: Vec<String> = (0..1024).map(|i| i.to_string()).collect();
    variant(
        "cpu_num = 2\nphys_cpu_ids = [0, 1]",
        &format!("cpu_num = 1024\nphys_cpu_ids = [{}]", ids.join(", ")),
    )
    .unwrap();
}

/// Issue 10: two emulated devices with the same name were accepted, though a board
/// attaches a model by name and only one of them could get it.
#[test]
fn two_emulated_devices_with_one_name_are_refused() {
    let e = variant(
        r#"emu_devices = [["dev", 0x0b00_0000, 0x1000, 0, 0, []]]"#,
        r#"emu_devices = [["dev", 0x0b00_0000, 0x1000, 0, 0, []], ["other", 0x0c00_0000, 0x1000, 0, 0, []], ["dev", 0x0d00_0000, 0x1000, 0, 0, []]]"#,
    )
    .unwrap_err();
    assert!(
        matches!(e, ConfigError::DuplicateName { other: 0, .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "devices.emu_devices[2].name: \"dev\" is also the name of [0]"
    );
}

/// Issue 10: the generated Rust for a config with `dtb_path` but no `dtb_load_addr`
/// (or a `ramdisk_load_addr` without `ramdisk_path`) set the missing half to 0 / "",
/// building a different config than the one it was generated from.
#[test]
fn generated_source_keeps_a_missing_half_missing() {
    let text = |from: &str, to: &str| {
        let c = variant(from, to).unwrap();
        (c.to_rust_source("vm"), c)
    };
    let (src, c) = text(
        "kernel_load_addr = 0x8000_0000",
        "kernel_load_addr = 0x8000_0000\ndtb_path = \"guest.dtb\"",
    );
    assert_eq!(c.kernel.dtb_load_addr, None);
    assert!(src.contains(".dtb_path(\"guest.dtb\")"), "{src}");
    assert!(!src.contains("dtb_load_addr"), "{src}");
    let (src, c) = text(
        "kernel_load_addr = 0x8000_0000",
        "kernel_load_addr = 0x8000_0000\nramdisk_load_addr = 0x8080_0000",
    );
    assert_eq!(c.kernel.ramdisk_path, None);
    assert!(
        src.contains(".ramdisk_load_addr(::vm_core::GuestPhysAddr::from_usize(0x80800000))"),
        "{src}"
    );
    assert!(!src.contains("ramdisk_path"), "{src}");
}
