//! The address-space workloads of issue #7, each written once over [`Subject`] and
//! run in alternating rounds for our EPT space, our Arm stage-2 space and
//! axaddrspace's EPT space, all drawing frames from the same pool.

use std::hint::black_box;

use addrspace::testing::PoolAllocator;
use addrspace::{
    AccessKind, ArmStage2Ipa40, Ept, FRAME_SIZE, FaultOutcome, FrameAllocator, GuestPhysAddr,
    HostPhysAddr, MappingFlags, Populate,
};

use crate::harness::{Figure, Rng, Target, alternate, alternate_warm, median, median_of, timed};
use crate::pool::{self, KnownZero};
use crate::subject::{Frames, Ours, Peer, Subject};

const K4: usize = 0x1000;
const M2: usize = 0x20_0000;
const G1: usize = 0x4000_0000;
const T1: usize = 1 << 40;

/// Where the 1 GiB linear mappings start in guest-physical space.
const GPA: usize = G1;
/// Host-physical base of linear mappings that are only numbers (never read): 256 GiB,
/// 1 GiB-aligned, below the pool.
const HPA_LIN: usize = 0x40_0000_0000;
/// Host-physical base of the 1 TiB mapping (1 TiB, above the pool).
const HPA_1T: usize = 0x100_0000_0000;

/// Fresh spaces per sample for maps that take only microseconds.
const MAP_REPS: usize = 64;
/// Size of the populate and lazy-fault areas.
pub const ALLOC_AREA: usize = 256 << 20;
/// Pages faulted again per round for `refault` (the peer leaks one frame each).
pub const REFAULTS: usize = 2048;
/// Mapped sizes of the 4 KiB-leaf growth series.
pub const GROWTH: [usize; 4] = [64 << 20, 256 << 20, G1, 4 * G1];
/// Bytes read by `read_64k_vs_memcpy`, starting this far into a page.
const READ_LEN: usize = 64 << 10;
const READ_OFF: usize = 0x800;

/// Pool frames the address-space workloads need with `rounds` rounds: the largest
/// live set (256 MiB of guest frames and their tables) plus the frames the two peer
/// subjects leak in `refault` (never returned), plus slack.
pub fn pool_frames(rounds: usize) -> usize {
    ALLOC_AREA / FRAME_SIZE + 2 * rounds * REFAULTS + 8192
}

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Rounds per workload (each subject runs once per round).
    pub rounds: usize,
    /// Random translations per warm translate sample.
    pub translations: usize,
    /// Batches of cold translations per sample.
    pub cold_batches: usize,
    /// Reads per `read_64k` sample.
    pub reads: usize,
    /// Run only the workload groups whose name contains this (`leaf1g`, `leaf2m`,
    /// `leaf4k`, `translate`, `populate`, `touch`, `fault`, `zeroing`, `read`, `1t`, `growth`): for profiling.
    pub only: Option<String>,
}

impl Config {
    fn wants(&self, group: &str) -> bool {
        self.only.as_deref().is_none_or(|o| group.contains(o))
    }
}

/// Checks that the pool is back to `before` frames in use: a subject that keeps
/// frames after its drop would distort every later figure.
fn check_returned<S: Subject>(before: usize, what: &str) -> Result<(), String> {
    let now = pool::in_use();
    if now != before {
        return Err(format!(
            "{}: {what}: {} frames still in use after drop",
            S::NAME,
            now as isize - before as isize
        ));
    }
    Ok(())
}

/// One round of the 1 GiB linear workload with HPA offset `hpa_off` (0: 1 GiB leaves,
/// 2 MiB: 2 MiB leaves, 4 KiB: 4 KiB leaves). Returns `[map s, unmap s, table frames
/// after map (root included), table frames after unmap]`.
fn leaf_round<S: Subject>(hpa_off: usize) -> Result<Vec<f64>, String> {
    let before = pool::in_use();
    let hpa = HPA_LIN + hpa_off;
    // A map or unmap of a few huge leaves takes well under a few microseconds, close
    // to the timer's resolution: map (and later unmap) `MAP_REPS` fresh spaces in one
    // timed loop and divide, so the figure is not a count of timer ticks.
    let reps = if hpa_off == K4 { 1 } else { MAP_REPS };
    let mut spaces = (0..reps)
        .map(|_| S::new())
        .collect::<Result<Vec<S>, String>>()?;
    let (r, total) = timed(|| {
        spaces
            .iter_mut()
            .try_for_each(|s| s.map_linear(GPA, hpa, G1))
    });
    r?;
    let map = total / reps as f64;
    let tables = ((pool::in_use() - before) / reps) as f64;
    let probe = GPA + 0x12_3456;
    if let Some(s) = spaces
        .iter()
        .find(|s| s.translate(probe) != Some(hpa + 0x12_3456))
    {
        return Err(format!(
            "{}: translate after map: {probe:#x} -> {:?}",
            S::NAME,
            s.translate(probe)
        ));
    }
    let (r, total) = timed(|| spaces.iter_mut().try_for_each(|s| s.unmap(GPA, G1)));
    r?;
    let unmap = total / reps as f64;
    let after = (pool::in_use() - before) / reps;
    if spaces.iter().any(|s| s.translate(probe).is_some()) {
        return Err(format!(
            "{}: {probe:#x} still translated after unmap",
            S::NAME
        ));
    }
    drop(spaces);
    check_returned::<S>(before, "1 GiB linear")?;
    Ok(vec![map, unmap, tables, after as f64])
}

/// GPAs per cold translate batch: each batch starts with every cache evicted.
const COLD_BATCH: usize = 4096;

