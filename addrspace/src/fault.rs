//! What handling a nested page fault found: [`FaultOutcome`].

use crate::{AccessKind, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags};

/// The result of [`crate::AddrSpace::handle_page_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// The page was not mapped and now is (a lazy page got its frame): resume the
    /// guest to retry the access.
    Mapped {
        /// The page that was mapped.
        gpa: GuestPhysAddr,
        /// The frame behind it.
        hpa: HostPhysAddr,
        /// Its flags.
        flags: MappingFlags,
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
