//! The MMIO access of a trapped guest instruction: what the exit knows about the
//! instruction ([`FaultInsn`]), the decoded access the VM layer emulates
//! ([`MmioAccess`]), and why decoding can fail ([`MmioDecodeError`]).

use core::fmt;

use addrspace::GuestPhysAddr;

use crate::AccessWidth;

/// What a decoded MMIO instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOp {
    /// A load into general register `reg`.
    Read {
        /// Destination register index (the architecture's numbering).
        reg: usize,
        /// Sign-extend the loaded value to the register width.
        sign_extend: bool,
        /// Width of the destination register (4 bytes for an Arm `Wn` or an x86
        /// 32-bit destination, whose upper half the hardware clears; 8 otherwise).
        reg_width: AccessWidth,
    },
    /// A store of `value` (already cut to the access width).
    Write {
        /// The value stored.
        value: u64,
    },
}

/// A decoded MMIO access of a trapped guest instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioAccess {
    /// The guest-physical address accessed.
    pub gpa: GuestPhysAddr,
    /// The access width.
    pub width: AccessWidth,
    /// Load or store.
    pub op: MmioOp,
    /// Bytes to advance the guest PC by once the access is emulated.
    pub insn_len: u8,
}

impl MmioAccess {
    /// What the destination register of this load holds once it returned `loaded`,
    /// given the register's value `old` before: the value cut to the access width,
    /// sign-extended if the instruction says so, then written at the register's width.
    /// A 32-bit destination clears the upper half (Arm `Wt`, x86 32-bit operands); an
    /// 8- or 16-bit one (x86 `AL`, `AX`) keeps the register's other bits, so `old`
    /// only matters there. For a store it returns `old`.
    pub const fn load_result(&self, old: u64, loaded: u64) -> u64 {
        let MmioOp::Read {
            sign_extend,
            reg_width,
            ..
        } = self.op
        else {
            return old;
        };
        let value = self.width.truncate(loaded);
        let value = if sign_extend {
            self.width.sign_extend(value)
        } else {
            value
        };
        reg_width.write_register(old, value)
    }
}

/// A load or store as the hardware described it, without its address: what the
/// syndrome (Arm ISV = 1) or a transformed instruction (RISC-V `htinst`) says. A
/// store's value was read from its register at the exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInsn {
    /// The access width.
    pub width: AccessWidth,
    /// Load or store.
    pub op: MmioOp,
    /// Bytes to advance the guest PC by once the access is emulated.
    pub len: u8,
}

impl MmioInsn {
    /// This access at `gpa`.
    pub const fn at(self, gpa: GuestPhysAddr) -> MmioAccess {
        MmioAccess {
            gpa,
            width: self.width,
            op: self.op,
            insn_len: self.len,
        }
    }
}

/// The longest instruction an exit carries (x86: 15 bytes).
pub const MAX_INSN_BYTES: usize = 15;

/// The bytes of the instruction at the guest PC, as the hardware gave them (x86
/// decode assists) or as the arch layer fetched them at the exit (RISC-V HLVX).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InsnBytes {
    bytes: [u8; MAX_INSN_BYTES],
    len: u8,
}

impl InsnBytes {
    /// The first `MAX_INSN_BYTES` bytes of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        let n = bytes.len().min(MAX_INSN_BYTES);
        let mut b = [0u8; MAX_INSN_BYTES];
        b[..n].copy_from_slice(&bytes[..n]);
        Self {
            bytes: b,
            // `n` is at most 15.
            len: u8::try_from(n).unwrap_or(u8::MAX),
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The first eight bytes, little-endian, zero-padded (for error messages).
    pub fn first8(&self) -> u64 {
        let mut b = [0u8; 8];
        let n = usize::from(self.len).min(8);
        b[..n].copy_from_slice(&self.bytes[..n]);
        u64::from_le_bytes(b)
    }
}

impl fmt::Debug for InsnBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InsnBytes({:02x?})", self.as_slice())
    }
}

/// What the exit of a nested page fault says about the instruction that faulted:
/// everything [`crate::ArchVCpu::decode_mmio`] needs besides guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultInsn {
    /// The hardware described the access (Arm ISV = 1, a RISC-V transformed
    /// load/store in `htinst`): ready to emulate.
    Decoded(MmioInsn),
    /// The instruction's bytes.
    Bytes(InsnBytes),
    /// Nothing yet: the decoder fetches the instruction at the guest PC through
    /// guest memory, in the guest's current mode.
    Fetch,
    /// The access cannot be emulated (an instruction fetch, a fault of the guest's
    /// own page-table walk, an Arm access without syndrome), and why.
    Refused(MmioDecodeError),
}

/// Why an instruction could not be fetched from guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// Guest memory refused the read at `gpa` (not RAM, a hole, a device), with the
    /// address space's reason.
    Memory {
        /// Where the read was.
        gpa: GuestPhysAddr,
        /// What the address space said.
        error: addrspace::Error,
    },
    /// The guest's own page tables do not map the instruction's address.
    GuestUnmapped {
        /// The guest-virtual address.
        va: u64,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { gpa, error } => write!(f, "guest memory at {gpa:#x}: {error}"),
            Self::GuestUnmapped { va } => {
                write!(f, "the guest's page tables do not map {va:#x}")
            }
        }
    }
}

