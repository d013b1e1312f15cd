//! VM configuration: the types (`no_std`), a builder, validation, and the resolution
//! of device-tree references (`no_std`). TOML loading (`VmConfig::from_toml`) and
//! code generation for build scripts (`VmConfig::to_rust_source`) are behind the
//! `std` feature.
//!
//! The files are axvisor's, read as axvisor reads them. The sectioned format
//! (axvmconfig 0.2 to 0.8.3):
//!
//! ```toml
//! [base]
//! id = 1
//! name = "linux"
//! vm_type = 1              # 0 host VM, 1 RTOS, 2 Linux
//! cpu_num = 2
//! phys_cpu_ids = [0, 1]    # optional, one per vCPU
//! phys_cpu_sets = [1, 2]   # optional, one bit mask per vCPU
//!
//! [kernel]
//! entry_point = 0x4020_0000     # optional: the load address
//! image_location = "memory"     # or "fs"; absent: "memory" (axvisor since 2026)
//! kernel_path = "guest.bin"
//! kernel_load_addr = 0x4020_0000  # optional: 2 MiB into the first memory region
//! dtb_path = "guest.dtb"        # optional, and so is each path / load address below
//! dtb_load_addr = 0x4000_0000
//! # ramdisk_path, ramdisk_load_addr, bios_path, bios_load_addr, cmdline,
//! # enable_bios = true + boot_protocol = "multiboot" | "uefi" (+ uefi_firmware_path)
//! # [gpa, size, flags, map_type(, populate)], or inline tables with those names;
//! # [] with a dtb_path: the RAM of the guest device tree's /memory nodes
//! memory_regions = [[0x4000_0000, 0x100_0000, 0x7, 0]]
//!
//! [devices]
//! # [name, base_gpa, base_hpa, length, irq_id] (the last four may be left out: 0),
//! # or ["/path/of/a/host/node"] (address, size, interrupt from the host device
//! # tree at boot; "/" = every device of it)
//! passthrough_devices = [["pl011@9000000", 0x0900_0000, 0x0900_0000, 0x1000, 33]]
//! excluded_devices = [["/pcie@10000000"]]      # nodes "/" leaves out
//! passthrough_addresses = [[0x2804_1000, 0x1000]]  # [gpa, length], GPA = HPA
//! passthrough_ports = [[0x60, 0x10]]           # x86 [port, count]
//! # [name, base_gpa, length, irq_id, emu_type, cfg_list]; an x86 console (2) or PIT
//! # (0x24) below 0x1_0000 is a port-I/O device (COM1 at 0x3f8, PIT at 0x40)
//! emu_devices = [["test-device", 0x0b00_0000, 0x1000, 0, 0, []]]
//! interrupt_mode = "no_irq"  # or "emu"/"emulated", "passthrough"/"pt"
//! address_space_policy = "virtualized"  # or "passthrough": every host device
//! ```
//!
//! The device-graph format of axvmconfig 0.8.4 and later: every table and key may be
//! left out, `base.guest_type = "passthrough" | "virtualized"` instead of `vm_type`,
//! and `[devices]` holds `passthrough = [{ path = ".." }]` and `disabled = [..]`
//! (host nodes a pass-through guest does not get). The flat 2024 format (keys at the
//! top level) is refused with an error that names it; so is any key this project
//! does not know or does not implement, naming the nearest known key.
//!
//! `flags` are [`MappingFlags`] bits (READ=1 WRITE=2 EXECUTE=4 USER=8 DEVICE=16
//! UNCACHED=32; DEVICE and UNCACHED only on host memory, map_type 1 or 2);
//! `map_type` is 0 alloc, 1 identical (placed where the host allocates, GPA = HPA
//! there: axvisor since 2025-09; so identical regions may overlap on paper), 2
//! reserved (host memory at GPA = HPA as configured). **Our one extension**: an
//! optional fifth element `populate` of a memory region, 0 eager (the default:
//! every frame allocated at VM creation), 1 lazy (each page at its first access)
//! or 2 lazy in 2 MiB blocks (a fault maps the whole 2 MiB block around it where
//! the block lies in the region, `Populate::LazyHuge`), lazy only with map_type 0.

mod error;
mod placement;
mod summary;
mod sweep;
mod validate;

mod devicetree;

