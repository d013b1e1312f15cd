//! [`HostGrant`]: the host resources a platform lets its VMs reach as their
//! configurations say, outside the frames vm-core allocates: pass-through devices,
//! reserved RAM (`map_type = 2`) and x86 I/O ports (`passthrough_ports`). A
//! configuration is data; only the platform, in an `unsafe` constructor, can promise
//! that an address or port it names may be given to a guest.

use alloc::vec::Vec;
use core::fmt;

use addrspace::HostPhysAddr;

/// What a granted range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantKind {
    /// Device registers (mapped DEVICE, never copied through by vm-core).
    Device,
    /// RAM reserved for guests.
    Ram,
    /// x86 I/O ports the guest reaches directly ([`GrantedRange::ports`]).
    Ports,
}

impl fmt::Display for GrantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Device => "device memory",
            Self::Ram => "reserved RAM",
            Self::Ports => "I/O ports",
        })
    }
}

/// One granted range: `[hpa, hpa + size)` of `kind` (for [`GrantKind::Ports`]:
/// ports `[hpa, hpa + size)`, the port numbers held as addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantedRange {
    /// Start (the first port, for ports).
    pub hpa: HostPhysAddr,
    /// Bytes (ports, for ports).
    pub size: usize,
    /// Device registers or reserved RAM.
    pub kind: GrantKind,
}

impl GrantedRange {
    /// `[hpa, hpa + size)` of `kind`.
    pub const fn new(hpa: HostPhysAddr, size: usize, kind: GrantKind) -> Self {
        Self { hpa, size, kind }
    }

    /// Ports `[first, first + count)`.
    pub const fn ports(first: u16, count: u16) -> Self {
        Self::new(
            HostPhysAddr::from_usize(first as usize),
            count as usize,
            GrantKind::Ports,
        )
    }

    fn end(&self) -> usize {
        self.hpa.as_usize().saturating_add(self.size)
    }
}

/// Host-physical ranges a platform lets VMs map: what [`crate::Vm::new`] requires
/// for every pass-through device range and every reserved region of a
/// configuration (a configuration naming anything else is refused with
/// [`crate::VmError::NotGranted`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostGrant {
    ranges: Vec<GrantedRange>,
}

impl HostGrant {
    /// Nothing: VMs with allocated RAM and emulated devices only.
    pub const fn none() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Grants `ranges` to the VMs this value is given to.
    ///
    /// # Safety
    ///
    /// For as long as any VM built with this grant exists, every range of kind
    /// [`GrantKind::Device`] is device registers a guest may own (no RAM: a DEVICE
    /// mapping of RAM would hand the guest memory the hypervisor may use), and every
    /// range of kind [`GrantKind::Ram`] is RAM that nothing but guests uses (not the
    /// hypervisor's image, stacks, heap or frame allocator) and that the HAL's
    /// allocator maps with `phys_to_virt` (vm-core copies guest memory through it).
    /// Every range of kind [`GrantKind::Ports`] is ports whose devices cannot reach
    /// memory the guest does not own (no DMA-capable controller, no PCI
    /// configuration ports 0xcf8-0xcff, nothing the hypervisor drives itself).
    pub unsafe fn new(ranges: impl IntoIterator<Item = GrantedRange>) -> Self {
        Self {
            ranges: ranges.into_iter().collect(),
        }
    }

    /// The granted ranges.
    pub fn ranges(&self) -> &[GrantedRange] {
        &self.ranges
    }

    /// Whether every byte of `[hpa, hpa + size)` lies in ranges of `kind`.
    pub fn covers(&self, hpa: HostPhysAddr, size: usize, kind: GrantKind) -> bool {
        let Some(end) = hpa.as_usize().checked_add(size) else {
            return false;
        };
        let mut at = hpa.as_usize();
        while at < end {
            let next = self
                .ranges
                .iter()
                .filter(|r| r.kind == kind && r.hpa.as_usize() <= at && at < r.end())
                .map(GrantedRange::end)
                .max();
            match next {
                Some(n) => at = n,
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(hpa: usize, size: usize, kind: GrantKind) -> GrantedRange {
        GrantedRange::new(HostPhysAddr::from_usize(hpa), size, kind)
    }

    #[test]
    fn coverage_by_kind_and_across_adjacent_ranges() {
        // SAFETY: nothing maps these ranges; only the checks are tested.
        let g = unsafe {
            HostGrant::new([
                range(0x0900_0000, 0x1000, GrantKind::Device),
                range(0x0900_1000, 0x1000, GrantKind::Device),
                range(0x8000_0000, 0x10_0000, GrantKind::Ram),
            ])
        };
        let h = HostPhysAddr::from_usize;
        assert!(g.covers(h(0x0900_0000), 0x2000, GrantKind::Device));
        assert!(g.covers(h(0x0900_0800), 0x1000, GrantKind::Device));
        assert!(!g.covers(h(0x0900_0000), 0x3000, GrantKind::Device));
        assert!(
            !g.covers(h(0x0900_0000), 0x1000, GrantKind::Ram),
            "wrong kind"
        );
        assert!(g.covers(h(0x8000_0000), 0x10_0000, GrantKind::Ram));
        assert!(!g.covers(h(0x7fff_f000), 0x2000, GrantKind::Ram));
        assert!(!g.covers(h(usize::MAX - 0xfff), 0x2000, GrantKind::Ram));
        assert!(g.covers(h(0x1234), 0, GrantKind::Ram), "nothing asked");
        assert!(!HostGrant::none().covers(h(0x0900_0000), 1, GrantKind::Device));
    }
}
