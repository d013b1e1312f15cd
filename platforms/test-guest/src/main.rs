//! The self-checking test guest. Each architecture's entry code (`arch_*.rs`) sets
//! up a stack, implements [`platforms::guest::GuestOps`] and runs the shared checks of
//! [`platforms::guest`] with its board's [`platforms::protocol::GuestLayout`].
//!
//! On the host this builds to a stub that says so: the guest only runs under a
//! hypervisor (`cargo xtask qemu <arch>`).

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(all(target_os = "none", target_arch = "aarch64"))]
mod arch_aarch64;
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod arch_riscv64;
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
mod arch_x86_64;

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("test-guest runs inside the hypervisor: use `cargo xtask qemu <arch>`");
}
