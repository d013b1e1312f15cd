//! The x86_64 HAL: AMD SVM with nested paging, exit decoding, MMIO emulation.
//!
//! Not written yet: this crate is filled by the x86_64 board issue (#6).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
