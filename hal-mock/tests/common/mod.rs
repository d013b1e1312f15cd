//! Shared pieces of the hal-mock integration tests: the test device model, the
//! board layouts, and small helpers.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use addrspace::GuestPhysAddr;
use addrspace::NestedFormat;
use hal_mock::{GuestLog, MockFaults, MockVCpuConfig, MockVm, Program};
use vcpu_api::AccessWidth;
use vm_core::{DeviceError, MmioDevice, Vm, VmConfig, VmResult};

/// The test device of `platforms::protocol::test_device` (registers re-stated here
/// to keep hal-mock independent of the board crates).
pub const ID: u64 = 0x00;
pub const SCRATCH: u64 = 0x08;
pub const COUNTER: u64 = 0x10;
pub const ID_VALUE: u64 = 0x4856_5445_5354_0001;
pub const RO_PATTERN: u64 = 0x5254_5441_505f_4f52;
pub const MAILBOX_MAGIC: u64 = 0x5345_434f_4e44_4152;

/// A device with an id register, a scratch register and an access counter.
#[derive(Debug, Default)]
pub struct TestDevice {
    scratch: AtomicU64,
    pub accesses: AtomicU64,
}

impl MmioDevice for TestDevice {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let n = self.accesses.fetch_add(1, Ordering::SeqCst);
        match offset {
            ID => Ok(width.truncate(ID_VALUE)),
            SCRATCH => Ok(width.truncate(self.scratch.load(Ordering::SeqCst))),
            COUNTER => Ok(width.truncate(n)),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        self.accesses.fetch_add(1, Ordering::SeqCst);
        match offset {
            SCRATCH => {
                self.scratch.store(width.truncate(value), Ordering::SeqCst);
                Ok(())
            }
            _ => Err(DeviceError::Denied { offset }),
        }
    }
}

/// The guest-physical layout of a board's test VM (as in `platforms::layouts`).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub ram: u64,
    pub entry: u64,
    pub lazy: u64,
    pub ro: u64,
    pub mmio: u64,
    pub outside: u64,
}

impl Layout {
    pub const AARCH64: Layout = Layout {
        ram: 0x4000_0000,
        entry: 0x4000_0000,
        lazy: 0x5000_0000,
        ro: 0x5100_0000,
        mmio: 0x0b00_0000,
        outside: 0x6000_0000,
    };
    pub const RISCV64: Layout = Layout {
        ram: 0x8000_0000,
        entry: 0x8000_0000,
        lazy: 0x9000_0000,
        ro: 0x9100_0000,
        mmio: 0x0b00_0000,
        outside: 0xa000_0000,
    };
    pub const X86_64: Layout = Layout {
        ram: 0,
        entry: 0x10_0000,
        lazy: 0x4000_0000,
        ro: 0x4100_0000,
        mmio: 0xd000_0000,
        outside: 0x8000_0000,
    };

    pub fn unmap_page(&self) -> u64 {
        self.ram + 0xF0_0000
    }
    pub fn mailbox(&self) -> u64 {
        self.ram + 0xE0_0000
    }
    pub fn scratch(&self) -> u64 {
        self.ram + 0xE1_0000
    }
}

pub fn gpa(v: u64) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v as usize)
}

/// Builds a VM of mock vCPUs running `program` with `faults`, all logging into `log`.
pub fn try_mock_vm<F: NestedFormat>(
    config: VmConfig,
    program: Program,
    log: &Arc<GuestLog>,
    faults: MockFaults,
) -> VmResult<Arc<MockVm<F>>> {
    let vcpu = MockVCpuConfig {
        faults,
        ..MockVCpuConfig::new(Arc::new(program), log.clone())
    };
    Vm::new(config, |_| (vcpu.clone(), ()))
}

/// [`try_mock_vm`] without injected faults; panics on an error.
pub fn mock_vm<F: NestedFormat>(
    config: VmConfig,
    program: Program,
    log: &Arc<GuestLog>,
) -> Arc<MockVm<F>> {
    try_mock_vm(config, program, log, MockFaults::default())
        .unwrap_or_else(|e| panic!("Vm::new: {e}"))
}
