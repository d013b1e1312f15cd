//! VM configs: TOML text (the corpus starts from the project's configs and axvisor's)
//! and structured edits of real configs, through parsing, validation, the
//! `to_rust_source` text round trip and `Vm::new` on hal-mock for every nested format
//! (with frames failing at any point), with every frame back after the VM drops.
//!
//! Input: bytes starting with an ASCII byte are TOML text; otherwise the rest picks a
//! base config and a list of edits.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use hvcore_fuzz::{codegen, vm};
use libfuzzer_sys::fuzz_target;
use vm_core::{
    DeviceSpace, EmuDeviceConfig, GuestPhysAddr, HostPhysAddr, MapType, MappingFlags,
    MemoryRegionConfig, PassthroughDeviceConfig, Populate, VmConfig,
};

const BASES: [&str; 3] = [
    include_str!("../../../configs/qemu-virt-aarch64.toml"),
    include_str!("../../../configs/qemu-virt-riscv64.toml"),
    include_str!("../../../configs/qemu-pc-x86_64.toml"),
];

/// An address near the interesting ones: page boundaries, the machine's memory, the
/// top of the address space.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Page(u16),
    Machine(u16),
    Near(u64),
    Raw(u64),
}

impl Addr {
    fn get(self) -> usize {
        match self {
            Addr::Page(p) => usize::from(p) << 12,
            Addr::Machine(p) => vm::MACHINE_BASE + (usize::from(p) << 12),
            Addr::Near(v) => (v as usize).wrapping_neg() & !0xfff,
            Addr::Raw(v) => v as usize,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Edit {
    CpuNum(u16),
    Id(u16),
    Name(String),
    Entry(Addr),
    Region {
        index: u8,
        gpa: Addr,
        size: Addr,
        flags: u32,
        map: u8,
        lazy: bool,
    },
    AddRegion {
        gpa: Addr,
        size: Addr,
        flags: u32,
        map: u8,
        lazy: bool,
    },
    RemoveRegion(u8),
    Passthrough {
        name: String,
        gpa: Addr,
        hpa: Addr,
        len: Addr,
        irq: u16,
    },
    RemovePassthrough(u8),
    Emu {
        name: String,
        gpa: Addr,
        len: Addr,
        irq: u16,
        kind: u8,
    },
    RemoveEmu(u8),
    KernelLoad(Addr),
    Dtb(Option<Addr>),
    PhysCpuIds(Option<Vec<u8>>),
}

fn region(gpa: Addr, size: Addr, flags: u32, map: u8, lazy: bool) -> MemoryRegionConfig {
    MemoryRegionConfig {
        gpa: GuestPhysAddr::from_usize(gpa.get()),
        size: size.get(),
        flags: MappingFlags::from_bits_retain(flags),
        map_type: [MapType::Alloc, MapType::Identical, MapType::Reserved][usize::from(map) % 3],
        populate: if lazy {
            Populate::Lazy
        } else {
            Populate::Eager
        },
    }
}

fn apply(c: &mut VmConfig, e: Edit) {
    let k = &mut c.kernel;
    let d = &mut c.devices;
    let at = |i: u8, len: usize| (len > 0).then(|| usize::from(i) % len);
    match e {
        Edit::CpuNum(n) => c.cpu_num = usize::from(n % 1100),
        Edit::Id(i) => c.id = usize::from(i),
        Edit::Name(n) => c.name = n,
        Edit::Entry(a) => k.entry_point = GuestPhysAddr::from_usize(a.get()),
        Edit::Region {
            index,
            gpa,
            size,
            flags,
            map,
            lazy,
        } => {
            if let Some(i) = at(index, k.memory_regions.len()) {
                k.memory_regions[i] = region(gpa, size, flags, map, lazy);
            }
        }
        Edit::AddRegion {
            gpa,
            size,
            flags,
            map,
            lazy,
        } => {
            k.memory_regions.push(region(gpa, size, flags, map, lazy));
        }
        Edit::RemoveRegion(i) => {
            if let Some(i) = at(i, k.memory_regions.len()) {
                k.memory_regions.remove(i);
            }
        }
        Edit::Passthrough {
            name,
            gpa,
            hpa,
            len,
            irq,
        } => {
            d.passthrough_devices.push(PassthroughDeviceConfig {
                name,
                base_gpa: GuestPhysAddr::from_usize(gpa.get()),
                base_hpa: HostPhysAddr::from_usize(hpa.get()),
                length: len.get() % (1 << 24),
                irq: usize::from(irq),
                host_node: false,
            });
        }
        Edit::RemovePassthrough(i) => {
            if let Some(i) = at(i, d.passthrough_devices.len()) {
                d.passthrough_devices.remove(i);
            }
        }
        Edit::Emu {
            name,
            gpa,
            len,
            irq,
            kind,
        } => d.emu_devices.push(EmuDeviceConfig {
            name,
            base_gpa: GuestPhysAddr::from_usize(gpa.get()),
            length: len.get(),
            irq_id: usize::from(irq),
            emu_type: u64::from(kind),
            cfg_list: vec![],
            space: if kind & 0x80 != 0 {
                DeviceSpace::Port
            } else {
                DeviceSpace::Mmio
            },
        }),
        Edit::RemoveEmu(i) => {
            if let Some(i) = at(i, d.emu_devices.len()) {
                d.emu_devices.remove(i);
            }
        }
        Edit::KernelLoad(a) => k.kernel_load_addr = GuestPhysAddr::from_usize(a.get()),
        Edit::Dtb(a) => {
            k.dtb_load_addr = a.map(|a| GuestPhysAddr::from_usize(a.get()));
            k.dtb_path = a.map(|_| "guest.dtb".into());
        }
        Edit::PhysCpuIds(ids) => {
            c.phys_cpu_ids = ids.map(|v| v.into_iter().map(usize::from).collect());
        }
    }
}

/// A config that validated: its generated source rebuilds it exactly, and the VM
/// can be created (or refused for want of host memory) on every format, frames
/// failing after `fail_after` when given.
fn valid(c: &VmConfig, fail_after: Option<usize>) {
    let src = c.to_rust_source("fuzz_config");
    match codegen::replay(&src) {
        Ok(Ok(back)) => assert_eq!(&back, c, "round trip through\n{src}"),
        Ok(Err(e)) => panic!("the generated source does not build: {e}\n{src}"),
        Err(e) => panic!("the generated source is not the expected Rust: {e}\n{src}"),
    }
    // Configs naming host device-tree nodes or taking RAM from the guest's tree
    // validate but need those trees resolved first: `into_valid` says so.
    if let Err(e) = c.clone().into_valid() {
        assert!(!e.to_string().is_empty());
        return;
    }
    if let Err(e) = vm::each_format(c, fail_after) {
        assert!(
            !matches!(e, vm_core::VmError::Config(_)),
            "a valid config refused by Vm::new: {e}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if first.is_ascii() {
        let text = String::from_utf8_lossy(data);
        match VmConfig::from_toml(&text) {
            Ok(c) => {
                assert!(c.validate().is_ok(), "from_toml gave an invalid config");
                valid(&c, None);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok(base) = u.choose_index(BASES.len()) else {
        return;
    };
    let mut c = VmConfig::from_toml(BASES[base]).expect("the project's configs load");
    let edits: Vec<Edit> = u.arbitrary().unwrap_or_default();
    let fail_after: Option<u8> = u.arbitrary().unwrap_or_default();
    for e in edits.into_iter().take(8) {
        apply(&mut c, e);
    }
    match c.validate() {
        Ok(()) => valid(&c, fail_after.map(usize::from)),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            // Vm::new refuses it too, naming the same problem, and takes nothing.
            if let Ok(()) = vm::each_format(&c, None) {
                panic!("Vm::new accepted a config that does not validate: {e}");
            }
        }
    }
});
