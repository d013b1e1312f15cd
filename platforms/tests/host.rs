//! `platforms::host` on VMs of mock vCPUs: what the boards print on request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::sync::Arc;

use addrspace::testing::PoolAllocator;
use addrspace::{
    FRAME_SIZE, FrameAllocator, GuestPhysAddr, HostPhysAddr, HostVirtAddr, PAGE_SIZE, Sv39x4,
};
use hal_mock::{GuestLog, Machine, MockFaults, MockVm, Op, Program, ram_config, try_mock_vm};
use platforms::host::{ConsoleRequests, SharedMonitor, check_fault_loop, check_frame_zeroing};
use vm_core::VmState;

const RAM: usize = 0x8000_0000;

fn gpa(v: usize) -> GuestPhysAddr {
    GuestPhysAddr::from_usize(v)
}

/// A VM with id `id` and 1 MiB of eager RAM, its vCPU running `program`.
fn vm_running(id: usize, program: Program) -> Arc<MockVm<Sv39x4>> {
    let config = ram_config(id, "host", 1, gpa(RAM), 0x10_0000)
        .build()
        .unwrap();
    let log = Arc::new(GuestLog::default());
    try_mock_vm(config, program, &log, MockFaults::default()).unwrap()
}

/// A VM with id `id` and 1 MiB of eager RAM.
fn vm(id: usize) -> Arc<MockVm<Sv39x4>> {
    vm_running(id, Program::new())
}

/// Regression (issue 15: the dump a running board printed showed "VMID field 0: the
/// caller did not say which VMID the HAL gave the VM"): `diagnose` passes the
/// HAL's VMID of the VM, here the second one the machine handed out.
#[test]
fn diagnose_shows_the_vmid_the_hal_gave_the_vm() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let _first = vm(1);
    let second = vm(7);
    let vmid = machine.vmid_of(7).unwrap();
    assert_eq!(vmid, 2);
    let mut out = String::new();
    let mapped = platforms::host::diagnose(&second, (RAM + 0x1000) as u64, None, &mut out);
    assert_eq!(mapped, 1);
    assert!(out.contains(&format!("(VMID {vmid})")), "{out}");
    assert!(!out.contains("VMID field 0"), "{out}");
}

/// Console keys: `d` prints the map, `w<hex>` Enter the walk of that address and
/// the map, with the HAL's VMID; other bytes are ignored.
#[test]
fn console_keys_print_the_map_and_a_walk() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm(3);
    let requests = ConsoleRequests::new();
    let mut typed = b"xdw0x8000_1000\r".iter().copied();
    let mut out = String::new();
    assert_eq!(requests.poll(&vm, "t", || typed.next(), &mut out), 2);
    assert!(
        out.contains("[t] console: map of VM 3 on request (key d)"),
        "{out}"
    );
    assert!(
        out.contains("[t] console: walk of 0x80001000 in VM 3 on request"),
        "{out}"
    );
    assert_eq!(
        out.matches("=== end of diagnostics ===").count(),
        2,
        "{out}"
    );
    assert!(out.contains("(VMID 1)"), "{out}");
    // The walk of a mapped page reaches its leaf (the first report has no walk).
    let walk = &out[out.find("console: walk").unwrap()..];
    assert!(walk.contains("0x80001000"), "{walk}");
    let mut nothing = core::iter::empty();
    assert_eq!(requests.poll(&vm, "t", || nothing.next(), &mut out), 0);
}

/// The boards' fault-loop check on a mock vCPU: pointed at an empty table, its
/// first fetch faults on a page the VM maps until the detector stops the VM; the
/// report and a passed check are printed.
#[test]
fn fault_loop_check_stops_a_vcpu_walking_an_empty_table() {
    let machine = Machine::with_defaults();
    let _g = machine.enter(0);
    let vm = vm_running(5, Program::new().at(gpa(RAM), vec![Op::Shutdown]));
    // Sv39x4's root: 16 KiB, 16 KiB-aligned; zero it (the pool does not).
    let root = machine.alloc_frames(4, 4).unwrap();
    let hva = machine.phys_to_virt(root).as_usize() as *mut u8;
    // SAFETY: the four frames were just allocated for this test and nothing else
    // uses them.
    unsafe { core::ptr::write_bytes(hva, 0, 4 * PAGE_SIZE) };
    vm.boot().unwrap();
    static PRINTED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let monitor = SharedMonitor::new("loop", |s| PRINTED.lock().unwrap().push_str(s));
    assert!(check_fault_loop(&vm, root, &monitor, || vm.run_vcpu(0)));
    assert_eq!(vm.state(), VmState::Stopped);
    let out = PRINTED.lock().unwrap().clone();
    assert!(
        out.contains("fault loop: vCPU 0 faulted 16 times in a row"),
        "{out}"
    );
    assert!(out.contains("[loop] ok   fault-loop detector"), "{out}");
    assert!(out.contains("=== end of diagnostics ==="), "{out}");
    assert_eq!(monitor.finish_host(), (1, 0));
}

/// How [`BadZero`] gets zeroing wrong.
#[derive(Clone, Copy, Debug)]
enum Bad {
    Skips,
    LastByteLeft,
    OneByteOver,
}

/// A pool whose `zero_frames` is wrong in a given way, for the zeroing check to catch.
struct BadZero {
    pool: PoolAllocator,
    bad: Bad,
}

// SAFETY: test only: every call is the pool's but `zero_frames`, which breaks its
// promise on purpose (within the frames the check allocated plus the guard frame
// after them); no guest ever gets these frames.
unsafe impl FrameAllocator for BadZero {
    fn alloc_frames(&self, count: usize, align_frames: usize) -> Option<HostPhysAddr> {
        self.pool.alloc_frames(count, align_frames)
    }
    unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
        // SAFETY: the caller's promise is the pool's.
        unsafe { self.pool.dealloc_frames(hpa, count) }
    }
    fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
        self.pool.phys_to_virt(hpa)
    }
    unsafe fn zero_frames(&self, hpa: HostPhysAddr, count: usize) {
        let p = self.phys_to_virt(hpa).as_mut_ptr::<u8>();
        let len = count * FRAME_SIZE;
        // SAFETY: the check holds these frames and the guard frame after them.
        unsafe {
            match self.bad {
                Bad::Skips => {}
                Bad::LastByteLeft => p.write_bytes(0, len - 1),
                Bad::OneByteOver => p.write_bytes(0, len + 1),
            }
        }
    }
}

/// The boards' zeroing check passes an allocator that zeroes exactly what it is
/// asked to, and fails one that skips, stops short or writes past the frames.
#[test]
fn frame_zeroing_check_catches_wrong_zeroing() {
    let pool = PoolAllocator::new(64);
    assert!(check_frame_zeroing(&pool));
    assert_eq!(pool.in_use(), 0);
    for bad in [Bad::Skips, Bad::LastByteLeft, Bad::OneByteOver] {
        let z = BadZero {
            pool: PoolAllocator::new(64),
            bad,
        };
        assert!(!check_frame_zeroing(&z), "{bad:?} not caught");
        assert_eq!(z.pool.in_use(), 0);
    }
}
