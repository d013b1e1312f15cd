//! The physical GICv3 (Arm IHI 0069H), kept by the hypervisor: software-generated
//! interrupt 0 from one physical CPU to another for kicks, the virtual CPU
//! interface's maintenance interrupt (PPI 25) and the EL1 virtual timer (PPI 27),
//! which is forwarded to the guest. A guest runs with HCR_EL2.IMO set, so any of them
//! takes the CPU out of the guest (an IRQ exit) and the run loop acknowledges it.
//! Priority drop and deactivation are split (ICC_CTLR_EL1.EOImode = 1): a forwarded
//! interrupt stays active until the guest deactivates it through its list register.
//! QEMU virt with `gic-version=3`: distributor at 0x0800_0000, redistributors from
//! 0x080a_0000, 128 KiB (RD_base + SGI_base frames) per CPU.

use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};

const GICD_BASE: usize = 0x0800_0000;
const GICR_BASE: usize = 0x080a_0000;
const GICR_STRIDE: usize = 0x2_0000;
const SGI_BASE: usize = 0x1_0000;

/// GICD_CTLR: EnableGrp0, EnableGrp1, ARE (one security state: QEMU virt without EL3
/// has GICD_CTLR.DS = 1); RWP (bit 31) while a write takes effect.
const GICD_CTLR: usize = 0x0;
const GICD_CTLR_ENABLE: u32 = (1 << 4) | (1 << 1) | 1;
const RWP: u32 = 1 << 31;
/// The distributor's SPI registers (12.9): group, set/clear enable and active,
/// priority (byte per INTID), route (64-bit per INTID).
const GICD_IGROUPR: usize = 0x80;
const GICD_ISENABLER: usize = 0x100;
const GICD_ICENABLER: usize = 0x180;
const GICD_ICACTIVER: usize = 0x380;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_IROUTER: usize = 0x6000;
/// GICR_WAKER: ProcessorSleep (bit 1), ChildrenAsleep (bit 2).
const GICR_WAKER: usize = 0x14;
/// In the SGI_base frame: group, enable and priority of SGIs and PPIs.
const GICR_IGROUPR0: usize = 0x80;
const GICR_ISENABLER0: usize = 0x100;
const GICR_ICACTIVER0: usize = 0x380;
const GICR_IPRIORITYR: usize = 0x400;

/// The SGI used for kicks.
pub(crate) const KICK_SGI: u32 = 0;
/// The virtual CPU interface's maintenance interrupt on QEMU virt.
pub(crate) const MAINTENANCE_PPI: u32 = vm_core::vgic::MAINTENANCE_PPI;
/// The EL1 virtual timer's interrupt, forwarded to the guest.
pub(crate) const VTIMER_PPI: u32 = vm_core::vgic::VTIMER_PPI;
/// The interrupts of this CPU the hypervisor takes.
const ENABLED: [u32; 3] = [KICK_SGI, MAINTENANCE_PPI, VTIMER_PPI];
/// ICC_CTLR_EL1.EOImode: ICC_EOIR1_EL1 only drops the priority, ICC_DIR_EL1
/// deactivates.
const EOI_MODE_SPLIT: u64 = 1 << 1;

fn mmio_read(addr: usize) -> u32 {
    // SAFETY: GIC registers of QEMU virt, mapped as Device memory at EL2.
    unsafe { read_volatile(addr as *const u32) }
}

fn mmio_write(addr: usize, value: u32) {
    // SAFETY: as in `mmio_read`.
    unsafe { write_volatile(addr as *mut u32, value) }
}

/// Gives interrupt `intid` priority 0x80 in the IPRIORITYR array at `base` (byte-wide
/// fields in word-accessible registers).
fn set_priority(base: usize, intid: u32) {
    let at = base + (intid as usize & !3);
    let shift = 8 * (intid % 4);
    mmio_write(at, (mmio_read(at) & !(0xff << shift)) | (0x80 << shift));
}

/// Enables the distributor (once, on CPU 0).
pub(crate) fn init_distributor() {
    mmio_write(GICD_BASE + GICD_CTLR, GICD_CTLR_ENABLE);
    while mmio_read(GICD_BASE + GICD_CTLR) & RWP != 0 {
        core::hint::spin_loop();
    }
}

