//! Model-based property tests of `AddrSpace`, for every format: random sequences of
//! map (linear, alloc eager, alloc lazy, reserved), unmap, protect, fault, translate,
//! guest-memory read and write, with allocation failures injected, checked after
//! every step against a plain model (areas, populated pages, bytes written), with
//! frame accounting, on a strict allocator (every free must name frames of one live
//! allocation).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// tests fail loudly

use std::collections::{BTreeMap, BTreeSet, HashMap};

use addrspace::testing::StrictAllocator;
use addrspace::{
    AccessKind, AddrSpace, ArmStage2Ipa40, ArmStage2Ipa48, Backend, Ept, Error, FaultOutcome,
    FaultPlan, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags, NestedFormat,
    Npt, PageSize, PageTable, Populate, Sv39x4, Sv48x4, low_u8,
};
use proptest::prelude::*;

mod common;

use common::{K4, M2, cases, frees_since, thread_pool, with_budget};

/// Guest-physical window the operations touch.
const WINDOW: usize = 32 << 20;
/// Host RAM that linear areas map (2 MiB-aligned, part of the pool).
const CHUNK: usize = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Host offset of the area's start inside the chunk.
    Linear(usize),
    Alloc(Populate),
    Reserved,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct MArea {
    end: usize,
    kind: Kind,
    flags: MappingFlags,
}

/// Where a byte lives: a host page of the chunk, or a guest page of an allocated area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Host(usize),
    Guest(usize),
}

#[derive(Default)]
struct Model {
    areas: BTreeMap<usize, MArea>,
    populated: BTreeSet<usize>,
    bytes: HashMap<Key, Vec<u8>>,
}

impl Model {
    fn area_at(&self, gpa: usize) -> Option<(usize, MArea)> {
        let (&s, &a) = self.areas.range(..=gpa).next_back()?;
        (gpa < a.end).then_some((s, a))
    }

    fn first_overlap(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        if let Some((s, a)) = self.area_at(start) {
            return Some((s, a.end));
        }
        self.areas
            .range(start..end)
            .next()
            .map(|(&s, a)| (s, a.end))
    }

    fn first_uncovered(&self, start: usize, end: usize) -> Option<usize> {
        let mut cur = start;
        while cur < end {
            match self.area_at(cur) {
                Some((_, a)) => cur = a.end,
                None => return Some(cur),
            }
        }
        None
    }

    fn slice(s: usize, a: MArea, from: usize, to: usize) -> (usize, MArea) {
        let kind = match a.kind {
            Kind::Linear(h) => Kind::Linear(h + (from - s)),
            k => k,
        };
        (
            from,
            MArea {
                end: to,
                kind,
                flags: a.flags,
            },
        )
    }

    /// Cuts `[start, end)` out of the areas (unmap), forgetting the pages of
    /// allocated ones.
    fn cut(&mut self, start: usize, end: usize) {
        for (s, a) in self.take_overlapping(start, end) {
            self.keep_outside(s, a, start, end);
            if matches!(a.kind, Kind::Alloc(_)) {
                for p in (s.max(start)..a.end.min(end)).step_by(K4) {
                    self.populated.remove(&p);
                    self.bytes.remove(&Key::Guest(p));
                }
            }
        }
    }

    /// Protect: the areas of `[start, end)` whose flags change (each keeps its memory
    /// type and takes `flags`' access rights) are cut at its ends; the others stay
    /// whole, as do reserved areas.
    fn reflag(&mut self, start: usize, end: usize, flags: MappingFlags) {
        for (s, a) in self.take_overlapping(start, end) {
            let new = a.flags.memory_type() | flags.access();
            if a.kind == Kind::Reserved || new == a.flags {
                self.areas.insert(s, a);
                continue;
            }
            self.keep_outside(s, a, start, end);
            let (k, mut v) = Self::slice(s, a, s.max(start), a.end.min(end));
            v.flags = new;
            self.areas.insert(k, v);
        }
    }

