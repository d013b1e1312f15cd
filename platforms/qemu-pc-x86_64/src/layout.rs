//! The test VM's guest-physical layout on this board (`/work/helpers/LAYOUTS.md`,
//! column qemu-pc-x86_64; the guest's `arch_x86_64.rs` has the same values), the
//! GPA of the guest's identity page tables, and the check that the embedded VM
//! config agrees with it.

use platforms::protocol::GuestLayout;
use vm_core::{MappingFlags, Populate, VmConfig};

/// Where the test guest expects things.
pub(crate) const LAYOUT: GuestLayout = GuestLayout {
    ram_base: 0,
    ram_size: 0x100_0000,
    lazy_base: 0x4000_0000,
    lazy_size: 0x20_0000,
    ro_base: 0x4100_0000,
    ro_size: 0x1000,
    mmio_base: 0xd000_0000,
    unmap_page: 0xf0_0000,
    outside: 0x8000_0000,
    mailbox: 0xe0_0000,
    scratch: 0xe1_0000,
    stacks: [0xd0_0000, 0xd8_0000],
};

/// Guest-physical address of the identity page tables the hypervisor writes for
/// the guest (6 frames, below the image at 1 MiB, used by nothing else).
pub(crate) const GUEST_TABLES: u64 = 0x1000;

/// Where the guest image is loaded and entered.
pub(crate) const GUEST_ENTRY: u64 = LAYOUT.ram_base + 0x10_0000;

/// The first disagreement between `config` and [`LAYOUT`], named.
pub(crate) fn check(config: &VmConfig) -> Result<(), &'static str> {
    let region = |base: u64| {
        config
            .kernel
            .memory_regions
            .iter()
            .find(|r| r.gpa.as_usize() as u64 == base)
    };
    let ram = region(LAYOUT.ram_base).ok_or("no RAM region at the layout's ram_base")?;
    if ram.size as u64 != LAYOUT.ram_size || ram.flags != MappingFlags::RWX {
        return Err("RAM region is not ram_size bytes of RWX");
    }
    let lazy = region(LAYOUT.lazy_base).ok_or("no region at lazy_base")?;
    if lazy.size as u64 != LAYOUT.lazy_size || lazy.populate != Populate::Lazy {
        return Err("lazy region is not lazy_size bytes populated lazily");
    }
    let ro = region(LAYOUT.ro_base).ok_or("no region at ro_base")?;
    if ro.size as u64 != LAYOUT.ro_size || ro.flags.access() != MappingFlags::READ {
        return Err("read-only region is not ro_size bytes of R");
    }
    let dev = config
        .devices
        .emu_devices
        .iter()
        .find(|d| d.name == "test-device")
        .ok_or("no emulated device named test-device")?;
    if dev.base_gpa.as_usize() as u64 != LAYOUT.mmio_base {
        return Err("test-device is not at mmio_base");
    }
    let inside = |gpa: u64| {
        config.kernel.memory_regions.iter().any(|r| {
            let start = r.gpa.as_usize() as u64;
            (start..start + r.size as u64).contains(&gpa)
        })
    };
    if inside(LAYOUT.outside) {
        return Err("`outside` is inside a memory region");
    }
    let ram_end = LAYOUT.ram_base + LAYOUT.ram_size;
    for (what, gpa) in [
        ("unmap_page", LAYOUT.unmap_page),
        ("mailbox", LAYOUT.mailbox),
        ("scratch", LAYOUT.scratch + 0x1fff),
        ("stack 0", LAYOUT.stacks[0] - 1),
        ("stack 1", LAYOUT.stacks[1] - 1),
        ("guest tables", GUEST_TABLES),
    ] {
        if !(LAYOUT.ram_base..ram_end).contains(&gpa) {
            let _ = what;
            return Err(
                "a layout address (unmap_page, mailbox, scratch, stacks, tables) is outside RAM",
            );
        }
    }
    if config.kernel.entry_point.as_usize() as u64 != GUEST_ENTRY
        || config.kernel.kernel_load_addr.as_usize() as u64 != GUEST_ENTRY
    {
        return Err("entry point or load address is not ram_base + 1 MiB");
    }
    if config.cpu_num != 2 {
        return Err("the test VM needs 2 vCPUs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_config_matches_the_layout() {
        let config = crate::vm_config().expect("the embedded config is valid");
        assert_eq!(check(&config), Ok(()));
    }

    #[test]
    fn a_moved_region_is_named() {
        let mut config = crate::vm_config().unwrap();
        config
            .kernel
            .memory_regions
            .retain(|r| r.gpa.as_usize() != 0x4100_0000);
        assert_eq!(check(&config), Err("no region at ro_base"));
        let mut config = crate::vm_config().unwrap();
        config.cpu_num = 1;
        assert_eq!(check(&config), Err("the test VM needs 2 vCPUs"));
    }
}
