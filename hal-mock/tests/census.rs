//! The bad-input census: distinct bad inputs across every public API (address
//! spaces and page tables, config loading, VM creation and run-time operations, guest memory copies,
//! MMIO accesses of bad widths and past a device's end, vCPU state transitions,
//! hypercall arguments, decoders, the virtual GIC). For each: the error variant it
//! must give, no frame leaked, and the object exactly as before. It prints the count.
//!
//! Each case is named; a case that panics, is accepted, gives another error or
//! changes its object is reported with its name, all of them at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use addrspace::testing::PoolAllocator;
use addrspace::{
    AddrSpace, Area, ArmStage2Ipa40, BitmapFrames, Ept, FrameAllocator, FreeError, GpaRange,
    GuestPhysAddr, HostPhysAddr, Npt, PageTable, Sv39x4, Sv48x4,
};
use common::{gpa, ram_config, try_mock_vm};
use hal_mock::{Action, GuestLog, Machine, MockFaults, MockVm, Op, Program, run_vm};
use vcpu_api::AccessWidth::{Byte, Dword, Qword, Word};
use vcpu_api::{AccessWidth, FirmwareCall, FirmwareError, FirmwareReply};
use vm_core::{
    BusError, ConfigError, DeviceError, MapType, MappingFlags, MmioDevice, Populate, Unserved,
    VCpuState, VmConfig, VmConfigBuilder, VmError, VmExit, VmState,
};

/// The census: how many bad inputs were tried, and what went wrong.
#[derive(Default)]
struct Census {
    names: BTreeSet<String>,
    failures: Vec<String>,
}

impl Census {
    /// Tries bad input `name`: `run` must fail with an error `expect` accepts, and
    /// `state` (which includes the frames in use where frames are at stake) must read
    /// the same before and after.
    fn case<S, T, E>(
        &mut self,
        name: &str,
        state: impl Fn() -> S,
        run: impl FnOnce() -> Result<T, E>,
        expect: impl FnOnce(&E) -> bool,
    ) where
        S: PartialEq + Debug,
        T: Debug,
        E: Debug,
    {
        assert!(self.names.insert(name.into()), "census case `{name}` twice");
        let before = state();
        let outcome = match catch_unwind(AssertUnwindSafe(run)) {
            Err(_) => Some("panicked".to_string()),
            Ok(Ok(v)) => Some(format!("accepted: {v:?}")),
            Ok(Err(e)) if !expect(&e) => Some(format!("wrong error: {e:?}")),
            Ok(Err(_)) => None,
        };
        let after = state();
        let changed = (after != before).then(|| format!("changed: {before:?} -> {after:?}"));
        for why in outcome.into_iter().chain(changed) {
            self.failures.push(format!("{name}: {why}"));
        }
    }

    /// A pure function's bad input (no state to compare).
    fn pure<T: Debug, E: Debug>(
        &mut self,
        name: &str,
        run: impl FnOnce() -> Result<T, E>,
        expect: impl FnOnce(&E) -> bool,
    ) {
        self.case(name, || (), run, expect);
    }
}

// ------------------------------------------------------------------ decoders

fn decoders(c: &mut Census) {
    use hal_x86_64::mmio::{InsnError as X, decode as x86};
    use hal_x86_64::mode::CodeSize::Bits64;
    let regs = |i: usize| i as u64;
    c.pure(
        "x86 insn: no bytes",
        || x86(&[], Bits64, regs),
        |e| *e == X::Truncated { have: 0 },
    );
    c.pure(
        "x86 insn: opcode only",
        || x86(&[0x89], Bits64, regs),
        |e| *e == X::Truncated { have: 1 },
    );
    c.pure(
        "x86 insn: disp32 cut short",
        || x86(&[0x8b, 0x80, 1, 2], Bits64, regs),
        |e| *e == X::Truncated { have: 4 },
    );
    c.pure(
        "x86 insn: fifteen prefixes",
        || x86(&[0x66; 16], Bits64, regs),
        |e| *e == X::Truncated { have: 15 },
    );
    c.pure(
        "x86 insn: register form",
        || x86(&[0x89, 0xc0], Bits64, regs),
        |e| *e == X::NotMemory,
    );
    c.pure(
        "x86 insn: load into AH",
        || x86(&[0x8a, 0x20], Bits64, regs),
        |e| *e == X::HighByteDestination,
    );
    c.pure(
        "x86 insn: syscall",
        || x86(&[0x0f, 0x05], Bits64, regs),
        |e| *e == X::Unsupported { opcode: 0x0f05 },
    );
    c.pure(
        "x86 insn: lock prefix",
        || x86(&[0xf0, 0x89, 0x00], Bits64, regs),
        |e| *e == X::Unsupported { opcode: 0xf0 },
    );
    c.pure(
        "x86 insn: mov r/m, imm with reg field 1",
        || x86(&[0xc7, 0x08, 0, 0, 0, 0], Bits64, regs),
        |e| matches!(e, X::Unsupported { .. }),
    );

    use hal_x86_64::SvmExit;
    use hal_x86_64::exit::ExitDecodeError as XE;
    c.pure(
        "SVM IOIO without a size bit",
        || SvmExit::decode(0x7b, 0x3f8 << 16, 0),
        |e| *e == XE::BadIoSize { info1: 0x3f8 << 16 },
    );
    c.pure(
        "SVM IOIO with two size bits",
        || SvmExit::decode(0x7b, 0x30, 0),
        |e| *e == XE::BadIoSize { info1: 0x30 },
    );
    c.pure(
        "SVM MSR direction 2",
        || SvmExit::decode(0x7c, 2, 0),
        |e| *e == XE::BadMsrDirection { info1: 2 },
    );

    use hal_riscv64::mmio::{InsnError as R, decode as rv};
    c.pure(
        "riscv insn: flw",
        || rv(0x0005_a507),
        |e| matches!(e, R::FloatingPoint { .. }),
    );
    c.pure(
        "riscv insn: c.fld",
        || rv(0x2000),
        |e| matches!(e, R::FloatingPoint { .. }),
    );
    c.pure(
        "riscv insn: amoadd.w",
        || rv(0x00b5_252f),
        |e| matches!(e, R::Atomic { .. }),
    );
    c.pure(
        "riscv insn: c.lwsp x0",
        || rv(0x4002),
        |e| matches!(e, R::Reserved { .. }),
    );
    c.pure(
        "riscv insn: load funct3 7",
        || rv(0x0000_7003),
        |e| matches!(e, R::Reserved { .. }),
    );
    c.pure(
        "riscv insn: add",
        || rv(0x0031_00b3),
        |e| matches!(e, R::NotLoadStore { .. }),
    );
    c.pure(
        "riscv mmio: a store on a load fault",
        || {
            let m = rv(0x00b5_3023).unwrap(); // sd a1, 0(a0)
            hal_riscv64::mmio::mmio_insn(&m, addrspace::AccessKind::Read, &[0; 32]).ok_or(())
        },
        |_| true,
    );

    use hal_aarch64::exit::DataAbort;
    use vcpu_api::{FaultInsn, MmioDecodeError as M};
    let arm = |iss: u32| match hal_aarch64::mmio::fault_insn(
        &DataAbort::decode(iss),
        4,
        &[0; 31],
        0x80,
    ) {
        FaultInsn::Refused(e) => Err(e),
        other => Ok(other),
    };
    c.pure(
        "arm data abort without ISV",
        || arm(0x46),
        |e| *e == M::NoSyndrome { pc: 0x80 },
    );
    c.pure(
        "arm data abort on a stage-1 walk",
        || arm(1 << 24 | 1 << 7 | 0x06),
        |e| *e == M::TableWalk { pc: 0x80 },
    );

    use hal_aarch64::firmware::{PsciConduit, decode_call};
    use vcpu_api::Conduit;
    let psci =
        |x0: u64, conduit| match decode_call(&[x0, 0, 0, 0, 0, 0, 0], conduit, PsciConduit::Smc) {
            FirmwareCall::Unsupported { nr, .. } => Err(nr),
            other => Ok(other),
        };
    c.pure(
        "PSCI CPU_SUSPEND",
        || psci(0xc400_0001, Conduit::Smc),
        |nr| *nr == 0xc400_0001,
    );
    c.pure(
        "PSCI_VERSION as SMC64",
        || psci(0xc400_0000, Conduit::Smc),
        |nr| *nr == 0xc400_0000,
    );
    c.pure(
        "SMC outside PSCI",
        || psci(0x8200_0000, Conduit::Smc),
        |nr| *nr == 0x8200_0000,
    );
    c.pure(
        "PSCI reply of CPUID registers",
        || hal_aarch64::firmware::encode_reply(FirmwareReply::Cpuid(Default::default())).ok_or(()),
        |_| true,
    );

    use hal_riscv64::firmware::{EID_HSM, EID_SRST};
    let sbi = |eid: u64, fid: u64, a0: u64| {
        hal_riscv64::firmware::decode_call(eid, fid, [a0, 0, 0, 0, 0, 0]).call
    };
    c.pure(
        "SBI SRST reserved reset type",
        || match sbi(EID_SRST, 0, 7) {
            FirmwareCall::InvalidParameters { nr, function } => Err((nr, function)),
            other => Ok(other),
        },
        |e| *e == (EID_SRST, 0),
    );
    c.pure(
        "SBI HSM hart_suspend",
        || match sbi(EID_HSM, 3, 0) {
            FirmwareCall::Unsupported { nr, function } => Err((nr, function)),
            other => Ok(other),
        },
        |e| *e == (EID_HSM, 3),
    );
    c.pure(
        "SBI legacy remote fence",
        || match sbi(0x06, 0, 0) {
            FirmwareCall::Unsupported { nr, .. } => Err(nr),
            other => Ok(other),
        },
        |nr| *nr == 6,
    );
    c.pure(
        "SBI reply of CPUID registers",
        || hal_riscv64::firmware::encode_reply(FirmwareReply::Cpuid(Default::default())).ok_or(()),
        |_| true,
    );
}

