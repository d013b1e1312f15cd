//! Tests of the vGIC against the GICv3 architecture specification (Arm IHI 0069H.b)
//! and a model-based test of list-register delivery.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;
use spin::Mutex;
use vcpu_api::AccessWidth::{self, Byte, Dword, Qword, Word};

use super::*;
use crate::device::{DeviceError, MmioDevice};

/// A vGIC with `vcpus` vCPUs (affinity = index) and 64 SPIs, and the kicks it sent.
fn vgic(vcpus: usize) -> (Arc<Vgic>, Arc<Mutex<Vec<usize>>>) {
    let kicks = Arc::new(Mutex::new(Vec::new()));
    let k = kicks.clone();
    let v = Vgic::new(VgicConfig::new(vcpus, 64), move |p| k.lock().push(p)).unwrap();
    (v, kicks)
}

const GICD_CTLR: u64 = 0x0;
const ISENABLER: u64 = 0x100;
const ICENABLER: u64 = 0x180;
const ISPENDR: u64 = 0x200;
const ICPENDR: u64 = 0x280;
const ISACTIVER: u64 = 0x300;
const IPRIORITYR: u64 = 0x400;
const ICFGR: u64 = 0xc00;
const IGROUPR: u64 = 0x080;
const SGI: u64 = 0x1_0000;

/// Linux's distributor set-up, in short: all SPIs Group 1, priority 0xa0, then
/// GICD_CTLR = ARE | EnableGrp1 | EnableGrp0 (`GICD_CTLR_ARE_NS | G1A | G1`).
fn linux_dist_init(d: &VgicDistributor) {
    d.write(GICD_CTLR, Dword, 0).unwrap();
    for n in 1..3 {
        d.write(IGROUPR + 4 * n, Dword, 0xffff_ffff).unwrap();
    }
    for i in (32..96).step_by(4) {
        d.write(IPRIORITYR + i, Dword, 0xa0a0_a0a0).unwrap();
    }
    d.write(GICD_CTLR, Dword, 0x13).unwrap();
}

/// A redistributor's set-up by Linux: woken, SGIs and PPIs Group 1 at 0xa0, SGIs
/// enabled.
fn linux_redist_init(r: &VgicRedistributors, vcpu: u64) {
    let rd = vcpu * REDISTRIBUTOR_SIZE as u64;
    r.write(rd + 0x14, Dword, 0).unwrap();
    r.write(rd + SGI + IGROUPR, Dword, 0xffff_ffff).unwrap();
    for i in (0..32).step_by(4) {
        r.write(rd + SGI + IPRIORITYR + i, Dword, 0xa0a0_a0a0)
            .unwrap();
    }
    r.write(rd + SGI + ISENABLER, Dword, 0xffff).unwrap();
}

fn lr(v: u64) -> ListRegister {
    ListRegister::decode(v)
}

#[test]
fn configuration_is_checked() {
    let new = |c: VgicConfig| Vgic::new(c, |_| {}).map(|_| ());
    assert_eq!(
        new(VgicConfig::new(0, 32)),
        Err(VgicError::VCpuCount { count: 0 })
    );
    assert_eq!(
        new(VgicConfig::new(MAX_VCPUS + 1, 32)),
        Err(VgicError::VCpuCount { count: 257 })
    );
    assert_eq!(
        new(VgicConfig::new(1, 33)),
        Err(VgicError::SpiCount { spis: 33 })
    );
    assert_eq!(
        new(VgicConfig::new(1, 992)),
        Err(VgicError::SpiCount { spis: 992 })
    );
    let mut c = VgicConfig::new(3, 0);
    c.mpidrs[2] = 0x8000_0001; // bit 31 is RES1 in an MPIDR, not affinity
    assert_eq!(
        new(c),
        Err(VgicError::DuplicateAffinity {
            first: 1,
            second: 2,
            mpidr: 1
        })
    );
    let mut c = VgicConfig::new(1, 0);
    c.priority_bits = 3;
    assert_eq!(new(c), Err(VgicError::PriorityBits { bits: 3 }));
    assert!(new(VgicConfig::new(4, MAX_SPIS)).is_ok());
}

