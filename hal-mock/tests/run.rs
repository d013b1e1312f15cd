//! The run loop on the mock: the fault-loop detector, the lifecycle and its state
//! errors, pause and resume, MMIO errors (no model, a refusing device, an
//! undecodable access). CPU up and the rest of the firmware are in `firmware.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use addrspace::{AccessKind, ArmStage2Ipa40, Npt, Sv48x4};
use common::*;
use hal_mock::{
    Action, GuestLog, Machine, MockFaults, MockVm, Op, Probe, Program, probe_vm, run_vm,
};
use platforms::host::{TEST_DEVICE, TestDevice};
use platforms::protocol::test_device::{COUNTER, ID};
use vcpu_api::AccessWidth::{Dword, Qword};
use vcpu_api::Hypercall;
use vm_core::{
    DeviceError, MapType, MappingFlags, Populate, Unserved, VCpuState, VmConfig, VmError, VmExit,
    VmState,
};

const RAM: u64 = 0x8000_0000;
const LAZY: u64 = 0x9000_0000;
const DEV: u64 = 0x0b00_0000;

fn config(cpus: usize) -> VmConfig {
    ram_config(1, "run", cpus, RAM, 0x10_0000)
        .memory_region(
            gpa(LAZY),
            0x10_0000,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy,
        )
        .emu_device(TEST_DEVICE, gpa(DEV), 0x1000, 0, 0, &[])
        .emu_device("unattached", gpa(DEV + 0x1000), 0x1000, 0, 0, &[])
        .build()
        .unwrap()
}

fn vm_with<F: addrspace::NestedFormat>(
    cpus: usize,
    program: Program,
    faults: MockFaults,
) -> Arc<MockVm<F>> {
    try_mock_vm(
        config(cpus),
        program,
        &Arc::new(GuestLog::default()),
        faults,
    )
    .unwrap()
}

/// A vCPU that walks the wrong table faults forever on a page vm-core has mapped:
/// the detector stops it with the GPA, the access and the walk (which shows the page
/// is mapped in the VM's tables).
#[test]
fn fault_loop_is_detected() {
    for limit in [None, Some(5)] {
        let machine = Machine::with_defaults();
        let _g = machine.enter(0);
        let vm = vm_with::<Sv48x4>(
            1,
            Program::new().at(gpa(RAM), vec![Op::Shutdown]),
            MockFaults {
                wrong_root: true,
                ..MockFaults::default()
            },
        );
        if let Some(l) = limit {
            vm.set_fault_loop_limit(l);
        }
        vm.boot().unwrap();
        let err = vm.run_vcpu(0).unwrap_err();
        let expected = limit.unwrap_or(vm_core::DEFAULT_FAULT_LOOP_LIMIT);
        match &err {
            VmError::FaultLoop {
                vcpu: 0,
                gpa: g,
                access: AccessKind::Execute,
                count,
                walk,
            } => {
                assert_eq!(*g, gpa(RAM));
                assert_eq!(*count, expected);
                assert!(walk.translation().is_some(), "the VM's tables map it");
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("faulted") && text.contains("walk of"),
            "{text}"
        );
        assert_eq!(vm.stats().faults_spurious, expected as u64);
    }
}

#[test]
fn lifecycle_state_errors() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm_with::<Npt>(
        2,
        Program::new().at(gpa(RAM), vec![Op::Halt, Op::Shutdown]),
        MockFaults::default(),
    );
    assert_eq!(vm.state(), VmState::Created);
    assert!(matches!(
        vm.run_vcpu(0),
        Err(VmError::State {
            state: VmState::Created,
            ..
        })
    ));
    assert!(matches!(
        vm.pause(),
        Err(VmError::State {
            state: VmState::Created,
            ..
        })
    ));
    vm.boot().unwrap();
    assert!(matches!(
        vm.boot(),
        Err(VmError::State {
            op: "boot",
            state: VmState::Running
        })
    ));
    assert_eq!(
        vm.run_vcpu(1),
        Err(VmError::VCpuState {
            vcpu: 1,
            op: "run",
            state: VCpuState::Off
        })
    );
    assert!(matches!(
        vm.run_vcpu(7),
        Err(VmError::NoSuchVCpu { vcpu: 7, count: 2 })
    ));
    assert_eq!(
        vm.start_vcpu(0, gpa(RAM), 0),
        Err(VmError::VCpuState {
            vcpu: 0,
            op: "start",
            state: VCpuState::Started
        })
    );
    assert!(matches!(
        vm.resume(),
        Err(VmError::State { op: "resume", .. })
    ));
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Halt);
    assert_eq!(vm.vcpu_state(0).unwrap(), VCpuState::Bound);
    vm.pause().unwrap();
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Paused);
    vm.resume().unwrap();
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Shutdown);
    assert_eq!(vm.state(), VmState::Stopped);
    assert!(matches!(
        vm.run_vcpu(0),
        Err(VmError::State {
            state: VmState::Stopped,
            ..
        })
    ));
    assert!(matches!(vm.shutdown(), Err(VmError::State { .. })));
    assert!(matches!(
        vm.skip_access(0),
        Err(VmError::NothingToComplete { vcpu: 0 })
    ));
}

