//! The vCPU state machine, the architecture vCPU trait and exit reasons.
//!
//! Not written yet: this crate is filled by the vm-core issue (#3).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
