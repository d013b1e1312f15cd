//! [`Aarch64VCpu`]: an EL1 vCPU under EL2 with stage-2 translation, implementing
//! [`vcpu_api::ArchVCpu`]. Trap handling (each trap becomes an [`ExitReason`] that
//! carries what the VM layer needs: the fault with its syndrome's access, the PSCI
//! call or hypercall decoded) is plain code over the decoded [`Trap`], tested on the
//! host; only entering the guest and switching system registers need the hardware.

use alloc::sync::Arc;
use core::marker::PhantomData;

use addrspace::{AccessKind, ArmStage2, GuestPhysAddr, HostPhysAddr, NestedFormat, PAGE_SIZE};
use vcpu_api::{
    ArchVCpu, Conduit, ExitReason, FaultInsn, FirmwareCall, FirmwareReply, GuestCall, GuestMemory,
    MmioAccess, MmioDecodeError, MmioOp, NestedFault, SysRegAccess, SysRegOp, VCpuError,
    VCpuResult,
};

use crate::context;
use crate::context::{El1Regs, TrapFrame};
use crate::cpu::{pa_bits, pa_range};
use crate::entry::{self, HwExit};
use crate::exit::{FaultKind, Trap};
use crate::firmware::{self, PsciConduit};
use crate::interrupt::{CpuInterface, VirtualInterrupts};
use crate::mmio::{fault_insn, xreg};
use crate::regs::{Hcr, MPIDR_AFFINITY_MASK, MPIDR_RES1, SPSR_EL1H_DAIF_MASKED};
use crate::tlb::{claim_vmid, flush_all, flush_local, release_vmid, vmid_of};

/// An Arm stage-2 format this vCPU can program into VTCR_EL2/VTTBR_EL2.
pub trait Stage2Format: NestedFormat {
    /// VTCR_EL2 for a CPU whose ID_AA64MMFR0_EL1.PARange is `pa_range`.
    fn vtcr(pa_range: u8) -> u64;
    /// VTTBR_EL2 for the table rooted at `root` with `vmid`.
    fn vttbr(root: HostPhysAddr, vmid: u16) -> u64;
}

impl<const IPA_BITS: u32> Stage2Format for ArmStage2<IPA_BITS> {
    fn vtcr(pa_range: u8) -> u64 {
        ArmStage2::<IPA_BITS>::vtcr(pa_range, false).bits()
    }

    fn vttbr(root: HostPhysAddr, vmid: u16) -> u64 {
        ArmStage2::<IPA_BITS>::vttbr(root, vmid)
    }
}

/// Creation parameters of an [`Aarch64VCpu`].
#[derive(Clone, Default)]
pub struct Aarch64CreateConfig {
    /// The MPIDR affinity the guest sees (VMPIDR_EL2) and names in PSCI CPU_ON (the
    /// vCPU's [`ArchVCpu::cpu_id`]); `None` numbers the vCPUs by index
    /// ([`default_mpidr`]).
    pub mpidr: Option<u64>,
    /// The instruction the guest uses for PSCI calls. PSCI function ids arriving
    /// through the other instruction are not PSCI: through HVC they are hypercalls
    /// for the board, through SMC unsupported functions (see
    /// [`crate::firmware::decode_call`]).
    pub psci: PsciConduit,
    /// The VM's virtual interrupt controller, which fills this vCPU's list
    /// registers around each run; `None`: no virtual interrupts (the virtual CPU
    /// interface stays off and `inject_interrupt` is refused).
    pub interrupts: Option<Arc<dyn VirtualInterrupts>>,
}

impl core::fmt::Debug for Aarch64CreateConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Aarch64CreateConfig")
            .field("mpidr", &self.mpidr)
            .field("psci", &self.psci)
            .field("interrupts", &self.interrupts.is_some())
            .finish()
    }
}

/// Setup parameters of an [`Aarch64VCpu`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aarch64SetupConfig {
    /// ID_AA64MMFR0_EL1.PARange to size VTCR_EL2.PS with; `None` reads the CPU's.
    pub pa_range: Option<u8>,
    /// Let the guest's WFI wait in the guest (HCR_EL2.TWI clear) instead of exiting
    /// with [`ExitReason::Halt`]: a vCPU alone on its physical CPU then sleeps until
    /// an interrupt (virtual, or a physical one that takes it out) instead of
    /// spinning through exits.
    pub wfi_in_guest: bool,
}

/// The exit value [`ExitReason::ExternalInterrupt`] carries: this HAL does not own
/// the interrupt controller, so the board acknowledges the interrupt itself.
pub const IRQ_NOT_ACKNOWLEDGED: u64 = u64::MAX;

/// An AArch64 vCPU at EL1 whose memory is translated by stage-2 tables of format `F`
/// ([`addrspace::ArmStage2Ipa40`]: 3 levels from two concatenated level-1 tables,
/// or [`addrspace::ArmStage2Ipa48`]: 4 levels).
pub struct Aarch64VCpu<F: Stage2Format> {
    vm_id: usize,
    vcpu_id: usize,
    frame: TrapFrame,
    el1: El1Regs,
    vmpidr: u64,
    vmid: u16,
    psci: PsciConduit,
    vtcr: Option<u64>,
    vttbr: Option<u64>,
    entry: Option<GuestPhysAddr>,
    hcr: Hcr,
    interrupts: Option<Arc<dyn VirtualInterrupts>>,
    cpuif: CpuInterface,
    pcpu: usize,
    bound: bool,
    reload_el1: bool,
    flush_on_bind: bool,
    _format: PhantomData<F>,
}

