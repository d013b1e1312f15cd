//! Property tests of the guest-controlled decoders: every input decodes without a
//! panic, and what a decode returns is consistent with its input.

use hal_riscv64::exit::{Trap, TrapInfo};
use hal_riscv64::firmware;
use hal_riscv64::mmio::{self as insn, Htinst, MemOp};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    /// Any 32 bits: a decoded access has the length of its encoding, registers in
    /// x0..x31, and LOAD/STORE of the right kind.
    #[test]
    fn instruction_decode_is_total(raw in any::<u32>()) {
        if let Ok(m) = insn::decode(raw) {
            prop_assert_eq!(usize::from(m.len), insn::insn_len(vcpu_api::low_u16(u64::from(raw))));
            match m.op {
                MemOp::Load { rd, .. } => prop_assert!(rd < 32),
                MemOp::Store { rs2 } => prop_assert!(rs2 < 32),
            }
            if m.len == 4 {
                prop_assert!(matches!(raw & 0x7f, 0x03 | 0x23));
            }
        }
    }

    /// A transformed instruction decodes like the 32-bit instruction it stands for,
    /// with the length its bit 1 gives.
    #[test]
    fn htinst_matches_the_plain_decoder(raw in any::<u32>()) {
        let htinst = u64::from(raw | 1);
        match insn::decode_htinst(htinst) {
            Htinst::Transformed(m) => {
                let plain = insn::decode(raw | 0b11).expect("same bits decode");
                prop_assert_eq!(m.op, plain.op);
                prop_assert_eq!(m.width, plain.width);
                prop_assert_eq!(m.len, if raw & 2 != 0 { 4 } else { 2 });
            }
            Htinst::TransformedOther(_) => prop_assert!(insn::decode(raw | 0b11).is_err()),
            other => prop_assert!(false, "bit 0 set but {other:?}"),
        }
    }

    /// Any trap CSRs: a guest-page fault keeps the page offset of stval.
    #[test]
    fn trap_decode_is_total(scause in any::<u64>(), stval in any::<u64>(), htval in any::<u64>(), htinst in any::<u64>()) {
        let t = TrapInfo { scause, stval, htval, htinst }.decode();
        if let Trap::GuestPageFault { gpa: Some(gpa), .. } = t {
            prop_assert_eq!(gpa.as_usize() as u64 & 0xfff, stval & 0xfff);
        }
        let _ = insn::decode_htinst(htinst);
    }

    /// Any ECALL registers decode to a request.
    #[test]
    fn sbi_decode_is_total(eid in prop_oneof![any::<u64>(), 0u64..0x20, Just(0x4442_434e), Just(0x48_534d), Just(0x5246_4e43)],
                           fid in 0u64..10, a in any::<[u64; 6]>()) {
        let call = firmware::decode_call(eid, fid, a);
        prop_assert_eq!(call.conduit == vcpu_api::Conduit::EcallLegacy, eid < 0x10);
    }
}
