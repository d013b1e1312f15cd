//! The Linux run: Debian's arm64 kernel with xtask's busybox initramfs (built into
//! the image as `LINUX_KERNEL` and `LINUX_INITRD`) in a VM made from the embedded
//! Linux config (`configs/qemu-virt-aarch64-linux.toml`), two vCPUs, one per
//! physical CPU, with a virtual GICv3.
//!
//! The arm64 boot protocol (Linux `Documentation/arch/arm64/booting.rst`): the Image
//! at the first 2 MiB-aligned address of RAM + `text_offset`, the device tree
//! ([`guest_dt`]) and the initramfs in guest RAM, x0 = the device tree, x1..x3 = 0, MMU
//! and caches off, EL1h with interrupts masked; vCPU 1 comes up by PSCI CPU_ON
//! (vm-core answers PSCI). Interrupts go through `vm_core::vgic`: the distributor and
//! redistributors are emulated devices, the guest's SGIs (its IPIs) are trapped
//! `ICC_SGI1R_EL1` writes, and each vCPU's list registers are filled around each run
//! (hal-aarch64's `VirtualInterrupts`); the virtual timer (PPI 27) and the PL011's
//! SPI are forwarded from the physical GIC, which the hypervisor keeps for its kicks.
//! WFI runs in the guest. The doorbell device ([`platforms::doorbell`]) remaps the
//! probe range when `/init` rings it. At the end the board prints the exits by kind
//! (the GIC's MMIO apart), the nested faults, the frames the VM held, and its checks.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use addrspace::{ArmStage2Ipa40, FRAME_SIZE, GuestPhysAddr, PAGE_SIZE};
use hal_aarch64::firmware::PsciConduit;
use hal_aarch64::vcpu::default_mpidr;
use hal_aarch64::{Aarch64CreateConfig, Aarch64SetupConfig, Aarch64VCpu, VirtualInterrupts};
use platforms::doorbell::{Doorbell, DoorbellHost};
use platforms::linux::Checks;
use vcpu_api::{ArchVCpu, usize_of};
use vm_core::image::Arm64Header;
use vm_core::vgic::{DISTRIBUTOR_SIZE, FIRST_SPI, SgiRegister, VTIMER_PPI, Vgic, VgicConfig};
use vm_core::{
    FirmwareError, FirmwareReply, SysRegAccess, SysRegAddr, SysRegOp, UnservedAccess, Vm, VmConfig,
    VmHal,
};

use crate::guest_dt::{self, Gic};
use crate::run::{Hooks, Run, vcpu_loop};
use crate::{gic, println};

type VCpu = Aarch64VCpu<ArmStage2Ipa40>;

include!(concat!(env!("OUT_DIR"), "/linux_images.rs"));

/// SPIs of the virtual GIC (INTIDs 32..96: QEMU virt's devices sit low).
const VGIC_SPIS: u32 = 64;
/// The emulated devices the config must name: the distributor and redistributors.
const GICD: &str = "gicd";
const GICR: &str = "gicr";
/// How long the hypervisor waits for the second CPU to finish after power-off.
const SECONDARY_TIMEOUT_NS: u64 = 5_000_000_000;

/// `vm_core::vgic::Vgic` as the vCPUs' source of list registers; counts the
/// interrupts injected through it (`Vm::inject_interrupt` reaches it by the vCPU).
struct VgicLink(Arc<Vgic>, AtomicU64);

impl VirtualInterrupts for VgicLink {
    fn flush(
        &self,
        vcpu: usize,
        pcpu: usize,
        lrs: &mut [u64],
        deactivate: &mut dyn FnMut(u32),
    ) -> u64 {
        match self.0.flush(vcpu, pcpu, lrs) {
            Ok(f) => {
                f.deactivate.iter().for_each(|&p| deactivate(p));
                f.hcr
            }
            // Only for a vCPU index or register count the vGIC was not made for:
            // the virtual CPU interface stays off.
            Err(_) => 0,
        }
    }

