//! [`Vm`]: one virtual machine — its address space, devices and vCPUs — built from a
//! [`VmConfig`], with the lifecycle, guest-memory access, run-time mapping changes and
//! the TLB coherency protocol. The run loop itself is in `run.rs`.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use addrspace::{
    AccessKind, AddrSpace, Area, Flush, FrameAllocator, FromBytes, GpaRange, GuestPhysAddr,
    HostPhysAddr, Immutable, IntoBytes, MappingFlags, PAGE_SIZE, Populate, Walk,
};
use spin::{Mutex, RwLock};
use vcpu_api::{ArchVCpu, FirmwareReply, GuestCall, NestedFault, SysRegAccess, SysRegOp};

use crate::config::{
    ConfigError, DeviceSpace, Field, MapType, PassthroughDeviceConfig, ValidConfig, VmConfig,
};
use crate::device::{MmioBus, MmioDevice, PortBus, device_pages};
use crate::diag::events;
use crate::error::{VmError, VmResult};
use crate::firmware::Firmware;
use crate::frames::HalFrames;
use crate::grant::{GrantKind, GrantedRange, HostGrant};
use crate::passthrough::{PassthroughRange, plan_passthrough};
use crate::state::{Encoded, VCpuState, VCpuStateCell, VCpuStep, VmState};

/// The fault-loop detector's default limit (see [`Vm::set_fault_loop_limit`]).
pub const DEFAULT_FAULT_LOOP_LIMIT: usize = 16;

/// How long a shootdown waits for a kicked vCPU before kicking it again.
const REKICK_NS: u64 = 1_000_000;

/// After this long without an acknowledgement, a shootdown logs a warning.
const WARN_NS: u64 = 1_000_000_000;

/// Counters of one VM (for benchmarks and diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmStats {
    /// Kicks sent to physical CPUs running this VM's vCPUs (shootdowns, pause,
    /// shutdown; re-kicks included).
    pub kicks: u64,
    /// Unmap/protect operations that needed a TLB invalidation.
    pub shootdowns: u64,
    /// How long the last shootdown took, in nanoseconds of the platform's clock
    /// (`VmHal::now_ns`): from its broadcast invalidation or first kick until every
    /// vCPU acknowledged (the broadcast completed, or each kicked vCPU left the guest
    /// or saw the new generation).
    pub shootdown_last_ns: u64,
    /// The longest shootdown so far, in nanoseconds, as `shootdown_last_ns`.
    pub shootdown_max_ns: u64,
    /// The TLB generation (bumped by each shootdown).
    pub tlb_generation: u64,
    /// Nested page faults that mapped a page (lazy fault-in).
    pub faults_mapped: u64,
    /// Nested page faults found already resolved (another vCPU was first, or a
    /// stale TLB entry).
    pub faults_spurious: u64,
    /// Guest-memory frames owned by allocated regions.
    pub data_frames: usize,
    /// Page-table frames.
    pub table_frames: usize,
    /// Frames held until a flush completes (0 between operations).
    pub deferred_frames: usize,
    /// The exits the vCPUs took, by kind.
    pub exits: crate::exit::ExitCounts,
}

/// Host memory a VM owns outside its address space's allocator (identical regions,
/// from [`HalFrames`]): `(hpa, frame count)`, freed after the address space
/// (field order in [`Vm`]).
#[derive(Default)]
struct HostRanges(Mutex<Vec<(HostPhysAddr, usize)>>);

impl Drop for HostRanges {
    fn drop(&mut self) {
        for (hpa, count) in self.0.get_mut().drain(..) {
            // SAFETY: `HalFrames` handed out these frames for an identical region of
            // this VM, and its address space, which mapped them, is already dropped
            // (field order of `Vm`): nothing uses them.
            unsafe { HalFrames.dealloc_frames(hpa, count) }
        }
    }
}

/// The flush tokens of a VM's unmaps and protects in the order of their table
/// changes, each with whether its shootdown has finished.
#[derive(Default)]
struct FlushQueue {
    next: u64,
    entries: VecDeque<(u64, Flush, bool)>,
}

impl FlushQueue {
    /// Queues `flush`; returns its ticket.
    fn push(&mut self, flush: Flush) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.entries.push_back((ticket, flush, false));
        ticket
    }

    /// Notes that the shootdown of `ticket` has finished.
    fn finish(&mut self, ticket: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == ticket) {
            e.2 = true;
        }
    }

    /// The oldest token, if its shootdown has finished.
    fn pop_finished(&mut self) -> Option<Flush> {
        if self.entries.front()?.2 {
            self.entries.pop_front().map(|e| e.1)
        } else {
            None
        }
    }
}

/// Identical regions are placed at this alignment, as axvisor does (2 MiB, so the
/// nested table can use large leaves).
const IDENTICAL_ALIGN: usize = 0x20_0000;

/// A VM's TLB tag (VMID, ASID) from [`ArchVCpu::claim_vm`], held for the VM's life;
/// dropping it calls [`ArchVCpu::release_vm`], which invalidates the tag on every CPU
/// before it is freed.
struct TagClaim<V: ArchVCpu> {
    vm_id: usize,
    _arch: PhantomData<fn() -> V>,
}

impl<V: ArchVCpu> TagClaim<V> {
    fn claim(vm_id: usize) -> VmResult<Self> {
        V::claim_vm(vm_id).map_err(|error| VmError::Tag { vm_id, error })?;
        Ok(Self {
            vm_id,
            _arch: PhantomData,
        })
    }
}

impl<V: ArchVCpu> Drop for TagClaim<V> {
    fn drop(&mut self) {
        V::release_vm(self.vm_id);
    }
}

/// A vCPU's run-loop state, kept with the architecture vCPU under one lock.
pub(crate) struct VCpuInner<V> {
    pub(crate) arch: V,
    /// Last resolved fault: (page, access, TLB generation) and how often in a row.
    pub(crate) last_fault: Option<(usize, AccessKind, u64)>,
    pub(crate) repeats: usize,
    /// The exit the vCPU is stopped at until the caller answers it.
    pub(crate) pending: Option<Pending>,
}

