//! The console: the ns16550a UART of QEMU virt at 0x1000_0000 (OpenSBI has set it
//! up), shared by both harts under one lock, the `println!` macro, the `log` backend,
//! and the guest's SBI console ([`GuestUart`]).

use core::fmt::{self, Write};

use platforms::logger::ConsoleLogger;
use spin::Mutex;

/// The UART's registers: THR/RBR at 0, LSR at 5 (DR bit 0, THRE bit 5).
const UART: usize = 0x1000_0000;
const LSR: usize = 5;
const LSR_DR: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;

/// The UART; the lock keeps one writer's text together.
pub(crate) struct Uart;

static CONSOLE: Mutex<Uart> = Mutex::new(Uart);

impl Uart {
    fn putc(&mut self, b: u8) {
        // SAFETY: the ns16550a registers of QEMU virt; the hypervisor runs with
        // translation off, so the physical address is the address.
        unsafe {
            while core::ptr::read_volatile((UART + LSR) as *const u8) & LSR_THRE == 0 {}
            core::ptr::write_volatile(UART as *mut u8, b);
        }
    }

    fn getc(&mut self) -> Option<u8> {
        // SAFETY: as in `putc`.
        unsafe {
            (core::ptr::read_volatile((UART + LSR) as *const u8) & LSR_DR != 0)
                .then(|| core::ptr::read_volatile(UART as *const u8))
        }
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.putc(b'\r');
            }
            self.putc(b);
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Prints under the console lock (used by `println!`).
pub(crate) fn print(args: fmt::Arguments<'_>) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Prints a string prepared elsewhere (several lines kept together).
pub(crate) fn print_str(s: &str) {
    CONSOLE.lock().write_bytes(s.as_bytes());
}

/// A byte typed on the console, if one is waiting (read under the console lock).
pub(crate) fn getc() -> Option<u8> {
    CONSOLE.lock().getc()
}

/// Prints from the panic handler: takes the console even if a panicking hart held it.
pub(crate) fn print_panic(args: fmt::Arguments<'_>) {
    // SAFETY: called only on the way to powering the machine off; if the lock was
    // held by the panicking code, its output is cut, which is what we want.
    unsafe { CONSOLE.force_unlock() };
    print(args);
}

/// `println!` on the UART.
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use println;

/// The guest's SBI console: DBCN and the legacy putchar/getchar write to and read
/// from the UART.
pub(crate) struct GuestUart;

impl vm_core::GuestConsole for GuestUart {
    fn write(&self, bytes: &[u8]) {
        CONSOLE.lock().write_bytes(bytes);
    }

    fn read(&self, buf: &mut [u8]) -> usize {
        let mut uart = CONSOLE.lock();
        let mut n = 0;
        while n < buf.len() {
            match uart.getc() {
                Some(b) => {
                    buf[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
        n
    }
}

/// Sends `log` records at `level` and above to the console:
/// `[WARN vm_core::run] ...`.
pub(crate) fn init_log(level: log::LevelFilter) {
    static LOGGER: ConsoleLogger = ConsoleLogger::new(print);
    LOGGER.install(level);
}
