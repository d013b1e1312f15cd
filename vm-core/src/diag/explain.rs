//! [`FaultExplanation`]: what the fault path would do with an access, and why, as
//! a dry run. It takes the fault path's decisions with the fault path's own
//! functions (the device bus's `find`, `AddrSpace::explain_fault`, [`unserved_of`]
//! and [`mmio_unserved`]), in the run loop's order, so the two cannot drift.

use alloc::string::String;
use core::fmt;

use addrspace::{
    AccessKind, AddrSpace, Backend, FaultOutcome, FaultPlan, FrameAllocator, GpaRange,
    GuestPhysAddr, NestedFormat, PAGE_SIZE, Populate, Walk,
};
use vcpu_api::ArchVCpu;

use super::{GuestMap, MapRegion, Size};
use crate::config::Hex;
use crate::device::{MmioBus, device_pages};
use crate::exit::Unserved;
use crate::vm::Vm;

/// The first decision of the fault path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultRoute {
    /// An emulated device on the bus claims the address: the run loop decodes the
    /// access and hands it to the device model.
    Mmio {
        /// The device's name.
        name: String,
        /// Its first address.
        base: GuestPhysAddr,
        /// Its length.
        length: usize,
        /// Whether a model is attached.
        attached: bool,
    },
    /// The address space decides (what `AddrSpace::handle_page_fault` would do).
    Space(FaultPlan),
}

/// What the run loop returns to the board for a fault-path outcome: `None` for
/// the outcomes it resolves inside (`Mapped`, `Spurious`). The run loop and
/// [`FaultExplanation`] both use it.
pub fn unserved_of(outcome: FaultOutcome) -> Option<Unserved> {
    match outcome {
        FaultOutcome::Mapped { .. } | FaultOutcome::Spurious => None,
        FaultOutcome::PermissionViolation { area, flags, .. } => {
            Some(Unserved::Permission { area, flags })
        }
        FaultOutcome::Reserved { area } => Some(Unserved::NoDevice { area }),
        FaultOutcome::NoArea => Some(Unserved::NoArea),
    }
}

/// What the run loop returns for an access to an emulated device without a model:
/// [`Unserved::NoDevice`] with the pages the device claims (an error if they are
/// not a [`GpaRange`], which the bus never holds).
pub(crate) fn mmio_unserved(base: GuestPhysAddr, length: usize) -> addrspace::Result<Unserved> {
    let (start, size) = device_pages(base, length);
    GpaRange::new(start, size).map(|area| Unserved::NoDevice { area })
}

/// What the fault path would do with an access of kind `access` at `gpa`, and
/// why (see [`crate::Vm::explain_fault`]). `Display` says it in words, with the
/// walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultExplanation {
    /// The address.
    pub gpa: GuestPhysAddr,
    /// The access.
    pub access: AccessKind,
    /// The decision.
    pub route: FaultRoute,
    /// What `run_vcpu` would return for it (`None`: resolved inside, or decided by
    /// the device model).
    pub unserved: Option<Unserved>,
    /// The region containing `gpa`.
    pub region: Option<MapRegion>,
    /// The nearest regions below and above, when no region contains `gpa`.
    pub neighbours: (Option<MapRegion>, Option<MapRegion>),
    /// The translation walk of `gpa` now.
    pub walk: Walk,
    /// One past the highest GPA the format translates.
    pub gpa_limit: usize,
    /// The fault-loop detector's limit.
    pub fault_loop_limit: usize,
}

impl FaultExplanation {
    /// The explanation for `space` and `bus`, with regions named from `map` (of
    /// the same space).
    pub(crate) fn of<F: NestedFormat, A: FrameAllocator>(
        space: &AddrSpace<F, A>,
        bus: &MmioBus,
        map: &GuestMap,
        gpa: GuestPhysAddr,
        access: AccessKind,
        fault_loop_limit: usize,
    ) -> Self {
        // The run loop's order: the device bus first, then the address space.
        let (route, unserved) = match bus.find(gpa) {
            Some(e) => (
                FaultRoute::Mmio {
                    name: e.name.clone(),
                    base: e.base,
                    length: e.length,
                    attached: e.device.is_some(),
                },
                match e.device {
                    Some(_) => None,
                    None => mmio_unserved(e.base, e.length).ok(),
                },
            ),
            None => {
                let plan = space.explain_fault(gpa, access);
                let unserved = match plan {
                    FaultPlan::Outcome(o) => unserved_of(o),
                    FaultPlan::Map { .. } => None,
                };
                (FaultRoute::Space(plan), unserved)
            }
        };
        let region = map.region_at(gpa).cloned();
        let neighbours = match region {
            Some(_) => (None, None),
            None => {
                let (b, a) = map.neighbours(gpa);
                (b.cloned(), a.cloned())
            }
        };
        Self {
            gpa,
            access,
            route,
            unserved,
            region,
            neighbours,
            walk: space.walk(gpa),
            gpa_limit: map.gpa_limit,
            fault_loop_limit,
        }
    }
}

