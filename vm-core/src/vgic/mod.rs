//! A virtual GICv3 for aarch64 guests: the distributor and redistributors as
//! emulated MMIO devices ([`Vgic::distributor`], [`Vgic::redistributors`]), the state
//! of every interrupt of the VM, SGIs between vCPUs from the guest's trapped
//! `ICC_SGI1R_EL1` writes ([`Vgic::send_sgi`]), and the choice of what each vCPU's
//! list registers hold ([`Vgic::flush`] before an entry, [`Vgic::fold`] after the
//! exit). Portable: the list registers travel as raw `ICH_LR<n>_EL2` values
//! ([`ListRegister`]); only the HAL touches the registers themselves.
//!
//! What the guest sees (Arm IHI 0069H.b, the GICv3 architecture specification):
//! - One Security state (GICD_CTLR.DS = 1) and affinity routing always on (ARE is
//!   RAO/WI: no legacy GICv2 operation), no LPIs or ITS, no extended SPI or PPI
//!   ranges, no 1-of-N SPI routing (GICD_TYPER.No1N = 1).
//! - `spis` SPIs (INTIDs 32 and up), 16 SGIs and 16 PPIs per vCPU, priorities with
//!   `priority_bits` implemented bits.
//! - One redistributor per vCPU, 128 KiB each (RD_base then SGI_base), in vCPU
//!   order; GICR_TYPER gives each vCPU's affinity and marks the last frame (Last), so
//!   the guest finds every frame it walks.
//!
//! How interrupts reach a vCPU (chapter 6, "Virtual interrupt handling and
//! prioritization"): before each entry [`Vgic::flush`] puts the most urgent
//! deliverable interrupts of that vCPU (pending, enabled and of an enabled group, or
//! active) into its list registers, moving their pending state there; the guest
//! acknowledges and deactivates them through the virtual CPU interface without
//! exits; after the exit [`Vgic::fold`] takes the list registers' state back. When
//! more interrupts wait than list registers exist, flush asks for the underflow
//! maintenance interrupt (ICH_HCR_EL2.UIE), which brings the vCPU out to refill them.
//! An interrupt made pending for a vCPU that is in the guest kicks its physical CPU
//! (the `kick` given to [`Vgic::new`]) so it refills at once.
//!
//! Interrupts forwarded from the hardware ([`Vgic::map_hw`]: the virtual timer's PPI
//! 27, a pass-through device's SPI) go into list registers with HW = 1: the guest's
//! deactivation also deactivates the physical interrupt, which the host left active
//! after acknowledging it ([`Vgic::hw_interrupt`]).

mod bank;
mod dist;
mod lr;
mod redist;
mod sgi;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use bank::Bank;
pub use dist::VgicDistributor;
pub use lr::{HCR_EN, HCR_LRENPIE, HCR_UIE, ListRegister, LrState, MAX_LIST_REGS, hcr_eoi_count};
pub use redist::VgicRedistributors;
pub use sgi::{MPIDR_AFFINITY, SgiRegister, SgiRequest};

/// The size of the distributor's frame.
pub const DISTRIBUTOR_SIZE: usize = 0x1_0000;
/// The size of one vCPU's redistributor (RD_base and SGI_base frames).
pub const REDISTRIBUTOR_SIZE: usize = 0x2_0000;
/// The most vCPUs a [`Vgic`] serves.
pub const MAX_VCPUS: usize = 256;
/// The most SPIs (INTIDs 32..992: GICD_TYPER.ITLinesNumber at most 30).
pub const MAX_SPIS: u32 = 960;
/// The first SPI.
pub const FIRST_SPI: u32 = 32;

/// The PPI of the EL1 virtual timer (the Server Base System Architecture's choice,
/// which QEMU virt follows).
pub const VTIMER_PPI: u32 = 27;
/// The PPI of the GIC's virtual CPU interface maintenance interrupt on QEMU virt.
pub const MAINTENANCE_PPI: u32 = 25;

