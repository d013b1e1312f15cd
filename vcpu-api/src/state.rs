//! The vCPU lifecycle: [`VCpuState`] and its checked transitions.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// Where a vCPU is in its life.
///
/// ```text
/// Created --setup--> Free --bind--> Ready --run--> Running --exit--> Ready
///                      ^              |  ^            |
///                      +----unbind----+  +---wake--- Blocked <--block--+
/// Created | Free | Ready | Blocked --stop--> Stopped
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum VCpuState {
    /// Allocated, not yet set up.
    Created = 0,
    /// Set up, not bound to a physical CPU.
    Free = 1,
    /// Bound to a physical CPU, ready to run.
    Ready = 2,
    /// Executing guest code (or handling its exit).
    Running = 3,
    /// Waiting for an event (halt, WFI) before it can run again.
    Blocked = 4,
    /// Stopped for good (CPU down, VM shutdown).
    Stopped = 5,
}

impl VCpuState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Created,
            1 => Self::Free,
            2 => Self::Ready,
            3 => Self::Running,
            4 => Self::Blocked,
            _ => Self::Stopped,
        }
    }

    /// Whether the machine allows `self -> to`.
    pub const fn can_become(self, to: VCpuState) -> bool {
        use VCpuState::*;
        matches!(
            (self, to),
            (Created, Free)
                | (Free, Ready)
                | (Ready, Running)
                | (Running, Ready)
                | (Running, Blocked)
                | (Blocked, Ready)
                | (Ready, Free)
                | (Created | Free | Ready | Blocked, Stopped)
        )
    }
}

impl fmt::Display for VCpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A refused transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateError {
    /// The state the vCPU was in.
    pub from: VCpuState,
    /// The state that was asked for.
    pub to: VCpuState,
    /// The state the caller expected the vCPU to be in, when it named one.
    pub expected: Option<VCpuState>,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected {
            Some(e) if e != self.from => write!(
                f,
                "vCPU is {} (expected {}), cannot become {}",
                self.from, e, self.to
            ),
            _ => write!(f, "vCPU cannot go from {} to {}", self.from, self.to),
        }
    }
}

/// A [`VCpuState`] shared between threads, changed only by checked transitions.
#[derive(Debug)]
pub struct VCpuStateCell(AtomicU8);

impl VCpuStateCell {
    /// A cell in state `Created`.
    pub const fn new() -> Self {
        Self(AtomicU8::new(VCpuState::Created as u8))
    }

    /// The current state.
    pub fn get(&self) -> VCpuState {
        VCpuState::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Moves from exactly `from` to `to`; fails (and changes nothing) if the vCPU is
    /// in another state or the machine does not allow the step.
    pub fn transition(&self, from: VCpuState, to: VCpuState) -> Result<(), StateError> {
        if !from.can_become(to) {
            return Err(StateError {
                from,
                to,
                expected: Some(from),
            });
        }
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|now| StateError {
                from: VCpuState::from_u8(now),
                to,
                expected: Some(from),
            })
    }

    /// Moves from whatever state the vCPU is in to `to`, if the machine allows it.
    pub fn become_(&self, to: VCpuState) -> Result<VCpuState, StateError> {
        let mut now = self.0.load(Ordering::Acquire);
        loop {
            let from = VCpuState::from_u8(now);
            if !from.can_become(to) {
                return Err(StateError {
                    from,
                    to,
                    expected: None,
                });
            }
            match self
                .0
                .compare_exchange(now, to as u8, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(from),
                Err(actual) => now = actual,
            }
        }
    }
}

impl Default for VCpuStateCell {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::VCpuState::*;
    use super::*;

    #[test]
    fn lifecycle_in_order() {
        let s = VCpuStateCell::new();
        for (from, to) in [
            (Created, Free),
            (Free, Ready),
            (Ready, Running),
            (Running, Blocked),
            (Blocked, Ready),
            (Ready, Running),
            (Running, Ready),
            (Ready, Free),
            (Free, Stopped),
        ] {
            s.transition(from, to).unwrap();
            assert_eq!(s.get(), to);
        }
    }

    #[test]
    fn refused_transitions_change_nothing() {
        let s = VCpuStateCell::new();
        assert_eq!(
            s.transition(Created, Running),
            Err(StateError {
                from: Created,
                to: Running,
                expected: Some(Created)
            })
        );
        assert_eq!(s.get(), Created);
        // Wrong current state: the error names the real one.
        let e = s.transition(Free, Ready).unwrap_err();
        assert_eq!((e.from, e.expected), (Created, Some(Free)));
        s.become_(Stopped).unwrap();
        assert!(s.become_(Ready).is_err());
        assert_eq!(s.get(), Stopped);
    }

    #[test]
    fn running_cannot_stop_directly() {
        assert!(!Running.can_become(Stopped));
        assert!(!Stopped.can_become(Ready));
    }
}