/// An exit waiting for the caller's answer, kept as the exit gave it: completing it
/// hands the same value back to the arch vCPU.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pending {
    /// An unserved access ([`Vm::skip_access`], [`Vm::complete_access`]); running
    /// the vCPU again without completing it retries the access.
    Access(NestedFault),
    /// A hypercall of the board's ([`Vm::set_return_value`], [`Vm::reply_call`]).
    Call(GuestCall),
    /// A system-register access ([`Vm::set_return_value`]).
    SysReg(SysRegAccess),
}

impl<V> VCpuInner<V> {
    pub(crate) fn progress(&mut self) {
        self.last_fault = None;
        self.repeats = 0;
    }
}

/// One vCPU of a VM: the architecture vCPU behind a lock (held by `run_vcpu` for as
/// long as the vCPU runs), its lifecycle state and the atomics of the coherency
/// handshake.
pub(crate) struct VCpuSlot<V> {
    pub(crate) inner: Mutex<VCpuInner<V>>,
    /// The id the guest names this vCPU by (`ArchVCpu::cpu_id`).
    pub(crate) cpu_id: u64,
    /// Where the vCPU is: the one record of it ([`VCpuState::InGuest`] from before
    /// the entry checks to after each exit is the vCPU's half of the handshake).
    pub(crate) state: VCpuStateCell,
    /// The TLB generation this vCPU has invalidated up to.
    pub(crate) seen_gen: AtomicU64,
    /// The physical CPU it last ran on.
    pub(crate) pcpu: AtomicUsize,
    /// Interrupts to inject at the next entry.
    pub(crate) irqs: Mutex<Vec<usize>>,
}

impl<V> VCpuSlot<V> {
    /// Takes `step` for vCPU `vcpu`; a refused step is [`VmError::VCpuState`].
    pub(crate) fn step(&self, vcpu: usize, step: VCpuStep) -> VmResult {
        self.state.step(step).map_err(|state| VmError::VCpuState {
            vcpu,
            op: step.op(),
            state,
        })
    }

    /// Whether the vCPU is in the guest (or about to enter it).
    pub(crate) fn in_guest(&self) -> bool {
        self.state.get() == VCpuState::InGuest
    }
}

/// A virtual machine: the address space in the nested format of `V`, the emulated
/// devices, and the vCPUs. Shared as `Arc<Vm<V>>` between the physical CPUs (or host
/// threads) that run its vCPUs; see the crate README for how a board drives it.
pub struct Vm<V: ArchVCpu> {
    id: usize,
    config: VmConfig,
    state: AtomicU8,
    // Field order is drop order: vCPUs, then the TLB tag (invalidated on every CPU
    // and freed), then the address space (which frees its frames), then the host
    // ranges mapped linearly into it.
    pub(crate) vcpus: Vec<VCpuSlot<V>>,
    /// Held for its `Drop`, which invalidates and frees the VM's TLB tag.
    #[allow(dead_code)]
    tag: TagClaim<V>,
    pub(crate) space: RwLock<AddrSpace<V::Format, HalFrames>>,
    /// Held for its `Drop`, which frees the identity-mapped host memory.
    #[allow(dead_code)]
    host: HostRanges,
    pub(crate) bus: RwLock<MmioBus>,
    /// The emulated x86 port-I/O devices (`DeviceSpace::Port`).
    pub(crate) ports: RwLock<PortBus>,
    passthrough: Vec<PassthroughRange>,
    pub(crate) tlb_gen: AtomicU64,
    /// Flush tokens of unmaps and protects, oldest first, until released (see
    /// [`Vm::change_mappings`]). Locked only with the address space written.
    flushes: Mutex<FlushQueue>,
    kicks: AtomicU64,
    shootdowns: AtomicU64,
    /// `VmStats::shootdown_last_ns` and `shootdown_max_ns`.
    shootdown_ns: [AtomicU64; 2],
    pub(crate) faults_mapped: AtomicU64,
    pub(crate) faults_spurious: AtomicU64,
    pub(crate) exits: crate::exit::ExitCounters,
    pub(crate) fault_loop_limit: AtomicUsize,
    pub(crate) firmware: Firmware,
}

fn space_err(op: &'static str) -> impl FnOnce(addrspace::Error) -> VmError {
    move |error| VmError::AddrSpace { op, error }
}

