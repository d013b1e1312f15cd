//! The RISC-V vCPU: [`Riscv64VCpu`] and the handling of the traps a guest in VS-mode
//! takes to HS-mode: guest-page faults (with what `htinst` or the instruction fetched
//! at the exit says about the access), SBI calls (decoded, answered by the VM layer),
//! WFI, kicks; anything else is delivered back to the guest.
//!
//! Everything that touches the hart goes through [`HartOps`], so the trap handling is
//! tested on the host with a model of the hart; on riscv64 `HwOps` is the real one.

use core::marker::PhantomData;

use addrspace::{AccessKind, GuestPhysAddr, HostPhysAddr, NestedFormat, RiscvGStage};
use vcpu_api::{
    ArchVCpu, Conduit, ExitReason, FaultInsn, FetchError, FirmwareCall, FirmwareReply, GuestCall,
    GuestMemory, InsnBytes, MmioAccess, MmioDecodeError, MmioOp, NestedFault, Service,
    SysRegAccess, VCpuError, VCpuResult,
};
use vcpu_api::{gpa_of, usize_of};

use crate::context::{GuestRegs, VsCsr, VsCsrs};
use crate::exit::{Trap, exception, interrupt};
use crate::firmware::{self, error as sbi_err};
use crate::hart::HartOps;
use crate::mmio::{self, Htinst};
use crate::regs::{hstatus, sstatus};

/// A G-stage format: Sv39x4 or Sv48x4, and how `hgatp` names it. Implemented by
/// `addrspace`'s [`RiscvGStage`] formats, whose own `MODE` and `hgatp` it forwards to.
pub trait GStage: NestedFormat {
    /// `hgatp.MODE`.
    const MODE: u64;
    /// `hgatp` for a 16 KiB-aligned root and a VMID.
    fn hgatp(root: HostPhysAddr, vmid: u16) -> u64;
}

impl<const LEVELS: usize> GStage for RiscvGStage<LEVELS> {
    const MODE: u64 = RiscvGStage::<LEVELS>::MODE;
    fn hgatp(root: HostPhysAddr, vmid: u16) -> u64 {
        RiscvGStage::<LEVELS>::hgatp(root, vmid)
    }
}

/// Creation parameters of a [`Riscv64VCpu`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Riscv64CreateConfig {
    /// The hart id the guest sees for this vCPU (a0 at start, HSM targets); `None`
    /// means the vCPU index.
    pub hart_id: Option<u64>,
}

/// Setup parameters of a [`Riscv64VCpu`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Riscv64SetupConfig {
    /// Make the guest's WFI trap (`hstatus.VTW`) and exit with [`ExitReason::Halt`],
    /// for a hypervisor that shares the hart among vCPUs. Off by default: WFI runs in
    /// the guest and waits there (no exit) until the vCPU's timer, an injected
    /// interrupt or a kick is pending.
    pub trap_wfi: bool,
    /// When the hart gives a transformed instruction in `htinst`, also fetch and
    /// decode the instruction itself and count disagreements
    /// ([`Riscv64VCpu::decode_stats`]): a self-check of both decoders.
    pub cross_check_mmio_decode: bool,
}

/// How the instructions of guest-page faults were found so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Decoded from the transformed instruction in `htinst`.
    pub from_htinst: u64,
    /// Fetched with HLVX at the exit.
    pub fetched: u64,
    /// Left to the decoder to read through guest memory (HLVX faulted with the
    /// guest's translation off).
    pub fetch_deferred: u64,
    /// `htinst` decodes also checked against the fetched instruction.
    pub cross_checked: u64,
    /// Cross-checks that disagreed (should be zero).
    pub mismatches: u64,
}

/// WFI.
const WFI: u64 = 0x1050_0073;

/// Why a load or store is not emulated when the fault said the other direction (an
/// AMO reported as a store fault, a decoder disagreement).
const NOT_THE_FAULT: &str = "not the access the fault reported";

/// A RISC-V vCPU in VS-mode whose guest-physical memory is translated by the G-stage
/// format `F` ([`Sv39x4`](addrspace::Sv39x4) or [`Sv48x4`](addrspace::Sv48x4)).
///
/// Every SBI call of the guest becomes an [`ExitReason::Call`]: the VM layer decides
/// and answers it ([`ArchVCpu::complete_call`]); this vCPU carries out what a granted
/// call asks of the hart itself (the timer with Sstc, remote fences).
pub struct Riscv64VCpu<F: GStage> {
    regs: GuestRegs,
    vs: VsCsrs,
    vm_id: usize,
    vcpu_id: usize,
    hart_id: u64,
    vmid: u16,
    hgatp: u64,
    entry_set: bool,
    setup_done: bool,
    bound: bool,
    /// The VS CSRs in `vs` must be loaded before the next entry (a reset by
    /// `set_entry`, or the vCPU moved).
    vs_reload: bool,
    /// Flush the VMID's translations on this hart before the next entry.
    flush_pending: bool,
    /// Virtual interrupts to raise in `hvip` at the next entry.
    inject: u64,
    config: Riscv64SetupConfig,
    stats: DecodeStats,
    _format: PhantomData<F>,
}

impl<F: GStage> core::fmt::Debug for Riscv64VCpu<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Riscv64VCpu")
            .field("format", &F::NAME)
            .field("vm_id", &self.vm_id)
            .field("vcpu_id", &self.vcpu_id)
            .field("hart_id", &self.hart_id)
            .field("pc", &format_args!("{:#x}", self.regs.sepc))
            .field("hgatp", &format_args!("{:#x}", self.hgatp))
            .finish_non_exhaustive()
    }
}

/// What handling one trap decided.
enum Next {
    /// Handled here: enter the guest again.
    Resume,
    /// The VM layer must act.
    Exit(ExitReason),
}

/// The hart operations of this build: the real hart on riscv64, none elsewhere.
fn hart_ops() -> impl HartOps {
    #[cfg(target_arch = "riscv64")]
    {
        crate::hart::HwOps
    }
    #[cfg(not(target_arch = "riscv64"))]
    {
        crate::hart::NoHart
    }
}

impl<F: GStage> Riscv64VCpu<F> {
    /// The VMID this vCPU's translations are tagged with.
    pub fn vmid(&self) -> u16 {
        self.vmid
    }

    /// The `hgatp` value it runs with (0 before [`ArchVCpu::set_nested_root`]).
    pub fn hgatp(&self) -> u64 {
        self.hgatp
    }

    /// The guest hart id.
    pub fn hart_id(&self) -> u64 {
        self.hart_id
    }

    /// How the instructions of guest-page faults were found.
    pub fn decode_stats(&self) -> DecodeStats {
        self.stats
    }

    /// The VS CSRs as last saved (current after [`ArchVCpu::unbind`]).
    pub fn vs_csrs(&self) -> VsCsrs {
        self.vs
    }

