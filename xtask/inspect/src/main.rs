//! The `inspect` command (run it as `cargo xtask inspect`): see the crate docs and
//! `USAGE`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use inspect::{Format, picture};
use vm_core::diag::ImageKind;
use vm_core::{AccessKind, GuestPhysAddr, VmConfig};

const USAGE: &str = "\
usage: cargo xtask inspect CONFIG.toml [options]

Builds the VM of CONFIG.toml on hal-mock (simulated host memory, the real nested
tables) and prints its guest-physical map, or what the options ask for:

  --format F            ept, npt, arm40, arm48, sv39 or sv48 (default: from the
                        file name: x86 npt, riscv sv39, aarch64 arm40)
  --host-dtb FILE       the host's device tree: places the pass-through entries
                        that name its nodes (without it they are listed as
                        unresolved, left out of the map)
  --guest-dtb FILE      the guest's device tree: its /memory nodes are the RAM of
                        a config with memory_regions = [] (without it the RAM is
                        listed as unresolved, and the map has none)
  --vmid N              the VMID for the root registers (default: the VM id)
  --map                 the map (the default when nothing else is asked)
  --audit               the permission and layout audit
  --image KIND=BYTES    an image's size for the audit (kernel, bios, dtb, ramdisk)
  --walk GPA            the per-level walk of GPA (repeatable)
  --fault GPA --access r|w|x
                        what the fault path would do with that access, and why
                        (repeatable)
  --svg FILE            a picture of the map (log-scaled, coloured by kind)
  --html FILE           the picture, the map and the audit as a web page
  --log LEVEL           vm-core's log on stderr: warn (default), info, debug
                        (every mapping), trace (every fault)
";

#[derive(Default)]
struct Args {
    config: Option<PathBuf>,
    format: Option<Format>,
    host_dtb: Option<PathBuf>,
    guest_dtb: Option<PathBuf>,
    vmid: Option<u16>,
    map: bool,
    audit: bool,
    images: Vec<(ImageKind, usize)>,
    walks: Vec<GuestPhysAddr>,
    faults: Vec<(GuestPhysAddr, AccessKind)>,
    svg: Option<PathBuf>,
    html: Option<PathBuf>,
    log: Option<log::LevelFilter>,
}

/// A number in decimal or hex (`0x4000_0000`), underscores allowed.
fn number(s: &str) -> Result<u64, String> {
    let clean: String = s.chars().filter(|c| *c != '_').collect();
    let parsed = match clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => clean.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a number: {e}"))
}

fn gpa(s: &str) -> Result<GuestPhysAddr, String> {
    let v = number(s)?;
    usize::try_from(v)
        .map(GuestPhysAddr::from_usize)
        .map_err(|_| format!("`{s}` does not fit an address of this host"))
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.iter();
    let mut pending_fault: Option<GuestPhysAddr> = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--format" => {
                let v = value("--format")?;
                a.format = Some(Format::parse(&v).ok_or_else(|| {
                    format!("unknown format `{v}` (ept, npt, arm40, arm48, sv39, sv48)")
                })?);
            }
            "--vmid" => {
                let v = value("--vmid")?;
                a.vmid = Some(
                    u16::try_from(number(&v)?).map_err(|_| format!("VMID `{v}` is above 65535"))?,
                );
            }
            "--host-dtb" => a.host_dtb = Some(value("--host-dtb")?.into()),
            "--guest-dtb" => a.guest_dtb = Some(value("--guest-dtb")?.into()),
            "--map" => a.map = true,
            "--audit" => a.audit = true,
            "--image" => {
                let v = value("--image")?;
                let (kind, bytes) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--image takes KIND=BYTES, not `{v}`"))?;
                let kind = match kind {
                    "kernel" => ImageKind::Kernel,
                    "bios" => ImageKind::Bios,
                    "dtb" => ImageKind::Dtb,
                    "ramdisk" => ImageKind::Ramdisk,
                    other => {
                        return Err(format!(
                            "unknown image `{other}` (kernel, bios, dtb, ramdisk)"
                        ));
                    }
                };
                let bytes = usize::try_from(number(bytes)?)
                    .map_err(|_| format!("image size `{bytes}` is too large"))?;
                a.images.push((kind, bytes));
            }
            "--walk" => a.walks.push(gpa(&value("--walk")?)?),
            "--fault" => {
                if pending_fault.is_some() {
                    return Err("--fault GPA needs --access r|w|x after it".into());
                }
                pending_fault = Some(gpa(&value("--fault")?)?);
            }
            "--access" => {
                let v = value("--access")?;
                let access = match v.as_str() {
                    "r" | "read" => AccessKind::Read,
                    "w" | "write" => AccessKind::Write,
                    "x" | "execute" | "exec" => AccessKind::Execute,
                    other => return Err(format!("unknown access `{other}` (r, w, x)")),
                };
                let at = pending_fault
                    .take()
                    .ok_or("--access goes after --fault GPA")?;
                a.faults.push((at, access));
            }
            "--svg" => a.svg = Some(value("--svg")?.into()),
            "--html" => a.html = Some(value("--html")?.into()),
            "--log" => {
                let v = value("--log")?;
                a.log =
                    Some(v.parse().map_err(|_| {
                        format!("unknown log level `{v}` (warn, info, debug, trace)")
                    })?);
            }
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with('-') => return Err(format!("unknown option `{flag}`")),
            path if a.config.is_none() => a.config = Some(path.into()),
            extra => return Err(format!("one config only (`{extra}`)")),
        }
    }
    if pending_fault.is_some() {
        return Err("--fault GPA needs --access r|w|x after it".into());
    }
    if a.config.is_none() {
        return Err("which config? (cargo xtask inspect configs/qemu-virt-aarch64.toml)".into());
    }
    Ok(a)
}