fn hex(v: usize) -> Hex {
    Hex(v as u64)
}

impl fmt::Display for FaultExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gpa = self.gpa.as_usize();
        write!(f, "{} at {}", self.access, hex(gpa))?;
        if let Some(r) = &self.region {
            write!(f, " in {}", r.named())?;
        }
        writeln!(f)?;
        let page = gpa & !(PAGE_SIZE - 1);
        match &self.route {
            FaultRoute::Mmio {
                name,
                base,
                length,
                attached: true,
            } => writeln!(
                f,
                "  emulated MMIO: device {name:?} [{}, {}) claims it; the run loop decodes the \
                 access, hands it to the device model at offset {} and resumes the guest (an \
                 error from the model is returned as an unserved access)",
                hex(base.as_usize()),
                hex(base.as_usize() + length),
                hex(gpa - base.as_usize())
            )?,
            FaultRoute::Mmio { name, .. } => writeln!(
                f,
                "  emulated MMIO: device {name:?} has no model attached: nothing can serve it"
            )?,
            FaultRoute::Space(FaultPlan::Map { page, area }) => match area.backend {
                Backend::Linear { hpa } => writeln!(
                    f,
                    "  not translated although the region is mapped linearly: the fault path \
                     maps page {} -> {} {} again and the guest retries (Mapped)",
                    hex(page.as_usize()),
                    hex(hpa.as_usize() + (page.as_usize() - area.range.start().as_usize())),
                    area.flags
                )?,
                _ => writeln!(
                    f,
                    "  not populated yet{}: the fault path allocates a zeroed frame, maps page \
                     {} {} and the guest retries the access (Mapped)",
                    match area.backend {
                        Backend::Alloc(Populate::Lazy) => " (lazy RAM)",
                        Backend::Alloc(Populate::LazyHuge) => {
                            " (lazy RAM: its whole 2 MiB block where the block fits)"
                        }
                        _ => "",
                    },
                    hex(page.as_usize()),
                    area.flags
                )?,
            },
            FaultRoute::Space(FaultPlan::Outcome(o)) => match o {
                FaultOutcome::Spurious => {
                    let flags = self.walk.translation().map(|t| t.flags);
                    write!(f, "  mapped now")?;
                    if let Some(flags) = flags {
                        write!(f, " ({flags}), which allows a {}", self.access)?;
                    }
                    writeln!(
                        f,
                        ": a spurious fault (another vCPU mapped page {} first, or this vCPU's \
                         TLB held an old entry); the fault path invalidates the vCPU's TLB and \
                         resumes. The same fault {} times in a row with no TLB change in between \
                         is a fault loop: run_vcpu fails with FaultLoop",
                        hex(page),
                        self.fault_loop_limit
                    )?
                }
                FaultOutcome::PermissionViolation { flags, access, .. } => writeln!(
                    f,
                    "  permission violation: the region's flags are {flags}; {access} needs {}",
                    access.required()
                )?,
                FaultOutcome::Reserved { .. } => writeln!(
                    f,
                    "  claimed for emulated MMIO, but no device on the bus covers this address"
                )?,
                FaultOutcome::NoArea => {
                    write!(f, "  no region")?;
                    if gpa >= self.gpa_limit {
                        write!(
                            f,
                            ", and beyond the format's GPA limit {}",
                            hex(self.gpa_limit)
                        )?;
                    }
                    writeln!(f)?;
                    let (below, above) = &self.neighbours;
                    if let Some(b) = below {
                        writeln!(
                            f,
                            "  nearest below: {}, ends {} below",
                            b.named(),
                            Size((gpa - b.range.end().as_usize()) as u64)
                        )?;
                    }
                    if let Some(a) = above {
                        writeln!(
                            f,
                            "  nearest above: {}, starts {} above",
                            a.named(),
                            Size((a.range.start().as_usize() - gpa) as u64)
                        )?;
                    }
                }
                FaultOutcome::Mapped { .. } => {}
            },
        }
        match &self.unserved {
            Some(u) => writeln!(
                f,
                "  => run_vcpu returns UnservedAccess ({}): the vCPU stops at the instruction \
                 until the board skips or completes it",
                match u {
                    Unserved::NoArea => "NoArea",
                    Unserved::Permission { .. } => "Permission",
                    Unserved::NoDevice { .. } => "NoDevice",
                    Unserved::Device(_) => "Device",
                }
            )?,
            None => writeln!(f, "  => handled inside run_vcpu; the guest goes on")?,
        }
        write!(f, "{}", self.walk)
    }
}

