//! [`VgicDistributor`]: the guest's GICD, an emulated MMIO device of 64 KiB.
//!
//! Arm IHI 0069H.b, 12.8 "The GIC Distributor register map" and 12.9 "The GIC
//! Distributor register descriptions": GICD_CTLR (one Security state: EnableGrp0
//! \[0\], EnableGrp1 \[1\], ARE \[4\] RAO/WI, DS \[6\] RAO/WI, RWP \[31\] always 0 as writes
//! take effect at once), GICD_TYPER, GICD_IIDR, the SPI registers shared with the
//! redistributors (`bank.rs`), `GICD_IROUTER<n>` (64-bit, or 32-bit halves), and
//! GICD_PIDR2.ArchRev = 3. With affinity routing the registers of INTIDs 0-31 are
//! RAZ/WI here (the redistributors hold them); so are the reserved and
//! unimplemented registers (GICD_STATUSR, GICD_TYPER2, GICD_SGIR, GICD_IGRPMODR,
//! GICD_NSACR, ITARGETSR, the message-based SPI registers).

use alloc::sync::Arc;

use vcpu_api::{AccessWidth, low_u32};

use super::bank::family;
use super::{FIRST_SPI, IROUTER_AFFINITY, Kicks, State, Vgic};
use crate::device::{DeviceError, MmioDevice};

const CTLR: u64 = 0x0000;
const TYPER: u64 = 0x0004;
const IIDR: u64 = 0x0008;
const IROUTER: u64 = 0x6000;
const IROUTER_END: u64 = 0x8000;
/// Peripheral ID2 (12.1.13 "Identification registers"): ArchRev \[7:4\].
pub(super) const PIDR2: u64 = 0xffe8;
/// ArchRev = 3: GICv3.
pub(super) const PIDR2_GICV3: u64 = 0x30;
/// GICD_IIDR / GICR_IIDR: ProductID \[31:24\] 'H', no JEP106 implementer claimed.
pub(super) const IIDR_VALUE: u64 = 0x4800_0000;

const CTLR_GRP0: u32 = 1 << 0;
const CTLR_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;

/// The guest's distributor: reads and writes of its 64 KiB frame.
pub struct VgicDistributor {
    vgic: Arc<Vgic>,
}

impl VgicDistributor {
    pub(super) fn new(vgic: Arc<Vgic>) -> Self {
        Self { vgic }
    }

    /// GICD_TYPER: ITLinesNumber \[4:0\] (32 * (N + 1) INTIDs), CPUNumber \[7:5\]
    /// (meaningful without affinity routing only), IDbits \[23:19\] = 9 (10-bit
    /// INTIDs), A3V \[24\] (Aff3 routes), No1N \[25\].
    fn typer(&self) -> u64 {
        let lines = u64::from(self.vgic.spis / 32);
        let cpus = (self.vgic.vcpus.min(8) - 1) as u64;
        lines | (cpus << 5) | (9 << 19) | (1 << 24) | (1 << 25)
    }

    fn read_locked(&self, s: &State, offset: u64, width: AccessWidth) -> Option<u64> {
        if let Some(fam) = family(offset, width) {
            let fam = fam.ok()?;
            return Some(
                match fam.bank().checked_sub(1).and_then(|k| s.spis.get(k)) {
                    Some(bank) => u64::from(bank.read(fam, width)),
                    None => 0,
                },
            );
        }
        let dword = width == AccessWidth::Dword;
        Some(match offset {
            CTLR if dword => {
                let mut v = CTLR_ARE | CTLR_DS;
                if s.grp0 {
                    v |= CTLR_GRP0;
                }
                if s.grp1 {
                    v |= CTLR_GRP1;
                }
                u64::from(v)
            }
            TYPER if dword => self.typer(),
            IIDR if dword => IIDR_VALUE,
            PIDR2 if dword => PIDR2_GICV3,
            IROUTER..IROUTER_END => {
                let (spi, shift) = irouter(offset, width)?;
                let route = spi.and_then(|i| s.route.get(i)).copied().unwrap_or(0);
                if width == AccessWidth::Qword {
                    route
                } else {
                    (route >> shift) & 0xffff_ffff
                }
            }
            CTLR | TYPER | IIDR | PIDR2 => return None,
            _ => self.vgic.unknown_register(),
        })
    }

    fn write_locked(
        &self,
        s: &mut State,
        kicks: &mut Kicks,
        offset: u64,
        width: AccessWidth,
        value: u64,
    ) -> Option<()> {
        if let Some(fam) = family(offset, width) {
            let fam = fam.ok()?;
            let Some(k) = fam.bank().checked_sub(1).filter(|&k| k < s.spis.len()) else {
                return Some(());
            };
            let mask = s.priority_mask;
            let touched = s.spis[k].write(fam, width, low_u32(value), mask);
            for b in super::bits_of(touched) {
                s.notify(s.target[k * 32 + b as usize], kicks);
            }
            return Some(());
        }
        let dword = width == AccessWidth::Dword;
        match offset {
            CTLR if dword => {
                let (g0, g1) = (
                    low_u32(value) & CTLR_GRP0 != 0,
                    low_u32(value) & CTLR_GRP1 != 0,
                );
                if (g0, g1) != (s.grp0, s.grp1) {
                    (s.grp0, s.grp1) = (g0, g1);
                    s.notify_all(kicks);
                }
            }
            TYPER | IIDR | PIDR2 if dword => {}
            IROUTER..IROUTER_END => {
                let (spi, shift) = irouter(offset, width)?;
                let Some(spi) = spi.filter(|&i| i < s.route.len()) else {
                    return Some(());
                };
                let (value, keep) = if width == AccessWidth::Qword {
                    (value, 0)
                } else {
                    ((value & 0xffff_ffff) << shift, !(0xffff_ffffu64 << shift))
                };
                let route = ((s.route[spi] & keep) | value) & IROUTER_AFFINITY;
                s.route[spi] = route;
                let target = s.route_target(route);
                s.target[spi] = target;
                s.notify(target, kicks);
            }
            CTLR | TYPER | IIDR | PIDR2 => return None,
            _ => {
                self.vgic.unknown_register();
            }
        }
        Some(())
    }
}

/// The SPI index (`None` for INTIDs below 32) and the bit shift of an IROUTER
/// access: a 64-bit access at an 8-byte boundary or a 32-bit one at either half.
fn irouter(offset: u64, width: AccessWidth) -> Option<(Option<usize>, u32)> {
    let rel = offset - IROUTER;
    let shift = match width {
        AccessWidth::Qword if rel.is_multiple_of(8) => 0,
        AccessWidth::Dword if rel.is_multiple_of(4) => low_u32(rel % 8 * 8),
        _ => return None,
    };
    let intid = u32::try_from(rel / 8).ok()?;
    Some((intid.checked_sub(FIRST_SPI).map(|i| i as usize), shift))
}

impl MmioDevice for VgicDistributor {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let counter = &self.vgic.counters.distributor;
        self.vgic.access(counter, offset, width, |s, _| {
            self.read_locked(s, offset, width)
        })
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        let counter = &self.vgic.counters.distributor;
        self.vgic.access(counter, offset, width, |s, kicks| {
            self.write_locked(s, kicks, offset, width, value)
        })
    }
}
