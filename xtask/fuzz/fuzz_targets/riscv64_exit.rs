//! riscv64 trap decoding: `TrapInfo::decode` (scause, stval, htval, htinst) against
//! the cause table, `decode_htinst` against the transformed-instruction rules, and the
//! MMIO access of a guest-page fault (`mmio_insn`: the fault's kind must match the
//! instruction, a store's value comes from its register).

#![no_main]

use addrspace::AccessKind;
use arbitrary::Arbitrary;
use hal_riscv64::exit::{Trap, TrapInfo};
use hal_riscv64::mmio::{Htinst, MemOp, decode_htinst, mmio_insn};
use hvcore_fuzz::riscv;
use libfuzzer_sys::fuzz_target;
use vcpu_api::MmioOp;

#[derive(Arbitrary, Debug)]
struct Input {
    /// A cause the decoder handles (by index) or any value.
    cause: Result<u8, u64>,
    stval: u64,
    htval: u64,
    /// A table load/store with random bits, transformed (bit 0, bit 1 from the
    /// original's length); a pseudoinstruction; or any value.
    htinst: Htin,
    x: [u64; 32],
}

#[derive(Arbitrary, Debug)]
enum Htin {
    Transformed(u8, u32, bool),
    Pseudo(u8),
    Raw(u64),
}

const CAUSES: [u64; 7] = [21, 23, 20, 22, 10, 1 << 63 | 9, 2];

fuzz_target!(|input: Input| {
    let scause = match input.cause {
        Ok(i) => CAUSES[usize::from(i) % CAUSES.len()],
        Err(raw) => raw,
    };
    let htinst = match input.htinst {
        Htin::Transformed(i, bits, compressed) => {
            let table: Vec<_> = riscv::table().filter(|(m, _)| m & 3 == 3).collect();
            let (m, mask) = table[usize::from(i) % table.len()];
            let insn = (m | (bits & !mask)) & !3 | 1 | if compressed { 0 } else { 2 };
            u64::from(insn)
        }
        Htin::Pseudo(i) => [0x2000, 0x3000, 0x2020, 0x3020][usize::from(i) % 4],
        Htin::Raw(v) => v,
    };
    let info = TrapInfo {
        scause,
        stval: input.stval,
        htval: input.htval,
        htinst,
    };
    let trap = info.decode();
    riscv::check_trap(scause, input.stval, input.htval, htinst, &trap);
    let Trap::GuestPageFault { access, .. } = trap else {
        return;
    };
    let decoded = decode_htinst(htinst);
    riscv::check_htinst(htinst, decoded);
    let Htinst::Transformed(m) = decoded else {
        return;
    };
    let mut x = input.x;
    x[0] = 0; // x0's slot is never written.
    let got = mmio_insn(&m, access, &x);
    match (m.op, access, got) {
        (MemOp::Load { rd, sign_extend }, AccessKind::Read, Some(i)) => {
            assert_eq!((i.width, i.len), (m.width, m.len));
            let MmioOp::Read {
                reg,
                sign_extend: s,
                ..
            } = i.op
            else {
                panic!("a load emulated as {i:?}");
            };
            assert_eq!((reg, s), (rd, sign_extend));
        }
        (MemOp::Store { rs2 }, AccessKind::Write, Some(i)) => {
            assert_eq!((i.width, i.len), (m.width, m.len));
            assert_eq!(
                i.op,
                MmioOp::Write {
                    value: m.width.truncate(x[rs2])
                }
            );
        }
        (_, _, None) => {
            assert!(
                !matches!(
                    (m.op, access),
                    (MemOp::Load { .. }, AccessKind::Read)
                        | (MemOp::Store { .. }, AccessKind::Write)
                ),
                "a matching access refused"
            );
        }
        (op, access, got) => panic!("{op:?} on a {access:?} fault emulated as {got:?}"),
    }
});
