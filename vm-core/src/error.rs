//! The errors of VM operations: [`VmError`], each variant carrying what a person needs
//! to find the cause (the vCPU, the GPA, the walk, the field).

use alloc::boxed::Box;
use core::fmt;

use addrspace::{AccessKind, GuestPhysAddr, HostPhysAddr, Walk};
use vcpu_api::{MmioDecodeError, VCpuError};

use crate::config::{ConfigError, Field};
use crate::device::BusError;
use crate::grant::GrantKind;
use crate::state::{VCpuState, VmState};

/// Why a VM operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// Mapping a configured memory region or device failed.
    MapRegion {
        /// The configuration entry.
        field: Field,
        /// What the address space said (an overlap names the existing area).
        error: addrspace::Error,
    },
    /// The configuration names host memory the platform did not grant (see
    /// [`crate::HostGrant`]): a pass-through range outside granted device memory, a
    /// reserved region outside granted RAM.
    NotGranted {
        /// The configuration entry.
        field: Field,
        /// Start of the range.
        hpa: HostPhysAddr,
        /// Its size.
        size: usize,
        /// What it would have to be.
        kind: GrantKind,
    },
    /// No contiguous host memory was left to place an identical region.
    NoMemory {
        /// The configuration entry.
        field: Field,
        /// Bytes asked for.
        size: usize,
    },
    /// A run-time address-space operation failed.
    AddrSpace {
        /// The operation (`"unmap_region"`, `"read guest memory"`, ...).
        op: &'static str,
        /// What the address space said.
        error: addrspace::Error,
    },
    /// A guest object access at an address not aligned for its type.
    Unaligned {
        /// The address.
        gpa: GuestPhysAddr,
        /// The alignment the type needs.
        align: usize,
    },
    /// The emulated-device bus refused a registration.
    Bus(BusError),
    /// The VM is not in a state that allows the operation.
    State {
        /// The operation.
        op: &'static str,
        /// The VM's state.
        state: VmState,
    },
    /// There is no vCPU with this index.
    NoSuchVCpu {
        /// The index asked for.
        vcpu: usize,
        /// How many the VM has.
        count: usize,
    },
    /// The vCPU is not in a state that allows the operation (running an off
    /// vCPU, starting one that is not off, unbinding one that is not bound).
    VCpuState {
        /// The vCPU.
        vcpu: usize,
        /// The operation (`"run"`, `"start"`, `"unbind"`, `"turn off"`, ...).
        op: &'static str,
        /// The vCPU's state.
        state: VCpuState,
    },
    /// The architecture vCPU refused an operation.
    VCpu {
        /// The vCPU.
        vcpu: usize,
        /// Its error.
        error: VCpuError,
    },
    /// The same guest-physical page faulted `count` times in a row with nothing
    /// changed in between: the translation vm-core installs is not the one the vCPU
    /// walks (wrong root, missing invalidation, ...). The walk shows the tables.
    FaultLoop {
        /// The vCPU.
        vcpu: usize,
        /// The faulting address.
        gpa: GuestPhysAddr,
        /// The access.
        access: AccessKind,
        /// Consecutive faults seen.
        count: usize,
        /// The translation of `gpa` in the VM's tables.
        walk: Box<Walk>,
    },
    /// A guest access to emulated MMIO could not be decoded.
    MmioDecode {
        /// The vCPU.
        vcpu: usize,
        /// The address accessed.
        gpa: GuestPhysAddr,
        /// The guest PC.
        pc: u64,
        /// The decoder's reason.
        error: MmioDecodeError,
    },
    /// The hardware refused to enter the guest.
    EntryFailed {
        /// The vCPU.
        vcpu: usize,
        /// The hardware's reason code.
        reason: u64,
    },
    /// `skip_access`/`complete_access`/`set_return_value`/`reply_call` without an
    /// exit of that kind to complete.
    NothingToComplete {
        /// The vCPU.
        vcpu: usize,
    },
    /// `run_vcpu` while the vCPU waits for the answer to a hypercall or a
    /// system-register access (`set_return_value`, `reply_call`).
    Unanswered {
        /// The vCPU.
        vcpu: usize,
    },
    /// Two vCPUs have the same guest CPU id (MPIDR affinity, hart id, APIC id), so
    /// the guest could not tell them apart.
    DuplicateCpuId {
        /// The later vCPU.
        vcpu: usize,
        /// The earlier one with the same id.
        other: usize,
        /// The id.
        cpu_id: u64,
    },
    /// The VM could not get its TLB tag (VMID, ASID): every one is held by a live
    /// VM, or a live VM has the same id.
    Tag {
        /// The VM id of the configuration.
        vm_id: usize,
        /// What the architecture said ([`VCpuError::NoVmid`],
        /// [`VCpuError::VmIdInUse`]).
        error: VCpuError,
    },
}

/// `Result` with [`VmError`].
pub type VmResult<T = ()> = Result<T, VmError>;

impl From<ConfigError> for VmError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<BusError> for VmError {
    fn from(e: BusError) -> Self {
        Self::Bus(e)
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "config: {e}"),
            Self::MapRegion { field, error } => write!(f, "{field}: cannot map: {error}"),
            Self::NotGranted {
                field,
                hpa,
                size,
                kind,
            } => write!(
                f,
                "{field}: [{hpa:#x}, +{size:#x}) is not {kind} the platform granted"
            ),
            Self::NoMemory { field, size } => write!(
                f,
                "{field}: no {size:#x} bytes of contiguous memory for the identical-mapping fallback"
            ),
            Self::AddrSpace { op, error } => write!(f, "{op}: {error}"),
            Self::Unaligned { gpa, align } => {
                write!(f, "{gpa:#x} is not aligned to {align} bytes")
            }
            Self::Bus(e) => write!(f, "{e}"),
            Self::State { op, state } => write!(f, "cannot {op}: the VM is {state:?}"),
            Self::NoSuchVCpu { vcpu, count } => {
                write!(f, "no vCPU {vcpu} (the VM has {count})")
            }
            Self::VCpuState { vcpu, op, state } => {
                write!(f, "cannot {op} vCPU {vcpu}: it is {state}")
            }
            Self::VCpu { vcpu, error } => write!(f, "vCPU {vcpu}: {error}"),
            Self::FaultLoop {
                vcpu,
                gpa,
                access,
                count,
                walk,
            } => write!(
                f,
                "vCPU {vcpu}: {access} at {gpa:#x} faulted {count} times without progress\n{walk}"
            ),
            Self::MmioDecode {
                vcpu,
                gpa,
                pc,
                error,
            } => write!(f, "vCPU {vcpu}: MMIO at {gpa:#x} (pc {pc:#x}): {error}"),
            Self::EntryFailed { vcpu, reason } => {
                write!(f, "vCPU {vcpu}: guest entry failed (reason {reason:#x})")
            }
            Self::NothingToComplete { vcpu } => {
                write!(f, "vCPU {vcpu}: no exit of that kind to complete")
            }
            Self::Unanswered { vcpu } => write!(
                f,
                "vCPU {vcpu}: answer its hypercall or system-register access before running it"
            ),
            Self::DuplicateCpuId {
                vcpu,
                other,
                cpu_id,
            } => write!(
                f,
                "vCPUs {other} and {vcpu} have the same guest CPU id {cpu_id:#x}"
            ),
            Self::Tag { vm_id, error } => write!(f, "VM {vm_id}: {error}"),
        }
    }
}

impl core::error::Error for VmError {}
