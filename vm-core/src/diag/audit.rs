//! The permission and layout audit: [`audit`] checks a [`GuestMap`] against the
//! rules a VM's memory should follow and returns a [`Finding`] per broken rule,
//! naming the region (and the other region, where two are involved).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use addrspace::{GuestPhysAddr, MappingFlags, PAGE_SIZE, Populate};
use vcpu_api::ArchVCpu;

use super::{GuestMap, MapRegion, RegionKind, Size};
use crate::config::Hex;
use crate::vm::Vm;

/// A rule of the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// RAM mapped with `DEVICE`: the guest's memory becomes uncached device memory
    /// (slow everywhere; unaligned accesses and exclusives fault on Arm).
    DeviceOnRam,
    /// `EXECUTE` on a pass-through device: the guest may fetch instructions from
    /// MMIO, which no correct guest does and a speculating CPU may.
    ExecuteOnDevice,
    /// `WRITE` and `EXECUTE` on a region that holds code (the entry point, the
    /// kernel or BIOS image): a guest bug that overwrites code goes unnoticed, and
    /// W^X inside the guest cannot be backed by the nested table.
    WritableCode,
    /// A pass-through range overlaps RAM, in guest- or host-physical space: the
    /// guest reaches the same host memory as RAM and as a device.
    PassthroughOverlapsRam,
    /// A pass-through range adjoins RAM with no gap: an access running off the end
    /// of RAM lands in the device instead of faulting.
    PassthroughAdjoinsRam,
    /// Two adjacent regions of the same kind and flags (and contiguous host
    /// memory): one region would do, with fewer areas and larger leaves.
    Mergeable,
    /// The entry point is not in executable RAM: vCPU 0 faults on its first fetch.
    EntryNotExecutable,
    /// An image (or part of it) lies outside RAM: the loader refuses it.
    ImageOutsideRam,
    /// A kernel or BIOS image (or part of it) lies in RAM without `EXECUTE`.
    ImageNotExecutable,
    /// An image lands in a lazy region: loading it populates those pages at once,
    /// so that part is not lazy.
    LazyImage,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Rule; 10] = [
        Rule::DeviceOnRam,
        Rule::ExecuteOnDevice,
        Rule::WritableCode,
        Rule::PassthroughOverlapsRam,
        Rule::PassthroughAdjoinsRam,
        Rule::Mergeable,
        Rule::EntryNotExecutable,
        Rule::ImageOutsideRam,
        Rule::ImageNotExecutable,
        Rule::LazyImage,
    ];

    /// Its short name in reports: `writable-code`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DeviceOnRam => "device-on-ram",
            Self::ExecuteOnDevice => "execute-on-device",
            Self::WritableCode => "writable-code",
            Self::PassthroughOverlapsRam => "passthrough-overlaps-ram",
            Self::PassthroughAdjoinsRam => "passthrough-adjoins-ram",
            Self::Mergeable => "mergeable",
            Self::EntryNotExecutable => "entry-not-executable",
            Self::ImageOutsideRam => "image-outside-ram",
            Self::ImageNotExecutable => "image-not-executable",
            Self::LazyImage => "lazy-image",
        }
    }

    /// How bad breaking it is.
    pub const fn severity(self) -> Severity {
        match self {
            Self::DeviceOnRam
            | Self::PassthroughOverlapsRam
            | Self::EntryNotExecutable
            | Self::ImageOutsideRam
            | Self::ImageNotExecutable => Severity::Error,
            Self::ExecuteOnDevice
            | Self::WritableCode
            | Self::PassthroughAdjoinsRam
            | Self::LazyImage => Severity::Warning,
            Self::Mergeable => Severity::Note,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The guest will fail (or be given what it must not have).
    Error,
    /// Works, but is a trap for the guest or wastes what the config asked for.
    Warning,
    /// Could be simpler.
    Note,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Note => "note",
        })
    }
}

/// Which image a load address is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// `kernel.kernel_load_addr` (code).
    Kernel,
    /// `kernel.bios_load_addr` (code).
    Bios,
    /// `kernel.dtb_load_addr` (data).
    Dtb,
    /// `kernel.ramdisk_load_addr` (data).
    Ramdisk,
}

impl ImageKind {
    /// Whether the guest executes it.
    pub const fn is_code(self) -> bool {
        matches!(self, Self::Kernel | Self::Bios)
    }

