//! What the aarch64 board adds to a Linux guest's device tree, as pure code tested on
//! the host: the portable tree ([`vm_core::fdt::guest_tree`]: memory, CPUs, `/chosen`,
//! the doorbell's probe as `no-map` reserved memory) plus, per CPU, `compatible` and
//! PSCI as the enable method; PSCI by HVC; the architected timer; the virtual GICv3
//! with its distributor and every redistributor frame; and the passed-through PL011
//! with its interrupt and clocks.
//!
//! The bindings are Linux's `Documentation/devicetree/bindings/`: `arm/cpus.yaml`,
//! `arm/psci.yaml`, `timer/arm,arch_timer.yaml`,
//! `interrupt-controller/arm,gic-v3.yaml`, `serial/arm,pl011.yaml`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use platforms::linux::LinuxLayout;
use vm_core::VmConfig;
use vm_core::fdt::{self, DeviceTree, GuestTreeOptions, ReservedRange, TreeResult};

/// The virtual GIC as the guest finds it: the distributor and the redistributors'
/// region (one 128 KiB frame per vCPU, in vCPU order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gic {
    /// Distributor base and size.
    pub(crate) dist: (u64, u64),
    /// Redistributor region base and size.
    pub(crate) redist: (u64, u64),
}

/// The passed-through PL011.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pl011 {
    /// Base and size.
    pub(crate) reg: (u64, u64),
    /// Its interrupt's INTID (an SPI, 32 and up).
    pub(crate) intid: u32,
}

/// The PL011's reference clock on QEMU virt (24 MHz).
const UART_CLOCK: u32 = 24_000_000;

/// GIC interrupt specifier flags: level-sensitive, active high.
const IRQ_LEVEL_HIGH: u32 = 4;
/// Specifier types: SPI 0, PPI 1.
const SPI: u32 = 0;
const PPI: u32 = 1;

/// Adds the aarch64 pieces to `tree` (made by `guest_tree` with CPUs `cpu_ids`, the
/// MPIDR affinities); returns the UART's node path (for `stdout-path`).
pub(crate) fn add_arm(
    tree: &mut DeviceTree,
    cpu_ids: &[u64],
    gic: Gic,
    uart: Pl011,
) -> TreeResult<String> {
    let gic_phandle = fdt::alloc_phandle(tree)?;
    let clock_phandle = gic_phandle + 1;
    fdt::set(&mut tree.root, "/", "interrupt-parent", gic_phandle)?;
    for &id in cpu_ids {
        let path = format!("/cpus/cpu@{id:x}");
        let cpu = fdt::node_mut(tree, &path)?;
        fdt::set(cpu, &path, "compatible", "arm,arm-v8")?;
        fdt::set(cpu, &path, "enable-method", "psci")?;
    }
    let root = &mut tree.root;

    let psci = fdt::child(root, "/", "psci")?;
    let compatible = fdt::strings(&["arm,psci-1.0", "arm,psci-0.2"]);
    fdt::set(psci, "/psci", "compatible", compatible)?;
    fdt::set(psci, "/psci", "method", "hvc")?;

    // The secure and non-secure physical, virtual and hypervisor timers: PPIs 13,
    // 14, 11 and 10 (INTIDs 29, 30, 27, 26).
    let timer = fdt::child(root, "/", "timer")?;
    fdt::set(timer, "/timer", "compatible", "arm,armv8-timer")?;
    let mut cells = Vec::new();
    for ppi in [13u32, 14, 11, 10] {
        cells.extend_from_slice(&[PPI, ppi, IRQ_LEVEL_HIGH]);
    }
    fdt::set(timer, "/timer", "interrupts", be_cells(&cells))?;
    fdt::set(timer, "/timer", "always-on", &[] as &[u8])?;

    let name = format!("intc@{:x}", gic.dist.0);
    let path = format!("/{name}");
    let intc = fdt::child(root, "/", &name)?;
    fdt::set(intc, &path, "compatible", "arm,gic-v3")?;
    fdt::set(intc, &path, "#interrupt-cells", 3u32)?;
    fdt::set(intc, &path, "interrupt-controller", &[] as &[u8])?;
    fdt::set(intc, &path, "#redistributor-regions", 1u32)?;
    fdt::set(intc, &path, "reg", fdt::reg(&[gic.dist, gic.redist], 2, 2)?)?;
    fdt::set(intc, &path, "phandle", gic_phandle)?;

    let clock = fdt::child(root, "/", "apb-pclk")?;
    fdt::set(clock, "/apb-pclk", "compatible", "fixed-clock")?;
    fdt::set(clock, "/apb-pclk", "#clock-cells", 0u32)?;
    fdt::set(clock, "/apb-pclk", "clock-frequency", UART_CLOCK)?;
    fdt::set(clock, "/apb-pclk", "clock-output-names", "clk24mhz")?;
    fdt::set(clock, "/apb-pclk", "phandle", clock_phandle)?;

    let name = format!("pl011@{:x}", uart.reg.0);
    let path = format!("/{name}");
    let serial = fdt::child(root, "/", &name)?;
    let compatible = fdt::strings(&["arm,pl011", "arm,primecell"]);
    fdt::set(serial, &path, "compatible", compatible)?;
    fdt::set(serial, &path, "reg", fdt::reg(&[uart.reg], 2, 2)?)?;
    let spi = uart.intid.saturating_sub(32);
    fdt::set(
        serial,
        &path,
        "interrupts",
        be_cells(&[SPI, spi, IRQ_LEVEL_HIGH]),
    )?;
    fdt::set(
        serial,
        &path,
        "clocks",
        be_cells(&[clock_phandle, clock_phandle]),
    )?;
    fdt::set(
        serial,
        &path,
        "clock-names",
        fdt::strings(&["uartclk", "apb_pclk"]),
    )?;
    Ok(path)
}

