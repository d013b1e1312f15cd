//! The COM1 16550 UART at port 0x3f8: the hypervisor's console, and port I/O.

use core::arch::asm;
use core::fmt;

/// COM1's base port.
pub const COM1: u16 = 0x3f8;

/// Writes `value` to `port`.
///
/// # Safety
///
/// Writing that port has no effect on memory safety (true of the UART and
/// `isa-debug-exit` ports this crate's users write).
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: per the caller.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes the 32-bit `value` to `port`.
///
/// # Safety
///
/// As [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: per the caller.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads `port`.
///
/// # Safety
///
/// As [`outb`].
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: per the caller.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// The COM1 UART.
#[derive(Debug, Default)]
pub struct Serial;

impl Serial {
    /// Programs 115200 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        // SAFETY: the 16550 registers at COM1 (IER, LCR, divisor, FCR, MCR).
        unsafe {
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x80);
            outb(COM1, 0x01);
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x03);
            outb(COM1 + 2, 0xc7);
            outb(COM1 + 4, 0x03);
        }
    }

    /// A received byte, if one is waiting (LSR.DR).
    pub fn getb(&self) -> Option<u8> {
        // SAFETY: reading LSR, and RBR when it holds a byte, of the UART.
        unsafe { (inb(COM1 + 5) & 0x01 != 0).then(|| inb(COM1)) }
    }

    /// Sends one byte, waiting for the transmitter.
    pub fn putb(&self, b: u8) {
        // SAFETY: reading LSR and writing THR of the UART.
        unsafe {
            while inb(COM1 + 5) & 0x20 == 0 {
                core::hint::spin_loop();
            }
            outb(COM1, b);
        }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.putb(b'\r');
            }
            self.putb(b);
        }
        Ok(())
    }
}
