//! The Linux run: Debian's riscv64 kernel with xtask's busybox initramfs (built into
//! the image as [`crate::LINUX_KERNEL`] and [`crate::LINUX_INITRD`]) in a VM made from
//! the embedded Linux config (`configs/qemu-virt-riscv64-linux.toml`), two vCPUs, one
//! per hart.
//!
//! The board loads the kernel at `kernel_load_addr`, the initrd at
//! `ramdisk_load_addr` and the device tree it builds ([`guest_dt`]) at
//! `dtb_load_addr`, and starts vCPU 0 at the entry with a0 = 0 and a1 = the tree.
//! vm-core answers the guest's SBI (base, HSM, IPI, SRST; the hart carries out TIME
//! with Sstc and RFENCE); the board runs vCPU 1 on the second hart once the guest
//! starts it, and while Linux boots there pauses and resumes the VM (the kick must
//! reach vCPU 0 in the guest). WFI runs in the guest. The guest prints on the
//! passed-through UART; the doorbell device ([`platforms::doorbell`]) remaps the probe
//! range when `/init` rings it. At the end the board prints the exits by kind, the
//! nested faults, the frames the VM held, and its checks.

use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use addrspace::{FRAME_SIZE, GuestPhysAddr, Sv39x4};
use hal_riscv64::{HartInfo, Riscv64CreateConfig, Riscv64SetupConfig, Riscv64VCpu};
use platforms::doorbell::{Doorbell, DoorbellHost};
use vcpu_api::{ArchVCpu, FirmwareError, FirmwareReply, VCpuState};
use vm_core::{Vm, VmError, VmExit, VmState};

use crate::console::println;
use crate::guest_dt;
use crate::{hal, harts};

/// The vCPU type: Sv39x4 reaches every GPA the config uses (below 2^41).
type VCpu = Riscv64VCpu<Sv39x4>;

/// The check results of a run.
struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool) {
        println!("[linux] {} {name}", if ok { "ok  " } else { "FAIL" });
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }
}

/// Whether the pause from the second hart kicked vCPU 0 out of the guest.
static PAUSE_KICKED: AtomicBool = AtomicBool::new(false);

/// Runs the Linux guest to its power-off; returns (passed, failed).
pub(crate) fn run(info: &HartInfo, second_hart: Option<u64>, host_dtb: &[u8]) -> (u32, u32) {
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };
    match build_and_run(info, second_hart, host_dtb, &mut checks) {
        Ok(()) => {}
        Err(e) => {
            println!("[linux] {e}");
            checks.check("Linux VM ran", false);
        }
    }
    (checks.passed, checks.failed)
}

fn build_and_run(
    info: &HartInfo,
    second_hart: Option<u64>,
    host_dtb: &[u8],
    checks: &mut Checks,
) -> Result<(), String> {
    let err = |what: &str, e: &dyn core::fmt::Display| alloc::format!("{what}: {e}");
    let config = crate::vm_config().map_err(|e| err("embedded VM config", &e))?;
    let kernel = crate::LINUX_KERNEL;
    let initrd = crate::LINUX_INITRD;
    if kernel.is_empty() || initrd.is_empty() {
        return Err(
            "no kernel or initrd built in (run `cargo xtask qemu riscv64 --guest linux`)".into(),
        );
    }
    let layout = guest_dt::linux_layout(&config, kernel, initrd.len())?;
    let facts = guest_dt::host_hart_facts(host_dtb, info.sstc)?;
    println!(
        "[linux] kernel {} KiB (image_size {} KiB), initrd {} KiB; guest ISA {}, {}, timebase {} Hz",
        kernel.len() / 1024,
        layout.image_size / 1024,
        initrd.len() / 1024,
        facts.isa,
        facts.mmu_type,
        facts.timebase
    );
    let dtb = guest_dt::linux_dtb(&config, &layout, &facts)?;
    let (initrd_at, dtb_at, probe) = (layout.initrd_at, layout.dtb_at, layout.probe);

    let free_before = hal::FRAMES.free_frames();
    let setup = Riscv64SetupConfig::default();
    let config = config
        .into_valid()
        .map_err(|e| err("the Linux VM config", &e))?;
    let vm = Vm::<VCpu>::new(config, |_| (Riscv64CreateConfig::default(), setup))
        .map_err(|e| err("creating the VM", &e))?;
    let load = |what: &str, at: GuestPhysAddr, bytes: &[u8]| {
        vm.load_image(at, bytes).map_err(|e| err(what, &e))
    };
    load(
        "loading the kernel",
        vm.config().kernel.kernel_load_addr,
        kernel,
    )?;
    load("loading the initrd", initrd_at, initrd)?;
    load("loading the device tree", dtb_at, &dtb)?;
    vm.with_vcpu(0, |v| v.set_gpr(11, dtb_at.as_usize() as u64))
        .map_err(|e| err("vCPU 0", &e))?
        .map_err(|e| err("vCPU 0 a1", &e))?;
    let doorbell = Doorbell::<VCpu>::new(
        probe.0,
        probe.1,
        DoorbellHost {
            now_ns: crate::boot::now_ns,
            current_vcpu: hal::current_vcpu,
        },
    );
    doorbell
        .attach(&vm)
        .map_err(|e| err("attaching the doorbell", &e))?;
    println!("{vm}");
    let loaded = free_before - hal::FRAMES.free_frames();
    println!(
        "[linux] guest device tree {} bytes at {dtb_at:?}; {loaded} frames ({} MiB) held after loading",
        dtb.len(),
        (loaded * FRAME_SIZE) >> 20
    );

    vm.boot().map_err(|e| err("boot", &e))?;
    let started = crate::boot::now_ns();
    vcpu_loop(&vm, 0, second_hart);
    let second_done = harts::wait_idle(5_000_000_000);
    let ran_ms = (crate::boot::now_ns() - started) / 1_000_000;
    let stats = vm.stats();
    let held = free_before - hal::FRAMES.free_frames();
    println!(
        "[linux] guest ran {ran_ms} ms; nested faults handled: {} mapped, {} spurious; \
         {} shootdowns, {} kicks; frames held at the end: {held} ({} MiB)",
        stats.faults_mapped,
        stats.faults_spurious,
        stats.shootdowns,
        stats.kicks,
        (held * FRAME_SIZE) >> 20
    );
    println!("[linux] exits per boot: {}", stats.exits);
    let db = doorbell.stats();
    println!(
        "[linux] doorbell: {} remap(s), last took {} us; reports {:x?}",
        db.remaps,
        db.last_remap_ns / 1000,
        db.reports
    );
    let verdict = doorbell.verdict(2);
    if let Err(why) = &verdict {
        println!("[linux] doorbell: {why}");
    }
    checks.check(
        "the doorbell remapped the probe and both vCPUs read the new contents",
        verdict.is_ok(),
    );
    checks.check("the second hart finished its vCPU", second_done);
    checks.check(
        "pausing the VM kicked vCPU 0 out of the guest while Linux ran",
        PAUSE_KICKED.load(Ordering::SeqCst),
    );
    checks.check(
        "WFI ran in the guest (no WFI exits)",
        stats.exits.halts == 0,
    );
    checks.check(
        "the guest powered the VM off",
        vm.state() == VmState::Stopped,
    );
    drop(vm);
    drop(doorbell);
    let free_after = hal::FRAMES.free_frames();
    println!("[linux] VM dropped: {free_after} frames free, {free_before} before it was built");
    checks.check(
        "every frame of the VM freed after drop",
        free_after == free_before,
    );
    Ok(())
}

