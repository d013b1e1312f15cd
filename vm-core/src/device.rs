//! Emulated MMIO: the [`MmioDevice`] trait a device model implements, and the
//! [`MmioBus`] that finds the device of a guest-physical address.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use addrspace::GuestPhysAddr;
use vcpu_api::AccessWidth;

use crate::config::page_cover;

/// Why a device refused an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// No register at this offset (or not for this width).
    NoRegister {
        /// Offset from the device base.
        offset: u64,
        /// The access width.
        width: AccessWidth,
    },
    /// The register is read-only (a write) or write-only (a read).
    Denied {
        /// Offset from the device base.
        offset: u64,
    },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRegister { offset, width } => write!(
                f,
                "no {}-byte register at offset {offset:#x}",
                width.bytes()
            ),
            Self::Denied { offset } => write!(f, "access denied at offset {offset:#x}"),
        }
    }
}

/// A device model emulated by trap-and-emulate. Called from any vCPU thread, so it
/// keeps its state behind its own synchronisation. The VM only passes accesses that
/// lie wholly inside the device's range (`offset + width <= length`); one that runs
/// past the end is refused as [`DeviceError::NoRegister`] before the model sees it.
pub trait MmioDevice: Send + Sync {
    /// Reads `width` bytes at `offset` from the device base.
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError>;

    /// Writes `value` (already cut to `width`) at `offset`.
    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError>;
}

/// The 4 KiB pages an emulated device at `[base, base + length)` claims in the
/// address space (reserved there, so nothing else maps them): their start and size.
/// An empty or overflowing range gives size 0, which the address space refuses.
pub(crate) fn device_pages(base: GuestPhysAddr, length: usize) -> (GuestPhysAddr, usize) {
    page_cover(base, length).map_or((base, 0), |r| (r.start(), r.size()))
}

/// One device on the bus.
#[derive(Clone)]
pub struct BusEntry {
    /// Its name.
    pub name: String,
    /// First address.
    pub base: GuestPhysAddr,
    /// Length in bytes.
    pub length: usize,
    /// The model, once attached.
    pub device: Option<Arc<dyn MmioDevice>>,
}

impl BusEntry {
    fn contains(&self, gpa: GuestPhysAddr) -> bool {
        gpa >= self.base && gpa.as_usize() - self.base.as_usize() < self.length
    }
}

impl fmt::Debug for BusEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{:#x}, {:#x}){}",
            self.name,
            self.base.as_usize(),
            self.base.as_usize() + self.length,
            if self.device.is_some() {
                ""
            } else {
                " (no model attached)"
            }
        )
    }
}

/// Why the bus refused a registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The range overlaps a device already on the bus.
    Overlap {
        /// The new device.
        name: String,
        /// The device already there.
        existing: String,
        /// First common address.
        at: GuestPhysAddr,
    },
    /// A zero length or a range that overflows.
    BadRange {
        /// The device.
        name: String,
    },
    /// No device of this name is on the bus.
    NoSuchDevice {
        /// The name asked for.
        name: String,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overlap { name, existing, at } => {
                write!(f, "MMIO device {name} overlaps {existing} at {at:#x}")
            }
            Self::BadRange { name } => {
                write!(f, "MMIO device {name} has an empty or overflowing range")
            }
            Self::NoSuchDevice { name } => write!(f, "no emulated device named {name}"),
        }
    }
}

/// The emulated devices of one VM, sorted by address, never overlapping.
#[derive(Clone, Debug, Default)]
pub struct MmioBus {
    entries: Vec<BusEntry>,
}

impl MmioBus {
    /// An empty bus.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Adds a device range (with or without a model); refuses overlaps.
    pub fn add(
        &mut self,
        name: &str,
        base: GuestPhysAddr,
        length: usize,
        device: Option<Arc<dyn MmioDevice>>,
    ) -> Result<(), BusError> {
        let end = match base.as_usize().checked_add(length) {
            Some(end) if length != 0 => end,
            _ => return Err(BusError::BadRange { name: name.into() }),
        };
        for e in &self.entries {
            let (s, t) = (e.base.as_usize(), e.base.as_usize() + e.length);
            let at = s.max(base.as_usize());
            if at < t.min(end) {
                return Err(BusError::Overlap {
                    name: name.into(),
                    existing: e.name.clone(),
                    at: GuestPhysAddr::from_usize(at),
                });
            }
        }
        let pos = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(
            pos,
            BusEntry {
                name: name.into(),
                base,
                length,
                device,
            },
        );
        Ok(())
    }

    /// Attaches `device` to the range registered as `name`.
    pub fn attach(&mut self, name: &str, device: Arc<dyn MmioDevice>) -> Result<(), BusError> {
        match self.entries.iter_mut().find(|e| e.name == name) {
            Some(e) => {
                e.device = Some(device);
                Ok(())
            }
            None => Err(BusError::NoSuchDevice { name: name.into() }),
        }
    }

    /// The entry containing `gpa`.
    pub fn find(&self, gpa: GuestPhysAddr) -> Option<&BusEntry> {
        let i = self.entries.partition_point(|e| e.base <= gpa);
        i.checked_sub(1)
            .map(|i| &self.entries[i])
            .filter(|e| e.contains(gpa))
    }

    /// All entries in address order.
    pub fn entries(&self) -> &[BusEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};

    struct Reg(AtomicU64);
    impl MmioDevice for Reg {
        fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
            match offset {
                0 => Ok(width.truncate(self.0.load(Ordering::Relaxed))),
                _ => Err(DeviceError::NoRegister { offset, width }),
            }
        }
        fn write(&self, offset: u64, _: AccessWidth, value: u64) -> Result<(), DeviceError> {
            match offset {
                0 => {
                    self.0.store(value, Ordering::Relaxed);
                    Ok(())
                }
                _ => Err(DeviceError::Denied { offset }),
            }
        }
    }

    #[test]
    fn lookup_by_range_and_overlap_refused() {
        let gpa = GuestPhysAddr::from_usize;
        let mut bus = MmioBus::new();
        bus.add("b", gpa(0x2000), 0x100, None).unwrap();
        bus.add(
            "a",
            gpa(0x1000),
            0x1000,
            Some(Arc::new(Reg(AtomicU64::new(7)))),
        )
        .unwrap();
        assert_eq!(bus.find(gpa(0x1fff)).unwrap().name, "a");
        assert_eq!(bus.find(gpa(0x20ff)).unwrap().name, "b");
        assert!(bus.find(gpa(0x2100)).is_none());
        assert!(bus.find(gpa(0xfff)).is_none());
        assert!(matches!(
            bus.add("c", gpa(0x1800), 0x1000, None),
            Err(BusError::Overlap { at, .. }) if at == gpa(0x1800)
        ));
        assert!(matches!(
            bus.add("d", gpa(0x9000), 0, None),
            Err(BusError::BadRange { .. })
        ));
        let dev = bus.find(gpa(0x1000)).unwrap().device.clone().unwrap();
        assert_eq!(dev.read(0, AccessWidth::Byte), Ok(7));
        assert!(bus.find(gpa(0x2000)).unwrap().device.is_none());
        bus.attach("b", dev).unwrap();
        assert!(bus.find(gpa(0x2000)).unwrap().device.is_some());
        assert!(matches!(
            bus.attach("zz", Arc::new(Reg(AtomicU64::new(0)))),
            Err(BusError::NoSuchDevice { .. })
        ));
    }
}
