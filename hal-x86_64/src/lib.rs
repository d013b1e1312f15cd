//! The x86_64 HAL: AMD SVM with nested paging (NPT).
//!
//! One file per concept, with the same names in every `hal-<arch>`:
//! - [`vcpu`]: [`SvmVCpu`], the [`vcpu_api::ArchVCpu`] with `Format =
//!   addrspace::Npt`: a VMCB per vCPU, every port, MSR, HLT, VMMCALL, CPUID and
//!   shutdown intercepted, nCR3 = the VM's NPT root; the dispatch of each exit.
//! - [`context`]: the guest's general registers and the long-mode start state.
//! - `entry`: the world switch (VMRUN).
//! - [`exit`]: #VMEXIT decoding into an [`SvmExit`].
//! - [`mmio`]: the MMIO instruction decoder.
//! - [`firmware`]: VMMCALL and CPUID.
//! - [`interrupt`]: event injection.
//! - [`tlb`]: ASIDs and TLB_CONTROL.
//! - [`cpu`]: enabling SVM on a physical CPU and its features; MSR and CPUID access.
//! - [`regs`]: control register, EFER and MSR layouts.
//! - Arch-only: [`vmcb`] (the VMCB, layout checked against the AMD manual at
//!   compile time, and a vCPU's frames), [`mode`] (the guest's operating mode and
//!   its code size), [`guest_paging`] (the guest page walk that finds the faulting
//!   instruction), [`permission`] (the permission-map layout),
//!   [`multiboot`] (the boot memory map) and `serial` (the board's port I/O).
//! - [`zero`]: zeroing guest memory with non-temporal stores (`zero_memory`, the
//!   frame allocators' routine on x86_64); the same file in every `hal-<arch>`.
//!
//! Exit decoding, the MMIO decoder, the guest page walk, the permission maps, CPUID
//! feature decoding and the multiboot memory map are pure code, unit-tested on the
//! host. What touches hardware (VMRUN, MSRs, port I/O) is behind `cfg(target_arch =
//! "x86_64")`, and only runs on bare metal.
//!
//! Intel VMX is not implemented: QEMU's TCG cannot run it, and an untested VMX path
//! is worse than none (EPT itself is covered by `addrspace`'s host tests).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod context;
pub mod cpu;
#[cfg(target_arch = "x86_64")]
mod entry;
pub mod exit;
pub mod firmware;
pub mod guest_paging;
pub mod interrupt;
pub mod mmio;
pub mod mode;
pub mod multiboot;
pub mod permission;
pub mod regs;
#[cfg(target_arch = "x86_64")]
pub mod serial;
pub mod tlb;
pub mod vcpu;
pub mod vmcb;
pub mod zero;

pub use cpu::{SvmError, SvmFeatures};
pub use exit::{IoioInfo, NpfErrorCode, SvmExit};
pub use vcpu::{SvmSetupConfig, SvmVCpu};
pub use vmcb::Vmcb;
pub use zero::{LineZeroing, zero_memory};
