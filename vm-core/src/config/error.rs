//! Why a VM configuration was refused: [`ConfigError`], whose `Display` names the
//! field and the value (`kernel.memory_regions[1]: overlaps [0] at 0x8000_0000`).

use alloc::string::String;
use core::fmt;

use addrspace::MappingFlags;

use super::BootProtocol;

/// A field of the configuration: `path` (`"kernel.memory_regions"`), the element
/// index for arrays, and the element's part for tuples (`"flags"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Dotted path of the TOML key.
    pub path: &'static str,
    /// Index in the array, for array fields.
    pub index: Option<usize>,
    /// Name of the tuple element, for tuple entries.
    pub part: Option<&'static str>,
}

impl Field {
    /// A plain key.
    pub const fn key(path: &'static str) -> Self {
        Self {
            path,
            index: None,
            part: None,
        }
    }

    /// Element `index` of an array.
    pub const fn at(path: &'static str, index: usize) -> Self {
        Self {
            path,
            index: Some(index),
            part: None,
        }
    }

    /// The same field, narrowed to tuple element `part`.
    pub const fn part(self, part: &'static str) -> Self {
        Self {
            path: self.path,
            index: self.index,
            part: Some(part),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        if let Some(p) = self.part {
            write!(f, ".{p}")?;
        }
        Ok(())
    }
}

/// A number printed in hex with `_` every four digits: `0x8000_0000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex(pub u64);

impl From<usize> for Hex {
    fn from(v: usize) -> Self {
        // usize is at most 64 bits on every target this crate builds for.
        Self(u64::try_from(v).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 16];
        let mut n = self.0;
        let mut len = 0;
        loop {
            digits[len] = b"0123456789abcdef"[(n & 0xf) as usize];
            len += 1;
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        f.write_str("0x")?;
        for i in (0..len).rev() {
            write!(f, "{}", digits[i] as char)?;
            if i > 0 && i % 4 == 0 {
                f.write_str("_")?;
            }
        }
        Ok(())
    }
}

/// Why a configuration was refused. Every variant names the field; `Display` reads
/// `field: problem`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text does not parse.
    Syntax {
        /// The parser's message (with line and column).
        message: String,
    },
    /// A required key is absent.
    Missing {
        /// The key.
        field: Field,
    },
    /// A value has the wrong TOML type.
    WrongType {
        /// The key.
        field: Field,
        /// What was expected (`"integer"`, `"string"`, `"array"`, ...).
        expected: &'static str,
    },
    /// An integer is negative or does not fit.
    OutOfRange {
        /// The key.
        field: Field,
        /// The value as written.
        value: i64,
    },
    /// A tuple entry has the wrong number of elements.
    TupleLength {
        /// The entry.
        field: Field,
        /// Elements found.
        len: usize,
        /// What is accepted, e.g. `"4 or 5"`.
        expected: &'static str,
    },
    /// A string is not one of the accepted names.
    UnknownName {
        /// The key.
        field: Field,
        /// The value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// `map_type` is not 0 (alloc), 1 (identical) or 2 (reserved).
    UnknownMapType {
        /// The region.
        field: Field,
        /// The value.
        value: u64,
    },
    /// `populate` is not 0 (eager), 1 (lazy) or 2 (lazy, 2 MiB blocks).
    UnknownPopulate {
        /// The region.
        field: Field,
        /// The value.
        value: u64,
    },
    /// `vm_type` is not 0 (host VM), 1 (RTOS) or 2 (Linux).
    UnknownVmType {
        /// The key.
        field: Field,
        /// The value.
        value: u64,
    },
    /// Flags with bits that are not `MappingFlags` (READ=1 WRITE=2 EXECUTE=4 USER=8
    /// DEVICE=16 UNCACHED=32).
    UnknownFlags {
        /// The region.
        field: Field,
        /// The value.
        value: u64,
    },
    /// Flags without READ, WRITE or EXECUTE.
    NoAccess {
        /// The region.
        field: Field,
        /// The flags.
        flags: MappingFlags,
    },
    /// The DEVICE flag on a RAM region (pass-through devices go in `[devices]`).
    DeviceFlagOnRam {
        /// The region.
        field: Field,
        /// The flags.
        flags: MappingFlags,
    },
    /// `populate = 1` or `2` (lazy) on a region that is not map_type 0 (alloc).
    LazyNotAlloc {
        /// The region.
        field: Field,
        /// Its map type.
        map_type: u64,
    },
    /// A string that must not be empty is.
    Empty {
        /// The key.
        field: Field,
    },
    /// A size of zero.
    ZeroSize {
        /// The entry.
        field: Field,
    },
    /// An address or size that is not 4 KiB-aligned.
    Unaligned {
        /// The entry and element.
        field: Field,
        /// The value.
        value: usize,
    },
    /// `start + size` overflows (or its end cannot be rounded up to a page).
    Overflow {
        /// The entry.
        field: Field,
        /// Start.
        start: usize,
        /// Size.
        size: usize,
    },
    /// `cpu_num` is 0.
    NoCpus,
    /// `cpu_num` is above the limit ([`super::MAX_CPU_NUM`]).
    TooManyCpus {
        /// `base.cpu_num`.
        cpu_num: usize,
        /// The limit.
        max: usize,
    },
    /// A CPU list whose length is not `cpu_num`.
    CpuListLength {
        /// The list.
        field: Field,
        /// Its length.
        len: usize,
        /// `base.cpu_num`.
        cpu_num: usize,
    },
    /// The same physical CPU id twice.
    DuplicateCpuId {
        /// The second occurrence.
        field: Field,
        /// The id.
        id: usize,
    },
    /// A CPU set of 0 (no physical CPU allowed).
    EmptyCpuSet {
        /// The entry.
        field: Field,
    },
    /// No memory regions.
    NoMemory,
    /// Two memory regions overlap.
    Overlap {
        /// The later region.
        field: Field,
        /// The index of the earlier one.
        other: usize,
        /// First common address.
        at: usize,
    },
    /// An address that must lie in RAM (entry point, load address) does not.
    NotInRam {
        /// The key.
        field: Field,
        /// The address.
        value: usize,
    },
    /// A device range overlaps a memory region.
    DeviceOverlapsRam {
        /// The device entry.
        field: Field,
        /// The memory region's index.
        region: usize,
        /// First common address.
        at: usize,
    },
    /// Two device ranges overlap and cannot be merged (emulated devices, an emulated
    /// and a pass-through device, or pass-through devices with different GPA→HPA
    /// offsets).
    DeviceOverlap {
        /// The device entry.
        field: Field,
        /// The other device (`"devices.emu_devices[0]"`).
        other: Field,
        /// First common address.
        at: usize,
    },
    /// Two entries share a name that must be unique (a board attaches an emulated
    /// device's model by its name).
    DuplicateName {
        /// The later entry's name.
        field: Field,
        /// The name.
        name: String,
        /// The index of the earlier entry.
        other: usize,
    },
    /// A pass-through device whose GPA and HPA have different offsets in their 4 KiB
    /// page, which a page mapping cannot express.
    PageOffsetMismatch {
        /// The device entry.
        field: Field,
        /// Its GPA.
        gpa: usize,
        /// Its HPA.
        hpa: usize,
    },
    /// A key this project does not know (or not in this format).
    UnknownKey {
        /// The table holding it (`"devices"`, `"kernel.memory_regions[2]"`; empty
        /// for the top level).
        field: Field,
        /// The key as written.
        key: String,
        /// The known key of that table nearest to it.
        nearest: &'static str,
    },
    /// A key axvisor knows that this project does not implement (it would change
    /// the VM, so it is not dropped silently).
    NotSupported {
        /// The key.
        field: Field,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// The flat format of 2024 (keys at the top level, no `[base]`).
    FlatFormat {
        /// The first top-level key that gave it away.
        key: String,
    },
    /// The `[machine]` / `[memory]` tables of the typed-machine proposal (tgoskits
    /// PR 1612, never merged).
    TypedMachineFormat {
        /// The table.
        key: String,
    },
    /// An emulated-device type number axvisor does not define.
    UnknownEmuType {
        /// The entry's `emu_type`.
        field: Field,
        /// The value.
        value: u64,
    },
    /// `enable_bios` and `boot_protocol` disagree (no BIOS but a firmware protocol,
    /// or a BIOS with direct boot).
    BootProtocolConflict {
        /// `kernel.boot_protocol`.
        field: Field,
        /// The protocol.
        protocol: BootProtocol,
        /// `kernel.enable_bios`.
        enable_bios: bool,
    },
    /// Firmware boot without the firmware image or its load address.
    NoFirmware {
        /// The missing key.
        field: Field,
        /// The protocol that needs it.
        protocol: BootProtocol,
    },
    /// A device-tree path that is not absolute (or `"/"` where a node is needed, or
    /// a node both passed through and disabled).
    BadNodePath {
        /// The entry.
        field: Field,
        /// The path.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two keys that say the same thing.
    Duplicate {
        /// The second key.
        field: Field,
        /// The first.
        other: Field,
    },
    /// `kernel_load_addr` omitted but no memory region can hold the kernel 2 MiB
    /// into it (the first region is missing or not larger than 2 MiB).
    NoKernelPlace {
        /// `kernel.kernel_load_addr`.
        field: Field,
    },
    /// A device tree that does not parse.
    DeviceTree {
        /// The reader's message.
        message: String,
    },
    /// A pass-through entry names a node the host tree does not have.
    NoSuchNode {
        /// The entry.
        field: Field,
        /// The path.
        path: String,
    },
    /// A VM is to be built from a config whose device-tree references are not
    /// resolved yet ([`super::VmConfig::resolve_host_devices`]).
    UnresolvedHostNode {
        /// The entry.
        field: Field,
        /// The path.
        path: String,
    },
    /// A VM is to be built from a config whose RAM is still to be read from the
    /// guest device tree ([`super::VmConfig::memory_from_guest_dtb`]).
    MemoryNotRead {
        /// `kernel.memory_regions`.
        field: Field,
    },
    /// The kernel follows the first (identical) region and its entry point would
    /// not lie inside that region (it keeps its offset from the load address).
    EntryOutsideKernelRegion {
        /// `kernel.entry_point`.
        entry: usize,
        /// `kernel.kernel_load_addr`.
        load: usize,
        /// The first region's size.
        size: usize,
    },
    /// A port range beyond the 64 Ki x86 ports, or empty.
    PortRange {
        /// The entry.
        field: Field,
        /// First port.
        base: usize,
        /// Number of ports.
        length: usize,
    },
}

/// `Result` with [`ConfigError`].
pub type ConfigResult<T> = core::result::Result<T, ConfigError>;

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { message } => write!(f, "TOML syntax: {message}"),
            Self::Missing { field } => write!(f, "{field}: missing"),
            Self::WrongType { field, expected } => write!(f, "{field}: expected {expected}"),
            Self::OutOfRange { field, value } => {
                write!(f, "{field}: {value} is negative or too large")
            }
            Self::TupleLength {
                field,
                len,
                expected,
            } => write!(f, "{field}: {len} elements, expected {expected}"),
            Self::UnknownName {
                field,
                value,
                expected,
            } => write!(
                f,
                "{field}: unknown value \"{value}\" (expected {expected})"
            ),
            Self::UnknownMapType { field, value } => write!(
                f,
                "{field}: unknown map_type {value} (0 alloc, 1 identical, 2 reserved)"
            ),
            Self::UnknownPopulate { field, value } => {
                write!(
                    f,
                    "{field}: unknown populate {value} (0 eager, 1 lazy, 2 lazy in 2 MiB blocks)"
                )
            }
            Self::UnknownVmType { field, value } => {
                write!(
                    f,
                    "{field}: unknown vm_type {value} (0 host, 1 RTOS, 2 Linux)"
                )
            }
            Self::UnknownFlags { field, value } => write!(
                f,
                "{field}: flags {} have unknown bits {} (READ=1 WRITE=2 EXECUTE=4 USER=8 DEVICE=16 UNCACHED=32)",
                Hex(*value),
                Hex(*value & !0x3f)
            ),
            Self::NoAccess { field, flags } => {
                write!(
                    f,
                    "{field}: flags {flags} allow no access (READ, WRITE or EXECUTE)"
                )
            }
            Self::DeviceFlagOnRam { field, flags } => write!(
                f,
                "{field}: DEVICE flag on a memory region ({flags}); put devices in [devices]"
            ),
            Self::LazyNotAlloc { field, map_type } => write!(
                f,
                "{field}: a lazy populate (1 or 2) needs map_type 0 (alloc), not {map_type}"
            ),
            Self::Empty { field } => write!(f, "{field}: must not be empty"),
            Self::ZeroSize { field } => write!(f, "{field}: size is zero"),
            Self::Unaligned { field, value } => {
                write!(f, "{field}: {} is not 4 KiB-aligned", Hex::from(*value))
            }
            Self::Overflow { field, start, size } => write!(
                f,
                "{field}: {} + {} overflows",
                Hex::from(*start),
                Hex::from(*size)
            ),
            Self::NoCpus => f.write_str("base.cpu_num: must be at least 1"),
            Self::TooManyCpus { cpu_num, max } => write!(
                f,
                "base.cpu_num: {cpu_num} vCPUs is more than the limit of {max}"
            ),
            Self::CpuListLength {
                field,
                len,
                cpu_num,
            } => write!(f, "{field}: {len} entries but base.cpu_num is {cpu_num}"),
            Self::DuplicateCpuId { field, id } => {
                write!(f, "{field}: physical CPU {id} listed twice")
            }
            Self::EmptyCpuSet { field } => write!(f, "{field}: CPU set 0 allows no CPU"),
            Self::NoMemory => f.write_str(
                "kernel.memory_regions: no memory region (and no dtb_path to take it from)",
            ),
            Self::Overlap { field, other, at } => {
                write!(f, "{field}: overlaps [{other}] at {}", Hex::from(*at))
            }
            Self::NotInRam { field, value } => {
                write!(f, "{field}: {} is in no memory region", Hex::from(*value))
            }
            Self::DeviceOverlapsRam { field, region, at } => write!(
                f,
                "{field}: overlaps kernel.memory_regions[{region}] at {}",
                Hex::from(*at)
            ),
            Self::DeviceOverlap { field, other, at } => {
                write!(f, "{field}: overlaps {other} at {}", Hex::from(*at))
            }
            Self::DuplicateName { field, name, other } => {
                write!(f, "{field}: \"{name}\" is also the name of [{other}]")
            }
            Self::UnknownKey {
                field,
                key,
                nearest,
            } => {
                if field.path.is_empty() {
                    write!(f, "{key}: unknown key (nearest known key: {nearest})")
                } else {
                    write!(
                        f,
                        "{field}.{key}: unknown key (nearest known key: {field}.{nearest})"
                    )
                }
            }
            Self::NotSupported { field, why } => write!(f, "{field}: not supported: {why}"),
            Self::FlatFormat { key } => write!(
                f,
                "{key}: this is axvisor's flat format of 2024 (keys at the top level), which \
                 no published axvmconfig reads; write the sectioned format ([base] id, name, \
                 vm_type, cpu_num; [kernel] entry_point, kernel_path, kernel_load_addr, \
                 memory_regions; [devices] passthrough_devices, emu_devices) or the \
                 device-graph format of axvmconfig 0.8.4+"
            ),
            Self::TypedMachineFormat { key } => write!(
                f,
                "[{key}]: the typed-machine format ([machine], [memory]) was a proposal \
                 (tgoskits PR 1612) no axvisor release reads; write the sectioned format or \
                 the device-graph format of axvmconfig 0.8.4+"
            ),
            Self::UnknownEmuType { field, value } => write!(
                f,
                "{field}: unknown emulated device type {} (axvisor defines 0-3, 0xa, \
                 0x20-0x25, 0x30, 0xe1-0xe3)",
                Hex(*value)
            ),
            Self::BootProtocolConflict {
                field,
                protocol,
                enable_bios,
            } => write!(
                f,
                "{field}: {protocol:?} boot conflicts with kernel.enable_bios = {enable_bios}"
            ),
            Self::NoFirmware { field, protocol } => {
                write!(f, "{field}: missing, and {protocol:?} boot needs it")
            }
            Self::BadNodePath { field, path, why } => {
                write!(f, "{field}: device-tree path \"{path}\" {why}")
            }
            Self::Duplicate { field, other } => {
                write!(f, "{field}: says the same as {other}; give one of them")
            }
            Self::NoKernelPlace { field } => write!(
                f,
                "{field}: omitted, so the kernel goes 2 MiB into the first memory region, \
                 and there is no first region larger than 2 MiB"
            ),
            Self::DeviceTree { message } => write!(f, "device tree: {message}"),
            Self::NoSuchNode { field, path } => {
                write!(f, "{field}: the host device tree has no node \"{path}\"")
            }
            Self::UnresolvedHostNode { field, path } => write!(
                f,
                "{field}: host device-tree node \"{path}\" is not resolved yet (resolve the \
                 config against the host tree first)"
            ),
            Self::MemoryNotRead { field } => write!(
                f,
                "{field}: the guest RAM is to come from the guest device tree (dtb_path), \
                 which was not read yet"
            ),
            Self::EntryOutsideKernelRegion { entry, load, size } => write!(
                f,
                "kernel.entry_point: {} is {} from kernel.kernel_load_addr {}, outside the \
                 first memory region ({} bytes, identical) that the kernel is loaded into",
                Hex::from(*entry),
                if entry < load { "below" } else { "too far" },
                Hex::from(*load),
                Hex::from(*size)
            ),
            Self::PortRange {
                field,
                base,
                length,
            } => write!(
                f,
                "{field}: ports {} + {} are empty or beyond port 0xffff",
                Hex::from(*base),
                Hex::from(*length)
            ),
            Self::PageOffsetMismatch { field, gpa, hpa } => write!(
                f,
                "{field}: GPA {} and HPA {} differ in their offset within a 4 KiB page",
                Hex::from(*gpa),
                Hex::from(*hpa)
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn hex_groups_by_four() {
        assert_eq!(Hex(0).to_string(), "0x0");
        assert_eq!(Hex(0x1000).to_string(), "0x1000");
        assert_eq!(Hex(0x8000_0000).to_string(), "0x8000_0000");
        assert_eq!(Hex(0x1_0000_0000).to_string(), "0x1_0000_0000");
    }

    #[test]
    fn overlap_reads_like_the_issue() {
        let e = ConfigError::Overlap {
            field: Field::at("kernel.memory_regions", 1),
            other: 0,
            at: 0x8000_0000,
        };
        assert_eq!(
            e.to_string(),
            "kernel.memory_regions[1]: overlaps [0] at 0x8000_0000"
        );
    }
}
