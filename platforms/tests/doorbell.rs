//! The doorbell device on a VM of mock vCPUs: the probe's first contents, a ring
//! that replaces its frames and contents, the reports and the verdict, and the
//! registers' refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use addrspace::{GuestPhysAddr, PAGE_SIZE, Sv39x4};
use hal_mock::{GuestLog, Machine, MockFaults, MockVm, Program, ram_config, try_mock_vm};
use platforms::doorbell::{
    DOORBELL_DEVICE, Doorbell, DoorbellHost, EXPECTED, REPORT, RING, probe_word,
};
use vcpu_api::AccessWidth;
use vm_core::{DeviceError, MapType, MappingFlags, MmioDevice, Populate};

const RAM: usize = 0x8000_0000;
const PROBE: usize = 0xc000_0000;
const PROBE_SIZE: usize = 16 * PAGE_SIZE;
const DOORBELL: usize = 0x0b00_0000;

/// The vCPU the test pretends to run on (what the board's HAL would say).
static VCPU: AtomicUsize = AtomicUsize::new(0);

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

fn vm() -> Arc<MockVm<Sv39x4>> {
    let config = ram_config(1, "doorbell", 2, gpa(RAM), 0x10_0000)
        .memory_region(
            gpa(PROBE),
            PROBE_SIZE,
            MappingFlags::RW,
            MapType::Alloc,
            Populate::Eager,
        )
        .emu_device(
            DOORBELL_DEVICE,
            gpa(DOORBELL),
            0x1000,
            0,
            0,
            &[PROBE, PROBE_SIZE],
        )
        .build()
        .unwrap();
    let log = Arc::new(GuestLog::default());
    try_mock_vm(config, Program::new(), &log, MockFaults::default()).unwrap()
}

fn doorbell() -> Arc<Doorbell<hal_mock::MockVCpu<Sv39x4>>> {
    Doorbell::new(
        gpa(PROBE),
        PROBE_SIZE,
        DoorbellHost {
            now_ns: || 0,
            current_vcpu: || Some(VCPU.load(Ordering::SeqCst)),
        },
    )
}

fn word(vm: &MockVm<Sv39x4>, page: usize) -> u64 {
    vm.read_from_guest_of::<u64>(gpa(PROBE + page * PAGE_SIZE))
        .unwrap()
}

/// Attaching writes epoch 0 into every page; ringing replaces the probe's frames
/// (the data frames stay as many, the old ones freed) with epoch 1; the reports of
/// both vCPUs with the new word pass the verdict, a stale one fails it.
#[test]
fn ring_remaps_the_probe_with_new_contents() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm();
    let db = doorbell();
    db.attach(&vm).unwrap();
    for page in [0, 1, 15] {
        assert_eq!(word(&vm, page), probe_word(0, page as u64));
    }
    let frames = vm.stats().data_frames;
    assert_eq!(db.read(RING, AccessWidth::Qword), Ok(0));
    assert_eq!(db.read(EXPECTED, AccessWidth::Qword), Ok(probe_word(0, 0)));
    assert!(db.verdict(2).is_err(), "never rang");

    db.write(RING, AccessWidth::Qword, 1).unwrap();
    for page in [0, 1, 15] {
        assert_eq!(word(&vm, page), probe_word(1, page as u64));
    }
    assert_eq!(vm.stats().data_frames, frames, "the old frames were freed");
    assert!(vm.stats().shootdowns >= 1, "the unmap was shot down");
    assert_eq!(db.read(RING, AccessWidth::Qword), Ok(1));
    assert_eq!(db.read(EXPECTED, AccessWidth::Qword), Ok(probe_word(1, 0)));
    let s = db.stats();
    assert_eq!((s.remaps, s.error.as_deref()), (1, None));

    VCPU.store(0, Ordering::SeqCst);
    db.write(REPORT, AccessWidth::Qword, probe_word(1, 0))
        .unwrap();
    assert!(
        db.verdict(2)
            .unwrap_err()
            .contains("vCPU 1 reported nothing")
    );
    VCPU.store(1, Ordering::SeqCst);
    db.write(REPORT, AccessWidth::Qword, probe_word(0, 0))
        .unwrap();
    let why = db.verdict(2).unwrap_err();
    assert!(why.contains("vCPU 1 read 0x4856435000000000"), "{why}");
    db.write(REPORT, AccessWidth::Qword, probe_word(1, 0))
        .unwrap();
    assert_eq!(db.verdict(2), Ok(()));
    assert_eq!(db.stats().reports.len(), 3);
}

/// Regression (a Linux run ended with "vCPU 1: unserved Read at GPA:0xc0000000
/// (NoArea)"): vCPU 1 read the probe in the moment the ring had it unmapped and the
/// board ended the VM. Such an access is retried: inside the probe once a remap
/// began, never outside it, never before a ring, never after a failed remap.
#[test]
fn an_access_to_the_probe_during_a_remap_is_retried() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm();
    let db = doorbell();
    db.attach(&vm).unwrap();
    assert!(!db.retries(gpa(PROBE)), "no remap yet: a real fault");
    db.write(RING, AccessWidth::Qword, 1).unwrap();
    for at in [PROBE, PROBE + 8, PROBE + PROBE_SIZE - 1] {
        assert!(db.retries(gpa(at)), "{at:#x}");
    }
    for at in [PROBE - 1, PROBE + PROBE_SIZE, RAM, usize::MAX] {
        assert!(!db.retries(gpa(at)), "{at:#x}");
    }
    drop(vm);
    db.write(RING, AccessWidth::Qword, 1).unwrap();
    assert!(db.stats().error.is_some());
    assert!(
        !db.retries(gpa(PROBE)),
        "the failed remap may leave it unmapped"
    );
}

/// Only 8-byte accesses to the three registers; the report register is
/// write-only and the expected word read-only.
#[test]
fn registers_refuse_other_accesses() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm();
    let db = doorbell();
    db.attach(&vm).unwrap();
    assert_eq!(
        db.read(RING, AccessWidth::Dword),
        Err(DeviceError::NoRegister {
            offset: RING,
            width: AccessWidth::Dword
        })
    );
    assert_eq!(
        db.write(RING, AccessWidth::Byte, 1),
        Err(DeviceError::NoRegister {
            offset: RING,
            width: AccessWidth::Byte
        })
    );
    assert_eq!(
        db.read(REPORT, AccessWidth::Qword),
        Err(DeviceError::Denied { offset: REPORT })
    );
    assert_eq!(
        db.write(EXPECTED, AccessWidth::Qword, 0),
        Err(DeviceError::Denied { offset: EXPECTED })
    );
    assert_eq!(
        db.read(0x18, AccessWidth::Qword),
        Err(DeviceError::NoRegister {
            offset: 0x18,
            width: AccessWidth::Qword
        })
    );
    assert_eq!(db.stats().remaps, 0, "nothing rang");
}

/// A ring after the VM is gone records the error instead of panicking.
#[test]
fn ring_without_a_vm_is_an_error_not_a_panic() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let db = doorbell();
    {
        let vm = vm();
        db.attach(&vm).unwrap();
    }
    db.write(RING, AccessWidth::Qword, 1).unwrap();
    let s = db.stats();
    assert_eq!(s.remaps, 0);
    assert!(s.error.is_some());
    assert!(db.verdict(2).unwrap_err().contains("a remap failed"));
}
