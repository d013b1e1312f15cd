//! TLB coherency: vCPU threads keep reading a page while the host unmaps it. After
//! `unmap_region` returns no read succeeds through the old translation; after the
//! page is mapped again to a new frame every vCPU reads the new data. vCPUs of
//! another VM on the same machine are never kicked. A vCPU that ignores
//! invalidations (a broken arch layer) is caught by the same probe, and by the
//! machine's check of freed frames.

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
    /// Uses of freed frames the machine saw.
    freed_frame_uses: u64,
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
        freed_frame_uses: machine.stale_uses(),
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
    assert_eq!(o.freed_frame_uses, 0, "a vCPU used a freed frame");
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
    assert!(
        o.freed_frame_uses > 0,
        "the machine cannot see a freed frame used through a stale translation"
    );
}

/// A VM whose one vCPU loads from pages `DATA` and `DATA + 0x1000`, then halts
/// (twice), run to its first halt on this thread: both pages are in its TLB.
fn two_pages_cached(machine: &Arc<Machine>) -> Arc<MockVm<Sv39x4>> {
    const CODE: usize = 0x1000_0000;
    const DATA: usize = 0x2000_0000;
    let g = addrspace::GuestPhysAddr::from_usize;
    let read = |gpa| hal_mock::Op::Read {
        gpa: g(gpa),
        width: vcpu_api::AccessWidth::Qword,
        reg: 1,
    };
    let program = hal_mock::Program::new().at(
        g(CODE),
        vec![
            read(DATA),
            read(DATA + 0x1000),
            hal_mock::Op::Halt,
            hal_mock::Op::Halt,
        ],
    );
    let config = vm_core::VmConfigBuilder::new(1, "two pages", 1)
        .entry_point(g(CODE))
        .memory_region(
            g(CODE),
            0x1000,
            MappingFlags::RWX,
            vm_core::MapType::Alloc,
            Populate::Eager,
        )
        .memory_region(
            g(DATA),
            0x2000,
            MappingFlags::RW,
            vm_core::MapType::Alloc,
            Populate::Eager,
        )
        .build()
        .unwrap();
    let vcpu = hal_mock::MockVCpuConfig::new(Arc::new(program), Arc::default());
    let vm: Arc<MockVm<Sv39x4>> = vm_core::Vm::new(
        config.into_valid().unwrap(),
        &vm_core::HostGrant::none(),
        |_| (vcpu.clone(), ()),
    )
    .unwrap();
    vm.boot().unwrap();
    let _g = machine.enter(1);
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Halt);
    let cached = vm.with_vcpu(0, |v| v.tlb().cached_pages()).unwrap();
    assert!(cached.contains(&g(DATA)) && cached.contains(&g(DATA + 0x1000)));
    vm
}

/// Regression: the mock's broadcast invalidation flushed every software TLB of the
/// VM whatever the range, unlike `TLBI IPAS2E1IS` / `HFENCE.GVMA` by address, which
/// hid a shootdown that missed part of what it should cover. Unmapping one page
/// drops that page from the TLB and leaves the other.
#[test]
fn broadcast_invalidation_is_exact_to_the_range() {
    let machine = Machine::with_defaults();
    machine.set_broadcast(true);
    let _g = machine.enter(0);
    let vm = two_pages_cached(&machine);
    let data = PROBE_DATA; // 0x2000_0000, as in `two_pages_cached`
    vm.unmap_region(data, 0x1000).unwrap();
    assert_eq!(machine.broadcasts(), 1);
    assert_eq!(
        vm.with_vcpu(0, |v| v.tlb().cached_pages()).unwrap(),
        vec![
            addrspace::GuestPhysAddr::from_usize(0x1000_0000),
            data + 0x1000
        ]
    );
}

/// Without a broadcast, a vCPU outside the guest is not kicked and its TLB is left
/// alone until its next entry, which invalidates it (the protocol's other half).
#[test]
fn kicks_leave_a_vcpu_outside_the_guest_to_its_next_entry() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = two_pages_cached(&machine);
    let flushes = vm
        .with_vcpu(0, |v| v.tlb().flushes.load(Ordering::SeqCst))
        .unwrap();
    vm.unmap_region(PROBE_DATA, 0x1000).unwrap();
    assert_eq!(vm.stats().kicks, 0);
    assert_eq!(
        vm.with_vcpu(0, |v| v.tlb().cached_pages().len()).unwrap(),
        3
    );
    let _p = machine.enter(1);
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Halt);
    assert_eq!(
        vm.with_vcpu(0, |v| v.tlb().flushes.load(Ordering::SeqCst))
            .unwrap(),
        flushes + 1
    );
}
