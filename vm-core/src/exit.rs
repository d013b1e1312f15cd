//! What [`Vm::run_vcpu`](crate::Vm::run_vcpu) hands back to the caller: [`VmExit`].

use alloc::boxed::Box;

use addrspace::{AccessKind, GpaRange, GuestPhysAddr, MappingFlags, Walk};
use vcpu_api::{Hypercall, PortIo, SysRegAccess};

use crate::device::DeviceError;

/// Why a guest access could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unserved {
    /// No region covers the address.
    NoArea,
    /// The region does not allow the access (a write to a read-only region).
    Permission {
        /// The region.
        area: GpaRange,
        /// Its flags.
        flags: MappingFlags,
    },
    /// The address is claimed for an emulated device (or reserved) but no device
    /// model is attached there.
    NoDevice {
        /// The claimed area.
        area: GpaRange,
    },
    /// The device model refused the access.
    Device(DeviceError),
}

/// A guest access vm-core could not serve. The vCPU is stopped at the faulting
/// instruction: resume with [`Vm::skip_access`](crate::Vm::skip_access) (the access
/// is dropped, a load leaves its register unchanged) or
/// [`Vm::complete_access`](crate::Vm::complete_access) (a load gets a value), or
/// stop the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnservedAccess {
    /// The guest-physical address accessed.
    pub gpa: GuestPhysAddr,
    /// The access.
    pub access: AccessKind,
    /// Why it was not served.
    pub why: Unserved,
    /// The translation of `gpa` in the VM's tables, for the log.
    pub walk: Box<Walk>,
}

/// An exit the caller of [`Vm::run_vcpu`](crate::Vm::run_vcpu) must act on. Everything
/// else (nested page faults vm-core resolves, MMIO to attached devices, kicks, the
/// guest's firmware calls: CPU on and off, status, versions and probes, console, CPUID)
/// is handled inside.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmExit {
    /// A hypercall of the board's own: answer it with
    /// [`Vm::set_return_value`](crate::Vm::set_return_value) (or refuse it with
    /// [`Vm::reply_call`](crate::Vm::reply_call)) before the next run.
    Hypercall(Hypercall),
    /// A guest access vm-core could not serve (see [`UnservedAccess`]).
    UnservedAccess(UnservedAccess),
    /// x86 port I/O (the guest is past the instruction; for `IN` write the
    /// accumulator with `Vm::with_vcpu`/`set_gpr(0, ..)`).
    Io(PortIo),
    /// A trapped system-register access: complete it with
    /// [`Vm::set_return_value`](crate::Vm::set_return_value) (the value a read
    /// returns; ignored for a write) before the next run.
    SysReg(SysRegAccess),
    /// The guest waits for an interrupt.
    Halt,
    /// The guest started vCPU `target` (PSCI CPU_ON, SBI HSM `hart_start`): vm-core
    /// mapped the guest's CPU id to it, set its entry and argument, marked it
    /// started and answered the caller; schedule `target` on a physical CPU (call
    /// `run_vcpu(target)` there).
    CpuUp {
        /// The vCPU index.
        target: usize,
        /// Its entry point.
        entry: GuestPhysAddr,
        /// Its argument.
        arg: u64,
    },
    /// The guest stopped this vCPU (PSCI CPU_OFF, SBI HSM `hart_stop`); it is no
    /// longer started (a later CPU on may start it again).
    CpuDown,
    /// The guest powered the VM off; the VM is now stopped and its other vCPUs
    /// return [`VmExit::Stopped`].
    Shutdown,
    /// The guest asked for a reset (or the vCPU reset itself: an x86 triple fault);
    /// the VM is now stopped.
    Reset,
    /// A physical interrupt arrived: the host handles it, then runs the vCPU again.
    ExternalInterrupt {
        /// Vector or interrupt number.
        vector: u64,
    },
    /// The VM was paused: run again after [`Vm::resume`](crate::Vm::resume).
    Paused,
    /// The VM was stopped (by another vCPU or the host).
    Stopped,
}

