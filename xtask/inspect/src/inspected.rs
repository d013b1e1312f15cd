//! [`Inspected`]: a config's VM built on hal-mock in one of the formats, and the
//! diagnostics asked of it.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use addrspace::{
    AccessKind, ArmStage2Ipa40, ArmStage2Ipa48, Ept, GuestPhysAddr, NestedFormat, Npt, Sv39x4,
    Sv48x4, Walk,
};
use hal_mock::{Entered, GuestLog, Machine, MockFaults, MockVCpuConfig, MockVm, Program};
use vm_core::diag::{FaultExplanation, Finding, GuestMap, ImageKind};
use vm_core::{GrantKind, GrantedRange, HostGrant, HostPhysAddr, MapType, Vm, VmConfig, VmError};

use crate::Format;
use crate::machine::{self, Plan};
use crate::unresolved::{Unresolved, take_unresolved};

/// Why a config could not be inspected: vm-core refused to build the VM (the
/// error names the field).
#[derive(Debug)]
pub struct Error(pub VmError);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "building the VM: {}", self.0)
    }
}

/// A VM of mock vCPUs in format `F` on its own simulated host, entered on the
/// thread that built it (it must be used and dropped there).
pub struct Built<F: NestedFormat> {
    // Field order is drop order: the VM gives its frames back to the machine the
    // thread is still in.
    /// The VM.
    pub vm: Arc<MockVm<F>>,
    _entered: Entered,
    /// The simulated host.
    pub machine: Arc<Machine>,
    /// How the host was laid out.
    pub plan: Plan,
    _thread_bound: PhantomData<*const ()>,
}

/// Builds `config`'s VM in format `F` on a machine planned for it, with `program`
/// as the guest code (an empty one for inspection). The calling thread enters the
/// machine as physical CPU 0 until the result is dropped.
pub fn build<F: NestedFormat>(config: VmConfig, program: Program) -> Result<Built<F>, Error> {
    build_faulty(config, program, MockFaults::default())
}

/// [`build`] with vCPUs that misbehave as `faults` says (e.g. walk the wrong table,
/// which makes a fault loop).
pub fn build_faulty<F: NestedFormat>(
    config: VmConfig,
    program: Program,
    faults: MockFaults,
) -> Result<Built<F>, Error> {
    let plan = machine::plan(&config);
    let machine = machine::build(&plan);
    let entered = machine.enter(0);
    let mut vcpu = MockVCpuConfig::new(Arc::new(program), Arc::new(GuestLog::default()));
    vcpu.faults = faults;
    let devices = hal_mock::grant_devices(&config);
    let reserved = config
        .kernel
        .memory_regions
        .iter()
        .filter(|r| r.map_type == MapType::Reserved)
        .map(|r| {
            let hpa = HostPhysAddr::from_usize(r.gpa.as_usize());
            GrantedRange::new(hpa, r.size, GrantKind::Ram)
        });
    let ranges: Vec<GrantedRange> = devices.ranges().iter().copied().chain(reserved).collect();
    // SAFETY: inspection builds the VM to show its tables (the diagnostics read
    // tables, never guest memory) and the machine is planned around every host
    // range the config names (`machine::plan`), so nothing the mock uses is handed
    // out; a caller that runs a program in the VM gets the mock's view of those
    // host addresses, as before grants existed.
    let grant = unsafe { HostGrant::new(ranges) };
    // A config whose RAM is still in the guest's tree is built without RAM: its
    // devices are shown, and the RAM is named as unresolved (`crate::unresolved`).
    let valid = config
        .into_valid_without_guest_ram()
        .map_err(|e| Error(e.into()))?;
    let vm = Vm::new(valid, &grant, |_| (vcpu.clone(), ())).map_err(Error)?;
    Ok(Built {
        vm,
        _entered: entered,
        machine,
        plan,
        _thread_bound: PhantomData,
    })
}