/// Pausing a VM whose vCPUs are in the guest kicks them out; they come back after
/// the resume.
#[test]
fn pause_kicks_running_vcpus_and_resume_continues() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let (vm, probe) = probe_vm::<ArmStage2Ipa40>(1, 2, MockFaults::default()).unwrap();
    let report = std::thread::scope(|s| {
        let r = s.spawn(|| run_vm(&machine, &vm, 1, |_, _, e| panic!("{e:?}")));
        while !(vm.is_vcpu_started(1) && Probe::get(&probe.before) > 1000) {
            std::thread::sleep(Duration::from_millis(1));
        }
        vm.pause().unwrap();
        // Paused: no vCPU is in the guest, so the probe count stands still.
        let frozen = Probe::get(&probe.before);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(Probe::get(&probe.before), frozen);
        vm.resume().unwrap();
        while Probe::get(&probe.before) < frozen + 1000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        probe.stop.store(true, Ordering::SeqCst);
        r.join().unwrap()
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.count(|e| *e == VmExit::Paused) >= 1);
    assert!(vm.stats().kicks >= 1);
}

/// MMIO: an attached device answers; a device with no model, a register the device
/// refuses and an access outside are unserved (and can be completed with a value);
/// an access that cannot be decoded (an instruction fetch from the device) is an
/// error carrying the PC.
#[test]
fn mmio_paths() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let program = Program::new().at(
        gpa(RAM),
        vec![
            Op::Read {
                gpa: gpa(DEV + COUNTER),
                width: Dword,
                reg: 1,
            },
            Op::Check {
                reg: 1,
                value: 0,
                what: "first access",
            },
            Op::Read {
                gpa: gpa(DEV + 0x1008),
                width: Qword,
                reg: 2,
            },
            Op::Check {
                reg: 2,
                value: 0x1234,
                what: "unattached device completed with a value",
            },
            Op::Write {
                gpa: gpa(DEV + ID),
                width: Qword,
                value: 1,
            },
            Op::Read {
                gpa: gpa(DEV + COUNTER),
                width: Dword,
                reg: 1,
            },
            Op::Check {
                reg: 1,
                value: 2,
                what: "refused write still counted",
            },
            Op::Fetch { gpa: gpa(DEV) },
            Op::Shutdown,
        ],
    );
    let vm = mock_vm::<Npt>(config(1), program, &log);
    let device = Arc::new(TestDevice::default());
    vm.attach_device(TEST_DEVICE, device.clone()).unwrap();
    assert!(matches!(
        vm.attach_device("nope", device.clone()),
        Err(VmError::Bus(vm_core::BusError::NoSuchDevice { .. }))
    ));
    let report = run_vm(&machine, &vm, 1, |_, _, exit| match exit {
        VmExit::UnservedAccess(a) => match a.why {
            Unserved::NoDevice { area } => {
                assert_eq!(area.start(), gpa(DEV + 0x1000));
                Action::Complete(0x1234)
            }
            Unserved::Device(DeviceError::Denied { offset: 0 }) => Action::Skip,
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    });
    assert_eq!(log.failures(), Vec::<String>::new());
    assert_eq!(log.counts(), (3, 0));
    assert_eq!(report.errors.len(), 1);
    assert!(
        matches!(&report.errors[0].1, VmError::MmioDecode { gpa: g, pc, .. } if *g == gpa(DEV) && *pc == RAM + 7 * 4),
        "{:?}",
        report.errors
    );
    assert_eq!(device.accesses(), 3);
}

