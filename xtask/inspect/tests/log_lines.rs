//! vm-core's log lines, captured with a test logger: `debug` for every mapping made
//! or removed (or re-flagged), with GPA range, size, HPA, flags and leaf sizes, and
//! `trace` for every nested fault the run loop handles, with GPA, access and
//! outcome. The troubleshooting guide tells people to look for these.

use std::sync::Mutex;

use addrspace::ArmStage2Ipa40;
use hal_mock::{Action, Op, Program, run_vm};
use inspect::build;
use vcpu_api::AccessWidth;
use vm_core::{GuestPhysAddr, MappingFlags, Populate};

mod common;

use common::board_config;

/// Every record, as `LEVEL message`.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{} {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture;

/// The lines logged by `f`.
fn captured(f: impl FnOnce()) -> Vec<String> {
    LINES.lock().unwrap_or_else(|e| e.into_inner()).clear();
    f();
    std::mem::take(&mut *LINES.lock().unwrap_or_else(|e| e.into_inner()))
}

fn has(lines: &[String], want: &str) {
    assert!(
        lines.iter().any(|l| l.contains(want)),
        "no line with {want:?} in\n{}",
        lines.join("\n")
    );
}

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

#[test]
fn mappings_log_at_debug_and_faults_at_trace() {
    log::set_logger(&LOGGER).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Trace);
    let (_, config) = board_config("qemu-virt-aarch64");
    // The guest: a write that faults a lazy page in, a read of the device without a
    // model, a write to the read-only page, then power-off.
    let program = Program::new().at(
        config.kernel.entry_point,
        vec![
            Op::Write {
                gpa: gpa(0x5000_2010),
                width: AccessWidth::Qword,
                value: 1,
            },
            Op::Read {
                gpa: gpa(0x0b00_0008),
                width: AccessWidth::Dword,
                reg: 1,
            },
            Op::Write {
                gpa: gpa(0x5100_0000),
                width: AccessWidth::Byte,
                value: 1,
            },
            Op::Shutdown,
        ],
    );
    let mut built = None;
    let lines =
        captured(|| built = Some(build::<ArmStage2Ipa40>(config, program).expect("builds")));
    let built = built.expect("built");
    has(
        &lines,
        "DEBUG VM 1: mapped kernel.memory_regions[0] [0x4000_0000, 0x4100_0000) 16 MiB: \
         [0x4000_0000, 0x4100_0000) allocated eagerly rwx, leaves 4096x4K",
    );
    has(
        &lines,
        "DEBUG VM 1: mapped kernel.memory_regions[1] [0x5000_0000, 0x5020_0000) 2 MiB: \
         [0x5000_0000, 0x5020_0000) allocated lazily rw-, leaves none",
    );
    has(
        &lines,
        "DEBUG VM 1: mapped pass-through [0x900_0000, 0x900_1000) 4 KiB: \
         [0x900_0000, 0x900_1000) -> HPA 0x900_0000 rw- device, leaves 1x4K",
    );
    has(
        &lines,
        "DEBUG VM 1: mapped test-device [0xb00_0000, 0xb00_1000) 4 KiB: \
         [0xb00_0000, 0xb00_1000) reserved (trap)",
    );

    let lines = captured(|| {
        run_vm(&built.machine, &built.vm, 1, |_, _, _| Action::Skip);
    });
    has(
        &lines,
        "TRACE VM 1 vCPU 0: write fault at 0x5000_2010: Mapped",
    );
    has(
        &lines,
        "TRACE VM 1 vCPU 0: read fault at 0xb00_0008: MMIO to the device at 0xb00_0000 (no model)",
    );
    has(
        &lines,
        "TRACE VM 1 vCPU 0: write fault at 0x5100_0000: PermissionViolation",
    );

    // Host-side changes: add RAM, load into lazy RAM, re-flag, remove.
    let vm = &built.vm;
    let lines = captured(|| {
        vm.map_region(
            gpa(0x6000_0000),
            0x20_0000,
            MappingFlags::RW,
            Populate::Eager,
        )
        .expect("map");
        vm.load_image(gpa(0x5000_4000), &[1; 0x1800]).expect("load");
        vm.protect_region(
            gpa(0x4000_0000),
            0x1000,
            MappingFlags::READ | MappingFlags::EXECUTE,
        )
        .expect("protect");
        vm.unmap_region(gpa(0x40f0_0000), 0x2000).expect("unmap");
    });
    has(
        &lines,
        "DEBUG VM 1: mapped RAM [0x6000_0000, 0x6020_0000) 2 MiB: [0x6000_0000, 0x6020_0000) allocated eagerly rw-, leaves",
    );
    has(
        &lines,
        "DEBUG VM 1: mapped 2 lazy page(s) of [0x5000_4000, 0x5000_5800) 6 KiB for a guest-memory copy: \
         [0x5000_4000, 0x5000_6000) allocated lazily rw-, leaves 2x4K",
    );
    has(
        &lines,
        "DEBUG VM 1: protected [0x4000_0000, 0x4000_1000) 4 KiB r-x (was [0x4000_0000, 0x4000_1000) \
         allocated eagerly rwx, leaves 1x4K; now [0x4000_0000, 0x4000_1000) allocated eagerly r-x, leaves 1x4K)",
    );
    has(
        &lines,
        "DEBUG VM 1: unmapped [0x40f0_0000, 0x40f0_2000) 8 KiB (was [0x40f0_0000, 0x40f0_2000) \
         allocated eagerly rwx, leaves 2x4K)",
    );

    // Below debug, none of it is built or logged.
    log::set_max_level(log::LevelFilter::Info);
    let lines = captured(|| vm.unmap_region(gpa(0x40f0_4000), 0x1000).expect("unmap"));
    assert!(lines.is_empty(), "{lines:?}");
}
