//! What [`Vm::run_vcpu`](crate::Vm::run_vcpu) hands back to the caller: [`VmExit`].

use alloc::boxed::Box;

use addrspace::{AccessKind, GpaRange, GuestPhysAddr, MappingFlags, Walk};
use vcpu_api::{AccessWidth, SysRegAddr};

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

/// Why a CPU-up request of the guest was refused (the caller sets the
/// architecture's error code as the guest's return value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuUpRefusal {
    /// The target names no vCPU of this VM (PSCI INVALID_PARAMETERS, SBI
    /// ERR_INVALID_PARAM).
    NoSuchVCpu,
    /// The target is already running (PSCI ALREADY_ON, SBI ERR_ALREADY_AVAILABLE).
    AlreadyOn,
    /// The architecture vCPU refused the entry point or argument.
    Refused,
}

/// An exit the caller of [`Vm::run_vcpu`](crate::Vm::run_vcpu) must act on. Everything
/// else (nested page faults vm-core resolves, MMIO to attached devices, kicks, CPU
/// bring-up bookkeeping) is handled inside.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmExit {
    /// A hypercall vm-core does not own: answer it with
    /// [`Vm::set_return_value`](crate::Vm::set_return_value) before the next run.
    Hypercall {
        /// Call number.
        nr: u64,
        /// Arguments.
        args: [u64; 6],
    },
    /// A guest access vm-core could not serve (see [`UnservedAccess`]).
    UnservedAccess(UnservedAccess),
    /// x86 `IN`: write the value with `Vm::with_vcpu`/`set_gpr` (RAX).
    IoRead {
        /// Port.
        port: u16,
        /// Width.
        width: AccessWidth,
    },
    /// x86 `OUT`.
    IoWrite {
        /// Port.
        port: u16,
        /// Width.
        width: AccessWidth,
        /// Value.
        data: u64,
    },
    /// A trapped system-register read into general register `reg`.
    SysRegRead {
        /// Register.
        addr: SysRegAddr,
        /// Destination register.
        reg: usize,
    },
    /// A trapped system-register write.
    SysRegWrite {
        /// Register.
        addr: SysRegAddr,
        /// Value.
        value: u64,
    },
    /// The guest waits for an interrupt.
    Halt,
    /// The guest started vCPU `target`: vm-core has set its entry and argument and
    /// marked it started, and returned 0 to the caller; schedule `target` on a
    /// physical CPU (call `run_vcpu(target)` there).
    CpuUp {
        /// The vCPU index.
        target: usize,
        /// Its entry point.
        entry: GuestPhysAddr,
        /// Its argument.
        arg: u64,
    },
    /// The guest asked to start a vCPU and vm-core refused: set the architecture's
    /// error code with [`Vm::set_return_value`](crate::Vm::set_return_value).
    CpuUpRefused {
        /// The target as the guest named it.
        target_cpu: u64,
        /// Why.
        reason: CpuUpRefusal,
    },
    /// The guest stopped this vCPU; it is no longer started (a later CPU up may
    /// start it again).
    CpuDown {
        /// Architecture-specific power state.
        state: u64,
    },
    /// The guest powered the VM off; the VM is now stopped and its other vCPUs
    /// return [`VmExit::Stopped`].
    Shutdown,
    /// The guest asked for a reset; the VM is now stopped.
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
