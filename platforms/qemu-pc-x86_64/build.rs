//! Embeds the board's VM config and the test guest, and picks the linker script (see
//! `platforms::build::board`).

fn main() {
    platforms::build::board("qemu-pc-x86_64", "x86_64");
}
