//! riscv64 SBI calls: `hal_riscv64::firmware::decode_call` (a7 EID, a6 FID, a0..a5)
//! and `encode_reply`, against the SBI v2.0 tables (`hvcore_fuzz::riscv::expected_sbi`,
//! `expected_sbi_reply`); legacy extensions use the legacy conduit.

#![no_main]

use arbitrary::Arbitrary;
use hal_riscv64::firmware::{decode_call, encode_reply};
use hvcore_fuzz::{firmware::Reply, riscv};
use libfuzzer_sys::fuzz_target;
use vcpu_api::Conduit;

#[derive(Arbitrary, Debug)]
struct Input {
    /// A known extension (by index) or any EID.
    eid: Result<u8, u64>,
    /// A small function id or any.
    fid: Result<u8, u64>,
    a: [u64; 6],
    reply: Reply,
}

const EIDS: [u64; 12] = [
    0x10,
    0x00,
    0x01,
    0x02,
    0x08,
    0x05,
    0x5449_4d45,
    0x0073_5049,
    0x5246_4e43,
    0x0048_534d,
    0x5352_5354,
    0x4442_434e,
];

fuzz_target!(|input: Input| {
    let eid = match input.eid {
        Ok(i) => EIDS[usize::from(i) % EIDS.len()],
        Err(raw) => raw,
    };
    let fid = match input.fid {
        Ok(f) => u64::from(f % 8),
        Err(raw) => raw,
    };
    let mut a = input.a;
    if let Ok(i) = input.eid {
        // SRST types and probe targets near the interesting values.
        a[0] = if i % 2 == 0 {
            a[0] % 4
        } else {
            EIDS[usize::from(i) % EIDS.len()]
        };
    }
    let got = decode_call(eid, fid, a);
    assert_eq!(
        got.call,
        riscv::expected_sbi(eid, fid, a),
        "eid {eid:#x} fid {fid} a {a:#x?}"
    );
    let legacy = if eid < 0x10 {
        Conduit::EcallLegacy
    } else {
        Conduit::Ecall
    };
    assert_eq!(got.conduit, legacy);
    let reply = input.reply.get();
    assert_eq!(
        encode_reply(reply),
        riscv::expected_sbi_reply(reply),
        "{reply:?}"
    );
});
