//! [`Bank`]: the state of 32 consecutive interrupts, and the register families the
//! distributor (for SPIs) and a redistributor's SGI_base frame (for SGIs and PPIs)
//! share: the same offsets, the same one-bit, eight-bit and two-bit fields.
//!
//! Arm IHI 0069H.b, 12.9 "The GIC Distributor register descriptions" (GICD_IGROUPR,
//! GICD_ISENABLER, GICD_ICENABLER, GICD_ISPENDR, GICD_ICPENDR, GICD_ISACTIVER,
//! GICD_ICACTIVER, GICD_IPRIORITYR, GICD_ICFGR) and 12.11 "The GIC Redistributor
//! register descriptions" (their GICR_*0 counterparts at the same offsets of
//! SGI_base); 4.1 "Interrupt lifecycle" for the pending and active states.

use vcpu_api::{AccessWidth, low_u32, usize_of};

/// One of the one-bit-per-interrupt registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BitReg {
    /// IGROUPR: 1 = Group 1.
    Group,
    /// ISENABLER: reads the enables, a 1 enables.
    SetEnable,
    /// ICENABLER: reads the enables, a 1 disables.
    ClearEnable,
    /// ISPENDR: reads the pending state, a 1 makes pending.
    SetPending,
    /// ICPENDR: reads the pending state, a 1 clears the latched pending state.
    ClearPending,
    /// ISACTIVER: reads the active state, a 1 activates.
    SetActive,
    /// ICACTIVER: reads the active state, a 1 deactivates.
    ClearActive,
}

/// Where an offset falls among the shared register families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// Register `n` of a one-bit family: INTIDs `32n..32n + 31`.
    Bits(BitReg, usize),
    /// IPRIORITYR byte `intid`.
    Priority(usize),
    /// ICFGR register `n`: INTIDs `16n..16n + 15`, two bits each.
    Config(usize),
}

impl Family {
    /// Which group of 32 interrupts the register covers (0: INTIDs 0-31, ...).
    pub(crate) const fn bank(self) -> usize {
        match self {
            Self::Bits(_, n) => n,
            Self::Priority(byte) => byte / 32,
            Self::Config(n) => n / 2,
        }
    }
}

/// Finds the family of `offset` (GICD and GICR SGI_base offsets are the same),
/// checking the width the architecture allows: 32-bit for the bit and configuration
/// registers, 8- or 32-bit for IPRIORITYR (12.1.3 "GIC memory-mapped register
/// access"). `None` for other offsets; `Err` for a width the register does not take.
pub(crate) fn family(offset: u64, width: AccessWidth) -> Option<Result<Family, ()>> {
    let word = width == AccessWidth::Dword && offset.is_multiple_of(4);
    let n = |base: u64| usize_of((offset - base) / 4);
    let fam = match offset {
        0x080..0x100 => Family::Bits(BitReg::Group, n(0x080)),
        0x100..0x180 => Family::Bits(BitReg::SetEnable, n(0x100)),
        0x180..0x200 => Family::Bits(BitReg::ClearEnable, n(0x180)),
        0x200..0x280 => Family::Bits(BitReg::SetPending, n(0x200)),
        0x280..0x300 => Family::Bits(BitReg::ClearPending, n(0x280)),
        0x300..0x380 => Family::Bits(BitReg::SetActive, n(0x300)),
        0x380..0x400 => Family::Bits(BitReg::ClearActive, n(0x380)),
        0x400..0x800 => {
            let ok = word || width == AccessWidth::Byte;
            return Some(if ok {
                Ok(Family::Priority(usize_of(offset - 0x400)))
            } else {
                Err(())
            });
        }
        0xc00..0xd00 => Family::Config(n(0xc00)),
        _ => return None,
    };
    Some(if word { Ok(fam) } else { Err(()) })
}

