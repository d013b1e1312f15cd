//! The emulated test device of the test protocol ([`platforms::protocol::test_device`]):
//! an identification register, a scratch register, an access counter and a register
//! that reads as -2, for 1/2/4/8-byte MMIO. Pure, tested on the host.

use core::sync::atomic::{AtomicU64, Ordering};

use platforms::protocol::test_device::{COUNTER, ID, ID_VALUE, NEGATIVE, NEGATIVE_REG, SCRATCH};
use vcpu_api::AccessWidth;
use vm_core::{DeviceError, MmioDevice};

/// The test device's state.
#[derive(Debug, Default)]
pub(crate) struct TestDevice {
    /// The last value written to SCRATCH, already cut to its width.
    scratch: AtomicU64,
    /// Accesses so far (every register, reads and writes).
    accesses: AtomicU64,
}

impl TestDevice {
    /// A device with SCRATCH = 0 and no accesses counted.
    pub(crate) const fn new() -> Self {
        Self {
            scratch: AtomicU64::new(0),
            accesses: AtomicU64::new(0),
        }
    }
}

impl MmioDevice for TestDevice {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let count = self.accesses.fetch_add(1, Ordering::SeqCst);
        let value = match offset {
            ID => ID_VALUE,
            SCRATCH => self.scratch.load(Ordering::SeqCst),
            COUNTER => count,
            NEGATIVE_REG => NEGATIVE,
            _ => return Err(DeviceError::NoRegister { offset, width }),
        };
        Ok(width.truncate(value))
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        self.accesses.fetch_add(1, Ordering::SeqCst);
        match offset {
            SCRATCH => {
                self.scratch.store(width.truncate(value), Ordering::SeqCst);
                Ok(())
            }
            ID | COUNTER | NEGATIVE_REG => Err(DeviceError::Denied { offset }),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::*;

    #[test]
    fn registers() {
        let d = TestDevice::new();
        assert_eq!(d.read(ID, Qword), Ok(ID_VALUE));
        assert_eq!(d.read(ID, Word), Ok(ID_VALUE & 0xffff));
        for w in [Byte, Word, Dword, Qword] {
            assert_eq!(d.read(NEGATIVE_REG, w), Ok(w.truncate(NEGATIVE)));
        }
        d.write(SCRATCH, Qword, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(d.read(SCRATCH, Qword), Ok(0x1122_3344_5566_7788));
        // A narrower write leaves only its width.
        d.write(SCRATCH, Byte, 0x1ff).unwrap();
        assert_eq!(d.read(SCRATCH, Qword), Ok(0xff));
    }

    #[test]
    fn counter_counts_every_access() {
        let d = TestDevice::new();
        let a = d.read(COUNTER, Dword).unwrap();
        let b = d.read(COUNTER, Dword).unwrap();
        assert_eq!(b, a + 1);
        d.read(ID, Byte).unwrap();
        assert_eq!(d.read(COUNTER, Qword), Ok(a + 3));
    }

    #[test]
    fn read_only_and_missing_registers() {
        let d = TestDevice::new();
        assert_eq!(
            d.write(ID, Qword, 1),
            Err(DeviceError::Denied { offset: ID })
        );
        assert_eq!(
            d.read(0x20, Dword),
            Err(DeviceError::NoRegister {
                offset: 0x20,
                width: Dword
            })
        );
        assert_eq!(
            d.write(0x21, Byte, 0),
            Err(DeviceError::NoRegister {
                offset: 0x21,
                width: Byte
            })
        );
    }
}
