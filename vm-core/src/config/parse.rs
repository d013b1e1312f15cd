//! TOML loading (feature `std`): walks the parsed document by hand so every error
//! names the exact key and element, and every key is either understood or refused
//! (an unknown key is refused with the nearest known one).
//!
//! Two formats are read, as axvisor's parsers do (see the module docs of
//! [`super`] for what each key means):
//! - the sectioned format (`[base]`, `[kernel]`, `[devices]` with `emu_devices` and
//!   `passthrough_devices`), read by axvmconfig up to 0.8.3;
//! - the device-graph format of axvmconfig 0.8.4 and later (`base.guest_type`,
//!   `devices.passthrough` / `disabled` / `virtual`).
//!
//! The flat format of 2024 (keys at the top level) and the typed-machine proposal
//! (`[machine]`, `[memory]`) are refused with an error that names them.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use addrspace::{GuestPhysAddr, HostPhysAddr, MappingFlags, Populate};
use toml::{Table, Value};

use super::keys::{self, nearest};
use super::{
    BootProtocol, ConfigError, ConfigResult, DevicesConfig, EmuDeviceConfig, Field, ImageLocation,
    InterruptMode, KernelConfig, MapType, MemoryRegionConfig, PassthroughAddressConfig,
    PassthroughDeviceConfig, PortRangeConfig, VmConfig, VmConfigBuilder, VmType, emu_space,
};

/// Keys that only the flat 2024 format has at the top level.
const FLAT_KEYS: &[&str] = &[
    "id",
    "name",
    "vm_type",
    "cpu_num",
    "cpu_set",
    "phys_cpu_ids",
    "phys_cpu_sets",
    "entry_point",
    "kernel_path",
    "kernel_load_addr",
    "bios_path",
    "bios_load_addr",
    "dtb_path",
    "dtb_load_addr",
    "image_location",
    "memory_regions",
    "emu_devices",
    "passthrough_devices",
    "disk_path",
];

// ------------------------------------------------------------------ values

fn int(v: &Value, field: Field) -> ConfigResult<u64> {
    match v {
        Value::Integer(i) => {
            u64::try_from(*i).map_err(|_| ConfigError::OutOfRange { field, value: *i })
        }
        _ => Err(ConfigError::WrongType {
            field,
            expected: "integer",
        }),
    }
}

fn usize_of(v: &Value, field: Field) -> ConfigResult<usize> {
    let n = int(v, field)?;
    usize::try_from(n).map_err(|_| ConfigError::OutOfRange {
        field,
        value: i64::try_from(n).unwrap_or(i64::MAX),
    })
}

fn gpa_of(v: &Value, field: Field) -> ConfigResult<GuestPhysAddr> {
    usize_of(v, field).map(GuestPhysAddr::from_usize)
}

fn string(v: &Value, field: Field) -> ConfigResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(ConfigError::WrongType {
            field,
            expected: "string",
        }),
    }
}

fn boolean(v: &Value, field: Field) -> ConfigResult<bool> {
    match v {
        Value::Boolean(b) => Ok(*b),
        _ => Err(ConfigError::WrongType {
            field,
            expected: "boolean",
        }),
    }
}

fn array(v: &Value, field: Field) -> ConfigResult<&Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(ConfigError::WrongType {
            field,
            expected: "array",
        }),
    }
}

fn table(v: &Value, field: Field) -> ConfigResult<&Table> {
    match v {
        Value::Table(t) => Ok(t),
        _ => Err(ConfigError::WrongType {
            field,
            expected: "table",
        }),
    }
}

/// Refuses every key of `t` that is not in `known`, naming the nearest known one.
fn known_keys(t: &Table, field: Field, known: &[&'static str]) -> ConfigResult<()> {
    match t.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(ConfigError::UnknownKey {
            field,
            key: key.clone(),
            nearest: nearest(key, known),
        }),
        None => Ok(()),
    }
}

/// A table's keys, read one by one with the field each error names.
struct Section<'a> {
    t: &'a Table,
}

