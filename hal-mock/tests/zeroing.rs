//! Issue 17, zeroing: every frame a guest gets reads as zero (eager RAM, lazy pages,
//! identity-mapped regions), including frames the previous VM dirtied and gave back;
//! frames still zero from the host (the machine's fresh anonymous memory) are not
//! written, so a VM with GiBs of identity-mapped RAM costs only address space.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;

use addrspace::{FRAME_SIZE, HostPhysAddr, Npt};
use common::*;
use hal_mock::{GuestLog, Machine, Program};
use vm_core::{MapType, MappingFlags, Populate, VmConfig};

const MIB: usize = 1 << 20;
const RAM: u64 = 0x4000_0000;

/// 2 MiB eager at `RAM`, 2 MiB lazy after it, and a 2 MiB identity-mapped region.
fn three_kinds(id: usize) -> VmConfig {
    ram_config(id, "zeroing", 1, RAM, 2 * MIB)
        .memory_region(
            gpa(RAM + 0x20_0000),
            2 * MIB,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy,
        )
        .memory_region(
            gpa(0x8000_0000),
            2 * MIB,
            MappingFlags::RW,
            MapType::Identical,
            Populate::Eager,
        )
        .build()
        .unwrap()
}

/// The guest pages of every region of `vm`'s config, one `u64` every 512 bytes.
fn probes(config: &VmConfig) -> Vec<addrspace::GuestPhysAddr> {
    config
        .kernel
        .memory_regions
        .iter()
        .flat_map(|r| (0..r.size).step_by(512).map(move |o| r.gpa + o))
        .collect()
}

/// The regression for the zeroing promise: a VM dirties all of its memory (eager,
/// lazy and identity-mapped) and is dropped, so its frames are freed (and poisoned
/// by the mock); the next VM gets the same frames back and reads only zeros.
#[test]
fn a_dirtied_then_freed_frame_comes_back_zero() {
    let machine = Machine::new(0x1_0000_0000, 16 * MIB);
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let first = mock_vm::<Npt>(three_kinds(1), Program::new(), &log);
    let dirty = probes(first.config());
    for &at in &dirty {
        first
            .write_to_guest_of(at, &0xa5a5_a5a5_a5a5_a5a5u64)
            .unwrap();
    }
    let frames: Vec<_> = first
        .config()
        .kernel
        .memory_regions
        .iter()
        .filter_map(|r| first.walk(r.gpa).translation().map(|t| t.hpa))
        .collect();
    drop(first);
    assert_eq!(machine.frames_in_use(), 0);
    let second = mock_vm::<Npt>(three_kinds(2), Program::new(), &log);
    let reused = second
        .config()
        .kernel
        .memory_regions
        .iter()
        .filter_map(|r| second.walk(r.gpa).translation().map(|t| t.hpa))
        .filter(|h| frames.contains(h))
        .count();
    assert!(
        reused > 0,
        "the second VM got none of the first one's frames"
    );
    for at in probes(second.config()) {
        assert_eq!(
            second.read_from_guest_of::<u64>(at).unwrap(),
            0,
            "{at:?}: the previous VM's data"
        );
    }
}

/// Resident bytes of the host mapping that holds `addr` (`/proc/self/smaps`), the
/// mock's memory block: what its pages cost the host.
fn resident_in_mapping_of(addr: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = (start..end).contains(&addr);
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            let kb: usize = kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            return kb * 1024;
        }
    }
    panic!("no mapping holds {addr:#x}")
}

/// A VM with 2 GiB of identity-mapped RAM on a host of fresh memory: the frames
/// are handed out unwritten (the machine counts them), and the host pages behind
/// them stay unbacked (the block's mapping holds a few MiB: tables, not RAM).
#[test]
fn fresh_frames_are_not_written() {
    let size = 2usize << 30;
    let machine = Machine::new(0x1_0000_0000, size + 16 * MIB);
    // Dropping the VM would poison (write) all 2 GiB of its freed frames.
    machine.poison_freed_frames(false);
    let _g = machine.enter(0);
    let config = ram_config(1, "big", 1, RAM, 2 * MIB)
        .memory_region(
            gpa(0x1_0000_0000),
            size,
            MappingFlags::RWX,
            MapType::Identical,
            Populate::Eager,
        )
        .build()
        .unwrap();
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<Npt>(config, Program::new(), &log);
    assert!(
        machine.fresh_frames_handed_out() >= size / FRAME_SIZE,
        "{} frames handed out fresh",
        machine.fresh_frames_handed_out()
    );
    let region = vm.config().kernel.memory_regions[1].gpa;
    let block = machine.phys_to_virt(HostPhysAddr::from_usize(region.as_usize()));
    let resident = resident_in_mapping_of(block.as_usize());
    assert!(
        resident < 64 * MIB,
        "{resident} bytes of the machine's memory are resident"
    );
    assert_eq!(
        vm.read_from_guest_of::<u64>(region + (size - 8)).unwrap(),
        0
    );
}
