//! `cargo xtask qemu <arch>`: build a board's hypervisor image, boot it in QEMU with a
//! timeout, and exit with the guest's verdict.
//!
//! Each board prints `N passed, M failed` as its closing line and makes QEMU exit
//! with a non-zero status on failure (semihosting, the sifive test device or
//! `isa-debug-exit`); xtask checks both the status and the summary line.
//!
//! `--guest linux` boots Debian's Linux (see `linux.rs`) under the hypervisor on boards
//! that have a [`LinuxBoard`], with the board's Linux VM config; `--no-hypervisor`
//! boots the same kernel and initramfs on plain QEMU. Either way xtask also checks the
//! lines `/init` prints and reports the wall and QEMU CPU seconds to its marker line.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cross::{self, Arch, cross_cargo};
use crate::run::{Failed, run};

/// How one board is built and booted.
pub(crate) struct Board {
    /// Cargo package of the board (under `platforms/`).
    pub(crate) package: &'static str,
    /// Cargo package of the test guest built first and embedded in the image (its
    /// flat binary's path goes to the board build as `HV_GUEST_IMAGE`).
    pub(crate) guest: Option<&'static str>,
    /// Lines the console must show (e.g. what the guest printed through its UART).
    pub(crate) required_output: &'static [&'static str],
    /// Keys typed on the hypervisor's console during the test run (its diagnostics
    /// on request), and the lines they must bring.
    pub(crate) console_keys: Option<ConsoleKeys>,
    /// Debian package that provides the QEMU binary.
    pub(crate) qemu_package: &'static str,
    /// QEMU binary.
    pub(crate) qemu: &'static str,
    /// QEMU arguments before `-kernel <image>`.
    pub(crate) args: &'static [&'static str],
    /// Whether QEMU wants a flat binary (objcopy -O binary) instead of the ELF.
    pub(crate) flat_binary: bool,
    /// Exit statuses of QEMU that mean success.
    pub(crate) ok_status: &'static [i32],
    /// Wall-clock limit for one run.
    pub(crate) timeout: Duration,
    /// How the board runs a Linux guest, if it can.
    pub(crate) linux: Option<LinuxBoard>,
}

/// Keys typed on a board's console: once a line containing `after` appeared (the
/// hypervisor has started), xtask writes `keys` to QEMU's stdin; they wait in the
/// UART (and QEMU's console) until the board reads them between the exits of its
/// running test VM and prints the reports they ask for.
#[derive(Clone, Copy)]
pub(crate) struct ConsoleKeys {
    pub(crate) after: &'static str,
    pub(crate) keys: &'static str,
    pub(crate) required: &'static [&'static str],
}

/// How a board runs Debian's Linux (`--guest linux`).
pub(crate) struct LinuxBoard {
    /// The VM config (`configs/`) the hypervisor runs Linux with.
    pub(crate) config: &'static str,
    /// QEMU's memory (`-m`) under the hypervisor: the guest's RAM as the workload fills
    /// it, the hypervisor's tables and the kernel and initramfs built into its image.
    pub(crate) memory: &'static str,
    /// QEMU's memory without the hypervisor: the guest's RAM (the board's other
    /// arguments stay; QEMU's own firmware and device tree boot the kernel).
    pub(crate) plain_memory: &'static str,
    /// The kernel command line without the hypervisor: the VM config's, less what
    /// only the hypervisor's devices need.
    pub(crate) plain_append: &'static str,
    /// The guest's CPU count, which the marker line must show.
    pub(crate) cpus: u32,
    /// Wall-clock limit for one Linux run.
    pub(crate) timeout: Duration,
    /// Whether `cargo xtask test` runs it (a whole run, fetch and build included,
    /// fits in about 3 minutes on 2 cores).
    pub(crate) in_test: bool,
}

/// Which guest a QEMU run boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Guest {
    /// The self-checking test guest (the default).
    Test,
    /// Debian's Linux with the busybox initramfs.
    Linux,
}

/// What every board's test run must show: the guest's console, the
/// diagnostics it asked for, and the fault-loop run's (`loop`) report and check.
const TEST_RUN_REQUIRED: &[&str] = &[
    "hello from the guest",
    "=== end of diagnostics ===",
    "fault loop: vCPU 0 faulted",
    "[loop] ok   fault-loop detector",
];

