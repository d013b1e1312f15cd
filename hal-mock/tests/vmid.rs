//! VMIDs on the mock: live VMs never share one, a VM that cannot get one is refused
//! with a typed error (and leaks nothing), and a VM's VMID is invalidated on every
//! TLB before any of its frames is freed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;

use addrspace::Npt;
use common::*;
use hal_mock::{GuestLog, Machine, MockFaults, MockVm, Program, VmidRelease};
use vcpu_api::VCpuError;
use vm_core::{VmError, VmResult};

/// Regression: the aarch64 HAL gave VM `id` the VMID `id % 255 + 1` (riscv64: the id
/// cut to the VMID bits), so live VMs 1 and 256 shared VMID 2 and saw each other's
/// translations, and nothing invalidated a VM's VMID before its frames were freed on
/// drop. VMIDs are claimed per live VM now (typed errors when none is left or the id
/// is live), and released, after an invalidation, before the address space goes.
#[test]
fn live_vms_never_share_a_vmid_and_dropped_vms_are_invalidated_first() {
    let machine = Machine::with_defaults();
    machine.set_vmids(3);
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let vm = |id: usize| -> VmResult<Arc<MockVm<Npt>>> {
        let config = ram_config(id, "vmid", 1, 0x4000_0000, 0x1_0000)
            .build()
            .unwrap();
        try_mock_vm(config, Program::new(), &log, MockFaults::default())
    };
    let a = vm(1).unwrap();
    let b = vm(256).unwrap();
    let c = vm(511).unwrap();
    let ids = [1, 256, 511].map(|id| machine.vmid_of(id).unwrap());
    assert!(ids.iter().all(|&v| v != 0), "{ids:?}");
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    let in_use = machine.frames_in_use();
    assert!(matches!(
        vm(766),
        Err(VmError::Tag {
            vm_id: 766,
            error: VCpuError::NoVmid {
                vm_id: 766,
                available: 3
            }
        })
    ));
    assert!(matches!(
        vm(256),
        Err(VmError::Tag {
            vm_id: 256,
            error: VCpuError::VmIdInUse { vm_id: 256 }
        })
    ));
    assert_eq!(
        machine.frames_in_use(),
        in_use,
        "a refused VM leaked frames"
    );
    assert_eq!(
        machine.vmid_of(256),
        Some(ids[1]),
        "the refusal changed nothing"
    );
    // Dropping B invalidates its VMID while all its frames are still allocated.
    drop(b);
    assert_eq!(
        machine.vmid_releases(),
        vec![VmidRelease {
            vm: 256,
            vmid: ids[1],
            frames_in_use: in_use
        }]
    );
    assert!(
        machine.frames_in_use() < in_use,
        "B's frames are freed after"
    );
    assert_eq!(machine.vmid_of(256), None);
    // Its VMID is free for the next VM.
    let d = vm(766).unwrap();
    assert_eq!(machine.vmid_of(766), Some(ids[1]));
    drop((a, c, d));
    assert_eq!(machine.vmid_releases().len(), 4);
    assert_eq!(machine.frames_in_use(), 0);
}
