//! Linux guests from Debian's packages, for any architecture with a Debian kernel:
//! the kernel and `busybox-static` fetched with apt, and the initramfs built around
//! them.
//!
//! - **Fetching** ([`fetch`]) uses a private apt state under `target/linux/<arch>/apt`:
//!   its own sources list (riscv64 from trixie, arm64 from bookworm and
//!   bookworm-security, each limited to that architecture), package lists, cache and an
//!   empty dpkg status. The machine's apt sources, its dpkg architectures and its
//!   installed packages are never changed (the only machine file read is Debian's
//!   archive keyring), so the machine's own `apt-get update` works exactly as before.
//!   The kernel image and busybox are unpacked with `dpkg-deb` and `tar` and cached
//!   beside it: once there, a run needs no network.
//! - **The initramfs** ([`initramfs`]) is a newc cpio (the `cpio` crate writes the
//!   headers, the 4-byte padding and the trailer, and reads archives back for the
//!   tests; writing the format ourselves would repeat it) holding `/init` (the shell
//!   script `init.sh`, filled in here), `/bin/busybox`, `/dev/console` and
//!   `/pattern`, uncompressed (nothing to inflate under emulation).
//! - **What the guest prints** ([`MARKER`], [`REQUIRED`]) is what xtask checks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cross::Arch;
use crate::run::{Failed, run, show, workspace_root};

/// The marker line's words (after `hvcore-linux: `): xtask measures the time to it.
pub(crate) const MARKER: &str = "hvcore-linux: up:";
/// Lines every Linux run must print (the doorbell line only where the board offers
/// the doorbell, see [`DOORBELL_OK`]).
pub(crate) const REQUIRED: &[&str] = &[MARKER, "hvcore-linux: workload: ok", RESULT_OK];
/// The doorbell check passed (under our hypervisor).
pub(crate) const DOORBELL_OK: &str = "hvcore-linux: doorbell: ok";
/// `/init`'s closing verdict.
pub(crate) const RESULT_OK: &str = "hvcore-linux: result: ok";

/// The memory workload: copies of the pattern written to a tmpfs and read back
/// (320 copies of 1 MiB - 3 bytes: 320 MiB less 960 bytes).
pub(crate) const WORKLOAD_COPIES: u64 = 320;
/// The tmpfs it is written to, in MiB.
const TMPFS_MIB: u64 = 400;
/// The pattern's length: odd, so the 81920 pages of the file all start at different
/// offsets of the pattern and hold different bytes (a page mapped at the wrong place,
/// or lost, changes the checksum).
const PATTERN_LEN: usize = (1 << 20) - 3;

