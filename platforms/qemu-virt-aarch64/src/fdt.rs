//! Just enough of the flattened device tree (Devicetree Specification v0.4, chapter 5
//! "Flattened Devicetree (DTB) Format") to find the RAM QEMU gave the machine: the
//! first `reg` entry of the first `/memory` node. Reads a byte slice, never panics on
//! a malformed blob, tested on the host.

/// `0xd00dfeed`, big-endian, at offset 0.
pub(crate) const FDT_MAGIC: u32 = 0xd00d_feed;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Why the blob could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdtError {
    /// No FDT magic at the start.
    BadMagic {
        /// The first word found.
        found: u32,
    },
    /// A header offset or a structure token points outside the blob.
    Truncated {
        /// The offset that was out of range.
        offset: usize,
    },
    /// An unknown token in the structure block.
    BadToken {
        /// The token.
        token: u32,
        /// Its offset.
        offset: usize,
    },
    /// No `/memory` node with a `reg` property.
    NoMemory,
}

fn be32(b: &[u8], off: usize) -> Result<u32, FdtError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or(FdtError::Truncated { offset: off })
}

/// A big-endian number of `cells` 32-bit cells at `off`.
fn cells(b: &[u8], off: usize, cells: u32) -> Result<u64, FdtError> {
    let mut v = 0u64;
    for i in 0..cells as usize {
        v = (v << 32) | u64::from(be32(b, off + 4 * i)?);
    }
    Ok(v)
}

/// The NUL-terminated string at `off`.
fn cstr(b: &[u8], off: usize) -> Result<&[u8], FdtError> {
    let rest = b.get(off..).ok_or(FdtError::Truncated { offset: off })?;
    let len = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or(FdtError::Truncated { offset: off })?;
    Ok(&rest[..len])
}

/// The total size the header of the blob at the start of `b` claims.
pub(crate) fn total_size(b: &[u8]) -> Result<usize, FdtError> {
    let magic = be32(b, 0)?;
    if magic != FDT_MAGIC {
        return Err(FdtError::BadMagic { found: magic });
    }
    Ok(be32(b, 4)? as usize)
}

/// The blob at the start of `b`, cut to the size its header claims (a reader such
/// as vm-core's `DeviceTree` wants exactly the blob, not the window it lies in).
pub(crate) fn trim(b: &[u8]) -> Result<&[u8], FdtError> {
    let size = total_size(b)?;
    b.get(..size).ok_or(FdtError::Truncated { offset: size })
}

