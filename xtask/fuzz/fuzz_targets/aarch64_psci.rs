//! aarch64 firmware calls: `hal_aarch64::firmware::decode_call` (x0..x6 of an HVC or
//! SMC, PSCI on either conduit) and `encode_reply`, against the SMCCC/PSCI tables
//! (`hvcore_fuzz::arm::expected_call`, `expected_x0`).

#![no_main]

use arbitrary::Arbitrary;
use hal_aarch64::firmware::{PsciConduit, decode_call, encode_reply};
use hvcore_fuzz::{arm, firmware::Reply};
use libfuzzer_sys::fuzz_target;
use vcpu_api::Conduit;

#[derive(Arbitrary, Debug)]
struct Input {
    /// A PSCI function number (SMC32 or SMC64), or any x0.
    x0: Result<(u8, bool), u64>,
    args: [u64; 6],
    smc: bool,
    psci_by_smc: bool,
    reply: Reply,
}

fuzz_target!(|input: Input| {
    let x0 = match input.x0 {
        Ok((f, smc64)) => 0x8400_0000 | u64::from(f & 0x1f) | if smc64 { 0x4000_0000 } else { 0 },
        Err(raw) => raw,
    };
    let a = input.args;
    let x = [x0, a[0], a[1], a[2], a[3], a[4], a[5]];
    let conduit = if input.smc {
        Conduit::Smc
    } else {
        Conduit::Hvc
    };
    let psci = if input.psci_by_smc {
        PsciConduit::Smc
    } else {
        PsciConduit::Hvc
    };
    assert_eq!(
        decode_call(&x, conduit, psci),
        arm::expected_call(&x, conduit, input.psci_by_smc),
        "x = {x:#x?}, {conduit:?}, PSCI by {psci:?}"
    );
    let reply = input.reply.get();
    assert_eq!(encode_reply(reply), arm::expected_x0(reply), "{reply:?}");
});