/// Wakes this CPU's redistributor, enables [`KICK_SGI`], [`MAINTENANCE_PPI`] and
/// [`VTIMER_PPI`] as group-1 interrupts and the system-register CPU interface at EL2,
/// with priority drop and deactivation split.
pub(crate) fn init_cpu(cpu: usize) {
    let rd = GICR_BASE + cpu * GICR_STRIDE;
    let waker = mmio_read(rd + GICR_WAKER);
    mmio_write(rd + GICR_WAKER, waker & !(1 << 1));
    while mmio_read(rd + GICR_WAKER) & (1 << 2) != 0 {
        core::hint::spin_loop();
    }
    let sgi = rd + SGI_BASE;
    mmio_write(sgi + GICR_IGROUPR0, u32::MAX);
    for intid in ENABLED {
        set_priority(sgi + GICR_IPRIORITYR, intid);
        mmio_write(sgi + GICR_ISENABLER0, 1 << intid);
    }
    // SAFETY: ICC_SRE_EL2.SRE | Enable: system-register access to the CPU
    // interface at EL2 (and allowed at EL1); priority mask lowest; group 1 on. No
    // interrupt is taken at EL2 (PSTATE.I stays masked there).
    unsafe {
        asm!(
            "msr icc_sre_el2, {sre}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_ctlr_el1, {ctlr}",
            "msr icc_igrpen1_el1, {on}",
            "isb",
            sre = in(reg) 0b1001u64,
            pmr = in(reg) 0xffu64,
            ctlr = in(reg) EOI_MODE_SPLIT,
            on = in(reg) 1u64,
            options(nostack),
        );
    }
}

/// Sends [`KICK_SGI`] to physical CPU `cpu` (MPIDR Aff0 = `cpu`, Aff1..3 = 0).
pub(crate) fn kick(cpu: usize) {
    if cpu >= 16 {
        return;
    }
    // ICC_SGI1R_EL1: TargetList in 15:0 (Aff0 bits), INTID in 27:24.
    let value = (1u64 << cpu) | (u64::from(KICK_SGI) << 24);
    // SAFETY: generating an SGI has no effect on memory.
    unsafe {
        asm!("msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack));
    }
}

/// Acknowledges the pending group-1 interrupt, if any, and drops the running
/// priority (it stays active until [`deactivate`]); returns its INTID.
pub(crate) fn acknowledge() -> Option<u32> {
    let iar: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges the interrupt; no memory effect.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nostack)) };
    let intid = (iar & 0xff_ffff) as u32;
    // 1020..=1023 are special INTIDs: nothing pending.
    if (1020..=1023).contains(&intid) {
        return None;
    }
    // SAFETY: drops the priority of the interrupt just acknowledged (EOImode = 1:
    // it stays active).
    unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar, options(nostack)) };
    Some(intid)
}

/// Deactivates interrupt `intid`, acknowledged on this CPU.
pub(crate) fn deactivate(intid: u32) {
    hal_aarch64::interrupt::deactivate_physical(intid);
}

/// Enables SPI `intid` as a group-1 interrupt at priority 0x80 routed to CPU `cpu`
/// (Aff0 = `cpu`): a pass-through device's interrupt, forwarded to a guest.
pub(crate) fn enable_spi(intid: u32, cpu: usize) {
    // Aff0 is 8 bits: a larger CPU index is no CPU this routing can name.
    let Ok(aff0) = u8::try_from(cpu) else {
        return;
    };
    if !(32..1020).contains(&intid) {
        return;
    }
    let (word, bit) = (4 * (intid as usize / 32), 1u32 << (intid % 32));
    mmio_write(
        GICD_BASE + GICD_IGROUPR + word,
        mmio_read(GICD_BASE + GICD_IGROUPR + word) | bit,
    );
    set_priority(GICD_BASE + GICD_IPRIORITYR, intid);
    let route = GICD_BASE + GICD_IROUTER + 8 * intid as usize;
    mmio_write(route, u32::from(aff0));
    mmio_write(route + 4, 0);
    mmio_write(GICD_BASE + GICD_ISENABLER + word, bit);
}

/// Disables SPI `intid` and makes it inactive (its VM is gone).
pub(crate) fn disable_spi(intid: u32) {
    if !(32..1020).contains(&intid) {
        return;
    }
    let (word, bit) = (4 * (intid as usize / 32), 1u32 << (intid % 32));
    mmio_write(GICD_BASE + GICD_ICENABLER + word, bit);
    mmio_write(GICD_BASE + GICD_ICACTIVER + word, bit);
}

/// Makes PPI `intid` of CPU `cpu` inactive through its redistributor (a forwarded
/// interrupt a guest left active when its VM ended).
pub(crate) fn clear_active(cpu: usize, intid: u32) {
    if intid < 32 {
        let sgi = GICR_BASE + cpu * GICR_STRIDE + SGI_BASE;
        mmio_write(sgi + GICR_ICACTIVER0, 1 << intid);
    }
}