/// vm-core's log lines on stderr.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&args) {
        Ok(a) => a,
        Err(msg) if msg.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprint!("inspect: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(a.log.unwrap_or(log::LevelFilter::Warn));
    }
    let mut out = String::new();
    let result = run(&a, &mut out);
    // A closed pipe (`| head`) is not an error of ours: stop quietly.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("inspect: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; what it prints goes to `out`.
fn run(a: &Args, out: &mut String) -> Result<(), String> {
    let path = a.config.as_deref().unwrap_or(Path::new(""));
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut config = VmConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let read = |file: &Option<PathBuf>| -> Result<Option<Vec<u8>>, String> {
        file.as_deref()
            .map(|f| std::fs::read(f).map_err(|e| format!("{}: {e}", f.display())))
            .transpose()
    };
    let (host, guest) = (read(&a.host_dtb)?, read(&a.guest_dtb)?);
    inspect::resolve(&mut config, host.as_deref(), guest.as_deref())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (format, why) = match a.format {
        Some(f) => (f, "--format"),
        None => Format::for_config(path, &config),
    };
    let _ = writeln!(out, "{}: format {format} ({why})", path.display());
    let vm = inspect::inspect(config, format).map_err(|e| format!("{}: {e}", path.display()))?;
    let map = vm.guest_map(a.vmid);
    let wants_other = a.audit
        || !a.walks.is_empty()
        || !a.faults.is_empty()
        || a.svg.is_some()
        || a.html.is_some();
    if a.map || !wants_other {
        let _ = writeln!(out, "{map}");
    }
    if !vm.unresolved().is_empty() {
        let _ = writeln!(
            out,
            "unresolved (named by the config, placed only by a device tree; not in the map):"
        );
        for u in vm.unresolved() {
            let _ = writeln!(out, "  {u}");
        }
    }
    let findings = vm.audit(&a.images);
    if a.audit {
        let _ = writeln!(out, "audit: {} finding(s)", findings.len());
        for f in &findings {
            let _ = writeln!(out, "  {f}");
        }
    }
    for g in &a.walks {
        let _ = writeln!(out, "{}", vm.walk(*g));
    }
    for (g, access) in &a.faults {
        let _ = writeln!(out, "{}", vm.explain_fault(*g, *access));
    }
    let mut write = |file: &Path, what: &str, text: String| -> Result<(), String> {
        std::fs::write(file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        let _ = writeln!(out, "wrote {what} {}", file.display());
        Ok(())
    };
    if let Some(file) = &a.svg {
        write(file, "picture", picture::svg(&map))?;
    }
    if let Some(file) = &a.html {
        write(
            file,
            "page",
            picture::html(&map, vm.unresolved(), &findings),
        )?;
    }
    Ok(())
}
