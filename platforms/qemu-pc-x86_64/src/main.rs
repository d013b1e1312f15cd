//! The QEMU pc x86_64 board: a multiboot hypervisor image that enables AMD SVM,
//! builds the test VM from its embedded config (`configs/qemu-pc-x86_64.toml`)
//! with vm-core, runs the self-checking test guest with nested paging, then the
//! fault-loop run (`loop`: the test VM's vCPU 0 on an empty nested table), prints
//! each check and `N passed, M failed`, and exits QEMU through `isa-debug-exit` (port
//! 0xf4): value 0x10 (status 33) when every check passed, 0x11 (status 35)
//! otherwise.
//!
//! Boot: `boot.rs` (32-bit multiboot entry to long mode, 4 GiB identity map);
//! memory: the multiboot memory map feeds `hal::FRAMES`, which backs the heap and
//! every VM frame; the run loop and scheduling of two vCPUs on one pCPU: `run.rs`.
//!
//! On the host this builds to a stub (the modules that do not touch hardware are
//! unit-tested there).

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod hal;
mod layout;
#[cfg(target_os = "none")]
mod run;

include!(concat!(env!("OUT_DIR"), "/vm_config.rs"));

/// `isa-debug-exit` port and the values written there.
#[cfg(target_os = "none")]
mod exit {
    pub(crate) const PORT: u16 = 0xf4;
    /// QEMU exits with status (0x10 << 1) | 1 = 33.
    pub(crate) const SUCCESS: u32 = 0x10;
    /// QEMU exits with status (0x11 << 1) | 1 = 35.
    pub(crate) const FAILURE: u32 = 0x11;
}

/// The heap for `alloc` (vm-core's VMs, areas, devices), as on the other boards.
#[cfg(target_os = "none")]
#[global_allocator]
static HEAP: buddy_system_allocator::LockedHeap<32> = buddy_system_allocator::LockedHeap::empty();

/// Heap size, taken from the frame allocator at boot.
#[cfg(target_os = "none")]
const HEAP_BYTES: usize = 8 << 20;

#[cfg(target_os = "none")]
unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Called by `boot.rs` in long mode with the multiboot loader's EAX and EBX.
#[cfg(target_os = "none")]
extern "C" fn hv_main(eax: u32, info_pa: u32) -> ! {
    use addrspace::{FrameAllocator, HostPhysAddr};
    use hal_x86_64::multiboot::{BootInfo, memory_map};

    console::init();
    println!("hvcore x86_64: QEMU pc board, AMD SVM + nested paging");
    // SAFETY: the loader's boot information is in identity-mapped low memory and
    // at least `BootInfo::LEN` bytes long; we only read it.
    let info = unsafe { core::slice::from_raw_parts(info_pa as usize as *const u8, BootInfo::LEN) };
    let info = match BootInfo::parse(eax, info) {
        Ok(i) => i,
        Err(e) => fail(format_args!("multiboot: {e:?}")),
    };
    // SAFETY: as above, for the memory map the loader placed in low memory.
    let mmap = unsafe {
        core::slice::from_raw_parts(
            info.mmap_addr as usize as *const u8,
            info.mmap_length as usize,
        )
    };
    let hpa = |a: u64| HostPhysAddr::from_usize(vcpu_api::usize_of(a));
    for r in memory_map(mmap).filter(|r| r.available) {
        // SAFETY: the loader reports these ranges as available RAM; the parts in use
        // (low memory, the image) are taken out again just below, before anything
        // is allocated.
        unsafe { hal::FRAMES.add_free(hpa(r.base), hpa(r.base.saturating_add(r.len))) };
    }
    // Low memory (BIOS data, the boot information) and the image stay out.
    hal::FRAMES.remove(hpa(0), hpa(0x10_0000));
    // Linker symbols: only their addresses are used.
    let (start, end) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    );
    hal::FRAMES.remove(hpa(start), hpa(end));
    println!(
        "memory: image {start:#x}..{end:#x}, {} free frames",
        hal::FRAMES.free_frames()
    );
    let Some(heap) = hal::FRAMES.alloc_frames(HEAP_BYTES / 4096, 1) else {
        fail(format_args!("no {HEAP_BYTES} bytes for the heap"));
    };
    // SAFETY: frames just taken from the allocator for good, identity-mapped.
    unsafe { HEAP.lock().init(heap.as_usize(), HEAP_BYTES) };

    // SAFETY: CPL 0 on bare metal; FRAMES hands out frames we own.
    match unsafe { hal_x86_64::cpu::enable(&hal::FRAMES) } {
        Ok(cpu) => println!("svm: {:?}", cpu.features),
        Err(e) => fail(format_args!("svm: {e}")),
    }
    println!(
        "zero_memory: {:?} lines from {} KiB",
        hal_x86_64::LineZeroing::current(),
        hal_x86_64::zero::STREAM_MIN >> 10
    );
    let runs = [
        run::run_test_vm(),
        run::run_fault_loop_vm(),
        platforms::host::run_frame_zeroing("zero", &hal::FRAMES, console::print_str),
    ];
    let summary = platforms::monitor::Summary {
        passed: runs.iter().map(|r| r.0).sum(),
        failed: runs.iter().map(|r| r.1).sum(),
    };
    println!("{summary}");
    exit(summary.failed == 0 && summary.passed > 0)
}

#[cfg(target_os = "none")]
fn exit(ok: bool) -> ! {
    let value = if ok { exit::SUCCESS } else { exit::FAILURE };
    // SAFETY: the isa-debug-exit port ends QEMU; no memory effect.
    unsafe { hal_x86_64::serial::outl(exit::PORT, value) };
    loop {
        // SAFETY: stops the CPU if QEMU has no debug-exit device.
        unsafe { core::arch::asm!("cli", "hlt") };
    }
}

#[cfg(target_os = "none")]
fn fail(args: core::fmt::Arguments<'_>) -> ! {
    println!("fatal: {args}");
    println!("0 passed, 1 failed");
    exit(false)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("panic: {info}"))
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("qemu-pc-x86_64 is a bare-metal image: use `cargo xtask qemu x86_64`");
}
