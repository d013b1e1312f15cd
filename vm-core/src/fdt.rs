//! The guest's device tree: the tree every guest of a VM config starts from
//! ([`guest_tree`]: memory, CPUs, `/chosen`, reserved memory), which the architecture
//! and the board then extend (ISA strings and timers, interrupt controllers, PSCI, the
//! UART) and write out as a flattened device tree blob ([`to_dtb`], Devicetree
//! Specification v0.4 chapter 5).
//!
//! The tree is `dtoolkit`'s read-write model ([`DeviceTree`], [`DeviceTreeNode`],
//! [`DeviceTreeProperty`], re-exported here), the crate the project also reads host
//! device trees with: it checks node and property names against the specification
//! and lays out the blob. This module adds what a guest needs on top: the nodes a VM
//! config implies, typed property encoders ([`reg`], [`strings`]), fresh phandles
//! ([`alloc_phandle`]), and errors instead of the writer's panic on sizes past 32 bits.
//!
//! Every address and size cell is big-endian; `reg` entries use the parent's
//! `#address-cells` and `#size-cells` (2 and 2 under the root and `/reserved-memory`;
//! 1 and 0 under `/cpus`, or 2 and 0 when a CPU id needs more than 32 bits).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use addrspace::GuestPhysAddr;
pub use dtoolkit::error::ModelError;
pub use dtoolkit::model::{DeviceTree, DeviceTreeNode, DeviceTreeProperty};

use dtoolkit::{Node, Property, ToPropertyValue};

use crate::config::VmConfig;

/// Why a guest device tree could not be built or written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestTreeError {
    /// A node or property name the specification does not allow.
    Name {
        /// The node's path.
        node: String,
        /// What the model said (it names the bad name).
        error: ModelError,
    },
    /// A range the tree names (initrd, reserved memory) is not inside the VM's RAM.
    OutsideRam {
        /// What the range is.
        what: &'static str,
        /// Its start.
        gpa: GuestPhysAddr,
        /// Its size.
        size: usize,
    },
    /// A range the tree names is empty.
    EmptyRange {
        /// What the range is.
        what: &'static str,
        /// Its start.
        gpa: GuestPhysAddr,
    },
    /// The guest CPU ids given do not match the VM's CPU count.
    CpuIds {
        /// How many ids were given.
        given: usize,
        /// The config's `cpu_num`.
        cpu_num: usize,
    },
    /// Two CPUs were given the same id.
    DuplicateCpuId {
        /// The id.
        id: u64,
    },
    /// No node at this path.
    NoSuchNode {
        /// The path asked for.
        path: String,
    },
    /// Two nodes have the same phandle.
    DuplicatePhandle {
        /// The phandle.
        phandle: u32,
    },
    /// Every phandle value (1..=0xffff_fffe) is taken.
    PhandlesExhausted,
    /// A `reg` value does not fit the cells its node's parent gives it.
    CellOverflow {
        /// The address or size.
        value: u64,
        /// `#address-cells` or `#size-cells`.
        cells: u32,
    },
    /// The blob would be larger than the format's 32-bit sizes allow.
    TooLarge {
        /// A bound on its size in bytes.
        bytes: usize,
    },
}

impl fmt::Display for GuestTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name { node, error } => write!(f, "device tree node {node}: {error}"),
            Self::OutsideRam { what, gpa, size } => write!(
                f,
                "{what} [{gpa:?}, +{size:#x}) is not inside the VM's RAM regions"
            ),
            Self::EmptyRange { what, gpa } => write!(f, "{what} at {gpa:?} is empty"),
            Self::CpuIds { given, cpu_num } => {
                write!(f, "{given} guest CPU ids given for a VM of {cpu_num} vCPUs")
            }
            Self::DuplicateCpuId { id } => write!(f, "guest CPU id {id:#x} given twice"),
            Self::NoSuchNode { path } => write!(f, "no device tree node {path}"),
            Self::DuplicatePhandle { phandle } => {
                write!(f, "phandle {phandle:#x} is on two nodes")
            }
            Self::PhandlesExhausted => write!(f, "every phandle value is taken"),
            Self::CellOverflow { value, cells } => {
                write!(f, "reg value {value:#x} does not fit {cells} cell(s)")
            }
            Self::TooLarge { bytes } => write!(
                f,
                "the device tree blob would take up to {bytes} bytes, past the format's 4 GiB"
            ),
        }
    }
}