/// How a [`Vgic`] is shaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VgicConfig {
    /// The affinity (MPIDR_EL1 as the guest reads it) of each vCPU, in vCPU order:
    /// what the redistributors report and SGIs and SPI routes name.
    pub mpidrs: Vec<u64>,
    /// SPIs: INTIDs 32 to 32 + `spis` - 1; a multiple of 32, at most [`MAX_SPIS`].
    pub spis: u32,
    /// Implemented priority bits (4 to 8); the virtual CPU interface compares at most
    /// `ICH_VTR_EL2.PRIbits` + 1 of them, 5 on QEMU.
    pub priority_bits: u8,
}

impl VgicConfig {
    /// `vcpus` vCPUs with affinities 0, 1, ... in Aff0, `spis` SPIs, 5 priority bits.
    pub fn new(vcpus: usize, spis: u32) -> Self {
        Self {
            mpidrs: (0..vcpus as u64).collect(),
            spis,
            priority_bits: 5,
        }
    }
}

/// Why a vGIC operation was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgicError {
    /// The configuration has no vCPU, or more than [`MAX_VCPUS`].
    VCpuCount {
        /// The number asked for.
        count: usize,
    },
    /// Two vCPUs have the same affinity.
    DuplicateAffinity {
        /// The first vCPU.
        first: usize,
        /// The second vCPU.
        second: usize,
        /// Their affinity.
        mpidr: u64,
    },
    /// The SPI count is not a multiple of 32 or is above [`MAX_SPIS`].
    SpiCount {
        /// The number asked for.
        spis: u32,
    },
    /// The priority bits are not 4 to 8.
    PriorityBits {
        /// The number asked for.
        bits: u8,
    },
    /// No such vCPU.
    NoSuchVCpu {
        /// The index given.
        vcpu: usize,
        /// The vCPU count.
        count: usize,
    },
    /// The INTID is no SGI, PPI or implemented SPI of this vGIC.
    NoSuchInterrupt {
        /// The INTID given.
        intid: u32,
    },
    /// The operation does not apply to this kind of interrupt (a level line for an
    /// SGI, a hardware mapping for an SGI).
    WrongKind {
        /// The INTID given.
        intid: u32,
        /// What was asked.
        op: &'static str,
    },
    /// The virtual or the physical INTID is already mapped.
    AlreadyMapped {
        /// The virtual INTID.
        intid: u32,
        /// The physical INTID.
        pintid: u32,
    },
    /// A list-register array of a length no CPU interface has (1 to 16).
    ListRegisterCount {
        /// The length given.
        count: usize,
    },
}

impl fmt::Display for VgicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VCpuCount { count } => {
                write!(f, "a vGIC serves 1 to {MAX_VCPUS} vCPUs, not {count}")
            }
            Self::DuplicateAffinity {
                first,
                second,
                mpidr,
            } => write!(
                f,
                "vCPUs {first} and {second} have the same affinity {mpidr:#x}"
            ),
            Self::SpiCount { spis } => write!(
                f,
                "{spis} SPIs: the count must be a multiple of 32, at most {MAX_SPIS}"
            ),
            Self::PriorityBits { bits } => {
                write!(f, "{bits} priority bits: a GIC implements 4 to 8")
            }
            Self::NoSuchVCpu { vcpu, count } => {
                write!(f, "no vCPU {vcpu} (the vGIC has {count})")
            }
            Self::NoSuchInterrupt { intid } => write!(f, "no interrupt with INTID {intid}"),
            Self::WrongKind { intid, op } => write!(f, "cannot {op} INTID {intid}"),
            Self::AlreadyMapped { intid, pintid } => write!(
                f,
                "INTID {intid} or physical INTID {pintid} is already mapped"
            ),
            Self::ListRegisterCount { count } => write!(
                f,
                "{count} list registers: a CPU interface has 1 to {MAX_LIST_REGS}"
            ),
        }
    }
}

impl core::error::Error for VgicError {}

/// Counters of a [`Vgic`] (for the exit statistics of a boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgicStats {
    /// Guest accesses to the distributor.
    pub distributor_accesses: u64,
    /// Guest accesses to the redistributors.
    pub redistributor_accesses: u64,
    /// Of those, accesses to registers this model does not implement (read as zero,
    /// writes ignored).
    pub unknown_register_accesses: u64,
    /// SGI register writes.
    pub sgi_writes: u64,
    /// Hardware interrupts forwarded ([`Vgic::hw_interrupt`]).
    pub hw_interrupts: u64,
    /// Flushes that left interrupts waiting for a free list register (and asked for
    /// the underflow maintenance interrupt).
    pub list_register_overflows: u64,
    /// Kicks sent to vCPUs in the guest.
    pub kicks: u64,
}

