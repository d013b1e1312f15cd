//! Decoding the load or store that caused a guest-page fault, for MMIO emulation: from
//! the transformed instruction the hart wrote to `htinst`, or from the instruction bits
//! fetched at the guest PC (32-bit and compressed encodings).
//!
//! References: RISC-V Unprivileged ISA 20191213, chapter 2.6 (LOAD/STORE), chapter 5.3
//! (RV64 LD/SD/LWU), chapter 16 (the C extension: C.LW, C.LD, C.SW, C.SD, C.LWSP,
//! C.LDSP, C.SWSP, C.SDSP, quadrants 0 and 2), the Zcb extension (C.LBU, C.LHU, C.LH,
//! C.SB, C.SH), and the Privileged Architecture 20211203, section 8.6.3 (transformed
//! instructions and pseudoinstructions in `htinst`).

use core::fmt;

use addrspace::AccessKind;
use vcpu_api::{AccessWidth, MmioInsn, MmioOp, low_u16};

/// What a decoded load or store does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemOp {
    /// A load into `x[rd]`.
    Load {
        /// Destination register (`x0` discards the value).
        rd: usize,
        /// LB, LH, LW (and their compressed forms) sign-extend; LBU, LHU, LWU do not;
        /// LD fills the register.
        sign_extend: bool,
    },
    /// A store of the low bytes of `x[rs2]`.
    Store {
        /// Source register.
        rs2: usize,
    },
}

/// A decoded load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInsn {
    /// Load or store, with its register.
    pub op: MemOp,
    /// Access width.
    pub width: AccessWidth,
    /// Length of the original instruction (2 for compressed, 4 otherwise).
    pub len: u8,
}

/// Why an instruction is not an MMIO access we can emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsnError {
    /// Not a load or store at all.
    NotLoadStore {
        /// The instruction bits.
        insn: u32,
    },
    /// A floating-point load or store (FLW, FLD, FSW, FSD, C.FLD, ...): emulated
    /// devices are reached with integer accesses only.
    FloatingPoint {
        /// The instruction bits.
        insn: u32,
    },
    /// An atomic (LR, SC, AMO*): not meaningful on an emulated device.
    Atomic {
        /// The instruction bits.
        insn: u32,
    },
    /// A reserved encoding (C.LWSP/C.LDSP with rd = x0, funct3 = 7 of LOAD).
    Reserved {
        /// The instruction bits.
        insn: u32,
    },
}

impl InsnError {
    /// What is wrong with the instruction, for the VM layer's error.
    pub const fn why(&self) -> &'static str {
        match self {
            Self::NotLoadStore { .. } => "not a load or store",
            Self::FloatingPoint { .. } => "a floating-point load or store (not emulated)",
            Self::Atomic { .. } => "an atomic access (not emulated)",
            Self::Reserved { .. } => "a reserved encoding",
        }
    }
}

impl fmt::Display for InsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLoadStore { insn } => write!(f, "{insn:#x} is not a load or store"),
            Self::FloatingPoint { insn } => {
                write!(f, "{insn:#x} is a floating-point load/store (not emulated)")
            }
            Self::Atomic { insn } => write!(f, "{insn:#x} is an atomic access (not emulated)"),
            Self::Reserved { insn } => write!(f, "{insn:#x} is a reserved encoding"),
        }
    }
}

/// What `htinst` says about a guest-page fault (section 8.6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Htinst {
    /// Zero: no information; the instruction must be fetched.
    None,
    /// A transformed load or store (bit 0 set): the original instruction with its
    /// immediate zeroed and `rs1` replaced by the address offset, compressed
    /// instructions given in their 32-bit form with bit 1 clear.
    Transformed(MemInsn),
    /// A transformed instruction that is not a load or store we emulate.
    TransformedOther(InsnError),
    /// A pseudoinstruction: the fault happened on an implicit access of the guest's
    /// own page-table walk (VS-stage), not on the instruction's data access.
    /// 0x2000 / 0x3000: 32/64-bit read; 0x2020 / 0x3020: 32/64-bit write.
    PageTableWalk {
        /// The pseudoinstruction.
        pseudo: u32,
    },
    /// Another value with bit 0 clear (custom or reserved): treated as no information.
    Unknown(u64),
}

