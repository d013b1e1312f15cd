//! TOML loading (feature `std`): walks the parsed document by hand so every error
//! names the exact key and element.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use addrspace::{GuestPhysAddr, HostPhysAddr, MappingFlags, Populate};
use toml::{Table, Value};

use super::{
    ConfigError, ConfigResult, DevicesConfig, EmuDeviceConfig, Field, ImageLocation, InterruptMode,
    KernelConfig, MapType, MemoryRegionConfig, PassthroughDeviceConfig, VmConfig, VmType,
};

fn section<'a>(doc: &'a Table, name: &'static str) -> ConfigResult<&'a Table> {
    match doc.get(name) {
        Some(Value::Table(t)) => Ok(t),
        Some(_) => Err(ConfigError::WrongType {
            field: Field::key(name),
            expected: "table",
        }),
        None => Err(ConfigError::Missing {
            field: Field::key(name),
        }),
    }
}

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
        value: n as i64,
    })
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

fn array(v: &Value, field: Field) -> ConfigResult<&Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(ConfigError::WrongType {
            field,
            expected: "array",
        }),
    }
}

fn req<'a>(t: &'a Table, key: &str, field: Field) -> ConfigResult<&'a Value> {
    t.get(key).ok_or(ConfigError::Missing { field })
}

fn opt_string(t: &Table, key: &str, path: &'static str) -> ConfigResult<Option<String>> {
    t.get(key).map(|v| string(v, Field::key(path))).transpose()
}

fn opt_gpa(t: &Table, key: &str, path: &'static str) -> ConfigResult<Option<GuestPhysAddr>> {
    t.get(key)
        .map(|v| usize_of(v, Field::key(path)).map(GuestPhysAddr::from_usize))
        .transpose()
}

fn usize_list(v: &Value, path: &'static str) -> ConfigResult<Vec<usize>> {
    array(v, Field::key(path))?
        .iter()
        .enumerate()
        .map(|(i, e)| usize_of(e, Field::at(path, i)))
        .collect()
}

fn tuple<'a>(
    v: &'a Value,
    field: Field,
    lens: &[usize],
    expected: &'static str,
) -> ConfigResult<&'a Vec<Value>> {
    let a = array(v, field)?;
    if !lens.contains(&a.len()) {
        return Err(ConfigError::TupleLength {
            field,
            len: a.len(),
            expected,
        });
    }
    Ok(a)
}

fn warn_unknown(t: &Table, section: &str, known: &[&str]) {
    for key in t.keys() {
        if !known.contains(&key.as_str()) {
            log::warn!("VM config: ignoring unknown key {section}.{key}");
        }
    }
}

