//! The QEMU virt aarch64 board: a hypervisor that boots at EL2 (`-M
//! virt,virtualization=on -cpu max`), runs the self-checking test guest twice, once
//! with a 40-bit IPA (3-level stage 2 from two concatenated level-1 tables) and once
//! with a 48-bit IPA (4 levels), prints each check and `N passed, M failed`, and
//! ends QEMU with status 0 only when every check passed (semihosting SYS_EXIT).
//! Built with the Linux config (`cargo xtask qemu aarch64 --guest linux`) it runs
//! Debian's arm64 Linux instead, on two vCPUs with a virtual GICv3.
//!
//! - `boot`: entry at EL2, per-CPU stacks, the EL2 identity map (MMU and caches on).
//! - `console`: the PL011, shared by both physical CPUs and the guests.
//! - `fdt`: the RAM size from QEMU's device tree, and the blob cut to its size.
//! - `config`: the embedded VM config with its host device-tree references resolved
//!   against QEMU's tree.
//! - `hal`: the frame pool (`addrspace::BitmapFrames`) and the `vm_core::VmHal`
//!   implementation.
//! - `gic`: the physical GICv3: SGIs for kicks, the maintenance interrupt, the
//!   forwarded virtual timer and pass-through SPIs, priority drop apart from
//!   deactivation.
//! - `smp`: the second physical CPU, which runs the guest's second vCPU.
//! - `run`: the vCPU loop of every run, and the test guest's runs through
//!   `vm_core::Vm` and `platforms::monitor`.
//! - `linux`: the Linux run (vGIC, doorbell, figures); `guest_dt`: its device tree.
//! - `layout`: the test VM's layout (`platforms::layouts`) and the check that the
//!   embedded VM config builds it; the emulated device is `platforms::host::TestDevice`.
//!
//! On the host this builds to a stub that says how to run it, plus the unit tests of
//! the portable modules.

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

extern crate alloc;

#[cfg(target_os = "none")]
mod boot;
mod config;
#[cfg(target_os = "none")]
mod console;
mod fdt;
#[cfg(target_os = "none")]
mod gic;
mod guest_dt;
#[cfg(target_os = "none")]
mod hal;
mod layout;
#[cfg(target_os = "none")]
mod linux;
#[cfg(target_os = "none")]
mod run;
#[cfg(target_os = "none")]
mod smp;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("qemu-virt-aarch64 boots under QEMU: use `cargo xtask qemu aarch64`");
}

#[cfg(target_os = "none")]
pub(crate) use bare_metal::{primary_main, secondary_main};

#[cfg(target_os = "none")]
mod bare_metal {
    //! The boot path, the exit path and the panic handler.

    use core::sync::atomic::{AtomicBool, Ordering};

    use addrspace::{ArmStage2Ipa40, ArmStage2Ipa48, HostPhysAddr, usize_of};
    use buddy_system_allocator::LockedHeap;
    use hal_aarch64::PsciConduit;
    use platforms::monitor::Summary;

    use crate::{boot, console, fdt, gic, hal, linux, println, run, smp};

    /// QEMU virt RAM base; QEMU puts the DTB there when the image is linked higher.
    const RAM_BASE: usize = 0x4000_0000;
    /// RAM size when the DTB cannot be read (`-m 512M`, what xtask passes).
    const DEFAULT_RAM_SIZE: usize = 0x2000_0000;
    /// The heap for `alloc` (vm-core's VMs, areas, devices), right after the image.
    const HEAP_SIZE: usize = 0x80_0000;

    #[global_allocator]
    static HEAP: LockedHeap<32> = LockedHeap::empty();

