//! [`Machine`]: one simulated host — physical memory at its own host-physical range
//! with a frame allocator over it (an `addrspace::testing::StrictAllocator`: every
//! free must name frames of one live allocation or reservation), physical
//! CPUs with kick flags, failure injection and counters. Each test makes its own;
//! threads join one with [`Machine::enter`].
//!
//! Use-after-free detection: every frame has an allocation generation (odd while
//! allocated, even while free, bumped by each allocation and each free), and a freed
//! frame is filled with [`POISON`]. The software vCPU records the generation of the
//! frame behind each translation it caches and of each table it walks, and checks it
//! around every access: a mismatch is a use of a freed frame, counted in
//! [`Machine::stale_uses`] with a description in [`Machine::stale_reports`].
//!
//! Use-after-removal detection: the machine has a clock ([`Machine::tick`]) that
//! stamps each translation a software vCPU caches (after its walk). A host thread
//! that removes or weakens translations ticks before the call and, once the call
//! has returned, tells [`Machine::removed`] (for the pages a VM's watch covers, see
//! [`Machine::watch_removals`]); a vCPU that then uses a translation stamped before
//! that tick used a translation after the call that removed it returned, counted in
//! [`Machine::stale_translations`].

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use addrspace::testing::{PoolAllocator, StrictAllocator};
use vcpu_api::VmTags;

use addrspace::{FRAME_SIZE, FrameAllocator, GpaRange, GuestPhysAddr, HostPhysAddr, HostVirtAddr};

use crate::vcpu::TlbCache;

/// The most physical CPUs a machine has (kick flags).
pub const MAX_PCPUS: usize = 64;

/// The byte a freed frame is filled with.
pub const POISON: u8 = 0xf5;

/// One broadcast invalidation in this many stalls for [`STALL`] before it reaches
/// each software TLB (a preempted caller).
const STALL_EVERY: u64 = 8;

/// See [`STALL_EVERY`].
const STALL: std::time::Duration = std::time::Duration::from_micros(200);

/// Descriptions of stale uses kept (the count goes on).
const STALE_REPORTS_KEPT: usize = 16;

/// A physical CPU of the simulated machine.
#[derive(Debug, Default)]
pub struct Pcpu {
    /// Set by `kick_pcpu`, consumed by the software vCPU running there.
    pub(crate) kick: AtomicBool,
    /// Kicks received.
    pub kicks: AtomicU64,
}

/// Failure injection switches (the frame budget is the pool's).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Make every `alloc_memory_region_at` fail.
    pub(crate) refuse_alloc_at: AtomicBool,
    /// Answer `broadcast_guest_tlb_invalidate` with a broadcast (invalidating the
    /// range in every software TLB of the VM) instead of `false`.
    pub(crate) broadcast: AtomicBool,
    /// Hold every frame allocation (the caller waits) until cleared.
    pub(crate) hold_frames: AtomicBool,
    /// Allocations waiting on `hold_frames` now.
    pub(crate) frames_waiting: AtomicUsize,
    /// Nested page faults the software vCPUs have exited with.
    pub(crate) nested_faults: AtomicU64,
    /// How broadcast invalidations are broken ([`InvalidationFault`]), and the
    /// invalidations late ones still owe: (VM, range), oldest first.
    invalidation: Mutex<(InvalidationFault, VecDeque<(usize, GpaRange)>)>,
}

/// How many broadcasts later an [`InvalidationFault::Late`] invalidation arrives.
pub const LATE_BY: usize = 16;

/// A broken TLB invalidation, injected to check that the checks catch it
/// ([`Machine::set_invalidation_fault`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvalidationFault {
    /// Invalidations work.
    #[default]
    None,
    /// A missing shootdown: broadcasts invalidate nothing (and the `stress` soak's
    /// vCPUs ignore their own invalidations too).
    Dropped,
    /// An early free: a broadcast returns before it invalidated, and the TLBs drop
    /// the range only [`LATE_BY`] broadcasts later, after the caller has freed the
    /// frames.
    Late,
}

