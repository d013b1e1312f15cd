//! [`Aarch64VCpu`]: an EL1 vCPU under EL2 with stage-2 translation, implementing
//! [`vcpu_api::ArchVCpu`]. Trap handling (which exits become [`ExitReason`]s, which
//! are answered here, such as PSCI_VERSION) is plain code over the decoded [`Trap`],
//! tested on the host; only entering the guest and switching system registers need
//! the hardware.

use core::marker::PhantomData;

use addrspace::{AccessKind, ArmStage2, GuestPhysAddr, HostPhysAddr, NestedFormat, PAGE_SIZE};
use vcpu_api::{
    ArchVCpu, ExitReason, GuestMemory, MmioAccess, MmioDecodeError, MmioOp, VCpuError, VCpuResult,
};

use crate::context;
use crate::context::{El1Regs, TrapFrame};
use crate::cpu::{pa_bits, pa_range};
use crate::entry::{self, HwExit};
use crate::exit::{DataAbort, FaultKind, Trap};
use crate::firmware::{self as psci, PsciCall, PsciConduit, PsciError};
use crate::mmio::{mmio_access, xreg};
use crate::regs::{Hcr, MPIDR_AFFINITY_MASK, MPIDR_RES1, SPSR_EL1H_DAIF_MASKED};
use crate::tlb::{flush_all, flush_local, vmid_of};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aarch64CreateConfig {
    /// The MPIDR affinity the guest sees (VMPIDR_EL2) and names in PSCI CPU_ON;
    /// `None` puts the vCPU id in Aff0.
    pub mpidr: Option<u64>,
    /// The instruction the guest uses for PSCI calls. PSCI function ids arriving
    /// through the other instruction are not PSCI: through HVC they are
    /// [`ExitReason::Hypercall`]s (the VM layer answers unknown ones with
    /// SMCCC NOT_SUPPORTED), through SMC they get NOT_SUPPORTED here.
    pub psci: PsciConduit,
}

/// Setup parameters of an [`Aarch64VCpu`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aarch64SetupConfig {
    /// ID_AA64MMFR0_EL1.PARange to size VTCR_EL2.PS with; `None` reads the CPU's.
    pub pa_range: Option<u8>,
}

/// The exit value [`ExitReason::ExternalInterrupt`] carries: this HAL does not own
/// the interrupt controller, so the board acknowledges the interrupt itself.
pub const IRQ_NOT_ACKNOWLEDGED: u64 = u64::MAX;

