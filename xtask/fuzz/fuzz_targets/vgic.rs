//! The virtual GICv3 (`vm_core::vgic`): guest reads and writes of the distributor and
//! redistributor register banks (any width, any byte), interrupts made pending and
//! lines driven by the host, CTLR's group enables, and list-register flushes with the
//! guest acknowledging and deactivating before the fold; checked after every step
//! against `hvcore_fuzz::gic` (every register the guest can read, what each list
//! register holds, that nothing deliverable is left out while registers are free).

#![no_main]

use arbitrary::Arbitrary;
use hvcore_fuzz::gic::{Bank, FAMILIES, width_ok};
use libfuzzer_sys::fuzz_target;
use vcpu_api::AccessWidth;
use vm_core::vgic::{
    HCR_UIE, ListRegister, LrState, Vgic, VgicConfig, VgicDistributor, VgicError,
    VgicRedistributors,
};
use vm_core::{DeviceError, MmioDevice};

#[derive(Arbitrary, Debug)]
struct Input {
    vcpus: u8,
    spi_banks: u8,
    priority_bits: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Where {
    /// The distributor's bank `k` (0 is RAZ/WI there: the redistributors hold it).
    Dist(u8),
    /// vCPU `c`'s SGI_base frame.
    Redist(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        at: Where,
        fam: u8,
        byte: u8,
        width: u8,
        value: u32,
    },
    Read {
        at: Where,
        fam: u8,
        byte: u8,
        width: u8,
    },
    Raw {
        redist: bool,
        offset: u32,
        width: u8,
        value: Option<u32>,
    },
    Ctlr(u8),
    SetPending {
        vcpu: u8,
        intid: u16,
    },
    SetLine {
        vcpu: u8,
        intid: u16,
        level: bool,
    },
    /// Flush into `lrs` list registers; the guest acts on each (0 nothing, 1
    /// acknowledge, 2 deactivate, 3 both); fold.
    Run {
        vcpu: u8,
        lrs: u8,
        guest: Vec<u8>,
    },
}

const WIDTHS: [AccessWidth; 4] = [
    AccessWidth::Byte,
    AccessWidth::Word,
    AccessWidth::Dword,
    AccessWidth::Qword,
];

struct Model {
    private: Vec<Bank>,
    spis: Vec<Bank>,
    grp0: bool,
    grp1: bool,
    mask: u8,
}

impl Model {
    /// The bank at `at`, `None` for RAZ/WI.
    fn bank(&mut self, at: Where) -> Option<&mut Bank> {
        match at {
            Where::Dist(0) => None,
            Where::Dist(k) => self.spis.get_mut(usize::from(k) - 1),
            Where::Redist(c) => self.private.get_mut(usize::from(c)),
        }
    }

    /// The bank and bit of INTID `intid` as seen from `vcpu`.
    fn loc(&mut self, vcpu: usize, intid: u32) -> Result<(&mut Bank, u32), VgicError> {
        let count = self.private.len();
        if intid < 32 {
            return self
                .private
                .get_mut(vcpu)
                .map(|b| (b, 1 << intid))
                .ok_or(VgicError::NoSuchVCpu { vcpu, count });
        }
        let spi = (intid - 32) as usize;
        self.spis
            .get_mut(spi / 32)
            .map(|b| (b, 1 << (spi % 32)))
            .ok_or(VgicError::NoSuchInterrupt { intid })
    }

