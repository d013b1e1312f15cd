//! `hvcore-bench`: our `addrspace` (x86 EPT, and Arm stage-2) against axaddrspace
//! 0.5.15 (EPT) on the same workloads, plus the VM figures on `hal-mock`.
//! Run it through `cargo xtask bench [--quick]`, which builds it in release.
//!
//! Method: every workload is written once over [`subject::Subject`]; frames for both
//! implementations come from one pre-touched pool ([`pool`]); each round runs every
//! subject once, rotating who goes first; figures are medians over the rounds and the
//! ratio is ours / peer, with the spread of the runs. Results: a table on stdout,
//! `summary.json`, `map_time.svg` and `ratios.svg` (every ratio against its target)
//! in the output directory.
//!
//! This crate is its own workspace (not a member of the product workspace), so the
//! peer dependency never enters the product crates' graph or lock file.

#![deny(unsafe_op_in_unsafe_fn)]

mod harness;
mod heap;
mod pool;
mod report;
mod space;
mod subject;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Every allocation is counted, for the heap figures ([`heap`]).
#[global_allocator]
static GLOBAL: heap::Counting = heap::Counting;

const USAGE: &str = "usage: hvcore-bench [--quick | --profile] [--out DIR] [--only GROUP]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("bench: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut quick = false;
    let mut profile = false;
    let mut only = None;
    let mut out = PathBuf::from("target/bench");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            // One short round, for `valgrind --tool=callgrind` with `--only GROUP`.
            "--profile" => profile = true,
            "--out" => out = args.next().ok_or(USAGE)?.into(),
            "--only" => only = Some(args.next().ok_or(USAGE)?),
            _ => return Err(format!("unknown argument `{a}`\n{USAGE}")),
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("bench: warning: debug build, figures are meaningless (use --release)");
    }
    let started = Instant::now();
    let load_start = load_average();
    let cfg = if profile {
        space::Config {
            rounds: 1,
            translations: 100_000,
            cold_batches: 1,
            reads: 200,
            only,
        }
    } else if quick {
        space::Config {
            rounds: 5,
            translations: 1_000_000,
            cold_batches: 8,
            reads: 2_000,
            only,
        }
    } else {
        space::Config {
            rounds: 15,
            translations: 1_000_000,
            cold_batches: 16,
            reads: 10_000,
            only,
        }
    };
    // The heap workload maps 1 GiB of guest frames (and the peer's map as much).
    // The peer's refaults leak frames for good (`space::REFAULTS` per round, two peer
    // subjects), and the heap workload runs after them.
    let frames = space::pool_frames(cfg.rounds).max(heap::SIZE / addrspace::FRAME_SIZE + 8192)
        + 2 * cfg.rounds * space::REFAULTS;
    eprintln!(
        "bench: {} mode, {} rounds, pool of {} MiB",
        if quick { "quick" } else { "full" },
        cfg.rounds,
        (frames * addrspace::FRAME_SIZE) >> 20
    );
    pool::init(frames)?;

    eprintln!("bench: address-space workloads");
    let mut figs = space::run(&cfg)?;
    if cfg.only.as_deref().is_none_or(|o| "heap".contains(o)) {
        eprintln!("bench: heap beyond the tables, 1 GiB of 4 KiB pages");
        figs.extend(heap::run()?);
    }
    if cfg.only.as_deref().is_none_or(|o| "vm".contains(o)) {
        eprintln!("bench: VM workloads (hal-mock)");
        figs.extend(vm::run(if quick {
            vm::Config {
                fault_pages: 8192,
                fault_runs: 3,
                unmaps: 20,
            }
        } else {
            vm::Config {
                fault_pages: 16384,
                fault_runs: 5,
                unmaps: 100,
            }
        })?);
    }

    std::fs::create_dir_all(&out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let json_path = out.join("summary.json");
    std::fs::write(&json_path, report::json(&figs))
        .map_err(|e| format!("write {}: {e}", json_path.display()))?;
    let points = space::growth_points(&figs);
    let series = [
        report::Series {
            label: "ours, x86 EPT",
            color: "#c0392b",
            points: points.iter().map(|p| (p.0 as f64, p.1)).collect(),
        },
        report::Series {
            label: "ours, Arm stage-2",
            color: "#e67e22",
            points: points.iter().map(|p| (p.0 as f64, p.2)).collect(),
        },
        report::Series {
            label: "axaddrspace 0.5.15",
            color: "#2c3e50",
            points: points.iter().map(|p| (p.0 as f64, p.3)).collect(),
        },
    ];
    let svg_path = out.join("map_time.svg");
    std::fs::write(
        &svg_path,
        report::svg("map time against mapped size (4 KiB leaves)", &series),
    )
    .map_err(|e| format!("write {}: {e}", svg_path.display()))?;
    let ratios_path = out.join("ratios.svg");
    std::fs::write(
        &ratios_path,
        report::ratio_svg("ours / peer against the targets (medians)", &figs),
    )
    .map_err(|e| format!("write {}: {e}", ratios_path.display()))?;

    print!("{}", report::table(&figs));
    println!(
        "\nwrote {}, {} and {} in {:.0} s ({} mode, {} rounds, medians); load average {} at \
         start, {} at end ({} CPUs: figures from a busy machine are noisier)",
        json_path.display(),
        svg_path.display(),
        ratios_path.display(),
        started.elapsed().as_secs_f64(),
        if quick { "quick" } else { "full" },
        cfg.rounds,
        load_start,
        load_average(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    Ok(())
}

/// The 1-minute load average, or `?` where `/proc/loadavg` does not exist.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
