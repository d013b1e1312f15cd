//! The keys each section of a VM config may hold, and the nearest known key for an
//! unknown one (so `interupt_mode` is refused with "did you mean `interrupt_mode`").

/// Keys of `[base]` in the sectioned format.
pub(crate) const BASE: &[&str] = &[
    "id",
    "name",
    "vm_type",
    "cpu_num",
    "phys_cpu_ids",
    "phys_cpu_sets",
];

/// Keys of `[base]` in the device-graph format (axvmconfig 0.8.4+; `vm_type` is an
/// alias of `guest_type`).
pub(crate) const BASE_GRAPH: &[&str] = &[
    "id",
    "name",
    "guest_type",
    "vm_type",
    "cpu_num",
    "phys_cpu_ids",
    "phys_cpu_sets",
];

/// Keys of `[kernel]` (both formats; `disk_path` only in the sectioned one).
pub(crate) const KERNEL: &[&str] = &[
    "entry_point",
    "kernel_path",
    "kernel_load_addr",
    "enable_bios",
    "boot_protocol",
    "bios_path",
    "uefi_firmware_path",
    "bios_load_addr",
    "dtb_path",
    "dtb_load_addr",
    "ramdisk_path",
    "ramdisk_load_addr",
    "image_location",
    "cmdline",
    "disk_path",
    "memory_regions",
];

/// Keys of `[devices]` in the sectioned format.
pub(crate) const DEVICES: &[&str] = &[
    "passthrough_devices",
    "emu_devices",
    "interrupt_mode",
    "excluded_devices",
    "passthrough_addresses",
    "passthrough_ports",
    "address_space_policy",
];

/// Keys of `[devices]` in the device-graph format.
pub(crate) const DEVICES_GRAPH: &[&str] = &["passthrough", "disabled", "virtual"];

/// The top-level tables.
pub(crate) const TOP: &[&str] = &["base", "kernel", "devices"];

/// Edit distance (insertions, deletions, substitutions, transpositions of
/// neighbours) between two short keys.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (alloc::vec::Vec<char>, alloc::vec::Vec<char>) =
        (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between a[..i] and b[..j], three rows kept.
    let mut prev2: alloc::vec::Vec<usize> = alloc::vec![0; b.len() + 1];
    let mut prev: alloc::vec::Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = alloc::vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        prev2 = core::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// The known key nearest to `key` (ties: the first in `known`).
pub(crate) fn nearest(key: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .copied()
        .min_by_key(|k| distance(key, k))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11: misspelt keys used to load with defaults (the warning went to a
    /// logger build scripts never install); now each is refused with the key meant.
    #[test]
    fn a_misspelt_key_is_near_the_key_meant() {
        assert_eq!(nearest("interupt_mode", DEVICES), "interrupt_mode");
        assert_eq!(nearest("phys_cpu_idz", BASE), "phys_cpu_ids");
        assert_eq!(nearest("memroy_regions", KERNEL), "memory_regions");
        assert_eq!(nearest("emu_device", DEVICES), "emu_devices");
        assert_eq!(nearest("cpu_set", BASE), "cpu_num");
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
