//! The I/O and MSR permission maps the VMCB points to (APM vol. 2, 15.10.1 "I/O
//! Permissions Map" and 15.11 "MSR Intercepts"): where each port's and each MSR's
//! intercept bit lives. The vCPU owns the frames; these are the pure offsets.

/// Bytes of the I/O permission map (12 KiB: one bit per port, plus the bits a
/// multi-byte access at port 0xffff reaches).
pub const IOPM_BYTES: usize = 12 * 1024;
/// Bytes of the MSR permission map (8 KiB).
pub const MSRPM_BYTES: usize = 8 * 1024;

/// The byte and bit of `port`'s intercept bit in the IOPM.
pub const fn iopm_bit(port: u16) -> (usize, u8) {
    (port as usize / 8, (port % 8) as u8)
}

/// Whether a RDMSR or WRMSR of `msr` exits, for a map in `msrpm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAccess {
    /// RDMSR.
    Read,
    /// WRMSR.
    Write,
}

/// The byte and bit of `msr`'s read or write intercept in the MSRPM; `None` for an
/// MSR outside the three ranges the map covers (those always exit).
pub const fn msrpm_bit(msr: u32, access: MsrAccess) -> Option<(usize, u8)> {
    let (base, index) = match msr {
        0x0000_0000..=0x0000_1fff => (0x000, msr),
        0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
        _ => return None,
    };
    let bit = index as usize * 2
        + match access {
            MsrAccess::Read => 0,
            MsrAccess::Write => 1,
        };
    Some((base + bit / 8, vcpu_api::low_u8((bit % 8) as u64)))
}

/// Sets or clears one intercept bit in a permission map.
pub fn set_bit(map: &mut [u8], (byte, bit): (usize, u8), intercept: bool) {
    if let Some(b) = map.get_mut(byte) {
        if intercept {
            *b |= 1 << bit;
        } else {
            *b &= !(1 << bit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bits() {
        assert_eq!(iopm_bit(0), (0, 0));
        assert_eq!(iopm_bit(0x3f8), (0x7f, 0));
        assert_eq!(iopm_bit(0x3fd), (0x7f, 5));
        assert_eq!(iopm_bit(0xffff), (0x1fff, 7));
        assert!(iopm_bit(0xffff).0 < IOPM_BYTES);
    }

    #[test]
    fn msr_bits_follow_the_three_ranges() {
        // APM 15.11: MSR 0 read = bit 0, write = bit 1 of byte 0.
        assert_eq!(msrpm_bit(0, MsrAccess::Read), Some((0, 0)));
        assert_eq!(msrpm_bit(0, MsrAccess::Write), Some((0, 1)));
        // EFER (C000_0080): second range, index 0x80 -> bit 0x100 -> byte 0x820.
        assert_eq!(msrpm_bit(0xc000_0080, MsrAccess::Read), Some((0x820, 0)));
        assert_eq!(msrpm_bit(0xc000_0080, MsrAccess::Write), Some((0x820, 1)));
        // VM_HSAVE_PA (C001_0117): third range, index 0x117 -> bit 0x22e.
        assert_eq!(
            msrpm_bit(0xc001_0117, MsrAccess::Write),
            Some((0x1000 + 0x22f / 8, (0x22f % 8) as u8))
        );
        assert_eq!(msrpm_bit(0x1fff, MsrAccess::Write), Some((0x7ff, 7)));
        assert_eq!(msrpm_bit(0x2000, MsrAccess::Read), None);
        assert_eq!(msrpm_bit(0xc001_2000, MsrAccess::Read), None);
        assert!(msrpm_bit(0xc001_1fff, MsrAccess::Write).unwrap().0 < MSRPM_BYTES);
    }

    #[test]
    fn set_and_clear() {
        let mut map = [0u8; 4];
        set_bit(&mut map, (1, 3), true);
        assert_eq!(map, [0, 8, 0, 0]);
        set_bit(&mut map, (1, 3), false);
        assert_eq!(map, [0; 4]);
        set_bit(&mut map, (9, 0), true); // out of range: ignored
        assert_eq!(map, [0; 4]);
    }
}