    /// Its config key.
    pub const fn field(self) -> &'static str {
        match self {
            Self::Kernel => "kernel.kernel_load_addr",
            Self::Bios => "kernel.bios_load_addr",
            Self::Dtb => "kernel.dtb_load_addr",
            Self::Ramdisk => "kernel.ramdisk_load_addr",
        }
    }
}

/// An image the loader puts into guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    /// Which one.
    pub kind: ImageKind,
    /// Where it is loaded.
    pub gpa: GuestPhysAddr,
    /// Its length in bytes (1 when unknown: only the load address is checked).
    pub len: usize,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// The region it is about.
    pub region: Option<MapRegion>,
    /// The other region, for rules about two.
    pub other: Option<MapRegion>,
    /// What exactly, in words.
    pub detail: String,
}

impl Finding {
    /// How bad it is (the rule's severity).
    pub const fn severity(&self) -> Severity {
        self.rule.severity()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<7} {}: ", self.severity(), self.rule)?;
        if let Some(r) = &self.region {
            write!(f, "{}", r.named())?;
        }
        if let Some(o) = &self.other {
            write!(f, " and {}", o.named())?;
        }
        if self.region.is_some() {
            f.write_str(": ")?;
        }
        f.write_str(&self.detail)
    }
}

fn hex(v: GuestPhysAddr) -> Hex {
    Hex(v.as_usize() as u64)
}

/// Audits `map` with the images the loader puts into it (their load addresses
/// and lengths); findings come in [`Rule`] order, then by address.
pub fn audit(map: &GuestMap, images: &[Image]) -> Vec<Finding> {
    let mut out = Vec::new();
    let finding = |rule, region: &MapRegion, other: Option<&MapRegion>, detail: String| Finding {
        rule,
        region: Some(region.clone()),
        other: other.cloned(),
        detail,
    };
    let regions = &map.regions;
    for r in regions {
        if r.kind.is_ram() && r.flags.contains(MappingFlags::DEVICE) {
            out.push(finding(
                Rule::DeviceOnRam,
                r,
                None,
                String::from("RAM mapped as device memory"),
            ));
        }
        if r.kind.is_device() && r.flags.contains(MappingFlags::EXECUTE) {
            out.push(finding(
                Rule::ExecuteOnDevice,
                r,
                None,
                String::from("a device range the guest may execute from"),
            ));
        }
    }
    // Code: the entry point and the code images.
    let mut code: Vec<(usize, String)> = Vec::new();
    let mut note_code = |map: &GuestMap, gpa: GuestPhysAddr, len: usize, what: String| {
        for (i, r) in map.regions.iter().enumerate() {
            if overlaps(r, gpa, len) && r.kind.is_ram() {
                match code.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, whats)) => {
                        if !whats.contains(&what) {
                            *whats += " and ";
                            *whats += &what;
                        }
                    }
                    None => code.push((i, what.clone())),
                }
            }
        }
    };
    note_code(
        map,
        map.entry,
        1,
        alloc::format!("the entry point {}", hex(map.entry)),
    );
    for img in images.iter().filter(|i| i.kind.is_code()) {
        note_code(map, img.gpa, img.len.max(1), image_name(img));
    }
    for (i, what) in code {
        let r = &regions[i];
        if r.flags
            .contains(MappingFlags::WRITE | MappingFlags::EXECUTE)
        {
            out.push(finding(
                Rule::WritableCode,
                r,
                None,
                alloc::format!("holds {what} and is writable and executable"),
            ));
        }
    }
    for p in regions.iter().filter(|r| r.kind == RegionKind::Passthrough) {
        for r in regions.iter().filter(|r| r.kind.is_ram()) {
            if let Some(detail) = host_overlap(p, r) {
                out.push(finding(Rule::PassthroughOverlapsRam, p, Some(r), detail));
            } else if p.range.overlaps(&r.range) {
                out.push(finding(
                    Rule::PassthroughOverlapsRam,
                    p,
                    Some(r),
                    String::from("they share guest-physical addresses"),
                ));
            }
        }
    }
    for p in regions.iter().filter(|r| r.kind == RegionKind::Passthrough) {
        for r in regions.iter().filter(|r| r.kind.is_ram()) {
            let at = if p.range.end() == r.range.start() {
                Some(p.range.end())
            } else if r.range.end() == p.range.start() {
                Some(p.range.start())
            } else {
                None
            };
            if let Some(at) = at {
                out.push(finding(
                    Rule::PassthroughAdjoinsRam,
                    p,
                    Some(r),
                    alloc::format!("they touch at {} with no unmapped gap", hex(at)),
                ));
            }
        }
    }
    for pair in regions.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if mergeable(a, b) {
            out.push(finding(
                Rule::Mergeable,
                a,
                Some(b),
                alloc::format!(
                    "adjacent, same kind and flags: one region of {} would do",
                    Size((a.range.size() + b.range.size()) as u64)
                ),
            ));
        }
    }
    match map.region_at(map.entry) {
        Some(r) if r.kind.is_ram() && r.flags.contains(MappingFlags::EXECUTE) => {}
        Some(r) => out.push(finding(
            Rule::EntryNotExecutable,
            r,
            None,
            alloc::format!(
                "holds the entry point {} but is not executable RAM",
                hex(map.entry)
            ),
        )),
        None => out.push(Finding {
            rule: Rule::EntryNotExecutable,
            region: None,
            other: None,
            detail: alloc::format!("the entry point {} is in no region", hex(map.entry)),
        }),
    }
    for img in images {
        image_findings(map, img, &mut out);
    }
    out.sort_by_key(|f| (f.rule, f.region.as_ref().map(|r| r.range.start())));
    out
}