/// The board of `arch`.
pub(crate) fn board(arch: Arch) -> Board {
    match arch {
        // QEMU's TCG emulates AMD SVM with nested paging (not VMX): the EPYC model
        // offers SVM, NPT and 1 GiB pages. Multiboot 1 wants a flat a.out-kludge
        // image; the hypervisor exits through isa-debug-exit with 0x10 (status 33)
        // on success and 0x11 (35) on failure.
        Arch::X86_64 => Board {
            package: "qemu-pc-x86_64",
            guest: Some("test-guest"),
            required_output: TEST_RUN_REQUIRED,
            // `d`: the map; `w` + address + Enter: the walk of the image's first page.
            console_keys: Some(ConsoleKeys {
                after: "hvcore x86_64: QEMU pc board",
                keys: "dw0x100000\r",
                required: &["on request (key d)", "console: walk of 0x100000 in VM "],
            }),
            qemu_package: "qemu-system-x86",
            qemu: "qemu-system-x86_64",
            args: &[
                "-M",
                "pc",
                "-cpu",
                "EPYC",
                "-m",
                "128M",
                "-smp",
                "1",
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ],
            flat_binary: true,
            ok_status: &[33],
            timeout: Duration::from_secs(60),
            linux: None,
        },
        // EL2 from QEMU's boot (`virtualization=on`), `-cpu max` for a 52-bit
        // PARange (the 48-bit IPA run needs more than 44), GICv3 for kick SGIs, two
        // CPUs so the guest's second vCPU runs on its own physical CPU. The
        // hypervisor ends QEMU with semihosting SYS_EXIT: status 0 when every check
        // passed, 1 when one failed, 2 on a hypervisor panic.
        Arch::Aarch64 => Board {
            package: "qemu-virt-aarch64",
            guest: Some("test-guest"),
            required_output: TEST_RUN_REQUIRED,
            console_keys: Some(ConsoleKeys {
                after: "qemu-virt-aarch64: hypervisor at EL2",
                keys: "dw0x40001000\r",
                required: &["on request (key d)", "console: walk of 0x40001000 in VM "],
            }),
            qemu_package: "qemu-system-arm",
            qemu: "qemu-system-aarch64",
            args: &[
                "-M",
                "virt,virtualization=on,gic-version=3",
                "-cpu",
                // QEMU's default pointer-authentication algorithm (QARMA5) makes
                // every guest 2.5-3.5x slower under TCG; the implementation-defined
                // one does the same job cheaply.
                "max,pauth-impdef=on",
                "-smp",
                "2",
                "-m",
                "512M",
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
                "-semihosting",
            ],
            flat_binary: false,
            ok_status: &[0],
            timeout: Duration::from_secs(60),
            // Linux sees a virtual GICv3 (its timer, IPIs and UART interrupts go
            // through list registers), PSCI by HVC, and the PL011.
            linux: Some(LinuxBoard {
                config: "qemu-virt-aarch64-linux.toml",
                memory: "1536M",
                plain_memory: "512M",
                plain_append: "console=ttyAMA0 quiet panic=-1 printk.devkmsg=on",
                cpus: 2,
                timeout: Duration::from_secs(300),
                // About 16 s of QEMU (the marker at 3 s QEMU CPU, the 320 MiB
                // workload most of the rest) and a minute of build.
                in_test: true,
            }),
        },
        // The H extension (`h=true`) gives HS-mode under the bundled OpenSBI, which
        // starts the ELF at 0x8020_0000; two harts so the guest's second vCPU runs on
        // its own. The hypervisor ends QEMU through the SiFive test device: status 0
        // when every check passed, 1 when one failed, 2 on a hypervisor panic.
        Arch::Riscv64 => Board {
            package: "qemu-virt-riscv64",
            guest: Some("test-guest"),
            required_output: TEST_RUN_REQUIRED,
            console_keys: Some(ConsoleKeys {
                after: "hvcore riscv64: QEMU virt board",
                keys: "dw0x80001000\r",
                required: &["on request (key d)", "console: walk of 0x80001000 in VM "],
            }),
            qemu_package: "qemu-system-misc",
            qemu: "qemu-system-riscv64",
            args: &[
                "-M",
                "virt",
                "-cpu",
                "rv64,h=true",
                "-smp",
                "2",
                "-m",
                "128M",
                "-nographic",
                "-no-reboot",
                "-nic",
                "none",
            ],
            flat_binary: false,
            ok_status: &[0],
            timeout: Duration::from_secs(60),
            // Linux sees the UART, the harts' timer (Sstc) and SBI: no interrupt
            // controller, so the console is polled.
            linux: Some(LinuxBoard {
                config: "qemu-virt-riscv64-linux.toml",
                memory: "2G",
                plain_memory: "512M",
                plain_append: "console=ttyS0 quiet panic=-1 printk.devkmsg=on",
                cpus: 2,
                timeout: Duration::from_secs(300),
                // About 40 s of QEMU (boot 5 s, the 320 MiB workload with 96 k lazy
                // 4 KiB faults most of the rest) and a minute of build.
                in_test: true,
            }),
        },
    }
}