/// Result of guest device tree operations.
pub type TreeResult<T, E = GuestTreeError> = core::result::Result<T, E>;

/// A memory range the guest's device tree reserves with `no-map`: in the memory
/// node like the rest of RAM, but never used or mapped by the guest kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservedRange {
    /// The node's name before `@` (`hvcore-probe`).
    pub name: String,
    /// Start.
    pub gpa: GuestPhysAddr,
    /// Size in bytes.
    pub size: usize,
}

/// What [`guest_tree`] needs beyond the VM config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestTreeOptions {
    /// The root's `compatible` (and `model`).
    pub compatible: String,
    /// The guest-visible id of each vCPU (`reg` of `/cpus/cpu@<id>`: the hart id on
    /// RISC-V, the MPIDR affinity on Arm); empty means `0..cpu_num`.
    pub cpu_ids: Vec<u64>,
    /// `/chosen/bootargs`; `None` takes the config's `kernel.cmdline`.
    pub bootargs: Option<String>,
    /// `/chosen/stdout-path` (the console's node path), if any.
    pub stdout_path: Option<String>,
    /// The initrd's place in guest memory (`linux,initrd-start`/`-end`), if any.
    pub initrd: Option<(GuestPhysAddr, usize)>,
    /// Ranges kept from the guest kernel (`/reserved-memory`, `no-map`).
    pub reserved: Vec<ReservedRange>,
}

/// Sets property `name` of `node` to `value` (replacing an earlier one); `path` is
/// the node's path, for the error.
pub fn set<T: ToPropertyValue>(
    node: &mut DeviceTreeNode,
    path: &str,
    name: &str,
    value: T,
) -> TreeResult<()> {
    let property = DeviceTreeProperty::new(name, value).map_err(|error| GuestTreeError::Name {
        node: path.to_string(),
        error,
    })?;
    node.add_property(property);
    Ok(())
}

/// The child `name` of `node` (added, empty, when missing); `path` is the node's
/// path, for the error.
pub fn child<'a>(
    node: &'a mut DeviceTreeNode,
    path: &str,
    name: &str,
) -> TreeResult<&'a mut DeviceTreeNode> {
    if node.child_mut(name).is_none() {
        let new = DeviceTreeNode::new(name).map_err(|error| GuestTreeError::Name {
            node: path.to_string(),
            error,
        })?;
        node.add_child(new);
    }
    node.child_mut(name)
        .ok_or_else(|| GuestTreeError::NoSuchNode {
            path: join(path, name),
        })
}

/// The node at absolute `path` (`/cpus/cpu@0`), to change.
pub fn node_mut<'a>(tree: &'a mut DeviceTree, path: &str) -> TreeResult<&'a mut DeviceTreeNode> {
    tree.find_node_mut(path)
        .ok_or_else(|| GuestTreeError::NoSuchNode {
            path: path.to_string(),
        })
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// A `reg` value: `(address, size)` entries of `address_cells` and `size_cells`
/// cells each (1 or 2; 0 size cells leave the sizes out). A value past 32 bits in
/// one cell is refused ([`GuestTreeError::CellOverflow`]), never cut to its low
/// bits: use 2 cells for anything past 4 GiB.
pub fn reg(entries: &[(u64, u64)], address_cells: u32, size_cells: u32) -> TreeResult<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut put = |value: u64, cells: u32| -> TreeResult<()> {
        match cells {
            0 => {}
            1 => {
                let cell = u32::try_from(value)
                    .map_err(|_| GuestTreeError::CellOverflow { value, cells })?;
                bytes.extend_from_slice(&cell.to_be_bytes());
            }
            _ => bytes.extend_from_slice(&value.to_be_bytes()),
        }
        Ok(())
    };
    for &(address, size) in entries {
        put(address, address_cells)?;
        put(size, size_cells)?;
    }
    Ok(bytes)
}