impl<V: ArchVCpu> Vm<V> {
    /// Builds a VM from `config` (validated and resolved: nothing is checked again
    /// here): maps the memory regions at fixed addresses, maps the pass-through
    /// devices and addresses (widened to 4 KiB, sorted, merged) as DEVICE, claims
    /// the emulated MMIO devices' ranges and puts them on the MMIO bus and the
    /// port-I/O devices on the port bus (attach their models with
    /// [`Vm::attach_device`]), then places each identical region where the host
    /// allocates it (GPA = HPA there, logged and visible in [`Vm::config`], with the
    /// load addresses inside it), and creates the vCPUs: `V::new(vm_id, i, create)`,
    /// `set_nested_root`, `set_entry(entry_point)`, `setup(setup)`, then
    /// `pass_through_ports` for each `passthrough_ports` range, where
    /// `vcpu_config(i)` gives `(create, setup)` for vCPU `i`.
    ///
    /// Host resources the configuration names (pass-through device ranges, reserved
    /// regions at GPA = HPA, pass-through ports) are given to the guest only where
    /// `grant` covers them, with the kind they have there ([`VmError::NotGranted`]
    /// otherwise, before anything is allocated): the platform's `unsafe` promise
    /// that the guest may own them.
    ///
    /// The VM is in state [`VmState::Created`]; [`Vm::boot`] starts vCPU 0.
    pub fn new(
        config: ValidConfig,
        grant: &HostGrant,
        mut vcpu_config: impl FnMut(usize) -> (V::CreateConfig, V::SetupConfig),
    ) -> VmResult<Arc<Self>> {
        let mut config = config.into_inner();
        let devices = &config.devices;
        let mut passthrough = devices.passthrough_devices.clone();
        passthrough.extend(
            devices
                .passthrough_addresses
                .iter()
                .map(|a| PassthroughDeviceConfig {
                    name: "passthrough_addresses".into(),
                    base_gpa: a.base_gpa,
                    base_hpa: HostPhysAddr::from_usize(a.base_gpa.as_usize()),
                    length: a.length,
                    irq: 0,
                    host_node: false,
                }),
        );
        let plan = plan_passthrough(&passthrough)?;
        Self::check_grant(&config, &plan, grant)?;
        let host = HostRanges::default();
        let mut space = AddrSpace::<V::Format, HalFrames>::new(HalFrames)
            .map_err(space_err("create the address space"))?;
        for (i, r) in config.kernel.memory_regions.iter().enumerate() {
            if r.map_type != MapType::Identical {
                let field = Field::at("kernel.memory_regions", i);
                Self::map_config_region(&mut space, field, r)?;
                events::mapped(config.id, &field, &space, r.gpa, r.size);
            }
        }
        for p in &plan {
            // SAFETY: `grant` covers each range as device memory (checked above):
            // the platform promised, in `HostGrant::new`, that the guest may own it;
            // DEVICE mappings are never copied through by `read`/`write`.
            unsafe { space.map_linear(p.gpa, p.hpa, p.size, MappingFlags::DEVICE_RW) }.map_err(
                |error| VmError::MapRegion {
                    field: Field::key("devices.passthrough_devices"),
                    error,
                },
            )?;
            events::mapped(config.id, &"pass-through", &space, p.gpa, p.size);
        }
        let mut bus = MmioBus::new();
        let mut ports = PortBus::new();
        for (i, d) in config.devices.emu_devices.iter().enumerate() {
            let field = Field::at("devices.emu_devices", i);
            match d.space {
                DeviceSpace::Mmio => {
                    let (start, size) = device_pages(d.base_gpa, d.length);
                    space
                        .map_reserved(start, size)
                        .map_err(|error| VmError::MapRegion { field, error })?;
                    bus.add(&d.name, d.base_gpa, d.length, None)?;
                    events::mapped(config.id, &d.name, &space, start, size);
                }
                DeviceSpace::Port => {
                    // Validation keeps port devices below port 0x1_0000.
                    let first = u16::try_from(d.base_gpa.as_usize()).map_err(|_| {
                        VmError::Config(ConfigError::PortRange {
                            field,
                            base: d.base_gpa.as_usize(),
                            length: d.length,
                        })
                    })?;
                    ports.add(&d.name, first, d.length, None)?;
                }
            }
        }
        let mut placed = Vec::new();
        for (i, r) in config.kernel.memory_regions.iter().enumerate() {
            if r.map_type == MapType::Identical {
                let field = Field::at("kernel.memory_regions", i);
                let gpa = Self::place_identical(&mut space, &host, field, r)?;
                events::mapped(config.id, &field, &space, gpa, r.size);
                placed.push((i, gpa));
            }
        }
        config.place_identical(&placed);
        // Dropped (on an error below, or with the VM) after the vCPUs and before the
        // address space, like the field.
        let tag = TagClaim::<V>::claim(config.id)?;
        let root = space.root();
        let mut vcpus = Vec::with_capacity(config.cpu_num);
        for i in 0..config.cpu_num {
            let (create, setup) = vcpu_config(i);
            let err = |error| VmError::VCpu { vcpu: i, error };
            let mut arch = V::new(config.id, i, create).map_err(err)?;
            arch.set_nested_root(root).map_err(err)?;
            arch.set_entry(config.kernel.entry_point).map_err(err)?;
            arch.setup(setup).map_err(err)?;
            for p in &config.devices.passthrough_ports {
                arch.pass_through_ports(p.base, p.length).map_err(err)?;
            }
            let cpu_id = arch.cpu_id();
            if let Some(other) = vcpus.iter().position(|s: &VCpuSlot<V>| s.cpu_id == cpu_id) {
                return Err(VmError::DuplicateCpuId {
                    vcpu: i,
                    other,
                    cpu_id,
                });
            }
            vcpus.push(VCpuSlot {
                cpu_id,
                inner: Mutex::new(VCpuInner {
                    arch,
                    last_fault: None,
                    repeats: 0,
                    pending: None,
                }),
                state: VCpuStateCell::new(),
                seen_gen: AtomicU64::new(0),
                pcpu: AtomicUsize::new(usize::MAX),
                irqs: Mutex::new(Vec::new()),
            });
        }
        Ok(Arc::new(Self {
            id: config.id,
            config,
            state: AtomicU8::new(VmState::Created as u8),
            vcpus,
            tag,
            space: RwLock::new(space),
            host,
            bus: RwLock::new(bus),
            ports: RwLock::new(ports),
            passthrough: plan,
            tlb_gen: AtomicU64::new(0),
            flushes: Mutex::new(FlushQueue::default()),
            kicks: AtomicU64::new(0),
            shootdowns: AtomicU64::new(0),
            shootdown_ns: [AtomicU64::new(0), AtomicU64::new(0)],
            faults_mapped: AtomicU64::new(0),
            faults_spurious: AtomicU64::new(0),
            exits: crate::exit::ExitCounters::default(),
            fault_loop_limit: AtomicUsize::new(DEFAULT_FAULT_LOOP_LIMIT),
            firmware: Firmware::default(),
        }))
    }

    /// [`Vm::new`] with default creation and setup parameters for every vCPU.
    pub fn new_default(config: ValidConfig, grant: &HostGrant) -> VmResult<Arc<Self>>
    where
        V::CreateConfig: Default,
        V::SetupConfig: Default,
    {
        Self::new(config, grant, |_| Default::default())
    }

