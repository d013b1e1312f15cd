//! Where identical regions end up: axvisor (since 2025-09) places a `MapIdentical`
//! region where the host allocates it and maps it at GPA = HPA there, so the GPA
//! written in the config is only where the region is "on paper". The load
//! addresses the config puts inside such a region move with it, keeping their
//! offset in the region; a kernel written outside every region follows the first
//! region when that one is identical. (axvisor always moves the kernel to the
//! first region's start and places the device tree itself; we keep the layout the
//! config describes, e.g. kernel at +2 MiB and device tree at +0, where it
//! describes one.)

use alloc::vec::Vec;

use addrspace::GuestPhysAddr;

use super::{BootProtocol, DEFAULT_KERNEL_OFFSET, MapType, VmConfig};

impl VmConfig {
    /// The identical region (first in file order) that holds `a` on paper, when no
    /// region at a fixed address holds it.
    fn identical_home(&self, a: GuestPhysAddr) -> Option<usize> {
        let regions = &self.kernel.memory_regions;
        let inside =
            |r: &super::MemoryRegionConfig| r.gpa <= a && a.as_usize() - r.gpa.as_usize() < r.size;
        if self.in_fixed_region(a) {
            return None;
        }
        regions
            .iter()
            .position(|r| r.map_type == MapType::Identical && inside(r))
    }

    /// Whether a region at a fixed address (alloc or reserved) holds `a`.
    pub(crate) fn in_fixed_region(&self, a: GuestPhysAddr) -> bool {
        self.kernel.memory_regions.iter().any(|r| {
            r.map_type != MapType::Identical
                && r.gpa <= a
                && a.as_usize() - r.gpa.as_usize() < r.size
        })
    }

    /// Whether the kernel follows the first region wherever it is written: the first
    /// region is identical and the load address is in no region at a fixed
    /// address (axvisor loads the kernel into its "main memory", the first region).
    pub(crate) fn kernel_follows_first_region(&self) -> bool {
        self.kernel
            .memory_regions
            .first()
            .is_some_and(|r| r.map_type == MapType::Identical)
            && !self.in_fixed_region(self.kernel.kernel_load_addr)
    }

    /// Records that identical region `i` was placed at `gpa` for each `(i, gpa)` of
    /// `placed`, moving the load addresses with it (see the module docs): the
    /// kernel keeps its offset in the region it is written in, or goes to the start
    /// of the first region (2 MiB in with a multiboot BIOS, as axvisor) when written
    /// outside it, the entry point keeping its offset from the load address; the
    /// device tree, BIOS and ramdisk keep their offsets in their regions. The config
    /// validated, so every moved address stays inside its placed region.
    pub(crate) fn place_identical(&mut self, placed: &[(usize, GuestPhysAddr)]) {
        let old: Vec<GuestPhysAddr> = self.kernel.memory_regions.iter().map(|r| r.gpa).collect();
        let to = |i: usize| placed.iter().find(|(j, _)| *j == i).map(|(_, to)| *to);
        let moved = |a: GuestPhysAddr| {
            self.identical_home(a)
                .and_then(|i| Some(to(i)? + (a.as_usize() - old[i].as_usize())))
                .unwrap_or(a)
        };
        let k = &self.kernel;
        let load = k.kernel_load_addr;
        let new_load = match self.identical_home(load) {
            Some(_) => moved(load),
            None if self.kernel_follows_first_region() => {
                let bios = k.boot_protocol == BootProtocol::Multiboot && k.bios_load_addr.is_some();
                to(0).map_or(load, |start| {
                    start + if bios { DEFAULT_KERNEL_OFFSET } else { 0 }
                })
            }
            None => load,
        };
        let entry = match k.entry_point.as_usize().checked_sub(load.as_usize()) {
            Some(offset) if new_load != load && !self.in_fixed_region(k.entry_point) => {
                new_load + offset
            }
            _ => moved(k.entry_point),
        };
        let (dtb, bios, ramdisk) = (
            k.dtb_load_addr.map(moved),
            k.bios_load_addr.map(moved),
            k.ramdisk_load_addr.map(moved),
        );
        let k = &mut self.kernel;
        (k.kernel_load_addr, k.entry_point) = (new_load, entry);
        (k.dtb_load_addr, k.bios_load_addr, k.ramdisk_load_addr) = (dtb, bios, ramdisk);
        for (i, to) in placed {
            if let Some(r) = k.memory_regions.get_mut(*i) {
                r.gpa = *to;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{GuestPhysAddr, MapType, MappingFlags, Populate, VmConfigBuilder};

    #[test]
    fn a_kernel_written_outside_follows_the_first_identical_region() {
        let g = GuestPhysAddr::from_usize;
        // axvmconfig 0.8.9's aarch64 template: the kernel at 0x4008_0000, the only
        // region (identical) at 0x8000_0000 on paper.
        let mut c = VmConfigBuilder::new(1, "vm", 1)
            .entry_point(g(0x4008_0000))
            .memory_region(
                g(0x8000_0000),
                0x4000_0000,
                MappingFlags::RWX,
                MapType::Identical,
                Populate::Eager,
            )
            .build()
            .unwrap();
        assert!(c.kernel_follows_first_region());
        c.place_identical(&[(0, g(0x1_0000_0000))]);
        assert_eq!(c.kernel.kernel_load_addr, g(0x1_0000_0000));
        assert_eq!(c.kernel.entry_point, g(0x1_0000_0000));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn addresses_inside_a_placed_region_keep_their_offset() {
        let g = GuestPhysAddr::from_usize;
        let mut c = VmConfigBuilder::new(1, "vm", 1)
            .entry_point(g(0x8020_1000))
            .dtb_load_addr(g(0x8000_0000))
            .ramdisk_load_addr(g(0x4000_0000))
            // On paper the two identical regions overlap; the alloc one holds the
            // ramdisk, which stays.
            .memory_region(
                g(0x8000_0000),
                0x100_0000,
                MappingFlags::RWX,
                MapType::Identical,
                Populate::Eager,
            )
            .memory_region(
                g(0x8000_0000),
                0x40_0000,
                MappingFlags::RWX,
                MapType::Identical,
                Populate::Eager,
            )
            .memory_region(
                g(0x4000_0000),
                0x10_0000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Eager,
            )
            .build()
            .unwrap();
        c.place_identical(&[(0, g(0x1_2340_0000)), (1, g(0x1_5000_0000))]);
        assert_eq!(c.kernel.entry_point, g(0x1_2360_1000));
        assert_eq!(c.kernel.kernel_load_addr, g(0x1_2360_1000));
        assert_eq!(c.kernel.dtb_load_addr, Some(g(0x1_2340_0000)));
        assert_eq!(c.kernel.ramdisk_load_addr, Some(g(0x4000_0000)));
        let placed: Vec<_> = c.kernel.memory_regions.iter().map(|r| r.gpa).collect();
        assert_eq!(placed, [g(0x1_2340_0000), g(0x1_5000_0000), g(0x4000_0000)]);
        assert_eq!(c.validate(), Ok(()));
    }
}
