//! Validation of a [`VmConfig`]: every check a VM needs before it is built, each error
//! naming the field and the value. Ranges are [`GpaRange`]s (4 KiB pages, no
//! overflow); overlaps are found by one sort and sweep ([`super::sweep`]), so n
//! regions or devices cost O(n log n).

use alloc::vec::Vec;
use core::ops::Deref;

use addrspace::{GpaRange, GuestPhysAddr, MappingFlags, PAGE_SIZE, Populate};

use super::sweep::{Disjoint, Span, first_conflict};
use super::{
    BootProtocol, ConfigError, ConfigResult, DeviceSpace, EmuDeviceConfig, Field, KNOWN_EMU_TYPES,
    MapType, MemoryRegionConfig, PORT_SPACE, PassthroughDeviceConfig, VmConfig,
};

/// The most vCPUs a VM may have. A documented limit rather than the HAL's CPU count,
/// because configs are checked where no HAL exists (build scripts, `cargo xtask config
/// check`); it is far above any board this project or axvisor's configs run (the
/// largest has 8) and keeps a VM's per-vCPU state bounded.
pub const MAX_CPU_NUM: usize = 1024;

/// Where the kernel goes when `kernel_load_addr` is omitted: this far into the first
/// memory region (axvm of 2025-11, the version that reads such files).
pub const DEFAULT_KERNEL_OFFSET: usize = 0x20_0000;

pub(crate) const REGIONS: &str = "kernel.memory_regions";
pub(crate) const PASSTHROUGH: &str = "devices.passthrough_devices";
pub(crate) const EMU: &str = "devices.emu_devices";
const ADDRESSES: &str = "devices.passthrough_addresses";
const PORTS: &str = "devices.passthrough_ports";
const EXCLUDED: &str = "devices.excluded_devices";

/// The 4 KiB pages covering `[base, base + length)`; `None` when `length` is 0 or the
/// page-rounded end does not fit in the address space.
pub(crate) fn page_cover(base: GuestPhysAddr, length: usize) -> Option<GpaRange> {
    let start = base.as_usize() & !(PAGE_SIZE - 1);
    let end = base
        .as_usize()
        .checked_add(length)?
        .checked_next_multiple_of(PAGE_SIZE)?;
    GpaRange::from_bounds(
        GuestPhysAddr::from_usize(start),
        GuestPhysAddr::from_usize(end),
    )
    .ok()
}

/// `[base, base + length)` widened to pages, or the error naming `field`.
fn cover(field: Field, base: usize, length: usize) -> ConfigResult<GpaRange> {
    if length == 0 {
        return Err(ConfigError::ZeroSize { field });
    }
    page_cover(GuestPhysAddr::from_usize(base), length).ok_or(ConfigError::Overflow {
        field,
        start: base,
        size: length,
    })
}

/// Checks pass-through device `d` (entry `field`) on its own: not empty, GPA and HPA
/// at the same offset within a page, neither range overflowing. Returns its GPA range
/// widened to pages and its GPA − HPA offset (wrapping).
pub(crate) fn passthrough_pages(
    field: Field,
    d: &PassthroughDeviceConfig,
) -> ConfigResult<(GpaRange, usize)> {
    let (gpa, hpa) = (d.base_gpa.as_usize(), d.base_hpa.as_usize());
    if d.length != 0 && gpa % PAGE_SIZE != hpa % PAGE_SIZE {
        return Err(ConfigError::PageOffsetMismatch { field, gpa, hpa });
    }
    let pages = cover(field, gpa, d.length)?;
    cover(field.part("base_hpa"), hpa, d.length)?;
    Ok((pages, gpa.wrapping_sub(hpa)))
}

