//! [`MockVCpu`]: a software vCPU for any nested format. It runs a scripted guest
//! ([`Program`]) by walking the VM's real nested tables in simulated memory exactly
//! as the hardware walker would (`NestedFormat::kind`, `output_addr`, `leaf_flags`),
//! checks permissions, caches translations in a per-vCPU TLB (so a missing
//! invalidation shows up as a stale read), and returns the `ExitReason`s a hardware
//! vCPU would. Every cached translation remembers the allocation generation of its
//! host frame and every walk checks the generation of the tables it reads, so a use
//! of a freed frame is reported to the [`Machine`] (see its docs).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use addrspace::{
    AccessKind, DescKind, GpaRange, GuestPhysAddr, HostPhysAddr, MappingFlags, NestedFormat,
    PAGE_SIZE,
};
use vcpu_api::{
    AccessWidth, ArchVCpu, Conduit, CpuState, ExitReason, FaultInsn, FirmwareCall, FirmwareError,
    FirmwareReply, GuestCall, GuestMemory, Hypercall, MmioAccess, MmioDecodeError, MmioInsn,
    MmioOp, NestedFault, PortIo, PortOp, SysRegAccess, SysRegOp, VCpuError, VCpuResult,
};

use crate::machine::Machine;
use crate::program::{GuestLog, OP_SIZE, Op, Probe, Program};

/// [`OP_SIZE`] as an instruction length.
const OP_LEN: u8 = vcpu_api::low_u8(OP_SIZE);
const _: () = assert!(OP_LEN as u64 == OP_SIZE);

/// General registers of the mock (register 0 takes hypercall results and the start
/// argument).
pub const REGS: usize = 32;

/// A vCPU's software TLB: guest page → cached translation (host page, flags, the
/// frame's allocation generation, the machine tick after the walk).
///
/// The vCPU holds its lock for a whole access (translation and memory access), and
/// an invalidation takes the same lock: like a hardware TLBI followed by a barrier,
/// an invalidation completes only once accesses that used the old translation have
/// completed, and no walk that began before it can insert a stale entry after it.
#[derive(Debug, Default)]
pub struct TlbCache {
    /// The vCPU it belongs to (the index in its VM).
    pub(crate) vcpu: usize,
    map: Mutex<Entries>,
    /// Translations served from the cache.
    pub hits: AtomicU64,
    /// Table walks.
    pub walks: AtomicU64,
    /// Full invalidations.
    pub flushes: AtomicU64,
    /// Invalidations of a range (broadcasts).
    pub range_invalidations: AtomicU64,
}

/// A cached translation of one guest page.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The host page.
    hpa_page: usize,
    flags: MappingFlags,
    /// The allocation generation of the host frame when the entry was made (`None`
    /// for memory outside the machine).
    generation: Option<u64>,
    /// The machine's tick after the walk that made it.
    stamp: u64,
}

type Entries = HashMap<usize, Entry>;

impl TlbCache {
    pub(crate) fn flush(&self) {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.map.lock().expect("tlb").clear();
    }

    /// Drops the entries of the pages of `range`, and only those.
    pub(crate) fn invalidate_range(&self, range: GpaRange) {
        self.range_invalidations.fetch_add(1, Ordering::SeqCst);
        let (start, end) = (range.start().as_usize(), range.end().as_usize());
        let mut map = self.map.lock().expect("tlb");
        if range.size() / PAGE_SIZE < map.len() {
            for page in (start & !(PAGE_SIZE - 1)..end).step_by(PAGE_SIZE) {
                map.remove(&page);
            }
        } else {
            map.retain(|page, _| !(start..end).contains(page));
        }
    }

    /// The guest pages cached now (for tests of the invalidation itself).
    pub fn cached_pages(&self) -> Vec<GuestPhysAddr> {
        let mut pages: Vec<_> = self
            .map
            .lock()
            .expect("tlb")
            .keys()
            .map(|&p| GuestPhysAddr::from_usize(p))
            .collect();
        pages.sort();
        pages
    }
}

/// Faults to inject into one mock vCPU (to show that the checks catch them).
#[derive(Clone, Copy, Debug, Default)]
pub struct MockFaults {
    /// `invalidate_guest_tlb` does nothing (a broken arch layer).
    pub ignore_invalidate: bool,
    /// The vCPU walks an empty table instead of the VM's root (a wrong nested root).
    pub wrong_root: bool,
}

