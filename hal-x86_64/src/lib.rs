//! The x86_64 HAL: AMD SVM with nested paging (NPT).
//!
//! - [`vcpu::SvmVCpu`] implements [`vcpu_api::ArchVCpu`] with `Format =
//!   addrspace::Npt`: a VMCB per vCPU ([`vmcb`], layout checked against the AMD
//!   manual at compile time), every port, MSR, HLT, VMMCALL, CPUID and shutdown
//!   intercepted, nCR3 = the VM's NPT root, one ASID per VM, TLB_CONTROL flush
//!   before the next VMRUN after an invalidation.
//! - Exit decoding ([`exit`]), the MMIO instruction decoder ([`insn`]), the guest
//!   page walk that fetches the faulting instruction ([`guest_paging`]), the
//!   permission-map layout ([`permission`]), CPUID feature decoding ([`svm`]) and the
//!   multiboot memory map ([`multiboot`]) are pure code, unit-tested on the host. The
//!   board's frame allocator is `addrspace::BitmapFrames`.
//! - What touches hardware (VMRUN, MSRs, port I/O) is behind `cfg(target_arch =
//!   "x86_64")`, and only runs on bare metal.
//!
//! Intel VMX is not implemented: QEMU's TCG cannot run it, and an untested VMX path
//! is worse than none (EPT itself is covered by `addrspace`'s host tests).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod exit;
pub mod guest_paging;
pub mod insn;
pub mod multiboot;
pub mod permission;
#[cfg(target_arch = "x86_64")]
pub mod serial;
pub mod svm;
pub mod vcpu;
pub mod vmcb;

pub use exit::{IoioInfo, NpfErrorCode, SvmExit};
pub use svm::{SvmError, SvmFeatures};
pub use vcpu::{SvmSetupConfig, SvmVCpu};
pub use vmcb::Vmcb;
