//! Issue 10's page-table engine defects reached through vm-core's public API, on
//! every nested format: each once panicked or aborted the process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;

use addrspace::{ArmStage2Ipa40, ArmStage2Ipa48, Ept, NestedFormat, Npt, Sv39x4, Sv48x4};
use common::*;
use hal_mock::{GuestLog, Machine, Program};
use vm_core::{MapType, MappingFlags, Populate, VmConfigBuilder};

const RAM: u64 = 0x4000_0000;

/// Issue 10 (the page-table engine) through vm-core, on every format: an identical
/// region of one 2 MiB leaf and one 4 KiB page, `protect_region` of two pages inside
/// the leaf with the flags the region already has, then `unmap_region` of its first
/// 2 MiB with no frame left. The engine's plan did not cover that history: debug
/// builds panicked "page-table reserve exhausted", release builds took a frame
/// outside the plan and, with the allocator exhausted, panicked "plan/commit
/// mismatch" with the tree half changed.
fn same_flags_protect_then_unmap_region<F: NestedFormat>() {
    let machine = Machine::new(0x4000_0000, 64 << 20);
    let _g = machine.enter(0);
    let config = VmConfigBuilder::new(1, "cut", 1)
        .entry_point(gpa(RAM))
        .memory_region(
            gpa(RAM),
            0x20_1000,
            MappingFlags::RW,
            MapType::Identical,
            Populate::Eager,
        )
        .build()
        .unwrap();
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<F>(config, Program::new(), &log);
    let base = vm.config().kernel.memory_regions[0].gpa;
    vm.protect_region(base + 0xd_0000, 0x2000, MappingFlags::RW)
        .unwrap();
    machine.fail_frames_after(0);
    vm.unmap_region(base, 0x20_0000).unwrap();
    machine.never_fail();
    assert!(
        vm.walk(base + 0xd_0000).translation().is_none(),
        "{}",
        F::NAME
    );
    let t = vm.walk(base + 0x20_0000).translation().unwrap();
    assert_eq!(t.hpa.as_usize(), base.as_usize() + 0x20_0000, "{}", F::NAME);
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0, "{}: frames leaked", F::NAME);
}

#[test]
fn same_flags_protect_then_unmap_region_of_an_identical_region() {
    same_flags_protect_then_unmap_region::<Ept>();
    same_flags_protect_then_unmap_region::<Npt>();
    same_flags_protect_then_unmap_region::<ArmStage2Ipa40>();
    same_flags_protect_then_unmap_region::<ArmStage2Ipa48>();
    same_flags_protect_then_unmap_region::<Sv39x4>();
    same_flags_protect_then_unmap_region::<Sv48x4>();
}

/// Issue 10: `Vm::map_region(1 << 40, 1 << 46, ..)` eager built a list of one entry
/// per 4 KiB page before taking any frame, which the host could not allocate: the
/// process aborted. Now a typed error, and nothing changed.
fn map_region_far_beyond_memory<F: NestedFormat>() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<F>(
        ram_config(1, "big", 1, RAM, 0x1_0000).build().unwrap(),
        Program::new(),
        &log,
    );
    let frames = machine.frames_in_use();
    let got = vm.map_region(gpa(1 << 40), 1 << 46, MappingFlags::RW, Populate::Eager);
    assert!(got.is_err(), "{}: {got:?}", F::NAME);
    assert_eq!(machine.frames_in_use(), frames, "{}", F::NAME);
    assert!(vm.walk(gpa(1 << 40)).translation().is_none());
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0);
}

#[test]
fn map_region_far_beyond_memory_is_refused_without_aborting() {
    map_region_far_beyond_memory::<Ept>();
    map_region_far_beyond_memory::<Npt>();
    map_region_far_beyond_memory::<ArmStage2Ipa40>();
    map_region_far_beyond_memory::<ArmStage2Ipa48>();
    map_region_far_beyond_memory::<Sv39x4>();
    map_region_far_beyond_memory::<Sv48x4>();
}
