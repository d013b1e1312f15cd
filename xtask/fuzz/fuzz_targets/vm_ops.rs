//! A VM on hal-mock whose two vCPUs run a scripted guest (loads, stores, fetches,
//! MMIO, firmware calls, in a loop) while a host thread maps, unmaps, protects and
//! copies guest memory by a script; every nested format.
//!
//! Checked: each host operation's result against a model of the VM's layout (the
//! host is the only one that changes it), host copies read back what the host wrote
//! (the guest never writes there), every guest exit is one the script can cause, the
//! mock saw no use of a freed frame and no use of a translation after the call that
//! removed or weakened it returned, and every frame is back after the VM drops.

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use addrspace::{
    AccessKind, ArmStage2Ipa40, ArmStage2Ipa48, Ept, GpaRange, NestedFormat, Npt, Sv39x4, Sv48x4,
};
use arbitrary::Arbitrary;
use hal_mock::{Action, GuestLog, Machine, MockVCpuConfig, MockVm, Op, Program, run_vm};
use libfuzzer_sys::fuzz_target;
use vcpu_api::{AccessWidth, FirmwareCall};
use vm_core::{
    GuestPhysAddr, MapType, MappingFlags, MmioDevice, Populate, Unserved, Vm, VmConfigBuilder,
    VmError, VmExit, VmState,
};

const CODE: usize = 0x4000_0000;
/// The data window: guest pages 0..32 (the guest's), 32..64 (the host's copies).
const DATA: usize = 0x5000_0000;
const PAGES: usize = 64;
const DEV: usize = 0x0a00_0000;
const PAGE: usize = 0x1000;

