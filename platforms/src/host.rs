//! What the boards' hypervisors share on top of `vm-core` (feature `host`): the
//! emulated test device and the check that a VM config matches a [`GuestLayout`].

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use vcpu_api::AccessWidth;
use vm_core::{DeviceError, MapType, MappingFlags, MmioDevice, Populate, VmConfig};

use crate::protocol::GuestLayout;
use crate::protocol::test_device::{COUNTER, ID, ID_VALUE, NEGATIVE, NEGATIVE_REG, SCRATCH, SIZE};

/// The name of the test device in the VM configs (`[devices] emu_devices`).
pub const TEST_DEVICE: &str = "test-device";

/// The emulated test device of the protocol ([`crate::protocol::test_device`]): an
/// identification register, a scratch register, an access counter and a register
/// that reads as -2, for 1/2/4/8-byte accesses.
#[derive(Debug, Default)]
pub struct TestDevice {
    /// The last value written to SCRATCH, already cut to its width.
    scratch: AtomicU64,
    /// Accesses so far (every register, reads and writes).
    accesses: AtomicU64,
}

impl TestDevice {
    /// A device with SCRATCH = 0 and no access counted.
    pub const fn new() -> Self {
        Self {
            scratch: AtomicU64::new(0),
            accesses: AtomicU64::new(0),
        }
    }

    /// Accesses so far.
    pub fn accesses(&self) -> u64 {
        self.accesses.load(Ordering::SeqCst)
    }
}

impl MmioDevice for TestDevice {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let count = self.accesses.fetch_add(1, Ordering::SeqCst);
        let value = match offset {
            ID => ID_VALUE,
            SCRATCH => self.scratch.load(Ordering::SeqCst),
            COUNTER => count,
            NEGATIVE_REG => NEGATIVE,
            _ => return Err(DeviceError::NoRegister { offset, width }),
        };
        Ok(width.truncate(value))
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        self.accesses.fetch_add(1, Ordering::SeqCst);
        match offset {
            SCRATCH => {
                self.scratch.store(width.truncate(value), Ordering::SeqCst);
                Ok(())
            }
            ID | COUNTER | NEGATIVE_REG => Err(DeviceError::Denied { offset }),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }
}

/// The first way a VM config disagrees with a [`GuestLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// No memory region has the layout's base, size, flags and population for `what`.
    Region {
        /// Which region of the layout (`"RAM"`, `"lazy"`, `"read-only"`).
        what: &'static str,
        /// Its base in the layout.
        gpa: u64,
    },
    /// The guest image is not loaded and entered at the layout's `image`.
    Entry {
        /// The config's entry point.
        entry: u64,
        /// The config's load address.
        load: u64,
    },
    /// No emulated device named [`TEST_DEVICE`] at `mmio_base`, `SIZE` bytes or more.
    TestDevice,
    /// The layout's `outside` address lies in a region.
    Outside {
        /// The address.
        gpa: u64,
    },
    /// The test VM needs two vCPUs.
    VCpus {
        /// The config's `cpu_num`.
        count: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Region { what, gpa } => {
                write!(
                    f,
                    "no {what} region at {gpa:#x} with the layout's size, flags and population"
                )
            }
            Self::Entry { entry, load } => {
                write!(
                    f,
                    "the guest image must be loaded and entered at the layout's image address (config: load {load:#x}, entry {entry:#x})"
                )
            }
            Self::TestDevice => write!(
                f,
                "no emulated device {TEST_DEVICE:?} of {SIZE:#x} bytes at the layout's mmio_base"
            ),
            Self::Outside { gpa } => {
                write!(f, "the layout's outside address {gpa:#x} is in a region")
            }
            Self::VCpus { count } => write!(f, "the test VM needs 2 vCPUs (config: {count})"),
        }
    }
}

