//! VM configuration, creation, memory regions, devices, the run loop and TLB
//! coherency across vCPUs.
//!
//! Not written yet: this crate is filled by the vm-core issue (#3).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