    /// CPU 0 from `_start`, at EL2 with a stack and a clear .bss.
    pub(crate) extern "C" fn primary_main() -> ! {
        // SAFETY: first thing at EL2 on this CPU; the identity map keeps addresses.
        unsafe { boot::enable_el2_mmu() };
        console::Pl011::init();
        let el = hal_aarch64::cpu::current_el();
        if el != 2 {
            println!(
                "qemu-virt-aarch64: running at EL{el}, not EL2: start QEMU with -M virt,virtualization=on"
            );
            exit(3);
        }
        let heap = boot::image_end();
        // SAFETY: [heap, heap + HEAP_SIZE) is RAM after the image that nothing else
        // uses: the frame pool starts after it.
        unsafe { HEAP.lock().init(heap, HEAP_SIZE) };
        console::init_logger();
        // SAFETY: QEMU leaves the DTB at the RAM base (1 MiB at most, below the image),
        // and nothing writes there.
        let dtb = unsafe { core::slice::from_raw_parts(RAM_BASE as *const u8, 0x10_0000) };
        match fdt::trim(dtb) {
            Ok(blob) => run::set_host_dtb(blob),
            Err(e) => println!("qemu-virt-aarch64: no device tree from QEMU ({e:?})"),
        }
        let (ram_base, ram_size) = match fdt::memory(dtb) {
            Ok((base, size)) => (usize_of(base), usize_of(size)),
            Err(e) => {
                println!("qemu-virt-aarch64: no RAM size from the DTB ({e:?}), assuming 512 MiB");
                (RAM_BASE, DEFAULT_RAM_SIZE)
            }
        };
        let (pool, ram_end) = (heap + HEAP_SIZE, ram_base + ram_size);
        // SAFETY: RAM from the end of the heap (which follows the image) to the end
        // of RAM is used by nothing else: QEMU keeps the DTB below the image. It
        // reads as zero: QEMU zero-fills guest RAM (a fresh anonymous mapping, never
        // reset: `-no-reboot`) and its loader writes only the ELF image's segments
        // and the DTB at the RAM base, all below; the stacks (`.stacks`) are in the
        // image and the heap is below `pool`, and nothing ran on this RAM before.
        // So guest frames from it are not zeroed again.
        unsafe {
            hal::FRAMES.add_free_zeroed(
                HostPhysAddr::from_usize(pool),
                HostPhysAddr::from_usize(ram_end),
            )
        };
        let (_, window_end) = hal::FRAMES.phys_range();
        if ram_end > window_end.as_usize() {
            println!(
                "qemu-virt-aarch64: RAM past {window_end:?} is beyond the frame pool's window"
            );
        }
        // SAFETY: at EL2 on CPU 0, before any guest.
        unsafe { hal_aarch64::cpu::init_cpu() };
        gic::init_distributor();
        gic::init_cpu(0);
        println!(
            "qemu-virt-aarch64: hypervisor at EL2, RAM {:#x}..{:#x}, frame pool {} frames",
            ram_base,
            ram_base + ram_size,
            hal::free_frames()
        );
        // The embedded config says which guest: Linux (`cargo xtask qemu aarch64
        // --guest linux`) or the test guest, twice.
        let runs = match run::board_config() {
            Ok(config) if config.vm_type == vm_core::VmType::Linux => {
                alloc::vec![linux::run(config)]
            }
            Err(e) => {
                println!("qemu-virt-aarch64: {e}");
                alloc::vec![(0, 1)]
            }
            Ok(_) => alloc::vec![
                run::run_test_vm::<ArmStage2Ipa40>("ipa40", 1, PsciConduit::Smc),
                run::run_test_vm::<ArmStage2Ipa48>("ipa48", 2, PsciConduit::Hvc),
                run::run_fault_loop_vm::<ArmStage2Ipa40>("loop", 3),
                platforms::host::run_frame_zeroing("zero", &hal::FRAMES, console::print_str),
            ],
        };
        let summary = Summary {
            passed: runs.iter().map(|r| r.0).sum(),
            failed: runs.iter().map(|r| r.1).sum(),
        };
        println!("{summary}");
        exit(if summary.failed == 0 && summary.passed > 0 {
            0
        } else {
            1
        })
    }

    /// The other CPUs, from PSCI CPU_ON, at EL2 on their own stack.
    pub(crate) extern "C" fn secondary_main() -> ! {
        // SAFETY: first thing at EL2 on this CPU, as on CPU 0.
        unsafe {
            boot::enable_el2_mmu();
            hal_aarch64::cpu::init_cpu();
        }
        smp::secondary_work(hal_aarch64::cpu::cpu_id())
    }

    static EXITING: AtomicBool = AtomicBool::new(false);

    /// Ends QEMU with `code` as its exit status: semihosting SYS_EXIT
    /// (ADP_Stopped_ApplicationExit with a status, `-semihosting`), else PSCI
    /// SYSTEM_OFF (status 0: xtask still reads the summary line).
    pub(crate) fn exit(code: u32) -> ! {
        if !EXITING.swap(true, Ordering::SeqCst) {
            let block: [u64; 2] = [0x2_0026, u64::from(code)];
            // SAFETY: the semihosting call reads the two-word block and ends QEMU;
            // x0 = SYS_EXIT (0x18), x1 = the block.
            unsafe {
                core::arch::asm!(
                    "hlt #0xf000",
                    in("x0") 0x18u64,
                    in("x1") block.as_ptr(),
                    options(nostack)
                );
            }
        }
        // SAFETY: powering the machine off is all that is left.
        unsafe {
            hal_aarch64::cpu::firmware_psci([u64::from(hal_aarch64::firmware::SYSTEM_OFF), 0, 0, 0])
        };
        loop {
            core::hint::spin_loop();
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        console::print_unlocked(format_args!(
            "\nqemu-virt-aarch64: panic on CPU {}: {info}\n",
            hal_aarch64::cpu::cpu_id()
        ));
        exit(2)
    }
}