/// The last data abort, kept for [`ArchVCpu::decode_mmio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LastAbort {
    ipa: GuestPhysAddr,
    abort: DataAbort,
    insn_len: u8,
}

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
    last_abort: Option<LastAbort>,
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

    /// Acts on one decoded trap: `Ok(None)` when it was answered here and the guest
    /// resumes (PSCI_VERSION, an unserved SMC, WFE), `Ok(Some(exit))` for the VM
    /// layer. Every instruction that is not an MMIO access has been stepped over by
    /// the time the exit is returned (HVC by the hardware, SMC, WFI and MSR/MRS
    /// here); a data abort is stepped over by [`ArchVCpu::complete_mmio`].
    pub(crate) fn handle_trap(&mut self, trap: Trap) -> VCpuResult<Option<ExitReason>> {
        self.last_abort = None;
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
                self.last_abort = Some(LastAbort {
                    ipa,
                    abort,
                    insn_len,
                });
                // A fault on the guest's own table walk is a read of its table.
                let access = if abort.write && !abort.s1ptw && !abort.cache_maintenance {
                    AccessKind::Write
                } else {
                    AccessKind::Read
                };
                Ok(Some(ExitReason::NestedPageFault { gpa: ipa, access }))
            }
            Trap::InstrAbort { ipa, abort } => {
                if !stage2_fault(abort.status.kind) {
                    return Err(VCpuError::InvalidValue {
                        what: "instruction abort status (IFSC) from EL1",
                        value: u64::from(abort.status.code),
                    });
                }
                let access = if abort.s1ptw {
                    AccessKind::Read
                } else {
                    AccessKind::Execute
                };
                Ok(Some(ExitReason::NestedPageFault { gpa: ipa, access }))
            }
            Trap::Hvc { .. } => {
                let x = &self.frame.x;
                if self.psci == PsciConduit::Hvc
                    && let Some(call) = psci::decode([x[0], x[1], x[2], x[3]])
                {
                    return Ok(self.psci_call(call));
                }
                Ok(Some(ExitReason::Hypercall {
                    nr: x[0],
                    args: [x[1], x[2], x[3], x[4], x[5], x[6]],
                }))
            }
            Trap::Smc { .. } => {
                // A trapped SMC returns to the SMC itself (Arm ARM D1.3.2.1
                // "preferred exception return address"): step over it.
                self.step(4);
                let x = &self.frame.x;
                if self.psci == PsciConduit::Smc
                    && let Some(call) = psci::decode([x[0], x[1], x[2], x[3]])
                {
                    return Ok(self.psci_call(call));
                }
                self.frame.x[0] = psci::SMCCC_NOT_SUPPORTED;
                Ok(None)
            }
            Trap::Wfi => {
                self.step(4);
                Ok(Some(ExitReason::Halt))
            }
            Trap::Wfe => {
                self.step(4);
                Ok(None)
            }
            Trap::SysReg(access) => {
                self.step(4);
                if access.read {
                    Ok(Some(ExitReason::SysRegRead {
                        addr: access.addr,
                        reg: usize::from(access.reg),
                    }))
                } else {
                    Ok(Some(ExitReason::SysRegWrite {
                        addr: access.addr,
                        value: self.reg(access.reg),
                    }))
                }
            }
            Trap::Other(esr) => Err(VCpuError::InvalidValue {
                what: "ESR_EL2 of an unhandled trap from EL1",
                value: esr.0,
            }),
        }
    }

    /// Serves or forwards a PSCI call (the calling instruction is already stepped
    /// over).
    fn psci_call(&mut self, call: PsciCall) -> Option<ExitReason> {
        let answer = match call {
            PsciCall::Version => psci::VERSION_1_0,
            PsciCall::Features { function } => psci::features(function),
            PsciCall::MigrateInfoType => psci::MIGRATE_NOT_REQUIRED,
            PsciCall::AffinityInfo { .. } | PsciCall::Unsupported { .. } => {
                PsciError::NotSupported.to_x0()
            }
            PsciCall::CpuOn {
                target,
                entry,
                context,
            } => {
                return Some(ExitReason::CpuUp {
                    target_cpu: target & MPIDR_AFFINITY_MASK,
                    entry_point: GuestPhysAddr::from_usize(entry as usize),
                    arg: context,
                });
            }
            PsciCall::CpuOff => return Some(ExitReason::CpuDown { state: 0 }),
            PsciCall::SystemOff => return Some(ExitReason::SystemShutdown),
            PsciCall::SystemReset => return Some(ExitReason::SystemReset),
        };
        self.frame.x[0] = answer;
        None
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
        context::bind(&self.el1, self.hcr.bits(), vtcr, vttbr, self.vmpidr)
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

    fn new(vm_id: usize, vcpu_id: usize, config: Self::CreateConfig) -> VCpuResult<Self> {
        let affinity = config.mpidr.unwrap_or(vcpu_id as u64 & 0xff);
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
            vmid: vmid_of(vm_id),
            psci: config.psci,
            vtcr: None,
            vttbr: None,
            entry: None,
            hcr: Hcr::GUEST,
            last_abort: None,
            bound: false,
            reload_el1: false,
            flush_on_bind: true,
            _format: PhantomData,
        })
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
        self.last_abort = None;
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
        Ok(())
    }

    fn bind(&mut self) -> VCpuResult {
        if self.bound {
            return Err(VCpuError::Busy);
        }
        self.load()?;
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
            let trap = entry::enter(&mut self.frame)?;
            let trap = match trap {
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

    fn set_return_value(&mut self, value: u64) {
        self.frame.x[0] = value;
    }

    /// PSCI CPU_ON's context id goes to the started CPU's x0 (DEN0022 §5.6).
    fn set_start_arg(&mut self, arg: u64) -> VCpuResult {
        self.frame.x[0] = arg;
        Ok(())
    }

    fn inject_interrupt(&mut self, _vector: usize) -> VCpuResult {
        // A virtual IRQ needs the GIC's virtual interface (list registers), which
        // this HAL does not drive yet.
        Err(VCpuError::Unsupported {
            feature: "virtual interrupt injection (GIC virtual CPU interface)",
        })
    }

    fn invalidate_guest_tlb(&mut self) {
        if self.bound {
            flush_local(self.vmid);
        } else {
            self.flush_on_bind = true;
        }
    }

    fn decode_mmio(
        &mut self,
        gpa: GuestPhysAddr,
        _access: AccessKind,
        _mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        let last = self.last_abort.ok_or(MmioDecodeError::NotAFault)?;
        if last.ipa != gpa {
            return Err(MmioDecodeError::NotAFault);
        }
        mmio_access(
            last.ipa,
            &last.abort,
            last.insn_len,
            &self.frame.x,
            self.frame.elr,
        )
    }

    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult {
        if let (MmioOp::Read { reg, .. }, Some(raw)) = (access.op, read_value) {
            if reg > 31 {
                return Err(VCpuError::InvalidRegister { index: reg });
            }
            // Register 31 is XZR here: it reads as zero and `set_reg` drops the write.
            let index = reg as u8;
            self.set_reg(index, access.load_result(self.reg(index), raw));
        }
        self.step(access.insn_len);
        self.last_abort = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use addrspace::{ArmStage2Ipa40, ArmStage2Ipa48};
    use vcpu_api::{AccessWidth, SysRegAddr};

    use super::*;
    use crate::exit::decode_trap;

    type VCpu = Aarch64VCpu<ArmStage2Ipa40>;

    fn vcpu(psci: PsciConduit) -> VCpu {
        let mut v = VCpu::new(3, 0, Aarch64CreateConfig { mpidr: None, psci }).unwrap();
        v.set_entry(GuestPhysAddr::from_usize(0x4000_0000)).unwrap();
        v
    }

    /// ESR_EL2 of `hvc #0` and `smc #0` (EC 0x16 / 0x17 with IL).
    const HVC0: u64 = 0x5a00_0000;
    const SMC0: u64 = 0x5e00_0000;

    fn trap(v: &mut VCpu, esr: u64, far: u64, hpfar: u64) -> Option<ExitReason> {
        v.handle_trap(decode_trap(esr, far, hpfar)).unwrap()
    }

    #[test]
    fn hypercall_passes_x0_to_x6() {
        let mut v = vcpu(PsciConduit::Smc);
        for i in 0..7 {
            v.set_gpr(i, 0xc600_0002 + i as u64 * 0x10).unwrap();
        }
        let pc = v.pc();
        assert_eq!(
            trap(&mut v, HVC0, 0, 0),
            Some(ExitReason::Hypercall {
                nr: 0xc600_0002,
                args: [
                    0xc600_0012,
                    0xc600_0022,
                    0xc600_0032,
                    0xc600_0042,
                    0xc600_0052,
                    0xc600_0062
                ]
            })
        );
        // HVC's return address is already the next instruction.
        assert_eq!(v.pc(), pc);
        v.set_return_value(30);
        assert_eq!(v.gpr(0), Ok(30));
        assert_eq!(v.pc(), pc);
    }

    #[test]
    fn psci_through_the_configured_conduit() {
        // SMC conduit: CPU_ON by SMC is a CpuUp, stepped past the SMC.
        let mut v = vcpu(PsciConduit::Smc);
        v.set_gpr(0, u64::from(psci::CPU_ON_64)).unwrap();
        v.set_gpr(1, 1).unwrap();
        v.set_gpr(2, 0x4000_2000).unwrap();
        v.set_gpr(3, 0x5ec0_0001).unwrap();
        let pc = v.pc();
        assert_eq!(
            trap(&mut v, SMC0, 0, 0),
            Some(ExitReason::CpuUp {
                target_cpu: 1,
                entry_point: GuestPhysAddr::from_usize(0x4000_2000),
                arg: 0x5ec0_0001
            })
        );
        assert_eq!(v.pc(), pc + 4);
        // The same call by HVC is not PSCI here: it goes to the VM layer as is.
        v.set_gpr(0, u64::from(psci::PSCI_VERSION)).unwrap();
        assert!(matches!(
            trap(&mut v, HVC0, 0, 0),
            Some(ExitReason::Hypercall {
                nr: 0x8400_0000,
                ..
            })
        ));
        // PSCI_VERSION by SMC is answered without an exit.
        assert_eq!(trap(&mut v, SMC0, 0, 0), None);
        assert_eq!(v.gpr(0), Ok(psci::VERSION_1_0));
    }

    #[test]
    fn psci_power_calls_by_hvc() {
        let mut v = vcpu(PsciConduit::Hvc);
        for (id, exit) in [
            (psci::CPU_OFF, ExitReason::CpuDown { state: 0 }),
            (psci::SYSTEM_OFF, ExitReason::SystemShutdown),
            (psci::SYSTEM_RESET, ExitReason::SystemReset),
        ] {
            v.set_gpr(0, u64::from(id)).unwrap();
            assert_eq!(trap(&mut v, HVC0, 0, 0), Some(exit), "{id:#x}");
        }
        v.set_gpr(0, u64::from(psci::PSCI_FEATURES)).unwrap();
        v.set_gpr(1, u64::from(psci::CPU_SUSPEND)).unwrap();
        assert_eq!(trap(&mut v, HVC0, 0, 0), None);
        assert_eq!(v.gpr(0), Ok(PsciError::NotSupported.to_x0()));
        // An SMC when PSCI goes by HVC: SMCCC NOT_SUPPORTED, stepped over.
        let pc = v.pc();
        v.set_gpr(0, u64::from(psci::SYSTEM_OFF)).unwrap();
        assert_eq!(trap(&mut v, SMC0, 0, 0), None);
        assert_eq!(v.gpr(0), Ok(u64::MAX));
        assert_eq!(v.pc(), pc + 4);
    }

    /// `str w1, [x0]` (w1 = 0x1234_5678_9abc_def0 in x1) to an MMIO IPA: ISV, SAS
    /// 0b10, SRT 1, WnR, translation fault level 3 (ESR 0x93810047).
    #[test]
    fn mmio_store_takes_the_register_cut_to_width() {
        let mut v = vcpu(PsciConduit::Hvc);
        v.set_gpr(1, 0x1234_5678_9abc_def0).unwrap();
        let exit = trap(&mut v, 0x9381_0047, 0x0b00_0008, 0xb_0000);
        let gpa = GuestPhysAddr::from_usize(0x0b00_0008);
        assert_eq!(
            exit,
            Some(ExitReason::NestedPageFault {
                gpa,
                access: AccessKind::Write
            })
        );
        let access = v.decode_mmio(gpa, AccessKind::Write, &NoMem).unwrap();
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
        let gpa = GuestPhysAddr::from_usize(0x0b00_0018);
        v.set_gpr(2, 0x5555_5555_5555_5555).unwrap();
        let iss_ldrsb_w2 = (1 << 24) | (1 << 21) | (2 << 16) | 0b00_0111;
        trap(&mut v, 0x9200_0000 | iss_ldrsb_w2, 0x0b00_0018, 0xb_0000);
        let a = v.decode_mmio(gpa, AccessKind::Read, &NoMem).unwrap();
        v.complete_mmio(&a, Some(0xffff_ffff_ffff_fffe)).unwrap();
        assert_eq!(v.gpr(2), Ok(0xffff_fffe));

        let iss_ldrsh_x3 = (1 << 24) | (1 << 22) | (1 << 21) | (3 << 16) | (1 << 15) | 0b00_0111;
        trap(&mut v, 0x9200_0000 | iss_ldrsh_x3, 0x0b00_0018, 0xb_0000);
        let a = v.decode_mmio(gpa, AccessKind::Read, &NoMem).unwrap();
        v.complete_mmio(&a, Some(0xfffe)).unwrap();
        assert_eq!(v.gpr(3), Ok(u64::MAX - 1));
    }

    /// A load into XZR (SRT 31) is emulated and discarded; a store of XZR stores 0.
    #[test]
    fn mmio_xzr() {
        let mut v = vcpu(PsciConduit::Hvc);
        let gpa = GuestPhysAddr::from_usize(0x0b00_0000);
        let before = *v.frame();
        trap(&mut v, 0x93c0_0007 | (31 << 16), 0x0b00_0000, 0xb_0000);
        let a = v.decode_mmio(gpa, AccessKind::Read, &NoMem).unwrap();
        v.complete_mmio(&a, Some(7)).unwrap();
        assert_eq!(v.frame().x, before.x);
        trap(&mut v, 0x93c0_0047 | (31 << 16), 0x0b00_0000, 0xb_0000);
        let a = v.decode_mmio(gpa, AccessKind::Write, &NoMem).unwrap();
        assert_eq!(a.op, MmioOp::Write { value: 0 });
    }

    /// `ldp x0, x1, [x2]` to MMIO: no syndrome (ISV = 0). The error names the PC; the
    /// guest is not resumed.
    #[test]
    fn mmio_without_syndrome_is_an_error_with_the_pc() {
        let mut v = vcpu(PsciConduit::Hvc);
        let gpa = GuestPhysAddr::from_usize(0x0b00_0000);
        trap(&mut v, 0x9200_0007, 0x0b00_0000, 0xb_0000);
        assert_eq!(
            v.decode_mmio(gpa, AccessKind::Read, &NoMem),
            Err(MmioDecodeError::NoSyndrome { pc: 0x4000_0000 })
        );
        // Another exit in between: no fault to decode any more.
        trap(&mut v, HVC0, 0, 0);
        assert_eq!(
            v.decode_mmio(gpa, AccessKind::Read, &NoMem),
            Err(MmioDecodeError::NotAFault)
        );
    }

    #[test]
    fn walk_faults_are_reads_and_fetch_faults_execute() {
        let mut v = vcpu(PsciConduit::Hvc);
        // S1PTW with WnR (a hardware AF update of the guest's table): a read.
        assert_eq!(
            trap(&mut v, 0x9200_00c6, 0x1234, 0x50_0000),
            Some(ExitReason::NestedPageFault {
                gpa: GuestPhysAddr::from_usize(0x5000_0234),
                access: AccessKind::Read
            })
        );
        // Instruction abort, translation fault level 2 (EC 0x20, IFSC 0b000110).
        assert_eq!(
            trap(&mut v, 0x8200_0006, 0x6000_0000, 0x60_0000),
            Some(ExitReason::NestedPageFault {
                gpa: GuestPhysAddr::from_usize(0x6000_0000),
                access: AccessKind::Execute
            })
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
        assert_eq!(
            trap(&mut v, esr, 0, 0),
            Some(ExitReason::SysRegWrite {
                addr: SysRegAddr(mdscr.0),
                value: 0xabc
            })
        );
        assert_eq!(v.pc(), pc + 12);
        assert!(matches!(
            v.handle_trap(decode_trap(0xf200_0000, 0, 0)),
            Err(VCpuError::InvalidValue {
                value: 0xf200_0000,
                ..
            })
        ));
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
        assert_eq!(v.vttbr(), Some(0x0004_0000_4008_2000));
        assert!(matches!(
            v.set_entry(GuestPhysAddr::from_usize(0x4000_0002)),
            Err(VCpuError::InvalidValue { .. })
        ));
        // A 40-bit IPA on a 36-bit CPU is refused; on a 48-bit one VTCR is set.
        assert!(matches!(
            v.setup(Aarch64SetupConfig { pa_range: Some(1) }),
            Err(VCpuError::Unsupported { .. })
        ));
        v.setup(Aarch64SetupConfig { pa_range: Some(5) }).unwrap();
        assert_eq!(v.vtcr(), Some(ArmStage2Ipa40::vtcr(5, false).bits()));
        let mut w = Aarch64VCpu::<ArmStage2Ipa48>::new(0, 1, Default::default()).unwrap();
        assert!(w.setup(Aarch64SetupConfig { pa_range: Some(4) }).is_err());
        w.setup(Aarch64SetupConfig { pa_range: Some(6) }).unwrap();
        assert_eq!(w.mpidr(), 1);
        assert_eq!(w.vmid(), 1);
        assert!(matches!(
            w.gpr(31),
            Err(VCpuError::InvalidRegister { index: 31 })
        ));
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
                if let Ok(Some(ExitReason::NestedPageFault { gpa, access })) = v.handle_trap(trap)
                    && let Ok(a) = v.decode_mmio(gpa, access, &NoMem)
                {
                    assert!(a.insn_len == 4 || a.insn_len == 2);
                    v.complete_mmio(&a, Some(next())).unwrap();
                }
            }
        }
    }

    struct NoMem;
    impl GuestMemory for NoMem {
        fn read(&self, _: GuestPhysAddr, _: &mut [u8]) -> bool {
            false
        }
    }
}
