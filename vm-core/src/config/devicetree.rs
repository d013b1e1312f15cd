//! Device-tree references of a config, resolved against a flattened device tree
//! (read with the `dtoolkit` crate: `no_std`, no allocation, fuzzed, and it checks
//! the whole blob before handing out nodes, so a bad blob is an error, not a panic):
//!
//! - pass-through entries that name a host node (`["/soc/uart@9000000"]`, `["/"]`
//!   for the whole tree) become one entry per `reg` range of that node and of every
//!   node below it, with the node's first interrupt, except the nodes under
//!   `excluded_devices` (axvisor's `find_all_passthrough_devices` and
//!   `parse_passthrough_devices_address`);
//! - `memory_regions = []` with a `dtb_path` takes the guest's RAM from the `/memory`
//!   nodes of that guest device tree (axvisor's `parse_vm_dtb`, 2025-09: each range
//!   RWX + USER, `MapIdentical`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use addrspace::{GuestPhysAddr, HostPhysAddr, MappingFlags, Populate};
use dtoolkit::fdt::{Fdt, FdtNode};
use dtoolkit::standard::NodeStandard;
use dtoolkit::{Node, Property};

use super::{
    ConfigError, ConfigResult, Field, MapType, MemoryRegionConfig, PASSTHROUGH,
    PassthroughDeviceConfig, VmConfig,
};

/// A flattened device tree, checked when made.
#[derive(Clone, Copy)]
pub struct DeviceTree<'a> {
    fdt: Fdt<'a>,
}

impl core::fmt::Debug for DeviceTree<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DeviceTree({} bytes)", self.fdt.data().len())
    }
}

/// Interrupt controllers whose `interrupts` cells are `<type number flags>` with
/// type 0 a shared peripheral interrupt (ID 32 + number) and 1 a private one
/// (16 + number): the Arm GICs.
const GIC: &[&str] = &[
    "arm,gic-v3",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,gic-400",
    "arm,gic-v2",
];

/// Nodes that describe no device to pass through.
fn not_a_device(path: &str, name: &str) -> bool {
    let base = name.split('@').next().unwrap_or(name);
    matches!(
        path,
        "/chosen" | "/aliases" | "/__symbols__" | "/__fixups__" | "/__local_fixups__"
    ) || base == "memory"
        || path == "/reserved-memory"
        || path.starts_with("/reserved-memory/")
        || path == "/cpus"
        || path.starts_with("/cpus/")
}

fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// One address translation step from a bus to its parent (`ranges`).
#[derive(Clone, Copy)]
struct Window {
    child: u64,
    parent: u64,
    size: u64,
}

impl<'a> DeviceTree<'a> {
    /// Reads and checks a flattened device tree blob.
    pub fn new(bytes: &'a [u8]) -> ConfigResult<Self> {
        Fdt::new(bytes)
            .map(|fdt| Self { fdt })
            .map_err(|e| ConfigError::DeviceTree {
                message: e.to_string(),
            })
    }