/// Where an architecture's packages come from and what its kernel image looks like.
struct Distro {
    /// Debian's name of the architecture.
    deb_arch: &'static str,
    /// The apt sources (deb822), limited to `deb_arch`.
    sources: &'static str,
    /// The kernel's metapackage; it depends on the versioned image package.
    kernel_meta: &'static str,
    /// Prefix of the kernel image's file name under `boot/`.
    image_prefix: &'static str,
    /// The boot image's magic and its offset (Linux's `Documentation/arch/*/booting`).
    magic: (usize, &'static [u8]),
}

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

fn distro(arch: Arch) -> Result<Distro, Failed> {
    match arch {
        // Bookworm has no riscv64 port; trixie's main has the kernel (6.12) and busybox.
        Arch::Riscv64 => Ok(Distro {
            deb_arch: "riscv64",
            sources: "Types: deb\n\
                      URIs: http://deb.debian.org/debian\n\
                      Suites: trixie\n\
                      Components: main\n\
                      Architectures: riscv64\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            kernel_meta: "linux-image-riscv64",
            image_prefix: "vmlinux-",
            // "RSC\x05" at 0x38 (riscv/boot-image-header.rst).
            magic: (0x38, b"RSC\x05"),
        }),
        Arch::Aarch64 => Ok(Distro {
            deb_arch: "arm64",
            sources: "Types: deb\n\
                      URIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\n\
                      Components: main\n\
                      Architectures: arm64\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
                      \n\
                      Types: deb\n\
                      URIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n\
                      Components: main\n\
                      Architectures: arm64\n\
                      Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            kernel_meta: "linux-image-arm64",
            image_prefix: "vmlinuz-",
            // "ARM\x64" at 0x38 (arm64/booting.rst).
            magic: (0x38, b"ARM\x64"),
        }),
        Arch::X86_64 => Err(Failed(
            "no Linux guest for x86_64 yet (its board boots only the test guest)".into(),
        )),
    }
}

/// The kernel and busybox of one architecture, unpacked in the cache.
#[derive(Debug)]
pub(crate) struct Packages {
    /// The kernel's boot image (uncompressed).
    pub(crate) kernel: PathBuf,
    /// The static busybox binary.
    pub(crate) busybox: PathBuf,
    /// The kernel's release (`6.12.57+deb13-riscv64`).
    pub(crate) release: String,
}

/// Everything a Linux boot needs.
#[derive(Debug)]
pub(crate) struct LinuxGuest {
    /// The kernel's boot image.
    pub(crate) kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub(crate) initrd: PathBuf,
    /// The kernel's release.
    pub(crate) release: String,
}

/// The kernel and initramfs for `arch`: fetched on first use, then from the cache.
pub(crate) fn prepare(arch: Arch) -> Result<LinuxGuest, Failed> {
    let packages = fetch(arch)?;
    let dir = cache_dir(arch)?;
    let initrd = dir.join("initramfs.cpio");
    let busybox = std::fs::read(&packages.busybox)
        .map_err(|e| Failed(format!("{}: {e}", packages.busybox.display())))?;
    let archive = initramfs(&busybox, &Workload::standard().init_files()?)?;
    write_if_changed(&initrd, &archive)?;
    println!(
        "xtask: Linux {} ({}), initramfs {} ({} KiB)",
        packages.release,
        packages.kernel.display(),
        initrd.display(),
        archive.len() / 1024
    );
    Ok(LinuxGuest {
        kernel: packages.kernel,
        initrd,
        release: packages.release,
    })
}

/// `target/linux/<deb arch>`.
fn cache_dir(arch: Arch) -> Result<PathBuf, Failed> {
    let d = distro(arch)?;
    Ok(workspace_root()
        .join("target")
        .join("linux")
        .join(d.deb_arch))
}

/// The kernel image and busybox for `arch`, from the cache or fetched with apt.
fn fetch(arch: Arch) -> Result<Packages, Failed> {
    let d = distro(arch)?;
    let dir = cache_dir(arch)?;
    let kernel = dir.join("Image");
    let busybox = dir.join("busybox");
    let release_file = dir.join("release");
    if let (true, true, Ok(release)) = (
        kernel.exists(),
        busybox.exists(),
        std::fs::read_to_string(&release_file),
    ) {
        return Ok(Packages {
            kernel,
            busybox,
            release: release.trim().to_string(),
        });
    }
    println!(
        "xtask: fetching Debian's {} kernel and busybox-static into {}",
        d.deb_arch,
        dir.display()
    );
    let apt = AptState::create(&dir.join("apt"), &d)?;
    run(apt.command("apt-get").args(["-q", "update"]))?;
    let image_package = apt.kernel_package(d.kernel_meta)?;
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    mkdir(&debs)?;
    run(apt
        .command("apt-get")
        .args(["-q", "download", &image_package, "busybox-static"])
        .current_dir(&debs))?;
    let deb = |prefix: &str| -> Result<PathBuf, Failed> {
        find_file(&debs, |n| n.starts_with(prefix) && n.ends_with(".deb"))
            .ok_or_else(|| Failed(format!("apt-get download left no {prefix}*.deb")))
    };
    let unpacked = dir.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    mkdir(&unpacked)?;
    unpack(
        &deb(&format!("{image_package}_"))?,
        &unpacked,
        "./boot/vmlinu*",
    )?;
    unpack(&deb("busybox-static_")?, &unpacked, "*bin/busybox")?;

    let boot = unpacked.join("boot");
    let image = find_file(&boot, |n| n.starts_with(d.image_prefix))
        .ok_or_else(|| Failed(format!("{image_package} has no boot/{}*", d.image_prefix)))?;
    let name = image.file_name().map(|n| n.to_string_lossy().into_owned());
    let release = name
        .as_deref()
        .and_then(|n| n.strip_prefix(d.image_prefix))
        .unwrap_or_default()
        .to_string();
    let bytes = read_kernel(&image)?;
    check_magic(&bytes, d.magic).map_err(|e| Failed(format!("{}: {e}", image.display())))?;
    let bb = [
        unpacked.join("usr/bin/busybox"),
        unpacked.join("bin/busybox"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or_else(|| Failed("busybox-static has no bin/busybox".into()))?;
    std::fs::write(&kernel, &bytes).map_err(|e| Failed(format!("{}: {e}", kernel.display())))?;
    std::fs::copy(&bb, &busybox).map_err(|e| Failed(format!("{}: {e}", busybox.display())))?;
    std::fs::write(&release_file, format!("{release}\n"))
        .map_err(|e| Failed(format!("{}: {e}", release_file.display())))?;
    // Keep the lists (a later refetch is quick); drop the 100 MB of .debs and modules.
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok(Packages {
        kernel,
        busybox,
        release,
    })
}

/// A private apt state: its own sources, lists, cache, and an empty dpkg status, for
/// one architecture. apt reads the machine's `apt.conf` (proxies and the like) but
/// none of its sources, preferences or installed packages.
struct AptState {
    options: Vec<String>,
}

impl AptState {
    fn create(dir: &Path, d: &Distro) -> Result<AptState, Failed> {
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "sources.d",
            "prefs.d",
        ] {
            mkdir(&dir.join(sub))?;
        }
        let sources = dir.join("sources.d").join("debian.sources");
        std::fs::write(&sources, d.sources)
            .map_err(|e| Failed(format!("{}: {e}", sources.display())))?;
        let empty = dir.join("sources.list");
        std::fs::write(&empty, "").map_err(|e| Failed(format!("{}: {e}", empty.display())))?;
        if !Path::new(KEYRING).exists() {
            return Err(Failed(format!(
                "{KEYRING} is missing (Debian's debian-archive-keyring package)"
            )));
        }
        Ok(AptState {
            options: apt_options(dir, d.deb_arch),
        })
    }

    /// `tool` (apt-get, apt-cache) with the private state's options.
    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args(&self.options)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// The versioned image package the kernel metapackage `meta` depends on.
    fn kernel_package(&self, meta: &str) -> Result<String, Failed> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["show", "--no-all-versions", meta]);
        println!("$ {}", show(&cmd));
        let out = cmd
            .output()
            .map_err(|e| Failed(format!("cannot run apt-cache: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(Failed(format!(
                "apt-cache show {meta} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        image_dependency(&text)
            .ok_or_else(|| Failed(format!("{meta} depends on no linux-image-* package")))
    }
}

/// apt options that put every piece of apt's state under `dir` and make
/// `arch` the only architecture.
fn apt_options(dir: &Path, arch: &str) -> Vec<String> {
    let at = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
    vec![
        format!("-oAPT::Architecture={arch}"),
        format!("-oAPT::Architectures={arch}"),
        format!("-oDir::Etc::SourceList={}", at("sources.list")),
        format!("-oDir::Etc::SourceParts={}", at("sources.d")),
        format!("-oDir::Etc::Preferences={}", at("preferences")),
        format!("-oDir::Etc::PreferencesParts={}", at("prefs.d")),
        format!("-oDir::State::Lists={}", at("lists")),
        format!("-oDir::Cache={}", at("cache")),
        "-oDir::State::status=/dev/null".into(),
        // Downloads land in target/, which apt's sandbox user may not write.
        "-oAPT::Sandbox::User=root".into(),
        // Only the package indices: no translations, no AppStream metadata.
        "-oAcquire::Languages=none".into(),
        "-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        "-oAcquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
        "-oAcquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
    ]
}

/// The first `linux-image-*` package in the `Depends:` field of `apt-cache show`.
fn image_dependency(show: &str) -> Option<String> {
    let depends = show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    depends
        .split([',', '|'])
        .map(|alt| alt.split_whitespace().next().unwrap_or_default())
        .find(|name| name.starts_with("linux-image-"))
        .map(str::to_string)
}

/// Unpacks the members of `deb` that match `pattern` into `into`
/// (`dpkg-deb --fsys-tarfile | tar -x --wildcards`).
fn unpack(deb: &Path, into: &Path, pattern: &str) -> Result<(), Failed> {
    println!(
        "$ dpkg-deb --fsys-tarfile {} | tar -x -C {} --wildcards '{pattern}'",
        deb.display(),
        into.display()
    );
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failed(format!("cannot run dpkg-deb: {e}")))?;
    let tar_in = dpkg
        .stdout
        .take()
        .ok_or(Failed("no dpkg-deb stdout".into()))?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .args(["--wildcards", pattern])
        .stdin(tar_in)
        .status()
        .map_err(|e| Failed(format!("cannot run tar: {e}")))?;
    let dpkg = dpkg.wait().map_err(|e| Failed(e.to_string()))?;
    if !tar.success() || !dpkg.success() {
        return Err(Failed(format!(
            "unpacking {pattern} from {} failed (dpkg-deb {dpkg}, tar {tar})",
            deb.display()
        )));
    }
    Ok(())
}

/// The kernel image, gunzipped when it is gzip-compressed (some arm64 kernels are).
fn read_kernel(path: &Path) -> Result<Vec<u8>, Failed> {
    let bytes = std::fs::read(path).map_err(|e| Failed(format!("{}: {e}", path.display())))?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|e| Failed(format!("cannot run gzip: {e}")))?;
    if !out.status.success() {
        return Err(Failed(format!("gzip -dc {} failed", path.display())));
    }
    Ok(out.stdout)
}

/// Checks the boot image's magic.
fn check_magic(image: &[u8], (offset, magic): (usize, &[u8])) -> Result<(), String> {
    match image.get(offset..offset + magic.len()) {
        Some(found) if found == magic => Ok(()),
        found => Err(format!(
            "not a boot image: expected {magic:02x?} at {offset:#x}, found {found:02x?}"
        )),
    }
}

/// The memory workload `/init` runs and the checksum it must see.
pub(crate) struct Workload {
    copies: u64,
    tmpfs_mib: u64,
    pattern: Vec<u8>,
}

impl Workload {
    /// [`WORKLOAD_COPIES`] copies of the pattern into a [`TMPFS_MIB`] MiB tmpfs.
    pub(crate) fn standard() -> Workload {
        Workload::new(WORKLOAD_COPIES, TMPFS_MIB, PATTERN_LEN)
    }

