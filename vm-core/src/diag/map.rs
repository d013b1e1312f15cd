//! [`GuestMap`]: the guest-physical map of a VM as a person debugging it needs it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use addrspace::{
    AddrSpace, Area, Backend, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags,
    NestedFormat, PAGE_SIZE, PageSize, PageTable, Populate, RootRegister,
};
use vcpu_api::{ArchVCpu, usize_of};

use super::Size;
use crate::config::{Field, Hex, MapType, VmConfig};
use crate::device::{MmioBus, device_pages};
use crate::passthrough::PassthroughRange;
use crate::vm::Vm;

/// What a region of the guest-physical map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM allocated by the hypervisor (`map_type` 0), eagerly or lazily.
    Ram(Populate),
    /// Host memory placed by the host (`map_type` 1), at GPA = HPA.
    Identical,
    /// Host memory the platform reserved for the guest (`map_type` 2), GPA = HPA.
    ReservedRam,
    /// Host RAM mapped linearly at run time (`Vm::map_linear_region`).
    LinearRam,
    /// A pass-through device range: GPA → HPA with `DEVICE`.
    Passthrough,
    /// Emulated MMIO: claimed, never mapped; accesses trap to the device model.
    Emulated {
        /// Whether a device model is attached (else accesses are unserved).
        attached: bool,
    },
    /// Claimed (reserved) with no device on the bus: every access is unserved.
    Claimed,
}

impl RegionKind {
    /// Guest RAM (any backing), as opposed to devices.
    pub const fn is_ram(self) -> bool {
        matches!(
            self,
            Self::Ram(_) | Self::Identical | Self::ReservedRam | Self::LinearRam
        )
    }

    /// A device range (pass-through or emulated) or a claimed range.
    pub const fn is_device(self) -> bool {
        !self.is_ram()
    }

    /// A short name for tables and pictures.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ram(Populate::Eager) => "RAM eager",
            Self::Ram(Populate::Lazy) => "RAM lazy",
            Self::Ram(Populate::LazyHuge) => "RAM lazy 2M",
            Self::Identical => "RAM identical",
            Self::ReservedRam => "RAM reserved",
            Self::LinearRam => "RAM linear",
            Self::Passthrough => "pass-through",
            Self::Emulated { attached: true } => "emulated",
            Self::Emulated { attached: false } => "emulated (no model)",
            Self::Claimed => "claimed",
        }
    }
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Where a region comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `kernel.memory_regions[i]` (or a part of it left by a run-time unmap).
    MemoryRegion(usize),
    /// The `devices.passthrough_devices` entries merged into this range: index and
    /// name.
    Passthrough(Vec<(usize, String)>),
    /// The emulated device of this name (`devices.emu_devices[i]` when it is in the
    /// config, else added at run time).
    EmuDevice {
        /// Its index in the config, if it is there.
        index: Option<usize>,
        /// Its name on the bus.
        name: String,
    },
    /// Mapped at run time, not in the config.
    RunTime,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MemoryRegion(i) => write!(f, "{}", Field::at(REGIONS, *i)),
            Self::Passthrough(devices) => {
                for (n, (i, name)) in devices.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} {name:?}", Field::at(PASSTHROUGH, *i))?;
                }
                Ok(())
            }
            Self::EmuDevice {
                index: Some(i),
                name,
            } => write!(f, "{} {name:?}", Field::at(EMU, *i)),
            Self::EmuDevice { index: None, name } => write!(f, "device {name:?} (run time)"),
            Self::RunTime => f.write_str("mapped at run time"),
        }
    }
}

const REGIONS: &str = "kernel.memory_regions";
const PASSTHROUGH: &str = "devices.passthrough_devices";
const EMU: &str = "devices.emu_devices";

/// How many leaves of each size translate a range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafCounts {
    /// 4 KiB pages.
    pub k4: usize,
    /// 2 MiB blocks.
    pub m2: usize,
    /// 1 GiB blocks.
    pub g1: usize,
}

