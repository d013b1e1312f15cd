//! Whole VMs on hal-mock for the fuzz targets: one simulated machine per process
//! (kept across inputs; each input must give back every frame it took), a VM of mock
//! vCPUs per nested format, and the checks of a created VM against its config.

use std::sync::{Arc, OnceLock};

use addrspace::{ArmStage2Ipa40, ArmStage2Ipa48, Ept, NestedFormat, Npt, Sv39x4, Sv48x4};
use hal_mock::{GuestLog, Machine, MockFaults, MockVm, Program};
use vm_core::{GuestPhysAddr, MapType, VmConfig, VmError};

/// The machine's physical memory: 32 MiB at 2 GiB (where the boards' RAM lies, so
/// identical regions there can get their host range).
pub const MACHINE_BASE: usize = 0x8000_0000;
/// Its size.
pub const MACHINE_SIZE: usize = 32 << 20;

/// The process's machine, entered by the calling thread as pCPU 0.
pub fn machine() -> Arc<Machine> {
    static M: OnceLock<Arc<Machine>> = OnceLock::new();
    thread_local!(static ENTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    let m = M
        .get_or_init(|| Machine::new(MACHINE_BASE, MACHINE_SIZE))
        .clone();
    if !ENTERED.replace(true) {
        // The thread stays in the machine for the life of the process.
        std::mem::forget(m.enter(0));
    }
    m
}

/// A VM of mock vCPUs running `program`, nested format `F`.
pub fn mock_vm<F: NestedFormat>(
    config: VmConfig,
    program: Program,
) -> Result<Arc<MockVm<F>>, VmError> {
    // Pass-through device ranges are granted (the mock never reaches device
    // memory); reserved RAM is not, so configs with it are refused (NotGranted).
    let log = Arc::new(GuestLog::default());
    hal_mock::try_mock_vm(config, program, &log, MockFaults::default())
}

/// What a created VM must show of its config: every RAM region readable and writable
/// at its first and last byte through the guest-memory copy API (lazy ones populate),
/// device ranges not copyable.
pub fn check_vm<F: NestedFormat>(vm: &MockVm<F>, config: &VmConfig) {
    for (i, r) in config.kernel.memory_regions.iter().enumerate() {
        if r.map_type == MapType::Reserved || r.size == 0 {
            continue;
        }
        for at in [r.gpa.as_usize(), r.gpa.as_usize() + r.size - 1] {
            let gpa = GuestPhysAddr::from_usize(at);
            let mut b = [0u8];
            // Copies may fail for want of frames (lazy RAM beyond the machine's
            // memory): then with NoMemory-like errors only, never a panic.
            match vm
                .write_guest(gpa, &[0xa5])
                .and_then(|()| vm.read_guest(gpa, &mut b))
            {
                Ok(()) => assert_eq!(b[0], 0xa5, "region {i} at {gpa:#x} lost a write"),
                Err(e) => assert!(
                    !matches!(e, VmError::Config(_)),
                    "region {i} at {gpa:#x}: {e}"
                ),
            }
        }
    }
    for d in &config.devices.passthrough_devices {
        let mut b = [0u8];
        assert!(
            vm.read_guest(d.base_gpa, &mut b).is_err(),
            "pass-through {} at {:#x} copyable as RAM",
            d.name,
            d.base_gpa
        );
    }
}

/// Creates the VM of `config` on every nested format (with `fail_after` frames at
/// most when given), checks it, drops it, and checks that the machine has all its
/// frames back. Returns the result of the first format, for the caller's model.
pub fn each_format(config: &VmConfig, fail_after: Option<usize>) -> Result<(), VmError> {
    fn one<F: NestedFormat>(
        m: &Machine,
        config: &VmConfig,
        fail_after: Option<usize>,
    ) -> Result<(), VmError> {
        let before = m.frames_in_use();
        if let Some(n) = fail_after {
            m.fail_frames_after(n);
        }
        let made = mock_vm::<F>(config.clone(), Program::new());
        m.never_fail();
        let result = match made {
            Ok(vm) => {
                check_vm(&vm, config);
                drop(vm);
                Ok(())
            }
            Err(e) => {
                let _ = e.to_string();
                Err(e)
            }
        };
        assert_eq!(
            m.frames_in_use(),
            before,
            "{}: frames leaked after {result:?}",
            core::any::type_name::<F>()
        );
        result
    }
    let m = machine();
    let first = one::<Ept>(&m, config, fail_after);
    one::<Npt>(&m, config, fail_after).ok();
    one::<ArmStage2Ipa40>(&m, config, fail_after).ok();
    one::<ArmStage2Ipa48>(&m, config, fail_after).ok();
    one::<Sv39x4>(&m, config, fail_after).ok();
    one::<Sv48x4>(&m, config, fail_after).ok();
    first
}