/// Checks region `r` (entry `field`) on its own and returns its range.
fn region_range(field: Field, r: &MemoryRegionConfig) -> ConfigResult<GpaRange> {
    if r.size == 0 {
        return Err(ConfigError::ZeroSize { field });
    }
    let range = GpaRange::new(r.gpa, r.size).map_err(|e| match e {
        addrspace::Error::Unaligned { what, value, .. } => ConfigError::Unaligned {
            field: field.part(if what == "size" { "size" } else { "gpa" }),
            value,
        },
        _ => ConfigError::Overflow {
            field,
            start: r.gpa.as_usize(),
            size: r.size,
        },
    })?;
    if r.flags.access().is_empty() {
        return Err(ConfigError::NoAccess {
            field: field.part("flags"),
            flags: r.flags,
        });
    }
    if r.flags.contains(MappingFlags::DEVICE) && r.map_type == MapType::Alloc {
        return Err(ConfigError::DeviceFlagOnRam {
            field: field.part("flags"),
            flags: r.flags,
        });
    }
    if r.populate != Populate::Eager && r.map_type != MapType::Alloc {
        return Err(ConfigError::LazyNotAlloc {
            field: field.part("populate"),
            map_type: r.map_type.raw(),
        });
    }
    Ok(range)
}

fn span(range: GpaRange, index: usize) -> Span<GuestPhysAddr> {
    Span {
        start: range.start(),
        end: range.end(),
        index,
    }
}

/// The first index `i` such that an earlier entry has the same key (the second
/// occurrence in file order), with that earlier index.
fn first_repeat<K: Ord>(keys: impl Iterator<Item = K>) -> Option<(usize, usize)> {
    let mut sorted: Vec<(K, usize)> = keys.enumerate().map(|(i, k)| (k, i)).collect();
    sorted.sort_unstable();
    sorted
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| (w[1].1, w[0].1))
        .min()
}

/// The guest RAM as written: regions at fixed addresses (alloc, reserved), which
/// must not overlap, and identical regions, which the host places at VM creation
/// (so they may overlap anything on paper).
struct Ram {
    fixed: Disjoint<GuestPhysAddr>,
    identical: Vec<Span<GuestPhysAddr>>,
}

impl Ram {
    /// Whether `gpa` lies in some region, as written.
    fn contains(&self, gpa: GuestPhysAddr) -> bool {
        self.fixed.containing(gpa).is_some()
            || self.identical.iter().any(|s| s.start <= gpa && gpa < s.end)
    }
}

/// A path that names a device-tree node.
fn check_path(field: Field, path: &str) -> ConfigResult<()> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::BadNodePath {
            field,
            path: path.into(),
            why: "is not absolute",
        })
    }
}

/// A VM configuration ready to build a VM from: it validated, and nothing in it is
/// left to resolve (no host device-tree reference, RAM known). Only
/// [`VmConfig::into_valid`] makes one, so [`crate::Vm::new`] does not validate again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidConfig(VmConfig);

impl ValidConfig {
    /// The configuration.
    pub fn config(&self) -> &VmConfig {
        &self.0
    }

    /// Gives the configuration back (to change and validate again).
    pub fn into_inner(self) -> VmConfig {
        self.0
    }
}

impl Deref for ValidConfig {
    type Target = VmConfig;

    fn deref(&self) -> &VmConfig {
        &self.0
    }
}

impl VmConfig {
    /// Validates and checks that nothing is left to resolve: the configuration a VM
    /// is built from.
    pub fn into_valid(self) -> ConfigResult<ValidConfig> {
        self.into_valid_with(false)
    }

    /// As [`VmConfig::into_valid`], except that a config whose guest RAM is still to
    /// come from the guest device tree ([`VmConfig::memory_from_dtb`]) is accepted as
    /// it is: its VM has no guest RAM, only its devices. For tools that show a
    /// config's layout without the guest's tree (`cargo xtask inspect`), never for
    /// a VM that runs.
    pub fn into_valid_without_guest_ram(self) -> ConfigResult<ValidConfig> {
        let ram_may_wait = self.memory_from_dtb();
        self.into_valid_with(ram_may_wait)
    }