    fn fold(&self, vcpu: usize, lrs: &[u64], hcr: u64) {
        let _ = self.0.fold(vcpu, lrs, hcr);
    }

    fn inject(&self, vcpu: usize, intid: u32) -> bool {
        let ok = self.0.set_pending(vcpu, intid).is_ok();
        if ok {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }
}

/// Runs the Linux guest of `config` to its power-off; returns (passed, failed).
pub(crate) fn run(config: VmConfig) -> (u32, u32) {
    let checks = Arc::new(Checks::new(crate::console::print_str));
    if let Err(e) = build_and_run(config, &checks) {
        println!("[linux] {e}");
        checks.check("Linux VM ran", false);
    }
    checks.counts()
}

/// The vGIC of a VM of `cpus` vCPUs with their default MPIDRs, the virtual timer
/// forwarded on every vCPU and the pass-through devices' SPIs forwarded (and enabled
/// at the physical GIC, routed to CPU 0).
fn vgic_for(config: &VmConfig) -> Result<Arc<Vgic>, String> {
    let mpidrs: Option<Vec<u64>> = (0..config.cpu_num).map(default_mpidr).collect();
    let mut vgic_config = VgicConfig::new(config.cpu_num, VGIC_SPIS);
    vgic_config.mpidrs = mpidrs.ok_or("too many vCPUs for MPIDRs")?;
    let vgic = Vgic::new(vgic_config, gic::kick).map_err(|e| format!("vGIC: {e}"))?;
    for v in 0..config.cpu_num {
        vgic.map_hw(v, VTIMER_PPI, VTIMER_PPI)
            .map_err(|e| format!("vGIC timer: {e}"))?;
    }
    for irq in forwarded_spis(config) {
        vgic.map_hw(0, irq, irq)
            .map_err(|e| format!("vGIC SPI {irq}: {e}"))?;
        gic::enable_spi(irq, 0);
    }
    Ok(vgic)
}

/// The SPIs of the config's pass-through devices that the vGIC has.
fn forwarded_spis(config: &VmConfig) -> impl Iterator<Item = u32> + '_ {
    config
        .devices
        .passthrough_devices
        .iter()
        .filter_map(|d| u32::try_from(d.irq).ok())
        .filter(|irq| (FIRST_SPI..FIRST_SPI + VGIC_SPIS).contains(irq))
}

/// An emulated device of the config: base and size.
fn emu_range(config: &VmConfig, name: &str) -> Result<(u64, u64), String> {
    config
        .devices
        .emu_devices
        .iter()
        .find(|d| d.name == name)
        .map(|d| (d.base_gpa.as_usize() as u64, d.length as u64))
        .ok_or_else(|| format!("the Linux config has no emulated device {name}"))
}

