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
//! reach vCPU 0 in the guest): the vCPU loop is the test runs' ([`vcpu_loop`]). WFI runs in the guest. The guest prints on the
//! passed-through UART; the doorbell device ([`platforms::doorbell`]) remaps the probe
//! range when `/init` rings it. At the end the board prints the exits by kind, the
//! nested faults, the frames the VM held, and its checks.

use alloc::string::String;
use alloc::sync::Arc;

use addrspace::{FRAME_SIZE, GuestPhysAddr, Sv39x4};
use hal_riscv64::{HartInfo, Riscv64CreateConfig, Riscv64SetupConfig, Riscv64VCpu};
use platforms::doorbell::{Doorbell, DoorbellHost};
use platforms::linux::Checks;
use vcpu_api::{ArchVCpu, FirmwareError, FirmwareReply};
use vm_core::{UnservedAccess, Vm, VmState};

use crate::console::println;
use crate::guest_dt;
use crate::run::{Hooks, vcpu_loop};
use crate::{hal, harts};

/// The vCPU type: Sv39x4 reaches every GPA the config uses (below 2^41).
type VCpu = Riscv64VCpu<Sv39x4>;

/// Runs the Linux guest to its power-off; returns (passed, failed).
pub(crate) fn run(info: &HartInfo, second_hart: Option<u64>, host_dtb: &[u8]) -> (u32, u32) {
    let checks = Arc::new(Checks::new(crate::console::print_str));
    if let Err(e) = build_and_run(info, second_hart, host_dtb, &checks) {
        println!("[linux] {e}");
        checks.check("Linux VM ran", false);
    }
    checks.counts()
}

fn build_and_run(
    info: &HartInfo,
    second_hart: Option<u64>,
    host_dtb: &[u8],
    checks: &Arc<Checks>,
) -> Result<(), String> {
    let err = |what: &str, e: &dyn core::fmt::Display| alloc::format!("{what}: {e}");
    let config = crate::board_config(host_dtb)?;
    for d in &config.devices.passthrough_devices {
        println!(
            "[linux] pass-through {}: [{:?}, +{:#x}) irq {}",
            d.name, d.base_gpa, d.length, d.irq
        );
    }
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
    // SAFETY: QEMU virt has only device registers below its RAM (0x8000_0000); the
    // pass-through devices were resolved from OpenSBI's device tree of this machine.
    let grant = unsafe { platforms::host::grant_devices_below(&config, 0x8000_0000) };
    let config = config
        .into_valid()
        .map_err(|e| err("the Linux VM config", &e))?;
    let vm = Vm::<VCpu>::new(config, &grant, |_| (Riscv64CreateConfig::default(), setup))
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
    let retry = doorbell.clone();
    let hooks = Hooks {
        label: "linux",
        check: {
            let c = checks.clone();
            Arc::new(move |name: &str, ok: bool| c.check(name, ok))
        },
        hypercall: Arc::new(|vm: &Vm<VCpu>, vcpu, h| {
            println!("[linux] vCPU {vcpu}: hypercall {h:x?} not supported");
            let _ = vm.reply_call(vcpu, FirmwareReply::Error(FirmwareError::NotSupported));
        }),
        unserved: Arc::new(move |_: &Vm<VCpu>, vcpu, a: &UnservedAccess| {
            platforms::linux::settle_unserved(&retry, vcpu, a, crate::console::print_str)
        }),
        console_keys: false,
    };
    vcpu_loop(&vm, 0, &hooks, second_hart);
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
    let mut out = alloc::string::String::new();
    platforms::host::write_kick_to_ack(
        &mut out,
        format_args!("[linux] doorbell shootdown"),
        stats.shootdown_last_ns,
    );
    crate::console::print_str(&out);
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
