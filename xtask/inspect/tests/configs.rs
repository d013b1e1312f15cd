//! `inspect` works on every config under `configs/` in every format, and on every
//! config of `../shared/axvisor-configs` that loads (the copy in
//! `vm-core/tests/data`), with its guessed format, whatever its size and whether or
//! not it needs a device tree (what only a tree places is named unresolved); the
//! map it prints is consistent with the config (every region there, holes and
//! regions tiling the space, tables counted once, eager memory fully mapped).

use std::path::{Path, PathBuf};

use inspect::{Format, Inspected, Unresolved, inspect};
use vm_core::diag::{FaultRoute, GuestMap, RegionKind};
use vm_core::{AccessKind, GuestPhysAddr, MapType, Populate, VmConfig};

mod common;

use common::{board_config, workspace};

/// The axvisor configs as vm-core's tests keep them (a copy of
/// `../shared/axvisor-configs`, so a clean clone has them).
fn axvisor_dir() -> PathBuf {
    workspace().join("vm-core/tests/data/axvisor-configs")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn top(config: &VmConfig) -> u64 {
    config
        .kernel
        .memory_regions
        .iter()
        .map(|r| (r.gpa.as_usize() as u64).saturating_add(r.size as u64))
        .max()
        .unwrap_or(0)
}

/// The map agrees with the config as built (identity-mapped regions where the host
/// placed them), and every diagnostic can be asked of it.
fn check(name: &str, vm: &Inspected) {
    let config = vm.config();
    let map: GuestMap = vm.guest_map(None);
    // Regions and holes tile [0, limit) in order.
    let mut pieces: Vec<(usize, usize)> = map
        .regions
        .iter()
        .map(|r| r.range)
        .chain(map.holes.iter().copied())
        .map(|r| (r.start().as_usize(), r.end().as_usize()))
        .collect();
    pieces.sort_unstable();
    let mut cursor = 0;
    for (s, e) in &pieces {
        assert_eq!(*s, cursor, "{name}: gap or overlap at {cursor:#x}");
        cursor = *e;
    }
    assert_eq!(cursor, map.gpa_limit, "{name}: the map ends early");
    // Every config region is RAM of its kind in the map, fully mapped unless lazy.
    for (i, r) in config.kernel.memory_regions.iter().enumerate() {
        let covering: Vec<_> = map
            .regions
            .iter()
            .filter(|m| m.range.start() < r.gpa + r.size && r.gpa < m.range.end())
            .collect();
        let bytes: usize = covering.iter().map(|m| m.range.size()).sum();
        assert_eq!(
            bytes, r.size,
            "{name}: region {i} is not one piece of the map"
        );
        for m in covering {
            let kind = match r.map_type {
                MapType::Alloc => RegionKind::Ram(r.populate),
                MapType::Identical => RegionKind::Identical,
                MapType::Reserved => RegionKind::ReservedRam,
            };
            assert_eq!(m.kind, kind, "{name}: region {i}");
            if r.map_type != MapType::Alloc {
                // Identical: GPA = HPA where the host placed it; reserved: its own.
                assert_eq!(
                    m.hpa.map(|h| h.as_usize()),
                    Some(m.range.start().as_usize()),
                    "{name}"
                );
            }
            let mapped = addrspace::usize_of(m.leaves.bytes());
            if r.populate == Populate::Eager {
                assert_eq!(
                    mapped,
                    m.range.size(),
                    "{name}: region {i} not fully mapped"
                );
            } else {
                assert_eq!(mapped, 0, "{name}: lazy region {i} mapped before any fault");
            }
        }
    }
    assert_eq!(
        map.tables.iter().map(|t| t.frames).sum::<usize>(),
        map.table_frames,
        "{name}"
    );
    assert!(map.registers[0].is_some(), "{name}");
    // The rest answers without failing, and says something about the entry.
    assert!(map.to_string().contains("guest-physical map"));
    let _ = vm.audit(&[]);
    let entry = config.kernel.entry_point;
    assert!(vm.walk(entry).to_string().starts_with("walk of "), "{name}");
    let e = vm.explain_fault(entry, AccessKind::Execute);
    match e.route {
        FaultRoute::Space(_) => {}
        FaultRoute::Mmio { .. } => panic!("{name}: the entry point is a device"),
    }
    assert!(!inspect::picture::svg(&map).is_empty());
    let far = vm.explain_fault(GuestPhysAddr::from_usize(map.gpa_limit), AccessKind::Read);
    assert_eq!(far.unserved, Some(vm_core::Unserved::NoArea), "{name}");
}

#[test]
fn every_board_config_in_every_format() {
    let mut files = Vec::new();
    toml_files(&workspace().join("configs"), &mut files);
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let mut config = VmConfig::from_toml(&text).expect("board configs load");
        // A board resolves its config's host device-tree references at boot against
        // its machine's tree: here QEMU's own (vm-core's test data) for the board
        // the file is named after.
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(arch) = ["aarch64", "riscv64"].iter().find(|a| name.contains(*a)) {
            let dtb = workspace().join(format!("vm-core/tests/data/qemu-virt-{arch}.dtb"));
            let dtb = std::fs::read(dtb).expect("QEMU's tree");
            let host = vm_core::DeviceTree::new(&dtb).expect("QEMU's tree parses");
            config
                .resolve_host_devices(&host)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        for format in Format::ALL {
            if top(&config) > format.gpa_limit() {
                continue;
            }
            let name = format!("{} ({format})", path.display());
            let vm = inspect(config.clone(), format).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(vm.format(), format);
            check(&name, &vm);
        }
    }
}

/// Every axvisor config that loads, once per distinct guest-physical layout (many
/// files differ only in names and paths), at its full size: identity-mapped RAM of
/// GiBs costs only address space (the mock's fresh frames are handed out unwritten),
/// and a config that needs a device tree (pass-through entries naming host nodes,
/// RAM from the guest's tree) is inspected without it, its unresolved parts named,
/// never placed.
#[test]
fn every_axvisor_config_that_loads() {
    let mut files = Vec::new();
    toml_files(&axvisor_dir(), &mut files);
    files.sort();
    let mut seen = std::collections::HashSet::new();
    let (mut loaded, mut inspected, mut with_unresolved, mut biggest) = (0, 0, 0, 0);
    for path in &files {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let Ok(config) = VmConfig::from_toml(&text) else {
            continue;
        };
        loaded += 1;
        let layout = format!(
            "{:?} {:?} {:?}",
            config.kernel.memory_regions,
            config.devices.passthrough_devices,
            config.devices.emu_devices
        );
        if !seen.insert(layout) {
            continue;
        }
        // What only a device tree places: the entries naming host nodes, and RAM
        // from the guest's tree.
        let nodes: Vec<(usize, String)> = config
            .devices
            .passthrough_devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.host_node)
            .map(|(i, d)| (i, d.name.clone()))
            .collect();
        let ram_from_tree = config.memory_from_dtb();
        let (format, _) = Format::for_config(path, &config);
        let name = format!("{} ({format})", path.display());
        let vm = inspect(config, format).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(&name, &vm);
        let named: Vec<(usize, String)> = vm
            .unresolved()
            .iter()
            .filter_map(|u| match u {
                Unresolved::HostNode { index, path } => Some((*index, path.clone())),
                Unresolved::GuestRam { .. } => None,
            })
            .collect();
        assert_eq!(named, nodes, "{name}: the host nodes named unresolved");
        let ram_named = vm.unresolved().len() - named.len();
        assert_eq!(
            ram_named,
            usize::from(ram_from_tree),
            "{name}: RAM from the tree"
        );
        for u in vm.unresolved() {
            let text = u.to_string();
            assert!(text.contains("unresolved"), "{name}: {text}");
            match u {
                Unresolved::HostNode { path, .. } => {
                    assert!(text.contains(path.as_str()), "{name}: {text}");
                    assert!(
                        vm.config()
                            .devices
                            .passthrough_devices
                            .iter()
                            .all(|d| !d.host_node),
                        "{name}: a host node was placed"
                    );
                }
                Unresolved::GuestRam { .. } => {
                    assert!(vm.config().kernel.memory_regions.is_empty(), "{name}");
                    assert!(
                        vm.guest_map(None)
                            .regions
                            .iter()
                            .all(|r| !matches!(r.kind, RegionKind::Ram(_) | RegionKind::Identical)),
                        "{name}: RAM was invented"
                    );
                }
            }
        }
        with_unresolved += usize::from(!vm.unresolved().is_empty());
        biggest = biggest.max(vm.plan().size);
        inspected += 1;
    }
    println!(
        "{loaded} of {} axvisor configs load: {inspected} distinct layouts inspected, \
         {with_unresolved} of them with parts only a device tree places; the largest \
         simulated host {} MiB",
        files.len(),
        biggest >> 20
    );
    assert_eq!(inspected, seen.len(), "every distinct layout is inspected");
    assert!(
        inspected > 0 && with_unresolved > 0,
        "no axvisor config was inspected"
    );
}

/// Defect (issue 11): the map's root registers used the config's VM id cut to its
/// low 16 bits as the VMID, so a VM with id 0x1_0001 was shown with VMID 1 (the
/// registers of another VM). An id past 16 bits gives no VMID (the map says so).
#[test]
fn a_vm_id_past_16_bits_is_no_vmid_not_its_low_bits() {
    let (path, mut config) = board_config("qemu-virt-aarch64");
    let (format, _) = Format::for_config(&path, &config);
    config.id = 0x1_0001;
    let inspected = inspect(config, format).expect("builds");
    let map = inspected.guest_map(None);
    assert_eq!(map.vmid, None, "{map}");
    assert_eq!(inspected.guest_map(Some(7)).vmid, Some(7));
}
