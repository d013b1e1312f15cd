//! The test guest's checks, written once for every architecture against [`GuestOps`].
//! Each board's guest entry code implements [`GuestOps`] and calls [`run_primary`] on
//! vCPU 0 and [`run_secondary`] on vCPU 1.

use crate::protocol::{
    Call, Check, DIAGNOSE_WALK, FAULT_READ, FAULT_WRITE, GuestLayout, MAILBOX_MAGIC, RO_PATTERN,
    test_device,
};

/// Access widths the guest uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 1 byte.
    W8,
    /// 2 bytes.
    W16,
    /// 4 bytes.
    W32,
    /// 8 bytes.
    W64,
}

impl Width {
    /// All widths, smallest first.
    pub const ALL: [Width; 4] = [Width::W8, Width::W16, Width::W32, Width::W64];

    /// Mask of the width's bits.
    pub const fn mask(self) -> u64 {
        match self {
            Width::W8 => 0xff,
            Width::W16 => 0xffff,
            Width::W32 => 0xffff_ffff,
            Width::W64 => u64::MAX,
        }
    }
}

/// What a guest architecture provides to the checks.
pub trait GuestOps {
    /// Makes hypercall `call` with up to four arguments and returns its result.
    fn call(&self, call: Call, args: [u64; 4]) -> u64;

    /// Writes `s` to the guest's console.
    fn print(&self, s: &str);

    /// Starts the vCPU the guest names `cpu` (its MPIDR affinity, hart id, APIC id)
    /// at the guest's secondary entry with `arg`; `false` if the hypervisor refused.
    fn start_secondary(&self, cpu: u64, arg: u64) -> bool;

    /// The id the running vCPU has (MPIDR affinity, hart id), when the architecture
    /// lets the guest see it.
    fn cpu_id(&self) -> Option<u64>;

    /// Stops the calling vCPU (secondary only).
    fn stop_self(&self) -> !;

    /// Powers the VM off.
    fn shutdown(&self) -> !;

    /// A hint inside spin loops (yield to the hypervisor, `wfe`, `pause`).
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// A zero-extending load of `width` at guest-physical `addr`.
    ///
    /// # Safety
    ///
    /// `addr` is aligned to the width; the access may fault to the hypervisor.
    unsafe fn load(&self, addr: u64, width: Width) -> u64 {
        // SAFETY: per the caller; the guest's memory is identity-mapped.
        unsafe {
            match width {
                Width::W8 => u64::from(core::ptr::read_volatile(addr as *const u8)),
                Width::W16 => u64::from(core::ptr::read_volatile(addr as *const u16)),
                Width::W32 => u64::from(core::ptr::read_volatile(addr as *const u32)),
                Width::W64 => core::ptr::read_volatile(addr as *const u64),
            }
        }
    }

    /// A sign-extending load of `width` (8, 16 or 32 bits) at `addr`, with the
    /// architecture's sign-extending load instruction (LDRSB, LB, MOVSX).
    ///
    /// # Safety
    ///
    /// As [`GuestOps::load`].
    unsafe fn load_signed(&self, addr: u64, width: Width) -> u64;

    /// A store of the low `width` bits of `value` at `addr`.
    ///
    /// # Safety
    ///
    /// As [`GuestOps::load`], and the store may overwrite anything at `addr`.
    unsafe fn store(&self, addr: u64, width: Width, value: u64) {
        // The value's low bytes, as the width stores them.
        let b = value.to_le_bytes();
        // SAFETY: per the caller; the guest's memory is identity-mapped.
        unsafe {
            match width {
                Width::W8 => core::ptr::write_volatile(addr as *mut u8, b[0]),
                Width::W16 => {
                    core::ptr::write_volatile(addr as *mut u16, u16::from_le_bytes([b[0], b[1]]))
                }
                Width::W32 => core::ptr::write_volatile(
                    addr as *mut u32,
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                ),
                Width::W64 => core::ptr::write_volatile(addr as *mut u64, value),
            }
        }
    }
}

