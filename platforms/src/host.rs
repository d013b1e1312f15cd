//! What the boards' hypervisors share on top of `vm-core` (feature `host`): the
//! emulated test device, the check that a VM config matches a [`GuestLayout`], the
//! construction of the test VM, and the run-loop steps every board takes for the
//! test protocol (the monitor shared between CPUs, the `unmap` call, refused
//! accesses).

use alloc::string::String;
use alloc::sync::Arc;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use vcpu_api::{AccessWidth, ArchVCpu};
use vm_core::{
    AccessKind, DeviceError, HostGrant, HostPhysAddr, MapType, MappingFlags, MmioDevice, Populate,
    UnservedAccess, Vm, VmConfig, VmError, VmExit, VmState,
};

use crate::console_keys::{KeyReader, Request};

use crate::monitor::{Action, Monitor};
use crate::protocol::test_device::{COUNTER, ID, ID_VALUE, NEGATIVE, NEGATIVE_REG, SCRATCH, SIZE};
use crate::protocol::{GuestLayout, RO_PATTERN};

/// The name of the test device in the VM configs (`[devices] emu_devices`).
pub const TEST_DEVICE: &str = "test-device";

/// The emulated test device of the protocol ([`crate::protocol::test_device`]): an
/// identification register, a scratch register, an access counter and a register
/// that reads as -2, for 1/2/4/8-byte accesses.
#[derive(Debug, Default)]
pub struct TestDevice {
    /// The last value written to SCRATCH, already cut to its width.
    scratch: AtomicU64,
    /// Accesses so far (every register, reads and writes).
    accesses: AtomicU64,
}

impl TestDevice {
    /// A device with SCRATCH = 0 and no access counted.
    pub const fn new() -> Self {
        Self {
            scratch: AtomicU64::new(0),
            accesses: AtomicU64::new(0),
        }
    }

    /// Accesses so far.
    pub fn accesses(&self) -> u64 {
        self.accesses.load(Ordering::SeqCst)
    }
}

impl MmioDevice for TestDevice {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        let count = self.accesses.fetch_add(1, Ordering::SeqCst);
        let value = match offset {
            ID => ID_VALUE,
            SCRATCH => self.scratch.load(Ordering::SeqCst),
            COUNTER => count,
            NEGATIVE_REG => NEGATIVE,
            _ => return Err(DeviceError::NoRegister { offset, width }),
        };
        Ok(width.truncate(value))
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        self.accesses.fetch_add(1, Ordering::SeqCst);
        match offset {
            SCRATCH => {
                self.scratch.store(width.truncate(value), Ordering::SeqCst);
                Ok(())
            }
            ID | COUNTER | NEGATIVE_REG => Err(DeviceError::Denied { offset }),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }
}

/// The first way a VM config disagrees with a [`GuestLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// No memory region has the layout's base, size, flags and population for `what`.
    Region {
        /// Which region of the layout (`"RAM"`, `"lazy"`, `"read-only"`).
        what: &'static str,
        /// Its base in the layout.
        gpa: u64,
    },
    /// The guest image is not loaded and entered at the layout's `image`.
    Entry {
        /// The config's entry point.
        entry: u64,
        /// The config's load address.
        load: u64,
    },
    /// No emulated device named [`TEST_DEVICE`] at `mmio_base`, `SIZE` bytes or more.
    TestDevice,
    /// The layout's `outside` address lies in a region.
    Outside {
        /// The address.
        gpa: u64,
    },
    /// The test VM needs two vCPUs.
    VCpus {
        /// The config's `cpu_num`.
        count: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Region { what, gpa } => {
                write!(
                    f,
                    "no {what} region at {gpa:#x} with the layout's size, flags and population"
                )
            }
            Self::Entry { entry, load } => {
                write!(
                    f,
                    "the guest image must be loaded and entered at the layout's image address (config: load {load:#x}, entry {entry:#x})"
                )
            }
            Self::TestDevice => write!(
                f,
                "no emulated device {TEST_DEVICE:?} of {SIZE:#x} bytes at the layout's mmio_base"
            ),
            Self::Outside { gpa } => {
                write!(f, "the layout's outside address {gpa:#x} is in a region")
            }
            Self::VCpus { count } => write!(f, "the test VM needs 2 vCPUs (config: {count})"),
        }
    }
}