/// GICD_TYPER (12.9): ITLinesNumber 2 (96 INTIDs), CPUNumber 1, IDbits 9, A3V, No1N
/// = 0x0348_0022; GICD_PIDR2.ArchRev = 3; GICD_CTLR with DS = 1 reads ARE \[4\] and
/// DS \[6\] as one and keeps the two group enables.
#[test]
fn distributor_identification_and_control() {
    let (v, _) = vgic(2);
    let d = v.distributor();
    assert_eq!(d.read(0x4, Dword), Ok(0x0348_0022));
    assert_eq!(d.read(0xffe8, Dword), Ok(0x30));
    assert_eq!(d.read(GICD_CTLR, Dword), Ok(0x50));
    d.write(GICD_CTLR, Dword, 0x13).unwrap();
    assert_eq!(d.read(GICD_CTLR, Dword), Ok(0x53));
    d.write(GICD_CTLR, Dword, 0).unwrap();
    assert_eq!(d.read(GICD_CTLR, Dword), Ok(0x50));
    // Wrong widths of 32-bit registers are refused, with the offset.
    assert_eq!(
        d.read(GICD_CTLR, Qword),
        Err(DeviceError::NoRegister {
            offset: 0,
            width: Qword
        })
    );
    assert!(d.write(ISENABLER + 4, Byte, 1).is_err());
    assert!(d.read(IPRIORITYR + 33, Word).is_err());
}

/// With affinity routing the distributor's registers of INTIDs 0-31 are RAZ/WI
/// (12.9, e.g. `GICD_ISENABLER<n>`: "when ARE is 1, GICD_ISENABLER0 is RAZ/WI");
/// reserved and unimplemented registers read as zero and are counted.
#[test]
fn distributor_raz_wi() {
    let (v, _) = vgic(1);
    let d = v.distributor();
    d.write(ISENABLER, Dword, 0xffff_ffff).unwrap();
    assert_eq!(d.read(ISENABLER, Dword), Ok(0));
    d.write(IPRIORITYR, Dword, 0xffff_ffff).unwrap();
    assert_eq!(d.read(IPRIORITYR, Dword), Ok(0));
    // SPIs beyond the 64 implemented ones.
    d.write(ISENABLER + 4 * 3, Dword, 0xffff_ffff).unwrap();
    assert_eq!(d.read(ISENABLER + 4 * 3, Dword), Ok(0));
    let before = v.stats().unknown_register_accesses;
    assert_eq!(d.read(0xc, Dword), Ok(0)); // GICD_TYPER2
    d.write(0xf00, Dword, 0x0200_0001).unwrap(); // GICD_SGIR
    assert_eq!(v.stats().unknown_register_accesses, before + 2);
    assert_eq!(v.stats().distributor_accesses, 8);
}

/// The redistributor walk Linux does (gic_iterate_rdists): PIDR2.ArchRev = 3 in
/// every frame, GICR_TYPER (64-bit) with the affinity in \[63:32\], the processor
/// number in \[23:8\], Last \[4\] only on the final frame; 32-bit halves give the same.
#[test]
fn redistributor_walk() {
    let mut c = VgicConfig::new(3, 32);
    c.mpidrs = vec![0x0, 0x1_0203_0405 & MPIDR_AFFINITY, 0x8000_0100];
    let v = Vgic::new(c, |_| {}).unwrap();
    let r = v.redistributors();
    assert_eq!(v.redistributors_size(), 3 * 0x2_0000);
    let typer = |i: u64| r.read(i * 0x2_0000 + 8, Qword).unwrap();
    assert_eq!(typer(0), 0);
    assert_eq!(typer(1), (0x0103_0405 << 32) | (1 << 8));
    assert_eq!(typer(2), (0x0000_0100 << 32) | (2 << 8) | (1 << 4));
    for i in 0..3 {
        assert_eq!(r.read(i * 0x2_0000 + 0xffe8, Dword), Ok(0x30));
        let lo = r.read(i * 0x2_0000 + 8, Dword).unwrap();
        let hi = r.read(i * 0x2_0000 + 0xc, Dword).unwrap();
        assert_eq!(lo | (hi << 32), typer(i));
    }
    assert!(r.read(8, Word).is_err());
}

/// GICR_WAKER (12.11): ProcessorSleep \[1\] resets to 1; ChildrenAsleep \[2\] follows
/// it (this model is never busy). GICR_CTLR.RWP reads 0.
#[test]
fn waker_and_rwp() {
    let (v, _) = vgic(2);
    let r = v.redistributors();
    let waker = 0x2_0000 + 0x14;
    assert_eq!(r.read(waker, Dword), Ok(0b110));
    r.write(waker, Dword, 0).unwrap();
    assert_eq!(r.read(waker, Dword), Ok(0));
    assert_eq!(r.read(0x14, Dword), Ok(0b110)); // vCPU 0's is still asleep
    assert_eq!(r.read(0x2_0000, Dword), Ok(0));
}

