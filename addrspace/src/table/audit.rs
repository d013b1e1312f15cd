//! The invariant check the model-based tests run after every step.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;

use super::PageTable;
use super::index::Table;
use crate::FrameAllocator;
use crate::format::{DescKind, NestedFormat};

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// Checks the tree's invariants and returns the number of tables found below the
    /// root: every table is reachable once, no non-root table is empty, no descriptor
    /// is malformed, the count matches [`PageTable::table_frames`], and the
    /// live-entry count of each table right below the root is its number of
    /// non-zero entries (0 where no table is linked). For tests.
    pub fn audit(&self) -> Result<usize, String> {
        let root = self.root_table();
        for (i, e) in self.entries(root).iter().enumerate() {
            let raw = e.load(Ordering::Acquire);
            let gpa = i * root.level.span();
            let found = match F::kind(raw, root.level.get()) {
                DescKind::Table => {
                    let child = root.child(F::output_addr(raw, root.level.get()));
                    self.entries(child)
                        .iter()
                        .filter(|e| e.load(Ordering::Acquire) != 0)
                        .count()
                }
                _ => 0,
            };
            if usize::from(self.live(gpa)) != found {
                return Err(format!(
                    "live-entry count {} but {found} non-zero entries in the table at {gpa:#x}",
                    self.live(gpa)
                ));
            }
        }
        let below = self.audit_table(root, 0)?;
        if below + F::ROOT_FRAMES != self.tables {
            return Err(format!(
                "table count {} but the tree holds {} + {} root frames",
                self.tables,
                below,
                F::ROOT_FRAMES
            ));
        }
        Ok(below)
    }

    /// Audits `table`, which covers addresses from `base`; returns the tables below it.
    fn audit_table(&self, table: Table, base: usize) -> Result<usize, String> {
        let level = table.level.get();
        let mut tables = 0;
        let mut valid = 0;
        for (i, e) in self.entries(table).iter().enumerate() {
            let raw = e.load(Ordering::Acquire);
            let gpa = base + i * table.level.span();
            match F::kind(raw, level) {
                DescKind::Invalid if raw != 0 => {
                    return Err(format!(
                        "stale bits {raw:#x} in an invalid entry at {gpa:#x}"
                    ));
                }
                DescKind::Invalid => {}
                DescKind::Malformed(why) => return Err(format!("malformed at {gpa:#x}: {why}")),
                DescKind::Table => {
                    valid += 1;
                    let child = table.child(F::output_addr(raw, level));
                    tables += 1 + self.audit_table(child, gpa)?;
                }
                DescKind::Leaf => {
                    valid += 1;
                    if level > F::MAX_LEAF_LEVEL {
                        return Err(format!("leaf above the largest block at {gpa:#x}"));
                    }
                }
            }
        }
        if valid == 0 && table.level != Self::TOP {
            return Err(format!("empty table at level {level} covering {base:#x}"));
        }
        Ok(tables)
    }
}
