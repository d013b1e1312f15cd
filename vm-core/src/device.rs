//! Emulated devices: the [`MmioDevice`] trait a device model implements, and the
//! [`Bus`] that finds the device of an address: the [`MmioBus`] of guest-physical
//! memory and the [`PortBus`] of x86 I/O ports (one bus type, two address kinds).

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

/// A device model emulated by trap-and-emulate, on the MMIO bus (offsets in bytes
/// from its base) or the x86 port bus (offsets in ports from its first port: the
/// same accesses by offset and width). Called from any vCPU thread, so it keeps its
/// state behind its own synchronisation. The VM only passes accesses that lie
/// wholly inside the device's range (`offset + width <= length`); one that runs past
/// the end is refused as [`DeviceError::NoRegister`] before the model sees it.
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

/// The offset of an access of `width` at `addr` in a device of `length` at `base`,
/// if the access lies wholly inside it (the guarantee [`MmioDevice`] gives models).
pub(crate) fn offset_in(
    base: usize,
    length: usize,
    addr: usize,
    width: AccessWidth,
) -> Option<u64> {
    let offset = addr.checked_sub(base)?;
    let end = offset.checked_add(width.bytes())?;
    (end <= length).then_some(offset as u64)
}

/// One access to `device` at `offset`: a read (`write` is `None`) gives its value,
/// a write of the value gives `None`.
pub(crate) fn access(
    device: &dyn MmioDevice,
    offset: u64,
    width: AccessWidth,
    write: Option<u64>,
) -> Result<Option<u64>, DeviceError> {
    match write {
        None => device.read(offset, width).map(Some),
        Some(value) => device.write(offset, width, value).map(|()| None),
    }
}

/// An address on a [`Bus`]: a guest-physical address or an x86 port.
pub trait BusAddr: Copy + Ord {
    /// The address as a number.
    fn index(self) -> usize;
    /// The address `index` (which the bus takes only from inside a registered
    /// range, so it fits).
    fn at(index: usize) -> Self;
}

impl BusAddr for GuestPhysAddr {
    fn index(self) -> usize {
        self.as_usize()
    }
    fn at(index: usize) -> Self {
        Self::from_usize(index)
    }
}

impl BusAddr for u16 {
    fn index(self) -> usize {
        usize::from(self)
    }
    fn at(index: usize) -> Self {
        // Inside a registered port range, so below 0x1_0000.
        u16::try_from(index).unwrap_or(u16::MAX)
    }
}

/// One device on a bus.
#[derive(Clone)]
pub struct BusEntry<A = GuestPhysAddr> {
    /// Its name.
    pub name: String,
    /// First address (or port).
    pub base: A,
    /// Length in bytes (or ports).
    pub length: usize,
    /// The model, once attached.
    pub device: Option<Arc<dyn MmioDevice>>,
}

impl<A: BusAddr> BusEntry<A> {
    fn contains(&self, addr: A) -> bool {
        addr >= self.base && addr.index() - self.base.index() < self.length
    }

    /// The offset of `addr` in the device, if an access of `width` there lies
    /// wholly inside it.
    pub fn offset_of(&self, addr: A, width: AccessWidth) -> Option<u64> {
        offset_in(self.base.index(), self.length, addr.index(), width)
    }
}

impl<A: BusAddr> fmt::Debug for BusEntry<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{:#x}, {:#x}){}",
            self.name,
            self.base.index(),
            self.base.index() + self.length,
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
        /// First common address (or port).
        at: usize,
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
                write!(f, "device {name} overlaps {existing} at {at:#x}")
            }
            Self::BadRange { name } => {
                write!(f, "device {name} has an empty or overflowing range")
            }
            Self::NoSuchDevice { name } => write!(f, "no emulated device named {name}"),
        }
    }
}

/// The emulated devices of one VM in one address space, sorted by address, never
/// overlapping.
#[derive(Clone)]
pub struct Bus<A> {
    entries: Vec<BusEntry<A>>,
}

impl<A: BusAddr> fmt::Debug for Bus<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.entries).finish()
    }
}

/// The emulated devices in guest-physical memory.
pub type MmioBus = Bus<GuestPhysAddr>;

/// The emulated devices on x86 I/O ports.
pub type PortBus = Bus<u16>;

impl<A> Default for Bus<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> Bus<A> {
    /// An empty bus.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// All entries in address order.
    pub fn entries(&self) -> &[BusEntry<A>] {
        &self.entries
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
}

impl<A: BusAddr> Bus<A> {
    /// Adds a device range (with or without a model); refuses overlaps.
    pub fn add(
        &mut self,
        name: &str,
        base: A,
        length: usize,
        device: Option<Arc<dyn MmioDevice>>,
    ) -> Result<(), BusError> {
        let end = match base.index().checked_add(length) {
            Some(end) if length != 0 => end,
            _ => return Err(BusError::BadRange { name: name.into() }),
        };
        for e in &self.entries {
            let (s, t) = (e.base.index(), e.base.index() + e.length);
            let at = s.max(base.index());
            if at < t.min(end) {
                return Err(BusError::Overlap {
                    name: name.into(),
                    existing: e.name.clone(),
                    at,
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

    /// The entry containing `addr`.
    pub fn find(&self, addr: A) -> Option<&BusEntry<A>> {
        let i = self.entries.partition_point(|e| e.base <= addr);
        i.checked_sub(1)
            .map(|i| &self.entries[i])
            .filter(|e| e.contains(addr))
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
            Err(BusError::Overlap { at: 0x1800, .. })
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

    /// The port bus is the same bus over 16-bit ports: COM1 and a PIT side by side,
    /// overlaps refused at the first common port, accesses by offset only when they
    /// lie wholly inside a device (a 4-byte IN at COM1's last port does not).
    #[test]
    fn port_bus_finds_devices_by_port_and_bounds_accesses() {
        let mut bus = PortBus::new();
        bus.add("com1", 0x3f8, 8, None).unwrap();
        bus.add("pit", 0x40, 4, None).unwrap();
        assert_eq!(bus.find(0x3ff).unwrap().name, "com1");
        assert!(bus.find(0x400).is_none());
        assert_eq!(bus.find(0x43).unwrap().name, "pit");
        assert_eq!(
            bus.add("x", 0x3fc, 0x10, None),
            Err(BusError::Overlap {
                name: "x".into(),
                existing: "com1".into(),
                at: 0x3fc
            })
        );
        let com1 = bus.find(0x3f8).unwrap();
        assert_eq!(com1.offset_of(0x3fd, AccessWidth::Byte), Some(5));
        assert_eq!(com1.offset_of(0x3fc, AccessWidth::Dword), Some(4));
        assert_eq!(com1.offset_of(0x3fd, AccessWidth::Dword), None);
        assert_eq!(com1.offset_of(0x3f7, AccessWidth::Byte), None);
    }
}
