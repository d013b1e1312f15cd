//! riscv64 MMIO instruction decoding (`hal_riscv64::mmio::decode`, 32-bit and
//! compressed encodings) against the specification's MATCH/MASK table
//! (`hvcore_fuzz::riscv`): loads and stores with their width, sign extension and
//! register; floating-point, atomic and reserved encodings refused as such.

#![no_main]

use arbitrary::Arbitrary;
use hvcore_fuzz::riscv;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// A load or store of the table (by index) with random other bits.
    Known(u8, u32),
    /// Any bits.
    Raw(u32),
}

fuzz_target!(|input: Input| {
    let insn = match input {
        Input::Known(i, bits) => {
            let table: Vec<_> = riscv::table().collect();
            let (m, mask) = table[usize::from(i) % table.len()];
            let bits = if m & 3 != 3 { bits & 0xffff } else { bits };
            m | (bits & !mask)
        }
        Input::Raw(bits) => bits,
    };
    riscv::check_insn(insn, hal_riscv64::mmio::decode(insn));
});
