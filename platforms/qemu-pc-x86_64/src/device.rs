//! The test device of the protocol (`platforms::protocol::test_device`), emulated
//! by trap-and-emulate: ID, a scratch register that remembers the last write's
//! width, an access counter and a register that reads as -2 at every width.

use core::sync::atomic::{AtomicU64, Ordering};

use platforms::protocol::test_device as reg;
use vcpu_api::AccessWidth;
use vm_core::{DeviceError, MmioDevice};

/// The device's state.
#[derive(Debug, Default)]
pub(crate) struct TestDevice {
    scratch: AtomicU64,
    counter: AtomicU64,
}

impl MmioDevice for TestDevice {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let count = self.counter.fetch_add(1, Ordering::SeqCst);
        let value = match offset {
            reg::ID => reg::ID_VALUE,
            reg::SCRATCH => self.scratch.load(Ordering::SeqCst),
            reg::COUNTER => count,
            reg::NEGATIVE_REG => reg::NEGATIVE,
            _ => return Err(DeviceError::NoRegister { offset, width }),
        };
        Ok(width.truncate(value))
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        self.counter.fetch_add(1, Ordering::SeqCst);
        match offset {
            reg::SCRATCH => {
                self.scratch.store(width.truncate(value), Ordering::SeqCst);
                Ok(())
            }
            reg::ID | reg::COUNTER | reg::NEGATIVE_REG => Err(DeviceError::Denied { offset }),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers() {
        let d = TestDevice::default();
        assert_eq!(d.read(reg::ID, AccessWidth::Qword), Ok(reg::ID_VALUE));
        assert_eq!(d.read(reg::ID, AccessWidth::Word), Ok(0x0001));
        d.write(reg::SCRATCH, AccessWidth::Word, 0x1_2345).unwrap();
        assert_eq!(d.read(reg::SCRATCH, AccessWidth::Qword), Ok(0x2345));
        assert_eq!(d.read(reg::NEGATIVE_REG, AccessWidth::Byte), Ok(0xfe));
        let a = d.read(reg::COUNTER, AccessWidth::Dword).unwrap();
        let b = d.read(reg::COUNTER, AccessWidth::Dword).unwrap();
        assert_eq!((a, b), (5, 6));
        assert_eq!(
            d.write(reg::ID, AccessWidth::Byte, 1),
            Err(DeviceError::Denied { offset: reg::ID })
        );
        assert!(matches!(
            d.read(0x20, AccessWidth::Byte),
            Err(DeviceError::NoRegister { offset: 0x20, .. })
        ));
    }
}
