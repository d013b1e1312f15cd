//! `addrspace::AddrSpace` on every nested format: sequences of maps (allocated eager,
//! lazy and lazy in 2 MiB blocks, linear RAM and device, reserved), unmaps, protects, faults, translations,
//! walks, copies, populates, flush completion and merging (also of another space's
//! tokens), with the allocator failing after any number of frames. After every step,
//! checked against `hvcore_fuzz::space::Model`: each page's area, flags and
//! translation, the fault outcome, the copied bytes, `audit()`, the frame accounting,
//! that every free named frames of one allocation (`StrictAllocator`), and, on every
//! error, that nothing changed.

#![no_main]

use addrspace::testing::{PoolAllocator, StrictAllocator};
use addrspace::{
    AccessKind, AddrSpace, Area, ArmStage2Ipa40, ArmStage2Ipa48, Ept, Error, FaultOutcome, Flush,
    GuestPhysAddr, HostPhysAddr, MappingFlags, NestedFormat, Npt, PAGE_SIZE, PageSize, PageTable,
    Populate, Sv39x4, Sv48x4, Translation,
};
use arbitrary::Arbitrary;
use hvcore_fuzz::space::{FaultKind, Kind, Model, Refusal, kind_of, pn};
use libfuzzer_sys::fuzz_target;

/// Where the ops land: 8 MiB at 1 GiB (four 2 MiB slots, so huge leaves form).
const WINDOW: usize = 0x4000_0000;
const WINDOW_PAGES: usize = 2048;
/// The pool, and the block at its top that linear RAM maps (reserved at start).
const POOL_FRAMES: usize = 8192;
const LINEAR_FRAMES: usize = 512;

#[derive(Arbitrary, Debug)]
struct Input {
    format: u8,
    ops: Vec<Op>,
}

/// A range in the window (page, pages; `huge` makes it 2 MiB-aligned and sized),
/// or raw values for the error paths.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Range {
    Pages { page: u16, pages: u8 },
    Huge { slot: u8, slots: u8 },
    Raw { gpa: u64, size: u16 },
}