/// Checks that `config` builds the VM `layout` describes.
pub fn check_config(config: &VmConfig, layout: &GuestLayout) -> Result<(), Mismatch> {
    let regions = &config.kernel.memory_regions;
    let want = [
        (
            "RAM",
            layout.ram_base,
            layout.ram_size,
            MappingFlags::RWX,
            Populate::Eager,
        ),
        (
            "lazy",
            layout.lazy_base,
            layout.lazy_size,
            MappingFlags::RW,
            Populate::Lazy,
        ),
        (
            "read-only",
            layout.ro_base,
            layout.ro_size,
            MappingFlags::READ,
            Populate::Eager,
        ),
    ];
    for (what, gpa, size, flags, populate) in want {
        let found = regions.iter().any(|r| {
            r.gpa.as_usize() as u64 == gpa
                && r.size as u64 == size
                && r.flags.access() == flags
                && r.map_type == MapType::Alloc
                && r.populate == populate
        });
        if !found {
            return Err(Mismatch::Region { what, gpa });
        }
    }
    let entry = config.kernel.entry_point.as_usize() as u64;
    let load = config.kernel.kernel_load_addr.as_usize() as u64;
    if entry != layout.image || load != layout.image {
        return Err(Mismatch::Entry { entry, load });
    }
    let device = config.devices.emu_devices.iter().any(|d| {
        d.name == TEST_DEVICE
            && d.base_gpa.as_usize() as u64 == layout.mmio_base
            && d.length as u64 >= SIZE
    });
    if !device {
        return Err(Mismatch::TestDevice);
    }
    let inside = regions.iter().any(|r| {
        let start = r.gpa.as_usize() as u64;
        (start..start + r.size as u64).contains(&layout.outside)
    });
    if inside {
        return Err(Mismatch::Outside {
            gpa: layout.outside,
        });
    }
    if config.cpu_num != 2 {
        return Err(Mismatch::VCpus {
            count: config.cpu_num,
        });
    }
    Ok(())
}

/// A run's [`Monitor`], shared by the CPUs that run its vCPUs: every call prints what
/// the monitor wrote as one block through the board's console.
pub struct SharedMonitor {
    monitor: spin::Mutex<Monitor>,
    print: fn(&str),
}

impl SharedMonitor {
    /// A monitor labelled `label` printing through `print`.
    pub const fn new(label: &'static str, print: fn(&str)) -> Self {
        Self {
            monitor: spin::Mutex::new(Monitor::new(label)),
            print,
        }
    }

    /// Runs `f` on the monitor and prints what it wrote.
    pub fn with<R>(&self, f: impl FnOnce(&mut Monitor, &mut String) -> R) -> R {
        let mut out = String::new();
        let r = f(&mut self.monitor.lock(), &mut out);
        (self.print)(&out);
        r
    }

    /// Records a check made by the hypervisor.
    pub fn host_check(&self, name: &str, passed: bool) {
        self.with(|m, out| m.host_check(name, passed, out));
    }

    /// Ends the run; `(passed, failed)`.
    pub fn finish(&self) -> (u32, u32) {
        self.with(|m, out| m.finish(out))
    }

    /// Ends a run whose guest checks nothing: the hypervisor's checks alone;
    /// `(passed, failed)`.
    pub fn finish_host(&self) -> (u32, u32) {
        self.with(|m, out| m.finish_host(out))
    }
}

/// Frames [`check_frame_zeroing`] takes: 80 KiB zeroed at once (past x86's 64 KiB
/// line-zeroing threshold) and a guard frame either side.
const ZERO_CHECK_FRAMES: usize = 22;

/// The boards' zeroing check: the board's allocator clears frames with its HAL's
/// routine (`FrameAllocator::zero_frames`, what `alloc_zeroed` runs) exactly: a run
/// of 20 frames and a single frame are filled with a previous owner's bytes, zeroed,
/// and read back zero, with the guard frames either side untouched. `false` also
/// when the frames cannot be had.
pub fn check_frame_zeroing<A: addrspace::FrameAllocator + ?Sized>(frames: &A) -> bool {
    use addrspace::FRAME_SIZE;
    let Some(hpa) = frames.alloc_frames(ZERO_CHECK_FRAMES, 1) else {
        return false;
    };
    let base = frames.phys_to_virt(hpa).as_mut_ptr::<u8>();
    let len = ZERO_CHECK_FRAMES * FRAME_SIZE;
    let mut ok = true;
    for run in [ZERO_CHECK_FRAMES - 2, 1] {
        // SAFETY: the frames were allocated above, so they are ours alone, and the
        // allocator maps them contiguously and writable at `base`; frames 1..=run
        // lie inside them.
        let bytes = unsafe {
            base.write_bytes(0xa5, len);
            frames.zero_frames(hpa + FRAME_SIZE, run);
            core::slice::from_raw_parts(base, len)
        };
        let zeroed = FRAME_SIZE..(run + 1) * FRAME_SIZE;
        ok &= bytes
            .iter()
            .enumerate()
            .all(|(i, &b)| b == if zeroed.contains(&i) { 0 } else { 0xa5 });
    }
    // SAFETY: allocated above; the slices are gone and nothing uses the frames.
    unsafe { frames.dealloc_frames(hpa, ZERO_CHECK_FRAMES) };
    ok
}