/// A load at an address of the board's [`GuestLayout`] (RAM, the test device, or an
/// address the guest announced to the hypervisor as an expected fault).
fn ld<G: GuestOps>(g: &G, addr: u64, w: Width) -> u64 {
    // SAFETY: every caller passes an aligned address taken from the layout; the
    // layout's regions are the guest's own memory, its device, or pages the
    // hypervisor was told will fault and skips.
    unsafe { g.load(addr, w) }
}

/// A store at an address of the board's [`GuestLayout`], as [`ld`].
fn st<G: GuestOps>(g: &G, addr: u64, w: Width, value: u64) {
    // SAFETY: as in `ld`; the stores only hit scratch RAM, the lazy region, the
    // mailbox, the unmap page or the device, never the guest's code or stack.
    unsafe { g.store(addr, w, value) }
}

/// A failed step: the number says which.
type Step = Result<(), u64>;

fn ensure(ok: bool, step: u64) -> Step {
    if ok { Ok(()) } else { Err(step) }
}

fn report<G: GuestOps>(g: &G, check: Check, result: Step) {
    let (passed, detail) = match result {
        Ok(()) => (1, 0),
        Err(step) => (0, step),
    };
    g.call(Call::Report, [check as u64, passed, detail, 0]);
}

/// Runs every check on vCPU 0, then powers off.
pub fn run_primary<G: GuestOps>(g: &G, l: &GuestLayout) -> ! {
    report(g, Check::RamReadWrite, ram(g, l));
    report(g, Check::LazyFaultIn, lazy(g, l));
    report(g, Check::ReadOnlyRefused, read_only(g, l));
    report(g, Check::MmioWidths, mmio(g, l));
    g.print("guest console: hello from the guest\n");
    report(g, Check::Console, Ok(()));
    report(g, Check::Hypercall, hypercall(g));
    report(g, Check::UnmapThenFault, unmap_then_fault(g, l));
    report(g, Check::SecondaryVcpu, secondary(g, l));
    report(g, Check::OutsideAccess, outside(g, l));
    g.shutdown()
}

/// What vCPU 1 runs: its own check and report, then the answer in the mailbox, then
/// stop. The mailbox comes last so that once vCPU 0 sees it, the report is in (vCPU 0
/// may power the VM off right after).
pub fn run_secondary<G: GuestOps>(g: &G, l: &GuestLayout, arg: u64) -> ! {
    let sum = g.call(Call::Add, [arg, 0, 0, 0]);
    let runs = ensure(sum == arg, 1).and_then(|()| ensure(is_cpu(g, l.cpu_ids[1]), 2));
    report(g, Check::SecondaryRuns, runs);
    st(g, l.mailbox, Width::W64, arg ^ MAILBOX_MAGIC);
    g.stop_self()
}

fn pattern(i: u64) -> u64 {
    0x0123_4567_89ab_cdef_u64.rotate_left(u32::from(i.to_le_bytes()[0]) * 8) ^ i
}

fn ram<G: GuestOps>(g: &G, l: &GuestLayout) -> Step {
    let base = l.scratch;
    // Every width, at every aligned offset of one 16-byte slot.
    for (i, w) in Width::ALL.into_iter().enumerate() {
        let step = 1 + i as u64;
        let value = pattern(step) & w.mask();
        st(g, base + 16 * step, w, value);
        let back = ld(g, base + 16 * step, w);
        ensure(back == value, step)?;
    }
    // Words across the boundary of the two scratch pages.
    let words = 64u64;
    let start = base + 0x1000 - words * 4;
    for i in 0..words {
        st(g, start + i * 8, Width::W64, pattern(i));
    }
    for i in 0..words {
        let v = ld(g, start + i * 8, Width::W64);
        ensure(v == pattern(i), 100 + i)?;
    }
    Ok(())
}

fn lazy<G: GuestOps>(g: &G, l: &GuestLayout) -> Step {
    for (n, addr) in [l.lazy_base, l.lazy_base + l.lazy_size - 8]
        .into_iter()
        .enumerate()
    {
        let step = 10 * (n as u64 + 1);
        let first = ld(g, addr, Width::W64);
        ensure(first == 0, step + 1)?;
        st(g, addr, Width::W64, pattern(step));
        let back = ld(g, addr, Width::W64);
        ensure(back == pattern(step), step + 2)?;
    }
    Ok(())
}

