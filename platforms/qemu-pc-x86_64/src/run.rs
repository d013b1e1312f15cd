//! Runs the test VM through vm-core's [`Vm`] and answers the test guest through
//! [`Monitor`].
//!
//! Scheduling: the board has one physical CPU for the VM's two vCPUs. It runs one
//! vCPU until that vCPU halts (HLT with interrupts off: stopped for good), stops,
//! or starts another vCPU; a vCPU that was just started runs next, so the
//! secondary answers while the primary waits for it. This is cooperative: it
//! relies on the secondary not waiting for the primary, which holds for the test
//! protocol (`platforms::guest::run_secondary` never waits).

use alloc::sync::Arc;
use core::fmt::Write;

use hal_x86_64::guest_paging::identity_tables;
use hal_x86_64::{SvmSetupConfig, SvmVCpu};
use platforms::host::{self, ConsoleRequests, SharedMonitor};
use platforms::layouts;
use platforms::monitor::Action;
use platforms::protocol::Call;
use vcpu_api::{AccessWidth, ArchVCpu};
use vm_core::{
    DeviceError, FirmwareError, FirmwareReply, HalFrames, HostGrant, Hypercall, MmioDevice, PortIo,
    PortOp, SysRegAccess, SysRegOp, Vm, VmExit,
};

use crate::console::Out;
use crate::layout::{GUEST_TABLES, LAYOUT};

/// The vCPU type of this board.
type VCpu = SvmVCpu<HalFrames>;

/// The port device of the config that is the guest's COM1 (at
/// `layouts::QEMU_PC_X86_64_COM1`).
const GUEST_COM1: &str = "com1";
/// The guest's power-off port and the value that means "power off".
const GUEST_SHUTDOWN_PORT: u16 = layouts::QEMU_PC_X86_64_SHUTDOWN_PORT;
const GUEST_SHUTDOWN_VALUE: u64 = layouts::QEMU_PC_X86_64_SHUTDOWN_VALUE as u64;

include!(concat!(env!("OUT_DIR"), "/guest_image.rs"));

/// How the VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The guest powered off through its shutdown port.
    PowerOff,
    /// Something failed (already printed).
    Failed,
}

/// Prints through COM1 (the monitor's lines).
fn print(s: &str) {
    let _ = Out.write_str(s);
}

/// Builds the test VM, runs it to the end and returns the monitor's counts.
pub(crate) fn run_test_vm() -> (u32, u32) {
    let out = &mut Out;
    let monitor = SharedMonitor::new("x86_64", print);
    let config = match crate::vm_config() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "[x86_64] embedded VM config: {e}");
            monitor.host_check("embedded VM config is valid", false);
            return monitor.finish();
        }
    };
    monitor.host_check("guest image embedded", !GUEST_IMAGE.is_empty());

    let com1 = Arc::new(Com1::default());
    let vm = match prepare(config, &monitor, &com1) {
        Ok(vm) => vm,
        Err(e) => {
            let _ = writeln!(out, "[x86_64] VM setup failed: {e}");
            monitor.host_check("VM created and loaded", false);
            return monitor.finish();
        }
    };
    let _ = writeln!(out, "[x86_64] VM {} created:\n{vm}", vm.id());
    let end = schedule(&vm, &monitor, &com1);
    monitor.host_check("guest powered off", end == End::PowerOff);
    let stats = vm.stats();
    let _ = writeln!(out, "[x86_64] VM stats: {stats:?}");
    monitor.finish()
}

/// The fault-loop run: the test VM again as VM 2, vCPU 0's nCR3 pointed at
/// `host::EMPTY_ROOT` (`host::check_fault_loop`): its first access (the walk of the
/// guest's own page tables) faults on RAM the VM maps until the detector stops the
/// VM. Returns (passed, failed).
pub(crate) fn run_fault_loop_vm() -> (u32, u32) {
    let out = &mut Out;
    let vm_id = 2;
    let _ = writeln!(
        out,
        "[loop] ---- test VM {vm_id}: nested paging, vCPU 0 on an empty table ----"
    );
    let monitor = SharedMonitor::new("loop", print);
    let free_before = crate::hal::FRAMES.free_frames();
    let built = crate::vm_config()
        .map_err(|e| alloc::format!("embedded VM config: {e}"))
        .and_then(|mut config| {
            config.id = vm_id;
            prepare(config, &monitor, &Arc::new(Com1::default()))
                .map_err(|e| alloc::format!("VM setup failed: {e}"))
        });
    let vm = match built {
        Ok(vm) => vm,
        Err(e) => {
            let _ = writeln!(out, "[loop] {e}");
            monitor.host_check("VM created and loaded", false);
            return monitor.finish_host();
        }
    };
    // The boot code identity-maps the first 4 GiB, which hold the image: the
    // static's address is its physical address.
    let root = addrspace::HostPhysAddr::from_usize(host::EMPTY_ROOT.addr());
    host::check_fault_loop(&*vm, root, &monitor, || vm.run_vcpu(0));
    drop(vm);
    monitor.host_check(
        "every frame of the VM freed after drop",
        crate::hal::FRAMES.free_frames() == free_before,
    );
    monitor.finish_host()
}

