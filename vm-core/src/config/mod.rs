//! VM configuration: the types (`no_std`), a builder, and validation. TOML loading
//! (`VmConfig::from_toml`) and code generation for build scripts
//! (`VmConfig::to_rust_source`) are behind the `std` feature.
//!
//! The format is axvisor's classic VM config, accepted unchanged:
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
//! entry_point = 0x4000_0000
//! image_location = "memory"  # or "fs" (default)
//! kernel_path = "guest.bin"
//! kernel_load_addr = 0x4000_0000
//! dtb_path = "guest.dtb"     # optional, with dtb_load_addr
//! # [gpa, size, flags, map_type(, populate)]
//! memory_regions = [[0x4000_0000, 0x100_0000, 0x7, 0]]
//!
//! [devices]
//! passthrough_devices = [["pl011@9000000", 0x0900_0000, 0x0900_0000, 0x1000, 33]]
//! emu_devices = [["test-device", 0x0b00_0000, 0x1000, 0, 0, []]]
//! interrupt_mode = "no_irq"  # or "emu"/"emulated", "passthrough"/"pt"
//! ```
//!
//! `flags` are [`MappingFlags`] bits (READ=1 WRITE=2 EXECUTE=4 USER=8 DEVICE=16
//! UNCACHED=32); `map_type` is 0 alloc, 1 identical, 2 reserved. **Our one
//! extension**: an optional fifth element `populate` of a memory region, 0 eager
//! (the default: every frame allocated at VM creation) or 1 lazy (each page at its
//! first access), allowed only with map_type 0.

mod error;
mod sweep;
mod validate;

#[cfg(feature = "std")]
mod codegen;
#[cfg(feature = "std")]
mod parse;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use addrspace::{GuestPhysAddr, HostPhysAddr, MappingFlags, Populate};

pub use error::{ConfigError, ConfigResult, Field, Hex};
pub use validate::MAX_CPU_NUM;
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
    /// 1: host memory at the same address (GPA = HPA), allocated from the HAL with
    /// `alloc_memory_region_at`; falls back to allocated memory with a warning.
    Identical,
    /// 2: host memory at the same address, reserved for the guest by the platform
    /// (not allocated, not freed).
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
    /// `"fs"`: loaded from a file system by the hypervisor (the default).
    #[default]
    Fs,
    /// `"memory"`: built into the hypervisor image.
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

/// One entry of `kernel.memory_regions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegionConfig {
    /// Guest-physical start.
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

/// One entry of `devices.passthrough_devices`: `[name, base_gpa, base_hpa, length, irq]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassthroughDeviceConfig {
    /// Name (for messages).
    pub name: String,
    /// Guest-physical base.
    pub base_gpa: GuestPhysAddr,
    /// Host-physical base.
    pub base_hpa: HostPhysAddr,
    /// Length in bytes (need not be page-aligned: the mapping is widened to 4 KiB).
    pub length: usize,
    /// Interrupt number.
    pub irq: usize,
}

/// One entry of `devices.emu_devices`: `[name, base_gpa, length, irq_id, emu_type,
/// cfg_list]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuDeviceConfig {
    /// Name; the board attaches the device model by this name
    /// ([`crate::Vm::attach_device`]).
    pub name: String,
    /// Guest-physical base.
    pub base_gpa: GuestPhysAddr,
    /// Length in bytes.
    pub length: usize,
    /// Interrupt number.
    pub irq_id: usize,
    /// axvisor's `EmulatedDeviceType` number (0 dummy, 1 interrupt controller,
    /// 2 console, 0x20.. GPPT, 0xe1.. virtio); kept as written.
    pub emu_type: u64,
    /// Device-specific parameters.
    pub cfg_list: Vec<usize>,
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
    /// BIOS image path, if any.
    pub bios_path: Option<String>,
    /// BIOS load address, if any.
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
    /// The guest's memory.
    pub memory_regions: Vec<MemoryRegionConfig>,
}

/// The `[devices]` section.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DevicesConfig {
    /// Host devices mapped into the guest.
    pub passthrough_devices: Vec<PassthroughDeviceConfig>,
    /// Devices emulated by the hypervisor (trap and emulate).
    pub emu_devices: Vec<EmuDeviceConfig>,
    /// Interrupt handling.
    pub interrupt_mode: InterruptMode,
}

/// A whole VM configuration. Build it with [`VmConfigBuilder`] or (feature `std`)
/// `VmConfig::from_toml`; both validate.
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
    /// address 0, image location `Fs`.
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
                    bios_path: None,
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
            });
        self
    }

    /// Adds an emulated device.
    pub fn emu_device(
        mut self,
        name: &str,
        base_gpa: GuestPhysAddr,
        length: usize,
        irq_id: usize,
        emu_type: u64,
        cfg_list: &[usize],
    ) -> Self {
        self.config.devices.emu_devices.push(EmuDeviceConfig {
            name: name.to_string(),
            base_gpa,
            length,
            irq_id,
            emu_type,
            cfg_list: cfg_list.to_vec(),
        });
        self
    }

    /// Sets `devices.interrupt_mode`.
    pub fn interrupt_mode(mut self, mode: InterruptMode) -> Self {
        self.config.devices.interrupt_mode = mode;
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