impl Range {
    fn get(self) -> (usize, usize) {
        match self {
            Range::Pages { page, pages } => (
                WINDOW + usize::from(page) % WINDOW_PAGES * PAGE_SIZE,
                (usize::from(pages) % 64 + 1) * PAGE_SIZE,
            ),
            Range::Huge { slot, slots } => (
                WINDOW + usize::from(slot % 4) * 0x20_0000,
                (usize::from(slots % 2) + 1) * 0x20_0000,
            ),
            Range::Raw { gpa, size } => (gpa as usize, size as usize),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Flags(u8);

impl Flags {
    fn get(self) -> MappingFlags {
        let mut f = MappingFlags::from_bits_truncate(u32::from(self.0) & 0xf);
        match self.0 >> 4 & 3 {
            1 => f |= MappingFlags::DEVICE,
            2 => f |= MappingFlags::UNCACHED,
            3 if self.0 & 0x80 != 0 => f |= MappingFlags::DEVICE | MappingFlags::UNCACHED,
            _ => {}
        }
        f
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    MapAlloc {
        r: Range,
        flags: Flags,
        /// 0 eager, 1 lazy, 2 lazy in 2 MiB blocks.
        populate: u8,
    },
    MapLinear {
        r: Range,
        frame: u16,
        flags: Flags,
        device: bool,
    },
    MapReserved(Range),
    Unmap(Range),
    Protect {
        r: Range,
        flags: Flags,
    },
    Fault {
        page: u16,
        offset: u16,
        access: u8,
    },
    Translate {
        page: u16,
        offset: u16,
    },
    Read {
        page: u16,
        offset: u16,
        len: u16,
    },
    Write {
        page: u16,
        offset: u16,
        len: u16,
        seed: u8,
    },
    Obj {
        page: u16,
        offset: u16,
        value: Option<u64>,
    },
    Populate {
        page: u16,
        offset: u16,
        len: u16,
    },
    Complete(u8),
    Merge(u8, u8),
    Foreign {
        merge: Option<u8>,
    },
    /// The allocator fails after `n` more frames during the next op.
    FailAfter(u8),
}

/// Everything observable about a space, and its pool's frames.
#[derive(Debug, PartialEq)]
struct Snapshot {
    areas: Vec<Area>,
    leaves: Vec<(GuestPhysAddr, Translation)>,
    frames: (usize, usize, usize, usize),
}

fn snapshot<F: NestedFormat>(
    s: &AddrSpace<F, &StrictAllocator>,
    pool: &StrictAllocator,
) -> Snapshot {
    let mut leaves = Vec::new();
    s.page_table().for_each_leaf(|g, t| leaves.push((g, t)));
    Snapshot {
        areas: s.areas().copied().collect(),
        leaves,
        frames: (
            pool.pool().in_use(),
            s.table_frames(),
            s.data_frames(),
            s.deferred_frames(),
        ),
    }
}

/// The bytes an op names, when it changes or reads the space there.
fn touched(op: &Op) -> Option<(usize, usize)> {
    match *op {
        Op::MapAlloc { r, .. }
        | Op::MapLinear { r, .. }
        | Op::MapReserved(r)
        | Op::Unmap(r)
        | Op::Protect { r, .. } => Some(r.get()),
        Op::Fault { page, offset, .. } => Some((at(page, offset), 1)),
        Op::Write {
            page, offset, len, ..
        }
        | Op::Populate { page, offset, len } => Some((at(page, offset), usize::from(len))),
        _ => None,
    }
}

fn at(page: u16, offset: u16) -> usize {
    WINDOW + usize::from(page) % (WINDOW_PAGES + 2) * PAGE_SIZE + usize::from(offset) % PAGE_SIZE
        - PAGE_SIZE
}

struct Run<'p, F: NestedFormat> {
    pool: &'p StrictAllocator,
    s: AddrSpace<F, &'p StrictAllocator>,
    other: AddrSpace<F, &'p StrictAllocator>,
    m: Model,
    flushes: Vec<Flush>,
    linear_base: usize,
    failing: bool,
}

impl<'p, F: NestedFormat> Run<'p, F> {
    fn valid_flags(flags: MappingFlags) -> bool {
        PageTable::<F, &StrictAllocator>::check_flags(flags).is_ok()
    }

    /// The input checks every range operation makes first: page-aligned, not empty,
    /// not wrapping, within the format's guest-physical width.
    fn valid_range(gpa: usize, size: usize) -> bool {
        size != 0
            && gpa.is_multiple_of(PAGE_SIZE)
            && size.is_multiple_of(PAGE_SIZE)
            && gpa
                .checked_add(size)
                .is_some_and(|e| e <= 1usize << F::GPA_BITS)
    }

    /// An error that is allowed here: an allocation failure while failing.
    fn out_of_memory(&self, e: &Error) -> bool {
        self.failing && matches!(e, Error::NoMemory { .. })
    }

    fn step(&mut self, op: Op) {
        let before = snapshot(&self.s, self.pool);
        let what = format!("{op:?}");
        let touched = touched(&op);
        let changed = self.apply(op);
        if !changed {
            assert_eq!(
                snapshot(&self.s, self.pool),
                before,
                "{what}: an error changed the space"
            );
        }
        self.check(&what);
        // The translation of every page the op named (and its neighbours) against
        // the model: kind, flags, frame.
        if let Some((gpa, len)) = touched {
            let first = pn(gpa).saturating_sub(1).max(pn(WINDOW) - 1);
            let last = pn(gpa.saturating_add(len)).min(pn(WINDOW) + WINDOW_PAGES);
            for p in first..=last {
                self.check_page(p * PAGE_SIZE, &what);
            }
        }
    }

    /// Runs `op`, checks its result against the model and updates the model;
    /// returns whether the space may have changed (false on every error).
    fn apply(&mut self, op: Op) -> bool {
        match op {
            Op::MapAlloc { r, flags, populate } => {
                let ((gpa, size), flags) = (r.get(), flags.get());
                let pop = [Populate::Eager, Populate::Lazy, Populate::LazyHuge]
                    [usize::from(populate) % 3];
                let got = self
                    .s
                    .map_alloc(GuestPhysAddr::from_usize(gpa), size, flags, pop);
                self.map_result(got, gpa, size, flags, Kind::Alloc(pop))
            }
            Op::MapLinear {
                r,
                frame,
                flags,
                device,
            } => {
                let (gpa, size) = r.get();
                let mut flags = flags.get() - MappingFlags::DEVICE;
                let hpa = if device {
                    flags |= MappingFlags::DEVICE;
                    0x0900_0000 + usize::from(frame) * PAGE_SIZE
                } else {
                    // RAM: inside the pool's reserved block, whole.
                    let frames = size / PAGE_SIZE;
                    if frames > LINEAR_FRAMES || !size.is_multiple_of(PAGE_SIZE) || size == 0 {
                        return false;
                    }
                    self.linear_base + usize::from(frame) % (LINEAR_FRAMES - frames + 1) * PAGE_SIZE
                };
                // SAFETY: device ranges are never copied; RAM ranges lie in the block
                // reserved from this space's own pool at start, which phys_to_virt
                // maps and nothing else uses.
                let got = unsafe {
                    self.s.map_linear(
                        GuestPhysAddr::from_usize(gpa),
                        HostPhysAddr::from_usize(hpa),
                        size,
                        flags,
                    )
                };
                self.map_result(got, gpa, size, flags, Kind::Linear { hpa })
            }
            Op::MapReserved(r) => {
                let (gpa, size) = r.get();
                let got = self.s.map_reserved(GuestPhysAddr::from_usize(gpa), size);
                self.map_result(got, gpa, size, MappingFlags::empty(), Kind::Reserved)
            }
            Op::Unmap(r) => {
                let (gpa, size) = r.get();
                let got = self.s.unmap(GuestPhysAddr::from_usize(gpa), size);
                let ok = Self::valid_range(gpa, size) && self.m.covers(gpa, size);
                match got {
                    Ok(flush) => {
                        assert!(ok, "unmap of [{gpa:#x}, +{size:#x}) accepted");
                        assert!(!flush.is_empty(), "an unmap needs an invalidation");
                        let range = flush.range().expect("a range");
                        assert!(
                            range.start().as_usize() <= gpa && range.end().as_usize() >= gpa + size,
                            "flush {range:?} does not cover the unmap"
                        );
                        self.m.unmap(gpa, size);
                        self.flushes.push(flush);
                        true
                    }
                    Err(e) if ok => {
                        assert!(self.out_of_memory(&e), "unmap refused: {e:?}");
                        false
                    }
                    Err(e) => {
                        if Self::valid_range(gpa, size) {
                            assert!(matches!(e, Error::NotMapped { .. }), "{e:?}");
                        }
                        false
                    }
                }
            }
            Op::Protect { r, flags } => {
                let ((gpa, size), flags) = (r.get(), flags.get());
                let got = self.s.protect(GuestPhysAddr::from_usize(gpa), size, flags);
                let ok = Self::valid_range(gpa, size)
                    && self.m.covers(gpa, size)
                    && Self::valid_flags(flags);
                let mut after = Model {
                    pages: self.m.pages.clone(),
                    areas: self.m.areas,
                    ..Model::default()
                };
                let typed = if ok {
                    after.protect(gpa, size, flags, Self::valid_flags)
                } else {
                    Ok(())
                };
                match (got, ok, typed) {
                    (Ok(flush), true, Ok(())) => {
                        (self.m.pages, self.m.areas) = (after.pages, after.areas);
                        if !flush.is_empty() {
                            self.flushes.push(flush);
                        }
                        true
                    }
                    (Ok(_), _, _) => {
                        panic!("protect of [{gpa:#x}, +{size:#x}) with {flags:?} accepted")
                    }
                    (Err(e), true, Err(Some(first))) => {
                        let g = GuestPhysAddr::from_usize(first);
                        assert!(
                            matches!(e, Error::MemoryType { gpa, .. } if gpa == g),
                            "protect across memory types: {e:?}, expected at {first:#x}"
                        );
                        false
                    }
                    (Err(e), true, Err(None)) => {
                        assert!(matches!(e, Error::InvalidFlags { .. }), "{e:?}");
                        false
                    }
                    (Err(e), true, Ok(())) => {
                        assert!(self.out_of_memory(&e), "protect refused: {e:?}");
                        false
                    }
                    (Err(e), false, _) => {
                        if Self::valid_range(gpa, size) && Self::valid_flags(flags) {
                            assert!(matches!(e, Error::NotMapped { .. }), "{e:?}");
                        }
                        false
                    }
                }
            }
            Op::Fault {
                page,
                offset,
                access,
            } => {
                let gpa = at(page, offset);
                let access = [AccessKind::Read, AccessKind::Write, AccessKind::Execute]
                    [usize::from(access) % 3];
                let got = self
                    .s
                    .handle_page_fault(GuestPhysAddr::from_usize(gpa), access);
                let before = self.m.pages.get(&pn(gpa)).copied();
                let fits = self.m.block_fits(gpa);
                let expect = self.m.fault(gpa, access);
                match got {
                    Ok(o) => {
                        assert_eq!(FaultKind::of(&o), expect, "fault at {gpa:#x} {access:?}");
                        if let FaultOutcome::Mapped { gpa: at, size, .. } = o {
                            // A whole block only where it fits (else the allocator
                            // may have had no block: a page then).
                            let block = size == PageSize::Size2M;
                            assert!(!block || fits, "a 2 MiB block mapped at {gpa:#x}");
                            assert_eq!(
                                at.as_usize(),
                                gpa & !(size.bytes() - 1),
                                "the mapped {size:?} of a fault at {gpa:#x}"
                            );
                            if block {
                                self.m.block_mapped(gpa);
                            }
                        }
                        matches!(expect, FaultKind::Mapped(_))
                    }
                    Err(e) => {
                        assert!(self.out_of_memory(&e), "fault at {gpa:#x}: {e:?}");
                        // Undo the model's change: nothing was mapped.
                        if let (Some(b), Some(p)) = (before, self.m.pages.get_mut(&pn(gpa))) {
                            *p = b;
                        }
                        false
                    }
                }
            }
            Op::Translate { page, offset } => {
                let gpa = at(page, offset);
                self.check_page(gpa, "translate");
                false
            }
            Op::Read { page, offset, len } => {
                let gpa = at(page, offset);
                let mut buf = vec![0u8; usize::from(len) % (3 * PAGE_SIZE)];
                let got = self.s.read(GuestPhysAddr::from_usize(gpa), &mut buf);
                self.copy_result(got, gpa, buf.len(), false);
                if self.m.refusal(gpa, buf.len(), false).is_none() {
                    for (i, b) in buf.iter().enumerate() {
                        if let Some(want) = self.m.byte(gpa + i) {
                            assert_eq!(*b, want, "byte at {:#x}", gpa + i);
                        }
                    }
                }
                false
            }
            Op::Write {
                page,
                offset,
                len,
                seed,
            } => {
                let gpa = at(page, offset);
                let buf: Vec<u8> = (0..usize::from(len) % (3 * PAGE_SIZE))
                    .map(|i| seed.wrapping_add(i as u8) | 1)
                    .collect();
                let got = self.s.write(GuestPhysAddr::from_usize(gpa), &buf);
                let ok = self.copy_result(got, gpa, buf.len(), false);
                if ok {
                    for (i, b) in buf.iter().enumerate() {
                        self.m.set_byte(gpa + i, *b);
                    }
                }
                ok
            }
            Op::Obj {
                page,
                offset,
                value,
            } => {
                let gpa = at(page, offset);
                let g = GuestPhysAddr::from_usize(gpa);
                match value {
                    Some(v) => {
                        let ok = self.copy_result(self.s.write_obj(g, &v), gpa, 8, false);
                        if ok {
                            for (i, b) in v.to_le_bytes().iter().enumerate() {
                                self.m.set_byte(gpa + i, *b);
                            }
                        }
                        ok
                    }
                    None => {
                        let got = self.s.read_obj::<u64>(g);
                        if let Ok(v) = got {
                            for (i, b) in v.to_le_bytes().iter().enumerate() {
                                if let Some(want) = self.m.byte(gpa + i) {
                                    assert_eq!(*b, want, "object byte at {:#x}", gpa + i);
                                }
                            }
                        }
                        self.copy_result(got.map(drop), gpa, 8, false);
                        false
                    }
                }
            }
            Op::Populate { page, offset, len } => {
                let gpa = at(page, offset);
                let len = usize::from(len) % (8 * PAGE_SIZE);
                let got = self.s.populate(GuestPhysAddr::from_usize(gpa), len);
                let refused = self.m.refusal(gpa, len, true);
                match got {
                    Ok(n) => {
                        assert_eq!(refused, None, "populate of [{gpa:#x}, +{len:#x}) accepted");
                        assert_eq!(n, self.m.populate(gpa, len), "pages populated");
                        n > 0
                    }
                    Err(e) => {
                        if refused.is_none() {
                            assert!(self.out_of_memory(&e), "populate refused: {e:?}");
                        } else {
                            self.copy_result(Err(e), gpa, len, true);
                        }
                        false
                    }
                }
            }
            Op::Complete(i) => {
                if self.flushes.is_empty() {
                    return false;
                }
                let f = self.flushes.remove(usize::from(i) % self.flushes.len());
                self.s
                    .complete_flush(f)
                    .expect("this space's token completes");
                true
            }
            Op::Merge(i, j) => {
                let n = self.flushes.len();
                if n < 2 {
                    return false;
                }
                let (i, j) = (usize::from(i) % n, usize::from(j) % n);
                if i == j {
                    return false;
                }
                let other = self.flushes.remove(j);
                let i = if i > j { i - 1 } else { i };
                let (a, b) = (self.flushes[i].range(), other.range());
                self.flushes[i]
                    .merge(other)
                    .expect("tokens of one space merge");
                let m = self.flushes[i].range();
                for r in [a, b].into_iter().flatten() {
                    let m = m.expect("a merged range");
                    assert!(
                        m.start() <= r.start() && m.end() >= r.end(),
                        "{m:?} misses {r:?}"
                    );
                }
                false
            }
            Op::Foreign { merge } => {
                // A token of the other space: refused, and this space unchanged.
                let g = GuestPhysAddr::from_usize(WINDOW);
                if self.other.areas().next().is_none() {
                    self.other
                        .map_alloc(g, PAGE_SIZE, MappingFlags::RW, Populate::Eager)
                        .expect("the other space maps");
                }
                let Ok(token) = self.other.unmap(g, PAGE_SIZE) else {
                    return false;
                };
                match merge {
                    Some(i) if !self.flushes.is_empty() => {
                        let n = self.flushes.len();
                        let target = &mut self.flushes[usize::from(i) % n];
                        let range = target.range();
                        let back = target.merge(token).expect_err("a foreign token merged");
                        assert_eq!(target.range(), range, "a refused merge changed the token");
                        self.other
                            .complete_flush(back.other)
                            .expect("handed back whole");
                    }
                    _ => {
                        let e = self
                            .s
                            .complete_flush(token)
                            .expect_err("a foreign token completed");
                        assert!(matches!(e, Error::ForeignFlush { .. }), "{e:?}");
                    }
                }
                false
            }
            Op::FailAfter(_) => unreachable!("handled by the driver"),
        }
    }

    /// Checks a map's result against the model, and records a success.
    fn map_result(
        &mut self,
        got: Result<(), Error>,
        gpa: usize,
        size: usize,
        flags: MappingFlags,
        kind: Kind,
    ) -> bool {
        let flags_ok = kind == Kind::Reserved || Self::valid_flags(flags);
        let ok = Self::valid_range(gpa, size) && flags_ok && !self.m.overlaps(gpa, size);
        match got {
            Ok(()) => {
                assert!(
                    ok,
                    "map {kind:?} of [{gpa:#x}, +{size:#x}) {flags:?} accepted"
                );
                self.m.map(gpa, size, kind, flags);
                true
            }
            Err(e) if ok => {
                let lazy = matches!(
                    kind,
                    Kind::Alloc(Populate::Lazy | Populate::LazyHuge) | Kind::Reserved
                );
                assert!(
                    !lazy && self.out_of_memory(&e),
                    "map {kind:?} of [{gpa:#x}, +{size:#x}) refused: {e:?}"
                );
                false
            }
            Err(e) => {
                if Self::valid_range(gpa, size) && flags_ok {
                    assert!(matches!(e, Error::Overlap { .. }), "{e:?}");
                } else if Self::valid_range(gpa, size) && !self.m.overlaps(gpa, size) {
                    assert!(matches!(e, Error::InvalidFlags { .. }), "{e:?}");
                }
                false
            }
        }
    }

    /// Checks a copy's (or populate's) result: refused exactly when the model says,
    /// with the model's reason at the first offending byte. Returns success.
    fn copy_result(&self, got: Result<(), Error>, gpa: usize, len: usize, populate: bool) -> bool {
        let refused = self.m.refusal(gpa, len, populate);
        match (got, refused) {
            (Ok(()), None) => true,
            (Ok(()), Some(r)) => panic!("copy of [{gpa:#x}, +{len:#x}) accepted over {r:?}"),
            (Err(e), None) => panic!("copy of [{gpa:#x}, +{len:#x}) refused: {e:?}"),
            (Err(e), Some((first, why))) => {
                let g = GuestPhysAddr::from_usize(first);
                let page = |x: GuestPhysAddr| pn(x.as_usize()) == pn(first);
                let fits = match (why, e) {
                    (Refusal::NoArea, Error::NoArea { gpa }) => gpa == g,
                    (Refusal::Reserved, Error::Reserved { gpa }) => gpa == g,
                    (Refusal::Device, Error::DeviceMemory { gpa }) => gpa == g,
                    (Refusal::NotPopulated, Error::NotPopulated { gpa }) => page(gpa),
                    // Allocated device memory not faulted in yet: both reasons hold.
                    (Refusal::Device, Error::NotPopulated { gpa }) => {
                        page(gpa) && !self.m.pages[&pn(first)].present && !populate
                    }
                    _ => false,
                };
                assert!(
                    fits,
                    "copy of [{gpa:#x}, +{len:#x}): {e:?}, expected {why:?} at {first:#x}"
                );
                false
            }
        }
    }

    /// The page at `gpa` against the model: its area, translation and walk.
    fn check_page(&mut self, gpa: usize, what: &str) {
        let g = GuestPhysAddr::from_usize(gpa);
        let area = self.s.area_at(g).copied();
        let t = self.s.translate(g);
        assert_eq!(
            self.s.walk(g).translation(),
            t.ok(),
            "{what}: walk and translate of {gpa:#x}"
        );
        let Some(page) = self.m.pages.get(&pn(gpa)).copied() else {
            assert_eq!(area, None, "{what}: an area at {gpa:#x}");
            assert!(
                matches!(t, Err(Error::NoArea { .. })),
                "{what}: {gpa:#x}: {t:?}"
            );
            return;
        };
        let area = area.unwrap_or_else(|| panic!("{what}: no area at {gpa:#x}"));
        let start = pn(area.range.start().as_usize());
        assert_eq!(
            kind_of(area.backend, start, pn(gpa)),
            page.kind,
            "{what}: area at {gpa:#x}"
        );
        assert_eq!(area.flags, page.flags, "{what}: flags at {gpa:#x}");
        match (page.kind, page.present, t) {
            (Kind::Reserved, _, Err(Error::Reserved { .. })) => {}
            (Kind::Alloc(_), false, Err(Error::NotPopulated { .. })) => {}
            (Kind::Linear { hpa }, true, Ok(t)) => {
                assert_eq!(
                    t.hpa.as_usize(),
                    hpa + gpa % PAGE_SIZE,
                    "{what}: linear {gpa:#x}"
                );
                assert_eq!(t.flags, page.flags, "{what}: translation flags at {gpa:#x}");
            }
            (Kind::Alloc(_), true, Ok(t)) => {
                assert_eq!(t.flags, page.flags, "{what}: translation flags at {gpa:#x}");
                let frame = t.hpa.as_usize() - gpa % PAGE_SIZE;
                let (lo, hi) = self.pool.pool().phys_range();
                assert!(
                    frame >= lo.as_usize() && frame < self.linear_base && hi.as_usize() > frame,
                    "{what}: frame {frame:#x} of {gpa:#x} outside the pool's free frames"
                );
                let seen = *self.m.frames.entry(pn(gpa)).or_insert(frame);
                assert_eq!(seen, frame, "{what}: the frame of {gpa:#x} moved");
            }
            (k, present, t) => panic!("{what}: {gpa:#x} is {k:?} (present {present}) but {t:?}"),
        }
    }

    /// The invariants after every step.
    fn check(&mut self, what: &str) {
        if let Err(e) = self.s.page_table().audit() {
            panic!("{what}: audit: {e}");
        }
        let (in_use, tables, data, deferred) = snapshot(&self.s, self.pool).frames;
        assert_eq!(
            in_use,
            LINEAR_FRAMES + tables + data + deferred,
            "{what}: pool frames against the spaces' accounting (tables {tables}, data {data}, deferred {deferred}, model data {}, model {:?})",
            self.m.data_frames(),
            self.m
                .pages
                .values()
                .fold(std::collections::BTreeMap::new(), |mut a, p| {
                    *a.entry(format!("{:?}/{}", p.kind, p.present)).or_insert(0) += 1;
                    a
                })
        );
        assert_eq!(data, self.m.data_frames(), "{what}: data frames");
        for pool in [self.pool, *self.other.allocator()] {
            let bad = pool.violations();
            assert!(bad.is_empty(), "{what}: frees across allocations: {bad:?}");
        }
        if self.flushes.is_empty() {
            assert_eq!(deferred, 0, "{what}: frames held with no token outstanding");
        }
        // Distinct frames behind distinct allocated pages.
        let mut seen = std::collections::HashMap::new();
        for (p, f) in &self.m.frames {
            if let Some(q) = seen.insert(*f, *p) {
                panic!("{what}: pages {q:#x} and {p:#x} share frame {f:#x}");
            }
        }
    }
}

/// The pools, made once (a pool of 32 MiB is costly to make for every input): the
/// space's, with the linear-RAM block reserved at its top, and the other space's.
/// Every input must give every other frame back, each free within one allocation.
fn pools() -> &'static (StrictAllocator, StrictAllocator, usize) {
    static POOLS: std::sync::OnceLock<(StrictAllocator, StrictAllocator, usize)> =
        std::sync::OnceLock::new();
    POOLS.get_or_init(|| {
        let strict = StrictAllocator::new(PoolAllocator::new(POOL_FRAMES));
        let (_, hi) = strict.pool().phys_range();
        let linear_base = hi.as_usize() - LINEAR_FRAMES * PAGE_SIZE;
        // Behind the strict pool's back: linear areas map it, nothing frees it.
        assert!(
            strict
                .pool()
                .alloc_at(HostPhysAddr::from_usize(linear_base), LINEAR_FRAMES)
        );
        let other = StrictAllocator::new(PoolAllocator::new(64));
        (strict, other, linear_base)
    })
}

fn run<F: NestedFormat>(ops: Vec<Op>) {
    let (pool, other_pool, linear_base) = pools();
    let (pool, other_pool, linear_base) = (pool, other_pool, *linear_base);
    {
        let s = AddrSpace::<F, _>::new(pool).expect("a space");
        let other = AddrSpace::<F, _>::new(other_pool).expect("a second space");
        let mut r = Run {
            pool,
            s,
            other,
            m: Model::default(),
            flushes: Vec::new(),
            linear_base,
            failing: false,
        };
        let mut fail = None;
        for op in ops.into_iter().take(48) {
            if let Op::FailAfter(n) = op {
                fail = Some(usize::from(n));
                continue;
            }
            r.failing = fail.is_some();
            if let Some(n) = fail.take() {
                pool.pool().fail_after(n);
            }
            r.step(op);
            pool.pool().never_fail();
            r.failing = false;
        }
        // Every page once, then every token completed: nothing held.
        let pages: Vec<usize> = r.m.pages.keys().copied().collect();
        for p in pages {
            r.check_page(p * PAGE_SIZE, "final");
        }
        for f in std::mem::take(&mut r.flushes) {
            r.s.complete_flush(f).expect("completes");
        }
        assert_eq!(
            r.s.deferred_frames(),
            0,
            "frames held after every token completed"
        );
        r.check("final");
    }
    assert_eq!(
        pool.pool().in_use(),
        LINEAR_FRAMES,
        "frames leaked after drop"
    );
    assert_eq!(
        other_pool.pool().in_use(),
        0,
        "the other space's frames leaked after drop"
    );
    for pool in [pool, other_pool] {
        let bad = pool.violations();
        assert!(bad.is_empty(), "drop: frees across allocations: {bad:?}");
    }
}

fuzz_target!(|input: Input| {
    match input.format % 6 {
        0 => run::<Ept>(input.ops),
        1 => run::<Npt>(input.ops),
        2 => run::<ArmStage2Ipa40>(input.ops),
        3 => run::<ArmStage2Ipa48>(input.ops),
        4 => run::<Sv39x4>(input.ops),
        _ => run::<Sv48x4>(input.ops),
    }
});
