//! What handling a nested page fault finds: the decision ([`FaultPlan`], also the
//! dry run [`crate::AddrSpace::explain_fault`]) and the result ([`FaultOutcome`]).

use crate::{AccessKind, Area, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags, PageSize};

/// The result of [`crate::AddrSpace::handle_page_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The page was not mapped and now is (a lazy page got its frame, or a
    /// [`crate::Populate::LazyHuge`] area its 2 MiB block): resume the guest to retry
    /// the access.
    Mapped {
        /// The start of the page (or block) that was mapped.
        gpa: GuestPhysAddr,
        /// The frame (or first of the block's frames) behind it.
        hpa: HostPhysAddr,
        /// Its flags.
        flags: MappingFlags,
        /// What was mapped: a 4 KiB page or a 2 MiB block.
        size: PageSize,
    },
    /// The page is already mapped with the needed permission: another vCPU mapped it
    /// first, or the faulting vCPU used a stale TLB entry. Invalidate the page on
    /// that vCPU and resume.
    Spurious,
    /// The area does not allow this access: report it to whoever owns the guest.
    PermissionViolation {
        /// The area.
        area: GpaRange,
        /// Its flags.
        flags: MappingFlags,
        /// The access that was refused.
        access: AccessKind,
    },
    /// The address is in a reserved area (for example emulated MMIO).
    Reserved {
        /// The area.
        area: GpaRange,
    },
    /// No area covers the address: the guest touched memory it does not have.
    NoArea,
}

/// What [`crate::AddrSpace::handle_page_fault`] decides for an access, before it
/// acts. The fault path and its dry run [`crate::AddrSpace::explain_fault`] take
/// this decision with the same code, so an explanation cannot drift from what the
/// fault path does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPlan {
    /// The page is not translated and its area allows the access: the fault path
    /// maps the page (a fresh zeroed frame for allocated areas, the area's own
    /// host page for linear ones; a [`crate::Populate::LazyHuge`] area maps the
    /// whole 2 MiB block around it when the block fits) and returns
    /// [`FaultOutcome::Mapped`].
    Map {
        /// The 4 KiB page that would be mapped.
        page: GuestPhysAddr,
        /// The area it belongs to.
        area: Area,
    },
    /// The fault path changes nothing and returns this outcome (never
    /// [`FaultOutcome::Mapped`]).
    Outcome(FaultOutcome),
}