fn image_name(img: &Image) -> String {
    let what = match img.kind {
        ImageKind::Kernel => "the kernel image",
        ImageKind::Bios => "the BIOS image",
        ImageKind::Dtb => "the device tree",
        ImageKind::Ramdisk => "the ramdisk",
    };
    if img.len > 1 {
        alloc::format!("{what} ({} at {})", Size(img.len as u64), hex(img.gpa))
    } else {
        alloc::format!("{what} (at {})", hex(img.gpa))
    }
}

fn overlaps(r: &MapRegion, gpa: GuestPhysAddr, len: usize) -> bool {
    let (s, e) = (gpa.as_usize(), gpa.as_usize().saturating_add(len));
    r.range.start().as_usize() < e && s < r.range.end().as_usize()
}

/// The overlap of two regions' host memory, when both have a fixed HPA.
fn host_overlap(p: &MapRegion, r: &MapRegion) -> Option<String> {
    let (ph, rh) = (p.hpa?.as_usize(), r.hpa?.as_usize());
    let (pe, re) = (ph + p.range.size(), rh + r.range.size());
    (ph < re && rh < pe).then(|| {
        alloc::format!(
            "the device's host range [{}, {}) overlaps the RAM's host memory [{}, {})",
            Hex(ph as u64),
            Hex(pe as u64),
            Hex(rh as u64),
            Hex(re as u64)
        )
    })
}

fn mergeable(a: &MapRegion, b: &MapRegion) -> bool {
    if a.range.end() != b.range.start() || a.kind != b.kind || a.flags != b.flags {
        return false;
    }
    match (a.kind, a.hpa, b.hpa) {
        (RegionKind::Emulated { .. } | RegionKind::Claimed, _, _) => false,
        (_, Some(ah), Some(bh)) => ah.as_usize() + a.range.size() == bh.as_usize(),
        (_, None, None) => true,
        _ => false,
    }
}

fn image_findings(map: &GuestMap, img: &Image, out: &mut Vec<Finding>) {
    let name = image_name(img);
    let (start, end) = (
        img.gpa.as_usize(),
        img.gpa.as_usize().saturating_add(img.len.max(1)),
    );
    // Walk the image region by region; a gap (or a device) is outside RAM.
    let mut cursor = start;
    for r in &map.regions {
        let (rs, re) = (r.range.start().as_usize(), r.range.end().as_usize());
        if re <= cursor || rs >= end {
            continue;
        }
        if rs > cursor || !r.kind.is_ram() {
            break;
        }
        let (from, to) = (cursor.max(rs), end.min(re));
        if img.kind.is_code() && !r.flags.contains(MappingFlags::EXECUTE) {
            out.push(Finding {
                rule: Rule::ImageNotExecutable,
                region: Some(r.clone()),
                other: None,
                detail: alloc::format!("holds part of {name} and is not executable"),
            });
        }
        if matches!(r.kind, RegionKind::Ram(Populate::Lazy | Populate::LazyHuge)) {
            let pages = (to.div_ceil(PAGE_SIZE) - from / PAGE_SIZE) as u64;
            out.push(Finding {
                rule: Rule::LazyImage,
                region: Some(r.clone()),
                other: None,
                detail: alloc::format!(
                    "loading {name} populates {pages} of its pages ({}) at once",
                    Size(pages * PAGE_SIZE as u64)
                ),
            });
        }
        cursor = to;
        if cursor >= end {
            return;
        }
    }
    let region = map.region_at(GuestPhysAddr::from_usize(cursor)).cloned();
    out.push(Finding {
        rule: Rule::ImageOutsideRam,
        region,
        other: None,
        detail: alloc::format!(
            "{name}: {} ({}) is not RAM",
            Hex(cursor as u64),
            img.kind.field()
        ),
    });
}

