//! Models of the riscv64 trap and instruction decoding, written from the
//! specifications as MATCH/MASK tables (the form of the opcode map, not of the HAL's
//! field-by-field decoder): Privileged Architecture 20211203 sections 8.2.11-8.2.12 and
//! 8.6.3-8.6.4; Unprivileged ISA 20191213 chapters 2, 5, 16 (RVC) and the Zcb extension.

use addrspace::{AccessKind, GuestPhysAddr};
use hal_riscv64::exit::Trap;
use hal_riscv64::mmio::{Htinst, InsnError, MemInsn, MemOp};
use vcpu_api::AccessWidth::{self, Byte, Dword, Qword, Word};

/// Encodings the model names, for the targets to build instructions from: the
/// MATCH and MASK of each load and store.
pub fn table() -> impl Iterator<Item = (u32, u32)> {
    BASE.iter().chain(COMPRESSED.iter()).map(|e| (e.1, e.2))
}

/// What the model says an instruction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A load: width, sign-extended, destination.
    Load(AccessWidth, bool, usize),
    /// A store: width, source.
    Store(AccessWidth, usize),
    /// A floating-point (or vector) load or store.
    Float,
    /// An atomic.
    Atomic,
    /// A reserved encoding of a load.
    Reserved,
    /// Something else.
    Other,
}

/// Where a table entry takes its register from.
#[derive(Clone, Copy)]
enum Reg {
    /// bits 11:7 (rd).
    Rd,
    /// bits 24:20 (rs2).
    Rs2,
    /// bits 4:2 + 8 (rd' / rs2' of the compressed forms).
    Prime,
    /// bits 6:2 (rs2 of C.SWSP/C.SDSP).
    Crs2,
}

#[derive(Clone, Copy)]
enum Kind {
    Load(AccessWidth, bool),
    Store(AccessWidth),
}

/// (name, MATCH, MASK, kind, register field)
const BASE: [(&str, u32, u32, Kind, Reg); 11] = [
    ("lb", 0x0003, 0x707f, Kind::Load(Byte, true), Reg::Rd),
    ("lh", 0x1003, 0x707f, Kind::Load(Word, true), Reg::Rd),
    ("lw", 0x2003, 0x707f, Kind::Load(Dword, true), Reg::Rd),
    ("ld", 0x3003, 0x707f, Kind::Load(Qword, false), Reg::Rd),
    ("lbu", 0x4003, 0x707f, Kind::Load(Byte, false), Reg::Rd),
    ("lhu", 0x5003, 0x707f, Kind::Load(Word, false), Reg::Rd),
    ("lwu", 0x6003, 0x707f, Kind::Load(Dword, false), Reg::Rd),
    ("sb", 0x0023, 0x707f, Kind::Store(Byte), Reg::Rs2),
    ("sh", 0x1023, 0x707f, Kind::Store(Word), Reg::Rs2),
    ("sw", 0x2023, 0x707f, Kind::Store(Dword), Reg::Rs2),
    ("sd", 0x3023, 0x707f, Kind::Store(Qword), Reg::Rs2),
];

const COMPRESSED: [(&str, u32, u32, Kind, Reg); 13] = [
    ("c.lw", 0x4000, 0xe003, Kind::Load(Dword, true), Reg::Prime),
    ("c.ld", 0x6000, 0xe003, Kind::Load(Qword, false), Reg::Prime),
    ("c.sw", 0xc000, 0xe003, Kind::Store(Dword), Reg::Prime),
    ("c.sd", 0xe000, 0xe003, Kind::Store(Qword), Reg::Prime),
    ("c.lwsp", 0x4002, 0xe003, Kind::Load(Dword, true), Reg::Rd),
    ("c.ldsp", 0x6002, 0xe003, Kind::Load(Qword, false), Reg::Rd),
    ("c.swsp", 0xc002, 0xe003, Kind::Store(Dword), Reg::Crs2),
    ("c.sdsp", 0xe002, 0xe003, Kind::Store(Qword), Reg::Crs2),
    ("c.lbu", 0x8000, 0xfc03, Kind::Load(Byte, false), Reg::Prime),
    ("c.lhu", 0x8400, 0xfc43, Kind::Load(Word, false), Reg::Prime),
    ("c.lh", 0x8440, 0xfc43, Kind::Load(Word, true), Reg::Prime),
    ("c.sb", 0x8800, 0xfc03, Kind::Store(Byte), Reg::Prime),
    ("c.sh", 0x8c00, 0xfc43, Kind::Store(Word), Reg::Prime),
];