/// Builds and boots the board of `arch` with `guest`; `config` overrides the embedded
/// VM config; without `hypervisor` the Linux guest boots on plain QEMU.
pub(crate) fn qemu(
    arch: Arch,
    config: Option<PathBuf>,
    guest: Guest,
    hypervisor: bool,
) -> Result<(), Failed> {
    let board = board(arch);
    ensure_qemu(&board)?;
    if guest == Guest::Test {
        cross::ensure_toolchain()?;
        let image = build_image(arch, &board, config, None)?;
        return boot(&board, &image);
    }
    let linux = board.linux.as_ref().ok_or_else(|| {
        Failed(format!(
            "the {} board cannot run Linux yet (--guest test only)",
            arch.name()
        ))
    })?;
    let guest = crate::linux::prepare(arch)?;
    let run = if hypervisor {
        cross::ensure_toolchain()?;
        let config = config.unwrap_or_else(|| {
            crate::run::workspace_root()
                .join("configs")
                .join(linux.config)
        });
        if !config.exists() {
            return Err(Failed(format!(
                "no Linux VM config {} for the {} board",
                config.display(),
                arch.name()
            )));
        }
        let image = build_image(arch, &board, Some(config), Some(&guest))?;
        boot_linux_hosted(&board, linux, &image)?
    } else {
        boot_linux_plain(&board, linux, &guest)?
    };
    println!(
        "xtask: Linux {} reached the marker in {:.2} s wall, {:.2} s QEMU CPU ({})",
        guest.release,
        run.wall.as_secs_f64(),
        run.cpu,
        if hypervisor {
            "under the hypervisor"
        } else {
            "plain QEMU"
        }
    );
    Ok(())
}

pub(crate) fn ensure_qemu(board: &Board) -> Result<(), Failed> {
    let present = Command::new(board.qemu)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    println!(
        "xtask: {} is missing; installing {}",
        board.qemu, board.qemu_package
    );
    cross::apt_install(&[board.qemu_package])
}

/// Builds the board package in release mode and returns the image QEMU boots; with
/// `linux`, its kernel and initramfs are built into the image (`HV_LINUX_KERNEL`,
/// `HV_LINUX_INITRD`).
pub(crate) fn build_image(
    arch: Arch,
    board: &Board,
    config: Option<PathBuf>,
    linux: Option<&crate::linux::LinuxGuest>,
) -> Result<PathBuf, Failed> {
    let out_dir = cross::cross_target_dir()
        .join(arch.target())
        .join("release");
    let mut cmd = cross_cargo(arch, "build");
    cmd.args(["--release", "-p", board.package]);
    if let Some(guest) = board.guest {
        run(cross_cargo(arch, "build").args(["--release", "-p", guest]))?;
        let guest_bin = out_dir.join(format!("{guest}.bin"));
        objcopy_binary(&out_dir.join(guest), &guest_bin)?;
        cmd.env("HV_GUEST_IMAGE", &guest_bin);
    }
    if let Some(config) = &config {
        let config = config
            .canonicalize()
            .map_err(|e| Failed(format!("config {}: {e}", config.display())))?;
        cmd.env("HV_VM_CONFIG", config);
    }
    if let Some(linux) = linux {
        cmd.env("HV_LINUX_KERNEL", &linux.kernel)
            .env("HV_LINUX_INITRD", &linux.initrd);
    }
    run(&mut cmd)?;
    let elf = out_dir.join(board.package);
    if !board.flat_binary {
        return Ok(elf);
    }
    let bin = elf.with_extension("bin");
    objcopy_binary(&elf, &bin)?;
    Ok(bin)
}

/// `objcopy -O binary` with whichever objcopy the machine has.
fn objcopy_binary(elf: &std::path::Path, bin: &std::path::Path) -> Result<(), Failed> {
    for tool in ["llvm-objcopy", "rust-objcopy", "objcopy"] {
        let ok = Command::new(tool)
            .args(["-O", "binary"])
            .arg(elf)
            .arg(bin)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
    }
    Err(Failed(format!(
        "no objcopy could convert {}",
        elf.display()
    )))
}

