//! The test VM's layout on this board ([`platforms::layouts::QEMU_VIRT_RISCV64`]) and
//! the check that the embedded VM config builds it.

use platforms::host::{self, Mismatch};
use platforms::protocol::GuestLayout;
use vm_core::VmConfig;

/// Where the test guest expects things.
pub(crate) const LAYOUT: GuestLayout = platforms::layouts::QEMU_VIRT_RISCV64;

/// The name of the emulated device in the config.
pub(crate) const TEST_DEVICE: &str = host::TEST_DEVICE;

/// Checks `config` against [`LAYOUT`].
pub(crate) fn check(config: &VmConfig) -> Result<(), Mismatch> {
    host::check_config(config, &LAYOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_config_agrees() {
        let config = VmConfig::from_toml(include_str!("../../../configs/qemu-virt-riscv64.toml"))
            .expect("the board's config parses");
        assert_eq!(check(&config), Ok(()));
    }
}