/// GICR_ICFGR0: SGIs are edge-triggered, read-only (0xaaaa_aaaa); GICR_ICFGR1 (the
/// PPIs) is programmable here.
#[test]
fn sgi_and_ppi_configuration() {
    let (v, _) = vgic(1);
    let r = v.redistributors();
    assert_eq!(r.read(SGI + ICFGR, Dword), Ok(0xaaaa_aaaa));
    r.write(SGI + ICFGR, Dword, 0).unwrap();
    assert_eq!(r.read(SGI + ICFGR, Dword), Ok(0xaaaa_aaaa));
    assert_eq!(r.read(SGI + ICFGR + 4, Dword), Ok(0));
    r.write(SGI + ICFGR + 4, Dword, 0b10 << 22).unwrap();
    assert_eq!(r.read(SGI + ICFGR + 4, Dword), Ok(0b10 << 22));
    // Priorities are byte-accessible and keep the 5 implemented bits.
    r.write(SGI + IPRIORITYR + 27, Byte, 0xa7).unwrap();
    assert_eq!(r.read(SGI + IPRIORITYR + 24, Dword), Ok(0xa000_0000));
}

/// An enabled, pending Group 1 SPI goes into a list register of the vCPU its route
/// names, with its priority (chapter 6); not when disabled, not when Group 1 is
/// disabled at the distributor.
#[test]
fn spi_delivery_follows_enable_group_and_route() {
    let (v, _) = vgic(2);
    let d = v.distributor();
    linux_dist_init(&d);
    let mut lrs = [0u64; 4];
    d.write(ISPENDR + 4, Dword, 1 << 1).unwrap(); // INTID 33
    assert_eq!(v.flush(0, 0, &mut lrs).unwrap().used, 0); // disabled
    d.write(ISENABLER + 4, Dword, 1 << 1).unwrap();
    d.write(GICD_CTLR, Dword, 0x11).unwrap(); // Group 1 off
    assert_eq!(v.flush(0, 0, &mut lrs).unwrap().used, 0);
    d.write(GICD_CTLR, Dword, 0x13).unwrap();
    // Routed to vCPU 1 (affinity 1): not vCPU 0's.
    d.write(0x6000 + 8 * 33, Qword, 1).unwrap();
    assert_eq!(d.read(0x6000 + 8 * 33, Qword), Ok(1));
    assert_eq!(v.flush(0, 0, &mut lrs).unwrap().used, 0);
    v.fold(0, &lrs, 0).unwrap();
    let f = v.flush(1, 1, &mut lrs).unwrap();
    assert_eq!(f.used, 1);
    assert_eq!(f.hcr, HCR_EN);
    assert_eq!(
        lr(lrs[0]),
        ListRegister {
            vintid: 33,
            state: LrState::Pending,
            hw: None,
            eoi_maintenance: true, // level-sensitive: sampled again after the EOI
            group1: true,
            priority: 0xa0,
        }
    );
    assert_eq!(lrs[1..], [0, 0, 0]);
}

/// A route naming no vCPU delivers nowhere; IRM (bit 31) is RAZ/WI (No1N = 1); the
/// halves of IROUTER write separately.
#[test]
fn irouter_halves_and_unknown_affinity() {
    let (v, _) = vgic(2);
    let d = v.distributor();
    let at = 0x6000 + 8 * 40;
    d.write(at, Qword, 0x1_8000_0001).unwrap();
    assert_eq!(d.read(at, Qword), Ok(0x1_0000_0001));
    d.write(at + 4, Dword, 0).unwrap();
    assert_eq!(d.read(at, Qword), Ok(1));
    assert_eq!(d.read(at, Dword), Ok(1));
    d.write(at, Dword, 0x7).unwrap();
    linux_dist_init(&d);
    d.write(ISENABLER + 4, Dword, 1 << 8).unwrap();
    d.write(ISPENDR + 4, Dword, 1 << 8).unwrap();
    let mut lrs = [0u64; 4];
    for cpu in 0..2 {
        assert_eq!(v.flush(cpu, cpu, &mut lrs).unwrap().used, 0);
        v.fold(cpu, &lrs, 0).unwrap();
    }
    // INTIDs below 32 have no IROUTER: RAZ/WI.
    d.write(0x6000 + 8 * 5, Qword, 1).unwrap();
    assert_eq!(d.read(0x6000 + 8 * 5, Qword), Ok(0));
    assert!(d.read(at + 2, Dword).is_err());
}

/// The guest acknowledges (pending -> active) and deactivates (active -> invalid)
/// through the virtual CPU interface; fold takes each state back (6.x, ICH_LR.State).
#[test]
fn ack_and_deactivate_through_the_list_register() {
    let (v, _) = vgic(1);
    let (d, r) = (v.distributor(), v.redistributors());
    linux_dist_init(&d);
    linux_redist_init(&r, 0);
    v.set_pending(0, 3).unwrap();
    let mut lrs = [0u64; 4];
    v.flush(0, 0, &mut lrs).unwrap();
    assert_eq!(lr(lrs[0]).state, LrState::Pending);
    // Acknowledged: active, no longer pending.
    lrs[0] = ListRegister {
        state: LrState::Active,
        ..lr(lrs[0])
    }
    .encode();
    v.fold(0, &lrs, 0).unwrap();
    assert_eq!(r.read(SGI + ISACTIVER, Dword), Ok(1 << 3));
    assert_eq!(r.read(SGI + ISPENDR, Dword), Ok(0));
    // Still active: it goes back into a list register so the guest can deactivate.
    v.flush(0, 0, &mut lrs).unwrap();
    assert_eq!(lr(lrs[0]).state, LrState::Active);
    lrs[0] = 0; // deactivated
    v.fold(0, &lrs, 0).unwrap();
    assert_eq!(r.read(SGI + ISACTIVER, Dword), Ok(0));
    assert_eq!(v.flush(0, 0, &mut lrs).unwrap().used, 0);
}

