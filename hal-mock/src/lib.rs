//! The host HAL: simulated physical memory and a software vCPU that walks the real
//! nested page tables.
//!
//! Not written yet: this crate is filled by the vm-core issue (#3).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
