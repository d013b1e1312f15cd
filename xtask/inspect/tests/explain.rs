//! A fault explanation is what the run loop then does: for each board config, in
//! its formats, and for accesses of every kind of answer (lazy page to map, mapped
//! now, permission violation, no region, MMIO with and without a device model), the
//! VM is built on hal-mock with a guest that makes that one access, the explanation
//! is taken, then the guest runs and what `run_vcpu` did is compared with it.

use std::sync::Arc;

use addrspace::{ArmStage2Ipa40, ArmStage2Ipa48, NestedFormat, Npt, Sv39x4, Sv48x4};
use hal_mock::{Action, Op, Program, run_vm};
use inspect::build;
use vcpu_api::AccessWidth;
use vm_core::diag::{FaultRoute, RegionKind};
use vm_core::{AccessKind, DeviceError, GuestPhysAddr, MmioDevice, VmConfig, VmExit};

mod common;

use common::board_config;

/// A device model that answers every read with 7 and takes every write.
struct Seven;

impl MmioDevice for Seven {
    fn read(&self, _: u64, _: AccessWidth) -> Result<u64, DeviceError> {
        Ok(7)
    }
    fn write(&self, _: u64, _: AccessWidth, _: u64) -> Result<(), DeviceError> {
        Ok(())
    }
}

fn op(gpa: GuestPhysAddr, access: AccessKind) -> Op {
    match access {
        AccessKind::Read => Op::Read {
            gpa,
            width: AccessWidth::Dword,
            reg: 1,
        },
        AccessKind::Write => Op::Write {
            gpa,
            width: AccessWidth::Dword,
            value: 0x1234,
        },
        AccessKind::Execute => Op::Fetch { gpa },
    }
}

/// Explains `access` at `gpa`, runs it, and checks they agree; returns what the
/// explanation said, for the caller to check the case covered what it meant to.
fn agree<F: NestedFormat>(
    config: &VmConfig,
    gpa: GuestPhysAddr,
    access: AccessKind,
    with_model: bool,
) -> String {
    let program = Program::new().at(
        config.kernel.entry_point,
        vec![op(gpa, access), Op::Shutdown],
    );
    let built = build::<F>(config.clone(), program).expect("builds");
    if with_model {
        for d in &config.devices.emu_devices {
            built
                .vm
                .attach_device(&d.name, Arc::new(Seven))
                .expect("attach");
        }
    }
    let e = built.vm.explain_fault(gpa, access);
    let text = e.to_string();
    let before = built.vm.stats();
    let report = run_vm(&built.machine, &built.vm, 1, |_, _, _| Action::Stop);
    let after = built.vm.stats();
    let case = format!("{} {access} at {gpa:?}:\n{text}\n{report:?}", F::NAME);
    assert!(report.errors.is_empty(), "{case}");
    let unserved: Vec<_> = report
        .exits
        .iter()
        .filter_map(|(_, x)| match x {
            VmExit::UnservedAccess(u) => Some(u),
            _ => None,
        })
        .collect();
    match e.unserved {
        Some(why) => {
            assert_eq!(unserved.len(), 1, "{case}");
            assert_eq!((unserved[0].gpa, unserved[0].why), (gpa, why), "{case}");
        }
        None => {
            assert!(unserved.is_empty(), "{case}");
            assert!(
                report.exits.iter().any(|(_, x)| *x == VmExit::Shutdown),
                "{case}"
            );
        }
    }
    let mapped = after.faults_mapped - before.faults_mapped;
    match &e.route {
        FaultRoute::Space(addrspace::FaultPlan::Map { .. }) => assert_eq!(mapped, 1, "{case}"),
        _ => assert_eq!(mapped, 0, "{case}"),
    }
    text
}

/// Every kind of answer on `name`'s layout (from its map) in format `F`.
fn board<F: NestedFormat>(name: &str) {
    let (_, config) = board_config(name);
    let layout = build::<F>(config.clone(), Program::new())
        .expect("builds")
        .vm
        .guest_map(Some(1));
    let find = |pred: &dyn Fn(RegionKind, vm_core::MappingFlags) -> bool| {
        layout
            .regions
            .iter()
            .find(|r| pred(r.kind, r.flags))
            .unwrap_or_else(|| panic!("{name}: no such region"))
            .range
            .start()
    };
    let lazy = find(&|k, _| k == RegionKind::Ram(vm_core::Populate::Lazy));
    let ro = find(&|k, f| k.is_ram() && !f.contains(vm_core::MappingFlags::WRITE));
    let ram = find(&|k, f| {
        k == RegionKind::Ram(vm_core::Populate::Eager) && f.contains(vm_core::MappingFlags::RWX)
    });
    let device = find(&|k, _| matches!(k, RegionKind::Emulated { .. }));
    let hole = layout.holes[1].start();
    let cases: [(GuestPhysAddr, AccessKind, bool, &str); 8] = [
        (
            lazy + 0x3010,
            AccessKind::Write,
            false,
            "not populated yet (lazy RAM)",
        ),
        (ram + 0x8_0000, AccessKind::Read, false, "mapped now"),
        (ro, AccessKind::Write, false, "permission violation"),
        (lazy, AccessKind::Execute, false, "permission violation"),
        (hole, AccessKind::Read, false, "no region"),
        (device + 8, AccessKind::Read, false, "has no model attached"),
        (
            device + 8,
            AccessKind::Read,
            true,
            "hands it to the device model",
        ),
        (
            device,
            AccessKind::Write,
            true,
            "hands it to the device model",
        ),
    ];
    for (gpa, access, with_model, says) in cases {
        let text = agree::<F>(&config, gpa, access, with_model);
        assert!(text.contains(says), "{name} {access} at {gpa:?}: {text}");
    }
}

#[test]
fn explanations_agree_with_the_run_loop_aarch64() {
    board::<ArmStage2Ipa40>("qemu-virt-aarch64");
    board::<ArmStage2Ipa48>("qemu-virt-aarch64");
}

#[test]
fn explanations_agree_with_the_run_loop_riscv64() {
    board::<Sv39x4>("qemu-virt-riscv64");
    board::<Sv48x4>("qemu-virt-riscv64");
}

#[test]
fn explanations_agree_with_the_run_loop_x86_64() {
    board::<Npt>("qemu-pc-x86_64");
}