    /// The first address of `[start, end)` in a non-reserved area of another memory
    /// type than `flags` names (none when it names none).
    fn other_type(&self, start: usize, end: usize, flags: MappingFlags) -> Option<usize> {
        let want = flags.memory_type();
        if want.is_empty() {
            return None;
        }
        self.areas
            .iter()
            .filter(|(s, a)| **s < end && a.end > start)
            .find(|(_, a)| a.kind != Kind::Reserved && a.flags.memory_type() != want)
            .map(|(s, _)| (*s).max(start))
    }

    fn take_overlapping(&mut self, start: usize, end: usize) -> Vec<(usize, MArea)> {
        let keys: Vec<usize> = self
            .areas
            .iter()
            .filter(|(s, a)| **s < end && a.end > start)
            .map(|(s, _)| *s)
            .collect();
        keys.into_iter()
            .map(|s| (s, self.areas.remove(&s).expect("area")))
            .collect()
    }

    fn keep_outside(&mut self, s: usize, a: MArea, start: usize, end: usize) {
        if s < start {
            let (k, v) = Self::slice(s, a, s, start);
            self.areas.insert(k, v);
        }
        if a.end > end {
            let (k, v) = Self::slice(s, a, end, a.end);
            self.areas.insert(k, v);
        }
    }

    /// Where the byte at `gpa` lives, or the error a copy would give there.
    fn locate(&self, gpa: usize) -> Result<(Key, usize), Error> {
        let g = GuestPhysAddr::from_usize(gpa);
        let Some((s, a)) = self.area_at(gpa) else {
            return Err(Error::NoArea { gpa: g });
        };
        match a.kind {
            Kind::Reserved => Err(Error::Reserved { gpa: g }),
            Kind::Alloc(_) if !self.populated.contains(&(gpa & !(K4 - 1))) => {
                Err(Error::NotPopulated { gpa: g })
            }
            _ if a.flags.contains(MappingFlags::DEVICE) => Err(Error::DeviceMemory { gpa: g }),
            Kind::Linear(h) => {
                let host = h + (gpa - s);
                Ok((Key::Host(host & !(K4 - 1)), host & (K4 - 1)))
            }
            Kind::Alloc(_) => Ok((Key::Guest(gpa & !(K4 - 1)), gpa & (K4 - 1))),
        }
    }

    /// The first error a copy of `[gpa, gpa + len)` gives, checking at the start and
    /// at each page boundary like the space does.
    fn copy_error(&self, gpa: usize, len: usize) -> Option<Error> {
        let mut cur = gpa;
        while cur < gpa + len {
            if let Err(e) = self.locate(cur) {
                return Some(e);
            }
            cur = (cur & !(K4 - 1)) + K4;
        }
        None
    }

    fn byte(&self, gpa: usize) -> u8 {
        let (key, off) = self.locate(gpa).expect("located");
        self.bytes.get(&key).map_or(0, |p| p[off])
    }

    fn set_byte(&mut self, gpa: usize, v: u8) {
        let (key, off) = self.locate(gpa).expect("located");
        self.bytes.entry(key).or_insert_with(|| vec![0; K4])[off] = v;
    }
}

#[derive(Clone, Debug)]
enum Op {
    Linear {
        gpa: usize,
        size: usize,
        hoff: usize,
        flags: usize,
    },
    Alloc {
        gpa: usize,
        size: usize,
        flags: usize,
        /// 0 eager, 1 lazy, 2 lazy in 2 MiB blocks.
        lazy: u8,
        budget: Option<usize>,
    },
    Reserve {
        gpa: usize,
        size: usize,
    },
    Unmap {
        gpa: usize,
        size: usize,
        budget: Option<usize>,
    },
    Protect {
        gpa: usize,
        size: usize,
        flags: usize,
        budget: Option<usize>,
    },
    Fault {
        gpa: usize,
        access: u8,
        budget: Option<usize>,
    },
    Write {
        gpa: usize,
        len: usize,
        seed: u8,
    },
    Read {
        gpa: usize,
        len: usize,
    },
    Translate {
        gpa: usize,
    },
    /// Host-side populate of `[gpa, gpa + len)` (any bytes).
    Populate {
        gpa: usize,
        len: usize,
        budget: Option<usize>,
    },
    Complete,
}

