//! Shared pieces of the hal-mock integration tests: VM configs and VMs of mock vCPUs.
//! (The test device, its registers and the boards' guest layouts come from
//! `platforms`, as the boards use them.)

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use addrspace::GuestPhysAddr;
use addrspace::NestedFormat;
pub use hal_mock::try_mock_vm;
use hal_mock::{GuestLog, MockFaults, MockVm, Program};
use vm_core::{VmConfig, VmConfigBuilder};

pub fn gpa(v: u64) -> GuestPhysAddr {
    vcpu_api::gpa_of(v)
}

/// VM `id` named `name` with `cpus` vCPUs entered at `ram`, where `size` bytes of
/// eagerly allocated RWX RAM lie; add to it and build.
/// ([`hal_mock::ram_config`] with the tests' `u64` addresses.)
pub fn ram_config(id: usize, name: &str, cpus: usize, ram: u64, size: usize) -> VmConfigBuilder {
    hal_mock::ram_config(id, name, cpus, gpa(ram), size)
}

/// [`try_mock_vm`] without injected faults; panics on an error.
pub fn mock_vm<F: NestedFormat>(
    config: VmConfig,
    program: Program,
    log: &Arc<GuestLog>,
) -> Arc<MockVm<F>> {
    try_mock_vm(config, program, log, MockFaults::default())
        .unwrap_or_else(|e| panic!("Vm::new: {e}"))
}