/// A protect to read-only while the vCPU has the page writable in its TLB: the next
/// write faults (the caller's own TLB is invalidated before its next entry) and is
/// reported as a permission violation; a later protect back to RW lets it write.
#[test]
fn protect_region_downgrade_is_seen_at_once() {
    const PROTECT: u64 = 1;
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let page = RAM + 0x8000;
    let log = Arc::new(GuestLog::default());
    let program = Program::new().at(
        gpa(RAM),
        vec![
            Op::Write {
                gpa: gpa(page),
                width: Qword,
                value: 1,
            },
            Op::Hypercall {
                nr: PROTECT,
                args: [page, 1, 0, 0, 0, 0],
            },
            Op::Write {
                gpa: gpa(page),
                width: Qword,
                value: 2,
            },
            Op::Read {
                gpa: gpa(page),
                width: Qword,
                reg: 1,
            },
            Op::Check {
                reg: 1,
                value: 1,
                what: "refused write did not land",
            },
            Op::Hypercall {
                nr: PROTECT,
                args: [page, 3, 0, 0, 0, 0],
            },
            Op::Write {
                gpa: gpa(page),
                width: Qword,
                value: 3,
            },
            Op::Read {
                gpa: gpa(page),
                width: Qword,
                reg: 1,
            },
            Op::Check {
                reg: 1,
                value: 3,
                what: "write after RW again",
            },
            Op::Shutdown,
        ],
    );
    let vm = mock_vm::<Sv48x4>(config(1), program, &log);
    let report = run_vm(&machine, &vm, 1, |vm, _, exit| match exit {
        VmExit::Hypercall(Hypercall {
            nr: PROTECT, args, ..
        }) => {
            let flags = MappingFlags::from_bits_truncate(vcpu_api::low_u32(args[1]));
            vm.protect_region(gpa(args[0]), 0x1000, flags).unwrap();
            Action::Return(0)
        }
        VmExit::UnservedAccess(a) => {
            assert!(
                matches!(a.why, Unserved::Permission { flags, .. } if flags == MappingFlags::READ)
            );
            assert_eq!((a.gpa, a.access), (gpa(page), AccessKind::Write));
            Action::Skip
        }
        other => panic!("{other:?}"),
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(log.counts(), (2, 0), "{:?}", log.failures());
    assert_eq!(report.count(|e| matches!(e, VmExit::UnservedAccess(_))), 1);
    let stats = vm.stats();
    assert_eq!(stats.shootdowns, 2);
    // Each shootdown is timed on the platform's clock (the boards print it).
    assert!(
        stats.shootdown_last_ns > 0 && stats.shootdown_max_ns >= stats.shootdown_last_ns,
        "{stats:?}"
    );
}

/// Interrupts queued from another thread reach the vCPU before its next entry.
#[test]
fn interrupts_are_injected_at_the_next_entry() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm_with::<Npt>(
        1,
        Program::new().at(gpa(RAM), vec![Op::Halt, Op::Halt, Op::Shutdown]),
        MockFaults::default(),
    );
    vm.boot().unwrap();
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Halt);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _g = machine.enter(5);
            vm.inject_interrupt(0, 33).unwrap();
            vm.inject_interrupt(0, 34).unwrap();
        });
    });
    assert!(matches!(
        vm.inject_interrupt(3, 1),
        Err(VmError::NoSuchVCpu { vcpu: 3, .. })
    ));
    assert_eq!(
        vm.with_vcpu(0, |v| v.pending_irqs().to_vec()).unwrap(),
        Vec::<usize>::new()
    );
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Halt);
    assert_eq!(
        vm.with_vcpu(0, |v| v.pending_irqs().to_vec()).unwrap(),
        [33, 34]
    );
    // Unbind and run again (binds on this pCPU).
    vm.unbind_vcpu(0).unwrap();
    assert_eq!(vm.vcpu_state(0).unwrap(), VCpuState::Started);
    assert_eq!(
        vm.unbind_vcpu(0),
        Err(VmError::VCpuState {
            vcpu: 0,
            op: "unbind",
            state: VCpuState::Started
        })
    );
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Shutdown);
}

