//! The log lines of mapping changes: every mapping made or removed (or whose
//! flags change) is logged at `debug` with its GPA range, size, HPA, flags and the
//! leaf sizes that translate it, as the troubleshooting guide tells people to look
//! for. Nested faults are logged at `trace` by the run loop.
//!
//! The descriptions walk the table, so they are only built when `debug` is on.

use alloc::string::String;
use core::fmt::{self, Write};

use addrspace::{
    AddrSpace, Backend, FrameAllocator, GpaRange, GuestPhysAddr, NestedFormat, Populate,
};

use super::{LeafCounts, Size};
use crate::config::Hex;

/// Whether mapping changes are logged (the `debug` level is on for vm-core).
pub(crate) fn enabled() -> bool {
    log::log_enabled!(log::Level::Debug)
}

/// What `[gpa, gpa + size)` holds now, area by area: backing, HPA, flags and the
/// leaves that translate it. Empty for an invalid range.
pub(crate) fn describe<F: NestedFormat, A: FrameAllocator>(
    space: &AddrSpace<F, A>,
    gpa: GuestPhysAddr,
    size: usize,
) -> String {
    let mut out = String::new();
    let Ok(range) = GpaRange::new(gpa, size) else {
        return out;
    };
    for area in space.areas() {
        let Some(part) = area.range.intersect(&range) else {
            continue;
        };
        let mut leaves = LeafCounts::default();
        space
            .page_table()
            .for_each_leaf_in(&part, |_, t| leaves.add(t.size));
        if !out.is_empty() {
            out.push_str("; ");
        }
        let _ = write!(out, "[{}, {}) ", hex(part.start()), hex(part.end()));
        let _ = match area.backend {
            Backend::Linear { hpa } => write!(
                out,
                "-> HPA {} {}",
                Hex((hpa.as_usize() + (part.start() - area.range.start())) as u64),
                area.flags
            ),
            Backend::Alloc(Populate::Eager) => write!(out, "allocated eagerly {}", area.flags),
            Backend::Alloc(Populate::Lazy) => write!(out, "allocated lazily {}", area.flags),
            Backend::Alloc(Populate::LazyHuge) => {
                write!(out, "allocated lazily in 2 MiB blocks {}", area.flags)
            }
            Backend::Reserved => write!(out, "reserved (trap)"),
        };
        let _ = write!(out, ", leaves {leaves}");
    }
    out
}

fn hex(gpa: GuestPhysAddr) -> Hex {
    Hex(gpa.as_usize() as u64)
}

/// `[gpa, gpa + size) size` for the log.
pub(crate) struct Span(pub(crate) GuestPhysAddr, pub(crate) usize);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}, {}) {}",
            hex(self.0),
            Hex((self.0.as_usize() as u64).saturating_add(self.1 as u64)),
            Size(self.1 as u64)
        )
    }
}

/// Logs the mapping `what` just made at `[gpa, gpa + size)`.
pub(crate) fn mapped<F: NestedFormat, A: FrameAllocator>(
    vm: usize,
    what: &dyn fmt::Display,
    space: &AddrSpace<F, A>,
    gpa: GuestPhysAddr,
    size: usize,
) {
    if enabled() {
        log::debug!(
            "VM {vm}: mapped {what} {}: {}",
            Span(gpa, size),
            describe(space, gpa, size)
        );
    }
}