    /// Writes an ECALL's result and steps over it (ECALL is 4 bytes).
    fn sbi_return(&mut self, error: i64, value: u64, legacy: bool) {
        if legacy {
            // Legacy calls return one value in a0.
            self.regs.x[10] = if error != 0 { error as u64 } else { value };
        } else {
            self.regs.x[10] = error as u64;
            self.regs.x[11] = value;
        }
        self.regs.sepc = self.regs.sepc.wrapping_add(4);
    }

    fn handle_trap(&mut self, ops: &mut dyn HartOps) -> Next {
        match self.regs.trap().decode() {
            Trap::GuestPageFault {
                gpa,
                access,
                gva,
                htinst,
            } => {
                // htval = 0 is allowed by the specification; with the guest's
                // translation off the guest-virtual address is the GPA.
                let gpa = gpa.unwrap_or_else(|| {
                    let bare = ops.guest_translation_off();
                    log::warn!(
                        "vCPU {}: guest-page fault at gva {gva:#x} without htval (vsatp {})",
                        self.vcpu_id,
                        if bare {
                            "bare: using the gva"
                        } else {
                            "on: GPA unknown"
                        }
                    );
                    GuestPhysAddr::from_usize(if bare { usize_of(gva) } else { usize::MAX })
                });
                let insn = self.fault_insn(ops, gpa, access, htinst);
                Next::Exit(ExitReason::NestedPageFault(NestedFault {
                    gpa,
                    access,
                    insn,
                }))
            }
            Trap::VirtualInstruction { insn } => self.virtual_instruction(insn, ops),
            Trap::SbiCall => {
                let x = &self.regs.x;
                let args = [x[10], x[11], x[12], x[13], x[14], x[15]];
                Next::Exit(ExitReason::Call(firmware::decode_call(x[17], x[16], args)))
            }
            Trap::Interrupt {
                code: interrupt::SSI,
            } => {
                ops.clear_kick();
                Next::Exit(ExitReason::Kicked)
            }
            Trap::Interrupt { code } => Next::Exit(ExitReason::ExternalInterrupt { vector: code }),
            Trap::Exception { code, stval } => {
                log::warn!(
                    "vCPU {}: {} (stval {stval:#x}) at pc {:#x}: redirected to the guest",
                    self.vcpu_id,
                    crate::exit::exception_name(code),
                    self.regs.sepc
                );
                self.redirect(code, stval, ops);
                Next::Resume
            }
        }
    }

    /// What a guest-page fault at `gpa` says about its instruction, worked out at the
    /// exit: the transformed load or store in `htinst` (a store's value read now), or
    /// the instruction fetched with HLVX, or (HLVX faulted with the guest's
    /// translation off) the instruction left to be read through guest memory.
    fn fault_insn(
        &mut self,
        ops: &mut dyn HartOps,
        gpa: GuestPhysAddr,
        access: AccessKind,
        htinst: u64,
    ) -> FaultInsn {
        let pc = self.regs.sepc;
        if access == AccessKind::Execute {
            // Instructions cannot be fetched from an emulated device.
            return FaultInsn::Refused(MmioDecodeError::Execute { pc });
        }
        let unsupported = |why| {
            FaultInsn::Refused(MmioDecodeError::Unsupported {
                pc,
                insn: htinst,
                why,
            })
        };
        match mmio::decode_htinst(htinst) {
            Htinst::Transformed(m) => {
                self.stats.from_htinst += 1;
                if self.config.cross_check_mmio_decode {
                    self.stats.cross_checked += 1;
                    let fetched = fetch(ops, pc).and_then(|(bits, _)| mmio::decode(bits).ok());
                    if fetched != Some(m) {
                        self.stats.mismatches += 1;
                        log::error!(
                            "vCPU {}: htinst {htinst:#x} decodes to {m:?}, the instruction at pc {pc:#x} to {fetched:?}",
                            self.vcpu_id
                        );
                    }
                }
                // The instruction does not match the fault (an AMO reported as a
                // store fault): refuse rather than guess.
                mmio::mmio_insn(&m, access, &self.regs.x)
                    .map_or(unsupported(NOT_THE_FAULT), FaultInsn::Decoded)
            }
            Htinst::TransformedOther(e) => {
                log::warn!("vCPU {}: MMIO at {gpa:?}, pc {pc:#x}: {e}", self.vcpu_id);
                unsupported(e.why())
            }
            Htinst::PageTableWalk { pseudo } => {
                log::warn!(
                    "vCPU {}: the guest's own page-table walk touched {gpa:?} (htinst {pseudo:#x})",
                    self.vcpu_id
                );
                FaultInsn::Refused(MmioDecodeError::TableWalk { pc })
            }
            Htinst::None | Htinst::Unknown(_) => match fetch(ops, pc) {
                Some((bits, len)) => {
                    self.stats.fetched += 1;
                    FaultInsn::Bytes(InsnBytes::new(&bits.to_le_bytes()[..usize::from(len)]))
                }
                None if ops.guest_translation_off() => {
                    self.stats.fetch_deferred += 1;
                    FaultInsn::Fetch
                }
                None => FaultInsn::Refused(MmioDecodeError::Fetch {
                    pc,
                    error: FetchError::GuestUnmapped { va: pc },
                }),
            },
        }
    }

    /// Delivers exception `code` to the guest's own trap handler, as the hart would
    /// have if it were delegated (privileged spec 8.6.4: vsepc, vscause, vstval,
    /// vsstatus.SPP/SPIE/SIE, then the PC from vstvec).
    fn redirect(&mut self, code: u64, tval: u64, ops: &mut dyn HartOps) {
        let mut vsstatus = ops.vs_csr(VsCsr::Vsstatus);
        vsstatus &= !sstatus::SPP;
        vsstatus |= self.regs.sstatus & sstatus::SPP;
        vsstatus &= !sstatus::SPIE;
        if vsstatus & sstatus::SIE != 0 {
            vsstatus |= sstatus::SPIE;
        }
        vsstatus &= !sstatus::SIE;
        ops.set_vs_csr(VsCsr::Vsstatus, vsstatus);
        ops.set_vs_csr(VsCsr::Vscause, code);
        ops.set_vs_csr(VsCsr::Vstval, tval);
        ops.set_vs_csr(VsCsr::Vsepc, self.regs.sepc);
        self.regs.sepc = ops.vs_csr(VsCsr::Vstvec) & !3;
        // The handler runs in VS-mode.
        self.regs.sstatus |= sstatus::SPP;
    }

    fn virtual_instruction(&mut self, insn: u64, ops: &mut dyn HartOps) -> Next {
        let insn = if insn != 0 {
            insn
        } else {
            // The hart did not report the bits: fetch them.
            fetch(ops, self.regs.sepc).map_or(0, |(bits, _)| u64::from(bits))
        };
        if insn == WFI {
            self.regs.sepc = self.regs.sepc.wrapping_add(4);
            return Next::Exit(ExitReason::Halt);
        }
        log::warn!(
            "vCPU {}: virtual instruction {insn:#x} at pc {:#x}: illegal instruction for the guest",
            self.vcpu_id,
            self.regs.sepc
        );
        self.redirect(exception::ILLEGAL_INSN, insn, ops);
        Next::Resume
    }