impl<'a> Section<'a> {
    /// Table `name` of `doc`, `None` when absent; its keys are checked against
    /// `known`.
    fn of(
        doc: &'a Table,
        name: &'static str,
        known: &[&'static str],
    ) -> ConfigResult<Option<Self>> {
        let Some(v) = doc.get(name) else {
            return Ok(None);
        };
        let t = table(v, Field::key(name))?;
        known_keys(t, Field::key(name), known)?;
        Ok(Some(Self { t }))
    }

    fn required(doc: &'a Table, name: &'static str, known: &[&'static str]) -> ConfigResult<Self> {
        Self::of(doc, name, known)?.ok_or(ConfigError::Missing {
            field: Field::key(name),
        })
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.t.get(key)
    }

    fn req(&self, key: &str, field: Field) -> ConfigResult<&'a Value> {
        self.t.get(key).ok_or(ConfigError::Missing { field })
    }

    /// `key` read with `read`; absent: an error when `required`, else `None`.
    fn read<T>(
        &self,
        key: &str,
        field: Field,
        required: bool,
        read: impl FnOnce(&'a Value, Field) -> ConfigResult<T>,
    ) -> ConfigResult<Option<T>> {
        match self.t.get(key) {
            Some(v) => read(v, field).map(Some),
            None if required => Err(ConfigError::Missing { field }),
            None => Ok(None),
        }
    }
}

/// One entry that axvisor reads as a struct: a positional array (`[a, b, c]`) or an
/// inline table (`{ a = .., b = .. }`). `schema` lists the element names in order;
/// the first `required` are required, the rest default.
struct Record<'a> {
    field: Field,
    vals: Vec<Option<&'a Value>>,
}

impl<'a> Record<'a> {
    fn read(
        v: &'a Value,
        field: Field,
        schema: &[&'static str],
        required: usize,
        expected: &'static str,
    ) -> ConfigResult<Self> {
        let vals = match v {
            Value::Array(a) => {
                if a.len() < required || a.len() > schema.len() {
                    return Err(ConfigError::TupleLength {
                        field,
                        len: a.len(),
                        expected,
                    });
                }
                (0..schema.len()).map(|i| a.get(i)).collect()
            }
            Value::Table(t) => {
                known_keys(t, field, schema)?;
                let vals: Vec<_> = schema.iter().map(|k| t.get(*k)).collect();
                if let Some(i) = vals[..required].iter().position(Option::is_none) {
                    return Err(ConfigError::Missing {
                        field: field.part(schema[i]),
                    });
                }
                vals
            }
            _ => {
                return Err(ConfigError::WrongType {
                    field,
                    expected: "array or inline table",
                });
            }
        };
        Ok(Self { field, vals })
    }

    fn get(&self, i: usize) -> Option<&'a Value> {
        self.vals[i]
    }

    fn usize_or_0(&self, i: usize, part: &'static str) -> ConfigResult<usize> {
        self.get(i)
            .map_or(Ok(0), |v| usize_of(v, self.field.part(part)))
    }
}

fn list<'a>(
    v: &'a Value,
    path: &'static str,
) -> ConfigResult<impl Iterator<Item = (Field, &'a Value)>> {
    Ok(array(v, Field::key(path))?
        .iter()
        .enumerate()
        .map(move |(i, e)| (Field::at(path, i), e)))
}

fn usize_list(v: &Value, path: &'static str) -> ConfigResult<Vec<usize>> {
    list(v, path)?.map(|(f, e)| usize_of(e, f)).collect()
}

// ------------------------------------------------------------------ formats

/// Which of axvisor's formats a document is written in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Sectioned,
    Graph,
}

fn format_of(doc: &Table) -> ConfigResult<Format> {
    for key in ["machine", "memory"] {
        if doc.contains_key(key) {
            return Err(ConfigError::TypedMachineFormat {
                key: key.to_string(),
            });
        }
    }
    if !keys::TOP.iter().any(|k| doc.contains_key(*k))
        && let Some(key) = doc.keys().find(|k| FLAT_KEYS.contains(&k.as_str()))
    {
        return Err(ConfigError::FlatFormat { key: key.clone() });
    }
    known_keys(doc, Field::key(""), keys::TOP)?;
    let has = |section: &str, keys: &[&str]| {
        doc.get(section)
            .and_then(Value::as_table)
            .is_some_and(|t| keys.iter().any(|k| t.contains_key(*k)))
    };
    if has("base", &["guest_type"]) || has("devices", keys::DEVICES_GRAPH) {
        Ok(Format::Graph)
    } else {
        Ok(Format::Sectioned)
    }
}

