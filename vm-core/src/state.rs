//! The two lifecycles vm-core keeps: the VM's ([`VmState`]: built, booted, paused,
//! stopped) and each vCPU's ([`VCpuState`]: off, started, bound to a physical CPU,
//! in the guest). They answer different questions — whether the VM may run at all,
//! and where one vCPU is — so neither repeats the other: a vCPU of a paused or
//! stopped VM keeps its own state (it does not enter the guest until the VM runs).
//!
//! Each is one atomic, changed only along the edges of its machine (a compare and
//! exchange from the state the step starts in), so a refused step changes nothing
//! and names the state the VM or vCPU was in.

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// A state kept in an `AtomicU8` as its index in [`Encoded::ALL`] (its `repr(u8)`
/// discriminant).
pub(crate) trait Encoded: Copy + 'static {
    /// Every state, in the order of their codes.
    const ALL: &'static [Self];

    /// The state stored as `v` (a code past the end, which nothing stores, reads
    /// as the last state).
    fn from_u8(v: u8) -> Self {
        let all = Self::ALL;
        all[usize::from(v).min(all.len() - 1)]
    }
}

/// Declares state enums kept as [`Encoded`] codes: each gets its variants'
/// declaration order as its `repr(u8)` codes and as [`Encoded::ALL`], so the list
/// of states is written once.
macro_rules! encoded_states {
    ($(
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident,)+
        }
    )+) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl Encoded for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];
        }
    )+};
}

encoded_states! {
    /// Where a VM is in its life.
    ///
    /// ```text
    /// Created --boot--> Running --pause--> Paused --resume--> Running
    /// Created | Running | Paused --shut down--> Stopped
    /// ```
    pub enum VmState {
        /// Built, not booted.
        Created,
        /// Booted: vCPUs may run.
        Running,
        /// Paused: vCPUs return [`crate::VmExit::Paused`] until resumed.
        Paused,
        /// Shut down for good.
        Stopped,
    }

    /// Where one vCPU is in its life: the one record of it (whether it was started, is
    /// bound to a physical CPU, or is in the guest).
    ///
    /// ```text
    ///        start         bind          enter
    ///   Off -------> Started -----> Bound -------> InGuest
    ///    ^                  <-----        <-------
    ///    |                  unbind          exit
    ///    +------------------------------ Bound
    ///              turn off (the guest's CPU off, on the vCPU's own physical CPU)
    /// ```
    ///
    /// What holds the vCPU's lock (`Vm::run_vcpu` for as long as it runs,
    /// `Vm::with_vcpu` briefly) is not part of the state: the lock only gives one
    /// thread at a time the architecture vCPU.
    pub enum VCpuState {
        /// Not started: vCPU 0 before boot, the others before the guest's CPU on (or a
        /// board's [`crate::Vm::start_vcpu`]), and any vCPU the guest turned off. It
        /// cannot run; starting it sets its entry.
        Off,
        /// Started, bound to no physical CPU: its next run binds it on the physical CPU
        /// that calls [`crate::Vm::run_vcpu`].
        Started,
        /// Started and bound to the physical CPU it last ran on, outside the guest.
        Bound,
        /// In the guest: from just before an entry (before the checks of the VM state,
        /// queued interrupts and the TLB generation) to just after the exit. A
        /// shootdown, pause or shutdown kicks the vCPUs in this state and waits for
        /// them to leave it.
        InGuest,
    }
}

impl fmt::Display for VCpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Started => "started (not bound)",
            Self::Bound => "bound",
            Self::InGuest => "in the guest",
        })
    }
}

/// One edge of the [`VCpuState`] machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VCpuStep {
    /// `Off -> Started`: boot (vCPU 0), CPU on, `Vm::start_vcpu`.
    Start,
    /// `Started -> Bound`: the first run on a physical CPU.
    Bind,
    /// `Bound -> InGuest`: before the entry checks.
    Enter,
    /// `InGuest -> Bound`: after the exit (or an entry given up).
    Exit,
    /// `Bound -> Started`: `Vm::unbind_vcpu`.
    Unbind,
    /// `Bound -> Off`: the guest turned the vCPU off (it is unbound first).
    TurnOff,
}