/// What a QEMU run printed and how it ended.
pub(crate) struct Outcome {
    status: Option<i32>,
    timed_out: bool,
    summary: Option<(u32, u32)>,
    /// Required lines that never appeared.
    missing: Vec<&'static str>,
    wall: Duration,
    /// When the marker line appeared, if one was asked for.
    pub(crate) marker: Option<Marker>,
    /// Every line the console printed.
    pub(crate) lines: Vec<String>,
}

/// The marker line and the time QEMU took to print it.
#[derive(Clone, Debug)]
pub(crate) struct Marker {
    /// The whole line.
    pub(crate) line: String,
    /// Wall time from QEMU's start.
    pub(crate) wall: Duration,
    /// QEMU's CPU seconds (user + system, all threads) by then.
    pub(crate) cpu: f64,
}

/// Boots `image`, echoing the console (and typing the board's console keys), and
/// checks the verdict.
fn boot(board: &Board, image: &std::path::Path) -> Result<(), Failed> {
    let mut cmd = Command::new(board.qemu);
    cmd.args(board.args).arg("-kernel").arg(image);
    let mut required = board.required_output.to_vec();
    if let Some(keys) = &board.console_keys {
        required.extend_from_slice(keys.required);
    }
    let out = run_with_timeout(
        &mut cmd,
        Watch {
            input: board.console_keys.map(|k| (k.after, k.keys)),
            ..Watch::new(board.timeout, &required)
        },
    )?;
    report_kick_to_ack(&out.lines);
    check_summary(&out, board)
}

/// Prints the kick-to-acknowledge figures the board printed (`... shootdown:
/// kick-to-acknowledge 12.345 us`, `... pause: ...`, on the board's clock): median
/// and max per kind, in µs.
fn report_kick_to_ack(lines: &[String]) {
    for kind in ["shootdown", "pause"] {
        let mut us = kick_to_ack(lines, kind);
        if us.is_empty() {
            continue;
        }
        us.sort_by(f64::total_cmp);
        println!(
            "xtask: kick-to-acknowledge ({kind}, board clock): median {:.1} us, max {:.1} us over {} probe(s)",
            median(&us),
            us[us.len() - 1],
            us.len()
        );
    }
}

/// The µs figures of `kind` in `lines`.
fn kick_to_ack(lines: &[String], kind: &str) -> Vec<f64> {
    let tag = format!("{kind}: kick-to-acknowledge ");
    lines
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find(&tag)? + tag.len()..];
            rest.strip_suffix(" us")?.trim().parse().ok()
        })
        .collect()
}