#[derive(Default)]
struct Counters {
    distributor: AtomicU64,
    redistributor: AtomicU64,
    unknown: AtomicU64,
    sgi_writes: AtomicU64,
    hw_interrupts: AtomicU64,
    overflows: AtomicU64,
    kicks: AtomicU64,
}

/// What [`Vgic::flush`] decided besides the list registers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// The `ICH_HCR_EL2` value to run with (En, and UIE / LRENPIE when interrupts
    /// wait outside the list registers; EOIcount 0).
    pub hcr: u64,
    /// How many list registers hold an interrupt (from the first).
    pub used: usize,
    /// Physical INTIDs the HAL deactivates (ICC_DIR_EL1) before the entry: forwarded
    /// interrupts the guest made inactive without deactivating them through a list
    /// register (by writing ICPENDR or ICACTIVER).
    pub deactivate: Vec<u32>,
}

/// Where an interrupt lives: bank and bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    /// SGI or PPI of a vCPU.
    Private(usize, u32),
    /// SPI bank `k` (INTIDs 32 + 32k ...), bit.
    Spi(usize, u32),
}

/// A hardware mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HwMap {
    pintid: u32,
    intid: u32,
    /// The vCPU of a private interrupt (its physical one is the PPI of the physical
    /// CPU that runs it).
    vcpu: Option<usize>,
}

struct Cpu {
    mpidr: u64,
    private: Bank,
    /// GICR_WAKER.ProcessorSleep.
    asleep: bool,
    /// The INTID each list register holds since the last flush.
    lr_intid: [Option<u32>; MAX_LIST_REGS],
    /// The physical CPU it runs on, from flush to fold.
    running_on: Option<usize>,
}

struct State {
    /// GICD_CTLR.EnableGrp0 / EnableGrp1.
    grp0: bool,
    grp1: bool,
    spis: Vec<Bank>,
    /// `GICD_IROUTER<n>` of each SPI (the affinity fields; IRM is RAZ).
    route: Vec<u64>,
    /// The vCPU each SPI's route names.
    target: Vec<Option<usize>>,
    cpus: Vec<Cpu>,
    hw: Vec<HwMap>,
    priority_mask: u8,
}

/// A VM's virtual GICv3. Shared (`Arc`) by its two MMIO devices and the vCPUs.
pub struct Vgic {
    state: Mutex<State>,
    kick: Box<dyn Fn(usize) + Send + Sync>,
    counters: Counters,
    vcpus: usize,
    spis: u32,
}

impl fmt::Debug for Vgic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vgic")
            .field("vcpus", &self.vcpus)
            .field("spis", &self.spis)
            .finish_non_exhaustive()
    }
}

/// The affinity fields of an IROUTER value: Aff3 \[39:32\], Aff2..Aff0 \[23:0\].
const IROUTER_AFFINITY: u64 = 0xff_00ff_ffff;

/// Physical CPUs to kick once the lock is dropped.
#[derive(Default)]
struct Kicks(Vec<usize>);

impl State {
    fn loc(&self, vcpu: usize, intid: u32) -> Result<Loc, VgicError> {
        if intid < FIRST_SPI {
            if vcpu >= self.cpus.len() {
                return Err(VgicError::NoSuchVCpu {
                    vcpu,
                    count: self.cpus.len(),
                });
            }
            return Ok(Loc::Private(vcpu, intid));
        }
        let spi = intid - FIRST_SPI;
        let bank = (spi / 32) as usize;
        if bank >= self.spis.len() {
            return Err(VgicError::NoSuchInterrupt { intid });
        }
        Ok(Loc::Spi(bank, spi % 32))
    }

    fn bank(&mut self, loc: Loc) -> (&mut Bank, u32) {
        match loc {
            Loc::Private(v, b) => (&mut self.cpus[v].private, 1 << b),
            Loc::Spi(k, b) => (&mut self.spis[k], 1 << b),
        }
    }