    /// The INTIDs deliverable to `vcpu` (its SGIs and PPIs, and the SPIs: all routed
    /// to vCPU 0 after reset), with their bank and bit.
    fn deliverable(&self, vcpu: usize) -> Vec<u32> {
        let mut v: Vec<u32> = bits(self.private[vcpu].deliverable(self.grp0, self.grp1)).collect();
        if vcpu == 0 {
            for (k, b) in self.spis.iter().enumerate() {
                v.extend(bits(b.deliverable(self.grp0, self.grp1)).map(|i| 32 + 32 * k as u32 + i));
            }
        }
        v
    }
}

fn bits(v: u32) -> impl Iterator<Item = u32> {
    (0..32).filter(move |i| v & (1 << i) != 0)
}

/// The device and absolute offset of byte `byte` of family `fam` of bank `at`.
fn place(at: Where, fam: u64, size: u64, byte: u8) -> (bool, u64) {
    let inside = u64::from(byte) % size;
    match at {
        Where::Dist(k) => (false, fam + u64::from(k) * size + inside),
        Where::Redist(c) => (true, u64::from(c) * 0x2_0000 + 0x1_0000 + fam + inside),
    }
}

fn access(
    d: &VgicDistributor,
    r: &VgicRedistributors,
    redist: bool,
    offset: u64,
    width: AccessWidth,
    value: Option<u32>,
) -> Result<u64, DeviceError> {
    let dev: &dyn MmioDevice = if redist { r } else { d };
    match value {
        Some(v) => dev
            .write(offset, width, width.truncate(u64::from(v)))
            .map(|()| 0),
        None => dev.read(offset, width),
    }
}

/// Every register of the model's banks reads as the model says.
fn check_view(m: &mut Model, d: &VgicDistributor, r: &VgicRedistributors) {
    let n = m.private.len() as u8;
    let banks = m.spis.len() as u8;
    let places = (0..n)
        .map(Where::Redist)
        .chain((1..=banks).map(Where::Dist));
    for at in places.collect::<Vec<_>>() {
        let bank = m.bank(at).expect("a modelled bank").clone();
        for (fam, size) in FAMILIES {
            for byte in (0..size).step_by(4) {
                let (redist, offset) = place(at, fam, size, byte as u8);
                let got = access(d, r, redist, offset, AccessWidth::Dword, None);
                let want = bank.read(fam, byte, AccessWidth::Dword);
                assert_eq!(
                    got,
                    Ok(u64::from(want)),
                    "{at:?} family {fam:#x} byte {byte}"
                );
            }
        }
    }
}

/// A guest access of byte `byte` of register family `fam` of bank `at` (a write
/// when `value` is given), checked against and applied to the model.
#[allow(clippy::too_many_arguments)]
fn register(
    m: &mut Model,
    d: &VgicDistributor,
    r: &VgicRedistributors,
    at: Where,
    fam: u8,
    byte: u8,
    width: u8,
    value: Option<u32>,
) {
    let at = match at {
        Where::Dist(k) => Where::Dist(k % 32),
        // Inside the redistributors' range (the bus never passes more).
        Where::Redist(c) => Where::Redist(c % m.private.len() as u8),
    };
    let (fam, size) = FAMILIES[usize::from(fam) % FAMILIES.len()];
    let width = WIDTHS[usize::from(width) % 4];
    let (redist, offset) = place(at, fam, size, byte);
    let inside = u64::from(byte) % size;
    let got = access(d, r, redist, offset, width, value);
    let what = format!("{at:?} family {fam:#x} byte {inside} {width:?} {value:?}");
    if !width_ok(fam, inside, width) {
        assert_eq!(
            got,
            Err(DeviceError::NoRegister { offset, width }),
            "{what}"
        );
        return;
    }
    let mask = m.mask;
    match (m.bank(at), value) {
        (Some(b), Some(v)) => {
            assert_eq!(got, Ok(0), "{what}");
            b.write(
                fam,
                inside,
                width,
                width.truncate(u64::from(v)) as u32,
                mask,
            );
        }
        (Some(b), None) => assert_eq!(got, Ok(u64::from(b.read(fam, inside, width))), "{what}"),
        (None, _) => assert_eq!(got, Ok(0), "{what}: RAZ/WI"),
    }
}

fuzz_target!(|input: Input| {
    let vcpus = usize::from(input.vcpus % 4) + 1;
    let banks = u32::from(input.spi_banks % 3);
    let bits_ = 4 + input.priority_bits % 5;
    let config = VgicConfig {
        priority_bits: bits_,
        ..VgicConfig::new(vcpus, banks * 32)
    };
    let vgic = Vgic::new(config, |_| {}).expect("a valid vGIC config");
    let (d, r) = (vgic.distributor(), vgic.redistributors());
    let mut m = Model {
        private: vec![Bank::private(); vcpus],
        spis: vec![Bank::spis(); banks as usize],
        grp0: false,
        grp1: false,
        mask: 0xffu8 << (8 - bits_),
    };
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Write {
                at,
                fam,
                byte,
                width,
                value,
            } => {
                register(&mut m, &d, &r, at, fam, byte, width, Some(value));
            }
            Op::Read {
                at,
                fam,
                byte,
                width,
            } => register(&mut m, &d, &r, at, fam, byte, width, None),
            Op::Raw {
                redist,
                offset,
                width,
                value,
            } => {
                // Anything at all: a value or a refusal, never a panic. Writes may land
                // in modelled registers: only reads here.
                let _ = value;
                let limit = if redist {
                    vcpus as u64 * 0x2_0000
                } else {
                    0x1_0000
                };
                let offset = u64::from(offset) % limit;
                let _ = access(&d, &r, redist, offset, WIDTHS[usize::from(width) % 4], None);
            }
            Op::Ctlr(v) => {
                d.write(0, AccessWidth::Dword, u64::from(v))
                    .expect("CTLR takes words");
                (m.grp0, m.grp1) = (v & 1 != 0, v & 2 != 0);
                let ctlr = d.read(0, AccessWidth::Dword).expect("CTLR reads");
                assert_eq!(ctlr & 3, u64::from(v & 3), "CTLR group enables");
            }
            Op::SetPending { vcpu, intid } => {
                let (vcpu, intid) = (usize::from(vcpu % 5), u32::from(intid % 128));
                let got = vgic.set_pending(vcpu, intid);
                match m.loc(vcpu, intid) {
                    Ok((b, bit)) => {
                        assert_eq!(got, Ok(()));
                        b.latch |= bit;
                    }
                    Err(e) => assert_eq!(got, Err(e)),
                }
            }
            Op::SetLine { vcpu, intid, level } => {
                let (vcpu, intid) = (usize::from(vcpu % 5), u32::from(intid % 128));
                let got = vgic.set_line(vcpu, intid, level);
                if intid < 16 {
                    assert!(matches!(got, Err(VgicError::WrongKind { .. })), "{got:?}");
                    continue;
                }
                match m.loc(vcpu, intid) {
                    Ok((b, bit)) => {
                        assert_eq!(got, Ok(()));
                        if level { b.line |= bit } else { b.line &= !bit }
                    }
                    Err(e) => assert_eq!(got, Err(e)),
                }
            }
            Op::Run { vcpu, lrs, guest } => {
                let vcpu = usize::from(vcpu) % vcpus;
                let mut regs = vec![0u64; usize::from(lrs % 16) + 1];
                let flush = vgic.flush(vcpu, 0, &mut regs).expect("a valid flush");
                let deliverable = m.deliverable(vcpu);
                let listed: Vec<ListRegister> = regs[..flush.used]
                    .iter()
                    .map(|v| ListRegister::decode(*v))
                    .collect();
                assert!(
                    regs[flush.used..].iter().all(|v| *v == 0),
                    "registers past `used`"
                );
                let mut seen = std::collections::BTreeSet::new();
                for lr in &listed {
                    assert!(seen.insert(lr.vintid), "INTID {} listed twice", lr.vintid);
                    assert!(
                        deliverable.contains(&lr.vintid),
                        "{lr:?} is not deliverable"
                    );
                    let (b, bit) = m.loc(vcpu, lr.vintid).expect("a listed INTID exists");
                    let state = LrState::new(b.pending() & bit != 0, b.active & bit != 0);
                    assert_eq!(lr.state, state, "{lr:?}");
                    assert_eq!(lr.group1, b.group & bit != 0, "{lr:?}");
                    assert_eq!(lr.priority, b.prio[bit.trailing_zeros() as usize], "{lr:?}");
                    assert_eq!(lr.eoi_maintenance, b.edge & bit == 0, "{lr:?}");
                    assert_eq!(lr.hw, None);
                }
                let overflow = deliverable.len() > regs.len();
                assert_eq!(
                    flush.used,
                    deliverable.len().min(regs.len()),
                    "{deliverable:?}"
                );
                assert_eq!(flush.hcr & HCR_UIE != 0, overflow, "underflow interrupt");
                // The guest acknowledges and deactivates.
                for (k, lr) in listed.iter().enumerate() {
                    let act = guest.get(k).copied().unwrap_or(0) % 4;
                    let mut s = lr.state;
                    if act & 1 != 0 && s.pending() {
                        s = LrState::new(false, true);
                    }
                    if act & 2 != 0 && s.active() {
                        s = LrState::new(s.pending(), false);
                    }
                    regs[k] = ListRegister { state: s, ..*lr }.encode();
                    let (b, bit) = m.loc(vcpu, lr.vintid).expect("listed");
                    if s.active() {
                        b.active |= bit
                    } else {
                        b.active &= !bit
                    }
                    if s.pending() {
                        if b.edge & bit != 0 {
                            b.latch |= bit;
                        }
                    } else {
                        b.latch &= !bit;
                    }
                }
                vgic.fold(vcpu, &regs, flush.hcr & !0xf800_0000)
                    .expect("a valid fold");
            }
        }
        check_view(&mut m, &d, &r);
    }
});