impl<F: Stage2Format> core::fmt::Debug for Aarch64VCpu<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Aarch64VCpu")
            .field("format", &F::NAME)
            .field("vm_id", &self.vm_id)
            .field("vcpu_id", &self.vcpu_id)
            .field("vmid", &self.vmid)
            .field("pc", &format_args!("{:#x}", self.frame.elr))
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl<F: Stage2Format> Aarch64VCpu<F> {
    /// The VMID this vCPU's translations are tagged with.
    pub fn vmid(&self) -> u16 {
        self.vmid
    }

    /// The MPIDR the guest sees (without the RES1 bit).
    pub fn mpidr(&self) -> u64 {
        self.vmpidr & MPIDR_AFFINITY_MASK
    }

    /// The saved general registers, ELR/SPSR and FP/SIMD state.
    pub fn frame(&self) -> &TrapFrame {
        &self.frame
    }

    /// VTTBR_EL2 for this vCPU, once the nested root is set.
    pub fn vttbr(&self) -> Option<u64> {
        self.vttbr
    }

    /// HCR_EL2 as this vCPU runs with it.
    pub fn hcr(&self) -> Hcr {
        self.hcr
    }

    /// VTCR_EL2 for this vCPU, once set up.
    pub fn vtcr(&self) -> Option<u64> {
        self.vtcr
    }

    fn reg(&self, index: u8) -> u64 {
        xreg(&self.frame.x, index)
    }

    fn set_reg(&mut self, index: u8, value: u64) {
        if let Some(r) = self.frame.x.get_mut(usize::from(index)) {
            *r = value;
        }
    }

    fn step(&mut self, bytes: u8) {
        self.frame.elr = self.frame.elr.wrapping_add(u64::from(bytes));
    }

    /// Acts on one decoded trap: `Ok(None)` when the guest resumes at once (WFE),
    /// `Ok(Some(exit))` for the VM layer. WFI is stepped over here; an MMIO access,
    /// a call and a system-register access are stepped over when they are completed
    /// (`complete_mmio`, `complete_call`, `complete_sysreg`; HVC's return address is
    /// already past it).
    pub(crate) fn handle_trap(&mut self, trap: Trap) -> VCpuResult<Option<ExitReason>> {
        let pc = self.frame.elr;
        match trap {
            Trap::DataAbort {
                ipa,
                abort,
                insn_len,
            } => {
                if !stage2_fault(abort.status.kind) {
                    return Err(VCpuError::InvalidValue {
                        what: "data abort status (DFSC) from EL1",
                        value: u64::from(abort.status.code),
                    });
                }
                // A fault on the guest's own table walk is a read of its table.
                let access = if abort.write && !abort.s1ptw && !abort.cache_maintenance {
                    AccessKind::Write
                } else {
                    AccessKind::Read
                };
                Ok(Some(ExitReason::NestedPageFault(NestedFault {
                    gpa: ipa,
                    access,
                    insn: fault_insn(&abort, insn_len, &self.frame.x, pc),
                })))
            }
            Trap::InstrAbort { ipa, abort } => {
                if !stage2_fault(abort.status.kind) {
                    return Err(VCpuError::InvalidValue {
                        what: "instruction abort status (IFSC) from EL1",
                        value: u64::from(abort.status.code),
                    });
                }
                let (access, why) = if abort.s1ptw {
                    (AccessKind::Read, MmioDecodeError::TableWalk { pc })
                } else {
                    (AccessKind::Execute, MmioDecodeError::Execute { pc })
                };
                Ok(Some(ExitReason::NestedPageFault(NestedFault {
                    gpa: ipa,
                    access,
                    insn: FaultInsn::Refused(why),
                })))
            }
            Trap::Hvc { .. } => Ok(Some(self.call(Conduit::Hvc))),
            Trap::Smc { .. } => Ok(Some(self.call(Conduit::Smc))),
            Trap::Wfi => {
                self.step(4);
                Ok(Some(ExitReason::Halt))
            }
            Trap::Wfe => {
                self.step(4);
                Ok(None)
            }
            Trap::SysReg(access)
                if access.read && crate::cpu::id_register(access.addr).is_some() =>
            {
                // HCR_EL2.TID3: the VM layer decides what the guest sees of the CPU.
                let host = crate::cpu::id_register(access.addr)
                    .map_or(0, |(crm, op2)| crate::cpu::read_id_register(crm, op2));
                Ok(Some(ExitReason::Call(GuestCall {
                    call: FirmwareCall::IdRegister {
                        id: access.addr,
                        host,
                    },
                    conduit: Conduit::Mrs { rt: access.reg },
                })))
            }
            Trap::SysReg(access) => Ok(Some(ExitReason::SysReg(SysRegAccess {
                addr: access.addr,
                op: if access.read {
                    SysRegOp::Read {
                        reg: usize::from(access.reg),
                    }
                } else {
                    SysRegOp::Write {
                        value: self.reg(access.reg),
                    }
                },
            }))),
            Trap::Other(esr) => Err(VCpuError::InvalidValue {
                what: "ESR_EL2 of an unhandled trap from EL1",
                value: esr.0,
            }),
        }
    }

    /// The exit of an HVC or SMC: the call decoded from x0..x6.
    fn call(&self, conduit: Conduit) -> ExitReason {
        let x = &self.frame.x;
        let regs = [x[0], x[1], x[2], x[3], x[4], x[5], x[6]];
        ExitReason::Call(GuestCall {
            call: firmware::decode_call(&regs, conduit, self.psci),
            conduit,
        })
    }

    /// Loads the vCPU onto this CPU (EL1 registers, VMPIDR, VTCR, VTTBR, HCR), once
    /// its entry point, setup and nested root are all set.
    fn load(&self) -> VCpuResult {
        if self.entry.is_none() {
            return Err(VCpuError::NotConfigured {
                missing: "entry point",
            });
        }
        let vtcr = self
            .vtcr
            .ok_or(VCpuError::NotConfigured { missing: "setup" })?;
        let vttbr = self.vttbr.ok_or(VCpuError::NotConfigured {
            missing: "nested root",
        })?;
        let mut hcr = self.hcr;
        if !crate::cpu::has_pauth() {
            hcr.remove(Hcr::API | Hcr::APK);
        }
        context::bind(&self.el1, hcr.bits(), vtcr, vttbr, self.vmpidr)
    }
}

