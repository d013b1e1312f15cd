//! What the riscv64 board gives a Linux guest, as pure code tested on the host: where
//! the kernel, initrd, device tree and doorbell probe go ([`linux_layout`], checked
//! against the kernel's image header and the VM config), what the host's device tree
//! says about the harts ([`host_hart_facts`]), and the guest's device tree
//! ([`linux_dtb`]): the portable one ([`vm_core::fdt::guest_tree`]) plus per hart
//! `compatible`, `riscv,isa` (the host hart's ISA without what the guest cannot use),
//! `mmu-type` and the hart-local interrupt controller; the timebase; and the
//! passed-through ns16550a UART under `/soc`, polled (the guest has no PLIC, so no
//! `interrupts`).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use platforms::linux::LinuxLayout;
use vm_core::VmConfig;
use vm_core::fdt::{self, DeviceTree, GuestTreeOptions, ReservedRange, TreeResult};

/// The single-letter extensions a guest may see: the host's, less `h` (the guest has
/// no hypervisor extension) and `v` (the world switch does not keep vector state).
const LETTERS: &str = "imafdc";

/// The multi-letter extensions a guest may see when the host hart has them: the
/// ones that need nothing of the hypervisor. Left out: Svpbmt, Zicbom/Zicboz,
/// Svinval, Svnapot (each needs `henvcfg` bits or handling this board does not do).
const MULTI: &[&str] = &[
    "zicsr",
    "zifencei",
    "zicntr",
    "zihpm",
    "zihintpause",
    "zba",
    "zbb",
    "zbc",
    "zbs",
    "sstc",
];

/// The guest's `riscv,isa` from the host hart's (`rv64imafdch_zicsr_..._sstc`):
/// the host's letters and multi-letter extensions that the guest may see, in the
/// host's order. `None` when the host string is not an RV64 one.
pub(crate) fn guest_isa(host: &str) -> Option<String> {
    let rest = host.strip_prefix("rv64")?;
    let mut parts = rest.split('_');
    let letters: String = parts
        .next()?
        .chars()
        .filter(|c| LETTERS.contains(*c))
        .collect();
    let mut isa = format!("rv64{letters}");
    for ext in parts.filter(|e| MULTI.contains(e)) {
        isa.push('_');
        isa.push_str(ext);
    }
    Some(isa)
}

/// The hart facts the guest's tree repeats from the host's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HartFacts {
    /// The guest's `riscv,isa`.
    pub(crate) isa: String,
    /// `mmu-type` (`riscv,sv48`).
    pub(crate) mmu_type: String,
    /// `/cpus/timebase-frequency` in Hz.
    pub(crate) timebase: u32,
}

/// The passed-through UART as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Uart {
    /// Guest-physical base.
    pub(crate) base: u64,
    /// Register window size.
    pub(crate) size: u64,
    /// Input clock in Hz.
    pub(crate) clock: u32,
}

