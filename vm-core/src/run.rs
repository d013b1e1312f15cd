//! The vCPU run loop: [`Vm::run_vcpu`] enters the guest, resolves what vm-core owns
//! (nested page faults, emulated MMIO, kicks, CPU bring-up) and returns the rest.

use core::sync::atomic::Ordering;

use addrspace::{AccessKind, AddrSpace, FaultOutcome, GuestPhysAddr, NestedFormat, PAGE_SIZE};
use vcpu_api::{
    ArchVCpu, ExitReason, GuestMemory, MmioAccess, MmioOp, NestedFault, PortIo, PortOp,
};

use crate::config::Hex;
use crate::device::{DeviceError, MmioDevice, access, offset_in};
use crate::diag::{mmio_unserved, unserved_of};
use crate::error::{VmError, VmResult};
use crate::exit::{Unserved, UnservedAccess, VmExit};
use crate::frames::HalFrames;
use crate::state::{VCpuState, VCpuStep, VmState};
use crate::vm::{Pending, VCpuInner, VCpuSlot, Vm};

use alloc::boxed::Box;
use alloc::sync::Arc;

/// A guest-memory view for instruction decoders.
struct SpaceView<'a, F: NestedFormat>(&'a AddrSpace<F, HalFrames>);

impl<F: NestedFormat> GuestMemory for SpaceView<'_, F> {
    fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), addrspace::Error> {
        self.0.read(gpa, buf)
    }
}

/// What handling one exit decided: `None` resumes the guest.
pub(crate) type Step = VmResult<Option<VmExit>>;

impl<V: ArchVCpu> Vm<V> {
    /// Runs vCPU `vcpu` on the calling physical CPU until an exit the caller must
    /// handle. Binds the vCPU on its first run.
    ///
    /// Handled inside (the guest resumes): nested page faults the address space
    /// resolves (lazy pages; spurious faults invalidate this vCPU's TLB), MMIO to an
    /// attached device (decode, device read/write, complete), `Kicked`, and the
    /// bookkeeping of CPU up. Returned: see [`VmExit`]. Errors: the VM is not running
    /// (`Created` or `Stopped`: [`VmError::State`]), the vCPU is off
    /// ([`VmError::VCpuState`]), [`VmError::FaultLoop`], [`VmError::MmioDecode`],
    /// [`VmError::EntryFailed`], out of memory while faulting in.
    ///
    /// Before every entry the vCPU publishes that it is in the guest
    /// ([`VCpuState::InGuest`]) and invalidates its guest TLB if a shootdown
    /// happened since its last entry; this is its half of the coherency handshake
    /// with [`Vm::unmap_region`].
    pub fn run_vcpu(&self, vcpu: usize) -> VmResult<VmExit> {
        let slot = self.slot(vcpu)?;
        match self.state() {
            VmState::Running => {}
            VmState::Paused => return Ok(VmExit::Paused),
            state => {
                return Err(VmError::State {
                    op: "run a vCPU",
                    state,
                });
            }
        }
        // Refused before the lock: an off vCPU's lock may be held by whoever is
        // starting it.
        if slot.state.get() == VCpuState::Off {
            return Err(VmError::VCpuState {
                vcpu,
                op: "run",
                state: VCpuState::Off,
            });
        }
        let mut inner = slot.inner.lock();
        match inner.pending {
            Some(Pending::Call(_) | Pending::SysReg(_)) => {
                return Err(VmError::Unanswered { vcpu });
            }
            // Running again retries an unserved access.
            Some(Pending::Access(_)) => inner.pending = None,
            None => {}
        }
        let err = |error| VmError::VCpu { vcpu, error };
        match slot.state.get() {
            VCpuState::Bound => {}
            VCpuState::Started => {
                inner.arch.bind().map_err(err)?;
                slot.step(vcpu, VCpuStep::Bind)?;
            }
            // Turned off between the check above and the lock.
            state => {
                return Err(VmError::VCpuState {
                    vcpu,
                    op: "run",
                    state,
                });
            }
        }
        slot.pcpu.store(
            crate_interface::call_interface!(crate::hal::VmHal::current_pcpu_id()),
            Ordering::SeqCst,
        );
        loop {
            // Entry half of the handshake: publish "in guest", then read the VM
            // state and the generation (all SeqCst, pairing with the host's write
            // of the state or generation followed by its read of the vCPU state).
            slot.step(vcpu, VCpuStep::Enter)?;
            let leave = || slot.step(vcpu, VCpuStep::Exit);
            match self.state() {
                VmState::Running => {}
                state => {
                    leave()?;
                    return match state {
                        VmState::Paused => Ok(VmExit::Paused),
                        _ => Ok(VmExit::Stopped),
                    };
                }
            }
            let irqs = core::mem::take(&mut *slot.irqs.lock());
            for vector in irqs {
                if let Err(e) = inner.arch.inject_interrupt(vector) {
                    leave()?;
                    return Err(err(e));
                }
            }
            let gen_now = self.tlb_gen.load(Ordering::SeqCst);
            if slot.seen_gen.load(Ordering::SeqCst) != gen_now {
                inner.arch.invalidate_guest_tlb();
                slot.seen_gen.store(gen_now, Ordering::SeqCst);
            }
            let exit = inner.arch.run();
            leave()?;
            let exit = exit.map_err(err)?;
            if let Some(out) = self.handle_exit(vcpu, slot, &mut inner, exit)? {
                return Ok(out);
            }
        }
    }

