//! Host threads unmapping, remapping and protecting while vCPU threads load and
//! store: no frame is used after it was freed (the machine's generation check), no
//! translation is used after the call that removed it returned, no frame leaks. Run
//! with the mock's range-exact broadcast invalidation (as the aarch64 and riscv64
//! boards do) and with kicks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use addrspace::{ArmStage2Ipa40, NestedFormat, Npt, Sv39x4};
use common::*;
use hal_mock::{Action, GuestLog, Machine, MockFaults, MockVm, Op, Program, run_vm};
use vcpu_api::AccessWidth::Qword;
use vm_core::{MappingFlags, Populate, Unserved, VmExit};

const CODE: u64 = 0x1000_0000;
const DATA: u64 = 0x4000_0000;
/// Data pages; host thread `h` changes pages `[h * PAGES / 2, (h + 1) * PAGES / 2)`.
const PAGES: usize = 64;

/// Two vCPUs loop loading from and storing to every data page (all mapped at the
/// start) while two host threads each unmap a few pages of their half and map them
/// again at once, and now and then make them read-only and writable again. A vCPU
/// rarely finds a page missing, so the translations it caches live long, and a frame
/// freed before the invalidation that covers it is used.
fn unmap_race<F: NestedFormat>(
    broadcast: bool,
    faults: MockFaults,
) -> (Arc<Machine>, Vec<(usize, vm_core::VmError)>) {
    let machine = Machine::with_defaults();
    machine.set_broadcast(broadcast);
    let _g = machine.enter(0);
    let lp = gpa(CODE + 0x1000);
    let mut ops = Vec::new();
    for p in 0..PAGES as u64 {
        let page = DATA + p * 0x1000;
        ops.push(Op::Read {
            gpa: gpa(page),
            width: Qword,
            reg: 1,
        });
        ops.push(Op::WriteReg {
            gpa: gpa(page + 8),
            width: Qword,
            reg: 1,
            xor: p,
        });
    }
    ops.push(Op::Jump { to: lp });
    let program = Program::new()
        .at(
            gpa(CODE),
            vec![
                Op::CpuUp {
                    target: 1,
                    entry: lp + 0x100,
                    arg: 0,
                },
                Op::Jump { to: lp },
            ],
        )
        .at(lp, ops);
    let config = ram_config(1, "unmap race", 2, CODE, 0x1_0000)
        .memory_region(
            gpa(DATA),
            PAGES * 0x1000,
            MappingFlags::RW,
            vm_core::MapType::Alloc,
            Populate::Eager,
        )
        .build()
        .unwrap();
    let vm: Arc<MockVm<F>> =
        try_mock_vm(config, program, &Arc::new(GuestLog::default()), faults).unwrap();
    machine.watch_removals(vm.id(), (0..PAGES).map(|p| gpa(DATA) + p * 0x1000));
    let unserved = AtomicU64::new(0);
    let host_ops = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(2);
    vm.boot().unwrap();
    let report = std::thread::scope(|s| {
        let guest = s.spawn(|| {
            run_vm(&machine, &vm, 1, |_, vcpu, exit| match exit {
                VmExit::UnservedAccess(a)
                    if matches!(a.why, Unserved::NoArea | Unserved::Permission { .. }) =>
                {
                    unserved.fetch_add(1, Ordering::Relaxed);
                    Action::Skip
                }
                other => {
                    eprintln!("vCPU {vcpu}: unexpected {other:?}");
                    failed.store(true, Ordering::SeqCst);
                    Action::Stop
                }
            })
        });
        for h in 0..2 {
            let (machine, vm, host_ops) = (&machine, &vm, &host_ops);
            s.spawn(move || {
                let _g = machine.enter(8 + h);
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(h as u64 + 1);
                let mut next = move |n: u64| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed % n
                };
                let half = (PAGES / 2) as u64;
                while Instant::now() < deadline && vm.state() == vm_core::VmState::Running {
                    let first = next(half - 3);
                    let at = gpa(DATA + (h as u64 * half + first) * 0x1000);
                    let size = (1 + vcpu_api::usize_of(next(3))) * 0x1000;
                    let range = addrspace::GpaRange::new(at, size).unwrap();
                    let t = machine.tick();
                    vm.unmap_region(at, size).unwrap();
                    machine.removed(vm.id(), range, t);
                    let populate = if next(2) == 0 {
                        Populate::Eager
                    } else {
                        Populate::Lazy
                    };
                    vm.map_region(at, size, MappingFlags::RW, populate).unwrap();
                    if next(4) == 0 {
                        let t = machine.tick();
                        vm.protect_region(at, size, MappingFlags::READ).unwrap();
                        machine.removed(vm.id(), range, t);
                        vm.protect_region(at, size, MappingFlags::RW).unwrap();
                    }
                    host_ops.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The host threads end at the deadline; the scope waits for them after the
        // guest thread.
        std::thread::sleep(Duration::from_millis(50));
        let _ = vm.shutdown();
        guest.join().unwrap()
    });
    let stats = vm.stats();
    eprintln!(
        "{} ({}): {} host rounds, {} shootdowns, {} unserved, {} stale uses",
        F::NAME,
        if broadcast { "broadcast" } else { "kicks" },
        host_ops.load(Ordering::Relaxed),
        stats.shootdowns,
        unserved.load(Ordering::Relaxed),
        machine.stale_uses()
    );
    assert!(!failed.load(Ordering::SeqCst));
    assert!(stats.shootdowns > 0);
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0, "frames leaked");
    (machine, report.errors)
}

/// The race with working vCPUs: nothing stale.
fn clean_race<F: NestedFormat>(broadcast: bool) {
    let (machine, errors) = unmap_race::<F>(broadcast, MockFaults::default());
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        machine.stale_uses() == 0 && machine.stale_translations() == 0,
        "{} uses of freed frames, {} of removed translations:\n{}",
        machine.stale_uses(),
        machine.stale_translations(),
        machine.stale_reports().join("\n")
    );
}

/// Regression: `unmap_region` dropped the address-space lock between the unmap, the
/// shootdown and `complete_flush`, and completing a flush token released the frames
/// of every older token too: one unmap freed the frames of another whose broadcast
/// invalidation (by range) had not yet reached a TLB that held them.
#[test]
fn concurrent_unmaps_free_no_frame_before_its_shootdown_broadcast_sv39x4() {
    clean_race::<Sv39x4>(true);
}

#[test]
fn concurrent_unmaps_free_no_frame_before_its_shootdown_broadcast_arm_ipa40() {
    clean_race::<ArmStage2Ipa40>(true);
}

#[test]
fn concurrent_unmaps_free_no_frame_before_its_shootdown_kicks_npt() {
    clean_race::<Npt>(false);
}

/// The control: vCPUs that drop their invalidations keep using removed translations
/// and freed frames, and the checks see both.
#[test]
fn ignored_invalidation_is_caught_by_the_race_checks() {
    // (Its vCPUs may also stop on a fault loop: a stale read-only entry never
    // goes away.)
    // The race it needs may not happen in one 2-second round on a loaded machine
    // (the vCPU thread may barely run): up to three rounds, each on a fresh machine.
    let mut seen = (0, 0);
    for _ in 0..3 {
        let (machine, _) = unmap_race::<Npt>(
            false,
            MockFaults {
                ignore_invalidate: true,
                ..MockFaults::default()
            },
        );
        seen = (machine.stale_uses(), machine.stale_translations());
        if seen.0 > 0 && seen.1 > 0 {
            break;
        }
    }
    assert!(seen.0 > 0, "freed frames used unseen");
    assert!(seen.1 > 0, "removed translations used unseen");
}

/// Regression: a vCPU that ignores its invalidations (the control above) stored
/// through its stale translation into the freed frame, which the allocator had
/// meanwhile handed out for its own bookkeeping; the corrupted link later made a
/// map read a POISON-derived frame address and the test process abort. The mock
/// reports such a store and does not carry it out.
#[test]
fn a_vcpu_ignoring_invalidations_never_writes_into_a_freed_frame() {
    const UNMAP: u64 = 0x55;
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let page = DATA;
    let program = Program::new().at(
        gpa(CODE),
        vec![
            // Cache the page's translation, then have the host unmap it.
            Op::Write {
                gpa: gpa(page),
                width: Qword,
                value: 7,
            },
            Op::Hypercall {
                nr: UNMAP,
                args: [page, 0, 0, 0, 0, 0],
            },
            // A store through the stale translation.
            Op::Write {
                gpa: gpa(page),
                width: Qword,
                value: 0x1234_5678,
            },
            Op::Shutdown,
        ],
    );
    let config = ram_config(1, "stale store", 1, CODE, 0x1_0000)
        .memory_region(
            gpa(DATA),
            0x1000,
            MappingFlags::RW,
            vm_core::MapType::Alloc,
            Populate::Eager,
        )
        .build()
        .unwrap();
    let vm: Arc<MockVm<Npt>> = try_mock_vm(
        config,
        program,
        &Arc::new(GuestLog::default()),
        MockFaults {
            ignore_invalidate: true,
            ..MockFaults::default()
        },
    )
    .unwrap();
    let addrspace::WalkEnd::Translated(t) = vm.walk(gpa(page)).end else {
        panic!("the data page is mapped eagerly");
    };
    let frame = t.hpa;
    vm.boot().unwrap();
    let report = run_vm(&machine, &vm, 1, |vm, vcpu, exit| match exit {
        VmExit::Hypercall(vcpu_api::Hypercall {
            nr: UNMAP, args, ..
        }) => {
            vm.unmap_region(gpa(args[0]), 0x1000).unwrap();
            Action::Return(0)
        }
        other => panic!("vCPU {vcpu}: unexpected exit {other:?}"),
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(machine.stale_uses() > 0, "the stale store was not reported");
    let word = machine.phys_to_virt(frame).as_ptr::<u64>();
    // SAFETY: the frame is simulated memory that lives as long as the machine.
    let after = unsafe { word.read_volatile() };
    assert_eq!(
        after,
        u64::from_ne_bytes([hal_mock::POISON; 8]),
        "the freed frame was written through the stale translation"
    );
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0, "frames leaked");
}
