//! Splitting the huge leaves that an unmap or a protect cuts, before either changes a
//! translation: one walk per end of the range ([`PageTable::split_walk`]) splits every
//! leaf that straddles that end until none does. The plan is the same walk run
//! without writing, following the splits it would make; and the commit does not
//! depend on it: a reserve that runs short falls back to the allocator, and if that
//! fails too the splits made so far change no translation.

use core::sync::atomic::{AtomicU64, Ordering};

use super::index::{Level, Table};
use super::reserve::Reserve;
use super::{MAX_LEVELS, PageTable};
use crate::format::{DescKind, NestedFormat};
use crate::{Error, FrameAllocator, Result};

/// The leaves a planned split walk splits, as (level, first address of the leaf):
/// at most one per level and end of the range.
struct Sites {
    list: [(Level, usize); 2 * MAX_LEVELS],
    len: usize,
}

impl Sites {
    fn add(&mut self, site: (Level, usize)) {
        if !self.list[..self.len].contains(&site) {
            self.list[self.len] = site;
            self.len += 1;
        }
    }
}

/// Which pass of [`PageTable::split_walk`] runs.
enum Pass<'r> {
    Plan(Sites),
    Commit {
        reserve: &'r mut Reserve,
        added: usize,
    },
}

impl<F: NestedFormat, A: FrameAllocator> PageTable<F, A> {
    /// The tables that splitting every leaf straddling one of `bounds` (and for whose
    /// descriptor `needs` holds) takes.
    pub(crate) fn plan_splits(&self, bounds: [usize; 2], needs: &impl Fn(u64) -> bool) -> usize {
        if bounds.iter().all(|&b| Self::straddle_free(b)) {
            return 0;
        }
        let mut pass = Pass::Plan(Sites {
            list: [(Level::PAGE, 0); 2 * MAX_LEVELS],
            len: 0,
        });
        for b in bounds {
            // The plan pass takes no frame, so it cannot fail.
            let _ = self.split_walk(b, needs, &mut pass);
        }
        match pass {
            Pass::Plan(sites) => sites.len,
            Pass::Commit { .. } => unreachable!("the plan pass stays a plan"),
        }
    }

    /// Splits every leaf straddling one of `bounds` for whose descriptor `needs`
    /// holds, taking tables from `reserve`. Afterwards no such leaf straddles a
    /// bound. [`Error::NoMemory`] only when the reserve (sized by
    /// [`PageTable::plan_splits`]) and the allocator both run out; no translation
    /// has changed then.
    pub(crate) fn split_at(
        &mut self,
        bounds: [usize; 2],
        needs: &impl Fn(u64) -> bool,
        reserve: &mut Reserve,
    ) -> Result<()> {
        let mut pass = Pass::Commit { reserve, added: 0 };
        let done = bounds
            .iter()
            .try_for_each(|&b| self.split_walk(b, needs, &mut pass));
        if let Pass::Commit { added, .. } = pass {
            self.tables += added;
        }
        done
    }

    /// Walks towards `b` from the root, splitting each leaf on the way that
    /// straddles `b` and that `needs`, until `b` is an entry boundary at the level
    /// reached. The plan pass walks a split leaf's would-be table as 512 copies of
    /// the leaf one level down.
    fn split_walk(
        &self,
        b: usize,
        needs: &impl Fn(u64) -> bool,
        pass: &mut Pass<'_>,
    ) -> Result<()> {
        if Self::straddle_free(b) {
            return Ok(());
        }
        let mut table = self.root_table();
        // In the plan pass, below a leaf it would split: that leaf's descriptor.
        let mut planned: Option<u64> = None;
        let mut level = Self::TOP;
        while !level.is_page() && !level.aligned(b) {
            let (raw, kind) = match planned {
                Some(raw) => (raw, DescKind::Leaf),
                None => {
                    let raw = self.entry(table, b).load(Ordering::Acquire);
                    (raw, F::kind(raw, level.get()))
                }
            };
            match kind {
                DescKind::Table => table = table.child(F::output_addr(raw, level.get())),
                DescKind::Leaf if level.get() <= F::MAX_LEAF_LEVEL && needs(raw) => match pass {
                    Pass::Plan(sites) => {
                        sites.add((level, level.block(b)));
                        planned = Some(raw);
                    }
                    Pass::Commit { reserve, added } => {
                        let t = self.new_table(reserve).ok_or(Error::NoMemory {
                            needed: 1,
                            allocated: 0,
                        })?;
                        self.split(self.entry(table, b), raw, level, t);
                        if level == Self::TOP {
                            // A new table right below the root, all 512 entries leaves.
                            self.set_live(b, 512);
                        }
                        *added += 1;
                        table = table.child(t);
                    }
                },
                _ => break,
            }
            level = level.below();
        }
        Ok(())
    }

    /// Whether no leaf the walks split can straddle `b`: only leaves up to
    /// `MAX_LEAF_LEVEL` are split, and none straddles an address aligned to that
    /// level's blocks.
    #[inline(always)]
    fn straddle_free(b: usize) -> bool {
        Level::new(F::MAX_LEAF_LEVEL).aligned(b)
    }

    /// Replaces the leaf `raw` at `level` (held by `entry`) with the table `t` (a
    /// frame of ours, not linked) of 512 leaves one level down translating the same
    /// addresses with the same flags.
    fn split(&self, entry: &AtomicU64, raw: u64, level: Level, t: crate::HostPhysAddr) {
        let base = F::output_addr(raw, level.get()).as_usize();
        let below = level.below();
        let attrs = F::leaf_attrs(F::leaf_flags(raw), below.get());
        let table = Table {
            hpa: t,
            level: below,
        };
        for (i, e) in self.entries(table).iter().enumerate() {
            let hpa = crate::HostPhysAddr::from_usize(base + i * below.span());
            e.store(attrs | F::addr_bits(hpa), Ordering::Relaxed);
        }
        // Release: the new leaves are visible before the table that holds them.
        entry.store(F::table(t), Ordering::Release);
    }
}
