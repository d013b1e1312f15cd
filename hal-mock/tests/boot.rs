//! Boots a VM from each board config of `configs/` on the mock, for each nested
//! format of that architecture, and runs a scripted guest to shutdown: RAM reads and
//! writes (one across a page boundary), lazy fault-in, a read-only region, the
//! emulated test device, a hypercall, an access outside the VM, an unmap requested
//! by the guest, and a second vCPU started by CPU up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::Arc;

use addrspace::{
    AccessKind, ArmStage2Ipa40, ArmStage2Ipa48, Ept, NestedFormat, Npt, Sv39x4, Sv48x4,
};
use common::*;
use hal_mock::{Action, GuestLog, Machine, Op, Program, configs, run_vm};
use platforms::host::{TEST_DEVICE, TestDevice};
use platforms::layouts;
use platforms::protocol::test_device::{ID, ID_VALUE, SCRATCH};
use platforms::protocol::{GuestLayout, MAILBOX_MAGIC, RO_PATTERN};
use vcpu_api::AccessWidth::{Dword, Qword, Word};
use vcpu_api::Hypercall;
use vm_core::{Unserved, VmConfig, VmExit};

const ADD: u64 = 0x10;
const UNMAP: u64 = 0x11;
const WAIT_MAILBOX: u64 = 0x12;

fn program(l: &GuestLayout) -> (Program, usize) {
    let secondary = l.image + 0x1000;
    let mut checks = 0;
    let mut check = |reg, value, what| {
        checks += 1;
        Op::Check { reg, value, what }
    };
    let primary = vec![
        // RAM, every width, one store across a page boundary.
        Op::Write {
            gpa: gpa(l.scratch),
            width: Qword,
            value: 0x1122_3344_5566_7788,
        },
        Op::Read {
            gpa: gpa(l.scratch),
            width: Qword,
            reg: 1,
        },
        check(1, 0x1122_3344_5566_7788, "ram qword"),
        Op::Write {
            gpa: gpa(l.scratch + 0xffe),
            width: Dword,
            value: 0xcafe_babe,
        },
        Op::Read {
            gpa: gpa(l.scratch + 0xffe),
            width: Dword,
            reg: 1,
        },
        check(1, 0xcafe_babe, "ram dword across a page"),
        Op::Read {
            gpa: gpa(l.scratch + 0x1000),
            width: Word,
            reg: 1,
        },
        check(1, 0xcafe, "second page holds the upper half"),
        // Lazy region: zero at first touch, then keeps data.
        Op::Read {
            gpa: gpa(l.lazy_base + 0x1000),
            width: Qword,
            reg: 2,
        },
        check(2, 0, "lazy reads zero"),
        Op::Write {
            gpa: gpa(l.lazy_base + 0x1008),
            width: Qword,
            value: 0x55,
        },
        Op::Read {
            gpa: gpa(l.lazy_base + 0x1008),
            width: Qword,
            reg: 2,
        },
        check(2, 0x55, "lazy keeps data"),
        // Read-only region: readable, a write is refused (the handler skips it).
        Op::Read {
            gpa: gpa(l.ro_base),
            width: Qword,
            reg: 3,
        },
        check(3, RO_PATTERN, "read-only pattern"),
        Op::Write {
            gpa: gpa(l.ro_base),
            width: Qword,
            value: 0,
        },
        Op::Read {
            gpa: gpa(l.ro_base),
            width: Qword,
            reg: 3,
        },
        check(3, RO_PATTERN, "read-only unchanged"),
        // The emulated test device.
        Op::Read {
            gpa: gpa(l.mmio_base + ID),
            width: Qword,
            reg: 4,
        },
        check(4, ID_VALUE, "device id"),
        Op::Write {
            gpa: gpa(l.mmio_base + SCRATCH),
            width: Dword,
            value: 0xabcd_1234,
        },
        Op::Read {
            gpa: gpa(l.mmio_base + SCRATCH),
            width: Qword,
            reg: 4,
        },
        check(4, 0xabcd_1234, "device scratch"),
        // A hypercall with arguments and a result.
        Op::Hypercall {
            nr: ADD,
            args: [1, 2, 3, 4, 0, 0],
        },
        check(0, 1 + 2 * 2 + 3 * 3 + 4 * 4, "hypercall result"),
        // Outside every region: reported, skipped, the register is untouched.
        Op::Set {
            reg: 5,
            value: 0x5a5a,
        },
        Op::Read {
            gpa: gpa(l.outside),
            width: Qword,
            reg: 5,
        },
        check(5, 0x5a5a, "outside read skipped"),
        // Unmap requested by the guest, after the page is in the TLB.
        Op::Write {
            gpa: gpa(l.unmap_page),
            width: Qword,
            value: 7,
        },
        Op::Hypercall {
            nr: UNMAP,
            args: [l.unmap_page, 0, 0, 0, 0, 0],
        },
        check(0, 0, "unmap returned 0"),
        Op::Set {
            reg: 6,
            value: 0x6666,
        },
        Op::Read {
            gpa: gpa(l.unmap_page),
            width: Qword,
            reg: 6,
        },
        check(6, 0x6666, "unmapped page read skipped"),
        // The second vCPU.
        Op::CpuUp {
            target: 1,
            entry: gpa(secondary),
            arg: 0x77,
        },
        check(0, 0, "cpu up returned 0"),
        Op::Hypercall {
            nr: WAIT_MAILBOX,
            args: [0; 6],
        },
        check(0, 0x77 ^ MAILBOX_MAGIC, "secondary wrote the mailbox"),
        Op::Shutdown,
    ];
    let secondary_ops = vec![
        check(0, 0x77, "secondary start argument"),
        Op::Read {
            gpa: gpa(l.lazy_base + 0x2000),
            width: Qword,
            reg: 1,
        },
        check(1, 0, "secondary lazy fault-in"),
        Op::Read {
            gpa: gpa(l.scratch),
            width: Qword,
            reg: 2,
        },
        check(2, 0x1122_3344_5566_7788, "secondary sees primary's data"),
        Op::WriteReg {
            gpa: gpa(l.mailbox),
            width: Qword,
            reg: 0,
            xor: MAILBOX_MAGIC,
        },
        Op::CpuDown,
    ];
    (
        Program::new()
            .at(gpa(l.image), primary)
            .at(gpa(secondary), secondary_ops),
        checks,
    )
}