    fn find(&self, path: &str) -> Option<FdtNode<'a>> {
        self.fdt.find_node(path)
    }

    /// The first interrupt of `node` as the interrupt ID a hypervisor injects, 0
    /// when it has none.
    fn first_irq(&self, node: &FdtNode<'a>, inherited_parent: Option<u32>) -> usize {
        let Some(interrupts) = node.property("interrupts") else {
            return 0;
        };
        let cells: Vec<u32> = interrupts
            .value()
            .chunks_exact(4)
            .take(3)
            .filter_map(|c| c.try_into().ok().map(u32::from_be_bytes))
            .collect();
        let parent_phandle = node
            .property("interrupt-parent")
            .and_then(|p| p.value_as::<u32>().ok())
            .or(inherited_parent);
        let controller = parent_phandle.and_then(|ph| self.by_phandle(ph));
        let is_gic = controller.as_ref().is_some_and(|c| {
            GIC.iter().any(|g| c.is_compatible(g))
                && c.property("#interrupt-cells")
                    .and_then(|p| p.value_as::<u32>().ok())
                    == Some(3)
        });
        let n = match (is_gic, cells.as_slice()) {
            (true, [0, n, ..]) => u64::from(*n) + 32,
            (true, [1, n, ..]) => u64::from(*n) + 16,
            (_, [n, ..]) => u64::from(*n),
            _ => 0,
        };
        usize::try_from(n).unwrap_or(0)
    }

    fn by_phandle(&self, phandle: u32) -> Option<FdtNode<'a>> {
        let mut stack = alloc::vec![self.fdt.root()];
        while let Some(n) = stack.pop() {
            if n.phandle().ok().flatten() == Some(phandle) {
                return Some(n);
            }
            stack.extend(n.children());
        }
        None
    }

    /// The `reg` ranges of `node` in CPU physical addresses (through the `ranges`
    /// of the buses above it), `None` when the node is not CPU-addressable.
    fn regs(node: &FdtNode<'a>, windows: &[Vec<Window>]) -> Option<Vec<(u64, u64)>> {
        let reg = node.reg().ok()??;
        let mut out = Vec::new();
        for r in reg {
            let (Ok(mut addr), Ok(size)) = (r.address::<u64>(), r.size::<u64>()) else {
                return None;
            };
            for level in windows.iter().rev() {
                let w = level
                    .iter()
                    .find(|w| addr >= w.child && addr - w.child < w.size)?;
                addr = addr - w.child + w.parent;
            }
            if size != 0 {
                out.push((addr, size));
            }
        }
        Some(out)
    }

    /// The windows a bus node's `ranges` opens to its children: `Some(empty)` for
    /// an empty `ranges` (identity), `None` when the children are not
    /// CPU-addressable (no `ranges`, or addresses of more than two cells, as PCI's).
    fn windows(node: &FdtNode<'a>) -> Option<Vec<Window>> {
        if node.address_cells().ok()? > 2 {
            return None;
        }
        let ranges = node.ranges().ok()??;
        let mut out = Vec::new();
        for r in ranges {
            out.push(Window {
                child: r.child_bus_address::<u64>().ok()?,
                parent: r.parent_bus_address::<u64>().ok()?,
                size: r.length::<u64>().ok()?,
            });
        }
        Some(out)
    }

    /// Every device range at or below `path`, skipping `excluded` subtrees and nodes
    /// that are not devices: (node path, address, size, interrupt).
    fn devices_under(
        &self,
        path: &str,
        excluded: &[String],
    ) -> Option<Vec<(String, u64, u64, usize)>> {
        self.find(path)?;
        let mut out = Vec::new();
        // (node, its path, the windows of the buses above it, inherited interrupt
        // parent); windows are identity when a level has empty `ranges`.
        let root = self.fdt.root();
        let root_irq = root
            .property("interrupt-parent")
            .and_then(|p| p.value_as::<u32>().ok());
        let mut stack = alloc::vec![(root, String::from("/"), Vec::<Vec<Window>>::new(), root_irq)];
        while let Some((node, node_path, windows, irq_parent)) = stack.pop() {
            if excluded.iter().any(|e| under(&node_path, e)) {
                continue;
            }
            if not_a_device(&node_path, node.name()) {
                continue;
            }
            let wanted = under(&node_path, path);
            let on_the_way = under(path, &node_path);
            if !wanted && !on_the_way {
                continue;
            }
            let is_pci = node
                .property("device_type")
                .and_then(|p| p.value_as::<&str>().ok())
                .is_some_and(|t| t == "pci");
            if wanted
                && node_path != "/"
                && node
                    .status()
                    .is_ok_and(|s| s == dtoolkit::standard::Status::Okay)
            {
                let irq = self.first_irq(&node, irq_parent);
                if let Some(regs) = Self::regs(&node, &windows) {
                    out.extend(
                        regs.into_iter()
                            .map(|(a, s)| (node_path.clone(), a, s, irq)),
                    );
                }
                // A PCI host bridge: its memory and I/O windows, as axvisor passes
                // them through (the devices behind it are not CPU-addressable).
                if is_pci && let Ok(Some(ranges)) = node.ranges() {
                    for r in ranges {
                        if let (Ok(a), Ok(s)) = (r.parent_bus_address::<u64>(), r.length::<u64>())
                            && s != 0
                        {
                            out.push((node_path.clone(), a, s, irq));
                        }
                    }
                }
            }
            if is_pci {
                continue;
            }
            let child_windows = if node_path == "/" {
                Some(Vec::new())
            } else {
                Self::windows(&node).map(|w| {
                    let mut all = windows.clone();
                    if !w.is_empty() {
                        all.push(w);
                    }
                    all
                })
            };
            let Some(child_windows) = child_windows else {
                continue;
            };
            let irq_here = node
                .property("interrupt-parent")
                .and_then(|p| p.value_as::<u32>().ok())
                .or(irq_parent);
            for child in node.children() {
                let p = join(&node_path, child.name());
                stack.push((child, p, child_windows.clone(), irq_here));
            }
        }
        out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        Some(out)
    }

    /// The RAM ranges of the `/memory` nodes.
    fn memory(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for node in self.fdt.root().children() {
            let is_memory = node.name_without_address() == "memory"
                || node
                    .property("device_type")
                    .and_then(|p| p.value_as::<&str>().ok())
                    .is_some_and(|t| t == "memory");
            if is_memory && let Some(regs) = Self::regs(&node, &[]) {
                out.extend(regs);
            }
        }
        out
    }
}

