//! The RISC-V vCPU: [`Riscv64VCpu`], its register context, the handling of the traps
//! a guest in VS-mode takes to HS-mode (SBI calls served here, guest-page faults and
//! everything else handed to the VM layer as an [`ExitReason`]), and MMIO decode.
//!
//! Everything that touches the hart goes through [`HartOps`], so the trap handling is
//! tested on the host with a model of the hart; on riscv64 [`HwOps`] is the real one.

use core::marker::PhantomData;

use addrspace::{AccessKind, GuestPhysAddr, HostPhysAddr, NestedFormat, RiscvGStage};
use vcpu_api::{
    AccessWidth, ArchVCpu, ExitReason, GuestMemory, MmioAccess, MmioDecodeError, MmioOp, VCpuError,
    VCpuResult,
};

use crate::context::{GuestRegs, VsCsr, VsCsrs};
use crate::exit::{Trap, exception, interrupt};
use crate::firmware::{self as sbi, SbiRequest, error as sbi_err};
use crate::hart::HartOps;
use crate::mmio::{self as insn, Htinst, MemInsn, MemOp};
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

/// A character device for the guest's SBI console (legacy putchar/getchar, DBCN).
pub trait GuestConsole: Sync {
    /// Writes `bytes`.
    fn write(&self, bytes: &[u8]);
    /// Reads up to `buf.len()` pending bytes without waiting; returns how many.
    fn read(&self, buf: &mut [u8]) -> usize;
}

/// Creation parameters of a [`Riscv64VCpu`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Riscv64CreateConfig {
    /// The hart id the guest sees for this vCPU (a0 at start, HSM targets); `None`
    /// means the vCPU index.
    pub hart_id: Option<u64>,
}

/// Setup parameters of a [`Riscv64VCpu`].
#[derive(Clone, Copy, Default)]
pub struct Riscv64SetupConfig {
    /// Where the guest's SBI console goes; without one, console calls return
    /// `SBI_ERR_NOT_SUPPORTED` and DBCN is not advertised.
    pub console: Option<&'static dyn GuestConsole>,
    /// SBI extensions the VM layer serves (forwarded as hypercalls): `probe_extension`
    /// reports them available.
    pub forwarded_extensions: &'static [u64],
    /// When the hart gives a transformed instruction in `htinst`, also fetch and
    /// decode the instruction itself and count disagreements
    /// ([`Riscv64VCpu::decode_stats`]): a self-check of both decoders.
    pub cross_check_mmio_decode: bool,
}

impl core::fmt::Debug for Riscv64SetupConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Riscv64SetupConfig")
            .field("console", &self.console.is_some())
            .field("forwarded_extensions", &self.forwarded_extensions)
            .field("cross_check_mmio_decode", &self.cross_check_mmio_decode)
            .finish()
    }
}

/// How MMIO accesses were decoded so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Decoded from the transformed instruction in `htinst`.
    pub from_htinst: u64,
    /// Decoded from the instruction fetched with HLVX.
    pub fetched: u64,
    /// `htinst` decodes also checked against the fetched instruction.
    pub cross_checked: u64,
    /// Cross-checks that disagreed (should be zero).
    pub mismatches: u64,
}

/// The last guest-page fault, kept for [`ArchVCpu::decode_mmio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fault {
    gpa: GuestPhysAddr,
    access: AccessKind,
    htinst: u64,
}

/// An SBI call handed to the VM layer and not answered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingSbi {
    /// Extension id (a7).
    pub eid: u64,
    /// Function id (a6).
    pub fid: u64,
}

/// WFI.
const WFI: u64 = 0x1050_0073;