    /// The vCPU an interrupt is delivered to.
    fn target_of(&self, loc: Loc) -> Option<usize> {
        match loc {
            Loc::Private(v, _) => Some(v),
            Loc::Spi(k, b) => self.target[k * 32 + b as usize],
        }
    }

    /// Kicks `vcpu` if it is in the guest (its list registers must be refilled).
    fn notify(&self, vcpu: Option<usize>, kicks: &mut Kicks) {
        if let Some(p) = vcpu
            .and_then(|v| self.cpus.get(v))
            .and_then(|c| c.running_on)
            && !kicks.0.contains(&p)
        {
            kicks.0.push(p);
        }
    }

    fn notify_all(&self, kicks: &mut Kicks) {
        for v in 0..self.cpus.len() {
            self.notify(Some(v), kicks);
        }
    }

    /// The vCPU whose affinity an IROUTER value names.
    fn route_target(&self, route: u64) -> Option<usize> {
        let aff = route & IROUTER_AFFINITY;
        self.cpus
            .iter()
            .position(|c| c.mpidr & MPIDR_AFFINITY == aff)
    }

    /// Takes vCPU `vcpu`'s list registers back into the model (see [`Vgic::fold`]).
    fn fold(&mut self, vcpu: usize, lrs: &[u64], hcr: u64, kicks: &mut Kicks) {
        // First the deactivations of interrupts that were in no list register (only
        // when an active one did not fit, LRENPIE), while those in list registers
        // are still marked: the most urgent active ones, as the priority drop
        // would pick them.
        for _ in 0..hcr_eoi_count(hcr) {
            let Some(loc) = self.most_urgent_active(vcpu) else {
                break;
            };
            let (bank, bit) = self.bank(loc);
            bank.active &= !bit;
        }
        for k in 0..MAX_LIST_REGS {
            let Some(intid) = self.cpus[vcpu].lr_intid[k].take() else {
                continue;
            };
            let lr = ListRegister::decode(lrs.get(k).copied().unwrap_or(0));
            let Ok(loc) = self.loc(vcpu, intid) else {
                continue;
            };
            let (bank, bit) = self.bank(loc);
            bank.in_lr &= !bit;
            if lr.state.active() {
                bank.active |= bit;
            } else {
                bank.active &= !bit;
            }
            let latched = bank.edge & bit != 0 || bank.hw_active & bit != 0;
            if lr.state.pending() {
                // Flush moved a latched pending state into the register: it is
                // still pending. (A new one may have arrived meanwhile: same bit.)
                if latched {
                    bank.latch |= bit;
                }
            } else if !latched {
                // A level-sensitive interrupt the guest acknowledged: its software
                // pending state is consumed (4.1.1); the line decides from now on.
                bank.latch &= !bit;
            }
            if bank.hw_active & bit != 0 && lr.state == LrState::Invalid {
                // The guest deactivated it through the register: so was the
                // physical interrupt (HW = 1).
                bank.hw_active &= !bit;
            }
            // Routed elsewhere while it sat here: its new target takes it now.
            let target = self.target_of(loc);
            if target != Some(vcpu) {
                self.notify(target, kicks);
            }
        }
        self.cpus[vcpu].running_on = None;
    }

    /// The most urgent active interrupt of `vcpu` in no list register.
    fn most_urgent_active(&self, vcpu: usize) -> Option<Loc> {
        let mut best: Option<(u8, Loc)> = None;
        let mut take = |bank: &Bank, bits: u32, loc: &dyn Fn(u32) -> Loc| {
            for b in bits_of(bits & bank.active & !bank.in_lr) {
                let p = bank.priority[b as usize];
                if best.is_none_or(|(q, _)| p < q) {
                    best = Some((p, loc(b)));
                }
            }
        };
        take(&self.cpus[vcpu].private, u32::MAX, &|b| {
            Loc::Private(vcpu, b)
        });
        for (k, bank) in self.spis.iter().enumerate() {
            take(bank, self.spi_targets(k, vcpu), &|b| Loc::Spi(k, b));
        }
        best.map(|(_, loc)| loc)
    }

    /// The bits of SPI bank `k` routed to `vcpu`.
    fn spi_targets(&self, k: usize, vcpu: usize) -> u32 {
        self.target[k * 32..k * 32 + 32]
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == Some(vcpu))
            .fold(0, |m, (b, _)| m | (1 << b))
    }
}

