//! The test VM's guest-physical layout on this board (`/work/helpers/LAYOUTS.md`,
//! column qemu-virt-riscv64; the guest's `arch_riscv64.rs` states the same values),
//! and the check that the embedded VM config agrees with it before anything runs.

use core::fmt;

use platforms::protocol::{GuestLayout, test_device};
use vm_core::{MappingFlags, Populate, VmConfig};

/// Where the test guest expects things.
pub(crate) const LAYOUT: GuestLayout = GuestLayout {
    ram_base: 0x8000_0000,
    ram_size: 0x100_0000,
    lazy_base: 0x9000_0000,
    lazy_size: 0x20_0000,
    ro_base: 0x9100_0000,
    ro_size: 0x1000,
    mmio_base: 0x0b00_0000,
    unmap_page: 0x80f0_0000,
    outside: 0xa000_0000,
    mailbox: 0x80e0_0000,
    scratch: 0x80e1_0000,
    stacks: [0x80d0_0000, 0x80d8_0000],
};

/// The name of the emulated device in the config.
pub(crate) const TEST_DEVICE: &str = "test-device";

/// The first disagreement between a config and [`LAYOUT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// No memory region starts at `gpa` (the layout's `what`).
    NoRegion {
        /// Which layout field.
        what: &'static str,
        /// Its address.
        gpa: u64,
    },
    /// The region at `what` has another size, permission or population.
    Region {
        /// Which layout field.
        what: &'static str,
        /// What the layout needs, in words.
        expected: &'static str,
    },
    /// No emulated device named [`TEST_DEVICE`] at the layout's `mmio_base`, at least
    /// `test_device::SIZE` long.
    Device,
    /// The guest image is not loaded and entered at the RAM base.
    Entry {
        /// The config's entry point.
        entry: u64,
        /// The config's load address.
        load: u64,
    },
    /// The layout has two vCPUs.
    VCpus {
        /// The config's `cpu_num`.
        cpu_num: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRegion { what, gpa } => write!(f, "no memory region at {what} {gpa:#x}"),
            Self::Region { what, expected } => write!(f, "the {what} region is not {expected}"),
            Self::Device => write!(
                f,
                "no emulated device {TEST_DEVICE:?} of {:#x} bytes at {:#x}",
                test_device::SIZE,
                LAYOUT.mmio_base
            ),
            Self::Entry { entry, load } => write!(
                f,
                "the guest must be loaded and entered at {:#x} (config: load {load:#x}, entry {entry:#x})",
                LAYOUT.ram_base
            ),
            Self::VCpus { cpu_num } => write!(f, "the test VM has 2 vCPUs (config: {cpu_num})"),
        }
    }
}

/// Checks `config` against [`LAYOUT`].
pub(crate) fn check(config: &VmConfig) -> Result<(), Mismatch> {
    let region = |what, gpa: u64| {
        config
            .kernel
            .memory_regions
            .iter()
            .find(|r| r.gpa.as_usize() as u64 == gpa)
            .ok_or(Mismatch::NoRegion { what, gpa })
    };
    let ram = region("ram_base", LAYOUT.ram_base)?;
    if ram.size as u64 != LAYOUT.ram_size
        || ram.flags.access() != MappingFlags::RWX
        || ram.populate != Populate::Eager
    {
        return Err(Mismatch::Region {
            what: "RAM",
            expected: "ram_size bytes of eager RWX",
        });
    }
    let lazy = region("lazy_base", LAYOUT.lazy_base)?;
    if lazy.size as u64 != LAYOUT.lazy_size
        || lazy.flags.access() != MappingFlags::RW
        || lazy.populate != Populate::Lazy
    {
        return Err(Mismatch::Region {
            what: "lazy",
            expected: "lazy_size bytes of lazy RW",
        });
    }
    let ro = region("ro_base", LAYOUT.ro_base)?;
    if ro.size as u64 != LAYOUT.ro_size || ro.flags.access() != MappingFlags::READ {
        return Err(Mismatch::Region {
            what: "read-only",
            expected: "ro_size bytes of R",
        });
    }
    let device_ok = config.devices.emu_devices.iter().any(|d| {
        d.name == TEST_DEVICE
            && d.base_gpa.as_usize() as u64 == LAYOUT.mmio_base
            && d.length as u64 >= test_device::SIZE
    });
    if !device_ok {
        return Err(Mismatch::Device);
    }
    let entry = config.kernel.entry_point.as_usize() as u64;
    let load = config.kernel.kernel_load_addr.as_usize() as u64;
    if entry != LAYOUT.ram_base || load != LAYOUT.ram_base {
        return Err(Mismatch::Entry { entry, load });
    }
    if config.cpu_num != 2 {
        return Err(Mismatch::VCpus {
            cpu_num: config.cpu_num,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_core::GuestPhysAddr;

    fn board_config() -> VmConfig {
        VmConfig::from_toml(include_str!("../../../configs/qemu-virt-riscv64.toml"))
            .expect("the board's config parses")
    }

    #[test]
    fn the_board_config_agrees() {
        assert_eq!(check(&board_config()), Ok(()));
    }

    /// Every derived address is inside RAM, and the outside address in no region.
    #[test]
    fn layout_is_consistent() {
        let ram = LAYOUT.ram_base..LAYOUT.ram_base + LAYOUT.ram_size;
        for a in [
            LAYOUT.unmap_page,
            LAYOUT.mailbox,
            LAYOUT.scratch + 0x1fff,
            LAYOUT.stacks[0] - 8,
            LAYOUT.stacks[1] - 8,
        ] {
            assert!(ram.contains(&a), "{a:#x}");
        }
        let config = board_config();
        assert!(config.kernel.memory_regions.iter().all(|r| {
            let start = r.gpa.as_usize() as u64;
            !(start..start + r.size as u64).contains(&LAYOUT.outside)
        }));
    }

    #[test]
    fn mismatches_are_named() {
        let mut c = board_config();
        c.kernel.memory_regions[1].populate = Populate::Eager;
        assert!(matches!(
            check(&c),
            Err(Mismatch::Region { what: "lazy", .. })
        ));

        let mut c = board_config();
        c.kernel.memory_regions[2].flags = MappingFlags::RW;
        assert!(matches!(
            check(&c),
            Err(Mismatch::Region {
                what: "read-only",
                ..
            })
        ));

        let mut c = board_config();
        c.kernel.memory_regions.remove(0);
        assert_eq!(
            check(&c),
            Err(Mismatch::NoRegion {
                what: "ram_base",
                gpa: 0x8000_0000
            })
        );

        let mut c = board_config();
        c.devices.emu_devices[0].base_gpa = GuestPhysAddr::from_usize(0x0c00_0000);
        assert_eq!(check(&c), Err(Mismatch::Device));

        let mut c = board_config();
        c.kernel.entry_point = GuestPhysAddr::from_usize(0x8000_1000);
        assert_eq!(
            check(&c),
            Err(Mismatch::Entry {
                entry: 0x8000_1000,
                load: 0x8000_0000
            })
        );

        let mut c = board_config();
        c.cpu_num = 1;
        assert_eq!(check(&c), Err(Mismatch::VCpus { cpu_num: 1 }));
    }
}
