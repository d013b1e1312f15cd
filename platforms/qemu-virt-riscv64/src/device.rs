//! The emulated test device of the test protocol (`platforms::protocol::test_device`):
//! an identification register, a scratch register, an access counter, and a register
//! that reads as -2 at every width. Pure, tested on the host.

use core::sync::atomic::{AtomicU64, Ordering};

use platforms::protocol::test_device as reg;
use vcpu_api::AccessWidth;
use vm_core::{DeviceError, MmioDevice};

/// The device's state; shared by the vCPUs of one VM (atomics, no lock).
#[derive(Debug, Default)]
pub(crate) struct TestDevice {
    /// The last value written to SCRATCH, cut to that write's width.
    scratch: AtomicU64,
    /// Every access so far, reads and writes of any register.
    accesses: AtomicU64,
}

impl TestDevice {
    /// A device with SCRATCH = 0 and no access counted.
    pub(crate) const fn new() -> Self {
        Self {
            scratch: AtomicU64::new(0),
            accesses: AtomicU64::new(0),
        }
    }

    /// Accesses so far.
    pub(crate) fn accesses(&self) -> u64 {
        self.accesses.load(Ordering::SeqCst)
    }
}

impl MmioDevice for TestDevice {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let before = self.accesses.fetch_add(1, Ordering::SeqCst);
        let value = match offset {
            reg::ID => reg::ID_VALUE,
            reg::SCRATCH => self.scratch.load(Ordering::SeqCst),
            // "Reads return the count so far": the accesses before this one.
            reg::COUNTER => before,
            reg::NEGATIVE_REG => reg::NEGATIVE,
            _ => return Err(DeviceError::NoRegister { offset, width }),
        };
        Ok(width.truncate(value))
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        self.accesses.fetch_add(1, Ordering::SeqCst);
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
    use AccessWidth::{Byte, Dword, Qword, Word};

    #[test]
    fn id_and_negative_at_every_width() {
        let d = TestDevice::new();
        assert_eq!(d.read(reg::ID, Qword), Ok(0x4856_5445_5354_0001));
        assert_eq!(d.read(reg::ID, Dword), Ok(0x5354_0001));
        assert_eq!(d.read(reg::NEGATIVE_REG, Byte), Ok(0xfe));
        assert_eq!(d.read(reg::NEGATIVE_REG, Word), Ok(0xfffe));
        assert_eq!(d.read(reg::NEGATIVE_REG, Dword), Ok(0xffff_fffe));
        assert_eq!(d.read(reg::NEGATIVE_REG, Qword), Ok(u64::MAX - 1));
    }

    /// SCRATCH keeps the last write cut to its width, zero-extended on reads.
    #[test]
    fn scratch_keeps_the_last_width() {
        let d = TestDevice::new();
        d.write(reg::SCRATCH, Qword, 0x0123_4567_89ab_cdef).unwrap();
        assert_eq!(d.read(reg::SCRATCH, Qword), Ok(0x0123_4567_89ab_cdef));
        d.write(reg::SCRATCH, Word, 0xdead_beef).unwrap();
        assert_eq!(d.read(reg::SCRATCH, Qword), Ok(0xbeef));
        assert_eq!(d.read(reg::SCRATCH, Byte), Ok(0xef));
    }

    #[test]
    fn counter_counts_reads_and_writes() {
        let d = TestDevice::new();
        assert_eq!(d.read(reg::COUNTER, Dword), Ok(0));
        assert_eq!(d.read(reg::COUNTER, Dword), Ok(1));
        d.write(reg::SCRATCH, Byte, 1).unwrap();
        let _ = d.write(reg::ID, Byte, 1);
        assert_eq!(d.read(reg::COUNTER, Qword), Ok(4));
        assert_eq!(d.accesses(), 5);
    }

    #[test]
    fn refusals_name_the_offset() {
        let d = TestDevice::new();
        assert_eq!(
            d.write(reg::COUNTER, Dword, 0),
            Err(DeviceError::Denied {
                offset: reg::COUNTER
            })
        );
        assert_eq!(
            d.read(0x20, Word),
            Err(DeviceError::NoRegister {
                offset: 0x20,
                width: Word
            })
        );
    }
}