fn boot<F: NestedFormat>(config: VmConfig, l: GuestLayout) {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let (prog, checks) = program(&l);
    let vm = mock_vm::<F>(config, prog, &log);
    let device = Arc::new(TestDevice::default());
    vm.attach_device(TEST_DEVICE, device.clone()).unwrap();
    vm.write_to_guest_of(gpa(l.ro_base), &RO_PATTERN).unwrap();
    let report = run_vm(&machine, &vm, 1, |vm, vcpu, exit| match exit {
        VmExit::Hypercall(Hypercall { nr: ADD, args, .. }) => {
            Action::Return(args[0] + 2 * args[1] + 3 * args[2] + 4 * args[3])
        }
        VmExit::Hypercall(Hypercall {
            nr: UNMAP, args, ..
        }) => {
            vm.unmap_region(gpa(args[0]), 0x1000).unwrap();
            Action::Return(0)
        }
        VmExit::Hypercall(Hypercall {
            nr: WAIT_MAILBOX, ..
        }) => loop {
            let v: u64 = vm.read_from_guest_of(gpa(l.mailbox)).unwrap();
            if v != 0 {
                break Action::Return(v);
            }
            std::thread::yield_now();
        },
        VmExit::UnservedAccess(a) => {
            assert_eq!(vcpu, 0);
            let _ = a;
            Action::Skip
        }
        other => panic!("vCPU {vcpu}: unexpected exit {other:?}"),
    });
    assert!(
        report.errors.is_empty(),
        "{} errors: {:?}",
        F::NAME,
        report.errors
    );
    assert_eq!(log.failures(), Vec::<String>::new(), "{}", F::NAME);
    assert_eq!(log.counts(), (checks, 0), "{}", F::NAME);
    // The unserved accesses, in order: the read-only write, the outside read, the
    // read of the unmapped page.
    let unserved: Vec<_> = report
        .exits
        .iter()
        .filter_map(|(_, e)| match e {
            VmExit::UnservedAccess(a) => Some((a.gpa, a.access, a.why)),
            _ => None,
        })
        .collect();
    assert_eq!(unserved.len(), 3, "{unserved:?}");
    assert!(
        matches!(unserved[0], (g, AccessKind::Write, Unserved::Permission { .. }) if g == gpa(l.ro_base))
    );
    assert!(matches!(unserved[1], (g, AccessKind::Read, Unserved::NoArea) if g == gpa(l.outside)));
    assert!(
        matches!(unserved[2], (g, AccessKind::Read, Unserved::NoArea) if g == gpa(l.unmap_page))
    );
    assert_eq!(
        report.count(|e| matches!(e, VmExit::CpuUp { target: 1, .. })),
        1
    );
    assert_eq!(report.count(|e| matches!(e, VmExit::Shutdown)), 1);
    assert_eq!(report.vcpus_run.len(), 2);
    // Two reads and one write reached the device.
    assert_eq!(device.accesses(), 3);
    // Two lazy pages were faulted in, one by each vCPU.
    let stats = vm.stats();
    assert_eq!(
        stats.data_frames,
        (0x100_0000 + 0x1000 - 0x1000) / 0x1000 + 2
    );
    assert_eq!(stats.deferred_frames, 0);
    drop(vm);
    assert_eq!(machine.frames_in_use(), 0, "{}: frames leaked", F::NAME);
}

#[test]
fn embedded_configs_round_trip_through_the_code_generator() {
    for (toml, embedded) in [
        (
            configs::QEMU_VIRT_AARCH64_TOML,
            configs::qemu_virt_aarch64(),
        ),
        (
            configs::QEMU_VIRT_RISCV64_TOML,
            configs::qemu_virt_riscv64(),
        ),
        (configs::QEMU_PC_X86_64_TOML, configs::qemu_pc_x86_64()),
    ] {
        assert_eq!(VmConfig::from_toml(toml).unwrap(), embedded.unwrap());
    }
}

#[test]
fn aarch64_config_ipa40() {
    boot::<ArmStage2Ipa40>(
        configs::qemu_virt_aarch64().unwrap(),
        layouts::QEMU_VIRT_AARCH64,
    );
}

#[test]
fn aarch64_config_ipa48() {
    boot::<ArmStage2Ipa48>(
        configs::qemu_virt_aarch64().unwrap(),
        layouts::QEMU_VIRT_AARCH64,
    );
}

#[test]
fn riscv64_config_sv39x4() {
    boot::<Sv39x4>(
        configs::qemu_virt_riscv64().unwrap(),
        layouts::QEMU_VIRT_RISCV64,
    );
}

#[test]
fn riscv64_config_sv48x4() {
    boot::<Sv48x4>(
        configs::qemu_virt_riscv64().unwrap(),
        layouts::QEMU_VIRT_RISCV64,
    );
}

#[test]
fn x86_64_config_npt() {
    boot::<Npt>(configs::qemu_pc_x86_64().unwrap(), layouts::QEMU_PC_X86_64);
}

#[test]
fn x86_64_config_ept() {
    boot::<Ept>(configs::qemu_pc_x86_64().unwrap(), layouts::QEMU_PC_X86_64);
}
