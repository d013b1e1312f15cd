//! Model-based property tests of the table engine, for every format: random sequences
//! of map, unmap, protect and query over a 4 GiB window that exercises 4K/2M/1G leaves
//! and splits, checked after every step against a plain model (sorted segments of
//! page -> (hpa, flags)), with allocation failures injected and frame accounting, on
//! a strict allocator (every free must name frames of one live allocation).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeMap;

use addrspace::testing::StrictAllocator;
use addrspace::{
    ArmStage2Ipa40, ArmStage2Ipa48, Ept, Error, GuestPhysAddr, HostPhysAddr, MappingFlags,
    NestedFormat, Npt, PageTable, Sv39x4, Sv48x4,
};
use proptest::prelude::*;

mod common;

use common::{G1, K4, M2, cases, frees_since, thread_pool, with_budget};

const WINDOW: usize = 4 * G1;

/// A reference model: disjoint segments `start -> (end, hpa at start, flags)`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    segs: BTreeMap<usize, (usize, usize, MappingFlags)>,
}

impl Model {
    fn lookup(&self, gpa: usize) -> Option<(usize, MappingFlags)> {
        let (&s, &(e, h, f)) = self.segs.range(..=gpa).next_back()?;
        (gpa < e).then_some((h + (gpa - s), f))
    }

    fn first_mapped(&self, start: usize, end: usize) -> Option<usize> {
        if let Some((_, &(e, _, _))) = self.segs.range(..=start).next_back()
            && e > start
        {
            return Some(start);
        }
        self.segs.range(start..end).next().map(|(&s, _)| s)
    }

    fn first_hole(&self, start: usize, end: usize) -> Option<usize> {
        let mut cur = start;
        while cur < end {
            match self.segs.range(..=cur).next_back() {
                Some((_, &(e, _, _))) if e > cur => cur = e,
                _ => return Some(cur),
            }
        }
        None
    }

    /// Cuts segments at `at` so that no segment straddles it.
    fn cut(&mut self, at: usize) {
        if let Some((&s, &(e, h, f))) = self.segs.range(..at).next_back()
            && e > at
        {
            self.segs.insert(s, (at, h, f));
            self.segs.insert(at, (e, h + (at - s), f));
        }
    }

    fn remove(&mut self, start: usize, end: usize) {
        self.cut(start);
        self.cut(end);
        let keys: Vec<usize> = self.segs.range(start..end).map(|(&k, _)| k).collect();
        for k in keys {
            self.segs.remove(&k);
        }
    }

    /// The first address in `[start, end)` mapped with another memory type than
    /// `flags` names (none when `flags` names none: each keeps its own).
    fn other_type(&self, start: usize, end: usize, flags: MappingFlags) -> Option<usize> {
        let want = flags.memory_type();
        if want.is_empty() {
            return None;
        }
        let first = self
            .segs
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        self.segs
            .range(first..end)
            .find(|(_, (e, _, f))| *e > start && f.memory_type() != want)
            .map(|(&s, _)| s.max(start))
    }

    /// Protect: each segment keeps its memory type and takes `flags`' access rights.
    /// Returns whether any segment's flags changed.
    fn protect(&mut self, start: usize, end: usize, flags: MappingFlags) -> bool {
        self.cut(start);
        self.cut(end);
        let mut changed = false;
        for (_, v) in self.segs.range_mut(start..end) {
            let new = v.2.memory_type() | flags.access();
            changed |= new != v.2;
            v.2 = new;
        }
        changed
    }

    /// Segments with contiguous neighbours merged.
    fn normalized(&self) -> Vec<(usize, usize, usize, MappingFlags)> {
        merge(self.segs.iter().map(|(&s, &(e, h, f))| (s, e, h, f)))
    }
}

fn merge(
    it: impl Iterator<Item = (usize, usize, usize, MappingFlags)>,
) -> Vec<(usize, usize, usize, MappingFlags)> {
    let mut out: Vec<(usize, usize, usize, MappingFlags)> = Vec::new();
    for (s, e, h, f) in it {
        if let Some(last) = out.last_mut()
            && last.1 == s
            && last.2 + (last.1 - last.0) == h
            && last.3 == f
        {
            last.1 = e;
            continue;
        }
        out.push((s, e, h, f));
    }
    out
}

