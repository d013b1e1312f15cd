//! The test runs: one VM per G-stage mode (Sv39x4, then Sv48x4), each built from the
//! embedded config through vm-core, with the test guest loaded and the test device
//! attached; vCPU 0 runs on the boot hart and vCPU 1, once the guest starts it with
//! SBI HSM, on the second hart. Every hypercall of the test protocol goes to one
//! [`Monitor`] per VM, which prints each check.

use alloc::sync::Arc;

use hal_riscv64::{GStage, HartInfo, Riscv64CreateConfig, Riscv64SetupConfig, Riscv64VCpu};
use platforms::host::{self, ConsoleRequests, SharedMonitor};
use platforms::protocol::{Call, GuestLayout, RISCV_EXTENSION_ID};
use vm_core::{
    FirmwareError, FirmwareReply, HostGrant, Hypercall, UnservedAccess, VCpuState, Vm, VmError,
    VmExit, VmState,
};

use crate::console::{self, println};
use crate::{GUEST_IMAGE, hal, harts};

/// Where the test guest expects things; the embedded VM config is checked against it.
const LAYOUT: GuestLayout = platforms::layouts::QEMU_VIRT_RISCV64;

/// Both G-stage modes, one VM each. Returns (passed, failed) over both.
pub(crate) fn run_all(info: &HartInfo, second_hart: Option<u64>, host_dtb: &[u8]) -> (u32, u32) {
    let mut total = (0, 0);
    let mut add = |(p, f): (u32, u32)| {
        total.0 += p;
        total.1 += f;
    };
    if info.sv39x4 {
        add(run_vm::<addrspace::Sv39x4>(
            "sv39x4",
            1,
            second_hart,
            host_dtb,
        ));
    } else {
        println!("[sv39x4] FAIL the hart does not implement Sv39x4");
        add((0, 1));
    }
    if info.sv48x4 {
        add(run_vm::<addrspace::Sv48x4>(
            "sv48x4",
            2,
            second_hart,
            host_dtb,
        ));
    } else {
        println!("[sv48x4] FAIL the hart does not implement Sv48x4");
        add((0, 1));
    }
    if info.sv39x4 {
        add(run_fault_loop_vm::<addrspace::Sv39x4>("loop", 3, host_dtb));
    }
    add(platforms::host::run_frame_zeroing(
        "zero",
        &crate::hal::FRAMES,
        console::print_str,
    ));
    total
}

/// The fault-loop run: the test VM with G-stage format `F` and VM id `vm_id`, vCPU
/// 0 pointed at `host::EMPTY_ROOT` (`host::check_fault_loop`); returns (passed, failed).
fn run_fault_loop_vm<F: GStage>(label: &'static str, vm_id: usize, host_dtb: &[u8]) -> (u32, u32) {
    println!(
        "[{label}] ---- test VM {vm_id}: {} G-stage, vCPU 0 on an empty table ----",
        F::NAME
    );
    let monitor = SharedMonitor::new(label, console::print_str);
    let free_before = hal::FRAMES.free_frames();
    let built = crate::board_config(host_dtb).and_then(|mut config| {
        config.id = vm_id;
        build_vm::<F>(config, Riscv64SetupConfig::default(), &monitor)
            .map_err(|e| alloc::format!("{e}"))
    });
    let vm = match built {
        Ok((vm, _device)) if vm.boot().is_ok() => vm,
        Ok(_) => {
            monitor.host_check("VM booted", false);
            return monitor.finish_host();
        }
        Err(e) => {
            println!("[{label}] creating the VM: {e}");
            monitor.host_check("VM created", false);
            return monitor.finish_host();
        }
    };
    // Translation is off in HS-mode: the static's address is its physical address.
    let root = addrspace::HostPhysAddr::from_usize(host::EMPTY_ROOT.addr());
    hal::set_current(Some(vm.id()), Some(0));
    host::check_fault_loop(&*vm, root, &monitor, || vm.run_vcpu(0));
    hal::set_current(None, None);
    drop(vm);
    monitor.host_check(
        "every frame of the VM freed after drop",
        hal::FRAMES.free_frames() == free_before,
    );
    monitor.finish_host()
}

/// What the hypervisor's console asked for, across the harts.
static CONSOLE_REQUESTS: ConsoleRequests = ConsoleRequests::new();

