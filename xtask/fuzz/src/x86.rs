//! The x86 MMIO instruction decoder's model: iced-x86's view of the same bytes.

use hal_x86_64::mmio::{InsnError, MAX_INSN_LEN, MemInsn};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use vcpu_api::{AccessWidth, MmioOp};

/// What iced-x86 says the bytes are (64-bit mode), cut to the longest instruction.
pub struct IcedView {
    /// The instruction, when the bytes hold a whole valid one.
    pub insn: Option<Instruction>,
}

impl IcedView {
    /// Decodes `bytes` (at most 15 of them) as code of `bitness` (16, 32 or 64).
    pub fn decode(bytes: &[u8], bitness: u32) -> Self {
        let bytes = &bytes[..bytes.len().min(MAX_INSN_LEN)];
        let mut decoder = Decoder::with_ip(bitness, bytes, 0, DecoderOptions::NONE);
        let insn = decoder.decode();
        Self {
            insn: (!insn.is_invalid()).then_some(insn),
        }
    }

    /// The instruction when it is one of the moves we emulate: `mov`, `movzx`,
    /// `movsx`, `movsxd` with a memory operand and otherwise only general registers
    /// or an immediate, without LOCK or REP.
    pub fn emulated_move(&self) -> Option<&Instruction> {
        let insn = self.insn.as_ref()?;
        let family = matches!(
            insn.mnemonic(),
            Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd
        );
        let operands_ok = (0..insn.op_count()).all(|i| match insn.op_kind(i) {
            OpKind::Register => insn.op_register(i).is_gpr(),
            OpKind::Memory => true,
            k => is_immediate(k),
        });
        let has_memory = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory);
        let prefixed = insn.has_lock_prefix() || insn.has_rep_prefix() || insn.has_repne_prefix();
        (family && operands_ok && has_memory && !prefixed).then_some(insn)
    }
}

fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8 | OpKind::Immediate16 | OpKind::Immediate32 | OpKind::Immediate32to64
    )
}

/// Whether the bytes have the prefix layout the decoder handles: operand-size,
/// address-size and segment prefixes, then at most one REX right before the opcode.
/// (Other layouts, such as a REX followed by a legacy prefix, which makes the CPU
/// ignore the REX, are refused by our decoder, and may be.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Canonical(pub bool);

impl Canonical {
    /// Looks at the prefix bytes of `bytes` (REX exists in 64-bit code only).
    pub fn of(bytes: &[u8], bits64: bool) -> Self {
        let legacy = |b: &u8| matches!(b, 0x66 | 0x67 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65);
        let rex = |b: &u8| bits64 && b & 0xf0 == 0x40;
        let prefix = |b: &u8| legacy(b) || matches!(b, 0xf0 | 0xf2 | 0xf3) || rex(b);
        let mut i = bytes.iter().take_while(|b| legacy(b)).count();
        if bytes.get(i).is_some_and(rex) {
            i += 1;
        }
        Self(bytes.get(i).is_some_and(|b| !prefix(b)))
    }
}

/// The index (RAX = 0 .. R15 = 15) of a general register of any width.
fn gpr_index(r: Register) -> usize {
    (r.full_register() as usize) - (Register::RAX as usize)
}

fn is_high_byte(r: Register) -> bool {
    matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
}

fn width_of(bytes: usize) -> AccessWidth {
    AccessWidth::from_bytes(bytes).unwrap_or_else(|| panic!("no access width of {bytes} bytes"))
}

/// Checks our decoder's answer `ours` for `bytes` (with general registers `gprs`)
/// against iced-x86's `iced`; panics with both on a disagreement.
pub fn check_against_iced(
    bytes: &[u8],
    gprs: &[u64; 16],
    ours: Result<MemInsn, InsnError>,
    iced: &IcedView,
    canonical: Canonical,
) {
    let fail = |why: &str| -> ! {
        panic!(
            "{why}: bytes {bytes:02x?}\n ours: {ours:?}\n iced: {:?}",
            iced.insn.map(|i| (i.code(), i.len()))
        )
    };
    match ours {
        Ok(m) => {
            let Some(insn) = iced.emulated_move() else {
                fail("accepted an instruction that is not an emulated move");
            };
            if usize::from(m.len) != insn.len() || insn.len() > bytes.len() {
                fail("length differs");
            }
            if m.width.bytes() != insn.memory_size().size() {
                fail("memory width differs");
            }
            match m.op {
                MmioOp::Write { value } => {
                    if insn.op0_kind() != OpKind::Memory {
                        fail("a store whose destination is not memory");
                    }
                    let expected = if insn.op1_kind() == OpKind::Register {
                        let r = insn.op1_register();
                        let full = gprs[gpr_index(r)];
                        if is_high_byte(r) {
                            (full >> 8) & 0xff
                        } else {
                            m.width.truncate(full)
                        }
                    } else {
                        m.width.truncate(insn.immediate(1))
                    };
                    if value != expected {
                        fail("stored value differs");
                    }
                }
                MmioOp::Read {
                    reg,
                    sign_extend,
                    reg_width,
                } => {
                    if insn.op0_kind() != OpKind::Register {
                        fail("a load whose destination is not a register");
                    }
                    let dest = insn.op0_register();
                    if is_high_byte(dest) || reg != gpr_index(dest) {
                        fail("destination register differs");
                    }
                    if reg_width != width_of(dest.size()) {
                        fail("destination width differs");
                    }
                    // Sign extension only matters when the register is wider.
                    let widens = reg_width.bytes() > m.width.bytes();
                    let iced_sign = matches!(insn.mnemonic(), Mnemonic::Movsx | Mnemonic::Movsxd);
                    if widens && sign_extend != iced_sign {
                        fail("sign extension differs");
                    }
                    if widens && insn.mnemonic() == Mnemonic::Mov {
                        fail("a plain mov that widens");
                    }
                }
            }
        }
        Err(InsnError::HighByteDestination) => match iced.emulated_move() {
            Some(insn)
                if insn.op0_kind() == OpKind::Register && is_high_byte(insn.op0_register()) => {}
            _ => fail("refused as a high-byte load, which it is not"),
        },
        Err(e) => {
            if canonical.0 && iced.emulated_move().is_some() {
                fail(&format!("refused ({e}) an emulated move"));
            }
        }
    }
}