impl<V: ArchVCpu> Vm<V> {
    /// The images the config loads, with the lengths in `lengths` where given (1
    /// byte, just the load address, for the others).
    pub fn config_images(&self, lengths: &[(ImageKind, usize)]) -> Vec<Image> {
        let k = &self.config().kernel;
        let len = |kind| {
            lengths
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(1, |(_, l)| (*l).max(1))
        };
        [
            (ImageKind::Kernel, Some(k.kernel_load_addr)),
            (ImageKind::Bios, k.bios_load_addr),
            (ImageKind::Dtb, k.dtb_load_addr),
            (ImageKind::Ramdisk, k.ramdisk_load_addr),
        ]
        .into_iter()
        .filter_map(|(kind, gpa)| {
            gpa.map(|gpa| Image {
                kind,
                gpa,
                len: len(kind),
            })
        })
        .collect()
    }

    /// The permission and layout audit of this VM ([`audit`] of
    /// [`Vm::guest_map`] with [`Vm::config_images`]): `lengths` gives the sizes of
    /// the images that are known (a board knows its embedded images).
    pub fn audit(&self, lengths: &[(ImageKind, usize)]) -> Vec<Finding> {
        audit(&self.guest_map(None), &self.config_images(lengths))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LeafCounts, Source};
    use super::*;
    use addrspace::{GpaRange, HostPhysAddr};
    use alloc::string::ToString;
    use alloc::vec;

    fn gpa(v: usize) -> GuestPhysAddr {
        GuestPhysAddr::from_usize(v)
    }

    fn region(start: usize, size: usize, kind: RegionKind, flags: MappingFlags) -> MapRegion {
        let hpa = match kind {
            RegionKind::Passthrough | RegionKind::Identical | RegionKind::ReservedRam => {
                Some(HostPhysAddr::from_usize(start))
            }
            _ => None,
        };
        MapRegion {
            range: GpaRange::new(gpa(start), size).unwrap(),
            kind,
            flags,
            hpa,
            leaves: LeafCounts::default(),
            frames: 0,
            source: Source::RunTime,
        }
    }

    fn map(regions: Vec<MapRegion>, entry: usize) -> GuestMap {
        GuestMap {
            vm_id: 1,
            name: "t".to_string(),
            format: "x",
            gpa_limit: 1 << 40,
            entry: gpa(entry),
            regions,
            holes: vec![],
            tables: vec![],
            table_frames: 1,
            data_frames: 0,
            deferred_frames: 0,
            root: HostPhysAddr::from_usize(0),
            registers: [None, None],
            vmid: Some(1),
        }
    }

    fn rules(findings: &[Finding]) -> Vec<(Rule, usize)> {
        findings
            .iter()
            .map(|f| {
                (
                    f.rule,
                    f.region.as_ref().map_or(0, |r| r.range.start().as_usize()),
                )
            })
            .collect()
    }

    const EAGER: RegionKind = RegionKind::Ram(Populate::Eager);
    const LAZY: RegionKind = RegionKind::Ram(Populate::Lazy);
    const RX: MappingFlags = MappingFlags::READ.union(MappingFlags::EXECUTE);

    #[test]
    fn a_clean_layout_has_no_finding() {
        let m = map(
            vec![
                region(
                    0x900_0000,
                    0x1000,
                    RegionKind::Passthrough,
                    MappingFlags::DEVICE_RW,
                ),
                region(0x4000_0000, 0x10_0000, EAGER, RX),
                region(0x4020_0000, 0x10_0000, EAGER, MappingFlags::RW),
            ],
            0x4000_0000,
        );
        let kernel = Image {
            kind: ImageKind::Kernel,
            gpa: gpa(0x4000_0000),
            len: 0x8_0000,
        };
        assert_eq!(audit(&m, &[kernel]), []);
    }