/// The boards' zeroing run: [`check_frame_zeroing`] on `frames`, reported as one
/// host check labelled `label` through `print`; `(passed, failed)`.
pub fn run_frame_zeroing<A: addrspace::FrameAllocator + ?Sized>(
    label: &'static str,
    frames: &A,
    print: fn(&str),
) -> (u32, u32) {
    let monitor = SharedMonitor::new(label, print);
    monitor.host_check(
        "frames zeroed exactly by the HAL's zero_memory (80 KiB and 4 KiB)",
        check_frame_zeroing(frames),
    );
    monitor.finish_host()
}

/// A grant of the configuration's pass-through devices that lie wholly below
/// host-physical `limit` (each widened to whole pages); the others are left out,
/// so `Vm::new` refuses them with `VmError::NotGranted`.
///
/// # Safety
///
/// On this machine everything below `limit` is device registers (no RAM) that a
/// guest may own, as `HostGrant::new` requires of `GrantKind::Device` ranges.
pub unsafe fn grant_devices_below(config: &vm_core::VmConfig, limit: usize) -> HostGrant {
    const PAGE: usize = 0x1000;
    let ranges = config.devices.passthrough_devices.iter().filter_map(|d| {
        let first = d.base_hpa.as_usize() & !(PAGE - 1);
        let end = d.base_hpa.as_usize().checked_add(d.length)?;
        let end = end.checked_next_multiple_of(PAGE)?;
        (end <= limit).then(|| {
            vm_core::GrantedRange::new(
                vm_core::HostPhysAddr::from_usize(first),
                end - first,
                vm_core::GrantKind::Device,
            )
        })
    });
    // SAFETY: the caller's promise covers every range below `limit`.
    unsafe { HostGrant::new(ranges) }
}

/// Builds the test VM of `layout` from `config`: checks the config against the
/// layout (a host check of `monitor`), creates the VM with the board's host memory
/// `grant` and `vcpu_config`, loads `image`, writes [`RO_PATTERN`] at the start of
/// the read-only region and attaches a [`TestDevice`]. Boot stays with the board
/// (after its own preparations).
pub fn build_test_vm<V: ArchVCpu>(
    config: VmConfig,
    layout: &GuestLayout,
    image: &[u8],
    grant: &HostGrant,
    vcpu_config: impl FnMut(usize) -> (V::CreateConfig, V::SetupConfig),
    monitor: &SharedMonitor,
) -> Result<(Arc<Vm<V>>, Arc<TestDevice>), BuildError> {
    let agrees = check_config(&config, layout);
    monitor.with(|m, out| {
        if let Err(e) = agrees {
            let _ = writeln!(out, "[{}] config: {e}", m.label());
        }
        m.host_check("VM config matches the guest layout", agrees.is_ok(), out);
    });
    agrees.map_err(BuildError::Layout)?;
    if image.is_empty() {
        return Err(BuildError::NoImage);
    }
    let vm = Vm::<V>::new(
        config.into_valid().map_err(VmError::from)?,
        grant,
        vcpu_config,
    )?;
    vm.load_kernel(image)?;
    vm.write_to_guest_of(vcpu_api::gpa_of(layout.ro_base), &RO_PATTERN)?;
    let device = Arc::new(TestDevice::new());
    vm.attach_device(TEST_DEVICE, device.clone())?;
    Ok((vm, device))
}

/// Why [`build_test_vm`] failed.
#[derive(Debug)]
pub enum BuildError {
    /// The config does not build the layout's VM.
    Layout(Mismatch),
    /// No guest image was embedded.
    NoImage,
    /// vm-core refused a step.
    Vm(VmError),
}