impl LeafCounts {
    /// Bytes the leaves translate.
    pub const fn bytes(&self) -> u64 {
        ((self.k4 as u64) << 12) + ((self.m2 as u64) << 21) + ((self.g1 as u64) << 30)
    }

    /// No leaf at all.
    pub const fn is_empty(&self) -> bool {
        self.k4 == 0 && self.m2 == 0 && self.g1 == 0
    }

    pub(crate) fn add(&mut self, size: PageSize) {
        match size {
            PageSize::Size4K => self.k4 += 1,
            PageSize::Size2M => self.m2 += 1,
            PageSize::Size1G => self.g1 += 1,
        }
    }
}

impl fmt::Display for LeafCounts {
    /// `2x1G 3x2M 1x4K`, largest first; `none` without leaves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        for (n, name) in [(self.g1, "1G"), (self.m2, "2M"), (self.k4, "4K")] {
            if n > 0 {
                if !text.is_empty() {
                    text.push(' ');
                }
                text += &alloc::format!("{n}x{name}");
            }
        }
        f.pad(if text.is_empty() { "none" } else { &text })
    }
}

/// One region of the guest-physical map: one area of the address space, named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRegion {
    /// Where it lies.
    pub range: GpaRange,
    /// What it is.
    pub kind: RegionKind,
    /// The guest's permissions and memory type (empty for claimed/emulated ranges,
    /// which are never mapped).
    pub flags: MappingFlags,
    /// The host-physical address of its first byte, where it is fixed (linear
    /// areas: identical, reserved, pass-through).
    pub hpa: Option<HostPhysAddr>,
    /// The leaves that translate it now.
    pub leaves: LeafCounts,
    /// Guest-memory frames the address space holds for it (allocated RAM).
    pub frames: usize,
    /// Where it comes from.
    pub source: Source,
}

impl MapRegion {
    /// The region as findings and explanations name it: `[start, end) kind flags
    /// (source)`.
    pub fn named(&self) -> impl fmt::Display + '_ {
        Named(self)
    }
}

struct Named<'a>(&'a MapRegion);

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "[{}, {}) {}",
            hex(r.range.start().as_usize()),
            hex(r.range.end().as_usize()),
            r.kind.name()
        )?;
        if !r.flags.is_empty() {
            write!(f, " {}", r.flags)?;
        }
        write!(f, " ({})", r.source)
    }
}

/// One page-table frame (or the root's frames) of the nested table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFrame {
    /// Engine level (0 holds 4 KiB leaves).
    pub level: usize,
    /// The manual's name of the level.
    pub level_name: &'static str,
    /// Where the table is.
    pub hpa: HostPhysAddr,
    /// Frames it takes (more than one only for a concatenated or widened root).
    pub frames: usize,
    /// The first guest-physical address its entries translate.
    pub base: GuestPhysAddr,
    /// How many bytes of guest-physical space its entries translate.
    pub span: usize,
}

/// The guest-physical map of a VM (see the module docs); `Display` prints the
/// dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestMap {
    /// The VM id.
    pub vm_id: usize,
    /// The VM name.
    pub name: String,
    /// The nested format's name.
    pub format: &'static str,
    /// One past the highest GPA the format translates.
    pub gpa_limit: usize,
    /// vCPU 0's entry point.
    pub entry: GuestPhysAddr,
    /// The regions in address order.
    pub regions: Vec<MapRegion>,
    /// The gaps between regions, below the GPA limit.
    pub holes: Vec<GpaRange>,
    /// Every table of the nested table, the root first.
    pub tables: Vec<TableFrame>,
    /// Table frames linked (the root's included).
    pub table_frames: usize,
    /// Guest-memory frames owned by the address space.
    pub data_frames: usize,
    /// Frames held until a flush completes.
    pub deferred_frames: usize,
    /// The nested table's root.
    pub root: HostPhysAddr,
    /// The registers a HAL loads for it, computed with [`GuestMap::vmid`] (VMID
    /// field 0 when that is not known).
    pub registers: [Option<RootRegister>; 2],
    /// The VMID (ASID on x86) the registers were computed with, when the caller
    /// said which one the HAL gave the VM.
    pub vmid: Option<u16>,
}