/// Adds the riscv64 pieces to `tree` (made by `guest_tree` with harts `hart_ids`);
/// returns the UART's node path (for `stdout-path`).
pub(crate) fn add_riscv(
    tree: &mut DeviceTree,
    hart_ids: &[u64],
    hart: &HartFacts,
    uart: Uart,
) -> TreeResult<String> {
    fdt::set(
        fdt::node_mut(tree, "/cpus")?,
        "/cpus",
        "timebase-frequency",
        hart.timebase,
    )?;
    let mut phandles: Vec<u32> = Vec::new();
    for _ in hart_ids {
        let next = match phandles.last() {
            Some(p) => p + 1,
            None => fdt::alloc_phandle(tree)?,
        };
        phandles.push(next);
    }
    for (&id, &phandle) in hart_ids.iter().zip(&phandles) {
        let path = format!("/cpus/cpu@{id:x}");
        let cpu = fdt::node_mut(tree, &path)?;
        fdt::set(cpu, &path, "compatible", "riscv")?;
        fdt::set(cpu, &path, "riscv,isa", hart.isa.as_str())?;
        fdt::set(cpu, &path, "mmu-type", hart.mmu_type.as_str())?;
        let ic_path = format!("{path}/interrupt-controller");
        let ic = fdt::child(cpu, &path, "interrupt-controller")?;
        fdt::set(ic, &ic_path, "#interrupt-cells", 1u32)?;
        fdt::set(ic, &ic_path, "interrupt-controller", &[] as &[u8])?;
        fdt::set(ic, &ic_path, "compatible", "riscv,cpu-intc")?;
        fdt::set(ic, &ic_path, "phandle", phandle)?;
    }
    let soc = fdt::child(&mut tree.root, "/", "soc")?;
    fdt::set(soc, "/soc", "#address-cells", 2u32)?;
    fdt::set(soc, "/soc", "#size-cells", 2u32)?;
    fdt::set(soc, "/soc", "compatible", "simple-bus")?;
    fdt::set(soc, "/soc", "ranges", &[] as &[u8])?;
    let name = format!("serial@{:x}", uart.base);
    let path = format!("/soc/{name}");
    let serial = fdt::child(soc, "/soc", &name)?;
    fdt::set(serial, &path, "compatible", "ns16550a")?;
    fdt::set(
        serial,
        &path,
        "reg",
        fdt::reg(&[(uart.base, uart.size)], 2, 2)?,
    )?;
    fdt::set(serial, &path, "clock-frequency", uart.clock)?;
    Ok(path)
}

/// The riscv64 Image's `image_size`, the memory the kernel uses from its load address
/// (Documentation/arch/riscv/boot-image-header.rst: `image_size` at 16,
/// little-endian; magic2 "RSC\x05" at 0x38).
pub(crate) fn image_size(kernel: &[u8]) -> Result<usize, String> {
    if kernel.get(0x38..0x3c) != Some(b"RSC\x05") {
        return Err("the kernel is no riscv64 Image (no RSC\\x05 at 0x38)".into());
    }
    let size = kernel
        .get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("the kernel's image header is cut short")?;
    usize::try_from(size).map_err(|_| format!("the kernel's image_size {size:#x} is too large"))
}

/// QEMU virt's ns16550a input clock (3.6864 MHz).
const UART_CLOCK: u32 = 3_686_400;

/// Where a Linux guest of `config` goes ([`platforms::linux::linux_layout`]), with the
/// kernel's `image_size` from its riscv64 Image header.
pub(crate) fn linux_layout(
    config: &VmConfig,
    kernel: &[u8],
    initrd_len: usize,
) -> Result<LinuxLayout, String> {
    platforms::linux::linux_layout(config, image_size(kernel)?, initrd_len)
}