fn to_usize(v: u64, field: Field) -> ConfigResult<usize> {
    usize::try_from(v).map_err(|_| ConfigError::Overflow {
        field,
        start: usize::MAX,
        size: 0,
    })
}

impl VmConfig {
    /// Replaces every pass-through entry that names a host device-tree node by the
    /// device ranges of that node and the nodes below it in `host` (GPA = HPA, the
    /// node's first interrupt), leaving out `excluded_devices`; then validates. A
    /// board calls this at boot with its own tree; `cargo xtask config check
    /// --host-dtb FILE` with the one given.
    pub fn resolve_host_devices(&mut self, host: &DeviceTree<'_>) -> ConfigResult<()> {
        let excluded = &self.devices.excluded_devices;
        let mut out = Vec::with_capacity(self.devices.passthrough_devices.len());
        for (i, d) in self.devices.passthrough_devices.iter().enumerate() {
            if !d.host_node {
                out.push(d.clone());
                continue;
            }
            let field = Field::at(PASSTHROUGH, i);
            let found =
                host.devices_under(&d.name, excluded)
                    .ok_or_else(|| ConfigError::NoSuchNode {
                        field,
                        path: d.name.clone(),
                    })?;
            for (path, addr, size, irq) in found {
                let addr = to_usize(addr, field)?;
                out.push(PassthroughDeviceConfig {
                    name: path,
                    base_gpa: GuestPhysAddr::from_usize(addr),
                    base_hpa: HostPhysAddr::from_usize(addr),
                    length: to_usize(size, field)?,
                    irq,
                    host_node: false,
                });
            }
        }
        self.devices.passthrough_devices = out;
        self.validate()
    }

    /// Whether the guest RAM is still to be read from the guest device tree
    /// (`memory_regions = []` with a `dtb_path`).
    pub fn memory_from_dtb(&self) -> bool {
        self.kernel.memory_regions.is_empty() && self.kernel.dtb_path.is_some()
    }

    /// Takes the guest RAM from the `/memory` nodes of the guest device tree `guest`
    /// when the config has no memory regions (axvisor's meaning of
    /// `memory_regions = []`); then validates.
    pub fn memory_from_guest_dtb(&mut self, guest: &DeviceTree<'_>) -> ConfigResult<()> {
        if self.kernel.memory_regions.is_empty() {
            let field = Field::key("kernel.memory_regions");
            for (addr, size) in guest.memory() {
                self.kernel.memory_regions.push(MemoryRegionConfig {
                    gpa: GuestPhysAddr::from_usize(to_usize(addr, field)?),
                    size: to_usize(size, field)?,
                    flags: MappingFlags::RWX | MappingFlags::USER,
                    map_type: MapType::Identical,
                    populate: Populate::Eager,
                });
            }
        }
        self.validate()
    }
}