/// The set bits of `bits`, lowest first.
fn bits_of(mut bits: u32) -> impl Iterator<Item = u32> {
    core::iter::from_fn(move || {
        (bits != 0).then(|| {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            b
        })
    })
}

/// A list-register candidate: (priority, not active, INTID), smaller is more urgent
/// (at equal priority an active interrupt goes first: the guest must be able to
/// deactivate it).
type Candidate = (u8, bool, u32);

fn candidate(bank: &Bank, bit: u32, intid: u32) -> Candidate {
    (
        bank.priority[bit as usize],
        bank.active & (1 << bit) == 0,
        intid,
    )
}

/// The `n` most urgent candidates offered, sorted, and what was left out.
struct TopN {
    keys: [Candidate; MAX_LIST_REGS],
    n: usize,
    kept: usize,
    offered: usize,
    /// An active interrupt was left out: its deactivation will count in EOIcount.
    active_dropped: bool,
}

impl TopN {
    fn new(n: usize) -> Self {
        Self {
            keys: [(0, false, 0); MAX_LIST_REGS],
            n: n.min(MAX_LIST_REGS),
            kept: 0,
            offered: 0,
            active_dropped: false,
        }
    }

    fn offer(&mut self, key: Candidate) {
        self.offered += 1;
        let pos = self.keys[..self.kept].partition_point(|k| *k < key);
        if pos >= self.n {
            self.active_dropped |= !key.1;
            return;
        }
        if self.kept == self.n {
            self.active_dropped |= !self.keys[self.n - 1].1;
        } else {
            self.kept += 1;
        }
        self.keys.copy_within(pos..self.kept - 1, pos + 1);
        self.keys[pos] = key;
    }
}