/// An edge arriving while the vCPU runs with that interrupt active in a list
/// register kicks the vCPU's physical CPU; after the fold it is active and pending.
#[test]
fn edge_while_in_the_list_register_kicks_and_becomes_pending_active() {
    let (v, kicks) = vgic(2);
    let (d, r) = (v.distributor(), v.redistributors());
    linux_dist_init(&d);
    linux_redist_init(&r, 1);
    v.set_pending(1, 5).unwrap();
    let mut lrs = [0u64; 4];
    v.flush(1, 7, &mut lrs).unwrap();
    assert!(kicks.lock().is_empty());
    v.set_pending(1, 5).unwrap();
    assert_eq!(*kicks.lock(), [7]);
    lrs[0] = ListRegister {
        state: LrState::Active,
        ..lr(lrs[0])
    }
    .encode();
    v.fold(1, &lrs, 0).unwrap();
    v.flush(1, 7, &mut lrs).unwrap();
    assert_eq!(lr(lrs[0]).state, LrState::PendingActive);
    // Out of the guest (folded): no kick.
    v.fold(1, &lrs, 0).unwrap();
    v.set_pending(1, 6).unwrap();
    assert_eq!(*kicks.lock(), [7]);
    assert_eq!(v.stats().kicks, 1);
}

/// More deliverable interrupts than list registers: the most urgent go in (lowest
/// priority value, active before pending at equal priority) and UIE asks for the
/// underflow maintenance interrupt (ICH_HCR_EL2.UIE); once the guest consumed them
/// the rest follow.
#[test]
fn overflow_takes_the_most_urgent_and_asks_for_underflow() {
    let (v, _) = vgic(1);
    let (d, r) = (v.distributor(), v.redistributors());
    linux_dist_init(&d);
    linux_redist_init(&r, 0);
    // SGI n at priority 0x80 - 8n for n in 0..6 (SGI 5 most urgent), SGI 6 active.
    for n in 0..7u64 {
        r.write(SGI + IPRIORITYR + n, Byte, 0x80 - 8 * n.min(5))
            .unwrap();
        v.set_pending(0, vcpu_api::low_u32(n)).unwrap();
    }
    r.write(SGI + ICPENDR, Dword, 1 << 6).unwrap();
    r.write(SGI + ISACTIVER, Dword, 1 << 6).unwrap();
    let mut lrs = [0u64; 4];
    let f = v.flush(0, 0, &mut lrs).unwrap();
    assert_eq!(f.hcr, HCR_EN | HCR_UIE);
    let got: Vec<(u32, LrState)> = lrs.iter().map(|&x| (lr(x).vintid, lr(x).state)).collect();
    assert_eq!(
        got,
        [
            (6, LrState::Active),
            (5, LrState::Pending),
            (4, LrState::Pending),
            (3, LrState::Pending)
        ]
    );
    assert_eq!(v.stats().list_register_overflows, 1);
    // The guest handled all four.
    v.fold(0, &[0; 4], 0).unwrap();
    let f = v.flush(0, 0, &mut lrs).unwrap();
    assert_eq!(f.hcr, HCR_EN);
    assert_eq!(lr(lrs[0]).vintid, 2);
    assert_eq!(lr(lrs[2]).vintid, 0);
    assert_eq!(lrs[3], 0);
}

/// An active interrupt that does not fit asks for LRENPIE; a deactivation the guest
/// made without a list register (EOIcount) deactivates the most urgent active
/// interrupt outside the list registers.
#[test]
fn eoi_count_deactivates_outside_the_list_registers() {
    let (v, _) = vgic(1);
    let (d, r) = (v.distributor(), v.redistributors());
    linux_dist_init(&d);
    linux_redist_init(&r, 0);
    r.write(SGI + IPRIORITYR, Dword, 0x1018_2028).unwrap(); // SGIs 0..3
    r.write(SGI + IPRIORITYR + 4, Byte, 0x08).unwrap(); // SGI 4 most urgent
    r.write(SGI + ISACTIVER, Dword, 0b1_1111).unwrap();
    let mut lrs = [0u64; 2];
    let f = v.flush(0, 0, &mut lrs).unwrap();
    assert_eq!(f.hcr, HCR_EN | HCR_UIE | HCR_LRENPIE);
    assert_eq!((lr(lrs[0]).vintid, lr(lrs[1]).vintid), (4, 3));
    // The guest deactivated one interrupt outside the list registers.
    v.fold(0, &lrs, HCR_EN | (1 << 27)).unwrap();
    // SGI 2 (priority 0x18) was the most urgent left out.
    assert_eq!(r.read(SGI + ISACTIVER, Dword), Ok(0b1_1011));
}

