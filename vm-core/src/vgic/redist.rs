//! [`VgicRedistributors`]: the guest's GICRs, one 128 KiB redistributor per vCPU in
//! vCPU order (RD_base, then SGI_base at +64 KiB), as one emulated MMIO device.
//!
//! Arm IHI 0069H.b, 12.10 "The GIC Redistributor register map" and 12.11 "The GIC
//! Redistributor register descriptions": GICR_CTLR (no LPIs: RAZ/WI, RWP 0),
//! GICR_IIDR, GICR_TYPER (64-bit: Affinity_Value \[63:32\], Processor_Number \[23:8\],
//! Last \[4\]), GICR_WAKER (ProcessorSleep \[1\], ChildrenAsleep \[2\] following it at
//! once), GICR_PIDR2.ArchRev = 3; in SGI_base the registers of SGIs and PPIs
//! shared with the distributor (`bank.rs`). GICR_PROPBASER, GICR_PENDBASER and the
//! LPI registers are RAZ/WI (GICD_TYPER.LPIS = 0), as are IGRPMODR0 and NSACR (one
//! Security state) and every reserved offset.

use alloc::sync::Arc;

use vcpu_api::{AccessWidth, low_u32, usize_of};

use super::bank::family;
use super::dist::{IIDR_VALUE, PIDR2, PIDR2_GICV3};
use super::{Kicks, REDISTRIBUTOR_SIZE, State, Vgic};
use crate::device::{DeviceError, MmioDevice};

const SGI_BASE: u64 = 0x1_0000;
const CTLR: u64 = 0x0000;
const IIDR: u64 = 0x0004;
const TYPER: u64 = 0x0008;
const TYPER_HIGH: u64 = 0x000c;
const WAKER: u64 = 0x0014;
const WAKER_PROCESSOR_SLEEP: u64 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u64 = 1 << 2;
const TYPER_LAST: u64 = 1 << 4;

/// The guest's redistributors: reads and writes of their frames.
pub struct VgicRedistributors {
    vgic: Arc<Vgic>,
}

impl VgicRedistributors {
    pub(super) fn new(vgic: Arc<Vgic>) -> Self {
        Self { vgic }
    }

    /// GICR_TYPER of vCPU `v`'s redistributor: its affinity as Aff3.Aff2.Aff1.Aff0
    /// in bits \[63:32\], its index, and Last on the final frame.
    fn typer(&self, s: &State, v: usize) -> u64 {
        let m = s.cpus[v].mpidr;
        let aff = ((m >> 8) & 0xff00_0000) | (m & 0xff_ffff);
        let mut t = (aff << 32) | ((v as u64 & 0xffff) << 8);
        if v + 1 == s.cpus.len() {
            t |= TYPER_LAST;
        }
        t
    }

    fn read_locked(&self, s: &State, offset: u64, width: AccessWidth) -> Option<u64> {
        let v = usize_of(offset / REDISTRIBUTOR_SIZE as u64);
        let off = offset % REDISTRIBUTOR_SIZE as u64;
        if v >= s.cpus.len() {
            return Some(0);
        }
        if off >= SGI_BASE {
            let sgi = off - SGI_BASE;
            if let Some(fam) = family(sgi, width) {
                let fam = fam.ok()?;
                return Some(if fam.bank() == 0 {
                    u64::from(s.cpus[v].private.read(fam, width))
                } else {
                    0
                });
            }
            return Some(self.vgic.unknown_register());
        }
        let dword = width == AccessWidth::Dword;
        Some(match off {
            CTLR | IIDR | WAKER | PIDR2 if !dword => return None,
            CTLR => 0,
            IIDR => IIDR_VALUE,
            PIDR2 => PIDR2_GICV3,
            WAKER => {
                if s.cpus[v].asleep {
                    WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
                } else {
                    0
                }
            }
            TYPER if width == AccessWidth::Qword => self.typer(s, v),
            TYPER if dword => self.typer(s, v) & 0xffff_ffff,
            TYPER_HIGH if dword => self.typer(s, v) >> 32,
            TYPER | TYPER_HIGH => return None,
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
        let v = usize_of(offset / REDISTRIBUTOR_SIZE as u64);
        let off = offset % REDISTRIBUTOR_SIZE as u64;
        if v >= s.cpus.len() {
            return Some(());
        }
        if off >= SGI_BASE {
            let sgi = off - SGI_BASE;
            if let Some(fam) = family(sgi, width) {
                let fam = fam.ok()?;
                if fam.bank() == 0 {
                    let mask = s.priority_mask;
                    if s.cpus[v].private.write(fam, width, low_u32(value), mask) != 0 {
                        s.notify(Some(v), kicks);
                    }
                }
                return Some(());
            }
            self.vgic.unknown_register();
            return Some(());
        }
        let dword = width == AccessWidth::Dword;
        match off {
            CTLR | IIDR | WAKER | PIDR2 | TYPER_HIGH if !dword => return None,
            TYPER if !dword && width != AccessWidth::Qword => return None,
            WAKER => s.cpus[v].asleep = value & WAKER_PROCESSOR_SLEEP != 0,
            CTLR | IIDR | PIDR2 | TYPER | TYPER_HIGH => {}
            _ => {
                self.vgic.unknown_register();
            }
        }
        Some(())
    }
}

impl MmioDevice for VgicRedistributors {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let counter = &self.vgic.counters.redistributor;
        self.vgic.access(counter, offset, width, |s, _| {
            self.read_locked(s, offset, width)
        })
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        let counter = &self.vgic.counters.redistributor;
        self.vgic.access(counter, offset, width, |s, kicks| {
            self.write_locked(s, kicks, offset, width, value)
        })
    }
}
