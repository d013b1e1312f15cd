//! Embeds the board's VM config and the test guest, and picks the linker script (see
//! `platforms::build::board`).

fn main() {
    platforms::build::board("qemu-virt-riscv64", "riscv64");
}
