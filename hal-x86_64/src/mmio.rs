//! Decoding of the guest instruction behind an MMIO nested page fault: the `mov`
//! family (loads and stores of 1, 2, 4 and 8 bytes with any ModRM/SIB/displacement
//! form, immediate stores, `moffs` forms) and the zero- and sign-extending loads
//! `movzx`, `movsx` and `movsxd`, in the code size of the guest's mode: 64-bit
//! (REX, 64-bit addresses), 32-bit and 16-bit (default operand and address sizes,
//! 16-bit ModRM addressing, `0x66`/`0x67` switching between them; Intel SDM vol. 2,
//! chapter 2 "Instruction Format" and table 2-1; AMD APM vol. 3, chapter 1). Anything
//! else is refused with an error, so an MMIO access we cannot emulate stops the vCPU
//! with its RIP instead of looping.
//!
//! Pure code over a byte slice; the vCPU fetches the bytes through the guest's page
//! tables ([`crate::guest_paging`]) at the linear address its mode gives
//! ([`crate::mode`]).

use core::fmt;

use vcpu_api::{AccessWidth, MmioOp};

use crate::mode::CodeSize;

/// The longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// A decoded memory instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInsn {
    /// Bytes accessed.
    pub width: AccessWidth,
    /// Load (into RAX = 0 .. R15 = 15; `reg_width` is the destination operand size,
    /// `sign_extend` set for `movsx`/`movsxd`) or store (of a value already cut to
    /// the access width).
    pub op: MmioOp,
    /// Instruction length in bytes.
    pub len: u8,
}

/// Why the instruction could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsnError {
    /// The bytes end in the middle of the instruction (`have` bytes were available).
    Truncated {
        /// Bytes available.
        have: usize,
    },
    /// Not a memory load or store we emulate (the opcode byte, after prefixes).
    Unsupported {
        /// The opcode (0x0Fxx for two-byte opcodes).
        opcode: u16,
    },
    /// A register-to-register form (ModRM.mod = 3): it cannot have faulted on memory.
    NotMemory,
    /// A load into AH, CH, DH or BH, which no register index can name.
    HighByteDestination,
}

impl InsnError {
    /// What is wrong with the instruction, for the VM layer's error.
    pub const fn why(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "the instruction's bytes end early",
            Self::Unsupported { .. } => "not a move the decoder emulates",
            Self::NotMemory => "a register operand, not a memory access",
            Self::HighByteDestination => "a load into AH/CH/DH/BH",
        }
    }
}

impl fmt::Display for InsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { have } => write!(f, "instruction truncated after {have} bytes"),
            Self::Unsupported { opcode } => write!(f, "opcode {opcode:#x} is not emulated"),
            Self::NotMemory => f.write_str("register operand, not a memory access"),
            Self::HighByteDestination => f.write_str("load into AH/CH/DH/BH"),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, InsnError> {
        let b = *self.bytes.get(self.pos).ok_or(InsnError::Truncated {
            have: self.bytes.len(),
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), InsnError> {
        if self.pos + n > self.bytes.len() {
            return Err(InsnError::Truncated {
                have: self.bytes.len(),
            });
        }
        self.pos += n;
        Ok(())
    }

    fn imm(&mut self, n: usize) -> Result<u64, InsnError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }

    /// Skips the rest of a memory operand after its ModRM byte (SIB, displacement)
    /// with addresses of `addr_bits`; returns the ModRM.reg field.
    fn memory_operand(&mut self, modrm: u8, addr_bits: u32) -> Result<u8, InsnError> {
        let md = modrm >> 6;
        let rm = modrm & 7;
        if md == 3 {
            return Err(InsnError::NotMemory);
        }
        if addr_bits == 16 {
            // 16-bit addressing: no SIB; disp16 alone with mod 0 and r/m 6.
            let disp = match (md, rm) {
                (0, 6) | (2, _) => 2,
                (1, _) => 1,
                _ => 0,
            };
            self.skip(disp)?;
            return Ok((modrm >> 3) & 7);
        }
        let mut disp = match md {
            1 => 1,
            2 => 4,
            _ => 0,
        };
        if rm == 4 {
            let sib = self.next()?;
            if md == 0 && sib & 7 == 5 {
                disp = 4; // no base register: disp32
            }
        } else if md == 0 && rm == 5 {
            disp = 4; // disp32 (RIP-relative in 64-bit mode)
        }
        self.skip(disp)?;
        Ok((modrm >> 3) & 7)
    }
}

