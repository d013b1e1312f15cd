//! [`Report`]: what a running board prints when someone asks (the diagnostics
//! hypercall of the test protocol, a console key) and when the fault-loop detector
//! stops a vCPU: the loop if there is one, the walk of an address and the fault
//! path's decision for an access there, then the guest-physical map.

use alloc::boxed::Box;
use core::fmt;

use addrspace::{AccessKind, GuestPhysAddr, Walk};
use vcpu_api::ArchVCpu;

use super::{FaultExplanation, GuestMap};
use crate::error::VmError;
use crate::vm::Vm;

/// A fault loop the detector stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultLoop {
    /// The vCPU that looped.
    pub vcpu: usize,
    /// Consecutive faults seen at the page with nothing changed in between.
    pub count: usize,
}

/// The address a [`Report`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Focus {
    /// Its per-level walk.
    Walk(Box<Walk>),
    /// What the fault path does with an access there, and why (with the walk).
    Fault(Box<FaultExplanation>),
}

/// The diagnostics a running board prints (see [`Vm::diagnostics`] and
/// [`Vm::fault_loop_report`]). `Display` writes it between two marker lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The fault loop that made the report, if one did.
    pub fault_loop: Option<FaultLoop>,
    /// The address looked at, if any.
    pub focus: Option<Focus>,
    /// The guest-physical map.
    pub map: GuestMap,
}

impl<V: ArchVCpu> Vm<V> {
    /// The diagnostics of this VM now: for `at = Some((gpa, None))` the walk of
    /// `gpa`, for `Some((gpa, Some(access)))` what the fault path would do with that
    /// access and why (a dry run), and the guest-physical map with the root
    /// registers for `vmid` (the VMID/ASID the HAL gave this VM, if the caller knows
    /// it). Only reads the VM: safe while vCPUs run.
    pub fn diagnostics(
        &self,
        vmid: Option<u16>,
        at: Option<(GuestPhysAddr, Option<AccessKind>)>,
    ) -> Report {
        let focus = at.map(|(gpa, access)| match access {
            Some(access) => Focus::Fault(Box::new(self.explain_fault(gpa, access))),
            None => Focus::Walk(Box::new(self.walk(gpa))),
        });
        Report {
            fault_loop: None,
            focus,
            map: self.guest_map(vmid),
        }
    }

    /// What a board does when `run_vcpu` fails: if `error` is the fault-loop
    /// detector's ([`VmError::FaultLoop`]), the VM is stopped (its vCPUs leave the
    /// guest and cannot run again) and the report of the loop is returned: the GPA
    /// and access, the fault path's decision and walk there, and the region map.
    /// Any other error: `None`, nothing done.
    pub fn fault_loop_report(&self, error: &VmError, vmid: Option<u16>) -> Option<Report> {
        let VmError::FaultLoop {
            vcpu,
            gpa,
            access,
            count,
            ..
        } = error
        else {
            return None;
        };
        let mut report = self.diagnostics(vmid, Some((*gpa, Some(*access))));
        report.fault_loop = Some(FaultLoop {
            vcpu: *vcpu,
            count: *count,
        });
        // Already stopped (another vCPU's error, the guest powered off) is fine.
        let _ = self.shutdown();
        Some(report)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "=== diagnostics of VM {} {:?} ===",
            self.map.vm_id, self.map.name
        )?;
        if let (Some(l), Some(Focus::Fault(e))) = (&self.fault_loop, &self.focus) {
            writeln!(
                f,
                "fault loop: vCPU {} faulted {} times in a row ({} at {}) with no TLB change \
                 in between; the VM is stopped",
                l.vcpu,
                l.count,
                e.access,
                crate::config::Hex(e.gpa.as_usize() as u64)
            )?;
        }
        match &self.focus {
            Some(Focus::Walk(w)) => writeln!(f, "{w}")?,
            Some(Focus::Fault(e)) => writeln!(f, "{e}")?,
            None => {}
        }
        writeln!(f, "{}", self.map)?;
        writeln!(f, "=== end of diagnostics ===")
    }
}