/// Creates the test VM (`platforms::host::build_test_vm`: layout check, guest image,
/// read-only pattern, test device), attaches the guest's COM1, writes the guest's
/// identity page tables, and boots vCPU 0.
fn prepare(
    config: vm_core::VmConfig,
    monitor: &SharedMonitor,
    com1: &Arc<Com1>,
) -> Result<Arc<Vm<VCpu>>, host::BuildError> {
    let setup = SvmSetupConfig {
        guest_cr3: GUEST_TABLES,
    };
    let (vm, _device) = host::build_test_vm::<VCpu>(
        config,
        &LAYOUT,
        GUEST_IMAGE,
        &HostGrant::none(),
        |_| ((), setup),
        monitor,
    )?;
    vm.attach_device(GUEST_COM1, com1.clone())?;
    // The tables as `u64`s in host order, which is the guest's (little-endian).
    vm.write_to_guest_of(
        vcpu_api::gpa_of(GUEST_TABLES),
        &identity_tables(GUEST_TABLES),
    )?;
    vm.boot()?;
    Ok(vm)
}

/// Runs the vCPUs on this pCPU until the guest powers off or something fails.
fn schedule(vm: &Arc<Vm<VCpu>>, monitor: &SharedMonitor, com1: &Com1) -> End {
    let out = &mut Out;
    let n = vm.vcpu_count();
    let mut current = 0usize;
    // vCPUs that halted with interrupts off: they never run again.
    let mut parked = alloc::vec![false; n];
    // After an unmap: (vCPU, its flushed VMRUNs before), checked at its next exit.
    let mut flush_check: Option<(usize, u64)> = None;
    // Diagnostics asked for on the hypervisor's console, between two exits.
    let requests = ConsoleRequests::new();
    loop {
        requests.poll(&**vm, "x86_64", crate::console::getc, out);
        let Some(v) = (0..n)
            .map(|i| (current + i) % n)
            .find(|&i| vm.is_vcpu_started(i) && !parked[i])
        else {
            let _ = writeln!(
                out,
                "[x86_64] every vCPU is halted; the guest never powered off"
            );
            return End::Failed;
        };
        current = v;
        let exit = match vm.run_vcpu(v) {
            Ok(exit) => exit,
            Err(e) => {
                let _ = writeln!(out, "[x86_64] vCPU {v}: {e}");
                // A fault loop: its diagnostics (walk, decision, map); the VM stops.
                let asid = hal_x86_64::tlb::asid_of(vm.id()).and_then(|a| u16::try_from(a).ok());
                if let Some(report) = vm.fault_loop_report(&e, asid) {
                    let _ = write!(out, "{report}");
                }
                return End::Failed;
            }
        };
        if let Some((cpu, before)) = flush_check
            && cpu == v
        {
            // QEMU flushes its TLB on every VMRUN anyway, so the guest's check
            // cannot see a missing flush: check our half of it here.
            let after = vm.with_vcpu(v, |c| c.flushed_entries()).unwrap_or(0);
            monitor.host_check(
                "VMRUN after the unmap flushed the TLB (TLB_CONTROL)",
                after > before,
            );
            flush_check = None;
        }
        match exit {
            VmExit::Hypercall(Hypercall { nr, args, .. }) => {
                let Some(call) = Call::from_x86(nr) else {
                    let _ = writeln!(out, "[x86_64] vCPU {v}: unknown hypercall {nr:#x}");
                    let _ = vm.reply_call(v, FirmwareReply::Error(FirmwareError::NotSupported));
                    continue;
                };
                let action = monitor
                    .with(|m, out| m.on_call(call, [args[0], args[1], args[2], args[3]], out));
                let ret = match action {
                    Action::StartCpu { cpu, entry, arg } => {
                        // The guest names the vCPU by its APIC id.
                        let target = vm.vcpu_by_cpu_id(cpu).unwrap_or(usize::MAX);
                        let entry = vcpu_api::gpa_of(entry);
                        match vm.start_vcpu(target, entry, arg) {
                            Ok(()) => {
                                // Run the new vCPU next (see the module docs).
                                current = target;
                                0
                            }
                            Err(e) => {
                                let _ = writeln!(out, "[x86_64] start vCPU {cpu}: {e}");
                                1
                            }
                        }
                    }
                    action => {
                        if let Action::Unmap { .. } = action {
                            // Checked at this vCPU's next exit (see `flush_check`).
                            let before = vm.with_vcpu(v, |c| c.flushed_entries()).unwrap_or(0);
                            flush_check = Some((v, before));
                        }
                        host::act_on(vm, action, out).unwrap_or(u64::MAX)
                    }
                };
                if let Err(e) = vm.set_return_value(v, ret) {
                    let _ = writeln!(out, "[x86_64] vCPU {v}: {e}");
                    return End::Failed;
                }
            }
            VmExit::UnservedAccess(a) => {
                if !host::settle_unserved(vm, v, &a, monitor) {
                    return End::Failed;
                }
            }
            // Ports vm-core's port bus did not serve.
            VmExit::Io(PortIo {
                port,
                width,
                op: PortOp::Write { data },
            }) => match port {
                GUEST_SHUTDOWN_PORT if data == GUEST_SHUTDOWN_VALUE => {
                    com1.0.lock().flush();
                    let _ = writeln!(out, "[x86_64] guest powered off (vCPU {v})");
                    let _ = vm.shutdown();
                    return End::PowerOff;
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "[x86_64] vCPU {v}: ignored {}-byte write of {data:#x} to port {port:#x}",
                        width.bytes()
                    );
                }
            },
            VmExit::Io(
                io @ PortIo {
                    port,
                    width,
                    op: PortOp::Read,
                },
            ) => {
                // No device answers: the bus floats high, as on a PC.
                let _ = writeln!(
                    out,
                    "[x86_64] vCPU {v}: {}-byte read of port {port:#x} reads all ones",
                    width.bytes()
                );
                let r = vm.with_vcpu(v, |cpu| cpu.complete_io(&io, Some(u64::MAX)));
                if !matches!(r, Ok(Ok(()))) {
                    return End::Failed;
                }
            }
            VmExit::SysReg(SysRegAccess { addr, op }) => {
                match op {
                    SysRegOp::Read { .. } => {
                        let _ = writeln!(out, "[x86_64] vCPU {v}: RDMSR {:#x} reads 0", addr.0);
                    }
                    SysRegOp::Write { value } => {
                        let _ = writeln!(
                            out,
                            "[x86_64] vCPU {v}: WRMSR {:#x} <- {value:#x} ignored",
                            addr.0
                        );
                    }
                }
                let _ = vm.set_return_value(v, 0);
            }
            VmExit::Halt | VmExit::CpuDown => {
                parked[v] = true;
                let _ = writeln!(out, "[x86_64] vCPU {v} halted");
            }
            VmExit::CpuUp { target, .. } => current = target,
            VmExit::ExternalInterrupt { .. } | VmExit::Paused => {}
            VmExit::Shutdown => return End::PowerOff,
            VmExit::Reset => {
                let (rip, info) = vm
                    .with_vcpu(v, |cpu| (cpu.pc(), cpu.last_exit_info()))
                    .unwrap_or((0, (0, 0, 0)));
                let _ = writeln!(
                    out,
                    "[x86_64] vCPU {v} triple-faulted at rip {rip:#x} (exit {info:x?})"
                );
                return End::Failed;
            }
            VmExit::Stopped => return End::Failed,
            other => {
                let _ = writeln!(out, "[x86_64] vCPU {v}: unexpected exit {other:?}");
                return End::Failed;
            }
        }
    }
}

/// The guest's COM1, the `com1` port device of the config, served on vm-core's
/// port bus: bytes written to the data register (offset 0) are printed a line at
/// a time; the line status register (offset 5) says "transmitter empty", the
/// interrupt identification register (offset 2) "no interrupt pending"; the other
/// registers read 0 and ignore writes.
#[derive(Default)]
struct Com1(spin::Mutex<Line>);

impl MmioDevice for Com1 {
    fn read(&self, offset: u64, _width: AccessWidth) -> Result<u64, DeviceError> {
        Ok(match offset {
            2 => 0x01,
            5 => 0x60,
            _ => 0,
        })
    }

    fn write(&self, offset: u64, _width: AccessWidth, value: u64) -> Result<(), DeviceError> {
        if offset == 0 {
            self.0.lock().push(value.to_le_bytes()[0]);
        }
        Ok(())
    }
}

/// The guest's console output, printed a line at a time with a prefix.
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            buf: [0; 128],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, b: u8) {
        if b != b'\n' && self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
        if b == b'\n' || self.len == self.buf.len() {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            let text = core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<not UTF-8>");
            crate::println!("[guest] {text}");
            self.len = 0;
        }
    }
}
