//! The hypervisor side of the test protocol: [`Monitor`] answers the guest's
//! hypercalls, decides whether an unserved guest access was the one the guest
//! announced, prints each result, and counts.

use core::fmt::{self, Write};

use crate::protocol::{Call, Check, FAULT_READ, FAULT_WRITE};

/// What the board must do for a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return this value to the guest.
    Return(u64),
    /// Unmap the 4 KiB page at `gpa` from the VM (completing the TLB invalidation)
    /// and return 0 to the guest, or a non-zero value if the unmap failed.
    Unmap {
        /// The page.
        gpa: u64,
    },
    /// Start vCPU `cpu` at `entry` with `arg`, and return 0 to the guest (non-zero if
    /// the VM refused).
    StartCpu {
        /// Target vCPU.
        cpu: u64,
        /// Guest-physical entry point.
        entry: u64,
        /// Its first argument.
        arg: u64,
    },
    /// Print the VM's diagnostics at `gpa` (with what the fault path does with a
    /// read or a write there, when `write` is `Some`) and return 1 if `gpa` is
    /// translated now, else 0.
    Diagnose {
        /// The address.
        gpa: u64,
        /// `Some(false)` a read, `Some(true)` a write, `None` the walk alone.
        write: Option<bool>,
    },
}

/// A fault the guest announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Expected {
    gpa: u64,
    write: bool,
}

/// Results of one test-guest run.
#[derive(Debug)]
pub struct Monitor {
    label: &'static str,
    results: [Option<bool>; Check::ALL.len()],
    /// Checks made by the hypervisor itself: (passed, failed).
    host: (u32, u32),
    expected: Option<Expected>,
    seen: bool,
}

impl Monitor {
    /// A monitor for one run; `label` prefixes its lines (e.g. `"ipa40"`).
    pub const fn new(label: &'static str) -> Self {
        Self {
            label,
            results: [None; Check::ALL.len()],
            host: (0, 0),
            expected: None,
            seen: false,
        }
    }

    /// The label that prefixes this run's lines.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Handles a test-protocol hypercall with its first four arguments; `out` gets
    /// the log lines.
    pub fn on_call(&mut self, call: Call, args: [u64; 4], out: &mut dyn Write) -> Action {
        match call {
            Call::Report => {
                let Some(check) = Check::from_number(args[0]) else {
                    let _ = writeln!(
                        out,
                        "[{}] guest reported unknown check {}",
                        self.label, args[0]
                    );
                    self.host.1 += 1;
                    return Action::Return(u64::MAX);
                };
                let passed = args[1] == 1;
                let slot = &mut self.results[check as usize];
                if slot.is_some() {
                    let _ = writeln!(
                        out,
                        "[{}] check {} reported twice",
                        self.label,
                        check.name()
                    );
                    self.host.1 += 1;
                }
                *slot = Some(passed && slot.is_none_or(|p| p));
                if passed {
                    let _ = writeln!(out, "[{}] ok   {}", self.label, check.name());
                } else {
                    let _ = writeln!(
                        out,
                        "[{}] FAIL {} (failed at step {})",
                        self.label,
                        check.name(),
                        args[2]
                    );
                }
                Action::Return(0)
            }
            Call::Add => Action::Return(
                args[0]
                    .wrapping_add(args[1].wrapping_mul(2))
                    .wrapping_add(args[2].wrapping_mul(3))
                    .wrapping_add(args[3].wrapping_mul(4)),
            ),
            Call::Unmap => Action::Unmap { gpa: args[0] },
            Call::ExpectFault => {
                self.expected = Some(Expected {
                    gpa: args[0],
                    write: args[1] == FAULT_WRITE,
                });
                self.seen = false;
                Action::Return(0)
            }
            Call::FaultSeen => {
                let seen = self.seen;
                self.expected = None;
                self.seen = false;
                Action::Return(u64::from(seen))
            }
            Call::StartCpu => Action::StartCpu {
                cpu: args[0],
                entry: args[1],
                arg: args[2],
            },
            Call::Diagnose => Action::Diagnose {
                gpa: args[0],
                write: match args[1] {
                    FAULT_READ => Some(false),
                    FAULT_WRITE => Some(true),
                    _ => None,
                },
            },
            Call::Print => {
                let _ = writeln!(
                    out,
                    "[{}] guest value {}: {:#x}",
                    self.label, args[0], args[1]
                );
                Action::Return(0)
            }
        }
    }

