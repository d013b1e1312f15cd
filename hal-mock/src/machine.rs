//! [`Machine`]: one simulated host — physical memory at its own host-physical range
//! with a frame allocator over it (an `addrspace::testing::PoolAllocator`), physical
//! CPUs with kick flags, failure injection and counters. Each test makes its own;
//! threads join one with [`Machine::enter`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use addrspace::testing::PoolAllocator;
use addrspace::{FRAME_SIZE, FrameAllocator, HostPhysAddr, HostVirtAddr};

use crate::vcpu::TlbCache;

/// The most physical CPUs a machine has (kick flags).
pub const MAX_PCPUS: usize = 64;

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
    /// Answer `broadcast_guest_tlb_invalidate` with a broadcast (flushing every
    /// software TLB of the VM) instead of `false`.
    pub(crate) broadcast: AtomicBool,
}

/// One simulated host. See the module docs.
pub struct Machine {
    base: usize,
    size: usize,
    /// The memory and its frames: allocations, reservations, the failure budget and
    /// the in-use count.
    pool: PoolAllocator,
    pcpus: Vec<Pcpu>,
    pub(crate) faults: Faults,
    start: Instant,
    /// Software TLBs of the vCPUs, by VM id, for broadcast invalidation.
    tlbs: Mutex<HashMap<usize, Vec<Weak<TlbCache>>>>,
    /// Interrupts injected: (vm, vcpu, irq).
    irqs: Mutex<Vec<(usize, usize, usize)>>,
    broadcasts: AtomicU64,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Machine>>> = const { RefCell::new(None) };
    static PCPU: RefCell<usize> = const { RefCell::new(0) };
    static RUNNING: RefCell<Option<(usize, usize)>> = const { RefCell::new(None) };
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
            pool: PoolAllocator::with_base(size / FRAME_SIZE, base),
            pcpus: (0..MAX_PCPUS).map(|_| Pcpu::default()).collect(),
            faults: Faults::default(),
            start: Instant::now(),
            tlbs: Mutex::new(HashMap::new()),
            irqs: Mutex::new(Vec::new()),
            broadcasts: AtomicU64::new(0),
        })
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

    pub(crate) fn set_running(v: Option<(usize, usize)>) {
        RUNNING.with(|r| *r.borrow_mut() = v);
    }

    pub(crate) fn running() -> Option<(usize, usize)> {
        RUNNING.with(|r| *r.borrow())
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
        self.pool.alloc_frames(count, align)
    }

    /// Frees frames.
    ///
    /// # Panics
    ///
    /// On a double free or a foreign frame (the bugs these tests look for).
    pub fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the memory block lives as long as the machine, so a frame freed
        // while still in use stays valid memory; what is freed wrongly is the bug
        // under test, and the pool's checks panic on it.
        unsafe { self.pool.dealloc_frames(hpa, count) }
    }

    /// Reserves `[hpa, hpa + size)` if every frame is free simulated memory.
    pub fn alloc_at(&self, hpa: HostPhysAddr, size: usize) -> bool {
        !self.faults.refuse_alloc_at.load(Ordering::SeqCst)
            && size.is_multiple_of(FRAME_SIZE)
            && self.pool.alloc_at(hpa, size / FRAME_SIZE)
    }

    /// Frames in use now (allocations and reservations).
    pub fn frames_in_use(&self) -> usize {
        self.pool.in_use()
    }

    // ------------------------------------------------------------ injection

    /// Lets `n` more frames be allocated, then fails every `alloc_frames`.
    pub fn fail_frames_after(&self, n: usize) {
        self.pool.fail_after(n);
    }

    /// Removes the frame limit.
    pub fn never_fail(&self) {
        self.pool.never_fail();
    }

    /// Makes every `alloc_memory_region_at` fail (or work again).
    pub fn refuse_alloc_at(&self, refuse: bool) {
        self.faults.refuse_alloc_at.store(refuse, Ordering::SeqCst);
    }

    /// Makes `broadcast_guest_tlb_invalidate` flush every software TLB of the VM
    /// and return `true` (like Arm's inner-shareable TLBI), instead of `false`.
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

    pub(crate) fn broadcast_invalidate(&self, vm: usize) -> bool {
        if !self.faults.broadcast.load(Ordering::SeqCst) {
            return false;
        }
        self.broadcasts.fetch_add(1, Ordering::SeqCst);
        let t = self.tlbs.lock().expect("tlb registry");
        for tlb in t.get(&vm).into_iter().flatten().filter_map(Weak::upgrade) {
            tlb.flush();
        }
        true
    }

    /// Broadcast invalidations performed.
    pub fn broadcasts(&self) -> u64 {
        self.broadcasts.load(Ordering::SeqCst)
    }

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

    /// Interrupts injected so far: (vm, vcpu, irq).
    pub fn injected(&self) -> Vec<(usize, usize, usize)> {
        self.irqs.lock().expect("irq list").clone()
    }

    /// Nanoseconds since the machine was made.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
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

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_is_caught() {
        let m = Machine::new(0x1000, 0x4000);
        let a = m.alloc_frames(1, 1).unwrap();
        m.dealloc_frames(a, 1);
        m.dealloc_frames(a, 1);
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
