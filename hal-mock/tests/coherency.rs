//! TLB coherency: vCPU threads keep reading a page while the host unmaps it. After
//! `unmap_region` returns no read succeeds through the old translation; after the
//! page is mapped again to a new frame every vCPU reads the new data. vCPUs of
//! another VM on the same machine are never kicked. A vCPU that ignores
//! invalidations (a broken arch layer) is caught by the same probe.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use addrspace::{ArmStage2Ipa40, Ept, NestedFormat, Npt, Sv39x4, Sv48x4};
use hal_mock::{Action, Machine, MockFaults, MockVm, PROBE_DATA, Probe, run_vm, wait_until};
use vm_core::{MappingFlags, Populate, Unserved, VmExit};

const OLD: u64 = 0x0101_0101_0101_0101;
const NEW: u64 = 0x0202_0202_0202_0202;

/// A probe VM (see `hal_mock::probe_vm`) whose data page holds `OLD`.
fn probe_vm<F: NestedFormat>(
    id: usize,
    cpus: usize,
    faults: MockFaults,
) -> (Arc<MockVm<F>>, Arc<Probe>) {
    let (vm, probe) = hal_mock::probe_vm::<F>(id, cpus, faults).unwrap();
    vm.write_to_guest_of(PROBE_DATA, &OLD).unwrap();
    (vm, probe)
}

/// What one run of the protocol saw.
struct Outcome {
    probe: Arc<Probe>,
    kicks_a: u64,
    kicks_b: u64,
    kicks_on_b_pcpu: u64,
    broadcasts: u64,
    errors: usize,
}

/// VM A (3 vCPUs on pCPUs 1..=3) probes its data page while the host unmaps and
/// remaps it; VM B (1 vCPU on pCPU 10) probes its own page meanwhile.
fn run<F: NestedFormat>(broadcast: bool, faults: MockFaults) -> Outcome {
    let machine = Machine::with_defaults();
    machine.set_broadcast(broadcast);
    let _g = machine.enter(0);
    let (vm_a, probe) = probe_vm::<F>(1, 3, faults);
    let (vm_b, probe_b) = probe_vm::<F>(2, 1, MockFaults::default());
    let on_exit = |_: &MockVm<F>, vcpu: usize, exit: &VmExit| match exit {
        // The probe page is gone for a while: run again (the read is retried).
        VmExit::UnservedAccess(a) if a.gpa == PROBE_DATA && a.why == Unserved::NoArea => {
            Action::Resume
        }
        other => panic!("vCPU {vcpu}: unexpected {other:?}"),
    };
    let (report_a, report_b) = std::thread::scope(|s| {
        let a = s.spawn(|| run_vm(&machine, &vm_a, 1, on_exit));
        let b = s.spawn(|| run_vm(&machine, &vm_b, 10, on_exit));
        assert!(wait_until(
            "every vCPU to read",
            Duration::from_secs(10),
            || {
                probe.before_vcpus.load(Ordering::SeqCst) == 0b111
                    && probe_b.before_vcpus.load(Ordering::SeqCst) == 0b1
            }
        ));
        vm_a.unmap_region(PROBE_DATA, 0x1000).unwrap();
        probe.set_epoch(1);
        wait_until(
            "faults on the unmapped page",
            Duration::from_millis(300),
            || Probe::get(&probe.faults_unmapped) >= 3,
        );
        probe.set_epoch(2);
        vm_a.map_region(PROBE_DATA, 0x1000, MappingFlags::RW, Populate::Eager)
            .unwrap();
        vm_a.write_to_guest_of(PROBE_DATA, &NEW).unwrap();
        probe.expect.store(NEW, Ordering::SeqCst);
        probe.set_epoch(3);
        wait_until(
            "every vCPU to read the new data",
            Duration::from_millis(if faults.ignore_invalidate {
                300
            } else {
                10_000
            }),
            || probe.good_vcpus.load(Ordering::SeqCst) == 0b111,
        );
        probe.stop.store(true, Ordering::SeqCst);
        probe_b.stop.store(true, Ordering::SeqCst);
        (a.join().unwrap(), b.join().unwrap())
    });
    let out = Outcome {
        probe,
        kicks_a: vm_a.stats().kicks,
        kicks_b: vm_b.stats().kicks,
        kicks_on_b_pcpu: machine.kicks_of(10),
        broadcasts: machine.broadcasts(),
        errors: report_a.errors.len() + report_b.errors.len(),
    };
    assert_eq!(
        report_a.errors.len() + report_b.errors.len(),
        0,
        "{:?} {:?}",
        report_a.errors,
        report_b.errors
    );
    assert_eq!(Probe::get(&probe_b.stale) + Probe::get(&probe_b.wrong), 0);
    drop((vm_a, vm_b));
    assert_eq!(machine.frames_in_use(), 0, "frames leaked");
    out
}

fn check_coherent(o: &Outcome, broadcast: bool) {
    let p = &o.probe;
    assert_eq!(
        Probe::get(&p.stale),
        0,
        "a read succeeded through a removed translation"
    );
    assert_eq!(
        Probe::get(&p.wrong),
        0,
        "a read after the remap returned old data"
    );
    assert_eq!(
        p.good_vcpus.load(Ordering::SeqCst),
        0b111,
        "a vCPU never saw the new data"
    );
    assert!(Probe::get(&p.faults_unmapped) > 0);
    assert_eq!(o.errors, 0);
    if broadcast {
        assert!(o.broadcasts >= 1);
        assert_eq!(o.kicks_a, 0, "a broadcast needs no kick");
    } else {
        assert_eq!(o.broadcasts, 0);
        assert!(o.kicks_a >= 1, "vCPUs in the guest must have been kicked");
    }
    assert_eq!(
        (o.kicks_b, o.kicks_on_b_pcpu),
        (0, 0),
        "the other VM was disturbed"
    );
}

#[test]
fn unmap_with_kicks_npt() {
    let o = run::<Npt>(false, MockFaults::default());
    check_coherent(&o, false);
}

#[test]
fn unmap_with_kicks_arm_ipa40() {
    let o = run::<ArmStage2Ipa40>(false, MockFaults::default());
    check_coherent(&o, false);
}

#[test]
fn unmap_with_kicks_sv48x4() {
    let o = run::<Sv48x4>(false, MockFaults::default());
    check_coherent(&o, false);
}

#[test]
fn unmap_with_broadcast_sv39x4() {
    let o = run::<Sv39x4>(true, MockFaults::default());
    check_coherent(&o, true);
}

/// The control: a vCPU that drops its invalidations keeps reading through the
/// removed translation, and the probe sees it.
#[test]
fn ignored_invalidation_is_caught_ept() {
    let o = run::<Ept>(
        false,
        MockFaults {
            ignore_invalidate: true,
            ..MockFaults::default()
        },
    );
    assert!(
        Probe::get(&o.probe.stale) > 0,
        "the probe cannot see stale reads"
    );
}