impl GuestMap {
    /// The map of `space`, with its regions named from `config`, the pass-through
    /// plan and the device bus (what a [`Vm`] holds); registers for `vmid` (VMID
    /// field 0 if `None`).
    pub(crate) fn of<F: NestedFormat, A: FrameAllocator>(
        space: &AddrSpace<F, A>,
        config: &VmConfig,
        passthrough: &[PassthroughRange],
        bus: &MmioBus,
        vmid: Option<u16>,
    ) -> Self {
        let pt = space.page_table();
        let regions: Vec<MapRegion> = space
            .areas()
            .map(|a| region(pt, a, config, passthrough, bus))
            .collect();
        let gpa_limit = PageTable::<F, A>::gpa_limit();
        let mut holes = Vec::new();
        let mut cursor = 0;
        for r in &regions {
            let start = r.range.start().as_usize();
            if start > cursor {
                holes.extend(range(cursor, start));
            }
            cursor = r.range.end().as_usize();
        }
        if cursor < gpa_limit {
            holes.extend(range(cursor, gpa_limit));
        }
        let mut tables = Vec::new();
        pt.for_each_table(|level, hpa, base| {
            let root = level == F::LEVELS - 1;
            tables.push(TableFrame {
                level,
                level_name: F::level_name(level),
                hpa,
                frames: if root { F::ROOT_FRAMES } else { 1 },
                base,
                span: if root {
                    gpa_limit
                } else {
                    1 << (12 + 9 * (level + 1))
                },
            });
        });
        Self {
            vm_id: config.id,
            name: config.name.clone(),
            format: F::NAME,
            gpa_limit,
            entry: config.kernel.entry_point,
            regions,
            holes,
            tables,
            table_frames: space.table_frames(),
            data_frames: space.data_frames(),
            deferred_frames: space.deferred_frames(),
            root: space.root(),
            registers: F::root_registers(space.root(), vmid.unwrap_or(0)),
            vmid,
        }
    }

    /// The region containing `gpa`.
    pub fn region_at(&self, gpa: GuestPhysAddr) -> Option<&MapRegion> {
        self.regions.iter().find(|r| r.range.contains(gpa))
    }

    /// The nearest regions below and above `gpa` (for an address in no region).
    pub fn neighbours(&self, gpa: GuestPhysAddr) -> (Option<&MapRegion>, Option<&MapRegion>) {
        let below = self.regions.iter().rev().find(|r| r.range.end() <= gpa);
        let above = self.regions.iter().find(|r| r.range.start() > gpa);
        (below, above)
    }
}

/// `[start, end)` as a range, when non-empty and aligned.
fn range(start: usize, end: usize) -> Option<GpaRange> {
    GpaRange::from_bounds(
        GuestPhysAddr::from_usize(start),
        GuestPhysAddr::from_usize(end),
    )
    .ok()
}

