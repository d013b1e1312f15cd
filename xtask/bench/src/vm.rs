//! The VM figures of issue #7 on `hal-mock` (simulated machine, software vCPUs on host
//! threads, real nested tables in x86 EPT format): lazy-fault throughput with 1 and 2
//! vCPU threads, and how long `Vm::unmap_region` takes to return with 1, 2, 4 and 8
//! vCPU threads in the guest, with the kicks it sends, while a second VM on the same
//! machine must receive none; and how long it takes when the vCPUs have just used the
//! page (issue 17: at most 50 µs while the vCPU threads have cores of their own). The
//! peer has no VM layer: these figures are ours only.

use std::sync::Arc;
use std::time::Duration;

use addrspace::{Ept, GuestPhysAddr};
use hal_mock::{
    Action, GuestLog, Machine, MockFaults, MockVCpuConfig, MockVm, Op, PROBE_DATA, Probe, Program,
    probe_vm, run_vm, wait_until,
};
use vcpu_api::AccessWidth;
use vm_core::{MapType, MappingFlags, Populate, Unserved, Vm, VmConfigBuilder, VmExit};

use crate::harness::{Figure, Target, median, timed};

const CODE: usize = 0x1000_0000;
/// Code bytes per vCPU entry (each op is `hal_mock::OP_SIZE` bytes).
const CODE_PER_VCPU: usize = 0x4_0000;
const CODE_SIZE: usize = 0x20_0000;
const RAM: usize = 0x4000_0000;
const VICTIM: usize = 0x3000_0000;
/// Physical CPU of the second VM's vCPU.
const OTHER_PCPU: usize = 40;

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

/// Settings of the VM figures.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Pages faulted per fault-throughput run.
    pub fault_pages: usize,
    /// Runs per fault-throughput figure.
    pub fault_runs: usize,
    /// Unmaps timed per vCPU count.
    pub unmaps: usize,
}

/// One lazy-fault run: `vcpus` vCPU threads write one word in each page of their
/// share of a lazy region of `pages` pages; returns faults per second of the whole
/// run (boot to the last vCPU down).
fn fault_run(vcpus: usize, pages: usize) -> Result<f64, String> {
    let machine = Machine::new(
        0x1_0000_0000,
        (pages * 4096 + (32 << 20)).next_multiple_of(4096),
    );
    let _g = machine.enter(0);
    let share = pages / vcpus;
    if (share + vcpus + 2) as u64 * hal_mock::OP_SIZE > CODE_PER_VCPU as u64 {
        return Err(format!("{share} pages per vCPU do not fit its code area"));
    }
    let mut program = Program::new();
    for v in 0..vcpus {
        let mut ops = Vec::with_capacity(share + vcpus + 1);
        if v == 0 {
            ops.extend((1..vcpus).map(|t| Op::CpuUp {
                target: t as u64,
                entry: gpa(CODE + t * CODE_PER_VCPU),
                arg: 0,
            }));
        }
        ops.extend((0..share).map(|p| Op::Write {
            gpa: gpa(RAM + (v * share + p) * 4096 + 8),
            width: AccessWidth::Qword,
            value: p as u64,
        }));
        ops.push(Op::CpuDown);
        program = program.at(gpa(CODE + v * CODE_PER_VCPU), ops);
    }
    let program = Arc::new(program);
    let log = Arc::new(GuestLog::default());
    let config = VmConfigBuilder::new(1, "faults", vcpus)
        .entry_point(gpa(CODE))
        .memory_region(
            gpa(CODE),
            CODE_SIZE,
            MappingFlags::RWX,
            MapType::Alloc,
            Populate::Eager,
        )
        .memory_region(
            gpa(RAM),
            pages * 4096,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Lazy,
        )
        .build()
        .and_then(|c| c.into_valid())
        .map_err(|e| format!("fault VM config: {e}"))?;
    let vm: Arc<MockVm<Ept>> = Vm::new(config, &vm_core::HostGrant::none(), |_| {
        (MockVCpuConfig::new(program.clone(), log.clone()), ())
    })
    .map_err(|e| format!("fault VM: {e}"))?;
    let on_exit = |_: &MockVm<Ept>, _: usize, _: &VmExit| Action::Stop;
    let (report, t) = timed(|| run_vm(&machine, &vm, 1, on_exit));
    if !report.errors.is_empty() {
        return Err(format!("fault VM errors: {:?}", report.errors));
    }
    let faults = vm.stats().faults_mapped as usize;
    if faults < share * vcpus {
        return Err(format!(
            "fault VM: {faults} faults for {} pages written",
            share * vcpus
        ));
    }
    Ok(faults as f64 / t)
}