/// C.FLD, C.FSD, C.FLDSP, C.FSDSP.
const COMPRESSED_FLOAT: [(u32, u32); 4] = [
    (0x2000, 0xe003),
    (0xa000, 0xe003),
    (0x2002, 0xe003),
    (0xa002, 0xe003),
];

fn field(insn: u32, r: Reg) -> usize {
    (match r {
        Reg::Rd => (insn >> 7) & 31,
        Reg::Rs2 => (insn >> 20) & 31,
        Reg::Prime => ((insn >> 2) & 7) + 8,
        Reg::Crs2 => (insn >> 2) & 31,
    }) as usize
}

/// What instruction `insn` is (16 bits in the low half when its bits 1:0 are not 0b11).
pub fn expect(insn: u32) -> Expect {
    let compressed = insn & 3 != 3;
    let insn = if compressed { insn & 0xffff } else { insn };
    let table: &[_] = if compressed { &COMPRESSED } else { &BASE };
    if let Some((name, _, _, kind, reg)) = table.iter().find(|e| insn & e.2 == e.1) {
        let r = field(insn, *reg);
        // C.LWSP and C.LDSP with rd = x0 are reserved.
        if name.ends_with("sp") && matches!(kind, Kind::Load(..)) && r == 0 {
            return Expect::Reserved;
        }
        return match kind {
            Kind::Load(w, s) => Expect::Load(*w, *s, r),
            Kind::Store(w) => Expect::Store(*w, r),
        };
    }
    if compressed {
        return if COMPRESSED_FLOAT.iter().any(|(m, k)| insn & k == *m) {
            Expect::Float
        } else {
            Expect::Other
        };
    }
    match insn & 0x7f {
        0x07 | 0x27 => Expect::Float,
        0x2f => Expect::Atomic,
        0x03 => Expect::Reserved,
        _ => Expect::Other,
    }
}

/// Checks the decoder's answer for `insn` against the table.
pub fn check_insn(insn: u32, ours: Result<MemInsn, InsnError>) {
    let e = expect(insn);
    let len = if insn & 3 == 3 { 4 } else { 2 };
    match (e, ours) {
        (Expect::Load(w, s, rd), Ok(m)) => {
            assert_eq!(m.width, w, "{insn:#x} width");
            assert_eq!(m.op, MemOp::Load { rd, sign_extend: s }, "{insn:#x}");
            assert_eq!(m.len, len, "{insn:#x} length");
        }
        (Expect::Store(w, rs2), Ok(m)) => {
            assert_eq!(m.width, w, "{insn:#x} width");
            assert_eq!(m.op, MemOp::Store { rs2 }, "{insn:#x}");
            assert_eq!(m.len, len, "{insn:#x} length");
        }
        (Expect::Float, Err(InsnError::FloatingPoint { insn: i }))
        | (Expect::Atomic, Err(InsnError::Atomic { insn: i }))
        | (Expect::Reserved, Err(InsnError::Reserved { insn: i })) => {
            assert_eq!(
                i,
                if len == 2 { insn & 0xffff } else { insn },
                "raw bits kept"
            );
        }
        // A STORE with funct3 4..7 (SQ of RV128, reserved here) may be refused as
        // either; anything else the table does not name must be refused.
        (Expect::Other, Err(InsnError::NotLoadStore { .. } | InsnError::Reserved { .. })) => {}
        (e, ours) => panic!("{insn:#010x}: expected {e:?}, decoded {ours:?}"),
    }
}