/// Whether a fault status is one a stage-2 table causes (the VM layer resolves
/// those); external aborts and the rest are errors.
fn stage2_fault(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::Translation
            | FaultKind::AccessFlag
            | FaultKind::Permission
            | FaultKind::AddressSize
    )
}

impl<F: Stage2Format> ArchVCpu for Aarch64VCpu<F> {
    type Format = F;
    type CreateConfig = Aarch64CreateConfig;
    type SetupConfig = Aarch64SetupConfig;

    fn claim_vm(vm_id: usize) -> VCpuResult {
        claim_vmid(vm_id).map(|_| ())
    }

    fn release_vm(vm_id: usize) {
        release_vmid(vm_id);
    }

    fn vm_tag(vm_id: usize) -> Option<u16> {
        crate::tlb::vmid_of(vm_id)
    }

    fn new(vm_id: usize, vcpu_id: usize, config: Self::CreateConfig) -> VCpuResult<Self> {
        let vmid = vmid_of(vm_id).ok_or(VCpuError::NotConfigured {
            missing: "the VM's VMID (ArchVCpu::claim_vm)",
        })?;
        let affinity = match config.mpidr {
            Some(a) => a,
            None => default_mpidr(vcpu_id).ok_or(VCpuError::InvalidValue {
                what: "vCPU index (more than MPIDR's affinity fields can number)",
                value: vcpu_id as u64,
            })?,
        };
        if affinity & !MPIDR_AFFINITY_MASK != 0 {
            return Err(VCpuError::InvalidValue {
                what: "MPIDR affinity",
                value: affinity,
            });
        }
        Ok(Self {
            vm_id,
            vcpu_id,
            frame: TrapFrame::default(),
            el1: El1Regs::reset(),
            vmpidr: affinity | MPIDR_RES1,
            vmid,
            psci: config.psci,
            vtcr: None,
            vttbr: None,
            entry: None,
            hcr: Hcr::GUEST,
            interrupts: config.interrupts,
            cpuif: CpuInterface::default(),
            pcpu: 0,
            bound: false,
            reload_el1: false,
            flush_on_bind: true,
            _format: PhantomData,
        })
    }

    fn cpu_id(&self) -> u64 {
        self.mpidr()
    }

    fn set_nested_root(&mut self, root: HostPhysAddr) -> VCpuResult {
        // VTTBR_EL2.BADDR must be aligned to the size of the (concatenated) root.
        let align = F::ROOT_FRAMES * PAGE_SIZE;
        if !root.as_usize().is_multiple_of(align) || (root.as_usize() as u64) >> F::HPA_BITS != 0 {
            return Err(VCpuError::InvalidValue {
                what: "nested root (VTTBR_EL2.BADDR)",
                value: root.as_usize() as u64,
            });
        }
        self.vttbr = Some(F::vttbr(root, self.vmid));
        // Translations of this VMID cached for an earlier table (an earlier VM with
        // the same VMID) must go, on every CPU, before the vCPU first runs.
        flush_all(self.vmid);
        self.flush_on_bind = true;
        Ok(())
    }

    /// Also resets the vCPU to the state PSCI CPU_ON promises (DEN0022 §6.4): EL1h
    /// with interrupts masked, MMU off, general and FP/SIMD registers cleared.
    fn set_entry(&mut self, entry: GuestPhysAddr) -> VCpuResult {
        if !entry.as_usize().is_multiple_of(4) {
            return Err(VCpuError::InvalidValue {
                what: "entry point (A64 instructions are 4-byte aligned)",
                value: entry.as_usize() as u64,
            });
        }
        self.entry = Some(entry);
        // A bound vCPU has its EL1 registers live on its physical CPU: `run` loads
        // the reset values there before the next entry.
        self.reload_el1 = self.bound;
        self.frame = TrapFrame::default();
        self.el1 = El1Regs::reset();
        self.frame.elr = entry.as_usize() as u64;
        self.frame.spsr = SPSR_EL1H_DAIF_MASKED;
        Ok(())
    }

    fn setup(&mut self, config: Self::SetupConfig) -> VCpuResult {
        let pa_range = match config.pa_range {
            Some(r) => r,
            None => pa_range()?,
        };
        if F::GPA_BITS > pa_bits(pa_range) {
            return Err(VCpuError::Unsupported {
                feature: "an IPA size within the CPU's physical address size (ID_AA64MMFR0_EL1.PARange)",
            });
        }
        self.vtcr = Some(F::vtcr(pa_range));
        self.hcr.set(Hcr::TWI, !config.wfi_in_guest);
        Ok(())
    }

    fn bind(&mut self) -> VCpuResult {
        if self.bound {
            return Err(VCpuError::Busy);
        }
        self.load()?;
        if self.interrupts.is_some() {
            self.cpuif.bind()?;
        }
        self.pcpu = crate::cpu::current_cpu();
        if core::mem::take(&mut self.flush_on_bind) {
            flush_local(self.vmid);
        }
        self.bound = true;
        Ok(())
    }

    fn unbind(&mut self) -> VCpuResult {
        if !self.bound {
            return Err(VCpuError::NotConfigured {
                missing: "bind before unbind",
            });
        }
        if self.interrupts.is_some() {
            self.cpuif.unbind();
        }
        context::unbind(&mut self.el1)?;
        self.bound = false;
        Ok(())
    }

