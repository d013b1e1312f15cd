//! A page-by-page model of an `addrspace::AddrSpace`: which guest page belongs to
//! which area (of which kind, with which flags), which lazy pages are populated, the frame
//! each allocated page got, and the bytes written through the copy API (allocated
//! memory by GPA, linear RAM by HPA, since two linear areas may share host memory).

use std::collections::{BTreeMap, HashMap};

use addrspace::{AccessKind, Backend, FaultOutcome, MappingFlags, PAGE_SIZE, Populate};

/// What backs a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Allocated memory, eager or lazy.
    Alloc(Populate),
    /// Host memory at `hpa` (this page's).
    Linear {
        /// The host page.
        hpa: usize,
    },
    /// Claimed, no memory.
    Reserved,
}

/// One guest page of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Its backing.
    pub kind: Kind,
    /// Its area's flags (USER dropped, as nested tables store them).
    pub flags: MappingFlags,
    /// Whether a frame is mapped (eager, faulted-in lazy, linear).
    pub present: bool,
    /// Its area's identity: a map makes an area, a protect that changes an area's
    /// flags cuts the changed part out as a new one (a 2 MiB block of a
    /// `LazyHuge` area faults in whole only inside one area).
    pub area: u32,
}

impl Page {
    /// Whether the host copy API may touch it (memory, not device memory).
    pub fn copyable(&self) -> bool {
        self.kind != Kind::Reserved && !self.flags.contains(MappingFlags::DEVICE)
    }
}

/// Why a byte cannot be copied, in the copy API's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No area.
    NoArea,
    /// A reserved area.
    Reserved,
    /// Device memory.
    Device,
    /// A lazy page not populated yet (copies only, not `populate`).
    NotPopulated,
}

/// The model.
#[derive(Default, Debug)]
pub struct Model {
    /// Pages by page number (GPA / 4 KiB).
    pub pages: BTreeMap<usize, Page>,
    /// The frame seen behind each present allocated page.
    pub frames: HashMap<usize, usize>,
    /// Bytes written into allocated memory, by GPA (others read as zero).
    pub alloc_bytes: HashMap<usize, u8>,
    /// Bytes written into linear RAM, by HPA (others are unknown).
    pub linear_bytes: HashMap<usize, u8>,
    /// The last area identity handed out.
    pub areas: u32,
}

/// Pages in a 2 MiB block.
pub const BLOCK_PAGES: usize = 512;

/// Page number of `gpa`.
pub fn pn(gpa: usize) -> usize {
    gpa / PAGE_SIZE
}

impl Model {
    /// Whether any page of `[gpa, gpa + size)` is taken.
    pub fn overlaps(&self, gpa: usize, size: usize) -> bool {
        self.pages
            .range(pn(gpa)..pn(gpa) + size / PAGE_SIZE)
            .next()
            .is_some()
    }

    /// Whether every page of `[gpa, gpa + size)` is taken.
    pub fn covers(&self, gpa: usize, size: usize) -> bool {
        (pn(gpa)..pn(gpa) + size / PAGE_SIZE).all(|p| self.pages.contains_key(&p))
    }

    /// Adds an area of `size` bytes at `gpa`.
    pub fn map(&mut self, gpa: usize, size: usize, kind: Kind, flags: MappingFlags) {
        self.areas += 1;
        let area = self.areas;
        for (i, p) in (pn(gpa)..pn(gpa) + size / PAGE_SIZE).enumerate() {
            let (kind, present) = match kind {
                Kind::Alloc(pop) => (kind, pop == Populate::Eager),
                Kind::Linear { hpa } => (
                    Kind::Linear {
                        hpa: hpa + i * PAGE_SIZE,
                    },
                    true,
                ),
                Kind::Reserved => (kind, false),
            };
            self.pages.insert(
                p,
                Page {
                    kind,
                    flags: flags.nested(),
                    present,
                    area,
                },
            );
        }
    }

    /// Removes `[gpa, gpa + size)` (covered); returns the frames of allocated pages
    /// it unlinked.
    pub fn unmap(&mut self, gpa: usize, size: usize) -> usize {
        let mut frames = 0;
        for p in pn(gpa)..pn(gpa) + size / PAGE_SIZE {
            let page = self.pages.remove(&p).expect("covered");
            if let Kind::Alloc(_) = page.kind {
                frames += usize::from(page.present);
                self.frames.remove(&p);
                for b in 0..PAGE_SIZE {
                    self.alloc_bytes.remove(&(p * PAGE_SIZE + b));
                }
            }
        }
        frames
    }

    /// Protects `[gpa, gpa + size)` (covered) with `flags`: every page but reserved
    /// ones gets the access rights of `flags` and keeps its memory type. Refused,
    /// changing nothing, when `flags` names another memory type than a page's
    /// (`Err(Some(gpa))`, the first such page) or when `valid` refuses a page's new
    /// flags (`Err(None)`).
    pub fn protect(
        &mut self,
        gpa: usize,
        size: usize,
        flags: MappingFlags,
        valid: impl Fn(MappingFlags) -> bool,
    ) -> Result<(), Option<usize>> {
        let ty = flags.memory_type();
        let range = pn(gpa)..pn(gpa) + size / PAGE_SIZE;
        for p in range.clone() {
            let page = self.pages[&p];
            if page.kind == Kind::Reserved {
                continue;
            }
            if !ty.is_empty() && page.flags.memory_type() != ty {
                return Err(Some(p * PAGE_SIZE));
            }
            if !valid(page.flags.memory_type() | flags.access()) {
                return Err(None);
            }
        }
        let mut cut = BTreeMap::new();
        for p in range {
            let page = self.pages.get_mut(&p).expect("covered");
            let new = page.flags.memory_type() | flags.access();
            if page.kind != Kind::Reserved && new != page.flags {
                page.flags = new;
                let next = self.areas + 1 + cut.len() as u32;
                page.area = *cut.entry(page.area).or_insert(next);
            }
        }
        self.areas += cut.len() as u32;
        Ok(())
    }