/// The start of the window where most operations meet, so that huge leaves get
/// cut inside (by same-flags protects too) and then unmapped, protected and faulted
/// across the cuts.
const HOT: usize = 4 << 20;

fn range() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        3 => (0..WINDOW / K4, 1..=16usize).prop_map(|(p, n)| (p * K4, n * K4)),
        2 => (0..WINDOW / M2, 1..=2usize, 0..2usize).prop_map(|(b, n, lo)| (b * M2 + lo * K4, n * M2)),
        3 => (0..HOT / K4, 1..=16usize).prop_map(|(p, n)| (p * K4, n * K4)),
        2 => (0..HOT / M2, 1..=2usize).prop_map(|(b, n)| (b * M2, n * M2)),
    ]
    .prop_filter("in window", |(g, s)| g + s <= WINDOW)
}

/// Frames the allocator hands out before it fails: mostly unlimited; otherwise few
/// (the splits and tables of an unmap or protect, a fault's frame and tables) or up
/// to every frame of the largest eager map, so that it runs dry at each of them.
fn budget() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        8 => Just(None),
        2 => (0..6usize).prop_map(Some),
        1 => (0..1100usize).prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (range(), 0..CHUNK / K4, any::<bool>(), 0..8usize).prop_map(|((gpa, size), h, align, flags)| {
            // Keep the host offset like the GPA's 2 MiB alignment half of the time.
            let hoff = if align { (h * K4) & !(M2 - 1) | (gpa & (M2 - 1)) } else { h * K4 };
            let hoff = if hoff + size > CHUNK { (CHUNK - size) & !(K4 - 1) } else { hoff };
            Op::Linear { gpa, size, hoff, flags }
        }),
        4 => (range(), 0..8usize, 0..3u8, budget()).prop_map(|((gpa, size), flags, lazy, budget)| Op::Alloc { gpa, size, flags, lazy, budget }),
        1 => range().prop_map(|(gpa, size)| Op::Reserve { gpa, size }),
        3 => (range(), budget()).prop_map(|((gpa, size), budget)| Op::Unmap { gpa, size, budget }),
        // Flags 8 and up: the flags the area at `gpa` already has (a protect that
        // changes nothing there but may cut other areas of the range).
        3 => (range(), 0..12usize, budget()).prop_map(|((gpa, size), flags, budget)| Op::Protect { gpa, size, flags, budget }),
        4 => (prop_oneof![0..WINDOW, 0..HOT], 0..3u8, budget()).prop_map(|(gpa, access, budget)| Op::Fault { gpa, access, budget }),
        3 => (0..WINDOW, 1..9000usize, any::<u8>()).prop_map(|(gpa, len, seed)| Op::Write { gpa, len, seed }),
        3 => (0..WINDOW, 1..9000usize).prop_map(|(gpa, len)| Op::Read { gpa, len }),
        2 => (0..WINDOW).prop_map(|gpa| Op::Translate { gpa }),
        2 => (prop_oneof![0..WINDOW, 0..HOT], 1..40_000usize, budget()).prop_map(|(gpa, len, budget)| Op::Populate { gpa, len, budget }),
        1 => Just(Op::Complete),
    ]
}

fn flags_at(i: usize) -> MappingFlags {
    [
        MappingFlags::RW,
        MappingFlags::RWX,
        MappingFlags::READ,
        MappingFlags::READ | MappingFlags::EXECUTE,
        MappingFlags::DEVICE_RW,
        MappingFlags::RW | MappingFlags::UNCACHED,
        MappingFlags::WRITE,
        MappingFlags::empty(),
    ][i % 8]
}

