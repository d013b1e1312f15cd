//! x86_64 MMIO instruction decoding (`hal_x86_64::mmio::decode`, in 64-, 32- and 16-bit
//! code) against the reference decoder iced-x86, on instructions built from the parts the decoder looks at
//! (prefixes, REX, one of the `mov` family's opcodes or any byte, ModRM, SIB,
//! displacement, immediate) followed by arbitrary bytes.
//!
//! Checked: whatever we accept, iced-x86 decodes as the same instruction (same length,
//! a `mov`/`movzx`/`movsx`/`movsxd` with one memory operand of our width, the same
//! destination register and width, the same stored value); whatever iced-x86 decodes
//! as such a move in the plain prefix form we emulate, we accept (or refuse as a load
//! into AH..BH, which no register index names).

#![no_main]

use arbitrary::Arbitrary;
use hal_x86_64::mode::CodeSize;
use hvcore_fuzz::x86::{Canonical, IcedView, check_against_iced};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    prefixes: Vec<u8>,
    rex: Option<u8>,
    opcode: Opcode,
    modrm: u8,
    sib: u8,
    tail: Vec<u8>,
    gprs: [u64; 16],
    /// 64-bit, 32-bit or 16-bit code.
    mode: u8,
}

#[derive(Arbitrary, Debug)]
enum Opcode {
    Mov(u8),
    TwoByte(u8),
    Any(u8),
}

const PREFIXES: [u8; 10] = [0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xf0, 0xf3];
const MOVES: [u8; 11] = [
    0x88, 0x89, 0x8a, 0x8b, 0x63, 0xc6, 0xc7, 0xa0, 0xa1, 0xa2, 0xa3,
];
const TWO_BYTE: [u8; 4] = [0xb6, 0xb7, 0xbe, 0xbf];

fuzz_target!(|input: Input| {
    let mut bytes: Vec<u8> = input
        .prefixes
        .iter()
        .take(4)
        .map(|p| PREFIXES[usize::from(*p) % PREFIXES.len()])
        .collect();
    if let Some(rex) = input.rex {
        bytes.push(0x40 | (rex & 0xf));
    }
    match input.opcode {
        Opcode::Mov(i) => bytes.push(MOVES[usize::from(i) % MOVES.len()]),
        Opcode::TwoByte(i) => bytes.extend([0x0f, TWO_BYTE[usize::from(i) % TWO_BYTE.len()]]),
        Opcode::Any(b) => bytes.push(b),
    }
    bytes.extend([input.modrm, input.sib]);
    bytes.extend(input.tail.iter().take(16));
    let gprs = input.gprs;
    let (size, bitness) = [
        (CodeSize::Bits64, 64),
        (CodeSize::Bits32, 32),
        (CodeSize::Bits16, 16),
    ][usize::from(input.mode % 3)];
    let ours = hal_x86_64::mmio::decode(&bytes, size, |i| gprs[i]);
    let iced = IcedView::decode(&bytes, bitness);
    check_against_iced(
        &bytes,
        &gprs,
        ours,
        &iced,
        Canonical::of(&bytes, bitness == 64),
    );
});
