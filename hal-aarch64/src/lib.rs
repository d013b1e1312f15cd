//! The aarch64 HAL: EL2 bring-up, stage-2 translation, exit decoding, PSCI.
//!
//! Not written yet: this crate is filled by the aarch64 board issue (#4).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