fn build_and_run(config: VmConfig, checks: &Arc<Checks>) -> Result<(), String> {
    let err = |what: &str, e: &dyn core::fmt::Display| format!("{what}: {e}");
    let (kernel, initrd) = (LINUX_KERNEL, LINUX_INITRD);
    if kernel.is_empty() || initrd.is_empty() {
        return Err(
            "no kernel or initrd built in (run `cargo xtask qemu aarch64 --guest linux`)".into(),
        );
    }
    let header = Arm64Header::parse(kernel).map_err(|e| err("the kernel", &e))?;
    let ram = config
        .kernel
        .memory_regions
        .first()
        .ok_or("the Linux config has no RAM")?;
    let placement = header
        .place(ram.gpa, ram.size as u64)
        .map_err(|e| err("the kernel", &e))?;
    if placement.load != config.kernel.kernel_load_addr {
        return Err(format!(
            "kernel_load_addr {:?} is not where the Image goes ({:?})",
            config.kernel.kernel_load_addr, placement.load
        ));
    }
    let layout =
        platforms::linux::linux_layout(&config, usize_of(header.image_size), initrd.len())?;
    let (gicd, gicr) = (emu_range(&config, GICD)?, emu_range(&config, GICR)?);
    if gicd.1 < DISTRIBUTOR_SIZE as u64 {
        return Err(format!("the {GICD} device is smaller than 64 KiB"));
    }
    let vgic = vgic_for(&config)?;
    if gicr.1 < vgic.redistributors_size() as u64 {
        return Err(format!(
            "the {GICR} device is smaller than {} redistributors of 128 KiB",
            config.cpu_num
        ));
    }
    let cpu_ids: Option<Vec<u64>> = (0..config.cpu_num).map(default_mpidr).collect();
    let cpu_ids = cpu_ids.ok_or("too many vCPUs for MPIDRs")?;
    let dtb = guest_dt::linux_dtb(
        &config,
        &layout,
        &cpu_ids,
        Gic {
            dist: gicd,
            redist: gicr,
        },
    )?;
    println!(
        "[linux] kernel {} KiB (image_size {} KiB), initrd {} KiB, device tree {} bytes",
        kernel.len() / 1024,
        layout.image_size / 1024,
        initrd.len() / 1024,
        dtb.len()
    );

    let free_before = crate::hal::free_frames();
    let link = Arc::new(VgicLink(vgic.clone(), AtomicU64::new(0)));
    // SAFETY: QEMU virt has only device registers below its RAM (0x4000_0000); the
    // pass-through devices were resolved from QEMU's device tree of this machine.
    let grant = unsafe { platforms::host::grant_devices_below(&config, 0x4000_0000) };
    let config = config
        .into_valid()
        .map_err(|e| err("the Linux VM config", &e))?;
    let vm = Vm::<VCpu>::new(config, &grant, |_| {
        (
            Aarch64CreateConfig {
                mpidr: None,
                psci: PsciConduit::Hvc,
                interrupts: Some(link.clone() as Arc<dyn VirtualInterrupts>),
            },
            Aarch64SetupConfig {
                wfi_in_guest: true,
                ..Default::default()
            },
        )
    })
    .map_err(|e| err("creating the VM", &e))?;
    vm.attach_device(GICD, vgic.distributor())
        .map_err(|e| err("attaching the distributor", &e))?;
    vm.attach_device(GICR, vgic.redistributors())
        .map_err(|e| err("attaching the redistributors", &e))?;
    for (what, at, bytes) in [
        ("the kernel", layout.kernel_at, kernel),
        ("the initrd", layout.initrd_at, initrd),
        ("the device tree", layout.dtb_at, &dtb[..]),
    ] {
        vm.load_image(at, bytes).map_err(|e| err(what, &e))?;
        // The guest starts with its MMU and caches off: what it reads first must be
        // in memory, not only in the hypervisor's caches.
        clean_for_guest(&vm, at, bytes.len());
    }
    vm.with_vcpu(0, |v| {
        v.set_gpr(0, layout.dtb_at.as_usize() as u64)?;
        (1..4).try_for_each(|i| v.set_gpr(i, 0))
    })
    .map_err(|e| err("vCPU 0", &e))?
    .map_err(|e| err("vCPU 0 x0..x3", &e))?;
    let doorbell = Doorbell::<VCpu>::new(
        layout.probe.0,
        layout.probe.1,
        DoorbellHost {
            now_ns: hal_aarch64::cpu::now_ns,
            current_vcpu: crate::hal::current_vcpu,
        },
    );
    doorbell
        .attach(&vm)
        .map_err(|e| err("attaching the doorbell", &e))?;
    let target = vgic.clone();
    crate::hal::register_injector(
        vm.id(),
        Arc::new(move |vcpu, irq| {
            u32::try_from(irq).is_ok_and(|intid| target.set_pending(vcpu, intid).is_ok())
        }),
    );
    println!("{vm}");
    let loaded = free_before - crate::hal::free_frames();
    println!(
        "[linux] {loaded} frames ({} MiB) held after loading",
        (loaded * FRAME_SIZE) >> 20
    );

    vm.boot().map_err(|e| err("boot", &e))?;
    let started = hal_aarch64::cpu::now_ns();
    let run = Arc::new(Run {
        label: "linux",
        vm,
        hooks: linux_hooks(checks, &vgic, &link, &doorbell),
    });
    vcpu_loop(&run, 0);
    let _ = run.vm.shutdown();
    checks.check(
        "second physical CPU finished its vCPU",
        crate::smp::wait_idle(1, SECONDARY_TIMEOUT_NS),
    );
    let ms = (hal_aarch64::cpu::now_ns() - started) / 1_000_000;

    let stats = run.vm.stats();
    let g = vgic.stats();
    println!("[linux] guest ran {ms} ms; exits per boot: {}", stats.exits);
    println!(
        "[linux] virtual GIC: {} distributor and {} redistributor accesses ({} to registers \
         read as zero), {} SGI writes, {} forwarded hardware interrupts, {} kicks, {} \
         list-register overflows",
        g.distributor_accesses,
        g.redistributor_accesses,
        g.unknown_register_accesses,
        g.sgi_writes,
        g.hw_interrupts,
        g.kicks,
        g.list_register_overflows
    );
    println!(
        "[linux] {} nested faults mapped, {} spurious; {} data frames, {} table frames; {} \
         shootdowns, {} kicks",
        stats.faults_mapped,
        stats.faults_spurious,
        stats.data_frames,
        stats.table_frames,
        stats.shootdowns,
        stats.kicks
    );
    let db = doorbell.stats();
    println!(
        "[linux] doorbell: {} remap(s), the last in {} us",
        db.remaps,
        db.last_remap_ns / 1000
    );
    let mut out = String::new();
    platforms::host::write_kick_to_ack(
        &mut out,
        format_args!("[linux] doorbell shootdown"),
        stats.shootdown_last_ns,
    );
    crate::console::print_str(&out);
    match doorbell.verdict(run.vm.vcpu_count()) {
        Ok(()) => checks.check(
            "the probe remapped while both vCPUs ran, both read the new contents",
            true,
        ),
        Err(why) => {
            println!("[linux] doorbell: {why}");
            checks.check("doorbell remap seen by every vCPU", false);
        }
    }
    checks.check(
        "the guest took interrupts through the virtual GIC (timer and SGIs)",
        g.hw_interrupts > 0 && g.sgi_writes > 0,
    );
    checks.check(
        "the guest powered the VM off",
        run.vm.state() == vm_core::VmState::Stopped,
    );
    crate::hal::unregister_injector(run.vm.id());
    for irq in forwarded_spis(run.vm.config()) {
        gic::disable_spi(irq);
    }
    for cpu in 0..2 {
        gic::clear_active(cpu, VTIMER_PPI);
    }
    Ok(())
}