impl From<VmError> for BuildError {
    fn from(e: VmError) -> Self {
        Self::Vm(e)
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Layout(m) => write!(f, "{m}"),
            Self::NoImage => {
                f.write_str("no guest image was embedded (build with `cargo xtask qemu <arch>`)")
            }
            Self::Vm(e) => write!(f, "{e}"),
        }
    }
}

/// Nanoseconds shown as microseconds with three decimals (`12.345`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Micros(pub u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// The line the QEMU suites collect for their kick-to-acknowledge figures:
/// `<what> shootdown|pause: kick-to-acknowledge <µs> us`, `ns` measured on the
/// board's clock.
pub fn write_kick_to_ack(out: &mut dyn Write, what: fmt::Arguments<'_>, ns: u64) {
    let _ = writeln!(out, "{what}: kick-to-acknowledge {} us", Micros(ns));
}

/// The test protocol's `unmap(gpa)`: unmaps the 4 KiB page (TLBs of every vCPU
/// invalidated when this returns; how long that took goes to `out`, see
/// [`write_kick_to_ack`]) and gives the guest 0, or 1 when vm-core refused
/// (written to `out`).
pub fn unmap_page<V: ArchVCpu>(vm: &Vm<V>, gpa: u64, out: &mut dyn Write) -> u64 {
    match vm.unmap_region(vcpu_api::gpa_of(gpa), addrspace::PAGE_SIZE) {
        Ok(()) => {
            let ns = vm.stats().shootdown_last_ns;
            write_kick_to_ack(out, format_args!("unmap {gpa:#x}: shootdown"), ns);
            0
        }
        Err(e) => {
            let _ = writeln!(out, "unmap {gpa:#x}: {e}");
            1
        }
    }
}

/// Answers a test-protocol call once the monitor chose `action`: `Some(value)` for
/// the guest, `None` for [`Action::StartCpu`], which the board handles (how vCPUs
/// start is its business).
pub fn act_on<V: ArchVCpu>(vm: &Vm<V>, action: Action, out: &mut dyn Write) -> Option<u64> {
    match action {
        Action::Return(v) => Some(v),
        Action::Unmap { gpa } => Some(unmap_page(vm, gpa, out)),
        Action::StartCpu { .. } => None,
        Action::Diagnose { gpa, write } => Some(diagnose(vm, gpa, write, out)),
    }
}

/// The test protocol's `diagnose(gpa, kind)`: writes the VM's diagnostics to `out`
/// (the walk of `gpa` or, for an access, what the fault path would do with it, and
/// the guest-physical map with the root registers for the VMID/ASID the HAL gave
/// the VM) and gives the guest 1 if `gpa` is translated now, else 0.
pub fn diagnose<V: ArchVCpu>(
    vm: &Vm<V>,
    gpa: u64,
    write: Option<bool>,
    out: &mut dyn Write,
) -> u64 {
    let gpa = vcpu_api::gpa_of(gpa);
    let access = write.map(|w| {
        if w {
            AccessKind::Write
        } else {
            AccessKind::Read
        }
    });
    let _ = write!(
        out,
        "{}",
        vm.diagnostics(V::vm_tag(vm.id()), Some((gpa, access)))
    );
    u64::from(vm.walk(gpa).translation().is_some())
}

/// Diagnostics on request from the hypervisor's console ([`crate::console_keys`]):
/// the board hands it what its UART received while a VM runs.
pub struct ConsoleRequests {
    reader: spin::Mutex<KeyReader>,
}

impl ConsoleRequests {
    /// Nothing typed yet.
    pub const fn new() -> Self {
        Self {
            reader: spin::Mutex::new(KeyReader::new()),
        }
    }

    /// Takes every byte `getc` has now and answers each request they complete for
    /// `vm`: `[label] console: ...` and the VM's diagnostics (the walk of the
    /// address asked for, the map with the HAL's VMID) written to `out`. Returns the
    /// requests answered. A CPU that finds another one polling leaves the bytes to
    /// it.
    pub fn poll<V: ArchVCpu>(
        &self,
        vm: &Vm<V>,
        label: &str,
        mut getc: impl FnMut() -> Option<u8>,
        out: &mut dyn Write,
    ) -> usize {
        let Some(mut reader) = self.reader.try_lock() else {
            return 0;
        };
        let mut answered = 0;
        while let Some(b) = getc() {
            let Some(request) = reader.feed(b) else {
                continue;
            };
            let at = match request {
                Request::Map => {
                    let _ = writeln!(
                        out,
                        "[{label}] console: map of VM {} on request (key d)",
                        vm.id()
                    );
                    None
                }
                Request::Walk(gpa) => {
                    let _ = writeln!(
                        out,
                        "[{label}] console: walk of {gpa:#x} in VM {} on request (key w)",
                        vm.id()
                    );
                    Some((vcpu_api::gpa_of(gpa), None))
                }
            };
            let _ = write!(out, "{}", vm.diagnostics(V::vm_tag(vm.id()), at));
            answered += 1;
        }
        answered
    }
}