/// Creation parameters of a [`MockVCpu`].
#[derive(Clone, Debug)]
pub struct MockVCpuConfig {
    /// The guest code (shared by all vCPUs of the VM).
    pub program: Arc<Program>,
    /// Where checks are recorded.
    pub log: Arc<GuestLog>,
    /// Injected faults.
    pub faults: MockFaults,
    /// The id the guest names this vCPU by (CPU-on targets); `None` is the vCPU
    /// index.
    pub cpu_id: Option<u64>,
}

impl MockVCpuConfig {
    /// A vCPU running `program`, logging into `log`.
    pub fn new(program: Arc<Program>, log: Arc<GuestLog>) -> Self {
        Self {
            program,
            log,
            faults: MockFaults::default(),
            cpu_id: None,
        }
    }
}

/// How the mock answers a call in register 0 (like PSCI): a value as is, a probe 1
/// or 0, errors as PSCI's negative codes (NOT_SUPPORTED -1, INVALID_PARAMETERS -2,
/// ALREADY_ON -4, INTERNAL_FAILURE -6, INVALID_ADDRESS -9), a CPU state 0 (on), 1
/// (off) or 2 (on pending), a version `major << 16 | minor`, CPUID its EAX.
pub const fn reply_word(reply: FirmwareReply) -> u64 {
    let code: i64 = match reply {
        FirmwareReply::Value(v) => return v,
        FirmwareReply::Offered(yes) => return yes as u64,
        FirmwareReply::Version { major, minor } => return (major as u64) << 16 | minor as u64,
        FirmwareReply::CpuState(CpuState::On) => 0,
        FirmwareReply::CpuState(CpuState::Off) => 1,
        FirmwareReply::CpuState(CpuState::OnPending) => 2,
        FirmwareReply::Cpuid(r) => return r.eax as u64,
        FirmwareReply::Error(FirmwareError::NotSupported) => -1,
        FirmwareReply::Error(FirmwareError::InvalidParameters) => -2,
        FirmwareReply::Error(FirmwareError::AlreadyOn) => -4,
        FirmwareReply::Error(FirmwareError::Failed) => -6,
        FirmwareReply::Error(FirmwareError::InvalidAddress) => -9,
    };
    code as u64
}

/// Why a translation failed.
struct Fault;

/// A software vCPU whose nested tables have format `F`.
pub struct MockVCpu<F: NestedFormat> {
    vm_id: usize,
    vcpu_id: usize,
    cpu_id: u64,
    machine: Arc<Machine>,
    config: MockVCpuConfig,
    root: Option<HostPhysAddr>,
    pc: u64,
    regs: [u64; REGS],
    tlb: Arc<TlbCache>,
    irqs: Vec<usize>,
    /// The last run ended on a kick.
    kicked: bool,
    /// The physical CPU it is bound to (like hardware vCPUs whose state is loaded
    /// on one CPU: `run` elsewhere, `bind` twice and `unbind` unbound are refused).
    bound: Option<usize>,
    /// Port ranges `(first, count)` the guest reaches directly (like x86's IOPM).
    passed_ports: Vec<(u16, u16)>,
    _format: PhantomData<F>,
}

impl<F: NestedFormat> MockVCpu<F> {
    /// The software TLB (counters).
    pub fn tlb(&self) -> &Arc<TlbCache> {
        &self.tlb
    }

    /// Register `i`.
    pub fn reg(&self, i: usize) -> u64 {
        self.regs[i % REGS]
    }

    /// Interrupts injected and not yet taken.
    pub fn pending_irqs(&self) -> &[usize] {
        &self.irqs
    }

    /// Reads descriptor `index` of the table at `table` (atomically, as the walker
    /// does), or faults when the table is not simulated memory. A table frame that
    /// is free, or freed while it is read, is reported as a stale use.
    fn descriptor(&self, gpa: usize, table: HostPhysAddr, index: usize) -> Result<u64, Fault> {
        let hpa = table + index * 8;
        if !self.machine.contains(hpa, 8) {
            return Err(Fault);
        }
        let before = self.machine.generation(table);
        let ptr = self.machine.phys_to_virt(hpa).as_ptr::<AtomicU64>();
        // SAFETY: `hpa` is 8-byte aligned simulated memory (tables are 4 KiB frames)
        // that lives as long as the machine; table memory is accessed atomically.
        let raw = unsafe { &*ptr }.load(Ordering::Acquire);
        let after = self.machine.generation(table);
        if before != after || before.is_some_and(|g| g % 2 == 0) {
            self.stale(gpa, table, || {
                format!("walked a table frame that is free or was freed meanwhile (generation {before:?} -> {after:?})")
            });
        }
        Ok(raw)
    }

