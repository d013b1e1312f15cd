//! Diagnostics: the answers to "what does this VM's guest-physical space look like,
//! is it sane, and what happens on an access there", as data with a `Display` a
//! person reads. The troubleshooting guide of the systems we replace says "read the
//! logs" and "try reads at various GPAs"; these give the answer directly.
//!
//! - [`GuestMap`] ([`Vm::guest_map`]): every region with its kind, GPA range, HPA,
//!   flags, the leaf sizes the table really uses and the frames it holds; the holes;
//!   the page-table frames; the nested root and the registers a HAL loads for it.
//! - [`Finding`]s ([`Vm::audit`], [`audit`]): the permission and layout audit, each
//!   finding naming its region and the [`Rule`] it breaks.
//! - [`FaultExplanation`] ([`Vm::explain_fault`]): what the fault path would do with
//!   an access and why, taken by the fault path's own decision functions
//!   (`MmioBus::find`, `AddrSpace::explain_fault`, [`unserved_of`]), so it cannot
//!   drift from what the run loop does.
//!
//! - [`Report`] ([`Vm::diagnostics`], [`Vm::fault_loop_report`]): what a running
//!   board prints on request and when the fault-loop detector fires.
//!
//! Everything here only reads the VM (shared locks), so it is safe to call while
//! vCPUs run; the answer is a snapshot. (`Vm::fault_loop_report` also stops the VM,
//! as the detector's error asks.)
//!
//! [`Vm::guest_map`]: crate::Vm::guest_map
//! [`Vm::audit`]: crate::Vm::audit
//! [`Vm::explain_fault`]: crate::Vm::explain_fault
//! [`Vm::diagnostics`]: crate::Vm::diagnostics
//! [`Vm::fault_loop_report`]: crate::Vm::fault_loop_report

mod audit;
pub(crate) mod events;
mod explain;
mod map;
mod report;
mod size;

pub use audit::{Finding, Image, ImageKind, Rule, Severity, audit};
pub(crate) use explain::mmio_unserved;
pub use explain::{FaultExplanation, FaultRoute, unserved_of};
pub use map::{GuestMap, LeafCounts, MapRegion, RegionKind, Source, TableFrame};
pub use report::{FaultLoop, Focus, Report};
pub use size::Size;