impl VmConfig {
    /// Parses and validates a VM config in one of axvisor's formats (see the module
    /// docs). Device-tree references and memory taken from the guest device tree
    /// are kept for [`VmConfig::resolve_host_devices`] and
    /// [`VmConfig::memory_from_guest_dtb`]; [`VmConfig::into_valid`] requires them
    /// resolved.
    ///
    /// ```
    /// let config = vm_core::VmConfig::from_toml(r#"
    ///     [base]
    ///     id = 1
    ///     name = "demo"
    ///     vm_type = 1
    ///     cpu_num = 1
    ///     [kernel]
    ///     entry_point = 0x4000_0000
    ///     kernel_path = "guest.bin"
    ///     kernel_load_addr = 0x4000_0000
    ///     memory_regions = [[0x4000_0000, 0x10_0000, 0x7, 0]]
    ///     [devices]
    ///     passthrough_devices = []
    ///     emu_devices = []
    /// "#).unwrap();
    /// assert_eq!(config.cpu_num, 1);
    /// ```
    pub fn from_toml(text: &str) -> ConfigResult<VmConfig> {
        let doc: Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                message: e.to_string(),
            })?;
        let format = format_of(&doc)?;
        let config = match format {
            Format::Sectioned => sectioned(&doc)?,
            Format::Graph => graph(&doc)?,
        };
        config.validate()?;
        Ok(config)
    }
}

// ------------------------------------------------------------------ sections

/// `[base]`: the builder it starts, with id, name, vCPUs and CPU lists.
fn base(b: &Section<'_>, vm_type: VmType, required: bool) -> ConfigResult<VmConfigBuilder> {
    let f = Field::key;
    let id = b.read("id", f("base.id"), required, usize_of)?.unwrap_or(0);
    let name = b
        .read("name", f("base.name"), required, string)?
        .unwrap_or_default();
    let cpu_num = b
        .read("cpu_num", f("base.cpu_num"), required, usize_of)?
        .unwrap_or(0);
    let mut builder = VmConfigBuilder::new(id, &name, cpu_num).vm_type(vm_type);
    if let Some(v) = b.get("phys_cpu_ids") {
        builder = builder.phys_cpu_ids(&usize_list(v, "base.phys_cpu_ids")?);
    }
    if let Some(v) = b.get("phys_cpu_sets") {
        builder = builder.phys_cpu_sets(&usize_list(v, "base.phys_cpu_sets")?);
    }
    Ok(builder)
}

fn vm_type_of(v: &Value, field: Field) -> ConfigResult<VmType> {
    let n = int(v, field)?;
    VmType::from_raw(n).ok_or(ConfigError::UnknownVmType { field, value: n })
}