/// What the shootdown run measured.
struct Shootdown {
    /// Median µs for `unmap_region` of one page to return.
    us: f64,
    /// Median number of distinct vCPUs (pCPUs) kicked per unmap.
    kicked: f64,
    /// Kicks sent per unmap (re-kicks included).
    kicks: f64,
    /// Kicks the other VM and its pCPU received.
    other_kicks: u64,
}

/// VM A with `n` vCPU threads spinning in the guest (pCPUs 1..=n) and VM B with one
/// (pCPU [`OTHER_PCPU`]); the host maps then unmaps a page of A `unmaps` times.
fn shootdown_run(n: usize, unmaps: usize) -> Result<Shootdown, String> {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let (vm_a, probe_a) =
        probe_vm::<Ept>(1, n, MockFaults::default()).map_err(|e| format!("VM A: {e}"))?;
    let (vm_b, probe_b) =
        probe_vm::<Ept>(2, 1, MockFaults::default()).map_err(|e| format!("VM B: {e}"))?;
    let on_exit = |_: &MockVm<Ept>, _: usize, _: &VmExit| Action::Stop;
    let stop = || {
        probe_a
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        probe_b
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (result, report_a, report_b) = std::thread::scope(|s| {
        let a = s.spawn(|| run_vm(&machine, &vm_a, 1, on_exit));
        let b = s.spawn(|| run_vm(&machine, &vm_b, OTHER_PCPU, on_exit));
        let measure = || -> Result<(Vec<f64>, Vec<f64>, u64), String> {
            let ready = wait_until("the spinning vCPUs", Duration::from_secs(20), || {
                (0..n).all(|v| vm_a.is_vcpu_started(v))
                    && Probe::get(&probe_a.before) > 100 * n as u64
                    && Probe::get(&probe_b.before) > 100
            });
            if !ready {
                return Err(format!("{n} spinning vCPUs did not start"));
            }
            let mut times = Vec::with_capacity(unmaps);
            let mut kicked = Vec::with_capacity(unmaps);
            let mut kicks = 0;
            let per_pcpu = || (1..=n).map(|p| machine.kicks_of(p)).collect::<Vec<u64>>();
            for _ in 0..unmaps {
                vm_a.map_region(gpa(VICTIM), 0x1000, MappingFlags::RW, Populate::Eager)
                    .map_err(|e| format!("map victim: {e}"))?;
                let before = vm_a.stats().kicks;
                let pcpus_before = per_pcpu();
                let (r, t) = timed(|| vm_a.unmap_region(gpa(VICTIM), 0x1000));
                r.map_err(|e| format!("unmap victim: {e}"))?;
                kicks += vm_a.stats().kicks - before;
                let distinct = per_pcpu()
                    .iter()
                    .zip(&pcpus_before)
                    .filter(|(after, before)| after > before)
                    .count();
                kicked.push(distinct as f64);
                times.push(t * 1e6);
            }
            Ok((times, kicked, kicks))
        };
        let result = measure();
        stop();
        (result, a.join(), b.join())
    });
    let (times, kicked, kicks) = result?;
    for (name, report) in [("A", report_a), ("B", report_b)] {
        let report = report.map_err(|_| format!("VM {name} runner panicked"))?;
        if !report.errors.is_empty() {
            return Err(format!("VM {name} errors: {:?}", report.errors));
        }
    }
    Ok(Shootdown {
        us: median(&times),
        kicked: median(&kicked),
        kicks: kicks as f64 / unmaps as f64,
        other_kicks: vm_b.stats().kicks + machine.kicks_of(OTHER_PCPU),
    })
}

/// `n` vCPU threads (pCPUs 1..=n) spin in the guest reading the probe page; `unmaps`
/// times, the host waits until every vCPU has read the page (so each has it in its
/// TLB), then times `unmap_region` of that page (the vCPUs meanwhile find it missing
/// and retry) and maps it again. Returns the per-unmap microseconds.
fn shootdown_used_run(n: usize, unmaps: usize) -> Result<Vec<f64>, String> {
    use std::sync::atomic::Ordering;
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let (vm, probe) =
        probe_vm::<Ept>(1, n, MockFaults::default()).map_err(|e| format!("VM: {e}"))?;
    let on_exit = |_: &MockVm<Ept>, _: usize, exit: &VmExit| match exit {
        // The page is gone for a moment: read it again.
        VmExit::UnservedAccess(a) if a.gpa == PROBE_DATA && a.why == Unserved::NoArea => {
            Action::Resume
        }
        _ => Action::Stop,
    };
    let all = (1u64 << n) - 1;
    let (result, report) = std::thread::scope(|s| {
        let guest = s.spawn(|| run_vm(&machine, &vm, 1, on_exit));
        let measure = || -> Result<Vec<f64>, String> {
            let mut times = Vec::with_capacity(unmaps);
            for _ in 0..unmaps {
                probe.before_vcpus.store(0, Ordering::SeqCst);
                if !wait_until(
                    "every vCPU to read the page",
                    Duration::from_secs(20),
                    || probe.before_vcpus.load(Ordering::SeqCst) == all,
                ) {
                    return Err(format!("{n} vCPUs did not all read the probe page"));
                }
                let (r, t) = timed(|| vm.unmap_region(PROBE_DATA, 0x1000));
                r.map_err(|e| format!("unmap the probe page: {e}"))?;
                times.push(t * 1e6);
                vm.map_region(PROBE_DATA, 0x1000, MappingFlags::RW, Populate::Eager)
                    .map_err(|e| format!("map the probe page again: {e}"))?;
            }
            Ok(times)
        };
        let result = measure();
        probe.stop.store(true, Ordering::SeqCst);
        (result, guest.join())
    });
    let times = result?;
    let report = report.map_err(|_| "the runner panicked".to_string())?;
    if !report.errors.is_empty() {
        return Err(format!("VM errors: {:?}", report.errors));
    }
    Ok(times)
}

/// Runs the VM workloads and returns their figures.
pub fn run(cfg: Config) -> Result<Vec<Figure>, String> {
    let mut figs = Vec::new();
    for vcpus in [1, 2] {
        eprintln!("  lazy faults with {vcpus} vCPU thread(s)");
        let runs: Result<Vec<f64>, String> = (0..cfg.fault_runs)
            .map(|_| fault_run(vcpus, cfg.fault_pages))
            .collect();
        figs.push(
            Figure::solo(format!("mock_faults_per_s_{vcpus}"), "faults/s", median(&runs?))
                .note(format!(
                    "hal-mock, EPT, {} lazy pages written by {vcpus} vCPU thread(s), boot to last CPU down",
                    cfg.fault_pages
                )),
        );
    }
    let mut other = 0;
    for n in [1, 2, 4, 8] {
        eprintln!("  unmap_region with {n} vCPU thread(s) in the guest");
        let s = shootdown_run(n, cfg.unmaps)?;
        other += s.other_kicks;
        figs.push(
            Figure::solo(format!("shootdown_us_{n}"), "µs", s.us).note(format!(
                "median of {} one-page unmaps; {} kicks sent per unmap, re-kicks included",
                cfg.unmaps,
                crate::harness::num(s.kicks)
            )),
        );
        figs.push(
            Figure::solo(format!("shootdown_kicked_{n}"), "vCPUs", s.kicked).note(
                "distinct vCPUs kicked per unmap (those in the guest; the others invalidate \
                 before their next entry)",
            ),
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    for n in [1, 2, 4, 8] {
        eprintln!("  unmap_region of a page {n} vCPU thread(s) in the guest have used");
        let times = shootdown_used_run(n, cfg.unmaps)?;
        let mut fig = Figure::solo(format!("shootdown_used_us_{n}"), "µs", median(&times));
        // The target holds while every vCPU thread has a core of its own.
        let fits = n <= cores;
        if fits {
            fig = fig.target(Target::OursAtMost(50.0));
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let p90 = sorted
            .get(sorted.len() * 9 / 10)
            .copied()
            .unwrap_or(f64::NAN);
        figs.push(fig.note(format!(
            "median of {} one-page unmaps of the page {n} spinning vCPU(s) read just before \
             (90th percentile {} µs); {n} vCPU threads {} the {cores} host cores",
            cfg.unmaps,
            crate::harness::num(p90),
            if fits { "within" } else { "exceed" }
        )));
    }
    figs.push(
        Figure::solo("shootdown_kicks_other_vm", "kicks", other as f64)
            .target(Target::OursEquals(0.0))
            .note("kicks received by a second VM spinning on its own pCPU during all the unmaps above"),
    );
    Ok(figs)
}