#[cfg(feature = "std")]
mod codegen;
#[cfg(feature = "std")]
mod keys;
#[cfg(feature = "std")]
mod parse;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use addrspace::{GuestPhysAddr, HostPhysAddr, MappingFlags, Populate};

pub use devicetree::DeviceTree;
pub use error::{ConfigError, ConfigResult, Field, Hex};
pub use summary::Summary;
pub use validate::{DEFAULT_KERNEL_OFFSET, MAX_CPU_NUM, ValidConfig};
pub(crate) use validate::{PASSTHROUGH, page_cover, passthrough_pages};

/// What kind of guest the VM runs (axvisor's `vm_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VmType {
    /// 0: the host itself, booted as a VM ("type 1.5").
    HostVm,
    /// 1: an RTOS with most resources passed through.
    #[default]
    Rtos,
    /// 2: a Linux guest.
    Linux,
}

impl VmType {
    /// The type with number `n`.
    pub const fn from_raw(n: u64) -> Option<Self> {
        match n {
            0 => Some(Self::HostVm),
            1 => Some(Self::Rtos),
            2 => Some(Self::Linux),
            _ => None,
        }
    }

    /// Its number in the config file.
    pub const fn raw(self) -> u64 {
        match self {
            Self::HostVm => 0,
            Self::Rtos => 1,
            Self::Linux => 2,
        }
    }
}

/// How a memory region is backed (axvisor's `map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    /// 0: memory allocated by the hypervisor (eagerly or lazily).
    Alloc,
    /// 1: contiguous host memory placed where the host allocates it, mapped at
    /// GPA = HPA there (the configured GPA is not honoured: axvisor since 2025-09).
    Identical,
    /// 2: host memory at the configured address (GPA = HPA), reserved for the guest
    /// by the platform (not allocated, not freed).
    Reserved,
}

impl MapType {
    /// The type with number `n`.
    pub const fn from_raw(n: u64) -> Option<Self> {
        match n {
            0 => Some(Self::Alloc),
            1 => Some(Self::Identical),
            2 => Some(Self::Reserved),
            _ => None,
        }
    }

    /// Its number in the config file.
    pub const fn raw(self) -> u64 {
        match self {
            Self::Alloc => 0,
            Self::Identical => 1,
            Self::Reserved => 2,
        }
    }
}

/// Where the kernel image comes from (axvisor's `image_location`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ImageLocation {
    /// `"fs"`: loaded from a file system by the hypervisor.
    Fs,
    /// `"memory"`: built into the hypervisor image (the default: axvisor loads from
    /// its file system only when told `"fs"`).
    #[default]
    Memory,
}

/// How the VM's interrupts are handled (axvisor's `interrupt_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InterruptMode {
    /// `"no_irq"` (also `"no"`, `"none"`): the guest uses no interrupts (the default).
    #[default]
    NoIrq,
    /// `"emu"` (also `"emulated"`): an emulated interrupt controller.
    Emulated,
    /// `"passthrough"` (also `"pt"`): the physical controller is passed through.
    Passthrough,
}

/// How vCPU 0 is started (axvisor's `enable_bios` and `boot_protocol`, checked
/// together as axvmconfig 0.8 does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BootProtocol {
    /// At the kernel's entry point (no firmware: `enable_bios = false`).
    #[default]
    Direct,
    /// Through a BIOS at `bios_load_addr` that boots a multiboot kernel (x86).
    Multiboot,
    /// Through UEFI firmware (`uefi_firmware_path`, else `bios_path`) at
    /// `bios_load_addr`.
    Uefi,
}

/// One entry of `kernel.memory_regions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegionConfig {
    /// Guest-physical start (for `Identical`, where it is written, not where it
    /// will be: see [`MapType::Identical`]).
    pub gpa: GuestPhysAddr,
    /// Size in bytes.
    pub size: usize,
    /// What the guest may do there.
    pub flags: MappingFlags,
    /// How it is backed.
    pub map_type: MapType,
    /// When its frames are allocated (only `Alloc` regions may be lazy).
    pub populate: Populate,
}

/// One entry of `devices.passthrough_devices`: `[name, base_gpa, base_hpa, length,
/// irq]`, or a reference to a host device-tree node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughDeviceConfig {
    /// Name (for messages); for a host node, its path.
    pub name: String,
    /// Guest-physical base.
    pub base_gpa: GuestPhysAddr,
    /// Host-physical base.
    pub base_hpa: HostPhysAddr,
    /// Length in bytes (need not be page-aligned: the mapping is widened to 4 KiB).
    pub length: usize,
    /// Interrupt number.
    pub irq: usize,
    /// `name` is the path of a host device-tree node (`"/"` for the whole tree)
    /// whose ranges and interrupt come from the host tree
    /// ([`VmConfig::resolve_host_devices`]); the numbers are 0 until then.
    pub host_node: bool,
}

