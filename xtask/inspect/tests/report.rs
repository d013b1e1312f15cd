//! What a running board prints: the report of a fault loop (the loop's GPA and
//! access, the fault path's decision, the walk, the region map; the VM stopped), and
//! the test protocol's `diagnose` hypercall as the boards answer it
//! (`platforms::host::act_on`), on the aarch64 board's config built on hal-mock.

use addrspace::ArmStage2Ipa40;
use hal_mock::{MockFaults, Op, Program};
use inspect::{build, build_faulty};
use platforms::monitor::{Action, Monitor};
use platforms::protocol::{Call, DIAGNOSE_WALK, FAULT_READ, FAULT_WRITE};
use vm_core::diag::{FaultLoop, Focus};
use vm_core::{AccessKind, GuestPhysAddr, VmConfig, VmError, VmState};

mod common;

use common::{board_config, has};

/// The aarch64 board's config.
fn aarch64_config() -> VmConfig {
    board_config("qemu-virt-aarch64").1
}

/// A vCPU that walks the wrong table faults forever at the entry point: the board
/// hands the detector's error to `fault_loop_report`, which names the loop, walks
/// it, explains it, adds the map, and stops the VM.
#[test]
fn fault_loop_report_names_the_loop_walks_it_and_stops_the_vm() {
    let config = aarch64_config();
    let entry = config.kernel.entry_point;
    let built = build_faulty::<ArmStage2Ipa40>(
        config,
        Program::new().at(entry, vec![Op::Shutdown]),
        MockFaults {
            wrong_root: true,
            ..MockFaults::default()
        },
    )
    .expect("builds");
    let vm = &built.vm;
    vm.set_fault_loop_limit(5);
    vm.boot().expect("boots");
    let err = vm.run_vcpu(0).expect_err("a fault loop");
    assert!(matches!(err, VmError::FaultLoop { count: 5, .. }), "{err}");

    // Another error is not a fault loop: nothing reported, nothing stopped.
    let other = VmError::NoSuchVCpu { vcpu: 9, count: 2 };
    assert!(vm.fault_loop_report(&other, Some(7)).is_none());
    assert_eq!(vm.state(), VmState::Running);

    let report = vm.fault_loop_report(&err, Some(7)).expect("a fault loop");
    assert_eq!(report.fault_loop, Some(FaultLoop { vcpu: 0, count: 5 }));
    match &report.focus {
        Some(Focus::Fault(e)) => {
            assert_eq!((e.gpa, e.access), (entry, AccessKind::Execute));
            assert!(e.walk.translation().is_some(), "the VM's tables map it");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.map.vmid, Some(7));
    let text = report.to_string();
    has(&text, "=== diagnostics of VM 1 \"test-guest-aarch64\" ===");
    has(
        &text,
        "fault loop: vCPU 0 faulted 5 times in a row (execute at 0x4000_0000)",
    );
    has(
        &text,
        "execute at 0x4000_0000 in [0x4000_0000, 0x4100_0000)",
    );
    has(&text, "a spurious fault");
    has(&text, "walk of");
    has(&text, "guest-physical map");
    has(&text, "(VMID 7)");
    has(&text, "=== end of diagnostics ===");

    // The VM is stopped: no vCPU runs again.
    assert_eq!(vm.state(), VmState::Stopped);
    assert!(matches!(
        vm.run_vcpu(0),
        Err(VmError::State {
            state: VmState::Stopped,
            ..
        })
    ));
    // Stopped already (another vCPU's loop): the report still comes.
    assert!(vm.fault_loop_report(&err, None).is_some());
}

/// `diagnose(gpa, kind)`: the monitor turns it into `Action::Diagnose`, the boards'
/// `act_on` prints the report and tells the guest whether `gpa` is translated.
#[test]
fn diagnose_hypercall_prints_the_report_and_says_whether_mapped() {
    let built = build::<ArmStage2Ipa40>(aarch64_config(), Program::new()).expect("builds");
    let vm = &built.vm;
    let mut monitor = Monitor::new("test");
    let mut call = |args: [u64; 4]| {
        let mut out = String::new();
        let action = monitor.on_call(Call::Diagnose, args, &mut out);
        let value = platforms::host::act_on(vm, action, &mut out);
        (action, value, out)
    };
    let page = 0x40f0_0000;

    let (action, value, out) = call([page, DIAGNOSE_WALK, 0, 0]);
    assert_eq!(
        action,
        Action::Diagnose {
            gpa: page,
            write: None
        }
    );
    assert_eq!(value, Some(1), "eager RAM is translated");
    has(&out, "walk of GPA:0x40f00000");
    has(&out, "guest-physical map");
    // The root registers carry the VMID the HAL (hal-mock's machine) gave the VM.
    let vmid = built
        .machine
        .vmid_of(vm.id())
        .expect("a live VM has a VMID");
    has(&out, &format!("(VMID {vmid})"));

    vm.unmap_region(
        GuestPhysAddr::from_usize(usize::try_from(page).expect("a 64-bit host")),
        0x1000,
    )
    .expect("unmaps");
    let (action, value, out) = call([page, FAULT_READ, 0, 0]);
    assert_eq!(
        action,
        Action::Diagnose {
            gpa: page,
            write: Some(false)
        }
    );
    assert_eq!(value, Some(0), "unmapped");
    has(&out, "read at 0x40f0_0000");
    has(&out, "no region");
    has(&out, "=> run_vcpu returns UnservedAccess (NoArea)");

    // A write to the read-only page: refused, naming its flags.
    let (_, value, out) = call([0x5100_0000, FAULT_WRITE, 0, 0]);
    assert_eq!(value, Some(1));
    has(&out, "write at 0x5100_0000");
    has(&out, "permission violation");
}
