//! The guest's firmware, decided here for every architecture: the arch layer decodes a
//! call (PSCI, SBI, CPUID, a hypercall) into a [`GuestCall`] and encodes the
//! [`FirmwareReply`]; this module decides which calls are supported and what they
//! answer: interface versions and feature probes, which vCPU a CPU on targets (the
//! guest's CPU id mapped to a vCPU index, [`Vm::vcpu_by_cpu_id`]), CPU off and
//! status, system off and reset, inter-processor interrupts, the console (through the
//! guest-memory copy API and its rules), what CPUID reports (`identify.rs`).
//! Hypercalls of the board's own go to the caller as [`VmExit::Hypercall`].

use alloc::sync::Arc;
use alloc::vec::Vec;

use addrspace::{GuestPhysAddr, PAGE_SIZE};
use spin::RwLock;
use vcpu_api::{
    ArchVCpu, Conduit, CpuMask, CpuState, FirmwareCall, FirmwareError, FirmwareReply, GuestCall,
    Service,
};

use crate::error::VmError;
use crate::exit::VmExit;
use crate::identify;
use crate::run::Step;
use crate::state::VCpuStep;
use crate::vm::{Pending, VCpuInner, VCpuSlot, Vm};

/// The PSCI version the guest sees: 1.0 (Arm DEN0022D).
pub const PSCI_VERSION: (u16, u16) = (1, 0);
/// The SBI specification version the guest sees: 2.0.
pub const SBI_VERSION: (u16, u16) = (2, 0);
/// The SBI implementation id we report. The SBI specification's registered ids stop
/// at 11 (bhyve); this one is outside the registered range on purpose and spells
/// "HVC".
pub const SBI_IMPL_ID: u64 = 0x0048_5643;
/// The SBI implementation version we report (`get_impl_version`).
pub const SBI_IMPL_VERSION: u64 = 0x0001;
/// PSCI MIGRATE_INFO_TYPE's answer: no Trusted OS that needs migrating (DEN0022D
/// §5.8.1, value 2).
pub const MIGRATE_NOT_REQUIRED: u64 = 2;
/// The interrupt an SBI IPI raises on each target: the supervisor software interrupt
/// (RISC-V interrupt 1; a guest in VS-mode takes it as its `sip.SSIP`, which the
/// hypervisor raises through `hvip.VSSIP`). SBI v2.0 chapter 7.
pub const SBI_IPI_INTERRUPT: usize = 1;
/// The most bytes one console read or write moves (the guest loops for more, as
/// the SBI DBCN specification allows).
pub const CONSOLE_CHUNK: usize = 256;

/// A character device for the guest's firmware console (SBI DBCN and the legacy
/// `console_putchar`/`console_getchar`).
pub trait GuestConsole: Send + Sync {
    /// Writes `bytes`.
    fn write(&self, bytes: &[u8]);
    /// Reads up to `buf.len()` pending bytes without waiting; returns how many.
    fn read(&self, buf: &mut [u8]) -> usize;
}

/// What the board adds to the VM's firmware: a console and the numbers of its own
/// hypercall interfaces (which feature probes then report).
#[derive(Default)]
pub(crate) struct Firmware {
    console: RwLock<Option<Arc<dyn GuestConsole>>>,
    hypercalls: RwLock<Vec<u64>>,
}

impl<V: ArchVCpu> Vm<V> {
    /// Gives the guest's firmware console to `console` (SBI DBCN and legacy console
    /// calls; without one they answer NOT_SUPPORTED and probes say so).
    pub fn attach_console(&self, console: Arc<dyn GuestConsole>) {
        *self.firmware.console.write() = Some(console);
    }

    /// Declares the board's own hypercall interfaces by number (RISC-V: SBI
    /// extension ids), so feature probes of the guest find them.
    pub fn offer_hypercalls(&self, nrs: &[u64]) {
        self.firmware.hypercalls.write().extend_from_slice(nrs);
    }

    /// Whether the guest of vCPU `inner` finds `service` when it probes.
    fn offers(&self, inner: &VCpuInner<V>, service: Service) -> bool {
        match service {
            Service::Base | Service::CpuPower | Service::SystemPower | Service::MigrateInfo => true,
            Service::Timer | Service::RemoteFence => inner.arch.provides(service),
            Service::Ipi => true,
            Service::Console => self.firmware.console.read().is_some(),
            Service::Hypercall { nr } => self.firmware.hypercalls.read().contains(&nr),
        }
    }