/// One simulated host. See the module docs.
pub struct Machine {
    base: usize,
    size: usize,
    /// The memory and its frames: allocations, reservations, the failure budget and
    /// the in-use count; every free must name frames of one live allocation or
    /// reservation (see [`Machine::dealloc_frames`]).
    pool: StrictAllocator,
    /// Allocation generation of each frame: odd while allocated, even while free.
    generations: Box<[AtomicU64]>,
    /// Uses of freed frames seen by software vCPUs, and the first few described.
    stale_uses: AtomicU64,
    stale_translations: AtomicU64,
    stale_reports: Mutex<Vec<String>>,
    clock: AtomicU64,
    /// The watched VM and, per guest page, the tick taken before the last call that
    /// removed or weakened its translation and has returned.
    removals: OnceLock<(usize, HashMap<usize, AtomicU64>)>,
    pcpus: Vec<Pcpu>,
    pub(crate) faults: Faults,
    start: Instant,
    /// Software TLBs of the vCPUs, by VM id, for broadcast invalidation.
    tlbs: Mutex<HashMap<usize, Vec<Weak<TlbCache>>>>,
    broadcasts: AtomicU64,
    /// Interrupts injected through `VmHal::inject_irq`: (vm, vcpu, irq).
    irqs: Mutex<Vec<(usize, usize, usize)>>,
    /// Whether freed frames are filled with [`POISON`] (see
    /// [`Machine::poison_freed_frames`]).
    poison: AtomicBool,
    /// Which live VM holds which VMID (the mock's TLB tags), how many there are,
    /// and the releases seen.
    vmids: VmTags<MAX_VMIDS>,
    vmid_limit: AtomicUsize,
    vmid_releases: Mutex<Vec<VmidRelease>>,
    /// The host's I/O ports as guests reach them through pass-through: one byte
    /// latch per port (written bytes read back; never written reads 0xff).
    ports: Mutex<HashMap<u16, u8>>,
}

/// The most VMIDs a machine has ([`Machine::set_vmids`] may give it fewer).
pub const MAX_VMIDS: usize = 255;

/// A VM's VMID given back ([`Machine::vmid_releases`]): its translations were
/// invalidated on every software TLB while `frames_in_use` frames were allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmidRelease {
    /// The VM.
    pub vm: usize,
    /// Its VMID.
    pub vmid: u16,
    /// Frames allocated on the machine at that moment.
    pub frames_in_use: usize,
}

/// How long a wait loop spins before [`Machine::now_ns_polled`] yields.
pub const SPIN_BUDGET_NS: u64 = 5_000;

/// Clock reads further apart than this start a new wait.
const POLL_GAP_NS: u64 = 5_000;

thread_local! {
    /// The last [`Machine::now_ns_polled`] of this thread and when its wait began, in
    /// host time (a thread may wait on several machines, whose clocks differ).
    static POLLING: std::cell::Cell<Option<(Instant, Instant)>> =
        const { std::cell::Cell::new(None) };
    static CURRENT: RefCell<Option<Arc<Machine>>> = const { RefCell::new(None) };
    static PCPU: RefCell<usize> = const { RefCell::new(0) };
}

/// Keeps a thread in a machine; leaving restores the previous one.
pub struct Entered {
    previous: Option<Arc<Machine>>,
    previous_pcpu: usize,
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.previous.take());
        PCPU.with(|p| *p.borrow_mut() = self.previous_pcpu);
    }
}

/// The pool zeroing frames as a hypervisor on this host's architecture would: with
/// hal-x86_64's `zero_memory` on x86_64 (non-temporal stores for large blocks),
/// ordinary stores elsewhere.
#[cfg(target_arch = "x86_64")]
fn host_zeroing(pool: PoolAllocator) -> PoolAllocator {
    // SAFETY: `zero_memory` keeps the `ZeroFn` promise (its tests in hal-x86_64).
    unsafe { pool.zeroing_with(hal_x86_64::zero_memory) }
}

/// See the x86_64 version: other hosts keep the pool's ordinary stores.
#[cfg(not(target_arch = "x86_64"))]
fn host_zeroing(pool: PoolAllocator) -> PoolAllocator {
    pool
}

impl Machine {
    /// A machine with `size` bytes of physical memory at host-physical `base`
    /// (both 4 KiB-aligned).
    ///
    /// # Panics
    ///
    /// On an unaligned or empty range, or when the host has no memory (test code).
    pub fn new(base: usize, size: usize) -> Arc<Self> {
        assert!(base.is_multiple_of(FRAME_SIZE) && size.is_multiple_of(FRAME_SIZE) && size > 0);
        Arc::new(Self {
            base,
            size,
            pool: StrictAllocator::new(host_zeroing(PoolAllocator::with_base(
                size / FRAME_SIZE,
                base,
            ))),
            generations: (0..size / FRAME_SIZE).map(|_| AtomicU64::new(0)).collect(),
            stale_uses: AtomicU64::new(0),
            stale_translations: AtomicU64::new(0),
            stale_reports: Mutex::new(Vec::new()),
            clock: AtomicU64::new(1),
            removals: OnceLock::new(),
            pcpus: (0..MAX_PCPUS).map(|_| Pcpu::default()).collect(),
            faults: Faults::default(),
            start: Instant::now(),
            tlbs: Mutex::new(HashMap::new()),
            broadcasts: AtomicU64::new(0),
            irqs: Mutex::new(Vec::new()),
            poison: AtomicBool::new(true),
            vmids: VmTags::new(),
            vmid_limit: AtomicUsize::new(MAX_VMIDS),
            vmid_releases: Mutex::new(Vec::new()),
            ports: Mutex::new(HashMap::new()),
        })
    }