/// The median of sorted `v` (not empty).
fn median(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Checks a run that ends with the hypervisor's `N passed, M failed` and QEMU's
/// status.
fn check_summary(out: &Outcome, board: &Board) -> Result<(), Failed> {
    println!(
        "xtask: QEMU wall time {:.2} s, status {:?}",
        out.wall.as_secs_f64(),
        out.status
    );
    if out.timed_out {
        return Err(Failed(format!(
            "QEMU did not finish within {} s",
            board.timeout.as_secs()
        )));
    }
    if let Some(missing) = out.missing.first() {
        return Err(Failed(format!("the console never showed `{missing}`")));
    }
    let Some((passed, failed)) = out.summary else {
        return Err(Failed("no `N passed, M failed` line in the output".into()));
    };
    let status_ok = out.status.is_some_and(|s| board.ok_status.contains(&s));
    if failed > 0 || passed == 0 || !status_ok {
        return Err(Failed(format!(
            "{passed} passed, {failed} failed, QEMU status {:?}",
            out.status
        )));
    }
    println!("xtask: {passed} passed, {failed} failed");
    Ok(())
}

/// Boots the hypervisor image with Linux built in and checks both the hypervisor's
/// verdict and what `/init` printed (the doorbell check included).
fn boot_linux_hosted(
    board: &Board,
    linux: &LinuxBoard,
    image: &std::path::Path,
) -> Result<Marker, Failed> {
    let mut cmd = hosted_linux_command(board, linux, image);
    let required: Vec<&'static str> = crate::linux::REQUIRED
        .iter()
        .copied()
        .chain([crate::linux::DOORBELL_OK])
        .collect();
    let out = run_with_timeout(
        &mut cmd,
        Watch {
            marker: Some(crate::linux::MARKER),
            ..Watch::new(linux.timeout, &required)
        },
    )?;
    report_kick_to_ack(&out.lines);
    check_summary(&out, board)?;
    check_marker(out.marker, linux)
}

/// Boots the Linux kernel and initramfs on plain QEMU (QEMU's firmware and device
/// tree): `/init` must pass its checks and power off.
fn boot_linux_plain(
    board: &Board,
    linux: &LinuxBoard,
    guest: &crate::linux::LinuxGuest,
) -> Result<Marker, Failed> {
    let mut cmd = plain_linux_command(board, linux, guest);
    let out = run_with_timeout(
        &mut cmd,
        Watch {
            marker: Some(crate::linux::MARKER),
            ..Watch::new(linux.timeout, crate::linux::REQUIRED)
        },
    )?;
    if out.timed_out {
        return Err(Failed(format!(
            "QEMU did not finish within {} s",
            linux.timeout.as_secs()
        )));
    }
    if let Some(missing) = out.missing.first() {
        return Err(Failed(format!("the console never showed `{missing}`")));
    }
    if out.status != Some(0) {
        return Err(Failed(format!("QEMU status {:?}", out.status)));
    }
    check_marker(out.marker, linux)
}

/// QEMU running the hypervisor image with Linux built in: the board's arguments with
/// the Linux run's memory.
pub(crate) fn hosted_linux_command(
    board: &Board,
    linux: &LinuxBoard,
    image: &std::path::Path,
) -> Command {
    let mut cmd = Command::new(board.qemu);
    cmd.args(with_memory(board.args, linux.memory))
        .arg("-kernel")
        .arg(image);
    cmd
}

/// `args` with the value of `-m` replaced by `memory`.
fn with_memory<'a>(args: &[&'a str], memory: &'a str) -> Vec<&'a str> {
    let mut args = args.to_vec();
    if let Some(m) = args.iter().position(|a| *a == "-m")
        && let Some(value) = args.get_mut(m + 1)
    {
        *value = memory;
    }
    args
}

/// QEMU running the Linux guest without the hypervisor.
pub(crate) fn plain_linux_command(
    board: &Board,
    linux: &LinuxBoard,
    guest: &crate::linux::LinuxGuest,
) -> Command {
    let mut cmd = Command::new(board.qemu);
    cmd.args(with_memory(board.args, linux.plain_memory))
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args(["-append", linux.plain_append]);
    cmd
}

/// The marker line must have appeared and show the board's CPU count.
fn check_marker(marker: Option<Marker>, linux: &LinuxBoard) -> Result<Marker, Failed> {
    let marker = marker.ok_or_else(|| Failed("Linux never printed its marker line".into()))?;
    let cpus = format!("CPUs: {}", linux.cpus);
    if !marker.line.trim_end().ends_with(&cpus) {
        return Err(Failed(format!(
            "the marker line does not end with `{cpus}`: {}",
            marker.line
        )));
    }
    Ok(marker)
}

/// QEMU's user + system CPU seconds so far (all its threads), from
/// `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and
    // 15 of the line (11 and 12 after the name), in clock ticks.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second() as f64)
}

/// `getconf CLK_TCK` (100 on every Linux this runs on; asked, not assumed).
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// How [`run_with_timeout`] watches a run.
#[derive(Clone, Copy)]
pub(crate) struct Watch<'a> {
    /// The run's wall-clock limit.
    pub(crate) timeout: Duration,
    /// Lines that must appear.
    pub(crate) required: &'a [&'static str],
    /// The marker line to time.
    pub(crate) marker: Option<&'static str>,
    /// End QEMU once the marker appeared (benchmarks need only the time to it).
    pub(crate) stop_at_marker: bool,
    /// Bytes to write to QEMU's stdin once a line contains the first string.
    pub(crate) input: Option<(&'static str, &'static str)>,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(timeout: Duration, required: &'a [&'static str]) -> Watch<'a> {
        Watch {
            timeout,
            required,
            marker: None,
            stop_at_marker: false,
            input: None,
        }
    }
}