/// Length in bytes of the instruction whose first 16 bits are `low` (2 or 4; the
/// 48-bit and longer encodings are reported as 4 and then fail to decode).
pub const fn insn_len(low: u16) -> usize {
    if low & 0b11 == 0b11 { 4 } else { 2 }
}

/// Interprets `htinst` after a load or store guest-page fault.
pub fn decode_htinst(htinst: u64) -> Htinst {
    if htinst == 0 {
        return Htinst::None;
    }
    // htinst is XLEN wide; transformed instructions and pseudoinstructions fit in 32
    // bits, anything wider is not one of them.
    let Ok(raw) = u32::try_from(htinst) else {
        return Htinst::Unknown(htinst);
    };
    if raw & 1 == 0 {
        return match raw {
            0x2000 | 0x3000 | 0x2020 | 0x3020 => Htinst::PageTableWalk { pseudo: raw },
            _ => Htinst::Unknown(htinst),
        };
    }
    let len = if raw & 0b10 != 0 { 4 } else { 2 };
    match decode32(raw | 0b10) {
        Ok(insn) => Htinst::Transformed(MemInsn { len, ..insn }),
        Err(e) => Htinst::TransformedOther(e),
    }
}

/// Decodes the instruction `insn` (a 16-bit one in the low half when its bits 1:0 are
/// not `0b11`; the upper half is then ignored).
pub fn decode(insn: u32) -> Result<MemInsn, InsnError> {
    let low = low_u16(u64::from(insn));
    if insn_len(low) == 4 {
        decode32(insn)
    } else {
        decode16(low)
    }
}

/// The emulated access of load or store `m` for a fault of kind `access`, a store's
/// value read from the registers `x`; `None` when the instruction is not the access
/// the fault reported (an AMO reported as a store fault, a decoder disagreement).
pub fn mmio_insn(m: &MemInsn, access: AccessKind, x: &[u64; 32]) -> Option<MmioInsn> {
    let op = match (m.op, access) {
        (MemOp::Load { rd, sign_extend }, AccessKind::Read) => MmioOp::Read {
            reg: rd,
            sign_extend,
            reg_width: AccessWidth::Qword,
        },
        (MemOp::Store { rs2 }, AccessKind::Write) => MmioOp::Write {
            // x0 reads as zero (its slot is never written).
            value: m.width.truncate(x.get(rs2).copied().unwrap_or(0)),
        },
        _ => return None,
    };
    Some(MmioInsn {
        width: m.width,
        op,
        len: m.len,
    })
}

const OPCODE_LOAD: u32 = 0x03;
const OPCODE_LOAD_FP: u32 = 0x07;
const OPCODE_STORE: u32 = 0x23;
const OPCODE_STORE_FP: u32 = 0x27;
const OPCODE_AMO: u32 = 0x2f;

fn decode32(insn: u32) -> Result<MemInsn, InsnError> {
    let funct3 = (insn >> 12) & 7;
    let rd = ((insn >> 7) & 31) as usize;
    let rs2 = ((insn >> 20) & 31) as usize;
    let load = |width, sign_extend| MemInsn {
        op: MemOp::Load { rd, sign_extend },
        width,
        len: 4,
    };
    let store = |width| MemInsn {
        op: MemOp::Store { rs2 },
        width,
        len: 4,
    };
    match insn & 0x7f {
        OPCODE_LOAD => match funct3 {
            0 => Ok(load(AccessWidth::Byte, true)),
            1 => Ok(load(AccessWidth::Word, true)),
            2 => Ok(load(AccessWidth::Dword, true)),
            3 => Ok(load(AccessWidth::Qword, false)),
            4 => Ok(load(AccessWidth::Byte, false)),
            5 => Ok(load(AccessWidth::Word, false)),
            6 => Ok(load(AccessWidth::Dword, false)),
            _ => Err(InsnError::Reserved { insn }),
        },
        OPCODE_STORE => match funct3 {
            0 => Ok(store(AccessWidth::Byte)),
            1 => Ok(store(AccessWidth::Word)),
            2 => Ok(store(AccessWidth::Dword)),
            3 => Ok(store(AccessWidth::Qword)),
            _ => Err(InsnError::Reserved { insn }),
        },
        OPCODE_LOAD_FP | OPCODE_STORE_FP => Err(InsnError::FloatingPoint { insn }),
        OPCODE_AMO => Err(InsnError::Atomic { insn }),
        _ => Err(InsnError::NotLoadStore { insn }),
    }
}