fn expect_fault<G: GuestOps>(g: &G, addr: u64, kind: u64, access: impl FnOnce()) -> Step {
    g.call(Call::ExpectFault, [addr, kind, 0, 0]);
    access();
    ensure(g.call(Call::FaultSeen, [0; 4]) == 1, 90)
}

fn read_only<G: GuestOps>(g: &G, l: &GuestLayout) -> Step {
    let v = ld(g, l.ro_base, Width::W64);
    ensure(v == RO_PATTERN, 1)?;
    let target = l.ro_base + 8;
    expect_fault(g, target, FAULT_WRITE, || st(g, target, Width::W64, 0xbad)).map_err(|_| 2u64)?;
    let after = ld(g, target, Width::W64);
    ensure(after == 0, 3)
}

fn mmio<G: GuestOps>(g: &G, l: &GuestLayout) -> Step {
    let reg = |off| l.mmio_base + off;
    let id = ld(g, reg(test_device::ID), Width::W64);
    ensure(id == test_device::ID_VALUE, 1)?;
    for (i, w) in Width::ALL.into_iter().enumerate() {
        let step = 10 + i as u64;
        let value = pattern(step) & w.mask();
        st(g, reg(test_device::SCRATCH), w, value);
        let back = ld(g, reg(test_device::SCRATCH), w);
        ensure(back == value, step)?;
    }
    for (i, w) in [Width::W8, Width::W16, Width::W32].into_iter().enumerate() {
        // SAFETY: a register of the emulated test device.
        let v = unsafe { g.load_signed(reg(test_device::NEGATIVE_REG), w) };
        ensure(v == test_device::NEGATIVE, 20 + i as u64)?;
    }
    let a = ld(g, reg(test_device::COUNTER), Width::W32);
    let b = ld(g, reg(test_device::COUNTER), Width::W32);
    ensure(b == a + 1, 30)
}

fn hypercall<G: GuestOps>(g: &G) -> Step {
    ensure(g.call(Call::Add, [1, 2, 3, 4]) == 30, 1)?;
    ensure(g.call(Call::Add, [u64::MAX, 1, 0, 0]) == 1, 2)?;
    ensure(g.call(Call::Add, [0, 0, 0, 1 << 60]) == 1 << 62, 3)
}

fn unmap_then_fault<G: GuestOps>(g: &G, l: &GuestLayout) -> Step {
    let page = l.unmap_page;
    st(g, page, Width::W64, pattern(7));
    let back = ld(g, page, Width::W64);
    ensure(back == pattern(7), 1)?;
    // The hypervisor's diagnostics (printed on its console) see the page mapped,
    // then gone with the unmap.
    ensure(g.call(Call::Diagnose, [page, DIAGNOSE_WALK, 0, 0]) == 1, 4)?;
    ensure(g.call(Call::Unmap, [page, 0, 0, 0]) == 0, 2)?;
    ensure(g.call(Call::Diagnose, [page, FAULT_READ, 0, 0]) == 0, 5)?;
    expect_fault(g, page, FAULT_READ, || {
        ld(g, page, Width::W64);
    })
    .map_err(|_| 3u64)
}

/// Whether the running vCPU has the id `id` (when the guest can see its id).
fn is_cpu<G: GuestOps>(g: &G, id: u64) -> bool {
    g.cpu_id().is_none_or(|own| own == id)
}

fn secondary<G: GuestOps>(g: &G, l: &GuestLayout) -> Step {
    let arg = 0x5ec0_0001;
    ensure(is_cpu(g, l.cpu_ids[0]), 3)?;
    st(g, l.mailbox, Width::W64, 0);
    ensure(g.start_secondary(l.cpu_ids[1], arg), 1)?;
    for _ in 0..50_000_000u64 {
        if ld(g, l.mailbox, Width::W64) == arg ^ MAILBOX_MAGIC {
            return Ok(());
        }
        g.relax();
    }
    Err(2)
}

fn outside<G: GuestOps>(g: &G, l: &GuestLayout) -> Step {
    expect_fault(g, l.outside, FAULT_READ, || {
        ld(g, l.outside, Width::W64);
    })
}