/// Cells as a property value (big-endian 32-bit words).
fn be_cells(cells: &[u32]) -> Vec<u8> {
    cells.iter().flat_map(|c| c.to_be_bytes()).collect()
}

/// The guest's device tree blob for `config` laid out as `layout`, with vCPUs of
/// MPIDR affinities `cpu_ids` and the virtual GIC `gic`: the portable tree (memory,
/// CPUs, `/chosen` with [`platforms::linux::bootargs`] and the initrd, the probe as
/// `no-map` reserved memory) and the aarch64 pieces ([`add_arm`]).
pub(crate) fn linux_dtb(
    config: &VmConfig,
    layout: &LinuxLayout,
    cpu_ids: &[u64],
    gic: Gic,
) -> Result<Vec<u8>, String> {
    let err = |e: vm_core::GuestTreeError| format!("guest device tree: {e}");
    let uart = config
        .devices
        .passthrough_devices
        .first()
        .ok_or("the Linux config passes no UART through")?;
    let uart = Pl011 {
        reg: layout.uart,
        intid: u32::try_from(uart.irq).unwrap_or(0),
    };
    let mut tree = fdt::guest_tree(
        config,
        &GuestTreeOptions {
            compatible: String::from("hvcore,qemu-virt-aarch64"),
            cpu_ids: cpu_ids.to_vec(),
            bootargs: Some(platforms::linux::bootargs(config, layout)),
            stdout_path: None,
            initrd: Some((layout.initrd_at, layout.initrd_len)),
            reserved: alloc::vec![ReservedRange {
                name: String::from("hvcore-probe"),
                gpa: layout.probe.0,
                size: layout.probe.1,
            }],
        },
    )
    .map_err(err)?;
    let serial = add_arm(&mut tree, cpu_ids, gic, uart).map_err(err)?;
    platforms::linux::finish_dtb(tree, &serial)
}

#[cfg(test)]
mod tests {
    use dtoolkit::fdt::Fdt;
    use dtoolkit::{Node, Property};

    use super::*;

    /// The board's Linux config (`configs/qemu-virt-aarch64-linux.toml`), its PL011
    /// resolved against QEMU's tree (vm-core's test data) as at boot.
    fn linux_config() -> VmConfig {
        let dir = env!("CARGO_MANIFEST_DIR");
        let path = format!("{dir}/../../configs/qemu-virt-aarch64-linux.toml");
        let config = VmConfig::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap();
        let host = std::fs::read(format!(
            "{dir}/../../vm-core/tests/data/qemu-virt-aarch64.dtb"
        ));
        crate::config::resolve(config, Some(&host.unwrap())).unwrap()
    }