    fn handle_exit(
        &self,
        vcpu: usize,
        slot: &VCpuSlot<V>,
        inner: &mut VCpuInner<V>,
        exit: ExitReason,
    ) -> Step {
        self.exits.record(&exit);
        if !matches!(exit, ExitReason::NestedPageFault(_) | ExitReason::Kicked) {
            inner.progress();
        }
        Ok(Some(match exit {
            ExitReason::NestedPageFault(fault) => return self.handle_fault(vcpu, inner, fault),
            ExitReason::Kicked => return Ok(None),
            ExitReason::Call(call) => return self.firmware_call(vcpu, slot, inner, call),
            ExitReason::Io(io) => return self.port_io(vcpu, inner, io),
            ExitReason::SysReg(access) => {
                inner.pending = Some(Pending::SysReg(access));
                VmExit::SysReg(access)
            }
            ExitReason::Halt => VmExit::Halt,
            ExitReason::ExternalInterrupt { vector } => VmExit::ExternalInterrupt { vector },
            ExitReason::Reset => {
                // Another vCPU or the host may have stopped it first: fine.
                let _ = self.shutdown();
                VmExit::Reset
            }
            ExitReason::FailEntry { reason } => {
                return Err(VmError::EntryFailed { vcpu, reason });
            }
        }))
    }

    /// Serves port I/O `io` from the port bus: a device with a model there gets the
    /// access (whole inside it) and an `IN` its value (`ArchVCpu::complete_io`).
    /// Anything else — no device at the port, no model attached, an access past
    /// the device's end, a refusal — goes to the caller as [`VmExit::Io`] (the
    /// guest is past the instruction either way).
    fn port_io(&self, vcpu: usize, inner: &mut VCpuInner<V>, io: PortIo) -> Step {
        let served = {
            let ports = self.ports.read();
            ports
                .find(io.port)
                .and_then(|e| Some((e.offset_of(io.port, io.width)?, e.device.clone()?)))
        };
        let Some((offset, device)) = served else {
            return Ok(Some(VmExit::Io(io)));
        };
        let write = match io.op {
            PortOp::Read => None,
            PortOp::Write { data } => Some(io.width.truncate(data)),
        };
        match access(&*device, offset, io.width, write) {
            Ok(value) => {
                inner
                    .arch
                    .complete_io(&io, value)
                    .map_err(|error| VmError::VCpu { vcpu, error })?;
                Ok(None)
            }
            Err(e) => {
                log::debug!("VM {} vCPU {vcpu}: port {:#x}: {e}", self.id(), io.port);
                Ok(Some(VmExit::Io(io)))
            }
        }
    }

    fn unserved(&self, inner: &mut VCpuInner<V>, fault: NestedFault, why: Unserved) -> Step {
        inner.progress();
        inner.pending = Some(Pending::Access(fault));
        Ok(Some(VmExit::UnservedAccess(UnservedAccess {
            gpa: fault.gpa,
            access: fault.access,
            why,
            walk: Box::new(self.space.read().walk(fault.gpa)),
        })))
    }