impl VmConfig {
    /// Parses and validates a VM config in axvisor's format (see the module docs).
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
        warn_unknown(&doc, "", &["base", "kernel", "devices"]);
        let mut config = Self::parse_base(&doc)?;
        config.kernel = Self::parse_kernel(section(&doc, "kernel")?)?;
        if doc.contains_key("devices") {
            config.devices = Self::parse_devices(section(&doc, "devices")?)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn parse_base(doc: &Table) -> ConfigResult<VmConfig> {
        let base = section(doc, "base")?;
        warn_unknown(
            base,
            "base",
            &[
                "id",
                "name",
                "vm_type",
                "cpu_num",
                "phys_cpu_ids",
                "phys_cpu_sets",
            ],
        );
        let f = Field::key;
        let vm_type = match base.get("vm_type") {
            None => VmType::default(),
            Some(v) => {
                let n = int(v, f("base.vm_type"))?;
                VmType::from_raw(n).ok_or(ConfigError::UnknownVmType {
                    field: f("base.vm_type"),
                    value: n,
                })?
            }
        };
        let mut builder = super::VmConfigBuilder::new(
            usize_of(req(base, "id", f("base.id"))?, f("base.id"))?,
            &string(req(base, "name", f("base.name"))?, f("base.name"))?,
            usize_of(req(base, "cpu_num", f("base.cpu_num"))?, f("base.cpu_num"))?,
        )
        .vm_type(vm_type);
        if let Some(v) = base.get("phys_cpu_ids") {
            builder = builder.phys_cpu_ids(&usize_list(v, "base.phys_cpu_ids")?);
        }
        if let Some(v) = base.get("phys_cpu_sets") {
            builder = builder.phys_cpu_sets(&usize_list(v, "base.phys_cpu_sets")?);
        }
        Ok(builder.build_unchecked())
    }

    fn parse_kernel(k: &Table) -> ConfigResult<KernelConfig> {
        warn_unknown(
            k,
            "kernel",
            &[
                "entry_point",
                "image_location",
                "kernel_path",
                "kernel_load_addr",
                "bios_path",
                "bios_load_addr",
                "dtb_path",
                "dtb_load_addr",
                "ramdisk_path",
                "ramdisk_load_addr",
                "cmdline",
                "disk_path",
                "memory_regions",
            ],
        );
        let f = Field::key;
        let gpa = |key: &str, path: &'static str| -> ConfigResult<GuestPhysAddr> {
            Ok(GuestPhysAddr::from_usize(usize_of(
                req(k, key, f(path))?,
                f(path),
            )?))
        };
        let image_location = match opt_string(k, "image_location", "kernel.image_location")? {
            None => ImageLocation::Fs,
            Some(s) => match s.as_str() {
                "fs" => ImageLocation::Fs,
                "memory" => ImageLocation::Memory,
                _ => {
                    return Err(ConfigError::UnknownName {
                        field: f("kernel.image_location"),
                        value: s,
                        expected: "\"fs\" or \"memory\"",
                    });
                }
            },
        };
        let regions_field = f("kernel.memory_regions");
        let regions = array(req(k, "memory_regions", regions_field)?, regions_field)?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_region(v, Field::at("kernel.memory_regions", i)))
            .collect::<ConfigResult<Vec<_>>>()?;
        Ok(KernelConfig {
            entry_point: gpa("entry_point", "kernel.entry_point")?,
            image_location,
            kernel_path: string(
                req(k, "kernel_path", f("kernel.kernel_path"))?,
                f("kernel.kernel_path"),
            )?,
            kernel_load_addr: gpa("kernel_load_addr", "kernel.kernel_load_addr")?,
            bios_path: opt_string(k, "bios_path", "kernel.bios_path")?,
            bios_load_addr: opt_gpa(k, "bios_load_addr", "kernel.bios_load_addr")?,
            dtb_path: opt_string(k, "dtb_path", "kernel.dtb_path")?,
            dtb_load_addr: opt_gpa(k, "dtb_load_addr", "kernel.dtb_load_addr")?,
            ramdisk_path: opt_string(k, "ramdisk_path", "kernel.ramdisk_path")?,
            ramdisk_load_addr: opt_gpa(k, "ramdisk_load_addr", "kernel.ramdisk_load_addr")?,
            cmdline: opt_string(k, "cmdline", "kernel.cmdline")?,
            memory_regions: regions,
        })
    }

    fn parse_devices(d: &Table) -> ConfigResult<DevicesConfig> {
        warn_unknown(
            d,
            "devices",
            &[
                "passthrough_devices",
                "emu_devices",
                "interrupt_mode",
                "excluded_devices",
                "passthrough_addresses",
            ],
        );
        let mut out = DevicesConfig::default();
        if let Some(v) = d.get("passthrough_devices") {
            let path = "devices.passthrough_devices";
            for (i, e) in array(v, Field::key(path))?.iter().enumerate() {
                let field = Field::at(path, i);
                let t = tuple(e, field, &[5], "5 [name, base_gpa, base_hpa, length, irq]")?;
                out.passthrough_devices.push(PassthroughDeviceConfig {
                    name: string(&t[0], field.part("name"))?,
                    base_gpa: GuestPhysAddr::from_usize(usize_of(&t[1], field.part("base_gpa"))?),
                    base_hpa: HostPhysAddr::from_usize(usize_of(&t[2], field.part("base_hpa"))?),
                    length: usize_of(&t[3], field.part("length"))?,
                    irq: usize_of(&t[4], field.part("irq"))?,
                });
            }
        }
        if let Some(v) = d.get("emu_devices") {
            let path = "devices.emu_devices";
            for (i, e) in array(v, Field::key(path))?.iter().enumerate() {
                let field = Field::at(path, i);
                let t = tuple(
                    e,
                    field,
                    &[5, 6],
                    "6 [name, base_gpa, length, irq_id, emu_type, cfg_list]",
                )?;
                let cfg_list = match t.get(5) {
                    None => Vec::new(),
                    Some(list) => array(list, field.part("cfg_list"))?
                        .iter()
                        .map(|x| usize_of(x, field.part("cfg_list")))
                        .collect::<ConfigResult<Vec<_>>>()?,
                };
                out.emu_devices.push(EmuDeviceConfig {
                    name: string(&t[0], field.part("name"))?,
                    base_gpa: GuestPhysAddr::from_usize(usize_of(&t[1], field.part("base_gpa"))?),
                    length: usize_of(&t[2], field.part("length"))?,
                    irq_id: usize_of(&t[3], field.part("irq_id"))?,
                    emu_type: int(&t[4], field.part("emu_type"))?,
                    cfg_list,
                });
            }
        }
        if let Some(v) = d.get("interrupt_mode") {
            let field = Field::key("devices.interrupt_mode");
            let s = string(v, field)?;
            out.interrupt_mode = match s.as_str() {
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
            };
        }
        Ok(out)
    }
}

fn parse_region(v: &Value, field: Field) -> ConfigResult<MemoryRegionConfig> {
    let t = tuple(
        v,
        field,
        &[4, 5],
        "4 or 5 [gpa, size, flags, map_type(, populate)]",
    )?;
    let flags_raw = int(&t[2], field.part("flags"))?;
    let flags = u32::try_from(flags_raw)
        .ok()
        .and_then(MappingFlags::from_bits)
        .ok_or(ConfigError::UnknownFlags {
            field: field.part("flags"),
            value: flags_raw,
        })?;
    let map_raw = int(&t[3], field.part("map_type"))?;
    let map_type = MapType::from_raw(map_raw).ok_or(ConfigError::UnknownMapType {
        field: field.part("map_type"),
        value: map_raw,
    })?;
    let populate = match t.get(4) {
        None => Populate::Eager,
        Some(p) => match int(p, field.part("populate"))? {
            0 => Populate::Eager,
            1 => Populate::Lazy,
            n => {
                return Err(ConfigError::UnknownPopulate {
                    field: field.part("populate"),
                    value: n,
                });
            }
        },
    };
    Ok(MemoryRegionConfig {
        gpa: GuestPhysAddr::from_usize(usize_of(&t[0], field.part("gpa"))?),
        size: usize_of(&t[1], field.part("size"))?,
        flags,
        map_type,
        populate,
    })
}
