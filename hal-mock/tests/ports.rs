//! x86 port I/O through vm-core: emulated port devices (`DeviceSpace::Port`) on the
//! VM's port bus, served with their models inside `run_vcpu`; pass-through ports
//! (`passthrough_ports`) reached by the guest without an exit, only where the
//! platform granted them; everything else returned to the caller as `VmExit::Io`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use std::sync::{Arc, Mutex};

use addrspace::Npt;
use common::*;
use hal_mock::{GuestLog, Machine, MockFaults, MockVm, Op, Program};
use vcpu_api::AccessWidth::{Byte, Dword, Word};
use vcpu_api::{AccessWidth, PortIo, PortOp};
use vm_core::{
    BusError, DeviceError, GrantKind, HostGrant, MmioDevice, Vm, VmConfig, VmError, VmExit,
};

const RAM: u64 = 0x8000_0000;

/// A UART-like model: byte writes at offset 0 are recorded, offset 5 reads 0x60
/// (transmitter empty); anything else is refused.
#[derive(Default)]
struct Uart(Mutex<Vec<u8>>);

impl MmioDevice for Uart {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        match (offset, width) {
            (5, Byte) => Ok(0x60),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }
    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        match (offset, width) {
            (0, Byte) => {
                self.0.lock().unwrap().push(value.to_le_bytes()[0]);
                Ok(())
            }
            _ => Err(DeviceError::Denied { offset }),
        }
    }
}

fn config() -> VmConfig {
    ram_config(1, "ports", 1, RAM, 0x10_0000)
        .port_device("com1", 0x3f8, 8, 4, 2, &[])
        .port_device("pit", 0x40, 4, 0, 0x24, &[])
        .build()
        .unwrap()
}

fn vm(config: VmConfig, ops: Vec<Op>, log: &Arc<GuestLog>) -> Arc<MockVm<Npt>> {
    try_mock_vm(
        config,
        Program::new().at(gpa(RAM), ops),
        log,
        MockFaults::default(),
    )
    .unwrap()
}

fn io(port: u16, width: AccessWidth, op: PortOp) -> VmExit {
    VmExit::Io(PortIo { port, width, op })
}

/// Port devices of the config are on the VM's port bus: with a model attached, an
/// `OUT` reaches it and an `IN` gets its value in the accumulator (AL merged into
/// the old register) without the caller seeing an exit; a port with no model, an
/// access past a device's end, a refusal and a port with no device go to the caller
/// as `VmExit::Io`.
#[test]
fn port_devices_are_served_by_their_models() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let log = Arc::new(GuestLog::default());
    let vm = vm(
        config(),
        vec![
            Op::Set {
                reg: 0,
                value: 0x1234_5600,
            },
            Op::Out {
                port: 0x3f8,
                width: Byte,
                value: 0x141,
            },
            Op::In {
                port: 0x3fd,
                width: Byte,
            },
            Op::Check {
                reg: 0,
                value: 0x1234_5660,
                what: "IN AL from the model, merged",
            },
            Op::Out {
                port: 0x40,
                width: Byte,
                value: 0x36,
            },
            Op::In {
                port: 0x3fe,
                width: Dword,
            },
            Op::Out {
                port: 0x3f9,
                width: Byte,
                value: 1,
            },
            Op::Out {
                port: 0x80,
                width: Byte,
                value: 7,
            },
            Op::Shutdown,
        ],
        &log,
    );
    assert_eq!(
        vm.port_devices(),
        [
            ("pit".to_string(), 0x40, 4, false),
            ("com1".to_string(), 0x3f8, 8, false)
        ]
    );
    assert!(
        vm.mmio_devices().is_empty(),
        "no port device on the MMIO bus"
    );
    let uart = Arc::new(Uart::default());
    vm.attach_device("com1", uart.clone()).unwrap();
    assert!(vm.port_devices()[1].3);
    vm.boot().unwrap();
    let write = |data| PortOp::Write { data };
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        io(0x40, Byte, write(0x36)),
        "no model"
    );
    assert_eq!(*uart.0.lock().unwrap(), [0x41], "the OUT, cut to a byte");
    assert!(log.passed(0, "IN AL from the model, merged"));
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        io(0x3fe, Dword, PortOp::Read),
        "past the end"
    );
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        io(0x3f9, Byte, write(1)),
        "refused"
    );
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        io(0x80, Byte, write(7)),
        "no device"
    );
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Shutdown);
    assert_eq!(log.counts(), (1, 0));
}

/// `attach_device` finds a port device by name as it finds an MMIO one; an unknown
/// name is refused on both buses.
#[test]
fn port_devices_attach_by_name() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm(config(), vec![], &Arc::new(GuestLog::default()));
    vm.attach_device("pit", Arc::new(Uart::default())).unwrap();
    assert_eq!(vm.port_devices()[0], ("pit".to_string(), 0x40, 4, true));
    assert!(matches!(
        vm.attach_device("com2", Arc::new(Uart::default())),
        Err(VmError::Bus(BusError::NoSuchDevice { .. }))
    ));
}

/// `passthrough_ports` are the host's ports: refused unless the platform granted
/// them as ports (`VmError::NotGranted`, nothing allocated); granted, the guest's
/// `IN`/`OUT` there reach the host port without an exit, while a neighbouring port,
/// or an access that runs past the range, still exits.
#[test]
fn passthrough_ports_need_a_grant_and_do_not_exit() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let config = || {
        ram_config(1, "ports", 1, RAM, 0x10_0000)
            .passthrough_port(0x70, 2)
            .build()
            .unwrap()
    };
    let log = Arc::new(GuestLog::default());
    let free = machine.frames_in_use();
    let program = Arc::new(Program::new());
    let vcpu = hal_mock::MockVCpuConfig::new(program, log.clone());
    let refused = Vm::<hal_mock::MockVCpu<Npt>>::new(
        config().into_valid().unwrap(),
        &HostGrant::none(),
        |_| (vcpu.clone(), ()),
    );
    assert!(matches!(
        refused,
        Err(VmError::NotGranted {
            kind: GrantKind::Ports,
            size: 2,
            ..
        })
    ));
    assert_eq!(machine.frames_in_use(), free, "nothing allocated");

    let vm = vm(
        config(),
        vec![
            Op::Out {
                port: 0x70,
                width: Word,
                value: 0xbeef,
            },
            Op::Set { reg: 0, value: 0 },
            Op::In {
                port: 0x70,
                width: Word,
            },
            Op::Check {
                reg: 0,
                value: 0xbeef,
                what: "IN AX from the host ports",
            },
            Op::In {
                port: 0x71,
                width: Word,
            },
            Op::Out {
                port: 0x72,
                width: Byte,
                value: 1,
            },
            Op::Shutdown,
        ],
        &log,
    );
    vm.boot().unwrap();
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        io(0x71, Word, PortOp::Read),
        "0x72 is not passed"
    );
    assert!(log.passed(0, "IN AX from the host ports"));
    assert_eq!(
        machine.port_in(0x70, Word),
        0xbeef,
        "the host port was written"
    );
    assert_eq!(
        vm.run_vcpu(0).unwrap(),
        io(0x72, Byte, PortOp::Write { data: 1 })
    );
    assert_eq!(vm.run_vcpu(0).unwrap(), VmExit::Shutdown);
}
