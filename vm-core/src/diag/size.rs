//! [`Size`]: a byte count printed for a person (`16 MiB`, `4 KiB`, `1.50 GiB`).

use core::fmt;

/// A byte count that prints in the largest binary unit it reaches: exact when it is
/// a whole number of that unit (`16 MiB`), else with two decimals, rounded down
/// so that a range just short of a unit never reads as a whole one (`31.99 MiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 6] = [
            ("EiB", 60),
            ("PiB", 50),
            ("TiB", 40),
            ("GiB", 30),
            ("MiB", 20),
            ("KiB", 10),
        ];
        let n = self.0;
        let text = match UNITS.iter().find(|(_, shift)| n >> shift != 0) {
            None => alloc::format!("{n} B"),
            Some((unit, shift)) if n.trailing_zeros() >= *shift => {
                alloc::format!("{} {unit}", n >> shift)
            }
            Some((unit, shift)) => {
                let hundredths = (u128::from(n) * 100) >> shift;
                alloc::format!("{}.{:02} {unit}", hundredths / 100, hundredths % 100)
            }
        };
        // Through `pad` so callers can align the column (`{:>8}`).
        f.pad(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    #[test]
    fn sizes_read_as_a_person_writes_them() {
        assert_eq!(Size(0).to_string(), "0 B");
        assert_eq!(Size(0x1000).to_string(), "4 KiB");
        assert_eq!(Size(0x100_0000).to_string(), "16 MiB");
        assert_eq!(Size(0x10_f000).to_string(), "1.05 MiB");
        assert_eq!(Size(1 << 40).to_string(), "1 TiB");
        assert_eq!(Size(u64::MAX).to_string(), "15.99 EiB");
        assert_eq!(Size(0x1ff_f000).to_string(), "31.99 MiB");
        assert_eq!(format!("[{:>8}]", Size(0x2000)), "[   8 KiB]");
    }
}