    /// Decides the guest's call `call` of vCPU `vcpu` and answers it (hypercalls
    /// excepted: they go to the caller).
    pub(crate) fn firmware_call(
        &self,
        vcpu: usize,
        slot: &VCpuSlot<V>,
        inner: &mut VCpuInner<V>,
        call: GuestCall,
    ) -> Step {
        let (reply, exit) = match call.call {
            FirmwareCall::Version => (version(call.conduit), None),
            FirmwareCall::Probe { service } => (
                FirmwareReply::Offered(service.is_some_and(|s| self.offers(inner, s))),
                None,
            ),
            FirmwareCall::ImplId => (FirmwareReply::Value(SBI_IMPL_ID), None),
            FirmwareCall::ImplVersion => (FirmwareReply::Value(SBI_IMPL_VERSION), None),
            FirmwareCall::MachineId => (FirmwareReply::Value(0), None),
            FirmwareCall::MigrateInfoType => (FirmwareReply::Value(MIGRATE_NOT_REQUIRED), None),
            FirmwareCall::CpuOn { target, entry, arg } => self.cpu_on(target, entry, arg),
            FirmwareCall::CpuOff => {
                self.unbind_locked(vcpu, slot, inner, VCpuStep::TurnOff)?;
                return Ok(Some(VmExit::CpuDown));
            }
            FirmwareCall::CpuStatus { target } => (self.cpu_status(target), None),
            FirmwareCall::SystemOff | FirmwareCall::SystemReset => {
                // Another vCPU or the host may have stopped it first: fine.
                let _ = self.shutdown();
                return Ok(Some(if call.call == FirmwareCall::SystemOff {
                    VmExit::Shutdown
                } else {
                    VmExit::Reset
                }));
            }
            FirmwareCall::SetTimer { .. } => (self.granted(inner, Service::Timer), None),
            FirmwareCall::RemoteFence { .. } => (self.granted(inner, Service::RemoteFence), None),
            FirmwareCall::SendIpi { targets } => (self.send_ipi(targets), None),
            FirmwareCall::ConsoleWrite { gpa, len } => (self.console_write(gpa, len), None),
            FirmwareCall::ConsoleRead { gpa, len } => (self.console_read(gpa, len), None),
            FirmwareCall::ConsoleWriteByte { byte } => (self.console_write_byte(byte), None),
            FirmwareCall::ConsoleReadByte => (self.console_read_byte(), None),
            FirmwareCall::Cpuid { leaf, host, .. } => (
                FirmwareReply::Cpuid(identify::cpuid_for_guest(leaf, host)),
                None,
            ),
            FirmwareCall::IdRegister { id, host } => (
                FirmwareReply::Value(identify::id_register_for_guest(id, host)),
                None,
            ),
            FirmwareCall::InvalidParameters { .. } => {
                (FirmwareReply::Error(FirmwareError::InvalidParameters), None)
            }
            FirmwareCall::Hypercall(h) => {
                inner.pending = Some(Pending::Call(call));
                return Ok(Some(VmExit::Hypercall(h)));
            }
            // The rest is not implemented.
            _ => (FirmwareReply::Error(FirmwareError::NotSupported), None),
        };
        inner
            .arch
            .complete_call(&call, reply)
            .map_err(|error| VmError::VCpu { vcpu, error })?;
        Ok(exit)
    }

    /// A call of a service the vCPU carries out itself: granted when it can.
    fn granted(&self, inner: &VCpuInner<V>, service: Service) -> FirmwareReply {
        if inner.arch.provides(service) {
            FirmwareReply::Value(0)
        } else {
            FirmwareReply::Error(FirmwareError::NotSupported)
        }
    }

    /// CPU on: the guest's CPU id mapped to a vCPU, which is started at `entry`.
    fn cpu_on(
        &self,
        target: u64,
        entry: GuestPhysAddr,
        arg: u64,
    ) -> (FirmwareReply, Option<VmExit>) {
        let Some(index) = self.vcpu_by_cpu_id(target) else {
            log::warn!(
                "VM {}: CPU on of CPU id {target:#x}, which no vCPU has",
                self.id()
            );
            return (FirmwareReply::Error(FirmwareError::InvalidParameters), None);
        };
        match self.start_vcpu(index, entry, arg) {
            Ok(()) => (
                FirmwareReply::Value(0),
                Some(VmExit::CpuUp {
                    target: index,
                    entry,
                    arg,
                }),
            ),
            Err(VmError::VCpuState { .. }) => {
                (FirmwareReply::Error(FirmwareError::AlreadyOn), None)
            }
            Err(e) => {
                log::warn!("VM {}: CPU on of vCPU {index} refused: {e}", self.id());
                (FirmwareReply::Error(FirmwareError::Failed), None)
            }
        }
    }

    /// SBI `send_ipi`: the supervisor software interrupt on every vCPU whose guest
    /// CPU id is in `targets` (queued for its next entry; a vCPU in the guest is
    /// kicked out to take it). A mask naming an id no vCPU has is
    /// INVALID_PARAMETERS and interrupts nobody (SBI v2.0 section 7.1: "at least one
    /// hartid ... is not valid").
    fn send_ipi(&self, targets: CpuMask) -> FirmwareReply {
        let mut vcpus = Vec::new();
        if targets.base == u64::MAX {
            vcpus.extend(0..self.vcpu_count());
        } else {
            for bit in (0..64u64).filter(|b| targets.mask & (1 << b) != 0) {
                let index = targets
                    .base
                    .checked_add(bit)
                    .and_then(|id| self.vcpu_by_cpu_id(id));
                match index {
                    Some(i) => vcpus.push(i),
                    None => return FirmwareReply::Error(FirmwareError::InvalidParameters),
                }
            }
        }
        for i in vcpus {
            if self.inject_interrupt(i, SBI_IPI_INTERRUPT).is_err() {
                return FirmwareReply::Error(FirmwareError::Failed);
            }
        }
        FirmwareReply::Value(0)
    }