/// Checks that `config` builds the VM `layout` describes.
pub fn check_config(config: &VmConfig, layout: &GuestLayout) -> Result<(), Mismatch> {
    let regions = &config.kernel.memory_regions;
    let want = [
        (
            "RAM",
            layout.ram_base,
            layout.ram_size,
            MappingFlags::RWX,
            Populate::Eager,
        ),
        (
            "lazy",
            layout.lazy_base,
            layout.lazy_size,
            MappingFlags::RW,
            Populate::Lazy,
        ),
        (
            "read-only",
            layout.ro_base,
            layout.ro_size,
            MappingFlags::READ,
            Populate::Eager,
        ),
    ];
    for (what, gpa, size, flags, populate) in want {
        let found = regions.iter().any(|r| {
            r.gpa.as_usize() as u64 == gpa
                && r.size as u64 == size
                && r.flags.access() == flags
                && r.map_type == MapType::Alloc
                && r.populate == populate
        });
        if !found {
            return Err(Mismatch::Region { what, gpa });
        }
    }
    let entry = config.kernel.entry_point.as_usize() as u64;
    let load = config.kernel.kernel_load_addr.as_usize() as u64;
    if entry != layout.image || load != layout.image {
        return Err(Mismatch::Entry { entry, load });
    }
    let device = config.devices.emu_devices.iter().any(|d| {
        d.name == TEST_DEVICE
            && d.base_gpa.as_usize() as u64 == layout.mmio_base
            && d.length as u64 >= SIZE
    });
    if !device {
        return Err(Mismatch::TestDevice);
    }
    let inside = regions.iter().any(|r| {
        let start = r.gpa.as_usize() as u64;
        (start..start + r.size as u64).contains(&layout.outside)
    });
    if inside {
        return Err(Mismatch::Outside {
            gpa: layout.outside,
        });
    }
    if config.cpu_num != 2 {
        return Err(Mismatch::VCpus {
            count: config.cpu_num,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::layouts;
    use AccessWidth::*;

    fn config(name: &str) -> VmConfig {
        let path = std::format!("{}/../configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("board config");
        VmConfig::from_toml(&text).expect("board config parses")
    }

    #[test]
    fn every_board_config_matches_its_layout() {
        for (name, layout) in layouts::ALL {
            assert_eq!(check_config(&config(name), &layout), Ok(()), "{name}");
        }
    }

    #[test]
    fn mismatches_are_named() {
        let l = layouts::QEMU_VIRT_RISCV64;
        let base = config("qemu-virt-riscv64");
        let mut c = base.clone();
        c.kernel.memory_regions[1].populate = Populate::Eager;
        assert_eq!(
            check_config(&c, &l),
            Err(Mismatch::Region {
                what: "lazy",
                gpa: l.lazy_base
            })
        );
        let mut c = base.clone();
        c.kernel.memory_regions[2].flags = MappingFlags::RW;
        assert!(matches!(
            check_config(&c, &l),
            Err(Mismatch::Region {
                what: "read-only",
                ..
            })
        ));
        let mut c = base.clone();
        c.kernel.memory_regions.remove(0);
        assert!(matches!(
            check_config(&c, &l),
            Err(Mismatch::Region { what: "RAM", .. })
        ));
        let mut c = base.clone();
        c.devices.emu_devices[0].base_gpa = vm_core::GuestPhysAddr::from_usize(0x0c00_0000);
        assert_eq!(check_config(&c, &l), Err(Mismatch::TestDevice));
        let mut c = base.clone();
        c.kernel.entry_point = vm_core::GuestPhysAddr::from_usize(0x8000_1000);
        assert_eq!(
            check_config(&c, &l),
            Err(Mismatch::Entry {
                entry: 0x8000_1000,
                load: 0x8000_0000
            })
        );
        let mut c = base;
        c.cpu_num = 1;
        assert_eq!(check_config(&c, &l), Err(Mismatch::VCpus { count: 1 }));
        // The x86 board's image sits 1 MiB into RAM.
        assert!(check_config(&config("qemu-pc-x86_64"), &l).is_err());
    }

    #[test]
    fn test_device_registers() {
        let d = TestDevice::new();
        assert_eq!(d.read(ID, Qword), Ok(ID_VALUE));
        assert_eq!(d.read(ID, Word), Ok(ID_VALUE & 0xffff));
        for w in [Byte, Word, Dword, Qword] {
            assert_eq!(d.read(NEGATIVE_REG, w), Ok(w.truncate(NEGATIVE)));
        }
        d.write(SCRATCH, Qword, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(d.read(SCRATCH, Qword), Ok(0x1122_3344_5566_7788));
        // A narrower write leaves only its width.
        d.write(SCRATCH, Byte, 0x1ff).unwrap();
        assert_eq!(d.read(SCRATCH, Qword), Ok(0xff));
        let a = d.read(COUNTER, Dword).unwrap();
        assert_eq!(d.read(COUNTER, Dword), Ok(a + 1));
        assert_eq!(
            d.write(ID, Qword, 1),
            Err(DeviceError::Denied { offset: ID })
        );
        assert_eq!(
            d.read(0x20, Dword),
            Err(DeviceError::NoRegister {
                offset: 0x20,
                width: Dword
            })
        );
        assert_eq!(
            d.write(0x21, Byte, 0),
            Err(DeviceError::NoRegister {
                offset: 0x21,
                width: Byte
            })
        );
    }
}