    fn into_valid_with(self, ram_may_wait: bool) -> ConfigResult<ValidConfig> {
        self.validate()?;
        if let Some((i, d)) = self
            .devices
            .passthrough_devices
            .iter()
            .enumerate()
            .find(|(_, d)| d.host_node)
        {
            return Err(ConfigError::UnresolvedHostNode {
                field: Field::at(PASSTHROUGH, i),
                path: d.name.clone(),
            });
        }
        if self.kernel.memory_regions.is_empty() && !ram_may_wait {
            return Err(ConfigError::MemoryNotRead {
                field: Field::key(REGIONS),
            });
        }
        Ok(ValidConfig(self))
    }

    /// Checks everything that can be checked before device-tree references are
    /// resolved; the error names the first bad field and its value.
    pub fn validate(&self) -> ConfigResult<()> {
        if self.name.is_empty() {
            return Err(ConfigError::Empty {
                field: Field::key("base.name"),
            });
        }
        self.validate_cpus()?;
        self.validate_boot()?;
        let ram = self.validate_regions()?;
        let k = &self.kernel;
        if let Some(ram) = &ram {
            // A kernel that follows the first (identical) region may be written
            // anywhere; its entry point must then lie inside that region once moved.
            let follows = self.kernel_follows_first_region();
            if follows {
                let size = k.memory_regions[0].size;
                let offset = k
                    .entry_point
                    .as_usize()
                    .checked_sub(k.kernel_load_addr.as_usize());
                if offset.is_none_or(|o| o >= size) && !self.in_fixed_region(k.entry_point) {
                    return Err(ConfigError::EntryOutsideKernelRegion {
                        entry: k.entry_point.as_usize(),
                        load: k.kernel_load_addr.as_usize(),
                        size,
                    });
                }
            }
            let kernel = (!follows).then_some(());
            for (name, addr) in [
                ("kernel.entry_point", kernel.map(|()| k.entry_point)),
                (
                    "kernel.kernel_load_addr",
                    kernel.map(|()| k.kernel_load_addr),
                ),
                ("kernel.dtb_load_addr", k.dtb_load_addr),
                ("kernel.bios_load_addr", k.bios_load_addr),
                ("kernel.ramdisk_load_addr", k.ramdisk_load_addr),
            ] {
                if let Some(a) = addr
                    && !ram.contains(a)
                {
                    return Err(ConfigError::NotInRam {
                        field: Field::key(name),
                        value: a.as_usize(),
                    });
                }
            }
        }
        self.validate_devices(ram.as_ref().map(|r| &r.fixed))?;
        self.validate_ports()
    }

    fn validate_cpus(&self) -> ConfigResult<()> {
        if self.cpu_num == 0 {
            return Err(ConfigError::NoCpus);
        }
        if self.cpu_num > MAX_CPU_NUM {
            return Err(ConfigError::TooManyCpus {
                cpu_num: self.cpu_num,
                max: MAX_CPU_NUM,
            });
        }
        if let Some(ids) = &self.phys_cpu_ids {
            let field = Field::key("base.phys_cpu_ids");
            if ids.len() != self.cpu_num {
                return Err(ConfigError::CpuListLength {
                    field,
                    len: ids.len(),
                    cpu_num: self.cpu_num,
                });
            }
            if let Some((i, _)) = first_repeat(ids.iter()) {
                return Err(ConfigError::DuplicateCpuId {
                    field: Field::at("base.phys_cpu_ids", i),
                    id: ids[i],
                });
            }
        }
        if let Some(sets) = &self.phys_cpu_sets {
            if sets.len() != self.cpu_num {
                return Err(ConfigError::CpuListLength {
                    field: Field::key("base.phys_cpu_sets"),
                    len: sets.len(),
                    cpu_num: self.cpu_num,
                });
            }
            if let Some(i) = sets.iter().position(|s| *s == 0) {
                return Err(ConfigError::EmptyCpuSet {
                    field: Field::at("base.phys_cpu_sets", i),
                });
            }
        }
        Ok(())
    }

