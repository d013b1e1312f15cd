//! Code generation for build scripts (feature `std`): a validated [`VmConfig`] as Rust
//! source that rebuilds it through [`super::VmConfigBuilder`] in a `no_std` board.
//!
//! The source is a list of builder calls ([`Call`]), one per set field, so that an
//! absent optional value stays absent; the tests replay the same calls on a builder
//! and check that every valid config comes back unchanged.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use addrspace::{GuestPhysAddr, Populate};

use super::{
    BootProtocol, DeviceSpace, EmuDeviceConfig, ImageLocation, InterruptMode, MapType,
    MemoryRegionConfig, PassthroughAddressConfig, PassthroughDeviceConfig, PortRangeConfig,
    VmConfig, VmType,
};

/// A Rust string literal for `s` (Debug escaping is valid Rust syntax).
fn lit(s: &str) -> String {
    format!("{s:?}")
}

fn gpa(v: GuestPhysAddr) -> String {
    format!("::vm_core::GuestPhysAddr::from_usize({:#x})", v.as_usize())
}

/// One call of the generated builder chain.
#[derive(Clone, Debug)]
enum Call<'a> {
    New(usize, &'a str, usize),
    VmType(VmType),
    PhysCpuIds(&'a [usize]),
    PhysCpuSets(&'a [usize]),
    Kernel(ImageLocation, &'a str, GuestPhysAddr),
    EntryPoint(GuestPhysAddr),
    BootProtocol(BootProtocol),
    Path(&'static str, &'a str),
    Addr(&'static str, GuestPhysAddr),
    Cmdline(&'a str),
    Region(&'a MemoryRegionConfig),
    Passthrough(&'a PassthroughDeviceConfig),
    Excluded(&'a str),
    Address(&'a PassthroughAddressConfig),
    Port(&'a PortRangeConfig),
    Emu(&'a EmuDeviceConfig),
    InterruptMode(InterruptMode),
}

impl Call<'_> {
    fn render(&self, s: &mut String) {
        // `write!` to a String cannot fail.
        let _ = match self {
            Self::New(id, name, cpus) => write!(
                s,
                "    ::vm_core::VmConfigBuilder::new({id}, {}, {cpus})",
                lit(name)
            ),
            Self::VmType(t) => {
                let t = match t {
                    VmType::HostVm => "HostVm",
                    VmType::Rtos => "Rtos",
                    VmType::Linux => "Linux",
                };
                write!(s, "        .vm_type(::vm_core::VmType::{t})")
            }
            Self::PhysCpuIds(ids) => write!(s, "        .phys_cpu_ids(&{ids:?})"),
            Self::PhysCpuSets(sets) => write!(s, "        .phys_cpu_sets(&{sets:?})"),
            Self::Kernel(location, path, load) => {
                let location = match location {
                    ImageLocation::Fs => "Fs",
                    ImageLocation::Memory => "Memory",
                };
                write!(
                    s,
                    "        .kernel(::vm_core::ImageLocation::{location}, {}, {})",
                    lit(path),
                    gpa(*load)
                )
            }
            Self::EntryPoint(entry) => write!(s, "        .entry_point({})", gpa(*entry)),
            Self::BootProtocol(p) => {
                write!(s, "        .boot_protocol(::vm_core::BootProtocol::{p:?})")
            }
            Self::Path(method, path) => write!(s, "        .{method}({})", lit(path)),
            Self::Addr(method, addr) => write!(s, "        .{method}({})", gpa(*addr)),
            Self::Cmdline(c) => write!(s, "        .cmdline({})", lit(c)),
            Self::Region(r) => {
                let map_type = match r.map_type {
                    MapType::Alloc => "Alloc",
                    MapType::Identical => "Identical",
                    MapType::Reserved => "Reserved",
                };
                let populate = match r.populate {
                    Populate::Eager => "Eager",
                    Populate::Lazy => "Lazy",
                    Populate::LazyHuge => "LazyHuge",
                };
                write!(
                    s,
                    "        .memory_region({}, {:#x}, ::vm_core::MappingFlags::from_bits_retain({:#x}), ::vm_core::MapType::{map_type}, ::vm_core::Populate::{populate})",
                    gpa(r.gpa),
                    r.size,
                    r.flags.bits()
                )
            }
            Self::Passthrough(d) if d.host_node => {
                write!(s, "        .host_device({})", lit(&d.name))
            }
            Self::Passthrough(d) => write!(
                s,
                "        .passthrough_device({}, {}, ::vm_core::HostPhysAddr::from_usize({:#x}), {:#x}, {})",
                lit(&d.name),
                gpa(d.base_gpa),
                d.base_hpa.as_usize(),
                d.length,
                d.irq
            ),
            Self::Excluded(path) => write!(s, "        .excluded_device({})", lit(path)),
            Self::Address(a) => write!(
                s,
                "        .passthrough_address({}, {:#x})",
                gpa(a.base_gpa),
                a.length
            ),
            Self::Port(p) => write!(
                s,
                "        .passthrough_port({:#x}, {:#x})",
                p.base, p.length
            ),
            Self::Emu(d) if d.space == DeviceSpace::Port => write!(
                s,
                "        .port_device({}, {:#x}, {:#x}, {}, {:#x}, &{:?})",
                lit(&d.name),
                d.base_gpa.as_usize(),
                d.length,
                d.irq_id,
                d.emu_type,
                d.cfg_list
            ),
            Self::Emu(d) => write!(
                s,
                "        .emu_device({}, {}, {:#x}, {}, {:#x}, &{:?})",
                lit(&d.name),
                gpa(d.base_gpa),
                d.length,
                d.irq_id,
                d.emu_type,
                d.cfg_list
            ),
            Self::InterruptMode(mode) => {
                let mode = match mode {
                    InterruptMode::NoIrq => "NoIrq",
                    InterruptMode::Emulated => "Emulated",
                    InterruptMode::Passthrough => "Passthrough",
                };
                write!(
                    s,
                    "        .interrupt_mode(::vm_core::InterruptMode::{mode})"
                )
            }
        };
        s.push('\n');
    }

    /// What the rendered call does, on a builder (for the round-trip tests).
    #[cfg(test)]
    fn apply(&self, b: super::VmConfigBuilder) -> super::VmConfigBuilder {
        match *self {
            Self::New(id, name, cpus) => super::VmConfigBuilder::new(id, name, cpus),
            Self::VmType(t) => b.vm_type(t),
            Self::PhysCpuIds(ids) => b.phys_cpu_ids(ids),
            Self::PhysCpuSets(sets) => b.phys_cpu_sets(sets),
            Self::Kernel(location, path, load) => b.kernel(location, path, load),
            Self::EntryPoint(entry) => b.entry_point(entry),
            Self::BootProtocol(p) => b.boot_protocol(p),
            Self::Path("bios_path", p) => b.bios_path(p),
            Self::Path("uefi_firmware_path", p) => b.uefi_firmware_path(p),
            Self::Path("dtb_path", p) => b.dtb_path(p),
            Self::Path("ramdisk_path", p) => b.ramdisk_path(p),
            Self::Addr("bios_load_addr", a) => b.bios_load_addr(a),
            Self::Addr("dtb_load_addr", a) => b.dtb_load_addr(a),
            Self::Addr("ramdisk_load_addr", a) => b.ramdisk_load_addr(a),
            Self::Path(m, _) | Self::Addr(m, _) => unreachable!("no builder method {m}"),
            Self::Cmdline(c) => b.cmdline(c),
            Self::Region(r) => b.memory_region(r.gpa, r.size, r.flags, r.map_type, r.populate),
            Self::Passthrough(d) if d.host_node => b.host_device(&d.name),
            Self::Passthrough(d) => {
                b.passthrough_device(&d.name, d.base_gpa, d.base_hpa, d.length, d.irq)
            }
            Self::Excluded(path) => b.excluded_device(path),
            Self::Address(a) => b.passthrough_address(a.base_gpa, a.length),
            Self::Port(p) => b.passthrough_port(p.base, p.length),
            Self::Emu(d) if d.space == DeviceSpace::Port => b.port_device(
                &d.name,
                u16::try_from(d.base_gpa.as_usize()).unwrap_or(u16::MAX),
                d.length,
                d.irq_id,
                d.emu_type,
                &d.cfg_list,
            ),
            Self::Emu(d) => b.emu_device(
                &d.name,
                d.base_gpa,
                d.length,
                d.irq_id,
                d.emu_type,
                &d.cfg_list,
            ),
            Self::InterruptMode(mode) => b.interrupt_mode(mode),
        }
    }
}

impl VmConfig {
    /// The builder calls that rebuild this configuration, in order.
    fn builder_calls(&self) -> Vec<Call<'_>> {
        let k = &self.kernel;
        let mut calls = alloc::vec![
            Call::New(self.id, &self.name, self.cpu_num),
            Call::VmType(self.vm_type),
        ];
        calls.extend(self.phys_cpu_ids.as_deref().map(Call::PhysCpuIds));
        calls.extend(self.phys_cpu_sets.as_deref().map(Call::PhysCpuSets));
        calls.push(Call::Kernel(
            k.image_location,
            &k.kernel_path,
            k.kernel_load_addr,
        ));
        calls.push(Call::EntryPoint(k.entry_point));
        if k.boot_protocol != BootProtocol::Direct {
            calls.push(Call::BootProtocol(k.boot_protocol));
        }
        for (name, path) in [
            ("bios_path", &k.bios_path),
            ("uefi_firmware_path", &k.uefi_firmware_path),
            ("dtb_path", &k.dtb_path),
            ("ramdisk_path", &k.ramdisk_path),
        ] {
            calls.extend(path.as_deref().map(|p| Call::Path(name, p)));
        }
        for (name, addr) in [
            ("bios_load_addr", k.bios_load_addr),
            ("dtb_load_addr", k.dtb_load_addr),
            ("ramdisk_load_addr", k.ramdisk_load_addr),
        ] {
            calls.extend(addr.map(|a| Call::Addr(name, a)));
        }
        calls.extend(k.cmdline.as_deref().map(Call::Cmdline));
        calls.extend(k.memory_regions.iter().map(Call::Region));
        let d = &self.devices;
        calls.extend(d.passthrough_devices.iter().map(Call::Passthrough));
        calls.extend(d.excluded_devices.iter().map(|p| Call::Excluded(p)));
        calls.extend(d.passthrough_addresses.iter().map(Call::Address));
        calls.extend(d.passthrough_ports.iter().map(Call::Port));
        calls.extend(d.emu_devices.iter().map(Call::Emu));
        calls.push(Call::InterruptMode(d.interrupt_mode));
        calls
    }

    /// Rust source of a function `pub fn {fn_name}() -> Result<VmConfig, ConfigError>`
    /// that rebuilds this configuration with [`super::VmConfigBuilder`] (validating
    /// it again at run time, which cannot fail for a configuration that validated
    /// here). A board's `build.rs` writes it to `OUT_DIR` and the board `include!`s it:
    ///
    /// ```no_run
    /// // build.rs, with `vm-core = { path = "..", features = ["std"] }` as a
    /// // build-dependency:
    /// let text = std::fs::read_to_string("../../configs/qemu-virt-aarch64.toml").unwrap();
    /// let config = vm_core::VmConfig::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
    /// let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("vm_config.rs");
    /// std::fs::write(out, config.to_rust_source("vm_config")).unwrap();
    /// // in the board: include!(concat!(env!("OUT_DIR"), "/vm_config.rs"));
    /// ```
    pub fn to_rust_source(&self, fn_name: &str) -> String {
        let mut s = String::new();
        // `write!` to a String cannot fail.
        let _ = writeln!(
            s,
            "/// VM config `{}` (generated by vm-core from its TOML file).",
            self.name.escape_default()
        );
        let _ = writeln!(
            s,
            "pub fn {fn_name}() -> ::core::result::Result<::vm_core::VmConfig, ::vm_core::ConfigError> {{"
        );
        for call in self.builder_calls() {
            call.render(&mut s);
        }
        let _ = writeln!(s, "        .build()");
        let _ = writeln!(s, "}}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuestPhysAddr, HostPhysAddr, MapType, MappingFlags, VmConfigBuilder};
    use proptest::prelude::*;

    #[test]
    fn generated_source_names_every_part() {
        let gpa = GuestPhysAddr::from_usize;
        let config = VmConfigBuilder::new(3, "a \"quoted\" vm", 2)
            .kernel(ImageLocation::Memory, "img.bin", gpa(0x4000_0000))
            .entry_point(gpa(0x4000_1000))
            .dtb("x.dtb", gpa(0x4010_0000))
            .memory_region(
                gpa(0x4000_0000),
                0x100_0000,
                MappingFlags::RWX,
                MapType::Alloc,
                Populate::Lazy,
            )
            .emu_device("dev", gpa(0x0b00_0000), 0x1000, 5, 0x2, &[1, 2])
            .build()
            .unwrap();
        let src = config.to_rust_source("my_vm");
        assert!(src.contains("pub fn my_vm()"));
        assert!(src.contains(r#"VmConfigBuilder::new(3, "a \"quoted\" vm", 2)"#));
        assert!(src.contains(
            "from_bits_retain(0x7), ::vm_core::MapType::Alloc, ::vm_core::Populate::Lazy"
        ));
        assert!(src.contains(".dtb_path(\"x.dtb\")"));
        assert!(src.contains(".dtb_load_addr(::vm_core::GuestPhysAddr::from_usize(0x40100000))"));
        assert!(src.contains(".emu_device(\"dev\", ::vm_core::GuestPhysAddr::from_usize(0xb000000), 0x1000, 5, 0x2, &[1, 2])"));
        assert!(src.trim_end().ends_with('}'));
        // One rendered line per call, plus the doc line, the signature, `.build()`
        // and the closing brace.
        assert_eq!(src.lines().count(), config.builder_calls().len() + 4);
    }

    /// Valid configs of every shape: 1-3 regions one after another (eager, lazy,
    /// identical, reserved), entry and load address inside the first, each optional
    /// path and address present or absent on its own, devices above the RAM.
    fn valid_configs() -> impl Strategy<Value = VmConfig> {
        let names = "[a-z\"\\\\ é-]{1,12}";
        let opt_path = proptest::option::of("[a-z./]{1,10}");
        let opt_off = proptest::option::of(0usize..0x10_0000);
        (
            (any::<u16>(), names, 1usize..4, any::<bool>(), any::<bool>()),
            (
                any::<bool>(),
                "[a-z./]{0,10}",
                0usize..0x8_0000,
                0usize..0x8_0000,
            ),
            (
                opt_path.clone(),
                opt_path.clone(),
                opt_path,
                opt_off.clone(),
                opt_off.clone(),
                opt_off,
            ),
            (
                proptest::collection::vec((1usize..16, 1u32..8, 0u8..5), 1..4),
                proptest::option::of("[ -~]{0,20}"),
                0usize..3,
                0usize..3,
                0u8..3,
            ),
            (0u8..3, 0usize..3, 0usize..3, 0usize..3, 0usize..3, 0u8..3),
        )
            .prop_map(
                |(
                    (id, name, cpus, ids, sets),
                    (memory, path, load, entry),
                    (bios, dtb, ramdisk, bios_at, dtb_at, ramdisk_at),
                    (regions, cmdline, pts, emus, mode),
                    (nodes, excluded, addresses, ports, port_devs, boot),
                )| {
                    let g = GuestPhysAddr::from_usize;
                    let base = 0x4000_0000;
                    let location = if memory {
                        ImageLocation::Memory
                    } else {
                        ImageLocation::Fs
                    };
                    let mut b = VmConfigBuilder::new(usize::from(id), &name, cpus)
                        .vm_type(VmType::from_raw(u64::from(id % 3)).unwrap())
                        .kernel(location, &path, g(base + load))
                        .entry_point(g(base + load + entry));
                    if ids {
                        b = b.phys_cpu_ids(&(0..cpus).map(|i| i * 2 + 1).collect::<Vec<_>>());
                    }
                    if sets {
                        b = b.phys_cpu_sets(&(0..cpus).map(|i| 1 << i).collect::<Vec<_>>());
                    }
                    let mut at = base;
                    for (i, (mib, access, kind)) in regions.iter().enumerate() {
                        // The first region holds the kernel (and the other
                        // addresses), so it is at least 1 MiB.
                        let size = mib << 20;
                        let (map_type, populate) = match kind {
                            0 => (MapType::Alloc, Populate::Eager),
                            1 => (MapType::Alloc, Populate::Lazy),
                            2 => (MapType::Identical, Populate::Eager),
                            3 => (MapType::Alloc, Populate::LazyHuge),
                            _ => (MapType::Reserved, Populate::Eager),
                        };
                        let flags = MappingFlags::from_bits_retain(*access)
                            | if i % 2 == 1 {
                                MappingFlags::USER
                            } else {
                                MappingFlags::empty()
                            };
                        b = b.memory_region(g(at), size, flags, map_type, populate);
                        at += size + 0x1000 * i;
                    }
                    let has_bios = bios.is_some();
                    for (method, path) in [("bios", bios), ("dtb", dtb), ("ramdisk", ramdisk)] {
                        if let Some(p) = path {
                            b = match method {
                                "bios" => b.bios_path(&p),
                                "dtb" => b.dtb_path(&p),
                                _ => b.ramdisk_path(&p),
                            };
                        }
                    }
                    // Multiboot with a BIOS image needs its load address.
                    if let Some(a) = bios_at.or(has_bios.then_some(0)) {
                        b = b.bios_load_addr(g(base + a));
                    }
                    if let Some(a) = dtb_at {
                        b = b.dtb_load_addr(g(base + a));
                    }
                    if let Some(a) = ramdisk_at {
                        b = b.ramdisk_load_addr(g(base + a));
                    }
                    if let Some(c) = cmdline {
                        b = b.cmdline(&c);
                    }
                    for i in 0..pts {
                        let d = 0x0900_0000 + i * 0x1_0000;
                        b = b.passthrough_device(
                            &format!("pt{i}"),
                            g(d),
                            HostPhysAddr::from_usize(d + 0x1000),
                            0x100,
                            33 + i,
                        );
                    }
                    for i in 0..emus {
                        b = b.emu_device(
                            &format!("emu{i}"),
                            g(0x0b00_0000 + i * 0x1000),
                            0x1000,
                            i,
                            0xe1,
                            &[i, 7],
                        );
                    }
                    // Host device-tree references between the explicit entries.
                    for i in 0..usize::from(nodes) {
                        let node = if i == 0 { "/" } else { "/soc/uart@10000000" };
                        let at = 0x0c00_0000 + i * 0x1000;
                        b = b.host_device(node).passthrough_device(
                            &format!("after{i}"),
                            g(at),
                            HostPhysAddr::from_usize(at),
                            0x1000,
                            0,
                        );
                    }
                    for i in 0..excluded {
                        b = b.excluded_device(&format!("/pcie@{i}"));
                    }
                    for i in 0..addresses {
                        b = b.passthrough_address(g(0x0d00_0000 + i * 0x2000), 0x800 + i);
                    }
                    for i in (0u16..).take(ports) {
                        b = b.passthrough_port(0x60 + 0x10 * i, 4);
                    }
                    for i in (0u16..).take(port_devs) {
                        let emu_type = if i == 0 { 2 } else { 0x24 };
                        b = b.port_device(
                            &format!("port{i}"),
                            0x3f8 - 0x100 * i,
                            8,
                            4,
                            emu_type,
                            &[],
                        );
                    }
                    b = match boot {
                        0 => b,
                        1 => b.boot_protocol(BootProtocol::Multiboot),
                        _ => b
                            .boot_protocol(BootProtocol::Uefi)
                            .uefi_firmware_path("OVMF.fd")
                            .bios_load_addr(g(base)),
                    };
                    let mode = match mode {
                        0 => InterruptMode::NoIrq,
                        1 => InterruptMode::Emulated,
                        _ => InterruptMode::Passthrough,
                    };
                    b.interrupt_mode(mode).build_unchecked()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Issue 10: the generated source must rebuild every config that validates,
        /// field for field (it used to turn a missing `dtb_load_addr` into 0).
        #[test]
        fn every_valid_config_round_trips_through_the_generated_calls(config in valid_configs()) {
            prop_assert_eq!(config.validate(), Ok(()));
            let rebuilt = config
                .builder_calls()
                .iter()
                .fold(VmConfigBuilder::new(0, "", 0), |b, c| c.apply(b));
            prop_assert_eq!(rebuilt.build(), Ok(config.clone()));
            let src = config.to_rust_source("vm");
            prop_assert_eq!(src.lines().count(), config.builder_calls().len() + 4);
        }
    }
}