    fn run(&mut self) -> VCpuResult<ExitReason> {
        if !self.bound {
            return Err(VCpuError::NotConfigured {
                missing: "bind before run",
            });
        }
        if core::mem::take(&mut self.reload_el1) {
            self.load()?;
        }
        loop {
            if let Some(source) = &self.interrupts {
                self.cpuif.flush(&**source, self.vcpu_id, self.pcpu);
            }
            let trap = entry::enter(&mut self.frame);
            if let Some(source) = &self.interrupts {
                self.cpuif.fold(&**source, self.vcpu_id);
            }
            let trap = match trap? {
                HwExit::Sync(trap) => trap,
                HwExit::Irq => {
                    return Ok(ExitReason::ExternalInterrupt {
                        vector: IRQ_NOT_ACKNOWLEDGED,
                    });
                }
                HwExit::Other(kind) => {
                    return Err(VCpuError::InvalidValue {
                        what: "exception kind from EL1 (FIQ, SError or AArch32)",
                        value: kind,
                    });
                }
            };
            if let Some(exit) = self.handle_trap(trap)? {
                return Ok(exit);
            }
        }
    }

    fn gpr(&self, index: usize) -> VCpuResult<u64> {
        self.frame
            .x
            .get(index)
            .copied()
            .ok_or(VCpuError::InvalidRegister { index })
    }

    fn set_gpr(&mut self, index: usize, value: u64) -> VCpuResult {
        let r = self
            .frame
            .x
            .get_mut(index)
            .ok_or(VCpuError::InvalidRegister { index })?;
        *r = value;
        Ok(())
    }

    fn pc(&self) -> u64 {
        self.frame.elr
    }

    /// PSCI CPU_ON's context id goes to the started CPU's x0 (DEN0022 §5.6).
    fn set_start_arg(&mut self, arg: u64) -> VCpuResult {
        self.frame.x[0] = arg;
        Ok(())
    }

    /// Makes INTID `vector` pending through the VM's virtual interrupt controller;
    /// it reaches the list registers at the next entry.
    fn inject_interrupt(&mut self, vector: usize) -> VCpuResult {
        let Some(source) = &self.interrupts else {
            return Err(VCpuError::Unsupported {
                feature: "virtual interrupts (no virtual GIC given at creation)",
            });
        };
        match u32::try_from(vector) {
            Ok(intid) if source.inject(self.vcpu_id, intid) => Ok(()),
            _ => Err(VCpuError::InvalidValue {
                what: "interrupt INTID",
                value: vector as u64,
            }),
        }
    }

    fn invalidate_guest_tlb(&mut self) {
        if self.bound {
            flush_local(self.vmid);
        } else {
            self.flush_on_bind = true;
        }
    }

    fn decode_mmio(
        &self,
        fault: &NestedFault,
        _mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        match fault.insn {
            FaultInsn::Decoded(insn) => Ok(insn.at(fault.gpa)),
            FaultInsn::Refused(e) => Err(e),
            // Without a syndrome the instruction would have to be decoded from
            // memory, which is not implemented for A64.
            FaultInsn::Bytes(_) | FaultInsn::Fetch => {
                Err(MmioDecodeError::NoSyndrome { pc: self.frame.elr })
            }
        }
    }

    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult {
        if let (MmioOp::Read { reg, .. }, Some(raw)) = (access.op, read_value) {
            let index = xindex(reg)?;
            // Register 31 is XZR here: it reads as zero and `set_reg` drops the write.
            self.set_reg(index, access.load_result(self.reg(index), raw));
        }
        self.step(access.insn_len);
        Ok(())
    }

    /// x0 gets the reply (PSCI and SMCCC conventions); a trapped SMC returns to the
    /// SMC itself (Arm ARM D1.3.2.1 "preferred exception return address") and is
    /// stepped over, an HVC already returns past itself.
    fn complete_call(&mut self, call: &GuestCall, reply: FirmwareReply) -> VCpuResult {
        let value = firmware::encode_reply(reply).ok_or(VCpuError::InvalidValue {
            what: "firmware reply (CPUID registers) to an HVC, SMC or MRS",
            value: 0,
        })?;
        match call.conduit {
            // The ID register's value to the MRS's destination (XZR drops it).
            Conduit::Mrs { rt } => {
                self.set_reg(rt, value);
                self.step(4);
            }
            Conduit::Smc => {
                self.frame.x[0] = value;
                self.step(4);
            }
            _ => self.frame.x[0] = value,
        }
        Ok(())
    }

    fn complete_sysreg(&mut self, access: &SysRegAccess, read_value: Option<u64>) -> VCpuResult {
        if let (SysRegOp::Read { reg }, Some(value)) = (access.op, read_value) {
            // MRS to XZR (31) discards the value.
            self.set_reg(xindex(reg)?, value);
        }
        self.step(4);
        Ok(())
    }
}

/// A general register index of a load, store or MRS: 0..=31 (31 is XZR).
fn xindex(reg: usize) -> VCpuResult<u8> {
    u8::try_from(reg)
        .ok()
        .filter(|&r| r <= 31)
        .ok_or(VCpuError::InvalidRegister { index: reg })
}