    const GIC: Gic = Gic {
        dist: (0x0800_0000, 0x1_0000),
        redist: (0x080a_0000, 0x4_0000),
    };

    fn cells(fdt: &Fdt<'_>, path: &str, prop: &str) -> Vec<u32> {
        let node = fdt.find_node(path).unwrap_or_else(|| panic!("{path}"));
        let v = node
            .property(prop)
            .unwrap_or_else(|| panic!("{path} {prop}"))
            .value()
            .to_vec();
        v.chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn text(fdt: &Fdt<'_>, path: &str, prop: &str) -> String {
        let node = fdt.find_node(path).unwrap_or_else(|| panic!("{path}"));
        let v = node.property(prop).unwrap().value().to_vec();
        String::from_utf8(v).unwrap()
    }

    /// The Linux config lays out with the Debian 6.1 kernel's image_size (0x2010000)
    /// and a 2.7 MiB initramfs; the tree says what Linux's arm64 bindings need: PSCI by
    /// HVC as every CPU's enable method, the timer's four PPIs, the GICv3 with the
    /// distributor and both redistributor frames as the interrupt parent, the PL011
    /// with SPI 1 and its clocks, the probe kept as `no-map` reserved memory.
    #[test]
    fn linux_config_gives_an_arm_guest_tree() {
        let config = linux_config();
        assert_eq!(config.vm_type, vm_core::VmType::Linux);
        let layout = platforms::linux::linux_layout(&config, 0x201_0000, 0x2b_0000).unwrap();
        let dtb = linux_dtb(&config, &layout, &[0, 1], GIC).unwrap();
        let fdt = Fdt::new(&dtb).unwrap();
        let gic = cells(&fdt, "/intc@8000000", "phandle")[0];
        assert_eq!(cells(&fdt, "/", "interrupt-parent"), [gic]);
        assert_eq!(
            cells(&fdt, "/intc@8000000", "reg"),
            [0, 0x0800_0000, 0, 0x1_0000, 0, 0x080a_0000, 0, 0x4_0000]
        );
        assert_eq!(text(&fdt, "/intc@8000000", "compatible"), "arm,gic-v3\0");
        assert_eq!(text(&fdt, "/cpus/cpu@1", "enable-method"), "psci\0");
        assert_eq!(cells(&fdt, "/cpus/cpu@1", "reg"), [1]);
        assert_eq!(text(&fdt, "/psci", "method"), "hvc\0");
        assert_eq!(
            text(&fdt, "/psci", "compatible"),
            "arm,psci-1.0\0arm,psci-0.2\0"
        );
        assert_eq!(
            cells(&fdt, "/timer", "interrupts"),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert_eq!(cells(&fdt, "/pl011@9000000", "interrupts"), [0, 1, 4]);
        let clock = cells(&fdt, "/apb-pclk", "phandle")[0];
        assert_ne!(clock, gic);
        assert_eq!(cells(&fdt, "/pl011@9000000", "clocks"), [clock, clock]);
        assert_eq!(text(&fdt, "/chosen", "stdout-path"), "/pl011@9000000\0");
        let bootargs = text(&fdt, "/chosen", "bootargs");
        assert!(bootargs.starts_with("console=ttyAMA0 "), "{bootargs}");
        assert!(bootargs.ends_with(" hvcore.doorbell=0xb000000 hvcore.probe=0x60000000\0"));
        assert_eq!(
            cells(&fdt, "/chosen", "linux,initrd-start"),
            [0, 0x4800_0000]
        );
        assert!(
            fdt.find_node("/reserved-memory/hvcore-probe@60000000")
                .unwrap()
                .property("no-map")
                .is_some()
        );
    }

    /// A kernel whose image_size runs into the initramfs is refused by name.
    #[test]
    fn a_kernel_too_large_for_its_place_is_refused() {
        let config = linux_config();
        let err = platforms::linux::linux_layout(&config, 0x900_0000, 0x1000).unwrap_err();
        assert!(err.contains("overlaps the kernel"), "{err}");
    }
}