/// Checks `SvmExit::decode(code, info1, info2)` against the APM's exit code table
/// (vol. 2 appendix C), the IOIO EXITINFO1 layout (15.10.2, figure 15-2: TYPE bit 0,
/// STR 2, REP 3, one-hot SZ8/SZ16/SZ32 bits 6:4, port 31:16), the MSR direction
/// (15.11) and the #NPF error code (15.25.6).
pub fn check_exit(
    code: u64,
    info1: u64,
    info2: u64,
    got: Result<hal_x86_64::SvmExit, hal_x86_64::exit::ExitDecodeError>,
) {
    use addrspace::{AccessKind, GuestPhysAddr};
    use hal_x86_64::SvmExit as E;
    use hal_x86_64::exit::ExitDecodeError as D;
    let bit = |n: u32| info1 >> n & 1 == 1;
    let expected = match code {
        0x400 => {
            let access = if bit(4) {
                AccessKind::Execute
            } else if bit(1) && !bit(33) {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            if let Ok(E::NestedPageFault { error, .. }) = got {
                assert_eq!(error.access(), access, "#NPF access of {info1:#x}");
                assert_eq!(error.present(), bit(0));
                assert_eq!(error.final_gpa(), bit(32));
            }
            Ok(E::NestedPageFault {
                gpa: GuestPhysAddr::from_usize(info2 as usize),
                error: hal_x86_64::NpfErrorCode(info1),
            })
        }
        0x7b => {
            let width = match info1 >> 4 & 7 {
                1 => Some(AccessWidth::Byte),
                2 => Some(AccessWidth::Word),
                4 => Some(AccessWidth::Dword),
                _ => None,
            };
            match width {
                None => Err(D::BadIoSize { info1 }),
                Some(width) => Ok(E::Io {
                    info: hal_x86_64::IoioInfo {
                        port: (info1 >> 16 & 0xffff) as u16,
                        width,
                        is_in: bit(0),
                        string: bit(2),
                        rep: bit(3),
                    },
                    next_rip: info2,
                }),
            }
        }
        0x7c => match info1 {
            0 => Ok(E::Msr { write: false }),
            1 => Ok(E::Msr { write: true }),
            _ => Err(D::BadMsrDirection { info1 }),
        },
        0x81 => Ok(E::Vmmcall),
        0x78 => Ok(E::Hlt),
        0x77 => Ok(E::Pause),
        0x72 => Ok(E::Cpuid),
        0x7f => Ok(E::Shutdown),
        0x60 => Ok(E::Intr),
        0x61 => Ok(E::Nmi),
        0x80 => Ok(E::Vmrun),
        u64::MAX => Ok(E::Invalid),
        0x40..=0x5f => Ok(E::Exception {
            vector: (code - 0x40) as u8,
            error_code: info1,
        }),
        code => Ok(E::Other { code }),
    };
    assert_eq!(
        got, expected,
        "exit {code:#x} info1 {info1:#x} info2 {info2:#x}"
    );
    // The instructions whose length is fixed: VMMCALL 0F 01 D9, HLT F4, PAUSE F3 90,
    // CPUID 0F A2, RDMSR 0F 32 / WRMSR 0F 30.
    if let Ok(exit) = got {
        let len = match exit {
            E::Vmmcall => Some(3),
            E::Hlt => Some(1),
            E::Pause | E::Cpuid | E::Msr { .. } => Some(2),
            _ => None,
        };
        assert_eq!(exit.fixed_insn_len(), len);
    }
}
