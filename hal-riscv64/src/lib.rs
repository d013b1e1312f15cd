//! The riscv64 HAL: HS-mode bring-up, G-stage translation, exit decoding, guest SBI.
//!
//! Not written yet: this crate is filled by the riscv64 board issue (#5).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