/// What the host's device tree (from OpenSBI) says about its first hart, as the
/// guest will see it (`sstc`: whether the guest may use Sstc, i.e. `henvcfg.STCE`
/// is set).
pub(crate) fn host_hart_facts(dtb: &[u8], sstc: bool) -> Result<HartFacts, String> {
    use dtoolkit::fdt::Fdt;
    use dtoolkit::{Node, Property};
    let fdt = Fdt::new(dtb).map_err(|e| format!("host device tree: {e}"))?;
    let cpus = fdt.find_node("/cpus").ok_or("host device tree: no /cpus")?;
    let cpu0 = cpus
        .children()
        .find(|c| c.name().starts_with("cpu@"))
        .ok_or("host device tree: no /cpus/cpu@*")?;
    let str_prop = |name: &str| -> Option<String> {
        let p = cpu0.property(name)?;
        let v = p.value();
        let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
        core::str::from_utf8(&v[..end]).ok().map(String::from)
    };
    let host_isa = str_prop("riscv,isa").ok_or("host device tree: no riscv,isa")?;
    let mut isa =
        guest_isa(&host_isa).ok_or_else(|| format!("host riscv,isa {host_isa:?} is not rv64"))?;
    if !sstc {
        isa = isa.replace("_sstc", "");
    }
    let mmu_type = str_prop("mmu-type").unwrap_or_else(|| String::from("riscv,sv39"));
    let timebase = cpus
        .property("timebase-frequency")
        .and_then(|p| p.value().try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or("host device tree: no /cpus/timebase-frequency")?;
    Ok(HartFacts {
        isa,
        mmu_type,
        timebase,
    })
}

/// The guest's device tree blob for `config` laid out as `layout`: the portable tree
/// (memory, harts 0..cpu_num, `/chosen` with the config's command line plus
/// `hvcore.doorbell=` and `hvcore.probe=`, the initrd, the probe as `no-map`
/// reserved memory) and the riscv64 pieces ([`add_riscv`]).
pub(crate) fn linux_dtb(
    config: &VmConfig,
    layout: &LinuxLayout,
    facts: &HartFacts,
) -> Result<Vec<u8>, String> {
    let err = |e: vm_core::GuestTreeError| format!("guest device tree: {e}");
    let bootargs = platforms::linux::bootargs(config, layout);
    let hart_ids: Vec<u64> = (0..config.cpu_num as u64).collect();
    let mut tree = fdt::guest_tree(
        config,
        &GuestTreeOptions {
            compatible: "hvcore,qemu-virt-riscv64".to_string(),
            cpu_ids: hart_ids.clone(),
            bootargs: Some(bootargs),
            stdout_path: None,
            initrd: Some((layout.initrd_at, layout.initrd_len)),
            reserved: alloc::vec![ReservedRange {
                name: "hvcore-probe".to_string(),
                gpa: layout.probe.0,
                size: layout.probe.1,
            }],
        },
    )
    .map_err(err)?;
    let uart = Uart {
        base: layout.uart.0,
        size: layout.uart.1,
        clock: UART_CLOCK,
    };
    let serial = add_riscv(&mut tree, &hart_ids, facts, uart).map_err(err)?;
    platforms::linux::finish_dtb(tree, &serial)
}

#[cfg(test)]
mod tests {
    use vm_core::GuestPhysAddr;

    use super::*;

    #[test]
    fn guest_isa_drops_what_the_guest_cannot_use() {
        let qemu72 = "rv64imafdch_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc";
        assert_eq!(
            guest_isa(qemu72).as_deref(),
            Some("rv64imafdc_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc")
        );
        assert_eq!(
            guest_isa("rv64imafdcvh_zicbom_svpbmt_sstc").as_deref(),
            Some("rv64imafdc_sstc")
        );
        assert_eq!(guest_isa("rv32imac"), None);
        assert_eq!(guest_isa("").as_deref(), None);
    }

    /// The board's Linux config (`configs/qemu-virt-riscv64-linux.toml`), its UART
    /// resolved against QEMU 7.2's own tree as the board does at boot.
    fn linux_config() -> VmConfig {
        let dir = env!("CARGO_MANIFEST_DIR");
        let path = format!("{dir}/../../configs/qemu-virt-riscv64-linux.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut config = VmConfig::from_toml(&text).unwrap();
        let qemu = std::fs::read(format!(
            "{dir}/../../vm-core/tests/data/qemu-virt-riscv64.dtb"
        ))
        .unwrap();
        platforms::board_config::resolve_device_trees(&mut config, &qemu, None).unwrap();
        config
    }

    /// A riscv64 Image header claiming `image_size` bytes.
    fn kernel(image_size: u64) -> Vec<u8> {
        let mut k = alloc::vec![0u8; 0x40];
        k[16..24].copy_from_slice(&image_size.to_le_bytes());
        k[0x38..0x3c].copy_from_slice(b"RSC\x05");
        k
    }

    /// A host tree as QEMU 7.2 gives it: two harts with the H extension.
    fn host_dtb() -> Vec<u8> {
        let mut t = DeviceTree::new();
        let cpus = fdt::child(&mut t.root, "/", "cpus").unwrap();
        fdt::set(cpus, "/cpus", "timebase-frequency", 10_000_000u32).unwrap();
        for n in ["cpu@0", "cpu@1"] {
            let cpu = fdt::child(cpus, "/cpus", n).unwrap();
            fdt::set(
                cpu,
                n,
                "riscv,isa",
                "rv64imafdch_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc",
            )
            .unwrap();
            fdt::set(cpu, n, "mmu-type", "riscv,sv48").unwrap();
        }
        fdt::to_dtb(&t).unwrap()
    }

    /// The Linux config lays out with the Debian kernel's image_size (0x1e6c000)
    /// and a 2.5 MiB initrd; the guest tree built from it says what Linux needs.
    #[test]
    fn linux_config_gives_a_guest_tree() {
        use dtoolkit::fdt::Fdt;
        use dtoolkit::{Node, Property};
        let config = linux_config();
        assert_eq!(config.vm_type, vm_core::VmType::Linux);
        let layout = linux_layout(&config, &kernel(0x1e6c000), 0x28_c000).unwrap();
        assert_eq!(
            layout.probe,
            (GuestPhysAddr::from_usize(0xc000_0000), 0x20_0000)
        );
        let facts = host_hart_facts(&host_dtb(), true).unwrap();
        assert_eq!(
            facts,
            HartFacts {
                isa: "rv64imafdc_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc".into(),
                mmu_type: "riscv,sv48".into(),
                timebase: 10_000_000,
            }
        );
        assert!(
            !host_hart_facts(&host_dtb(), false)
                .unwrap()
                .isa
                .contains("sstc")
        );
        let dtb = linux_dtb(&config, &layout, &facts).unwrap();
        let fdt = Fdt::new(&dtb).unwrap();
        let text = |path: &str, prop: &str| {
            let node = fdt.find_node(path).unwrap_or_else(|| panic!("{path}"));
            let v = node
                .property(prop)
                .unwrap_or_else(|| panic!("{path} {prop}"))
                .value()
                .to_vec();
            String::from_utf8(v)
                .unwrap()
                .trim_end_matches('\0')
                .to_string()
        };
        let bootargs = text("/chosen", "bootargs");
        assert!(bootargs.starts_with("console=ttyS0 "), "{bootargs}");
        assert!(bootargs.ends_with(" hvcore.doorbell=0xb000000 hvcore.probe=0xc0000000"));
        assert_eq!(text("/chosen", "stdout-path"), "/soc/serial@10000000");
        assert_eq!(text("/soc/serial@10000000", "compatible"), "ns16550a");
        assert_eq!(text("/cpus/cpu@1", "riscv,isa"), facts.isa);
        assert_eq!(
            text("/cpus/cpu@1/interrupt-controller", "compatible"),
            "riscv,cpu-intc"
        );
        let phandle = |p: &str| {
            let v = fdt
                .find_node(p)
                .unwrap()
                .property("phandle")
                .unwrap()
                .value()
                .to_vec();
            u32::from_be_bytes(v.try_into().unwrap())
        };
        assert_ne!(
            phandle("/cpus/cpu@0/interrupt-controller"),
            phandle("/cpus/cpu@1/interrupt-controller")
        );
        assert!(
            fdt.find_node("/reserved-memory/hvcore-probe@c0000000")
                .unwrap()
                .property("no-map")
                .is_some()
        );
    }

    /// A kernel that runs into the initrd, a probe that is not a region of its own,
    /// a header without the magic: errors naming what is wrong.
    #[test]
    fn bad_layouts_are_refused() {
        let config = linux_config();
        let err = linux_layout(&config, &kernel(0x1000_0000), 0x1000).unwrap_err();
        assert!(
            err.contains("the initrd") && err.contains("overlaps the kernel"),
            "{err}"
        );
        let err = linux_layout(&config, &kernel(0x100_0000), 0x1000_0000).unwrap_err();
        assert!(
            err.contains("device tree") && err.contains("overlaps the initrd"),
            "{err}"
        );
        assert!(
            linux_layout(&config, &[0u8; 0x40], 0x1000)
                .unwrap_err()
                .contains("RSC")
        );
        assert!(image_size(&kernel(5)[..0x3c]).is_ok());
        assert!(image_size(&kernel(5)[..0x20]).is_err());
        let mut moved = config.clone();
        moved.devices.emu_devices[0].cfg_list = alloc::vec![0xc000_0000, 0x1000];
        let err = linux_layout(&moved, &kernel(0x1e6c000), 0x1000).unwrap_err();
        assert!(err.contains("not a memory region of its own"), "{err}");
        moved.devices.emu_devices[0].cfg_list = alloc::vec![0xc000_0000];
        assert!(linux_layout(&moved, &kernel(0x1e6c000), 0x1000).is_err());
    }
}
