//! The contract between the portable VM layer and each architecture's vCPU: the
//! [`ArchVCpu`] trait, the [`ExitReason`]s a vCPU returns when the guest stops
//! running, the MMIO access of a fault ([`MmioAccess`]) and the guest's firmware
//! calls ([`GuestCall`]). The vCPU's lifecycle is the VM layer's
//! (`vm_core::VCpuState`): the arch vCPU only binds, runs and unbinds when told.
//!
//! Design principles:
//! - The arch layer reports what the hardware said, decoded into plain data, and never
//!   decides policy: whether a faulting GPA is lazy RAM or MMIO, which firmware calls
//!   are supported and what they answer, which vCPU a CPU-on starts, are `vm-core`'s
//!   calls.
//! - Exits carry their data: a fault carries what the hardware said about the
//!   instruction ([`FaultInsn`]), a call carries the decoded request and how it came
//!   ([`GuestCall`]); completing an exit takes that value back. No arch layer keeps
//!   "last exit" state.
//! - Decoding that needs work (an instruction fetch through guest memory) happens only
//!   when the VM layer asks for it ([`ArchVCpu::decode_mmio`]).
//! - Nothing here panics on guest-controlled values; errors say what was wrong.

#![no_std]
#![forbid(unsafe_code)]

mod arch;
mod error;
mod exit;
mod firmware;
mod mmio;
mod tag;

pub use arch::{ArchVCpu, GuestMemory};
// The width conversions are addrspace's (the lowest crate), re-exported here for
// the arch layers.
pub use addrspace::{gpa_of, low_u8, low_u16, low_u32, usize_of};
pub use error::{VCpuError, VCpuResult};
pub use exit::{
    AccessWidth, ExitReason, NestedFault, PortIo, PortOp, SysRegAccess, SysRegAddr, SysRegOp,
};
pub use firmware::{
    Conduit, CpuMask, CpuState, CpuidRegs, FirmwareCall, FirmwareError, FirmwareReply, GuestCall,
    Hypercall, RemoteFence, Service,
};
pub use mmio::{
    FaultInsn, FetchError, InsnBytes, MAX_INSN_BYTES, MmioAccess, MmioDecodeError, MmioInsn, MmioOp,
};
pub use tag::VmTags;