// ------------------------------------------------------------------ address spaces

/// What a bad input must leave alone in an address space: its areas, every leaf
/// translation, and the frames of its pool.
/// A guest-physical address from a `usize`.
fn ga(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

fn space_state<F: addrspace::NestedFormat>(
    s: &RefCell<AddrSpace<F, &PoolAllocator>>,
    pool: &PoolAllocator,
) -> impl PartialEq + Debug {
    let s = s.borrow();
    let mut leaves = Vec::new();
    s.page_table().for_each_leaf(|g, t| leaves.push((g, t)));
    let areas: Vec<Area> = s.areas().copied().collect();
    (
        areas,
        leaves,
        pool.in_use(),
        s.data_frames(),
        s.deferred_frames(),
    )
}

/// A space with one of each kind of area (GPA: kind):
/// `0x1000_0000` eager RAM (4 pages), `0x1100_0000` lazy RAM (4 pages),
/// `0x1200_0000` linear RAM (4 frames of the pool), `0x1300_0000` device (4 pages),
/// `0x1400_0000` reserved (2 pages), `0x1600_0000` a 2 MiB device leaf.
fn space_with_areas<F: addrspace::NestedFormat>(
    pool: &PoolAllocator,
) -> AddrSpace<F, &PoolAllocator> {
    let mut s = AddrSpace::<F, _>::new(pool).unwrap();
    let rw = MappingFlags::RW;
    s.map_alloc(ga(0x1000_0000), 0x4000, rw, Populate::Eager)
        .unwrap();
    s.map_alloc(ga(0x1100_0000), 0x4000, rw, Populate::Lazy)
        .unwrap();
    let (_, top) = pool.phys_range();
    let ram = HostPhysAddr::from_usize(top.as_usize() - 0x4000);
    assert!(pool.alloc_at(ram, 4));
    // SAFETY: RAM: four frames of the pool taken out above, which nothing else uses
    // and which `phys_to_virt` maps; the devices are addresses no access reaches
    // (the census never runs a guest on this space, and copies refuse DEVICE).
    unsafe {
        s.map_linear(ga(0x1200_0000), ram, 0x4000, rw).unwrap();
        s.map_linear(
            ga(0x1300_0000),
            HostPhysAddr::from_usize(0x0900_0000),
            0x4000,
            rw | MappingFlags::DEVICE,
        )
        .unwrap();
        s.map_linear(
            ga(0x1600_0000),
            HostPhysAddr::from_usize(0x4000_0000),
            0x20_0000,
            rw | MappingFlags::DEVICE,
        )
        .unwrap();
    }
    s.map_reserved(ga(0x1400_0000), 0x2000).unwrap();
    s
}

/// Bad input on `AddrSpace`, `PageTable`, `Flush`, `GpaRange`, `BitmapFrames`.
fn address_spaces(c: &mut Census) {
    use addrspace::Error as A;
    let pool = PoolAllocator::new(256);
    let space = RefCell::new(space_with_areas::<Npt>(&pool));
    let s = &space;
    let state = || space_state(s, &pool);
    let rw = MappingFlags::RW;
    let (eager, lazy, linear, device, reserved, huge) = (
        0x1000_0000,
        0x1100_0000,
        0x1200_0000,
        0x1300_0000,
        0x1400_0000,
        0x1600_0000,
    );
    let hole = 0x1500_0000;
    // Runs `f` with the pool failing after `n` frames.
    let failing = |n: usize, f: &dyn Fn() -> Result<(), A>| {
        pool.fail_after(n);
        let r = f();
        pool.never_fail();
        r
    };

    // ---- creation
    c.case(
        "AddrSpace::new with no frame to give",
        || pool.in_use(),
        || failing(0, &|| AddrSpace::<Npt, _>::new(&pool).map(drop)),
        |e| matches!(e, A::NoMemory { .. }),
    );
    c.case(
        "PageTable::new with no frame to give",
        || pool.in_use(),
        || failing(0, &|| PageTable::<Ept, _>::new(&pool).map(drop)),
        |e| matches!(e, A::NoMemory { .. }),
    );

    // ---- maps
    let map = |at: usize, size: usize, flags: MappingFlags| {
        move || {
            s.borrow_mut()
                .map_alloc(ga(at), size, flags, Populate::Eager)
        }
    };
    c.case(
        "map_alloc at an unaligned GPA",
        state,
        map(hole + 8, 0x1000, rw),
        |e| matches!(e, A::Unaligned { what: "gpa", .. }),
    );
    c.case(
        "map_alloc of an unaligned size",
        state,
        map(hole, 0x1800, rw),
        |e| matches!(e, A::Unaligned { what: "size", .. }),
    );
    c.case("map_alloc of zero bytes", state, map(hole, 0, rw), |e| {
        matches!(e, A::ZeroSize { .. })
    });
    c.case(
        "map_alloc wrapping the address space",
        state,
        map(usize::MAX - 0xfff, 0x2000, rw),
        |e| matches!(e, A::Overflow { .. }),
    );
    c.case(
        "map_alloc ending past NPT's 48-bit GPA",
        state,
        map((1 << 48) - 0x1000, 0x2000, rw),
        |e| matches!(e, A::OutOfRange { what: "gpa", .. }),
    );
    c.case(
        "map_alloc with no access flag",
        state,
        map(hole, 0x1000, MappingFlags::UNCACHED),
        |e| matches!(e, A::InvalidFlags { .. }),
    );
    c.case(
        "map_alloc both DEVICE and UNCACHED",
        state,
        map(
            hole,
            0x1000,
            rw | MappingFlags::DEVICE | MappingFlags::UNCACHED,
        ),
        |e| matches!(e, A::InvalidFlags { .. }),
    );
    c.case(
        "map_alloc write-only on NPT",
        state,
        map(hole, 0x1000, MappingFlags::WRITE),
        |e| matches!(e, A::InvalidFlags { .. }),
    );
    c.case(
        "map_alloc over eager RAM",
        state,
        map(eager + 0x3000, 0x2000, rw),
        |e| matches!(e, A::Overlap { existing, .. } if existing.start() == ga(eager)),
    );
    c.case(
        "map_alloc over a reserved area",
        state,
        map(reserved - 0x1000, 0x2000, rw),
        |e| matches!(e, A::Overlap { existing, .. } if existing.start() == ga(reserved)),
    );
    for n in [0, 1, 3] {
        c.case(
            &format!("map_alloc eager, the allocator failing after {n} frames"),
            state,
            || failing(n, &map(hole, 0x8000, rw)),
            |e| matches!(e, A::NoMemory { .. }),
        );
    }
    let linear_map = |at: usize, hpa: usize, size: usize| {
        move || {
            // SAFETY: every call here is refused (the census checks that nothing
            // changed), so the guest gets no access to `hpa`.
            unsafe {
                s.borrow_mut().map_linear(
                    ga(at),
                    HostPhysAddr::from_usize(hpa),
                    size,
                    rw | MappingFlags::DEVICE,
                )
            }
        }
    };
    c.case(
        "map_linear of an unaligned HPA",
        state,
        linear_map(hole, 0x0900_0010, 0x1000),
        |e| matches!(e, A::Unaligned { what: "hpa", .. }),
    );
    c.case(
        "map_linear ending past NPT's 52-bit HPA",
        state,
        linear_map(hole, (1 << 52) - 0x1000, 0x2000),
        |e| matches!(e, A::OutOfRange { what: "hpa", .. }),
    );
    c.case(
        "map_linear with an HPA range wrapping",
        state,
        linear_map(hole, usize::MAX & !0xfff, 0x2000),
        |e| matches!(e, A::OutOfRange { what: "hpa", .. }),
    );
    c.case(
        "map_linear over a device",
        state,
        linear_map(device + 0x1000, 0x0a00_0000, 0x1000),
        |e| matches!(e, A::Overlap { .. }),
    );
    c.case(
        "map_reserved of zero bytes",
        state,
        || s.borrow_mut().map_reserved(ga(hole), 0),
        |e| matches!(e, A::ZeroSize { .. }),
    );
    c.case(
        "map_reserved over lazy RAM",
        state,
        || s.borrow_mut().map_reserved(ga(lazy), 0x1000),
        |e| matches!(e, A::Overlap { .. }),
    );

    // ---- unmap / protect
    let unmap = |at: usize, size: usize| move || s.borrow_mut().unmap(ga(at), size).map(drop);
    c.case(
        "unmap of a hole",
        state,
        unmap(hole, 0x1000),
        |e| matches!(e, A::NotMapped { gpa: g } if *g == ga(hole)),
    );
    c.case(
        "unmap running past eager RAM",
        state,
        unmap(eager, 0x5000),
        |e| matches!(e, A::NotMapped { gpa: g } if *g == ga(eager + 0x4000)),
    );
    c.case(
        "unmap of an unaligned size",
        state,
        unmap(eager, 0x800),
        |e| matches!(e, A::Unaligned { what: "size", .. }),
    );
    c.case(
        "unmap splitting a 2 MiB leaf with no frame for the table",
        state,
        || failing(0, &unmap(huge + 0x1000, 0x1000)),
        |e| matches!(e, A::NoMemory { .. }),
    );
    let protect = |at: usize, size: usize, f: MappingFlags| {
        move || s.borrow_mut().protect(ga(at), size, f).map(drop)
    };
    c.case(
        "protect of a hole",
        state,
        protect(hole, 0x1000, MappingFlags::READ),
        |e| matches!(e, A::NotMapped { .. }),
    );
    c.case(
        "protect from a reserved area into a hole",
        state,
        protect(reserved, 0x3000, MappingFlags::READ),
        |e| matches!(e, A::NotMapped { gpa: g } if *g == ga(reserved + 0x2000)),
    );
    c.case(
        "protect with no access flag",
        state,
        protect(eager, 0x1000, MappingFlags::empty()),
        |e| matches!(e, A::InvalidFlags { .. }),
    );
    c.case(
        "protect making RAM device memory",
        state,
        protect(eager, 0x1000, rw | MappingFlags::DEVICE),
        |e| matches!(e, A::MemoryType { gpa: g, .. } if *g == ga(eager)),
    );
    c.case(
        "protect making a device uncached",
        state,
        protect(device, 0x1000, MappingFlags::READ | MappingFlags::UNCACHED),
        |e| matches!(e, A::MemoryType { gpa: g, .. } if *g == ga(device)),
    );
    c.case(
        "protect splitting a 2 MiB leaf with no frame for the table",
        state,
        || failing(0, &protect(huge, 0x1000, MappingFlags::READ)),
        |e| matches!(e, A::NoMemory { .. }),
    );

    // ---- translate / fault
    let translate = |at: usize| move || s.borrow().translate(ga(at)).map(drop);
    c.case("translate of a hole", state, translate(hole), |e| {
        matches!(e, A::NoArea { .. })
    });
    c.case(
        "translate of a lazy page not faulted in",
        state,
        translate(lazy),
        |e| matches!(e, A::NotPopulated { .. }),
    );
    c.case(
        "translate in a reserved area",
        state,
        translate(reserved + 0x10),
        |e| matches!(e, A::Reserved { .. }),
    );
    c.case(
        "a lazy page's fault with no frame to give",
        state,
        || {
            failing(0, &|| {
                s.borrow_mut()
                    .handle_page_fault(ga(lazy + 0x1234), addrspace::AccessKind::Write)
                    .map(drop)
            })
        },
        |e| matches!(e, A::NoMemory { .. }),
    );

    // ---- copies
    let read = |at: usize, len: usize| {
        move || {
            let mut buf = vec![0u8; len];
            s.borrow().read(ga(at), &mut buf)
        }
    };
    let write = |at: usize, len: usize| move || s.borrow().write(ga(at), &vec![0x5a; len]);
    let fill = |at: usize| {
        let mut b = [0u8; 8];
        s.borrow().read(ga(at), &mut b).unwrap();
        b
    };
    // The copies must not write: the bytes around each case's range read the same.
    let copy_state = || (space_state(s, &pool), fill(eager + 0x3ff8), fill(linear));
    c.case(
        "read of a hole",
        state,
        read(hole, 1),
        |e| matches!(e, A::NoArea { gpa: g } if *g == ga(hole)),
    );
    c.case(
        "read running from RAM into a hole",
        copy_state,
        read(eager + 0x3ff0, 0x20),
        |e| matches!(e, A::NoArea { gpa: g } if *g == ga(eager + 0x4000)),
    );
    c.case(
        "read of device memory",
        state,
        read(device + 4, 4),
        |e| matches!(e, A::DeviceMemory { gpa: g } if *g == ga(device + 4)),
    );
    c.case("read in a reserved area", state, read(reserved, 16), |e| {
        matches!(e, A::Reserved { .. })
    });
    c.case(
        "read of a lazy page not faulted in",
        state,
        read(lazy + 0x2000, 16),
        |e| matches!(e, A::NotPopulated { .. }),
    );
    c.case(
        "read wrapping the address space",
        state,
        read(usize::MAX - 3, 8),
        |e| matches!(e, A::Overflow { .. }),
    );
    c.case(
        "write running from eager RAM into a hole",
        copy_state,
        write(eager + 0x3ff8, 16),
        |e| matches!(e, A::NoArea { .. }),
    );
    c.case(
        "write running past linear RAM",
        copy_state,
        write(linear + 0x3ff8, 16),
        |e| matches!(e, A::NoArea { gpa: g } if *g == ga(linear + 0x4000)),
    );
    c.case("write of device memory", state, write(device, 8), |e| {
        matches!(e, A::DeviceMemory { .. })
    });
    c.case(
        "write into a reserved area",
        state,
        write(reserved + 0x1ff0, 8),
        |e| matches!(e, A::Reserved { .. }),
    );
    c.case(
        "read_obj straddling RAM's end",
        copy_state,
        || s.borrow().read_obj::<u64>(ga(eager + 0x3ffc)),
        |e| matches!(e, A::NoArea { .. }),
    );
    c.case(
        "write_obj onto device memory",
        state,
        || s.borrow().write_obj(ga(device + 8), &0x1234_u64),
        |e| matches!(e, A::DeviceMemory { .. }),
    );
    let populate = |at: usize, len: usize| move || s.borrow_mut().populate(ga(at), len);
    c.case(
        "populate of device memory",
        state,
        populate(device, 1),
        |e| matches!(e, A::DeviceMemory { .. }),
    );
    c.case(
        "populate running past lazy RAM",
        state,
        populate(lazy, 0x4001),
        |e| matches!(e, A::NoArea { gpa: g } if *g == ga(lazy + 0x4000)),
    );
    c.case(
        "populate of a reserved area",
        state,
        populate(reserved, 1),
        |e| matches!(e, A::Reserved { .. }),
    );
    c.case(
        "populate of a hole",
        state,
        populate(hole + 0x10, 0x10),
        |e| matches!(e, A::NoArea { .. }),
    );
    c.case(
        "populate wrapping the address space",
        state,
        populate(usize::MAX - 0xff, 0x200),
        |e| matches!(e, A::Overflow { .. }),
    );
    c.case(
        "populate of lazy RAM, the allocator failing after 2 frames",
        state,
        || failing(2, &|| s.borrow_mut().populate(ga(lazy), 0x4000).map(drop)),
        |e| matches!(e, A::NoMemory { .. }),
    );

    // ---- flush tokens
    let other_pool = PoolAllocator::new(16);
    let mut other = AddrSpace::<Npt, _>::new(&other_pool).unwrap();
    other
        .map_alloc(ga(0x1000), 0x2000, rw, Populate::Eager)
        .unwrap();
    let foreign = other.unmap(ga(0x1000), 0x1000).unwrap();
    let foreign = Mutex::new(Some(foreign));
    c.case(
        "complete_flush of another space's token",
        state,
        || {
            let token = foreign.lock().unwrap().take().unwrap();
            s.borrow_mut().complete_flush(token)
        },
        |e| matches!(e, A::ForeignFlush { .. }),
    );
    // The token, refused, was dropped: its frame stays held until `other` drops.
    let mine = s.borrow_mut().unmap(ga(eager), 0x1000).unwrap();
    let mine = Mutex::new(mine);
    let theirs = other.unmap(ga(0x2000), 0x1000).unwrap();
    let theirs_range = theirs.range();
    c.case(
        "Flush::merge of another space's token",
        || (state(), mine.lock().unwrap().range()),
        || mine.lock().unwrap().merge(theirs),
        |e| e.other.range() == theirs_range,
    );
    s.borrow_mut()
        .complete_flush(mine.into_inner().unwrap())
        .unwrap();
    drop(other);
    assert_eq!(
        other_pool.in_use(),
        0,
        "the other space's frames after drop"
    );
    {
        // A token of a dropped table given to a new one (which may get the old
        // root frame): refused.
        let p = PoolAllocator::new(16);
        let mut a = PageTable::<Sv39x4, _>::new(&p).unwrap();
        // SAFETY: a table no guest uses; the range is never accessed.
        unsafe { a.map(ga(0), HostPhysAddr::from_usize(0x8000_0000), 0x1000, rw) }.unwrap();
        let token = a.unmap(ga(0), 0x1000).unwrap();
        drop(a);
        let b = RefCell::new(PageTable::<Sv39x4, _>::new(&p).unwrap());
        let token = Mutex::new(Some(token));
        c.case(
            "PageTable::complete_flush of a dropped table's token",
            || (p.in_use(), b.borrow().table_frames()),
            || {
                b.borrow_mut()
                    .complete_flush(token.lock().unwrap().take().unwrap())
            },
            |e| matches!(e, A::ForeignFlush { .. }),
        );
    }

    // ---- bare page tables, other formats
    let tp = PoolAllocator::new(32);
    let table = RefCell::new(PageTable::<ArmStage2Ipa40, _>::new(&tp).unwrap());
    let t = &table;
    // SAFETY: a table no guest uses; the ranges are never accessed.
    unsafe {
        t.borrow_mut().map(
            ga(0x20_0000),
            HostPhysAddr::from_usize(0x4000_0000),
            0x20_0000,
            rw,
        )
    }
    .unwrap();
    let table_state = || {
        let mut leaves = Vec::new();
        t.borrow().for_each_leaf(|g, tr| leaves.push((g, tr)));
        (leaves, tp.in_use())
    };
    let tmap = |at: usize, hpa: usize, size: usize| {
        move || {
            // SAFETY: as above; the census checks that these are refused.
            unsafe {
                t.borrow_mut()
                    .map(ga(at), HostPhysAddr::from_usize(hpa), size, rw)
            }
        }
    };
    c.case(
        "PageTable::map over a translated page",
        table_state,
        tmap(0x3f_f000, 0x5000_0000, 0x2000),
        |e| matches!(e, A::AlreadyMapped { gpa: g } if *g == ga(0x3f_f000)),
    );
    c.case(
        "PageTable::map past Arm's 40-bit IPA",
        table_state,
        tmap(1 << 40, 0x5000_0000, 0x1000),
        |e| matches!(e, A::OutOfRange { what: "gpa", .. }),
    );
    c.case(
        "PageTable::map past Arm's 48-bit output address",
        table_state,
        tmap(0x1000, 1 << 48, 0x1000),
        |e| matches!(e, A::OutOfRange { what: "hpa", .. }),
    );
    c.case(
        "PageTable::unmap of a hole",
        table_state,
        || t.borrow_mut().unmap(ga(0x40_0000), 0x1000).map(drop),
        |e| matches!(e, A::NotMapped { .. }),
    );
    c.case(
        "PageTable::protect into a hole",
        table_state,
        || {
            t.borrow_mut()
                .protect(ga(0x3f_f000), 0x2000, MappingFlags::READ)
                .map(drop)
        },
        |e| matches!(e, A::NotMapped { gpa: g } if *g == ga(0x40_0000)),
    );
    c.pure(
        "check_flags: write without read on EPT",
        || PageTable::<Ept, &PoolAllocator>::check_flags(MappingFlags::WRITE),
        |e| matches!(e, A::InvalidFlags { .. }),
    );
    c.pure(
        "check_flags: write without read on Sv48x4",
        || {
            PageTable::<Sv48x4, &PoolAllocator>::check_flags(
                MappingFlags::WRITE | MappingFlags::EXECUTE,
            )
        },
        |e| matches!(e, A::InvalidFlags { .. }),
    );

    // ---- ranges and the boards' frame bitmap
    c.pure(
        "GpaRange of an unaligned start",
        || GpaRange::new(ga(0x1001), 0x1000),
        |e| matches!(e, A::Unaligned { what: "gpa", .. }),
    );
    c.pure(
        "GpaRange ending past usize",
        || GpaRange::new(ga(usize::MAX & !0xfff), 0x2000),
        |e| matches!(e, A::Overflow { .. }),
    );
    c.pure(
        "GpaRange from bounds in the wrong order",
        || GpaRange::from_bounds(ga(0x2000), ga(0x1000)),
        |e| matches!(e, A::ZeroSize { .. }),
    );
    let mut ram = vec![0u8; 0x12_000];
    let base = HostPhysAddr::from_usize((ram.as_mut_ptr() as usize + 0xfff) & !0xfff);
    // SAFETY: this test's "physical" addresses are its own heap addresses (offset 0).
    let frames = unsafe { BitmapFrames::<1>::new(base, 0) };
    // SAFETY: the 16 frames from `base` lie in `ram`, which nothing else uses and
    // which outlives `frames`.
    unsafe { frames.add_free(base, base + 16 * 0x1000) };
    let taken = frames.alloc_frames(2, 1).unwrap();
    let free = || frames.free_frames();
    c.case(
        "BitmapFrames::dealloc of a free frame",
        free,
        // SAFETY: a frame nobody uses; the call is refused.
        || unsafe { frames.dealloc(taken + 0x2000, 1) },
        |e| matches!(e, FreeError::NotAllocated { .. }),
    );
    c.case(
        "BitmapFrames::dealloc outside its window",
        free,
        // SAFETY: not a frame of this allocator; the call is refused.
        || unsafe { frames.dealloc(base + 64 * 0x1000, 1) },
        |e| matches!(e, FreeError::OutOfWindow { .. }),
    );
    c.case(
        "BitmapFrames::dealloc of an unaligned address",
        free,
        // SAFETY: not a frame address; the call is refused.
        || unsafe { frames.dealloc(taken + 8, 1) },
        |e| matches!(e, FreeError::OutOfWindow { .. }),
    );
    c.case(
        "BitmapFrames::reserve of a taken frame",
        free,
        || frames.reserve(taken, 1).then_some(()).ok_or("refused"),
        |_| true,
    );
    // SAFETY: handed out above, unused.
    unsafe { frames.dealloc(taken, 2) }.unwrap();
    assert_eq!(frames.free_frames(), 16);
    drop(ram);

    // Every frame back but the linear RAM block taken out of the pool.
    drop(space);
    assert_eq!(pool.in_use(), 4, "address-space frames leaked");
}

// ------------------------------------------------------------------ vGIC

fn vgic(c: &mut Census) {
    use vm_core::vgic::{SgiRegister, Vgic, VgicConfig, VgicError as G};
    let make = |cfg: VgicConfig| Vgic::new(cfg, |_| {}).map(drop);
    c.pure(
        "vGIC of no vCPU",
        || make(VgicConfig::new(0, 32)),
        |e| *e == G::VCpuCount { count: 0 },
    );
    c.pure(
        "vGIC of 257 vCPUs",
        || make(VgicConfig::new(257, 32)),
        |e| *e == G::VCpuCount { count: 257 },
    );
    c.pure(
        "vGIC with two vCPUs of one affinity",
        || {
            make(VgicConfig {
                mpidrs: vec![1, 2, 1],
                spis: 32,
                priority_bits: 5,
            })
        },
        |e| {
            *e == G::DuplicateAffinity {
                first: 0,
                second: 2,
                mpidr: 1,
            }
        },
    );
    c.pure(
        "vGIC of 33 SPIs",
        || make(VgicConfig::new(1, 33)),
        |e| *e == G::SpiCount { spis: 33 },
    );
    c.pure(
        "vGIC of 992 SPIs",
        || make(VgicConfig::new(1, 992)),
        |e| *e == G::SpiCount { spis: 992 },
    );
    for bits in [3, 9] {
        c.pure(
            &format!("vGIC with {bits} priority bits"),
            || {
                make(VgicConfig {
                    priority_bits: bits,
                    ..VgicConfig::new(1, 32)
                })
            },
            |e| *e == G::PriorityBits { bits },
        );
    }

    let v = Vgic::new(VgicConfig::new(2, 64), |_| {}).unwrap();
    v.map_hw(0, 40, 72).unwrap();
    let dist = v.distributor();
    let redist = v.redistributors();
    // Everything the guest can read of the interrupts' state.
    let state = || {
        let mut regs = Vec::new();
        for base in [0x100u64, 0x200, 0x300, 0x400, 0x420, 0xc08] {
            regs.push(dist.read(base + 4, Dword).ok());
            regs.push(dist.read(base + 8, Dword).ok());
            for cpu in 0..2u64 {
                regs.push(redist.read(cpu * 0x2_0000 + 0x1_0000 + base, Dword).ok());
            }
        }
        regs
    };
    c.case(
        "vGIC pending on vCPU 2 of 2",
        state,
        || v.set_pending(2, 3),
        |e| *e == G::NoSuchVCpu { vcpu: 2, count: 2 },
    );
    c.case(
        "vGIC pending INTID 96 of 64 SPIs",
        state,
        || v.set_pending(0, 96),
        |e| *e == G::NoSuchInterrupt { intid: 96 },
    );
    c.case(
        "vGIC pending INTID 1023",
        state,
        || v.set_pending(0, 1023),
        |e| *e == G::NoSuchInterrupt { intid: 1023 },
    );
    c.case(
        "vGIC level line on an SGI",
        state,
        || v.set_line(0, 3, true),
        |e| matches!(e, G::WrongKind { intid: 3, .. }),
    );
    c.case(
        "vGIC hardware mapping of an SGI",
        state,
        || v.map_hw(0, 5, 5),
        |e| matches!(e, G::WrongKind { intid: 5, .. }),
    );
    c.case(
        "vGIC INTID mapped twice",
        state,
        || v.map_hw(0, 40, 73),
        |e| {
            *e == G::AlreadyMapped {
                intid: 40,
                pintid: 73,
            }
        },
    );
    c.case(
        "vGIC physical INTID mapped twice",
        state,
        || v.map_hw(0, 41, 72),
        |e| {
            *e == G::AlreadyMapped {
                intid: 41,
                pintid: 72,
            }
        },
    );
    c.case(
        "vGIC flush into no list register",
        state,
        || v.flush(0, 0, &mut []),
        |e| *e == G::ListRegisterCount { count: 0 },
    );
    c.case(
        "vGIC flush into 17 list registers",
        state,
        || v.flush(0, 0, &mut [0; 17]),
        |e| *e == G::ListRegisterCount { count: 17 },
    );
    c.case(
        "vGIC fold of vCPU 9",
        state,
        || v.fold(9, &[0; 4], 0),
        |e| *e == G::NoSuchVCpu { vcpu: 9, count: 2 },
    );
    c.case(
        "vGIC SGI from vCPU 2 of 2",
        state,
        || v.send_sgi(2, SgiRegister::Sgi1r, 1),
        |e| *e == G::NoSuchVCpu { vcpu: 2, count: 2 },
    );
    for (name, offset, width) in [
        ("vGIC distributor CTLR as a byte", 0x0, Byte),
        ("vGIC distributor ISENABLER as a halfword", 0x104, Word),
    ] {
        c.case(
            name,
            state,
            || dist.read(offset, width),
            |e| *e == DeviceError::NoRegister { offset, width },
        );
    }
    for (name, offset, width) in [
        ("vGIC redistributor ISENABLER0 as 8 bytes", 0x1_0100, Qword),
        (
            "vGIC redistributor IPRIORITYR as a halfword",
            0x1_0400,
            Word,
        ),
    ] {
        c.case(
            name,
            state,
            || redist.write(offset, width, u64::MAX),
            |e| *e == DeviceError::NoRegister { offset, width },
        );
    }
}

// ------------------------------------------------------------------ configs

fn configs(c: &mut Census) {
    let g = GuestPhysAddr::from_usize;
    let base = || ram_config(1, "census", 1, 0x4000_0000, 0x10_0000);
    let build = |b: VmConfigBuilder| b.build().map(drop);
    c.pure(
        "config: no vCPU",
        || build(VmConfigBuilder::new(1, "c", 0)),
        |e| *e == ConfigError::NoCpus,
    );
    c.pure(
        "config: 2000 vCPUs",
        || build(ram_config(1, "c", 2000, 0x4000_0000, 0x1000)),
        |e| matches!(e, ConfigError::TooManyCpus { cpu_num: 2000, .. }),
    );
    c.pure(
        "config: no memory",
        || build(VmConfigBuilder::new(1, "c", 1)),
        |e| *e == ConfigError::NoMemory,
    );
    c.pure(
        "config: region of zero bytes",
        || {
            build(base().memory_region(
                g(0x5000_0000),
                0,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Eager,
            ))
        },
        |e| matches!(e, ConfigError::ZeroSize { .. }),
    );
    c.pure(
        "config: unaligned region",
        || {
            build(base().memory_region(
                g(0x5000_0800),
                0x1000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Eager,
            ))
        },
        |e| {
            matches!(
                e,
                ConfigError::Unaligned {
                    value: 0x5000_0800,
                    ..
                }
            )
        },
    );
    c.pure(
        "config: region over the top of the address space",
        || {
            build(base().memory_region(
                g(usize::MAX - 0xfff),
                0x2000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Eager,
            ))
        },
        |e| matches!(e, ConfigError::Overflow { .. }),
    );
    c.pure(
        "config: overlapping regions",
        || {
            build(base().memory_region(
                g(0x4008_0000),
                0x10_0000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Eager,
            ))
        },
        |e| matches!(e, ConfigError::Overlap { .. }),
    );
    c.pure(
        "config: region without access",
        || {
            build(base().memory_region(
                g(0x5000_0000),
                0x1000,
                MappingFlags::empty(),
                MapType::Alloc,
                Populate::Eager,
            ))
        },
        |e| matches!(e, ConfigError::NoAccess { .. }),
    );
    c.pure(
        "config: DEVICE flag on RAM",
        || {
            build(base().memory_region(
                g(0x5000_0000),
                0x1000,
                MappingFlags::DEVICE_RW,
                MapType::Alloc,
                Populate::Eager,
            ))
        },
        |e| matches!(e, ConfigError::DeviceFlagOnRam { .. }),
    );
    c.pure(
        "config: lazy identical region",
        || {
            build(base().memory_region(
                g(0x5000_0000),
                0x1000,
                MappingFlags::RW,
                MapType::Identical,
                Populate::Lazy,
            ))
        },
        |e| matches!(e, ConfigError::LazyNotAlloc { .. }),
    );
    c.pure(
        "config: entry outside RAM",
        || build(base().entry_point(g(0x9000_0000))),
        |e| {
            matches!(
                e,
                ConfigError::NotInRam {
                    value: 0x9000_0000,
                    ..
                }
            )
        },
    );
    c.pure(
        "config: emulated device over RAM",
        || build(base().emu_device("d", g(0x4000_1000), 0x100, 0, 0, &[])),
        |e| matches!(e, ConfigError::DeviceOverlapsRam { region: 0, .. }),
    );
    c.pure(
        "config: two emulated devices overlapping",
        || {
            build(
                base()
                    .emu_device("a", g(0x0a00_0000), 0x100, 0, 0, &[])
                    .emu_device("b", g(0x0a00_0080), 0x100, 0, 0, &[]),
            )
        },
        |e| matches!(e, ConfigError::DeviceOverlap { .. }),
    );
    c.pure(
        "config: two emulated devices of one name",
        || {
            build(
                base()
                    .emu_device("a", g(0x0a00_0000), 0x100, 0, 0, &[])
                    .emu_device("a", g(0x0a00_1000), 0x100, 0, 0, &[]),
            )
        },
        |e| matches!(e, ConfigError::DuplicateName { .. }),
    );
    c.pure(
        "config: emulated device of zero bytes",
        || build(base().emu_device("a", g(0x0a00_0000), 0, 0, 0, &[])),
        |e| matches!(e, ConfigError::ZeroSize { .. }),
    );
    c.pure(
        "config: pass-through with different page offsets",
        || {
            build(base().passthrough_device(
                "p",
                g(0x0900_0010),
                HostPhysAddr::from_usize(0x0900_0020),
                0x100,
                0,
            ))
        },
        |e| matches!(e, ConfigError::PageOffsetMismatch { .. }),
    );
    c.pure(
        "config: pass-through over RAM",
        || {
            build(base().passthrough_device(
                "p",
                g(0x4000_0000),
                HostPhysAddr::from_usize(0x0900_0000),
                0x1000,
                0,
            ))
        },
        |e| matches!(e, ConfigError::DeviceOverlapsRam { .. }),
    );
    c.pure(
        "config: CPU id list of the wrong length",
        || build(base().phys_cpu_ids(&[0, 1])),
        |e| {
            matches!(
                e,
                ConfigError::CpuListLength {
                    len: 2,
                    cpu_num: 1,
                    ..
                }
            )
        },
    );
    c.pure(
        "config: empty CPU set",
        || build(base().phys_cpu_sets(&[0])),
        |e| matches!(e, ConfigError::EmptyCpuSet { .. }),
    );
    let toml = |text: &str| VmConfig::from_toml(text).map(drop);
    c.pure(
        "config TOML: not TOML",
        || toml("[base"),
        |e| matches!(e, ConfigError::Syntax { .. }),
    );
    c.pure(
        "config TOML: empty file",
        || toml(""),
        |e| matches!(e, ConfigError::Missing { .. }),
    );
    let text = include_str!("../../configs/qemu-virt-aarch64.toml");
    for (name, from, to, expect) in [
        (
            "config TOML: cpu_num a string",
            "cpu_num = 2",
            "cpu_num = \"2\"",
            "WrongType",
        ),
        (
            "config TOML: negative cpu_num",
            "cpu_num = 2",
            "cpu_num = -2",
            "OutOfRange",
        ),
        ("config TOML: map_type 7", ", 0]", ", 7]", "UnknownMapType"),
        (
            "config TOML: unknown flag bits",
            "0x7,",
            "0x10007,",
            "UnknownFlags",
        ),
        (
            "config TOML: a region of 3 values",
            ", 0x7, 0]",
            "]",
            "TupleLength",
        ),
    ] {
        let edited = text.replacen(from, to, 1);
        assert_ne!(edited, text, "{name}: `{from}` is not in the config");
        c.pure(
            name,
            || toml(&edited),
            |e| format!("{e:?}").starts_with(expect),
        );
    }
}

// ------------------------------------------------------------------ VMs

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x10_0000;
const LAZY: u64 = 0x5000_0000;
const DEV: u64 = 0x0a00_0000;
const PASS: u64 = 0x0900_0000;

type Vm = Arc<MockVm<Npt>>;

/// A device model that accepts every access and counts them.
#[derive(Default)]
struct Recorder(AtomicU64);

impl MmioDevice for Recorder {
    fn read(&self, _offset: u64, _width: AccessWidth) -> Result<u64, DeviceError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(0)
    }
    fn write(&self, _offset: u64, _width: AccessWidth, _value: u64) -> Result<(), DeviceError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// RAM (eager, RWX), lazy RAM, a read-only page, an emulated device `rec` of 16
/// bytes (a [`Recorder`]), the protocol's test device, a device without a model and a
/// pass-through page.
fn vm_config(id: usize, cpus: usize) -> VmConfig {
    use platforms::protocol::test_device;
    ram_config(id, "census", cpus, RAM, RAM_SIZE)
        .memory_region(
            gpa(LAZY),
            0x4_0000,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy,
        )
        .memory_region(
            gpa(0x6000_0000),
            0x1000,
            MappingFlags::READ,
            MapType::Alloc,
            Populate::Eager,
        )
        .emu_device("rec", gpa(DEV), 0x10, 0, 0, &[])
        .emu_device(
            platforms::host::TEST_DEVICE,
            gpa(DEV + 0x1000),
            usize::try_from(test_device::SIZE).unwrap(),
            0,
            0,
            &[],
        )
        .emu_device("bare", gpa(DEV + 0x2000), 0x10, 0, 0, &[])
        .passthrough_device(
            "uart",
            gpa(PASS),
            HostPhysAddr::from_usize(usize::try_from(PASS).unwrap()),
            0x1000,
            0,
        )
        .build()
        .unwrap()
}

fn make_vm(m: &Machine, id: usize, cpus: usize, program: Program) -> (Vm, Arc<Recorder>) {
    let log = Arc::new(GuestLog::default());
    let vm = try_mock_vm::<Npt>(vm_config(id, cpus), program, &log, MockFaults::default()).unwrap();
    let rec = Arc::new(Recorder::default());
    vm.attach_device("rec", rec.clone()).unwrap();
    vm.attach_device(
        platforms::host::TEST_DEVICE,
        Arc::new(platforms::host::TestDevice::new()),
    )
    .unwrap();
    let _ = m;
    (vm, rec)
}

/// Everything observable about a VM from the host, and the machine's frames.
fn vm_state(m: &Machine, vm: &Vm) -> impl PartialEq + Debug {
    let probes = [RAM, RAM + RAM_SIZE as u64 - 1, LAZY, DEV, PASS, 0x6000_0000];
    let mut tail = [0u8; 16];
    let tail_ok = vm
        .read_guest(gpa(RAM + RAM_SIZE as u64 - 16), &mut tail)
        .is_ok();
    (
        m.frames_in_use(),
        vm.regions(),
        vm.mmio_devices(),
        vm.state(),
        (0..vm.vcpu_count())
            .map(|i| vm.vcpu_state(i).ok())
            .collect::<Vec<_>>(),
        probes.map(|p| vm.walk(gpa(p)).translation()),
        vm.passthrough_ranges().to_vec(),
        (tail_ok, tail),
    )
}

fn creation(c: &mut Census, m: &Arc<Machine>) {
    let frames = || m.frames_in_use();
    let log = Arc::new(GuestLog::default());
    let new = |config: VmConfig| {
        try_mock_vm::<Npt>(config, Program::new(), &log, MockFaults::default()).map(drop)
    };
    c.case(
        "Vm::new of an invalid config",
        frames,
        || {
            new(VmConfig {
                cpu_num: 0,
                ..vm_config(1, 1)
            })
        },
        |e| *e == VmError::Config(ConfigError::NoCpus),
    );
    c.case(
        "Vm::new of a config with overlapping devices",
        frames,
        || {
            let mut cfg = vm_config(1, 1);
            cfg.devices.emu_devices[1].base_gpa = gpa(DEV + 8);
            new(cfg)
        },
        |e| matches!(e, VmError::Config(ConfigError::DeviceOverlap { .. })),
    );
    for n in [0, 1, 2, 3, 8, 100, 255] {
        c.case(
            &format!("Vm::new with frames failing after {n}"),
            frames,
            || {
                m.fail_frames_after(n);
                let r = new(vm_config(1, 2));
                m.never_fail();
                r
            },
            |e| {
                matches!(
                    e,
                    VmError::NoMemory { .. }
                        | VmError::MapRegion { .. }
                        | VmError::AddrSpace { .. }
                )
            },
        );
    }
    c.case(
        "Vm::new of RAM larger than the machine",
        frames,
        || new(ram_config(1, "big", 1, RAM, 256 << 20).build().unwrap()),
        |e| {
            matches!(
                e,
                VmError::MapRegion {
                    error: addrspace::Error::NoMemory { .. },
                    ..
                }
            )
        },
    );
    c.case(
        "Vm::new of an identical region the host cannot give",
        frames,
        || {
            m.refuse_alloc_at(true);
            m.fail_frames_after(1);
            let cfg = VmConfigBuilder::new(1, "id", 1)
                .entry_point(gpa(RAM))
                .memory_region(
                    gpa(RAM),
                    0x10_0000,
                    MappingFlags::RWX,
                    MapType::Identical,
                    Populate::Eager,
                )
                .build()
                .unwrap();
            let r = new(cfg);
            m.never_fail();
            m.refuse_alloc_at(false);
            r
        },
        |e| matches!(e, VmError::NoMemory { .. }),
    );
}

fn operations(c: &mut Census, m: &Arc<Machine>) {
    let (vm, _rec) = make_vm(m, 2, 2, Program::new());
    let state = || vm_state(m, &vm);
    let space_err = |e: &VmError, want: fn(&addrspace::Error) -> bool| matches!(e, VmError::AddrSpace { error, .. } if want(error));
    use addrspace::Error as A;
    let rw = MappingFlags::RW;
    c.case(
        "map_region at an unaligned GPA",
        state,
        || vm.map_region(gpa(0x7000_0010), 0x1000, rw, Populate::Eager),
        |e| space_err(e, |a| matches!(a, A::Unaligned { what: "gpa", .. })),
    );
    c.case(
        "map_region of an unaligned size",
        state,
        || vm.map_region(gpa(0x7000_0000), 0x1001, rw, Populate::Eager),
        |e| space_err(e, |a| matches!(a, A::Unaligned { what: "size", .. })),
    );
    c.case(
        "map_region of zero bytes",
        state,
        || vm.map_region(gpa(0x7000_0000), 0, rw, Populate::Eager),
        |e| space_err(e, |a| matches!(a, A::ZeroSize { .. })),
    );
    c.case(
        "map_region over RAM",
        state,
        || vm.map_region(gpa(RAM + 0x1000), 0x1000, rw, Populate::Lazy),
        |e| space_err(e, |a| matches!(a, A::Overlap { .. })),
    );
    c.case(
        "map_region over a device",
        state,
        || vm.map_region(gpa(DEV), 0x1000, rw, Populate::Lazy),
        |e| space_err(e, |a| matches!(a, A::Overlap { .. })),
    );
    c.case(
        "map_region over a pass-through",
        state,
        || vm.map_region(gpa(PASS), 0x1000, rw, Populate::Lazy),
        |e| space_err(e, |a| matches!(a, A::Overlap { .. })),
    );
    c.case(
        "map_region beyond NPT's reach",
        state,
        || vm.map_region(gpa(1 << 52), 0x1000, rw, Populate::Lazy),
        |e| space_err(e, |a| matches!(a, A::OutOfRange { .. })),
    );
    c.case(
        "map_region wrapping the address space",
        state,
        || vm.map_region(gpa(u64::MAX - 0xfff), 0x2000, rw, Populate::Lazy),
        |e| space_err(e, |a| matches!(a, A::Overflow { .. })),
    );
    c.case(
        "map_region of more than the machine has",
        state,
        || vm.map_region(gpa(0x1_0000_0000), 1 << 30, rw, Populate::Eager),
        |e| space_err(e, |a| matches!(a, A::NoMemory { .. })),
    );
    c.case(
        "unmap_region of a hole",
        state,
        || vm.unmap_region(gpa(0x7000_0000), 0x1000),
        |e| space_err(e, |a| matches!(a, A::NotMapped { .. } | A::NoArea { .. })),
    );
    c.case(
        "unmap_region running past RAM into a hole",
        state,
        || vm.unmap_region(gpa(RAM), RAM_SIZE + 0x1000),
        |e| space_err(e, |a| matches!(a, A::NotMapped { .. } | A::NoArea { .. })),
    );
    c.case(
        "unmap_region unaligned",
        state,
        || vm.unmap_region(gpa(RAM + 1), 0x1000),
        |e| space_err(e, |a| matches!(a, A::Unaligned { .. })),
    );
    c.case(
        "unmap_region of zero bytes",
        state,
        || vm.unmap_region(gpa(RAM), 0),
        |e| space_err(e, |a| matches!(a, A::ZeroSize { .. })),
    );
    c.case(
        "protect_region of a hole",
        state,
        || vm.protect_region(gpa(0x7000_0000), 0x1000, rw),
        |e| space_err(e, |a| matches!(a, A::NotMapped { .. } | A::NoArea { .. })),
    );
    c.case(
        "protect_region unaligned",
        state,
        || vm.protect_region(gpa(RAM), 0x800, rw),
        |e| space_err(e, |a| matches!(a, A::Unaligned { .. })),
    );
    c.case(
        "protect_region making RAM a device",
        state,
        || vm.protect_region(gpa(RAM), 0x1000, MappingFlags::DEVICE_RW),
        |e| space_err(e, |a| matches!(a, A::MemoryType { .. })),
    );
    let read = |at: u64, len: usize| {
        let mut b = vec![0u8; len];
        vm.read_guest(gpa(at), &mut b)
    };
    c.case(
        "read_guest of a hole",
        state,
        || read(0x7000_0000, 8),
        |e| space_err(e, |a| matches!(a, A::NoArea { .. })),
    );
    c.case(
        "read_guest of an emulated device",
        state,
        || read(DEV, 4),
        |e| {
            space_err(e, |a| {
                matches!(a, A::Reserved { .. } | A::DeviceMemory { .. })
            })
        },
    );
    c.case(
        "read_guest of a pass-through device",
        state,
        || read(PASS, 4),
        |e| space_err(e, |a| matches!(a, A::DeviceMemory { .. })),
    );
    c.case(
        "read_guest running off the end of RAM",
        state,
        || read(RAM + RAM_SIZE as u64 - 8, 16),
        |e| space_err(e, |a| matches!(a, A::NoArea { .. })),
    );
    c.case(
        "read_guest wrapping the address space",
        state,
        || read(u64::MAX - 3, 8),
        |e| {
            space_err(e, |a| {
                matches!(
                    a,
                    A::Overflow { .. } | A::NoArea { .. } | A::OutOfRange { .. }
                )
            })
        },
    );
    let write = |at: u64, len: usize| vm.write_guest(gpa(at), &vec![0x5a; len]);
    c.case(
        "write_guest of a hole",
        state,
        || write(0x7000_0000, 8),
        |e| space_err(e, |a| matches!(a, A::NoArea { .. })),
    );
    c.case(
        "write_guest of a pass-through device",
        state,
        || write(PASS, 4),
        |e| space_err(e, |a| matches!(a, A::DeviceMemory { .. })),
    );
    c.case(
        "write_guest running off the end of RAM",
        state,
        || write(RAM + RAM_SIZE as u64 - 8, 16),
        |e| space_err(e, |a| matches!(a, A::NoArea { .. })),
    );
    c.case(
        "write_guest of 2 MiB into 1 MiB of RAM",
        state,
        || write(RAM, 2 << 20),
        |e| space_err(e, |a| matches!(a, A::NoArea { .. })),
    );
    c.case(
        "read_from_guest_of a hole",
        state,
        || vm.read_from_guest_of::<u64>(gpa(0x7000_0000)),
        |e| space_err(e, |a| matches!(a, A::NoArea { .. })),
    );
    c.case(
        "write_to_guest_of across RAM's end",
        state,
        || vm.write_to_guest_of(gpa(RAM + RAM_SIZE as u64 - 8), &[1u64, 2]),
        |e| space_err(e, |a| matches!(a, A::NoArea { .. })),
    );
    c.case(
        "write_to_guest_of at an unaligned address",
        state,
        || vm.write_to_guest_of(gpa(RAM + 4), &1u64),
        |e| matches!(e, VmError::Unaligned { align: 8, .. }),
    );
    c.case(
        "load_image into an emulated device",
        state,
        || vm.load_image(gpa(DEV), &[1, 2, 3]),
        |e| matches!(e, VmError::AddrSpace { .. }),
    );

    let none =
        |e: &VmError, i: usize| matches!(e, VmError::NoSuchVCpu { vcpu, count: 2 } if *vcpu == i);
    c.case(
        "start_vcpu 2 of 2",
        state,
        || vm.start_vcpu(2, gpa(RAM), 0),
        |e| none(e, 2),
    );
    c.case(
        "start_vcpu usize::MAX",
        state,
        || vm.start_vcpu(usize::MAX, gpa(RAM), 0),
        |e| none(e, usize::MAX),
    );
    c.case(
        "vcpu_state of vCPU 7",
        state,
        || vm.vcpu_state(7),
        |e| none(e, 7),
    );
    c.case("cpu_id of vCPU 7", state, || vm.cpu_id(7), |e| none(e, 7));
    c.case(
        "inject_interrupt into vCPU 7",
        state,
        || vm.inject_interrupt(7, 32),
        |e| none(e, 7),
    );
    c.case(
        "with_vcpu 7",
        state,
        || vm.with_vcpu(7, |_| ()),
        |e| none(e, 7),
    );
    c.case("unbind_vcpu 7", state, || vm.unbind_vcpu(7), |e| none(e, 7));
    c.case(
        "set_return_value with no call",
        state,
        || vm.set_return_value(0, 1),
        |e| matches!(e, VmError::NothingToComplete { vcpu: 0 }),
    );
    c.case(
        "reply_call with no call",
        state,
        || vm.reply_call(0, FirmwareReply::Value(0)),
        |e| matches!(e, VmError::NothingToComplete { vcpu: 0 }),
    );
    c.case(
        "skip_access with no access",
        state,
        || vm.skip_access(0),
        |e| matches!(e, VmError::NothingToComplete { vcpu: 0 }),
    );
    c.case(
        "complete_access with no access",
        state,
        || vm.complete_access(1, Some(7)),
        |e| matches!(e, VmError::NothingToComplete { vcpu: 1 }),
    );
    c.case(
        "attach_device of an unknown name",
        state,
        || vm.attach_device("nope", Arc::new(Recorder::default())),
        |e| matches!(e, VmError::Bus(BusError::NoSuchDevice { .. })),
    );
    c.case(
        "add_mmio_device over a device",
        state,
        || vm.add_mmio_device("x", gpa(DEV + 4), 8, Arc::new(Recorder::default())),
        |e| matches!(e, VmError::Bus(BusError::Overlap { .. })),
    );
    c.case(
        "add_mmio_device of zero bytes",
        state,
        || vm.add_mmio_device("x", gpa(0x0b00_0000), 0, Arc::new(Recorder::default())),
        |e| matches!(e, VmError::Bus(BusError::BadRange { .. })),
    );
    c.case(
        "add_mmio_device over RAM",
        state,
        || vm.add_mmio_device("x", gpa(RAM), 8, Arc::new(Recorder::default())),
        |e| space_err(e, |a| matches!(a, A::Overlap { .. })),
    );
    c.case(
        "pause before boot",
        state,
        || vm.pause(),
        |e| {
            matches!(
                e,
                VmError::State {
                    state: VmState::Created,
                    ..
                }
            )
        },
    );
    c.case(
        "resume before boot",
        state,
        || vm.resume(),
        |e| {
            matches!(
                e,
                VmError::State {
                    state: VmState::Created,
                    ..
                }
            )
        },
    );
    vm.boot().unwrap();
    c.case(
        "boot twice",
        state,
        || vm.boot(),
        |e| {
            matches!(
                e,
                VmError::State {
                    state: VmState::Running,
                    ..
                }
            )
        },
    );
    let refused = |e: &VmError, v: usize, o: &str, s: VCpuState| matches!(e, VmError::VCpuState { vcpu, op, state } if *vcpu == v && *op == o && *state == s);
    c.case(
        "start_vcpu of the running vCPU 0",
        state,
        || vm.start_vcpu(0, gpa(RAM), 0),
        |e| refused(e, 0, "start", VCpuState::Started),
    );
    c.case(
        "run_vcpu of the off vCPU 1",
        state,
        || vm.run_vcpu(1),
        |e| refused(e, 1, "run", VCpuState::Off),
    );
    c.case(
        "unbind_vcpu of the unbound vCPU 0",
        state,
        || vm.unbind_vcpu(0),
        |e| refused(e, 0, "unbind", VCpuState::Started),
    );
    c.case(
        "unbind_vcpu of the off vCPU 1",
        state,
        || vm.unbind_vcpu(1),
        |e| refused(e, 1, "unbind", VCpuState::Off),
    );
    vm.shutdown().unwrap();
    c.case(
        "shutdown twice",
        state,
        || vm.shutdown(),
        |e| {
            matches!(
                e,
                VmError::State {
                    state: VmState::Stopped,
                    ..
                }
            )
        },
    );
    c.case(
        "boot after shutdown",
        state,
        || vm.boot(),
        |e| {
            matches!(
                e,
                VmError::State {
                    state: VmState::Stopped,
                    ..
                }
            )
        },
    );
    c.case(
        "run_vcpu after shutdown",
        state,
        || {
            vm.run_vcpu(0).and_then(|x| {
                if x == VmExit::Stopped {
                    Err(VmError::State {
                        op: "run",
                        state: VmState::Stopped,
                    })
                } else {
                    Ok(x)
                }
            })
        },
        |_| true,
    );
}

/// Runs `ops` on vCPU 0 of a fresh VM (then shuts it down), skipping unserved
/// accesses: the first unserved access, or `Ok` with register 0.
fn guest(m: &Arc<Machine>, ops: Vec<Op>, console: bool) -> (Result<u64, Unserved>, u64) {
    let mut ops = ops;
    ops.push(Op::Shutdown);
    let (vm, rec) = make_vm(m, 3, 2, Program::new().at(gpa(RAM), ops));
    if console {
        vm.attach_console(Arc::new(Sink::default()));
    }
    let first = Mutex::new(None);
    let report = run_vm(m, &vm, 0, |_, _, exit| {
        if let VmExit::UnservedAccess(u) = exit {
            first.lock().unwrap().get_or_insert(u.why);
            return Action::Skip;
        }
        Action::Resume
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let reg0 = vm.with_vcpu(0, |v| v.reg(0)).unwrap();
    let result = match first.into_inner().unwrap() {
        Some(why) => Err(why),
        None => Ok(reg0),
    };
    (result, rec.0.load(Ordering::SeqCst))
}

#[derive(Default)]
struct Sink(Mutex<Vec<u8>>);

impl vm_core::GuestConsole for Sink {
    fn write(&self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
    fn read(&self, _buf: &mut [u8]) -> usize {
        0
    }
}

fn mmio(c: &mut Census, m: &Arc<Machine>) {
    use platforms::protocol::test_device::{ID, SCRATCH};
    let frames = || m.frames_in_use();
    let dev = |o: u64| gpa(DEV + o);
    let test = |o: u64| gpa(DEV + 0x1000 + o);
    for (name, op, expect) in [
        (
            "MMIO 8-byte read over the end of a 16-byte device",
            Op::Read {
                gpa: dev(0xc),
                width: Qword,
                reg: 1,
            },
            Unserved::Device(DeviceError::NoRegister {
                offset: 0xc,
                width: Qword,
            }),
        ),
        (
            "MMIO 4-byte write over the end of a 16-byte device",
            Op::Write {
                gpa: dev(0xe),
                width: Dword,
                value: 1,
            },
            Unserved::Device(DeviceError::NoRegister {
                offset: 0xe,
                width: Dword,
            }),
        ),
    ] {
        c.case(
            name,
            frames,
            || {
                let (r, calls) = guest(m, vec![op], false);
                // The device model must not see an access it does not contain.
                r.map(|v| if calls == 0 { v } else { u64::MAX })
                    .map_err(|e| (e, calls))
            },
            |(e, calls)| *e == expect && *calls == 0,
        );
    }
    for (name, op, expect) in [
        (
            "MMIO write to the read-only ID register",
            Op::Write {
                gpa: test(ID),
                width: Dword,
                value: 1,
            },
            Unserved::Device(DeviceError::Denied { offset: ID }),
        ),
        (
            "MMIO read between registers",
            Op::Read {
                gpa: test(SCRATCH + 1),
                width: Byte,
                reg: 1,
            },
            Unserved::Device(DeviceError::NoRegister {
                offset: SCRATCH + 1,
                width: Byte,
            }),
        ),
    ] {
        c.case(
            name,
            frames,
            || guest(m, vec![op], false).0,
            |e| *e == expect,
        );
    }
    c.case(
        "MMIO read of a device without a model",
        frames,
        || {
            guest(
                m,
                vec![Op::Read {
                    gpa: gpa(DEV + 0x2000),
                    width: Dword,
                    reg: 1,
                }],
                false,
            )
            .0
        },
        |e| matches!(e, Unserved::NoDevice { .. }),
    );
    c.case(
        "MMIO read in a device's page past its end",
        frames,
        || {
            guest(
                m,
                vec![Op::Read {
                    gpa: dev(0x10),
                    width: Dword,
                    reg: 1,
                }],
                false,
            )
            .0
        },
        |e| matches!(e, Unserved::NoDevice { .. }),
    );
    c.case(
        "guest write to read-only RAM",
        frames,
        || {
            guest(
                m,
                vec![Op::Write {
                    gpa: gpa(0x6000_0000),
                    width: Dword,
                    value: 1,
                }],
                false,
            )
            .0
        },
        |e| matches!(e, Unserved::Permission { .. }),
    );
    c.case(
        "guest read of a hole",
        frames,
        || {
            guest(
                m,
                vec![Op::Read {
                    gpa: gpa(0x7000_0000),
                    width: Dword,
                    reg: 1,
                }],
                false,
            )
            .0
        },
        |e| matches!(e, Unserved::NoArea),
    );
}

fn hypercalls(c: &mut Census, m: &Arc<Machine>) {
    let frames = || m.frames_in_use();
    let code = |e: FirmwareError| hal_mock::reply_word(FirmwareReply::Error(e));
    let call = |op: Op, console: bool| match guest(m, vec![op], console).0 {
        Ok(v) if (v as i64) < 0 => Err(v),
        other => Ok(other),
    };
    use FirmwareError::*;
    for (name, op, console, want) in [
        (
            "CPU on of a CPU id no vCPU has",
            Op::CpuUp {
                target: 99,
                entry: gpa(RAM),
                arg: 0,
            },
            false,
            InvalidParameters,
        ),
        (
            "CPU on of the calling vCPU",
            Op::CpuUp {
                target: 0,
                entry: gpa(RAM),
                arg: 0,
            },
            false,
            AlreadyOn,
        ),
        (
            "CPU status of a CPU id no vCPU has",
            Op::Call(FirmwareCall::CpuStatus { target: u64::MAX }),
            false,
            InvalidParameters,
        ),
        (
            "console write without a console",
            Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(RAM),
                len: 4,
            }),
            false,
            NotSupported,
        ),
        (
            "console write from a hole",
            Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(0x7000_0000),
                len: 4,
            }),
            true,
            InvalidParameters,
        ),
        (
            "console write from a device",
            Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(PASS),
                len: 4,
            }),
            true,
            InvalidParameters,
        ),
        (
            "console write from beyond any address",
            Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(u64::MAX),
                len: 4,
            }),
            true,
            InvalidParameters,
        ),
        (
            "SBI SRST with a reserved type",
            Op::Call(FirmwareCall::InvalidParameters {
                nr: 0x5352_5354,
                function: 0,
            }),
            false,
            InvalidParameters,
        ),
        (
            "an unimplemented firmware function",
            Op::Call(FirmwareCall::Unsupported {
                nr: 0xc400_0001,
                function: 0,
            }),
            false,
            NotSupported,
        ),
        (
            "IPI to a CPU id no vCPU has",
            Op::Call(FirmwareCall::SendIpi {
                targets: vcpu_api::CpuMask { mask: 1, base: 99 },
            }),
            false,
            InvalidParameters,
        ),
    ] {
        c.case(
            &format!("hypercall: {name}"),
            frames,
            || call(op, console),
            |v| *v == code(want),
        );
    }
    c.case(
        "hypercall: console write of u64::MAX bytes",
        frames,
        || match guest(
            m,
            vec![Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(RAM + RAM_SIZE as u64 - 8),
                len: u64::MAX,
            })],
            true,
        )
        .0
        {
            // Bounded: at most what lies in RAM, never an attempt at 2^64 bytes.
            Ok(8) => Err(8),
            other => Ok(other),
        },
        |n| *n == 8,
    );
}

