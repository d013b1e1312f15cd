//! Memory regions of whole VMs on the mock: identical regions placed by the host,
//! pass-through planning (unsorted, overlapping, adjacent, unaligned) and collisions
//! with RAM, two VMs that cannot reach each other, lazy pages faulted by 4 vCPUs at
//! once, and the guest-memory copy API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use addrspace::{AccessKind, ArmStage2Ipa48, Ept, HostPhysAddr, NestedFormat, Npt, Sv39x4};
use common::*;
use hal_mock::{
    Action, GuestLog, Machine, MockFaults, MockVCpu, MockVm, Op, Program, run_vm, wait_until,
};
use platforms::host::TestDevice;
use vcpu_api::AccessWidth::{Byte, Qword};
use vcpu_api::Hypercall;
use vm_core::{
    ConfigError, MapType, MappingFlags, PassthroughRange, Populate, Unserved, VmConfigBuilder,
    VmError, VmExit,
};

const RAM: u64 = 0x4100_0000;

/// Two identical regions that overlap on paper, the entry point 0x1000 into the
/// first.
fn identical_config(id: usize) -> vm_core::VmConfig {
    VmConfigBuilder::new(id, "identical", 1)
        .entry_point(gpa(RAM + 0x1000))
        .memory_region(
            gpa(RAM),
            0x10_0000,
            MappingFlags::RWX,
            MapType::Identical,
            Populate::Eager,
        )
        .memory_region(
            gpa(RAM),
            0x20_0000,
            MappingFlags::RW,
            MapType::Identical,
            Populate::Eager,
        )
        .build()
        .unwrap()
}

/// Issue 14: identical regions are placed as axvisor places them since 2025-09,
/// where the host allocates (2 MiB-aligned), mapped at GPA = HPA there, so regions
/// that overlap on paper load; the placement shows in `Vm::config`, and the entry
/// point moves with its region. Without memory, creation fails naming the region
/// and leaks nothing.
#[test]
fn identical_regions_are_placed_where_the_host_allocates() {
    let machine = Machine::new(0x4000_0000, 64 << 20);
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<Npt>(identical_config(1), Program::new(), &log);
    let regions = &vm.config().kernel.memory_regions;
    let (a, b) = (regions[0].gpa, regions[1].gpa);
    assert_ne!(a, b, "each region gets its own host memory");
    for (r, size) in [(a, 0x10_0000), (b, 0x20_0000)] {
        assert_eq!(r.as_usize() % 0x20_0000, 0, "{r:?} is 2 MiB-aligned");
        let t = vm.walk(r + (size - 8)).translation().unwrap();
        assert_eq!(
            t.hpa,
            HostPhysAddr::from_usize(r.as_usize() + size - 8),
            "GPA = HPA"
        );
    }
    assert_eq!(vm.config().kernel.entry_point, a + 0x1000);
    vm.write_to_guest_of(a + 0x1000, &1u64).unwrap();
    vm.write_to_guest_of(b + 0x1000, &2u64).unwrap();
    assert_eq!(vm.read_from_guest_of::<u64>(a + 0x1000).unwrap(), 1);
    assert_eq!(vm.read_from_guest_of::<u64>(b + 0x1000).unwrap(), 2);
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0);
    // No memory for the regions: only the root frame is left to allocate.
    machine.fail_frames_after(1);
    let err = try_mock_vm::<Npt>(
        identical_config(4),
        Program::new(),
        &log,
        MockFaults::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VmError::NoMemory { field, size: 0x10_0000 } if field.index == Some(0)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("kernel.memory_regions[0]: no 0x100000 bytes")
    );
    machine.never_fail();
    assert_eq!(machine.frames_in_use(), 0, "a failed creation leaked");
}