/// A string-list value (each string NUL-terminated).
pub fn strings(values: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for v in values {
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// The tree every guest of `config` starts from (Devicetree Specification v0.4
/// chapter 3): the root (`#address-cells` and `#size-cells` 2, `compatible`,
/// `model`), `/memory@<first>` with every RAM region of the config in `reg`, `/cpus`
/// with one `cpu@<id>` per vCPU (`device_type`, `reg`, `status`), `/chosen`
/// (bootargs, stdout-path, initrd) and `/reserved-memory` with a `no-map` child per
/// reserved range. The architecture adds to the CPU nodes (ISA, enable method) and
/// the board its devices.
pub fn guest_tree(config: &VmConfig, options: &GuestTreeOptions) -> TreeResult<DeviceTree> {
    let mut tree = DeviceTree::new();
    let root = &mut tree.root;
    set(root, "/", "#address-cells", 2u32)?;
    set(root, "/", "#size-cells", 2u32)?;
    set(root, "/", "compatible", options.compatible.as_str())?;
    set(root, "/", "model", options.compatible.as_str())?;

    let mut ram: Vec<(u64, u64)> = config
        .kernel
        .memory_regions
        .iter()
        .map(|r| (r.gpa.as_usize() as u64, r.size as u64))
        .collect();
    ram.sort_unstable();
    if let Some(&(first, _)) = ram.first() {
        let name = format!("memory@{first:x}");
        let memory = child(root, "/", &name)?;
        let path = join("/", &name);
        set(memory, &path, "device_type", "memory")?;
        set(memory, &path, "reg", reg(&ram, 2, 2)?)?;
    }
    let in_ram = |what: &'static str, gpa: GuestPhysAddr, size: usize| -> TreeResult<()> {
        if size == 0 {
            return Err(GuestTreeError::EmptyRange { what, gpa });
        }
        let start = gpa.as_usize() as u64;
        let inside = start.checked_add(size as u64).is_some_and(|end| {
            ram.iter()
                .any(|&(s, len)| s <= start && end <= s.saturating_add(len))
        });
        if inside {
            Ok(())
        } else {
            Err(GuestTreeError::OutsideRam { what, gpa, size })
        }
    };

    let ids: Vec<u64> = if options.cpu_ids.is_empty() {
        (0..config.cpu_num as u64).collect()
    } else {
        options.cpu_ids.clone()
    };
    if ids.len() != config.cpu_num {
        return Err(GuestTreeError::CpuIds {
            given: ids.len(),
            cpu_num: config.cpu_num,
        });
    }
    if let Some(&id) = ids
        .iter()
        .enumerate()
        .find_map(|(i, id)| ids[..i].contains(id).then_some(id))
    {
        return Err(GuestTreeError::DuplicateCpuId { id });
    }
    let cells = if ids.iter().any(|&id| id > u64::from(u32::MAX)) {
        2
    } else {
        1
    };
    let cpus = child(root, "/", "cpus")?;
    set(cpus, "/cpus", "#address-cells", cells)?;
    set(cpus, "/cpus", "#size-cells", 0u32)?;
    for &id in &ids {
        let name = format!("cpu@{id:x}");
        let path = join("/cpus", &name);
        let cpu = child(cpus, "/cpus", &name)?;
        set(cpu, &path, "device_type", "cpu")?;
        set(cpu, &path, "reg", reg(&[(id, 0)], cells, 0)?)?;
        set(cpu, &path, "status", "okay")?;
    }

    let chosen = child(root, "/", "chosen")?;
    let bootargs = options
        .bootargs
        .as_deref()
        .or(config.kernel.cmdline.as_deref());
    if let Some(args) = bootargs {
        set(chosen, "/chosen", "bootargs", args)?;
    }
    if let Some(path) = &options.stdout_path {
        set(chosen, "/chosen", "stdout-path", path.as_str())?;
    }
    if let Some((gpa, size)) = options.initrd {
        in_ram("initrd", gpa, size)?;
        let start = gpa.as_usize() as u64;
        set(chosen, "/chosen", "linux,initrd-start", start)?;
        set(chosen, "/chosen", "linux,initrd-end", start + size as u64)?;
    }

    if !options.reserved.is_empty() {
        let path = "/reserved-memory";
        let reserved = child(root, "/", "reserved-memory")?;
        set(reserved, path, "#address-cells", 2u32)?;
        set(reserved, path, "#size-cells", 2u32)?;
        set(reserved, path, "ranges", &[] as &[u8])?;
        for r in &options.reserved {
            in_ram("reserved memory", r.gpa, r.size)?;
            let start = r.gpa.as_usize() as u64;
            let name = format!("{}@{start:x}", r.name);
            let node_path = join(path, &name);
            let node = child(reserved, path, &name)?;
            set(
                node,
                &node_path,
                "reg",
                reg(&[(start, r.size as u64)], 2, 2)?,
            )?;
            set(node, &node_path, "no-map", &[] as &[u8])?;
        }
    }
    Ok(tree)
}

/// Every `phandle` value in the subtree of `node`.
fn phandles(node: &DeviceTreeNode, out: &mut Vec<u32>) {
    let n: &DeviceTreeNode = node;
    if let Some(p) = n.property("phandle")
        && let Ok(cell) = <[u8; 4]>::try_from(p.value())
    {
        out.push(u32::from_be_bytes(cell));
    }
    for c in n.children() {
        phandles(c, out);
    }
}

/// A phandle no node of `tree` has (one past the largest in use).
pub fn alloc_phandle(tree: &DeviceTree) -> TreeResult<u32> {
    let mut used = Vec::new();
    phandles(&tree.root, &mut used);
    let next = used.iter().max().map_or(Some(1), |m| m.checked_add(1));
    // 0 and 0xffffffff are not valid phandles (specification 2.3.3).
    match next {
        Some(p) if p != u32::MAX => Ok(p),
        _ => Err(GuestTreeError::PhandlesExhausted),
    }
}

/// A bound on the bytes the blob of `node`'s subtree takes (tokens, names,
/// values, padding, and each property name in the strings block).
fn size_bound(node: &DeviceTreeNode) -> usize {
    let n: &DeviceTreeNode = node;
    let own = 8usize.saturating_add(n.name().len()).saturating_add(4);
    let props = n.properties().fold(0usize, |acc, p| {
        acc.saturating_add(16)
            .saturating_add(p.value().len())
            .saturating_add(2 * p.name().len())
            .saturating_add(1)
    });
    n.children().fold(own.saturating_add(props), |acc, c| {
        acc.saturating_add(size_bound(c))
    })
}

/// Writes the blob of `tree`, after checking what the writer would otherwise panic
/// on (sizes past 32 bits) or write without complaint (a phandle on two nodes).
pub fn to_dtb(tree: &DeviceTree) -> TreeResult<Vec<u8>> {
    let bytes = size_bound(&tree.root).saturating_add(64 + 16 * tree.memory_reservations.len());
    if bytes > u32::MAX as usize {
        return Err(GuestTreeError::TooLarge { bytes });
    }
    let mut used = Vec::new();
    phandles(&tree.root, &mut used);
    used.sort_unstable();
    if let Some(w) = used.windows(2).find(|w| w[0] == w[1]) {
        return Err(GuestTreeError::DuplicatePhandle { phandle: w[0] });
    }
    Ok(tree.to_dtb())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MapType, VmConfigBuilder};
    use addrspace::{MappingFlags, Populate};

    fn gpa(v: usize) -> GuestPhysAddr {
        GuestPhysAddr::from_usize(v)
    }

    /// 512 MiB of lazy RAM at 2 GiB and 2 MiB above it, two vCPUs.
    fn config() -> VmConfig {
        VmConfigBuilder::new(1, "linux", 2)
            .entry_point(gpa(0x8020_0000))
            .cmdline("console=ttyS0")
            .memory_region(
                gpa(0x8000_0000),
                0x2000_0000,
                MappingFlags::RWX,
                MapType::Alloc,
                Populate::Lazy,
            )
            .memory_region(
                gpa(0xa000_0000),
                0x20_0000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Eager,
            )
            .build()
            .unwrap()
    }

    fn options() -> GuestTreeOptions {
        GuestTreeOptions {
            compatible: "hvcore,test".into(),
            stdout_path: Some("/soc/serial@10000000".into()),
            initrd: Some((gpa(0x9800_0000), 0x18_0003)),
            reserved: vec![ReservedRange {
                name: "probe".into(),
                gpa: gpa(0xa000_0000),
                size: 0x20_0000,
            }],
            ..GuestTreeOptions::default()
        }
    }

    /// The blob, parsed back by an independent reader (the `fdt` crate), says what
    /// the config and the options said.
    #[test]
    fn guest_tree_parses_back() {
        let mut tree = guest_tree(&config(), &options()).unwrap();
        // What an architecture adds: an ISA string and a cpu-local controller.
        let intc = alloc_phandle(&tree).unwrap();
        let cpu0 = node_mut(&mut tree, "/cpus/cpu@0").unwrap();
        set(cpu0, "/cpus/cpu@0", "riscv,isa", "rv64imafdc").unwrap();
        let ic = child(cpu0, "/cpus/cpu@0", "interrupt-controller").unwrap();
        set(ic, "ic", "interrupt-controller", &[] as &[u8]).unwrap();
        set(ic, "ic", "phandle", intc).unwrap();
        assert_eq!(alloc_phandle(&tree), Ok(intc + 1));
        let dtb = to_dtb(&tree).unwrap();

        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let regions: Vec<(usize, Option<usize>)> = fdt
            .memory()
            .regions()
            .map(|r| (r.starting_address as usize, r.size))
            .collect();
        assert_eq!(
            regions,
            [
                (0x8000_0000, Some(0x2000_0000)),
                (0xa000_0000, Some(0x20_0000))
            ]
        );
        assert_eq!(fdt.chosen().bootargs(), Some("console=ttyS0"));
        let chosen = fdt.find_node("/chosen").unwrap();
        let be64 = |p: &str| {
            let v = chosen.property(p).unwrap().value;
            u64::from_be_bytes(v.try_into().unwrap())
        };
        assert_eq!(be64("linux,initrd-start"), 0x9800_0000);
        assert_eq!(be64("linux,initrd-end"), 0x9818_0003);
        assert_eq!(
            chosen.property("stdout-path").unwrap().as_str(),
            Some("/soc/serial@10000000")
        );
        let cpus: Vec<usize> = fdt.cpus().map(|c| c.ids().first()).collect();
        assert_eq!(cpus, [0, 1]);
        let cpu0 = fdt.find_node("/cpus/cpu@0").unwrap();
        assert_eq!(
            cpu0.property("riscv,isa").unwrap().as_str(),
            Some("rv64imafdc")
        );
        assert_eq!(cpu0.property("status").unwrap().as_str(), Some("okay"));
        let probe = fdt.find_node("/reserved-memory/probe@a0000000").unwrap();
        assert!(probe.property("no-map").is_some());
        let r = probe.reg().unwrap().next().unwrap();
        assert_eq!(
            (r.starting_address as usize, r.size),
            (0xa000_0000, Some(0x20_0000))
        );
        let ic = fdt.find_node("/cpus/cpu@0/interrupt-controller").unwrap();
        assert_eq!(ic.property("phandle").unwrap().as_usize(), Some(1));
        assert_eq!(fdt.root().compatible().first(), "hvcore,test");
    }

    /// Ids past 32 bits get two cells under /cpus.
    #[test]
    fn wide_cpu_ids() {
        let o = GuestTreeOptions {
            cpu_ids: vec![0x1_0000_0100, 0x1_0000_0101],
            ..options()
        };
        let dtb = to_dtb(&guest_tree(&config(), &o).unwrap()).unwrap();
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let cpus = fdt.find_node("/cpus").unwrap();
        assert_eq!(cpus.property("#address-cells").unwrap().as_usize(), Some(2));
        let cpu = fdt.find_node("/cpus/cpu@100000100").unwrap();
        assert_eq!(
            cpu.property("reg").unwrap().value,
            0x1_0000_0100u64.to_be_bytes()
        );
    }

    #[test]
    fn ranges_outside_ram_are_refused() {
        let mut o = options();
        o.initrd = Some((gpa(0x9ff0_0000), 0x20_0000));
        assert_eq!(
            guest_tree(&config(), &o).err(),
            Some(GuestTreeError::OutsideRam {
                what: "initrd",
                gpa: gpa(0x9ff0_0000),
                size: 0x20_0000
            })
        );
        let mut o = options();
        o.reserved[0].gpa = gpa(0xa010_0000);
        assert!(matches!(
            guest_tree(&config(), &o),
            Err(GuestTreeError::OutsideRam {
                what: "reserved memory",
                ..
            })
        ));
        let mut o = options();
        o.initrd = Some((gpa(usize::MAX - 0xfff), 0x2000));
        assert!(matches!(
            guest_tree(&config(), &o),
            Err(GuestTreeError::OutsideRam { .. })
        ));
        let mut o = options();
        o.initrd = Some((gpa(0x9000_0000), 0));
        assert_eq!(
            guest_tree(&config(), &o).err(),
            Some(GuestTreeError::EmptyRange {
                what: "initrd",
                gpa: gpa(0x9000_0000)
            })
        );
    }

    #[test]
    fn cpu_ids_must_match_the_config() {
        let o = GuestTreeOptions {
            cpu_ids: vec![0],
            ..options()
        };
        assert_eq!(
            guest_tree(&config(), &o).err(),
            Some(GuestTreeError::CpuIds {
                given: 1,
                cpu_num: 2
            })
        );
        let o = GuestTreeOptions {
            cpu_ids: vec![3, 3],
            ..options()
        };
        assert_eq!(
            guest_tree(&config(), &o).err(),
            Some(GuestTreeError::DuplicateCpuId { id: 3 })
        );
    }

    /// What the specification forbids is an error naming the node (and the name),
    /// never a panic or a blob Linux would misread.
    #[test]
    fn bad_names_and_duplicate_phandles_are_errors() {
        let mut o = options();
        o.reserved[0].name = "bad name!".into();
        assert!(matches!(
            guest_tree(&config(), &o),
            Err(GuestTreeError::Name {
                error: ModelError::InvalidNodeName(_),
                ..
            })
        ));
        let mut tree = guest_tree(&config(), &options()).unwrap();
        let chosen = node_mut(&mut tree, "/chosen").unwrap();
        assert_eq!(
            set(chosen, "/chosen", "bad\"prop", 1u32),
            Err(GuestTreeError::Name {
                node: "/chosen".into(),
                error: ModelError::InvalidPropertyName("bad\"prop".into())
            })
        );
        for cpu in ["/cpus/cpu@0", "/cpus/cpu@1"] {
            set(node_mut(&mut tree, cpu).unwrap(), cpu, "phandle", 7u32).unwrap();
        }
        assert_eq!(
            to_dtb(&tree),
            Err(GuestTreeError::DuplicatePhandle { phandle: 7 })
        );
        assert_eq!(
            node_mut(&mut tree, "/nope/cpu@0").err(),
            Some(GuestTreeError::NoSuchNode {
                path: "/nope/cpu@0".into()
            })
        );
    }

    #[test]
    fn phandles_run_out_at_the_largest() {
        let mut tree = DeviceTree::new();
        assert_eq!(alloc_phandle(&tree), Ok(1));
        set(&mut tree.root, "/", "phandle", u32::MAX - 1).unwrap();
        assert_eq!(alloc_phandle(&tree), Err(GuestTreeError::PhandlesExhausted));
    }

    #[test]
    fn encoders_are_big_endian() {
        assert_eq!(strings(&["ab", "c"]), b"ab\0c\0");
        assert_eq!(
            reg(&[(0x1_2345_6789, 0x10)], 2, 1),
            Ok(vec![0, 0, 0, 1, 0x23, 0x45, 0x67, 0x89, 0, 0, 0, 0x10])
        );
        assert_eq!(reg(&[(5, 9)], 1, 0), Ok(vec![0, 0, 0, 5]));
    }

    /// Defect (issue 11): one cell kept the low 32 bits of a larger value, so a
    /// 4 GiB address written with `#address-cells = 1` came out as 0.
    #[test]
    fn reg_refuses_a_value_past_one_cell() {
        let err = |value| Err(GuestTreeError::CellOverflow { value, cells: 1 });
        assert_eq!(reg(&[(0x1_0000_0000, 0)], 1, 0), err(0x1_0000_0000));
        assert_eq!(reg(&[(0x1000, 0x1_0000_1000)], 2, 1), err(0x1_0000_1000));
        assert_eq!(reg(&[(0xffff_ffff, 0)], 1, 0), Ok(vec![0xff; 4]));
    }

    /// The bound covers what the writer writes, so `to_dtb` refuses exactly the
    /// trees the writer would panic on.
    #[test]
    fn size_bound_covers_the_blob() {
        let tree = guest_tree(&config(), &options()).unwrap();
        let dtb = to_dtb(&tree).unwrap();
        assert!(size_bound(&tree.root) + 64 >= dtb.len(), "{}", dtb.len());
    }
}
