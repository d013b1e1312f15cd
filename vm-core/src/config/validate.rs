//! Validation of a [`VmConfig`]: every check a VM needs before it is built, each error
//! naming the field and the value. Ranges are [`GpaRange`]s (4 KiB pages, no
//! overflow); overlaps are found by one sort and sweep ([`super::sweep`]), so n
//! regions or devices cost O(n log n).

use alloc::vec::Vec;

use addrspace::{GpaRange, GuestPhysAddr, MappingFlags, PAGE_SIZE, Populate};

use super::sweep::{Disjoint, Span, first_conflict};
use super::{
    ConfigError, ConfigResult, EmuDeviceConfig, Field, MapType, MemoryRegionConfig,
    PassthroughDeviceConfig, VmConfig,
};

/// The most vCPUs a VM may have. A documented limit rather than the HAL's CPU count,
/// because configs are checked where no HAL exists (build scripts, `cargo xtask config
/// check`); it is far above any board this project or axvisor's configs run (the
/// largest has 8) and keeps a VM's per-vCPU state bounded.
pub const MAX_CPU_NUM: usize = 1024;

pub(crate) const REGIONS: &str = "kernel.memory_regions";
pub(crate) const PASSTHROUGH: &str = "devices.passthrough_devices";
pub(crate) const EMU: &str = "devices.emu_devices";

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
    if r.flags.contains(MappingFlags::DEVICE) {
        return Err(ConfigError::DeviceFlagOnRam {
            field: field.part("flags"),
            flags: r.flags,
        });
    }
    if r.populate == Populate::Lazy && r.map_type != MapType::Alloc {
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

impl VmConfig {
    /// Checks everything a VM needs before it is built; the error names the first bad
    /// field and its value.
    pub fn validate(&self) -> ConfigResult<()> {
        if self.name.is_empty() {
            return Err(ConfigError::Empty {
                field: Field::key("base.name"),
            });
        }
        self.validate_cpus()?;
        let ram = self.validate_regions()?;
        let k = &self.kernel;
        for (name, addr) in [
            ("kernel.entry_point", Some(k.entry_point)),
            ("kernel.kernel_load_addr", Some(k.kernel_load_addr)),
            ("kernel.dtb_load_addr", k.dtb_load_addr),
            ("kernel.bios_load_addr", k.bios_load_addr),
            ("kernel.ramdisk_load_addr", k.ramdisk_load_addr),
        ] {
            if let Some(a) = addr
                && ram.containing(a).is_none()
            {
                return Err(ConfigError::NotInRam {
                    field: Field::key(name),
                    value: a.as_usize(),
                });
            }
        }
        self.validate_devices(&ram)
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

    /// Checks each region and their overlaps; returns their ranges.
    fn validate_regions(&self) -> ConfigResult<Disjoint<GuestPhysAddr>> {
        let regions = &self.kernel.memory_regions;
        if regions.is_empty() {
            return Err(ConfigError::NoMemory);
        }
        let mut spans = Vec::with_capacity(regions.len());
        for (i, r) in regions.iter().enumerate() {
            spans.push(span(region_range(Field::at(REGIONS, i), r)?, i));
        }
        if let Some((a, b, at)) = first_conflict(&mut spans, |_, _| true) {
            return Err(ConfigError::Overlap {
                field: Field::at(REGIONS, a.index.max(b.index)),
                other: a.index.min(b.index),
                at: at.as_usize(),
            });
        }
        Ok(Disjoint::new(spans))
    }

    fn validate_devices(&self, ram: &Disjoint<GuestPhysAddr>) -> ConfigResult<()> {
        let hits_ram = |field: Field, r: GpaRange| match ram.overlapping(r.start(), r.end()) {
            Some((region, at)) => Err(ConfigError::DeviceOverlapsRam {
                field,
                region: region.index,
                at: at.as_usize(),
            }),
            None => Ok(()),
        };
        let pt = &self.devices.passthrough_devices;
        let emu = &self.devices.emu_devices;
        // Each device on its own, in file order; then all of them together. Spans of
        // pass-through devices are numbered 0..pt.len(), emulated ones after them.
        let mut spans = Vec::with_capacity(pt.len() + emu.len());
        let mut offsets = Vec::with_capacity(pt.len());
        for (i, d) in pt.iter().enumerate() {
            let field = Field::at(PASSTHROUGH, i);
            let (pages, offset) = passthrough_pages(field, d)?;
            hits_ram(field, pages)?;
            spans.push(span(pages, i));
            offsets.push(offset);
        }
        for (i, d) in emu.iter().enumerate() {
            let field = Field::at(EMU, i);
            Self::check_emu(field, d)?;
            let pages = cover(field, d.base_gpa.as_usize(), d.length)?;
            hits_ram(field, pages)?;
            spans.push(span(pages, pt.len() + i));
        }
        if let Some((i, other)) = first_repeat(emu.iter().map(|d| d.name.as_str())) {
            return Err(ConfigError::DuplicateName {
                field: Field::at(EMU, i).part("name"),
                name: emu[i].name.clone(),
                other,
            });
        }
        let field_of = |index: usize| match index.checked_sub(pt.len()) {
            Some(e) => Field::at(EMU, e),
            None => Field::at(PASSTHROUGH, index),
        };
        // Pass-through ranges may overlap when their GPA→HPA offsets agree (they are
        // merged); that relation is an equivalence, which the sweep needs.
        let conflict = |a: &Span<GuestPhysAddr>, b: &Span<GuestPhysAddr>| {
            a.index >= pt.len() || b.index >= pt.len() || offsets[a.index] != offsets[b.index]
        };
        if let Some((a, b, at)) = first_conflict(&mut spans, conflict) {
            // Name an emulated device first (it is the one that cannot share), else the
            // later entry.
            let (field, other) = if a.index >= pt.len() && b.index < pt.len() {
                (a.index, b.index)
            } else if b.index >= pt.len() && a.index < pt.len() {
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
        Ok(())
    }
}
