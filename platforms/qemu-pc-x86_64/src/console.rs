//! The hypervisor's console on COM1: `print!`/`println!`, a `log` logger, and
//! [`Out`] for the test monitor.

use core::fmt::{self, Write};

use hal_x86_64::serial::Serial;
use platforms::logger::ConsoleLogger;

static SERIAL: spin::Mutex<Serial> = spin::Mutex::new(Serial);

/// Initialises the UART and installs the logger.
pub(crate) fn init() {
    static LOGGER: ConsoleLogger = ConsoleLogger::new(print);
    SERIAL.lock().init();
    LOGGER.install(log::LevelFilter::Info);
}

/// Writes formatted text to the console.
pub(crate) fn print(args: fmt::Arguments<'_>) {
    let _ = SERIAL.lock().write_fmt(args);
}

/// Prints `s` (what the shared monitors print through).
pub(crate) fn print_str(s: &str) {
    print(format_args!("{s}"));
}

/// A byte typed on the console, if one is waiting (read under the console lock).
pub(crate) fn getc() -> Option<u8> {
    SERIAL.lock().getb()
}

/// `print!` to COM1.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to COM1.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// A `fmt::Write` to the console.
pub(crate) struct Out;

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        SERIAL.lock().write_str(s)
    }
}