    /// Reports a use of a freed frame by this vCPU.
    fn stale(&self, gpa: usize, hpa: HostPhysAddr, what: impl FnOnce() -> String) {
        self.machine.report_stale(|| {
            format!(
                "VM {} vCPU {}: GPA {gpa:#x} -> HPA {hpa:#x}: {}",
                self.vm_id,
                self.vcpu_id,
                what()
            )
        });
    }

    /// Whether the frame behind `hpa` no longer has the generation a cached
    /// translation saw (it was freed, and maybe allocated again, since).
    fn frame_changed(&self, hpa: HostPhysAddr, generation: Option<u64>) -> Option<String> {
        let expected = generation?;
        let now = self.machine.generation(hpa);
        (now != Some(expected) || expected % 2 == 0)
            .then(|| format!("cached at generation {expected}, now {now:?}"))
    }

    /// Walks the nested tables for `gpa` like the hardware: from the root, reading
    /// each level's descriptor and decoding it with the format.
    fn walk(&self, gpa: usize) -> Result<(usize, MappingFlags), Fault> {
        let root = self.root.ok_or(Fault)?;
        if self.config.faults.wrong_root || (gpa as u128) >> F::GPA_BITS != 0 {
            return Err(Fault);
        }
        self.tlb.walks.fetch_add(1, Ordering::Relaxed);
        let mut table = root;
        let mut level = F::LEVELS - 1;
        loop {
            let entries = if level == F::LEVELS - 1 {
                F::ROOT_ENTRIES
            } else {
                512
            };
            let index = (gpa >> (12 + 9 * level)) & (entries - 1);
            let raw = self.descriptor(gpa, table, index)?;
            match F::kind(raw, level) {
                DescKind::Table if level > 0 => {
                    table = F::output_addr(raw, level);
                    level -= 1;
                }
                DescKind::Leaf => {
                    let span = 1usize << (12 + 9 * level);
                    let hpa = F::output_addr(raw, level).as_usize() + (gpa & (span - 1));
                    return Ok((hpa & !(PAGE_SIZE - 1), F::leaf_flags(raw)));
                }
                _ => return Err(Fault),
            }
        }
    }

    /// Translates `gpa` for `access` through the TLB (`entries`, locked by the
    /// caller for the whole access), walking on a miss. A cached entry is used as it
    /// is, even if the tables changed since: that is what makes a missing
    /// invalidation visible. Returns the host address and the frame's generation
    /// (to check again after the access).
    fn translate(
        &self,
        entries: &mut Entries,
        gpa: usize,
        access: AccessKind,
    ) -> Result<(HostPhysAddr, Option<u64>), Fault> {
        let page = gpa & !(PAGE_SIZE - 1);
        let entry = match entries.get(&page) {
            Some(e) => {
                self.tlb.hits.fetch_add(1, Ordering::Relaxed);
                *e
            }
            None => {
                let (hpa_page, flags) = self.walk(gpa)?;
                let e = Entry {
                    hpa_page,
                    flags,
                    generation: self.machine.generation(HostPhysAddr::from_usize(hpa_page)),
                    stamp: self.machine.tick(),
                };
                entries.insert(page, e);
                e
            }
        };
        if !entry.flags.allows(access) {
            return Err(Fault);
        }
        let hpa = HostPhysAddr::from_usize(entry.hpa_page + (gpa & (PAGE_SIZE - 1)));
        if !self.machine.contains(hpa, 1) || entry.flags.contains(MappingFlags::DEVICE) {
            // A pass-through device or memory outside the machine: the mock has no
            // device behind it, so it reports the access as a fault.
            return Err(Fault);
        }
        if let Some(why) = self.frame_changed(hpa, entry.generation) {
            self.stale(gpa, hpa, || {
                format!("a translation to a freed frame was used ({why})")
            });
        }
        if let Some(removed) = self.machine.removed_at(self.vm_id, page)
            && entry.stamp < removed
        {
            self.machine.report_removed(|| {
                format!(
                    "VM {} vCPU {}: GPA {gpa:#x} -> HPA {hpa:#x}: used a translation cached at \
                     tick {} after a call that removed it (begun at tick {removed}) returned",
                    self.vm_id, self.vcpu_id, entry.stamp
                )
            });
        }
        Ok((hpa, entry.generation))
    }

