//! The riscv64 HAL: HS-mode bring-up under SBI firmware, G-stage translation
//! (Sv39x4 and Sv48x4), the vCPU that runs a guest in VS-mode, exit decoding, the
//! guest's SBI, and TLB maintenance for guest-physical translations.
//!
//! Design principles:
//! - **Decoding is pure.** `scause`/`htval`/`htinst` ([`trap`]), load/store
//!   instructions including compressed ones ([`insn`]) and SBI calls ([`sbi`]) are
//!   decoded by functions of plain values, tested on any host with values worked out
//!   from the specifications.
//! - **The hart is behind one trait.** The vCPU's trap handling reaches the hart only
//!   through an internal operations trait (HLV/HLVX, VS CSRs, fences), so it is tested
//!   on the host against a model; on riscv64 the real operations are `asm!`.
//! - **The arch layer reports, the VM layer decides.** Guest-page faults become
//!   [`vcpu_api::ExitReason::NestedPageFault`]; whether that is lazy RAM, MMIO or an
//!   error is `vm-core`'s call. SBI calls that need nothing of the VM (base, timer,
//!   console, remote fences, SRST) are served here.
//! - **Guest-physical TLB maintenance is HFENCE.GVMA** by GPA (shifted right by 2) and
//!   VMID (`hfence_gvma_range`, `broadcast_hfence_gvma`), never SFENCE.VMA.
//!
//! On hosts other than riscv64 the crate builds without its `asm!`: the vCPU can be
//! created and configured, and `bind`/`run` return
//! [`vcpu_api::VCpuError::Unsupported`]; `init_hart`, `hfence_gvma_range`,
//! `broadcast_hfence_gvma` and the `firmware` calls exist on riscv64 only.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Off riscv64 the trap handling runs only in the unit tests (there is no hart).
#![cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]

pub mod csr;
mod hart;
#[cfg(target_arch = "riscv64")]
mod hw;
pub mod insn;
pub mod sbi;
pub mod trap;
mod vcpu;

pub use hart::{HartError, HartInfo, vmid_for};
#[cfg(target_arch = "riscv64")]
pub use hart::{broadcast_hfence_gvma, firmware, hfence_gvma_range, init_hart};
pub use vcpu::{
    DecodeStats, GStage, GuestConsole, PendingSbi, Riscv64CreateConfig, Riscv64SetupConfig,
    Riscv64VCpu, VsCsrs,
};