impl PassthroughDeviceConfig {
    /// A reference to host device-tree node `path`.
    pub fn host_node(path: &str) -> Self {
        Self {
            name: path.to_string(),
            base_gpa: GuestPhysAddr::from_usize(0),
            base_hpa: HostPhysAddr::from_usize(0),
            length: 0,
            irq: 0,
            host_node: true,
        }
    }
}

/// Where an emulated device sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceSpace {
    /// Guest-physical memory (trap-and-emulate MMIO).
    #[default]
    Mmio,
    /// x86 I/O ports: `base_gpa` holds the first port; vm-core's port bus serves
    /// its port-I/O exits with the model attached by name.
    Port,
}

/// One entry of `devices.emu_devices`: `[name, base_gpa, length, irq_id, emu_type,
/// cfg_list]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuDeviceConfig {
    /// Name; the board attaches the device model by this name
    /// ([`crate::Vm::attach_device`]).
    pub name: String,
    /// Guest-physical base (for [`DeviceSpace::Port`]: the first port).
    pub base_gpa: GuestPhysAddr,
    /// Length in bytes (ports).
    pub length: usize,
    /// Interrupt number.
    pub irq_id: usize,
    /// axvisor's `EmulatedDeviceType` number (see [`KNOWN_EMU_TYPES`]); kept as
    /// written.
    pub emu_type: u64,
    /// Device-specific parameters.
    pub cfg_list: Vec<usize>,
    /// Memory or ports ([`emu_space`] decides, as axvisor does).
    pub space: DeviceSpace,
}

/// axvisor's emulated-device type numbers (axvm-types 0.7, read by axvmconfig 0.8):
/// 0 dummy, 1 interrupt controller, 2 console, 3 fw_cfg, 0xa IVC channel,
/// 0x20-0x22 GIC partial pass-through (redistributor, distributor, ITS), 0x23 x86
/// I/O APIC, 0x24 x86 PIT, 0x25 LoongArch PCH-PIC, 0x30 PLIC partial pass-through,
/// 0xe1-0xe3 virtio block, net, console. Other numbers are refused, as there.
pub const KNOWN_EMU_TYPES: &[u64] = &[
    0x0, 0x1, 0x2, 0x3, 0xa, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x30, 0xe1, 0xe2, 0xe3,
];

/// Ports of x86 (the port-I/O space is 64 KiB).
pub const PORT_SPACE: usize = 0x1_0000;

/// Whether an emulated device of `emu_type` at `base` is port I/O: axvisor's x86
/// console (2, COM1 at 0x3f8) and PIT (0x24, at 0x40) are registered on the port
/// bus; this project takes those types as ports when they fit below 0x1_0000,
/// which no MMIO console of the other architectures does.
pub fn emu_space(emu_type: u64, base: GuestPhysAddr, length: usize) -> DeviceSpace {
    let fits = base
        .as_usize()
        .checked_add(length)
        .is_some_and(|end| end <= PORT_SPACE);
    if matches!(emu_type, 0x2 | 0x24) && fits {
        DeviceSpace::Port
    } else {
        DeviceSpace::Mmio
    }
}

/// One entry of `devices.passthrough_addresses`: host memory-mapped I/O passed to
/// the guest at the same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassthroughAddressConfig {
    /// Guest- and host-physical base.
    pub base_gpa: GuestPhysAddr,
    /// Length in bytes (widened to 4 KiB pages).
    pub length: usize,
}

/// One entry of `devices.passthrough_ports`: x86 I/O ports the guest reaches
/// directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRangeConfig {
    /// First port.
    pub base: u16,
    /// Number of ports.
    pub length: u16,
}

