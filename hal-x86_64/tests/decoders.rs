//! Property tests of the guest-controlled decoders (the project's fuzz targets run
//! as tests): the MMIO instruction decoder, #VMEXIT decoding, the multiboot memory
//! map and the guest page walk never panic on any input, and the instruction
//! decoder agrees with an independent encoder of the `mov` forms.

use addrspace::GuestPhysAddr;
use hal_x86_64::exit::SvmExit;
use hal_x86_64::guest_paging::GuestPaging;
use hal_x86_64::mmio as insn;
use hal_x86_64::mode::CodeSize;
use hal_x86_64::multiboot::memory_map;
use hal_x86_64::regs::{CR0_PG, CR4_PAE, EFER_LMA};
use proptest::prelude::*;
use vcpu_api::{AccessWidth, GuestMemory, MmioOp};

/// Encodes `mov reg, [base + disp]` (load) or `mov [base + disp], reg` (store) of
/// `width` in 64-bit mode, the way an assembler does (Intel SDM vol. 2, 2.1-2.2).
fn encode_mov(load: bool, width: AccessWidth, reg: u8, base: u8, disp: i32) -> Vec<u8> {
    let mut out = Vec::new();
    if width == AccessWidth::Word {
        out.push(0x66);
    }
    let rex = 0x40 | (u8::from(width == AccessWidth::Qword) << 3) | ((reg >> 3) << 2) | (base >> 3);
    // A byte access to SPL..DIL (4..7) needs a REX prefix even without other bits.
    if rex != 0x40 || (width == AccessWidth::Byte && (4..8).contains(&reg)) {
        out.push(rex);
    }
    out.push(match (load, width) {
        (false, AccessWidth::Byte) => 0x88,
        (false, _) => 0x89,
        (true, AccessWidth::Byte) => 0x8a,
        (true, _) => 0x8b,
    });
    let (md, disp_bytes): (u8, Vec<u8>) = if disp == 0 && base & 7 != 5 {
        (0, vec![])
    } else if let Ok(d) = i8::try_from(disp) {
        (1, vec![d as u8])
    } else {
        (2, disp.to_le_bytes().to_vec())
    };
    out.push((md << 6) | ((reg & 7) << 3) | (base & 7));
    if base & 7 == 4 {
        out.push(0x24); // SIB: no index, base = RSP/R12
    }
    out.extend(disp_bytes);
    out
}

fn width_strategy() -> impl Strategy<Value = AccessWidth> {
    prop_oneof![
        Just(AccessWidth::Byte),
        Just(AccessWidth::Word),
        Just(AccessWidth::Dword),
        Just(AccessWidth::Qword),
    ]
}

struct Words(Vec<u64>);

impl GuestMemory for Words {
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), addrspace::Error> {
        let i = gpa.as_usize() / 8;
        match self.0.get(i) {
            Some(w) if buf.len() == 8 && gpa.as_usize().is_multiple_of(8) => {
                buf.copy_from_slice(&w.to_le_bytes());
                Ok(())
            }
            _ => Err(addrspace::Error::NotMapped { gpa }),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn insn_decoder_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..20),
        size in prop_oneof![Just(CodeSize::Bits16), Just(CodeSize::Bits32), Just(CodeSize::Bits64)],
    ) {
        if let Ok(d) = insn::decode(&bytes, size, |i| i as u64) {
            prop_assert!(d.len as usize <= bytes.len().min(insn::MAX_INSN_LEN));
            prop_assert!(d.len >= 2);
            if let MmioOp::Read { reg, .. } = d.op {
                prop_assert!(reg < 16);
            }
        }
    }

    #[test]
    fn insn_decoder_agrees_with_the_encoder(
        load in any::<bool>(),
        width in width_strategy(),
        reg in 0u8..16,
        base in 0u8..16,
        disp in prop_oneof![Just(0i32), any::<i8>().prop_map(i32::from), any::<i32>()],
    ) {
        // AH..BH need no REX and cannot be a load destination: encode only the
        // REX forms for byte registers 4..7 (the encoder adds the REX).
        let bytes = encode_mov(load, width, reg, base, disp);
        let regs = |i: usize| 0x0101_0101_0101_0101u64.wrapping_mul(i as u64 + 1);
        let d = insn::decode(&bytes, CodeSize::Bits64, regs).expect("a mov the decoder must know");
        prop_assert_eq!(d.len as usize, bytes.len());
        prop_assert_eq!(d.width, width);
        if load {
            prop_assert_eq!(
                d.op,
                MmioOp::Read { reg: reg as usize, sign_extend: false, reg_width: width }
            );
        } else {
            prop_assert_eq!(d.op, MmioOp::Write { value: width.truncate(regs(reg as usize)) });
        }
    }

    #[test]
    fn exit_decoder_never_panics(code in prop_oneof![0u64..0x500, any::<u64>()], i1 in any::<u64>(), i2 in any::<u64>()) {
        if let Ok(SvmExit::Io { info, next_rip }) = SvmExit::decode(code, i1, i2) {
            prop_assert_eq!(next_rip, i2);
            prop_assert_eq!(u64::from(info.port), (i1 >> 16) & 0xffff);
        }
    }

    #[test]
    fn memory_map_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        // Every entry takes at least 24 bytes, so the map ends.
        prop_assert!(memory_map(&bytes).count() <= bytes.len() / 24 + 1);
    }

    #[test]
    fn guest_walk_never_panics(words in proptest::collection::vec(any::<u64>(), 0..1024), va in any::<u64>(), cr3 in 0u64..0x2000) {
        let paging = GuestPaging { cr0: CR0_PG | 1, cr3, cr4: CR4_PAE, efer: EFER_LMA };
        let _ = paging.translate(va, &Words(words));
    }
}