/// ICC_SGI1R_EL1 from vCPU 0 to vCPU 1 (TargetList bit 1): pending there, and a
/// kick when vCPU 1 is in the guest; IRM reaches all but the sender; a Group 0 SGI
/// is not raised by SGI1R, nor anything by ASGI1R with one Security state.
#[test]
fn sgis_between_vcpus() {
    let (v, kicks) = vgic(3);
    let (d, r) = (v.distributor(), v.redistributors());
    linux_dist_init(&d);
    for c in 0..3 {
        linux_redist_init(&r, c);
    }
    let mut lrs = [0u64; 4];
    v.flush(1, 1, &mut lrs).unwrap();
    assert_eq!(v.send_sgi(0, SgiRegister::Sgi1r, (2 << 24) | 0b10), Ok(1));
    assert_eq!(*kicks.lock(), [1]);
    v.fold(1, &lrs, 0).unwrap();
    v.flush(1, 1, &mut lrs).unwrap();
    assert_eq!(lr(lrs[0]).vintid, 2);
    v.fold(1, &lrs, 0).unwrap();
    // IRM = 1: vCPUs 1 and 2.
    assert_eq!(
        v.send_sgi(0, SgiRegister::Sgi1r, (1 << 40) | (7 << 24)),
        Ok(2)
    );
    assert_eq!(r.read(2 * 0x2_0000 + SGI + ISPENDR, Dword), Ok(1 << 7));
    assert_eq!(r.read(SGI + ISPENDR, Dword), Ok(0));
    // SGI 9 made Group 0 on vCPU 2: SGI1R does not raise it, SGI0R does.
    r.write(2 * 0x2_0000 + SGI + IGROUPR, Dword, !(1 << 9))
        .unwrap();
    assert_eq!(v.send_sgi(0, SgiRegister::Sgi1r, (9 << 24) | 0b100), Ok(0));
    assert_eq!(v.send_sgi(0, SgiRegister::Sgi0r, (9 << 24) | 0b100), Ok(1));
    assert_eq!(
        v.send_sgi(0, SgiRegister::Asgi1r, (1 << 40) | (3 << 24)),
        Ok(0)
    );
    assert_eq!(v.stats().sgi_writes, 5);
    assert_eq!(
        v.send_sgi(3, SgiRegister::Sgi1r, 0),
        Err(VgicError::NoSuchVCpu { vcpu: 3, count: 3 })
    );
}

/// A forwarded interrupt (the virtual timer): the host acknowledged physical PPI 27
/// and left it active; the list register carries HW = 1 with pINTID 27, so the
/// guest's deactivation ends the physical one too; an interrupt not forwarded is
/// the host's.
#[test]
fn hardware_forwarded_timer() {
    let (v, _) = vgic(2);
    let (d, r) = (v.distributor(), v.redistributors());
    linux_dist_init(&d);
    linux_redist_init(&r, 1);
    r.write(0x2_0000 + SGI + ISENABLER, Dword, 1 << 27).unwrap();
    v.map_hw(1, VTIMER_PPI, 27).unwrap();
    assert_eq!(
        v.map_hw(1, VTIMER_PPI, 26),
        Err(VgicError::AlreadyMapped {
            intid: 27,
            pintid: 26
        })
    );
    assert_eq!(
        v.map_hw(0, 3, 27),
        Err(VgicError::WrongKind {
            intid: 3,
            op: "forward a hardware interrupt to"
        })
    );
    assert_eq!(v.hw_interrupt(1, 30), Ok(false));
    assert_eq!(v.hw_interrupt(0, 27), Ok(false)); // mapped for vCPU 1 only
    assert_eq!(v.hw_interrupt(1, 27), Ok(true));
    let mut lrs = [0u64; 4];
    v.flush(1, 1, &mut lrs).unwrap();
    assert_eq!(
        lr(lrs[0]),
        ListRegister {
            vintid: 27,
            state: LrState::Pending,
            hw: Some(27),
            eoi_maintenance: false,
            group1: true,
            priority: 0xa0
        }
    );
    // Acknowledged and deactivated by the guest: nothing left to do.
    v.fold(1, &[0; 4], 0).unwrap();
    let f = v.flush(1, 1, &mut lrs).unwrap();
    assert_eq!((f.used, f.deactivate.len()), (0, 0));
    v.fold(1, &lrs, 0).unwrap();
    assert_eq!(v.stats().hw_interrupts, 1);
}

