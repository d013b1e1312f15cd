//! The riscv64 HAL: HS-mode bring-up under SBI firmware, G-stage translation
//! (Sv39x4 and Sv48x4), the vCPU that runs a guest in VS-mode, exit decoding, the
//! guest's SBI, and TLB maintenance for guest-physical translations.
//!
//! One file per concept, with the same names in every `hal-<arch>`:
//! - `vcpu`: [`Riscv64VCpu`], the [`vcpu_api::ArchVCpu`], and the dispatch of each
//!   trap.
//! - [`context`]: the saved guest registers (and their layout for the world switch)
//!   and the VS-level CSRs.
//! - `entry`: the world switch into VS-mode and back (riscv64 only).
//! - [`exit`]: `scause`/`stval`/`htval`/`htinst` decoded into a [`exit::Trap`].
//! - [`mmio`]: load/store instructions (compressed ones too) and `htinst` decoded
//!   into the MMIO access.
//! - [`firmware`]: the guest's SBI calls (ECALL from VS-mode) decoded.
//! - [`interrupt`]: virtual interrupts through `hvip`.
//! - [`tlb`]: HFENCE.GVMA on this hart and on every hart; VMIDs.
//! - [`cpu`]: per-hart HS-mode setup, what the hart supports, and the hypervisor's
//!   own SBI calls to the firmware below it.
//! - [`regs`]: CSR numbers and fields, and the CSR instructions.
//! - `hart`: the hart as the trap handling sees it (HLVX, VS CSRs, fences), behind
//!   one trait so the trap handling is tested on the host against a model.
//! - [`zero`]: zeroing guest memory (`zero_memory`, the frame allocator's routine;
//!   ordinary stores until the board detects Zicboz); the same file in every
//!   `hal-<arch>`.
//!
//! Design principles:
//! - **Decoding is pure.** Traps ([`exit`]), load/store instructions ([`mmio`]) and
//!   SBI calls ([`firmware`]) are decoded by functions of plain values, tested on any
//!   host with values worked out from the specifications.
//! - **The arch layer reports, the VM layer decides.** Guest-page faults become
//!   [`vcpu_api::ExitReason::NestedPageFault`]; whether that is lazy RAM, MMIO or an
//!   error is `vm-core`'s call.
//! - **Guest-physical TLB maintenance is HFENCE.GVMA** by GPA (shifted right by 2) and
//!   VMID ([`tlb`]), never SFENCE.VMA.
//!
//! On hosts other than riscv64 the crate builds without its `asm!`: the vCPU can be
//! created and configured, and `bind`/`run` return
//! [`vcpu_api::VCpuError::Unsupported`]; `init_hart`, the TLB fences and the
//! firmware calls exist on riscv64 only.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
// Off riscv64 the trap handling runs only in the unit tests (there is no hart).
#![cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]

pub mod context;
pub mod cpu;
#[cfg(target_arch = "riscv64")]
mod entry;
pub mod exit;
pub mod firmware;
mod hart;
pub mod interrupt;
pub mod mmio;
pub mod regs;
pub mod tlb;
mod vcpu;
pub mod zero;

pub use context::VsCsrs;
#[cfg(target_arch = "riscv64")]
pub use cpu::init_hart;
pub use cpu::{HartError, HartInfo};
pub use tlb::vmid_for;
#[cfg(target_arch = "riscv64")]
pub use tlb::{broadcast_hfence_gvma, hfence_gvma_range};
pub use vcpu::{DecodeStats, GStage, Riscv64CreateConfig, Riscv64SetupConfig, Riscv64VCpu};
pub use zero::zero_memory;