/// How many exits of each kind a VM's vCPUs took (every exit of `ArchVCpu::run`,
/// handled inside `run_vcpu` or not), for "exits per boot" figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Nested page faults (lazy fault-in, emulated MMIO, refused accesses).
    pub nested_faults: u64,
    /// Of those, accesses to emulated devices.
    pub mmio: u64,
    /// Firmware calls (PSCI, SBI, the board's hypercalls), all kinds; not the
    /// ID-register reads, which arrive by the same path ([`ExitCounts::id_reads`]).
    pub calls: u64,
    /// Of those, timer calls (SBI `set_timer`).
    pub timer_calls: u64,
    /// Of those, IPIs (SBI `send_ipi`).
    pub ipi_calls: u64,
    /// Of those, remote fences (SBI RFENCE).
    pub fence_calls: u64,
    /// Of those, the board's hypercalls.
    pub hypercalls: u64,
    /// ID-register reads the VM layer answers: Arm ID registers (HCR_EL2.TID3)
    /// and x86 CPUID.
    pub id_reads: u64,
    /// Port I/O.
    pub io: u64,
    /// Trapped system-register accesses.
    pub sysreg: u64,
    /// WFI/HLT exits.
    pub halts: u64,
    /// Kicks taken (the host made the vCPU leave the guest).
    pub kicks: u64,
    /// Host interrupts taken while the guest ran.
    pub interrupts: u64,
    /// Anything else (resets, failed entries).
    pub other: u64,
}

impl ExitCounts {
    /// Every exit.
    pub fn total(&self) -> u64 {
        self.nested_faults
            + self.calls
            + self.id_reads
            + self.io
            + self.sysreg
            + self.halts
            + self.kicks
            + self.interrupts
            + self.other
    }
}

impl core::fmt::Display for ExitCounts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} exits: {} nested faults ({} MMIO), {} firmware calls ({} timer, {} IPI, \
             {} remote fence, {} hypercall), {} WFI, {} kicks, {} host interrupts",
            self.total(),
            self.nested_faults,
            self.mmio,
            self.calls,
            self.timer_calls,
            self.ipi_calls,
            self.fence_calls,
            self.hypercalls,
            self.halts,
            self.kicks,
            self.interrupts
        )?;
        if self.io + self.id_reads + self.sysreg + self.other > 0 {
            write!(
                f,
                ", {} port I/O, {} ID-register reads, {} system registers, {} other",
                self.io, self.id_reads, self.sysreg, self.other
            )?;
        }
        Ok(())
    }
}

/// The counters behind [`ExitCounts`], shared by a VM's vCPUs.
#[derive(Default)]
pub(crate) struct ExitCounters {
    counts: [core::sync::atomic::AtomicU64; 14],
}

/// Indexes into [`ExitCounters::counts`], in [`ExitCounts`] field order.
mod slot {
    pub(super) const FAULT: usize = 0;
    pub(super) const MMIO: usize = 1;
    pub(super) const CALL: usize = 2;
    pub(super) const TIMER: usize = 3;
    pub(super) const IPI: usize = 4;
    pub(super) const FENCE: usize = 5;
    pub(super) const HYPERCALL: usize = 6;
    pub(super) const ID_READ: usize = 7;
    pub(super) const IO: usize = 8;
    pub(super) const SYSREG: usize = 9;
    pub(super) const HALT: usize = 10;
    pub(super) const KICK: usize = 11;
    pub(super) const INTERRUPT: usize = 12;
    pub(super) const OTHER: usize = 13;
}

impl ExitCounters {
    fn bump(&self, i: usize) {
        self.counts[i].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }

    /// Counts `exit`.
    pub(crate) fn record(&self, exit: &vcpu_api::ExitReason) {
        use vcpu_api::{ExitReason, FirmwareCall, GuestCall};
        match exit {
            ExitReason::NestedPageFault(_) => self.bump(slot::FAULT),
            ExitReason::Call(GuestCall {
                call: FirmwareCall::IdRegister { .. } | FirmwareCall::Cpuid { .. },
                ..
            }) => self.bump(slot::ID_READ),
            ExitReason::Call(call) => {
                self.bump(slot::CALL);
                match call.call {
                    FirmwareCall::SetTimer { .. } => self.bump(slot::TIMER),
                    FirmwareCall::SendIpi { .. } => self.bump(slot::IPI),
                    FirmwareCall::RemoteFence { .. } => self.bump(slot::FENCE),
                    FirmwareCall::Hypercall(_) => self.bump(slot::HYPERCALL),
                    _ => {}
                }
            }
            ExitReason::Io(_) => self.bump(slot::IO),
            ExitReason::SysReg(_) => self.bump(slot::SYSREG),
            ExitReason::Halt => self.bump(slot::HALT),
            ExitReason::Kicked => self.bump(slot::KICK),
            ExitReason::ExternalInterrupt { .. } => self.bump(slot::INTERRUPT),
            _ => self.bump(slot::OTHER),
        }
    }

    /// Counts an access that reached an emulated device.
    pub(crate) fn record_mmio(&self) {
        self.bump(slot::MMIO);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> ExitCounts {
        let c = |i: usize| self.counts[i].load(core::sync::atomic::Ordering::Relaxed);
        ExitCounts {
            nested_faults: c(slot::FAULT),
            mmio: c(slot::MMIO),
            calls: c(slot::CALL),
            timer_calls: c(slot::TIMER),
            ipi_calls: c(slot::IPI),
            fence_calls: c(slot::FENCE),
            hypercalls: c(slot::HYPERCALL),
            id_reads: c(slot::ID_READ),
            io: c(slot::IO),
            sysreg: c(slot::SYSREG),
            halts: c(slot::HALT),
            kicks: c(slot::KICK),
            interrupts: c(slot::INTERRUPT),
            other: c(slot::OTHER),
        }
    }
}

#[cfg(test)]
mod tests {
    use vcpu_api::{Conduit, CpuidRegs, ExitReason, FirmwareCall, GuestCall, SysRegAddr};

    use super::ExitCounters;

    fn call(call: FirmwareCall, conduit: Conduit) -> ExitReason {
        ExitReason::Call(GuestCall { call, conduit })
    }

    /// Regression (issue 13: an aarch64 Linux boot showed "141 firmware calls" of
    /// which all but a few were ID-register reads): PSCI/SBI calls and hypercalls
    /// count as firmware calls, Arm ID-register reads and CPUID apart from them.
    #[test]
    fn firmware_calls_exclude_id_register_reads() {
        let counters = ExitCounters::default();
        counters.record(&call(FirmwareCall::Version, Conduit::Smc));
        counters.record(&call(
            FirmwareCall::IdRegister {
                id: SysRegAddr::arm(3, 0, 0, 4, 0),
                host: 0x11,
            },
            Conduit::Mrs { rt: 1 },
        ));
        counters.record(&call(
            FirmwareCall::IdRegister {
                id: SysRegAddr::arm(3, 0, 0, 7, 0),
                host: 0x5,
            },
            Conduit::Mrs { rt: 2 },
        ));
        counters.record(&call(
            FirmwareCall::Cpuid {
                leaf: 1,
                subleaf: 0,
                host: CpuidRegs::default(),
            },
            Conduit::Cpuid,
        ));
        let counts = counters.snapshot();
        assert_eq!(counts.calls, 1);
        assert_eq!(counts.total(), 4);
        let line = counts.to_string();
        assert!(line.contains(" 1 firmware calls ("), "{line}");
        assert!(line.contains(" 3 ID-register reads,"), "{line}");
    }
}
