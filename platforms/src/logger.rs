//! [`ConsoleLogger`]: the boards' `log` logger, written once: each record goes to the
//! board's console print function as `[LEVEL target] message`.

use core::fmt;

/// A `log::Log` that prints every record at or below `log::max_level()` through a
/// board's console print function.
///
/// ```
/// use platforms::logger::ConsoleLogger;
///
/// fn print(args: core::fmt::Arguments<'_>) {
///     // A board writes to its UART here.
/// #   let _ = args;
/// }
///
/// static LOGGER: ConsoleLogger = ConsoleLogger::new(print);
/// LOGGER.install(log::LevelFilter::Warn);
/// ```
pub struct ConsoleLogger {
    print: fn(fmt::Arguments<'_>),
}

impl ConsoleLogger {
    /// A logger printing through `print`.
    pub const fn new(print: fn(fmt::Arguments<'_>)) -> Self {
        Self { print }
    }

    /// Makes this the `log` logger and sets the maximum level to `level`; does
    /// nothing when a logger is installed already.
    pub fn install(&'static self, level: log::LevelFilter) {
        if log::set_logger(self).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl fmt::Debug for ConsoleLogger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleLogger").finish_non_exhaustive()
    }
}

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            (self.print)(format_args!(
                "[{} {}] {}\n",
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;
    use std::sync::Mutex;

    use log::Log;

    use super::*;

    static OUT: Mutex<String> = Mutex::new(String::new());

    fn capture(args: fmt::Arguments<'_>) {
        use core::fmt::Write;
        let mut out = OUT.lock().unwrap_or_else(|e| e.into_inner());
        out.write_fmt(args).expect("writing to a String");
    }

    /// Records up to the maximum level are printed as `[LEVEL target] message`,
    /// one line each; those above it are not. (The logger is not installed: that
    /// would take the process's one logger from every other test.)
    #[test]
    fn prints_records_up_to_the_max_level() {
        log::set_max_level(log::LevelFilter::Info);
        let logger = ConsoleLogger::new(capture);
        for (level, args) in [
            (log::Level::Warn, format_args!("stale entry {}", 3)),
            (log::Level::Info, format_args!("vCPU 1 up")),
            (log::Level::Debug, format_args!("hidden")),
        ] {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .target("vm_core::run")
                    .args(args)
                    .build(),
            );
        }
        assert_eq!(
            *OUT.lock().unwrap_or_else(|e| e.into_inner()),
            "[WARN vm_core::run] stale entry 3\n[INFO vm_core::run] vCPU 1 up\n"
        );
    }
}