    /// A guest access the hypervisor could not serve (no region, or a permission the
    /// region lacks). Returns `true` when it is exactly the announced fault: the
    /// board then skips the instruction and resumes the guest. Otherwise the run has
    /// failed and the board stops the VM.
    pub fn on_unserved_access(&mut self, gpa: u64, write: bool, out: &mut dyn Write) -> bool {
        match self.expected {
            Some(e) if e.gpa == gpa && e.write == write && !self.seen => {
                self.seen = true;
                let _ = writeln!(
                    out,
                    "[{}] hypervisor saw the expected {} fault at {gpa:#x}",
                    self.label,
                    if write { "write" } else { "read" }
                );
                true
            }
            _ => {
                let _ = writeln!(
                    out,
                    "[{}] unexpected guest {} at {gpa:#x} (expected {:?})",
                    self.label,
                    if write { "write" } else { "read" },
                    self.expected
                );
                self.host.1 += 1;
                false
            }
        }
    }

    /// Records a check made by the hypervisor itself.
    pub fn host_check(&mut self, name: &str, passed: bool, out: &mut dyn Write) {
        let _ = writeln!(
            out,
            "[{}] {} {name}",
            self.label,
            if passed { "ok  " } else { "FAIL" }
        );
        if passed {
            self.host.0 += 1;
        } else {
            self.host.1 += 1;
        }
    }

    /// Ends the run: checks the guest never reported count as failed. Returns
    /// `(passed, failed)`.
    pub fn finish(&mut self, out: &mut dyn Write) -> (u32, u32) {
        let (mut passed, mut failed) = self.host;
        for check in Check::ALL {
            match self.results[check as usize] {
                Some(true) => passed += 1,
                Some(false) => failed += 1,
                None => {
                    let _ = writeln!(
                        out,
                        "[{}] FAIL {} (never reported)",
                        self.label,
                        check.name()
                    );
                    failed += 1;
                }
            }
        }
        let _ = writeln!(
            out,
            "[{}] run: {passed} passed, {failed} failed",
            self.label
        );
        (passed, failed)
    }

    /// Ends a run whose guest checks nothing (the boards' fault-loop run): only the
    /// hypervisor's checks count. Returns `(passed, failed)`.
    pub fn finish_host(&mut self, out: &mut dyn Write) -> (u32, u32) {
        let (passed, failed) = self.host;
        let _ = writeln!(
            out,
            "[{}] run (hypervisor checks only): {passed} passed, {failed} failed",
            self.label
        );
        (passed, failed)
    }
}

/// The closing line xtask looks for.
pub struct Summary {
    /// Checks passed.
    pub passed: u32,
    /// Checks failed.
    pub failed: u32,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::*;
    use crate::protocol::FAULT_READ;

    #[test]
    fn a_full_run_counts_every_check() {
        let mut out = String::new();
        let mut m = Monitor::new("t");
        for check in Check::ALL {
            assert_eq!(
                m.on_call(Call::Report, [check as u64, 1, 0, 0], &mut out),
                Action::Return(0)
            );
        }
        m.host_check("layout", true, &mut out);
        assert_eq!(m.finish(&mut out), (11, 0));
    }

    #[test]
    fn only_the_announced_fault_is_forgiven() {
        let mut out = String::new();
        let mut m = Monitor::new("t");
        assert!(!m.on_unserved_access(0x1000, false, &mut out));
        m.on_call(Call::ExpectFault, [0x2000, FAULT_READ, 0, 0], &mut out);
        assert!(!m.on_unserved_access(0x2000, true, &mut out), "wrong kind");
        assert!(m.on_unserved_access(0x2000, false, &mut out));
        assert!(!m.on_unserved_access(0x2000, false, &mut out), "only once");
        assert_eq!(
            m.on_call(Call::FaultSeen, [0; 4], &mut out),
            Action::Return(1)
        );
        assert_eq!(
            m.on_call(Call::FaultSeen, [0; 4], &mut out),
            Action::Return(0)
        );
        let (_, failed) = m.finish(&mut out);
        assert_eq!(failed, 3 + u32::try_from(Check::ALL.len()).unwrap());
        assert!(out.contains("never reported"));
    }

    #[test]
    fn add_wraps() {
        let mut out = String::new();
        let mut m = Monitor::new("t");
        assert_eq!(
            m.on_call(Call::Add, [u64::MAX, 1, 0, 0], &mut out),
            Action::Return(1)
        );
        assert_eq!(
            m.on_call(Call::Add, [1, 2, 3, 4], &mut out),
            Action::Return(30)
        );
    }

    #[test]
    fn call_numbers_round_trip() {
        for c in Call::ALL {
            assert_eq!(Call::from_arm(c.arm_function_id()), Some(c));
            let (eid, fid) = c.riscv_ids();
            assert_eq!(Call::from_riscv(eid, fid), Some(c));
            assert_eq!(Call::from_x86(c.x86_number()), Some(c));
        }
        assert_eq!(Call::from_arm(0x8400_0008), None);
    }
}
