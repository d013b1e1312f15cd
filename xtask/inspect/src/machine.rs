//! The simulated host a config needs ([`plan`]): hal-mock's machine is one range of
//! host-physical memory, big enough for the frames of tables, allocated RAM and the
//! identity-mapped regions (`map_type` 1: the host places them, GPA = HPA, 2 MiB
//! aligned), placed from 4 GiB up where it overlaps no guest-physical range of the
//! config (an identity-mapped region lands at its host address) and no host range
//! the config names (reserved RAM, devices). The memory behind the range is only
//! reserved address space: pages the VM never touches cost nothing.

use std::sync::Arc;

use hal_mock::Machine;
use vm_core::{MapType, Populate, VmConfig};

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
/// Frames for tables, lazy pages faulted in by tests, and the allocator's slack.
const SPARE: usize = 64 * MIB;

/// Where the simulated memory lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Host-physical base of the machine's memory.
    pub base: usize,
    /// Its size.
    pub size: usize,
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to).saturating_mul(to)
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Plans the machine for `config`.
pub fn plan(config: &VmConfig) -> Plan {
    let regions = &config.kernel.memory_regions;
    let page =
        |start: usize, len: usize| (start & !0xfff, round_up(start.saturating_add(len), 0x1000));
    // Ranges the machine must not overlap: every guest-physical range of the config
    // but the identity-mapped regions (placed by the host), and the host ranges it
    // names.
    let mut busy: Vec<(usize, usize)> = regions
        .iter()
        .filter(|r| r.map_type != MapType::Identical)
        .map(|r| page(r.gpa.as_usize(), r.size))
        .collect();
    for d in &config.devices.passthrough_devices {
        busy.push(page(d.base_gpa.as_usize(), d.length));
        busy.push(page(d.base_hpa.as_usize(), d.length));
    }
    for d in &config.devices.emu_devices {
        busy.push(page(d.base_gpa.as_usize(), d.length));
    }
    // Eager RAM, identity-mapped regions (each 2 MiB-aligned), tables and slack.
    let eager: usize = regions
        .iter()
        .filter(|r| r.populate == Populate::Eager && r.map_type == MapType::Alloc)
        .map(|r| r.size)
        .sum();
    let identical: usize = regions
        .iter()
        .filter(|r| r.map_type == MapType::Identical)
        .map(|r| round_up(r.size, 2 * MIB) + 2 * MIB)
        .sum();
    let need = round_up(
        eager + identical + (eager + identical) / 256 + SPARE,
        2 * MIB,
    );
    let mut base = 4 * GIB;
    loop {
        let window = (base, base.saturating_add(need));
        match busy
            .iter()
            .filter(|b| overlaps(window, **b))
            .map(|b| b.1)
            .max()
        {
            None => return Plan { base, size: need },
            Some(end) => base = round_up(end, 2 * MIB),
        }
    }
}

/// Builds the planned machine. Freed frames are not poisoned: dropping a VM with
/// GiBs of identity-mapped RAM must not write all of it again.
pub fn build(plan: &Plan) -> Arc<Machine> {
    let machine = Machine::new(plan.base, plan.size);
    machine.poison_freed_frames(false);
    machine
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_core::{GuestPhysAddr, HostPhysAddr, MappingFlags, VmConfigBuilder};

    fn gpa(v: usize) -> GuestPhysAddr {
        GuestPhysAddr::from_usize(v)
    }

    #[test]
    fn room_for_every_frame_away_from_the_configs_ranges() {
        let config = VmConfigBuilder::new(1, "x", 1)
            .entry_point(gpa(0x8000_0000))
            .memory_region(
                gpa(0x8000_0000),
                0x4000_0000,
                MappingFlags::RWX,
                MapType::Identical,
                Populate::Eager,
            )
            .memory_region(
                gpa(0x1_0000_0000),
                0x10_0000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Eager,
            )
            .passthrough_device(
                "uart",
                gpa(0x900_0000),
                HostPhysAddr::from_usize(0x1_0020_0000),
                0x1000,
                0,
            )
            .build()
            .unwrap();
        let p = plan(&config);
        // Past the RAM at 4 GiB and the device's host page after it.
        assert_eq!(p.base, 0x1_0040_0000);
        assert!(p.size >= 0x4000_0000 + 0x10_0000 + SPARE, "{p:?}");
        assert_eq!(p.size % (2 * MIB), 0);
        let m = build(&p);
        assert_eq!(m.alloc_frames(1, 1), Some(HostPhysAddr::from_usize(p.base)));
    }
}
