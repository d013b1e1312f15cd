//! The PL011 console shared by every physical CPU (and, through pass-through, by the
//! guests): whole lines under one lock, a `log` backend, and a lock-free path for
//! the panic handler.

use core::fmt::{self, Write};

use platforms::logger::ConsoleLogger;
use spin::Mutex;

/// PL011 registers (ARM DDI 0183G §3.2): data, flags (TXFF = bit 5), control.
const UART_BASE: usize = vcpu_api::usize_of(crate::layout::UART_BASE);
const UARTDR: usize = 0x00;
const UARTFR: usize = 0x18;
const UARTCR: usize = 0x30;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
/// UARTCR: UARTEN | TXE | RXE.
const CR_ENABLE: u32 = 0x301;

/// The UART at its fixed address (identity-mapped Device memory at EL2).
pub(crate) struct Pl011;

impl Pl011 {
    fn reg(offset: usize) -> *mut u32 {
        (UART_BASE + offset) as *mut u32
    }

    /// Enables the transmitter.
    pub(crate) fn init() {
        // SAFETY: the PL011 of QEMU virt, mapped as Device memory at EL2.
        unsafe { core::ptr::write_volatile(Self::reg(UARTCR), CR_ENABLE) };
    }

    /// A received byte, if one is waiting.
    fn getc() -> Option<u8> {
        // SAFETY: as in `init`.
        unsafe {
            (core::ptr::read_volatile(Self::reg(UARTFR)) & FR_RXFE == 0)
                .then(|| core::ptr::read_volatile(Self::reg(UARTDR)).to_le_bytes()[0])
        }
    }

    fn putc(b: u8) {
        // SAFETY: as in `init`.
        unsafe {
            while core::ptr::read_volatile(Self::reg(UARTFR)) & FR_TXFF != 0 {}
            core::ptr::write_volatile(Self::reg(UARTDR), u32::from(b));
        }
    }
}

impl Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::putc(b'\r');
            }
            Self::putc(b);
        }
        Ok(())
    }
}

static CONSOLE: Mutex<Pl011> = Mutex::new(Pl011);

/// Prints `args` while holding the console, so lines of different CPUs do not mix.
pub(crate) fn print_fmt(args: fmt::Arguments<'_>) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Prints `s` while holding the console.
pub(crate) fn print_str(s: &str) {
    let _ = CONSOLE.lock().write_str(s);
}

/// A byte typed on the console, if one is waiting (read under the console lock).
pub(crate) fn getc() -> Option<u8> {
    let _held = CONSOLE.lock();
    Pl011::getc()
}

/// Prints without taking the lock (the panic handler: the lock may be held by the
/// code that panicked).
pub(crate) fn print_unlocked(args: fmt::Arguments<'_>) {
    let _ = Pl011.write_fmt(args);
}

/// `println!` to the console.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Routes `log` records (vm-core's warnings) to the console.
pub(crate) fn init_logger() {
    static LOGGER: ConsoleLogger = ConsoleLogger::new(print_fmt);
    LOGGER.install(log::LevelFilter::Info);
}
