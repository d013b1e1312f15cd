//! A model of the virtual GICv3's interrupt state as the guest's registers show it
//! (Arm IHI 0069H.b, 12.9 distributor and 12.11 redistributor SGI_base registers,
//! 4.1 the interrupt life cycle): per bank of 32 interrupts the group, enable,
//! latched-pending, line, active and trigger bits and the priorities; SGIs are
//! edge-triggered and their trigger fixed, PPI and SPI triggers writable.

use vcpu_api::AccessWidth;

/// One bank of 32 interrupts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bank {
    /// Group 1.
    pub group: u32,
    /// Enabled.
    pub enabled: u32,
    /// Latched pending (edges, ISPENDR writes, SGIs).
    pub latch: u32,
    /// Asserted input lines.
    pub line: u32,
    /// Active.
    pub active: u32,
    /// Edge-triggered.
    pub edge: u32,
    /// Triggers the guest may change.
    pub config_writable: u32,
    /// Priorities, cut to the implemented bits.
    pub prio: [u8; 32],
}

impl Bank {
    /// A bank of SPIs as after reset.
    pub fn spis() -> Self {
        Self::new(0, u32::MAX)
    }

    /// A vCPU's SGIs and PPIs as after reset.
    pub fn private() -> Self {
        Self::new(0xffff, 0xffff_0000)
    }

    fn new(edge: u32, config_writable: u32) -> Self {
        Self {
            group: 0,
            enabled: 0,
            latch: 0,
            line: 0,
            active: 0,
            edge,
            config_writable,
            prio: [0; 32],
        }
    }

    /// The pending state: latched, or a level-sensitive line asserted.
    pub fn pending(&self) -> u32 {
        self.latch | (self.line & !self.edge)
    }

    /// What goes into a list register with CTLR's group enables `grp0`, `grp1`:
    /// pending, enabled and of an enabled group, or active.
    pub fn deliverable(&self, grp0: bool, grp1: bool) -> u32 {
        let groups = if grp1 { self.group } else { 0 } | if grp0 { !self.group } else { 0 };
        (self.pending() & self.enabled & groups) | self.active
    }

    /// Applies a guest write of `value` to register family `fam` at byte `offset`
    /// inside the family (already checked for width); `prio_mask` keeps the
    /// implemented priority bits.
    pub fn write(&mut self, fam: u64, offset: u64, width: AccessWidth, value: u32, prio_mask: u8) {
        match fam {
            0x080 => self.group = value,
            0x100 => self.enabled |= value,
            0x180 => self.enabled &= !value,
            0x200 => self.latch |= value,
            0x280 => self.latch &= !value,
            0x300 => self.active |= value,
            0x380 => self.active &= !value,
            0x400 => {
                for i in 0..width.bytes() {
                    let b = (offset as usize + i) % 32;
                    self.prio[b] = (value >> (8 * i)) as u8 & prio_mask;
                }
            }
            0xc00 => {
                let half = (offset / 4 % 2) as u32;
                for i in 0..16 {
                    let bit = 1u32 << (half * 16 + i);
                    if self.config_writable & bit != 0 {
                        if value & (2 << (2 * i)) != 0 {
                            self.edge |= bit;
                        } else {
                            self.edge &= !bit;
                        }
                    }
                }
            }
            _ => unreachable!("family {fam:#x}"),
        }
    }

    /// What a guest read of family `fam` at byte `offset` returns.
    pub fn read(&self, fam: u64, offset: u64, width: AccessWidth) -> u32 {
        match fam {
            0x080 => self.group,
            0x100 | 0x180 => self.enabled,
            0x200 | 0x280 => self.pending(),
            0x300 | 0x380 => self.active,
            0x400 => (0..width.bytes())
                .map(|i| u32::from(self.prio[(offset as usize + i) % 32]) << (8 * i))
                .fold(0, |a, b| a | b),
            0xc00 => {
                let half = (offset / 4 % 2) as u32;
                (0..16)
                    .filter(|i| self.edge & (1 << (half * 16 + i)) != 0)
                    .map(|i| 2 << (2 * i))
                    .fold(0, |a, b| a | b)
            }
            _ => unreachable!("family {fam:#x}"),
        }
    }
}

/// The register families of a bank, with the size of one bank's registers in each:
/// the one-bit families (4 bytes per bank), IPRIORITYR (32), ICFGR (8).
pub const FAMILIES: [(u64, u64); 9] = [
    (0x080, 4),
    (0x100, 4),
    (0x180, 4),
    (0x200, 4),
    (0x280, 4),
    (0x300, 4),
    (0x380, 4),
    (0x400, 32),
    (0xc00, 8),
];

/// Whether a family takes an access of `width` at byte `offset` in it: IPRIORITYR
/// bytes and aligned words, the others aligned words (12.1.3).
pub fn width_ok(fam: u64, offset: u64, width: AccessWidth) -> bool {
    let word = width == AccessWidth::Dword && offset.is_multiple_of(4);
    word || (fam == 0x400 && width == AccessWidth::Byte)
}
