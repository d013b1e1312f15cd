//! The aarch64 HAL: a hypervisor at EL2 (without VHE) running EL1 guests under
//! stage-2 translation.
//!
//! One file per concept, with the same names in every `hal-<arch>`:
//! - [`vcpu`]: [`Aarch64VCpu`], the [`vcpu_api::ArchVCpu`] for
//!   [`addrspace::ArmStage2Ipa40`] and [`addrspace::ArmStage2Ipa48`] tables, and the
//!   dispatch of each trap.
//! - [`context`]: the saved guest state (trap frame, EL1 system registers) and its
//!   switch when a vCPU is bound to a physical CPU.
//! - `entry`: the world switch (EL2 vectors, guest entry and exit).
//! - [`exit`]: ESR_EL2/FAR_EL2/HPFAR_EL2 decoded into a [`Trap`] by pure functions
//!   (data and instruction aborts with their syndrome, HVC, SMC, WFI/WFE, MSR/MRS).
//! - [`mmio`]: the MMIO access of a data abort, from its syndrome.
//! - [`firmware`]: the guest's PSCI calls (through HVC or SMC as configured) and the
//!   SMCCC return codes.
//! - [`interrupt`]: virtual interrupt delivery through the GICv3 virtual CPU
//!   interface (list registers), filled by a [`VirtualInterrupts`] around each run.
//! - [`tlb`]: stage-2 invalidation by IPA and VMID with the inner-shareable
//!   broadcast TLBI forms; VMIDs.
//! - [`cpu`]: per-CPU EL2 bring-up, PARange, identity and time, the hypervisor's own
//!   PSCI calls, cache maintenance for guest code.
//! - [`regs`]: EL2 register values and the system-register accessors.
//! - [`zero`]: zeroing guest memory with `DC ZVA` (`zero_memory`, the frame
//!   allocator's routine on aarch64); the same file in every `hal-<arch>`.
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

extern crate alloc;

pub mod context;
pub mod cpu;
mod entry;
pub mod exit;
pub mod firmware;
pub mod interrupt;
pub mod mmio;
pub mod regs;
pub mod tlb;
pub mod vcpu;
pub mod zero;

pub use exit::{DataAbort, Esr, ExceptionClass, FaultKind, FaultStatus, Trap, decode_trap};
pub use firmware::PsciConduit;
pub use interrupt::{CpuInterface, VirtualInterrupts};
pub use vcpu::{Aarch64CreateConfig, Aarch64SetupConfig, Aarch64VCpu, Stage2Format};
pub use zero::zero_memory;