fn decode16(c: u16) -> Result<MemInsn, InsnError> {
    let insn = u32::from(c);
    let funct3 = (c >> 13) & 7;
    // Quadrant 0 uses the 3-bit register fields rd'/rs2' (bits 4:2) for x8..x15.
    let reg_prime = usize::from((c >> 2) & 7) + 8;
    let load = |rd, width, sign_extend| MemInsn {
        op: MemOp::Load { rd, sign_extend },
        width,
        len: 2,
    };
    let store = |rs2, width| MemInsn {
        op: MemOp::Store { rs2 },
        width,
        len: 2,
    };
    match (c & 0b11, funct3) {
        // C.LW, C.LD, C.SW, C.SD.
        (0b00, 0b010) => Ok(load(reg_prime, AccessWidth::Dword, true)),
        (0b00, 0b011) => Ok(load(reg_prime, AccessWidth::Qword, false)),
        (0b00, 0b110) => Ok(store(reg_prime, AccessWidth::Dword)),
        (0b00, 0b111) => Ok(store(reg_prime, AccessWidth::Qword)),
        // C.FLD, C.FSD.
        (0b00, 0b001 | 0b101) => Err(InsnError::FloatingPoint { insn }),
        // Zcb: funct6 in bits 15:10, bit 6 tells C.LH from C.LHU.
        (0b00, 0b100) => match ((c >> 10) & 0b111, (c >> 6) & 1) {
            (0b000, _) => Ok(load(reg_prime, AccessWidth::Byte, false)),
            (0b001, 0) => Ok(load(reg_prime, AccessWidth::Word, false)),
            (0b001, _) => Ok(load(reg_prime, AccessWidth::Word, true)),
            (0b010, _) => Ok(store(reg_prime, AccessWidth::Byte)),
            (0b011, 0) => Ok(store(reg_prime, AccessWidth::Word)),
            _ => Err(InsnError::NotLoadStore { insn }),
        },
        // C.LWSP, C.LDSP (rd = x0 is reserved), C.SWSP, C.SDSP.
        (0b10, 0b010 | 0b011) => {
            let rd = usize::from((c >> 7) & 31);
            if rd == 0 {
                return Err(InsnError::Reserved { insn });
            }
            Ok(if funct3 == 0b010 {
                load(rd, AccessWidth::Dword, true)
            } else {
                load(rd, AccessWidth::Qword, false)
            })
        }
        (0b10, 0b110 | 0b111) => {
            let rs2 = usize::from((c >> 2) & 31);
            Ok(if funct3 == 0b110 {
                store(rs2, AccessWidth::Dword)
            } else {
                store(rs2, AccessWidth::Qword)
            })
        }
        // C.FLDSP, C.FSDSP.
        (0b10, 0b001 | 0b101) => Err(InsnError::FloatingPoint { insn }),
        _ => Err(InsnError::NotLoadStore { insn }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::{Byte, Dword, Qword, Word};

    fn load(rd: usize, width: AccessWidth, sign_extend: bool, len: u8) -> MemInsn {
        MemInsn {
            op: MemOp::Load { rd, sign_extend },
            width,
            len,
        }
    }

    fn store(rs2: usize, width: AccessWidth, len: u8) -> MemInsn {
        MemInsn {
            op: MemOp::Store { rs2 },
            width,
            len,
        }
    }

    /// Encodings as the GNU assembler emits them (`riscv64-linux-gnu-as`,
    /// `objdump -d`), registers a0 = x10, a1 = x11, s0 = x8, s1 = x9, t0 = x5.
    #[test]
    fn base_loads() {
        // lb a0, 0(a1)
        assert_eq!(decode(0x0005_8503), Ok(load(10, Byte, true, 4)));
        // lh a0, 2(a1)
        assert_eq!(decode(0x0025_9503), Ok(load(10, Word, true, 4)));
        // lw t0, 8(a1)
        assert_eq!(decode(0x0085_a283), Ok(load(5, Dword, true, 4)));
        // ld a0, 24(a1)
        assert_eq!(decode(0x0185_b503), Ok(load(10, Qword, false, 4)));
        // lbu a0, 0(a1)
        assert_eq!(decode(0x0005_c503), Ok(load(10, Byte, false, 4)));
        // lhu a0, 0(a1)
        assert_eq!(decode(0x0005_d503), Ok(load(10, Word, false, 4)));
        // lwu a0, 0(a1)
        assert_eq!(decode(0x0005_e503), Ok(load(10, Dword, false, 4)));
        // funct3 = 7 of LOAD is reserved.
        assert_eq!(
            decode(0x0005_f503),
            Err(InsnError::Reserved { insn: 0x0005_f503 })
        );
    }

    #[test]
    fn base_stores() {
        // sb a0, 0(a1)
        assert_eq!(decode(0x00a5_8023), Ok(store(10, Byte, 4)));
        // sh a0, 8(a1)
        assert_eq!(decode(0x00a5_9423), Ok(store(10, Word, 4)));
        // sw t0, 8(a1)
        assert_eq!(decode(0x0055_a423), Ok(store(5, Dword, 4)));
        // sd a0, 16(a1)
        assert_eq!(decode(0x00a5_b823), Ok(store(10, Qword, 4)));
    }

    #[test]
    fn compressed_quadrant_0() {
        // c.lw a0, 0(a1): 0x4188
        assert_eq!(decode(0x4188), Ok(load(10, Dword, true, 2)));
        // c.ld a0, 8(a1): 0x6588
        assert_eq!(decode(0x6588), Ok(load(10, Qword, false, 2)));
        // c.sw a0, 0(a1): 0xc188
        assert_eq!(decode(0xc188), Ok(store(10, Dword, 2)));
        // c.sd s1, 8(s0): 0xe404
        assert_eq!(decode(0xe404), Ok(store(9, Qword, 2)));
        // c.fld fa0, 8(a1): 0x2588
        assert_eq!(
            decode(0x2588),
            Err(InsnError::FloatingPoint { insn: 0x2588 })
        );
        // The upper half of a 16-bit instruction's word is the next instruction.
        assert_eq!(decode(0x1234_4188), Ok(load(10, Dword, true, 2)));
    }

    /// Zcb: c.lbu a0, 0(a1) = 0x8188; c.lhu a0, 0(a1) = 0x8588; c.lh a0, 0(a1) =
    /// 0x85c8; c.sb a0, 0(a1) = 0x8988; c.sh a0, 0(a1) = 0x8d88.
    #[test]
    fn compressed_zcb() {
        assert_eq!(decode(0x8188), Ok(load(10, Byte, false, 2)));
        assert_eq!(decode(0x8588), Ok(load(10, Word, false, 2)));
        assert_eq!(decode(0x85c8), Ok(load(10, Word, true, 2)));
        assert_eq!(decode(0x8988), Ok(store(10, Byte, 2)));
        assert_eq!(decode(0x8d88), Ok(store(10, Word, 2)));
        // c.sub-class encodings of funct3 = 100 in quadrant 0 (funct6 100111) are not
        // loads or stores.
        assert_eq!(
            decode(0x9d88),
            Err(InsnError::NotLoadStore { insn: 0x9d88 })
        );
    }

    #[test]
    fn compressed_quadrant_2() {
        // c.lwsp a0, 12(sp): 0x4532
        assert_eq!(decode(0x4532), Ok(load(10, Dword, true, 2)));
        // c.ldsp ra, 8(sp): 0x60a2
        assert_eq!(decode(0x60a2), Ok(load(1, Qword, false, 2)));
        // c.swsp a0, 12(sp): 0xc62a
        assert_eq!(decode(0xc62a), Ok(store(10, Dword, 2)));
        // c.sdsp ra, 8(sp): 0xe406
        assert_eq!(decode(0xe406), Ok(store(1, Qword, 2)));
        // c.lwsp with rd = x0 is reserved: 0x4002.
        assert_eq!(decode(0x4002), Err(InsnError::Reserved { insn: 0x4002 }));
        // c.fldsp fa0, 8(sp): 0x2522
        assert_eq!(
            decode(0x2522),
            Err(InsnError::FloatingPoint { insn: 0x2522 })
        );
    }

    #[test]
    fn not_memory_instructions() {
        // addi a0, a0, 1
        assert_eq!(
            decode(0x0015_0513),
            Err(InsnError::NotLoadStore { insn: 0x0015_0513 })
        );
        // amoadd.w a0, a1, (a2)
        assert_eq!(
            decode(0x00b6_252f),
            Err(InsnError::Atomic { insn: 0x00b6_252f })
        );
        // fld fa0, 0(a1)
        assert_eq!(
            decode(0x0005_b507),
            Err(InsnError::FloatingPoint { insn: 0x0005_b507 })
        );
        // c.nop (quadrant 1) and c.addi4spn (quadrant 0, funct3 0).
        assert!(decode(0x0001).is_err());
        assert!(decode(0x0028).is_err());
    }

    /// Section 8.6.3: the transformed instruction of `ld a0, 24(a1)` has imm and rs1
    /// zeroed: 0x0000_3503; of `c.lw a0, 0(a1)` the 32-bit `lw a0, 0(x0)` with bit 1
    /// clear: 0x0000_2501; of `sd a0, 16(a1)` 0x00a0_3023.
    #[test]
    fn transformed_htinst() {
        assert_eq!(
            decode_htinst(0x3503),
            Htinst::Transformed(load(10, Qword, false, 4))
        );
        assert_eq!(
            decode_htinst(0x2501),
            Htinst::Transformed(load(10, Dword, true, 2))
        );
        assert_eq!(
            decode_htinst(0x00a0_3023),
            Htinst::Transformed(store(10, Qword, 4))
        );
        // A misaligned access keeps the address offset in the rs1 field: lw with
        // offset 2 -> rs1 = 2; ignored by the decoder.
        assert_eq!(
            decode_htinst(0x0001_2503),
            Htinst::Transformed(load(10, Dword, true, 4))
        );
        // A transformed AMO (amoadd.w a0, a1, (zero)).
        assert_eq!(
            decode_htinst(0x00b0_252f),
            Htinst::TransformedOther(InsnError::Atomic { insn: 0x00b0_252f })
        );
    }

    #[test]
    fn htinst_pseudo_and_none() {
        assert_eq!(decode_htinst(0), Htinst::None);
        for pseudo in [0x2000u32, 0x3000, 0x2020, 0x3020] {
            assert_eq!(
                decode_htinst(u64::from(pseudo)),
                Htinst::PageTableWalk { pseudo }
            );
        }
        assert_eq!(decode_htinst(0x4000), Htinst::Unknown(0x4000));
        assert_eq!(decode_htinst(1 << 40 | 3), Htinst::Unknown(1 << 40 | 3));
    }

    #[test]
    fn lengths() {
        assert_eq!(insn_len(0x4188), 2);
        assert_eq!(insn_len(0x8503), 4);
        assert_eq!(insn_len(0x0001), 2);
    }
}