/// One VM with G-stage format `F` and VM id (and VMID) `vm_id`, run to its end.
fn run_vm<F: GStage>(
    label: &'static str,
    vm_id: usize,
    second_hart: Option<u64>,
    host_dtb: &[u8],
) -> (u32, u32) {
    println!("[{label}] ---- test VM {vm_id}: {} G-stage ----", F::NAME);
    let monitor = Arc::new(SharedMonitor::new(label, console::print_str));

    let mut config = match crate::board_config(host_dtb) {
        Ok(c) => c,
        Err(e) => {
            println!("[{label}] {e}");
            monitor.host_check("embedded VM config is valid", false);
            return monitor.finish();
        }
    };
    config.id = vm_id;

    let free_before = hal::FRAMES.free_frames();
    let setup = Riscv64SetupConfig {
        cross_check_mmio_decode: true,
        ..Riscv64SetupConfig::default()
    };
    let built = build_vm::<F>(config, setup, &monitor);
    let (vm, device) = match built {
        Ok(built) => built,
        Err(e) => {
            println!("[{label}] creating the VM: {e}");
            monitor.host_check("VM created", false);
            return monitor.finish();
        }
    };
    println!("{vm}");
    vm.attach_console(Arc::new(console::GuestUart));
    vm.offer_hypercalls(&[RISCV_EXTENSION_ID]);

    // hgatp as the vCPUs will run with it: MODE, VMID, 16 KiB-aligned root.
    let root = vm.nested_root();
    let hgatp = vm.with_vcpu(0, |v| v.hgatp()).unwrap_or(0);
    let vmid = hal_riscv64::vmid_for(vm_id).unwrap_or(0);
    println!(
        "[{label}] hgatp {hgatp:#x}: MODE {}, VMID {}, root {root:?}",
        hal_riscv64::regs::hgatp::mode(hgatp),
        hal_riscv64::regs::hgatp::vmid(hgatp)
    );
    monitor.host_check(
        "hgatp names the format, the VMID and the 16 KiB-aligned root",
        hgatp == F::hgatp(root, vmid)
            && hal_riscv64::regs::hgatp::mode(hgatp) == F::MODE
            && root.as_usize().is_multiple_of(0x4000),
    );

    if let Err(e) = vm.boot() {
        println!("[{label}] boot: {e}");
        monitor.host_check("VM booted", false);
        return monitor.finish();
    }
    let started = crate::boot::now_ns();
    let hooks = Hooks {
        label,
        check: {
            let m = monitor.clone();
            Arc::new(move |name: &str, ok: bool| m.host_check(name, ok))
        },
        hypercall: {
            let m = monitor.clone();
            Arc::new(move |vm: &Vm<Riscv64VCpu<F>>, vcpu, h| hypercall(vm, vcpu, h, &m, label))
        },
        unserved: {
            let m = monitor.clone();
            Arc::new(move |vm: &Vm<Riscv64VCpu<F>>, vcpu, a: &UnservedAccess| {
                host::settle_unserved(vm, vcpu, a, &m)
            })
        },
        console_keys: true,
    };
    vcpu_loop(&vm, 0, &hooks, second_hart);
    // vCPU 1 stopped itself before vCPU 0 powered off; if not, shutdown has kicked it.
    let second_done = harts::wait_idle(5_000_000_000);
    monitor.host_check("second hart finished its vCPU", second_done);
    println!(
        "[{label}] guest ran {} ms",
        (crate::boot::now_ns() - started) / 1_000_000
    );

    // The hypervisor's side of the checks.
    let mut decoded = hal_riscv64::DecodeStats::default();
    for i in 0..vm.vcpu_count() {
        if let Ok(s) = vm.with_vcpu(i, |v| v.decode_stats()) {
            decoded.from_htinst += s.from_htinst;
            decoded.fetched += s.fetched;
            decoded.fetch_deferred += s.fetch_deferred;
            decoded.cross_checked += s.cross_checked;
            decoded.mismatches += s.mismatches;
        }
    }
    // Every guest-page fault (every emulated access, the device's count, among
    // them) found its instruction once at the exit: in htinst, fetched with HLVX, or
    // left to be read through guest memory; with htinst and HLVX both available they
    // must agree.
    println!(
        "[{label}] MMIO decode: {} from htinst ({} cross-checked with the instruction fetched by HLVX, {} disagreed), {} fetched, {} read through guest memory",
        decoded.from_htinst,
        decoded.cross_checked,
        decoded.mismatches,
        decoded.fetched,
        decoded.fetch_deferred
    );
    monitor.host_check(
        "every MMIO access decoded, htinst never contradicted",
        decoded.from_htinst + decoded.fetched + decoded.fetch_deferred >= device.accesses()
            && decoded.mismatches == 0,
    );
    let stats = vm.stats();
    println!(
        "[{label}] TLB: {} shootdowns, {} kicks; the device saw {} accesses",
        stats.shootdowns,
        stats.kicks,
        device.accesses()
    );
    monitor.host_check("unmap shot down the guest TLB", stats.shootdowns > 0);
    // vCPU 1's job dropped its reference when it ended: this is the last one.
    drop(vm);
    let free_after = hal::FRAMES.free_frames();
    println!("[{label}] VM dropped: {free_after} frames free, {free_before} before it was built");
    monitor.host_check(
        "every frame of the VM freed after drop",
        free_after == free_before,
    );
    monitor.finish()
}