    fn handle_fault(&self, vcpu: usize, inner: &mut VCpuInner<V>, fault: NestedFault) -> Step {
        let NestedFault { gpa, access, .. } = fault;
        let device = {
            let bus = self.bus.read();
            bus.find(gpa).map(|e| (e.base, e.length, e.device.clone()))
        };
        if let Some((base, length, device)) = device {
            inner.progress();
            log::trace!(
                "VM {} vCPU {vcpu}: {access} fault at {}: MMIO to the device at {} ({})",
                self.id(),
                Hex(gpa.as_usize() as u64),
                Hex(base.as_usize() as u64),
                if device.is_some() {
                    "emulated"
                } else {
                    "no model"
                }
            );
            return match device {
                Some(d) => {
                    self.exits.record_mmio();
                    self.emulate(vcpu, inner, fault, (base, length), d)
                }
                None => {
                    let why = mmio_unserved(base, length).map_err(|error| VmError::AddrSpace {
                        op: "emulated device range",
                        error,
                    })?;
                    self.unserved(inner, fault, why)
                }
            };
        }
        let outcome = self
            .space
            .write()
            .handle_page_fault(gpa, access)
            .map_err(|error| VmError::AddrSpace {
                op: "nested page fault",
                error,
            })?;
        log::trace!(
            "VM {} vCPU {vcpu}: {access} fault at {}: {outcome:?}",
            self.id(),
            Hex(gpa.as_usize() as u64)
        );
        match (outcome, unserved_of(outcome)) {
            (_, Some(why)) => self.unserved(inner, fault, why),
            (FaultOutcome::Spurious, None) => {
                self.faults_spurious.fetch_add(1, Ordering::Relaxed);
                inner.arch.invalidate_guest_tlb();
                self.count_fault(vcpu, inner, gpa, access)
            }
            // `Mapped`, the only other outcome `unserved_of` resolves inside.
            (_, None) => {
                self.faults_mapped.fetch_add(1, Ordering::Relaxed);
                self.count_fault(vcpu, inner, gpa, access)
            }
        }
    }

    /// The fault-loop detector: the same page and access resolved again with no TLB
    /// generation change in between is a fault without progress.
    fn count_fault(
        &self,
        vcpu: usize,
        inner: &mut VCpuInner<V>,
        gpa: GuestPhysAddr,
        access: AccessKind,
    ) -> Step {
        let key = (
            gpa.as_usize() & !(PAGE_SIZE - 1),
            access,
            self.tlb_gen.load(Ordering::SeqCst),
        );
        if inner.last_fault == Some(key) {
            inner.repeats += 1;
        } else {
            inner.last_fault = Some(key);
            inner.repeats = 1;
        }
        let limit = self.fault_loop_limit.load(Ordering::Relaxed);
        if inner.repeats >= limit {
            let count = inner.repeats;
            inner.progress();
            return Err(VmError::FaultLoop {
                vcpu,
                gpa,
                access,
                count,
                walk: Box::new(self.space.read().walk(gpa)),
            });
        }
        Ok(None)
    }

    /// Decodes the access of `fault`, which vCPU `vcpu` is stopped at, the decoder
    /// reading guest memory through the VM's tables (the copy API's rules: RAM
    /// only); an error carries the PC.
    pub(crate) fn decode(
        &self,
        vcpu: usize,
        inner: &VCpuInner<V>,
        fault: &NestedFault,
    ) -> VmResult<MmioAccess> {
        let decoded = {
            let space = self.space.read();
            inner.arch.decode_mmio(fault, &SpaceView(&space))
        };
        decoded.map_err(|error| VmError::MmioDecode {
            vcpu,
            gpa: fault.gpa,
            pc: inner.arch.pc(),
            error,
        })
    }

    fn emulate(
        &self,
        vcpu: usize,
        inner: &mut VCpuInner<V>,
        fault: NestedFault,
        (base, length): (GuestPhysAddr, usize),
        device: Arc<dyn MmioDevice>,
    ) -> Step {
        let acc = self.decode(vcpu, inner, &fault)?;
        // An access that runs past the device's end is no register of it: the model
        // only ever sees accesses inside its range.
        let gpa = fault.gpa.as_usize();
        let Some(offset) = offset_in(base.as_usize(), length, gpa, acc.width) else {
            let refused = DeviceError::NoRegister {
                offset: (gpa - base.as_usize()) as u64,
                width: acc.width,
            };
            return self.unserved(inner, fault, Unserved::Device(refused));
        };
        let write = match acc.op {
            MmioOp::Read { .. } => None,
            MmioOp::Write { value } => Some(value),
        };
        match access(&*device, offset, acc.width, write) {
            Ok(value) => {
                inner
                    .arch
                    .complete_mmio(&acc, value)
                    .map_err(|error| VmError::VCpu { vcpu, error })?;
                Ok(None)
            }
            Err(e) => self.unserved(inner, fault, Unserved::Device(e)),
        }
    }
}