/// Every vCPU state through the VM's API: off before boot, started by boot and by
/// the guest's CPU on, bound by its first run, in the guest while it runs (seen
/// from another thread), bound again after the exit, unbound, off after the
/// guest's CPU off; and the refused steps with the state they found.
#[test]
fn vcpu_states_through_the_vm() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let probe = Arc::new(Probe::new(gpa(RAM + 0x8000)));
    let second = gpa(RAM + 0x1000);
    let vm = vm_with::<Npt>(
        2,
        Program::new()
            .at(
                gpa(RAM),
                vec![
                    Op::Probe(probe.clone()),
                    Op::CpuUp {
                        target: 1,
                        entry: second,
                        arg: 0,
                    },
                    Op::Halt,
                    Op::Shutdown,
                ],
            )
            .at(second, vec![Op::CpuDown]),
        MockFaults::default(),
    );
    let states = || [vm.vcpu_state(0).unwrap(), vm.vcpu_state(1).unwrap()];
    use VCpuState::*;
    assert_eq!(states(), [Off, Off]);
    vm.boot().unwrap();
    assert_eq!(states(), [Started, Off]);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _g = machine.enter(0);
            assert!(matches!(
                vm.run_vcpu(0).unwrap(),
                VmExit::CpuUp { target: 1, .. }
            ));
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while vm.vcpu_state(0).unwrap() != InGuest {
            assert!(std::time::Instant::now() < deadline, "vCPU 0 never entered");
            std::thread::yield_now();
        }
        probe.stop.store(true, Ordering::SeqCst);
    });
    assert_eq!(states(), [Bound, Started]);
    {
        let _g = machine.enter(1);
        assert_eq!(vm.run_vcpu(1).unwrap(), VmExit::CpuDown);
    }
    assert_eq!(states(), [Bound, Off]);
    assert_eq!(
        vm.unbind_vcpu(1),
        Err(VmError::VCpuState {
            vcpu: 1,
            op: "unbind",
            state: Off
        })
    );
    vm.unbind_vcpu(0).unwrap();
    assert_eq!(states(), [Started, Off]);
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Halt);
    assert_eq!(states(), [Bound, Off]);
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Shutdown);
    assert_eq!(states(), [Bound, Off]);
}

/// Regression: a vCPU the guest turned off stayed bound to the physical CPU it
/// stopped on, so after a CPU on its next run, on another physical CPU, entered
/// the guest without binding there (the mock, like aarch64, refuses that). The
/// guest's CPU off now unbinds it; the restarted vCPU binds where it runs.
#[test]
fn a_vcpu_turned_off_and_on_again_binds_where_it_runs_next() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let second = gpa(RAM + 0x1000);
    let up = Op::CpuUp {
        target: 1,
        entry: second,
        arg: 0,
    };
    let vm = vm_with::<Npt>(
        2,
        Program::new()
            .at(gpa(RAM), vec![up.clone(), up, Op::Shutdown])
            .at(second, vec![Op::CpuDown]),
        MockFaults::default(),
    );
    vm.boot().unwrap();
    for pcpu in [1, 2] {
        assert!(matches!(
            vm.run_vcpu(0).unwrap(),
            VmExit::CpuUp { target: 1, .. }
        ));
        let _g = machine.enter(pcpu);
        assert_eq!(vm.run_vcpu(1).unwrap(), VmExit::CpuDown, "on pCPU {pcpu}");
        assert_eq!(vm.vcpu_state(1).unwrap(), VCpuState::Off);
    }
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Shutdown);
}

/// Out of frames while faulting in a lazy page: the run ends with the address
/// space's error, and nothing leaks.
#[test]
fn out_of_memory_on_a_lazy_fault() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm_with::<ArmStage2Ipa40>(
        1,
        Program::new().at(
            gpa(RAM),
            vec![
                Op::Read {
                    gpa: gpa(LAZY),
                    width: Qword,
                    reg: 1,
                },
                Op::Shutdown,
            ],
        ),
        MockFaults::default(),
    );
    vm.boot().unwrap();
    machine.fail_frames_after(0);
    let err = vm.run_vcpu(0).unwrap_err();
    assert!(
        matches!(
            err,
            VmError::AddrSpace {
                op: "nested page fault",
                error: addrspace::Error::NoMemory { .. }
            }
        ),
        "{err:?}"
    );
    machine.never_fail();
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        VmExit::Shutdown,
        "the guest retries and goes on"
    );
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0);
}

/// `VmHal::inject_irq` (kept by the lead's decision for issue 13) reaches the
/// platform: on the mock it is recorded for a vCPU of a live VM and refused for an
/// unknown VM or vCPU.
#[test]
fn vmhal_inject_irq_reaches_the_platform() {
    use vm_core::VmHal;
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm_with::<Npt>(2, Program::new(), MockFaults::default());
    let id = vm.id();
    assert!(<hal_mock::MockHal as VmHal>::inject_irq(id, 1, 27));
    assert!(
        !<hal_mock::MockHal as VmHal>::inject_irq(id, 2, 27),
        "no vCPU 2"
    );
    assert!(
        !<hal_mock::MockHal as VmHal>::inject_irq(id + 1, 0, 27),
        "no such VM"
    );
    assert_eq!(machine.injected(), [(id, 1, 27)]);
}
