//! The QEMU virt riscv64 board: a hypervisor image that OpenSBI starts in HS-mode
//! (`qemu-system-riscv64 -M virt -cpu rv64,h=true -smp 2`), builds the test VM from its
//! embedded config (`configs/qemu-virt-riscv64.toml`) with vm-core twice, once with
//! Sv39x4 and once with Sv48x4 G-stage tables, runs the self-checking test guest in
//! VS-mode, prints each check and the closing `N passed, M failed`, and powers QEMU
//! off through the SiFive test device: status 0 when every check passed, 1 otherwise
//! (2 on a panic).
//!
//! Boot: `boot.rs` (stacks, `tp` = hart id); memory: the RAM between the image and the
//! DTB feeds `hal::FRAMES`, which backs the heap and every VM frame; the second hart
//! and why vCPU 1 runs there: `harts.rs`; the runs: `run.rs`.
//!
//! On the host this builds to a stub (the modules that do not touch hardware are
//! unit-tested there).

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![cfg_attr(
    not(all(target_os = "none", target_arch = "riscv64")),
    allow(dead_code)
)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod boot;
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod console;
mod guest_dt;
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod hal;
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod harts;
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod linux;
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod run;

include!(concat!(env!("OUT_DIR"), "/vm_config.rs"));
include!(concat!(env!("OUT_DIR"), "/guest_image.rs"));
include!(concat!(env!("OUT_DIR"), "/linux_images.rs"));

#[cfg(all(target_os = "none", target_arch = "riscv64"))]
#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::empty();

/// Frames taken from the pool for the heap (4 MiB).
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
const HEAP_FRAMES: usize = 1024;

#[cfg(all(target_os = "none", target_arch = "riscv64"))]
unsafe extern "C" {
    static __image_end: u8;
}

/// The boot hart's Rust entry (from `_start`), with OpenSBI's a0 (hart id) and a1
/// (the DTB's physical address).
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
extern "C" fn hv_main(hart: u64, dtb: u64) -> ! {
    use addrspace::{FRAME_SIZE, FrameAllocator, HostPhysAddr, usize_of};
    use console::println;

    // a0 and a1 from OpenSBI: the boot hart's id and the DTB's physical address.
    let dtb = usize_of(dtb);

    println!(
        "hvcore riscv64: QEMU virt board, HS-mode with G-stage translation (boot hart {hart})"
    );
    // QEMU places the DTB at the top of RAM and OpenSBI below our image: the RAM in
    // between is free. Check the DTB's magic (0xd00dfeed, big-endian) before
    // trusting its address as the end of RAM.
    // SAFETY: a1 from OpenSBI is the DTB's physical address, readable RAM.
    let magic = unsafe { core::ptr::read_volatile(dtb as *const u32) };
    if u32::from_be(magic) != 0xd00d_feed {
        fail(format_args!("no DTB at a1 = {dtb:#x} (magic {magic:#x})"));
    }
    let start = HostPhysAddr::from_usize(core::ptr::addr_of!(__image_end) as usize);
    let end = HostPhysAddr::from_usize(dtb & !(FRAME_SIZE - 1));
    // SAFETY: the RAM between the image's end and the DTB (at the top of RAM) is
    // used by nothing else: OpenSBI sits below the image. It reads as zero: QEMU
    // zero-fills guest RAM (a fresh anonymous mapping, never reset: `-no-reboot`),
    // its loader writes only OpenSBI and the image's segments below `start` and the
    // DTB at `end` and above (OpenSBI grows it in place, upwards), its reset
    // vector lives in ROM, and the stacks (`.stacks`) are in the image. So guest
    // frames from it are not zeroed again.
    unsafe { hal::FRAMES.add_free_zeroed(start, end) };
    let (_, window_end) = hal::FRAMES.phys_range();
    if end > window_end {
        println!("memory: RAM past {window_end:?} is beyond the frame pool's window");
    }
    let frames = hal::FRAMES.free_frames();
    println!(
        "memory: {frames} frames ({} MiB) free in [{start:?}, {end:?})",
        (frames * FRAME_SIZE) >> 20
    );
    let Some(heap) = hal::FRAMES.alloc_frames(HEAP_FRAMES, 1) else {
        fail(format_args!("no room for the heap"));
    };
    // SAFETY: the frames were just taken from the pool for the heap alone and are
    // RAM (identity-mapped: satp is Bare).
    unsafe { HEAP.lock().init(heap.as_usize(), HEAP_FRAMES * FRAME_SIZE) };
    console::init_log(log::LevelFilter::Warn);

    let info = match hal_riscv64::init_hart() {
        Ok(info) => info,
        Err(e) => fail(format_args!("hart {hart} cannot run guests: {e}")),
    };
    println!(
        "hart {hart}: Sv39x4 {}, Sv48x4 {}, {} VMID bits, Sstc {}",
        yes(info.sv39x4),
        yes(info.sv48x4),
        info.vmid_bits,
        yes(info.sstc)
    );
    let second = harts::start_second_hart(usize_of(hart));
    match second {
        Some(h) => println!("hart {h}: started for the second vCPU"),
        None => println!("no second hart: the second vCPU cannot run (use -smp 2)"),
    }

    // SAFETY: OpenSBI's DTB at a1 (its magic checked above) lies above the frame
    // pool and stays untouched; its header's totalsize bounds it.
    let host_dtb = unsafe {
        let size = u32::from_be(core::ptr::read_volatile((dtb + 4) as *const u32));
        core::slice::from_raw_parts(dtb as *const u8, size as usize)
    };
    let linux = crate::vm_config().is_ok_and(|c| c.vm_type == vm_core::VmType::Linux);
    let (passed, failed) = if linux {
        linux::run(&info, second, host_dtb)
    } else {
        run::run_all(&info, second, host_dtb)
    };
    println!("{}", platforms::monitor::Summary { passed, failed });
    boot::power_off(if failed == 0 && passed > 0 { 0 } else { 1 })
}

/// The embedded VM config with its device-tree references resolved against
/// OpenSBI's tree `host_dtb` (`platforms::board_config`); the error says which.
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
fn board_config(host_dtb: &[u8]) -> Result<vm_core::VmConfig, alloc::string::String> {
    let mut config = vm_config().map_err(|e| alloc::format!("embedded VM config: {e}"))?;
    platforms::board_config::resolve_device_trees(&mut config, host_dtb, None)
        .map_err(|e| alloc::format!("embedded VM config against the host device tree: {e}"))?;
    Ok(config)
}

#[cfg(all(target_os = "none", target_arch = "riscv64"))]
fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Prints why the hypervisor cannot go on, then powers off with status 1.
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
fn fail(why: core::fmt::Arguments<'_>) -> ! {
    console::println!("hvcore riscv64: {why}");
    console::println!("{FAILED}");
    boot::power_off(1)
}

/// The closing line of a run that could not happen.
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
const FAILED: platforms::monitor::Summary = platforms::monitor::Summary {
    passed: 0,
    failed: 1,
};

#[cfg(all(target_os = "none", target_arch = "riscv64"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::print_panic(format_args!(
        "hvcore riscv64: panic on hart {}: {info}\n{FAILED}\n",
        boot::hart_id()
    ));
    boot::power_off(2)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("qemu-virt-riscv64 runs under QEMU: use `cargo xtask qemu riscv64`");
}