/// The diagnostics of a built VM, whatever its format.
trait View {
    fn guest_map(&self, vmid: Option<u16>) -> GuestMap;
    fn audit(&self, lengths: &[(ImageKind, usize)]) -> Vec<Finding>;
    fn walk(&self, gpa: GuestPhysAddr) -> Walk;
    fn explain_fault(&self, gpa: GuestPhysAddr, access: AccessKind) -> FaultExplanation;
    fn plan(&self) -> &Plan;
    fn config(&self) -> &VmConfig;
}

impl<F: NestedFormat> View for Built<F> {
    fn guest_map(&self, vmid: Option<u16>) -> GuestMap {
        self.vm.guest_map(vmid)
    }
    fn audit(&self, lengths: &[(ImageKind, usize)]) -> Vec<Finding> {
        self.vm.audit(lengths)
    }
    fn walk(&self, gpa: GuestPhysAddr) -> Walk {
        self.vm.walk(gpa)
    }
    fn explain_fault(&self, gpa: GuestPhysAddr, access: AccessKind) -> FaultExplanation {
        self.vm.explain_fault(gpa, access)
    }
    fn plan(&self) -> &Plan {
        &self.plan
    }
    fn config(&self) -> &VmConfig {
        self.vm.config()
    }
}

/// A config's VM built for inspection in one of the formats.
pub struct Inspected {
    view: Box<dyn View>,
    format: Format,
    vm_id: usize,
    unresolved: Vec<Unresolved>,
}

/// Builds `config`'s VM in `format` on hal-mock for inspection (see [`build`]).
/// What only a device tree could place (see [`crate::resolve`], which reads the
/// trees given first) is left out of the VM and named in
/// [`Inspected::unresolved`].
pub fn inspect(mut config: VmConfig, format: Format) -> Result<Inspected, Error> {
    fn boxed<F: NestedFormat>(config: VmConfig) -> Result<Box<dyn View>, Error> {
        Ok(Box::new(build::<F>(config, Program::new())?))
    }
    let unresolved = take_unresolved(&mut config);
    let vm_id = config.id;
    let view = match format {
        Format::Ept => boxed::<Ept>(config),
        Format::Npt => boxed::<Npt>(config),
        Format::Arm40 => boxed::<ArmStage2Ipa40>(config),
        Format::Arm48 => boxed::<ArmStage2Ipa48>(config),
        Format::Sv39 => boxed::<Sv39x4>(config),
        Format::Sv48 => boxed::<Sv48x4>(config),
    }?;
    Ok(Inspected {
        view,
        format,
        vm_id,
        unresolved,
    })
}

impl Inspected {
    /// The format it was built in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The guest-physical map, registers for `vmid` (the VM id when `None`, if it
    /// fits a 16-bit VMID; else no VMID, which the map says).
    pub fn guest_map(&self, vmid: Option<u16>) -> GuestMap {
        self.view
            .guest_map(vmid.or_else(|| u16::try_from(self.vm_id).ok()))
    }

    /// The audit, with the image lengths that are known.
    pub fn audit(&self, lengths: &[(ImageKind, usize)]) -> Vec<Finding> {
        self.view.audit(lengths)
    }

    /// The walk of `gpa`.
    pub fn walk(&self, gpa: GuestPhysAddr) -> Walk {
        self.view.walk(gpa)
    }

    /// What the fault path would do with `access` at `gpa`.
    pub fn explain_fault(&self, gpa: GuestPhysAddr, access: AccessKind) -> FaultExplanation {
        self.view.explain_fault(gpa, access)
    }

    /// What the config names but only a device tree can place, left out of the VM
    /// (none when every reference was resolved).
    pub fn unresolved(&self) -> &[Unresolved] {
        &self.unresolved
    }

    /// The simulated host's layout.
    pub fn plan(&self) -> &Plan {
        self.view.plan()
    }

    /// The configuration as built (identity-mapped regions where the host placed
    /// them, the load addresses inside them moved with them).
    pub fn config(&self) -> &VmConfig {
        self.view.config()
    }
}