    /// What firmware boot needs (axvmconfig 0.8's table): multiboot with a BIOS
    /// image needs its load address; UEFI needs the firmware image and its load
    /// address.
    fn validate_boot(&self) -> ConfigResult<()> {
        let k = &self.kernel;
        let missing = |key| {
            Err(ConfigError::NoFirmware {
                field: Field::key(key),
                protocol: k.boot_protocol,
            })
        };
        match k.boot_protocol {
            BootProtocol::Direct => Ok(()),
            BootProtocol::Multiboot if k.bios_path.is_some() && k.bios_load_addr.is_none() => {
                missing("kernel.bios_load_addr")
            }
            BootProtocol::Multiboot => Ok(()),
            BootProtocol::Uefi if k.uefi_firmware_path.is_none() && k.bios_path.is_none() => {
                missing("kernel.uefi_firmware_path")
            }
            BootProtocol::Uefi if k.bios_load_addr.is_none() => missing("kernel.bios_load_addr"),
            BootProtocol::Uefi => Ok(()),
        }
    }

    /// Checks each region and the overlaps of those at fixed addresses; `None` when
    /// the RAM is still to be read from the guest device tree.
    fn validate_regions(&self) -> ConfigResult<Option<Ram>> {
        let regions = &self.kernel.memory_regions;
        if regions.is_empty() {
            return match self.kernel.dtb_path {
                Some(_) => Ok(None),
                None => Err(ConfigError::NoMemory),
            };
        }
        let mut fixed = Vec::with_capacity(regions.len());
        let mut identical = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            let s = span(region_range(Field::at(REGIONS, i), r)?, i);
            match r.map_type {
                MapType::Identical => identical.push(s),
                MapType::Alloc | MapType::Reserved => fixed.push(s),
            }
        }
        if let Some((a, b, at)) = first_conflict(&mut fixed, |_, _| true) {
            return Err(ConfigError::Overlap {
                field: Field::at(REGIONS, a.index.max(b.index)),
                other: a.index.min(b.index),
                at: at.as_usize(),
            });
        }
        Ok(Some(Ram {
            fixed: Disjoint::new(fixed),
            identical,
        }))
    }

    /// Device ranges: each on its own, then against RAM at fixed addresses (`ram`,
    /// when known) and against each other. Host device-tree references are checked
    /// once resolved.
    fn validate_devices(&self, ram: Option<&Disjoint<GuestPhysAddr>>) -> ConfigResult<()> {
        let hits_ram = |field: Field, r: GpaRange| match ram
            .and_then(|ram| ram.overlapping(r.start(), r.end()))
        {
            Some((region, at)) => Err(ConfigError::DeviceOverlapsRam {
                field,
                region: region.index,
                at: at.as_usize(),
            }),
            None => Ok(()),
        };
        let d = &self.devices;
        let (pt, addresses, emu) = (
            &d.passthrough_devices,
            &d.passthrough_addresses,
            &d.emu_devices,
        );
        for (i, p) in d.excluded_devices.iter().enumerate() {
            check_path(Field::at(EXCLUDED, i), p)?;
        }
        // Each device on its own, in file order; then all of them together. Spans
        // are numbered: pass-through devices 0.., then pass-through addresses, then
        // emulated devices; `offsets` holds GPA - HPA of the first two kinds.
        let mut spans = Vec::with_capacity(pt.len() + addresses.len() + emu.len());
        let mut offsets = Vec::with_capacity(pt.len() + addresses.len());
        for (i, dev) in pt.iter().enumerate() {
            let field = Field::at(PASSTHROUGH, i);
            if dev.host_node {
                check_path(field.part("name"), &dev.name)?;
                offsets.push(0);
                continue;
            }
            let (pages, offset) = passthrough_pages(field, dev)?;
            hits_ram(field, pages)?;
            spans.push(span(pages, i));
            offsets.push(offset);
        }
        for (i, a) in addresses.iter().enumerate() {
            let field = Field::at(ADDRESSES, i);
            let pages = cover(field, a.base_gpa.as_usize(), a.length)?;
            hits_ram(field, pages)?;
            spans.push(span(pages, pt.len() + i));
            offsets.push(0);
        }
        let first_emu = offsets.len();
        for (i, dev) in emu.iter().enumerate() {
            let field = Field::at(EMU, i);
            Self::check_emu(field, dev)?;
            if dev.space == DeviceSpace::Mmio {
                let pages = cover(field, dev.base_gpa.as_usize(), dev.length)?;
                hits_ram(field, pages)?;
                spans.push(span(pages, first_emu + i));
            }
        }
        if let Some((i, other)) = first_repeat(emu.iter().map(|d| d.name.as_str())) {
            return Err(ConfigError::DuplicateName {
                field: Field::at(EMU, i).part("name"),
                name: emu[i].name.clone(),
                other,
            });
        }
        let field_of = |index: usize| {
            if let Some(e) = index.checked_sub(first_emu) {
                Field::at(EMU, e)
            } else if let Some(a) = index.checked_sub(pt.len()) {
                Field::at(ADDRESSES, a)
            } else {
                Field::at(PASSTHROUGH, index)
            }
        };
        // Pass-through ranges may overlap when their GPA→HPA offsets agree (they are
        // merged); that relation is an equivalence, which the sweep needs.
        let conflict = |a: &Span<GuestPhysAddr>, b: &Span<GuestPhysAddr>| {
            a.index >= first_emu || b.index >= first_emu || offsets[a.index] != offsets[b.index]
        };
        if let Some((a, b, at)) = first_conflict(&mut spans, conflict) {
            // Name an emulated device first (it is the one that cannot share), else the
            // later entry.
            let (field, other) = if a.index >= first_emu && b.index < first_emu {
                (a.index, b.index)
            } else if b.index >= first_emu && a.index < first_emu {
                (b.index, a.index)
            } else {
                (a.index.max(b.index), a.index.min(b.index))
            };
            return Err(ConfigError::DeviceOverlap {
                field: field_of(field),
                other: field_of(other),
                at: at.as_usize(),
            });
        }
        Ok(())
    }

    fn check_emu(field: Field, d: &EmuDeviceConfig) -> ConfigResult<()> {
        if d.name.is_empty() {
            return Err(ConfigError::Empty {
                field: field.part("name"),
            });
        }
        if !KNOWN_EMU_TYPES.contains(&d.emu_type) {
            return Err(ConfigError::UnknownEmuType {
                field: field.part("emu_type"),
                value: d.emu_type,
            });
        }
        Ok(())
    }

    /// x86 I/O ports: pass-through ranges and port-I/O emulated devices, each inside
    /// the 64 Ki ports and none sharing a port with another.
    fn validate_ports(&self) -> ConfigResult<()> {
        let d = &self.devices;
        let in_space = |field: Field, base: usize, length: usize| match base.checked_add(length) {
            Some(end) if length > 0 && end <= PORT_SPACE => Ok(Span {
                start: base,
                end,
                index: 0,
            }),
            _ => Err(ConfigError::PortRange {
                field,
                base,
                length,
            }),
        };
        let mut spans = Vec::new();
        let mut fields = Vec::new();
        for (i, p) in d.passthrough_ports.iter().enumerate() {
            let field = Field::at(PORTS, i);
            let s = in_space(field, usize::from(p.base), usize::from(p.length))?;
            spans.push(Span {
                index: fields.len(),
                ..s
            });
            fields.push(field);
        }
        for (i, e) in d.emu_devices.iter().enumerate() {
            if e.space == DeviceSpace::Port {
                let field = Field::at(EMU, i);
                let s = in_space(field, e.base_gpa.as_usize(), e.length)?;
                spans.push(Span {
                    index: fields.len(),
                    ..s
                });
                fields.push(field);
            }
        }
        match first_conflict(&mut spans, |_, _| true) {
            Some((a, b, at)) => Err(ConfigError::DeviceOverlap {
                field: fields[a.index.max(b.index)],
                other: fields[a.index.min(b.index)],
                at,
            }),
            None => Ok(()),
        }
    }
}