/// The MPIDR affinity of vCPU `index` when the creation parameters name none: 16
/// CPUs per Aff0 (what a GICv3 SGI target list reaches), then Aff1, Aff2 and Aff3
/// (bits 39:32) by 256; `None` past 2^28 vCPUs.
pub const fn default_mpidr(index: usize) -> Option<u64> {
    let i = index as u64;
    if i >> 28 != 0 {
        return None;
    }
    Some((i & 0xf) | ((i >> 4) & 0xff) << 8 | ((i >> 12) & 0xff) << 16 | (i >> 20) << 32)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use addrspace::{ArmStage2Ipa40, ArmStage2Ipa48};
    use vcpu_api::{AccessWidth, FirmwareError, Hypercall, SysRegAddr};

    use super::*;
    use crate::exit::decode_trap;

    type VCpu = Aarch64VCpu<ArmStage2Ipa40>;

    /// VM `vm_id`, its VMID claimed for the tests (once: they share the table and
    /// never release it).
    fn claimed(vm_id: usize) -> usize {
        let _ = claim_vmid(vm_id);
        vm_id
    }

    fn vcpu(psci: PsciConduit) -> VCpu {
        let config = Aarch64CreateConfig {
            psci,
            ..Default::default()
        };
        let mut v = VCpu::new(claimed(3), 0, config).unwrap();
        v.set_entry(GuestPhysAddr::from_usize(0x4000_0000)).unwrap();
        v
    }

    /// ESR_EL2 of `hvc #0` and `smc #0` (EC 0x16 / 0x17 with IL).
    const HVC0: u64 = 0x5a00_0000;
    const SMC0: u64 = 0x5e00_0000;

    fn trap(v: &mut VCpu, esr: u64, far: u64, hpfar: u64) -> Option<ExitReason> {
        v.handle_trap(decode_trap(esr, far, hpfar)).unwrap()
    }

    /// The call of an HVC or SMC exit.
    fn call_of(exit: Option<ExitReason>) -> GuestCall {
        match exit {
            Some(ExitReason::Call(c)) => c,
            other => panic!("not a call: {other:?}"),
        }
    }

    /// The fault of a data or instruction abort exit.
    fn fault_of(exit: Option<ExitReason>) -> NestedFault {
        match exit {
            Some(ExitReason::NestedPageFault(f)) => f,
            other => panic!("not a fault: {other:?}"),
        }
    }

    #[test]
    fn hypercall_passes_x0_to_x6() {
        let mut v = vcpu(PsciConduit::Smc);
        for i in 0..7 {
            v.set_gpr(i, 0xc600_0002 + i as u64 * 0x10).unwrap();
        }
        let pc = v.pc();
        let call = call_of(trap(&mut v, HVC0, 0, 0));
        assert_eq!(
            call,
            GuestCall {
                call: FirmwareCall::Hypercall(Hypercall {
                    nr: 0xc600_0002,
                    function: 0,
                    args: [
                        0xc600_0012,
                        0xc600_0022,
                        0xc600_0032,
                        0xc600_0042,
                        0xc600_0052,
                        0xc600_0062
                    ]
                }),
                conduit: Conduit::Hvc
            }
        );
        // HVC's return address is already the next instruction.
        assert_eq!(v.pc(), pc);
        v.complete_call(&call, FirmwareReply::Value(30)).unwrap();
        assert_eq!(v.gpr(0), Ok(30));
        assert_eq!(v.pc(), pc);
    }

    /// PSCI goes by the configured instruction and is decoded, not answered: the
    /// reply comes back through `complete_call`, which steps past an SMC.
    #[test]
    fn psci_through_the_configured_conduit() {
        let mut v = vcpu(PsciConduit::Smc);
        v.set_gpr(0, u64::from(firmware::CPU_ON_64)).unwrap();
        v.set_gpr(1, 0x101).unwrap();
        v.set_gpr(2, 0x4000_2000).unwrap();
        v.set_gpr(3, 0x5ec0_0001).unwrap();
        let pc = v.pc();
        let call = call_of(trap(&mut v, SMC0, 0, 0));
        assert_eq!(
            call,
            GuestCall {
                call: FirmwareCall::CpuOn {
                    target: 0x101,
                    entry: GuestPhysAddr::from_usize(0x4000_2000),
                    arg: 0x5ec0_0001
                },
                conduit: Conduit::Smc
            }
        );
        assert_eq!(v.pc(), pc, "nothing stepped before the reply");
        v.complete_call(&call, FirmwareReply::Error(FirmwareError::AlreadyOn))
            .unwrap();
        assert_eq!(v.gpr(0), Ok((-4i64) as u64));
        assert_eq!(v.pc(), pc + 4);
        // The same call by HVC is not PSCI here: it goes to the VM layer as is.
        v.set_gpr(0, u64::from(firmware::PSCI_VERSION)).unwrap();
        assert!(matches!(
            call_of(trap(&mut v, HVC0, 0, 0)).call,
            FirmwareCall::Hypercall(Hypercall {
                nr: 0x8400_0000,
                ..
            })
        ));
        let version = call_of(trap(&mut v, SMC0, 0, 0));
        assert_eq!(version.call, FirmwareCall::Version);
        v.complete_call(&version, FirmwareReply::Version { major: 1, minor: 0 })
            .unwrap();
        assert_eq!(v.gpr(0), Ok(0x1_0000));
    }

    #[test]
    fn psci_power_calls_by_hvc() {
        let mut v = vcpu(PsciConduit::Hvc);
        for (id, call) in [
            (firmware::CPU_OFF, FirmwareCall::CpuOff),
            (firmware::SYSTEM_OFF, FirmwareCall::SystemOff),
            (firmware::SYSTEM_RESET, FirmwareCall::SystemReset),
        ] {
            v.set_gpr(0, u64::from(id)).unwrap();
            assert_eq!(call_of(trap(&mut v, HVC0, 0, 0)).call, call, "{id:#x}");
        }
        v.set_gpr(0, u64::from(firmware::PSCI_FEATURES)).unwrap();
        v.set_gpr(1, u64::from(firmware::CPU_SUSPEND)).unwrap();
        let probe = call_of(trap(&mut v, HVC0, 0, 0));
        assert_eq!(probe.call, FirmwareCall::Probe { service: None });
        v.complete_call(&probe, FirmwareReply::Offered(false))
            .unwrap();
        assert_eq!(v.gpr(0), Ok(u64::MAX));
        // An SMC when PSCI goes by HVC: an unsupported function, stepped over when
        // answered.
        let pc = v.pc();
        v.set_gpr(0, u64::from(firmware::SYSTEM_OFF)).unwrap();
        let smc = call_of(trap(&mut v, SMC0, 0, 0));
        assert!(matches!(smc.call, FirmwareCall::Unsupported { .. }));
        v.complete_call(&smc, FirmwareReply::Error(FirmwareError::NotSupported))
            .unwrap();
        assert_eq!(v.gpr(0), Ok(u64::MAX));
        assert_eq!(v.pc(), pc + 4);
        // CPUID registers are no answer to an HVC.
        assert!(
            v.complete_call(&smc, FirmwareReply::Cpuid(Default::default()))
                .is_err()
        );
    }

    /// `str w1, [x0]` (w1 = 0x1234_5678_9abc_def0 in x1) to an MMIO IPA: ISV, SAS
    /// 0b10, SRT 1, WnR, translation fault level 3 (ESR 0x93810047). The exit
    /// carries the access with the value cut to the width.
    #[test]
    fn mmio_store_takes_the_register_cut_to_width() {
        let mut v = vcpu(PsciConduit::Hvc);
        v.set_gpr(1, 0x1234_5678_9abc_def0).unwrap();
        let fault = fault_of(trap(&mut v, 0x9381_0047, 0x0b00_0008, 0xb_0000));
        let gpa = GuestPhysAddr::from_usize(0x0b00_0008);
        assert_eq!((fault.gpa, fault.access), (gpa, AccessKind::Write));
        // The register changing after the exit does not change the access.
        v.set_gpr(1, 0).unwrap();
        let access = v.decode_mmio(&fault, &NoMem).unwrap();
        assert_eq!(access.width, AccessWidth::Dword);
        assert_eq!(access.op, MmioOp::Write { value: 0x9abc_def0 });
        let pc = v.pc();
        v.complete_mmio(&access, None).unwrap();
        assert_eq!(v.pc(), pc + 4);
    }

    /// `ldrsb w2, [x0]` reading 0xfe: ISV, SAS 0b00, SSE, SRT 2, SF = 0 -> w2 =
    /// 0xffff_fffe with the upper half clear. `ldrsh x3`: 0xffff_ffff_ffff_fffe.
    #[test]
    fn mmio_sign_extending_loads() {
        let mut v = vcpu(PsciConduit::Hvc);
        v.set_gpr(2, 0x5555_5555_5555_5555).unwrap();
        let mut load = |iss: u64, loaded: u64| {
            let f = fault_of(trap(&mut v, 0x9200_0000 | iss, 0x0b00_0018, 0xb_0000));
            let a = v.decode_mmio(&f, &NoMem).unwrap();
            v.complete_mmio(&a, Some(loaded)).unwrap();
        };
        let iss_ldrsb_w2 = (1 << 24) | (1 << 21) | (2 << 16) | 0b00_0111;
        load(iss_ldrsb_w2, 0xffff_ffff_ffff_fffe);
        let iss_ldrsh_x3 = (1 << 24) | (1 << 22) | (1 << 21) | (3 << 16) | (1 << 15) | 0b00_0111;
        load(iss_ldrsh_x3, 0xfffe);
        assert_eq!(v.gpr(2), Ok(0xffff_fffe));
        assert_eq!(v.gpr(3), Ok(u64::MAX - 1));
    }

    /// A load into XZR (SRT 31) is emulated and discarded; a store of XZR stores 0.
    #[test]
    fn mmio_xzr() {
        let mut v = vcpu(PsciConduit::Hvc);
        let before = *v.frame();
        let f = fault_of(trap(
            &mut v,
            0x93c0_0007 | (31 << 16),
            0x0b00_0000,
            0xb_0000,
        ));
        let a = v.decode_mmio(&f, &NoMem).unwrap();
        v.complete_mmio(&a, Some(7)).unwrap();
        assert_eq!(v.frame().x, before.x);
        let f = fault_of(trap(
            &mut v,
            0x93c0_0047 | (31 << 16),
            0x0b00_0000,
            0xb_0000,
        ));
        let a = v.decode_mmio(&f, &NoMem).unwrap();
        assert_eq!(a.op, MmioOp::Write { value: 0 });
    }

    /// `ldp x0, x1, [x2]` to MMIO: no syndrome (ISV = 0). The error names the PC; the
    /// guest is not resumed. Decoding is a function of the exit: other exits in
    /// between change nothing.
    #[test]
    fn mmio_without_syndrome_is_an_error_with_the_pc() {
        let mut v = vcpu(PsciConduit::Hvc);
        let f = fault_of(trap(&mut v, 0x9200_0007, 0x0b00_0000, 0xb_0000));
        assert_eq!(
            v.decode_mmio(&f, &NoMem),
            Err(MmioDecodeError::NoSyndrome { pc: 0x4000_0000 })
        );
        let store = fault_of(trap(&mut v, 0x9381_0047, 0x0b00_0008, 0xb_0000));
        trap(&mut v, HVC0, 0, 0);
        assert!(v.decode_mmio(&store, &NoMem).is_ok());
    }

    #[test]
    fn walk_faults_are_reads_and_fetch_faults_execute() {
        let mut v = vcpu(PsciConduit::Hvc);
        let pc = v.pc();
        // S1PTW with WnR (a hardware AF update of the guest's table): a read, of
        // the guest's table, which cannot be emulated.
        assert_eq!(
            fault_of(trap(&mut v, 0x9200_00c6, 0x1234, 0x50_0000)),
            NestedFault {
                gpa: GuestPhysAddr::from_usize(0x5000_0234),
                access: AccessKind::Read,
                insn: FaultInsn::Refused(MmioDecodeError::TableWalk { pc })
            }
        );
        // Instruction abort, translation fault level 2 (EC 0x20, IFSC 0b000110).
        assert_eq!(
            fault_of(trap(&mut v, 0x8200_0006, 0x6000_0000, 0x60_0000)),
            NestedFault {
                gpa: GuestPhysAddr::from_usize(0x6000_0000),
                access: AccessKind::Execute,
                insn: FaultInsn::Refused(MmioDecodeError::Execute { pc })
            }
        );
        // A synchronous external abort is not a stage-2 fault: an error.
        assert!(matches!(
            v.handle_trap(decode_trap(0x9200_0010, 0, 0)),
            Err(VCpuError::InvalidValue { value: 0x10, .. })
        ));
    }

    #[test]
    fn start_argument_and_reset() {
        let mut v = vcpu(PsciConduit::Hvc);
        v.set_gpr(5, 9).unwrap();
        v.set_entry(GuestPhysAddr::from_usize(0x4000_0014)).unwrap();
        v.set_start_arg(0x5ec0_0001).unwrap();
        assert_eq!(v.gpr(0), Ok(0x5ec0_0001));
        assert_eq!(v.gpr(5), Ok(0));
        assert_eq!(v.pc(), 0x4000_0014);
        assert_eq!(v.frame().spsr, SPSR_EL1H_DAIF_MASKED);
    }

    #[test]
    fn wfi_halts_and_sysregs_step() {
        let mut v = vcpu(PsciConduit::Hvc);
        let pc = v.pc();
        assert_eq!(trap(&mut v, 0x07e0_0000, 0, 0), Some(ExitReason::Halt));
        assert_eq!(trap(&mut v, 0x07e0_0001, 0, 0), None);
        assert_eq!(v.pc(), pc + 8);
        v.set_gpr(7, 0xabc).unwrap();
        let mdscr = crate::exit::sysreg_id(2, 0, 0, 2, 2);
        let esr = (0x18u64 << 26) | (1 << 25) | u64::from(mdscr.0) | (7 << 5);
        let access = SysRegAccess {
            addr: SysRegAddr(mdscr.0),
            op: SysRegOp::Write { value: 0xabc },
        };
        assert_eq!(trap(&mut v, esr, 0, 0), Some(ExitReason::SysReg(access)));
        assert_eq!(v.pc(), pc + 8, "stepped when completed");
        v.complete_sysreg(&access, None).unwrap();
        assert_eq!(v.pc(), pc + 12);
        // MRS x5 (Direction = 1): the value lands in x5.
        let mrs_x5 = (0x18u64 << 26) | (1 << 25) | u64::from(mdscr.0) | (5 << 5) | 1;
        let Some(ExitReason::SysReg(r)) = trap(&mut v, mrs_x5, 0, 0) else {
            panic!("not a system register access");
        };
        assert_eq!(r.op, SysRegOp::Read { reg: 5 });
        v.complete_sysreg(&r, Some(0x77)).unwrap();
        assert_eq!(v.gpr(5), Ok(0x77));
        assert!(matches!(
            v.handle_trap(decode_trap(0xf200_0000, 0, 0)),
            Err(VCpuError::InvalidValue {
                value: 0xf200_0000,
                ..
            })
        ));
    }

    /// HCR_EL2.TID3: an EL1 read of ID_AA64PFR0_EL1 (MRS x3, S3_0_C0_C4_0; ESR ISS
    /// Direction = 1, Rt = 3) is a call with the host's value (0 off the hardware) for
    /// the VM layer; its answer lands in x3 and the PC steps over the MRS. Other
    /// registers (MIDR_EL1 is not ID group 3) are plain system-register exits.
    #[test]
    fn id_register_reads_are_calls() {
        let mut v = vcpu(PsciConduit::Hvc);
        v.set_gpr(3, 0x5555).unwrap();
        let pfr0 = crate::exit::sysreg_id(3, 0, 0, 4, 0);
        let esr = (0x18u64 << 26) | (1 << 25) | u64::from(pfr0.0) | (3 << 5) | 1;
        let pc = v.pc();
        let Some(ExitReason::Call(call)) = trap(&mut v, esr, 0, 0) else {
            panic!("an ID register read is a call");
        };
        assert_eq!(
            call,
            GuestCall {
                call: FirmwareCall::IdRegister { id: pfr0, host: 0 },
                conduit: Conduit::Mrs { rt: 3 },
            }
        );
        v.complete_call(&call, FirmwareReply::Value(0x1122))
            .unwrap();
        assert_eq!((v.gpr(3), v.gpr(0)), (Ok(0x1122), Ok(0)));
        assert_eq!(v.pc(), pc + 4);
        // MRS to XZR: the value goes nowhere.
        let xzr = GuestCall {
            conduit: Conduit::Mrs { rt: 31 },
            ..call
        };
        let before = *v.frame();
        v.complete_call(&xzr, FirmwareReply::Value(7)).unwrap();
        assert_eq!(v.frame().x, before.x);
        let midr = crate::exit::sysreg_id(3, 0, 0, 0, 0);
        let esr = (0x18u64 << 26) | (1 << 25) | u64::from(midr.0) | (3 << 5) | 1;
        assert!(matches!(
            trap(&mut v, esr, 0, 0),
            Some(ExitReason::SysReg(SysRegAccess {
                op: SysRegOp::Read { reg: 3 },
                ..
            }))
        ));
    }

    /// WFI stays in the guest when asked; the guest's interrupts go to the virtual
    /// GIC given at creation, refused without one.
    #[test]
    fn wfi_in_guest_and_interrupt_injection() {
        struct Sink(core::sync::atomic::AtomicU32);
        impl VirtualInterrupts for Sink {
            fn flush(&self, _: usize, _: usize, _: &mut [u64], _: &mut dyn FnMut(u32)) -> u64 {
                0
            }
            fn fold(&self, _: usize, _: &[u64], _: u64) {}
            fn inject(&self, vcpu: usize, intid: u32) -> bool {
                self.0.store(
                    u32::try_from(vcpu).expect("a test vCPU index") * 10_000 + intid,
                    core::sync::atomic::Ordering::SeqCst,
                );
                intid < 1020
            }
        }
        let mut v = vcpu(PsciConduit::Hvc);
        assert!(v.hcr().contains(Hcr::TWI));
        v.setup(Aarch64SetupConfig {
            pa_range: Some(5),
            wfi_in_guest: true,
        })
        .unwrap();
        assert!(!v.hcr().contains(Hcr::TWI));
        assert!(matches!(
            v.inject_interrupt(27),
            Err(VCpuError::Unsupported { .. })
        ));
        let sink = Arc::new(Sink(core::sync::atomic::AtomicU32::new(0)));
        let config = Aarch64CreateConfig {
            interrupts: Some(sink.clone()),
            ..Default::default()
        };
        let mut w = VCpu::new(claimed(3), 1, config).unwrap();
        w.inject_interrupt(27).unwrap();
        assert_eq!(sink.0.load(core::sync::atomic::Ordering::SeqCst), 10_027);
        assert!(matches!(
            w.inject_interrupt(1 << 40),
            Err(VCpuError::InvalidValue { .. })
        ));
        assert!(w.inject_interrupt(1023).is_err());
    }

    #[test]
    fn configuration_is_checked() {
        let mut v = vcpu(PsciConduit::Hvc);
        // The 40-bit root is two concatenated tables: 8 KiB alignment.
        assert!(matches!(
            v.set_nested_root(HostPhysAddr::from_usize(0x4008_1000)),
            Err(VCpuError::InvalidValue { .. })
        ));
        v.set_nested_root(HostPhysAddr::from_usize(0x4008_2000))
            .unwrap();
        assert_eq!(
            v.vttbr(),
            Some((u64::from(v.vmid()) << 48) | 0x4008_2000),
            "VMID in bits 63:48, the root below"
        );
        assert!(matches!(
            v.set_entry(GuestPhysAddr::from_usize(0x4000_0002)),
            Err(VCpuError::InvalidValue { .. })
        ));
        // A 40-bit IPA on a 36-bit CPU is refused; on a 48-bit one VTCR is set.
        assert!(matches!(
            v.setup(Aarch64SetupConfig {
                pa_range: Some(1),
                ..Default::default()
            }),
            Err(VCpuError::Unsupported { .. })
        ));
        v.setup(Aarch64SetupConfig {
            pa_range: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v.vtcr(), Some(ArmStage2Ipa40::vtcr(5, false).bits()));
        let mut w = Aarch64VCpu::<ArmStage2Ipa48>::new(claimed(0), 1, Default::default()).unwrap();
        assert!(
            w.setup(Aarch64SetupConfig {
                pa_range: Some(4),
                ..Default::default()
            })
            .is_err()
        );
        w.setup(Aarch64SetupConfig {
            pa_range: Some(6),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(w.mpidr(), 1);
        assert_eq!(Some(w.vmid()), vmid_of(0));
        assert_ne!(w.vmid(), 0);
        assert!(matches!(
            w.gpr(31),
            Err(VCpuError::InvalidRegister { index: 31 })
        ));
    }

    /// The default MPIDR numbers 16 vCPUs per Aff0 and never repeats (it used to
    /// be `index & 0xff`, which gave vCPU 256 the MPIDR of vCPU 0); the vCPU's CPU
    /// id is its affinity.
    #[test]
    fn default_mpidrs_are_unique_past_256_vcpus() {
        assert_eq!(default_mpidr(0), Some(0));
        assert_eq!(default_mpidr(15), Some(0xf));
        assert_eq!(default_mpidr(16), Some(0x100));
        assert_eq!(default_mpidr(256), Some(0x1000));
        assert_eq!(default_mpidr(4096), Some(0x1_0000));
        assert_eq!(default_mpidr((1 << 20) + 3), Some(0x1_0000_0003));
        assert_eq!(default_mpidr(1 << 28), None);
        let ids: std::collections::BTreeSet<u64> = (0..5000).filter_map(default_mpidr).collect();
        assert_eq!(ids.len(), 5000);
        let v = VCpu::new(claimed(0), 256, Aarch64CreateConfig::default()).unwrap();
        assert_eq!(v.cpu_id(), 0x1000);
        let w = VCpu::new(
            claimed(0),
            0,
            Aarch64CreateConfig {
                mpidr: Some(0x101),
                psci: PsciConduit::Hvc,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(w.cpu_id(), 0x101);
    }

    /// Guest-controlled syndromes and registers, pseudo-random (xorshift64), through
    /// decoding, trap handling and MMIO completion: errors are fine, panics are not,
    /// and a decoded access always has a width the syndrome allows.
    #[test]
    fn random_syndromes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for conduit in [PsciConduit::Hvc, PsciConduit::Smc] {
            let mut v = vcpu(conduit);
            for _ in 0..100_000 {
                let mut esr = next() & 0xffff_ffff;
                if next() % 2 == 0 {
                    let ec = [0x24u64, 0x20, 0x16, 0x17, 0x01, 0x18, 0x00][(next() % 7) as usize];
                    esr = (esr & 0x03ff_ffff) | (ec << 26);
                }
                for i in 0..8 {
                    let value = if next() % 4 == 0 {
                        0x8400_0000 | (next() & 0x4000_001f)
                    } else {
                        next()
                    };
                    v.set_gpr(i, value).unwrap();
                }
                let trap = decode_trap(esr, next(), next());
                match v.handle_trap(trap) {
                    Ok(Some(ExitReason::NestedPageFault(f))) => {
                        if let Ok(a) = v.decode_mmio(&f, &NoMem) {
                            assert!(a.insn_len == 4 || a.insn_len == 2);
                            v.complete_mmio(&a, Some(next())).unwrap();
                        }
                    }
                    Ok(Some(ExitReason::Call(c))) => {
                        v.complete_call(&c, FirmwareReply::Value(next())).unwrap();
                    }
                    Ok(Some(ExitReason::SysReg(a))) => {
                        v.complete_sysreg(&a, Some(next())).unwrap();
                    }
                    _ => {}
                }
            }
        }
    }

    struct NoMem;
    impl GuestMemory for NoMem {
        fn read(&self, gpa: GuestPhysAddr, _: &mut [u8]) -> Result<(), addrspace::Error> {
            Err(addrspace::Error::NotMapped { gpa })
        }
    }
}