    fn new(copies: u64, tmpfs_mib: u64, pattern_len: usize) -> Workload {
        Workload {
            copies,
            tmpfs_mib,
            pattern: pattern(pattern_len),
        }
    }

    /// The bytes `/init` writes: the pattern `copies` times (`cat /pattern /pattern
    /// ...`).
    fn stream(&self, mut out: impl Write) -> std::io::Result<()> {
        for _ in 0..self.copies {
            out.write_all(&self.pattern)?;
        }
        out.flush()
    }

    /// The MD5 of [`Workload::stream`], by the host's `md5sum`.
    fn md5(&self) -> Result<String, Failed> {
        let mut child = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Failed(format!("cannot run md5sum: {e}")))?;
        let stdin = child.stdin.take().ok_or(Failed("no md5sum stdin".into()))?;
        let written = self.stream(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| Failed(format!("md5sum: {e}")))?;
        written.map_err(|e| Failed(format!("feeding md5sum: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.split_whitespace().next() {
            Some(sum) if out.status.success() && sum.len() == 32 => Ok(sum.to_string()),
            _ => Err(Failed(format!("md5sum printed {text:?}"))),
        }
    }

    /// `/init` (filled in) and `/pattern`.
    fn init_files(&self) -> Result<InitFiles, Failed> {
        let bytes = self.copies * self.pattern.len() as u64;
        let script = include_str!("init.sh")
            .replace("@MARKER@", &MARKER["hvcore-linux: ".len()..])
            .replace("@COPIES@", &self.copies.to_string())
            .replace("@BYTES@", &bytes.to_string())
            .replace("@MIB@", &((bytes + (1 << 19)) >> 20).to_string())
            .replace("@TMPFS_MIB@", &self.tmpfs_mib.to_string())
            .replace("@MD5@", &self.md5()?);
        Ok(InitFiles {
            init: script.into_bytes(),
            pattern: self.pattern.clone(),
        })
    }
}

/// `len` deterministic pseudo-random bytes (xorshift64).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x6876_636f_7265_2121;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32).to_le_bytes()[0]
        })
        .collect()
}

