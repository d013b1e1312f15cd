//! Pass-through device planning: device ranges widened to 4 KiB pages, sorted, and
//! merged when they overlap or touch with the same GPA→HPA offset.

use alloc::vec::Vec;

use addrspace::{GuestPhysAddr, HostPhysAddr};

use crate::config::{
    ConfigError, ConfigResult, Field, PASSTHROUGH, PassthroughDeviceConfig, passthrough_pages,
};

/// One GPA→HPA device mapping to create (4 KiB-aligned, non-empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassthroughRange {
    /// Guest-physical start.
    pub gpa: GuestPhysAddr,
    /// Host-physical start.
    pub hpa: HostPhysAddr,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: usize,
}

/// Plans the mappings of `devices`: each range is widened to whole pages, the ranges
/// are sorted by GPA and merged where they overlap or are adjacent with the same
/// GPA→HPA offset. Overlapping ranges with different offsets are refused (they
/// would map one guest page to two host pages).
pub fn plan_passthrough(
    devices: &[PassthroughDeviceConfig],
) -> ConfigResult<Vec<PassthroughRange>> {
    // (start, end, offset = gpa - hpa, index)
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        let (pages, offset) = passthrough_pages(Field::at(PASSTHROUGH, i), d)?;
        spans.push((pages.start().as_usize(), pages.end().as_usize(), offset, i));
    }
    spans.sort_by_key(|s| (s.0, s.1));
    let mut out: Vec<(usize, usize, usize, usize)> = Vec::new();
    for s in spans {
        if let Some(last) = out.last_mut()
            && s.0 <= last.1
        {
            if s.2 == last.2 {
                last.1 = last.1.max(s.1);
                continue;
            }
            if s.0 < last.1 {
                return Err(ConfigError::DeviceOverlap {
                    field: Field::at(PASSTHROUGH, s.3),
                    other: Field::at(PASSTHROUGH, last.3),
                    at: s.0,
                });
            }
        }
        out.push(s);
    }
    Ok(out
        .into_iter()
        .map(|(start, end, offset, _)| PassthroughRange {
            gpa: GuestPhysAddr::from_usize(start),
            hpa: HostPhysAddr::from_usize(start.wrapping_sub(offset)),
            size: end - start,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn dev(gpa: usize, hpa: usize, len: usize) -> PassthroughDeviceConfig {
        PassthroughDeviceConfig {
            name: "d".to_string(),
            base_gpa: GuestPhysAddr::from_usize(gpa),
            base_hpa: HostPhysAddr::from_usize(hpa),
            length: len,
            irq: 0,
            host_node: false,
        }
    }

    fn r(gpa: usize, hpa: usize, size: usize) -> PassthroughRange {
        PassthroughRange {
            gpa: GuestPhysAddr::from_usize(gpa),
            hpa: HostPhysAddr::from_usize(hpa),
            size,
        }
    }

    #[test]
    fn unsorted_overlapping_adjacent_unaligned_are_merged() {
        let plan = plan_passthrough(&[
            // adjacent to the next one (same offset): merged
            dev(0x0900_1000, 0x0900_1000, 0x1000),
            // unaligned start and length: widened to [0x0900_0000, 0x0900_1000)
            dev(0x0900_0010, 0x0900_0010, 0x20),
            // overlapping the first: merged, extends to 0x0900_3000
            dev(0x0900_1800, 0x0900_1800, 0x1800),
            // separate, GPA != HPA
            dev(0x1000_0000, 0x2000_0000, 0x2000),
            // adjacent but a different offset: kept apart
            dev(0x1000_2000, 0x3000_0000, 0x1000),
        ])
        .unwrap();
        assert_eq!(
            plan,
            [
                r(0x0900_0000, 0x0900_0000, 0x3000),
                r(0x1000_0000, 0x2000_0000, 0x2000),
                r(0x1000_2000, 0x3000_0000, 0x1000),
            ]
        );
    }

    #[test]
    fn overlap_with_different_offsets_is_refused() {
        let e = plan_passthrough(&[dev(0x1000, 0x1000, 0x2000), dev(0x2000, 0x9000, 0x1000)]);
        assert!(matches!(
            e,
            Err(ConfigError::DeviceOverlap { at: 0x2000, other, .. }) if other.index == Some(0)
        ));
        assert!(matches!(
            plan_passthrough(&[dev(0x1004, 0x2008, 0x10)]),
            Err(ConfigError::PageOffsetMismatch { .. })
        ));
        assert!(matches!(
            plan_passthrough(&[dev(0x1000, 0x1000, 0)]),
            Err(ConfigError::ZeroSize { .. })
        ));
    }
}
