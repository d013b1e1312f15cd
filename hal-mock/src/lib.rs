//! The host HAL: simulated physical memory and a software vCPU that walks the real
//! nested page tables, so `vm-core` runs whole VMs on the host, on threads.
//!
//! - [`Machine`]: one simulated host per test (physical memory at its own HPA range,
//!   frame allocation, `alloc_memory_region_at` that succeeds or fails as the range
//!   is free or taken, failure injection, physical CPUs with kick flags). Threads
//!   join a machine with [`Machine::enter`]; there is no global state and no test
//!   mutex, so tests run in parallel.
//! - [`MockHal`]: the `vm_core::VmHal` implementation (linked by using this crate).
//! - [`MockVCpu`]: an `ArchVCpu` for every nested format, running a scripted guest
//!   ([`Program`] of [`Op`]s) by walking the nested tables in simulated memory, with
//!   a per-vCPU TLB.
//! - [`run_vm`]: one thread per vCPU until the VM ends.
//! - [`ram_config`] and [`try_mock_vm`]: a config with RAM and a VM of mock vCPUs
//!   from a config, as the tests build them.
//! - [`probe_vm`] and [`wait_until`]: the coherency scenario (vCPUs spinning on one
//!   page in the guest) that the tests and the benchmark share.
//! - [`stress`]: the soak of `cargo xtask stress` (vCPUs and host threads racing on
//!   one VM's memory, with a checker).
//! - [`configs`]: the board configs of `configs/`, embedded through the same build
//!   script code generator a board uses.

#![deny(unsafe_op_in_unsafe_fn)]

mod hal;
mod machine;
mod program;
mod runner;
mod scenario;
pub mod stress;
mod vcpu;

/// The board configs of `configs/`, turned into Rust by this crate's build script
/// with `VmConfig::to_rust_source` (what a board's build script does), and their
/// TOML text.
pub mod configs {
    include!(concat!(env!("OUT_DIR"), "/configs.rs"));
}

pub use hal::{MockHal, grant_devices};
pub use machine::{
    Entered, InvalidationFault, LATE_BY, MAX_PCPUS, MAX_VMIDS, Machine, POISON, Pcpu,
    SPIN_BUDGET_NS, VmidRelease,
};
pub use program::{GuestLog, OP_SIZE, Op, Probe, Program};
pub use runner::{Action, OnExit, RunReport, run_vm};
pub use scenario::{PROBE_CODE, PROBE_DATA, probe_vm, ram_config, try_mock_vm, wait_until};
pub use vcpu::{MockFaults, MockVCpu, MockVCpuConfig, REGS, TlbCache, reply_word};

/// A VM of mock vCPUs whose nested tables have format `F`.
pub type MockVm<F> = vm_core::Vm<MockVCpu<F>>;
