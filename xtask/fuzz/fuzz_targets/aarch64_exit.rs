//! aarch64 trap decoding: `hal_aarch64::exit::decode_trap` (ESR_EL2 EC/IL/ISS, FAR_EL2,
//! HPFAR_EL2) and the MMIO access of a data abort (`hal_aarch64::mmio`), checked
//! field by field against the Arm ARM's layout (`hvcore_fuzz::arm`).

#![no_main]

use arbitrary::Arbitrary;
use hal_aarch64::exit::{Trap, decode_trap};
use hvcore_fuzz::arm;
use libfuzzer_sys::fuzz_target;
use vcpu_api::{FaultInsn, MmioDecodeError, MmioOp};

#[derive(Arbitrary, Debug)]
struct Input {
    /// An exception class the decoder handles (by index) or any.
    ec: Result<u8, u8>,
    il: bool,
    iss: u32,
    iss2: u32,
    far: u64,
    hpfar: u64,
    regs: [u64; 31],
    pc: u64,
}

const CLASSES: [u64; 8] = [0x24, 0x20, 0x16, 0x17, 0x01, 0x18, 0x25, 0x00];

fuzz_target!(|input: Input| {
    let ec = match input.ec {
        Ok(i) => CLASSES[usize::from(i) % CLASSES.len()],
        Err(raw) => u64::from(raw & 0x3f),
    };
    let esr = u64::from(input.iss2) << 32
        | ec << 26
        | u64::from(input.il) << 25
        | u64::from(input.iss & 0x01ff_ffff);
    let trap = decode_trap(esr, input.far, input.hpfar);
    arm::check_trap(&trap, esr, input.far, input.hpfar);
    let Trap::DataAbort {
        ipa,
        abort,
        insn_len,
    } = trap
    else {
        return;
    };
    match hal_aarch64::mmio::fault_insn(&abort, insn_len, &input.regs, input.pc) {
        FaultInsn::Refused(MmioDecodeError::TableWalk { pc }) => {
            assert!(abort.s1ptw, "refused as a table walk");
            assert_eq!(pc, input.pc);
        }
        FaultInsn::Refused(MmioDecodeError::NoSyndrome { pc }) => {
            assert!(
                abort.syndrome.is_none() && !abort.s1ptw,
                "refused with a syndrome"
            );
            assert_eq!(pc, input.pc);
        }
        FaultInsn::Decoded(insn) => {
            let s = abort.syndrome.expect("an access without a syndrome");
            assert!(!abort.s1ptw, "a stage-1 walk decoded as the access");
            assert_eq!(insn.width, s.width);
            assert_eq!(insn.len, insn_len);
            let access = insn.at(ipa);
            match access.op {
                MmioOp::Write { value } => {
                    assert!(abort.write, "a load decoded as a store");
                    assert_eq!(value, arm::store_value(&input.regs, s.reg, s.width));
                }
                MmioOp::Read { reg, .. } => {
                    assert!(!abort.write, "a store decoded as a load");
                    assert_eq!(reg, usize::from(s.reg));
                    // The register after the load: Xt gets the (sign-extended)
                    // value, Wt the 32-bit result with the upper half cleared.
                    let old = input.regs[0];
                    let loaded = input.far;
                    assert_eq!(
                        access.load_result(old, loaded),
                        arm::load_result(loaded, s.width, s.sign_extend, s.reg64),
                        "register after the load"
                    );
                }
            }
        }
        other => panic!("unexpected {other:?}"),
    }
});
