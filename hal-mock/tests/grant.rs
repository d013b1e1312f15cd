//! Host memory a configuration names is mapped only where the platform granted it
//! (`vm_core::HostGrant`, an `unsafe` promise): pass-through ranges as device
//! memory, reserved regions (`map_type = 2`, GPA = HPA) as RAM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;

use addrspace::{HostPhysAddr, Npt};
use common::*;
use hal_mock::{GuestLog, Machine, MockVCpuConfig, MockVm, Program};
use vm_core::{
    GrantKind, GrantedRange, HostGrant, MapType, MappingFlags, Populate, Vm, VmConfig, VmError,
    VmResult,
};

fn build(config: VmConfig, grant: &HostGrant) -> VmResult<Arc<MockVm<Npt>>> {
    let vcpu = MockVCpuConfig::new(Arc::new(Program::new()), Arc::new(GuestLog::default()));
    Vm::new(config.into_valid()?, grant, |_| (vcpu.clone(), ()))
}

fn range(hpa: usize, size: usize, kind: GrantKind) -> GrantedRange {
    GrantedRange::new(HostPhysAddr::from_usize(hpa), size, kind)
}

/// Regression (issue 11): `Vm::new` was safe yet mapped any host address a
/// pass-through device named. Without a grant covering it (as device memory) the
/// VM is refused, before anything is allocated.
#[test]
fn passthrough_devices_need_a_grant() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let config = || {
        ram_config(1, "grant", 1, 0x8000_0000, 0x10_0000)
            .passthrough_device(
                "uart",
                gpa(0x0900_0000),
                HostPhysAddr::from_usize(0x0900_0000),
                0x1000,
                33,
            )
            .build()
            .unwrap()
    };
    let free = machine.frames_in_use();
    assert!(matches!(
        build(config(), &HostGrant::none()),
        Err(VmError::NotGranted {
            kind: GrantKind::Device,
            size: 0x1000,
            ..
        })
    ));
    assert_eq!(machine.frames_in_use(), free, "nothing allocated");
    // SAFETY: the mock never dereferences a device mapping.
    let as_ram = unsafe { HostGrant::new([range(0x0900_0000, 0x1000, GrantKind::Ram)]) };
    assert!(matches!(
        build(config(), &as_ram),
        Err(VmError::NotGranted { .. })
    ));
    // SAFETY: as above.
    let device = unsafe { HostGrant::new([range(0x0900_0000, 0x1000, GrantKind::Device)]) };
    let vm = build(config(), &device).unwrap();
    assert_eq!(vm.passthrough_ranges().len(), 1);
}

/// A reserved region maps host RAM at GPA = HPA only where the platform granted
/// RAM; the guest's memory is then that RAM.
#[test]
fn reserved_regions_need_a_ram_grant() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let (base, _) = machine.phys_range();
    let at = base.as_usize() + (32 << 20);
    let config = || {
        ram_config(1, "grant", 1, 0x8000_0000, 0x10_0000)
            .memory_region(
                gpa(at as u64),
                0x4000,
                MappingFlags::RW,
                MapType::Reserved,
                Populate::Eager,
            )
            .build()
            .unwrap()
    };
    assert!(matches!(
        build(config(), &HostGrant::none()),
        Err(VmError::NotGranted {
            kind: GrantKind::Ram,
            size: 0x4000,
            ..
        })
    ));
    // The machine's frames there, taken out of its pool for the guest.
    assert!(machine.alloc_at(HostPhysAddr::from_usize(at), 0x4000));
    // SAFETY: those frames are simulated RAM only this VM uses (taken from the pool
    // above), mapped by the machine's phys_to_virt.
    let grant = unsafe { HostGrant::new([range(at, 0x4000, GrantKind::Ram)]) };
    let vm = build(config(), &grant).unwrap();
    vm.write_guest(gpa(at as u64 + 0x10), b"granted").unwrap();
    let mut back = [0u8; 7];
    // SAFETY: the frame is simulated memory the VM maps (read-only here).
    let host = unsafe {
        core::slice::from_raw_parts(
            machine
                .phys_to_virt(HostPhysAddr::from_usize(at + 0x10))
                .as_ptr::<u8>(),
            7,
        )
    };
    back.copy_from_slice(host);
    assert_eq!(&back, b"granted");
    drop(vm);
    machine.dealloc_frames(HostPhysAddr::from_usize(at), 4);
}