/// A RISC-V vCPU in VS-mode whose guest-physical memory is translated by the G-stage
/// format `F` ([`Sv39x4`](addrspace::Sv39x4) or [`Sv48x4`](addrspace::Sv48x4)).
///
/// It serves the SBI calls that need nothing of the VM (base, timer, console, remote
/// fences, legacy shutdown, SRST) and returns the rest as exits: HSM `hart_start` as
/// [`ExitReason::CpuUp`], `hart_stop` as [`ExitReason::CpuDown`], SRST as
/// [`ExitReason::SystemShutdown`]/[`ExitReason::SystemReset`], and IPI,
/// `hart_get_status` and every unknown extension as [`ExitReason::Hypercall`] with the
/// EID as `nr` and a0..a5 as arguments (the FID is [`Riscv64VCpu::pending_sbi`]).
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
    fault: Option<Fault>,
    pending_sbi: Option<PendingSbi>,
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

    /// The SBI call of the last [`ExitReason::Hypercall`] or [`ExitReason::CpuUp`]
    /// exit, until it is answered.
    pub fn pending_sbi(&self) -> Option<PendingSbi> {
        self.pending_sbi
    }

    /// Answers the pending SBI call with an error code (a0 = `error`, a1 = 0) and
    /// steps over the ECALL. Does nothing when no call is pending.
    pub fn set_sbi_error(&mut self, error: i64) {
        if self.pending_sbi.take().is_some() {
            self.sbi_return(error, 0, false);
        }
    }

    /// MMIO decode counts.
    pub fn decode_stats(&self) -> DecodeStats {
        self.stats
    }

    /// The VS CSRs as last saved (current after [`ArchVCpu::unbind`]).
    pub fn vs_csrs(&self) -> VsCsrs {
        self.vs
    }

    /// Writes the ECALL result and steps over it (ECALL is 4 bytes).
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
        self.fault = None;
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
                    GuestPhysAddr::from_usize(if bare { gva as usize } else { usize::MAX })
                });
                self.fault = Some(Fault {
                    gpa,
                    access,
                    htinst,
                });
                Next::Exit(ExitReason::NestedPageFault { gpa, access })
            }
            Trap::VirtualInstruction { insn } => self.virtual_instruction(insn, ops),
            Trap::SbiCall => self.sbi_call(ops),
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
            match self.fetch(ops, None) {
                Some((bits, _)) => u64::from(bits),
                None => 0,
            }
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

    fn sbi_call(&mut self, ops: &mut dyn HartOps) -> Next {
        let x = &self.regs.x;
        let (eid, fid) = (x[17], x[16]);
        let args = [x[10], x[11], x[12], x[13], x[14], x[15]];
        let legacy = SbiRequest::is_legacy(eid);
        let ok = |me: &mut Self, value| {
            me.sbi_return(sbi_err::SUCCESS, value, legacy);
            Next::Resume
        };
        let fail = |me: &mut Self, error| {
            me.sbi_return(error, 0, legacy);
            Next::Resume
        };
        let forward = |me: &mut Self, exit| {
            me.pending_sbi = Some(PendingSbi { eid, fid });
            Next::Exit(exit)
        };
        match SbiRequest::decode(eid, fid, args) {
            SbiRequest::GetSpecVersion => ok(self, sbi::SPEC_VERSION),
            SbiRequest::GetImplId => ok(self, sbi::IMPL_ID),
            SbiRequest::GetImplVersion => ok(self, IMPL_VERSION),
            SbiRequest::MachineId => ok(self, 0),
            SbiRequest::ProbeExtension { eid: probed } => {
                let available = match probed {
                    sbi::EID_LEGACY_PUTCHAR | sbi::EID_LEGACY_GETCHAR | sbi::EID_DBCN => {
                        self.config.console.is_some()
                    }
                    sbi::EID_TIME | sbi::EID_LEGACY_SET_TIMER => ops.has_guest_timer(),
                    e if sbi::SERVED_EXTENSIONS.contains(&e) => true,
                    e => self.config.forwarded_extensions.contains(&e),
                };
                ok(self, u64::from(available))
            }
            SbiRequest::SetTimer { stime_value } => {
                if ops.set_guest_timer(stime_value) {
                    ok(self, 0)
                } else {
                    fail(self, sbi_err::NOT_SUPPORTED)
                }
            }
            SbiRequest::LegacyPutchar { byte } => match self.config.console {
                Some(c) => {
                    c.write(&[byte]);
                    ok(self, 0)
                }
                None => fail(self, sbi_err::NOT_SUPPORTED),
            },
            SbiRequest::LegacyGetchar => {
                let mut b = [0u8];
                match self.config.console {
                    Some(c) if c.read(&mut b) == 1 => ok(self, u64::from(b[0])),
                    // -1: nothing to read.
                    _ => ok(self, u64::MAX),
                }
            }
            SbiRequest::ConsoleWriteByte { byte } => match self.config.console {
                Some(c) => {
                    c.write(&[byte]);
                    ok(self, 0)
                }
                None => fail(self, sbi_err::NOT_SUPPORTED),
            },
            SbiRequest::ConsoleWrite { len, addr } => {
                let Some(console) = self.config.console else {
                    return fail(self, sbi_err::NOT_SUPPORTED);
                };
                let mut buf = [0u8; DBCN_CHUNK];
                let want = len.min(DBCN_CHUNK as u64) as usize;
                let got = ops.read_guest_phys(addr, &mut buf[..want]);
                if got == 0 && want > 0 {
                    return fail(self, sbi_err::INVALID_PARAM);
                }
                console.write(&buf[..got]);
                ok(self, got as u64)
            }
            SbiRequest::ConsoleRead { len, addr } => {
                let Some(console) = self.config.console else {
                    return fail(self, sbi_err::NOT_SUPPORTED);
                };
                let mut buf = [0u8; DBCN_CHUNK];
                let want = len.min(DBCN_CHUNK as u64) as usize;
                let n = console.read(&mut buf[..want]);
                if ops.write_guest_phys(addr, &buf[..n]) != n {
                    return fail(self, sbi_err::INVALID_PARAM);
                }
                ok(self, n as u64)
            }
            SbiRequest::RemoteFence { fence, .. } => {
                // The guest's vCPUs may have run on any hart: fence all of them
                // (a superset of the targets, which is always correct).
                let error = ops.remote_fence(fence);
                if error == sbi_err::SUCCESS {
                    ok(self, 0)
                } else {
                    fail(self, error)
                }
            }
            SbiRequest::LegacyShutdown => Next::Exit(ExitReason::SystemShutdown),
            SbiRequest::SystemReset { reset_type, .. } => match reset_type {
                0 => Next::Exit(ExitReason::SystemShutdown),
                1 | 2 => Next::Exit(ExitReason::SystemReset),
                _ => fail(self, sbi_err::INVALID_PARAM),
            },
            SbiRequest::HartStart {
                hart,
                start_addr,
                opaque,
            } => forward(
                self,
                ExitReason::CpuUp {
                    target_cpu: hart,
                    entry_point: GuestPhysAddr::from_usize(start_addr as usize),
                    arg: opaque,
                },
            ),
            SbiRequest::HartStop => Next::Exit(ExitReason::CpuDown { state: 0 }),
            SbiRequest::SendIpi { .. }
            | SbiRequest::HartStatus { .. }
            | SbiRequest::Forward { .. } => forward(self, ExitReason::Hypercall { nr: eid, args }),
            SbiRequest::Unsupported { .. } => fail(self, sbi_err::NOT_SUPPORTED),
        }
    }

    /// Fetches the instruction at the guest PC: `(bits, length)`. Uses HLVX; when
    /// that faults and the guest's translation is off, reads guest-physical memory
    /// through `mem`.
    fn fetch(&mut self, ops: &mut dyn HartOps, mem: Option<&dyn GuestMemory>) -> Option<(u32, u8)> {
        let pc = self.regs.sepc;
        let half = |ops: &mut dyn HartOps, at: u64| -> Option<u16> {
            ops.fetch_half(at).or_else(|| {
                let mem = mem?;
                if !ops.guest_translation_off() {
                    return None;
                }
                let mut b = [0u8; 2];
                mem.read(GuestPhysAddr::from_usize(at as usize), &mut b)
                    .then(|| u16::from_le_bytes(b))
            })
        };
        let low = half(ops, pc)?;
        if insn::insn_len(low) == 2 {
            return Some((u32::from(low), 2));
        }
        let high = half(ops, pc.wrapping_add(2))?;
        Some((u32::from(low) | u32::from(high) << 16, 4))
    }

    fn decode_mmio_with(
        &mut self,
        ops: &mut dyn HartOps,
        gpa: GuestPhysAddr,
        access: AccessKind,
        mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        let pc = self.regs.sepc;
        let Some(fault) = self.fault else {
            return Err(MmioDecodeError::NotAFault);
        };
        if fault.access == AccessKind::Execute || access == AccessKind::Execute {
            // Instructions cannot be fetched from an emulated device.
            return Err(MmioDecodeError::Unsupported { pc, insn: 0 });
        }
        let decoded: MemInsn = match insn::decode_htinst(fault.htinst) {
            Htinst::Transformed(m) => {
                self.stats.from_htinst += 1;
                if self.config.cross_check_mmio_decode {
                    self.stats.cross_checked += 1;
                    let fetched = self
                        .fetch(ops, Some(mem))
                        .and_then(|(bits, _)| insn::decode(bits).ok());
                    if fetched != Some(m) {
                        self.stats.mismatches += 1;
                        log::error!(
                            "vCPU {}: htinst {:#x} decodes to {m:?}, the instruction at pc {pc:#x} to {fetched:?}",
                            self.vcpu_id,
                            fault.htinst
                        );
                    }
                }
                m
            }
            Htinst::TransformedOther(e) => {
                log::warn!("vCPU {}: MMIO at {gpa:?}, pc {pc:#x}: {e}", self.vcpu_id);
                return Err(MmioDecodeError::Unsupported {
                    pc,
                    insn: fault.htinst,
                });
            }
            Htinst::PageTableWalk { pseudo } => {
                log::warn!(
                    "vCPU {}: the guest's own page-table walk touched {gpa:?} (htinst {pseudo:#x})",
                    self.vcpu_id
                );
                return Err(MmioDecodeError::Unsupported {
                    pc,
                    insn: u64::from(pseudo),
                });
            }
            Htinst::None | Htinst::Unknown(_) => {
                let (bits, _) = self
                    .fetch(ops, Some(mem))
                    .ok_or(MmioDecodeError::Fetch { pc })?;
                self.stats.fetched += 1;
                insn::decode(bits).map_err(|e| {
                    log::warn!("vCPU {}: MMIO at {gpa:?}, pc {pc:#x}: {e}", self.vcpu_id);
                    MmioDecodeError::Unsupported {
                        pc,
                        insn: u64::from(bits),
                    }
                })?
            }
        };
        let op = match (decoded.op, access) {
            (MemOp::Load { rd, sign_extend }, AccessKind::Read) => MmioOp::Read {
                reg: rd,
                sign_extend,
                reg_width: AccessWidth::Qword,
            },
            (MemOp::Store { rs2 }, AccessKind::Write) => MmioOp::Write {
                value: decoded.width.truncate(self.regs.x[rs2]),
            },
            // The instruction does not match the fault (an AMO reported as a store
            // fault, or a decoder disagreement): refuse rather than guess.
            _ => {
                return Err(MmioDecodeError::Unsupported {
                    pc,
                    insn: fault.htinst,
                });
            }
        };
        Ok(MmioAccess {
            gpa,
            width: decoded.width,
            op,
            insn_len: decoded.len,
        })
    }

    fn start_state(&mut self, entry: u64) {
        self.regs.x = [0; 32];
        self.regs.sepc = entry;
        // Start in VS-mode (SPP = 1), FP state empty.
        self.regs.sstatus = sstatus::SPP;
        self.regs.hstatus = hstatus::GUEST;
        self.regs.fp_live = 0;
        self.regs.x[10] = self.hart_id;
        self.vs = VsCsrs::RESET;
        self.vs_reload = true;
        self.inject = 0;
        self.fault = None;
        self.pending_sbi = None;
    }
}