fn table_segments<F: NestedFormat>(
    pt: &PageTable<F, &StrictAllocator>,
) -> Vec<(usize, usize, usize, MappingFlags)> {
    let mut leaves = Vec::new();
    pt.for_each_leaf(|gpa, t| {
        leaves.push((
            gpa.as_usize(),
            gpa.as_usize() + t.size.bytes(),
            t.hpa.as_usize(),
            t.flags,
        ))
    });
    merge(leaves.into_iter())
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        gpa: usize,
        hpa: usize,
        size: usize,
        flags: usize,
        budget: Option<usize>,
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
    Query {
        gpa: usize,
    },
    /// Complete the oldest held flush.
    Complete,
}

/// An aligned-ish range: small (4K pages), medium (2M-scale, sometimes 4K-offset) or
/// large (1G-scale).
fn range() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        4 => (0..WINDOW / K4, 1..=8usize).prop_map(|(p, n)| (p * K4, n * K4)),
        3 => (0..WINDOW / M2, 1..=3usize, 0..3usize, 0..3usize).prop_map(|(b, n, lo, hi)| {
            // Often 2M-aligned; sometimes shifted or shortened by a few pages.
            (b * M2 + lo * K4, n * M2 - hi * K4)
        }),
        2 => (0..4usize, 1..=2usize).prop_map(|(g, n)| (g * G1, n * G1)),
    ]
    .prop_filter("inside the window", |(g, s)| g + s <= WINDOW)
}

fn hpa_for(gpa: usize) -> impl Strategy<Value = usize> {
    // Keep the HPA's alignment like the GPA's (huge leaves possible) or shift it by a
    // few pages (4K leaves only); 4K-offset HPAs only for smaller ranges (see `op`).
    prop_oneof![
        3 => (1..64usize).prop_map(move |g| g * G1 + gpa % G1),
        1 => (1..64usize, 0..512usize).prop_map(move |(g, m)| g * G1 + m * M2 + gpa % M2),
        1 => (1..64usize, 1..16usize).prop_map(|(g, p)| g * G1 + p * K4),
    ]
}

/// Frames the allocator hands out before it fails: mostly unlimited; otherwise few
/// (splits take at most four) or up to a large map's tables.
fn budget() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        6 => Just(None),
        2 => (0..5usize).prop_map(Some),
        1 => (0..600usize).prop_map(Some),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => range().prop_flat_map(|(gpa, size)| (Just(gpa), Just(size), hpa_for(gpa), 0..16usize, budget()))
            .prop_map(|(gpa, size, hpa, flags, budget)| {
                // A 4K-offset HPA for more than 64 MiB would make 4K leaves by the
                // hundred thousand: realign such HPAs.
                let hpa = if size > 64 * M2 && hpa % M2 != gpa % M2 { hpa - hpa % M2 + gpa % M2 } else { hpa };
                Op::Map { gpa, hpa, size, flags, budget }
            }),
        3 => (range(), budget()).prop_map(|((gpa, size), budget)| Op::Unmap { gpa, size, budget }),
        3 => (range(), 0..16usize, budget()).prop_map(|((gpa, size), flags, budget)| Op::Protect { gpa, size, flags, budget }),
        2 => (0..WINDOW).prop_map(|gpa| Op::Query { gpa }),
        1 => Just(Op::Complete),
    ]
}