impl Vgic {
    /// A vGIC for `config`; `kick(pcpu)` forces physical CPU `pcpu` out of the
    /// guest (the platform's kick), called without any lock of the vGIC held.
    pub fn new(
        config: VgicConfig,
        kick: impl Fn(usize) + Send + Sync + 'static,
    ) -> Result<Arc<Self>, VgicError> {
        let count = config.mpidrs.len();
        if count == 0 || count > MAX_VCPUS {
            return Err(VgicError::VCpuCount { count });
        }
        for (i, a) in config.mpidrs.iter().enumerate() {
            for (j, b) in config.mpidrs.iter().enumerate().skip(i + 1) {
                if a & MPIDR_AFFINITY == b & MPIDR_AFFINITY {
                    return Err(VgicError::DuplicateAffinity {
                        first: i,
                        second: j,
                        mpidr: a & MPIDR_AFFINITY,
                    });
                }
            }
        }
        if !config.spis.is_multiple_of(32) || config.spis > MAX_SPIS {
            return Err(VgicError::SpiCount { spis: config.spis });
        }
        if !(4..=8).contains(&config.priority_bits) {
            return Err(VgicError::PriorityBits {
                bits: config.priority_bits,
            });
        }
        let banks = (config.spis / 32) as usize;
        let first_route = config.mpidrs[0] & MPIDR_AFFINITY;
        let state = State {
            grp0: false,
            grp1: false,
            // SPIs: level-sensitive after reset, trigger programmable.
            spis: (0..banks).map(|_| Bank::new(0, u32::MAX)).collect(),
            // IROUTER resets UNKNOWN: the first vCPU.
            route: alloc::vec![first_route; config.spis as usize],
            target: alloc::vec![Some(0); config.spis as usize],
            cpus: config
                .mpidrs
                .iter()
                .map(|&mpidr| Cpu {
                    mpidr: mpidr & MPIDR_AFFINITY,
                    // SGIs edge-triggered and fixed; PPIs level, programmable.
                    private: Bank::new(0xffff, 0xffff_0000),
                    asleep: true,
                    lr_intid: [None; MAX_LIST_REGS],
                    running_on: None,
                })
                .collect(),
            hw: Vec::new(),
            priority_mask: 0xffu8 << (8 - config.priority_bits),
        };
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            kick: Box::new(kick),
            counters: Counters::default(),
            vcpus: count,
            spis: config.spis,
        }))
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus
    }

    /// The number of SPIs.
    pub fn spi_count(&self) -> u32 {
        self.spis
    }

    /// The size of the redistributor region: one [`REDISTRIBUTOR_SIZE`] per vCPU.
    pub fn redistributors_size(&self) -> usize {
        self.vcpus * REDISTRIBUTOR_SIZE
    }

    /// The distributor, an MMIO device of [`DISTRIBUTOR_SIZE`] bytes.
    pub fn distributor(self: &Arc<Self>) -> Arc<VgicDistributor> {
        Arc::new(VgicDistributor::new(self.clone()))
    }

    /// The redistributors, one MMIO device of [`Vgic::redistributors_size`] bytes.
    pub fn redistributors(self: &Arc<Self>) -> Arc<VgicRedistributors> {
        Arc::new(VgicRedistributors::new(self.clone()))
    }

    /// Counters.
    pub fn stats(&self) -> VgicStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VgicStats {
            distributor_accesses: get(&c.distributor),
            redistributor_accesses: get(&c.redistributor),
            unknown_register_accesses: get(&c.unknown),
            sgi_writes: get(&c.sgi_writes),
            hw_interrupts: get(&c.hw_interrupts),
            list_register_overflows: get(&c.overflows),
            kicks: get(&c.kicks),
        }
    }

    /// Runs `f` on the state, then sends the kicks it asked for.
    fn with<R>(&self, f: impl FnOnce(&mut State, &mut Kicks) -> R) -> R {
        let mut kicks = Kicks::default();
        let r = f(&mut self.state.lock(), &mut kicks);
        for p in kicks.0 {
            self.counters.kicks.fetch_add(1, Ordering::Relaxed);
            (self.kick)(p);
        }
        r
    }

    /// An access to a register this model does not implement: counted, reads as 0.
    fn unknown_register(&self) -> u64 {
        self.counters.unknown.fetch_add(1, Ordering::Relaxed);
        0
    }

    /// One guest access to a register frame: counted in `counter`, answered by `f`
    /// under the lock (`None`: no such register for this width), kicks sent after.
    fn access<R>(
        &self,
        counter: &AtomicU64,
        offset: u64,
        width: vcpu_api::AccessWidth,
        f: impl FnOnce(&mut State, &mut Kicks) -> Option<R>,
    ) -> Result<R, crate::device::DeviceError> {
        counter.fetch_add(1, Ordering::Relaxed);
        self.with(f)
            .ok_or(crate::device::DeviceError::NoRegister { offset, width })
    }

    /// Makes interrupt `intid` pending (an edge, or a software-generated event):
    /// for an SGI or PPI, `vcpu`'s; for an SPI `vcpu` is ignored (its route
    /// decides).
    pub fn set_pending(&self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        self.with(|s, kicks| {
            let loc = s.loc(vcpu, intid)?;
            let (bank, bit) = s.bank(loc);
            bank.latch |= bit;
            s.notify(s.target_of(loc), kicks);
            Ok(())
        })
    }

    /// Drives the input line of a level-sensitive PPI (of `vcpu`) or SPI.
    pub fn set_line(&self, vcpu: usize, intid: u32, asserted: bool) -> Result<(), VgicError> {
        if intid < 16 {
            return Err(VgicError::WrongKind {
                intid,
                op: "drive a line of",
            });
        }
        self.with(|s, kicks| {
            let loc = s.loc(vcpu, intid)?;
            let (bank, bit) = s.bank(loc);
            let before = bank.line;
            if asserted {
                bank.line |= bit;
            } else {
                bank.line &= !bit;
            }
            if bank.line != before {
                s.notify(s.target_of(loc), kicks);
            }
            Ok(())
        })
    }

    /// Forwards physical INTID `pintid` as `intid`: a PPI of `vcpu` (whose physical
    /// one is the same PPI of the physical CPU running it) or an SPI (`vcpu` is
    /// ignored). The host acknowledges the physical interrupt, drops its priority
    /// without deactivating it and calls [`Vgic::hw_interrupt`]; the guest's
    /// deactivation deactivates it.
    pub fn map_hw(&self, vcpu: usize, intid: u32, pintid: u32) -> Result<(), VgicError> {
        if intid < 16 || !(16..1020).contains(&pintid) {
            return Err(VgicError::WrongKind {
                intid,
                op: "forward a hardware interrupt to",
            });
        }
        let mut s = self.state.lock();
        let loc = s.loc(vcpu, intid)?;
        let scope = matches!(loc, Loc::Private(..)).then_some(vcpu);
        if s.hw
            .iter()
            .any(|m| m.vcpu == scope && (m.intid == intid || m.pintid == pintid))
        {
            return Err(VgicError::AlreadyMapped { intid, pintid });
        }
        let (bank, bit) = s.bank(loc);
        bank.hw[bit.trailing_zeros() as usize] = Some(pintid);
        s.hw.push(HwMap {
            pintid,
            intid,
            vcpu: scope,
        });
        Ok(())
    }

    /// The host acknowledged physical interrupt `pintid` on the physical CPU that
    /// runs `vcpu` and dropped its priority: makes the virtual interrupt it is
    /// mapped to pending. `Ok(false)` when `pintid` is not forwarded (the host
    /// deactivates it itself).
    pub fn hw_interrupt(&self, vcpu: usize, pintid: u32) -> Result<bool, VgicError> {
        self.with(|s, kicks| {
            if vcpu >= s.cpus.len() {
                return Err(VgicError::NoSuchVCpu {
                    vcpu,
                    count: s.cpus.len(),
                });
            }
            let Some(m) =
                s.hw.iter()
                    .find(|m| m.pintid == pintid && m.vcpu.is_none_or(|v| v == vcpu))
                    .copied()
            else {
                return Ok(false);
            };
            let loc = s.loc(m.vcpu.unwrap_or(vcpu), m.intid)?;
            let (bank, bit) = s.bank(loc);
            bank.latch |= bit;
            bank.hw_active |= bit;
            self.counters.hw_interrupts.fetch_add(1, Ordering::Relaxed);
            s.notify(s.target_of(loc), kicks);
            Ok(true)
        })
    }

    /// The guest on vCPU `sender` wrote `value` to SGI register `reg`: makes the SGI
    /// pending on each target whose SGI is of the register's group (12.2,
    /// ICC_SGI1R_EL1; with one Security state ICC_ASGI1R_EL1 reaches no one).
    /// Returns how many vCPUs it reached.
    pub fn send_sgi(
        &self,
        sender: usize,
        reg: SgiRegister,
        value: u64,
    ) -> Result<usize, VgicError> {
        self.counters.sgi_writes.fetch_add(1, Ordering::Relaxed);
        let req = SgiRequest::decode(value);
        self.with(|s, kicks| {
            let from = s
                .cpus
                .get(sender)
                .ok_or(VgicError::NoSuchVCpu {
                    vcpu: sender,
                    count: s.cpus.len(),
                })?
                .mpidr;
            let bit = 1u32 << req.intid;
            let mut reached = 0;
            for v in 0..s.cpus.len() {
                let cpu = &mut s.cpus[v];
                if !req.targets(cpu.mpidr, from) {
                    continue;
                }
                let group1 = cpu.private.group1 & bit != 0;
                let delivered = match reg {
                    SgiRegister::Sgi1r => group1,
                    SgiRegister::Sgi0r => !group1,
                    SgiRegister::Asgi1r => false,
                };
                if delivered {
                    cpu.private.latch |= bit;
                    reached += 1;
                    s.notify(Some(v), kicks);
                }
            }
            Ok(reached)
        })
    }

    /// Fills vCPU `vcpu`'s list registers `lrs` (all of them: the free ones become
    /// 0) before it enters the guest on physical CPU `pcpu`: its deliverable
    /// interrupts, most urgent (lowest priority value) first, active before pending
    /// at equal priority. Until [`Vgic::fold`], the vCPU counts as in the guest: an
    /// interrupt made pending for it kicks `pcpu`.
    ///
    /// Flushing again without a fold first folds `lrs` as they are.
    pub fn flush(&self, vcpu: usize, pcpu: usize, lrs: &mut [u64]) -> Result<Flush, VgicError> {
        if lrs.is_empty() || lrs.len() > MAX_LIST_REGS {
            return Err(VgicError::ListRegisterCount { count: lrs.len() });
        }
        self.with(|s, kicks| self.flush_locked(s, kicks, vcpu, pcpu, lrs))
    }

    fn flush_locked(
        &self,
        s: &mut State,
        kicks: &mut Kicks,
        vcpu: usize,
        pcpu: usize,
        lrs: &mut [u64],
    ) -> Result<Flush, VgicError> {
        if vcpu >= s.cpus.len() {
            return Err(VgicError::NoSuchVCpu {
                vcpu,
                count: s.cpus.len(),
            });
        }
        if s.cpus[vcpu].lr_intid.iter().any(Option::is_some) {
            s.fold(vcpu, lrs, 0, kicks);
        }
        let mut top = TopN::new(lrs.len());
        let (grp0, grp1) = (s.grp0, s.grp1);
        let bank = &s.cpus[vcpu].private;
        for b in bits_of(bank.deliverable(grp0, grp1)) {
            top.offer(candidate(bank, b, b));
        }
        // Bank k holds INTIDs FIRST_SPI + 32 * k ..
        let firsts = (FIRST_SPI..).step_by(32);
        for ((k, bank), first) in s.spis.iter().enumerate().zip(firsts) {
            for b in bits_of(bank.deliverable(grp0, grp1)) {
                if s.target[k * 32 + b as usize] == Some(vcpu) {
                    top.offer(candidate(bank, b, first + b));
                }
            }
        }
        let used = top.kept;
        for (k, lr) in lrs.iter_mut().enumerate() {
            *lr = ListRegister::EMPTY;
            let Some(&(_, _, intid)) = top.keys[..used].get(k) else {
                continue;
            };
            let Ok(loc) = s.loc(vcpu, intid) else {
                continue;
            };
            let (bank, bit) = s.bank(loc);
            let b = bit.trailing_zeros() as usize;
            let hw = bank.hw[b].filter(|_| bank.hw_active & bit != 0);
            let edge = bank.edge & bit != 0;
            *lr = ListRegister {
                vintid: intid,
                state: LrState::new(bank.pending() & bit != 0, bank.active & bit != 0),
                hw,
                eoi_maintenance: hw.is_none() && !edge,
                group1: bank.group1 & bit != 0,
                priority: bank.priority[b],
            }
            .encode();
            if edge || hw.is_some() {
                bank.latch &= !bit;
            }
            bank.in_lr |= bit;
            s.cpus[vcpu].lr_intid[k] = Some(intid);
        }
        let mut hcr = HCR_EN;
        if top.offered > used {
            hcr |= HCR_UIE;
            self.counters.overflows.fetch_add(1, Ordering::Relaxed);
        }
        if top.active_dropped {
            hcr |= HCR_LRENPIE;
        }
        // Forwarded interrupts the guest made inactive behind the list registers'
        // back: the physical one is still active and must be deactivated here.
        let mut deactivate = Vec::new();
        let mut stale = |bank: &mut Bank| {
            for b in bits_of(bank.hw_active & !bank.in_lr & !bank.pending() & !bank.active) {
                bank.hw_active &= !(1 << b);
                if let Some(p) = bank.hw[b as usize] {
                    deactivate.push(p);
                }
            }
        };
        stale(&mut s.cpus[vcpu].private);
        for bank in &mut s.spis {
            stale(bank);
        }
        s.cpus[vcpu].running_on = Some(pcpu);
        Ok(Flush {
            hcr,
            used,
            deactivate,
        })
    }

    /// Takes vCPU `vcpu`'s list registers `lrs` (as read after the exit) and
    /// `ICH_HCR_EL2` (for EOIcount) back into the model: each interrupt's pending and
    /// active state is the register's again; the vCPU no longer counts as in the
    /// guest. The HAL writes EOIcount back to 0 (the next flush's `hcr` does).
    pub fn fold(&self, vcpu: usize, lrs: &[u64], hcr: u64) -> Result<(), VgicError> {
        self.with(|s, kicks| {
            if vcpu >= s.cpus.len() {
                return Err(VgicError::NoSuchVCpu {
                    vcpu,
                    count: s.cpus.len(),
                });
            }
            s.fold(vcpu, lrs, hcr, kicks);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
