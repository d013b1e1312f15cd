//! Diagnostics on request from the hypervisor's console: the keys a board reads
//! from its UART while a VM runs, turned into requests ([`KeyReader`]).
//!
//! - `d`: the running VM's guest-physical map (`vm_core::Vm::diagnostics`).
//! - `w`, a guest-physical address in hex (`0x` and `_` allowed), Enter: the walk of
//!   that address, then the map.
//!
//! Any other key is ignored; Escape or a key that is not part of an address cancels
//! a `w` request. None of these keys is taken by QEMU's `-nographic` console (only
//! its escape, Ctrl-A, is).

/// The key that asks for the map.
pub const MAP_KEY: u8 = b'd';
/// The key that starts a walk request.
pub const WALK_KEY: u8 = b'w';
/// The most hex digits of an address (64 bits).
const MAX_DIGITS: u8 = 16;

/// What the console asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// The map of the running VM.
    Map,
    /// The walk of this guest-physical address, and the map.
    Walk(u64),
}

/// The address of a `w` request as it is typed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Partial {
    value: u64,
    digits: u8,
    prefixed: bool,
}

/// Turns console bytes into [`Request`]s, one byte at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyReader {
    walk: Option<Partial>,
}

impl KeyReader {
    /// A reader with nothing typed.
    pub const fn new() -> Self {
        Self { walk: None }
    }

    /// Takes one byte; `Some` when it completed a request.
    pub fn feed(&mut self, b: u8) -> Option<Request> {
        let Some(mut p) = self.walk.take() else {
            return match b {
                MAP_KEY => Some(Request::Map),
                WALK_KEY => {
                    self.walk = Some(Partial::default());
                    None
                }
                _ => None,
            };
        };
        match b {
            b'\r' | b'\n' => return (p.digits > 0).then_some(Request::Walk(p.value)),
            b'_' | b' ' => {}
            b'x' | b'X' if p.value == 0 && p.digits == 1 && !p.prefixed => {
                p = Partial {
                    prefixed: true,
                    ..Partial::default()
                };
            }
            _ => {
                let digit = char::from(b).to_digit(16)?;
                if p.digits == MAX_DIGITS {
                    return None;
                }
                p.value = p.value << 4 | u64::from(digit);
                p.digits += 1;
            }
        }
        self.walk = Some(p);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(r: &mut KeyReader, bytes: &[u8]) -> [Option<Request>; 2] {
        let mut got = [None; 2];
        let mut n = 0;
        for &b in bytes {
            if let Some(req) = r.feed(b) {
                got[n] = Some(req);
                n += 1;
            }
        }
        got
    }

    #[test]
    fn map_and_walk_requests() {
        let mut r = KeyReader::new();
        assert_eq!(feed_all(&mut r, b"d"), [Some(Request::Map), None]);
        assert_eq!(
            feed_all(&mut r, b"w0x4000_1000\r"),
            [Some(Request::Walk(0x4000_1000)), None]
        );
        assert_eq!(
            feed_all(&mut r, b"qwABCdef\nd"),
            [Some(Request::Walk(0xabc_def)), Some(Request::Map)]
        );
        // A `d` inside an address is a hex digit, not the map key.
        assert_eq!(feed_all(&mut r, b"wd\r"), [Some(Request::Walk(0xd)), None]);
    }

    #[test]
    fn bad_addresses_cancel_the_request() {
        let mut r = KeyReader::new();
        // Enter with no digit, a non-hex key, Escape, more than 64 bits, `x` late.
        for typed in [
            &b"w\r"[..],
            b"w12g\r",
            b"w12\x1b\r",
            b"w1_0000_0000_0000_0000_0\r",
            b"w1x2\r",
        ] {
            assert_eq!(feed_all(&mut r, typed), [None, None], "{typed:?}");
            assert_eq!(r, KeyReader::new(), "{typed:?}");
        }
        // The longest address still fits.
        assert_eq!(
            feed_all(&mut r, b"wffff_ffff_ffff_ffff\r"),
            [Some(Request::Walk(u64::MAX)), None]
        );
    }
}