    #[test]
    fn each_rule_names_its_region() {
        let m = map(
            vec![
                // Pass-through, executable, adjoining the RAM above it.
                region(
                    0x3fff_f000,
                    0x1000,
                    RegionKind::Passthrough,
                    MappingFlags::DEVICE_RW | MappingFlags::EXECUTE,
                ),
                // Code, writable: the entry point and the kernel.
                region(0x4000_0000, 0x10_0000, EAGER, MappingFlags::RWX),
                // Same kind and flags right after it: mergeable.
                region(0x4010_0000, 0x10_0000, EAGER, MappingFlags::RWX),
                // Device memory as RAM.
                region(
                    0x5000_0000,
                    0x1000,
                    LAZY,
                    MappingFlags::RW | MappingFlags::DEVICE,
                ),
                // A lazy region the ramdisk lands in.
                region(0x6000_0000, 0x10_0000, LAZY, MappingFlags::RW),
                // Not executable, for the BIOS.
                region(0x7000_0000, 0x1000, EAGER, MappingFlags::READ),
            ],
            0x4000_0000,
        );
        let images = [
            Image {
                kind: ImageKind::Kernel,
                gpa: gpa(0x4000_0000),
                len: 0x18_0000,
            },
            Image {
                kind: ImageKind::Ramdisk,
                gpa: gpa(0x6000_0800),
                len: 0x2000,
            },
            Image {
                kind: ImageKind::Bios,
                gpa: gpa(0x7000_0000),
                len: 0x2000,
            },
        ];
        let found = audit(&m, &images);
        assert_eq!(
            rules(&found),
            [
                (Rule::DeviceOnRam, 0x5000_0000),
                (Rule::ExecuteOnDevice, 0x3fff_f000),
                (Rule::WritableCode, 0x4000_0000),
                (Rule::WritableCode, 0x4010_0000),
                (Rule::PassthroughAdjoinsRam, 0x3fff_f000),
                (Rule::Mergeable, 0x4000_0000),
                (Rule::ImageOutsideRam, 0),
                (Rule::ImageNotExecutable, 0x7000_0000),
                (Rule::LazyImage, 0x6000_0000),
            ],
            "{found:#?}"
        );
        let text: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        assert!(text[2].starts_with("warning writable-code: [0x4000_0000, 0x4010_0000) RAM eager rwx (mapped at run time): holds the entry point 0x4000_0000 and the kernel image (1.50 MiB at 0x4000_0000)"), "{}", text[2]);
        assert!(
            text[4].contains("and [0x4000_0000, 0x4010_0000) RAM eager rwx"),
            "{}",
            text[4]
        );
        assert!(text[4].contains("they touch at 0x4000_0000"), "{}", text[4]);
        // The ramdisk spans pages 0 to 2 of the lazy region: 3 pages.
        assert!(
            text[8].contains("populates 3 of its pages (12 KiB)"),
            "{}",
            text[8]
        );
        // The BIOS runs past its 4 KiB region into a hole.
        assert!(
            text[6].contains("0x7000_1000 (kernel.bios_load_addr) is not RAM"),
            "{}",
            text[6]
        );
        assert!(text[0].starts_with("error   device-on-ram"), "{}", text[0]);
    }

    #[test]
    fn entry_and_host_overlaps() {
        let mut pt = region(
            0x900_0000,
            0x1000,
            RegionKind::Passthrough,
            MappingFlags::DEVICE_RW,
        );
        // The device's host page is the RAM's first host page.
        pt.hpa = Some(HostPhysAddr::from_usize(0x8000_0000));
        let m = map(
            vec![
                pt,
                region(
                    0x8000_0000,
                    0x10_0000,
                    RegionKind::Identical,
                    MappingFlags::RW,
                ),
            ],
            0x8000_0000,
        );
        let found = audit(&m, &[]);
        assert_eq!(
            rules(&found),
            [
                (Rule::PassthroughOverlapsRam, 0x900_0000),
                (Rule::EntryNotExecutable, 0x8000_0000)
            ]
        );
        let m = map(vec![], 0x1234);
        let found = audit(&m, &[]);
        assert_eq!(
            found[0].to_string(),
            "error   entry-not-executable: the entry point 0x1234 is in no region"
        );
    }

    #[test]
    fn linear_regions_merge_only_when_host_memory_is_contiguous() {
        let a = region(0x8000_0000, 0x1000, RegionKind::Identical, MappingFlags::RW);
        let b = region(0x8000_1000, 0x1000, RegionKind::Identical, MappingFlags::RW);
        assert!(mergeable(&a, &b));
        let mut c = b.clone();
        c.hpa = Some(HostPhysAddr::from_usize(0x9000_0000));
        assert!(!mergeable(&a, &c));
        let e = |s| {
            region(
                s,
                0x1000,
                RegionKind::Emulated { attached: true },
                MappingFlags::empty(),
            )
        };
        assert!(!mergeable(&e(0x1000), &e(0x2000)));
    }
}