/// The guest clears a forwarded interrupt's pending state before taking it
/// (GICR_ICPENDR0): the physical one, still active, is handed back for
/// deactivation at the next flush, once.
#[test]
fn cleared_forwarded_interrupt_is_deactivated_by_the_host() {
    let (v, _) = vgic(1);
    let r = v.redistributors();
    v.map_hw(0, VTIMER_PPI, 27).unwrap();
    v.hw_interrupt(0, 27).unwrap();
    // Disabled: it stays pending, the physical one active.
    let mut lrs = [0u64; 4];
    assert_eq!(
        v.flush(0, 0, &mut lrs).unwrap(),
        Flush {
            hcr: HCR_EN,
            used: 0,
            deactivate: vec![]
        }
    );
    v.fold(0, &lrs, 0).unwrap();
    r.write(SGI + ICPENDR, Dword, 1 << 27).unwrap();
    assert_eq!(v.flush(0, 0, &mut lrs).unwrap().deactivate, [27]);
    v.fold(0, &lrs, 0).unwrap();
    assert!(v.flush(0, 0, &mut lrs).unwrap().deactivate.is_empty());
}

/// A level-sensitive SPI follows its line: pending while asserted, with the EOI
/// maintenance bit so its deactivation is seen; pending again after the EOI if the
/// line is still up; not pending once it dropped.
#[test]
fn level_sensitive_line() {
    let (v, _) = vgic(1);
    let d = v.distributor();
    linux_dist_init(&d);
    d.write(ISENABLER + 4, Dword, 1 << 2).unwrap(); // INTID 34
    assert!(v.set_line(0, 3, true).is_err());
    v.set_line(0, 34, true).unwrap();
    assert_eq!(d.read(ISPENDR + 4, Dword), Ok(1 << 2));
    let mut lrs = [0u64; 4];
    v.flush(0, 0, &mut lrs).unwrap();
    assert!(lr(lrs[0]).eoi_maintenance);
    v.fold(0, &[0; 4], 0).unwrap(); // handled, line still up
    v.flush(0, 0, &mut lrs).unwrap();
    assert_eq!(
        (lr(lrs[0]).vintid, lr(lrs[0]).state),
        (34, LrState::Pending)
    );
    v.fold(0, &lrs, 0).unwrap();
    v.set_line(0, 34, false).unwrap();
    assert_eq!(d.read(ISPENDR + 4, Dword), Ok(0));
    assert_eq!(v.flush(0, 0, &mut lrs).unwrap().used, 0);
    // A software-pended level interrupt is pending until acknowledged.
    d.write(ISPENDR + 4, Dword, 1 << 2).unwrap();
    v.fold(0, &lrs, 0).unwrap();
    v.flush(0, 0, &mut lrs).unwrap();
    lrs[0] = ListRegister {
        state: LrState::Active,
        ..lr(lrs[0])
    }
    .encode();
    v.fold(0, &lrs, 0).unwrap();
    assert_eq!(d.read(ISPENDR + 4, Dword), Ok(0));
}

/// Re-routing an SPI that sits in vCPU 0's list register: at vCPU 0's fold its new
/// target, in the guest, is kicked to take it.
#[test]
fn rerouted_spi_moves_at_the_fold() {
    let (v, kicks) = vgic(2);
    let d = v.distributor();
    linux_dist_init(&d);
    d.write(ISENABLER + 4, Dword, 1).unwrap();
    d.write(ISPENDR + 4, Dword, 1).unwrap();
    let (mut l0, mut l1) = ([0u64; 4], [0u64; 4]);
    v.flush(0, 0, &mut l0).unwrap();
    v.flush(1, 1, &mut l1).unwrap();
    d.write(0x6000 + 8 * 32, Qword, 1).unwrap();
    assert_eq!(*kicks.lock(), [1]);
    v.fold(1, &l1, 0).unwrap();
    v.flush(1, 1, &mut l1).unwrap();
    assert_eq!(l1[0], 0); // still in vCPU 0's register
    v.fold(0, &l0, 0).unwrap();
    assert_eq!(*kicks.lock(), [1, 1]);
    v.fold(1, &l1, 0).unwrap();
    v.flush(1, 1, &mut l1).unwrap();
    assert_eq!(lr(l1[0]).vintid, 32);
}