/// One round of the translate workload: a space with `size` bytes mapped linearly at
/// [`GPA`] with HPA offset `hpa_off` (so the leaves are 4 KiB, 2 MiB or 1 GiB), then
/// `gpas` (random, inside the mapping) translated through the subject's public
/// translate. Returns `[warm ns, cold ns, floor ns]` per translation: warm is a second
/// pass over all of `gpas` right after a first (the tables as hot as they get), cold
/// is `cold_batches` batches of [`COLD_BATCH`] GPAs each run after [`evict_caches`],
/// and floor (NaN for a subject that does not name its descriptors) is the same
/// batches' leaf descriptors loaded after the same eviction: the one memory access
/// every translation of the GPA makes, loads independent as the translations are.
fn translate_round<S: Subject>(
    size: usize,
    hpa_off: usize,
    gpas: &[usize],
    cold_batches: usize,
) -> Result<Vec<f64>, String> {
    let before = pool::in_use();
    let hpa = HPA_LIN + hpa_off;
    let mut s = S::new()?;
    s.map_linear(GPA, hpa, size)?;
    let pass = |s: &S, gpas: &[usize]| {
        let (mut acc, mut missed) = (0usize, 0usize);
        for &g in gpas {
            match s.translate(black_box(g)) {
                Some(h) => acc = acc.wrapping_add(h),
                None => missed += 1,
            }
        }
        black_box(acc);
        missed
    };
    let mut missed = pass(&s, gpas);
    let (m, warm) = timed(|| pass(&s, gpas));
    missed += m;
    let (mut cold, mut floor) = (0.0, 0.0);
    for b in 0..cold_batches {
        let batch = &gpas[(b * COLD_BATCH) % (gpas.len() - COLD_BATCH)..][..COLD_BATCH];
        evict_caches();
        let (m, t) = timed(|| pass(&s, batch));
        missed += m;
        cold += t;
        floor += match s.leaf_descriptors(batch) {
            Some(leaves) => {
                evict_caches();
                let (acc, t) = timed(|| {
                    leaves.iter().fold(0u64, |acc, &p| {
                        // SAFETY: `p` points at a descriptor of `s`'s tables, which
                        // stay allocated and unchanged while `s` lives (nothing maps
                        // or unmaps during the loop); volatile so every load happens.
                        acc.wrapping_add(unsafe { p.read_volatile() })
                    })
                });
                black_box(acc);
                t
            }
            None => f64::NAN,
        };
    }
    let probe = GPA + size - 0x12_3456;
    if missed != 0 || s.translate(probe) != Some(hpa + size - 0x12_3456) {
        return Err(format!(
            "{}: translate: {missed} misses, {probe:#x} -> {:?}",
            S::NAME,
            s.translate(probe)
        ));
    }
    drop(s);
    check_returned::<S>(before, "translate")?;
    let per = (cold_batches * COLD_BATCH) as f64;
    Ok(vec![
        warm / gpas.len() as f64 * 1e9,
        cold / per * 1e9,
        floor / per * 1e9,
    ])
}

/// One round of `populate_256m`: `[map s]`.
fn populate_round<S: Subject>() -> Result<Vec<f64>, String> {
    let before = pool::in_use();
    let mut s = S::new()?;
    let (r, t) = timed(|| s.map_alloc(GPA, ALLOC_AREA, true));
    r?;
    let data = pool::in_use() - before;
    if data < ALLOC_AREA / K4 {
        return Err(format!(
            "{}: populate holds only {data} frames for {} pages",
            S::NAME,
            ALLOC_AREA / K4
        ));
    }
    drop(s);
    check_returned::<S>(before, "populate")?;
    Ok(vec![t])
}

/// One round of the lazy workload: lazy-map 256 MiB, fault every page once, then
/// fault [`REFAULTS`] mapped pages again, from cold caches. Returns `[ns per page
/// (lazy map + first fault), table KiB per GiB allocated by the lazy map, frames
/// allocated per refault, ns per refault]`. A subject whose allocator knows zero
/// frames must have been handed every guest frame as such (its figure is then the
/// fault's work without the zeroing).
fn fault_round<S: Subject>() -> Result<Vec<f64>, String> {
    let before = pool::in_use();
    let mut s = S::new()?;
    let root = pool::in_use() - before;
    evict_caches();
    let (r, t_map) = timed(|| s.map_alloc(GPA, ALLOC_AREA, false));
    r?;
    let up_front = pool::in_use() - before - root;
    let pages = ALLOC_AREA / K4;
    let (handled, t_fault) = timed(|| {
        let mut handled = 0;
        for p in 0..pages {
            handled += usize::from(s.fault(black_box(GPA + p * K4 + 0x18)));
        }
        handled
    });
    if handled != pages {
        return Err(format!(
            "{}: {handled} of {pages} lazy faults handled",
            S::NAME
        ));
    }
    if let Some(zero) = s.frames_known_zero().filter(|&z| z < pages) {
        return Err(format!(
            "{}: only {zero} of {pages} lazy frames were known zero",
            S::NAME
        ));
    }
    let allocated = pool::pool().allocated();
    let (handled, t_refault) = timed(|| {
        let mut handled = 0;
        for p in 0..REFAULTS {
            handled += usize::from(s.fault(black_box(GPA + p * 7 * K4 + 0x40)));
        }
        handled
    });
    if handled != REFAULTS {
        return Err(format!(
            "{}: {handled} of {REFAULTS} refaults handled",
            S::NAME
        ));
    }
    let refault_frames = pool::pool().allocated() - allocated;
    drop(s);
    // Frames still in use after the drop can only be frames lost by the refaults.
    let leaked = pool::in_use() - before;
    if leaked != refault_frames {
        return Err(format!(
            "{}: {leaked} frames left after drop, {refault_frames} allocated by refaults",
            S::NAME
        ));
    }
    Ok(vec![
        (t_map + t_fault) / pages as f64 * 1e9,
        (up_front * FRAME_SIZE) as f64 / 1024.0 * (G1 / ALLOC_AREA) as f64,
        refault_frames as f64 / REFAULTS as f64,
        t_refault / REFAULTS as f64 * 1e9,
    ])
}

/// One round of the zeroing floor: [`ALLOC_AREA`] of pool frames, taken one by one
/// as a lazy fault takes them (so the same frames in the same order, tables aside),
/// each zeroed with one 4 KiB memset from the same cold caches. Returns `[ns per
/// 4 KiB]`.
fn memset_round() -> Result<Vec<f64>, String> {
    let frames: Vec<HostPhysAddr> = (0..ALLOC_AREA / K4)
        .map(|_| {
            pool::pool()
                .alloc_frame()
                .ok_or("pool: no room for the memset floor")
        })
        .collect::<Result<_, _>>()?;
    evict_caches();
    let ((), t) = timed(|| {
        for &f in &frames {
            let p = pool::pool().phys_to_virt(f).as_mut_ptr::<u8>();
            // SAFETY: the frame was allocated above for this measurement only; the
            // pool maps it writable.
            unsafe { std::ptr::write_bytes(black_box(p), 0, K4) };
        }
    });
    for f in frames {
        // SAFETY: allocated above, used by nothing else.
        unsafe { pool::pool().dealloc_frames(f, 1) };
    }
    Ok(vec![t / (ALLOC_AREA / K4) as f64 * 1e9])
}