/// The `[kernel]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Where vCPU 0 starts.
    pub entry_point: GuestPhysAddr,
    /// Where the image comes from.
    pub image_location: ImageLocation,
    /// The image's path (or name, for `Memory`).
    pub kernel_path: String,
    /// Where the image is loaded.
    pub kernel_load_addr: GuestPhysAddr,
    /// Direct, or through firmware.
    pub boot_protocol: BootProtocol,
    /// BIOS image path, if any.
    pub bios_path: Option<String>,
    /// UEFI firmware path, if any.
    pub uefi_firmware_path: Option<String>,
    /// BIOS (or UEFI firmware) load address, if any.
    pub bios_load_addr: Option<GuestPhysAddr>,
    /// Device tree path, if any.
    pub dtb_path: Option<String>,
    /// Device tree load address, if any.
    pub dtb_load_addr: Option<GuestPhysAddr>,
    /// Ramdisk path, if any.
    pub ramdisk_path: Option<String>,
    /// Ramdisk load address, if any.
    pub ramdisk_load_addr: Option<GuestPhysAddr>,
    /// Kernel command line, if any.
    pub cmdline: Option<String>,
    /// The guest's memory (empty until taken from the guest device tree, see
    /// [`VmConfig::memory_from_guest_dtb`]).
    pub memory_regions: Vec<MemoryRegionConfig>,
}

/// The `[devices]` section.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DevicesConfig {
    /// Host devices mapped into the guest.
    pub passthrough_devices: Vec<PassthroughDeviceConfig>,
    /// Host device-tree nodes (with everything below them) that a reference to a
    /// node above them leaves out (axvisor flattens its list of lists).
    pub excluded_devices: Vec<String>,
    /// Host MMIO ranges mapped at the same guest address.
    pub passthrough_addresses: Vec<PassthroughAddressConfig>,
    /// x86 I/O ports passed through.
    pub passthrough_ports: Vec<PortRangeConfig>,
    /// Devices emulated by the hypervisor (trap and emulate).
    pub emu_devices: Vec<EmuDeviceConfig>,
    /// Interrupt handling.
    pub interrupt_mode: InterruptMode,
}

/// A whole VM configuration. Build it with [`VmConfigBuilder`] or (feature `std`)
/// `VmConfig::from_toml`; both validate. [`VmConfig::into_valid`] makes the
/// [`ValidConfig`] a VM is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// VM id (also its VMID for TLB maintenance).
    pub id: usize,
    /// Name.
    pub name: String,
    /// Guest kind.
    pub vm_type: VmType,
    /// Number of vCPUs.
    pub cpu_num: usize,
    /// Physical CPU id of each vCPU, if pinned.
    pub phys_cpu_ids: Option<Vec<usize>>,
    /// Bit mask of the physical CPUs each vCPU may run on, if restricted.
    pub phys_cpu_sets: Option<Vec<usize>>,
    /// `[kernel]`.
    pub kernel: KernelConfig,
    /// `[devices]`.
    pub devices: DevicesConfig,
}

/// Builds a [`VmConfig`] in code (`no_std`); the code generator for build scripts
/// emits calls to it. `build` validates.
///
/// ```
/// use vm_core::{VmConfigBuilder, MapType, MappingFlags, Populate, GuestPhysAddr};
/// let gpa = GuestPhysAddr::from_usize;
/// let config = VmConfigBuilder::new(1, "demo", 1)
///     .entry_point(gpa(0x4000_0000))
///     .memory_region(gpa(0x4000_0000), 0x10_0000, MappingFlags::RWX, MapType::Alloc, Populate::Eager)
///     .build()
///     .unwrap();
/// assert_eq!(config.kernel.kernel_load_addr, gpa(0x4000_0000));
/// ```
#[derive(Clone, Debug)]
pub struct VmConfigBuilder {
    config: VmConfig,
    load_addr_set: bool,
}

impl VmConfigBuilder {
    /// A VM `id` named `name` with `cpu_num` vCPUs, no memory, entry and load
    /// address 0, image location `Memory`, direct boot.
    pub fn new(id: usize, name: &str, cpu_num: usize) -> Self {
        Self {
            config: VmConfig {
                id,
                name: name.to_string(),
                vm_type: VmType::default(),
                cpu_num,
                phys_cpu_ids: None,
                phys_cpu_sets: None,
                kernel: KernelConfig {
                    entry_point: GuestPhysAddr::from_usize(0),
                    image_location: ImageLocation::default(),
                    kernel_path: String::new(),
                    kernel_load_addr: GuestPhysAddr::from_usize(0),
                    boot_protocol: BootProtocol::Direct,
                    bios_path: None,
                    uefi_firmware_path: None,
                    bios_load_addr: None,
                    dtb_path: None,
                    dtb_load_addr: None,
                    ramdisk_path: None,
                    ramdisk_load_addr: None,
                    cmdline: None,
                    memory_regions: Vec::new(),
                },
                devices: DevicesConfig::default(),
            },
            load_addr_set: false,
        }
    }