    /// The first byte of `[gpa, gpa + len)` a copy (`populate` false) or a populate
    /// refuses, and why.
    pub fn refusal(&self, gpa: usize, len: usize, populate: bool) -> Option<(usize, Refusal)> {
        let mut at = gpa;
        while at < gpa + len {
            let why = match self.pages.get(&pn(at)) {
                None => Some(Refusal::NoArea),
                Some(p) if p.kind == Kind::Reserved => Some(Refusal::Reserved),
                Some(p) if !p.copyable() => Some(Refusal::Device),
                Some(p) if !p.present && !populate => Some(Refusal::NotPopulated),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Some((at, why));
            }
            at = (pn(at) + 1) * PAGE_SIZE;
        }
        None
    }

    /// The fault outcome at `gpa` for `access`, up to the areas' ranges and the frame
    /// of a newly mapped page; marks a lazy page present.
    pub fn fault(&mut self, gpa: usize, access: AccessKind) -> FaultKind {
        let Some(page) = self.pages.get_mut(&pn(gpa)) else {
            return FaultKind::NoArea;
        };
        if page.kind == Kind::Reserved {
            return FaultKind::Reserved;
        }
        if !page.flags.allows(access) {
            return FaultKind::Permission(page.flags);
        }
        if page.present {
            return FaultKind::Spurious;
        }
        page.present = true;
        FaultKind::Mapped(page.flags)
    }

    /// Whether a fault at `gpa` may map its whole 2 MiB block: a `LazyHuge` page
    /// whose block lies in its area, none of it present.
    pub fn block_fits(&self, gpa: usize) -> bool {
        let Some(page) = self.pages.get(&pn(gpa)) else {
            return false;
        };
        let first = pn(gpa) & !(BLOCK_PAGES - 1);
        page.kind == Kind::Alloc(Populate::LazyHuge)
            && (first..first + BLOCK_PAGES).all(|p| {
                self.pages
                    .get(&p)
                    .is_some_and(|q| q.area == page.area && !q.present)
            })
    }

    /// Marks the 2 MiB block around `gpa` present.
    pub fn block_mapped(&mut self, gpa: usize) {
        let first = pn(gpa) & !(BLOCK_PAGES - 1);
        for p in first..first + BLOCK_PAGES {
            self.pages.get_mut(&p).expect("in the area").present = true;
        }
    }

    /// Marks the pages of `[gpa, gpa + len)` present; returns how many were not.
    pub fn populate(&mut self, gpa: usize, len: usize) -> usize {
        let mut n = 0;
        if len == 0 {
            return 0;
        }
        for p in pn(gpa)..=pn(gpa + len - 1) {
            let page = self.pages.get_mut(&p).expect("checked");
            if !page.present {
                page.present = true;
                n += 1;
            }
        }
        n
    }

    /// Allocated pages with a frame.
    pub fn data_frames(&self) -> usize {
        self.pages
            .values()
            .filter(|p| matches!(p.kind, Kind::Alloc(_)) && p.present)
            .count()
    }

    /// The byte at `gpa` as far as the model knows (`None`: unknown linear RAM).
    pub fn byte(&self, gpa: usize) -> Option<u8> {
        match self.pages[&pn(gpa)].kind {
            Kind::Alloc(_) => Some(self.alloc_bytes.get(&gpa).copied().unwrap_or(0)),
            Kind::Linear { hpa } => self.linear_bytes.get(&(hpa + gpa % PAGE_SIZE)).copied(),
            Kind::Reserved => unreachable!("not copyable"),
        }
    }

    /// Records a write of `b` at `gpa`.
    pub fn set_byte(&mut self, gpa: usize, b: u8) {
        match self.pages[&pn(gpa)].kind {
            Kind::Alloc(_) => {
                self.alloc_bytes.insert(gpa, b);
            }
            Kind::Linear { hpa } => {
                self.linear_bytes.insert(hpa + gpa % PAGE_SIZE, b);
            }
            Kind::Reserved => unreachable!("not copyable"),
        }
    }
}

/// A fault outcome up to the parts the model does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A lazy page got a frame, with these flags.
    Mapped(MappingFlags),
    /// Already mapped.
    Spurious,
    /// Refused by these flags.
    Permission(MappingFlags),
    /// Reserved.
    Reserved,
    /// No area.
    NoArea,
}

impl FaultKind {
    /// The kind of a real outcome.
    pub fn of(o: &FaultOutcome) -> Self {
        match *o {
            FaultOutcome::Mapped { flags, .. } => Self::Mapped(flags),
            FaultOutcome::Spurious => Self::Spurious,
            FaultOutcome::PermissionViolation { flags, .. } => Self::Permission(flags),
            FaultOutcome::Reserved { .. } => Self::Reserved,
            FaultOutcome::NoArea => Self::NoArea,
        }
    }
}

/// The model's kind of a real area backend for page `p` of an area starting at page
/// `start` (linear areas: that page's host address).
pub fn kind_of(backend: Backend, start: usize, p: usize) -> Kind {
    match backend {
        Backend::Alloc(pop) => Kind::Alloc(pop),
        Backend::Linear { hpa } => Kind::Linear {
            hpa: hpa.as_usize() + (p - start) * PAGE_SIZE,
        },
        Backend::Reserved => Kind::Reserved,
    }
}
