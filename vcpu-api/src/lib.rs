//! The contract between the portable VM layer and each architecture's vCPU: the
//! [`VCpuState`] machine with checked transitions, the [`ArchVCpu`] trait, and the
//! [`ExitReason`]s a vCPU returns when the guest stops running.
//!
//! Design principles:
//! - The arch layer reports what the hardware said, decoded into plain data, and never
//!   decides policy (whether a faulting GPA is lazy RAM or MMIO is `vm-core`'s call).
//! - Decoding that needs work (an instruction fetch to find an MMIO access) happens
//!   only when the VM layer asks for it ([`ArchVCpu::decode_mmio`]).
//! - Nothing here panics on guest-controlled values; errors say what was wrong.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

mod arch;
mod error;
mod exit;
mod state;

pub use arch::{ArchVCpu, GuestMemory};
pub use error::{VCpuError, VCpuResult};
pub use exit::{AccessWidth, ExitReason, MmioAccess, MmioDecodeError, MmioOp, SysRegAddr};
pub use state::{StateError, VCpuState, VCpuStateCell};