/// Cleans `[at, at + len)` of guest RAM to the point of coherency, page by page
/// through the stage-2 translation.
fn clean_for_guest(vm: &Vm<VCpu>, at: GuestPhysAddr, len: usize) {
    let start = at.as_usize() & !(PAGE_SIZE - 1);
    for page in (start..at.as_usize() + len).step_by(PAGE_SIZE) {
        if let Some(t) = vm.walk(GuestPhysAddr::from_usize(page)).translation() {
            hal_aarch64::cpu::sync_code_for_guest(t.hpa.as_usize(), PAGE_SIZE);
        }
    }
}

/// ICC_SGI1R_EL1, ICC_ASGI1R_EL1, ICC_SGI0R_EL1 (`S3_0_C12_C11_5/6/7`) as trapped.
fn sgi_register(addr: SysRegAddr) -> Option<SgiRegister> {
    [
        (SysRegAddr::arm(3, 0, 12, 11, 5), SgiRegister::Sgi1r),
        (SysRegAddr::arm(3, 0, 12, 11, 6), SgiRegister::Asgi1r),
        (SysRegAddr::arm(3, 0, 12, 11, 7), SgiRegister::Sgi0r),
    ]
    .into_iter()
    .find(|(a, _)| *a == addr)
    .map(|(_, r)| r)
}