/// The generated files of the initramfs.
struct InitFiles {
    init: Vec<u8>,
    pattern: Vec<u8>,
}

/// The newc archive: directories, `/dev/console`, `/bin/busybox`, `/bin/sh`, `/init`
/// and `/pattern`.
fn initramfs(busybox: &[u8], files: &InitFiles) -> Result<Vec<u8>, Failed> {
    use cpio::newc::{Builder, trailer};
    const DIR: u32 = 0o040_755;
    const EXE: u32 = 0o100_755;
    const FILE: u32 = 0o100_644;
    const LINK: u32 = 0o120_777;
    const CHAR: u32 = 0o020_600;
    enum Body<'a> {
        Dir,
        Data(u32, &'a [u8]),
        Char(u32, u32),
    }
    let entries: [(&str, Body<'_>); 11] = [
        ("bin", Body::Dir),
        ("dev", Body::Dir),
        ("proc", Body::Dir),
        ("sys", Body::Dir),
        ("tmp", Body::Dir),
        ("mnt", Body::Dir),
        // The kernel opens it as init's stdin/stdout before devtmpfs is mounted.
        ("dev/console", Body::Char(5, 1)),
        ("bin/busybox", Body::Data(EXE, busybox)),
        ("bin/sh", Body::Data(LINK, b"busybox")),
        ("init", Body::Data(EXE, &files.init)),
        ("pattern", Body::Data(FILE, &files.pattern)),
    ];
    let io = |e: std::io::Error| Failed(format!("writing the initramfs: {e}"));
    let mut out = Vec::with_capacity(busybox.len() + 64 * 1024);
    // Inode numbers from 1.
    for (ino, (name, body)) in (1u32..).zip(&entries) {
        let builder = Builder::new(name).ino(ino).nlink(1);
        let (builder, data): (Builder, &[u8]) = match body {
            Body::Dir => (builder.mode(DIR).nlink(2), &[]),
            Body::Data(mode, data) => (builder.mode(*mode), data),
            Body::Char(major, minor) => (
                builder.mode(CHAR).rdev_major(*major).rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len())
            .map_err(|_| Failed(format!("{name} is too large for a newc archive")))?;
        let mut w = builder.write(&mut out, size);
        w.write_all(data).map_err(io)?;
        w.finish().map_err(io)?;
    }
    trailer(&mut out).map_err(io)?;
    Ok(out)
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), Failed> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| Failed(format!("{}: {e}", path.display())))
}