    /// Decodes the access of `fault` (see [`ArchVCpu::decode_mmio`]), reading the
    /// instruction through `mem` when the exit left that to the decoder: the guest's
    /// translation was off, so the PC is a guest-physical address.
    fn decode_fault(
        &self,
        fault: &NestedFault,
        mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        let pc = self.regs.sepc;
        let bits = match fault.insn {
            FaultInsn::Decoded(insn) => return Ok(insn.at(fault.gpa)),
            FaultInsn::Refused(e) => return Err(e),
            FaultInsn::Bytes(b) => {
                let mut raw = [0u8; 4];
                let n = b.as_slice().len().min(4);
                raw[..n].copy_from_slice(&b.as_slice()[..n]);
                u32::from_le_bytes(raw)
            }
            FaultInsn::Fetch => {
                let half = |at: u64| {
                    let gpa = gpa_of(at);
                    let mut b = [0u8; 2];
                    mem.read(gpa, &mut b)
                        .map(|()| u16::from_le_bytes(b))
                        .map_err(|error| MmioDecodeError::Fetch {
                            pc,
                            error: FetchError::Memory { gpa, error },
                        })
                };
                let low = half(pc)?;
                if mmio::insn_len(low) == 2 {
                    u32::from(low)
                } else {
                    u32::from(low) | u32::from(half(pc.wrapping_add(2))?) << 16
                }
            }
        };
        let unsupported = |why| MmioDecodeError::Unsupported {
            pc,
            insn: u64::from(bits),
            why,
        };
        let m = mmio::decode(bits).map_err(|e| {
            log::warn!(
                "vCPU {}: MMIO at {:?}, pc {pc:#x}: {e}",
                self.vcpu_id,
                fault.gpa
            );
            unsupported(e.why())
        })?;
        mmio::mmio_insn(&m, fault.access, &self.regs.x)
            .map(|insn| insn.at(fault.gpa))
            .ok_or(unsupported(NOT_THE_FAULT))
    }

    /// Answers `call` with `reply` (see [`ArchVCpu::complete_call`]), carrying out a
    /// granted timer or remote fence with `ops`.
    fn complete_call_with(
        &mut self,
        ops: &mut dyn HartOps,
        call: &GuestCall,
        reply: FirmwareReply,
    ) -> VCpuResult {
        let legacy = match call.conduit {
            Conduit::Ecall => false,
            Conduit::EcallLegacy => true,
            _ => {
                return Err(VCpuError::InvalidValue {
                    what: "conduit of a call to a RISC-V vCPU",
                    value: 0,
                });
            }
        };
        let (error, value) = match (call.call, reply) {
            (FirmwareCall::SetTimer { deadline }, FirmwareReply::Value(_)) => {
                if ops.set_guest_timer(deadline) {
                    (sbi_err::SUCCESS, 0)
                } else {
                    (sbi_err::NOT_SUPPORTED, 0)
                }
            }
            (FirmwareCall::RemoteFence { fence, .. }, FirmwareReply::Value(_)) => {
                // The guest's vCPUs may have run on any hart: fence all of them (a
                // superset of the targets, which is always correct).
                (ops.remote_fence(fence), 0)
            }
            _ => firmware::encode_reply(reply).ok_or(VCpuError::InvalidValue {
                what: "firmware reply (CPUID registers) to an SBI call",
                value: 0,
            })?,
        };
        self.sbi_return(error, value, legacy);
        Ok(())
    }

    /// The `hstatus` the guest runs with (VTW only with `trap_wfi`).
    fn entry_hstatus(&self) -> u64 {
        hstatus::for_guest(self.config.trap_wfi)
    }

    fn start_state(&mut self, entry: u64) {
        self.regs.x = [0; 32];
        self.regs.sepc = entry;
        // Start in VS-mode (SPP = 1), FP state empty.
        self.regs.sstatus = sstatus::SPP;
        self.regs.hstatus = self.entry_hstatus();
        self.regs.fp_live = 0;
        self.regs.x[10] = self.hart_id;
        self.vs = VsCsrs::RESET;
        self.vs_reload = true;
        self.inject = 0;
    }
}

/// Fetches the instruction at guest-virtual `pc` with HLVX: `(bits, length)`.
fn fetch(ops: &mut dyn HartOps, pc: u64) -> Option<(u32, u8)> {
    let low = ops.fetch_half(pc)?;
    if mmio::insn_len(low) == 2 {
        return Some((u32::from(low), 2));
    }
    let high = ops.fetch_half(pc.wrapping_add(2))?;
    Some((u32::from(low) | u32::from(high) << 16, 4))
}

/// What `bind` and `run` return where there is no hart to run a guest on.
#[cfg(not(target_arch = "riscv64"))]
const NOT_RISCV64: VCpuError = VCpuError::Unsupported {
    feature: "RISC-V hypervisor extension (not a riscv64 build)",
};

impl<F: GStage> ArchVCpu for Riscv64VCpu<F> {
    type Format = F;
    type CreateConfig = Riscv64CreateConfig;
    type SetupConfig = Riscv64SetupConfig;

    fn claim_vm(vm_id: usize) -> VCpuResult {
        crate::tlb::claim_vmid(vm_id).map(|_| ())
    }

    fn release_vm(vm_id: usize) {
        crate::tlb::release_vmid(vm_id);
    }

    fn vm_tag(vm_id: usize) -> Option<u16> {
        crate::tlb::vmid_for(vm_id)
    }

    fn new(vm_id: usize, vcpu_id: usize, config: Riscv64CreateConfig) -> VCpuResult<Self> {
        let vmid = crate::tlb::vmid_for(vm_id).ok_or(VCpuError::NotConfigured {
            missing: "the VM's VMID (ArchVCpu::claim_vm)",
        })?;
        let hart_id = config.hart_id.unwrap_or(vcpu_id as u64);
        let mut vcpu = Self {
            regs: GuestRegs::new(),
            vs: VsCsrs::RESET,
            vm_id,
            vcpu_id,
            hart_id,
            vmid,
            hgatp: 0,
            entry_set: false,
            setup_done: false,
            bound: false,
            vs_reload: true,
            flush_pending: true,
            inject: 0,
            config: Riscv64SetupConfig::default(),
            stats: DecodeStats::default(),
            _format: PhantomData,
        };
        vcpu.start_state(0);
        Ok(vcpu)
    }

    fn cpu_id(&self) -> u64 {
        self.hart_id
    }

    fn set_nested_root(&mut self, root: HostPhysAddr) -> VCpuResult {
        // Section 8.5.1: the x4 root is 16 KiB and aligned to 16 KiB; PPN is 44 bits.
        if !root.as_usize().is_multiple_of(0x4000) || (root.as_usize() as u64) >> 56 != 0 {
            return Err(VCpuError::InvalidValue {
                what: "G-stage root (16 KiB-aligned, below 2^56)",
                value: root.as_usize() as u64,
            });
        }
        self.hgatp = F::hgatp(root, self.vmid);
        self.flush_pending = true;
        Ok(())
    }

