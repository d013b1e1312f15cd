//! Boards (QEMU virt aarch64 and riscv64, QEMU pc x86_64) that compose the crates
//! into bootable hypervisor images with a test guest.
//!
//! Not written yet: the boards come with issues #4, #5 and #6.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