/// Pages of the zeroing check.
const LEAK_PAGES: usize = 256;

/// The zeroing check: frames filled with a previous owner's bytes are freed, then a
/// new lazy area faults its pages in (getting those frames back first from the
/// pool's lowest-first search) and the guest's view is read. Returns `[fraction of
/// bytes read that are not zero]`: a guest must never see another's data.
fn leak_round<S: Subject>() -> Result<Vec<f64>, String> {
    let len = LEAK_PAGES * K4;
    let hpa = pool::pool()
        .alloc_frames(LEAK_PAGES, 1)
        .ok_or("pool: no room for the zeroing check")?;
    let hva = pool::pool().phys_to_virt(hpa).as_mut_ptr::<u8>();
    // SAFETY: frames just allocated for this check; the pool maps them writable.
    unsafe { std::ptr::write_bytes(hva, 0xa5, len) };
    // SAFETY: allocated above, no longer used.
    unsafe { pool::pool().dealloc_frames(hpa, LEAK_PAGES) };
    let before = pool::in_use();
    let mut s = S::new()?;
    s.map_alloc(GPA, len, false)?;
    for p in 0..LEAK_PAGES {
        if !s.fault(GPA + p * K4) {
            return Err(format!("{}: zeroing check: fault {p} refused", S::NAME));
        }
    }
    let mut buf = vec![0u8; len];
    s.read(GPA, &mut buf)?;
    drop(s);
    check_returned::<S>(before, "zeroing check")?;
    Ok(vec![
        buf.iter().filter(|&&b| b != 0).count() as f64 / len as f64,
    ])
}

/// One round of the touch workload on our EPT space: a lazy area of [`ALLOC_AREA`]
/// with `populate`, every 4 KiB page of it written once in order, from cold caches,
/// as a guest pays for it: the store goes to the host memory of the page; where the
/// guest's TLB has no entry for the page (the first page of each leaf) the
/// translation is looked up (a software walk standing for the hardware's) and a page
/// that has none takes a write fault first. With `A` = [`KnownZero`] the frames are
/// known to be zero (fresh memory, as the boards' RAM that QEMU zero-filled), so
/// the zeroing is off the fault path. Returns `[s, faults]`.
fn touch_round<A: Frames>(populate: Populate) -> Result<Vec<f64>, String> {
    let before = pool::in_use();
    let ours = Ours::<Ept, A>::new()?;
    let mut s = ours.0;
    s.map_alloc(
        GuestPhysAddr::from_usize(GPA),
        ALLOC_AREA,
        MappingFlags::RW,
        populate,
    )
    .map_err(|e| format!("touch: map_alloc: {e}"))?;
    evict_caches();
    let (faults, t) = timed(|| {
        let mut faults = 0usize;
        // The leaf of the last store: its guest range and host address.
        let (mut leaf, mut hva) = (0..0, std::ptr::null_mut::<u8>());
        for p in 0..ALLOC_AREA / K4 {
            let gpa = GPA + p * K4;
            if !leaf.contains(&gpa) {
                let g = GuestPhysAddr::from_usize(gpa);
                let (start, hpa, size) = match s.translate(black_box(g)) {
                    Ok(t) => (gpa & !(t.size.bytes() - 1), t.leaf_base(), t.size),
                    Err(_) => match s.handle_page_fault(g, AccessKind::Write) {
                        Ok(FaultOutcome::Mapped { gpa, hpa, size, .. }) => {
                            faults += 1;
                            (gpa.as_usize(), hpa, size)
                        }
                        other => return Err(format!("touch: fault at {g:#x}: {other:?}")),
                    },
                };
                leaf = start..start + size.bytes();
                hva = pool::pool().phys_to_virt(hpa).as_mut_ptr();
            }
            // SAFETY: `gpa` lies in `leaf`, whose frames (one allocation) the pool maps
            // contiguously and writable at `hva`; the space owns them and nothing else
            // reaches them while it is borrowed here.
            unsafe {
                hva.add(gpa - leaf.start + 0x18)
                    .cast::<u64>()
                    .write_volatile(p as u64)
            };
        }
        Ok(faults)
    });
    let faults = faults?;
    let pages = ALLOC_AREA / K4;
    if let Some(zero) = s.allocator().known_zero().filter(|&z| z < pages) {
        return Err(format!(
            "touch: only {zero} of {pages} lazy frames were known zero"
        ));
    }
    let last = ALLOC_AREA / K4 - 1;
    let seen = s
        .read_obj::<u64>(GuestPhysAddr::from_usize(GPA + last * K4 + 0x18))
        .map_err(|e| format!("touch: read back: {e}"))?;
    if seen != last as u64 {
        return Err(format!("touch: the guest's last store reads back {seen}"));
    }
    drop(s);
    check_returned::<Ours<Ept, A>>(before, "touch")?;
    Ok(vec![t, faults as f64])
}

/// One round of the zeroing floors of the touch workload, each from cold caches:
/// `[s for one memset of ALLOC_AREA contiguous pool bytes, s for the same bytes
/// zeroed 2 MiB at a time by the pool's routine (`FrameAllocator::zero_frames`, what
/// a 2 MiB fault's `alloc_zeroed` runs) with one store per 4 KiB page after each
/// block]` (the second is the least a fault per 2 MiB block that zeroes its block
/// can cost).
fn memset_area_round() -> Result<Vec<f64>, String> {
    let frames = ALLOC_AREA / K4;
    let hpa = pool::pool()
        .alloc_frames(frames, 512)
        .ok_or("pool: no room for the 256 MiB memset floor")?;
    let p = pool::pool().phys_to_virt(hpa).as_mut_ptr::<u8>();
    evict_caches();
    // SAFETY: frames allocated above for this measurement only; the pool maps them
    // contiguously and writable.
    let ((), whole) = timed(|| unsafe { std::ptr::write_bytes(black_box(p), 0, ALLOC_AREA) });
    evict_caches();
    let ((), blocks) = timed(|| {
        for b in (0..ALLOC_AREA).step_by(M2) {
            // SAFETY: as above; `b + M2 <= ALLOC_AREA`, frames this round holds.
            unsafe {
                pool::pool().zero_frames(black_box(hpa + b), M2 / K4);
                let block = p.add(b);
                for page in (0..M2).step_by(K4) {
                    block
                        .add(page + 0x18)
                        .cast::<u64>()
                        .write_volatile(page as u64);
                }
            }
        }
    });
    // SAFETY: allocated above, used by nothing else.
    unsafe { pool::pool().dealloc_frames(hpa, frames) };
    Ok(vec![whole, blocks])
}