    fn set_entry(&mut self, entry: GuestPhysAddr) -> VCpuResult {
        let entry = entry.as_usize() as u64;
        // IALIGN is 16 with the C extension.
        if !entry.is_multiple_of(2) {
            return Err(VCpuError::InvalidValue {
                what: "entry point (2-byte aligned)",
                value: entry,
            });
        }
        self.start_state(entry);
        self.entry_set = true;
        Ok(())
    }

    fn set_start_arg(&mut self, arg: u64) -> VCpuResult {
        // SBI HSM: a0 = hart id, a1 = opaque.
        self.regs.x[10] = self.hart_id;
        self.regs.x[11] = arg;
        Ok(())
    }

    fn setup(&mut self, config: Riscv64SetupConfig) -> VCpuResult {
        self.config = config;
        self.setup_done = true;
        Ok(())
    }

    fn bind(&mut self) -> VCpuResult {
        #[cfg(target_arch = "riscv64")]
        {
            self.bound = true;
            // The hart may hold translations of an earlier VM with this VMID, or of
            // this vCPU from before it last ran here.
            self.flush_pending = true;
            self.vs_reload = true;
            Ok(())
        }
        #[cfg(not(target_arch = "riscv64"))]
        {
            Err(NOT_RISCV64)
        }
    }

    fn unbind(&mut self) -> VCpuResult {
        #[cfg(target_arch = "riscv64")]
        if self.bound && !self.vs_reload {
            self.vs = crate::context::save_vs_csrs();
        }
        self.bound = false;
        Ok(())
    }

    fn run(&mut self) -> VCpuResult<ExitReason> {
        if self.hgatp == 0 {
            return Err(VCpuError::NotConfigured {
                missing: "nested root",
            });
        }
        if !self.entry_set {
            return Err(VCpuError::NotConfigured { missing: "entry" });
        }
        if !self.bound {
            return Err(VCpuError::NotConfigured {
                missing: "bind on this hart",
            });
        }
        #[cfg(target_arch = "riscv64")]
        {
            let mut ops = hart_ops();
            let hstatus = self.entry_hstatus();
            loop {
                crate::entry::enter(
                    &mut self.regs,
                    crate::entry::EntryState {
                        hgatp: self.hgatp,
                        load_vs: core::mem::take(&mut self.vs_reload).then_some(&self.vs),
                        flush_vmid: core::mem::take(&mut self.flush_pending).then_some(self.vmid),
                        inject: core::mem::take(&mut self.inject),
                        hstatus,
                    },
                );
                if let Next::Exit(exit) = self.handle_trap(&mut ops) {
                    return Ok(exit);
                }
            }
        }
        #[cfg(not(target_arch = "riscv64"))]
        {
            Err(NOT_RISCV64)
        }
    }

    fn gpr(&self, index: usize) -> VCpuResult<u64> {
        match index {
            0 => Ok(0),
            1..=31 => Ok(self.regs.x[index]),
            _ => Err(VCpuError::InvalidRegister { index }),
        }
    }

    fn set_gpr(&mut self, index: usize, value: u64) -> VCpuResult {
        match index {
            // x0 is hardwired to zero: writes vanish, as on the hart.
            0 => Ok(()),
            1..=31 => {
                self.regs.x[index] = value;
                Ok(())
            }
            _ => Err(VCpuError::InvalidRegister { index }),
        }
    }

    fn pc(&self) -> u64 {
        self.regs.sepc
    }

    fn inject_interrupt(&mut self, vector: usize) -> VCpuResult {
        let bit = crate::interrupt::hvip_bit(vector).ok_or(VCpuError::InvalidValue {
            what: "interrupt (1/2 software, 5/6 timer, 9/10 external)",
            value: vector as u64,
        })?;
        self.inject |= bit;
        Ok(())
    }

    fn invalidate_guest_tlb(&mut self) {
        self.flush_pending = true;
    }

    fn provides(&self, service: Service) -> bool {
        let mut ops = hart_ops();
        match service {
            Service::Timer => ops.has_guest_timer(),
            Service::RemoteFence => ops.has_remote_fence(),
            _ => false,
        }
    }

    fn decode_mmio(
        &self,
        fault: &NestedFault,
        mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        self.decode_fault(fault, mem)
    }

    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult {
        if let (MmioOp::Read { reg, .. }, Some(value)) = (access.op, read_value) {
            let old = self.gpr(reg)?;
            self.set_gpr(reg, access.load_result(old, value))?;
        }
        self.regs.sepc = self.regs.sepc.wrapping_add(u64::from(access.insn_len));
        Ok(())
    }

    fn complete_call(&mut self, call: &GuestCall, reply: FirmwareReply) -> VCpuResult {
        self.complete_call_with(&mut hart_ops(), call, reply)
    }