/// Checks `decode_htinst(htinst)`: a transformed load/store (bit 0 set) decodes as the
/// 32-bit instruction it stands for (bit 1 set) or as its compressed original (bit 1
/// clear, length 2); the four pseudoinstructions of implicit VS-stage accesses are
/// named; anything else is no information.
pub fn check_htinst(htinst: u64, got: Htinst) {
    let wide = htinst > u64::from(u32::MAX);
    let raw = htinst as u32;
    match got {
        Htinst::None => assert_eq!(htinst, 0),
        Htinst::PageTableWalk { pseudo } => {
            assert!(!wide && matches!(raw, 0x2000 | 0x3000 | 0x2020 | 0x3020));
            assert_eq!(pseudo, raw);
        }
        Htinst::Unknown(v) => {
            assert_eq!(v, htinst);
            assert!(
                htinst != 0 && (wide || raw & 1 == 0),
                "{htinst:#x} is a transformed insn"
            );
            assert!(wide || !matches!(raw, 0x2000 | 0x3000 | 0x2020 | 0x3020));
        }
        Htinst::Transformed(m) => {
            assert!(
                !wide && raw & 1 == 1,
                "{htinst:#x} is not a transformed insn"
            );
            assert_eq!(m.len, if raw & 2 != 0 { 4 } else { 2 }, "original length");
            check_insn(raw | 2, Ok(MemInsn { len: 4, ..m }));
        }
        Htinst::TransformedOther(e) => {
            assert!(!wide && raw & 1 == 1);
            check_insn(raw | 2, Err(e));
        }
    }
}

/// The GPA of a guest-page fault: `htval << 2` for the page, `stval` for the offset;
/// unknown when `htval` is 0.
pub fn fault_gpa(htval: u64, stval: u64) -> Option<GuestPhysAddr> {
    (htval != 0)
        .then(|| GuestPhysAddr::from_usize(((htval << 2) & !0xfff | stval & 0xfff) as usize))
}

/// Checks `TrapInfo::decode` against the cause table (table 8.7).
pub fn check_trap(scause: u64, stval: u64, htval: u64, htinst: u64, trap: &Trap) {
    let interrupt = scause >> 63 == 1;
    let code = scause & !(1 << 63);
    let gpf = |access| Trap::GuestPageFault {
        gpa: fault_gpa(htval, stval),
        access,
        gva: stval,
        htinst,
    };
    let expected = match (interrupt, code) {
        (true, code) => Trap::Interrupt { code },
        (false, 20) => gpf(AccessKind::Execute),
        (false, 21) => gpf(AccessKind::Read),
        (false, 23) => gpf(AccessKind::Write),
        (false, 22) => Trap::VirtualInstruction { insn: stval },
        (false, 10) => Trap::SbiCall,
        (false, code) => Trap::Exception { code, stval },
    };
    assert_eq!(*trap, expected, "scause {scause:#x}");
}

/// The extension ids of SBI v2.0 chapter 3 onwards, by their ASCII names.
fn eid(name: &[u8]) -> u64 {
    name.iter().fold(0, |v, b| v << 8 | u64::from(*b))
}