impl<V: ArchVCpu> Vm<V> {
    /// What the fault path would do with an access of kind `access` at `gpa`, and
    /// why: MMIO to a device, a lazy page to map, spurious (mapped now), a
    /// permission violation naming the region's flags, or no region (the nearest
    /// regions named). A dry run: nothing changes.
    pub fn explain_fault(&self, gpa: GuestPhysAddr, access: AccessKind) -> FaultExplanation {
        // Lock order as `add_mmio_device`: the space, then the bus.
        let space = self.space.read();
        let bus = self.bus.read();
        let map = GuestMap::of(&space, self.config(), self.passthrough_ranges(), &bus, None);
        FaultExplanation::of(
            &space,
            &bus,
            &map,
            gpa,
            access,
            self.fault_loop_limit
                .load(core::sync::atomic::Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::map::tests::test_space;
    use super::*;
    use crate::passthrough::PassthroughRange;
    use addrspace::HostPhysAddr;
    use addrspace::testing::PoolAllocator;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    fn gpa(v: usize) -> GuestPhysAddr {
        GuestPhysAddr::from_usize(v)
    }

    /// Every kind of answer, each checked against what the fault path then does.
    #[test]
    fn explanations_match_the_fault_path() {
        let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
        let (mut space, config, bus) = test_space(&pool);
        let plan = [PassthroughRange {
            gpa: gpa(0x900_0000),
            hpa: HostPhysAddr::from_usize(0x900_0000),
            size: 0x1000,
        }];
        let cases: [(usize, AccessKind, &str, Option<&str>); 7] = [
            (
                0x5000_0010,
                AccessKind::Write,
                "not populated yet (lazy RAM)",
                None,
            ),
            (
                0x5000_0010,
                AccessKind::Read,
                "mapped now (rw-), which allows a read",
                None,
            ),
            (0x4000_0000, AccessKind::Execute, "mapped now (rwx)", None),
            (
                0x5000_0000,
                AccessKind::Execute,
                "the region's flags are rw-; execute needs --x",
                Some("Permission"),
            ),
            (
                0xb00_0008,
                AccessKind::Read,
                "device \"dev\" has no model attached",
                Some("NoDevice"),
            ),
            (
                0xb00_0800,
                AccessKind::Read,
                "no device on the bus covers this address",
                Some("NoDevice"),
            ),
            (0x4800_0000, AccessKind::Read, "no region", Some("NoArea")),
        ];
        for (addr, access, why, unserved) in cases {
            let map = GuestMap::of(&space, &config, &plan, &bus, Some(1));
            let e = FaultExplanation::of(&space, &bus, &map, gpa(addr), access, 16);
            let text = e.to_string();
            assert!(text.contains(why), "{addr:#x} {access}: {text}");
            match unserved {
                Some(u) => assert!(
                    text.contains(&alloc::format!("UnservedAccess ({u})")),
                    "{text}"
                ),
                None => assert!(text.contains("handled inside run_vcpu"), "{text}"),
            }
            assert!(text.contains("walk of "), "{text}");
            // What the fault path then does agrees (the bus part is the run loop's
            // `find`, checked on hal-mock by the inspect tests).
            if let FaultRoute::Space(plan) = e.route {
                let did = space.handle_page_fault(gpa(addr), access).unwrap();
                match plan {
                    FaultPlan::Outcome(o) => assert_eq!(o, did),
                    FaultPlan::Map { page, .. } => {
                        assert!(matches!(did, FaultOutcome::Mapped { gpa, .. } if gpa == page))
                    }
                }
                assert_eq!(e.unserved, unserved_of(did));
            }
        }
    }

    #[test]
    fn no_region_names_the_nearest_regions() {
        let pool = PoolAllocator::with_base(4096, 0x1_0000_0000);
        let (space, config, bus) = test_space(&pool);
        let map = GuestMap::of(&space, &config, &[], &bus, Some(1));
        let e = FaultExplanation::of(&space, &bus, &map, gpa(0x4800_0000), AccessKind::Read, 16);
        let names: Vec<_> = [&e.neighbours.0, &e.neighbours.1]
            .iter()
            .map(|r| r.as_ref().map(|r| r.range.start().as_usize()))
            .collect();
        assert_eq!(names, [Some(0x4000_0000), Some(0x5000_0000)]);
        let text = e.to_string();
        assert!(
            text.contains("nearest below: [0x4000_0000, 0x4040_0000) RAM eager rwx (kernel.memory_regions[0]), ends 124 MiB below"),
            "{text}"
        );
        assert!(text.contains("nearest above: [0x5000_0000, 0x5020_0000) RAM lazy rw- (kernel.memory_regions[1]), starts 128 MiB above"), "{text}");
        let far = FaultExplanation::of(&space, &bus, &map, gpa(1 << 41), AccessKind::Write, 16);
        assert!(
            far.to_string()
                .contains("beyond the format's GPA limit 0x100_0000_0000"),
            "{far}"
        );
        assert_eq!(far.neighbours.1, None);
    }
}
