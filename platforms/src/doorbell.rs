//! The Linux guest's doorbell device (feature `host`): an emulated MMIO device whose
//! doorbell register makes the hypervisor remap a range of guest RAM at run time —
//! unmap it, map new frames there and fill them with new contents — while the
//! guest's other vCPUs keep running. The guest's `/init` (xtask's `init.sh`) reads the
//! range's first word on every CPU before and after ringing, and reports what each
//! CPU read after; [`Doorbell::verdict`] says whether every vCPU saw the new contents.
//!
//! The range (the *probe*) is RAM of the VM config that the guest's device tree keeps
//! from the guest kernel (`reserved-memory`, `no-map`), so only `/dev/mem` reads touch
//! it. Registers, 64-bit, at offsets from the device base:
//! - [`RING`]: writing remaps the probe; reading gives the remaps done so far.
//! - [`REPORT`]: writing records, for the vCPU that writes, the word it read from the
//!   probe.
//! - [`EXPECTED`]: reads the word the probe's first page holds now.
//!
//! While a remap has the probe unmapped, another vCPU's access to it is one vm-core
//! cannot serve (no area there); the board asks [`Doorbell::retries`] and runs that
//! vCPU again, which retries the access until the new frames are mapped: the guest
//! only ever reads the old or the new contents.

use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use addrspace::{GuestPhysAddr, MappingFlags, PAGE_SIZE, Populate};
use spin::{Mutex, Once};
use vcpu_api::{AccessWidth, ArchVCpu};
use vm_core::{DeviceError, MmioDevice, Vm, VmResult};

/// Doorbell register offset.
pub const RING: u64 = 0x00;
/// Report register offset.
pub const REPORT: u64 = 0x08;
/// Expected-word register offset.
pub const EXPECTED: u64 = 0x10;
/// The device's name in the VM configs (`[devices] emu_devices`); its `cfg_list` is
/// `[probe_gpa, probe_size]`.
pub const DOORBELL_DEVICE: &str = "hvcore-doorbell";

/// The word at the start of page `page` of the probe after `epoch` remaps: "HVCP",
/// the epoch and the page index, so a stale page, a page of another epoch or a page
/// at the wrong place all read differently.
pub const fn probe_word(epoch: u64, page: u64) -> u64 {
    0x4856_4350_0000_0000 | (epoch & 0xff_ffff) << 24 | (page & 0xff_ffff)
}

/// What the device saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoorbellStats {
    /// Remaps done.
    pub remaps: u64,
    /// Time the last remap took (unmap, map, fill), in nanoseconds.
    pub last_remap_ns: u64,
    /// `(vCPU, word)` reports since the last remap, in order.
    pub reports: Vec<(usize, u64)>,
    /// The first error a remap met, if any.
    pub error: Option<String>,
}

/// What the device asks of the platform (the board's `VmHal` answers).
#[derive(Clone, Copy, Debug)]
pub struct DoorbellHost {
    /// Monotonic time in nanoseconds.
    pub now_ns: fn() -> u64,
    /// The vCPU the calling physical CPU runs.
    pub current_vcpu: fn() -> Option<usize>,
}

/// The doorbell device of a VM with vCPU type `V`.
pub struct Doorbell<V: ArchVCpu> {
    vm: Once<Weak<Vm<V>>>,
    probe: GuestPhysAddr,
    size: usize,
    host: DoorbellHost,
    stats: Mutex<DoorbellStats>,
    /// Remaps begun (atomics: [`Doorbell::retries`] runs while a remap holds `stats`).
    begun: AtomicU64,
    /// Whether a remap failed (its probe may stay unmapped).
    failed: AtomicBool,
}

