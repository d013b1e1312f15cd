//! `cargo xtask bench --linux [--quick]`: what running Linux under the hypervisor
//! costs, for every board that runs Linux. The same kernel and initramfs boot on
//! plain QEMU (QEMU's firmware and device tree) and under the hypervisor, rounds
//! interleaved so load changes hit both alike; each run is timed to the marker line
//! of `/init` in QEMU CPU seconds (user + system of all its threads: wall time swings
//! with the machine's load) and stopped there. The figure is the ratio of the
//! medians, hypervisor over plain (target: at most 1.3). One more run under the
//! hypervisor goes to the end for the exits per boot by kind. Results go to
//! `target/bench/linux-<arch>.json` and the terminal. Not part of `cargo xtask test`.

use std::fmt::Write as _;

use crate::cross::{self, Arch};
use crate::qemu::{self, Marker, Watch};
use crate::run::{Failed, workspace_root};

/// The target ratio of QEMU CPU seconds to the marker, hypervisor over plain.
const TARGET_RATIO: f64 = 1.3;

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    cpu: f64,
    wall: f64,
}

/// Runs the benchmark for every board with a Linux guest; `quick` runs 2 rounds
/// instead of 5.
pub(crate) fn bench(quick: bool) -> Result<(), Failed> {
    let rounds = if quick { 2 } else { 5 };
    let mut any = false;
    for arch in Arch::ALL {
        if qemu::board(arch).linux.is_some() {
            bench_arch(arch, rounds)?;
            any = true;
        }
    }
    if any {
        Ok(())
    } else {
        Err(Failed("no board runs Linux".into()))
    }
}

fn bench_arch(arch: Arch, rounds: usize) -> Result<(), Failed> {
    let board = qemu::board(arch);
    let Some(linux) = board.linux.as_ref() else {
        return Ok(());
    };
    qemu::ensure_qemu(&board)?;
    cross::ensure_toolchain()?;
    let guest = crate::linux::prepare(arch)?;
    let config = workspace_root().join("configs").join(linux.config);
    let image = qemu::build_image(arch, &board, Some(config), Some(&guest))?;
    let timed = |mut cmd: std::process::Command| -> Result<Sample, Failed> {
        let out = qemu::run_with_timeout(
            &mut cmd,
            Watch {
                marker: Some(crate::linux::MARKER),
                stop_at_marker: true,
                ..Watch::new(linux.timeout, &[])
            },
        )?;
        let Some(Marker { cpu, wall, .. }) = out.marker else {
            return Err(Failed("Linux never printed its marker line".into()));
        };
        Ok(Sample {
            cpu,
            wall: wall.as_secs_f64(),
        })
    };
    let mut plain = Vec::new();
    let mut hosted = Vec::new();
    for round in 1..=rounds {
        println!("\n==> bench linux {}: round {round}/{rounds}", arch.name());
        plain.push(timed(qemu::plain_linux_command(&board, linux, &guest))?);
        hosted.push(timed(qemu::hosted_linux_command(&board, linux, &image))?);
    }
    println!("\n==> bench linux {}: one run to the end", arch.name());
    let mut cmd = qemu::hosted_linux_command(&board, linux, &image);
    let full = qemu::run_with_timeout(&mut cmd, Watch::new(linux.timeout, &[]))?;
    let exits = full
        .lines
        .iter()
        .find_map(|l| l.split_once("exits per boot: ").map(|(_, e)| e.to_string()))
        .unwrap_or_else(|| "(the run printed no exit counts)".into());

    let (p, h) = (median(&plain, |s| s.cpu), median(&hosted, |s| s.cpu));
    let ratio = h / p;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "Linux {} ({}), {rounds} rounds, QEMU CPU seconds to the marker (wall in brackets):",
        guest.release,
        arch.name()
    );
    for (i, (a, b)) in plain.iter().zip(&hosted).enumerate() {
        let _ = writeln!(
            table,
            "  round {}: plain {:.2} s ({:.2} s), hypervisor {:.2} s ({:.2} s)",
            i + 1,
            a.cpu,
            a.wall,
            b.cpu,
            b.wall
        );
    }
    let _ = writeln!(
        table,
        "  median: plain {p:.2} s, hypervisor {h:.2} s: ratio {ratio:.2}x (target <= {TARGET_RATIO}x{})",
        if ratio <= TARGET_RATIO {
            ", met"
        } else {
            ", MISSED"
        }
    );
    let _ = writeln!(table, "  exits per boot (to power-off): {exits}");
    println!("\n{table}");

    let out = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&out).map_err(|e| Failed(format!("{}: {e}", out.display())))?;
    let path = out.join(format!("linux-{}.json", arch.name()));
    let list = |v: &[Sample], f: fn(&Sample) -> f64| {
        v.iter()
            .map(|s| format!("{:.3}", f(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let json = format!(
        "{{\n  \"arch\": \"{}\",\n  \"kernel\": \"{}\",\n  \"rounds\": {rounds},\n  \
         \"plain_cpu_s\": [{}],\n  \"hypervisor_cpu_s\": [{}],\n  \
         \"plain_wall_s\": [{}],\n  \"hypervisor_wall_s\": [{}],\n  \
         \"median_plain_cpu_s\": {p:.3},\n  \"median_hypervisor_cpu_s\": {h:.3},\n  \
         \"ratio\": {ratio:.3},\n  \"target_ratio\": {TARGET_RATIO},\n  \"exits\": \"{}\"\n}}\n",
        arch.name(),
        guest.release,
        list(&plain, |s| s.cpu),
        list(&hosted, |s| s.cpu),
        list(&plain, |s| s.wall),
        list(&hosted, |s| s.wall),
        exits.replace('"', "'")
    );
    std::fs::write(&path, json).map_err(|e| Failed(format!("{}: {e}", path.display())))?;
    println!("xtask: results in {}", path.display());
    Ok(())
}

/// The median of `f` over `samples` (the mean of the middle two for an even count).
fn median(samples: &[Sample], f: fn(&Sample) -> f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let s = |cpu| Sample { cpu, wall: 0.0 };
        assert_eq!(median(&[s(3.0), s(1.0), s(2.0)], |x| x.cpu), 2.0);
        assert_eq!(median(&[s(4.0), s(1.0), s(2.0), s(3.0)], |x| x.cpu), 2.5);
        assert!(median(&[], |x| x.cpu).is_nan());
    }
}
