//! vm-core's firmware policy, through mock vCPUs: guest CPU ids mapped to vCPU
//! indexes for CPU on and status, what probes and versions answer, the firmware
//! console through the guest-memory copy API, and calls the board must answer.
//! The mock answers in register 0 like PSCI (`hal_mock::reply_word`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::{Arc, Mutex};

use addrspace::{HostPhysAddr, Npt, Sv39x4};
use common::*;
use hal_mock::{
    Action, GuestLog, Machine, MockVCpuConfig, MockVm, Op, Program, reply_word, run_vm,
};
use vcpu_api::{CpuState, FirmwareCall, FirmwareError, FirmwareReply, Service};
use vm_core::{GuestConsole, Hypercall, Vm, VmConfig, VmError, VmExit};

const RAM: u64 = 0x8000_0000;
/// A pass-through device range (a UART the board gives the guest).
const UART: u64 = 0x1000_0000;

fn config(cpus: usize) -> VmConfig {
    ram_config(1, "firmware", cpus, RAM, 0x10_0000)
        .passthrough_device(
            "uart",
            gpa(UART),
            HostPhysAddr::from_usize(usize::try_from(UART).unwrap()),
            0x1000,
            10,
        )
        .build()
        .unwrap()
}

/// A VM of mock vCPUs whose guest CPU ids are `ids` (vCPU `i` has `ids[i]`).
fn vm_with_ids<F: addrspace::NestedFormat>(
    ids: &[u64],
    program: Program,
    log: &Arc<GuestLog>,
) -> vm_core::VmResult<Arc<MockVm<F>>> {
    let program = Arc::new(program);
    let config = config(ids.len());
    let grant = hal_mock::grant_devices(&config);
    Vm::new(config.into_valid().unwrap(), &grant, |i| {
        let vcpu = MockVCpuConfig {
            cpu_id: ids.get(i).copied(),
            ..MockVCpuConfig::new(program.clone(), log.clone())
        };
        (vcpu, ())
    })
}

fn check(reg: usize, value: u64, what: &'static str) -> Op {
    Op::Check { reg, value, what }
}

fn err(e: FirmwareError) -> u64 {
    reply_word(FirmwareReply::Error(e))
}

/// Guest CPU ids that are not the vCPU indexes (RISC-V hart ids 4 and 7, Arm MPIDRs
/// 0x100 and 0x101): CPU on and status name vCPUs by their ids; an index that is
/// not an id names no vCPU. The started vCPU runs with its argument.
#[test]
fn guest_cpu_ids_are_not_vcpu_indexes() {
    for ids in [[4u64, 7], [0x100, 0x101]] {
        let machine = Machine::with_defaults();
        let _g = machine.enter(0);
        let log = Arc::new(GuestLog::default());
        let second = gpa(RAM + 0x1000);
        let program = Program::new()
            .at(
                gpa(RAM),
                vec![
                    Op::CpuUp {
                        target: 1,
                        entry: second,
                        arg: 1,
                    },
                    check(0, err(FirmwareError::InvalidParameters), "index 1 is no id"),
                    Op::Call(FirmwareCall::CpuStatus { target: ids[1] }),
                    check(0, reply_word(FirmwareReply::CpuState(CpuState::Off)), "off"),
                    Op::CpuUp {
                        target: ids[0],
                        entry: second,
                        arg: 1,
                    },
                    check(0, err(FirmwareError::AlreadyOn), "vCPU 0 is on"),
                    Op::CpuUp {
                        target: ids[1],
                        entry: second,
                        arg: 0x42,
                    },
                    check(0, 0, "started by its id"),
                    Op::Halt,
                    Op::Shutdown,
                ],
            )
            .at(
                second,
                vec![
                    check(0, 0x42, "argument"),
                    Op::Call(FirmwareCall::CpuStatus { target: ids[0] }),
                    check(0, reply_word(FirmwareReply::CpuState(CpuState::On)), "on"),
                    Op::CpuDown,
                ],
            );
        let vm = vm_with_ids::<Sv39x4>(&ids, program, &log).unwrap();
        assert_eq!(vm.vcpu_by_cpu_id(ids[1]), Some(1));
        assert_eq!(vm.vcpu_by_cpu_id(1), None);
        assert_eq!(vm.cpu_id(0), Ok(ids[0]));
        let report = run_vm(&machine, &vm, 1, |vm, _, exit| match exit {
            VmExit::Halt => {
                while vm.is_vcpu_started(1) {
                    std::thread::yield_now();
                }
                Action::Resume
            }
            other => panic!("{other:?}"),
        });
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(log.counts(), (6, 0), "{ids:x?}: {:?}", log.failures());
        assert_eq!(
            report.count(|e| matches!(e, VmExit::CpuUp { target: 1, .. })),
            1
        );
    }
}