impl Default for ConsoleRequests {
    fn default() -> Self {
        Self::new()
    }
}

/// A nested-translation root with no valid entry, for [`check_fault_loop`]: 16 KiB
/// (the largest root of the formats: Arm's two concatenated tables, Sv39x4's and
/// Sv48x4's root; NPT's 4 KiB fits) and aligned to it, as every root register wants.
#[repr(C, align(16384))]
pub struct EmptyRoot([u64; 2048]);

/// The boards' [`EmptyRoot`]: zero and never written (read-only data).
pub static EMPTY_ROOT: EmptyRoot = EmptyRoot([0; 2048]);

impl EmptyRoot {
    /// Its address in the hypervisor's address space: its host-physical address on
    /// the boards, which run identity-mapped.
    pub fn addr(&'static self) -> usize {
        core::ptr::from_ref(self) as usize
    }
}

/// The boards' fault-loop check, on a VM of its own: vCPU 0's root register is
/// pointed at `empty_root`, a zeroed table aligned for the format (the boards pass
/// [`EMPTY_ROOT`]; the defect the
/// detector exists for: the hardware walks other tables than the VM's), so the
/// guest's first access faults on a page the VM maps, again and again. `run` runs
/// vCPU 0 once (the board's `run_vcpu`, with its own interrupt handling). Passes
/// when `run` fails with the detector's `FaultLoop` at a page the VM maps within 64
/// exits, the report (the loop's GPA and access, the decision, the walk, the map)
/// went to the monitor's console, and the VM is stopped.
pub fn check_fault_loop<V: ArchVCpu>(
    vm: &Vm<V>,
    empty_root: HostPhysAddr,
    monitor: &SharedMonitor,
    mut run: impl FnMut() -> Result<VmExit, VmError>,
) -> bool {
    let name = "fault-loop detector: a vCPU walking an empty table is stopped with its report";
    let pointed = vm.with_vcpu(0, |v| v.set_nested_root(empty_root));
    if !matches!(pointed, Ok(Ok(()))) {
        monitor.with(|m, out| {
            let _ = writeln!(
                out,
                "[{}] cannot point vCPU 0 at the empty table: {pointed:?}",
                m.label()
            );
            m.host_check(name, false, out);
        });
        return false;
    }
    let mut error = None;
    for _ in 0..64 {
        match run() {
            Ok(VmExit::ExternalInterrupt { .. } | VmExit::Halt | VmExit::Paused) => {}
            Ok(other) => {
                monitor.with(|m, out| {
                    let _ = writeln!(out, "[{}] vCPU 0: unexpected exit {other:?}", m.label());
                });
                break;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let report = error
        .as_ref()
        .and_then(|e| vm.fault_loop_report(e, V::vm_tag(vm.id())));
    let looped_on_a_mapped_page = matches!(
        &error,
        Some(VmError::FaultLoop { gpa, .. }) if vm.walk(*gpa).translation().is_some()
    );
    let ok = looped_on_a_mapped_page && report.is_some() && vm.state() == VmState::Stopped;
    monitor.with(|m, out| {
        match (&error, &report) {
            (Some(e), Some(r)) => {
                let _ = writeln!(out, "[{}] {e}\n{r}", m.label());
            }
            (e, _) => {
                let _ = writeln!(out, "[{}] vCPU 0 did not loop: {e:?}", m.label());
            }
        }
        m.host_check(name, ok, out);
    });
    ok
}

/// A guest access vm-core could not serve: when the monitor forgives it (the guest
/// announced exactly that fault), the instruction is skipped and the vCPU goes on
/// (`true`); otherwise the access and its translation walk are written to `out` and
/// the vCPU must stop (`false`, as when the skip itself fails).
pub fn settle_unserved<V: ArchVCpu>(
    vm: &Vm<V>,
    vcpu: usize,
    access: &UnservedAccess,
    monitor: &SharedMonitor,
) -> bool {
    let write = access.access == AccessKind::Write;
    let gpa = access.gpa.as_usize() as u64;
    if !monitor.with(|m, out| m.on_unserved_access(gpa, write, out)) {
        monitor.with(|m, out| {
            let _ = writeln!(
                out,
                "[{}] vCPU {vcpu}: {:?} {:?} at {:?}\n{}",
                m.label(),
                access.why,
                access.access,
                access.gpa,
                access.walk
            );
        });
        return false;
    }
    match vm.skip_access(vcpu) {
        Ok(()) => true,
        Err(e) => {
            monitor.with(|m, out| {
                let _ = writeln!(
                    out,
                    "[{}] vCPU {vcpu}: cannot skip the refused access: {e}",
                    m.label()
                );
                m.host_check("refused access skipped", false, out);
            });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::layouts;
    use AccessWidth::*;

    fn config(name: &str) -> VmConfig {
        let path = std::format!("{}/../configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("board config");
        VmConfig::from_toml(&text).expect("board config parses")
    }

    #[test]
    fn every_board_config_matches_its_layout() {
        for (name, layout) in layouts::ALL {
            assert_eq!(check_config(&config(name), &layout), Ok(()), "{name}");
        }
    }

    #[test]
    fn mismatches_are_named() {
        let l = layouts::QEMU_VIRT_RISCV64;
        let base = config("qemu-virt-riscv64");
        let mut c = base.clone();
        c.kernel.memory_regions[1].populate = Populate::Eager;
        assert_eq!(
            check_config(&c, &l),
            Err(Mismatch::Region {
                what: "lazy",
                gpa: l.lazy_base
            })
        );
        let mut c = base.clone();
        c.kernel.memory_regions[2].flags = MappingFlags::RW;
        assert!(matches!(
            check_config(&c, &l),
            Err(Mismatch::Region {
                what: "read-only",
                ..
            })
        ));
        let mut c = base.clone();
        c.kernel.memory_regions.remove(0);
        assert!(matches!(
            check_config(&c, &l),
            Err(Mismatch::Region { what: "RAM", .. })
        ));
        let mut c = base.clone();
        c.devices.emu_devices[0].base_gpa = vm_core::GuestPhysAddr::from_usize(0x0c00_0000);
        assert_eq!(check_config(&c, &l), Err(Mismatch::TestDevice));
        let mut c = base.clone();
        c.kernel.entry_point = vm_core::GuestPhysAddr::from_usize(0x8000_1000);
        assert_eq!(
            check_config(&c, &l),
            Err(Mismatch::Entry {
                entry: 0x8000_1000,
                load: 0x8000_0000
            })
        );
        let mut c = base;
        c.cpu_num = 1;
        assert_eq!(check_config(&c, &l), Err(Mismatch::VCpus { count: 1 }));
        // The x86 board's image sits 1 MiB into RAM.
        assert!(check_config(&config("qemu-pc-x86_64"), &l).is_err());
    }

    #[test]
    fn test_device_registers() {
        let d = TestDevice::new();
        assert_eq!(d.read(ID, Qword), Ok(ID_VALUE));
        assert_eq!(d.read(ID, Word), Ok(ID_VALUE & 0xffff));
        for w in [Byte, Word, Dword, Qword] {
            assert_eq!(d.read(NEGATIVE_REG, w), Ok(w.truncate(NEGATIVE)));
        }
        d.write(SCRATCH, Qword, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(d.read(SCRATCH, Qword), Ok(0x1122_3344_5566_7788));
        // A narrower write leaves only its width.
        d.write(SCRATCH, Byte, 0x1ff).unwrap();
        assert_eq!(d.read(SCRATCH, Qword), Ok(0xff));
        let a = d.read(COUNTER, Dword).unwrap();
        assert_eq!(d.read(COUNTER, Dword), Ok(a + 1));
        assert_eq!(
            d.write(ID, Qword, 1),
            Err(DeviceError::Denied { offset: ID })
        );
        assert_eq!(
            d.read(0x20, Dword),
            Err(DeviceError::NoRegister {
                offset: 0x20,
                width: Dword
            })
        );
        assert_eq!(
            d.write(0x21, Byte, 0),
            Err(DeviceError::NoRegister {
                offset: 0x21,
                width: Byte
            })
        );
    }
}