/// Names area `a`: its kind from its backend and where it lies in the config.
fn region<F: NestedFormat, A: FrameAllocator>(
    pt: &PageTable<F, A>,
    a: &Area,
    config: &VmConfig,
    passthrough: &[PassthroughRange],
    bus: &MmioBus,
) -> MapRegion {
    let mut leaves = LeafCounts::default();
    pt.for_each_leaf_in(&a.range, |_, t| leaves.add(t.size));
    let start = a.range.start();
    let config_region = config
        .kernel
        .memory_regions
        .iter()
        .position(|r| r.gpa <= start && start.as_usize() - r.gpa.as_usize() < r.size);
    let ram_source = config_region.map_or(Source::RunTime, Source::MemoryRegion);
    let (kind, hpa, frames, source) = match a.backend {
        Backend::Reserved => {
            let device = bus.entries().iter().find(|e| {
                let (s, size) = device_pages(e.base, e.length);
                s < a.range.end() && a.range.start().as_usize() < s.as_usize() + size
            });
            match device {
                Some(e) => (
                    RegionKind::Emulated {
                        attached: e.device.is_some(),
                    },
                    None,
                    0,
                    Source::EmuDevice {
                        index: config
                            .devices
                            .emu_devices
                            .iter()
                            .position(|d| d.name == e.name),
                        name: e.name.clone(),
                    },
                ),
                None => (RegionKind::Claimed, None, 0, Source::RunTime),
            }
        }
        Backend::Alloc(populate) => (
            RegionKind::Ram(populate),
            None,
            usize_of(leaves.bytes() / PAGE_SIZE as u64),
            ram_source,
        ),
        Backend::Linear { hpa } if a.flags.contains(MappingFlags::DEVICE) => {
            let planned = passthrough
                .iter()
                .any(|p| p.gpa <= start && start.as_usize() - p.gpa.as_usize() < p.size);
            let devices: Vec<(usize, String)> = config
                .devices
                .passthrough_devices
                .iter()
                .enumerate()
                .filter(|(_, d)| {
                    let s = d.base_gpa.as_usize() & !(PAGE_SIZE - 1);
                    let e = d.base_gpa.as_usize().saturating_add(d.length);
                    s < a.range.end().as_usize() && start.as_usize() < e
                })
                .map(|(i, d)| (i, d.name.clone()))
                .collect();
            let source = if planned && !devices.is_empty() {
                Source::Passthrough(devices)
            } else {
                Source::RunTime
            };
            (RegionKind::Passthrough, Some(hpa), 0, source)
        }
        Backend::Linear { hpa } => {
            let kind = match config_region.map(|i| config.kernel.memory_regions[i].map_type) {
                Some(MapType::Identical) => RegionKind::Identical,
                Some(MapType::Reserved) => RegionKind::ReservedRam,
                _ => RegionKind::LinearRam,
            };
            (kind, Some(hpa), 0, ram_source)
        }
    };
    MapRegion {
        range: a.range,
        kind,
        flags: if a.backend == Backend::Reserved {
            MappingFlags::empty()
        } else {
            a.flags
        },
        hpa,
        leaves,
        frames,
        source,
    }
}

impl<V: ArchVCpu> Vm<V> {
    /// The guest-physical map of this VM (a snapshot: regions, holes, leaves,
    /// frames, tables, root), with the root registers computed for `vmid` (the
    /// VMID/ASID the HAL gave this VM; tools without a HAL pass the VM id; `None`
    /// when the caller does not know it: the registers then carry VMID 0, and the
    /// dump says so).
    pub fn guest_map(&self, vmid: Option<u16>) -> GuestMap {
        let space = self.space.read();
        let bus = self.bus.read();
        GuestMap::of(&space, self.config(), self.passthrough_ranges(), &bus, vmid)
    }
}

/// A column of the dump: `0x4000_0000`.
fn hex(v: usize) -> Hex {
    Hex(v as u64)
}

