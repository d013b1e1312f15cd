//! What every board shares: the protocol between the self-checking test guest and the
//! hypervisor, the guest's checks (one source for all architectures), and the
//! hypervisor-side test monitor that prints each result and the closing
//! `N passed, M failed` line.
//!
//! With the default `host` feature it also has the hypervisor side: the emulated test
//! device and the config-vs-layout check (which need `vm-core`), and the boards'
//! console `log` logger.
//!
//! The boards themselves are sub-crates (`platforms/qemu-virt-aarch64`, ...), and the
//! test guest is `platforms/test-guest`; this crate is portable `no_std` code without
//! `cfg(target_arch)`, tested on the host.
//!
//! How a check runs: the guest performs it and reports the result with the
//! [`protocol::Call::Report`] hypercall; checks that need the hypervisor to see
//! something (a refused write, an unmapped page, an access outside the VM) first arm
//! the monitor with [`protocol::Call::ExpectFault`], do the access, and ask with
//! [`protocol::Call::FaultSeen`] whether the hypervisor saw exactly that fault.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "host")]
extern crate alloc;

#[cfg(feature = "host")]
pub mod board_config;
#[cfg(feature = "build")]
pub mod build;
#[cfg(feature = "host")]
pub mod console_keys;
#[cfg(feature = "host")]
pub mod doorbell;
pub mod guest;
#[cfg(feature = "host")]
pub mod host;
pub mod layouts;
#[cfg(feature = "host")]
pub mod linux;
#[cfg(feature = "host")]
pub mod logger;
pub mod monitor;
pub mod protocol;
#[cfg(feature = "host")]
mod vm_hal;

/// What [`board_vm_hal!`] expands to names, reachable from the boards.
#[cfg(feature = "host")]
#[doc(hidden)]
pub mod __private {
    pub use addrspace;
    pub use crate_interface;
    pub use vm_core;
}