    /// A host `IN` of `width` bytes at `port` (little-endian over the port latches).
    /// `VmHal::inject_irq` on the mock: recorded when VM `vm` has a vCPU `vcpu`.
    pub(crate) fn inject(&self, vm: usize, vcpu: usize, irq: usize) -> bool {
        let known = self
            .tlbs
            .lock()
            .expect("tlb registry")
            .get(&vm)
            .is_some_and(|l| l.iter().filter_map(Weak::upgrade).any(|t| t.vcpu == vcpu));
        if known {
            self.irqs.lock().expect("irq list").push((vm, vcpu, irq));
        }
        known
    }

    /// Interrupts injected so far through `VmHal::inject_irq`: (vm, vcpu, irq).
    pub fn injected(&self) -> Vec<(usize, usize, usize)> {
        self.irqs.lock().expect("irq list").clone()
    }

    /// A host `IN` of `width` bytes at `port` (little-endian over the port latches).
    pub fn port_in(&self, port: u16, width: vcpu_api::AccessWidth) -> u64 {
        let ports = self.ports.lock().expect("ports");
        (0..width.bytes()).rev().fold(0, |v, i| {
            let at = u16::try_from(i).ok().and_then(|i| port.checked_add(i));
            let byte = at.and_then(|p| ports.get(&p).copied());
            v << 8 | u64::from(byte.unwrap_or(0xff))
        })
    }

    /// A host `OUT` of `value` (`width` bytes) at `port`.
    pub fn port_out(&self, port: u16, width: vcpu_api::AccessWidth, value: u64) {
        let mut ports = self.ports.lock().expect("ports");
        for (i, b) in value
            .to_le_bytes()
            .into_iter()
            .take(width.bytes())
            .enumerate()
        {
            if let Some(p) = u16::try_from(i).ok().and_then(|i| port.checked_add(i)) {
                ports.insert(p, b);
            }
        }
    }

    /// A machine with 64 MiB at host-physical 0x1_0000_0000.
    pub fn with_defaults() -> Arc<Self> {
        Self::new(0x1_0000_0000, 64 << 20)
    }