/// Decodes the memory access of the instruction in `bytes`, running as code of
/// `size` (the guest's mode: [`crate::mode::CpuMode::code_size`]). `gpr(i)` reads
/// general register `i` (for the value of a store).
pub fn decode(
    bytes: &[u8],
    size: CodeSize,
    gpr: impl Fn(usize) -> u64,
) -> Result<MemInsn, InsnError> {
    let bytes = &bytes[..bytes.len().min(MAX_INSN_LEN)];
    let mut c = Cursor { bytes, pos: 0 };
    let mut opsize_prefix = false;
    let mut addrsize_prefix = false;
    let mut b = c.next()?;
    // Legacy prefixes (group 1 LOCK/REP are not valid on the moves we emulate).
    loop {
        match b {
            0x66 => opsize_prefix = true,
            0x67 => addrsize_prefix = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
        b = c.next()?;
    }
    // REX (64-bit mode only; elsewhere 0x40..0x4f are INC/DEC) must come last,
    // right before the opcode.
    let mut rex = 0u8;
    if size == CodeSize::Bits64 && b & 0xf0 == 0x40 {
        rex = b;
        b = c.next()?;
    }
    let rex_w = rex & 8 != 0;
    let rex_r = usize::from(rex & 4 != 0) << 3;
    // Operand size: 16-bit code defaults to 16 bits, the others to 32; 0x66 swaps
    // 16 and 32; REX.W makes 64.
    let op_width = match (size == CodeSize::Bits16, opsize_prefix, rex_w) {
        (_, _, true) => AccessWidth::Qword,
        (true, false, _) | (false, true, _) => AccessWidth::Word,
        _ => AccessWidth::Dword,
    };
    // Address size: 64, 32 or 16 bits; 0x67 goes to 32 (from 64), 16 (from 32) or
    // 32 (from 16).
    let addr_bits = match (size, addrsize_prefix) {
        (CodeSize::Bits64, false) => 64,
        (CodeSize::Bits32, true) | (CodeSize::Bits16, false) => 16,
        _ => 32,
    };
    // The value of 8-bit register `r` as a source (AH..BH without REX).
    let reg8 = |r: usize| {
        if rex == 0 && (4..8).contains(&r) {
            (gpr(r - 4) >> 8) & 0xff
        } else {
            gpr(r) & 0xff
        }
    };
    let load = |reg: usize, sign_extend, reg_width| MmioOp::Read {
        reg,
        sign_extend,
        reg_width,
    };
    let (width, op) = match b {
        // MOV r/m8, r8 / MOV r/m, r
        0x88 | 0x89 => {
            let modrm = c.next()?;
            let reg = usize::from(c.memory_operand(modrm, addr_bits)?) | rex_r;
            if b == 0x88 {
                (AccessWidth::Byte, MmioOp::Write { value: reg8(reg) })
            } else {
                let value = op_width.truncate(gpr(reg));
                (op_width, MmioOp::Write { value })
            }
        }
        // MOV r8, r/m8 / MOV r, r/m
        0x8a | 0x8b => {
            let modrm = c.next()?;
            let reg = usize::from(c.memory_operand(modrm, addr_bits)?) | rex_r;
            if b == 0x8a {
                if rex == 0 && (4..8).contains(&reg) {
                    return Err(InsnError::HighByteDestination);
                }
                (AccessWidth::Byte, load(reg, false, AccessWidth::Byte))
            } else {
                (op_width, load(reg, false, op_width))
            }
        }
        // MOVSXD r, r/m32 (without REX.W a plain 32-bit move); outside 64-bit mode
        // 0x63 is ARPL.
        0x63 if size == CodeSize::Bits64 => {
            let modrm = c.next()?;
            let reg = usize::from(c.memory_operand(modrm, addr_bits)?) | rex_r;
            let (width, reg_width) = match op_width {
                AccessWidth::Word => (AccessWidth::Word, AccessWidth::Word),
                w => (AccessWidth::Dword, w),
            };
            (width, load(reg, rex_w, reg_width))
        }
        // MOV r/m8, imm8 / MOV r/m, imm16/32 (imm32 sign-extended with REX.W).
        0xc6 | 0xc7 => {
            let modrm = c.next()?;
            if c.memory_operand(modrm, addr_bits)? != 0 {
                return Err(InsnError::Unsupported { opcode: b.into() });
            }
            if b == 0xc6 {
                let value = c.imm(1)?;
                (AccessWidth::Byte, MmioOp::Write { value })
            } else {
                let value = match op_width {
                    AccessWidth::Word => c.imm(2)?,
                    AccessWidth::Dword => c.imm(4)?,
                    _ => AccessWidth::Dword.sign_extend(c.imm(4)?),
                };
                (op_width, MmioOp::Write { value })
            }
        }
        // MOV AL/rAX, moffs and MOV moffs, AL/rAX.
        0xa0..=0xa3 => {
            c.skip(addr_bits as usize / 8)?;
            let width = if b & 1 == 0 {
                AccessWidth::Byte
            } else {
                op_width
            };
            if b < 0xa2 {
                (width, load(0, false, width))
            } else {
                let value = width.truncate(gpr(0));
                (width, MmioOp::Write { value })
            }
        }
        0x0f => {
            let b2 = c.next()?;
            let opcode = 0x0f00 | u16::from(b2);
            let (width, sign_extend) = match b2 {
                0xb6 => (AccessWidth::Byte, false),
                0xb7 => (AccessWidth::Word, false),
                0xbe => (AccessWidth::Byte, true),
                0xbf => (AccessWidth::Word, true),
                _ => return Err(InsnError::Unsupported { opcode }),
            };
            let modrm = c.next()?;
            let reg = usize::from(c.memory_operand(modrm, addr_bits)?) | rex_r;
            (width, load(reg, sign_extend, op_width))
        }
        other => {
            return Err(InsnError::Unsupported {
                opcode: other.into(),
            });
        }
    };
    Ok(MemInsn {
        width,
        op,
        len: u8::try_from(c.pos).unwrap_or(u8::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::*;

    /// RAX = 0x..00, RCX = 0x..11, ...: register `i` holds `0x1122334455667700 + i`
    /// with byte 1 = 0x77 - so AH..BH are recognisable.
    fn regs(i: usize) -> u64 {
        0x1122_3344_5566_7700 + i as u64
    }

    /// Decodes 64-bit code.
    fn dec(bytes: &[u8]) -> Result<MemInsn, InsnError> {
        decode(bytes, CodeSize::Bits64, regs)
    }

    fn dec32(bytes: &[u8]) -> Result<MemInsn, InsnError> {
        decode(bytes, CodeSize::Bits32, regs)
    }

    fn dec16(bytes: &[u8]) -> Result<MemInsn, InsnError> {
        decode(bytes, CodeSize::Bits16, regs)
    }

    fn store(width: AccessWidth, value: u64, len: u8) -> Result<MemInsn, InsnError> {
        Ok(MemInsn {
            width,
            op: MmioOp::Write { value },
            len,
        })
    }

    fn load(
        width: AccessWidth,
        reg: usize,
        sign_extend: bool,
        reg_width: AccessWidth,
        len: u8,
    ) -> Result<MemInsn, InsnError> {
        Ok(MemInsn {
            width,
            op: MmioOp::Read {
                reg,
                sign_extend,
                reg_width,
            },
            len,
        })
    }

    #[test]
    fn stores_of_every_width() {
        // mov [rdi], al
        assert_eq!(dec(&[0x88, 0x07]), store(Byte, 0x00, 2));
        // mov [rdi], sil (REX makes 6 = SIL, not DH)
        assert_eq!(dec(&[0x40, 0x88, 0x37]), store(Byte, 0x06, 3));
        // mov [rdi], ah (no REX: 4 = AH = bits 15:8 of RAX)
        assert_eq!(dec(&[0x88, 0x27]), store(Byte, 0x77, 2));
        // mov [rdi], ax
        assert_eq!(dec(&[0x66, 0x89, 0x07]), store(Word, 0x7700, 3));
        // mov [rax+0x10], ecx
        assert_eq!(dec(&[0x89, 0x48, 0x10]), store(Dword, 0x5566_7701, 3));
        // mov [rdi], rax
        assert_eq!(dec(&[0x48, 0x89, 0x07]), store(Qword, regs(0), 3));
        // mov [rdi], r9 (REX.WR)
        assert_eq!(dec(&[0x4c, 0x89, 0x0f]), store(Qword, regs(9), 3));
    }

    #[test]
    fn loads_of_every_width() {
        // mov al, [rdi]
        assert_eq!(dec(&[0x8a, 0x07]), load(Byte, 0, false, Byte, 2));
        // mov r8b, [rdi]
        assert_eq!(dec(&[0x44, 0x8a, 0x07]), load(Byte, 8, false, Byte, 3));
        // mov ax, [rdi]
        assert_eq!(dec(&[0x66, 0x8b, 0x07]), load(Word, 0, false, Word, 3));
        // mov eax, [rdi]
        assert_eq!(dec(&[0x8b, 0x07]), load(Dword, 0, false, Dword, 2));
        // mov rax, [rdi]
        assert_eq!(dec(&[0x48, 0x8b, 0x07]), load(Qword, 0, false, Qword, 3));
        // mov ah, [rdi]: no register index names AH.
        assert_eq!(dec(&[0x8a, 0x27]), Err(InsnError::HighByteDestination));
    }

    #[test]
    fn modrm_forms_set_the_length() {
        // mov eax, [rsp+8]: SIB + disp8
        assert_eq!(
            dec(&[0x8b, 0x44, 0x24, 0x08]),
            load(Dword, 0, false, Dword, 4)
        );
        // mov ecx, [rbx+rsi*4+0x100]: SIB + disp32
        assert_eq!(
            dec(&[0x8b, 0x8c, 0xb3, 0x00, 0x01, 0x00, 0x00]),
            load(Dword, 1, false, Dword, 7)
        );
        // mov edx, [0x1000]: SIB without base (mod 0, base 5) + disp32
        assert_eq!(
            dec(&[0x8b, 0x14, 0x25, 0x00, 0x10, 0x00, 0x00]),
            load(Dword, 2, false, Dword, 7)
        );
        // mov r9, [rip+0x1234]
        assert_eq!(
            dec(&[0x4c, 0x8b, 0x0d, 0x34, 0x12, 0x00, 0x00]),
            load(Qword, 9, false, Qword, 7)
        );
        // mov rax, [rbp-8]: disp8 with rm=5, mod=1 (not RIP-relative)
        assert_eq!(
            dec(&[0x48, 0x8b, 0x45, 0xf8]),
            load(Qword, 0, false, Qword, 4)
        );
        // mov rax, gs:[rdi] with address-size prefix: prefixes count in the length.
        assert_eq!(
            dec(&[0x65, 0x67, 0x48, 0x8b, 0x07]),
            load(Qword, 0, false, Qword, 5)
        );
    }

    #[test]
    fn extending_loads() {
        // movzx eax, byte [rdi]
        assert_eq!(dec(&[0x0f, 0xb6, 0x07]), load(Byte, 0, false, Dword, 3));
        // movzx eax, word [rdi]
        assert_eq!(dec(&[0x0f, 0xb7, 0x07]), load(Word, 0, false, Dword, 3));
        // movsx rax, byte [rdi]
        assert_eq!(
            dec(&[0x48, 0x0f, 0xbe, 0x07]),
            load(Byte, 0, true, Qword, 4)
        );
        // movsx rax, word [rdi]
        assert_eq!(
            dec(&[0x48, 0x0f, 0xbf, 0x07]),
            load(Word, 0, true, Qword, 4)
        );
        // movsxd rax, dword [rdi]
        assert_eq!(dec(&[0x48, 0x63, 0x07]), load(Dword, 0, true, Qword, 3));
        // movsx ecx, byte [rdi+1]
        assert_eq!(
            dec(&[0x0f, 0xbe, 0x4f, 0x01]),
            load(Byte, 1, true, Dword, 4)
        );
    }

    #[test]
    fn immediate_stores() {
        // mov byte [rdi], 0x5a
        assert_eq!(dec(&[0xc6, 0x07, 0x5a]), store(Byte, 0x5a, 3));
        // mov word [rdi], 0x1234
        assert_eq!(dec(&[0x66, 0xc7, 0x07, 0x34, 0x12]), store(Word, 0x1234, 5));
        // mov dword [rdi+8], 0x89abcdef
        assert_eq!(
            dec(&[0xc7, 0x47, 0x08, 0xef, 0xcd, 0xab, 0x89]),
            store(Dword, 0x89ab_cdef, 7)
        );
        // mov qword [rax], 0xbad
        assert_eq!(
            dec(&[0x48, 0xc7, 0x00, 0xad, 0x0b, 0x00, 0x00]),
            store(Qword, 0xbad, 7)
        );
        // mov qword [rax], -2: imm32 sign-extended
        assert_eq!(
            dec(&[0x48, 0xc7, 0x00, 0xfe, 0xff, 0xff, 0xff]),
            store(Qword, 0xffff_ffff_ffff_fffe, 7)
        );
        // C7 with ModRM.reg != 0 is not a MOV.
        assert_eq!(
            dec(&[0xc7, 0x4f, 0x08, 0, 0, 0, 0]),
            Err(InsnError::Unsupported { opcode: 0xc7 })
        );
    }

    #[test]
    fn moffs_forms() {
        let mut insn = [0u8; 10];
        insn[0] = 0xa0;
        assert_eq!(dec(&insn[..9]), load(Byte, 0, false, Byte, 9));
        insn[0] = 0x48;
        insn[1] = 0xa3;
        assert_eq!(dec(&insn), store(Qword, regs(0), 10));
        assert_eq!(
            dec(&[0x67, 0xa1, 0, 0, 0, 0]),
            load(Dword, 0, false, Dword, 6)
        );
    }

    #[test]
    fn refusals() {
        // add [rdi], eax
        assert_eq!(
            dec(&[0x01, 0x07]),
            Err(InsnError::Unsupported { opcode: 0x01 })
        );
        // mov eax, ecx
        assert_eq!(dec(&[0x8b, 0xc1]), Err(InsnError::NotMemory));
        // rep movsb
        assert_eq!(
            dec(&[0xf3, 0xa4]),
            Err(InsnError::Unsupported { opcode: 0xf3 })
        );
        // cmpxchg (0F B1)
        assert_eq!(
            dec(&[0x0f, 0xb1, 0x07]),
            Err(InsnError::Unsupported { opcode: 0x0fb1 })
        );
        assert_eq!(dec(&[0x48, 0x8b]), Err(InsnError::Truncated { have: 2 }));
        assert_eq!(
            dec(&[0x8b, 0x44, 0x24]),
            Err(InsnError::Truncated { have: 3 })
        );
        assert_eq!(dec(&[]), Err(InsnError::Truncated { have: 0 }));
        // 15 prefixes and nothing else.
        assert_eq!(dec(&[0x66; 20]), Err(InsnError::Truncated { have: 15 }));
    }

    /// Regression (issue 11): the decoder assumed 64-bit mode, so `a1 00 10 00 00`
    /// (`mov eax, [0x1000]` in 32-bit code: moffs32, 5 bytes) needed 9 bytes and the
    /// guest's next instruction would have been taken for the offset's high half.
    #[test]
    fn moffs_in_32_bit_code_is_5_bytes() {
        let insn = [0xa1, 0x00, 0x10, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90];
        assert_eq!(dec32(&insn), load(Dword, 0, false, Dword, 5));
        assert_eq!(dec(&insn), load(Dword, 0, false, Dword, 9));
        // 16-bit code: `mov ax, [0x1000]` is 3 bytes, `mov eax, [0x1000]` (0x66) 4,
        // with a 32-bit offset (0x67) 5 and 6.
        assert_eq!(dec16(&insn[..3]), load(Word, 0, false, Word, 3));
        assert_eq!(
            dec16(&[0x66, 0xa1, 0x00, 0x10]),
            load(Dword, 0, false, Dword, 4)
        );
        assert_eq!(
            dec16(&[0x67, 0xa3, 0x00, 0x10, 0x00, 0x00]),
            store(Word, regs(0) & 0xffff, 6)
        );
        assert_eq!(
            dec32(&[0x67, 0xa1, 0x00, 0x10]),
            load(Dword, 0, false, Dword, 4)
        );
    }

    /// 32-bit code: 0x40..0x4f are INC/DEC, not REX; 0x66 makes 16-bit operands;
    /// mod 0 r/m 5 is an absolute disp32; 0x63 is ARPL.
    #[test]
    fn decoding_32_bit_code() {
        // mov [ebx+0x10], ecx
        assert_eq!(
            dec32(&[0x89, 0x4b, 0x10]),
            store(Dword, regs(1) & 0xffff_ffff, 3)
        );
        // mov ax, [0xd0000000]
        assert_eq!(
            dec32(&[0x66, 0x8b, 0x05, 0, 0, 0, 0xd0]),
            load(Word, 0, false, Word, 7)
        );
        // movsx eax, byte [esi]
        assert_eq!(dec32(&[0x0f, 0xbe, 0x06]), load(Byte, 0, true, Dword, 3));
        // mov dword [edi], imm32
        assert_eq!(
            dec32(&[0xc7, 0x07, 0x78, 0x56, 0x34, 0x12]),
            store(Dword, 0x1234_5678, 6)
        );
        // 0x48 is DEC EAX here.
        assert_eq!(
            dec32(&[0x48, 0x8b, 0x07]),
            Err(InsnError::Unsupported { opcode: 0x48 })
        );
        assert_eq!(
            dec32(&[0x63, 0x07]),
            Err(InsnError::Unsupported { opcode: 0x63 })
        );
    }

    /// 16-bit code: 16-bit operands by default, 16-bit ModRM addressing (no SIB,
    /// disp16 alone with mod 0 r/m 6, mod 2 with disp16).
    #[test]
    fn decoding_16_bit_code() {
        // mov [bx+si], al
        assert_eq!(dec16(&[0x88, 0x00]), store(Byte, regs(0) & 0xff, 2));
        // mov ax, [0x1234]
        assert_eq!(
            dec16(&[0x8b, 0x06, 0x34, 0x12]),
            load(Word, 0, false, Word, 4)
        );
        // mov cx, [bp+di+0x1234]
        assert_eq!(
            dec16(&[0x8b, 0x8b, 0x34, 0x12]),
            load(Word, 1, false, Word, 4)
        );
        // mov word [bx], imm16
        assert_eq!(dec16(&[0xc7, 0x07, 0x34, 0x12]), store(Word, 0x1234, 4));
        // 0x66: mov [bx], eax; 0x67: mov eax, [esp + 0x10] with a SIB.
        assert_eq!(
            dec16(&[0x66, 0x89, 0x07]),
            store(Dword, regs(0) & 0xffff_ffff, 3)
        );
        assert_eq!(
            dec16(&[0x66, 0x67, 0x8b, 0x44, 0x24, 0x10]),
            load(Dword, 0, false, Dword, 6)
        );
    }

    #[test]
    fn any_bytes_decode_without_panicking() {
        // A cheap exhaustive sweep over the first two bytes with fixed tails.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for tail in [[0u8; 13], [0xff; 13], [0x25; 13]] {
                    let mut insn = [0u8; 15];
                    insn[0] = a;
                    insn[1] = b;
                    insn[2..].copy_from_slice(&tail);
                    for n in 0..=15 {
                        for size in [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64] {
                            if let Ok(d) = decode(&insn[..n], size, regs) {
                                assert!(d.len as usize <= n);
                            }
                        }
                    }
                }
            }
        }
    }
}