/// Issue 14: `passthrough_addresses` are host MMIO at the same guest address (they
/// used to be dropped), merged with the device ranges; x86 port-I/O devices (COM1 at
/// 0x3f8) claim no guest-physical page and stay off the MMIO bus, for the board.
#[test]
fn passthrough_addresses_map_and_port_devices_stay_off_the_bus() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let hpa = HostPhysAddr::from_usize;
    let config = ram_config(1, "pa", 1, 0x8000_0000, 0x10_0000)
        .passthrough_device("uart", gpa(0x0900_0000), hpa(0x0900_0000), 0x1000, 33)
        .passthrough_address(gpa(0x0900_1000), 0x10)
        .passthrough_address(gpa(0x2804_1000), 0x2000)
        .port_device("x86-com1", 0x3f8, 8, 4, 2, &[])
        .emu_device("dev", gpa(0x0b00_0000), 0x1000, 0, 0, &[])
        .build()
        .unwrap();
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<Npt>(config, Program::new(), &log);
    let r = |g: u64, size| PassthroughRange {
        gpa: gpa(g),
        hpa: hpa(usize::try_from(g).unwrap()),
        size,
    };
    assert_eq!(
        vm.passthrough_ranges(),
        [r(0x0900_0000, 0x2000), r(0x2804_1000, 0x2000)]
    );
    let t = vm.walk(gpa(0x2804_2ff8)).translation().unwrap();
    assert!(t.hpa == hpa(0x2804_2ff8) && t.flags.contains(MappingFlags::DEVICE));
    let names: Vec<String> = vm.mmio_devices().into_iter().map(|d| d.0).collect();
    assert_eq!(names, ["dev"]);
    assert!(
        vm.walk(gpa(0x3f8)).translation().is_none(),
        "no page for a port"
    );
}

fn passthrough_vm<F: NestedFormat>() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let hpa = HostPhysAddr::from_usize;
    let config = ram_config(1, "pt", 1, 0x8000_0000, 0x10_0000)
        // Unsorted; [1] unaligned; [0] adjacent to [1]; [2] overlaps [0];
        // [3] elsewhere with GPA != HPA; [4] adjacent to [3] with another offset.
        .passthrough_device("b", gpa(0x0900_1000), hpa(0x0900_1000), 0x1000, 1)
        .passthrough_device("a", gpa(0x0900_0010), hpa(0x0900_0010), 0x20, 2)
        .passthrough_device("c", gpa(0x0900_1800), hpa(0x0900_1800), 0x1800, 3)
        .passthrough_device("d", gpa(0x1000_0000), hpa(0x2000_0000), 0x2000, 4)
        .passthrough_device("e", gpa(0x1000_2000), hpa(0x3000_0000), 0x10, 5)
        .build()
        .unwrap();
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<F>(config, Program::new(), &log);
    let r = |g: u64, h: usize, size| PassthroughRange {
        gpa: gpa(g),
        hpa: hpa(h),
        size,
    };
    assert_eq!(
        vm.passthrough_ranges(),
        [
            r(0x0900_0000, 0x0900_0000, 0x3000),
            r(0x1000_0000, 0x2000_0000, 0x2000),
            r(0x1000_2000, 0x3000_0000, 0x1000),
        ]
    );
    for (g, h) in [
        (0x0900_0000u64, 0x0900_0000usize),
        (0x0900_2ff8, 0x0900_2ff8),
        (0x1000_1000, 0x2000_1000),
        (0x1000_2008, 0x3000_0008),
    ] {
        let t = vm
            .walk(gpa(g))
            .translation()
            .unwrap_or_else(|| panic!("{g:#x} unmapped"));
        assert_eq!(t.hpa, hpa(h), "{g:#x}");
        assert!(
            t.flags.contains(MappingFlags::DEVICE),
            "{g:#x}: {}",
            t.flags
        );
    }
    assert!(vm.walk(gpa(0x0900_3000)).translation().is_none());
    // The copy API refuses device memory.
    assert!(matches!(
        vm.read_from_guest_of::<u32>(gpa(0x0900_0000)),
        Err(VmError::AddrSpace {
            error: addrspace::Error::DeviceMemory { .. },
            ..
        })
    ));
    // A RAM region over a pass-through device is refused, naming the device range.
    let err = vm
        .map_region(gpa(0x0900_2000), 0x2000, MappingFlags::RW, Populate::Lazy)
        .unwrap_err();
    assert!(
        matches!(err, VmError::AddrSpace { error: addrspace::Error::Overlap { existing, .. }, .. }
            if existing.start() == gpa(0x0900_0000)),
        "{err:?}"
    );
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0);
}

#[test]
fn passthrough_merge_npt() {
    passthrough_vm::<Npt>();
}

#[test]
fn passthrough_merge_arm_ipa48() {
    passthrough_vm::<ArmStage2Ipa48>();
}