/// A test VM and its test device.
type TestVm<F> = (Arc<Vm<Riscv64VCpu<F>>>, Arc<host::TestDevice>);

/// The test VM of `config` (`host::build_test_vm`), every vCPU set up with `setup`.
fn build_vm<F: GStage>(
    config: vm_core::VmConfig,
    setup: Riscv64SetupConfig,
    monitor: &SharedMonitor,
) -> Result<TestVm<F>, host::BuildError> {
    // The guest's hart ids are the layout's, not the vCPU indexes.
    host::build_test_vm::<Riscv64VCpu<F>>(
        config,
        &LAYOUT,
        GUEST_IMAGE,
        &HostGrant::none(),
        |i| {
            let hart_id = LAYOUT.cpu_ids.get(i).copied();
            (Riscv64CreateConfig { hart_id }, setup)
        },
        monitor,
    )
}

/// Records a check of the hypervisor's side: its name, whether it passed.
pub(crate) type CheckHook = Arc<dyn Fn(&str, bool) + Send + Sync>;
/// Answers a hypercall of the board's on vCPU `usize`.
pub(crate) type HypercallHook<F> = Arc<dyn Fn(&Vm<Riscv64VCpu<F>>, usize, Hypercall) + Send + Sync>;
/// Settles an access vCPU `usize` made that vm-core could not serve; `false` ends the
/// run.
pub(crate) type UnservedHook<F> =
    Arc<dyn Fn(&Vm<Riscv64VCpu<F>>, usize, &UnservedAccess) -> bool + Send + Sync>;

/// What a run (the test guest's, Linux's) does with the exits vm-core leaves to the
/// board, and where its checks go; the vCPU loop ([`vcpu_loop`]) is the same for all.
pub(crate) struct Hooks<F: GStage> {
    /// The run's label in messages.
    pub(crate) label: &'static str,
    /// Where the checks go.
    pub(crate) check: CheckHook,
    /// The board's hypercalls (vm-core answers the standard SBI).
    pub(crate) hypercall: HypercallHook<F>,
    /// Accesses vm-core could not serve.
    pub(crate) unserved: UnservedHook<F>,
    /// Whether keys typed on the hypervisor's console ask for diagnostics of this
    /// run's VM (not Linux's: the UART is its console).
    pub(crate) console_keys: bool,
}

impl<F: GStage> Clone for Hooks<F> {
    fn clone(&self) -> Self {
        Self {
            label: self.label,
            check: self.check.clone(),
            hypercall: self.hypercall.clone(),
            unserved: self.unserved.clone(),
            console_keys: self.console_keys,
        }
    }
}

