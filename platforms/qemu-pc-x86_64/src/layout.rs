//! The test VM's layout on this board ([`platforms::layouts::QEMU_PC_X86_64`]) and
//! the GPA of the guest's identity page tables.

use addrspace::FRAME_SIZE;
use hal_x86_64::guest_paging::IDENTITY_TABLE_FRAMES;
use platforms::protocol::GuestLayout;

/// Where the test guest expects things.
pub(crate) const LAYOUT: GuestLayout = platforms::layouts::QEMU_PC_X86_64;

/// Guest-physical address of the identity page tables the hypervisor writes for
/// the guest ([`IDENTITY_TABLE_FRAMES`] frames, in RAM below the image at 1 MiB, used
/// by nothing else).
pub(crate) const GUEST_TABLES: u64 = 0x1000;

// RAM starts at 0 on this board, so only the upper bound needs checking.
const _: () = assert!(
    GUEST_TABLES + (IDENTITY_TABLE_FRAMES * FRAME_SIZE) as u64 <= LAYOUT.image,
    "the guest's page tables must lie in RAM below the image"
);

#[cfg(test)]
mod tests {
    use platforms::host;

    use super::*;

    #[test]
    fn the_embedded_config_matches_the_layout() {
        let config = crate::vm_config().expect("the embedded config is valid");
        assert_eq!(host::check_config(&config, &LAYOUT), Ok(()));
    }
}