/// `[kernel]`, both formats (`required`: the sectioned format's required keys).
fn kernel(k: &Section<'_>, required: bool) -> ConfigResult<KernelConfig> {
    let f = Field::key;
    if k.get("disk_path").is_some() {
        return Err(ConfigError::NotSupported {
            field: f("kernel.disk_path"),
            why: "no version of axvisor attaches a disk from it; pass a disk controller \
                  through instead",
        });
    }
    let opt_string = |key: &str, path: &'static str| -> ConfigResult<Option<String>> {
        k.get(key).map(|v| string(v, f(path))).transpose()
    };
    let opt_gpa = |key: &str, path: &'static str| -> ConfigResult<Option<GuestPhysAddr>> {
        k.get(key).map(|v| gpa_of(v, f(path))).transpose()
    };
    let kernel_path = k
        .read("kernel_path", f("kernel.kernel_path"), required, string)?
        .unwrap_or_default();
    let image_location = match opt_string("image_location", "kernel.image_location")?.as_deref() {
        // axvisor loads from its file system only when told "fs" (since 2026).
        None | Some("memory") => ImageLocation::Memory,
        Some("fs") => ImageLocation::Fs,
        Some(other) => {
            return Err(ConfigError::UnknownName {
                field: f("kernel.image_location"),
                value: other.to_string(),
                expected: "\"fs\" or \"memory\"",
            });
        }
    };
    let memory_regions = k
        .read(
            "memory_regions",
            f("kernel.memory_regions"),
            required,
            |v, _| {
                list(v, "kernel.memory_regions")?
                    .map(|(field, v)| region(v, field))
                    .collect::<ConfigResult<Vec<_>>>()
            },
        )?
        .unwrap_or_default();
    let enable_bios = k
        .get("enable_bios")
        .map(|v| boolean(v, f("kernel.enable_bios")))
        .transpose()?
        .unwrap_or(false);
    let boot_protocol = boot_protocol(
        opt_string("boot_protocol", "kernel.boot_protocol")?.as_deref(),
        enable_bios,
    )?;
    // `kernel_load_addr` omitted: 2 MiB into the first memory region (axvm of
    // 2025-11, the version that reads such files); `entry_point` omitted: the load
    // address.
    let load = match opt_gpa("kernel_load_addr", "kernel.kernel_load_addr")? {
        Some(a) => a,
        None => {
            let first = memory_regions.first().ok_or(ConfigError::NoKernelPlace {
                field: f("kernel.kernel_load_addr"),
            })?;
            if first.size <= super::DEFAULT_KERNEL_OFFSET {
                return Err(ConfigError::NoKernelPlace {
                    field: f("kernel.kernel_load_addr"),
                });
            }
            first.gpa + super::DEFAULT_KERNEL_OFFSET
        }
    };
    let entry = opt_gpa("entry_point", "kernel.entry_point")?.unwrap_or(load);
    Ok(KernelConfig {
        entry_point: entry,
        image_location,
        kernel_path,
        kernel_load_addr: load,
        boot_protocol,
        bios_path: opt_string("bios_path", "kernel.bios_path")?,
        uefi_firmware_path: opt_string("uefi_firmware_path", "kernel.uefi_firmware_path")?,
        bios_load_addr: opt_gpa("bios_load_addr", "kernel.bios_load_addr")?,
        dtb_path: opt_string("dtb_path", "kernel.dtb_path")?,
        dtb_load_addr: opt_gpa("dtb_load_addr", "kernel.dtb_load_addr")?,
        ramdisk_path: opt_string("ramdisk_path", "kernel.ramdisk_path")?,
        ramdisk_load_addr: opt_gpa("ramdisk_load_addr", "kernel.ramdisk_load_addr")?,
        cmdline: opt_string("cmdline", "kernel.cmdline")?,
        memory_regions,
    })
}

/// `enable_bios` and `boot_protocol` together, as axvmconfig 0.8 checks them: no
/// BIOS means direct boot; a BIOS means multiboot (the default) or UEFI.
fn boot_protocol(named: Option<&str>, enable_bios: bool) -> ConfigResult<BootProtocol> {
    let field = Field::key("kernel.boot_protocol");
    let protocol = match named {
        None if enable_bios => BootProtocol::Multiboot,
        None => BootProtocol::Direct,
        // 0.8.2's aliases; 0.8.9 keeps only the first name of each.
        Some("direct" | "kernel") => BootProtocol::Direct,
        Some("multiboot" | "bios" | "axvm-bios") => BootProtocol::Multiboot,
        Some("uefi" | "efi") => BootProtocol::Uefi,
        Some(other) => {
            return Err(ConfigError::UnknownName {
                field,
                value: other.to_string(),
                expected: "\"direct\", \"multiboot\" or \"uefi\"",
            });
        }
    };
    if enable_bios == (protocol == BootProtocol::Direct) {
        return Err(ConfigError::BootProtocolConflict {
            field,
            protocol,
            enable_bios,
        });
    }
    Ok(protocol)
}