pub(crate) fn run_with_timeout(cmd: &mut Command, watch: Watch<'_>) -> Result<Outcome, Failed> {
    let Watch {
        timeout,
        required,
        marker,
        stop_at_marker,
        input,
    } = watch;
    println!("$ {}", crate::run::show(cmd));
    let started = Instant::now();
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failed(format!("cannot start {:?}: {e}", cmd.get_program())))?;
    let stdout = child.stdout.take().ok_or(Failed("no stdout".into()))?;
    // Kept open until QEMU ends (its console would see the end of input).
    let mut stdin = child.stdin.take();
    let mut input = input;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let required_lines = required.to_vec();
    let marker_seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let marker_flag = marker_seen.clone();
    let reader = std::thread::spawn(move || {
        let mut summary = None;
        let mut seen = None;
        let mut lines = Vec::new();
        let mut missing = required_lines;
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if seen.is_none()
                && let Some(m) = marker.filter(|m| text.contains(m))
            {
                seen = Some(Marker {
                    line: text[text.find(m).unwrap_or(0)..].to_string(),
                    wall: started.elapsed(),
                    cpu: cpu_seconds(pid).unwrap_or(f64::NAN),
                });
                marker_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            println!("{text}");
            if let Some((_, keys)) = input.filter(|(after, _)| text.contains(after)) {
                println!("xtask: typing {keys:?} on the console");
                if let Some(stdin) = stdin.as_mut() {
                    let _ = stdin
                        .write_all(keys.as_bytes())
                        .and_then(|()| stdin.flush());
                }
                input = None;
            }
            if let Some(s) = parse_summary(&text) {
                summary = Some(s);
            }
            missing.retain(|m| !text.contains(m));
            lines.push(text);
        }
        let _ = tx.send((summary, missing, seen, lines));
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| Failed(e.to_string()))? {
            break status.code();
        }
        if started.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if stop_at_marker && marker_seen.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (summary, missing, marker, lines) = rx.recv_timeout(Duration::from_secs(5)).unwrap_or((
        None,
        required.to_vec(),
        None,
        Vec::new(),
    ));
    let _ = reader.join();
    Ok(Outcome {
        status,
        timed_out,
        summary,
        missing,
        wall: started.elapsed(),
        marker,
        lines,
    })
}

/// Finds `N passed, M failed` in a line.
fn parse_summary(line: &str) -> Option<(u32, u32)> {
    let idx = line.find(" passed, ")?;
    let passed = line[..idx]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    let rest = &line[idx + " passed, ".len()..];
    let failed = rest
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    rest[rest.find(' ')?..]
        .starts_with(" failed")
        .then_some((passed, failed))
}

#[cfg(test)]
mod tests {
    use super::{board, parse_summary};
    use crate::cross::Arch;

    /// Regression: the virt boards' default network card wants a ROM from
    /// `ipxe-qemu`, which `--no-install-recommends qemu-system-arm` does not
    /// bring, so QEMU refused to start on a fresh machine ("failed to find romfile
    /// efi-virtio.rom"). No board may get a default NIC.
    #[test]
    fn boards_start_without_a_default_nic() {
        for arch in [Arch::X86_64, Arch::Aarch64, Arch::Riscv64] {
            let args = board(arch).args;
            assert!(
                args.windows(2).any(|w| w == ["-nic", "none"]),
                "{arch:?} board has a default NIC: {args:?}"
            );
        }
    }

    /// The Linux runs keep the board's machine and change only its memory.
    #[test]
    fn linux_runs_change_only_the_memory() {
        let b = board(Arch::Riscv64);
        let linux = b.linux.as_ref().unwrap();
        let plain = super::with_memory(b.args, linux.plain_memory);
        assert_eq!(plain.len(), b.args.len());
        assert!(plain.windows(2).any(|w| w == ["-m", "512M"]));
        assert!(plain.windows(2).any(|w| w == ["-smp", "2"]));
        assert_eq!(super::with_memory(&["-M", "virt"], "1G"), ["-M", "virt"]);
    }

    #[test]
    fn kick_to_ack_figures() {
        let lines: Vec<String> = [
            "unmap 0x51000000: shootdown: kick-to-acknowledge 12.500 us",
            "[ipa40] pause: kick-to-acknowledge 80.000 us",
            "[linux] doorbell shootdown: kick-to-acknowledge 3.250 us",
            "shootdown: kick-to-acknowledge many us",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(super::kick_to_ack(&lines, "shootdown"), [12.5, 3.25]);
        assert_eq!(super::kick_to_ack(&lines, "pause"), [80.0]);
        assert_eq!(super::median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(super::median(&[1.0, 2.0]), 1.5);
    }

    #[test]
    fn summary_line() {
        assert_eq!(parse_summary("[hv] 12 passed, 0 failed"), Some((12, 0)));
        assert_eq!(
            parse_summary("3 passed, 2 failed (40-bit IPA)"),
            Some((3, 2))
        );
        assert_eq!(parse_summary("passed, failed"), None);
    }
}