    /// Sets `base.vm_type`.
    pub fn vm_type(mut self, vm_type: VmType) -> Self {
        self.config.vm_type = vm_type;
        self
    }

    /// Sets `base.phys_cpu_ids`.
    pub fn phys_cpu_ids(mut self, ids: &[usize]) -> Self {
        self.config.phys_cpu_ids = Some(ids.to_vec());
        self
    }

    /// Sets `base.phys_cpu_sets`.
    pub fn phys_cpu_sets(mut self, sets: &[usize]) -> Self {
        self.config.phys_cpu_sets = Some(sets.to_vec());
        self
    }

    /// Sets `kernel.entry_point` (and the load address too, unless set by
    /// [`VmConfigBuilder::kernel`]).
    pub fn entry_point(mut self, entry: GuestPhysAddr) -> Self {
        self.config.kernel.entry_point = entry;
        if !self.load_addr_set {
            self.config.kernel.kernel_load_addr = entry;
        }
        self
    }

    /// Sets `kernel.image_location`, `kernel_path` and `kernel_load_addr`.
    pub fn kernel(mut self, location: ImageLocation, path: &str, load_addr: GuestPhysAddr) -> Self {
        self.config.kernel.image_location = location;
        self.config.kernel.kernel_path = path.to_string();
        self.config.kernel.kernel_load_addr = load_addr;
        self.load_addr_set = true;
        self
    }

    /// Sets `kernel.boot_protocol` (and so `enable_bios`).
    pub fn boot_protocol(mut self, protocol: BootProtocol) -> Self {
        self.config.kernel.boot_protocol = protocol;
        self
    }

    /// Sets `kernel.uefi_firmware_path`.
    pub fn uefi_firmware_path(mut self, path: &str) -> Self {
        self.config.kernel.uefi_firmware_path = Some(path.to_string());
        self
    }

    /// Sets `kernel.bios_path` and `bios_load_addr`.
    pub fn bios(self, path: &str, load_addr: GuestPhysAddr) -> Self {
        self.bios_path(path).bios_load_addr(load_addr)
    }

    /// Sets `kernel.bios_path` alone.
    pub fn bios_path(mut self, path: &str) -> Self {
        self.config.kernel.bios_path = Some(path.to_string());
        self
    }

    /// Sets `kernel.bios_load_addr` alone.
    pub fn bios_load_addr(mut self, load_addr: GuestPhysAddr) -> Self {
        self.config.kernel.bios_load_addr = Some(load_addr);
        self
    }

    /// Sets `kernel.dtb_path` and `dtb_load_addr`.
    pub fn dtb(self, path: &str, load_addr: GuestPhysAddr) -> Self {
        self.dtb_path(path).dtb_load_addr(load_addr)
    }

    /// Sets `kernel.dtb_path` alone.
    pub fn dtb_path(mut self, path: &str) -> Self {
        self.config.kernel.dtb_path = Some(path.to_string());
        self
    }

    /// Sets `kernel.dtb_load_addr` alone.
    pub fn dtb_load_addr(mut self, load_addr: GuestPhysAddr) -> Self {
        self.config.kernel.dtb_load_addr = Some(load_addr);
        self
    }

    /// Sets `kernel.ramdisk_path` and `ramdisk_load_addr`.
    pub fn ramdisk(self, path: &str, load_addr: GuestPhysAddr) -> Self {
        self.ramdisk_path(path).ramdisk_load_addr(load_addr)
    }

    /// Sets `kernel.ramdisk_path` alone.
    pub fn ramdisk_path(mut self, path: &str) -> Self {
        self.config.kernel.ramdisk_path = Some(path.to_string());
        self
    }

    /// Sets `kernel.ramdisk_load_addr` alone.
    pub fn ramdisk_load_addr(mut self, load_addr: GuestPhysAddr) -> Self {
        self.config.kernel.ramdisk_load_addr = Some(load_addr);
        self
    }

    /// Sets `kernel.cmdline`.
    pub fn cmdline(mut self, cmdline: &str) -> Self {
        self.config.kernel.cmdline = Some(cmdline.to_string());
        self
    }