#[test]
fn bad_arguments_are_refused() {
    let (v, _) = vgic(2);
    assert_eq!(
        v.set_pending(2, 3),
        Err(VgicError::NoSuchVCpu { vcpu: 2, count: 2 })
    );
    assert_eq!(
        v.set_pending(0, 96),
        Err(VgicError::NoSuchInterrupt { intid: 96 })
    );
    assert_eq!(v.set_pending(5, 40), Ok(())); // an SPI: the vCPU is not used
    assert_eq!(
        v.flush(0, 0, &mut []),
        Err(VgicError::ListRegisterCount { count: 0 })
    );
    assert_eq!(
        v.flush(0, 0, &mut [0; 17]),
        Err(VgicError::ListRegisterCount { count: 17 })
    );
    assert_eq!(
        v.fold(2, &[], 0),
        Err(VgicError::NoSuchVCpu { vcpu: 2, count: 2 })
    );
    assert_eq!(
        v.hw_interrupt(9, 27),
        Err(VgicError::NoSuchVCpu { vcpu: 9, count: 2 })
    );
    assert!(v.map_hw(0, 40, 1020).is_err());
    assert!(v.map_hw(0, 100, 40).is_err());
}

// ---------------------------------------------------------------- model-based

/// One step of the model-based test.
#[derive(Clone, Debug)]
enum Op {
    /// An edge (or SGI) on an interrupt of a vCPU.
    Raise(usize, u32),
    /// The guest on a vCPU runs: flush, it acknowledges `acks` interrupts and
    /// deactivates `eois` of the active ones, fold.
    Run {
        vcpu: usize,
        acks: usize,
        eois: usize,
    },
    /// The guest enables or disables an interrupt.
    Enable(usize, u32, bool),
    /// The guest changes a priority.
    Priority(usize, u32, u8),
}

const INTIDS: [u32; 8] = [1, 2, 3, 20, 27, 32, 33, 40];

fn op() -> impl Strategy<Value = Op> {
    let intid = proptest::sample::select(&INTIDS[..]);
    prop_oneof![
        (0..2usize, intid.clone()).prop_map(|(v, i)| Op::Raise(v, i)),
        (0..2usize, 0..4usize, 0..4usize).prop_map(|(vcpu, acks, eois)| Op::Run {
            vcpu,
            acks,
            eois
        }),
        (0..2usize, intid.clone(), any::<bool>()).prop_map(|(v, i, e)| Op::Enable(v, i, e)),
        (0..2usize, intid, 0..8u8).prop_map(|(v, i, p)| Op::Priority(v, i, p * 0x20)),
    ]
}

/// The reference: per (vCPU, INTID) of edge interrupts (SPIs all on vCPU 0).
#[derive(Clone, Copy, Default, Debug)]
struct Ref {
    pending: bool,
    active: bool,
    enabled: bool,
    priority: u8,
}

/// The guest's virtual CPU interface: acknowledges the most urgent pending list
/// register (it becomes active) or deactivates the most urgent active one.
fn guest_ack(lrs: &mut [u64]) -> Option<u32> {
    let k = (0..lrs.len())
        .filter(|&k| lr(lrs[k]).state == LrState::Pending)
        .min_by_key(|&k| lr(lrs[k]).priority)?;
    let l = lr(lrs[k]);
    lrs[k] = ListRegister {
        state: LrState::Active,
        ..l
    }
    .encode();
    Some(l.vintid)
}

fn guest_eoi(lrs: &mut [u64]) -> Option<u32> {
    let k = (0..lrs.len())
        .filter(|&k| lr(lrs[k]).state.active())
        .min_by_key(|&k| lr(lrs[k]).priority)?;
    let l = lr(lrs[k]);
    lrs[k] = ListRegister {
        state: LrState::new(l.state.pending(), false),
        ..l
    }
    .encode();
    Some(l.vintid)
}

