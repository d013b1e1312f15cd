//! Typed addresses (`GuestPhysAddr`, `HostPhysAddr`, `HostVirtAddr`), page sizes and
//! the page-aligned guest-physical range type.

use core::fmt;

use memory_addr::{def_usize_addr, def_usize_addr_formatter};

use crate::{Error, Result};

def_usize_addr! {
    /// A guest-physical address (GPA, Arm "IPA"): what the guest believes is physical.
    #[derive(Hash)]
    pub type GuestPhysAddr;
    /// A host-physical address (HPA): a real physical address of the machine.
    #[derive(Hash)]
    pub type HostPhysAddr;
    /// A host-virtual address (HVA): where the hypervisor sees a host-physical address.
    #[derive(Hash)]
    pub type HostVirtAddr;
}

def_usize_addr_formatter! {
    GuestPhysAddr = "GPA:{}";
    HostPhysAddr = "HPA:{}";
    HostVirtAddr = "HVA:{}";
}

impl HostVirtAddr {
    /// The address as a raw pointer.
    #[inline]
    pub const fn as_ptr<T>(self) -> *const T {
        self.as_usize() as *const T
    }

    /// The address as a raw mutable pointer.
    #[inline]
    pub const fn as_mut_ptr<T>(self) -> *mut T {
        self.as_usize() as *mut T
    }

    /// The address of a pointer.
    #[inline]
    pub fn from_ptr<T>(ptr: *const T) -> Self {
        Self::from_usize(ptr as usize)
    }
}

/// The size of one translation: a 4 KiB page or a huge leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB page (leaf at the last level).
    Size4K,
    /// 2 MiB block (leaf one level above the last).
    Size2M,
    /// 1 GiB block (leaf two levels above the last).
    Size1G,
}

impl PageSize {
    /// Size in bytes.
    #[inline]
    pub const fn bytes(self) -> usize {
        match self {
            Self::Size4K => 0x1000,
            Self::Size2M => 0x20_0000,
            Self::Size1G => 0x4000_0000,
        }
    }

    /// The page size of a leaf at `level` (0 = the 4 KiB level), if there is one.
    #[inline]
    pub const fn at_level(level: usize) -> Option<Self> {
        match level {
            0 => Some(Self::Size4K),
            1 => Some(Self::Size2M),
            2 => Some(Self::Size1G),
            _ => None,
        }
    }

    /// The level of the engine (0 = 4 KiB) where a leaf of this size sits.
    #[inline]
    pub const fn level(self) -> usize {
        match self {
            Self::Size4K => 0,
            Self::Size2M => 1,
            Self::Size1G => 2,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Size4K => "4K",
            Self::Size2M => "2M",
            Self::Size1G => "1G",
        })
    }
}

/// Bytes in a 4 KiB page, the granule of every operation here.
pub const PAGE_SIZE: usize = 0x1000;

/// A non-empty, 4 KiB-aligned guest-physical range `[start, end)` whose end does not
/// overflow. Every fallible operation of this crate validates its input into one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpaRange {
    start: GuestPhysAddr,
    end: GuestPhysAddr,
}

impl GpaRange {
    /// Validates `gpa` and `size`: both 4 KiB-aligned, `size > 0`, `gpa + size` in `usize`.
    pub fn new(gpa: GuestPhysAddr, size: usize) -> Result<Self> {
        if !gpa.as_usize().is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned {
                what: "gpa",
                value: gpa.as_usize(),
                align: PAGE_SIZE,
            });
        }
        if size == 0 {
            return Err(Error::ZeroSize { gpa });
        }
        if !size.is_multiple_of(PAGE_SIZE) {
            return Err(Error::Unaligned {
                what: "size",
                value: size,
                align: PAGE_SIZE,
            });
        }
        let end = gpa
            .as_usize()
            .checked_add(size)
            .ok_or(Error::Overflow { gpa, size })?;
        Ok(Self {
            start: gpa,
            end: GuestPhysAddr::from_usize(end),
        })
    }

    /// Like [`GpaRange::new`] from the two ends.
    pub fn from_bounds(start: GuestPhysAddr, end: GuestPhysAddr) -> Result<Self> {
        let size = end.as_usize().saturating_sub(start.as_usize());
        Self::new(start, size)
    }

    /// First address.
    #[inline]
    pub const fn start(&self) -> GuestPhysAddr {
        self.start
    }

    /// One past the last address.
    #[inline]
    pub const fn end(&self) -> GuestPhysAddr {
        self.end
    }

    /// Size in bytes (never zero).
    #[inline]
    pub const fn size(&self) -> usize {
        self.end.as_usize() - self.start.as_usize()
    }

    /// Whether `gpa` lies inside.
    #[inline]
    pub fn contains(&self, gpa: GuestPhysAddr) -> bool {
        self.start <= gpa && gpa < self.end
    }

    /// Whether the two ranges share at least one byte.
    #[inline]
    pub fn overlaps(&self, other: &GpaRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely inside `self`.
    #[inline]
    pub fn contains_range(&self, other: &GpaRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// The common part, if any.
    pub fn intersect(&self, other: &GpaRange) -> Option<GpaRange> {
        let start = self.start.max(other.start);
        let end = self.end.min(other.end);
        (start < end).then_some(GpaRange { start, end })
    }

    /// The smallest range covering both.
    pub fn union(&self, other: &GpaRange) -> GpaRange {
        GpaRange {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// Builds a range that is known to be valid (both ends aligned, `start < end`).
    pub(crate) const fn from_raw(start: usize, end: usize) -> Self {
        Self {
            start: GuestPhysAddr::from_usize(start),
            end: GuestPhysAddr::from_usize(end),
        }
    }
}

impl fmt::Debug for GpaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#x}, {:#x})",
            self.start.as_usize(),
            self.end.as_usize()
        )
    }
}

impl fmt::Display for GpaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_validation_names_the_problem() {
        let gpa = GuestPhysAddr::from_usize;
        assert!(matches!(
            GpaRange::new(gpa(0x1001), 0x1000),
            Err(Error::Unaligned {
                what: "gpa",
                value: 0x1001,
                align: 0x1000
            })
        ));
        assert!(matches!(
            GpaRange::new(gpa(0x1000), 0x10),
            Err(Error::Unaligned {
                what: "size",
                value: 0x10,
                ..
            })
        ));
        assert!(matches!(
            GpaRange::new(gpa(0x1000), 0),
            Err(Error::ZeroSize { .. })
        ));
        assert!(matches!(
            GpaRange::new(gpa(usize::MAX & !0xfff), 0x2000),
            Err(Error::Overflow { .. })
        ));
        let r = GpaRange::new(gpa(0x2000), 0x3000).unwrap();
        assert_eq!(r.end(), gpa(0x5000));
        assert_eq!(r.size(), 0x3000);
        assert!(r.contains(gpa(0x4fff)) && !r.contains(gpa(0x5000)));
        let s = GpaRange::new(gpa(0x4000), 0x2000).unwrap();
        assert!(r.overlaps(&s));
        assert_eq!(r.intersect(&s), Some(GpaRange::from_raw(0x4000, 0x5000)));
        assert_eq!(r.union(&s), GpaRange::from_raw(0x2000, 0x6000));
        assert_eq!(format!("{r}"), "[0x2000, 0x5000)");
    }
}
