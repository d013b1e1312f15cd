//! VM configuration, creation, memory regions, pass-through and emulated devices, the
//! vCPU run loop, and TLB coherency across vCPUs.
//!
//! Design principles:
//! - **Portable.** No architecture-conditional code and no inline assembly: everything
//!   architectural comes through [`vcpu_api::ArchVCpu`] (the vCPU) and [`VmHal`] (the
//!   platform), and the nested format is the vCPU's `ArchVCpu::Format`.
//! - **vm-core never touches a page-table entry**: the address space
//!   ([`addrspace::AddrSpace`]) does, and reports what to invalidate.
//! - **Coherent unmaps.** When [`Vm::unmap_region`] or [`Vm::protect_region`]
//!   returns, no vCPU of the VM can use the old translation; only then are the freed
//!   frames given back.
//! - **Errors say what went wrong**: configuration errors name the field and value,
//!   run errors carry the vCPU, the GPA and the translation walk.
//! - `no_std` + `alloc`; the `std` feature adds TOML loading and the code generator
//!   that build scripts use to embed a config in a `no_std` board.
//! - **Diagnostics built in** ([`diag`]): the guest-physical map, the permission and
//!   layout audit, and the fault path's decision explained as a dry run.
//!
//! See `README.md` in this crate for how a board drives a VM.

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod config;
mod device;
pub mod diag;
mod error;
mod exit;
pub mod fdt;
mod firmware;
mod frames;
mod grant;
mod hal;
mod identify;
pub mod image;
mod passthrough;
mod run;
mod state;
pub mod vgic;
mod vm;

pub use addrspace::{AccessKind, GuestPhysAddr, HostPhysAddr, MappingFlags, Populate};
// What `VmExit` carries and its answers take, so a board needs no other crate.
pub use config::{
    BootProtocol, ConfigError, DeviceSpace, DeviceTree, DevicesConfig, EmuDeviceConfig, Field,
    ImageLocation, InterruptMode, KernelConfig, MAX_CPU_NUM, MapType, MemoryRegionConfig,
    PassthroughAddressConfig, PassthroughDeviceConfig, PortRangeConfig, ValidConfig, VmConfig,
    VmConfigBuilder, VmType,
};
pub use device::{Bus, BusAddr, BusEntry, BusError, DeviceError, MmioBus, MmioDevice, PortBus};
pub use error::{VmError, VmResult};
pub use exit::{ExitCounts, Unserved, UnservedAccess, VmExit};
pub use fdt::{GuestTreeError, GuestTreeOptions, ReservedRange, guest_tree};
pub use firmware::{
    CONSOLE_CHUNK, GuestConsole, MIGRATE_NOT_REQUIRED, PSCI_VERSION, SBI_IMPL_ID, SBI_IMPL_VERSION,
    SBI_IPI_INTERRUPT, SBI_VERSION,
};
pub use frames::HalFrames;
pub use grant::{GrantKind, GrantedRange, HostGrant};
pub use hal::VmHal;
pub use identify::{cpuid_for_guest, id_register_for_guest};
pub use passthrough::{PassthroughRange, plan_passthrough};
pub use state::{VCpuState, VmState};
pub use vcpu_api::{
    FirmwareError, FirmwareReply, Hypercall, PortIo, PortOp, SysRegAccess, SysRegAddr, SysRegOp,
};
pub use vm::{DEFAULT_FAULT_LOOP_LIMIT, Vm, VmStats};
