//! Config parsing and validation take untrusted text and values: random inputs and
//! random edits of a valid file give a config or an error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use proptest::prelude::*;
use vm_core::{
    DeviceTree, GuestPhysAddr, HostPhysAddr, MapType, MappingFlags, Populate, VmConfig,
    VmConfigBuilder,
};

const QEMU_DTB: &[u8] = include_bytes!("data/qemu-virt-aarch64.dtb");

/// Resolves `["/"]` and reads guest memory from whatever `bytes` parse as.
fn resolve_all(bytes: &[u8]) {
    let Ok(tree) = DeviceTree::new(bytes) else {
        return;
    };
    let mut c = VmConfigBuilder::new(1, "f", 1)
        .dtb_path("g.dtb")
        .host_device("/")
        .build_unchecked();
    let _ = c.resolve_host_devices(&tree);
    let _ = c.memory_from_guest_dtb(&tree);
}

const VALID: &str = include_str!("../../configs/qemu-virt-aarch64.toml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in ".{0,200}") {
        let _ = VmConfig::from_toml(&text);
    }

    /// Replace a slice of the valid file with random characters (numbers, brackets,
    /// quotes and letters are likely, so most edits still parse as TOML).
    #[test]
    fn edits_of_a_valid_file_never_panic(
        at in 0..VALID.len(),
        len in 0usize..12,
        with in "[-0-9a-fx_\\[\\], \"=.]{0,12}",
    ) {
        let (at, end) = (at, (at + len).min(VALID.len()));
        if VALID.is_char_boundary(at) && VALID.is_char_boundary(end) {
            let text = format!("{}{}{}", &VALID[..at], with, &VALID[end..]);
            if let Ok(c) = VmConfig::from_toml(&text) {
                // Whatever parsed validates and round-trips through the generator.
                prop_assert!(c.validate().is_ok());
                prop_assert!(!c.to_rust_source("vm").is_empty());
            }
        }
    }

    /// Device trees are host- or user-supplied (`--host-dtb`): random bytes and
    /// random byte edits of QEMU's tree give a tree or an error, and resolving
    /// against what parses never panics.
    #[test]
    fn device_trees_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        edits in proptest::collection::vec((0..QEMU_DTB.len(), any::<u8>()), 1..8),
    ) {
        resolve_all(&bytes);
        let mut tree = QEMU_DTB.to_vec();
        for (at, b) in edits {
            tree[at] = b;
        }
        resolve_all(&tree);
    }

    /// Any numbers through the builder: validation answers without panicking, also
    /// near the top of the address space.
    #[test]
    fn builder_values_never_panic(
        gpa in any::<usize>(), size in any::<usize>(), flags in any::<u32>(),
        dev in any::<usize>(), len in any::<usize>(), entry in any::<usize>(),
    ) {
        let g = GuestPhysAddr::from_usize;
        let c = VmConfigBuilder::new(1, "f", 1)
            .entry_point(g(entry))
            .memory_region(g(gpa), size, MappingFlags::from_bits_retain(flags), MapType::Alloc, Populate::Lazy)
            .passthrough_device("p", g(dev), HostPhysAddr::from_usize(dev), len, 0)
            .emu_device("e", g(dev ^ 0x1000), len, 0, 0, &[])
            .build_unchecked();
        let _ = c.validate();
        let _ = vm_core::plan_passthrough(&c.devices.passthrough_devices);
    }
}
