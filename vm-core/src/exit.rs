//! What [`Vm::run_vcpu`](crate::Vm::run_vcpu) hands back to the caller: [`VmExit`].

use alloc::boxed::Box;

use addrspace::{AccessKind, GpaRange, GuestPhysAddr, MappingFlags, Walk};
use vcpu_api::{Hypercall, PortIo, SysRegAccess};

use crate::device::DeviceError;

/// Why a guest access could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unserved {
    /// No region covers the address.
    NoArea,
    /// The region does not allow the access (a write to a read-only region).
    Permission {
        /// The region.
        area: GpaRange,
        /// Its flags.
        flags: MappingFlags,
    },
    /// The address is claimed for an emulated device (or reserved) but no device
    /// model is attached there.
    NoDevice {
        /// The claimed area.
        area: GpaRange,
    },
    /// The device model refused the access.
    Device(DeviceError),
}

/// A guest access vm-core could not serve. The vCPU is stopped at the faulting
/// instruction: resume with [`Vm::skip_access`](crate::Vm::skip_access) (the access
/// is dropped, a load leaves its register unchanged) or
/// [`Vm::complete_access`](crate::Vm::complete_access) (a load gets a value), or
/// stop the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnservedAccess {
    /// The guest-physical address accessed.
    pub gpa: GuestPhysAddr,
    /// The access.
    pub access: AccessKind,
    /// Why it was not served.
    pub why: Unserved,
    /// The translation of `gpa` in the VM's tables, for the log.
    pub walk: Box<Walk>,
}

/// An exit the caller of [`Vm::run_vcpu`](crate::Vm::run_vcpu) must act on. Everything
/// else (nested page faults vm-core resolves, MMIO to attached devices, kicks, the
/// guest's firmware calls: CPU on and off, status, versions and probes, console, CPUID)
/// is handled inside.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmExit {
    /// A hypercall of the board's own: answer it with
    /// [`Vm::set_return_value`](crate::Vm::set_return_value) (or refuse it with
    /// [`Vm::reply_call`](crate::Vm::reply_call)) before the next run.
    Hypercall(Hypercall),
    /// A guest access vm-core could not serve (see [`UnservedAccess`]).
    UnservedAccess(UnservedAccess),
    /// x86 port I/O (the guest is past the instruction; for `IN` write the
    /// accumulator with `Vm::with_vcpu`/`set_gpr(0, ..)`).
    Io(PortIo),
    /// A trapped system-register access: complete it with
    /// [`Vm::set_return_value`](crate::Vm::set_return_value) (the value a read
    /// returns; ignored for a write) before the next run.
    SysReg(SysRegAccess),
    /// The guest waits for an interrupt.
    Halt,
    /// The guest started vCPU `target` (PSCI CPU_ON, SBI HSM `hart_start`): vm-core
    /// mapped the guest's CPU id to it, set its entry and argument, marked it
    /// started and answered the caller; schedule `target` on a physical CPU (call
    /// `run_vcpu(target)` there).
    CpuUp {
        /// The vCPU index.
        target: usize,
        /// Its entry point.
        entry: GuestPhysAddr,
        /// Its argument.
        arg: u64,
    },
    /// The guest stopped this vCPU (PSCI CPU_OFF, SBI HSM `hart_stop`); it is no
    /// longer started (a later CPU on may start it again).
    CpuDown,
    /// The guest powered the VM off; the VM is now stopped and its other vCPUs
    /// return [`VmExit::Stopped`].
    Shutdown,
    /// The guest asked for a reset (or the vCPU reset itself: an x86 triple fault);
    /// the VM is now stopped.
    Reset,
    /// A physical interrupt arrived: the host handles it, then runs the vCPU again.
    ExternalInterrupt {
        /// Vector or interrupt number.
        vector: u64,
    },
    /// The VM was paused: run again after [`Vm::resume`](crate::Vm::resume).
    Paused,
    /// The VM was stopped (by another vCPU or the host).
    Stopped,
}