/// One round of `map_1t_1g`: `[map s]`.
fn map_1t_round<S: Subject>() -> Result<Vec<f64>, String> {
    let before = pool::in_use();
    let mut times = Vec::with_capacity(MAP_REPS);
    for _ in 0..MAP_REPS {
        let mut s = S::new()?;
        let (r, t) = timed(|| s.map_linear(0, HPA_1T, T1));
        r?;
        if s.translate(T1 - 1) != Some(HPA_1T + T1 - 1) {
            return Err(format!("{}: 1 TiB mapping does not translate", S::NAME));
        }
        times.push(t);
    }
    check_returned::<S>(before, "1 TiB")?;
    Ok(vec![median(&times)])
}

/// Bytes written to push the tables of the previous map out of every cache level
/// (twice this machine's 32 MiB L3).
const EVICT: usize = 64 << 20;

/// Writes [`EVICT`] bytes of scratch memory, so that the next map starts with its
/// table frames out of the caches whatever its size: without it a 64 MiB map reuses
/// 128 KiB of tables hot in L2 while a 4 GiB map streams 8 MiB through L3, and the
/// per-page times compare caches, not the engine's growth. Then yields the CPU.
fn evict_caches() {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![1; EVICT]);
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let v = s[0].wrapping_add(1);
        s.fill(v);
        black_box(&mut *s);
    });
    // What follows is timed: start it on a fresh time slice. On a busy machine a
    // subject whose set-up took longer (KnownZero zeroes 256 MiB) was otherwise
    // descheduled inside its timing more often (whole 4 ms ticks: +61 ns/page in
    // fault_lazy_work).
    std::thread::yield_now();
}

/// One round of the growth series' floors over `size / 512` bytes as 4 KiB frames
/// taken one by one from the pool (as many as the map's page tables, as the map
/// takes them), each from cold caches; the frames are taken before and given back
/// after the timing. Returns `[s for each size of GROWTH]` twice: to zero then fill
/// them with memset, then to write their 512 entries each with ordinary 8-byte
/// stores of distinct values, as a map writes a page table.
fn frames_floor_round() -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(2 * GROWTH.len());
    let mut stores = Vec::with_capacity(GROWTH.len());
    for size in GROWTH {
        let reps = (G1 / size).max(1);
        let mut times = Vec::with_capacity(reps);
        let mut store_times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let n = size / 512 / FRAME_SIZE;
            let frames: Vec<HostPhysAddr> =
                (0..n).map_while(|_| pool::pool().alloc_frame()).collect();
            let hvas: Vec<*mut u8> = frames
                .iter()
                .map(|&f| pool::pool().phys_to_virt(f).as_mut_ptr::<u8>())
                .collect();
            if frames.len() == n {
                evict_caches();
                let ((), t) = timed(|| {
                    for &hva in &hvas {
                        // SAFETY: the frame was allocated above for this sample and
                        // the pool maps it writable.
                        unsafe {
                            std::ptr::write_bytes(hva, 0, FRAME_SIZE);
                            std::ptr::write_bytes(hva, 0x33, FRAME_SIZE);
                        }
                    }
                    black_box(&hvas);
                });
                times.push(t);
                // The same frames, from cold caches again, written as a page table is:
                // memset's string stores above need no read for ownership of a line
                // they fill whole, ordinary stores do, and scattered cold frames make
                // that read cost (the step the memset floor misses at 1 GiB).
                evict_caches();
                let ((), t) = timed(|| {
                    for &hva in &hvas {
                        let entries = hva.cast::<u64>();
                        for i in 0..512 {
                            // SAFETY: as above; 512 entries of 8 bytes fill the frame.
                            unsafe { entries.add(i).write_volatile(((i as u64) << 12) | 0x37) };
                        }
                    }
                    black_box(&hvas);
                });
                store_times.push(t);
            }
            for &f in &frames {
                // SAFETY: allocated above, no longer used.
                unsafe { pool::pool().dealloc_frames(f, 1) };
            }
            if frames.len() < n {
                return Err(format!(
                    "pool: {} of {n} frames for the floor",
                    frames.len()
                ));
            }
        }
        out.push(median(&times));
        stores.push(median(&store_times));
    }
    out.extend(stores);
    Ok(out)
}

/// One round of the 4 KiB-leaf growth series: `[map s for each size of GROWTH]`,
/// each map starting with cold caches.
fn growth_round<S: Subject>() -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(GROWTH.len());
    for size in GROWTH {
        let before = pool::in_use();
        // Small sizes are mapped several times so each sample maps at least 1 GiB.
        let reps = (G1 / size).max(1);
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let mut s = S::new()?;
            evict_caches();
            let (r, t) = timed(|| s.map_linear(GPA, HPA_LIN + K4, size));
            r?;
            times.push(t);
        }
        check_returned::<S>(before, "growth")?;
        out.push(median(&times));
    }
    Ok(out)
}

/// A subject with 128 KiB of pool frames mapped linearly (4 KiB leaves) at `GPA`,
/// for the read workload.
fn read_setup<S: Subject>(hpa: HostPhysAddr) -> Result<S, String> {
    let mut s = S::new()?;
    s.map_linear(GPA, hpa.as_usize(), 2 * READ_LEN)?;
    Ok(s)
}