fn region(v: &Value, field: Field) -> ConfigResult<MemoryRegionConfig> {
    let r = Record::read(
        v,
        field,
        &["gpa", "size", "flags", "map_type", "populate"],
        4,
        "4 or 5 [gpa, size, flags, map_type(, populate)]",
    )?;
    let value = |i: usize| r.get(i).unwrap_or(&Value::Integer(0)).clone();
    let flags_raw = int(&value(2), field.part("flags"))?;
    let flags = u32::try_from(flags_raw)
        .ok()
        .and_then(MappingFlags::from_bits)
        .ok_or(ConfigError::UnknownFlags {
            field: field.part("flags"),
            value: flags_raw,
        })?;
    let map_raw = int(&value(3), field.part("map_type"))?;
    let map_type = MapType::from_raw(map_raw).ok_or(ConfigError::UnknownMapType {
        field: field.part("map_type"),
        value: map_raw,
    })?;
    let populate = match r.get(4) {
        None => Populate::Eager,
        Some(p) => match int(p, field.part("populate"))? {
            0 => Populate::Eager,
            1 => Populate::Lazy,
            2 => Populate::LazyHuge,
            n => {
                return Err(ConfigError::UnknownPopulate {
                    field: field.part("populate"),
                    value: n,
                });
            }
        },
    };
    Ok(MemoryRegionConfig {
        gpa: gpa_of(&value(0), field.part("gpa"))?,
        size: usize_of(&value(1), field.part("size"))?,
        flags,
        map_type,
        populate,
    })
}

/// The sectioned format: `[base]`, `[kernel]` and `[devices]`, all required, with
/// the keys of axvmconfig 0.2 to 0.8.3.
fn sectioned(doc: &Table) -> ConfigResult<VmConfig> {
    let b = Section::required(doc, "base", keys::BASE)?;
    let vm_type = vm_type_of(
        b.req("vm_type", Field::key("base.vm_type"))?,
        Field::key("base.vm_type"),
    )?;
    let mut builder = base(&b, vm_type, true)?;
    let k = Section::required(doc, "kernel", keys::KERNEL)?;
    builder = builder.kernel_config(kernel(&k, true)?);
    let d = Section::required(doc, "devices", keys::DEVICES)?;
    let mut devices = DevicesConfig::default();
    let path = "devices.passthrough_devices";
    for (field, v) in list(d.req("passthrough_devices", Field::key(path))?, path)? {
        devices.passthrough_devices.push(passthrough(v, field)?);
    }
    let path = "devices.emu_devices";
    for (field, v) in list(d.req("emu_devices", Field::key(path))?, path)? {
        devices.emu_devices.push(emu(v, field)?);
    }
    if let Some(v) = d.get("interrupt_mode") {
        devices.interrupt_mode = interrupt_mode(v)?;
    }
    if let Some(v) = d.get("excluded_devices") {
        // axvisor flattens the inner lists.
        for (field, inner) in list(v, "devices.excluded_devices")? {
            for p in array(inner, field)? {
                devices.excluded_devices.push(node_path(p, field, true)?);
            }
        }
    }
    if let Some(v) = d.get("passthrough_addresses") {
        for (field, e) in list(v, "devices.passthrough_addresses")? {
            let r = Record::read(
                e,
                field,
                &["base_gpa", "length"],
                0,
                "0 to 2 [base_gpa, length]",
            )?;
            devices
                .passthrough_addresses
                .push(PassthroughAddressConfig {
                    base_gpa: GuestPhysAddr::from_usize(r.usize_or_0(0, "base_gpa")?),
                    length: r.usize_or_0(1, "length")?,
                });
        }
    }
    if let Some(v) = d.get("passthrough_ports") {
        for (field, e) in list(v, "devices.passthrough_ports")? {
            let r = Record::read(e, field, &["base", "length"], 0, "0 to 2 [base, length]")?;
            let port = |i: usize, part: &'static str| -> ConfigResult<u16> {
                let n = r.usize_or_0(i, part)?;
                u16::try_from(n).map_err(|_| ConfigError::OutOfRange {
                    field: field.part(part),
                    value: i64::try_from(n).unwrap_or(i64::MAX),
                })
            };
            devices.passthrough_ports.push(PortRangeConfig {
                base: port(0, "base")?,
                length: port(1, "length")?,
            });
        }
    }
    if let Some(v) = d.get("address_space_policy") {
        let field = Field::key("devices.address_space_policy");
        match string(v, field)?.as_str() {
            "virtualized" | "virtual" => {}
            // What a pass-through guest gets: every device of the host tree that the
            // config does not exclude (see `resolve_host_devices`).
            "passthrough" | "pt" => devices
                .passthrough_devices
                .push(PassthroughDeviceConfig::host_node("/")),
            other => {
                return Err(ConfigError::UnknownName {
                    field,
                    value: other.to_string(),
                    expected: "\"virtualized\" or \"passthrough\"",
                });
            }
        }
    }
    Ok(builder.devices_config(devices).build_unchecked())
}