fn mkdir(dir: &Path) -> Result<(), Failed> {
    std::fs::create_dir_all(dir).map_err(|e| Failed(format!("{}: {e}", dir.display())))
}

/// The first file in `dir` whose name satisfies `pick`.
fn find_file(dir: &Path, pick: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| pick(&n.to_string_lossy())))
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of a newc archive: name, mode, (rdev major, minor), data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    fn entries(archive: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::NewcReader::new(rest).expect("a newc header");
            if reader.entry().is_trailer() {
                return out;
            }
            let e = reader.entry();
            let meta = (
                e.name().to_string(),
                e.mode(),
                (e.rdev_major(), e.rdev_minor()),
            );
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).expect("entry data");
            out.push((meta.0, meta.1, meta.2, data));
            rest = reader.finish().expect("next entry");
        }
    }

    fn small() -> InitFiles {
        InitFiles {
            init: b"#!/bin/sh\n".to_vec(),
            pattern: b"abc".to_vec(),
        }
    }

    #[test]
    fn initramfs_holds_init_busybox_and_console() {
        let archive = initramfs(b"\x7fELF fake busybox", &small()).unwrap();
        let e = entries(&archive);
        let find = |n: &str| e.iter().find(|x| x.0 == n).unwrap_or_else(|| panic!("{n}"));
        assert_eq!(find("init").1, 0o100_755);
        assert_eq!(find("init").3, b"#!/bin/sh\n");
        assert_eq!(find("bin/busybox").3, b"\x7fELF fake busybox");
        assert_eq!(find("bin/sh").1, 0o120_777);
        assert_eq!(find("bin/sh").3, b"busybox");
        assert_eq!(find("dev/console").1, 0o020_600);
        assert_eq!(find("dev/console").2, (5, 1));
        assert_eq!(find("pattern").3, b"abc");
        // Directories come before what they hold.
        let pos = |n: &str| e.iter().position(|x| x.0 == n).unwrap();
        assert!(pos("bin") < pos("bin/busybox") && pos("dev") < pos("dev/console"));
        // newc: every header starts 4-byte aligned; the archive ends with the trailer.
        assert!(archive.len().is_multiple_of(4));
        assert!(archive.starts_with(b"070701"));
    }

    #[test]
    fn init_script_is_filled_in_and_parses() {
        let files = Workload::new(1, 8, 100).init_files().unwrap();
        let script = String::from_utf8(files.init).unwrap();
        // `@NAME@`, NAME in upper case (`"$@"` is the shell's).
        let placeholder = script.match_indices('@').find_map(|(i, _)| {
            let rest = &script[i + 1..];
            let name = &rest[..rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_'))?];
            (!name.is_empty() && rest[name.len()..].starts_with('@')).then_some(name)
        });
        assert_eq!(placeholder, None, "placeholder left in:\n{script}");
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains(&format!("say \"{}", &MARKER["hvcore-linux: ".len()..])));
        // The host's POSIX shell checks the syntax (busybox's ash accepts the same).
        let dir = std::env::temp_dir().join(format!("hvcore-init-{}", std::process::id()));
        std::fs::write(&dir, &script).unwrap();
        let status = Command::new("sh").arg("-n").arg(&dir).status().unwrap();
        let _ = std::fs::remove_file(&dir);
        assert!(status.success(), "sh -n rejected /init");
    }

    /// The stream is the pattern repeated; its MD5 is that of those bytes; the
    /// pattern is deterministic and not constant.
    #[test]
    fn workload_stream_and_checksum() {
        let w = Workload::new(3, 8, 1001);
        let mut bytes = Vec::new();
        w.stream(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 3003);
        assert_eq!(&bytes[..1001], &bytes[2002..]);
        assert_eq!(pattern(1001), w.pattern, "deterministic");
        assert!(w.pattern.iter().any(|&b| b != w.pattern[0]));
        let path = std::env::temp_dir().join(format!("hvcore-wl-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let out = Command::new("md5sum").arg(&path).output().unwrap();
        let _ = std::fs::remove_file(&path);
        let expected = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            w.md5().unwrap(),
            expected.split_whitespace().next().unwrap()
        );
    }

    #[test]
    fn kernel_package_from_the_metapackage() {
        let show = "Package: linux-image-riscv64\nVersion: 6.12.57-1\n\
                    Depends: linux-image-6.12.57+deb13-riscv64 (= 6.12.57-1)\n\
                    Description: Linux for 64-bit RISC-V platforms (meta-package)\n";
        assert_eq!(
            image_dependency(show).as_deref(),
            Some("linux-image-6.12.57+deb13-riscv64")
        );
        let alternatives =
            "Depends: foo, linux-image-6.1.0-30-arm64 | linux-image-6.1.0-30-arm64-unsigned\n";
        assert_eq!(
            image_dependency(alternatives).as_deref(),
            Some("linux-image-6.1.0-30-arm64")
        );
        assert_eq!(image_dependency("Depends: busybox\n"), None);
        assert_eq!(image_dependency("Package: x\n"), None);
    }

    #[test]
    fn boot_image_magic() {
        let mut image = vec![0u8; 0x40];
        image[0x38..0x3c].copy_from_slice(b"RSC\x05");
        assert!(check_magic(&image, (0x38, b"RSC\x05")).is_ok());
        assert!(check_magic(&image, (0x38, b"ARM\x64")).is_err());
        assert!(check_magic(&image[..0x3a], (0x38, b"RSC\x05")).is_err());
    }

    /// The private apt state names only directories of its own (and the machine's
    /// keyring in the sources): the machine's sources, preferences, package lists and
    /// dpkg status are never read or written.
    #[test]
    fn apt_state_is_private_and_limited_to_one_architecture() {
        let dir = Path::new("/cache/apt");
        let opts = apt_options(dir, "riscv64");
        for key in [
            "Dir::Etc::SourceList",
            "Dir::Etc::SourceParts",
            "Dir::Etc::Preferences",
            "Dir::Etc::PreferencesParts",
            "Dir::State::Lists",
            "Dir::Cache",
        ] {
            let o = opts
                .iter()
                .find(|o| o.starts_with(&format!("-o{key}=")))
                .unwrap_or_else(|| panic!("{key} not set"));
            assert!(o.contains("=/cache/apt/"), "{o}");
        }
        assert!(opts.contains(&"-oDir::State::status=/dev/null".to_string()));
        assert!(opts.contains(&"-oAPT::Architectures=riscv64".to_string()));
        for arch in [Arch::Riscv64, Arch::Aarch64] {
            let d = distro(arch).unwrap();
            for stanza in d.sources.split("\n\n") {
                assert!(stanza.contains(&format!("Architectures: {}\n", d.deb_arch)));
                assert!(stanza.contains(&format!("Signed-By: {KEYRING}")));
            }
        }
        assert!(distro(Arch::X86_64).is_err());
    }
}
