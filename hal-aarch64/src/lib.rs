//! The aarch64 HAL: a hypervisor at EL2 (without VHE) running EL1 guests under
//! stage-2 translation.
//!
//! - [`esr`]: ESR_EL2/FAR_EL2/HPFAR_EL2 decoded into a [`Trap`] by pure functions
//!   (data and instruction aborts with their syndrome, HVC, SMC, WFI/WFE, MSR/MRS).
//! - [`psci`]: the guest's PSCI calls, through HVC or SMC as configured.
//! - [`vcpu`]: [`Aarch64VCpu`], the [`vcpu_api::ArchVCpu`] for
//!   [`addrspace::ArmStage2Ipa40`] and [`addrspace::ArmStage2Ipa48`] tables.
//! - [`tlb`]: stage-2 invalidation by IPA and VMID with the inner-shareable
//!   broadcast TLBI forms.
//! - [`regs`], [`context`]: register values and the saved vCPU state.
//!
//! Design principles:
//! - Everything decided from guest-controlled values is a pure function tested on
//!   the host; the hardware part (vectors, entry/exit, system registers, TLBI) is
//!   built only for bare-metal aarch64 (`target_os = "none"`), and off it every
//!   hardware step returns [`vcpu_api::VCpuError::Unsupported`].
//! - A trap the vCPU cannot describe (an external abort, an unknown exception
//!   class, an MMIO access without syndrome) is an error naming the syndrome or
//!   the PC, never a silent retry.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod context;
pub mod esr;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod hw;
pub mod psci;
pub mod regs;
pub mod tlb;
pub mod vcpu;

pub use esr::{DataAbort, Esr, ExceptionClass, FaultKind, FaultStatus, Trap, decode_trap};
pub use psci::PsciConduit;
pub use vcpu::{Aarch64CreateConfig, Aarch64SetupConfig, Aarch64VCpu, Stage2Format};