/// One entry of `passthrough_devices`: one to five elements (`name`, then
/// `base_gpa`, `base_hpa`, `length`, `irq_id`, the missing ones 0). A name that is
/// an absolute path with all numbers 0 names a host device-tree node.
fn passthrough(v: &Value, field: Field) -> ConfigResult<PassthroughDeviceConfig> {
    let r = Record::read(
        v,
        field,
        &["name", "base_gpa", "base_hpa", "length", "irq_id"],
        1,
        "1 to 5 [name(, base_gpa, base_hpa, length, irq_id)]",
    )?;
    let name = string(r.get(0).unwrap_or(&Value::Integer(0)), field.part("name"))?;
    let d = PassthroughDeviceConfig {
        base_gpa: GuestPhysAddr::from_usize(r.usize_or_0(1, "base_gpa")?),
        base_hpa: HostPhysAddr::from_usize(r.usize_or_0(2, "base_hpa")?),
        length: r.usize_or_0(3, "length")?,
        irq: r.usize_or_0(4, "irq_id")?,
        host_node: false,
        name,
    };
    let zero =
        d.base_gpa.as_usize() == 0 && d.base_hpa.as_usize() == 0 && d.length == 0 && d.irq == 0;
    if zero && d.name.starts_with('/') {
        return Ok(PassthroughDeviceConfig::host_node(&d.name));
    }
    Ok(d)
}

fn emu(v: &Value, field: Field) -> ConfigResult<EmuDeviceConfig> {
    let r = Record::read(
        v,
        field,
        &[
            "name", "base_gpa", "length", "irq_id", "emu_type", "cfg_list",
        ],
        6,
        "6 [name, base_gpa, length, irq_id, emu_type, cfg_list]",
    )?;
    let value = |i: usize| r.get(i).unwrap_or(&Value::Integer(0));
    let cfg_list = array(value(5), field.part("cfg_list"))?
        .iter()
        .map(|x| usize_of(x, field.part("cfg_list")))
        .collect::<ConfigResult<Vec<_>>>()?;
    let base_gpa = gpa_of(value(1), field.part("base_gpa"))?;
    let length = usize_of(value(2), field.part("length"))?;
    let emu_type = int(value(4), field.part("emu_type"))?;
    Ok(EmuDeviceConfig {
        name: string(value(0), field.part("name"))?,
        space: emu_space(emu_type, base_gpa, length),
        base_gpa,
        length,
        irq_id: usize_of(value(3), field.part("irq_id"))?,
        emu_type,
        cfg_list,
    })
}

fn interrupt_mode(v: &Value) -> ConfigResult<InterruptMode> {
    let field = Field::key("devices.interrupt_mode");
    let s = string(v, field)?;
    Ok(match s.as_str() {
        "no_irq" | "no" | "none" => InterruptMode::NoIrq,
        "emu" | "emulated" => InterruptMode::Emulated,
        "passthrough" | "pt" => InterruptMode::Passthrough,
        _ => {
            return Err(ConfigError::UnknownName {
                field,
                value: s,
                expected: "\"no_irq\", \"emu\" or \"passthrough\"",
            });
        }
    })
}