    /// Refuses host resources of `config` that `grant` does not cover: reserved
    /// regions (RAM at GPA = HPA), the pass-through ranges of `plan` (device
    /// memory) and the pass-through ports.
    fn check_grant(config: &VmConfig, plan: &[PassthroughRange], grant: &HostGrant) -> VmResult {
        let regions = config.kernel.memory_regions.iter().enumerate();
        let reserved = regions
            .filter(|(_, r)| r.map_type == MapType::Reserved)
            .map(|(i, r)| {
                let hpa = HostPhysAddr::from_usize(r.gpa.as_usize());
                (
                    Field::at("kernel.memory_regions", i),
                    hpa,
                    r.size,
                    GrantKind::Ram,
                )
            });
        let devices = plan.iter().map(|p| {
            let field = Field::key("devices.passthrough_devices");
            (field, p.hpa, p.size, GrantKind::Device)
        });
        let ports = config
            .devices
            .passthrough_ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let r = GrantedRange::ports(p.base, p.length);
                (
                    Field::at("devices.passthrough_ports", i),
                    r.hpa,
                    r.size,
                    r.kind,
                )
            });
        for (field, hpa, size, kind) in reserved.chain(devices).chain(ports) {
            if !grant.covers(hpa, size, kind) {
                return Err(VmError::NotGranted {
                    field,
                    hpa,
                    size,
                    kind,
                });
            }
        }
        Ok(())
    }

    fn map_config_region(
        space: &mut AddrSpace<V::Format, HalFrames>,
        field: Field,
        r: &crate::config::MemoryRegionConfig,
    ) -> VmResult {
        let map_err = |error| VmError::MapRegion { field, error };
        match r.map_type {
            MapType::Alloc => space
                .map_alloc(r.gpa, r.size, r.flags, r.populate)
                .map_err(map_err),
            MapType::Reserved | MapType::Identical => {
                let hpa = HostPhysAddr::from_usize(r.gpa.as_usize());
                // SAFETY: `Vm::new` maps only the reserved regions here (identical
                // ones are placed by `place_identical`), after `check_grant` found
                // each inside RAM the platform granted in `HostGrant::new`: RAM only
                // guests use, mapped by the HAL's phys_to_virt.
                unsafe { space.map_linear(r.gpa, hpa, r.size, r.flags) }.map_err(map_err)
            }
        }
    }

    /// Places identical region `r` where the host allocates `r.size` contiguous
    /// bytes (2 MiB-aligned) and maps it there at GPA = HPA; returns the placement.
    fn place_identical(
        space: &mut AddrSpace<V::Format, HalFrames>,
        host: &HostRanges,
        field: Field,
        r: &crate::config::MemoryRegionConfig,
    ) -> VmResult<GuestPhysAddr> {
        let count = r.size / PAGE_SIZE;
        // Zeroed by the platform's allocator, which skips frames still zero from the
        // host (a fresh identity region of GiBs is not written at all).
        let hpa = HalFrames
            .alloc_zeroed(count, IDENTICAL_ALIGN / PAGE_SIZE)
            .ok_or(VmError::NoMemory {
                field,
                size: r.size,
            })?;
        host.0.lock().push((hpa, count));
        let gpa = GuestPhysAddr::from_usize(hpa.as_usize());
        // SAFETY: `[hpa, hpa + size)` was allocated for this VM just above, is RAM
        // mapped by phys_to_virt, and is freed only after the address space is
        // dropped (field order of `Vm`).
        unsafe { space.map_linear(gpa, hpa, r.size, r.flags) }
            .map_err(|error| VmError::MapRegion { field, error })?;
        log::info!(
            "{field}: identical region of {:#x} bytes placed at {:#x} (GPA = HPA; written at {:#x})",
            r.size,
            hpa.as_usize(),
            r.gpa.as_usize()
        );
        Ok(gpa)
    }

    // ------------------------------------------------------------ identity

    /// The VM id (its VMID for TLB maintenance).
    pub fn id(&self) -> usize {
        self.id
    }

    /// The configuration as built: identical regions at their placement, the load
    /// addresses inside them moved with them.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// The vCPU the guest names `cpu_id` (its MPIDR affinity, hart id or APIC id,
    /// as CPU-on calls carry it): the one place a guest's CPU id becomes a vCPU
    /// index. Ids come from each vCPU's creation parameters (`ArchVCpu::cpu_id`);
    /// `Vm::new` refuses a VM where two vCPUs share one.
    pub fn vcpu_by_cpu_id(&self, cpu_id: u64) -> Option<usize> {
        self.vcpus.iter().position(|s| s.cpu_id == cpu_id)
    }

    /// The id the guest names vCPU `vcpu` by.
    pub fn cpu_id(&self, vcpu: usize) -> VmResult<u64> {
        Ok(self.slot(vcpu)?.cpu_id)
    }

    /// The nested page table's root (EPTP, nCR3, VTTBR_EL2, hgatp address).
    pub fn nested_root(&self) -> HostPhysAddr {
        self.space.read().root()
    }

    /// The pass-through mappings made from the configuration (merged).
    pub fn passthrough_ranges(&self) -> &[PassthroughRange] {
        &self.passthrough
    }

    /// The address-space areas, in address order.
    pub fn regions(&self) -> Vec<Area> {
        self.space.read().areas().copied().collect()
    }

    /// The translation trace of `gpa` in this VM's nested tables.
    pub fn walk(&self, gpa: GuestPhysAddr) -> Walk {
        self.space.read().walk(gpa)
    }

    /// Counters.
    pub fn stats(&self) -> VmStats {
        let space = self.space.read();
        VmStats {
            kicks: self.kicks.load(Ordering::Relaxed),
            shootdowns: self.shootdowns.load(Ordering::Relaxed),
            shootdown_last_ns: self.shootdown_ns[0].load(Ordering::Relaxed),
            shootdown_max_ns: self.shootdown_ns[1].load(Ordering::Relaxed),
            tlb_generation: self.tlb_gen.load(Ordering::SeqCst),
            faults_mapped: self.faults_mapped.load(Ordering::Relaxed),
            faults_spurious: self.faults_spurious.load(Ordering::Relaxed),
            data_frames: space.data_frames(),
            table_frames: space.table_frames(),
            deferred_frames: space.deferred_frames(),
            exits: self.exits.snapshot(),
        }
    }

    /// Sets how many times in a row the same page may fault without progress before
    /// `run_vcpu` fails with [`VmError::FaultLoop`] (default
    /// [`DEFAULT_FAULT_LOOP_LIMIT`]; at least 2).
    pub fn set_fault_loop_limit(&self, limit: usize) {
        self.fault_loop_limit.store(limit.max(2), Ordering::Relaxed);
    }

    pub(crate) fn slot(&self, vcpu: usize) -> VmResult<&VCpuSlot<V>> {
        self.vcpus.get(vcpu).ok_or(VmError::NoSuchVCpu {
            vcpu,
            count: self.vcpus.len(),
        })
    }

    // ------------------------------------------------------------ lifecycle

    /// The VM's state.
    pub fn state(&self) -> VmState {
        VmState::from_u8(self.state.load(Ordering::SeqCst))
    }

    fn change_state(&self, op: &'static str, from: &[VmState], to: VmState) -> VmResult {
        let mut now = self.state.load(Ordering::SeqCst);
        loop {
            let s = VmState::from_u8(now);
            if !from.contains(&s) {
                return Err(VmError::State { op, state: s });
            }
            match self
                .state
                .compare_exchange(now, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Ok(()),
                Err(actual) => now = actual,
            }
        }
    }

    /// Boots the VM: vCPU 0 is started at the configured entry point (unless a
    /// [`Vm::start_vcpu`] started it already). Errors when the VM is not freshly
    /// created (booting twice).
    pub fn boot(&self) -> VmResult {
        self.change_state("boot", &[VmState::Created], VmState::Running)?;
        if let Some(bsp) = self.vcpus.first() {
            // Refused only when vCPU 0 was started before boot: it stays started.
            let _ = bsp.state.step(VCpuStep::Start);
        }
        Ok(())
    }

    /// Pauses a running VM: returns once no vCPU of it is in the guest; vCPUs return
    /// [`crate::VmExit::Paused`] until [`Vm::resume`].
    pub fn pause(&self) -> VmResult {
        self.change_state("pause", &[VmState::Running], VmState::Paused)?;
        self.evict(VCpuSlot::in_guest);
        Ok(())
    }

    /// Resumes a paused VM.
    pub fn resume(&self) -> VmResult {
        self.change_state("resume", &[VmState::Paused], VmState::Running)
    }

    /// Stops the VM for good: returns once no vCPU of it is in the guest; vCPUs
    /// return [`crate::VmExit::Stopped`] and cannot run again. Errors when already
    /// stopped.
    pub fn shutdown(&self) -> VmResult {
        self.change_state(
            "shut down",
            &[VmState::Created, VmState::Running, VmState::Paused],
            VmState::Stopped,
        )?;
        self.evict(VCpuSlot::in_guest);
        Ok(())
    }

    // ------------------------------------------------------------ vCPUs

    /// Starts vCPU `vcpu` ([`VCpuState::Off`] to `Started`) at `entry` with `arg`
    /// in its start-argument register (see [`ArchVCpu::set_start_arg`]); the caller
    /// then runs it on a physical CPU. The guest's CPU-up exits do this inside
    /// `run_vcpu`; boards call it for their own start protocols (x86 `StartCpu`).
    /// A vCPU that is not off is refused ([`VmError::VCpuState`], op `"start"`).
    pub fn start_vcpu(&self, vcpu: usize, entry: GuestPhysAddr, arg: u64) -> VmResult {
        let slot = self.slot(vcpu)?;
        let refused = |state| VmError::VCpuState {
            vcpu,
            op: VCpuStep::Start.op(),
            state,
        };
        // Checked before the lock: a started vCPU's lock may be held by its run
        // (a vCPU starting itself would wait for itself). An off vCPU's lock is
        // free or held briefly (`with_vcpu`, or its own run returning after the
        // guest turned it off).
        match slot.state.get() {
            VCpuState::Off => {}
            state => return Err(refused(state)),
        }
        let mut inner = slot.inner.lock();
        match slot.state.get() {
            VCpuState::Off => {}
            state => return Err(refused(state)),
        }
        let err = |error| VmError::VCpu { vcpu, error };
        inner.arch.set_entry(entry).map_err(err)?;
        inner.arch.set_start_arg(arg).map_err(err)?;
        inner.progress();
        inner.pending = None;
        // Under the lock, from `Off`, which only this lock's holders leave.
        slot.step(vcpu, VCpuStep::Start)
    }

    /// Whether vCPU `vcpu` is started (boot for vCPU 0, CPU up for the others), that
    /// is, not [`VCpuState::Off`].
    pub fn is_vcpu_started(&self, vcpu: usize) -> bool {
        self.vcpus
            .get(vcpu)
            .is_some_and(|s| s.state.get() != VCpuState::Off)
    }

    /// Where vCPU `vcpu` is in its life.
    pub fn vcpu_state(&self, vcpu: usize) -> VmResult<VCpuState> {
        Ok(self.slot(vcpu)?.state.get())
    }

    /// Runs `f` on the architecture vCPU. Blocks while the vCPU is running (its
    /// `run_vcpu` holds it): call it from the thread that runs the vCPU, between
    /// runs.
    pub fn with_vcpu<R>(&self, vcpu: usize, f: impl FnOnce(&mut V) -> R) -> VmResult<R> {
        let slot = self.slot(vcpu)?;
        let mut inner = slot.inner.lock();
        Ok(f(&mut inner.arch))
    }

    /// Queues interrupt `vector` for vCPU `vcpu`: it is handed to
    /// `ArchVCpu::inject_interrupt` right before the vCPU's next entry, and a vCPU
    /// in the guest now is kicked so that entry comes soon. Callable from any
    /// thread, while the vCPU runs.
    pub fn inject_interrupt(&self, vcpu: usize, vector: usize) -> VmResult {
        let slot = self.slot(vcpu)?;
        slot.irqs.lock().push(vector);
        if slot.in_guest() {
            self.kick(slot);
        }
        Ok(())
    }

    /// Unbinds vCPU `vcpu` from the physical CPU it ran on (`ArchVCpu::unbind`;
    /// [`VCpuState::Bound`] to `Started`), so its next `run_vcpu` binds it again
    /// wherever it is called. Call it between runs, on the pCPU it last ran on. A
    /// vCPU that is not bound is refused ([`VmError::VCpuState`], op `"unbind"`).
    pub fn unbind_vcpu(&self, vcpu: usize) -> VmResult {
        let slot = self.slot(vcpu)?;
        let mut inner = slot.inner.lock();
        self.unbind_locked(vcpu, slot, &mut inner, VCpuStep::Unbind)
    }

    /// Unbinds the bound vCPU of `slot` (whose lock the caller holds) and takes
    /// `step` (`Unbind` or `TurnOff`).
    pub(crate) fn unbind_locked(
        &self,
        vcpu: usize,
        slot: &VCpuSlot<V>,
        inner: &mut VCpuInner<V>,
        step: VCpuStep,
    ) -> VmResult {
        match slot.state.get() {
            VCpuState::Bound => {}
            state => {
                return Err(VmError::VCpuState {
                    vcpu,
                    op: step.op(),
                    state,
                });
            }
        }
        inner
            .arch
            .unbind()
            .map_err(|error| VmError::VCpu { vcpu, error })?;
        slot.pcpu.store(usize::MAX, Ordering::SeqCst);
        slot.step(vcpu, step)
    }

    /// Completes the exit vCPU `vcpu` is stopped at with `complete`, if `pick` takes
    /// it; otherwise it stays pending and the error says there is nothing of that
    /// kind to complete.
    fn complete_pending<T>(
        &self,
        vcpu: usize,
        pick: impl Fn(Pending) -> Option<T>,
        complete: impl FnOnce(&mut VCpuInner<V>, T) -> VmResult,
    ) -> VmResult {
        let slot = self.slot(vcpu)?;
        let mut inner = slot.inner.lock();
        let picked = inner
            .pending
            .and_then(pick)
            .ok_or(VmError::NothingToComplete { vcpu })?;
        inner.pending = None;
        complete(&mut inner, picked)
    }

    /// Answers the exit vCPU `vcpu` is stopped at: a [`crate::VmExit::Hypercall`]
    /// gets `value` as its result, a [`crate::VmExit::SysReg`] read gets `value` in
    /// its register (a write ignores it); the guest then steps past the instruction.
    pub fn set_return_value(&self, vcpu: usize, value: u64) -> VmResult {
        let err = |error| VmError::VCpu { vcpu, error };
        self.complete_pending(
            vcpu,
            |p| match p {
                Pending::Access(_) => None,
                answerable => Some(answerable),
            },
            |inner, pending| match pending {
                Pending::SysReg(access) => {
                    let read = matches!(access.op, SysRegOp::Read { .. }).then_some(value);
                    inner.arch.complete_sysreg(&access, read).map_err(err)
                }
                Pending::Call(call) => inner
                    .arch
                    .complete_call(&call, FirmwareReply::Value(value))
                    .map_err(err),
                Pending::Access(_) => Err(VmError::NothingToComplete { vcpu }),
            },
        )
    }

    /// Answers the [`crate::VmExit::Hypercall`] vCPU `vcpu` is stopped at with
    /// `reply` (a refusal, say: `FirmwareReply::Error(FirmwareError::NotSupported)`,
    /// which each architecture encodes in its convention).
    pub fn reply_call(&self, vcpu: usize, reply: FirmwareReply) -> VmResult {
        self.complete_pending(
            vcpu,
            |p| match p {
                Pending::Call(call) => Some(call),
                _ => None,
            },
            |inner, call| {
                inner
                    .arch
                    .complete_call(&call, reply)
                    .map_err(|error| VmError::VCpu { vcpu, error })
            },
        )
    }

    /// Resumes vCPU `vcpu` after a [`crate::VmExit::UnservedAccess`] by skipping the
    /// faulting instruction (a load leaves its register unchanged).
    pub fn skip_access(&self, vcpu: usize) -> VmResult {
        self.complete_access(vcpu, None)
    }

    /// Completes the unserved access vCPU `vcpu` is stopped at: a load gets
    /// `read_value` (or is skipped with `None`), a store is dropped; the PC steps over
    /// the instruction. Errors when the instruction cannot be decoded (an instruction
    /// fetch cannot be skipped) or there is no unserved access.
    pub fn complete_access(&self, vcpu: usize, read_value: Option<u64>) -> VmResult {
        self.complete_pending(
            vcpu,
            |p| match p {
                Pending::Access(fault) => Some(fault),
                _ => None,
            },
            |inner, fault| {
                let acc = self.decode(vcpu, inner, &fault)?;
                inner
                    .arch
                    .complete_mmio(&acc, read_value)
                    .map_err(|error| VmError::VCpu { vcpu, error })
            },
        )
    }

    // ------------------------------------------------------------ devices

    /// Attaches a device model to the emulated device named `name` in the config
    /// (on the MMIO bus or, for a port-I/O device, the port bus).
    pub fn attach_device(&self, name: &str, device: Arc<dyn MmioDevice>) -> VmResult {
        let on_ports = self.ports.read().entries().iter().any(|e| e.name == name);
        if on_ports {
            Ok(self.ports.write().attach(name, device)?)
        } else {
            Ok(self.bus.write().attach(name, device)?)
        }
    }

    /// Adds an emulated device that is not in the config: claims its pages in the
    /// address space (nothing else may map there) and puts it on the bus.
    pub fn add_mmio_device(
        &self,
        name: &str,
        base: GuestPhysAddr,
        length: usize,
        device: Arc<dyn MmioDevice>,
    ) -> VmResult {
        let (start, size) = device_pages(base, length);
        let mut space = self.space.write();
        let mut bus = self.bus.write();
        // Check the bus first so a refused device leaves the space unchanged.
        let mut probe = bus.clone();
        probe.add(name, base, length, Some(device.clone()))?;
        space
            .map_reserved(start, size)
            .map_err(space_err("add_mmio_device"))?;
        *bus = probe;
        events::mapped(self.id, &name, &space, start, size);
        Ok(())
    }

    /// The emulated MMIO devices (name, range, whether a model is attached).
    pub fn mmio_devices(&self) -> Vec<(String, GuestPhysAddr, usize, bool)> {
        self.bus
            .read()
            .entries()
            .iter()
            .map(|e| (e.name.clone(), e.base, e.length, e.device.is_some()))
            .collect()
    }

    /// The emulated port-I/O devices (name, first port, ports, whether a model is
    /// attached).
    pub fn port_devices(&self) -> Vec<(String, u16, usize, bool)> {
        self.ports
            .read()
            .entries()
            .iter()
            .map(|e| (e.name.clone(), e.base, e.length, e.device.is_some()))
            .collect()
    }

    // ------------------------------------------------------------ memory

    /// Adds allocated RAM at run time (eager or lazy). Adding never needs a TLB
    /// invalidation.
    pub fn map_region(
        &self,
        gpa: GuestPhysAddr,
        size: usize,
        flags: MappingFlags,
        populate: Populate,
    ) -> VmResult {
        let mut space = self.space.write();
        space
            .map_alloc(gpa, size, flags, populate)
            .map_err(space_err("map_region"))?;
        events::mapped(self.id, &"RAM", &space, gpa, size);
        Ok(())
    }

    /// Maps host-physical `[hpa, hpa + size)` at `gpa` (RAM or, with `DEVICE`, MMIO).
    ///
    /// # Safety
    ///
    /// As [`AddrSpace::map_linear`]: the guest may use that host memory for as long
    /// as the mapping exists, and without `DEVICE` it must be RAM the HAL's
    /// `phys_to_virt` maps.
    pub unsafe fn map_linear_region(
        &self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        size: usize,
        flags: MappingFlags,
    ) -> VmResult {
        let mut space = self.space.write();
        // SAFETY: forwarded to the caller.
        unsafe { space.map_linear(gpa, hpa, size, flags) }
            .map_err(space_err("map_linear_region"))?;
        events::mapped(self.id, &"linear", &space, gpa, size);
        Ok(())
    }

    /// Removes `[gpa, gpa + size)` from the guest. When this returns, no vCPU of
    /// this VM can use the old translations (those in the guest were kicked and
    /// acknowledged, the others invalidate before their next entry), and the frames
    /// of allocated regions have been freed, unless an unmap or protect that began
    /// earlier on another thread is still waiting for its vCPUs: then they are freed
    /// with that one's (flush tokens complete in the order of the table changes, each
    /// after its own shootdown and every older one).
    pub fn unmap_region(&self, gpa: GuestPhysAddr, size: usize) -> VmResult {
        self.change_mappings("unmap_region", |space| {
            let was = events::enabled().then(|| events::describe(space, gpa, size));
            let flush = space.unmap(gpa, size)?;
            if let Some(was) = was {
                log::debug!(
                    "VM {}: unmapped {} (was {was})",
                    self.id,
                    events::Span(gpa, size)
                );
            }
            Ok(flush)
        })
    }

    /// Changes the flags of `[gpa, gpa + size)`; coherent like [`Vm::unmap_region`].
    pub fn protect_region(&self, gpa: GuestPhysAddr, size: usize, flags: MappingFlags) -> VmResult {
        self.change_mappings("protect_region", |space| {
            let was = events::enabled().then(|| events::describe(space, gpa, size));
            let flush = space.protect(gpa, size, flags)?;
            if let Some(was) = was {
                log::debug!(
                    "VM {}: protected {} {flags} (was {was}; now {})",
                    self.id,
                    events::Span(gpa, size),
                    events::describe(space, gpa, size)
                );
            }
            Ok(flush)
        })
    }

    /// Runs `change` (an unmap or protect) on the address space, makes every vCPU
    /// drop the translations it removed or weakened, then releases the frames it
    /// unlinked.
    ///
    /// Changes on several threads overlap (the address-space lock is not held while
    /// vCPUs are waited for), and a change's shootdown only covers its own range. So
    /// its token joins a queue in the order of the table changes, and tokens are
    /// completed strictly in that order, each only once its own shootdown and those
    /// of every older one have finished: a frame is never released before the
    /// shootdown covering the translations that reached it completed, whatever runs
    /// meanwhile (other changes, lazy faults, copies, new mappings: a range being
    /// unmapped has no area any more, and whatever maps it again gets new frames).
    fn change_mappings(
        &self,
        what: &'static str,
        change: impl FnOnce(&mut AddrSpace<V::Format, HalFrames>) -> addrspace::Result<Flush>,
    ) -> VmResult {
        let (ticket, range) = {
            let mut space = self.space.write();
            let flush = change(&mut space).map_err(space_err(what))?;
            let range = flush.range();
            (self.flushes.lock().push(flush), range)
        };
        self.shootdown(range);
        let mut space = self.space.write();
        let mut queue = self.flushes.lock();
        queue.finish(ticket);
        // Every token is this space's, so completing one cannot fail; should it,
        // the others are still completed and the error is reported.
        let mut done = Ok(());
        while let Some(flush) = queue.pop_finished() {
            if let Err(e) = space.complete_flush(flush) {
                done = Err(e);
            }
        }
        done.map_err(space_err(what))
    }

    /// Runs the copy `op` against the address space; when it finds lazy pages not
    /// populated yet, populates `[gpa, gpa + len)` for the host
    /// ([`AddrSpace::populate`]: the whole range is checked first and every frame
    /// reserved before one is mapped, whatever the guest may do there) and runs it
    /// again under the same lock. A copy touches nothing before it fails, and a
    /// failed populate changes nothing: on error the VM is as it was.
    fn with_populated<R>(
        &self,
        what: &'static str,
        gpa: GuestPhysAddr,
        len: usize,
        mut op: impl FnMut(&AddrSpace<V::Format, HalFrames>) -> addrspace::Result<R>,
    ) -> VmResult<R> {
        match op(&self.space.read()) {
            Err(addrspace::Error::NotPopulated { .. }) => {}
            r => return r.map_err(space_err(what)),
        }
        let mut space = self.space.write();
        let populated = space.populate(gpa, len).map_err(space_err(what))?;
        if events::enabled() {
            // The pages the copy touches.
            let first = gpa.as_usize() & !(PAGE_SIZE - 1);
            let end = gpa.as_usize().saturating_add(len).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            log::debug!(
                "VM {}: mapped {populated} lazy page(s) of {} for a guest-memory copy: {}",
                self.id,
                events::Span(gpa, len),
                events::describe(&space, GuestPhysAddr::from_usize(first), end - first)
            );
        }
        op(&space).map_err(space_err(what))
    }

    /// Copies guest memory at `gpa` into `buf` (across pages and regions; lazy pages
    /// are faulted in). Errors, with nothing copied, at holes, devices and reserved
    /// ranges.
    pub fn read_guest(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> VmResult {
        let len = buf.len();
        self.with_populated("read guest memory", gpa, len, |s| s.read(gpa, buf))
    }

    /// Copies `buf` into guest memory at `gpa`, whatever the guest's permissions
    /// (loading a read-only region is allowed); errors as [`Vm::read_guest`].
    pub fn write_guest(&self, gpa: GuestPhysAddr, buf: &[u8]) -> VmResult {
        self.with_populated("write guest memory", gpa, buf.len(), |s| s.write(gpa, buf))
    }

    fn check_align<T>(gpa: GuestPhysAddr) -> VmResult {
        let align = core::mem::align_of::<T>();
        if !gpa.as_usize().is_multiple_of(align) {
            return Err(VmError::Unaligned { gpa, align });
        }
        Ok(())
    }

    /// Reads a `T` (valid for every bit pattern, no padding: zerocopy's `FromBytes`
    /// and `IntoBytes`) at `gpa`, which must be aligned for `T`; read in one access
    /// when `T` is 1, 2, 4 or 8 bytes.
    pub fn read_from_guest_of<T: FromBytes + IntoBytes>(&self, gpa: GuestPhysAddr) -> VmResult<T> {
        Self::check_align::<T>(gpa)?;
        self.with_populated("read guest memory", gpa, size_of::<T>(), |s| {
            s.read_obj(gpa)
        })
    }

    /// Writes `value` (no padding, no interior mutability: zerocopy's `IntoBytes`
    /// and `Immutable`) at `gpa`, which must be aligned for `T`; written in one access
    /// when `T` is 1, 2, 4 or 8 bytes.
    pub fn write_to_guest_of<T: IntoBytes + Immutable>(
        &self,
        gpa: GuestPhysAddr,
        value: &T,
    ) -> VmResult {
        Self::check_align::<T>(gpa)?;
        self.with_populated("write guest memory", gpa, size_of::<T>(), |s| {
            s.write_obj(gpa, value)
        })
    }

    /// Copies an image into guest RAM at `gpa` (the safe replacement for the seed's
    /// `get_image_load_region`): the whole range must be RAM of this VM.
    pub fn load_image(&self, gpa: GuestPhysAddr, image: &[u8]) -> VmResult {
        self.write_guest(gpa, image)
    }

    /// Copies the kernel image to `kernel.kernel_load_addr`.
    pub fn load_kernel(&self, image: &[u8]) -> VmResult {
        self.load_image(self.config.kernel.kernel_load_addr, image)
    }

    // ------------------------------------------------------------ coherency

    fn kick(&self, slot: &VCpuSlot<V>) {
        let pcpu = slot.pcpu.load(Ordering::SeqCst);
        if pcpu != usize::MAX {
            self.kicks.fetch_add(1, Ordering::Relaxed);
            crate_interface::call_interface!(crate::hal::VmHal::kick_pcpu(pcpu));
        }
    }

    /// Kicks every vCPU for which `busy` holds, then waits until it holds for none,
    /// kicking the stragglers again every millisecond (a kick may race with an
    /// entry). All kicks go out before the first wait, so the vCPUs acknowledge in
    /// parallel.
    fn evict(&self, busy: impl Fn(&VCpuSlot<V>) -> bool) {
        let mut pending: Vec<&VCpuSlot<V>> = self.vcpus.iter().filter(|s| busy(s)).collect();
        if pending.is_empty() {
            return;
        }
        for slot in &pending {
            self.kick(slot);
        }
        let start = crate_interface::call_interface!(crate::hal::VmHal::now_ns());
        let mut last = start;
        let mut warned = false;
        loop {
            pending.retain(|s| busy(s));
            if pending.is_empty() {
                return;
            }
            core::hint::spin_loop();
            let now = crate_interface::call_interface!(crate::hal::VmHal::now_ns());
            if now.saturating_sub(last) > REKICK_NS {
                for slot in &pending {
                    self.kick(slot);
                }
                last = now;
            }
            if !warned && now.saturating_sub(start) > WARN_NS {
                warned = true;
                log::warn!(
                    "VM {}: {} vCPU(s) (first on pCPU {}) not out of the guest {} ms after a \
                     kick; still waiting (check kick_pcpu and the arch exit path)",
                    self.id,
                    pending.len(),
                    pending[0].pcpu.load(Ordering::Relaxed),
                    WARN_NS / 1_000_000
                );
            }
        }
    }

    /// Makes every vCPU of this VM drop translations of `range`: bumps the TLB
    /// generation, then either the platform's broadcast invalidation or a kick of
    /// each vCPU in the guest that has not seen the new generation, waiting for its
    /// acknowledgement (it saw the generation after invalidating, or left the guest
    /// and will invalidate before its next entry).
    fn shootdown(&self, range: Option<GpaRange>) {
        let Some(range) = range else {
            return;
        };
        self.shootdowns.fetch_add(1, Ordering::Relaxed);
        let start = crate_interface::call_interface!(crate::hal::VmHal::now_ns());
        let new = self.tlb_gen.fetch_add(1, Ordering::SeqCst) + 1;
        if !crate_interface::call_interface!(crate::hal::VmHal::broadcast_guest_tlb_invalidate(
            self.id, range
        )) {
            self.evict(|s| s.in_guest() && s.seen_gen.load(Ordering::SeqCst) < new);
        }
        let took =
            crate_interface::call_interface!(crate::hal::VmHal::now_ns()).saturating_sub(start);
        self.shootdown_ns[0].store(took, Ordering::Relaxed);
        self.shootdown_ns[1].fetch_max(took, Ordering::Relaxed);
    }
}

impl<V: ArchVCpu> fmt::Display for Vm<V> {
    /// The region dump: state, vCPUs, areas with flags and backing, devices.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VM {} \"{}\" ({:?}), {} vCPUs, entry {:#x}",
            self.id,
            self.config.name,
            self.state(),
            self.vcpus.len(),
            self.config.kernel.entry_point
        )?;
        for (i, s) in self.vcpus.iter().enumerate() {
            writeln!(f, "  vCPU {i}: {}", s.state.get())?;
        }
        write!(f, "{}", *self.space.read())?;
        for e in self.bus.read().entries() {
            writeln!(f, "  mmio {e:?}")?;
        }
        for e in self.ports.read().entries() {
            writeln!(f, "  ports {e:?}")?;
        }
        Ok(())
    }
}

impl<V: ArchVCpu> fmt::Debug for Vm<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("id", &self.id)
            .field("name", &self.config.name)
            .field("state", &self.state())
            .field("vcpus", &self.vcpus.len())
            .finish()
    }
}