/// Runs vCPU `vcpu` until it stops, the VM ends, or the run fails. When the guest
/// starts another vCPU, it goes to `second_hart`, which first checks that pausing
/// the VM kicks vCPU 0 out of the guest ([`kick_check`]).
pub(crate) fn vcpu_loop<F: GStage>(
    vm: &Arc<Vm<Riscv64VCpu<F>>>,
    vcpu: usize,
    hooks: &Hooks<F>,
    second_hart: Option<u64>,
) {
    let label = hooks.label;
    hal::set_current(Some(vm.id()), Some(vcpu));
    loop {
        let exit = match vm.run_vcpu(vcpu) {
            Ok(exit) => exit,
            // Another vCPU powered the VM off between two runs of this one.
            Err(VmError::State {
                state: VmState::Stopped,
                ..
            }) => {
                println!("[{label}] vCPU {vcpu}: the VM is stopped");
                break;
            }
            Err(e) => {
                println!("[{label}] vCPU {vcpu}: {e}");
                // A fault loop: its diagnostics (walk, decision, map); the VM stops.
                let vmid = hal_riscv64::tlb::vmid_for(vm.id());
                if let Some(report) = vm.fault_loop_report(&e, vmid) {
                    println!("{report}");
                }
                (hooks.check)("vCPU ran without a VM error", false);
                let _ = vm.shutdown();
                break;
            }
        };
        match exit {
            VmExit::Hypercall(h) => (hooks.hypercall)(vm, vcpu, h),
            VmExit::UnservedAccess(a) => {
                if !(hooks.unserved)(vm, vcpu, &a) {
                    let _ = vm.shutdown();
                    break;
                }
            }
            VmExit::CpuUp { target, .. } => {
                let posted = second_hart.is_some_and(|h| {
                    println!("[{label}] vCPU {target} started: it runs on hart {h}");
                    let vm = vm.clone();
                    let hooks = hooks.clone();
                    harts::post(alloc::boxed::Box::new(move || {
                        kick_check(&vm, &hooks);
                        vcpu_loop(&vm, target, &hooks, None);
                    }))
                });
                if !posted {
                    println!("[{label}] vCPU {target} started but no free hart can run it");
                    (hooks.check)("second vCPU scheduled", false);
                    let _ = vm.shutdown();
                }
            }
            // WFI exits (only with trap_wfi), host interrupts, a pause: run again.
            VmExit::Halt | VmExit::ExternalInterrupt { .. } | VmExit::Paused => {}
            VmExit::CpuDown => {
                println!("[{label}] vCPU {vcpu} stopped");
                break;
            }
            VmExit::Shutdown | VmExit::Reset => {
                println!("[{label}] vCPU {vcpu} ended the VM ({exit:?})");
                break;
            }
            VmExit::Stopped => break,
            other => {
                println!("[{label}] vCPU {vcpu}: unexpected exit {other:?}");
                (hooks.check)("no unexpected exit", false);
                let _ = vm.shutdown();
                break;
            }
        }
        if hooks.console_keys {
            let mut out = alloc::string::String::new();
            CONSOLE_REQUESTS.poll(&**vm, label, console::getc, &mut out);
            console::print_str(&out);
        }
    }
}

/// The kick path, from the second hart before it runs vCPU 1: vCPU 0 runs in the
/// guest (the test guest waits there for vCPU 1; Linux boots), so pausing the VM
/// must kick it out (vm-core's eviction: `kick_pcpu`, an SBI IPI, a supervisor
/// software interrupt while V = 1, `ExitReason::Kicked`). Then the VM resumes.
fn kick_check<F: GStage>(vm: &Vm<Riscv64VCpu<F>>, hooks: &Hooks<F>) {
    let label = hooks.label;
    let name = "pause kicks vCPU 0 out of the guest";
    if !crate::boot::spin_until(1_000_000_000, || vm.vcpu_state(0) == Ok(VCpuState::InGuest)) {
        println!("[{label}] vCPU 0 did not enter the guest within 1 s");
        (hooks.check)(name, false);
        return;
    }
    let before = vm.stats().kicks;
    let start = crate::boot::now_ns();
    let paused = vm.pause();
    let took = crate::boot::now_ns() - start;
    let kicks = vm.stats().kicks - before;
    let resumed = vm.resume();
    println!(
        "[{label}] pause from the second hart: {kicks} kick(s) to vCPU 0, {paused:?}, resume {resumed:?}"
    );
    let mut out = alloc::string::String::new();
    host::write_kick_to_ack(&mut out, format_args!("[{label}] pause"), took);
    console::print_str(&out);
    (hooks.check)(name, paused.is_ok() && resumed.is_ok() && kicks > 0);
}

/// Answers a hypercall of the board's: our test extension through the monitor,
/// anything else `SBI_ERR_NOT_SUPPORTED` (vm-core answers the standard SBI
/// extensions itself).
fn hypercall<F: GStage>(
    vm: &Vm<Riscv64VCpu<F>>,
    vcpu: usize,
    h: Hypercall,
    monitor: &SharedMonitor,
    label: &str,
) {
    let answer = match Call::from_riscv(h.nr, h.function) {
        Some(call) => {
            let args = [h.args[0], h.args[1], h.args[2], h.args[3]];
            let action = monitor.with(|m, out| m.on_call(call, args, out));
            let mut out = alloc::string::String::new();
            let value = host::act_on(vm, action, &mut out);
            console::print_str(&out);
            // `None` is StartCpu: vCPUs are started with SBI HSM on RISC-V.
            value.map_or(
                FirmwareReply::Error(FirmwareError::NotSupported),
                FirmwareReply::Value,
            )
        }
        None => {
            println!(
                "[{label}] vCPU {vcpu}: SBI call {:#x}/{:#x} not supported",
                h.nr, h.function
            );
            FirmwareReply::Error(FirmwareError::NotSupported)
        }
    };
    if let Err(e) = vm.reply_call(vcpu, answer) {
        println!("[{label}] vCPU {vcpu}: answering the call: {e}");
    }
}