/// Devices colliding with RAM are refused: in the config, and at run time.
#[test]
fn ram_device_collisions_are_refused() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let hpa = HostPhysAddr::from_usize;
    let base = || ram_config(1, "c", 1, 0x8000_0000, 0x10_0000);
    let log = Arc::new(GuestLog::default());
    let new = |c| try_mock_vm::<Sv39x4>(c, Program::new(), &log, MockFaults::default());
    let err = new(base()
        .passthrough_device("uart", gpa(0x800f_f000), hpa(0x0900_0000), 0x2000, 1)
        .build_unchecked())
    .unwrap_err();
    assert!(
        matches!(
            err,
            VmError::Config(ConfigError::DeviceOverlapsRam {
                region: 0,
                at: 0x800f_f000,
                ..
            })
        ),
        "{err:?}"
    );
    let err = new(base()
        .emu_device("dev", gpa(0x8000_0800), 0x100, 0, 0, &[])
        .build_unchecked())
    .unwrap_err();
    assert!(
        matches!(err, VmError::Config(ConfigError::DeviceOverlapsRam { .. })),
        "{err:?}"
    );
    assert_eq!(machine.frames_in_use(), 0);
    // At run time: an emulated device over RAM names the RAM area.
    let vm = new(base().build().unwrap()).unwrap();
    let err = vm
        .add_mmio_device(
            "late",
            gpa(0x8008_0000),
            0x1000,
            Arc::new(TestDevice::default()),
        )
        .unwrap_err();
    assert!(
        matches!(err, VmError::AddrSpace { error: addrspace::Error::Overlap { existing, .. }, .. }
            if existing.start() == gpa(0x8000_0000)),
        "{err:?}"
    );
    assert!(
        vm.mmio_devices().is_empty(),
        "a refused device stays off the bus"
    );
}

