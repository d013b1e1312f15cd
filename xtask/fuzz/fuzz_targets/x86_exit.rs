//! x86_64 #VMEXIT decoding (`hal_x86_64::SvmExit::decode`: exit code, EXITINFO1,
//! EXITINFO2; the IOIO and #NPF layouts) against the APM's tables
//! (`hvcore_fuzz::x86::check_exit`).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// An exit code the decoder handles (by index) or any.
    code: Result<u8, u64>,
    info1: u64,
    info2: u64,
}

const CODES: [u64; 16] = [
    0x400,
    0x7b,
    0x7c,
    0x81,
    0x78,
    0x77,
    0x72,
    0x7f,
    0x60,
    0x61,
    0x80,
    u64::MAX,
    0x40,
    0x4e,
    0x5f,
    0x60 - 1,
];

fuzz_target!(|input: Input| {
    let code = match input.code {
        Ok(i) => CODES[usize::from(i) % CODES.len()],
        Err(raw) => raw,
    };
    let got = hal_x86_64::SvmExit::decode(code, input.info1, input.info2);
    hvcore_fuzz::x86::check_exit(code, input.info1, input.info2, got);
});
