//! A one-line summary of the VM a config describes (what `cargo xtask config check`
//! prints for a config that loads): vCPUs, RAM by region and map type, the devices
//! passed through and emulated, and the entry point.

use core::fmt;

use addrspace::Populate;

use super::{BootProtocol, DeviceSpace, Hex, MapType, VmConfig};

/// How many entries of a list are named before "+N more".
const NAMED: usize = 3;

/// A size in the largest binary unit that divides it (`16 MiB`), else in hex.
struct Size(usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if self.0 != 0 && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{} {unit}", self.0 >> shift);
            }
        }
        write!(f, "{} bytes", Hex::from(self.0))
    }
}

/// The summary; see [`VmConfig::summary`].
pub struct Summary<'a>(&'a VmConfig);

impl VmConfig {
    /// A one-line summary of the VM: `"linux" (id 1): 2 vCPUs; RAM 1 GiB: 1 GiB
    /// identical (written at 0x8000_0000, placed by the host); pass-through: host
    /// tree "/" but 1 excluded node; emulated: none; entry 0x8020_0000`.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

impl Summary<'_> {
    fn regions(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.0.kernel;
        if k.memory_regions.is_empty() {
            let dtb = k.dtb_path.as_deref().unwrap_or("");
            return write!(f, "RAM from the /memory nodes of {dtb} (read at boot)");
        }
        let total: usize = k.memory_regions.iter().map(|r| r.size).sum();
        write!(f, "RAM {}: ", Size(total))?;
        for (i, r) in k.memory_regions.iter().enumerate() {
            if i == NAMED + 1 && k.memory_regions.len() > NAMED + 1 {
                return write!(f, ", +{} more", k.memory_regions.len() - i);
            }
            if i > 0 {
                f.write_str(", ")?;
            }
            let at = Hex::from(r.gpa.as_usize());
            match (r.map_type, r.populate) {
                (MapType::Alloc, Populate::Eager) => write!(f, "{} alloc at {at}", Size(r.size)),
                (MapType::Alloc, Populate::Lazy) => {
                    write!(f, "{} alloc lazy at {at}", Size(r.size))
                }
                (MapType::Alloc, Populate::LazyHuge) => {
                    write!(f, "{} alloc lazy (2 MiB blocks) at {at}", Size(r.size))
                }
                (MapType::Reserved, _) => write!(f, "{} reserved at {at}", Size(r.size)),
                (MapType::Identical, _) => write!(
                    f,
                    "{} identical (written at {at}, placed by the host)",
                    Size(r.size)
                ),
            }?;
        }
        Ok(())
    }

    fn passthrough(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0.devices;
        let (nodes, ranges): (alloc::vec::Vec<_>, alloc::vec::Vec<_>) =
            d.passthrough_devices.iter().partition(|p| p.host_node);
        f.write_str("pass-through: ")?;
        let mut parts = 0;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            parts += 1;
            if parts > 1 { f.write_str(", ") } else { Ok(()) }
        };
        if !ranges.is_empty() {
            sep(f)?;
            write!(f, "{} range{}", ranges.len(), plural(ranges.len()))?;
            names(f, ranges.iter().map(|p| p.name.as_str()))?;
        }
        if !nodes.is_empty() {
            sep(f)?;
            f.write_str("host tree")?;
            for (i, n) in nodes.iter().take(NAMED).enumerate() {
                write!(f, "{}\"{}\"", if i == 0 { " " } else { ", " }, n.name)?;
            }
            if nodes.len() > NAMED {
                write!(f, " +{} more", nodes.len() - NAMED)?;
            }
            if !d.excluded_devices.is_empty() {
                let n = d.excluded_devices.len();
                write!(f, " but {n} excluded node{}", plural(n))?;
            }
        }
        if !d.passthrough_addresses.is_empty() {
            sep(f)?;
            let n = d.passthrough_addresses.len();
            write!(f, "{n} address range{}", plural(n))?;
        }
        if !d.passthrough_ports.is_empty() {
            sep(f)?;
            let n = d.passthrough_ports.len();
            write!(f, "{n} port range{}", plural(n))?;
        }
        if parts == 0 {
            f.write_str("none")?;
        }
        Ok(())
    }

    fn emulated(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let emu = &self.0.devices.emu_devices;
        if emu.is_empty() {
            return f.write_str("emulated: none");
        }
        write!(f, "emulated: {}", emu.len())?;
        let ports = emu.iter().filter(|e| e.space == DeviceSpace::Port).count();
        if ports > 0 {
            write!(f, " ({ports} port I/O)")?;
        }
        names(f, emu.iter().map(|e| e.name.as_str()))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// ` (a, b, c +2 more)`.
fn names<'n>(
    f: &mut fmt::Formatter<'_>,
    all: impl ExactSizeIterator<Item = &'n str>,
) -> fmt::Result {
    let n = all.len();
    f.write_str(" (")?;
    for (i, name) in all.take(NAMED).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        f.write_str(name)?;
    }
    if n > NAMED {
        write!(f, " +{} more", n - NAMED)?;
    }
    f.write_str(")")
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "\"{}\" (id {}): {} vCPU{}; ",
            c.name,
            c.id,
            c.cpu_num,
            plural(c.cpu_num)
        )?;
        self.regions(f)?;
        f.write_str("; ")?;
        self.passthrough(f)?;
        f.write_str("; ")?;
        self.emulated(f)?;
        let k = &c.kernel;
        write!(f, "; entry {}", Hex::from(k.entry_point.as_usize()))?;
        if k.kernel_load_addr != k.entry_point {
            write!(f, " (load {})", Hex::from(k.kernel_load_addr.as_usize()))?;
        }
        match k.boot_protocol {
            BootProtocol::Direct => Ok(()),
            p => write!(f, ", {p:?} boot"),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use crate::{GuestPhysAddr, HostPhysAddr, MapType, MappingFlags, Populate, VmConfigBuilder};

    #[test]
    fn the_summary_names_vcpus_ram_devices_and_entry() {
        let g = GuestPhysAddr::from_usize;
        let c = VmConfigBuilder::new(1, "linux", 2)
            .entry_point(g(0x8020_0000))
            .memory_region(
                g(0x8000_0000),
                0x4000_0000,
                MappingFlags::RWX,
                MapType::Identical,
                Populate::Eager,
            )
            .memory_region(
                g(0x1_0000_0000),
                0x20_0000,
                MappingFlags::RW,
                MapType::Alloc,
                Populate::Lazy,
            )
            .host_device("/")
            .excluded_device("/pcie@10000000")
            .passthrough_device(
                "uart",
                g(0x900_0000),
                HostPhysAddr::from_usize(0x900_0000),
                0x1000,
                33,
            )
            .port_device("x86-com1", 0x3f8, 8, 4, 2, &[])
            .build()
            .unwrap();
        assert_eq!(
            c.summary().to_string(),
            "\"linux\" (id 1): 2 vCPUs; RAM 1026 MiB: 1 GiB identical (written at 0x8000_0000, \
             placed by the host), 2 MiB alloc lazy at 0x1_0000_0000; pass-through: 1 range \
             (uart), host tree \"/\" but 1 excluded node; emulated: 1 (1 port I/O) (x86-com1); \
             entry 0x8020_0000"
        );
    }
}
