//! The layouts the virtual CPU interface shares with the hypervisor: a list register
//! (`ICH_LR<n>_EL2`) and the control bits of `ICH_HCR_EL2` the vGIC sets and reads.
//! Pure encode/decode; the HAL moves the raw values to and from the registers.
//!
//! Arm IHI 0069H.b, 12.6 "AArch64 virtualization control System registers":
//! `ICH_LR<n>_EL2` (State \[63:62\], HW \[61\], Group \[60\], Priority \[55:48\], pINTID
//! \[44:32\] with HW = 1, EOI \[41\] with HW = 0, vINTID \[31:0\]) and ICH_HCR_EL2 (En \[0\],
//! UIE \[1\], LRENPIE \[2\], NPIE \[3\], EOIcount \[31:27\]).

use vcpu_api::{low_u8, low_u32};

/// The state of the interrupt a list register holds (`ICH_LR<n>_EL2.State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LrState {
    /// 0b00: the list register is free (or the guest deactivated its interrupt).
    Invalid,
    /// 0b01: pending, not yet acknowledged by the guest.
    Pending,
    /// 0b10: acknowledged, not yet deactivated.
    Active,
    /// 0b11: active and pending again.
    PendingActive,
}

impl LrState {
    /// From the pending and active bits.
    pub const fn new(pending: bool, active: bool) -> Self {
        match (pending, active) {
            (false, false) => Self::Invalid,
            (true, false) => Self::Pending,
            (false, true) => Self::Active,
            (true, true) => Self::PendingActive,
        }
    }

    /// Whether the pending bit is set.
    pub const fn pending(self) -> bool {
        matches!(self, Self::Pending | Self::PendingActive)
    }

    /// Whether the active bit is set.
    pub const fn active(self) -> bool {
        matches!(self, Self::Active | Self::PendingActive)
    }

    const fn bits(self) -> u64 {
        match self {
            Self::Invalid => 0,
            Self::Pending => 1,
            Self::Active => 2,
            Self::PendingActive => 3,
        }
    }
}

const STATE_SHIFT: u32 = 62;
const HW: u64 = 1 << 61;
const GROUP1: u64 = 1 << 60;
const PRIORITY_SHIFT: u32 = 48;
const PINTID_SHIFT: u32 = 32;
const PINTID_MASK: u64 = 0x1fff;
const EOI: u64 = 1 << 41;

/// One decoded list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListRegister {
    /// The interrupt the guest sees (vINTID).
    pub vintid: u32,
    /// Pending / active.
    pub state: LrState,
    /// The physical interrupt the guest's deactivation also deactivates (HW = 1,
    /// pINTID), for interrupts forwarded from the hardware.
    pub hw: Option<u32>,
    /// With no `hw`: ask for a maintenance interrupt when the guest deactivates it
    /// (EOI bit), so a level-sensitive source can be sampled again.
    pub eoi_maintenance: bool,
    /// Group 1 (IRQ) rather than Group 0 (FIQ).
    pub group1: bool,
    /// Its priority (the CPU interface compares the implemented upper bits).
    pub priority: u8,
}

impl ListRegister {
    /// The free list register.
    pub const EMPTY: u64 = 0;

    /// The `ICH_LR<n>_EL2` value. A pINTID is cut to its 13 bits.
    pub const fn encode(&self) -> u64 {
        let mut v = (self.state.bits() << STATE_SHIFT)
            | ((self.priority as u64) << PRIORITY_SHIFT)
            | self.vintid as u64;
        if self.group1 {
            v |= GROUP1;
        }
        match self.hw {
            Some(p) => v |= HW | ((p as u64 & PINTID_MASK) << PINTID_SHIFT),
            None if self.eoi_maintenance => v |= EOI,
            None => {}
        }
        v
    }

    /// Decodes an `ICH_LR<n>_EL2` value.
    pub const fn decode(v: u64) -> Self {
        let hw = v & HW != 0;
        Self {
            vintid: low_u32(v),
            state: LrState::new(v & (1 << STATE_SHIFT) != 0, v & (2 << STATE_SHIFT) != 0),
            hw: if hw {
                Some(((v >> PINTID_SHIFT) & PINTID_MASK) as u32)
            } else {
                None
            },
            eoi_maintenance: !hw && v & EOI != 0,
            group1: v & GROUP1 != 0,
            priority: low_u8(v >> PRIORITY_SHIFT),
        }
    }
}

/// `ICH_HCR_EL2.En`: the virtual CPU interface is enabled.
pub const HCR_EN: u64 = 1 << 0;
/// `ICH_HCR_EL2.UIE`: maintenance interrupt while at most one list register holds
/// an interrupt (underflow): set when interrupts are waiting for a free one.
pub const HCR_UIE: u64 = 1 << 1;
/// `ICH_HCR_EL2.LRENPIE`: maintenance interrupt while EOIcount is not 0: set when an
/// active interrupt did not fit in the list registers.
pub const HCR_LRENPIE: u64 = 1 << 2;
/// `ICH_HCR_EL2.EOIcount` (bits \[31:27\]): deactivations the guest made of interrupts
/// that were in no list register.
pub const fn hcr_eoi_count(hcr: u64) -> u32 {
    ((hcr >> 27) & 0x1f) as u32
}

/// The most list registers an implementation has (`ICH_VTR_EL2.ListRegs` + 1 <= 16).
pub const MAX_LIST_REGS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked from the `ICH_LR<n>_EL2` field table: pending (0b01 << 62 =
    /// 0x4000_0000_0000_0000), group 1 (bit 60), priority 0xa0 (bits 55:48), vINTID 27.
    #[test]
    fn pending_group1_interrupt() {
        let lr = ListRegister {
            vintid: 27,
            state: LrState::Pending,
            hw: None,
            eoi_maintenance: false,
            group1: true,
            priority: 0xa0,
        };
        assert_eq!(lr.encode(), 0x50a0_0000_0000_001b);
        assert_eq!(ListRegister::decode(lr.encode()), lr);
    }

    /// HW = 1 with pINTID 27 in bits 44:32 (0x1b << 32), active (0b10 << 62).
    #[test]
    fn hardware_interrupt() {
        let lr = ListRegister {
            vintid: 27,
            state: LrState::Active,
            hw: Some(27),
            eoi_maintenance: false,
            group1: true,
            priority: 0x80,
        };
        assert_eq!(lr.encode(), 0xb080_001b_0000_001b);
        assert_eq!(ListRegister::decode(lr.encode()), lr);
    }

    /// With HW = 0, bit 41 is EOI (maintenance on deactivation); with HW = 1 it is part
    /// of the pINTID.
    #[test]
    fn eoi_bit_only_without_hw() {
        let lr = ListRegister {
            vintid: 40,
            state: LrState::PendingActive,
            hw: None,
            eoi_maintenance: true,
            group1: false,
            priority: 0,
        };
        assert_eq!(lr.encode(), 0xc000_0200_0000_0028);
        assert_eq!(ListRegister::decode(lr.encode()), lr);
        let hw = ListRegister::decode(HW | EOI | 40);
        assert_eq!(hw.hw, Some(0x200));
        assert!(!hw.eoi_maintenance);
        assert_eq!(ListRegister::decode(0).state, LrState::Invalid);
    }

    #[test]
    fn states_and_eoi_count() {
        for p in [false, true] {
            for a in [false, true] {
                let s = LrState::new(p, a);
                assert_eq!((s.pending(), s.active()), (p, a));
            }
        }
        assert_eq!(hcr_eoi_count(0b10101 << 27 | HCR_EN), 21);
    }
}
