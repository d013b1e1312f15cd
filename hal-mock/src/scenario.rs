//! Scenarios the tests and the benchmark share: [`ram_config`], a config with RAM to
//! add to, and [`try_mock_vm`], a VM of mock vCPUs built from a config; [`probe_vm`], a VM whose vCPUs all spin in the guest reading
//! one data page (a [`Probe`]); and [`wait_until`], the bounded wait a host thread
//! uses meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use addrspace::{GuestPhysAddr, NestedFormat};
use vm_core::{MapType, MappingFlags, Populate, Vm, VmConfig, VmConfigBuilder, VmResult};

use crate::program::{GuestLog, Op, Probe, Program};
use crate::vcpu::{MockFaults, MockVCpuConfig};
use crate::{MockVm, grant_devices};

/// The config of VM `id` named `name` with `cpus` vCPUs entered at `ram`, where
/// `size` bytes of eagerly allocated RWX RAM lie; add to it and build.
pub fn ram_config(
    id: usize,
    name: &str,
    cpus: usize,
    ram: GuestPhysAddr,
    size: usize,
) -> VmConfigBuilder {
    VmConfigBuilder::new(id, name, cpus)
        .entry_point(ram)
        .memory_region(
            ram,
            size,
            MappingFlags::RWX,
            MapType::Alloc,
            Populate::Eager,
        )
}

/// A VM of mock vCPUs built from `config`, each running `program` with `faults`
/// injected and logging into `log`. The config's pass-through devices are granted
/// ([`grant_devices`]: the mock never reaches device memory); reserved RAM is not,
/// so a config with it is refused (`VmError::NotGranted`).
pub fn try_mock_vm<F: NestedFormat>(
    config: VmConfig,
    program: Program,
    log: &Arc<GuestLog>,
    faults: MockFaults,
) -> VmResult<Arc<MockVm<F>>> {
    let vcpu = MockVCpuConfig {
        faults,
        ..MockVCpuConfig::new(Arc::new(program), log.clone())
    };
    let grant = grant_devices(&config);
    Vm::new(config.into_valid()?, &grant, |_| (vcpu.clone(), ()))
}

/// Where a [`probe_vm`] guest's code lies: 1 MiB of eagerly mapped RWX RAM (vCPU 0
/// starts here, the others one page in).
pub const PROBE_CODE: GuestPhysAddr = GuestPhysAddr::from_usize(0x1000_0000);

/// The page a [`probe_vm`] guest reads: 4 KiB of eagerly mapped RW RAM.
pub const PROBE_DATA: GuestPhysAddr = GuestPhysAddr::from_usize(0x2000_0000);

/// VM `id` with `cpus` mock vCPUs (each with `faults` injected): vCPU 0 starts the
/// others, then every vCPU runs the read loop of the returned probe of [`PROBE_DATA`]
/// until the probe's `stop` is set, and stops itself (CPU down). Only the probe page
/// and the code are mapped.
pub fn probe_vm<F: NestedFormat>(
    id: usize,
    cpus: usize,
    faults: MockFaults,
) -> VmResult<(Arc<MockVm<F>>, Arc<Probe>)> {
    let probe = Arc::new(Probe::new(PROBE_DATA));
    let secondary = PROBE_CODE + 0x1000;
    let mut primary: Vec<Op> = (1..cpus as u64)
        .map(|target| Op::CpuUp {
            target,
            entry: secondary,
            arg: 0,
        })
        .collect();
    primary.extend([Op::Probe(probe.clone()), Op::CpuDown]);
    let program = Program::new()
        .at(PROBE_CODE, primary)
        .at(secondary, vec![Op::Probe(probe.clone()), Op::CpuDown]);
    let config = ram_config(id, "probe", cpus, PROBE_CODE, 0x10_0000)
        .memory_region(
            PROBE_DATA,
            0x1000,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Eager,
        )
        .build()?;
    let vm = try_mock_vm(config, program, &Arc::new(GuestLog::default()), faults)?;
    Ok((vm, probe))
}

/// Polls `cond` every millisecond until it holds (`true`) or `limit` has passed
/// (`false`, after saying on stderr that it gave up waiting for `what`).
pub fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            eprintln!("gave up waiting for {what}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}