/// A device-tree path: absolute; `"/"` (the whole tree) only where `root` allows.
fn node_path(v: &Value, field: Field, root: bool) -> ConfigResult<String> {
    let path = string(v, field)?;
    if !path.starts_with('/') {
        return Err(ConfigError::BadNodePath {
            field,
            path,
            why: "is not absolute",
        });
    }
    if !root && path == "/" {
        return Err(ConfigError::BadNodePath {
            field,
            path,
            why: "selects the whole tree (say base.guest_type = \"passthrough\")",
        });
    }
    Ok(path)
}

/// The device-graph format of axvmconfig 0.8.4 and later: every table and key
/// optional, unknown keys refused, `guest_type` (or its alias `vm_type`) instead of
/// the VM type, and physical devices named by device-tree path.
fn graph(doc: &Table) -> ConfigResult<VmConfig> {
    let b = Section::of(doc, "base", keys::BASE_GRAPH)?;
    let guest_field = Field::key("base.guest_type");
    // guest_type "passthrough" (legacy vm_type 0 or 1): every host device not
    // disabled; "virtualized" (legacy 2): only those listed.
    let (vm_type, all_host_devices) = match b
        .as_ref()
        .and_then(|b| b.get("guest_type").or(b.get("vm_type")))
    {
        None => (VmType::Linux, false),
        Some(Value::String(s)) => match s.as_str() {
            "passthrough" => (VmType::Rtos, true),
            "virtualized" => (VmType::Linux, false),
            _ => {
                return Err(ConfigError::UnknownName {
                    field: guest_field,
                    value: s.clone(),
                    expected: "\"passthrough\" or \"virtualized\"",
                });
            }
        },
        Some(v) => {
            let t = vm_type_of(v, guest_field)?;
            (t, t != VmType::Linux)
        }
    };
    if let Some(b) = &b
        && b.get("guest_type").is_some()
        && b.get("vm_type").is_some()
    {
        return Err(ConfigError::Duplicate {
            field: Field::key("base.vm_type"),
            other: guest_field,
        });
    }
    let empty = Table::new();
    let b = b.unwrap_or(Section { t: &empty });
    let mut builder = base(&b, vm_type, false)?;
    let mut graph_kernel = keys::KERNEL.to_vec();
    graph_kernel.retain(|k| *k != "disk_path");
    let k = Section::of(doc, "kernel", &graph_kernel)?.unwrap_or(Section { t: &empty });
    builder = builder.kernel_config(kernel(&k, false)?);
    let d = Section::of(doc, "devices", keys::DEVICES_GRAPH)?.unwrap_or(Section { t: &empty });
    let mut devices = DevicesConfig::default();
    let refs = |key: &str, path: &'static str| -> ConfigResult<Vec<String>> {
        let Some(v) = d.get(key) else {
            return Ok(Vec::new());
        };
        list(v, path)?
            .map(|(field, e)| {
                let t = table(e, field)?;
                known_keys(t, field, &["path"])?;
                node_path(
                    t.get("path").ok_or(ConfigError::Missing {
                        field: field.part("path"),
                    })?,
                    field.part("path"),
                    false,
                )
            })
            .collect()
    };
    let selected = refs("passthrough", "devices.passthrough")?;
    let disabled = refs("disabled", "devices.disabled")?;
    if let Some(i) = selected.iter().position(|p| disabled.contains(p)) {
        return Err(ConfigError::BadNodePath {
            field: Field::at("devices.passthrough", i),
            path: selected[i].clone(),
            why: "is both passed through and disabled",
        });
    }
    if let Some(v) = d.get("virtual")
        && !array(v, Field::key("devices.virtual"))?.is_empty()
    {
        return Err(ConfigError::NotSupported {
            field: Field::at("devices.virtual", 0),
            why: "axvm's virtual-device model catalog is not part of this project; \
                  attach device models by name to [devices] emu_devices",
        });
    }
    if all_host_devices {
        devices
            .passthrough_devices
            .push(PassthroughDeviceConfig::host_node("/"));
    }
    devices.passthrough_devices.extend(
        selected
            .iter()
            .map(|p| PassthroughDeviceConfig::host_node(p)),
    );
    devices.excluded_devices = disabled;
    Ok(builder.devices_config(devices).build_unchecked())
}