/// The Linux run's hooks: checks printed and counted; no hypercall of the board's
/// (SMCCC calls outside PSCI are NOT_SUPPORTED); an unserved access ends the run
/// unless it hit the doorbell's probe while a remap had it unmapped (then retried);
/// SGI register writes go to the vGIC; the timer's and the PL011's interrupts are
/// forwarded.
fn linux_hooks(
    checks: &Arc<Checks>,
    vgic: &Arc<Vgic>,
    link: &Arc<VgicLink>,
    doorbell: &Arc<Doorbell<VCpu>>,
) -> Hooks<ArmStage2Ipa40> {
    let (c, sgis, irqs, link) = (checks.clone(), vgic.clone(), vgic.clone(), link.clone());
    let retry = doorbell.clone();
    Hooks {
        check: Arc::new(move |name: &str, ok: bool| c.check(name, ok)),
        hypercall: Arc::new(|_: &Arc<Run<ArmStage2Ipa40>>, vcpu, h| {
            println!("[linux] vCPU {vcpu}: hypercall {h:x?} not supported");
            FirmwareReply::Error(FirmwareError::NotSupported)
        }),
        unserved: Arc::new(move |_: &Vm<VCpu>, vcpu, a: &UnservedAccess| {
            platforms::linux::settle_unserved(&retry, vcpu, a, crate::console::print_str)
        }),
        sysreg: Arc::new(move |vcpu, access: &SysRegAccess| {
            match (access.op, sgi_register(access.addr)) {
                (SysRegOp::Write { value }, Some(reg)) => {
                    let _ = sgis.send_sgi(vcpu, reg, value);
                    Some(0)
                }
                _ => None,
            }
        }),
        interrupt: Arc::new(move |vcpu, intid| {
            intid != gic::KICK_SGI
                && intid != gic::MAINTENANCE_PPI
                && irqs.hw_interrupt(vcpu, intid) == Ok(true)
        }),
        cpu_up: Arc::new(move |run: &Run<ArmStage2Ipa40>, _| injection_check(run, &link)),
        console_keys: false,
    }
}

/// Linux's rescheduling IPI (SGI 0): a spare one only makes the target look at its
/// run queue.
const RESCHEDULE_SGI: usize = 0;

/// From the second physical CPU as vCPU 1 comes up (Linux on vCPU 0 has set up its
/// GIC: it is in `smp_init`): vCPU 0 is given a rescheduling IPI through
/// `Vm::inject_interrupt`, which must reach the vGIC through the vCPU
/// (`VirtualInterrupts::inject`) within a second, and one through
/// `VmHal::inject_irq`, which must be accepted; an unknown VM or INTID is refused.
fn injection_check(run: &Run<ArmStage2Ipa40>, link: &VgicLink) {
    let vm = &run.vm;
    let before = link.1.load(Ordering::SeqCst);
    let queued = vm.inject_interrupt(0, RESCHEDULE_SGI);
    let start = hal_aarch64::cpu::now_ns();
    while link.1.load(Ordering::SeqCst) == before
        && hal_aarch64::cpu::now_ns() - start < 1_000_000_000
    {
        core::hint::spin_loop();
    }
    let reached = link.1.load(Ordering::SeqCst) > before;
    let by_hal = <crate::hal::BoardHal as VmHal>::inject_irq(vm.id(), 0, RESCHEDULE_SGI);
    let refused = !<crate::hal::BoardHal as VmHal>::inject_irq(vm.id() + 1, 0, RESCHEDULE_SGI)
        && !<crate::hal::BoardHal as VmHal>::inject_irq(vm.id(), 0, 1020);
    println!(
        "[linux] SGI 0 to vCPU 0: Vm::inject_interrupt {queued:?}, reached the vGIC {reached}; \
         VmHal::inject_irq {by_hal}; unknown VM / INTID refused {refused}"
    );
    run.check(
        "Vm::inject_interrupt and VmHal::inject_irq reach the virtual GIC",
        queued.is_ok() && reached && by_hal && refused,
    );
}