/// Two vCPUs the guest could not tell apart are refused at creation.
#[test]
fn duplicate_cpu_ids_are_refused() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let r = vm_with_ids::<Npt>(&[4, 4], Program::new(), &log);
    assert!(matches!(
        r,
        Err(VmError::DuplicateCpuId {
            vcpu: 1,
            other: 0,
            cpu_id: 4
        })
    ));
}

/// A console that keeps what it was given.
#[derive(Default)]
struct Console(Mutex<Vec<u8>>);

impl GuestConsole for Console {
    fn write(&self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
    fn read(&self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(2);
        buf[..n].copy_from_slice(&b"ok"[..n]);
        n
    }
}

/// Regression (issue 10): the SBI debug console read the guest's buffer with HLV,
/// so a buffer in a pass-through device mapping reached the device, which the
/// guest-memory copy API refuses. vm-core now reads it through that API: a device
/// buffer is INVALID_PARAMETERS and nothing reaches the console; RAM is written
/// out; a buffer running into a hole stops there.
#[test]
fn console_reads_guest_memory_through_the_copy_api() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let text = RAM + 0x8000;
    let end = RAM + 0x10_0000 - 3;
    let program = Program::new().at(
        gpa(RAM),
        vec![
            Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(UART),
                len: 8,
            }),
            check(0, err(FirmwareError::InvalidParameters), "device buffer"),
            Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(text),
                len: 5,
            }),
            check(0, 5, "RAM buffer"),
            Op::Call(FirmwareCall::ConsoleWrite {
                gpa: gpa(end),
                len: 8,
            }),
            check(0, 3, "up to the end of RAM"),
            Op::Call(FirmwareCall::ConsoleRead {
                gpa: gpa(UART),
                len: 2,
            }),
            check(
                0,
                err(FirmwareError::InvalidParameters),
                "read into a device",
            ),
            Op::Call(FirmwareCall::ConsoleWriteByte { byte: b'!' }),
            check(0, 0, "byte"),
            Op::Shutdown,
        ],
    );
    let vm = vm_with_ids::<Sv39x4>(&[0], program, &log).unwrap();
    vm.write_guest(gpa(text), b"hello").unwrap();
    vm.write_guest(gpa(end), b"abc").unwrap();
    let console = Arc::new(Console::default());
    vm.attach_console(console.clone());
    let report = run_vm(&machine, &vm, 1, |_, _, exit| panic!("{exit:?}"));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(log.counts(), (5, 0), "{:?}", log.failures());
    assert_eq!(console.0.lock().unwrap().as_slice(), b"helloabc!");
}

/// Probes answer what vm-core offers: the standard services always, the console
/// only with one attached, a board's hypercall interface only once offered, a
/// service the vCPU must carry out (the timer) only where it can, IPIs always.
/// Versions follow the interface; the console without a console is not supported.
#[test]
fn probes_and_versions() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let probe = |service| Op::Call(FirmwareCall::Probe { service });
    let yes = reply_word(FirmwareReply::Offered(true));
    let no = reply_word(FirmwareReply::Offered(false));
    let program = Program::new().at(
        gpa(RAM),
        vec![
            probe(Some(Service::CpuPower)),
            check(0, yes, "CPU power"),
            probe(Some(Service::Console)),
            check(0, no, "no console"),
            probe(Some(Service::Hypercall { nr: 0x48 })),
            check(0, no, "not offered"),
            probe(Some(Service::Timer)),
            check(0, no, "the mock has no timer"),
            probe(Some(Service::Ipi)),
            check(0, yes, "IPIs"),
            probe(None),
            check(0, no, "unknown"),
            Op::Call(FirmwareCall::Version),
            check(0, 0x1_0000, "PSCI 1.0 (the mock calls by HVC)"),
            Op::Call(FirmwareCall::ConsoleWriteByte { byte: b'x' }),
            check(0, err(FirmwareError::NotSupported), "no console"),
            Op::Call(FirmwareCall::SetTimer { deadline: 5 }),
            check(0, err(FirmwareError::NotSupported), "no timer"),
            Op::Hypercall {
                nr: 1,
                args: [0; 6],
            },
            probe(Some(Service::Console)),
            check(0, yes, "console"),
            probe(Some(Service::Hypercall { nr: 0x48 })),
            check(0, yes, "offered"),
            Op::Reset,
        ],
    );
    let vm = vm_with_ids::<Sv39x4>(&[0], program, &log).unwrap();
    let report = run_vm(&machine, &vm, 1, |vm, _, exit| match exit {
        VmExit::Hypercall(Hypercall { nr: 1, .. }) => {
            vm.attach_console(Arc::new(Console::default()));
            vm.offer_hypercalls(&[0x48]);
            Action::Return(0)
        }
        other => panic!("{other:?}"),
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(log.counts(), (11, 0), "{:?}", log.failures());
    assert_eq!(report.count(|e| *e == VmExit::Reset), 1);
}

/// A hypercall waits for the board's answer: running the vCPU again before is an
/// error that changes nothing; the answer (a value or a refusal) is taken once.
#[test]
fn hypercalls_wait_for_their_answer() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let program = Program::new().at(
        gpa(RAM),
        vec![
            Op::Hypercall {
                nr: 9,
                args: [1, 2, 3, 4, 5, 6],
            },
            check(0, err(FirmwareError::NotSupported), "refused"),
            Op::Shutdown,
        ],
    );
    let vm = vm_with_ids::<Sv39x4>(&[0], program, &log).unwrap();
    vm.boot().unwrap();
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        VmExit::Hypercall(Hypercall {
            nr: 9,
            function: 0,
            args: [1, 2, 3, 4, 5, 6]
        })
    );
    assert_eq!(vm.run_vcpu(0), Err(VmError::Unanswered { vcpu: 0 }));
    assert_eq!(
        vm.skip_access(0),
        Err(VmError::NothingToComplete { vcpu: 0 })
    );
    vm.reply_call(0, FirmwareReply::Error(FirmwareError::NotSupported))
        .unwrap();
    assert_eq!(
        vm.set_return_value(0, 1),
        Err(VmError::NothingToComplete { vcpu: 0 })
    );
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Shutdown);
    assert_eq!(log.counts(), (1, 0), "{:?}", log.failures());
}