/// One read sample: `reads` pairs of (64 KiB read through `s`, plain memcpy of the
/// same bytes), interleaved read by read so both see the same machine state; returns
/// `[median ns per read, median ns per memcpy, median of the pairs' read / memcpy]`.
/// Medians of pairs, not sums: a pair the host interrupted or descheduled (a busy
/// machine does that to a few per cent of them) is an outlier, not a weight.
fn read_round<S: Subject>(
    s: &S,
    src: &[u8],
    buf: &mut [u8],
    reads: usize,
) -> Result<Vec<f64>, String> {
    let (mut ours, mut plain, mut ratio) = (
        Vec::with_capacity(reads),
        Vec::with_capacity(reads),
        Vec::with_capacity(reads),
    );
    for _ in 0..reads {
        let (r, t_read) = timed(|| s.read(black_box(GPA + READ_OFF), buf));
        r?;
        black_box(&mut *buf);
        let ((), t_copy) = timed(|| buf.copy_from_slice(black_box(src)));
        black_box(&mut *buf);
        ours.push(t_read * 1e9);
        plain.push(t_copy * 1e9);
        ratio.push(t_read / t_copy);
    }
    Ok(vec![median(&ours), median(&plain), median(&ratio)])
}

/// Runs every address-space workload and returns the figures, EPT first, then the
/// Arm stage-2 rows (`arm_s2_*`, same ratios against the peer's EPT).
pub fn run(cfg: &Config) -> Result<Vec<Figure>, String> {
    type Ept4 = Ours<Ept>;
    type Arm = Ours<ArmStage2Ipa40>;
    let rounds = cfg.rounds;
    let mut figs = Vec::new();
    let mut arm = Vec::new();

    // ---- 1 GiB linear: map, unmap, tables, for each leaf size.
    for (leaf, off) in [("1g", 0), ("2m", M2), ("4k", K4)] {
        if !cfg.wants(&format!("leaf{leaf}")) {
            continue;
        }
        eprintln!("  1 GiB linear, {leaf} leaves");
        let [o, a, p] = alternate_warm(
            rounds,
            &mut [
                &mut || leaf_round::<Ept4>(off),
                &mut || leaf_round::<Arm>(off),
                &mut || leaf_round::<Peer>(off),
            ],
        )?;
        let map_target = if leaf == "4k" { 0.40 } else { 1.0 };
        // Unmapping huge leaves frees the emptied tables too (the peer keeps them).
        let unmap_target = if leaf == "4k" { 0.50 } else { 1.0 };
        for (rows, samples, prefix) in [(&mut figs, &o, ""), (&mut arm, &a, "arm_s2_")] {
            rows.push(
                Figure::sampled(
                    format!("{prefix}map_1g_{leaf}"),
                    "µs",
                    1e6,
                    (samples, 0),
                    (&p, 0),
                )
                .target(Target::RatioAtMost(map_target)),
            );
            rows.push(
                Figure::sampled(
                    format!("{prefix}unmap_1g_{leaf}"),
                    "µs",
                    1e6,
                    (samples, 1),
                    (&p, 1),
                )
                .target(Target::RatioAtMost(unmap_target))
                .note("unmap + completing its flush; ours also frees the tables it empties"),
            );
        }
        if leaf == "4k" {
            for (rows, samples, prefix, root) in [
                (&mut figs, &o, "", Ept4::ROOT_FRAMES),
                (&mut arm, &a, "arm_s2_", Arm::ROOT_FRAMES),
            ] {
                rows.push(
                    Figure::pair(
                        format!("{prefix}tables_kib_per_gib_4k"),
                        "KiB",
                        median_of(samples, 2) * 4.0,
                        median_of(&p, 2) * 4.0,
                    )
                    .note("page-table frames after mapping 1 GiB, root included"),
                );
                rows.push(
                    Figure::pair(
                        format!("{prefix}tables_after_unmap"),
                        "frames",
                        median_of(samples, 3),
                        median_of(&p, 3),
                    )
                    .target(Target::OursEquals(root as f64))
                    .note(format!("table frames held after unmapping; root = {root}")),
                );
            }
        }
    }

    // ---- translate through the public API: 1 GiB of 4 KiB and 2 MiB leaves, 64 GiB
    // of 1 GiB leaves; warm and cold.
    if cfg.wants("translate") {
        let mut rng = Rng::new(0x5eed_1234);
        for (leaf, size, off) in [("4k", G1, K4), ("2m", G1, M2), ("1g", 64 * G1, 0)] {
            eprintln!("  translate, {} of {leaf} leaves", size_name(size));
            let gpas: Vec<usize> = (0..cfg.translations)
                .map(|_| GPA + (rng.next_u64() as usize % size))
                .collect();
            let batches = cfg.cold_batches;
            let [o, a, p] = alternate(
                rounds,
                &mut [
                    &mut || translate_round::<Ept4>(size, off, &gpas, batches),
                    &mut || translate_round::<Arm>(size, off, &gpas, batches),
                    &mut || translate_round::<Peer>(size, off, &gpas, batches),
                ],
            )?;
            // The peer's tables have the shape of our EPT tables: its floor is theirs.
            let peer_floor = median_of(&o, 2);
            for (rows, samples, prefix) in [(&mut figs, &o, ""), (&mut arm, &a, "arm_s2_")] {
                let floor = median_of(samples, 2);
                rows.push(
                    Figure::solo(format!("{prefix}translate_{leaf}_cold_floor"), "ns", floor).note(
                        "the cold batches' leaf descriptors alone, loaded after the same eviction",
                    ),
                );
                rows.push(
                    Figure::pair(
                        format!("{prefix}translate_{leaf}_cold_beyond_floor"),
                        "ns",
                        median_of(samples, 1) - floor,
                        median_of(&p, 1) - peer_floor,
                    )
                    .target(Target::RatioAtMost(0.70))
                    .note("translate_cold minus its floor (the peer's: our EPT floor, same table shape)"),
                );
                for (j, temp) in [(0, "warm"), (1, "cold")] {
                    rows.push(
                        Figure::sampled(
                            format!("{prefix}translate_{leaf}_{temp}"),
                            "ns",
                            1.0,
                            (samples, j),
                            (&p, j),
                        )
                        .target(Target::RatioAtMost(0.70))
                        .note(if j == 0 {
                            format!(
                                "AddrSpace::translate of {} random GPAs over {}, after a first pass",
                                cfg.translations,
                                size_name(size)
                            )
                        } else {
                            format!(
                                "{batches} batches of {COLD_BATCH} random GPAs over {}, caches evicted before each",
                                size_name(size)
                            )
                        }),
                    );
                }
            }
        }
    }

    // ---- populate 256 MiB.
    if cfg.wants("populate") {
        eprintln!("  populate 256 MiB");
        let [o, a, p, z] = alternate(
            rounds,
            &mut [
                &mut populate_round::<Ept4>,
                &mut populate_round::<Arm>,
                &mut populate_round::<Peer>,
                &mut populate_round::<Peer<true>>,
            ],
        )?;
        figs.push(
            Figure::pair(
                "populate_256m_zeroing_peer",
                "ms",
                median_of(&o, 0) * 1e3,
                median_of(&z, 0) * 1e3,
            )
            .note(
                "populate_256m against the peer with a HAL that zeroes guest frames (equal work)",
            ),
        );
        for (rows, samples, prefix) in [(&mut figs, &o, ""), (&mut arm, &a, "arm_s2_")] {
            rows.push(
                Figure::pair(
                    format!("{prefix}populate_256m"),
                    "ms",
                    median_of(samples, 0) * 1e3,
                    median_of(&p, 0) * 1e3,
                )
                .note("ours zeroes every guest frame; the peer hands frames out unzeroed"),
            );
        }
    }

    // ---- touching 256 MiB of lazy RAM: 2 MiB blocks against 4 KiB pages.
    if cfg.wants("touch") {
        eprintln!("  touch 256 MiB of lazy RAM: 2 MiB blocks, 4 KiB pages, memset");
        let [h, l, m, hz, lz] = alternate(
            rounds,
            &mut [
                &mut || touch_round::<&PoolAllocator>(Populate::LazyHuge),
                &mut || touch_round::<&PoolAllocator>(Populate::Lazy),
                &mut memset_area_round,
                &mut || touch_round::<KnownZero>(Populate::LazyHuge),
                &mut || touch_round::<KnownZero>(Populate::Lazy),
            ],
        )?;
        figs.push(
            Figure::sampled("touch_256m_lazy_2m", "ms", 1e3, (&h, 0), (&l, 0))
                .target(Target::RatioAtMost(0.6))
                .note(format!(
                    "every page of a Populate::LazyHuge area written once as a guest does (a \
                     walk per leaf, a fault where none); peer = our Populate::Lazy 4 KiB path; \
                     floor memset 256 MiB = {} ms",
                    crate::harness::num(median_of(&m, 0) * 1e3)
                )),
        );
        figs.push(
            Figure::sampled(
                "touch_256m_lazy_2m_known_zero",
                "ms",
                1e3,
                (&hz, 0),
                (&lz, 0),
            )
            .target(Target::RatioAtMost(0.6))
            .note(
                "touch_256m_lazy_2m with the zeroing off the fault path: frames the \
                     allocator knows are zero (fresh memory, as on the boards), both shapes; \
                     peer = our 4 KiB lazy path over such frames",
            ),
        );
        figs.push(
            Figure::pair(
                "touch_256m_faults",
                "faults",
                median_of(&h, 1),
                median_of(&l, 1),
            )
            .target(Target::OursEquals(128.0))
            .note(
                "nested faults to touch 256 MiB: 2 MiB blocks (ours) / 4 KiB pages (peer column)",
            ),
        );
        figs.push(
            Figure::sampled("touch_256m_lazy_2m_vs_memset", "ms", 1e3, (&h, 0), (&m, 0))
                .note("the same against its floor, one memset of 256 MiB from cold caches"),
        );
        figs.push(
            Figure::sampled("touch_256m_lazy_2m_vs_blocks", "ms", 1e3, (&h, 0), (&m, 1)).note(
                "the same against zeroing 256 MiB 2 MiB at a time with the pool's routine \
                 (hal-x86_64's zero_memory), one store per page after each block (the \
                 zeroing every 2 MiB fault does, without the fault)",
            ),
        );
    }

    // ---- lazy map + fault every page, refault.
    if cfg.wants("fault") {
        eprintln!("  lazy map 256 MiB, fault every page, refault");
        let [o, a, p, z, w, m] = alternate(
            rounds,
            &mut [
                &mut fault_round::<Ept4>,
                &mut fault_round::<Arm>,
                &mut fault_round::<Peer>,
                &mut fault_round::<Peer<true>>,
                &mut fault_round::<Ours<Ept, KnownZero>>,
                &mut memset_round,
            ],
        )?;
        figs.push(
            Figure::sampled("fault_lazy_work", "ns/page", 1.0, (&w, 0), (&p, 0))
                .target(Target::RatioAtMost(1.0))
                .note(
                    "our fault_lazy over frames the allocator knows are zero (our work beyond \
                     the zeroing, measured) against the peer's whole fault_lazy",
                ),
        );
        // The cross-check: each round's fault time minus the same round's memset of
        // the same frames, in the same order, from the same cold caches.
        let minus: Vec<Vec<f64>> = o.iter().zip(&m).map(|(f, m)| vec![f[0] - m[0]]).collect();
        figs.push(
            Figure::sampled(
                "fault_lazy_minus_memset",
                "ns/page",
                1.0,
                (&minus, 0),
                (&p, 0),
            )
            .note(format!(
                "cross-check of fault_lazy_work: fault_lazy minus memset_4k, round by round \
                     (memset_4k = {} ns)",
                crate::harness::num(median_of(&m, 0))
            )),
        );
        figs.push(Figure::solo("memset_4k", "ns", median_of(&m, 0)).note(
            "zeroing one 4 KiB pool frame: the frames a lazy fault takes, in its order, \
                 from the same cold caches",
        ));
        figs.push(
            Figure::pair(
                "fault_lazy_zeroing_peer",
                "ns/page",
                median_of(&o, 0),
                median_of(&z, 0),
            )
            .target(Target::RatioAtMost(1.0))
            .note("fault_lazy against the peer with a HAL that zeroes guest frames (equal work)"),
        );
        for (rows, samples, prefix) in [(&mut figs, &o, ""), (&mut arm, &a, "arm_s2_")] {
            rows.push(
                Figure::pair(
                    format!("{prefix}fault_lazy"),
                    "ns/page",
                    median_of(samples, 0),
                    median_of(&p, 0),
                )
                .note(
                    "(lazy map of 256 MiB + one write fault per page) / pages; ours zeroes each \
                 frame, the peer does not (unequal work, so no target here: judged by \
                 fault_lazy_work and fault_lazy_zeroing_peer)",
                ),
            );
            rows.push(
                Figure::pair(
                    format!("{prefix}refault"),
                    "frames/fault",
                    median_of(samples, 2),
                    median_of(&p, 2),
                )
                .target(Target::OursEquals(0.0))
                .note("frames allocated by a second fault on a mapped page"),
            );
            rows.push(Figure::pair(
                format!("{prefix}refault_ns"),
                "ns",
                median_of(samples, 3),
                median_of(&p, 3),
            ));
            rows.push(
                Figure::pair(
                    format!("{prefix}lazy_tables_up_front"),
                    "KiB/GiB",
                    median_of(samples, 1),
                    median_of(&p, 1),
                )
                .target(Target::OursEquals(0.0))
                .note("frames a lazy map allocates before any fault"),
            );
        }
    }

    // ---- a guest never sees another's data.
    if cfg.wants("zeroing") {
        eprintln!("  zeroing check: lazy pages over frames a previous owner dirtied");
        let [o, a, p] = alternate(
            1,
            &mut [
                &mut leak_round::<Ept4>,
                &mut leak_round::<Arm>,
                &mut leak_round::<Peer>,
            ],
        )?;
        if o[0][0] != 0.0 || a[0][0] != 0.0 {
            return Err(format!(
                "zeroing check: a guest of ours read {} / {} of its fresh memory non-zero",
                o[0][0], a[0][0]
            ));
        }
        figs.push(
            Figure::pair(
                "fault_lazy_previous_data",
                "fraction",
                o[0][0],
                p[0][0],
            )
            .target(Target::OursEquals(0.0))
            .note("bytes of a previous owner a guest reads in fresh lazy pages (the peer does not zero)"),
        );
    }

    // ---- 64 KiB read across 4 KiB pages vs memcpy.
    if cfg.wants("read") {
        eprintln!("  read 64 KiB at +0x800 vs memcpy");
        let frames = 2 * READ_LEN / FRAME_SIZE;
        let hpa = pool::pool()
            .alloc_frames(frames, 1)
            .ok_or("pool: no room for the read workload")?;
        let src = pool::pool().phys_to_virt(hpa).as_ptr::<u8>();
        // SAFETY: the frames were just allocated for this workload and stay allocated
        // until the end of it; they are only read (by every subject and by memcpy).
        let src = unsafe { std::slice::from_raw_parts(src.add(READ_OFF), READ_LEN) };
        let (ours_read, arm_read, peer_read) = (
            read_setup::<Ept4>(hpa)?,
            read_setup::<Arm>(hpa)?,
            read_setup::<Peer>(hpa)?,
        );
        // The destination is page-aligned pool memory too: where a heap buffer lands
        // relative to the source changes `memcpy` speed several-fold on this machine
        // (4 KiB aliasing when the destination is just above the source modulo 4 KiB),
        // which would make the baseline, not our code, the thing measured.
        let dst_frames = READ_LEN / FRAME_SIZE;
        let dst = pool::pool()
            .alloc_frames(dst_frames, 1)
            .ok_or("pool: no room for the read buffer")?;
        // SAFETY: frames just allocated for this buffer, used by nothing else until they
        // are given back below; the pool maps them contiguously and writable.
        let buf: &mut [u8] = unsafe {
            std::slice::from_raw_parts_mut(pool::pool().phys_to_virt(dst).as_mut_ptr(), READ_LEN)
        };
        let reads = cfg.reads;
        let result = {
            let buf = std::cell::RefCell::new(buf);
            alternate(
                rounds,
                &mut [
                    &mut || read_round(&ours_read, src, &mut buf.borrow_mut()[..], reads),
                    &mut || read_round(&arm_read, src, &mut buf.borrow_mut()[..], reads),
                    &mut || read_round(&peer_read, src, &mut buf.borrow_mut()[..], reads),
                ],
            )
        };
        drop((ours_read, arm_read, peer_read));
        // SAFETY: allocated above, no space maps them any more.
        unsafe { pool::pool().dealloc_frames(hpa, frames) };
        // SAFETY: allocated above; `buf` died with `result`'s closures.
        unsafe { pool::pool().dealloc_frames(dst, dst_frames) };
        let [o, a, p] = result?;
        for (rows, samples, prefix) in [(&mut figs, &o, ""), (&mut arm, &a, "arm_s2_")] {
            rows.push(
                Figure::pair(
                    format!("{prefix}read_64k_vs_memcpy"),
                    "x memcpy",
                    median_of(samples, 2),
                    median_of(&p, 2),
                )
                .target(Target::OursAtMost(1.10))
                .note(format!(
                    "read / plain memcpy of the same 64 KiB, interleaved read by read, median \
                     of the pairs' ratios ({} ns / {} ns); peer = translated_byte_buffer + copy",
                    crate::harness::num(median_of(samples, 0)),
                    crate::harness::num(median_of(samples, 1)),
                )),
            );
        }
    }

    // ---- 1 TiB with 1 GiB leaves.
    if cfg.wants("1t") {
        eprintln!("  map 1 TiB with 1 GiB leaves");
        let [o, a, p] = alternate(
            rounds,
            &mut [
                &mut map_1t_round::<Ept4>,
                &mut map_1t_round::<Arm>,
                &mut map_1t_round::<Peer>,
            ],
        )?;
        for (rows, samples, prefix) in [(&mut figs, &o, ""), (&mut arm, &a, "arm_s2_")] {
            rows.push(
                Figure::pair(
                    format!("{prefix}map_1t_1g"),
                    "µs",
                    median_of(samples, 0) * 1e6,
                    median_of(&p, 0) * 1e6,
                )
                .target(Target::OursBelow(50.0)),
            );
        }
    }

    // ---- 4 KiB-leaf growth.
    if cfg.wants("growth") {
        eprintln!("  map 64 MiB .. 4 GiB with 4 KiB leaves");
        // The hardware floor: write, from the same cold start, as many 4 KiB frames as
        // the map's page tables (size / 512 bytes), taken one by one from the pool in
        // the state the maps find it (`frames_floor_round`), with ordinary 8-byte
        // stores as a map writes its entries (the store floor, which judges the
        // growth), and zeroed then filled with memset (the memset floor until
        // session 7, reported beside it: memset's string stores skip the read for
        // ownership that ordinary stores to cold lines pay). Where earlier
        // groups left the pool's free frames scattered (the fault group's peer
        // subjects keep one frame per refault), writing them costs the hardware
        // about 2.5x as much per frame past L2 as one contiguous buffer does, and
        // every subject's tables are such frames. The contiguous buffer
        // (`memset_round`, the floor until session 6) is reported beside it.
        let floor_frames = GROWTH[GROWTH.len() - 1] / 512 / FRAME_SIZE;
        let floor = pool::pool()
            .alloc_frames(floor_frames, 1)
            .ok_or("pool: no room for the memset floor")?;
        let floor_hva = pool::pool().phys_to_virt(floor).as_mut_ptr::<u8>();
        let mut memset_round = || -> Result<Vec<f64>, String> {
            let mut out = Vec::with_capacity(GROWTH.len());
            for size in GROWTH {
                let reps = (G1 / size).max(1);
                let mut times = Vec::with_capacity(reps);
                for _ in 0..reps {
                    evict_caches();
                    let ((), t) = timed(|| {
                        // SAFETY: `floor` frames are ours until the end of this group and
                        // `size / 512` bytes fit in them (sized for the largest size).
                        unsafe {
                            std::ptr::write_bytes(floor_hva, 0, size / 512);
                            std::ptr::write_bytes(floor_hva, 0x33, size / 512);
                        }
                        black_box(floor_hva);
                    });
                    times.push(t);
                }
                out.push(median(&times));
            }
            Ok(out)
        };
        let result = alternate(
            rounds,
            &mut [
                &mut growth_round::<Ept4>,
                &mut growth_round::<Arm>,
                &mut growth_round::<Peer>,
                &mut frames_floor_round,
                &mut memset_round,
            ],
        );
        // SAFETY: allocated above, no longer used.
        unsafe { pool::pool().dealloc_frames(floor, floor_frames) };
        let [o, a, p, m, c] = result?;
        // `m` holds the memset floor at 0.. and the store floor at STORES.. .
        const STORES: usize = GROWTH.len();
        let spread_from = |samples: &[Vec<f64>], from: usize| {
            let per_page: Vec<f64> = GROWTH
                .iter()
                .enumerate()
                .map(|(j, &size)| median_of(samples, from + j) / (size / K4) as f64)
                .collect();
            let lo = per_page.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per_page.iter().copied().fold(0.0, f64::max);
            (hi / lo - 1.0) * 100.0
        };
        let spread = |samples: &[Vec<f64>]| spread_from(samples, 0);
        figs.push(
            Figure::solo("map_4k_growth_store_floor", "% spread", spread_from(&m, STORES))
                .note(
                    "the same spread for writing, with ordinary 8-byte stores, the 512 \
                     entries of as many 4 KiB frames as the map's page tables, taken one by \
                     one from the pool as the map takes them (what the hardware gives for a \
                     page table's writes over those frames)",
                ),
        );
        figs.push(
            Figure::solo("map_4k_growth_memset_floor", "% spread", spread(&m)).note(
                "the same for zeroing then filling those frames with memset (the floor until \
                 session 7): its string stores need no read for ownership of the lines they \
                 fill, so past the caches it grows less than any page-table write does",
            ),
        );
        figs.push(
            Figure::solo("map_4k_growth_contiguous_floor", "% spread", spread(&c)).note(
                "the same for one contiguous buffer of the tables' bytes (the floor until \
                 session 6): its gap to map_4k_growth_memset_floor is what the frames' \
                 places in the pool cost",
            ),
        );
        for (j, &size) in GROWTH.iter().enumerate() {
            figs.push(Figure::solo(
                format!("memset_floor_{}", size_name(size)),
                "µs",
                median_of(&m, j) * 1e6,
            ));
            figs.push(Figure::solo(
                format!("store_floor_{}", size_name(size)),
                "µs",
                median_of(&m, STORES + j) * 1e6,
            ));
        }
        let floor_spread = spread_from(&m, STORES);
        for (rows, samples, prefix) in [(&mut figs, &o, ""), (&mut arm, &a, "arm_s2_")] {
            rows.push(
                Figure::pair(
                    format!("{prefix}map_4k_growth"),
                    "% spread",
                    spread(samples),
                    spread(&p),
                )
                .note("(max / min time per page over 64 MiB, 256 MiB, 1 GiB, 4 GiB) - 1; caches evicted before each map; judged beyond the store floor in the next row"),
            );
            // The tables' bytes alone grow as much when they outgrow the caches: the
            // engine's own growth is what the map adds to the floor of the same run.
            rows.push(
                Figure::solo(
                    format!("{prefix}map_4k_growth_beyond_floor"),
                    "points",
                    spread(samples) - floor_spread,
                )
                .target(Target::OursAtMost(15.0))
                .note("map_4k_growth minus map_4k_growth_store_floor, same run"),
            );
            for (j, &size) in GROWTH.iter().enumerate() {
                rows.push(Figure::pair(
                    format!("{prefix}map_4k_{}", size_name(size)),
                    "µs",
                    median_of(samples, j) * 1e6,
                    median_of(&p, j) * 1e6,
                ));
            }
            // The same in absolute terms: a difference of two relative spreads is
            // swayed by the smallest, shortest sample and by the pool's state.
            for (j, &size) in GROWTH.iter().enumerate() {
                let pages = (size / K4) as f64;
                rows.push(
                    Figure::solo(
                        format!("{prefix}map_4k_beyond_floor_{}", size_name(size)),
                        "ns/page",
                        (median_of(samples, j) - median_of(&m, STORES + j)) * 1e9 / pages,
                    )
                    .note("map time per page minus the store floor's, same run"),
                );
            }
        }
    }

    figs.append(&mut arm);
    Ok(figs)
}

/// `64m`, `1g`, `4g`.
pub fn size_name(size: usize) -> String {
    if size >= G1 {
        format!("{}g", size / G1)
    } else {
        format!("{}m", size >> 20)
    }
}

/// Medians kept for the chart: `(size, ours EPT µs, ours Arm µs, peer µs)` per size.
pub fn growth_points(figs: &[Figure]) -> Vec<(usize, f64, f64, f64)> {
    GROWTH
        .iter()
        .filter_map(|&size| {
            let name = format!("map_4k_{}", size_name(size));
            let ept = figs.iter().find(|f| f.name == name)?;
            let arm = figs.iter().find(|f| f.name == format!("arm_s2_{name}"))?;
            Some((size, ept.ours, arm.ours, ept.peer.unwrap_or(f64::NAN)))
        })
        .collect()
}