    /// Adds a memory region.
    pub fn memory_region(
        mut self,
        gpa: GuestPhysAddr,
        size: usize,
        flags: MappingFlags,
        map_type: MapType,
        populate: Populate,
    ) -> Self {
        self.config.kernel.memory_regions.push(MemoryRegionConfig {
            gpa,
            size,
            flags,
            map_type,
            populate,
        });
        self
    }

    /// Adds a pass-through device.
    pub fn passthrough_device(
        mut self,
        name: &str,
        base_gpa: GuestPhysAddr,
        base_hpa: HostPhysAddr,
        length: usize,
        irq: usize,
    ) -> Self {
        self.config
            .devices
            .passthrough_devices
            .push(PassthroughDeviceConfig {
                name: name.to_string(),
                base_gpa,
                base_hpa,
                length,
                irq,
                host_node: false,
            });
        self
    }

    /// Adds an emulated device.
    pub fn emu_device(
        self,
        name: &str,
        base_gpa: GuestPhysAddr,
        length: usize,
        irq_id: usize,
        emu_type: u64,
        cfg_list: &[usize],
    ) -> Self {
        let d = (name, base_gpa, length, irq_id, emu_type, cfg_list);
        self.push_emu(d, DeviceSpace::Mmio)
    }

    /// Adds an emulated x86 port-I/O device at ports `[port, port + length)`.
    pub fn port_device(
        self,
        name: &str,
        port: u16,
        length: usize,
        irq_id: usize,
        emu_type: u64,
        cfg_list: &[usize],
    ) -> Self {
        let base = GuestPhysAddr::from_usize(usize::from(port));
        self.push_emu(
            (name, base, length, irq_id, emu_type, cfg_list),
            DeviceSpace::Port,
        )
    }

    #[allow(clippy::type_complexity)] // the six elements of an emu_devices entry
    fn push_emu(
        mut self,
        (name, base_gpa, length, irq_id, emu_type, cfg_list): (
            &str,
            GuestPhysAddr,
            usize,
            usize,
            u64,
            &[usize],
        ),
        space: DeviceSpace,
    ) -> Self {
        self.config.devices.emu_devices.push(EmuDeviceConfig {
            name: name.to_string(),
            base_gpa,
            length,
            irq_id,
            emu_type,
            cfg_list: cfg_list.to_vec(),
            space,
        });
        self
    }

    /// Adds a pass-through entry naming host device-tree node `path` (`"/"`: every
    /// device of the host tree), resolved by [`VmConfig::resolve_host_devices`].
    pub fn host_device(mut self, path: &str) -> Self {
        self.config
            .devices
            .passthrough_devices
            .push(PassthroughDeviceConfig::host_node(path));
        self
    }

    /// Leaves host device-tree node `path` (and the nodes below it) out of the host
    /// devices a node reference passes through.
    pub fn excluded_device(mut self, path: &str) -> Self {
        self.config.devices.excluded_devices.push(path.to_string());
        self
    }

    /// Passes host MMIO `[base, base + length)` through at the same guest address.
    pub fn passthrough_address(mut self, base: GuestPhysAddr, length: usize) -> Self {
        self.config
            .devices
            .passthrough_addresses
            .push(PassthroughAddressConfig {
                base_gpa: base,
                length,
            });
        self
    }

    /// Passes x86 I/O ports `[base, base + length)` through.
    pub fn passthrough_port(mut self, base: u16, length: u16) -> Self {
        self.config
            .devices
            .passthrough_ports
            .push(PortRangeConfig { base, length });
        self
    }

    /// Sets `devices.interrupt_mode`.
    pub fn interrupt_mode(mut self, mode: InterruptMode) -> Self {
        self.config.devices.interrupt_mode = mode;
        self
    }

    /// Replaces the whole `[kernel]` section (the TOML loader reads it at once).
    #[cfg(feature = "std")]
    pub(crate) fn kernel_config(mut self, kernel: KernelConfig) -> Self {
        self.config.kernel = kernel;
        self.load_addr_set = true;
        self
    }

    /// Replaces the whole `[devices]` section.
    #[cfg(feature = "std")]
    pub(crate) fn devices_config(mut self, devices: DevicesConfig) -> Self {
        self.config.devices = devices;
        self
    }

    /// The configuration without validation (for tests of the validator).
    pub fn build_unchecked(self) -> VmConfig {
        self.config
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> ConfigResult<VmConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}