/// What an ECALL with a7 = `e`, a6 = `f` and a0..a5 is, by the SBI v2.0 specification:
/// Base (ch. 4), legacy (ch. 5: set_timer 0, putchar 1, getchar 2, shutdown 8; the
/// rest not served), TIME (6), sPI (7), RFNC (8: fence.i, sfence.vma, sfence.vma.asid),
/// HSM (9: start, stop, status), SRST (10: shutdown, cold and warm reboot), DBCN (12);
/// any other extension is the board's hypercall.
pub fn expected_sbi(e: u64, f: u64, a: [u64; 6]) -> vcpu_api::FirmwareCall {
    use vcpu_api::{CpuMask, FirmwareCall as C, Hypercall, RemoteFence, Service};
    let unsupported = C::Unsupported { nr: e, function: f };
    let targets = CpuMask {
        mask: a[0],
        base: a[1],
    };
    let gpa = |v: u64| GuestPhysAddr::from_usize(v as usize);
    let service = |x: u64| {
        Some(match x {
            0x10 => Service::Base,
            0 => Service::Timer,
            1 | 2 => Service::Console,
            8 => Service::SystemPower,
            3..=0xf => return None,
            x if x == eid(b"TIME") => Service::Timer,
            x if x == eid(b"DBCN") => Service::Console,
            x if x == eid(b"SRST") => Service::SystemPower,
            x if x == eid(b"sPI") => Service::Ipi,
            x if x == eid(b"RFNC") => Service::RemoteFence,
            x if x == eid(b"HSM") => Service::CpuPower,
            nr => Service::Hypercall { nr },
        })
    };
    match e {
        0x10 => match f {
            0 => C::Version,
            1 => C::ImplId,
            2 => C::ImplVersion,
            3 => C::Probe {
                service: service(a[0]),
            },
            4..=6 => C::MachineId,
            _ => unsupported,
        },
        0 => C::SetTimer { deadline: a[0] },
        1 => C::ConsoleWriteByte { byte: a[0] as u8 },
        2 => C::ConsoleReadByte,
        8 => C::SystemOff,
        3..=0xf => unsupported,
        e if e == eid(b"TIME") && f == 0 => C::SetTimer { deadline: a[0] },
        e if e == eid(b"sPI") && f == 0 => C::SendIpi { targets },
        e if e == eid(b"RFNC") && f == 0 => C::RemoteFence {
            targets,
            fence: RemoteFence::FenceI,
        },
        e if e == eid(b"RFNC") && (f == 1 || f == 2) => C::RemoteFence {
            targets,
            fence: RemoteFence::SfenceVma {
                start: a[2],
                size: a[3],
                asid: (f == 2).then_some(a[4]),
            },
        },
        e if e == eid(b"HSM") && f == 0 => C::CpuOn {
            target: a[0],
            entry: gpa(a[1]),
            arg: a[2],
        },
        e if e == eid(b"HSM") && f == 1 => C::CpuOff,
        e if e == eid(b"HSM") && f == 2 => C::CpuStatus { target: a[0] },
        e if e == eid(b"SRST") && f == 0 => match a[0] {
            0 => C::SystemOff,
            1 | 2 => C::SystemReset,
            _ => C::InvalidParameters { nr: e, function: f },
        },
        // The buffer address is a1 | a2 << 64: beyond RV64's reach when a2 != 0.
        e if e == eid(b"DBCN") && f <= 2 => {
            let at = gpa(if a[2] == 0 { a[1] } else { u64::MAX });
            match f {
                0 => C::ConsoleWrite { gpa: at, len: a[0] },
                1 => C::ConsoleRead { gpa: at, len: a[0] },
                _ => C::ConsoleWriteByte { byte: a[0] as u8 },
            }
        }
        e if [
            b"TIME".as_slice(),
            b"sPI",
            b"RFNC",
            b"HSM",
            b"SRST",
            b"DBCN",
        ]
        .iter()
        .any(|n| eid(n) == e) =>
        {
            unsupported
        }
        _ => C::Hypercall(Hypercall {
            nr: e,
            function: f,
            args: a,
        }),
    }
}

/// (a0, a1) of a reply (SBI v2.0 §3.2 error codes, §4.1 version major 30:24, minor
/// 23:0, §9.1 hart states; probe answers 1 or 0).
pub fn expected_sbi_reply(reply: vcpu_api::FirmwareReply) -> Option<(i64, u64)> {
    use vcpu_api::{CpuState, FirmwareError as E, FirmwareReply as R};
    Some(match reply {
        R::Value(v) => (0, v),
        R::Error(E::Failed) => (-1, 0),
        R::Error(E::NotSupported) => (-2, 0),
        R::Error(E::InvalidParameters) => (-3, 0),
        R::Error(E::InvalidAddress) => (-5, 0),
        R::Error(E::AlreadyOn) => (-6, 0),
        R::Offered(b) => (0, u64::from(b)),
        R::Version { major, minor } => (0, (u64::from(major) & 0x7f) << 24 | u64::from(minor)),
        R::CpuState(CpuState::On) => (0, 0),
        R::CpuState(CpuState::Off) => (0, 1),
        R::CpuState(CpuState::OnPending) => (0, 2),
        R::Cpuid(_) => return None,
    })
}