/// Defect the census found: an MMIO access that started inside an emulated device
/// but ran past its end (an 8-byte read at offset 0xc of a 16-byte device) reached
/// the device model, with an offset and width the device does not have.
#[test]
fn mmio_past_a_devices_end_never_reaches_the_model() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let (result, calls) = guest(
        &machine,
        vec![Op::Read {
            gpa: gpa(DEV + 0xc),
            width: Qword,
            reg: 1,
        }],
        false,
    );
    assert_eq!(
        result,
        Err(Unserved::Device(DeviceError::NoRegister {
            offset: 0xc,
            width: Qword
        }))
    );
    assert_eq!(calls, 0, "the model saw an access past its end");
}

#[test]
fn census() {
    let mut c = Census::default();
    decoders(&mut c);
    address_spaces(&mut c);
    vgic(&mut c);
    configs(&mut c);
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    creation(&mut c, &machine);
    operations(&mut c, &machine);
    mmio(&mut c, &machine);
    hypercalls(&mut c, &machine);
    assert_eq!(machine.frames_in_use(), 0, "frames leaked over the census");
    let n = c.names.len();
    println!(
        "census: {n} bad inputs, {} refused wrongly",
        c.failures.len()
    );
    assert!(
        c.failures.is_empty(),
        "{} of {n} bad inputs were not refused cleanly:\n{}",
        c.failures.len(),
        c.failures.join("\n")
    );
    assert!(n >= 120, "the census has {n} cases, fewer than 120");
}
