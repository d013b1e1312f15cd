//! The diagnostic walk of one address: [`Walk`], its per-level [`WalkStep`]s and how it
//! ended ([`WalkEnd`]), printed the way the manuals name the levels.

use core::fmt;

use super::query::Translation;
use crate::format::DescKind;
use crate::{GuestPhysAddr, HostPhysAddr};

/// The deepest walk of any format.
pub const MAX_LEVELS: usize = 5;

/// One level of a [`Walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStep {
    /// Engine level (0 = 4 KiB).
    pub level: usize,
    /// The manual's name for the level.
    pub level_name: &'static str,
    /// The table read at this level.
    pub table: HostPhysAddr,
    /// The index of the entry in it.
    pub index: usize,
    /// The raw descriptor.
    pub raw: u64,
    /// What the walker made of it.
    pub kind: DescKind,
}

impl WalkStep {
    pub(crate) const EMPTY: Self = Self {
        level: 0,
        level_name: "",
        table: HostPhysAddr::from_usize(0),
        index: 0,
        raw: 0,
        kind: DescKind::Invalid,
    };
}

/// How a [`Walk`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// A leaf translated the address.
    Translated(Translation),
    /// The walk stopped at `level` with a fault.
    Fault {
        /// The level of the descriptor that stopped it.
        level: usize,
        /// Why.
        why: &'static str,
    },
    /// The address is beyond the format's GPA width.
    OutOfRange {
        /// One past the last translatable address.
        limit: usize,
    },
}

/// The per-level translation trace of one guest-physical address (see
/// [`PageTable::walk`](crate::PageTable::walk)). `Display` prints it for a person:
///
/// ```text
/// walk of GPA:0x40201000 (Arm stage-2 (40-bit IPA))
///   L1[  1] table HPA:0x80001000 = 0x0000000080003003  table
///   L2[  1] table HPA:0x80003000 = 0x00400000c02007c5  block S2AP=0b11(RW) MemAttr=0x1 ...
///   => HPA:0xc0201000 rw- device (2M)
/// ```
#[derive(Clone, Copy)]
pub struct Walk {
    /// The address walked.
    pub gpa: GuestPhysAddr,
    /// The format's name.
    pub format: &'static str,
    pub(crate) steps: [WalkStep; MAX_LEVELS],
    pub(crate) len: usize,
    /// How it ended.
    pub end: WalkEnd,
    pub(crate) describe: fn(u64, usize, &mut fmt::Formatter<'_>) -> fmt::Result,
}

impl Walk {
    /// The levels visited, root first.
    pub fn steps(&self) -> &[WalkStep] {
        &self.steps[..self.len]
    }

    /// The translation, when the walk reached a leaf.
    pub fn translation(&self) -> Option<Translation> {
        match self.end {
            WalkEnd::Translated(t) => Some(t),
            _ => None,
        }
    }
}

impl fmt::Debug for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Walk")
            .field("gpa", &self.gpa)
            .field("format", &self.format)
            .field("steps", &self.steps())
            .field("end", &self.end)
            .finish()
    }
}

impl PartialEq for Walk {
    fn eq(&self, other: &Self) -> bool {
        self.gpa == other.gpa
            && self.format == other.format
            && self.steps() == other.steps()
            && self.end == other.end
    }
}

impl Eq for Walk {}

impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "walk of {:#x} ({})", self.gpa, self.format)?;
        for s in self.steps() {
            write!(
                f,
                "  {}[{:4}] table {:#x} = {:#018x}  ",
                s.level_name, s.index, s.table, s.raw
            )?;
            match s.kind {
                DescKind::Invalid => f.write_str("invalid")?,
                DescKind::Malformed(why) => write!(f, "malformed: {why}")?,
                _ => (self.describe)(s.raw, s.level, f)?,
            }
            writeln!(f)?;
        }
        match self.end {
            WalkEnd::Translated(t) => write!(f, "  => {:#x} {} ({})", t.hpa, t.flags, t.size),
            WalkEnd::Fault { level, why } => write!(f, "  => fault at engine level {level}: {why}"),
            WalkEnd::OutOfRange { limit } => write!(f, "  => beyond the GPA limit {limit:#x}"),
        }
    }
}
