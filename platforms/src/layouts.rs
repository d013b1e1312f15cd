//! The test VM's guest-physical layout on each board: one source for the board, its
//! VM config (`configs/<board>.toml`, checked against it) and the test guest.

use crate::protocol::GuestLayout;

/// QEMU virt, aarch64: RAM at 0x4000_0000 (where a Linux guest expects it), the test
/// device at 0x0b00_0000, the PL011 passed through at 0x0900_0000 (GPA = HPA); the
/// vCPUs' MPIDRs 0x100 and 0x101 (Aff1 = 1), which are not their indexes.
pub const QEMU_VIRT_AARCH64: GuestLayout = GuestLayout::standard(
    0x4000_0000,
    0,
    0x5000_0000,
    0x5100_0000,
    0x0b00_0000,
    0x6000_0000,
    [0x100, 0x101],
);

/// The PL011 the aarch64 guest shares with the hypervisor.
pub const QEMU_VIRT_AARCH64_UART: u64 = 0x0900_0000;

/// QEMU virt, riscv64: RAM at 0x8000_0000, the test device at 0x0b00_0000; the
/// console goes through SBI; the vCPUs' hart ids 4 and 7, which are not their
/// indexes.
pub const QEMU_VIRT_RISCV64: GuestLayout = GuestLayout::standard(
    0x8000_0000,
    0,
    0x9000_0000,
    0x9100_0000,
    0x0b00_0000,
    0xa000_0000,
    [4, 7],
);

/// QEMU pc, x86_64: RAM at 0 with the image at 1 MiB (below it, the identity page
/// tables the hypervisor builds for the guest), the test device at 0xd000_0000; the
/// console is port 0x3f8, emulated; the vCPUs' APIC ids are their indexes.
pub const QEMU_PC_X86_64: GuestLayout = GuestLayout::standard(
    0,
    0x10_0000,
    0x4000_0000,
    0x4100_0000,
    0xd000_0000,
    0x8000_0000,
    [0, 1],
);

/// The x86_64 guest's console: COM1's data register (emulated by the hypervisor).
pub const QEMU_PC_X86_64_COM1: u16 = 0x3f8;
/// The x86_64 guest's power-off port (the QEMU/Bochs ACPI PM1a control convention)...
pub const QEMU_PC_X86_64_SHUTDOWN_PORT: u16 = 0x604;
/// ...and the 16-bit value written there to power off.
pub const QEMU_PC_X86_64_SHUTDOWN_VALUE: u16 = 0x2000;

/// Every board's layout, with the board's name.
pub const ALL: [(&str, GuestLayout); 3] = [
    ("qemu-virt-aarch64", QEMU_VIRT_AARCH64),
    ("qemu-virt-riscv64", QEMU_VIRT_RISCV64),
    ("qemu-pc-x86_64", QEMU_PC_X86_64),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything the guest writes lies in its RAM, away from the image's first
    /// MiB, and the regions do not overlap RAM or each other.
    #[test]
    fn layouts_are_consistent() {
        for (name, l) in ALL {
            let ram = l.ram_base..l.ram_base + l.ram_size;
            for a in [
                l.unmap_page,
                l.mailbox,
                l.scratch + 0x1fff,
                l.stacks[0] - 8,
                l.stacks[1] - 8,
                l.image,
            ] {
                assert!(ram.contains(&a), "{name}: {a:#x} outside RAM");
                assert!(
                    a >= l.image + 0x10_0000 || a == l.image,
                    "{name}: {a:#x} in the image"
                );
            }
            for a in [l.lazy_base, l.ro_base, l.mmio_base, l.outside] {
                assert!(!ram.contains(&a), "{name}: {a:#x} inside RAM");
            }
            let lazy = l.lazy_base..l.lazy_base + l.lazy_size;
            assert!(
                !lazy.contains(&l.ro_base) && !lazy.contains(&l.outside),
                "{name}"
            );
        }
    }
}
