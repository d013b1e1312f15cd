//! The processor mode a guest instruction runs in, from the state the VMCB holds at
//! the #VMEXIT (CR0.PE, EFER.LMA, RFLAGS.VM, the code segment's L and D bits; AMD64
//! APM vol. 2, 1.2 "Modes of Operation", 4.8.1 "Code-Segment Descriptors"), and what
//! decoding and fetching need of it: the default operand and address size, and the
//! linear address of the instruction (CS base plus IP/EIP outside 64-bit mode).
//!
//! The VMCB's save area is written back at every #VMEXIT, so the mode read here is
//! the guest's at the fault: CR0 writes need no intercept for decoding to follow a
//! mode change.

use crate::regs::{CR0_PE, EFER_LMA, RFLAGS_VM};

/// VMCB segment attribute L (descriptor bit 53): 64-bit code.
const CS_L: u16 = 1 << 9;
/// VMCB segment attribute D/B (descriptor bit 54): 32-bit default size.
const CS_D: u16 = 1 << 10;

/// The default operand and address size of the code running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeSize {
    /// 16-bit operands and addresses (real mode, virtual-8086, 16-bit segments).
    Bits16,
    /// 32-bit operands and addresses.
    Bits32,
    /// 64-bit mode: 32-bit operands (REX.W for 64), 64-bit addresses.
    Bits64,
}

/// The guest's operating mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuMode {
    /// Real mode (CR0.PE = 0).
    Real,
    /// Virtual-8086 mode (RFLAGS.VM in protected mode).
    Virtual8086,
    /// Protected mode (legacy) with a 16-bit or 32-bit code segment.
    Protected(CodeSize),
    /// Compatibility mode (long mode, CS.L = 0) with a 16-bit or 32-bit code
    /// segment.
    Compatibility(CodeSize),
    /// 64-bit mode (long mode, CS.L = 1).
    Long,
}

impl CpuMode {
    /// The mode of a guest with these CR0, EFER, RFLAGS and CS attributes.
    pub const fn of(cr0: u64, efer: u64, rflags: u64, cs_attrib: u16) -> Self {
        let size = if cs_attrib & CS_D != 0 {
            CodeSize::Bits32
        } else {
            CodeSize::Bits16
        };
        if cr0 & CR0_PE == 0 {
            Self::Real
        } else if efer & EFER_LMA != 0 {
            if cs_attrib & CS_L != 0 {
                Self::Long
            } else {
                Self::Compatibility(size)
            }
        } else if rflags & RFLAGS_VM != 0 {
            Self::Virtual8086
        } else {
            Self::Protected(size)
        }
    }

    /// The default operand and address size of its code.
    pub const fn code_size(self) -> CodeSize {
        match self {
            Self::Real | Self::Virtual8086 => CodeSize::Bits16,
            Self::Protected(s) | Self::Compatibility(s) => s,
            Self::Long => CodeSize::Bits64,
        }
    }

    /// The linear address of byte `offset` of the instruction at `rip` in a code
    /// segment based at `cs_base`: RIP in 64-bit mode, otherwise CS base plus the
    /// IP (16-bit code) or EIP (32-bit code), which wrap at their width, in a 32-bit
    /// linear address space.
    pub const fn code_address(self, cs_base: u64, rip: u64, offset: u64) -> u64 {
        match self.code_size() {
            CodeSize::Bits64 => rip.wrapping_add(offset),
            CodeSize::Bits32 => {
                cs_base.wrapping_add(rip.wrapping_add(offset) & 0xffff_ffff) & 0xffff_ffff
            }
            CodeSize::Bits16 => {
                cs_base.wrapping_add(rip.wrapping_add(offset) & 0xffff) & 0xffff_ffff
            }
        }
    }

    /// How many bytes from byte `offset` of the instruction at `rip` follow each other
    /// in linear memory before the IP (16-bit code) or EIP (32-bit code) wraps.
    pub const fn bytes_before_wrap(self, rip: u64, offset: u64) -> u64 {
        let ip = rip.wrapping_add(offset);
        match self.code_size() {
            CodeSize::Bits64 => u64::MAX,
            CodeSize::Bits32 => 0x1_0000_0000 - (ip & 0xffff_ffff),
            CodeSize::Bits16 => 0x1_0000 - (ip & 0xffff),
        }
    }

    /// The mode's name, for errors.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Real => "real mode",
            Self::Virtual8086 => "virtual-8086 mode",
            Self::Protected(CodeSize::Bits16) => "16-bit protected mode",
            Self::Protected(_) => "32-bit protected mode",
            Self::Compatibility(CodeSize::Bits16) => "16-bit compatibility mode",
            Self::Compatibility(_) => "32-bit compatibility mode",
            Self::Long => "64-bit mode",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::{EFER_LME, EFER_SVME, GUEST_CR0};

    /// CS attributes: 16-bit, 32-bit (D), 64-bit (L).
    const CS16: u16 = 0x009b;
    const CS32: u16 = 0x0c9b;
    const CS64: u16 = 0x029b;

    #[test]
    fn modes_from_cr0_efer_rflags_and_cs() {
        let lma = EFER_SVME | EFER_LME | EFER_LMA;
        assert_eq!(CpuMode::of(0, 0, 0, CS32), CpuMode::Real);
        assert_eq!(
            CpuMode::of(CR0_PE, 0, RFLAGS_VM, CS32),
            CpuMode::Virtual8086
        );
        assert_eq!(
            CpuMode::of(CR0_PE, 0, 0, CS16),
            CpuMode::Protected(CodeSize::Bits16)
        );
        assert_eq!(
            CpuMode::of(GUEST_CR0, lma, 0, CS32),
            CpuMode::Compatibility(CodeSize::Bits32)
        );
        assert_eq!(CpuMode::of(GUEST_CR0, lma, 0, CS64), CpuMode::Long);
        assert_eq!(CpuMode::Real.code_size(), CodeSize::Bits16);
        assert_eq!(CpuMode::Long.name(), "64-bit mode");
    }

    #[test]
    fn code_addresses() {
        // 64-bit mode: RIP; CS base ignored.
        assert_eq!(
            CpuMode::Long.code_address(0x1000, 0xffff_8000_0000_0000, 2),
            0xffff_8000_0000_0002
        );
        // Real mode: the IP wraps at 16 bits inside the segment.
        assert_eq!(CpuMode::Real.code_address(0xf_0000, 0xffff, 1), 0xf_0000);
        // 32-bit code: EIP wraps, and so does the linear address.
        let p32 = CpuMode::Protected(CodeSize::Bits32);
        assert_eq!(p32.code_address(0x1000, 0xffff_ffff, 1), 0x1000);
        assert_eq!(p32.code_address(0xffff_f000, 0x2000, 0), 0x1000);
        assert_eq!(CpuMode::Real.bytes_before_wrap(0xfffe, 1), 1);
        assert_eq!(p32.bytes_before_wrap(0, 0), 0x1_0000_0000);
    }
}