/// SBI IPIs: the supervisor software interrupt reaches the vCPUs the mask names by
/// their guest CPU ids (hart ids 4 and 7 here, not the indexes), a broadcast mask
/// reaches every vCPU, and a mask naming an id no vCPU has is refused and
/// interrupts nobody. The VM counts the exits by kind.
#[test]
fn sbi_ipis_reach_their_targets_by_cpu_id() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use vcpu_api::CpuMask;
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let ids = [4u64, 7];
    let second = gpa(RAM + 0x1000);
    let ipi = |mask, base| {
        Op::Call(FirmwareCall::SendIpi {
            targets: CpuMask { mask, base },
        })
    };
    let program = Program::new()
        .at(
            gpa(RAM),
            vec![
                Op::CpuUp {
                    target: ids[1],
                    entry: second,
                    arg: 0,
                },
                check(0, 0, "started"),
                // Hart 7 = base 4, bit 3.
                ipi(1 << 3, 4),
                check(0, 0, "IPI to hart 7"),
                // Harts 4 and 5: 5 is no vCPU's id.
                ipi(0b11, 4),
                check(0, err(FirmwareError::InvalidParameters), "hart 5"),
                ipi(0, u64::MAX),
                check(0, 0, "broadcast"),
                Op::Hypercall {
                    nr: 1,
                    args: [0; 6],
                },
                Op::Halt,
                Op::Shutdown,
            ],
        )
        .at(second, vec![Op::Halt, Op::CpuDown]);
    let vm = vm_with_ids::<Sv39x4>(&ids, program, &log).unwrap();
    let sent = AtomicBool::new(false);
    let report = run_vm(&machine, &vm, 1, |vm, vcpu, exit| match (vcpu, exit) {
        (0, VmExit::Hypercall(Hypercall { nr: 1, .. })) => {
            sent.store(true, Ordering::SeqCst);
            Action::Return(0)
        }
        (0, VmExit::Halt) => {
            while vm.is_vcpu_started(1) {
                std::thread::yield_now();
            }
            Action::Resume
        }
        // vCPU 1 waits until vCPU 0 sent every IPI, then enters once more (taking
        // them) and stops.
        (1, VmExit::Halt) => {
            while !sent.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            Action::Resume
        }
        other => panic!("{other:?}"),
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(log.counts(), (4, 0), "{:?}", log.failures());
    let irqs = |i| vm.with_vcpu(i, |v| v.pending_irqs().to_vec()).unwrap();
    let ssi = vm_core::SBI_IPI_INTERRUPT;
    assert_eq!(irqs(1), [ssi, ssi], "the targeted IPI and the broadcast");
    assert_eq!(irqs(0), [ssi], "the broadcast only");
    // The exits by kind: CPU on, three IPIs, the hypercall, system off and CPU off
    // are firmware calls; both vCPUs halted once.
    let exits = vm.stats().exits;
    assert_eq!(
        (exits.calls, exits.ipi_calls, exits.hypercalls, exits.halts),
        (7, 3, 1, 2),
        "{exits}"
    );
}