/// Our implementation version for `get_impl_version`: the crate's major.minor.
const IMPL_VERSION: u64 = 0x0001;

/// What `bind` and `run` return where there is no hart to run a guest on.
#[cfg(not(target_arch = "riscv64"))]
const NOT_RISCV64: VCpuError = VCpuError::Unsupported {
    feature: "RISC-V hypervisor extension (not a riscv64 build)",
};

/// The most bytes one DBCN read or write moves (the guest loops for more, as the
/// specification allows).
const DBCN_CHUNK: usize = 256;

impl<F: GStage> ArchVCpu for Riscv64VCpu<F> {
    type Format = F;
    type CreateConfig = Riscv64CreateConfig;
    type SetupConfig = Riscv64SetupConfig;

    fn new(vm_id: usize, vcpu_id: usize, config: Riscv64CreateConfig) -> VCpuResult<Self> {
        let hart_id = config.hart_id.unwrap_or(vcpu_id as u64);
        let mut vcpu = Self {
            regs: GuestRegs::new(),
            vs: VsCsrs::RESET,
            vm_id,
            vcpu_id,
            hart_id,
            vmid: crate::tlb::vmid_for(vm_id),
            hgatp: 0,
            entry_set: false,
            setup_done: false,
            bound: false,
            vs_reload: true,
            flush_pending: true,
            inject: 0,
            fault: None,
            pending_sbi: None,
            config: Riscv64SetupConfig::default(),
            stats: DecodeStats::default(),
            _format: PhantomData,
        };
        vcpu.start_state(0);
        Ok(vcpu)
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
            let mut ops = crate::hart::HwOps;
            loop {
                crate::entry::enter(
                    &mut self.regs,
                    crate::entry::EntryState {
                        hgatp: self.hgatp,
                        load_vs: core::mem::take(&mut self.vs_reload).then_some(&self.vs),
                        flush_vmid: core::mem::take(&mut self.flush_pending).then_some(self.vmid),
                        inject: core::mem::take(&mut self.inject),
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

    fn set_return_value(&mut self, value: u64) {
        if let Some(p) = self.pending_sbi.take() {
            self.sbi_return(sbi_err::SUCCESS, value, SbiRequest::is_legacy(p.eid));
        } else {
            log::warn!(
                "vCPU {}: return value {value:#x} without a pending SBI call (ignored)",
                self.vcpu_id
            );
        }
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

    fn decode_mmio(
        &mut self,
        gpa: GuestPhysAddr,
        access: AccessKind,
        mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        #[cfg(target_arch = "riscv64")]
        {
            self.decode_mmio_with(&mut crate::hart::HwOps, gpa, access, mem)
        }
        #[cfg(not(target_arch = "riscv64"))]
        {
            // No hart to fetch with: only what htinst and `mem` give.
            self.decode_mmio_with(&mut crate::hart::NoHart, gpa, access, mem)
        }
    }

    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult {
        if let (MmioOp::Read { reg, .. }, Some(value)) = (access.op, read_value) {
            let old = self.gpr(reg)?;
            self.set_gpr(reg, access.load_result(old, value))?;
        }
        self.regs.sepc = self.regs.sepc.wrapping_add(u64::from(access.insn_len));
        self.fault = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::vec::Vec;

    use addrspace::{Sv39x4, Sv48x4};

    use super::*;
    use crate::exit::{SCAUSE_INTERRUPT, TrapInfo};
    use crate::firmware::{EID_DBCN, EID_HSM, EID_IPI, EID_SRST, EID_TIME, RemoteFence};

    /// A model of the hart: guest memory by GPA (the guest's translation is off, so
    /// HLVX addresses are GPAs too), the VS CSRs, the timer and the fences asked for.
    #[derive(Default)]
    struct MockHart {
        mem: BTreeMap<u64, u8>,
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
                self.mem.insert(gpa + i as u64, *b);
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
            let lo = *self.mem.get(&gva)?;
            let hi = *self.mem.get(&(gva + 1))?;
            Some(u16::from_le_bytes([lo, hi]))
        }
        fn read_guest_phys(&mut self, gpa: u64, buf: &mut [u8]) -> usize {
            for (i, b) in buf.iter_mut().enumerate() {
                match self.mem.get(&(gpa + i as u64)) {
                    Some(v) => *b = *v,
                    None => return i,
                }
            }
            buf.len()
        }
        fn write_guest_phys(&mut self, gpa: u64, bytes: &[u8]) -> usize {
            for (i, b) in bytes.iter().enumerate() {
                match self.mem.get_mut(&(gpa + i as u64)) {
                    Some(v) => *v = *b,
                    None => return i,
                }
            }
            bytes.len()
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
        fn clear_kick(&mut self) {
            self.kick_cleared = true;
        }
    }

    /// Guest memory for `decode_mmio`'s fallback.
    struct Mem<'a>(&'a MockHart);

    impl GuestMemory for Mem<'_> {
        fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> bool {
            let base = gpa.as_usize() as u64;
            buf.iter_mut().enumerate().all(|(i, b)| {
                self.0
                    .mem
                    .get(&(base + i as u64))
                    .map(|v| *b = *v)
                    .is_some()
            })
        }
    }

    struct Console {
        out: Mutex<RefCell<Vec<u8>>>,
        input: Mutex<RefCell<Vec<u8>>>,
    }

    impl GuestConsole for Console {
        fn write(&self, bytes: &[u8]) {
            self.out
                .lock()
                .unwrap()
                .borrow_mut()
                .extend_from_slice(bytes);
        }
        fn read(&self, buf: &mut [u8]) -> usize {
            let guard = self.input.lock().unwrap();
            let mut input = guard.borrow_mut();
            let n = buf.len().min(input.len());
            buf[..n].copy_from_slice(&input[..n]);
            input.drain(..n);
            n
        }
    }

    fn console() -> &'static Console {
        std::boxed::Box::leak(std::boxed::Box::new(Console {
            out: Mutex::new(RefCell::new(Vec::new())),
            input: Mutex::new(RefCell::new(b"ok".to_vec())),
        }))
    }

    const PC: u64 = 0x8000_1000;
    const HVT: u64 = 0x0848_5654;

    fn vcpu(console: Option<&'static Console>) -> Riscv64VCpu<Sv39x4> {
        let mut v = Riscv64VCpu::<Sv39x4>::new(3, 0, Riscv64CreateConfig::default()).unwrap();
        v.set_entry(GuestPhysAddr::from_usize(PC as usize)).unwrap();
        v.setup(Riscv64SetupConfig {
            console: console.map(|c| c as &'static dyn GuestConsole),
            forwarded_extensions: &[HVT],
            cross_check_mmio_decode: true,
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

    fn ecall(
        v: &mut Riscv64VCpu<Sv39x4>,
        hart: &mut MockHart,
        eid: u64,
        fid: u64,
        a: [u64; 6],
    ) -> Option<ExitReason> {
        v.regs.x[17] = eid;
        v.regs.x[16] = fid;
        v.regs.x[10..16].copy_from_slice(&a);
        trap(
            v,
            hart,
            TrapInfo {
                scause: exception::ECALL_VS,
                ..TrapInfo::default()
            },
        )
    }

    fn a0a1(v: &Riscv64VCpu<Sv39x4>) -> (i64, u64) {
        (v.regs.x[10] as i64, v.regs.x[11])
    }

    #[test]
    fn base_calls_are_answered_and_step_over_the_ecall() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        assert_eq!(ecall(&mut v, &mut h, 0x10, 0, [0; 6]), None);
        assert_eq!(a0a1(&v), (0, 2 << 24));
        assert_eq!(v.pc(), PC + 4);
        ecall(&mut v, &mut h, 0x10, 1, [0; 6]);
        assert_eq!(a0a1(&v), (0, sbi::IMPL_ID));
        ecall(&mut v, &mut h, 0x10, 4, [0; 6]);
        assert_eq!(a0a1(&v), (0, 0));
        ecall(&mut v, &mut h, 0x10, 9, [0; 6]);
        assert_eq!(a0a1(&v).0, sbi_err::NOT_SUPPORTED);
        assert_eq!(v.pc(), PC + 16);
    }

    #[test]
    fn probe_extension_tells_what_is_served() {
        let probe = |v: &mut Riscv64VCpu<Sv39x4>, h: &mut MockHart, eid| {
            ecall(v, h, 0x10, 3, [eid, 0, 0, 0, 0, 0]);
            a0a1(v).1
        };
        let mut h = MockHart::default();
        let mut bare = vcpu(None);
        assert_eq!(probe(&mut bare, &mut h, EID_DBCN), 0, "no console, no DBCN");
        assert_eq!(probe(&mut bare, &mut h, EID_TIME), 0, "no Sstc, no timer");
        assert_eq!(probe(&mut bare, &mut h, EID_HSM), 1);
        assert_eq!(probe(&mut bare, &mut h, EID_SRST), 1);
        assert_eq!(probe(&mut bare, &mut h, HVT), 1, "forwarded extension");
        assert_eq!(
            probe(&mut bare, &mut h, EID_IPI),
            0,
            "not declared by the VM layer"
        );
        assert_eq!(probe(&mut bare, &mut h, 0x1234_5678), 0);
        let mut full = vcpu(Some(console()));
        h.sstc = true;
        assert_eq!(probe(&mut full, &mut h, EID_DBCN), 1);
        assert_eq!(probe(&mut full, &mut h, 0x01), 1);
        assert_eq!(probe(&mut full, &mut h, EID_TIME), 1);
    }

    #[test]
    fn console_legacy_and_dbcn() {
        let c = console();
        let mut v = vcpu(Some(c));
        let mut h = MockHart::default();
        ecall(&mut v, &mut h, 0x01, 0, [b'h' as u64, 0, 0, 0, 0, 0]);
        assert_eq!(v.regs.x[10], 0);
        h.put(0x8010_0000, b"ello\n");
        ecall(&mut v, &mut h, EID_DBCN, 0, [5, 0x8010_0000, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v), (0, 5));
        ecall(&mut v, &mut h, EID_DBCN, 2, [b'!' as u64, 0, 0, 0, 0, 0]);
        assert_eq!(c.out.lock().unwrap().borrow().as_slice(), b"hello\n!");
        // A buffer the guest does not have.
        ecall(&mut v, &mut h, EID_DBCN, 0, [4, 0x9000_0000, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v), (sbi_err::INVALID_PARAM, 0));
        // Partial: only 3 bytes readable.
        h.put(0x8020_0000, b"abc");
        ecall(&mut v, &mut h, EID_DBCN, 0, [8, 0x8020_0000, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v), (0, 3));
        // Read: the console has "ok".
        h.put(0x8030_0000, &[0; 4]);
        ecall(&mut v, &mut h, EID_DBCN, 1, [4, 0x8030_0000, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v), (0, 2));
        assert_eq!(h.mem[&0x8030_0000], b'o');
        // Legacy getchar with nothing pending returns -1 in a0.
        ecall(&mut v, &mut h, 0x02, 0, [0; 6]);
        assert_eq!(v.regs.x[10], u64::MAX);
    }

    #[test]
    fn console_calls_without_a_console_fail() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        ecall(&mut v, &mut h, EID_DBCN, 2, [b'x' as u64, 0, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v).0, sbi_err::NOT_SUPPORTED);
        // Legacy: the error is the whole result in a0.
        ecall(&mut v, &mut h, 0x01, 0, [b'x' as u64, 0, 0, 0, 0, 0]);
        assert_eq!(v.regs.x[10] as i64, sbi_err::NOT_SUPPORTED);
    }

    #[test]
    fn hart_start_is_a_cpu_up_answered_by_the_vm_layer() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        let exit = ecall(
            &mut v,
            &mut h,
            EID_HSM,
            0,
            [1, 0x8000_2000, 0x5ec0_0001, 0, 0, 0],
        );
        assert_eq!(
            exit,
            Some(ExitReason::CpuUp {
                target_cpu: 1,
                entry_point: GuestPhysAddr::from_usize(0x8000_2000),
                arg: 0x5ec0_0001
            })
        );
        assert_eq!(v.pc(), PC, "not stepped until answered");
        assert_eq!(
            v.pending_sbi(),
            Some(PendingSbi {
                eid: EID_HSM,
                fid: 0
            })
        );
        v.set_return_value(0);
        assert_eq!(a0a1(&v), (0, 0));
        assert_eq!(v.pc(), PC + 4);
        // A second answer changes nothing.
        v.set_return_value(7);
        assert_eq!(v.pc(), PC + 4);
        // A refusal.
        ecall(&mut v, &mut h, EID_HSM, 0, [1, 0x8000_2000, 0, 0, 0, 0]);
        v.set_sbi_error(sbi_err::ALREADY_AVAILABLE);
        assert_eq!(a0a1(&v), (sbi_err::ALREADY_AVAILABLE, 0));
        assert_eq!(v.pc(), PC + 8);
    }

    #[test]
    fn started_vcpu_gets_hart_id_and_opaque() {
        let mut v = Riscv64VCpu::<Sv48x4>::new(1, 1, Riscv64CreateConfig::default()).unwrap();
        v.set_entry(GuestPhysAddr::from_usize(0x8000_0040)).unwrap();
        v.set_start_arg(0x5ec0_0001).unwrap();
        assert_eq!(v.gpr(10), Ok(1));
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
    fn hart_stop_and_system_reset() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        assert_eq!(
            ecall(&mut v, &mut h, EID_HSM, 1, [0; 6]),
            Some(ExitReason::CpuDown { state: 0 })
        );
        assert_eq!(
            ecall(&mut v, &mut h, EID_SRST, 0, [0, 0, 0, 0, 0, 0]),
            Some(ExitReason::SystemShutdown)
        );
        assert_eq!(
            ecall(&mut v, &mut h, EID_SRST, 0, [1, 0, 0, 0, 0, 0]),
            Some(ExitReason::SystemReset)
        );
        assert_eq!(
            ecall(&mut v, &mut h, 0x08, 0, [0; 6]),
            Some(ExitReason::SystemShutdown)
        );
        assert_eq!(
            ecall(&mut v, &mut h, EID_SRST, 0, [0xf000_0000, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(a0a1(&v).0, sbi_err::INVALID_PARAM);
    }

    #[test]
    fn our_extension_is_a_hypercall_with_its_fid() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        let exit = ecall(&mut v, &mut h, HVT, 2, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            exit,
            Some(ExitReason::Hypercall {
                nr: HVT,
                args: [1, 2, 3, 4, 5, 6]
            })
        );
        assert_eq!(v.pending_sbi(), Some(PendingSbi { eid: HVT, fid: 2 }));
        v.set_return_value(30);
        assert_eq!(a0a1(&v), (0, 30));
        assert_eq!(v.pc(), PC + 4);
        // IPI and hart_get_status go to the VM layer too.
        assert!(matches!(
            ecall(&mut v, &mut h, EID_IPI, 0, [1, 0, 0, 0, 0, 0]),
            Some(ExitReason::Hypercall { nr: EID_IPI, .. })
        ));
        v.set_return_value(0);
        assert!(matches!(
            ecall(&mut v, &mut h, EID_HSM, 2, [1, 0, 0, 0, 0, 0]),
            Some(ExitReason::Hypercall { nr: EID_HSM, .. })
        ));
        assert_eq!(
            v.pending_sbi(),
            Some(PendingSbi {
                eid: EID_HSM,
                fid: 2
            })
        );
    }

    #[test]
    fn timer_needs_sstc() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        ecall(&mut v, &mut h, EID_TIME, 0, [1000, 0, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v).0, sbi_err::NOT_SUPPORTED);
        h.sstc = true;
        ecall(&mut v, &mut h, EID_TIME, 0, [1000, 0, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v), (0, 0));
        assert_eq!(h.timer, Some(1000));
        // Legacy set_timer: result in a0 only.
        ecall(&mut v, &mut h, 0x00, 0, [2000, 0xdead, 0, 0, 0, 0]);
        assert_eq!(a0a1(&v), (0, 0xdead));
        assert_eq!(h.timer, Some(2000));
    }

    #[test]
    fn remote_fences_go_to_every_hart() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        ecall(
            &mut v,
            &mut h,
            crate::firmware::EID_RFENCE,
            1,
            [1, 0, 0x4000, 0x1000, 0, 0],
        );
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
        ecall(
            &mut v,
            &mut h,
            crate::firmware::EID_RFENCE,
            0,
            [1, 0, 0, 0, 0, 0],
        );
        assert_eq!(a0a1(&v).0, sbi_err::FAILED);
    }

    /// A load from the test device's NEGATIVE register with `c.lw a0, 0(a1)` (0x4188):
    /// QEMU reports htinst = 0x2501 (`lw a0, 0(x0)` with bit 1 clear). The value read
    /// is sign-extended from 32 bits and the PC advances by 2.
    #[test]
    fn mmio_load_from_htinst_compressed() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        h.put(PC, &0x4188u16.to_le_bytes());
        let gpa = 0x0b00_0018u64;
        let exit = trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, gpa, 0x2501),
        );
        let g = GuestPhysAddr::from_usize(gpa as usize);
        assert_eq!(
            exit,
            Some(ExitReason::NestedPageFault {
                gpa: g,
                access: AccessKind::Read
            })
        );
        let access = v.decode_mmio_with(&mut h, g, AccessKind::Read, &Mem(&MockHart::default()));
        let access = access.unwrap();
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
                cross_checked: 1,
                mismatches: 0
            }
        );
        v.complete_mmio(&access, Some(0xffff_fffe)).unwrap();
        assert_eq!(v.gpr(10), Ok(0xffff_ffff_ffff_fffe));
        assert_eq!(v.pc(), PC + 2);
    }

    /// Without htinst the instruction is fetched with HLVX: `sd a0, 16(a1)` as two
    /// halves; the stored value is cut to the width.
    #[test]
    fn mmio_store_fetched_32_bit() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        h.put(PC, &0x00a5_b823u32.to_le_bytes());
        v.regs.x[10] = 0x1122_3344_5566_7788;
        let gpa = 0x0b00_0008u64;
        trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::STORE_GUEST_PAGE_FAULT, gpa, 0),
        );
        let g = GuestPhysAddr::from_usize(gpa as usize);
        let access = v
            .decode_mmio_with(&mut h, g, AccessKind::Write, &Mem(&MockHart::default()))
            .unwrap();
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
        trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::STORE_GUEST_PAGE_FAULT, gpa, 0),
        );
        let access = v
            .decode_mmio_with(&mut h, g, AccessKind::Write, &Mem(&MockHart::default()))
            .unwrap();
        assert_eq!(access.op, MmioOp::Write { value: 0x88 });
    }

    /// When HLVX faults (the page is not executable in the G-stage) and the guest's
    /// translation is off, the instruction is read through guest memory.
    #[test]
    fn mmio_fetch_falls_back_to_guest_memory() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        h.no_exec.push(PC & !0xfff);
        let mut mem = MockHart::default();
        // lhu a0, 0(a1)
        mem.put(PC, &0x0005_d503u32.to_le_bytes());
        trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, 0x0b00_0000, 0),
        );
        let g = GuestPhysAddr::from_usize(0x0b00_0000);
        let access = v
            .decode_mmio_with(&mut h, g, AccessKind::Read, &Mem(&mem))
            .unwrap();
        assert_eq!(access.width, AccessWidth::Word);
        assert!(matches!(
            access.op,
            MmioOp::Read {
                sign_extend: false,
                ..
            }
        ));
        // With the guest's paging on, the fallback is not allowed.
        h.vs.insert("vsatp", 8 << 60);
        trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, 0x0b00_0000, 0),
        );
        assert_eq!(
            v.decode_mmio_with(&mut h, g, AccessKind::Read, &Mem(&mem)),
            Err(MmioDecodeError::Fetch { pc: PC })
        );
    }

    #[test]
    fn undecodable_accesses_are_errors_with_the_pc() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        // amoadd.w a0, a1, (a2) at the PC, no htinst.
        h.put(PC, &0x00b6_252fu32.to_le_bytes());
        let fault = guest_page_fault(exception::STORE_GUEST_PAGE_FAULT, 0x0b00_0000, 0);
        trap(&mut v, &mut h, fault);
        let g = GuestPhysAddr::from_usize(0x0b00_0000);
        let none = MockHart::default();
        assert_eq!(
            v.decode_mmio_with(&mut h, g, AccessKind::Write, &Mem(&none)),
            Err(MmioDecodeError::Unsupported {
                pc: PC,
                insn: 0x00b6_252f
            })
        );
        // The guest's page-table walk hit the device (pseudoinstruction 0x3000).
        trap(
            &mut v,
            &mut h,
            TrapInfo {
                htinst: 0x3000,
                scause: exception::LOAD_GUEST_PAGE_FAULT,
                ..fault
            },
        );
        assert_eq!(
            v.decode_mmio_with(&mut h, g, AccessKind::Read, &Mem(&none)),
            Err(MmioDecodeError::Unsupported {
                pc: PC,
                insn: 0x3000
            })
        );
        // Nothing at the PC at all.
        let mut empty = MockHart::default();
        trap(&mut v, &mut empty, fault);
        assert_eq!(
            v.decode_mmio_with(&mut empty, g, AccessKind::Write, &Mem(&none)),
            Err(MmioDecodeError::Fetch { pc: PC })
        );
        // A load instruction reported as a store fault.
        h.put(PC, &0x0005_8503u32.to_le_bytes());
        trap(&mut v, &mut h, fault);
        assert!(matches!(
            v.decode_mmio_with(&mut h, g, AccessKind::Write, &Mem(&none)),
            Err(MmioDecodeError::Unsupported { pc: PC, .. })
        ));
        // No fault at all.
        ecall(&mut v, &mut h, 0x10, 0, [0; 6]);
        assert_eq!(
            v.decode_mmio_with(&mut h, g, AccessKind::Read, &Mem(&none)),
            Err(MmioDecodeError::NotAFault)
        );
    }

    /// htinst says `lw` but the instruction is `lb`: counted as a mismatch, and the
    /// hart's htinst is used.
    #[test]
    fn cross_check_counts_disagreements() {
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        h.put(PC, &0x0005_8503u32.to_le_bytes());
        trap(
            &mut v,
            &mut h,
            guest_page_fault(exception::LOAD_GUEST_PAGE_FAULT, 0x0b00_0000, 0x2503),
        );
        let g = GuestPhysAddr::from_usize(0x0b00_0000);
        let a = v
            .decode_mmio_with(&mut h, g, AccessKind::Read, &Mem(&MockHart::default()))
            .unwrap();
        assert_eq!(a.width, AccessWidth::Dword);
        assert_eq!(v.decode_stats().mismatches, 1);
    }

    #[test]
    fn complete_mmio_zero_extends_and_ignores_x0() {
        let mut v = vcpu(None);
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

    #[test]
    fn wfi_halts_and_other_virtual_instructions_become_illegal() {
        let mut v = vcpu(None);
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
        h.put(0x8000_0100, &(WFI as u32).to_le_bytes());
        assert_eq!(trap(&mut v, &mut h, virt(0)), Some(ExitReason::Halt));
    }

    #[test]
    fn interrupts_and_kicks() {
        let mut v = vcpu(None);
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
        let mut v = vcpu(None);
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
        let mut w = Riscv64VCpu::<Sv48x4>::new(3, 0, Riscv64CreateConfig::default()).unwrap();
        w.set_nested_root(HostPhysAddr::from_usize(0x8040_4000))
            .unwrap();
        assert_eq!(w.hgatp() >> 60, 9);
        assert_eq!(crate::regs::hgatp::vmid(w.hgatp()), 3);
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
        let mut v = Riscv64VCpu::<Sv39x4>::new(0, 0, Riscv64CreateConfig::default()).unwrap();
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
        let mut v = vcpu(None);
        let mut h = MockHart::default();
        let f = TrapInfo {
            scause: exception::LOAD_GUEST_PAGE_FAULT,
            stval: 0x9000_0008,
            htval: 0,
            htinst: 0,
        };
        assert_eq!(
            trap(&mut v, &mut h, f),
            Some(ExitReason::NestedPageFault {
                gpa: GuestPhysAddr::from_usize(0x9000_0008),
                access: AccessKind::Read
            })
        );
        h.vs.insert("vsatp", 8 << 60);
        assert_eq!(
            trap(&mut v, &mut h, f),
            Some(ExitReason::NestedPageFault {
                gpa: GuestPhysAddr::from_usize(usize::MAX),
                access: AccessKind::Read
            })
        );
    }
}