/// The state of 32 interrupts, one bit per interrupt in each mask (bit `i` is INTID
/// `32k + i` of bank `k`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bank {
    /// Group 1 (else Group 0).
    pub(crate) group1: u32,
    /// Enabled (forwarded to a CPU interface when pending).
    pub(crate) enabled: u32,
    /// Latched pending state: an edge, a software write, an SGI, a forwarded
    /// hardware interrupt.
    pub(crate) latch: u32,
    /// The input line of a level-sensitive interrupt is asserted.
    pub(crate) line: u32,
    /// Active (acknowledged by the guest, not yet deactivated).
    pub(crate) active: u32,
    /// Edge-triggered (ICFGR 0b10) rather than level-sensitive.
    pub(crate) edge: u32,
    /// Held in a list register of the vCPU it targets right now: its pending and
    /// active state are the list register's until that vCPU's next fold.
    pub(crate) in_lr: u32,
    /// A forwarded physical interrupt the host acknowledged and left active for the
    /// guest to deactivate through its list register.
    pub(crate) hw_active: u32,
    /// Bits whose configuration (ICFGR) the guest may change.
    pub(crate) config_writable: u32,
    /// Bits whose enable the guest may change.
    pub(crate) enable_writable: u32,
    /// Priorities (lower is more urgent), cut to the implemented bits.
    pub(crate) priority: [u8; 32],
    /// The physical INTID of a forwarded interrupt.
    pub(crate) hw: [Option<u32>; 32],
}

impl Bank {
    /// Interrupts as after reset: Group 0, disabled, inactive, priority 0, level
    /// (`edge` gives the edge-triggered ones, `config_writable` those whose trigger
    /// the guest may change).
    pub(crate) const fn new(edge: u32, config_writable: u32) -> Self {
        Self {
            group1: 0,
            enabled: 0,
            latch: 0,
            line: 0,
            active: 0,
            edge,
            in_lr: 0,
            hw_active: 0,
            config_writable,
            enable_writable: u32::MAX,
            priority: [0; 32],
            hw: [None; 32],
        }
    }

    /// The pending state: latched, or a level-sensitive line asserted.
    pub(crate) const fn pending(&self) -> u32 {
        self.latch | (self.line & !self.edge)
    }

    /// The interrupts to put in a list register of a CPU whose enabled groups are
    /// `grp0`/`grp1`: pending, enabled and of an enabled group, or active (an active
    /// interrupt must be in a list register for the guest to deactivate it), and not
    /// already in one.
    pub(crate) const fn deliverable(&self, grp0: bool, grp1: bool) -> u32 {
        let groups = (if grp1 { self.group1 } else { 0 }) | (if grp0 { !self.group1 } else { 0 });
        ((self.pending() & self.enabled & groups) | self.active) & !self.in_lr
    }

    /// Reads register `fam` (which the caller found to cover this bank).
    pub(crate) fn read(&self, fam: Family, width: AccessWidth) -> u32 {
        match fam {
            Family::Bits(reg, _) => self.read_bits(reg),
            Family::Priority(byte) => self.read_priority(byte % 32, width),
            Family::Config(n) => self.read_config(n % 2),
        }
    }

    /// Writes register `fam` (covering this bank), priorities cut to
    /// `priority_mask`. Returns the bits of the interrupts whose state changed
    /// (0 when nothing did).
    pub(crate) fn write(
        &mut self,
        fam: Family,
        width: AccessWidth,
        value: u32,
        priority_mask: u8,
    ) -> u32 {
        match fam {
            Family::Bits(reg, _) => {
                let touched = if reg == BitReg::Group {
                    u32::MAX
                } else {
                    value
                };
                if self.write_bits(reg, value, u32::MAX) {
                    touched
                } else {
                    0
                }
            }
            Family::Priority(byte) => {
                let first = byte % 32;
                let bytes = low_u32((1u64 << width.bytes()) - 1);
                if self.write_priority(first, width, value, priority_mask, u32::MAX) {
                    bytes << first
                } else {
                    0
                }
            }
            Family::Config(n) => {
                let half = 0xffffu32 << (16 * (n % 2));
                if self.write_config(n % 2, value, u32::MAX) {
                    half
                } else {
                    0
                }
            }
        }
    }