impl<V: ArchVCpu + Send + 'static> Doorbell<V> {
    /// A device for the probe `[probe, probe + size)` (page-aligned RAM of the VM).
    pub fn new(probe: GuestPhysAddr, size: usize, host: DoorbellHost) -> Arc<Self> {
        Arc::new(Self {
            vm: Once::new(),
            probe,
            size,
            host,
            stats: Mutex::new(DoorbellStats::default()),
            begun: AtomicU64::new(0),
            failed: AtomicBool::new(false),
        })
    }

    /// Attaches the device to `vm` (under [`DOORBELL_DEVICE`]) and writes the
    /// probe's first contents (epoch 0).
    pub fn attach(self: &Arc<Self>, vm: &Arc<Vm<V>>) -> VmResult {
        self.vm.call_once(|| Arc::downgrade(vm));
        self.fill(vm, 0)?;
        vm.attach_device(DOORBELL_DEVICE, self.clone())
    }

    /// The probe range.
    pub fn probe(&self) -> (GuestPhysAddr, usize) {
        (self.probe, self.size)
    }

    /// Whether an access vm-core could not serve at `gpa` is one to retry: it falls
    /// in the probe after a remap began (the remap unmapped it for a moment) and no
    /// remap failed (the new frames are there or about to be). The board then runs
    /// the vCPU again instead of ending the VM. Takes no lock: the ringing vCPU holds
    /// the device's while it remaps.
    pub fn retries(&self, gpa: GuestPhysAddr) -> bool {
        let inside = gpa
            .as_usize()
            .checked_sub(self.probe.as_usize())
            .is_some_and(|off| off < self.size);
        inside && self.begun.load(Ordering::SeqCst) > 0 && !self.failed.load(Ordering::SeqCst)
    }

    /// What the device saw so far.
    pub fn stats(&self) -> DoorbellStats {
        self.stats.lock().clone()
    }

    /// Writes [`probe_word`]`(epoch, page)` at the start of every page of the probe.
    fn fill(&self, vm: &Vm<V>, epoch: u64) -> VmResult {
        for (page, i) in (0u64..).zip(0..self.size / PAGE_SIZE) {
            let gpa = self.probe + i * PAGE_SIZE;
            vm.write_to_guest_of(gpa, &probe_word(epoch, page))?;
        }
        Ok(())
    }

    /// Unmaps the probe, maps new frames there and fills them for `epoch`.
    fn remap(&self, vm: &Vm<V>, epoch: u64) -> VmResult {
        vm.unmap_region(self.probe, self.size)?;
        vm.map_region(self.probe, self.size, MappingFlags::RW, Populate::Eager)?;
        self.fill(vm, epoch)
    }

    /// Whether each of vCPUs `0..cpus` reported, after the last remap, the word
    /// the probe holds now; `Err` says what was wrong.
    pub fn verdict(&self, cpus: usize) -> Result<(), String> {
        let s = self.stats.lock();
        let want = probe_word(s.remaps, 0);
        let mut why = String::new();
        if let Some(e) = &s.error {
            let _ = write!(why, "a remap failed: {e}; ");
        }
        if s.remaps == 0 {
            why += "the doorbell never rang; ";
        }
        for cpu in 0..cpus {
            match s.reports.iter().rev().find(|(c, _)| *c == cpu) {
                Some((_, w)) if *w == want => {}
                Some((_, w)) => {
                    let _ = write!(why, "vCPU {cpu} read {w:#x}, not {want:#x}; ");
                }
                None => {
                    let _ = write!(why, "vCPU {cpu} reported nothing; ");
                }
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.trim_end_matches("; ").into())
        }
    }
}

impl<V: ArchVCpu + Send + 'static> MmioDevice for Doorbell<V> {
    fn read(&self, offset: u64, width: AccessWidth) -> Result<u64, DeviceError> {
        if width != AccessWidth::Qword {
            return Err(DeviceError::NoRegister { offset, width });
        }
        let s = self.stats.lock();
        match offset {
            RING => Ok(s.remaps),
            EXPECTED => Ok(probe_word(s.remaps, 0)),
            REPORT => Err(DeviceError::Denied { offset }),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }

    fn write(&self, offset: u64, width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        if width != AccessWidth::Qword {
            return Err(DeviceError::NoRegister { offset, width });
        }
        match offset {
            RING => {
                // The vCPU that rang runs this; the others keep running in the guest
                // while the VM's unmap shoots their translations down.
                let Some(vm) = self.vm.get().and_then(Weak::upgrade) else {
                    self.failed.store(true, Ordering::SeqCst);
                    self.stats.lock().error = Some("the VM is gone".into());
                    return Ok(());
                };
                let mut s = self.stats.lock();
                let epoch = s.remaps + 1;
                let start = (self.host.now_ns)();
                self.begun.fetch_add(1, Ordering::SeqCst);
                match self.remap(&vm, epoch) {
                    Ok(()) => {
                        s.remaps = epoch;
                        s.reports.clear();
                    }
                    Err(e) => {
                        self.failed.store(true, Ordering::SeqCst);
                        let mut msg = String::new();
                        let _ = write!(msg, "{e}");
                        s.error.get_or_insert(msg);
                    }
                }
                s.last_remap_ns = (self.host.now_ns)().saturating_sub(start);
                Ok(())
            }
            REPORT => {
                let vcpu = (self.host.current_vcpu)();
                self.stats
                    .lock()
                    .reports
                    .push((vcpu.unwrap_or(usize::MAX), value));
                Ok(())
            }
            EXPECTED => Err(DeviceError::Denied { offset }),
            _ => Err(DeviceError::NoRegister { offset, width }),
        }
    }
}
