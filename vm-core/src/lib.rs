//! VM configuration, creation, memory regions, pass-through and emulated devices, the
//! vCPU run loop, and TLB coherency across vCPUs.
//!
//! Work in progress (issue #3): only the HAL interface exists so far.

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

mod hal;

pub use hal::VmHal;