    /// Reads a one-bit register.
    pub(crate) const fn read_bits(&self, reg: BitReg) -> u32 {
        match reg {
            BitReg::Group => self.group1,
            BitReg::SetEnable | BitReg::ClearEnable => self.enabled,
            BitReg::SetPending | BitReg::ClearPending => self.pending(),
            BitReg::SetActive | BitReg::ClearActive => self.active,
        }
    }

    /// Writes a one-bit register for the interrupts in `mask` (the others are
    /// reserved or not implemented: writes ignored). Returns whether anything changed.
    pub(crate) fn write_bits(&mut self, reg: BitReg, value: u32, mask: u32) -> bool {
        let v = value & mask;
        let before = self.clone();
        match reg {
            BitReg::Group => self.group1 = (self.group1 & !mask) | v,
            BitReg::SetEnable => self.enabled |= v & self.enable_writable,
            BitReg::ClearEnable => self.enabled &= !(v & self.enable_writable),
            BitReg::SetPending => self.latch |= v,
            // A level-sensitive interrupt whose line is asserted stays pending.
            BitReg::ClearPending => self.latch &= !v,
            BitReg::SetActive => self.active |= v,
            BitReg::ClearActive => self.active &= !v,
        }
        *self != before
    }

    /// Reads `width` bytes of IPRIORITYR starting with the interrupt at bit `first`.
    pub(crate) fn read_priority(&self, first: usize, width: AccessWidth) -> u32 {
        (0..width.bytes())
            .map(|i| u32::from(self.priority[(first + i) % 32]) << (8 * i))
            .fold(0, |a, b| a | b)
    }

    /// Writes priorities (cut to `mask`, the implemented bits) for interrupts from
    /// bit `first` whose bit is in `writable`. Returns whether anything changed.
    pub(crate) fn write_priority(
        &mut self,
        first: usize,
        width: AccessWidth,
        value: u32,
        mask: u8,
        writable: u32,
    ) -> bool {
        let mut changed = false;
        for i in 0..width.bytes() {
            let bit = (first + i) % 32;
            if writable & (1 << bit) == 0 {
                continue;
            }
            let p = (value >> (8 * i)).to_le_bytes()[0] & mask;
            changed |= self.priority[bit] != p;
            self.priority[bit] = p;
        }
        changed
    }

    /// Reads the ICFGR word for the 16 interrupts from bit `half * 16`: 0b10 for
    /// edge-triggered, 0b00 for level-sensitive.
    pub(crate) fn read_config(&self, half: usize) -> u32 {
        (0..16)
            .filter(|i| self.edge & (1 << (half * 16 + i)) != 0)
            .map(|i| 2 << (2 * i))
            .fold(0, |a, b| a | b)
    }