fn run<F: NestedFormat>(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let strict = thread_pool(40 * 1024, 0x4_0000_0000);
    let pool = strict.pool();
    pool.never_fail();
    let base_in_use = pool.in_use();
    let seen = strict.violations().len();
    let chunk = strict.alloc_frames(CHUNK / K4, M2 / K4).expect("chunk");
    let chunk_frames = CHUNK / K4;
    // SAFETY: the chunk is ours and mapped by the pool.
    unsafe { std::ptr::write_bytes(pool.phys_to_virt(chunk).as_mut_ptr::<u8>(), 0, CHUNK) };
    // The chunk goes back to the thread's pool even when a step fails or panics:
    // the shrinker then runs on a clean pool.
    struct Chunk<'p>(&'p StrictAllocator, HostPhysAddr, usize);
    impl Drop for Chunk<'_> {
        fn drop(&mut self) {
            // SAFETY: the chunk came from this pool, and the space that mapped it
            // is gone when this runs.
            unsafe { self.0.dealloc_frames(self.1, self.2) };
        }
    }
    let guard = Chunk(strict, chunk, chunk_frames);
    let steps = || -> Result<(), TestCaseError> {
        let mut space = AddrSpace::<F, _>::new(strict).expect("root");
        let mut m = Model::default();
        let mut held = std::collections::VecDeque::new();
        for (step, op) in ops.into_iter().enumerate() {
            let in_use = pool.in_use();
            let areas_before: Vec<_> = space.areas().copied().collect();
            let valid = |f: MappingFlags| PageTable::<F, &StrictAllocator>::check_flags(f).is_ok();
            let mut failed = false;
            match op.clone() {
                Op::Linear {
                    gpa,
                    size,
                    hoff,
                    flags,
                } => {
                    let flags = flags_at(flags);
                    let hpa = HostPhysAddr::from_usize(chunk.as_usize() + hoff);
                    // SAFETY: the chunk is RAM the pool maps; nothing else uses it.
                    let got = unsafe {
                        space.map_linear(GuestPhysAddr::from_usize(gpa), hpa, size, flags)
                    };
                    match (got, m.first_overlap(gpa, gpa + size)) {
                        (Err(Error::InvalidFlags { .. }), _) => prop_assert!(!valid(flags)),
                        (Err(Error::Overlap { existing, .. }), Some((s, e))) => {
                            prop_assert!(valid(flags));
                            prop_assert_eq!(
                                (existing.start().as_usize(), existing.end().as_usize()),
                                (s, e)
                            );
                        }
                        (Ok(()), None) => {
                            prop_assert!(valid(flags));
                            m.areas.insert(
                                gpa,
                                MArea {
                                    end: gpa + size,
                                    kind: Kind::Linear(hoff),
                                    flags: flags.nested(),
                                },
                            );
                        }
                        (got, o) => prop_assert!(
                            false,
                            "step {step}: {op:?} -> {got:?}, model overlap {o:?}"
                        ),
                    }
                }
                Op::Alloc {
                    gpa,
                    size,
                    flags,
                    lazy,
                    budget,
                } => {
                    let flags = flags_at(flags);
                    let populate =
                        [Populate::Eager, Populate::Lazy, Populate::LazyHuge][usize::from(lazy)];
                    let got = with_budget(pool, budget, || {
                        space.map_alloc(GuestPhysAddr::from_usize(gpa), size, flags, populate)
                    });
                    match (got, m.first_overlap(gpa, gpa + size)) {
                        (Err(Error::InvalidFlags { .. }), _) => prop_assert!(!valid(flags)),
                        (Err(Error::Overlap { existing, .. }), Some((s, e))) => {
                            prop_assert_eq!(
                                (existing.start().as_usize(), existing.end().as_usize()),
                                (s, e)
                            );
                        }
                        (Err(Error::NoMemory { .. }), None) => {
                            prop_assert!(budget.is_some() && populate == Populate::Eager);
                            failed = true;
                        }
                        (Ok(()), None) => {
                            prop_assert!(valid(flags));
                            m.areas.insert(
                                gpa,
                                MArea {
                                    end: gpa + size,
                                    kind: Kind::Alloc(populate),
                                    flags: flags.nested(),
                                },
                            );
                            if populate == Populate::Eager {
                                m.populated.extend((gpa..gpa + size).step_by(K4));
                            }
                        }
                        (got, o) => prop_assert!(
                            false,
                            "step {step}: {op:?} -> {got:?}, model overlap {o:?}"
                        ),
                    }
                }
                Op::Reserve { gpa, size } => {
                    let got = space.map_reserved(GuestPhysAddr::from_usize(gpa), size);
                    match (got, m.first_overlap(gpa, gpa + size)) {
                        (Err(Error::Overlap { existing, .. }), Some((s, e))) => {
                            prop_assert_eq!(
                                (existing.start().as_usize(), existing.end().as_usize()),
                                (s, e)
                            );
                        }
                        (Ok(()), None) => {
                            m.areas.insert(
                                gpa,
                                MArea {
                                    end: gpa + size,
                                    kind: Kind::Reserved,
                                    flags: MappingFlags::empty(),
                                },
                            );
                        }
                        (got, o) => prop_assert!(
                            false,
                            "step {step}: {op:?} -> {got:?}, model overlap {o:?}"
                        ),
                    }
                }
                Op::Unmap { gpa, size, budget } => {
                    let got = with_budget(pool, budget, || {
                        space.unmap(GuestPhysAddr::from_usize(gpa), size)
                    });
                    match (got, m.first_uncovered(gpa, gpa + size)) {
                        (Err(Error::NotMapped { gpa: at }), Some(hole)) => {
                            prop_assert_eq!(at.as_usize(), hole)
                        }
                        (Err(Error::NoMemory { .. }), None) => {
                            prop_assert!(budget.is_some());
                            failed = true;
                        }
                        (Ok(flush), None) => {
                            prop_assert_eq!(
                                flush.range(),
                                Some(GpaRange::new(GuestPhysAddr::from_usize(gpa), size).unwrap())
                            );
                            m.cut(gpa, gpa + size);
                            held.push_back(flush);
                        }
                        (got, hole) => prop_assert!(
                            false,
                            "step {step}: {op:?} -> {got:?}, model hole {hole:?}"
                        ),
                    }
                }
                Op::Protect {
                    gpa,
                    size,
                    flags,
                    budget,
                } => {
                    let flags = match m.area_at(gpa) {
                        Some((_, a)) if flags >= 8 && a.kind != Kind::Reserved => a.flags,
                        _ => flags_at(flags),
                    };
                    let got = with_budget(pool, budget, || {
                        space.protect(GuestPhysAddr::from_usize(gpa), size, flags)
                    });
                    match (got, m.first_uncovered(gpa, gpa + size)) {
                        (Err(Error::InvalidFlags { .. }), _) => prop_assert!(!valid(flags)),
                        (Err(Error::NotMapped { gpa: at }), Some(hole)) => {
                            prop_assert!(valid(flags));
                            prop_assert_eq!(at.as_usize(), hole)
                        }
                        (Err(Error::NoMemory { .. }), None) => {
                            prop_assert!(budget.is_some());
                            failed = true;
                        }
                        (Err(Error::MemoryType { gpa: at, .. }), None) => {
                            prop_assert!(valid(flags));
                            prop_assert_eq!(
                                Some(at.as_usize()),
                                m.other_type(gpa, gpa + size, flags)
                            );
                        }
                        (Ok(flush), None) => {
                            prop_assert!(valid(flags));
                            prop_assert_eq!(m.other_type(gpa, gpa + size, flags), None);
                            m.reflag(gpa, gpa + size, flags.nested());
                            held.push_back(flush);
                        }
                        (got, hole) => prop_assert!(
                            false,
                            "step {step}: {op:?} -> {got:?}, model hole {hole:?}"
                        ),
                    }
                }
                Op::Fault {
                    gpa,
                    access,
                    budget,
                } => {
                    let access = [AccessKind::Read, AccessKind::Write, AccessKind::Execute]
                        [access as usize % 3];
                    // The dry run, taken first, names what the fault path then does.
                    let plan = space.explain_fault(GuestPhysAddr::from_usize(gpa), access);
                    let got = with_budget(pool, budget, || {
                        space.handle_page_fault(GuestPhysAddr::from_usize(gpa), access)
                    });
                    let page = gpa & !(K4 - 1);
                    match (plan, &got) {
                        (FaultPlan::Outcome(o), Ok(g)) => prop_assert_eq!(o, *g, "step {}", step),
                        (
                            FaultPlan::Map { page: p, area },
                            Ok(FaultOutcome::Mapped {
                                gpa: at,
                                flags,
                                size,
                                ..
                            }),
                        ) => {
                            // The planned page, or the 2 MiB block holding it.
                            let start = p.as_usize() & !(size.bytes() - 1);
                            prop_assert_eq!(
                                (start, area.flags),
                                (at.as_usize(), *flags),
                                "step {}",
                                step
                            );
                            prop_assert!(area.range.contains(*at), "step {}", step);
                        }
                        (FaultPlan::Map { .. }, Err(Error::NoMemory { .. })) => {}
                        (plan, got) => prop_assert!(
                            false,
                            "step {step}: fault {gpa:#x} {access}: planned {plan:?}, did {got:?}"
                        ),
                    }
                    let expect = match m.area_at(gpa) {
                        None => Ok(FaultOutcome::NoArea),
                        Some((s, a)) => {
                            let area =
                                GpaRange::new(GuestPhysAddr::from_usize(s), a.end - s).unwrap();
                            if a.kind == Kind::Reserved {
                                Ok(FaultOutcome::Reserved { area })
                            } else if !a.flags.allows(access) {
                                Ok(FaultOutcome::PermissionViolation {
                                    area,
                                    flags: a.flags,
                                    access,
                                })
                            } else if matches!(a.kind, Kind::Linear(_))
                                || m.populated.contains(&page)
                            {
                                Ok(FaultOutcome::Spurious)
                            } else {
                                Err(a.flags)
                            }
                        }
                    };
                    match (got, expect) {
                        (Ok(g), Ok(e)) => prop_assert_eq!(g, e, "step {}", step),
                        (
                            Ok(FaultOutcome::Mapped {
                                gpa: at,
                                flags,
                                size: PageSize::Size4K,
                                ..
                            }),
                            Err(f),
                        ) => {
                            prop_assert_eq!((at.as_usize(), flags), (page, f));
                            m.populated.insert(page);
                        }
                        // A 2 MiB block: only in a LazyHuge area that holds all of
                        // it, none of it populated before.
                        (
                            Ok(FaultOutcome::Mapped {
                                gpa: at,
                                flags,
                                size: PageSize::Size2M,
                                ..
                            }),
                            Err(f),
                        ) => {
                            let block = gpa & !(M2 - 1);
                            prop_assert_eq!((at.as_usize(), flags), (block, f));
                            let (s, a) = m.area_at(gpa).unwrap();
                            prop_assert_eq!(a.kind, Kind::Alloc(Populate::LazyHuge));
                            prop_assert!(s <= block && block + M2 <= a.end, "step {}", step);
                            let pages: Vec<usize> = (block..block + M2).step_by(K4).collect();
                            prop_assert!(pages.iter().all(|p| !m.populated.contains(p)));
                            m.populated.extend(pages);
                        }
                        (Err(Error::NoMemory { .. }), Err(_)) => {
                            prop_assert!(budget.is_some());
                            failed = true;
                        }
                        (got, e) => prop_assert!(
                            false,
                            "step {step}: fault {gpa:#x} {access}: {got:?}, model {e:?}"
                        ),
                    }
                }
                Op::Write { gpa, len, seed } => {
                    let len = len.min(WINDOW - gpa);
                    let data: Vec<u8> = (0..len)
                        .map(|i| seed.wrapping_add(low_u8(i as u64)).wrapping_mul(31))
                        .collect();
                    let got = space.write(GuestPhysAddr::from_usize(gpa), &data);
                    match (got, m.copy_error(gpa, len)) {
                        (Ok(()), None) => {
                            for (i, b) in data.iter().enumerate() {
                                m.set_byte(gpa + i, *b);
                            }
                        }
                        (Err(g), Some(e)) => prop_assert_eq!(g, e, "step {}", step),
                        (got, e) => prop_assert!(
                            false,
                            "step {step}: write {gpa:#x}+{len}: {got:?}, model {e:?}"
                        ),
                    }
                }
                Op::Read { gpa, len } => {
                    let len = len.min(WINDOW - gpa);
                    let mut buf = vec![0xa5u8; len];
                    let got = space.read(GuestPhysAddr::from_usize(gpa), &mut buf);
                    match (got, m.copy_error(gpa, len)) {
                        (Ok(()), None) => {
                            for (i, b) in buf.iter().enumerate() {
                                if *b != m.byte(gpa + i) {
                                    prop_assert!(
                                        false,
                                        "step {step}: byte {:#x} is {b:#x}, model {:#x}",
                                        gpa + i,
                                        m.byte(gpa + i)
                                    );
                                }
                            }
                        }
                        (Err(g), Some(e)) => {
                            prop_assert_eq!(g, e, "step {}", step);
                            prop_assert!(
                                buf.iter().all(|b| *b == 0xa5),
                                "failed read copied bytes"
                            );
                        }
                        (got, e) => prop_assert!(
                            false,
                            "step {step}: read {gpa:#x}+{len}: {got:?}, model {e:?}"
                        ),
                    }
                }
                Op::Populate { gpa, len, budget } => {
                    let len = len.min(WINDOW - gpa);
                    let got = with_budget(pool, budget, || {
                        space.populate(GuestPhysAddr::from_usize(gpa), len)
                    });
                    // The first byte (from `gpa`, page by page) in a hole, a reserved
                    // area or device memory; then every lazy page must get a frame.
                    let mut expect = None;
                    let mut missing = Vec::new();
                    let mut cur = gpa;
                    while cur < gpa + len && expect.is_none() {
                        let g = GuestPhysAddr::from_usize(cur);
                        match m.area_at(cur) {
                            None => expect = Some(Error::NoArea { gpa: g }),
                            Some((_, a)) if a.kind == Kind::Reserved => {
                                expect = Some(Error::Reserved { gpa: g })
                            }
                            // Device memory, linear or allocated (as the copies).
                            Some((_, a)) if a.flags.contains(MappingFlags::DEVICE) => {
                                expect = Some(Error::DeviceMemory { gpa: g })
                            }
                            Some((_, a)) => {
                                let page = cur & !(K4 - 1);
                                if matches!(a.kind, Kind::Alloc(_)) && !m.populated.contains(&page)
                                {
                                    missing.push(page);
                                }
                            }
                        }
                        cur = (cur & !(K4 - 1)) + K4;
                    }
                    match (got, expect) {
                        (Err(g), Some(e)) => prop_assert_eq!(g, e, "step {}", step),
                        (Err(Error::NoMemory { .. }), None) => {
                            prop_assert!(budget.is_some() && !missing.is_empty());
                            failed = true;
                        }
                        (Ok(n), None) => {
                            prop_assert_eq!(n, missing.len(), "step {}: frames mapped", step);
                            m.populated.extend(missing);
                        }
                        (got, e) => prop_assert!(
                            false,
                            "step {step}: populate {gpa:#x}+{len}: {got:?}, model {e:?}"
                        ),
                    }
                }
                Op::Translate { gpa } => {
                    let got = space.translate(GuestPhysAddr::from_usize(gpa));
                    let g = GuestPhysAddr::from_usize(gpa);
                    match (got, m.area_at(gpa)) {
                        (Err(Error::NoArea { gpa: at }), None) => prop_assert_eq!(at, g),
                        (Err(Error::Reserved { gpa: at }), Some((_, a))) => {
                            prop_assert_eq!(a.kind, Kind::Reserved);
                            prop_assert_eq!(at, g);
                        }
                        (Err(Error::NotPopulated { gpa: at }), Some((_, a))) => {
                            prop_assert!(
                                matches!(a.kind, Kind::Alloc(_))
                                    && !m.populated.contains(&(gpa & !(K4 - 1)))
                            );
                            prop_assert_eq!(at, g);
                        }
                        (Ok(t), Some((s, a))) => {
                            prop_assert_eq!(t.flags, a.flags);
                            match a.kind {
                                Kind::Linear(h) => prop_assert_eq!(
                                    t.hpa.as_usize(),
                                    chunk.as_usize() + h + (gpa - s)
                                ),
                                Kind::Alloc(_) => {
                                    prop_assert!(m.populated.contains(&(gpa & !(K4 - 1))))
                                }
                                Kind::Reserved => prop_assert!(false, "reserved translated"),
                            }
                        }
                        (got, a) => prop_assert!(
                            false,
                            "step {step}: translate {gpa:#x}: {got:?}, model {a:?}"
                        ),
                    }
                }
                Op::Complete => {
                    if let Some(f) = held.pop_front() {
                        space.complete_flush(f).unwrap();
                    }
                }
            }
            if failed {
                prop_assert_eq!(pool.in_use(), in_use, "step {}: failed op leaked", step);
                let areas_now: Vec<_> = space.areas().copied().collect();
                prop_assert_eq!(
                    areas_now,
                    areas_before,
                    "step {}: failed op changed areas",
                    step
                );
            }
            // Areas match the model exactly.
            let got: Vec<(usize, usize, MappingFlags, Kind)> = space
                .areas()
                .map(|a| {
                    let kind = match a.backend {
                        Backend::Linear { hpa } => Kind::Linear(hpa.as_usize() - chunk.as_usize()),
                        Backend::Alloc(p) => Kind::Alloc(p),
                        Backend::Reserved => Kind::Reserved,
                    };
                    (
                        a.range.start().as_usize(),
                        a.range.end().as_usize(),
                        a.flags,
                        kind,
                    )
                })
                .collect();
            let want: Vec<_> = m
                .areas
                .iter()
                .map(|(&s, a)| (s, a.end, a.flags, a.kind))
                .collect();
            prop_assert_eq!(got, want, "step {}: areas after {:?}", step, op);
            // Every leaf lies inside one area and has its flags.
            let mut straddle = None;
            space.page_table().for_each_leaf(|g, t| {
                let ok = space.area_at(g).is_some_and(|a| {
                    g.as_usize() + t.size.bytes() <= a.range.end().as_usize() && a.flags == t.flags
                });
                if !ok && straddle.is_none() {
                    straddle = Some((g, t));
                }
            });
            prop_assert_eq!(straddle, None, "step {}: leaf outside its area", step);
            prop_assert_eq!(
                space.data_frames(),
                m.populated.len(),
                "step {}: data frames",
                step
            );
            if let Err(e) = space.page_table().audit() {
                prop_assert!(false, "step {step}: audit: {e}");
            }
            prop_assert_eq!(
                pool.in_use(),
                base_in_use
                    + chunk_frames
                    + space.table_frames()
                    + space.data_frames()
                    + space.deferred_frames(),
                "step {}: frame accounting",
                step
            );
            let bad = frees_since(strict, seen);
            prop_assert!(bad.is_empty(), "step {step}: after {op:?}: {bad:?}");
        }
        // Unmap every area: only the root remains once the flushes complete.
        let all: Vec<(usize, usize)> = m.areas.iter().map(|(&s, a)| (s, a.end)).collect();
        for (s, e) in all {
            held.push_back(
                space
                    .unmap(GuestPhysAddr::from_usize(s), e - s)
                    .expect("unmap all"),
            );
        }
        for f in held.drain(..) {
            space.complete_flush(f).unwrap();
        }
        prop_assert_eq!(space.table_frames(), F::ROOT_FRAMES);
        prop_assert_eq!(space.data_frames(), 0);
        prop_assert_eq!(pool.in_use(), base_in_use + chunk_frames + F::ROOT_FRAMES);
        Ok(())
    };
    let result = steps();
    drop(guard);
    result?;
    prop_assert_eq!(pool.in_use(), base_in_use, "frames leaked after drop");
    let bad = frees_since(strict, seen);
    prop_assert!(bad.is_empty(), "after the last unmap and drop: {bad:?}");
    Ok(())
}

macro_rules! space_tests {
    ($($name:ident: $fmt:ty,)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn $name(ops in prop::collection::vec(op(), 1..24)) {
                run::<$fmt>(ops)?;
            }
        }
    )*};
}

space_tests! {
    space_ept: Ept,
    space_npt: Npt,
    space_arm_ipa40: ArmStage2Ipa40,
    space_arm_ipa48: ArmStage2Ipa48,
    space_sv39x4: Sv39x4,
    space_sv48x4: Sv48x4,
}
