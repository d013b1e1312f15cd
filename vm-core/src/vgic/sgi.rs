//! The guest's software-generated interrupts: the value written to `ICC_SGI1R_EL1`,
//! `ICC_ASGI1R_EL1` or `ICC_SGI0R_EL1` (a trapped system-register write) decoded into
//! an INTID and a set of target affinities.
//!
//! Arm IHI 0069H.b, 12.2 "AArch64 System register descriptions", ICC_SGI1R_EL1:
//! TargetList \[15:0\], Aff1 \[23:16\], INTID \[27:24\], Aff2 \[39:32\], IRM \[40\],
//! RS \[47:44\], Aff3 \[55:48\]; the other two registers have the same layout.

use vcpu_api::low_u16;

/// Which SGI register the guest wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SgiRegister {
    /// `ICC_SGI1R_EL1`: a Group 1 SGI.
    Sgi1r,
    /// `ICC_ASGI1R_EL1`: a Group 1 SGI for the other Security state (none exists
    /// in a VM with one Security state: nothing is delivered).
    Asgi1r,
    /// `ICC_SGI0R_EL1`: a Group 0 SGI.
    Sgi0r,
}

/// A decoded SGI register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SgiRequest {
    /// The SGI (0-15).
    pub intid: u32,
    /// IRM = 1: every PE but the sender; the affinity fields are ignored.
    pub all_but_self: bool,
    /// Aff3.Aff2.Aff1 of the targets, packed as in an MPIDR (Aff3 at 39:32).
    pub affinity: u64,
    /// Range selector: the targets' Aff0 is `16 * rs + i` for each bit `i` of the
    /// target list.
    pub rs: u8,
    /// TargetList.
    pub target_list: u16,
}

/// The affinity fields of an MPIDR: Aff3 \[39:32\], Aff2 \[23:16\], Aff1 \[15:8\], Aff0 \[7:0\].
pub const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

impl SgiRequest {
    /// Decodes a value written to one of the SGI registers (every value is valid).
    pub const fn decode(value: u64) -> Self {
        let aff1 = (value >> 16) & 0xff;
        let aff2 = (value >> 32) & 0xff;
        let aff3 = (value >> 48) & 0xff;
        Self {
            intid: ((value >> 24) & 0xf) as u32,
            all_but_self: value & (1 << 40) != 0,
            affinity: (aff3 << 32) | (aff2 << 16) | (aff1 << 8),
            rs: ((value >> 44) & 0xf) as u8,
            target_list: low_u16(value),
        }
    }

    /// Whether the PE with affinity `mpidr` receives the SGI sent by `sender`.
    pub const fn targets(&self, mpidr: u64, sender: u64) -> bool {
        let (mpidr, sender) = (mpidr & MPIDR_AFFINITY, sender & MPIDR_AFFINITY);
        if self.all_but_self {
            return mpidr != sender;
        }
        if mpidr & !0xff != self.affinity {
            return false;
        }
        let aff0 = (mpidr & 0xff) as u32;
        let first = self.rs as u32 * 16;
        aff0 >= first && aff0 < first + 16 && self.target_list & (1 << (aff0 - first)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's IPI to CPU 1 with SGI 3: TargetList = 0b10, INTID 3 in bits 27:24.
    #[test]
    fn target_list() {
        let r = SgiRequest::decode(0x0300_0002);
        assert_eq!(r.intid, 3);
        assert!(!r.all_but_self);
        assert!(r.targets(1, 0));
        assert!(!r.targets(0, 0));
        assert!(!r.targets(0x100, 0)); // Aff1 = 1: another cluster
    }

    /// Aff3 in 55:48, Aff2 in 39:32, Aff1 in 23:16, RS in 47:44: Aff0 = 16 * RS + bit.
    #[test]
    fn affinity_and_range_selector() {
        let v = (0x12u64 << 48) | (0x34 << 32) | (1 << 44) | (0x56 << 16) | (1 << 24) | 0b100;
        let r = SgiRequest::decode(v);
        assert_eq!(r.affinity, 0x12_0034_5600);
        assert_eq!(r.rs, 1);
        assert!(r.targets(0x12_0034_5612, 0));
        assert!(!r.targets(0x12_0034_5602, 0));
        assert!(!r.targets(0x13_0034_5612, 0));
        // RS = 15: Aff0 240..255, no overflow.
        let r = SgiRequest::decode((15 << 44) | 0x8000);
        assert!(r.targets(0xff, 0));
        // MPIDR bit 31 (RES1) and the MT/U bits do not matter.
        assert!(r.targets(0x8000_00ff | (1 << 30), 0));
    }

    #[test]
    fn all_but_self() {
        let r = SgiRequest::decode((1 << 40) | (5 << 24) | 0xffff);
        assert!(r.all_but_self);
        assert_eq!(r.intid, 5);
        assert!(!r.targets(2, 2));
        assert!(r.targets(0x100, 2));
    }
}