impl VCpuStep {
    /// The state the step starts in and the one it ends in.
    pub(crate) const fn edge(self) -> (VCpuState, VCpuState) {
        use VCpuState::*;
        match self {
            Self::Start => (Off, Started),
            Self::Bind => (Started, Bound),
            Self::Enter => (Bound, InGuest),
            Self::Exit => (InGuest, Bound),
            Self::Unbind => (Bound, Started),
            Self::TurnOff => (Bound, Off),
        }
    }

    /// The operation, as errors name it.
    pub(crate) const fn op(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Bind => "bind",
            Self::Enter => "enter the guest",
            Self::Exit => "leave the guest",
            Self::Unbind => "unbind",
            Self::TurnOff => "turn off",
        }
    }
}

/// A vCPU's [`VCpuState`], changed only by [`VCpuStep`]s. Every access is SeqCst:
/// `Enter` and the host's change of the VM state or TLB generation each write
/// before reading the other side (the coherency handshake).
#[derive(Debug)]
pub(crate) struct VCpuStateCell(AtomicU8);

impl VCpuStateCell {
    /// A vCPU that is off.
    pub(crate) const fn new() -> Self {
        Self(AtomicU8::new(VCpuState::Off as u8))
    }

    /// The current state.
    pub(crate) fn get(&self) -> VCpuState {
        VCpuState::from_u8(self.0.load(Ordering::SeqCst))
    }

    /// Takes `step` if the vCPU is in the state it starts in; otherwise changes
    /// nothing and returns the state the vCPU is in.
    pub(crate) fn step(&self, step: VCpuStep) -> Result<(), VCpuState> {
        let (from, to) = step.edge();
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(VCpuState::from_u8)
    }
}

#[cfg(test)]
mod tests {
    use super::VCpuState::*;
    use super::*;

    const STATES: [VCpuState; 4] = [Off, Started, Bound, InGuest];
    const STEPS: [VCpuStep; 6] = [
        VCpuStep::Start,
        VCpuStep::Bind,
        VCpuStep::Enter,
        VCpuStep::Exit,
        VCpuStep::Unbind,
        VCpuStep::TurnOff,
    ];

    fn cell_in(state: VCpuState) -> VCpuStateCell {
        VCpuStateCell(AtomicU8::new(state as u8))
    }

    /// Every step from every state: taken exactly from the state it starts in,
    /// refused (naming the real state, changing nothing) from every other.
    #[test]
    fn vcpu_steps_only_along_their_edge() {
        for step in STEPS {
            for s in STATES {
                let cell = cell_in(s);
                let (from, to) = step.edge();
                if s == from {
                    assert_eq!(cell.step(step), Ok(()), "{step:?} from {s}");
                    assert_eq!(cell.get(), to);
                } else {
                    assert_eq!(cell.step(step), Err(s), "{step:?} from {s}");
                    assert_eq!(cell.get(), s);
                }
            }
        }
    }

    /// Every state is reached from `Off` and left again (none is dead), and the
    /// u8 encodings of both lifecycles round-trip.
    #[test]
    fn every_vcpu_state_is_reachable_and_left() {
        for s in VmState::ALL {
            assert_eq!(VmState::from_u8(*s as u8), *s);
        }
        for s in STATES {
            assert_eq!(VCpuState::from_u8(s as u8), s);
            assert!(STEPS.iter().any(|t| t.edge().1 == s), "{s} never entered");
            assert!(STEPS.iter().any(|t| t.edge().0 == s), "{s} never left");
        }
        let cell = VCpuStateCell::new();
        for step in [
            VCpuStep::Start,
            VCpuStep::Bind,
            VCpuStep::Enter,
            VCpuStep::Exit,
            VCpuStep::Unbind,
            VCpuStep::Bind,
            VCpuStep::TurnOff,
        ] {
            cell.step(step).unwrap();
        }
        assert_eq!(cell.get(), Off);
    }
}