/// Why an MMIO access could not be decoded. The guest is not resumed; the VM layer
/// reports this (with the PC) instead of retrying forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioDecodeError {
    /// The instruction at `pc` is not a load/store the decoder knows, or not the
    /// access the fault reported (a load for a write fault, an atomic) (raw bytes,
    /// the first 8 little-endian).
    Unsupported {
        /// Guest PC (virtual) of the instruction.
        pc: u64,
        /// Its first bytes.
        insn: u64,
        /// Why the decoder refused it.
        why: &'static str,
    },
    /// The instruction could not be fetched.
    Fetch {
        /// Guest PC (virtual).
        pc: u64,
        /// Why.
        error: FetchError,
    },
    /// The hardware reported no valid syndrome and decoding the instruction is not
    /// implemented for this exception (Arm load/store pair, with ISV = 0).
    NoSyndrome {
        /// Guest PC (virtual).
        pc: u64,
    },
    /// An instruction fetch from an emulated device: nothing to emulate.
    Execute {
        /// Guest PC (virtual).
        pc: u64,
    },
    /// The fault came from the guest's own page-table walk (its tables point at a
    /// device), not from an instruction's data access.
    TableWalk {
        /// Guest PC (virtual).
        pc: u64,
    },
    /// The guest runs in a mode whose instructions the decoder does not decode.
    Mode {
        /// Guest PC (virtual).
        pc: u64,
        /// The mode (`"16-bit real mode"`, `"32-bit protected mode with paging"`, ...).
        mode: &'static str,
    },
}

impl fmt::Display for MmioDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported { pc, insn, why } => write!(
                f,
                "cannot emulate MMIO instruction {insn:#x} at pc {pc:#x}: {why}"
            ),
            Self::Fetch { pc, error } => {
                write!(f, "cannot fetch the instruction at pc {pc:#x}: {error}")
            }
            Self::NoSyndrome { pc } => {
                write!(f, "MMIO access without a valid syndrome at pc {pc:#x}")
            }
            Self::Execute { pc } => {
                write!(f, "instruction fetch from an emulated device at pc {pc:#x}")
            }
            Self::TableWalk { pc } => write!(
                f,
                "the guest's page-table walk for the instruction at pc {pc:#x} touched an emulated device"
            ),
            Self::Mode { pc, mode } => {
                write!(f, "cannot decode MMIO instructions in {mode} (pc {pc:#x})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::*;

    fn load(width: AccessWidth, sign_extend: bool, reg_width: AccessWidth) -> MmioAccess {
        MmioAccess {
            gpa: GuestPhysAddr::from_usize(0x1000),
            width,
            op: MmioOp::Read {
                reg: 0,
                sign_extend,
                reg_width,
            },
            insn_len: 4,
        }
    }

    /// x86 destinations: 8/16-bit merge, 32-bit zero-extends, 64-bit replaces.
    #[test]
    fn load_results_x86() {
        let old = 0xaaaa_aaaa_aaaa_aaaa;
        let r = |w, s, rw, v| load(w, s, rw).load_result(old, v);
        assert_eq!(r(Byte, false, Byte, 0x1ff), 0xaaaa_aaaa_aaaa_aaff);
        assert_eq!(r(Word, false, Word, 0xfffe), 0xaaaa_aaaa_aaaa_fffe);
        assert_eq!(r(Word, false, Dword, 0xfffe), 0xfffe);
        assert_eq!(r(Word, true, Qword, 0xfffe), 0xffff_ffff_ffff_fffe);
        assert_eq!(r(Byte, true, Dword, 0xfe), 0xffff_fffe);
        assert_eq!(r(Dword, true, Qword, 0xffff_fffe), 0xffff_ffff_ffff_fffe);
        assert_eq!(r(Dword, false, Dword, u64::MAX), 0xffff_ffff);
        assert_eq!(r(Qword, false, Qword, 7), 7);
    }

    /// Arm destinations: `Xt` takes the (sign-extended) value, `Wt` its low half.
    #[test]
    fn load_results_arm() {
        let r = |w, s, rw, v| load(w, s, rw).load_result(0, v);
        assert_eq!(r(Byte, true, Qword, 0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(r(Byte, true, Dword, 0x80), 0xffff_ff80);
        assert_eq!(r(Word, false, Qword, 0x1_8000), 0x8000);
        assert_eq!(r(Dword, true, Qword, 0x8000_0000), 0xffff_ffff_8000_0000);
        assert_eq!(r(Qword, false, Qword, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_store_leaves_the_register() {
        let store = MmioAccess {
            op: MmioOp::Write { value: 1 },
            ..load(Qword, false, Qword)
        };
        assert_eq!(store.load_result(5, 9), 5);
    }
}