    /// Writes an ICFGR word for the 16 interrupts from bit `half * 16` (only those
    /// in `config_writable` and `mask` change). Returns whether anything changed.
    pub(crate) fn write_config(&mut self, half: usize, value: u32, mask: u32) -> bool {
        let before = self.edge;
        for i in 0..16 {
            let bit = 1u32 << (half * 16 + i);
            if self.config_writable & mask & bit == 0 {
                continue;
            }
            if value & (2 << (2 * i)) != 0 {
                self.edge |= bit;
            } else {
                self.edge &= !bit;
            }
        }
        self.edge != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_widths() {
        let w = AccessWidth::Dword;
        assert_eq!(family(0x084, w), Some(Ok(Family::Bits(BitReg::Group, 1))));
        assert_eq!(
            family(0x100, w),
            Some(Ok(Family::Bits(BitReg::SetEnable, 0)))
        );
        assert_eq!(
            family(0x3fc, w),
            Some(Ok(Family::Bits(BitReg::ClearActive, 31)))
        );
        assert_eq!(
            family(0x41b, AccessWidth::Byte),
            Some(Ok(Family::Priority(0x1b)))
        );
        assert_eq!(family(0x41c, w), Some(Ok(Family::Priority(0x1c))));
        assert_eq!(family(0xc04, w), Some(Ok(Family::Config(1))));
        // IPRIORITYR takes bytes and words only; the others words only.
        assert_eq!(family(0x400, AccessWidth::Word), Some(Err(())));
        assert_eq!(family(0x100, AccessWidth::Byte), Some(Err(())));
        assert_eq!(family(0x102, w), Some(Err(())));
        assert_eq!(family(0x100, AccessWidth::Qword), Some(Err(())));
        assert_eq!(family(0x000, w), None);
        assert_eq!(family(0xd00, w), None);
    }

    /// GICD_ISENABLER/ICENABLER: reads return the enable bits; a 1 written sets or
    /// clears, a 0 leaves alone (12.9, `GICD_ISENABLER<n>`).
    #[test]
    fn set_and_clear_registers() {
        let mut b = Bank::new(0, u32::MAX);
        assert!(b.write_bits(BitReg::SetEnable, 0b1010, u32::MAX));
        assert!(!b.write_bits(BitReg::SetEnable, 0b0010, u32::MAX));
        assert!(b.write_bits(BitReg::ClearEnable, 0b0010, u32::MAX));
        assert_eq!(b.read_bits(BitReg::ClearEnable), 0b1000);
        // Bits outside the mask (not implemented) ignore writes.
        assert!(!b.write_bits(BitReg::SetActive, 1 << 31, 0xffff));
        assert!(b.write_bits(BitReg::Group, 0xffff_ffff, 0xffff));
        assert_eq!(b.group1, 0xffff);
    }

    /// A level-sensitive interrupt with its line asserted stays pending after a write
    /// to ICPENDR; an edge-triggered one does not (4.1.1, 12.9 `GICD_ICPENDR<n>`).
    #[test]
    fn clear_pending_keeps_an_asserted_level() {
        let mut b = Bank::new(0b01, u32::MAX);
        b.line = 0b11;
        b.latch = 0b11;
        b.write_bits(BitReg::ClearPending, 0b11, u32::MAX);
        // Bit 0 is edge (its line means nothing), bit 1 level with the line up.
        assert_eq!(b.read_bits(BitReg::SetPending), 0b10);
    }

    #[test]
    fn deliverable_needs_enable_and_group_unless_active() {
        let mut b = Bank::new(u32::MAX, 0);
        b.latch = 0b111;
        b.enabled = 0b011;
        b.group1 = 0b001;
        assert_eq!(b.deliverable(false, true), 0b001);
        assert_eq!(b.deliverable(true, true), 0b011);
        b.active = 0b1000;
        assert_eq!(b.deliverable(false, false), 0b1000);
        b.in_lr = 0b1001;
        assert_eq!(b.deliverable(true, true), 0b010);
    }

    /// IPRIORITYR holds a byte per interrupt, little-endian in a word; unimplemented
    /// low bits read as zero (12.9, `GICD_IPRIORITYR<n>`).
    #[test]
    fn priorities_bytes_and_words() {
        let mut b = Bank::new(0, 0);
        assert!(b.write_priority(4, AccessWidth::Dword, 0xa0b0_c0ff, 0xf8, u32::MAX));
        assert_eq!(b.read_priority(4, AccessWidth::Dword), 0xa0b0_c0f8);
        assert_eq!(b.read_priority(6, AccessWidth::Byte), 0xb0);
        assert!(!b.write_priority(6, AccessWidth::Byte, 0xb7, 0xf8, u32::MAX));
        // Not writable (e.g. an SPI beyond the implemented ones): ignored.
        assert!(!b.write_priority(8, AccessWidth::Byte, 0x10, 0xf8, 0));
        assert_eq!(b.priority[8], 0);
    }

    /// ICFGR: 0b10 edge, 0b00 level, two bits per interrupt; read-only bits (SGIs)
    /// keep their value.
    #[test]
    fn configuration_pairs() {
        let mut b = Bank::new(0x0000_ffff, 0xffff_0000);
        assert_eq!(b.read_config(0), 0xaaaa_aaaa);
        assert!(!b.write_config(0, 0, u32::MAX));
        assert!(b.write_config(1, 0b10 << 22, u32::MAX));
        assert_eq!(b.edge, 0x0800_ffff);
        assert_eq!(b.read_config(1), 0b10 << 22);
    }
}