    /// An instruction fetch at `gpa`.
    fn fetch(&self, gpa: usize) -> Result<(), Fault> {
        let mut entries = self.tlb.map.lock().expect("tlb");
        self.translate(&mut entries, gpa, AccessKind::Execute)
            .map(|_| ())
    }

    /// Loads or stores `width` bytes at `gpa`, holding the TLB for the whole access:
    /// a naturally aligned access as one atomic access of its width (single-copy
    /// atomic, as on the hardware), any other byte by byte, so a page crossing
    /// translates both pages. Errors with the first address that faulted (and then
    /// touches no byte).
    fn access(
        &self,
        gpa: GuestPhysAddr,
        width: AccessWidth,
        write: Option<u64>,
    ) -> Result<u64, GuestPhysAddr> {
        let kind = if write.is_some() {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let mut entries = self.tlb.map.lock().expect("tlb");
        let mut bytes = [(
            core::ptr::null_mut::<u8>(),
            HostPhysAddr::from_usize(0),
            None,
        ); 8];
        let mut page: Option<(HostPhysAddr, Option<u64>)> = None;
        for (i, b) in bytes.iter_mut().enumerate().take(width.bytes()) {
            let a = gpa + i;
            // Translate once per page the access touches.
            let (hpa, generation) = match page {
                Some((prev, g)) if !a.as_usize().is_multiple_of(PAGE_SIZE) => (prev + 1, g),
                _ => self
                    .translate(&mut entries, a.as_usize(), kind)
                    .map_err(|Fault| a)?,
            };
            page = Some((hpa, generation));
            *b = (
                self.machine.phys_to_virt(hpa).as_mut_ptr::<u8>(),
                hpa,
                generation,
            );
        }
        // A naturally aligned access is single-copy atomic on all three
        // architectures: one load or store of its width, so a host thread or
        // another vCPU reading meanwhile sees the old value or the new, never a mix.
        // (Its bytes lie in one page, so `bytes[0]`'s frame holds them all.)
        let (p, hpa, generation) = bytes[0];
        if gpa.as_usize().is_multiple_of(width.bytes()) && p.addr().is_multiple_of(width.bytes()) {
            let value = if write.is_some() && self.frame_changed(hpa, generation).is_some() {
                // Not carried out, as below.
                0
            } else {
                // SAFETY: `p` is the first of `width` bytes of simulated memory in one
                // page that the VM's tables map to this guest (checked by
                // `translate`), aligned to `width` (checked above); other threads
                // touch guest memory concurrently, hence the atomic access.
                unsafe { single_copy(p, width, write) }
            };
            if let Some(why) = self.frame_changed(hpa, generation) {
                self.stale(gpa.as_usize(), hpa, || {
                    format!("the frame was freed while the access ran ({why})")
                });
            }
            drop(entries);
            return Ok(value);
        }
        let mut value = 0u64;
        for (i, (p, hpa, generation)) in bytes.iter().enumerate().take(width.bytes()) {
            // A store through a translation to a frame freed since it was cached
            // (reported by `translate`) is not carried out: the frame may now hold
            // the allocator's or a page table's own data, and a vCPU that ignores
            // invalidations on purpose (the control tests) must not corrupt the
            // machine that checks it.
            if write.is_some() && self.frame_changed(*hpa, *generation).is_some() {
                continue;
            }
            // SAFETY: each pointer is a byte of simulated memory that the VM's tables
            // map to this guest (checked by `translate`); volatile because other
            // vCPU threads and the host touch guest memory concurrently.
            unsafe {
                match write {
                    Some(v) => p.write_volatile(v.to_le_bytes()[i]),
                    None => value |= u64::from(p.read_volatile()) << (8 * i),
                }
            }
        }
        // A frame freed while the access ran was used after its free.
        let freed = bytes
            .iter()
            .take(width.bytes())
            .enumerate()
            .find_map(|(i, (_, hpa, g))| Some((i, *hpa, self.frame_changed(*hpa, *g)?)));
        if let Some((i, hpa, why)) = freed {
            self.stale(gpa.as_usize() + i, hpa, || {
                format!("the frame was freed while the access ran ({why})")
            });
        }
        drop(entries);
        Ok(value)
    }

    /// The exit of a nested page fault at `gpa`, with what the op at the PC says
    /// about the access, as a syndrome would: a load or store of the faulting
    /// address is decoded (a store's value read now), anything else refused.
    fn fault(&mut self, gpa: GuestPhysAddr, access: AccessKind) -> ExitReason {
        self.machine
            .faults
            .nested_faults
            .fetch_add(1, Ordering::SeqCst);
        // A VM exit takes time on hardware (the other vCPUs keep running meanwhile);
        // yielding here lets vCPUs racing for the same page overlap as they would.
        std::thread::yield_now();
        let pc = self.pc;
        let read = |width: AccessWidth, reg: usize| MmioInsn {
            width,
            op: MmioOp::Read {
                reg,
                sign_extend: false,
                reg_width: AccessWidth::Qword,
            },
            len: OP_LEN,
        };
        let write = |width: AccessWidth, value: u64| MmioInsn {
            width,
            op: MmioOp::Write {
                value: width.truncate(value),
            },
            len: OP_LEN,
        };
        let insn = match (access, self.config.program.op_at(pc)) {
            (AccessKind::Execute, _) => FaultInsn::Refused(MmioDecodeError::Execute { pc }),
            (_, Some(Op::Read { gpa: g, width, reg })) if *g == gpa => {
                FaultInsn::Decoded(read(*width, *reg))
            }
            (
                _,
                Some(Op::Write {
                    gpa: g,
                    width,
                    value,
                }),
            ) if *g == gpa => FaultInsn::Decoded(write(*width, *value)),
            (
                _,
                Some(Op::WriteReg {
                    gpa: g,
                    width,
                    reg,
                    xor,
                }),
            ) if *g == gpa => FaultInsn::Decoded(write(*width, self.regs[*reg % REGS] ^ xor)),
            (_, Some(Op::Probe(_))) => FaultInsn::Refused(MmioDecodeError::NoSyndrome { pc }),
            _ => FaultInsn::Refused(MmioDecodeError::Unsupported {
                pc,
                insn: 0,
                why: "the op at the PC is no load or store of the faulting address",
            }),
        };
        ExitReason::NestedPageFault(NestedFault { gpa, access, insn })
    }

    /// The exit of firmware call `call` (by "HVC": the PC is past the op).
    fn call(&mut self, call: FirmwareCall) -> ExitReason {
        ExitReason::Call(GuestCall {
            call,
            conduit: Conduit::Hvc,
        })
    }

    /// Whether every port of an access of `width` at `port` is passed through (as
    /// the IOPM is checked: one intercepted port makes the access exit).
    fn port_passed(&self, port: u16, width: AccessWidth) -> bool {
        (0..width.bytes()).all(|i| {
            let p = usize::from(port) + i;
            self.passed_ports.iter().any(|&(first, count)| {
                (usize::from(first)..usize::from(first) + usize::from(count)).contains(&p)
            })
        })
    }

    fn probe(&mut self, p: &Probe) -> Option<ExitReason> {
        let pcpu = Machine::current_pcpu();
        while !p.stop.load(Ordering::SeqCst) {
            if self.machine.take_kick(pcpu) {
                self.kicked = true;
                return Some(ExitReason::Kicked);
            }
            let epoch = p.epoch.load(Ordering::SeqCst);
            match self.access(p.gpa, AccessWidth::Qword, None) {
                // The host moved on while this read ran (the thread may have been
                // preempted between the epoch and the access): it belongs to neither
                // phase.
                Ok(_) if p.epoch.load(Ordering::SeqCst) != epoch => {
                    p.transitional.fetch_add(1, Ordering::SeqCst);
                }
                Ok(v) => {
                    if epoch == 0 {
                        p.before_vcpus
                            .fetch_or(1 << (self.vcpu_id % 64), Ordering::SeqCst);
                    }
                    let good = epoch >= 3 && v == p.expect.load(Ordering::SeqCst);
                    if good {
                        p.good_vcpus
                            .fetch_or(1 << (self.vcpu_id % 64), Ordering::SeqCst);
                    }
                    let counter = match epoch {
                        0 => &p.before,
                        1 => &p.stale,
                        2 => &p.transitional,
                        _ if good => &p.good,
                        _ => &p.wrong,
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Err(gpa) => {
                    if epoch == 1 {
                        p.faults_unmapped.fetch_add(1, Ordering::SeqCst);
                    }
                    return Some(self.fault(gpa, AccessKind::Read));
                }
            }
        }
        None
    }
}

impl<F: NestedFormat> ArchVCpu for MockVCpu<F> {
    type Format = F;
    type CreateConfig = MockVCpuConfig;
    type SetupConfig = ();

    fn claim_vm(vm_id: usize) -> VCpuResult {
        Machine::current().claim_vmid(vm_id).map(|_| ())
    }

    fn release_vm(vm_id: usize) {
        Machine::current().release_vmid(vm_id);
    }

    fn vm_tag(vm_id: usize) -> Option<u16> {
        Machine::current().vmid_of(vm_id)
    }

    fn new(vm_id: usize, vcpu_id: usize, config: MockVCpuConfig) -> VCpuResult<Self> {
        let machine = Machine::current();
        if machine.vmid_of(vm_id).is_none() {
            return Err(VCpuError::NotConfigured {
                missing: "the VM's VMID (ArchVCpu::claim_vm)",
            });
        }
        let tlb = Arc::new(TlbCache {
            vcpu: vcpu_id,
            ..TlbCache::default()
        });
        machine.register_tlb(vm_id, &tlb);
        Ok(Self {
            vm_id,
            vcpu_id,
            cpu_id: config.cpu_id.unwrap_or(vcpu_id as u64),
            machine,
            config,
            root: None,
            pc: 0,
            regs: [0; REGS],
            tlb,
            irqs: Vec::new(),
            kicked: false,
            bound: None,
            passed_ports: Vec::new(),
            _format: PhantomData,
        })
    }

    fn cpu_id(&self) -> u64 {
        self.cpu_id
    }

    fn set_nested_root(&mut self, root: HostPhysAddr) -> VCpuResult {
        if !root.as_usize().is_multiple_of(F::ROOT_FRAMES * PAGE_SIZE) {
            return Err(VCpuError::InvalidValue {
                what: "nested root",
                value: root.as_usize() as u64,
            });
        }
        self.root = Some(root);
        self.tlb.flush();
        Ok(())
    }

    fn set_entry(&mut self, entry: GuestPhysAddr) -> VCpuResult {
        self.pc = entry.as_usize() as u64;
        Ok(())
    }

    fn setup(&mut self, _config: ()) -> VCpuResult {
        Ok(())
    }

    fn bind(&mut self) -> VCpuResult {
        if self.bound.is_some() {
            return Err(VCpuError::Busy);
        }
        self.bound = Some(Machine::current_pcpu());
        Ok(())
    }

    fn unbind(&mut self) -> VCpuResult {
        match self.bound.take() {
            Some(_) => Ok(()),
            None => Err(VCpuError::NotConfigured {
                missing: "bind before unbind",
            }),
        }
    }

    fn run(&mut self) -> VCpuResult<ExitReason> {
        if self.root.is_none() {
            return Err(VCpuError::NotConfigured {
                missing: "nested root",
            });
        }
        if self.bound != Some(Machine::current_pcpu()) {
            return Err(VCpuError::NotConfigured {
                missing: "bind on this physical CPU",
            });
        }
        if core::mem::take(&mut self.kicked) {
            // Back from a kick, which it has acknowledged by leaving the guest: give up
            // the host CPU once. On a host with as many cores as vCPU threads, the
            // thread that kicked (spinning until every vCPU acknowledged) and the
            // other kicked vCPUs may be waiting for one; on hardware the kick's IPI
            // takes the CPU from the guest the same way.
            std::thread::yield_now();
        }
        let program = self.config.program.clone();
        let pcpu = Machine::current_pcpu();
        loop {
            if self.machine.take_kick(pcpu) {
                self.kicked = true;
                return Ok(ExitReason::Kicked);
            }
            let pc = self.pc;
            let Some(op) = program.op_at(pc) else {
                // Running off the program is a bug of the test's script.
                return Ok(ExitReason::FailEntry { reason: pc });
            };
            let pc_gpa = vcpu_api::gpa_of(pc);
            if self.fetch(pc_gpa.as_usize()).is_err() {
                return Ok(self.fault(pc_gpa, AccessKind::Execute));
            }
            let next = pc + OP_SIZE;
            match op {
                Op::Read { gpa, width, reg } => match self.access(*gpa, *width, None) {
                    Ok(v) => self.regs[*reg % REGS] = v,
                    Err(at) => return Ok(self.fault(at, AccessKind::Read)),
                },
                Op::Write { gpa, width, value } => {
                    if let Err(at) = self.access(*gpa, *width, Some(width.truncate(*value))) {
                        return Ok(self.fault(at, AccessKind::Write));
                    }
                }
                Op::WriteReg {
                    gpa,
                    width,
                    reg,
                    xor,
                } => {
                    let v = width.truncate(self.regs[*reg % REGS] ^ xor);
                    if let Err(at) = self.access(*gpa, *width, Some(v)) {
                        return Ok(self.fault(at, AccessKind::Write));
                    }
                }
                Op::Fetch { gpa } => {
                    if self.fetch(gpa.as_usize()).is_err() {
                        return Ok(self.fault(*gpa, AccessKind::Execute));
                    }
                }
                Op::Set { reg, value } => self.regs[*reg % REGS] = *value,
                Op::Check { reg, value, what } => {
                    let got = self.regs[*reg % REGS];
                    self.config.log.record(
                        self.vcpu_id,
                        what,
                        got == *value,
                        format!("register {reg} = {got:#x}, expected {value:#x}"),
                    );
                }
                Op::Hypercall { nr, args } => {
                    self.pc = next;
                    return Ok(self.call(FirmwareCall::Hypercall(Hypercall {
                        nr: *nr,
                        function: 0,
                        args: *args,
                    })));
                }
                Op::Call(call) => {
                    self.pc = next;
                    return Ok(self.call(*call));
                }
                Op::Halt => {
                    self.pc = next;
                    return Ok(ExitReason::Halt);
                }
                Op::CpuUp { target, entry, arg } => {
                    self.pc = next;
                    return Ok(self.call(FirmwareCall::CpuOn {
                        target: *target,
                        entry: *entry,
                        arg: *arg,
                    }));
                }
                Op::CpuDown => {
                    self.pc = next;
                    return Ok(self.call(FirmwareCall::CpuOff));
                }
                Op::Shutdown => return Ok(self.call(FirmwareCall::SystemOff)),
                Op::Reset => return Ok(self.call(FirmwareCall::SystemReset)),
                Op::Jump { to } => {
                    self.pc = to.as_usize() as u64;
                    continue;
                }
                Op::Probe(p) => {
                    if let Some(exit) = self.probe(p) {
                        return Ok(exit);
                    }
                }
                Op::In { port, width } => {
                    self.pc = next;
                    if !self.port_passed(*port, *width) {
                        return Ok(ExitReason::Io(PortIo {
                            port: *port,
                            width: *width,
                            op: PortOp::Read,
                        }));
                    }
                    let v = self.machine.port_in(*port, *width);
                    self.regs[0] = width.write_register(self.regs[0], v);
                    continue;
                }
                Op::Out { port, width, value } => {
                    self.pc = next;
                    let data = width.truncate(*value);
                    if !self.port_passed(*port, *width) {
                        return Ok(ExitReason::Io(PortIo {
                            port: *port,
                            width: *width,
                            op: PortOp::Write { data },
                        }));
                    }
                    self.machine.port_out(*port, *width, data);
                    continue;
                }
            }
            self.pc = next;
        }
    }

    fn gpr(&self, index: usize) -> VCpuResult<u64> {
        self.regs
            .get(index)
            .copied()
            .ok_or(VCpuError::InvalidRegister { index })
    }

    fn set_gpr(&mut self, index: usize, value: u64) -> VCpuResult {
        let r = self
            .regs
            .get_mut(index)
            .ok_or(VCpuError::InvalidRegister { index })?;
        *r = value;
        Ok(())
    }

    fn pc(&self) -> u64 {
        self.pc
    }

    fn set_start_arg(&mut self, arg: u64) -> VCpuResult {
        self.regs[0] = arg;
        Ok(())
    }

    fn inject_interrupt(&mut self, vector: usize) -> VCpuResult {
        self.irqs.push(vector);
        Ok(())
    }

    fn invalidate_guest_tlb(&mut self) {
        if !self.config.faults.ignore_invalidate {
            self.tlb.flush();
        }
    }

    fn decode_mmio(
        &self,
        fault: &NestedFault,
        _mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        match fault.insn {
            FaultInsn::Decoded(insn) => Ok(insn.at(fault.gpa)),
            FaultInsn::Refused(e) => Err(e),
            // The mock's exits always describe the access.
            FaultInsn::Bytes(_) | FaultInsn::Fetch => Err(MmioDecodeError::Unsupported {
                pc: self.pc,
                insn: 0,
                why: "a mock exit without the access",
            }),
        }
    }

    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult {
        if let (MmioOp::Read { reg, .. }, Some(v)) = (access.op, read_value) {
            let r = &mut self.regs[reg % REGS];
            *r = access.load_result(*r, v);
        }
        self.pc += u64::from(access.insn_len);
        Ok(())
    }

    /// The PC is already past the calling op; the reply goes to register 0.
    fn complete_call(&mut self, _call: &GuestCall, reply: FirmwareReply) -> VCpuResult {
        self.regs[0] = reply_word(reply);
        Ok(())
    }

    /// The mock has no system-register op: nothing can be pending.
    fn complete_sysreg(&mut self, access: &SysRegAccess, read_value: Option<u64>) -> VCpuResult {
        if let (SysRegOp::Read { reg }, Some(v)) = (access.op, read_value) {
            self.set_gpr(reg, v)?;
        }
        Ok(())
    }
    fn complete_io(&mut self, io: &PortIo, read_value: Option<u64>) -> VCpuResult {
        if let (PortOp::Read, Some(v)) = (io.op, read_value) {
            self.regs[0] = io.width.write_register(self.regs[0], v);
        }
        Ok(())
    }

    fn pass_through_ports(&mut self, first: u16, count: u16) -> VCpuResult {
        if usize::from(first) + usize::from(count) > 0x1_0000 {
            return Err(VCpuError::InvalidValue {
                what: "port range (past port 0xffff)",
                value: u64::from(first),
            });
        }
        self.passed_ports.push((first, count));
        Ok(())
    }
}

impl<F: NestedFormat> core::fmt::Debug for MockVCpu<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MockVCpu")
            .field("format", &F::NAME)
            .field("vm", &self.vm_id)
            .field("vcpu", &self.vcpu_id)
            .field("pc", &format_args!("{:#x}", self.pc))
            .finish()
    }
}

/// One load (`write` `None`, returning the value) or store (returning 0) of
/// `width` bytes at `p`, little-endian, as one atomic access.
///
/// # Safety
///
/// `p` is valid for reads and writes of `width` bytes and aligned to `width`; other
/// threads touch those bytes only through atomic or volatile accesses.
unsafe fn single_copy(p: *mut u8, width: AccessWidth, write: Option<u64>) -> u64 {
    use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32};
    use vcpu_api::{low_u8, low_u16, low_u32};
    let o = Ordering::SeqCst;
    // SAFETY: per the caller, `p` is valid for `width` bytes and aligned to `width`,
    // and shared only through atomic or volatile accesses (every arm).
    unsafe {
        match (width, write) {
            (AccessWidth::Byte, Some(v)) => AtomicU8::from_ptr(p).store(low_u8(v), o),
            (AccessWidth::Word, Some(v)) => {
                AtomicU16::from_ptr(p.cast()).store(low_u16(v).to_le(), o)
            }
            (AccessWidth::Dword, Some(v)) => {
                AtomicU32::from_ptr(p.cast()).store(low_u32(v).to_le(), o)
            }
            (AccessWidth::Qword, Some(v)) => AtomicU64::from_ptr(p.cast()).store(v.to_le(), o),
            (AccessWidth::Byte, None) => return u64::from(AtomicU8::from_ptr(p).load(o)),
            (AccessWidth::Word, None) => {
                return u64::from(u16::from_le(AtomicU16::from_ptr(p.cast()).load(o)));
            }
            (AccessWidth::Dword, None) => {
                return u64::from(u32::from_le(AtomicU32::from_ptr(p.cast()).load(o)));
            }
            (AccessWidth::Qword, None) => {
                return u64::from_le(AtomicU64::from_ptr(p.cast()).load(o));
            }
        }
    }
    0
}