impl fmt::Display for GuestMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VM {} {:?}: guest-physical map, {}, GPA limit {} ({}), entry {}",
            self.vm_id,
            self.name,
            self.format,
            hex(self.gpa_limit),
            Size(self.gpa_limit as u64),
            hex(self.entry.as_usize()),
        )?;
        writeln!(
            f,
            "  {:<16} {:<16} {:>11}  {:<23} {:<12} {:<14} {:<13} {:>7}  source",
            "GPA start", "GPA end", "size", "kind", "flags", "HPA", "leaves", "frames"
        )?;
        let mut holes = self.holes.iter().peekable();
        let hole_line = |f: &mut fmt::Formatter<'_>, h: &GpaRange| {
            writeln!(
                f,
                "  {:<16} {:<16} {:>11}  hole",
                alloc::format!("{}", hex(h.start().as_usize())),
                alloc::format!("{}", hex(h.end().as_usize())),
                Size(h.size() as u64),
            )
        };
        for r in &self.regions {
            while let Some(h) = holes.next_if(|h| h.start() < r.range.start()) {
                hole_line(f, h)?;
            }
            let flags = if r.kind.is_ram() || r.kind == RegionKind::Passthrough {
                alloc::format!("{}", r.flags)
            } else {
                String::from("(trap)")
            };
            let hpa = r.hpa.map_or(String::from("-"), |h| {
                alloc::format!("{}", hex(h.as_usize()))
            });
            let frames = if r.frames > 0 {
                alloc::format!("{}", r.frames)
            } else {
                String::from("-")
            };
            writeln!(
                f,
                "  {:<16} {:<16} {:>11}  {:<23} {:<12} {:<14} {:<13} {:>7}  {}",
                alloc::format!("{}", hex(r.range.start().as_usize())),
                alloc::format!("{}", hex(r.range.end().as_usize())),
                Size(r.range.size() as u64),
                r.kind,
                flags,
                hpa,
                r.leaves,
                frames,
                r.source,
            )?;
        }
        for h in holes {
            hole_line(f, h)?;
        }
        writeln!(
            f,
            "page tables: {} frames in {} tables",
            self.table_frames,
            self.tables.len()
        )?;
        const SHOWN: usize = 48;
        for (i, t) in self.tables.iter().take(SHOWN).enumerate() {
            let root = match (i, t.frames) {
                (0, 1) => String::from(" (root)"),
                (0, n) => alloc::format!(" (root, {n} frames)"),
                _ => String::new(),
            };
            writeln!(
                f,
                "  {:<22} at {:<14} covers {}..{}",
                alloc::format!("{}{root}", t.level_name),
                alloc::format!("{}", hex(t.hpa.as_usize())),
                hex(t.base.as_usize()),
                hex(t.base.as_usize().saturating_add(t.span)),
            )?;
        }
        if self.tables.len() > SHOWN {
            writeln!(f, "  ... and {} more tables", self.tables.len() - SHOWN)?;
        }
        write!(f, "nested root {}", hex(self.root.as_usize()))?;
        for r in self.registers.iter().flatten() {
            write!(f, ", {} = {}", r.name, hex(usize_of(r.value)))?;
        }
        match self.vmid {
            Some(v) => writeln!(f, " (VMID {v})")?,
            None => writeln!(
                f,
                " (VMID field 0: the caller did not say which VMID the HAL gave the VM)"
            )?,
        }
        write!(
            f,
            "frames: {} page-table, {} guest memory owned by the address space, {} held for a flush",
            self.table_frames, self.data_frames, self.deferred_frames
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::VmConfigBuilder;
    use addrspace::testing::PoolAllocator;
    use addrspace::{ArmStage2Ipa40, Ept};
    use alloc::string::ToString;
    use alloc::sync::Arc;

    fn gpa(v: usize) -> GuestPhysAddr {
        GuestPhysAddr::from_usize(v)
    }

    /// The aarch64 test VM's layout, built by hand on a test pool the way
    /// `Vm::new` builds it (identical RAM at its own address here).
    pub(crate) fn test_space(
        pool: &PoolAllocator,
    ) -> (AddrSpace<ArmStage2Ipa40, &PoolAllocator>, VmConfig, MmioBus) {
        let config = VmConfigBuilder::new(1, "t", 1)
            .entry_point(gpa(0x4000_0000))
            .memory_region(
                gpa(0x4000_0000),
                0x40_0000,
                MappingFlags::RWX,
                MapType::Alloc,
                Populate::Eager,
            )
            .memory_region(
                gpa(0x5000_0000),
                0x20_0000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Lazy,
            )
            .memory_region(
                gpa(0x8000_0000),
                0x20_0000,
                MappingFlags::RW,
                MapType::Identical,
                Populate::Eager,
            )
            .passthrough_device(
                "uart",
                gpa(0x900_0000),
                HostPhysAddr::from_usize(0x900_0000),
                0x1000,
                1,
            )
            .emu_device("dev", gpa(0xb00_0000), 0x100, 0, 0, &[])
            .build()
            .unwrap();
        let mut space = AddrSpace::<ArmStage2Ipa40, _>::new(pool).unwrap();
        let r = &config.kernel.memory_regions;
        space
            .map_alloc(r[0].gpa, r[0].size, r[0].flags, Populate::Eager)
            .unwrap();
        space
            .map_alloc(r[1].gpa, r[1].size, r[1].flags, Populate::Lazy)
            .unwrap();
        // SAFETY: test pool addresses, never dereferenced through these mappings.
        unsafe {
            space
                .map_linear(
                    r[2].gpa,
                    HostPhysAddr::from_usize(0x8000_0000),
                    r[2].size,
                    r[2].flags,
                )
                .unwrap();
            space
                .map_linear(
                    gpa(0x900_0000),
                    HostPhysAddr::from_usize(0x900_0000),
                    0x1000,
                    MappingFlags::DEVICE_RW,
                )
                .unwrap();
        }
        space.map_reserved(gpa(0xb00_0000), 0x1000).unwrap();
        let mut bus = MmioBus::new();
        bus.add("dev", gpa(0xb00_0000), 0x100, None).unwrap();
        (space, config, bus)
    }

    fn plan() -> Vec<PassthroughRange> {
        alloc::vec![PassthroughRange {
            gpa: gpa(0x900_0000),
            hpa: HostPhysAddr::from_usize(0x900_0000),
            size: 0x1000
        }]
    }

    #[test]
    fn regions_are_named_by_kind_and_source() {
        let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
        let (space, config, bus) = test_space(&pool);
        let map = GuestMap::of(&space, &config, &plan(), &bus, Some(2));
        let kinds: Vec<_> = map
            .regions
            .iter()
            .map(|r| (r.range.start().as_usize(), r.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (0x900_0000, RegionKind::Passthrough),
                (0xb00_0000, RegionKind::Emulated { attached: false }),
                (0x4000_0000, RegionKind::Ram(Populate::Eager)),
                (0x5000_0000, RegionKind::Ram(Populate::Lazy)),
                (0x8000_0000, RegionKind::Identical),
            ]
        );
        let ram = &map.regions[2];
        assert_eq!(ram.frames, 0x400);
        assert_eq!(ram.leaves.bytes(), 0x40_0000);
        assert_eq!(ram.source, Source::MemoryRegion(0));
        // The lazy region holds nothing until it faults; the identical one is one
        // 2 MiB block at its own address.
        assert_eq!(
            (map.regions[3].frames, map.regions[3].leaves),
            (0, LeafCounts::default())
        );
        assert_eq!(
            map.regions[4].leaves,
            LeafCounts {
                k4: 0,
                m2: 1,
                g1: 0
            }
        );
        assert_eq!(
            map.regions[4].hpa,
            Some(HostPhysAddr::from_usize(0x8000_0000))
        );
        assert_eq!(
            map.regions[0].source,
            Source::Passthrough(alloc::vec![(0, "uart".to_string())])
        );
        assert_eq!(map.regions[1].flags, MappingFlags::empty());
        // Holes: below the UART, between each region, above the last to 1 TiB.
        assert_eq!(map.holes.len(), 6);
        assert_eq!(map.holes[0], GpaRange::new(gpa(0), 0x900_0000).unwrap());
        assert_eq!(map.holes[5].end().as_usize(), 1 << 40);
        // The root (2 concatenated frames) first, then what it links.
        assert_eq!((map.tables[0].level, map.tables[0].frames), (2, 2));
        assert_eq!(
            map.tables.iter().map(|t| t.frames).sum::<usize>(),
            map.table_frames
        );
        let vttbr = map.registers[0].unwrap();
        assert_eq!(vttbr.value, (2 << 48) | map.root.as_usize() as u64);
    }

    #[test]
    fn identical_reserved_and_run_time_areas_are_told_apart() {
        let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
        let config = VmConfigBuilder::new(3, "f", 1)
            .entry_point(gpa(0x1_0010_0000))
            .memory_region(
                gpa(0x1_0010_0000),
                0x10_0000,
                MappingFlags::RWX,
                MapType::Identical,
                Populate::Eager,
            )
            .memory_region(
                gpa(0x6000_0000),
                0x1000,
                MappingFlags::READ,
                MapType::Reserved,
                Populate::Eager,
            )
            .build()
            .unwrap();
        let mut space = AddrSpace::<Ept, _>::new(&pool).unwrap();
        // SAFETY: test pool addresses, never dereferenced through these mappings.
        unsafe {
            space
                .map_linear(
                    gpa(0x1_0010_0000),
                    HostPhysAddr::from_usize(0x1_0010_0000),
                    0x10_0000,
                    MappingFlags::RWX,
                )
                .unwrap();
            space
                .map_linear(
                    gpa(0x6000_0000),
                    HostPhysAddr::from_usize(0x6000_0000),
                    0x1000,
                    MappingFlags::READ,
                )
                .unwrap();
            space
                .map_linear(
                    gpa(0x7000_0000),
                    HostPhysAddr::from_usize(0x1_0020_0000),
                    0x1000,
                    MappingFlags::RW,
                )
                .unwrap();
        }
        space
            .map_alloc(gpa(0x9000_0000), 0x1000, MappingFlags::RW, Populate::Eager)
            .unwrap();
        let map = GuestMap::of(&space, &config, &[], &MmioBus::new(), Some(3));
        let kinds: Vec<_> = map
            .regions
            .iter()
            .map(|r| (r.kind, r.source.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (RegionKind::ReservedRam, Source::MemoryRegion(1)),
                (RegionKind::LinearRam, Source::RunTime),
                (RegionKind::Ram(Populate::Eager), Source::RunTime),
                (RegionKind::Identical, Source::MemoryRegion(0)),
            ]
        );
        assert_eq!(map.registers[0].map(|r| r.name), Some("EPTP"));
    }

    #[test]
    fn the_dump_shows_every_column() {
        let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
        let (space, config, mut bus) = test_space(&pool);
        struct Nop;
        impl crate::MmioDevice for Nop {
            fn read(&self, _: u64, _: vcpu_api::AccessWidth) -> Result<u64, crate::DeviceError> {
                Ok(0)
            }
            fn write(
                &self,
                _: u64,
                _: vcpu_api::AccessWidth,
                _: u64,
            ) -> Result<(), crate::DeviceError> {
                Ok(())
            }
        }
        bus.attach("dev", Arc::new(Nop)).unwrap();
        let text = GuestMap::of(&space, &config, &plan(), &bus, Some(2)).to_string();
        for want in [
            "VM 1 \"t\": guest-physical map, Arm stage-2 (40-bit IPA), GPA limit 0x100_0000_0000 (1 TiB), entry 0x4000_0000",
            "0x900_0000       0x900_1000             4 KiB  pass-through",
            "rw- device   0x900_0000     1x4K ",
            "devices.passthrough_devices[0] \"uart\"",
            "emulated                (trap)",
            "devices.emu_devices[0] \"dev\"",
            "RAM eager               rwx",
            "1024x4K          1024  kernel.memory_regions[0]",
            "RAM lazy                rw-          -              none",
            "RAM identical           rw-          0x8000_0000    1x2M",
            "0x0              0x900_0000           144 MiB  hole",
            "0x900_1000       0xb00_0000         31.99 MiB  hole",
            "0x8020_0000      0x100_0000_0000  1021.99 GiB  hole",
            "L1 (root, 2 frames)",
            "VTTBR_EL2 = 0x2_0001_0000_0000, VTCR_EL2 = ",
            "(VMID 2)",
            "frames: ",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