proptest! {
    /// Random raises, enables, priority changes and guest runs against a reference
    /// of each interrupt's pending/active state: every flush puts exactly the most
    /// urgent deliverable interrupts in the list registers (no duplicates, sorted,
    /// UIE when some wait), the guest only ever acknowledges what is pending and
    /// enabled in the reference, and no raised edge is lost or duplicated.
    #[test]
    fn delivery_matches_the_reference(
        nlr in 1..5usize,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let (v, _) = vgic(2);
        let (d, r) = (v.distributor(), v.redistributors());
        linux_dist_init(&d);
        // Every SPI edge-triggered, routed to vCPU 0.
        d.write(ICFGR + 8, Dword, 0xaaaa_aaaa).unwrap();
        d.write(ICFGR + 12, Dword, 0xaaaa_aaaa).unwrap();
        for c in 0..2u64 {
            linux_redist_init(&r, c);
            r.write(c * 0x2_0000 + SGI + ICFGR + 4, Dword, 0xaaaa_aaaa).unwrap();
            r.write(c * 0x2_0000 + SGI + ICENABLER, Dword, u32::MAX as u64).unwrap();
        }
        let key = |vcpu: usize, intid: u32| (if intid >= 32 { 0 } else { vcpu }, intid);
        let mut reference = alloc::collections::BTreeMap::new();
        for c in 0..2 {
            for i in INTIDS {
                reference.insert(key(c, i), Ref { priority: 0xa0, ..Ref::default() });
            }
        }
        let reg = |vcpu: usize, intid: u32, base: u64| -> (Arc<dyn MmioDevice>, u64) {
            if intid >= 32 {
                (d.clone() as Arc<dyn MmioDevice>, base + u64::from(intid / 32) * 4)
            } else {
                (r.clone() as Arc<dyn MmioDevice>, vcpu as u64 * 0x2_0000 + SGI + base)
            }
        };
        for op in ops {
            match op {
                Op::Raise(c, i) => {
                    v.set_pending(c, i).unwrap();
                    reference.get_mut(&key(c, i)).unwrap().pending = true;
                }
                Op::Enable(c, i, on) => {
                    let (dev, off) = reg(c, i, if on { ISENABLER } else { ICENABLER });
                    dev.write(off, Dword, 1 << (i % 32)).unwrap();
                    reference.get_mut(&key(c, i)).unwrap().enabled = on;
                }
                Op::Priority(c, i, p) => {
                    let (dev, _) = reg(c, i, 0);
                    let off = if i >= 32 { IPRIORITYR + u64::from(i) } else {
                        c as u64 * 0x2_0000 + SGI + IPRIORITYR + u64::from(i)
                    };
                    dev.write(off, Byte, u64::from(p)).unwrap();
                    reference.get_mut(&key(c, i)).unwrap().priority = p;
                }
                Op::Run { vcpu, acks, eois } => {
                    let mut lrs = [0u64; 4];
                    let lrs = &mut lrs[..nlr];
                    let f = v.flush(vcpu, vcpu, lrs).unwrap();
                    // What the reference says must be in the registers.
                    let mut want: Vec<(u8, bool, u32)> = INTIDS
                        .iter()
                        .filter(|&&i| i < 32 || vcpu == 0)
                        .map(|&i| (i, reference[&key(vcpu, i)]))
                        .filter(|(_, s)| (s.pending && s.enabled) || s.active)
                        .map(|(i, s)| (s.priority, !s.active, i))
                        .collect();
                    want.sort();
                    let have: Vec<(u8, bool, u32)> = lrs[..f.used]
                        .iter()
                        .map(|&x| { let l = lr(x); (l.priority, !l.state.active(), l.vintid) })
                        .collect();
                    let n = want.len().min(nlr);
                    prop_assert_eq!(&have[..], &want[..n]);
                    prop_assert_eq!(f.hcr & HCR_UIE != 0, want.len() > nlr);
                    prop_assert!(lrs[f.used..].iter().all(|&x| x == 0));
                    for _ in 0..acks {
                        let Some(i) = guest_ack(lrs) else { break };
                        let s = reference.get_mut(&key(vcpu, i)).unwrap();
                        prop_assert!(s.pending && s.enabled, "acked {} not pending+enabled", i);
                        s.pending = false;
                        s.active = true;
                    }
                    for _ in 0..eois {
                        let Some(i) = guest_eoi(lrs) else { break };
                        reference.get_mut(&key(vcpu, i)).unwrap().active = false;
                    }
                    v.fold(vcpu, lrs, 0).unwrap();
                }
            }
        }
        // The model's registers agree with the reference at the end.
        for c in 0..2usize {
            for i in INTIDS {
                let s = reference[&key(c, i)];
                let (dev, off) = reg(c, i, ISPENDR);
                let pending = dev.read(off, Dword).unwrap() & (1 << (i % 32)) != 0;
                let (dev, off) = reg(c, i, ISACTIVER);
                let active = dev.read(off, Dword).unwrap() & (1 << (i % 32)) != 0;
                prop_assert_eq!((pending, active), (s.pending, s.active), "INTID {} vCPU {}", i, c);
            }
        }
    }

    /// Guest-controlled MMIO of any offset, width and value never panics, and a
    /// refused access names its offset and width.
    #[test]
    fn any_register_access_is_answered(
        accesses in proptest::collection::vec(
            (0..0x5_0000u64, 0..4usize, any::<u64>(), any::<bool>()), 1..200)
    ) {
        let (v, _) = vgic(2);
        let (d, r) = (v.distributor(), v.redistributors());
        for (offset, w, value, write) in accesses {
            let width: AccessWidth = [Byte, Word, Dword, Qword][w];
            let value = width.truncate(value);
            let (dev, offset): (&dyn MmioDevice, u64) = if offset < 0x1_0000 {
                (&*d, offset)
            } else {
                (&*r, offset - 0x1_0000)
            };
            let result = if write {
                dev.write(offset, width, value).map(|()| 0)
            } else {
                dev.read(offset, width)
            };
            if let Err(e) = result {
                prop_assert_eq!(e, DeviceError::NoRegister { offset, width });
            }
        }
        let mut lrs = [0u64; 4];
        for c in 0..2 {
            v.flush(c, c, &mut lrs).unwrap();
            v.fold(c, &lrs, u64::MAX).unwrap();
        }
    }
}