/// The flags used by the tests: index into every combination, valid or not.
fn flags_at(i: usize) -> MappingFlags {
    const ALL: [MappingFlags; 16] = [
        MappingFlags::READ,
        MappingFlags::RW,
        MappingFlags::RWX,
        MappingFlags::READ.union(MappingFlags::EXECUTE),
        MappingFlags::DEVICE_RW,
        MappingFlags::READ.union(MappingFlags::DEVICE),
        MappingFlags::RW.union(MappingFlags::UNCACHED),
        MappingFlags::RWX.union(MappingFlags::USER),
        MappingFlags::RW,
        MappingFlags::READ,
        MappingFlags::EXECUTE,
        MappingFlags::WRITE,
        MappingFlags::empty(),
        MappingFlags::RW
            .union(MappingFlags::DEVICE)
            .union(MappingFlags::UNCACHED),
        MappingFlags::RWX,
        MappingFlags::RW,
    ];
    ALL[i % ALL.len()]
}

fn run<F: NestedFormat>(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let strict = thread_pool(16 * 1024, 0x10_0000_0000);
    let pool = strict.pool();
    pool.never_fail();
    let (allocated, freed) = (pool.allocated(), pool.freed());
    let seen = strict.violations().len();
    {
        let mut pt = PageTable::<F, _>::new(strict).expect("root");
        let mut model = Model::default();
        let mut held = std::collections::VecDeque::new();
        for (step, op) in ops.into_iter().enumerate() {
            let before = table_segments(&pt);
            let in_use = pool.in_use();
            let mut failed = false;
            match op.clone() {
                Op::Map {
                    gpa,
                    hpa,
                    size,
                    flags,
                    budget,
                } => {
                    let flags = flags_at(flags);
                    // SAFETY: the test pool's frames are never reached through these
                    // mappings; the HPAs are only numbers here.
                    let got = with_budget(pool, budget, || unsafe {
                        pt.map(
                            GuestPhysAddr::from_usize(gpa),
                            HostPhysAddr::from_usize(hpa),
                            size,
                            flags,
                        )
                    });
                    let valid = PageTable::<F, &StrictAllocator>::check_flags(flags).is_ok();
                    match (got, model.first_mapped(gpa, gpa + size)) {
                        (Err(Error::InvalidFlags { .. }), _) => {
                            prop_assert!(!valid, "step {step}: {flags} refused")
                        }
                        (Err(Error::AlreadyMapped { gpa: at }), Some(first)) => {
                            prop_assert!(valid);
                            prop_assert_eq!(at.as_usize(), first, "step {}", step)
                        }
                        (Err(Error::NoMemory { .. }), None) => {
                            prop_assert!(
                                budget.is_some(),
                                "step {step}: NoMemory without a budget"
                            );
                            failed = true;
                        }
                        (Ok(()), None) => {
                            prop_assert!(valid, "step {step}: {flags} accepted");
                            model.segs.insert(gpa, (gpa + size, hpa, flags.nested()));
                        }
                        (got, first) => prop_assert!(
                            false,
                            "step {step}: {op:?} gave {got:?}, model first mapped {first:?}"
                        ),
                    }
                }
                Op::Unmap { gpa, size, budget } => {
                    let got = with_budget(pool, budget, || {
                        pt.unmap(GuestPhysAddr::from_usize(gpa), size)
                    });
                    match (got, model.first_hole(gpa, gpa + size)) {
                        (Err(Error::NotMapped { gpa: at }), Some(hole)) => {
                            prop_assert_eq!(at.as_usize(), hole)
                        }
                        (Err(Error::NoMemory { .. }), None) => {
                            prop_assert!(budget.is_some());
                            failed = true;
                        }
                        (Ok(flush), None) => {
                            prop_assert_eq!(
                                flush.range().map(|r| (r.start().as_usize(), r.size())),
                                Some((gpa, size))
                            );
                            model.remove(gpa, gpa + size);
                            held.push_back(flush);
                        }
                        (got, hole) => prop_assert!(
                            false,
                            "step {step}: {op:?} gave {got:?}, model hole {hole:?}"
                        ),
                    }
                }
                Op::Protect {
                    gpa,
                    size,
                    flags,
                    budget,
                } => {
                    let flags = flags_at(flags);
                    let got = with_budget(pool, budget, || {
                        pt.protect(GuestPhysAddr::from_usize(gpa), size, flags)
                    });
                    let valid = PageTable::<F, &StrictAllocator>::check_flags(flags).is_ok();
                    match (got, model.first_hole(gpa, gpa + size)) {
                        (Err(Error::InvalidFlags { .. }), _) => prop_assert!(!valid),
                        (Err(Error::NotMapped { gpa: at }), Some(hole)) => {
                            prop_assert!(valid);
                            prop_assert_eq!(at.as_usize(), hole)
                        }
                        (Err(Error::NoMemory { .. }), None) => {
                            prop_assert!(budget.is_some());
                            failed = true;
                        }
                        (Ok(flush), None) => {
                            prop_assert!(valid);
                            prop_assert_eq!(model.other_type(gpa, gpa + size, flags), None);
                            let changed = model.protect(gpa, gpa + size, flags.nested());
                            prop_assert_eq!(
                                flush.range().is_some(),
                                changed,
                                "step {}: flush range vs change",
                                step
                            );
                            held.push_back(flush);
                        }
                        (Err(Error::MemoryType { gpa: at, .. }), None) => {
                            prop_assert!(valid);
                            prop_assert_eq!(
                                Some(at.as_usize()),
                                model.other_type(gpa, gpa + size, flags)
                            );
                        }
                        (got, hole) => prop_assert!(
                            false,
                            "step {step}: {op:?} gave {got:?}, model hole {hole:?}"
                        ),
                    }
                }
                Op::Query { gpa } => {
                    let got = pt
                        .query(GuestPhysAddr::from_usize(gpa))
                        .map(|t| (t.hpa.as_usize(), t.flags));
                    prop_assert_eq!(got, model.lookup(gpa), "step {}: query {:#x}", step, gpa);
                    let walk = pt.walk(GuestPhysAddr::from_usize(gpa));
                    prop_assert_eq!(
                        walk.translation().map(|t| (t.hpa.as_usize(), t.flags)),
                        model.lookup(gpa)
                    );
                }
                Op::Complete => {
                    if let Some(f) = held.pop_front() {
                        pt.complete_flush(f).unwrap();
                    }
                }
            }
            if failed {
                prop_assert_eq!(
                    table_segments(&pt),
                    before,
                    "step {}: failed op changed the table",
                    step
                );
                prop_assert_eq!(pool.in_use(), in_use, "step {}: failed op leaked", step);
            }
            prop_assert_eq!(
                table_segments(&pt),
                model.normalized(),
                "step {}: after {:?}",
                step,
                op
            );
            if let Err(e) = pt.audit() {
                prop_assert!(false, "step {step}: audit after {op:?}: {e}");
            }
            prop_assert_eq!(
                pool.in_use(),
                pt.table_frames() + pt.deferred_frames(),
                "step {}: frames",
                step
            );
            let bad = frees_since(strict, seen);
            prop_assert!(bad.is_empty(), "step {step}: after {op:?}: {bad:?}");
        }
        // Unmap everything: only the root frames remain once the flushes complete.
        for (s, e, _, _) in model.normalized() {
            let f = pt
                .unmap(GuestPhysAddr::from_usize(s), e - s)
                .expect("unmap all");
            held.push_back(f);
        }
        for f in held.drain(..) {
            pt.complete_flush(f).unwrap();
        }
        prop_assert_eq!(pt.table_frames(), F::ROOT_FRAMES);
        prop_assert_eq!(pool.in_use(), F::ROOT_FRAMES);
    }
    prop_assert_eq!(pool.in_use(), 0, "frames leaked after drop");
    let bad = frees_since(strict, seen);
    prop_assert!(bad.is_empty(), "after the last unmap and drop: {bad:?}");
    prop_assert_eq!(pool.allocated() - allocated, pool.freed() - freed);
    Ok(())
}

macro_rules! model_tests {
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

model_tests! {
    model_ept: Ept,
    model_npt: Npt,
    model_arm_ipa40: ArmStage2Ipa40,
    model_arm_ipa48: ArmStage2Ipa48,
    model_sv39x4: Sv39x4,
    model_sv48x4: Sv48x4,
}