    fn cpu_status(&self, target: u64) -> FirmwareReply {
        match self.vcpu_by_cpu_id(target) {
            Some(i) if self.is_vcpu_started(i) => FirmwareReply::CpuState(CpuState::On),
            Some(_) => FirmwareReply::CpuState(CpuState::Off),
            None => FirmwareReply::Error(FirmwareError::InvalidParameters),
        }
    }

    fn console(&self) -> Option<Arc<dyn GuestConsole>> {
        self.firmware.console.read().clone()
    }

    /// Writes up to [`CONSOLE_CHUNK`] bytes of the guest's buffer at `gpa` to the
    /// console, read through the guest-memory copy API (RAM of this VM only: a hole,
    /// a device or a pass-through mapping ends the buffer there). Answers the bytes
    /// written, INVALID_PARAMETERS when not even the first could be read.
    fn console_write(&self, gpa: GuestPhysAddr, len: u64) -> FirmwareReply {
        let Some(console) = self.console() else {
            return FirmwareReply::Error(FirmwareError::NotSupported);
        };
        let mut buf = [0u8; CONSOLE_CHUNK];
        let want = usize::try_from(len).map_or(CONSOLE_CHUNK, |l| l.min(CONSOLE_CHUNK));
        let got = self.read_guest_prefix(gpa, &mut buf[..want]);
        if got == 0 && want > 0 {
            return FirmwareReply::Error(FirmwareError::InvalidParameters);
        }
        console.write(&buf[..got]);
        FirmwareReply::Value(got as u64)
    }

    /// Reads up to `len` (at most [`CONSOLE_CHUNK`]) pending console bytes into the
    /// guest's buffer at `gpa`, written through the guest-memory copy API.
    fn console_read(&self, gpa: GuestPhysAddr, len: u64) -> FirmwareReply {
        let Some(console) = self.console() else {
            return FirmwareReply::Error(FirmwareError::NotSupported);
        };
        let mut buf = [0u8; CONSOLE_CHUNK];
        let want = usize::try_from(len).map_or(CONSOLE_CHUNK, |l| l.min(CONSOLE_CHUNK));
        let n = console.read(&mut buf[..want]).min(want);
        if n > 0 && self.write_guest(gpa, &buf[..n]).is_err() {
            return FirmwareReply::Error(FirmwareError::InvalidParameters);
        }
        FirmwareReply::Value(n as u64)
    }

    fn console_write_byte(&self, byte: u8) -> FirmwareReply {
        match self.console() {
            Some(c) => {
                c.write(&[byte]);
                FirmwareReply::Value(0)
            }
            None => FirmwareReply::Error(FirmwareError::NotSupported),
        }
    }

    /// The next console byte, or -1 when there is none (the legacy
    /// `console_getchar` convention).
    fn console_read_byte(&self) -> FirmwareReply {
        let mut b = [0u8];
        match self.console() {
            Some(c) if c.read(&mut b) == 1 => FirmwareReply::Value(u64::from(b[0])),
            _ => FirmwareReply::Value(u64::MAX),
        }
    }

    /// Copies as much of guest memory at `gpa` into `buf` as the copy API allows,
    /// page by page, stopping at the first page it refuses; returns the bytes copied.
    fn read_guest_prefix(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let at = gpa.as_usize().wrapping_add(done);
            let in_page = PAGE_SIZE - (at % PAGE_SIZE);
            let n = in_page.min(buf.len() - done);
            if self
                .read_guest(GuestPhysAddr::from_usize(at), &mut buf[done..done + n])
                .is_err()
            {
                break;
            }
            done += n;
        }
        done
    }
}

/// The version of the interface a call came through.
fn version(conduit: Conduit) -> FirmwareReply {
    let (major, minor) = match conduit {
        Conduit::Hvc | Conduit::Smc => PSCI_VERSION,
        Conduit::Ecall | Conduit::EcallLegacy => SBI_VERSION,
        Conduit::Vmmcall | Conduit::Cpuid | Conduit::Mrs { .. } => {
            return FirmwareReply::Error(FirmwareError::NotSupported);
        }
    };
    FirmwareReply::Version { major, minor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_by_interface() {
        assert_eq!(
            version(Conduit::Smc),
            FirmwareReply::Version { major: 1, minor: 0 }
        );
        assert_eq!(
            version(Conduit::EcallLegacy),
            FirmwareReply::Version { major: 2, minor: 0 }
        );
        assert_eq!(
            version(Conduit::Vmmcall),
            FirmwareReply::Error(FirmwareError::NotSupported)
        );
    }
}
