//! Errors of vCPU operations.

use core::fmt;

use crate::MmioDecodeError;

/// Why a vCPU operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VCpuError {
    /// The register index does not exist on this architecture.
    InvalidRegister {
        /// The index asked for.
        index: usize,
    },
    /// A value the hardware would not accept (named, with the value).
    InvalidValue {
        /// What it is (`"entry point"`, `"nested root"`, ...).
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// The hardware lacks a feature this vCPU needs.
    Unsupported {
        /// Which feature.
        feature: &'static str,
    },
    /// No memory for what the vCPU needs (its VMCB, its permission maps, ...).
    OutOfMemory {
        /// What it needed.
        what: &'static str,
        /// How many 4 KiB frames.
        frames: usize,
    },
    /// No VMID or ASID left for the VM (the hardware tags at most `available`).
    NoVmid {
        /// The VM.
        vm_id: usize,
        /// How many the hardware has.
        available: u32,
    },
    /// The vCPU was run before its nested root or entry was set.
    NotConfigured {
        /// What is missing.
        missing: &'static str,
    },
    /// An MMIO access could not be decoded.
    Mmio(MmioDecodeError),
    /// The operation is not possible right now (e.g. inject while running).
    Busy,
    /// A live VM has this id already (VMs are told apart by their ids).
    VmIdInUse {
        /// The id.
        vm_id: usize,
    },
}

/// `Result` with [`VCpuError`].
pub type VCpuResult<T = ()> = Result<T, VCpuError>;

impl From<MmioDecodeError> for VCpuError {
    fn from(e: MmioDecodeError) -> Self {
        Self::Mmio(e)
    }
}

impl fmt::Display for VCpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRegister { index } => write!(f, "no general register {index}"),
            Self::InvalidValue { what, value } => write!(f, "invalid {what}: {value:#x}"),
            Self::Unsupported { feature } => write!(f, "hardware lacks {feature}"),
            Self::OutOfMemory { what, frames } => {
                write!(f, "no memory for {what} ({frames} frames)")
            }
            Self::NoVmid { vm_id, available } => write!(
                f,
                "no VMID/ASID left for VM {vm_id} (the hardware has {available})"
            ),
            Self::NotConfigured { missing } => write!(f, "vCPU not configured: {missing}"),
            Self::Mmio(e) => write!(f, "{e}"),
            Self::Busy => f.write_str("vCPU busy"),
            Self::VmIdInUse { vm_id } => write!(f, "a live VM has the id {vm_id} already"),
        }
    }
}

impl core::error::Error for VCpuError {}