    /// A guest in VS-mode has no system-register access that traps to the VM layer.
    fn complete_sysreg(&mut self, access: &SysRegAccess, _: Option<u64>) -> VCpuResult {
        Err(VCpuError::InvalidValue {
            what: "system register access on a RISC-V vCPU",
            value: u64::from(access.addr.0),
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::collections::BTreeMap;
    use std::vec::Vec;

    use addrspace::{Sv39x4, Sv48x4};
    use vcpu_api::{
        AccessWidth, CpuState, FirmwareError, Hypercall, RemoteFence, low_u16, low_u32,
    };

    use super::*;
    use crate::exit::{SCAUSE_INTERRUPT, TrapInfo};
    use crate::firmware::{EID_DBCN, EID_HSM, EID_RFENCE, EID_SRST, EID_TIME};

    /// VM `vm_id`, its VMID claimed for the tests (once: they share the table and
    /// never release it).
    fn claimed(vm_id: usize) -> usize {
        let _ = crate::tlb::claim_vmid(vm_id);
        vm_id
    }

    /// A model of the hart: instruction memory for HLVX by address (the guest's
    /// translation is off, so HLVX addresses are GPAs), the VS CSRs, the timer and
    /// the fences asked for.
    #[derive(Default)]
    struct MockHart {
        code: BTreeMap<u64, u8>,
        /// Pages where HLVX faults (not executable for the guest).
        no_exec: Vec<u64>,
        vs: BTreeMap<&'static str, u64>,
        sstc: bool,
        timer: Option<u64>,
        fences: Vec<RemoteFence>,
        fence_error: i64,
        kick_cleared: bool,
    }

    impl MockHart {
        fn put(&mut self, gpa: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.code.insert(gpa + i as u64, *b);
            }
        }
        fn name(csr: VsCsr) -> &'static str {
            match csr {
                VsCsr::Vsstatus => "vsstatus",
                VsCsr::Vstvec => "vstvec",
                VsCsr::Vsepc => "vsepc",
                VsCsr::Vscause => "vscause",
                VsCsr::Vstval => "vstval",
                VsCsr::Vsatp => "vsatp",
            }
        }
    }

    impl HartOps for MockHart {
        fn fetch_half(&mut self, gva: u64) -> Option<u16> {
            if self.no_exec.contains(&(gva & !0xfff)) {
                return None;
            }
            let lo = *self.code.get(&gva)?;
            let hi = *self.code.get(&(gva + 1))?;
            Some(u16::from_le_bytes([lo, hi]))
        }
        fn vs_csr(&mut self, csr: VsCsr) -> u64 {
            self.vs.get(Self::name(csr)).copied().unwrap_or(0)
        }
        fn set_vs_csr(&mut self, csr: VsCsr, value: u64) {
            self.vs.insert(Self::name(csr), value);
        }
        fn set_guest_timer(&mut self, stime_value: u64) -> bool {
            if self.sstc {
                self.timer = Some(stime_value);
            }
            self.sstc
        }
        fn has_guest_timer(&mut self) -> bool {
            self.sstc
        }
        fn remote_fence(&mut self, fence: RemoteFence) -> i64 {
            self.fences.push(fence);
            self.fence_error
        }
        fn has_remote_fence(&mut self) -> bool {
            true
        }
        fn clear_kick(&mut self) {
            self.kick_cleared = true;
        }
    }

    /// Guest memory for the decoder, by GPA; it counts the reads.
    #[derive(Default)]
    struct Mem {
        bytes: BTreeMap<u64, u8>,
        reads: core::cell::Cell<usize>,
    }

    impl Mem {
        fn with(gpa: u64, bytes: &[u8]) -> Self {
            let m = Self::default();
            let mut map = BTreeMap::new();
            for (i, b) in bytes.iter().enumerate() {
                map.insert(gpa + i as u64, *b);
            }
            Self { bytes: map, ..m }
        }
    }

    impl GuestMemory for Mem {
        fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), addrspace::Error> {
            self.reads.set(self.reads.get() + 1);
            let base = gpa.as_usize() as u64;
            for i in 0..buf.len() {
                if !self.bytes.contains_key(&(base + i as u64)) {
                    return Err(addrspace::Error::NotMapped {
                        gpa: gpa_of(base + i as u64),
                    });
                }
            }
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.bytes[&(base + i as u64)];
            }
            Ok(())
        }
    }

    const PC: u64 = 0x8000_1000;
    const HVT: u64 = 0x0848_5654;

    fn vcpu() -> Riscv64VCpu<Sv39x4> {
        let mut v =
            Riscv64VCpu::<Sv39x4>::new(claimed(3), 0, Riscv64CreateConfig::default()).unwrap();
        v.set_entry(gpa_of(PC)).unwrap();
        v.setup(Riscv64SetupConfig {
            cross_check_mmio_decode: true,
            ..Riscv64SetupConfig::default()
        })
        .unwrap();
        v
    }

    /// Sets the trap CSRs as the hart would and handles the trap.
    fn trap(
        v: &mut Riscv64VCpu<Sv39x4>,
        hart: &mut MockHart,
        info: TrapInfo,
    ) -> Option<ExitReason> {
        v.regs.scause = info.scause;
        v.regs.stval = info.stval;
        v.regs.htval = info.htval;
        v.regs.htinst = info.htinst;
        match v.handle_trap(hart) {
            Next::Resume => None,
            Next::Exit(e) => Some(e),
        }
    }

    /// The trap CSRs of a guest-page fault (`scause`) at `gpa` with the guest's
    /// translation off: stval = the GPA, htval = GPA >> 2.
    fn guest_page_fault(scause: u64, gpa: u64, htinst: u64) -> TrapInfo {
        TrapInfo {
            scause,
            stval: gpa,
            htval: gpa >> 2,
            htinst,
        }
    }

    /// The fault of a guest-page fault exit.
    fn fault(exit: Option<ExitReason>) -> NestedFault {
        match exit {
            Some(ExitReason::NestedPageFault(f)) => f,
            other => panic!("not a fault: {other:?}"),
        }
    }

    /// An ECALL with a7 = `eid`, a6 = `fid`, a0..a5 = `a`: the call it exits with.
    fn ecall(
        v: &mut Riscv64VCpu<Sv39x4>,
        hart: &mut MockHart,
        eid: u64,
        fid: u64,
        a: [u64; 6],
    ) -> GuestCall {
        v.regs.x[17] = eid;
        v.regs.x[16] = fid;
        v.regs.x[10..16].copy_from_slice(&a);
        let exit = trap(
            v,
            hart,
            TrapInfo {
                scause: exception::ECALL_VS,
                ..TrapInfo::default()
            },
        );
        match exit {
            Some(ExitReason::Call(c)) => c,
            other => panic!("not a call: {other:?}"),
        }
    }

    /// Answers call `c` of `v` with `reply` on hart `h`.
    fn answer(v: &mut Riscv64VCpu<Sv39x4>, h: &mut MockHart, c: &GuestCall, reply: FirmwareReply) {
        v.complete_call_with(h, c, reply).unwrap();
    }

    fn a0a1(v: &Riscv64VCpu<Sv39x4>) -> (i64, u64) {
        (v.regs.x[10] as i64, v.regs.x[11])
    }

    /// Every ECALL is a call for the VM layer: nothing is answered, nothing stepped,
    /// until it is completed; the reply goes to a0/a1 and the PC past the ECALL.
    #[test]
    fn calls_are_decoded_and_answered_with_complete_call() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let c = ecall(&mut v, &mut h, 0x10, 0, [0; 6]);
        assert_eq!(
            c,
            GuestCall {
                call: FirmwareCall::Version,
                conduit: Conduit::Ecall
            }
        );
        assert_eq!(v.pc(), PC, "not stepped until answered");
        answer(
            &mut v,
            &mut h,
            &c,
            FirmwareReply::Version { major: 2, minor: 0 },
        );
        assert_eq!(a0a1(&v), (0, 2 << 24));
        assert_eq!(v.pc(), PC + 4);
        let c = ecall(&mut v, &mut h, 0x10, 9, [0; 6]);
        answer(
            &mut v,
            &mut h,
            &c,
            FirmwareReply::Error(FirmwareError::NotSupported),
        );
        assert_eq!(a0a1(&v).0, sbi_err::NOT_SUPPORTED);
        // Legacy: the error is the whole result in a0.
        let c = ecall(&mut v, &mut h, 0x01, 0, [b'x' as u64, 0, 0, 0, 0, 0]);
        assert_eq!(c.call, FirmwareCall::ConsoleWriteByte { byte: b'x' });
        v.regs.x[11] = 0xdead;
        answer(
            &mut v,
            &mut h,
            &c,
            FirmwareReply::Error(FirmwareError::NotSupported),
        );
        assert_eq!(a0a1(&v), (sbi_err::NOT_SUPPORTED, 0xdead));
        assert_eq!(v.pc(), PC + 12);
        // CPUID registers are no answer to an SBI call.
        assert!(
            v.complete_call_with(&mut h, &c, FirmwareReply::Cpuid(Default::default()))
                .is_err()
        );
    }

    /// HSM hart_start is a CPU on by the guest's hart id; the VM layer answers it.
    #[test]
    fn hart_start_is_a_cpu_on_answered_by_the_vm_layer() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let c = ecall(
            &mut v,
            &mut h,
            EID_HSM,
            0,
            [7, 0x8000_2000, 0x5ec0_0001, 0, 0, 0],
        );
        assert_eq!(
            c.call,
            FirmwareCall::CpuOn {
                target: 7,
                entry: GuestPhysAddr::from_usize(0x8000_2000),
                arg: 0x5ec0_0001
            }
        );
        answer(
            &mut v,
            &mut h,
            &c,
            FirmwareReply::Error(FirmwareError::AlreadyOn),
        );
        assert_eq!(a0a1(&v), (sbi_err::ALREADY_AVAILABLE, 0));
        assert_eq!(v.pc(), PC + 4);
        let c = ecall(&mut v, &mut h, EID_HSM, 2, [4, 0, 0, 0, 0, 0]);
        assert_eq!(c.call, FirmwareCall::CpuStatus { target: 4 });
        answer(&mut v, &mut h, &c, FirmwareReply::CpuState(CpuState::Off));
        assert_eq!(a0a1(&v), (0, 1));
        assert_eq!(
            ecall(&mut v, &mut h, EID_HSM, 1, [0; 6]).call,
            FirmwareCall::CpuOff
        );
        assert_eq!(
            ecall(&mut v, &mut h, EID_SRST, 0, [1, 0, 0, 0, 0, 0]).call,
            FirmwareCall::SystemReset
        );
    }

    #[test]
    fn started_vcpu_gets_hart_id_and_opaque() {
        let mut v =
            Riscv64VCpu::<Sv48x4>::new(claimed(1), 1, Riscv64CreateConfig { hart_id: Some(7) })
                .unwrap();
        assert_eq!(v.cpu_id(), 7);
        v.set_entry(GuestPhysAddr::from_usize(0x8000_0040)).unwrap();
        v.set_start_arg(0x5ec0_0001).unwrap();
        assert_eq!(v.gpr(10), Ok(7));
        assert_eq!(v.gpr(11), Ok(0x5ec0_0001));
        assert_eq!(v.pc(), 0x8000_0040);
        assert_eq!(
            v.regs.sstatus & sstatus::SPP,
            sstatus::SPP,
            "starts in VS-mode"
        );
        assert_eq!(v.vs_csrs(), VsCsrs::RESET);
        assert!(matches!(
            v.set_entry(GuestPhysAddr::from_usize(0x8000_0041)),
            Err(VCpuError::InvalidValue {
                value: 0x8000_0041,
                ..
            })
        ));
    }

    #[test]
    fn our_extension_is_a_hypercall_with_its_fid() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let c = ecall(&mut v, &mut h, HVT, 2, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            c.call,
            FirmwareCall::Hypercall(Hypercall {
                nr: HVT,
                function: 2,
                args: [1, 2, 3, 4, 5, 6]
            })
        );
        answer(&mut v, &mut h, &c, FirmwareReply::Value(30));
        assert_eq!(a0a1(&v), (0, 30));
        assert_eq!(v.pc(), PC + 4);
    }

    /// A granted timer is armed by the vCPU, which says whether it can
    /// (`provides(Timer)` follows Sstc).
    #[test]
    fn timer_needs_sstc() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let c = ecall(&mut v, &mut h, EID_TIME, 0, [1000, 0, 0, 0, 0, 0]);
        answer(&mut v, &mut h, &c, FirmwareReply::Value(0));
        assert_eq!(a0a1(&v).0, sbi_err::NOT_SUPPORTED);
        assert_eq!(h.timer, None);
        h.sstc = true;
        let c = ecall(&mut v, &mut h, EID_TIME, 0, [1000, 0, 0, 0, 0, 0]);
        answer(&mut v, &mut h, &c, FirmwareReply::Value(0));
        assert_eq!(a0a1(&v), (0, 0));
        assert_eq!(h.timer, Some(1000));
        // Legacy set_timer: result in a0 only.
        let c = ecall(&mut v, &mut h, 0x00, 0, [2000, 0xdead, 0, 0, 0, 0]);
        assert_eq!(c.conduit, Conduit::EcallLegacy);
        answer(&mut v, &mut h, &c, FirmwareReply::Value(0));
        assert_eq!(a0a1(&v), (0, 0xdead));
        assert_eq!(h.timer, Some(2000));
        // Refused by the VM layer: not armed.
        let c = ecall(&mut v, &mut h, EID_TIME, 0, [3000, 0, 0, 0, 0, 0]);
        answer(
            &mut v,
            &mut h,
            &c,
            FirmwareReply::Error(FirmwareError::NotSupported),
        );
        assert_eq!(h.timer, Some(2000));
    }

    #[test]
    fn remote_fences_go_to_every_hart() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let c = ecall(&mut v, &mut h, EID_RFENCE, 1, [1, 0, 0x4000, 0x1000, 0, 0]);
        answer(&mut v, &mut h, &c, FirmwareReply::Value(0));
        assert_eq!(a0a1(&v), (0, 0));
        assert_eq!(
            h.fences,
            [RemoteFence::SfenceVma {
                start: 0x4000,
                size: 0x1000,
                asid: None
            }]
        );
        h.fence_error = sbi_err::FAILED;
        let c = ecall(&mut v, &mut h, EID_RFENCE, 0, [1, 0, 0, 0, 0, 0]);
        answer(&mut v, &mut h, &c, FirmwareReply::Value(0));
        assert_eq!(a0a1(&v).0, sbi_err::FAILED);
    }

    /// Regression (issue 10): the SBI debug console read the guest's buffer itself
    /// with HLV, reaching pass-through device mappings the VM's copy API refuses. Now
    /// the call carries the buffer's address to the VM layer, and the vCPU reads no
    /// guest memory for it (its hart has no way to: `HartOps` has no memory access).
    #[test]
    fn sbi_console_reads_no_guest_memory_itself() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        // The pass-through UART a board maps into the guest.
        h.put(0x1000_0000, b"device registers");
        let c = ecall(&mut v, &mut h, EID_DBCN, 0, [16, 0x1000_0000, 0, 0, 0, 0]);
        assert_eq!(
            c.call,
            FirmwareCall::ConsoleWrite {
                gpa: GuestPhysAddr::from_usize(0x1000_0000),
                len: 16
            }
        );
        assert_eq!(v.pc(), PC, "not answered by the vCPU");
        // The VM layer's copy API refused the buffer: INVALID_PARAM.
        answer(
            &mut v,
            &mut h,
            &c,
            FirmwareReply::Error(FirmwareError::InvalidParameters),
        );
        assert_eq!(a0a1(&v), (sbi_err::INVALID_PARAM, 0));
    }

    /// A load from the test device's NEGATIVE register with `c.lw a0, 0(a1)` (0x4188):
    /// QEMU reports htinst = 0x2501 (`lw a0, 0(x0)` with bit 1 clear). The exit
    /// carries the decoded access; the value read is sign-extended from 32 bits and
    /// the PC advances by 2.
    #[test]
    fn mmio_load_from_htinst_compressed() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        h.put(PC, &0x4188u16.to_le_bytes());
        let gpa = 0x0b00_0018u64;
        let f = fault(trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, gpa, 0x2501),
        ));
        let g = gpa_of(gpa);
        assert_eq!((f.gpa, f.access), (g, AccessKind::Read));
        assert!(matches!(f.insn, FaultInsn::Decoded(_)));
        let none = Mem::default();
        let access = v.decode_mmio(&f, &none).unwrap();
        assert_eq!(none.reads.get(), 0);
        assert_eq!(
            access,
            MmioAccess {
                gpa: g,
                width: AccessWidth::Dword,
                op: MmioOp::Read {
                    reg: 10,
                    sign_extend: true,
                    reg_width: AccessWidth::Qword
                },
                insn_len: 2
            }
        );
        assert_eq!(
            v.decode_stats(),
            DecodeStats {
                from_htinst: 1,
                fetched: 0,
                fetch_deferred: 0,
                cross_checked: 1,
                mismatches: 0
            }
        );
        v.complete_mmio(&access, Some(0xffff_fffe)).unwrap();
        assert_eq!(v.gpr(10), Ok(0xffff_ffff_ffff_fffe));
        assert_eq!(v.pc(), PC + 2);
    }

    /// Without htinst the instruction is fetched with HLVX at the exit: `sd a0,
    /// 16(a1)` as two halves; the stored value is cut to the width.
    #[test]
    fn mmio_store_fetched_32_bit() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        h.put(PC, &0x00a5_b823u32.to_le_bytes());
        v.regs.x[10] = 0x1122_3344_5566_7788;
        let gpa = 0x0b00_0008u64;
        let f = fault(trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::STORE_GUEST_PAGE_FAULT, gpa, 0),
        ));
        assert_eq!(
            f.insn,
            FaultInsn::Bytes(InsnBytes::new(&0x00a5_b823u32.to_le_bytes()))
        );
        let access = v.decode_mmio(&f, &Mem::default()).unwrap();
        assert_eq!(
            access.op,
            MmioOp::Write {
                value: 0x1122_3344_5566_7788
            }
        );
        assert_eq!(access.insn_len, 4);
        assert_eq!(v.decode_stats().fetched, 1);
        v.complete_mmio(&access, None).unwrap();
        assert_eq!(v.pc(), PC + 4);
        // sb a0, 0(a1): only the low byte.
        h.put(PC + 4, &0x00a5_8023u32.to_le_bytes());
        let f = fault(trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::STORE_GUEST_PAGE_FAULT, gpa, 0),
        ));
        let access = v.decode_mmio(&f, &Mem::default()).unwrap();
        assert_eq!(access.op, MmioOp::Write { value: 0x88 });
    }

    /// When HLVX faults (the page is not executable in the G-stage) and the guest's
    /// translation is off, the exit leaves the fetch to the decoder, which reads
    /// guest memory through the VM layer; with the guest's paging on it refuses.
    #[test]
    fn mmio_fetch_falls_back_to_guest_memory() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        h.no_exec.push(PC & !0xfff);
        // lhu a0, 0(a1)
        let mem = Mem::with(PC, &0x0005_d503u32.to_le_bytes());
        let f = fault(trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, 0x0b00_0000, 0),
        ));
        assert_eq!(f.insn, FaultInsn::Fetch);
        assert_eq!(v.decode_stats().fetch_deferred, 1);
        let access = v.decode_mmio(&f, &mem).unwrap();
        assert_eq!(access.width, AccessWidth::Word);
        assert!(matches!(
            access.op,
            MmioOp::Read {
                sign_extend: false,
                ..
            }
        ));
        // Guest memory without the instruction: the error carries the cause.
        assert!(matches!(
            v.decode_mmio(&f, &Mem::default()),
            Err(MmioDecodeError::Fetch {
                pc: PC,
                error: FetchError::Memory { .. }
            })
        ));
        // With the guest's paging on, the fallback is not allowed.
        h.vs.insert("vsatp", 8 << 60);
        let f = fault(trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, 0x0b00_0000, 0),
        ));
        assert_eq!(
            v.decode_mmio(&f, &mem),
            Err(MmioDecodeError::Fetch {
                pc: PC,
                error: FetchError::GuestUnmapped { va: PC }
            })
        );
    }

    #[test]
    fn undecodable_accesses_are_errors_with_the_pc() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let none = Mem::default();
        // amoadd.w a0, a1, (a2) at the PC, no htinst.
        h.put(PC, &0x00b6_252fu32.to_le_bytes());
        let info = guest_page_fault(exception::STORE_GUEST_PAGE_FAULT, 0x0b00_0000, 0);
        let f = fault(trap(&mut v, &mut h, info));
        assert_eq!(
            v.decode_mmio(&f, &none),
            Err(MmioDecodeError::Unsupported {
                pc: PC,
                insn: 0x00b6_252f,
                why: "an atomic access (not emulated)"
            })
        );
        // The guest's page-table walk hit the device (pseudoinstruction 0x3000).
        let f = fault(trap(
            &mut v,
            &mut h,
            TrapInfo {
                htinst: 0x3000,
                scause: exception::LOAD_GUEST_PAGE_FAULT,
                ..info
            },
        ));
        assert_eq!(
            v.decode_mmio(&f, &none),
            Err(MmioDecodeError::TableWalk { pc: PC })
        );
        // An instruction fetch from a device.
        let f = fault(trap(
            &mut v,
            &mut h,
            TrapInfo {
                scause: exception::INSN_GUEST_PAGE_FAULT,
                ..info
            },
        ));
        assert_eq!(
            v.decode_mmio(&f, &none),
            Err(MmioDecodeError::Execute { pc: PC })
        );
        // A load instruction reported as a store fault.
        h.put(PC, &0x0005_8503u32.to_le_bytes());
        let f = fault(trap(&mut v, &mut h, info));
        assert!(matches!(
            v.decode_mmio(&f, &none),
            Err(MmioDecodeError::Unsupported { pc: PC, .. })
        ));
        // Decoding is a function of the exit: another exit in between changes
        // nothing.
        ecall(&mut v, &mut h, 0x10, 0, [0; 6]);
        assert!(matches!(
            v.decode_mmio(&f, &none),
            Err(MmioDecodeError::Unsupported { pc: PC, .. })
        ));
    }

    /// htinst says `lw` but the instruction is `lb`: counted as a mismatch, and the
    /// hart's htinst is used.
    #[test]
    fn cross_check_counts_disagreements() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        h.put(PC, &0x0005_8503u32.to_le_bytes());
        let f = fault(trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, 0x0b00_0000, 0x2503),
        ));
        let a = v.decode_mmio(&f, &Mem::default()).unwrap();
        assert_eq!(a.width, AccessWidth::Dword);
        assert_eq!(v.decode_stats().mismatches, 1);
    }

    #[test]
    fn complete_mmio_zero_extends_and_ignores_x0() {
        let mut v = vcpu();
        let access = MmioAccess {
            gpa: GuestPhysAddr::from_usize(0x0b00_0000),
            width: AccessWidth::Word,
            op: MmioOp::Read {
                reg: 5,
                sign_extend: false,
                reg_width: AccessWidth::Qword,
            },
            insn_len: 4,
        };
        v.complete_mmio(&access, Some(0xffff_8001)).unwrap();
        assert_eq!(v.gpr(5), Ok(0x8001));
        let to_x0 = MmioAccess {
            op: MmioOp::Read {
                reg: 0,
                sign_extend: true,
                reg_width: AccessWidth::Qword,
            },
            ..access
        };
        v.complete_mmio(&to_x0, Some(5)).unwrap();
        assert_eq!(v.gpr(0), Ok(0));
        assert_eq!(v.pc(), PC + 8);
        assert_eq!(v.gpr(32), Err(VCpuError::InvalidRegister { index: 32 }));
    }

    /// WFI runs in the guest by default (no VTW: an idle Linux vCPU waits on its
    /// hart instead of exiting tens of thousands of times per boot); a vCPU set up
    /// with `trap_wfi` enters with VTW, and its WFI exits as `Halt` (below).
    #[test]
    fn wfi_runs_in_the_guest_unless_asked_to_trap() {
        let v = vcpu();
        assert_eq!(v.entry_hstatus() & hstatus::VTW, 0);
        assert_eq!(v.regs.hstatus & hstatus::VTW, 0);
        let mut w = Riscv64VCpu::<Sv39x4>::new(3, 0, Riscv64CreateConfig::default()).unwrap();
        w.setup(Riscv64SetupConfig {
            trap_wfi: true,
            ..Riscv64SetupConfig::default()
        })
        .unwrap();
        assert_eq!(w.entry_hstatus() & hstatus::VTW, hstatus::VTW);
        w.set_entry(gpa_of(PC)).unwrap();
        assert_eq!(w.regs.hstatus & hstatus::VTW, hstatus::VTW);
    }

    #[test]
    fn wfi_halts_and_other_virtual_instructions_become_illegal() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        h.vs.insert("vstvec", 0x8000_0101);
        h.vs.insert("vsstatus", sstatus::SIE);
        let virt = |insn| TrapInfo {
            scause: exception::VIRTUAL_INSN,
            stval: insn,
            ..TrapInfo::default()
        };
        assert_eq!(trap(&mut v, &mut h, virt(WFI)), Some(ExitReason::Halt));
        assert_eq!(v.pc(), PC + 4);
        // csrr a0, hstatus from VS-mode.
        v.regs.sstatus = sstatus::SPP;
        assert_eq!(trap(&mut v, &mut h, virt(0x6000_2573)), None);
        assert_eq!(h.vs["vsepc"], PC + 4);
        assert_eq!(h.vs["vscause"], exception::ILLEGAL_INSN);
        assert_eq!(h.vs["vstval"], 0x6000_2573);
        assert_eq!(
            h.vs["vsstatus"],
            sstatus::SPP | sstatus::SPIE,
            "SIE moved to SPIE"
        );
        assert_eq!(v.pc(), 0x8000_0100, "vstvec base");
        // Without the bits in stval, the instruction is fetched.
        h.put(0x8000_0100, &low_u32(WFI).to_le_bytes());
        assert_eq!(trap(&mut v, &mut h, virt(0)), Some(ExitReason::Halt));
    }

    #[test]
    fn interrupts_and_kicks() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let irq = |code| TrapInfo {
            scause: SCAUSE_INTERRUPT | code,
            ..TrapInfo::default()
        };
        assert_eq!(trap(&mut v, &mut h, irq(1)), Some(ExitReason::Kicked));
        assert!(h.kick_cleared);
        assert_eq!(
            trap(&mut v, &mut h, irq(9)),
            Some(ExitReason::ExternalInterrupt { vector: 9 })
        );
        assert_eq!(v.pc(), PC);
    }

    #[test]
    fn nested_root_and_injection() {
        let mut v = vcpu();
        assert!(matches!(
            v.set_nested_root(HostPhysAddr::from_usize(0x8040_1000)),
            Err(VCpuError::InvalidValue {
                value: 0x8040_1000,
                ..
            })
        ));
        v.set_nested_root(HostPhysAddr::from_usize(0x8040_4000))
            .unwrap();
        assert_eq!(
            v.hgatp(),
            Sv39x4::hgatp(HostPhysAddr::from_usize(0x8040_4000), v.vmid())
        );
        assert_eq!(v.hgatp() >> 60, 8);
        let mut w =
            Riscv64VCpu::<Sv48x4>::new(claimed(3), 0, Riscv64CreateConfig::default()).unwrap();
        w.set_nested_root(HostPhysAddr::from_usize(0x8040_4000))
            .unwrap();
        assert_eq!(w.hgatp() >> 60, 9);
        assert_eq!(
            Some(low_u16(crate::regs::hgatp::vmid(w.hgatp()))),
            crate::tlb::vmid_for(3)
        );
        v.inject_interrupt(6).unwrap();
        v.inject_interrupt(1).unwrap();
        assert_eq!(
            v.inject,
            crate::regs::hvip::VSTIP | crate::regs::hvip::VSSIP
        );
        assert!(matches!(
            v.inject_interrupt(12),
            Err(VCpuError::InvalidValue { value: 12, .. })
        ));
    }

    #[test]
    fn run_refuses_an_unconfigured_vcpu() {
        let mut v =
            Riscv64VCpu::<Sv39x4>::new(claimed(0), 0, Riscv64CreateConfig::default()).unwrap();
        assert_eq!(
            v.run(),
            Err(VCpuError::NotConfigured {
                missing: "nested root"
            })
        );
        v.set_nested_root(HostPhysAddr::from_usize(0x8040_0000))
            .unwrap();
        assert_eq!(v.run(), Err(VCpuError::NotConfigured { missing: "entry" }));
    }

    /// A guest-page fault without htval: the GVA stands for the GPA only with the
    /// guest's translation off.
    #[test]
    fn fault_without_htval() {
        let mut v = vcpu();
        let mut h = MockHart::default();
        let f = TrapInfo {
            scause: exception::LOAD_GUEST_PAGE_FAULT,
            stval: 0x9000_0008,
            htval: 0,
            htinst: 0,
        };
        let got = fault(trap(&mut v, &mut h, f));
        assert_eq!(
            (got.gpa, got.access),
            (GuestPhysAddr::from_usize(0x9000_0008), AccessKind::Read)
        );
        h.vs.insert("vsatp", 8 << 60);
        let got = fault(trap(&mut v, &mut h, f));
        assert_eq!(got.gpa, GuestPhysAddr::from_usize(usize::MAX));
    }
}