/// `(base, size)` of the first RAM range: the first `reg` entry of the first node
/// named `memory` or `memory@...` under the root, decoded with the root's
/// `#address-cells` and `#size-cells` (2 and 1 when absent, per the specification).
pub(crate) fn memory(b: &[u8]) -> Result<(u64, u64), FdtError> {
    let b = trim(b)?;
    let structs = be32(b, 8)? as usize;
    let strings = be32(b, 12)? as usize;
    let (mut addr_cells, mut size_cells) = (2u32, 1u32);
    let mut depth = 0usize;
    let mut in_memory = false;
    let mut off = structs;
    loop {
        let token = be32(b, off)?;
        off += 4;
        match token {
            FDT_BEGIN_NODE => {
                let name = cstr(b, off)?;
                off = (off + name.len() + 1).next_multiple_of(4);
                depth += 1;
                in_memory = depth == 2 && (name == b"memory" || name.starts_with(b"memory@"));
            }
            FDT_END_NODE => {
                depth = depth.saturating_sub(1);
                in_memory = false;
            }
            FDT_PROP => {
                let len = be32(b, off)? as usize;
                let name = cstr(b, strings + be32(b, off + 4)? as usize)?;
                let data = off + 8;
                off = (data + len).next_multiple_of(4);
                if depth == 1 && name == b"#address-cells" {
                    addr_cells = be32(b, data)?;
                } else if depth == 1 && name == b"#size-cells" {
                    size_cells = be32(b, data)?;
                } else if in_memory && name == b"reg" {
                    if addr_cells > 2
                        || size_cells > 2
                        || len < 4 * (addr_cells + size_cells) as usize
                    {
                        return Err(FdtError::Truncated { offset: data });
                    }
                    let base = cells(b, data, addr_cells)?;
                    let size = cells(b, data + 4 * addr_cells as usize, size_cells)?;
                    return Ok((base, size));
                }
            }
            FDT_NOP => {}
            FDT_END => return Err(FdtError::NoMemory),
            token => {
                return Err(FdtError::BadToken {
                    token,
                    offset: off - 4,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    /// A blob with `/`, `#address-cells = <2>`, `#size-cells = <2>`, a `chosen` node
    /// and `memory@40000000 { reg = <0 0x40000000 0 0x20000000>; }`, laid out as
    /// QEMU's virt machine does.
    fn blob(memory_name: &[u8]) -> Vec<u8> {
        let strings = b"#address-cells\0#size-cells\0reg\0bootargs\0";
        let mut s: Vec<u8> = Vec::new();
        let u32_of = |n: usize| u32::try_from(n).expect("a test blob's sizes fit 32 bits");
        let w = |s: &mut Vec<u8>, v: u32| s.extend_from_slice(&v.to_be_bytes());
        let node = |s: &mut Vec<u8>, name: &[u8]| {
            s.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
            s.extend_from_slice(name);
            s.push(0);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        let prop = |s: &mut Vec<u8>, nameoff: u32, data: &[u8]| {
            s.extend_from_slice(&FDT_PROP.to_be_bytes());
            s.extend_from_slice(&u32_of(data.len()).to_be_bytes());
            s.extend_from_slice(&nameoff.to_be_bytes());
            s.extend_from_slice(data);
            while !s.len().is_multiple_of(4) {
                s.push(0);
            }
        };
        node(&mut s, b"");
        prop(&mut s, 0, &2u32.to_be_bytes());
        prop(&mut s, 15, &2u32.to_be_bytes());
        node(&mut s, b"chosen");
        prop(&mut s, 31, b"console=ttyAMA0\0");
        w(&mut s, FDT_END_NODE);
        w(&mut s, FDT_NOP);
        node(&mut s, memory_name);
        let reg: Vec<u8> = [0u32, 0x4000_0000, 0, 0x2000_0000]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        prop(&mut s, 27, &reg);
        w(&mut s, FDT_END_NODE);
        w(&mut s, FDT_END_NODE);
        w(&mut s, FDT_END);
        let header = 40;
        let total = header + s.len() + strings.len();
        let mut b = Vec::new();
        for v in [
            FDT_MAGIC,
            u32_of(total),
            u32_of(header),
            u32_of(header + s.len()),
            0,
            17,
            16,
            0,
            u32_of(strings.len()),
            u32_of(s.len()),
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&s);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn finds_the_memory_node() {
        assert_eq!(
            memory(&blob(b"memory@40000000")),
            Ok((0x4000_0000, 0x2000_0000))
        );
        assert_eq!(memory(&blob(b"memory")), Ok((0x4000_0000, 0x2000_0000)));
    }

    /// QEMU's tree lies at the start of a larger window: `trim` gives exactly the
    /// blob; a window shorter than the header claims is an error.
    #[test]
    fn trim_cuts_the_window_to_the_blob() {
        let b = blob(b"memory@40000000");
        let mut window = b.clone();
        window.resize(b.len() + 4096, 0xff);
        assert_eq!(trim(&window), Ok(&b[..]));
        assert_eq!(
            trim(&b[..b.len() - 1]),
            Err(FdtError::Truncated { offset: b.len() })
        );
        assert_eq!(trim(&[0u8; 8]), Err(FdtError::BadMagic { found: 0 }));
    }

    #[test]
    fn errors_instead_of_panics() {
        assert_eq!(memory(&blob(b"flash@0")), Err(FdtError::NoMemory));
        assert_eq!(memory(&[0u8; 64]), Err(FdtError::BadMagic { found: 0 }));
        let b = blob(b"memory@40000000");
        // Every truncation of the blob is an error, never a panic.
        for cut in 0..b.len() {
            assert!(memory(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = b.clone();
        bad[40 + 3] = 7; // the first structure token
        assert!(matches!(
            memory(&bad),
            Err(FdtError::BadToken { token: 7, .. })
        ));
    }
}