    /// Makes this machine the calling thread's, as physical CPU `pcpu`, until the
    /// guard drops.
    pub fn enter(self: &Arc<Self>, pcpu: usize) -> Entered {
        assert!(pcpu < MAX_PCPUS, "pCPU {pcpu} >= {MAX_PCPUS}");
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.clone()));
        let previous_pcpu = PCPU.with(|p| core::mem::replace(&mut *p.borrow_mut(), pcpu));
        Entered {
            previous,
            previous_pcpu,
        }
    }

    /// The calling thread's machine.
    ///
    /// # Panics
    ///
    /// When the thread entered none (a test bug).
    pub fn current() -> Arc<Machine> {
        CURRENT
            .with(|c| c.borrow().clone())
            .expect("hal-mock: this thread has no machine; call `machine.enter(pcpu)` first")
    }

    pub(crate) fn current_pcpu() -> usize {
        PCPU.with(|p| *p.borrow())
    }

    /// The host-physical range `[start, end)`.
    pub fn phys_range(&self) -> (HostPhysAddr, HostPhysAddr) {
        (
            HostPhysAddr::from_usize(self.base),
            HostPhysAddr::from_usize(self.base + self.size),
        )
    }

    /// Whether `[hpa, hpa + len)` is simulated memory.
    pub fn contains(&self, hpa: HostPhysAddr, len: usize) -> bool {
        let a = hpa.as_usize();
        a >= self.base
            && a.checked_add(len)
                .is_some_and(|e| e <= self.base + self.size)
    }

    /// Where the host sees `hpa`.
    ///
    /// # Panics
    ///
    /// When `hpa` is not simulated memory: `vm-core` asked for memory it does not
    /// own, which is the bug a test must see.
    pub fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        assert!(
            self.contains(hpa, 1),
            "hal-mock: phys_to_virt({hpa:#x}) outside the machine's memory [{:#x}, {:#x})",
            self.base,
            self.base + self.size
        );
        self.pool.phys_to_virt(hpa)
    }

    /// The host-physical address of host pointer `hva` (inside the memory block).
    pub fn virt_to_phys(&self, hva: HostVirtAddr) -> HostPhysAddr {
        let mem = self.pool.phys_to_virt(HostPhysAddr::from_usize(self.base));
        let off = hva.as_usize().wrapping_sub(mem.as_usize());
        assert!(
            off < self.size,
            "hal-mock: virt_to_phys({hva:#x}) outside the machine"
        );
        HostPhysAddr::from_usize(self.base + off)
    }

    // ------------------------------------------------------------ frames

    /// Allocates `count` contiguous frames aligned to `align` frames (a power of
    /// two).
    pub fn alloc_frames(&self, count: usize, align: usize) -> Option<HostPhysAddr> {
        self.wait_while_held();
        let hpa = self.pool.alloc_frames(count, align)?;
        self.mark_allocated(hpa, count);
        Some(hpa)
    }

    /// As [`Machine::alloc_frames`], frames that read as zero. The machine's memory
    /// is a fresh anonymous mapping: frames never handed out are still zero and are
    /// not written (their pages stay unbacked until the guest touches them); frames
    /// handed out before (poisoned when freed) are zeroed.
    pub fn alloc_zeroed(&self, count: usize, align: usize) -> Option<HostPhysAddr> {
        self.wait_while_held();
        let hpa = self.pool.alloc_zeroed(count, align)?;
        self.mark_allocated(hpa, count);
        Some(hpa)
    }

    /// Zeroes the `count` frames at `hpa` as [`Machine::alloc_zeroed`] does (the
    /// host architecture's routine).
    ///
    /// # Safety
    ///
    /// The caller holds those frames (allocated from this machine, not freed) and
    /// nothing else reads or writes them during the call.
    pub unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller's promise, for frames of this machine's pool.
        unsafe { self.pool.zero_frames(hpa, count) }
    }

    /// Frames [`Machine::alloc_zeroed`] handed out without writing them.
    pub fn fresh_frames_handed_out(&self) -> usize {
        self.pool.pool().fresh_handed_out()
    }

    /// Waits while frame allocations are held (failure injection).
    fn wait_while_held(&self) {
        if self.faults.hold_frames.load(Ordering::SeqCst) {
            self.faults.frames_waiting.fetch_add(1, Ordering::SeqCst);
            while self.faults.hold_frames.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            self.faults.frames_waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Frees frames: their generation moves on and they are filled with [`POISON`]
    /// (unless [`Machine::poison_freed_frames`] turned that off).
    ///
    /// # Panics
    ///
    /// On a double free, a foreign frame, or frames that are not a run of one live
    /// allocation or reservation (a free of parts of two, which a buddy allocator
    /// would not survive): the bugs these tests look for.
    pub fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        assert!(
            self.contains(hpa, count.saturating_mul(FRAME_SIZE)),
            "hal-mock: freeing {hpa:#x} ({count} frames), not this machine's memory"
        );
        for i in 0..count {
            let frame = hpa + i * FRAME_SIZE;
            let was = self.generations[self.frame_index(frame)].fetch_add(1, Ordering::SeqCst);
            assert!(was % 2 == 1, "hal-mock: double free of {frame:#x}");
            if !self.poison.load(Ordering::Relaxed) {
                continue;
            }
            let ptr = self.pool.phys_to_virt(frame).as_mut_ptr::<u64>();
            for word in 0..FRAME_SIZE / 8 {
                // SAFETY: the frame is simulated memory that lives as long as the
                // machine; volatile because a buggy vCPU may still touch it (what the
                // generation check reports).
                unsafe {
                    ptr.add(word)
                        .write_volatile(u64::from_ne_bytes([POISON; 8]))
                };
            }
        }
        // SAFETY: the memory block lives as long as the machine, so a frame freed
        // while still in use stays valid memory; what is freed wrongly is the bug
        // under test, and the pool's checks panic on it.
        let owned = unsafe { self.pool.dealloc_checked(hpa, count) };
        if let Err(what) = owned {
            panic!("hal-mock: {what}");
        }
    }

    /// Reserves `[hpa, hpa + size)` if every frame is free simulated memory.
    pub fn alloc_at(&self, hpa: HostPhysAddr, size: usize) -> bool {
        let taken = !self.faults.refuse_alloc_at.load(Ordering::SeqCst)
            && size.is_multiple_of(FRAME_SIZE)
            && self.pool.alloc_at(hpa, size / FRAME_SIZE);
        if taken {
            self.mark_allocated(hpa, size / FRAME_SIZE);
        }
        taken
    }

    fn frame_index(&self, hpa: HostPhysAddr) -> usize {
        (hpa.as_usize() - self.base) / FRAME_SIZE
    }

    fn mark_allocated(&self, hpa: HostPhysAddr, count: usize) {
        for i in 0..count {
            let frame = hpa + i * FRAME_SIZE;
            self.generations[self.frame_index(frame)].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The allocation generation of the frame holding `hpa` (odd while allocated,
    /// even while free), or `None` outside the machine's memory.
    pub fn generation(&self, hpa: HostPhysAddr) -> Option<u64> {
        if !self.contains(hpa, 1) {
            return None;
        }
        Some(self.generations[self.frame_index(hpa)].load(Ordering::SeqCst))
    }

    /// Records a use of a freed frame (called by the software vCPU).
    pub(crate) fn report_stale(&self, what: impl FnOnce() -> String) {
        self.stale_uses.fetch_add(1, Ordering::SeqCst);
        self.keep_report(what);
    }

    /// Records a use of a translation after the call that removed it returned.
    pub(crate) fn report_removed(&self, what: impl FnOnce() -> String) {
        self.stale_translations.fetch_add(1, Ordering::SeqCst);
        self.keep_report(what);
    }

    fn keep_report(&self, what: impl FnOnce() -> String) {
        let mut reports = self.stale_reports.lock().expect("stale reports");
        if reports.len() < STALE_REPORTS_KEPT {
            reports.push(what());
        }
    }

    /// Uses of freed frames seen so far (translations cached or tables walked while
    /// the frame was freed or reallocated). Must stay 0.
    pub fn stale_uses(&self) -> u64 {
        self.stale_uses.load(Ordering::SeqCst)
    }

    /// Uses of a translation after the call that removed or weakened it returned
    /// (for watched pages). Must stay 0.
    pub fn stale_translations(&self) -> u64 {
        self.stale_translations.load(Ordering::SeqCst)
    }

    /// The next tick of the machine's clock (see the module docs).
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Watches the guest pages `pages` of VM `vm` for uses after removal (once per
    /// machine).
    ///
    /// # Panics
    ///
    /// When a watch is already set (test code).
    pub fn watch_removals(&self, vm: usize, pages: impl IntoIterator<Item = GuestPhysAddr>) {
        let map = pages
            .into_iter()
            .map(|p| (p.as_usize() & !(FRAME_SIZE - 1), AtomicU64::new(0)))
            .collect();
        assert!(
            self.removals.set((vm, map)).is_ok(),
            "hal-mock: the machine already has a removal watch"
        );
    }

    /// Records that a call removing or weakening the translations of `range` in VM
    /// `vm`, begun after tick `since`, has returned.
    pub fn removed(&self, vm: usize, range: GpaRange, since: u64) {
        let Some((watched, pages)) = self.removals.get() else {
            return;
        };
        if *watched != vm {
            return;
        }
        for page in (range.start().as_usize()..range.end().as_usize()).step_by(FRAME_SIZE) {
            if let Some(t) = pages.get(&page) {
                t.fetch_max(since, Ordering::SeqCst);
            }
        }
    }

    /// The tick before the last returned call that removed the translation of guest
    /// page `page` of VM `vm`, if the page is watched.
    pub(crate) fn removed_at(&self, vm: usize, page: usize) -> Option<u64> {
        let (watched, pages) = self.removals.get()?;
        if *watched != vm {
            return None;
        }
        pages.get(&page).map(|t| t.load(Ordering::SeqCst))
    }

    /// Descriptions of the first stale uses.
    pub fn stale_reports(&self) -> Vec<String> {
        self.stale_reports.lock().expect("stale reports").clone()
    }

    /// Frames in use now (allocations and reservations).
    pub fn frames_in_use(&self) -> usize {
        self.pool.pool().in_use()
    }

    // ------------------------------------------------------------ injection

    /// Lets `n` more frames be allocated, then fails every `alloc_frames`.
    pub fn fail_frames_after(&self, n: usize) {
        self.pool.pool().fail_after(n);
    }

    /// Removes the frame limit.
    pub fn never_fail(&self) {
        self.pool.pool().never_fail();
    }

    /// Whether freed frames are filled with [`POISON`] (the default) or left as
    /// they are: a tool whose simulated host holds GiBs of identity-mapped guest RAM
    /// that the VM never touched (`cargo xtask inspect`) would otherwise write all
    /// of it when the VM is dropped. Generations still move on.
    pub fn poison_freed_frames(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// Holds every frame allocation from now on (the allocating thread waits, in
    /// whatever locks it holds) until called with `false`: a test's way to keep a
    /// fault handler in the middle of its work and force a race deterministically.
    pub fn hold_frames(&self, hold: bool) {
        self.faults.hold_frames.store(hold, Ordering::SeqCst);
    }

    /// Allocations waiting in [`Machine::hold_frames`] now.
    pub fn frames_waiting(&self) -> usize {
        self.faults.frames_waiting.load(Ordering::SeqCst)
    }

    /// Nested page faults the software vCPUs of this machine have exited with.
    pub fn nested_faults(&self) -> u64 {
        self.faults.nested_faults.load(Ordering::SeqCst)
    }

    /// Makes every `alloc_memory_region_at` fail (or work again).
    pub fn refuse_alloc_at(&self, refuse: bool) {
        self.faults.refuse_alloc_at.store(refuse, Ordering::SeqCst);
    }

    /// Makes `broadcast_guest_tlb_invalidate` invalidate the range in every software
    /// TLB of the VM and return `true` (like Arm's inner-shareable TLBI), instead of
    /// `false`.
    pub fn set_broadcast(&self, on: bool) {
        self.faults.broadcast.store(on, Ordering::SeqCst);
    }

    // ------------------------------------------------------------ CPUs

    /// Physical CPU `id`.
    pub fn pcpu(&self, id: usize) -> &Pcpu {
        &self.pcpus[id]
    }

    /// Kicks received by physical CPU `id`.
    pub fn kicks_of(&self, id: usize) -> u64 {
        self.pcpus[id].kicks.load(Ordering::SeqCst)
    }

    pub(crate) fn kick(&self, id: usize) {
        if let Some(p) = self.pcpus.get(id) {
            p.kicks.fetch_add(1, Ordering::SeqCst);
            p.kick.store(true, Ordering::SeqCst);
        }
    }

    /// Consumes the kick flag of physical CPU `id`.
    pub(crate) fn take_kick(&self, id: usize) -> bool {
        self.pcpus
            .get(id)
            .is_some_and(|p| p.kick.swap(false, Ordering::SeqCst))
    }

    pub(crate) fn register_tlb(&self, vm: usize, tlb: &Arc<TlbCache>) {
        let mut t = self.tlbs.lock().expect("tlb registry");
        let list = t.entry(vm).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(tlb));
    }

    /// The broadcast invalidation of `range` for VM `vm`: every software TLB of the
    /// VM drops its entries for the pages of `range` and only those (like `TLBI
    /// IPAS2E1IS` / `HFENCE.GVMA` by address), waiting for an access in progress.
    pub(crate) fn broadcast_invalidate(&self, vm: usize, range: GpaRange) -> bool {
        if !self.faults.broadcast.load(Ordering::SeqCst) {
            return false;
        }
        let (vm, range) = {
            let mut fault = self.faults.invalidation.lock().expect("invalidation fault");
            match fault.0 {
                InvalidationFault::None => (vm, range),
                InvalidationFault::Dropped => return true,
                InvalidationFault::Late => {
                    fault.1.push_back((vm, range));
                    if fault.1.len() <= LATE_BY {
                        return true;
                    }
                    match fault.1.pop_front() {
                        Some(owed) => owed,
                        None => return true,
                    }
                }
            }
        };
        let n = self.broadcasts.fetch_add(1, Ordering::SeqCst);
        let tlbs: Vec<Arc<TlbCache>> = {
            let t = self.tlbs.lock().expect("tlb registry");
            t.get(&vm)
                .into_iter()
                .flatten()
                .filter_map(Weak::upgrade)
                .collect()
        };
        for tlb in tlbs {
            // The broadcast reaches each CPU at its own time, and its caller may be
            // preempted meanwhile while vCPUs and other host threads go on: every
            // few broadcasts stall before each TLB, so tests see those interleavings.
            if n % STALL_EVERY == STALL_EVERY - 1 {
                std::thread::sleep(STALL);
            }
            tlb.invalidate_range(range);
        }
        true
    }

    /// Gives the machine `n` VMIDs (at most [`MAX_VMIDS`]) for the VMs created from
    /// now on.
    pub fn set_vmids(&self, n: usize) {
        self.vmid_limit.store(n.min(MAX_VMIDS), Ordering::SeqCst);
    }

    /// Claims a VMID for VM `vm` (`ArchVCpu::claim_vm` of the mock vCPU).
    pub(crate) fn claim_vmid(&self, vm: usize) -> vcpu_api::VCpuResult<u16> {
        self.vmids.claim(vm, self.vmid_limit.load(Ordering::SeqCst))
    }

    /// The VMID of live VM `vm`.
    pub fn vmid_of(&self, vm: usize) -> Option<u16> {
        self.vmids.tag_of(vm)
    }

    /// Invalidates every software TLB entry of VM `vm` and frees its VMID
    /// (`ArchVCpu::release_vm`), noting the release.
    pub(crate) fn release_vmid(&self, vm: usize) {
        let Some(vmid) = self.vmids.tag_of(vm) else {
            return;
        };
        let tlbs = self.tlbs.lock().expect("tlb registry").remove(&vm);
        for tlb in tlbs.into_iter().flatten().filter_map(|w| w.upgrade()) {
            tlb.flush();
        }
        self.vmid_releases
            .lock()
            .expect("vmid releases")
            .push(VmidRelease {
                vm,
                vmid,
                frames_in_use: self.frames_in_use(),
            });
        self.vmids.release(vm);
    }

    /// The VMIDs released so far, in order.
    pub fn vmid_releases(&self) -> Vec<VmidRelease> {
        self.vmid_releases.lock().expect("vmid releases").clone()
    }

    /// Breaks (or repairs) the broadcast invalidation from now on.
    pub fn set_invalidation_fault(&self, fault: InvalidationFault) {
        *self.faults.invalidation.lock().expect("invalidation fault") = (fault, VecDeque::new());
    }

    /// Broadcast invalidations performed.
    pub fn broadcasts(&self) -> u64 {
        self.broadcasts.load(Ordering::SeqCst)
    }

    /// Nanoseconds since the machine was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// [`Machine::now_ns`] for a wait loop: a thread that has read the clock
    /// without a pause of 5 µs for [`SPIN_BUDGET_NS`] gives up its host CPU
    /// (once per call from then on). vm-core reads the time only while it waits for
    /// vCPUs (shootdown, pause); when the host has more spinning threads than cores,
    /// the vCPU thread waited for may be queued on this very core, behind the waiter.
    /// A wait that ends within the budget (every vCPU on a core of its own) never
    /// yields.
    pub fn now_ns_polled(&self) -> u64 {
        let now = self.now_ns();
        let at = Instant::now();
        let waited = POLLING.with(|p| {
            let since = match p.get() {
                Some((last, since)) if at.duration_since(last).as_nanos() <= POLL_GAP_NS.into() => {
                    since
                }
                _ => at,
            };
            p.set(Some((at, since)));
            at.duration_since(since)
        });
        if waited.as_nanos() > SPIN_BUDGET_NS.into() {
            std::thread::yield_now();
        }
        now
    }
}

impl core::fmt::Debug for Machine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Machine")
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .field("frames_in_use", &self.frames_in_use())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_aligned_contiguous_and_counted() {
        let m = Machine::new(0x1_0000_1000, 0x40_0000);
        let a = m.alloc_frames(1, 1).unwrap();
        assert_eq!(a.as_usize(), 0x1_0000_1000);
        // 4 frames aligned to 16 KiB: the first aligned index is past `a`.
        let b = m.alloc_frames(4, 4).unwrap();
        assert!(b.as_usize().is_multiple_of(0x4000));
        assert_eq!(m.frames_in_use(), 5);
        m.dealloc_frames(b, 4);
        m.dealloc_frames(a, 1);
        assert_eq!(m.frames_in_use(), 0);
        m.fail_frames_after(2);
        assert!(m.alloc_frames(3, 1).is_none());
        let c = m.alloc_frames(2, 1).unwrap();
        assert!(m.alloc_frames(1, 1).is_none());
        m.never_fail();
        m.dealloc_frames(c, 2);
    }

    #[test]
    fn freed_frames_keep_their_bytes_when_poison_is_off() {
        let m = Machine::new(0x4000_0000, 0x10_0000);
        m.poison_freed_frames(false);
        let a = m.alloc_frames(1, 1).unwrap();
        let g = m.generation(a).unwrap();
        let p = m.phys_to_virt(a).as_mut_ptr::<u8>();
        // SAFETY: a frame of this machine, allocated above and not shared.
        unsafe { p.write(7) };
        m.dealloc_frames(a, 1);
        // SAFETY: the machine's memory lives as long as it; nothing else uses it.
        assert_eq!(unsafe { p.read() }, 7);
        assert_eq!(m.generation(a), Some(g + 1));
    }

    #[test]
    fn alloc_at_succeeds_only_on_free_memory() {
        let m = Machine::new(0x4000_0000, 0x10_0000);
        let hpa = HostPhysAddr::from_usize;
        assert!(m.alloc_at(hpa(0x4001_0000), 0x2000));
        assert!(!m.alloc_at(hpa(0x4001_1000), 0x1000), "taken");
        assert!(!m.alloc_at(hpa(0x3fff_f000), 0x2000), "outside");
        assert!(!m.alloc_at(hpa(0x400f_f000), 0x2000), "runs past the end");
        m.refuse_alloc_at(true);
        assert!(
            !m.alloc_at(hpa(0x4002_0000), 0x1000),
            "refused by injection"
        );
        m.refuse_alloc_at(false);
        m.dealloc_frames(hpa(0x4001_0000), 2);
        assert!(m.alloc_at(hpa(0x4001_1000), 0x1000), "free again");
    }

    /// Found by the `vm_ops` fuzz target: one thread that waited on a machine made
    /// earlier, then on a machine made later (the clocks of two machines differ),
    /// subtracted the first machine's time from the second's and overflowed.
    #[test]
    fn polled_clock_of_a_second_machine_on_one_thread_never_overflows() {
        let first = Machine::new(0x1000, 0x4000);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let t = first.now_ns_polled();
        assert!(t >= 5_000_000);
        let second = Machine::new(0x1000, 0x4000);
        let u = second.now_ns_polled();
        assert!(u < t, "the second machine's clock starts later");
        assert!(second.now_ns_polled() >= u);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let m = Machine::new(0x1000, 0x4000);
        let a = m.alloc_frames(1, 1).unwrap();
        m.dealloc_frames(a, 1);
        m.dealloc_frames(a, 1);
    }

    #[test]
    #[should_panic(expected = "not a run of one live allocation")]
    fn a_free_of_a_merged_run_is_caught() {
        let m = Machine::new(0x1000, 0x4000);
        let a = m.alloc_frames(1, 1).unwrap();
        let b = m.alloc_frames(1, 1).unwrap();
        assert_eq!(b, a + FRAME_SIZE, "lowest first: adjacent");
        // Two allocations freed as one run, as a caller merging adjacent frames would.
        m.dealloc_frames(a, 2);
    }

    #[test]
    #[should_panic(expected = "not a run of one live allocation")]
    fn a_free_across_a_reservation_and_an_allocation_is_caught() {
        let m = Machine::new(0x1000, 0x4000);
        let a = m.alloc_frames(1, 1).unwrap();
        assert!(m.alloc_at(a + FRAME_SIZE, 2 * FRAME_SIZE));
        // The reservation's frames are its own allocation: freeing it alone is right.
        m.dealloc_frames(a + FRAME_SIZE, 2);
        assert!(m.alloc_at(a + FRAME_SIZE, 2 * FRAME_SIZE));
        m.dealloc_frames(a, 2);
    }

    #[test]
    fn freed_frames_are_poisoned_and_move_to_a_new_generation() {
        let m = Machine::new(0x1_0000, 0x4000);
        let a = m.alloc_frames(1, 1).unwrap();
        let g = m.generation(a).unwrap();
        assert_eq!(g % 2, 1, "allocated: odd");
        let p = m.phys_to_virt(a).as_mut_ptr::<u8>();
        // SAFETY: a frame of the machine's memory, allocated above.
        unsafe { p.write_bytes(0x11, FRAME_SIZE) };
        m.dealloc_frames(a, 1);
        assert_eq!(m.generation(a), Some(g + 1), "free: even");
        // SAFETY: the machine's memory lives as long as the machine.
        let bytes = unsafe { core::slice::from_raw_parts(p, FRAME_SIZE) };
        assert!(bytes.iter().all(|&b| b == POISON));
        assert_eq!(m.alloc_frames(1, 1), Some(a));
        assert_eq!(m.generation(a), Some(g + 2));
        assert!(m.alloc_at(a + FRAME_SIZE, 2 * FRAME_SIZE));
        assert_eq!(m.generation(a + 2 * FRAME_SIZE), Some(1));
        assert_eq!(
            m.generation(HostPhysAddr::from_usize(0x1000)),
            None,
            "outside"
        );
    }

    #[test]
    fn removals_are_watched_per_vm_and_page() {
        let m = Machine::with_defaults();
        let g = GuestPhysAddr::from_usize;
        assert_eq!(m.removed_at(1, 0x4000_0000), None, "nothing watched");
        m.watch_removals(1, [g(0x4000_0000), g(0x4000_1000)]);
        let t = m.tick();
        assert!(m.tick() > t);
        m.removed(1, GpaRange::new(g(0x4000_1000), 0x2000).unwrap(), t);
        m.removed(2, GpaRange::new(g(0x4000_0000), 0x1000).unwrap(), t);
        assert_eq!(m.removed_at(1, 0x4000_0000), Some(0));
        assert_eq!(m.removed_at(1, 0x4000_1000), Some(t));
        assert_eq!(m.removed_at(1, 0x4000_2000), None, "not watched");
        assert_eq!(m.removed_at(2, 0x4000_0000), None, "another VM");
    }

    #[test]
    fn kicks_are_sticky_until_taken() {
        let m = Machine::with_defaults();
        m.kick(3);
        assert_eq!(m.kicks_of(3), 1);
        assert!(m.take_kick(3));
        assert!(!m.take_kick(3));
        assert!(!m.take_kick(4));
        m.kick(MAX_PCPUS + 1); // ignored
    }
}