/// Two VMs with the same layout on one machine: each guest sees only its data, a
/// guest access at the other VM's host-physical address is a reported fault, and
/// their frames are disjoint.
#[test]
fn two_vms_cannot_reach_each_other() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let config = |id| {
        ram_config(id, "iso", 1, 0x8000_0000, 0x4_0000)
            .build()
            .unwrap()
    };
    let log = Arc::new(GuestLog::default());
    let vm1 = mock_vm::<Ept>(config(1), Program::new(), &log);
    // VM 2's guest reads VM 1's data page by its host-physical address.
    let foreign = vm1
        .walk(gpa(0x8000_8000))
        .translation()
        .unwrap()
        .hpa
        .as_usize() as u64;
    let program = Program::new().at(
        gpa(0x8000_0000),
        vec![
            Op::Write {
                gpa: gpa(0x8000_8000),
                width: Qword,
                value: 2,
            },
            Op::Read {
                gpa: gpa(0x8000_8000),
                width: Qword,
                reg: 1,
            },
            Op::Check {
                reg: 1,
                value: 2,
                what: "own data",
            },
            Op::Set {
                reg: 2,
                value: 0xdead,
            },
            Op::Read {
                gpa: gpa(foreign),
                width: Qword,
                reg: 2,
            },
            Op::Check {
                reg: 2,
                value: 0xdead,
                what: "foreign read not served",
            },
            Op::Write {
                gpa: gpa(foreign),
                width: Byte,
                value: 0xff,
            },
            Op::Shutdown,
        ],
    );
    let vm2 = mock_vm::<Ept>(config(2), program, &log);
    vm1.write_to_guest_of(gpa(0x8000_8000), &1u64).unwrap();
    let report = run_vm(&machine, &vm2, 1, |_, _, exit| match exit {
        VmExit::UnservedAccess(a) => {
            assert_eq!(a.why, Unserved::NoArea);
            assert!(a.walk.translation().is_none());
            Action::Skip
        }
        other => panic!("{other:?}"),
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(log.counts(), (2, 0), "{:?}", log.failures());
    let unserved: Vec<_> = report
        .exits
        .iter()
        .filter_map(|(_, e)| match e {
            VmExit::UnservedAccess(a) => Some((a.gpa, a.access)),
            _ => None,
        })
        .collect();
    assert_eq!(
        unserved,
        [
            (gpa(foreign), AccessKind::Read),
            (gpa(foreign), AccessKind::Write)
        ]
    );
    assert_eq!(
        vm1.read_from_guest_of::<u64>(gpa(0x8000_8000)).unwrap(),
        1,
        "VM 1 untouched"
    );
    let frames = |vm: &MockVm<Ept>| -> Vec<usize> {
        (0..0x40)
            .map(|p| {
                vm.walk(gpa(0x8000_0000 + p * 0x1000))
                    .translation()
                    .unwrap()
                    .hpa
                    .as_usize()
            })
            .collect()
    };
    let (f1, f2) = (frames(&vm1), frames(&vm2));
    assert!(f1.iter().all(|f| !f2.contains(f)), "shared frames");
    drop((vm1, vm2));
    assert_eq!(machine.frames_in_use(), 0);
}

/// Four vCPU threads fault the same lazy pages at once: each page gets exactly one
/// frame (every vCPU's marker lands in the same page), and nothing leaks.
///
/// The race on the first page is forced, not hoped for (it used to be, and under
/// load the threads sometimes never overlapped): vCPU 0 faults first and its fault
/// handler is held in the frame allocator, inside the address-space lock, until the
/// three others have also taken their nested fault on that page; each of them must
/// then find the page mapped by vCPU 0 (a spurious fault), whatever the scheduling.
fn concurrent_faults<F: NestedFormat>() {
    const LAZY: u64 = 0x9000_0000;
    const PAGES: u64 = 256;
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let config = ram_config(1, "lazy", 4, 0x8000_0000, 0x1_0000)
        .memory_region(
            gpa(LAZY),
            usize::try_from(PAGES * 0x1000).unwrap(),
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy,
        )
        .build()
        .unwrap();
    const WAIT: u64 = 1;
    const GATE: u64 = 2;
    let gate = std::sync::Barrier::new(4);
    // vCPU `t` runs at 0x8000_0000 + t * 0x1000, touches every lazy page and leaves
    // its marker `t + 1` in byte `t` of each.
    let code = |t: u64| {
        let mut ops = vec![];
        if t == 0 {
            ops.extend((1..4).map(|s| Op::CpuUp {
                target: s,
                entry: gpa(0x8000_0000 + s * 0x1000),
                arg: 0,
            }));
        }
        // All four start faulting together.
        ops.push(Op::Hypercall {
            nr: GATE,
            args: [0; 6],
        });
        for p in 0..PAGES {
            ops.push(Op::Read {
                gpa: gpa(LAZY + p * 0x1000),
                width: Qword,
                reg: 1,
            });
            ops.push(Op::Write {
                gpa: gpa(LAZY + p * 0x1000 + t),
                width: Byte,
                value: t + 1,
            });
        }
        ops.push(if t == 0 {
            Op::Hypercall {
                nr: WAIT,
                args: [0; 6],
            }
        } else {
            Op::CpuDown
        });
        ops.push(Op::Shutdown);
        ops
    };
    let program = (0..4).fold(Program::new(), |p, t| {
        p.at(gpa(0x8000_0000 + t * 0x1000), code(t))
    });
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<F>(config, program, &log);
    // Frees vCPU 0's held fault once all four vCPUs took their nested fault on the
    // first page (or after the time limit, so a failure cannot hang the test).
    let forced = AtomicBool::new(false);
    // Nested faults taken before the race starts (set by vCPU 0 at the gate).
    let base = AtomicU64::new(u64::MAX);
    let release = || {
        let all = wait_until(
            "four faults on the first page",
            Duration::from_secs(20),
            || {
                let b = base.load(SeqCst);
                b != u64::MAX && machine.nested_faults() >= b + 4
            },
        );
        forced.store(all, SeqCst);
        machine.hold_frames(false);
    };
    let on_exit = |vm: &vm_core::Vm<MockVCpu<F>>, vcpu: usize, exit: &VmExit| match exit {
        VmExit::Hypercall(Hypercall { nr: GATE, .. }) => {
            if vcpu == 0 {
                machine.hold_frames(true);
            }
            gate.wait();
            // vCPU 0 goes first; the others leave the gate once its fault is held.
            if vcpu == 0 {
                base.store(machine.nested_faults(), SeqCst);
            } else {
                wait_until("vCPU 0's fault held", Duration::from_secs(20), || {
                    machine.frames_waiting() == 1
                });
            }
            Action::Return(0)
        }
        VmExit::Hypercall(Hypercall { nr: WAIT, .. }) => {
            while (1..4).any(|i| vm.is_vcpu_started(i)) {
                std::thread::yield_now();
            }
            Action::Return(0)
        }
        other => panic!("{other:?}"),
    };
    let report = std::thread::scope(|s| {
        s.spawn(release);
        run_vm(&machine, &vm, 1, on_exit)
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(
        forced.load(SeqCst),
        "the four vCPUs did not all fault on the first page while it was being mapped"
    );
    let stats = vm.stats();
    assert_eq!(
        stats.data_frames,
        16 + usize::try_from(PAGES).unwrap(),
        "one frame per lazy page"
    );
    assert_eq!(stats.faults_mapped, PAGES, "each lazy page was mapped once");
    // The forced race: the three others found the first page mapped by vCPU 0.
    assert!(
        stats.faults_spurious >= 3,
        "{} faults found resolved by another vCPU, expected at least 3",
        stats.faults_spurious
    );
    eprintln!(
        "{}: {} lazy faults, {} found resolved by another vCPU",
        F::NAME,
        stats.faults_mapped,
        stats.faults_spurious
    );
    assert_eq!(stats.deferred_frames, 0);
    // Every lazy page is mapped once, to a distinct frame.
    let mut frames: Vec<usize> = (0..PAGES)
        .map(|p| {
            vm.walk(gpa(LAZY + p * 0x1000))
                .translation()
                .unwrap()
                .hpa
                .as_usize()
        })
        .collect();
    frames.sort_unstable();
    frames.dedup();
    assert_eq!(frames.len(), usize::try_from(PAGES).unwrap());
    for p in 0..PAGES {
        let markers: [u8; 4] = vm.read_from_guest_of(gpa(LAZY + p * 0x1000)).unwrap();
        assert_eq!(
            markers,
            [1, 2, 3, 4],
            "page {p}: every vCPU wrote into the same frame"
        );
    }
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0, "frames leaked");
}

#[test]
fn four_vcpus_fault_the_same_lazy_pages_npt() {
    concurrent_faults::<Npt>();
}

#[test]
fn four_vcpus_fault_the_same_lazy_pages_sv39x4() {
    concurrent_faults::<Sv39x4>();
}

#[test]
fn four_vcpus_fault_the_same_lazy_pages_arm_ipa48() {
    concurrent_faults::<ArmStage2Ipa48>();
}

/// The copy API: alignment checked, page and region crossings handled, holes are
/// errors (nothing copied), lazy pages faulted in on access.
#[test]
fn guest_memory_copy_api() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let config = ram_config(1, "copy", 1, 0x8000_0000, 0x2000)
        .memory_region(
            gpa(0x8000_2000),
            0x2000,
            MappingFlags::READ,
            MapType::Alloc,
            Populate::Lazy,
        )
        .build()
        .unwrap();
    let log = Arc::new(GuestLog::default());
    let vm = mock_vm::<Npt>(config, Program::new(), &log);
    assert!(matches!(
        vm.read_from_guest_of::<u64>(gpa(0x8000_0004)),
        Err(VmError::Unaligned { align: 8, .. })
    ));
    // Across the page and region boundary into a lazy (host-writable) region.
    let data: Vec<u8> = (0..32).collect();
    vm.write_guest(gpa(0x8000_1ff0), &data).unwrap();
    let mut back = [0u8; 32];
    vm.read_guest(gpa(0x8000_1ff0), &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    assert_eq!(vm.stats().data_frames, 3, "one lazy page faulted in");
    // A hole: error, nothing written.
    assert!(matches!(
        vm.write_guest(gpa(0x8000_3ff8), &[1; 16]),
        Err(VmError::AddrSpace {
            error: addrspace::Error::NoArea { .. },
            ..
        })
    ));
    assert_eq!(vm.read_from_guest_of::<u64>(gpa(0x8000_3ff8)).unwrap(), 0);
    vm.load_kernel(&[0xaa; 0x100]).unwrap();
    assert_eq!(vm.read_from_guest_of::<u8>(gpa(0x8000_00ff)).unwrap(), 0xaa);
    let dump = vm.to_string();
    assert!(
        dump.contains("alloc (lazy)") && dump.contains("vCPU 0"),
        "{dump}"
    );
}

/// A VM with 1 MiB of RAM at 0x8000_0000 and a 1 MiB lazy region with `flags` right
/// after it.
fn lazy_vm<F: NestedFormat>(flags: MappingFlags) -> Arc<MockVm<F>> {
    let config = ram_config(1, "lazy", 1, 0x8000_0000, 0x10_0000)
        .memory_region(
            gpa(0x8010_0000),
            0x10_0000,
            flags,
            MapType::Alloc,
            Populate::Lazy,
        )
        .build()
        .unwrap();
    mock_vm::<F>(config, Program::new(), &Arc::new(GuestLog::default()))
}

/// `read_guest` of a 1 MiB lazy region plus one byte past it failed with `NoArea`
/// after faulting in the region's 256 pages: a failed copy leaves the VM as it was,
/// also when the allocator runs dry half-way.
#[test]
fn failed_guest_copy_populates_nothing() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = lazy_vm::<Ept>(MappingFlags::RW);
    let in_use = machine.frames_in_use();
    let mut buf = vec![0u8; 0x10_0001];
    assert!(matches!(
        vm.read_guest(gpa(0x8010_0000), &mut buf),
        Err(VmError::AddrSpace {
            error: addrspace::Error::NoArea { .. },
            ..
        })
    ));
    assert!(matches!(
        vm.write_guest(gpa(0x8010_0000), &buf),
        Err(VmError::AddrSpace {
            error: addrspace::Error::NoArea { .. },
            ..
        })
    ));
    assert_eq!(machine.frames_in_use(), in_use, "a failed copy took frames");
    assert_eq!(vm.stats().data_frames, 256, "only the eager RAM");
    // Out of frames half-way through the lazy pages: nothing taken either.
    machine.fail_frames_after(100);
    assert!(matches!(
        vm.write_guest(gpa(0x8010_0000), &buf[..0x10_0000]),
        Err(VmError::AddrSpace {
            error: addrspace::Error::NoMemory { .. },
            ..
        })
    ));
    machine.never_fail();
    assert_eq!(machine.frames_in_use(), in_use);
    vm.write_guest(gpa(0x8010_0000), &buf[..0x10_0000]).unwrap();
    assert_eq!(vm.stats().data_frames, 512);
}

/// `write_guest` / `load_image` into a lazy region without READ (execute-only,
/// write-only) failed with `NotPopulated`, because pages were faulted in as guest
/// reads; the same eager region worked. The host populates whatever the guest may do.
#[test]
fn host_copies_populate_lazy_regions_without_read() {
    fn check<F: NestedFormat>(flags: MappingFlags) {
        let machine = Machine::with_defaults();
        let _g = machine.enter(0);
        let vm = lazy_vm::<F>(flags);
        let image: Vec<u8> = (0..0x3000u32).map(|i| i.to_le_bytes()[0]).collect();
        vm.load_image(gpa(0x8010_0800), &image).unwrap();
        let mut back = vec![0u8; image.len()];
        vm.read_guest(gpa(0x8010_0800), &mut back).unwrap();
        assert_eq!(back, image, "{} {flags}", F::NAME);
        let t = vm.walk(gpa(0x8010_1000)).translation().unwrap();
        assert_eq!(t.flags, flags, "{}: the guest's rights are kept", F::NAME);
    }
    check::<Ept>(MappingFlags::EXECUTE);
    check::<ArmStage2Ipa48>(MappingFlags::EXECUTE);
    check::<ArmStage2Ipa48>(MappingFlags::WRITE);
    check::<Sv39x4>(MappingFlags::EXECUTE);
}

/// Issue 10, through vm-core: `protect_region` on a pass-through (DEVICE) range with
/// flags lacking DEVICE turned it into copyable RAM, and `read_from_guest_of` then
/// reached `phys_to_virt` of a device address (a panic on the mock, device registers
/// on a board). The area keeps its memory type: the copy API still refuses it, the
/// leaf stays a device mapping, and another memory type is refused.
#[test]
fn protect_region_on_a_passthrough_range_keeps_it_device_memory() {
    fn check<F: NestedFormat>() {
        let machine = Machine::with_defaults();
        let _g = machine.enter(0);
        let uart = gpa(0x0900_0000);
        let config = ram_config(1, "protect device", 1, 0x8000_0000, 0x10_0000)
            .passthrough_device(
                "uart",
                uart,
                HostPhysAddr::from_usize(0x0900_0000),
                0x1000,
                33,
            )
            .build()
            .unwrap();
        let vm = mock_vm::<F>(config, Program::new(), &Arc::new(GuestLog::default()));
        vm.protect_region(uart, 0x1000, MappingFlags::READ).unwrap();
        let t = vm.walk(uart).translation().unwrap();
        assert_eq!(
            t.flags,
            MappingFlags::DEVICE | MappingFlags::READ,
            "{}",
            F::NAME
        );
        assert!(matches!(
            vm.read_from_guest_of::<u32>(uart),
            Err(VmError::AddrSpace {
                error: addrspace::Error::DeviceMemory { .. },
                ..
            })
        ));
        assert!(matches!(
            vm.protect_region(uart, 0x1000, MappingFlags::RW | MappingFlags::UNCACHED),
            Err(VmError::AddrSpace {
                error: addrspace::Error::MemoryType { .. },
                ..
            })
        ));
        assert_eq!(vm.walk(uart).translation().unwrap().flags, t.flags);
        drop(vm);
        assert_eq!(machine.frames_in_use(), 0);
    }
    check::<Npt>();
    check::<Ept>();
    check::<ArmStage2Ipa48>();
    check::<Sv39x4>();
}

/// Defect: the mock vCPU carried out a qword store as eight byte stores, so the
/// host's poll of a guest mailbox (hal-mock `boot::x86_64_config_npt`) once read
/// 0x4125, the low two bytes of the value the secondary vCPU was storing. A
/// naturally aligned load or store of up to 8 bytes is single-copy atomic on all
/// three architectures: a host thread reading meanwhile sees the old value or the
/// new one, never a mix.
#[test]
fn an_aligned_qword_store_is_never_seen_torn() {
    const CODE: u64 = 0x1000_0000;
    const DATA: u64 = 0x4000_0000;
    const LOOP_BACK: u64 = 7;
    /// Host reads that saw each of the two values before the test ends.
    const READS: u64 = 200_000;
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    // The guest stores 0 and all-ones in turn, forever; a hypercall on each round
    // lets the host stop it.
    let mut ops = Vec::new();
    for _ in 0..64 {
        for value in [0, u64::MAX] {
            ops.push(Op::Write {
                gpa: gpa(DATA + 8),
                width: Qword,
                value,
            });
        }
    }
    ops.push(Op::Hypercall {
        nr: LOOP_BACK,
        args: [0; 6],
    });
    ops.push(Op::Jump { to: gpa(CODE) });
    let program = Program::new().at(gpa(CODE), ops);
    let config = ram_config(1, "single copy", 1, CODE, 0x1_0000)
        .memory_region(
            gpa(DATA),
            0x1000,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Eager,
        )
        .build()
        .unwrap();
    let vm: Arc<MockVm<Npt>> = mock_vm(config, program, &Arc::new(GuestLog::default()));
    let done = AtomicBool::new(false);
    // Host reads that saw 0, all-ones, and anything else.
    let seen = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            let _g = machine.enter(8);
            while !done.load(SeqCst) {
                let v: u64 = vm.read_from_guest_of(gpa(DATA + 8)).unwrap();
                let i = match v {
                    0 => 0,
                    u64::MAX => 1,
                    _ => 2,
                };
                seen[i].fetch_add(1, SeqCst);
                if seen[2].load(SeqCst) > 0
                    || seen[..2].iter().all(|n| n.load(SeqCst) >= READS)
                    || std::time::Instant::now() > deadline
                {
                    done.store(true, SeqCst);
                }
            }
        });
        run_vm(&machine, &vm, 1, |_, vcpu, exit| match exit {
            VmExit::Hypercall(Hypercall { nr: LOOP_BACK, .. }) if done.load(SeqCst) => Action::Stop,
            VmExit::Hypercall(Hypercall { nr: LOOP_BACK, .. }) => Action::Return(0),
            other => panic!("vCPU {vcpu}: unexpected exit {other:?}"),
        })
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let [zero, ones, torn] = seen.map(|n| n.into_inner());
    assert_eq!(
        torn, 0,
        "host reads: {zero} saw 0, {ones} all-ones, {torn} a mix"
    );
    // Not a vacuous pass: the host read while the guest stored.
    assert!(
        zero > 0 && ones > 0,
        "host reads: {zero} saw 0, {ones} all-ones"
    );
}