#[derive(Arbitrary, Debug)]
struct Input {
    format: u8,
    guest: [Vec<GuestOp>; 2],
    host: Vec<HostOp>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum GuestOp {
    Read {
        page: u8,
        offset: u16,
        width: u8,
    },
    Write {
        page: u8,
        offset: u16,
        width: u8,
        value: u64,
    },
    Fetch {
        page: u8,
    },
    Mmio {
        offset: u8,
        width: u8,
        write: bool,
    },
    Call(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HostOp {
    Map {
        page: u8,
        pages: u8,
        flags: u8,
        lazy: bool,
    },
    Unmap {
        page: u8,
        pages: u8,
    },
    Protect {
        page: u8,
        pages: u8,
        flags: u8,
    },
    Write {
        page: u8,
        offset: u16,
        len: u16,
        seed: u8,
    },
    Read {
        page: u8,
        offset: u16,
        len: u16,
    },
    Yield,
}

const WIDTHS: [AccessWidth; 4] = [
    AccessWidth::Byte,
    AccessWidth::Word,
    AccessWidth::Dword,
    AccessWidth::Qword,
];

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

/// A device model that takes every access.
struct Sink;

impl MmioDevice for Sink {
    fn read(&self, _: u64, w: AccessWidth) -> Result<u64, vm_core::DeviceError> {
        Ok(w.truncate(u64::MAX))
    }
    fn write(&self, _: u64, _: AccessWidth, _: u64) -> Result<(), vm_core::DeviceError> {
        Ok(())
    }
}

fn guest_ops(ops: &[GuestOp]) -> Vec<Op> {
    let data = |page: u8, offset: u16, width: AccessWidth| {
        let at = DATA + usize::from(page) % (PAGES / 2) * PAGE + usize::from(offset) % PAGE;
        gpa(at & !(width.bytes() - 1))
    };
    ops.iter()
        .take(24)
        .map(|op| match *op {
            GuestOp::Read {
                page,
                offset,
                width,
            } => {
                let width = WIDTHS[usize::from(width) % 4];
                Op::Read {
                    gpa: data(page, offset, width),
                    width,
                    reg: 1,
                }
            }
            GuestOp::Write {
                page,
                offset,
                width,
                value,
            } => {
                let width = WIDTHS[usize::from(width) % 4];
                Op::Write {
                    gpa: data(page, offset, width),
                    width,
                    value,
                }
            }
            GuestOp::Fetch { page } => Op::Fetch {
                gpa: data(page, 0, AccessWidth::Byte),
            },
            GuestOp::Mmio {
                offset,
                width,
                write,
            } => {
                let width = WIDTHS[usize::from(width) % 4];
                let at = gpa(DEV + (usize::from(offset) & !(width.bytes() - 1)) % 0x100);
                if write {
                    Op::Write {
                        gpa: at,
                        width,
                        value: 7,
                    }
                } else {
                    Op::Read {
                        gpa: at,
                        width,
                        reg: 2,
                    }
                }
            }
            GuestOp::Call(c) => Op::Call(match c % 3 {
                0 => FirmwareCall::Version,
                1 => FirmwareCall::CpuStatus {
                    target: u64::from(c),
                },
                _ => FirmwareCall::MigrateInfoType,
            }),
        })
        .collect()
}

/// The host's view of the data window: each page's flags and whether it is mapped.
#[derive(Default)]
struct Layout {
    pages: BTreeMap<usize, MappingFlags>,
    /// Bytes the host wrote into its half, by GPA.
    bytes: HashMap<usize, u8>,
}

impl Layout {
    /// Whether every page of `[at, at + len)` (`len > 0`) is mapped.
    fn mapped(&self, at: usize, len: usize) -> bool {
        (at / PAGE..=(at + len - 1) / PAGE).all(|q| self.pages.contains_key(&(q - DATA / PAGE)))
    }
}

/// An address in the host's half of the data window (the guest never writes there).
fn host_half(page: u8, offset: u16) -> usize {
    DATA + (PAGES / 2 + usize::from(page) % (PAGES / 2)) * PAGE + usize::from(offset) % PAGE
}

fn flags_of(f: u8) -> MappingFlags {
    MappingFlags::from_bits_truncate(u32::from(f) & 7)
}

fn host<F: NestedFormat>(m: &Machine, vm: &MockVm<F>, ops: &[HostOp], layout: &mut Layout) {
    let range = |page: u8, pages: u8| {
        let p = usize::from(page) % PAGES;
        (p, (usize::from(pages) % 4 + 1).min(PAGES - p))
    };
    let valid = |f: MappingFlags| !f.access().is_empty();
    for op in ops.iter().take(32) {
        match *op {
            HostOp::Map {
                page,
                pages,
                flags,
                lazy,
            } => {
                let (p, n) = range(page, pages);
                let f = flags_of(flags);
                let pop = if lazy {
                    Populate::Lazy
                } else {
                    Populate::Eager
                };
                let got = vm.map_region(gpa(DATA + p * PAGE), n * PAGE, f, pop);
                let free = (p..p + n).all(|q| !layout.pages.contains_key(&q));
                match got {
                    Ok(()) => {
                        assert!(free && valid(f), "{op:?} accepted over {:?}", layout.pages);
                        for q in p..p + n {
                            layout.pages.insert(q, f);
                            for b in 0..PAGE {
                                layout.bytes.remove(&(DATA + q * PAGE + b));
                            }
                        }
                    }
                    // Flags a format cannot encode (write-only) may be refused.
                    Err(VmError::AddrSpace {
                        error: addrspace::Error::InvalidFlags { .. },
                        ..
                    }) => {}
                    Err(e) => assert!(!free, "{op:?} refused: {e:?}"),
                }
            }
            HostOp::Unmap { page, pages } => {
                let (p, n) = range(page, pages);
                let r = GpaRange::new(gpa(DATA + p * PAGE), n * PAGE).expect("a range");
                let t = m.tick();
                let got = vm.unmap_region(r.start(), r.size());
                let covered = (p..p + n).all(|q| layout.pages.contains_key(&q));
                match got {
                    Ok(()) => {
                        // Only a call that removed translations may not leave them
                        // usable (a refused one changed nothing).
                        m.removed(vm.id(), r, t);
                        assert!(covered, "{op:?} accepted over a hole");
                        for q in p..p + n {
                            layout.pages.remove(&q);
                        }
                    }
                    Err(e) => assert!(!covered, "{op:?} refused: {e:?}"),
                }
            }
            HostOp::Protect { page, pages, flags } => {
                let (p, n) = range(page, pages);
                let f = flags_of(flags);
                let r = GpaRange::new(gpa(DATA + p * PAGE), n * PAGE).expect("a range");
                let t = m.tick();
                let got = vm.protect_region(r.start(), r.size(), f);
                let covered = (p..p + n).all(|q| layout.pages.contains_key(&q));
                match got {
                    Ok(()) => {
                        assert!(covered && valid(f), "{op:?} accepted");
                        for q in p..p + n {
                            // A page that lost a right: its old translation is removed;
                            // one that kept or gained them may stay cached.
                            let old = layout.pages.insert(q, f).expect("covered");
                            if !(old.access() - f.access()).is_empty() {
                                let page =
                                    GpaRange::new(gpa(DATA + q * PAGE), PAGE).expect("a page");
                                m.removed(vm.id(), page, t);
                            }
                        }
                    }
                    Err(VmError::AddrSpace {
                        error: addrspace::Error::InvalidFlags { .. },
                        ..
                    }) => {}
                    Err(e) => assert!(!covered, "{op:?} refused: {e:?}"),
                }
            }
            HostOp::Write {
                page,
                offset,
                len,
                seed,
            } => {
                // The host's half only.
                let at = host_half(page, offset);
                let buf: Vec<u8> = (0..usize::from(len) % (2 * PAGE) + 1)
                    .map(|i| seed ^ i as u8)
                    .collect();
                let got = vm.write_guest(gpa(at), &buf);
                let mapped = layout.mapped(at, buf.len());
                match got {
                    Ok(()) => {
                        assert!(mapped, "{op:?} accepted over a hole");
                        for (i, b) in buf.iter().enumerate() {
                            layout.bytes.insert(at + i, *b);
                        }
                    }
                    Err(e) => assert!(!mapped, "{op:?} refused: {e:?}"),
                }
            }
            HostOp::Read { page, offset, len } => {
                let at = host_half(page, offset);
                let mut buf = vec![0u8; usize::from(len) % (2 * PAGE) + 1];
                let got = vm.read_guest(gpa(at), &mut buf);
                let mapped = layout.mapped(at, buf.len());
                match got {
                    Ok(()) => {
                        assert!(mapped, "{op:?} accepted over a hole");
                        for (i, b) in buf.iter().enumerate() {
                            let want = layout.bytes.get(&(at + i)).copied().unwrap_or(0);
                            assert_eq!(*b, want, "host byte at {:#x}", at + i);
                        }
                    }
                    Err(e) => assert!(!mapped, "{op:?} refused: {e:?}"),
                }
            }
            HostOp::Yield => std::thread::yield_now(),
        }
    }
}

fn run<F: NestedFormat>(input: &Input) {
    let machine = Machine::new(0x1_0000_0000, 8 << 20);
    let _g = machine.enter(0);
    let code = |v: usize| gpa(CODE + v * 0x1000);
    let mut ops0 = vec![Op::CpuUp {
        target: 1,
        entry: code(1),
        arg: 0,
    }];
    ops0.extend(guest_ops(&input.guest[0]));
    ops0.push(Op::Jump { to: code(0) + 4 });
    let mut ops1 = guest_ops(&input.guest[1]);
    ops1.push(Op::Jump { to: code(1) });
    let program = Program::new().at(code(0), ops0).at(code(1), ops1);
    let config = VmConfigBuilder::new(1, "vm_ops", 2)
        .entry_point(code(0))
        .memory_region(
            code(0),
            0x1_0000,
            MappingFlags::RWX,
            MapType::Alloc,
            Populate::Eager,
        )
        .memory_region(
            gpa(DATA),
            PAGES / 2 * PAGE,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Eager,
        )
        .memory_region(
            gpa(DATA + PAGES / 2 * PAGE),
            PAGES / 2 * PAGE,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy,
        )
        .emu_device("sink", gpa(DEV), 0x100, 0, 0, &[])
        .build()
        .expect("the config validates");
    let vcpu = MockVCpuConfig::new(Arc::new(program), Arc::new(GuestLog::default()));
    let config = config.into_valid().expect("a valid config");
    let vm: Arc<MockVm<F>> =
        Vm::new(config, &vm_core::HostGrant::none(), |_| (vcpu.clone(), ())).expect("the VM");
    vm.attach_device("sink", Arc::new(Sink)).expect("attach");
    machine.watch_removals(vm.id(), (0..PAGES).map(|p| gpa(DATA + p * PAGE)));
    let mut layout = Layout::default();
    for p in 0..PAGES {
        layout.pages.insert(p, MappingFlags::RW);
    }
    let unexpected = Mutex::new(Vec::new());
    vm.boot().expect("boot");
    let report = std::thread::scope(|s| {
        let runner = s.spawn(|| {
            run_vm(&machine, &vm, 1, |_, vcpu, exit| match exit {
                // A load or store the host's changes left unserved is skipped; a
                // fetch cannot be (vm-core refuses), so it is retried until the host
                // maps the page back or the VM shuts down.
                VmExit::UnservedAccess(a)
                    if matches!(a.why, Unserved::NoArea | Unserved::Permission { .. }) =>
                {
                    if a.access == AccessKind::Execute {
                        std::thread::yield_now();
                        Action::Resume
                    } else {
                        Action::Skip
                    }
                }
                VmExit::CpuUp { .. } => Action::Resume,
                other => {
                    unexpected
                        .lock()
                        .expect("list")
                        .push(format!("vCPU {vcpu}: {other:?}"));
                    Action::Stop
                }
            })
        });
        host(&machine, &vm, &input.host, &mut layout);
        let _ = vm.shutdown();
        runner.join().expect("the vCPU threads")
    });
    let unexpected = unexpected.into_inner().expect("list");
    assert!(unexpected.is_empty(), "unexpected exits: {unexpected:?}");
    for (vcpu, e) in &report.errors {
        // A shutdown while a vCPU starts is a refused start, nothing else.
        assert!(
            matches!(
                e,
                VmError::State {
                    state: VmState::Stopped,
                    ..
                }
            ),
            "vCPU {vcpu}: {e}"
        );
    }
    assert_eq!(
        (machine.stale_uses(), machine.stale_translations()),
        (0, 0),
        "stale uses: {:?}",
        machine.stale_reports()
    );
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0, "frames leaked");
}

fuzz_target!(|input: Input| {
    match input.format % 6 {
        0 => run::<Npt>(&input),
        1 => run::<Ept>(&input),
        2 => run::<ArmStage2Ipa40>(&input),
        3 => run::<ArmStage2Ipa48>(&input),
        4 => run::<Sv39x4>(&input),
        _ => run::<Sv48x4>(&input),
    }
});