/// Runs vCPU `vcpu` until it stops or the VM ends.
fn vcpu_loop(vm: &Arc<Vm<VCpu>>, vcpu: usize, second_hart: Option<u64>) {
    hal::set_current(Some(vm.id()), Some(vcpu));
    loop {
        let exit = match vm.run_vcpu(vcpu) {
            Ok(exit) => exit,
            Err(VmError::State {
                state: VmState::Stopped,
                ..
            }) => break,
            Err(e) => {
                println!("[linux] vCPU {vcpu}: {e}");
                let _ = vm.shutdown();
                break;
            }
        };
        match exit {
            VmExit::Hypercall(h) => {
                println!("[linux] vCPU {vcpu}: hypercall {h:x?} not supported");
                let _ = vm.reply_call(vcpu, FirmwareReply::Error(FirmwareError::NotSupported));
            }
            VmExit::CpuUp { target, .. } => {
                let posted = second_hart.is_some_and(|h| {
                    println!("[linux] vCPU {target} started: it runs on hart {h}");
                    let vm = vm.clone();
                    harts::post(alloc::boxed::Box::new(move || {
                        pause_check(&vm);
                        vcpu_loop(&vm, target, None);
                    }))
                });
                if !posted {
                    println!("[linux] vCPU {target} started but no free hart can run it");
                    let _ = vm.shutdown();
                }
            }
            // A WFI exit (only with trap_wfi), a host interrupt, a pause: run again.
            VmExit::Halt | VmExit::ExternalInterrupt { .. } | VmExit::Paused => {}
            VmExit::CpuDown => {
                println!("[linux] vCPU {vcpu} stopped");
                break;
            }
            VmExit::Shutdown | VmExit::Reset => {
                println!("[linux] vCPU {vcpu} ended the VM ({exit:?})");
                break;
            }
            VmExit::Stopped => break,
            VmExit::UnservedAccess(a) => {
                println!(
                    "[linux] vCPU {vcpu}: unserved {:?} at {:?} ({:?})\n{}",
                    a.access, a.gpa, a.why, a.walk
                );
                let _ = vm.shutdown();
                break;
            }
            other => {
                println!("[linux] vCPU {vcpu}: unexpected exit {other:?}");
                let _ = vm.shutdown();
                break;
            }
        }
    }
    hal::set_current(None, None);
}

/// Pause and resume while Linux boots on vCPU 0: pausing must kick vCPU 0 out of
/// the guest (an SBI IPI to its hart), resume lets it go on.
fn pause_check(vm: &Vm<VCpu>) {
    if !crate::boot::spin_until(1_000_000_000, || vm.vcpu_state(0) == Ok(VCpuState::Running)) {
        println!("[linux] pause check: vCPU 0 did not enter the guest within 1 s");
        return;
    }
    let before = vm.stats().kicks;
    let paused = vm.pause();
    let kicks = vm.stats().kicks - before;
    let resumed = vm.resume();
    println!(
        "[linux] pause while Linux runs: {kicks} kick(s) to vCPU 0, {paused:?}, resume {resumed:?}"
    );
    PAUSE_KICKED.store(
        paused.is_ok() && resumed.is_ok() && kicks > 0,
        Ordering::SeqCst,
    );
}
