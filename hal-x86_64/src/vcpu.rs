//! [`SvmVCpu`]: an AMD SVM virtual CPU with nested paging, implementing
//! [`vcpu_api::ArchVCpu`] with `Format = addrspace::Npt`.
//!
//! One VMCB, I/O permission map and MSR permission map per vCPU (every port and
//! every MSR intercepted: the VM layer decides), nCR3 = the VM's NPT root, the ASID
//! of its VM. The guest starts in 64-bit long mode with flat segments and the CR3
//! given at setup. Exits are decoded by [`crate::exit`]; CPUID is answered here,
//! everything else goes to the caller as an [`ExitReason`].
//!
//! Floating point: the hypervisor (`x86_64-unknown-none`, soft-float) never touches
//! x87/SSE registers, so the guest's stay live across exits without a save.

use core::fmt;

use addrspace::{AccessKind, FrameAllocator, GuestPhysAddr, HostPhysAddr, Npt, PAGE_SIZE};
use vcpu_api::{
    ArchVCpu, Conduit, CpuidRegs, ExitReason, FaultInsn, FetchError, FirmwareReply, GuestCall,
    GuestMemory, InsnBytes, MmioAccess, MmioDecodeError, MmioOp, NestedFault, PortIo, PortOp,
    SysRegAccess, SysRegAddr, SysRegOp, VCpuError, VCpuResult,
};

use crate::context::{RAX, RBX, RCX, RDI, RDX, RSP, long_mode_start};
use crate::cpu;
use crate::exit::{NpfErrorCode, SvmExit};
use crate::firmware;
use crate::guest_paging::{GuestPaging, WalkError};
use crate::mmio::{self as insn, MAX_INSN_LEN};
use crate::mode::CpuMode;
use crate::permission;
use crate::vmcb::{Frames, Vmcb, intercept1, intercept2, tlb_control};

/// How the guest starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmSetupConfig {
    /// The guest's CR3: identity page tables the platform placed in guest RAM
    /// (see [`crate::guest_paging::identity_tables`]). The guest starts in 64-bit
    /// mode at CPL 0 with interrupts off.
    pub guest_cr3: u64,
}

/// An SVM vCPU whose VMCB and permission maps come from the frame allocator `F`
/// (`F::default()`, e.g. `vm_core`'s HAL-backed frames).
pub struct SvmVCpu<F: FrameAllocator + Default> {
    vm_id: usize,
    vcpu_id: usize,
    frames: Frames<F>,
    /// General registers by index (RAX and RSP live in the VMCB; their slots here
    /// are unused), laid out for the VMRUN trampoline.
    gprs: [u64; 16],
    nested_root: Option<HostPhysAddr>,
    entry_set: bool,
    flush_control: u8,
    flush_pending: bool,
    /// VMRUNs that carried a TLB flush (TLB_CONTROL != 0).
    flushed_entries: u64,
}

impl<F: FrameAllocator + Default> fmt::Debug for SvmVCpu<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.vmcb();
        f.debug_struct("SvmVCpu")
            .field("vm", &self.vm_id)
            .field("vcpu", &self.vcpu_id)
            .field("rip", &format_args!("{:#x}", v.save.rip))
            .field("asid", &v.control.guest_asid)
            .field("ncr3", &format_args!("{:#x}", v.control.n_cr3))
            .finish()
    }
}

impl<F: FrameAllocator + Default> SvmVCpu<F> {
    fn vmcb(&self) -> &Vmcb {
        // SAFETY: the VMCB frame is owned by this vCPU and initialised in
        // `Frames::new`; the hardware only writes it during `run`, which takes
        // `&mut self`.
        unsafe { &*self.frames.vmcb_ptr() }
    }

    fn vmcb_mut(&mut self) -> &mut Vmcb {
        // SAFETY: as in `vmcb`, and `&mut self` makes this the only reference.
        unsafe { &mut *self.frames.vmcb_ptr() }
    }

    /// The VM id.
    pub fn vm_id(&self) -> usize {
        self.vm_id
    }

    /// The vCPU id.
    pub fn vcpu_id(&self) -> usize {
        self.vcpu_id
    }

    /// The host-physical address of the VMCB.
    pub fn vmcb_pa(&self) -> HostPhysAddr {
        self.frames.vmcb
    }

    /// The exit code and EXITINFO1/2 of the last exit (for diagnostics).
    pub fn last_exit_info(&self) -> (u64, u64, u64) {
        let c = &self.vmcb().control;
        (c.exit_code, c.exit_info_1, c.exit_info_2)
    }

    /// The guest's paging registers.
    pub fn guest_paging(&self) -> GuestPaging {
        let s = &self.vmcb().save;
        GuestPaging {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }
    }

    /// The guest's operating mode now (the VMCB holds it as of the last #VMEXIT).
    pub fn mode(&self) -> CpuMode {
        let s = &self.vmcb().save;
        CpuMode::of(s.cr0, s.efer, s.rflags, s.cs.attrib)
    }

    /// Whether the next VMRUN flushes this guest's TLB entries.
    pub fn flush_pending(&self) -> bool {
        self.flush_pending
    }

    /// How many VMRUNs of this vCPU carried a TLB flush (after creation, nCR3
    /// changes and [`ArchVCpu::invalidate_guest_tlb`]).
    pub fn flushed_entries(&self) -> u64 {
        self.flushed_entries
    }

    fn advance_rip(&mut self, len: u64) {
        let s = &mut self.vmcb_mut().save;
        s.rip = s.rip.wrapping_add(len);
    }

    /// Steps RIP over the instruction of a fixed-length intercept.
    fn skip(&mut self, exit: SvmExit) {
        if let Some(len) = exit.fixed_insn_len() {
            self.advance_rip(len);
        }
    }

    /// What the host's CPUID answers for the guest's EAX and ECX.
    #[cfg(target_arch = "x86_64")]
    fn host_cpuid(&self) -> VCpuResult<CpuidRegs> {
        let (eax, ebx, ecx, edx) = cpu::cpuid(
            vcpu_api::low_u32(self.vmcb().save.rax),
            vcpu_api::low_u32(self.gprs[RCX]),
        );
        Ok(CpuidRegs { eax, ebx, ecx, edx })
    }

    /// Off x86_64 there is no CPUID to run.
    #[cfg(not(target_arch = "x86_64"))]
    fn host_cpuid(&self) -> VCpuResult<CpuidRegs> {
        Err(VCpuError::Unsupported {
            feature: "CPUID off x86_64",
        })
    }

    /// What a nested page fault says about its instruction: its bytes when the
    /// processor gave them (decode assists fill the VMCB's guest instruction bytes),
    /// else nothing (the decoder fetches it through guest memory in the guest's
    /// mode); a fault of the guest's own page walk or an instruction fetch cannot
    /// be emulated.
    fn fault_insn(&self, error: NpfErrorCode) -> FaultInsn {
        let pc = self.vmcb().save.rip;
        let c = &self.vmcb().control;
        if error.guest_table_walk() {
            FaultInsn::Refused(MmioDecodeError::TableWalk { pc })
        } else if error.access() == AccessKind::Execute {
            FaultInsn::Refused(MmioDecodeError::Execute { pc })
        } else if c.insn_len > 0 {
            let n = usize::from(c.insn_len).min(c.insn_bytes.len());
            FaultInsn::Bytes(InsnBytes::new(&c.insn_bytes[..n]))
        } else {
            FaultInsn::Fetch
        }
    }

    /// Turns a decoded exit into what the caller sees; `None` when it was handled
    /// here and the guest runs again.
    fn handle_exit(&mut self, exit: SvmExit) -> VCpuResult<Option<ExitReason>> {
        let rip = self.vmcb().save.rip;
        Ok(Some(match exit {
            SvmExit::NestedPageFault { gpa, error } => ExitReason::NestedPageFault(NestedFault {
                gpa,
                access: error.access(),
                insn: self.fault_insn(error),
            }),
            SvmExit::Io { info, next_rip } => {
                if info.string || info.rep {
                    return Err(VCpuError::InvalidValue {
                        what: "RIP of a string/REP port I/O instruction (not emulated)",
                        value: rip,
                    });
                }
                self.vmcb_mut().save.rip = next_rip;
                ExitReason::Io(PortIo {
                    port: info.port,
                    width: info.width,
                    op: if info.is_in {
                        PortOp::Read
                    } else {
                        PortOp::Write {
                            data: info.width.truncate(self.vmcb().save.rax),
                        }
                    },
                })
            }
            SvmExit::Vmmcall => ExitReason::Call(GuestCall {
                call: firmware::decode_vmmcall(self.vmcb().save.rax, &self.gprs),
                conduit: Conduit::Vmmcall,
            }),
            SvmExit::Hlt => {
                self.skip(exit);
                ExitReason::Halt
            }
            SvmExit::Pause => {
                self.skip(exit);
                return Ok(None);
            }
            SvmExit::Cpuid => ExitReason::Call(GuestCall {
                call: firmware::decode_cpuid(
                    self.vmcb().save.rax,
                    self.gprs[RCX],
                    self.host_cpuid()?,
                ),
                conduit: Conduit::Cpuid,
            }),
            SvmExit::Msr { write } => ExitReason::SysReg(SysRegAccess {
                addr: SysRegAddr(vcpu_api::low_u32(self.gprs[RCX])),
                op: if write {
                    SysRegOp::Write {
                        value: (self.gprs[RDX] << 32) | (self.vmcb().save.rax & 0xffff_ffff),
                    }
                } else {
                    SysRegOp::Read { reg: RAX }
                },
            }),
            // A triple fault resets an x86 machine.
            SvmExit::Shutdown => ExitReason::Reset,
            // The vector is not known at the exit: the host takes the interrupt
            // through its own IDT once it sets RFLAGS.IF.
            SvmExit::Intr => ExitReason::ExternalInterrupt { vector: 0 },
            SvmExit::Nmi => ExitReason::ExternalInterrupt { vector: 2 },
            SvmExit::Invalid => ExitReason::FailEntry {
                reason: crate::exit::code::INVALID,
            },
            SvmExit::Exception { vector, .. } => {
                return Err(VCpuError::InvalidValue {
                    what: "exception vector of an intercept we never set",
                    value: vector.into(),
                });
            }
            SvmExit::Vmrun => {
                return Err(VCpuError::InvalidValue {
                    what: "RIP of a guest VMRUN (nested SVM is not offered)",
                    value: rip,
                });
            }
            SvmExit::Other { code } => {
                return Err(VCpuError::InvalidValue {
                    what: "SVM exit code not intercepted",
                    value: code,
                });
            }
        }))
    }

    /// Fetches up to 15 instruction bytes at guest RIP, in the guest's mode: from
    /// the linear address CS base + IP/EIP (RIP in 64-bit mode), through the guest's
    /// page tables; returns the bytes readable (at least one).
    fn fetch_insn(&self, mem: &dyn GuestMemory) -> Result<InsnBytes, MmioDecodeError> {
        let save = &self.vmcb().save;
        let (rip, cs_base) = (save.rip, save.cs.base);
        let mode = self.mode();
        let paging = self.guest_paging();
        let mut buf = [0u8; MAX_INSN_LEN];
        let mut have = 0;
        let mut first_error = None;
        while have < MAX_INSN_LEN {
            let va = mode.code_address(cs_base, rip, have as u64);
            let gpa = match paging.translate(va, mem) {
                Ok(gpa) => gpa,
                Err(e) => {
                    first_error = Some(walk_error(rip, va, e));
                    break;
                }
            };
            // Up to the end of the page, or where the IP/EIP wraps.
            let in_page = PAGE_SIZE - (vcpu_api::usize_of(va) & (PAGE_SIZE - 1));
            let before_wrap = mode.bytes_before_wrap(rip, have as u64);
            let n = in_page
                .min(MAX_INSN_LEN - have)
                .min(usize::try_from(before_wrap).unwrap_or(usize::MAX));
            if let Err(error) = mem.read(gpa, &mut buf[have..have + n]) {
                first_error = Some(MmioDecodeError::Fetch {
                    pc: rip,
                    error: FetchError::Memory { gpa, error },
                });
                break;
            }
            have += n;
        }
        match (have, first_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(InsnBytes::new(&buf[..have])),
        }
    }
}

/// A failed walk of the guest's page tables for the instruction at `pc`, byte `va`.
fn walk_error(pc: u64, va: u64, e: WalkError) -> MmioDecodeError {
    match e {
        WalkError::NotPresent { .. } => MmioDecodeError::Fetch {
            pc,
            error: FetchError::GuestUnmapped { va },
        },
        WalkError::TableNotInRam { entry_gpa, error } => MmioDecodeError::Fetch {
            pc,
            error: FetchError::Memory {
                gpa: vcpu_api::gpa_of(entry_gpa),
                error,
            },
        },
        WalkError::UnsupportedMode { paging } => MmioDecodeError::Mode { pc, mode: paging },
    }
}

impl<F: FrameAllocator + Default> Drop for SvmVCpu<F> {
    fn drop(&mut self) {
        log::trace!("vCPU {}/{} dropped", self.vm_id, self.vcpu_id);
    }
}

impl<F: FrameAllocator + Default> ArchVCpu for SvmVCpu<F> {
    type Format = Npt;
    type CreateConfig = ();
    type SetupConfig = SvmSetupConfig;

    fn claim_vm(vm_id: usize) -> VCpuResult {
        let cpu = cpu::cpu().ok_or(VCpuError::Unsupported {
            feature: "SVM enabled on this CPU (call hal_x86_64::cpu::enable first)",
        })?;
        cpu.features.claim_asid(vm_id).map(|_| ())
    }

    fn release_vm(vm_id: usize) {
        crate::tlb::release_asid(vm_id);
    }

    fn vm_tag(vm_id: usize) -> Option<u16> {
        crate::tlb::asid_of(vm_id).and_then(|a| u16::try_from(a).ok())
    }

    fn new(vm_id: usize, vcpu_id: usize, _config: ()) -> VCpuResult<Self> {
        let cpu = cpu::cpu().ok_or(VCpuError::Unsupported {
            feature: "SVM enabled on this CPU (call hal_x86_64::cpu::enable first)",
        })?;
        let asid = crate::tlb::asid_of(vm_id).ok_or(VCpuError::NotConfigured {
            missing: "the VM's ASID (ArchVCpu::claim_vm)",
        })?;
        let frames = Frames::new(F::default())?;
        let mut vcpu = Self {
            vm_id,
            vcpu_id,
            frames,
            gprs: [0; 16],
            nested_root: None,
            entry_set: false,
            flush_control: cpu.features.flush_control(),
            // The ASID may have been used by an earlier VM.
            flush_pending: true,
            flushed_entries: 0,
        };
        let iopm = vcpu.frames.iopm.as_usize() as u64;
        let msrpm = vcpu.frames.msrpm.as_usize() as u64;
        let c = &mut vcpu.vmcb_mut().control;
        c.intercept1 = intercept1::INTR
            | intercept1::NMI
            | intercept1::SMI
            | intercept1::INIT
            | intercept1::CPUID
            | intercept1::HLT
            | intercept1::INVLPGA
            | intercept1::IOIO_PROT
            | intercept1::MSR_PROT
            | intercept1::SHUTDOWN;
        c.intercept2 = intercept2::VMRUN
            | intercept2::VMMCALL
            | intercept2::VMLOAD
            | intercept2::VMSAVE
            | intercept2::STGI
            | intercept2::CLGI
            | intercept2::SKINIT;
        c.iopm_base_pa = iopm;
        c.msrpm_base_pa = msrpm;
        c.guest_asid = asid;
        // V_INTR_MASKING: the guest's RFLAGS.IF masks only virtual interrupts, so
        // physical ones always reach the host (APM 15.21.1).
        c.int_control = 1 << 24;
        Ok(vcpu)
    }

    /// The APIC id the guest names this vCPU by: its index.
    fn cpu_id(&self) -> u64 {
        self.vcpu_id as u64
    }

    fn set_nested_root(&mut self, root: HostPhysAddr) -> VCpuResult {
        let raw = root.as_usize() as u64;
        if raw & 0xfff != 0 || raw >> 52 != 0 {
            return Err(VCpuError::InvalidValue {
                what: "nested root (nCR3)",
                value: raw,
            });
        }
        self.nested_root = Some(root);
        let c = &mut self.vmcb_mut().control;
        c.nested_ctl = 1; // NP_ENABLE
        c.n_cr3 = raw;
        self.flush_pending = true;
        Ok(())
    }

    fn set_entry(&mut self, entry: GuestPhysAddr) -> VCpuResult {
        let rip = entry.as_usize() as u64;
        // A canonical 48-bit address.
        if ((rip << 16) as i64 >> 16) as u64 != rip {
            return Err(VCpuError::InvalidValue {
                what: "entry point (not canonical)",
                value: rip,
            });
        }
        self.vmcb_mut().save.rip = rip;
        self.entry_set = true;
        Ok(())
    }

    fn setup(&mut self, config: SvmSetupConfig) -> VCpuResult {
        if config.guest_cr3 & 0xfff != 0 {
            return Err(VCpuError::InvalidValue {
                what: "guest CR3",
                value: config.guest_cr3,
            });
        }
        long_mode_start(&mut self.vmcb_mut().save, config.guest_cr3);
        Ok(())
    }

    fn bind(&mut self) -> VCpuResult {
        // This CPU may hold translations of an earlier VM that had the ASID, or this
        // vCPU's own from before it moved here: flush before the first VMRUN.
        self.flush_pending = true;
        Ok(())
    }

    fn unbind(&mut self) -> VCpuResult {
        Ok(())
    }

    fn run(&mut self) -> VCpuResult<ExitReason> {
        if self.nested_root.is_none() {
            return Err(VCpuError::NotConfigured {
                missing: "nested root",
            });
        }
        if !self.entry_set {
            return Err(VCpuError::NotConfigured {
                missing: "entry point",
            });
        }
        #[cfg(target_arch = "x86_64")]
        {
            let host_vmcb = cpu::cpu()
                .ok_or(VCpuError::Unsupported {
                    feature: "SVM enabled on this CPU",
                })?
                .host_vmcb
                .as_usize() as u64;
            loop {
                let flush = if self.flush_pending {
                    self.flush_control
                } else {
                    tlb_control::DO_NOTHING
                };
                let c = &mut self.vmcb_mut().control;
                c.tlb_control = flush;
                c.clean_bits = 0;
                let vmcb_pa = self.frames.vmcb.as_usize() as u64;
                // SAFETY: the VMCB, IOPM and MSRPM are this vCPU's frames, set up
                // in `new`/`setup`; nCR3 is the VM's NPT root (kept alive by the
                // VM layer while its vCPUs exist); SVM is enabled with a host save
                // area; the trampoline restores every callee-saved register.
                unsafe { crate::entry::vmrun(&mut self.gprs, vmcb_pa, host_vmcb) };
                self.flush_pending = false;
                if flush != tlb_control::DO_NOTHING {
                    self.flushed_entries += 1;
                }
                let c = &mut self.vmcb_mut().control;
                c.tlb_control = tlb_control::DO_NOTHING;
                let (code, info1, info2) = (c.exit_code, c.exit_info_1, c.exit_info_2);
                let exit = SvmExit::decode(code, info1, info2)?;
                if let Some(reason) = self.handle_exit(exit)? {
                    return Ok(reason);
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Err(VCpuError::Unsupported {
            feature: "VMRUN off x86_64",
        })
    }

    fn gpr(&self, index: usize) -> VCpuResult<u64> {
        match index {
            RAX => Ok(self.vmcb().save.rax),
            RSP => Ok(self.vmcb().save.rsp),
            5..16 | 1..4 => Ok(self.gprs[index]),
            _ => Err(VCpuError::InvalidRegister { index }),
        }
    }

    fn set_gpr(&mut self, index: usize, value: u64) -> VCpuResult {
        match index {
            RAX => self.vmcb_mut().save.rax = value,
            RSP => self.vmcb_mut().save.rsp = value,
            5..16 | 1..4 => self.gprs[index] = value,
            _ => return Err(VCpuError::InvalidRegister { index }),
        }
        Ok(())
    }

    fn pc(&self) -> u64 {
        self.vmcb().save.rip
    }

    fn set_start_arg(&mut self, arg: u64) -> VCpuResult {
        self.gprs[RDI] = arg;
        Ok(())
    }

    fn inject_interrupt(&mut self, vector: usize) -> VCpuResult {
        self.vmcb_mut().control.event_inj = crate::interrupt::external_interrupt(vector)?;
        Ok(())
    }

    fn invalidate_guest_tlb(&mut self) {
        self.flush_pending = true;
    }

    fn decode_mmio(
        &self,
        fault: &NestedFault,
        mem: &dyn GuestMemory,
    ) -> Result<MmioAccess, MmioDecodeError> {
        let pc = self.vmcb().save.rip;
        let bytes = match fault.insn {
            FaultInsn::Decoded(insn) => return Ok(insn.at(fault.gpa)),
            FaultInsn::Refused(e) => return Err(e),
            FaultInsn::Bytes(b) => b,
            FaultInsn::Fetch => self.fetch_insn(mem)?,
        };
        let unsupported = |why| MmioDecodeError::Unsupported {
            pc,
            insn: bytes.first8(),
            why,
        };
        let size = self.mode().code_size();
        let decoded = insn::decode(bytes.as_slice(), size, |i| self.gpr(i).unwrap_or(0))
            .map_err(|e| unsupported(e.why()))?;
        // A load must have caused a read fault, a store a write fault.
        match (decoded.op, fault.access) {
            (MmioOp::Read { .. }, AccessKind::Read) | (MmioOp::Write { .. }, AccessKind::Write) => {
                Ok(MmioAccess {
                    gpa: fault.gpa,
                    width: decoded.width,
                    op: decoded.op,
                    insn_len: decoded.len,
                })
            }
            _ => Err(unsupported("not the access the fault reported")),
        }
    }

    fn complete_mmio(&mut self, access: &MmioAccess, read_value: Option<u64>) -> VCpuResult {
        if let (MmioOp::Read { reg, .. }, Some(value)) = (access.op, read_value) {
            let old = self.gpr(reg)?;
            self.set_gpr(reg, access.load_result(old, value))?;
        }
        self.advance_rip(u64::from(access.insn_len));
        Ok(())
    }

    /// `VMMCALL`: RAX gets the reply; `CPUID`: EAX, EBX, ECX, EDX; then RIP steps
    /// over the instruction.
    fn complete_call(&mut self, call: &GuestCall, reply: FirmwareReply) -> VCpuResult {
        let refused = VCpuError::InvalidValue {
            what: "firmware reply of this kind to a VMMCALL or CPUID",
            value: 0,
        };
        match (call.conduit, reply) {
            (Conduit::Cpuid, FirmwareReply::Cpuid(r)) => {
                self.vmcb_mut().save.rax = u64::from(r.eax);
                self.gprs[RBX] = u64::from(r.ebx);
                self.gprs[RCX] = u64::from(r.ecx);
                self.gprs[RDX] = u64::from(r.edx);
                self.skip(SvmExit::Cpuid);
            }
            (Conduit::Vmmcall, reply) => {
                self.vmcb_mut().save.rax = firmware::encode_vmmcall_reply(reply).ok_or(refused)?;
                self.skip(SvmExit::Vmmcall);
            }
            _ => return Err(refused),
        }
        Ok(())
    }

    /// RDMSR: EDX:EAX get the value; then RIP steps over RDMSR/WRMSR.
    fn complete_sysreg(&mut self, access: &SysRegAccess, read_value: Option<u64>) -> VCpuResult {
        let write = match (access.op, read_value) {
            (SysRegOp::Read { .. }, Some(value)) => {
                self.vmcb_mut().save.rax = value & 0xffff_ffff;
                self.gprs[RDX] = value >> 32;
                false
            }
            (SysRegOp::Read { .. }, None) => false,
            (SysRegOp::Write { .. }, _) => true,
        };
        self.skip(SvmExit::Msr { write });
        Ok(())
    }

    fn complete_io(&mut self, io: &PortIo, read_value: Option<u64>) -> VCpuResult {
        if let (PortOp::Read, Some(value)) = (io.op, read_value) {
            let rax = &mut self.vmcb_mut().save.rax;
            *rax = io.width.write_register(*rax, value);
        }
        Ok(())
    }

    fn pass_through_ports(&mut self, first: u16, count: u16) -> VCpuResult {
        let end = u32::from(first) + u32::from(count);
        if end > 0x1_0000 {
            return Err(VCpuError::InvalidValue {
                what: "port range (past port 0xffff)",
                value: u64::from(first),
            });
        }
        let iopm = self.frames.iopm_mut();
        // `first + i` stays at or below 0xffff: checked above.
        for i in 0..count {
            permission::set_bit(iopm, permission::iopm_bit(first + i), false);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::sync::Mutex;
    use std::vec::Vec;

    use addrspace::HostVirtAddr;
    use vcpu_api::AccessWidth;

    use super::*;
    use crate::context::RSI;
    use crate::cpu::SvmFeatures;
    use crate::exit::code;
    use crate::mode::CodeSize;
    use crate::regs::{CR0_PE, EFER_SVME, GUEST_CR0};

    /// Host memory as frames: a leaked, page-aligned buffer shared by all tests.
    #[derive(Default, Clone, Copy)]
    struct TestFrames;

    static POOL: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

    // SAFETY: every allocation is a fresh leaked, page-aligned buffer never reused.
    unsafe impl FrameAllocator for TestFrames {
        fn alloc_frames(&self, count: usize, _align: usize) -> Option<HostPhysAddr> {
            let layout = std::alloc::Layout::from_size_align(count * 4096, 4096).ok()?;
            // SAFETY: non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) } as usize;
            POOL.lock().ok()?.push((p, count));
            Some(HostPhysAddr::from_usize(p))
        }
        unsafe fn dealloc_frames(&self, hpa: HostPhysAddr, count: usize) {
            let mut pool = POOL.lock().unwrap();
            let i = pool
                .iter()
                .position(|&(p, c)| p == hpa.as_usize() && c == count)
                .expect("freed what was allocated");
            pool.swap_remove(i);
        }
        fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
            HostVirtAddr::from_usize(hpa.as_usize())
        }
    }

    fn vcpu() -> SvmVCpu<TestFrames> {
        crate::cpu::set_cpu_for_tests(SvmFeatures::from_cpuid(1 << 2, 1, 16, 1).unwrap());
        // VM 0's ASID, claimed once for the tests (they share the table).
        let _ = SvmVCpu::<TestFrames>::claim_vm(0);
        let mut v = SvmVCpu::<TestFrames>::new(0, 0, ()).unwrap();
        v.setup(SvmSetupConfig { guest_cr3: 0x1000 }).unwrap();
        v.set_entry(GuestPhysAddr::from_usize(0x10_0000)).unwrap();
        v
    }

    /// Pretends the hardware exited with `code`, `info1`, `info2`.
    fn exit(v: &mut SvmVCpu<TestFrames>, code: u64, info1: u64, info2: u64) -> Option<ExitReason> {
        let e = SvmExit::decode(code, info1, info2).unwrap();
        v.handle_exit(e).unwrap()
    }

    /// Guest memory: the identity tables at 0x1000 and `code` at 0x10_0000.
    struct Mem(Vec<u8>);
    impl GuestMemory for Mem {
        fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), addrspace::Error> {
            let a = gpa.as_usize();
            match self.0.get(a..a + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(addrspace::Error::NotMapped { gpa }),
            }
        }
    }

    fn memory_with(insn_at: usize, insn: &[u8]) -> Mem {
        let mut m = std::vec![0u8; 0x20_0000];
        for (i, t) in crate::guest_paging::identity_tables(0x1000)
            .iter()
            .enumerate()
        {
            for (j, e) in t.iter().enumerate() {
                let a = 0x1000 + i * 0x1000 + j * 8;
                m[a..a + 8].copy_from_slice(&e.to_le_bytes());
            }
        }
        m[insn_at..insn_at + insn.len()].copy_from_slice(insn);
        Mem(m)
    }

    #[test]
    fn new_vcpu_intercepts_what_the_vm_layer_needs() {
        let v = vcpu();
        let c = &v.vmcb().control;
        assert_ne!(
            c.intercept2 & intercept2::VMRUN,
            0,
            "VMRUN must be intercepted"
        );
        for bit in [
            intercept1::HLT,
            intercept1::IOIO_PROT,
            intercept1::MSR_PROT,
            intercept1::CPUID,
            intercept1::SHUTDOWN,
            intercept1::INTR,
        ] {
            assert_ne!(c.intercept1 & bit, 0);
        }
        assert_ne!(c.intercept2 & intercept2::VMMCALL, 0);
        assert_eq!(Some(c.guest_asid), crate::tlb::asid_of(0));
        let s = &v.vmcb().save;
        assert_eq!(s.efer & EFER_SVME, EFER_SVME);
        assert_eq!(s.cr3, 0x1000);
        assert_eq!(s.rip, 0x10_0000);
        assert!(v.flush_pending());
        let iopm = v.frames.iopm.as_usize() as *const u8;
        // SAFETY: the vCPU owns 12 KiB there.
        assert_eq!(unsafe { *iopm.add(0x3f8 / 8) }, 0xff);
    }

    /// Passed-through ports no longer exit: exactly their IOPM bits are cleared,
    /// up to port 0xffff; a range past it is refused and changes nothing.
    #[test]
    fn passed_through_ports_clear_their_iopm_bits() {
        let mut v = vcpu();
        let bit = |v: &mut SvmVCpu<_>, port: u16| {
            let (byte, bit) = permission::iopm_bit(port);
            v.frames.iopm_mut()[byte] >> bit & 1
        };
        v.pass_through_ports(0x70, 2).unwrap();
        assert_eq!(
            [0x6f, 0x70, 0x71, 0x72].map(|p| bit(&mut v, p)),
            [1, 0, 0, 1]
        );
        v.pass_through_ports(0xfffe, 2).unwrap();
        assert_eq!([0xfffd, 0xfffe, 0xffff].map(|p| bit(&mut v, p)), [1, 0, 0]);
        assert!(matches!(
            v.pass_through_ports(0xfff0, 0x11),
            Err(VCpuError::InvalidValue { .. })
        ));
        assert_eq!(bit(&mut v, 0xfff0), 1);
    }

    #[test]
    fn nested_root_and_entry_are_checked() {
        let mut v = vcpu();
        assert!(matches!(
            v.set_nested_root(HostPhysAddr::from_usize(0x1234)),
            Err(VCpuError::InvalidValue { .. })
        ));
        v.set_nested_root(HostPhysAddr::from_usize(0x20_0000))
            .unwrap();
        assert_eq!(v.vmcb().control.n_cr3, 0x20_0000);
        assert_eq!(v.vmcb().control.nested_ctl & 1, 1);
        assert!(matches!(
            v.set_entry(GuestPhysAddr::from_usize(0x0000_8000_0000_0000)),
            Err(VCpuError::InvalidValue { .. })
        ));
    }

    #[test]
    fn hypercall_reads_args_and_returns_in_rax() {
        let mut v = vcpu();
        v.set_gpr(RAX, 0x4856_0002).unwrap();
        for (i, r) in [RDI, RSI, RDX, RCX, 8, 9].into_iter().enumerate() {
            v.set_gpr(r, 10 + i as u64).unwrap();
        }
        let Some(ExitReason::Call(call)) = exit(&mut v, code::VMMCALL, 0, 0) else {
            panic!("not a call");
        };
        assert_eq!(
            call,
            GuestCall {
                call: vcpu_api::FirmwareCall::Hypercall(vcpu_api::Hypercall {
                    nr: 0x4856_0002,
                    function: 0,
                    args: [10, 11, 12, 13, 14, 15]
                }),
                conduit: Conduit::Vmmcall
            }
        );
        assert_eq!(v.pc(), 0x10_0000, "stepped when answered");
        v.complete_call(&call, FirmwareReply::Value(99)).unwrap();
        assert_eq!(v.gpr(RAX), Ok(99));
        assert_eq!(v.pc(), 0x10_0003);
    }

    #[test]
    fn port_io_steps_to_next_rip() {
        let mut v = vcpu();
        v.set_gpr(RAX, 0x1234_5641).unwrap();
        let out = (0x3f8 << 16) | (1 << 4);
        assert_eq!(
            exit(&mut v, code::IOIO, out, 0x10_0001),
            Some(ExitReason::Io(PortIo {
                port: 0x3f8,
                width: AccessWidth::Byte,
                op: PortOp::Write { data: 0x41 }
            }))
        );
        assert_eq!(v.pc(), 0x10_0001);
        let inw = (0x604 << 16) | (1 << 5) | 1;
        assert_eq!(
            exit(&mut v, code::IOIO, inw, 0x10_0003),
            Some(ExitReason::Io(PortIo {
                port: 0x604,
                width: AccessWidth::Word,
                op: PortOp::Read
            }))
        );
        // The value of the IN: AX merges into the old RAX.
        let inw_io = PortIo {
            port: 0x604,
            width: AccessWidth::Word,
            op: PortOp::Read,
        };
        v.complete_io(&inw_io, Some(0xbeef)).unwrap();
        assert_eq!(v.gpr(RAX), Ok(0x1234_beef));
        v.complete_io(&inw_io, None).unwrap();
        assert_eq!(v.gpr(RAX), Ok(0x1234_beef), "no value: unchanged");
        assert_eq!(v.pc(), 0x10_0003, "completion does not step again");
        let rep_outsb = (0x3f8 << 16) | (1 << 4) | (1 << 3) | (1 << 2);
        let e = SvmExit::decode(code::IOIO, rep_outsb, 0).unwrap();
        assert!(matches!(
            v.handle_exit(e),
            Err(VCpuError::InvalidValue {
                value: 0x10_0003,
                ..
            })
        ));
    }

    #[test]
    fn halt_shutdown_msr() {
        let mut v = vcpu();
        assert_eq!(exit(&mut v, code::HLT, 0, 0), Some(ExitReason::Halt));
        assert_eq!(v.pc(), 0x10_0001);
        assert_eq!(exit(&mut v, code::SHUTDOWN, 0, 0), Some(ExitReason::Reset));
        v.set_gpr(RCX, 0xc000_0080).unwrap();
        let read = SysRegAccess {
            addr: SysRegAddr(0xc000_0080),
            op: SysRegOp::Read { reg: RAX },
        };
        assert_eq!(
            exit(&mut v, code::MSR, 0, 0),
            Some(ExitReason::SysReg(read))
        );
        v.complete_sysreg(&read, Some(0x1_0000_0d01)).unwrap();
        assert_eq!((v.gpr(RAX), v.gpr(RDX)), (Ok(0xd01), Ok(1)));
        assert_eq!(v.pc(), 0x10_0003);
        v.set_gpr(RAX, 0xffff_ffff_0000_0005).unwrap();
        v.set_gpr(RDX, 7).unwrap();
        assert_eq!(
            exit(&mut v, code::MSR, 1, 0),
            Some(ExitReason::SysReg(SysRegAccess {
                addr: SysRegAddr(0xc000_0080),
                op: SysRegOp::Write {
                    value: 0x7_0000_0005
                }
            }))
        );
        assert_eq!(
            exit(&mut v, code::INVALID, 0, 0),
            Some(ExitReason::FailEntry {
                reason: code::INVALID
            })
        );
    }

    /// CPUID answers with the host's values in EAX, EBX, ECX, EDX, edited for three
    /// leaves (runs CPUID on the host, so it needs an x86_64 host).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cpuid_carries_the_host_answer_and_takes_the_reply() {
        let mut v = vcpu();
        v.set_gpr(RAX, 1).unwrap();
        v.set_gpr(RCX, 0).unwrap();
        let pc = v.pc();
        let Some(ExitReason::Call(call)) = exit(&mut v, code::CPUID, 0, 0) else {
            panic!("not a call");
        };
        let (eax, ebx, ecx, edx) = cpu::cpuid(1, 0);
        assert_eq!(
            call.call,
            vcpu_api::FirmwareCall::Cpuid {
                leaf: 1,
                subleaf: 0,
                host: CpuidRegs { eax, ebx, ecx, edx }
            }
        );
        assert_eq!(v.pc(), pc, "not answered here");
        let reply = CpuidRegs {
            eax: 1,
            ebx: 2,
            ecx: 3,
            edx: 4,
        };
        v.complete_call(&call, FirmwareReply::Cpuid(reply)).unwrap();
        assert_eq!(
            [RAX, RBX, RCX, RDX].map(|r| v.gpr(r).unwrap()),
            [1, 2, 3, 4]
        );
        assert_eq!(v.pc(), pc + 2);
    }

    /// The fault of a nested page fault exit.
    fn fault(exit: Option<ExitReason>) -> NestedFault {
        match exit {
            Some(ExitReason::NestedPageFault(f)) => f,
            other => panic!("not a fault: {other:?}"),
        }
    }

    #[test]
    fn mmio_load_is_decoded_and_completed() {
        let mut v = vcpu();
        // movsx rax, word [rdi] at the entry point.
        let mem = memory_with(0x10_0000, &[0x48, 0x0f, 0xbf, 0x07]);
        let gpa = GuestPhysAddr::from_usize(0xd000_0018);
        let f = fault(exit(&mut v, code::NPF, (1 << 32) | 0b100, 0xd000_0018));
        assert_eq!(
            f,
            NestedFault {
                gpa,
                access: AccessKind::Read,
                insn: FaultInsn::Fetch
            }
        );
        let a = v.decode_mmio(&f, &mem).unwrap();
        assert_eq!(
            a,
            MmioAccess {
                gpa,
                width: AccessWidth::Word,
                op: MmioOp::Read {
                    reg: RAX,
                    sign_extend: true,
                    reg_width: AccessWidth::Qword
                },
                insn_len: 4
            }
        );
        v.complete_mmio(&a, Some(0xfffe)).unwrap();
        assert_eq!(v.gpr(RAX), Ok(0xffff_ffff_ffff_fffe));
        assert_eq!(v.pc(), 0x10_0004);
    }

    /// With decode assists the VMCB carries the instruction's bytes: the exit
    /// carries them, and decoding reads no guest memory.
    #[test]
    fn decode_assist_bytes_travel_with_the_exit() {
        let mut v = vcpu();
        let c = &mut v.vmcb_mut().control;
        c.insn_len = 2;
        c.insn_bytes[..2].copy_from_slice(&[0x89, 0x07]);
        v.set_gpr(RAX, 0x1234_5678).unwrap();
        let f = fault(exit(&mut v, code::NPF, (1 << 32) | 0b110, 0xd000_0000));
        assert_eq!(f.insn, FaultInsn::Bytes(InsnBytes::new(&[0x89, 0x07])));
        let a = v.decode_mmio(&f, &Mem(std::vec::Vec::new())).unwrap();
        assert_eq!(a.op, MmioOp::Write { value: 0x1234_5678 });
    }

    #[test]
    fn mmio_store_across_a_page_boundary() {
        let mut v = vcpu();
        // mov [rdi], r9 split over two pages: 4c | 89 0f.
        let at = 0x10_0fff;
        v.set_entry(GuestPhysAddr::from_usize(at)).unwrap();
        v.set_gpr(9, 0xdead_beef).unwrap();
        let mem = memory_with(at, &[0x4c, 0x89, 0x0f]);
        let f = fault(exit(&mut v, code::NPF, (1 << 32) | 0b110, 0xd000_0008));
        let a = v.decode_mmio(&f, &mem).unwrap();
        assert_eq!(a.op, MmioOp::Write { value: 0xdead_beef });
        assert_eq!((a.width, a.insn_len), (AccessWidth::Qword, 3));
        // A refused store: no register changes, RIP steps.
        v.complete_mmio(&a, None).unwrap();
        assert_eq!(v.pc(), at as u64 + 3);
    }

    #[test]
    fn undecodable_mmio_names_the_rip() {
        let mut v = vcpu();
        // add [rdi], eax
        let mem = memory_with(0x10_0000, &[0x01, 0x07, 0x90]);
        let f = fault(exit(&mut v, code::NPF, (1 << 32) | 0b110, 0xd000_0000));
        assert_eq!(
            v.decode_mmio(&f, &mem),
            Err(MmioDecodeError::Unsupported {
                pc: 0x10_0000,
                insn: 0x0090_0701,
                why: "not a move the decoder emulates"
            })
        );
        // A load decoded for a write fault is refused too.
        let mem = memory_with(0x10_0000, &[0x8b, 0x07]);
        assert!(matches!(
            v.decode_mmio(&f, &mem),
            Err(MmioDecodeError::Unsupported { pc: 0x10_0000, .. })
        ));
        // A fault of the guest's own page walk (EXITINFO1 bit 33) is no data access.
        let walk = fault(exit(&mut v, code::NPF, (1 << 33) | 0b100, 0xd000_0000));
        assert_eq!(
            v.decode_mmio(&walk, &mem),
            Err(MmioDecodeError::TableWalk { pc: 0x10_0000 })
        );
        // RIP in a page the guest's tables do not map.
        v.set_entry(GuestPhysAddr::from_usize(0x1_0000_0000))
            .unwrap();
        assert_eq!(
            v.decode_mmio(&f, &mem),
            Err(MmioDecodeError::Fetch {
                pc: 0x1_0000_0000,
                error: FetchError::GuestUnmapped { va: 0x1_0000_0000 }
            })
        );
    }

    #[test]
    fn tlb_invalidation_is_pending_until_the_next_entry() {
        let mut v = vcpu();
        v.flush_pending = false;
        v.invalidate_guest_tlb();
        assert!(v.flush_pending());
        assert_eq!(v.flush_control, tlb_control::FLUSH_ALL);
    }

    /// A vCPU in the mode these CR0, EFER and CS give (set in the VMCB as the
    /// processor would have left it), stopped at `cs_base:ip` on an MMIO fault at
    /// 0xd000_0000 with EXITINFO1 low bits `access`.
    fn in_mode(
        cr0: u64,
        efer: u64,
        cs_attrib: u16,
        cs_base: u64,
        ip: u64,
        access: u64,
    ) -> (SvmVCpu<TestFrames>, NestedFault) {
        let mut v = vcpu();
        let s = &mut v.vmcb_mut().save;
        s.cr0 = cr0;
        s.efer = efer;
        s.cs.attrib = cs_attrib;
        s.cs.base = cs_base;
        s.rip = ip;
        let f = fault(exit(&mut v, code::NPF, (1 << 32) | access, 0xd000_0000));
        (v, f)
    }

    /// Code segment attributes: 16-bit (D = 0, L = 0), 32-bit (D = 1), 64-bit (L).
    const CS16: u16 = 0x009b;
    const CS32: u16 = 0x0c9b;
    const CS64: u16 = 0x029b;
    /// EFER of a guest in long mode.
    const LONG_MODE: u64 = EFER_SVME | crate::regs::EFER_LME | crate::regs::EFER_LMA;
    /// `mov eax, [0x1000]` in 32-bit code (`mov ax, [0x1000]` in 16-bit code, where
    /// the offset is 2 bytes; in 64-bit code the offset is 8 bytes).
    const MOV_MOFFS: [u8; 9] = [0xa1, 0x00, 0x10, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90];

    /// Regression (issue 11): decoding assumed 64-bit mode and fetched at RIP
    /// ignoring the CS base. In real mode the instruction is at CS base + IP
    /// (0xf000:0x0100 -> 0xf0100) and decodes as 16-bit code: a 2-byte load of 3
    /// bytes, not a 4-byte load of 9.
    #[test]
    fn real_mode_decodes_16_bit_code_at_cs_base_plus_ip() {
        let (mut v, f) = in_mode(0, 0, CS16, 0xf_0000, 0x0100, 0b100);
        assert_eq!(v.mode(), CpuMode::Real);
        let mem = memory_with(0xf_0100, &MOV_MOFFS);
        let a = v.decode_mmio(&f, &mem).unwrap();
        assert_eq!((a.width, a.insn_len), (AccessWidth::Word, 3));
        v.set_gpr(RAX, 0xaaaa_aaaa_aaaa_aaaa).unwrap();
        v.complete_mmio(&a, Some(0x1234)).unwrap();
        assert_eq!(v.gpr(RAX), Ok(0xaaaa_aaaa_aaaa_1234), "AX merges into RAX");
        assert_eq!(v.pc(), 0x0103);
    }

    /// 32-bit protected mode without paging (a multiboot guest's mode): linear
    /// addresses are physical, at CS base + EIP; the moffs form is 5 bytes.
    #[test]
    fn protected_mode_32_bit_without_paging() {
        let (v, f) = in_mode(CR0_PE, 0, CS32, 0x10_0000, 0x40, 0b100);
        assert_eq!(v.mode(), CpuMode::Protected(CodeSize::Bits32));
        let mem = memory_with(0x10_0040, &MOV_MOFFS);
        let a = v.decode_mmio(&f, &mem).unwrap();
        assert_eq!((a.width, a.insn_len), (AccessWidth::Dword, 5));
        // EIP wraps at 32 bits: CS base 0x10_0000 + EIP 0xffff_f000 is 0xf_f000.
        let (v, f) = in_mode(CR0_PE, 0, CS32, 0x10_0000, 0xffff_f000, 0b110);
        let mem = memory_with(0xf_f000, &[0x89, 0x07]);
        let a = v.decode_mmio(&f, &mem).unwrap();
        assert_eq!((a.width, a.insn_len), (AccessWidth::Dword, 2));
    }

    /// 16-bit code whose instruction runs past IP 0xffff continues at CS base + 0.
    #[test]
    fn sixteen_bit_ip_wraps_inside_the_segment() {
        let (v, f) = in_mode(0, 0, CS16, 0x2_0000, 0xffff, 0b100);
        // `mov ax, [0x1000]`: a1 at 0x2_ffff, its offset at 0x2_0000.
        let mut m = memory_with(0x2_0000, &[0x00, 0x10]);
        m.0[0x2_ffff] = 0xa1;
        let a = v.decode_mmio(&f, &m).unwrap();
        assert_eq!((a.width, a.insn_len), (AccessWidth::Word, 3));
    }

    /// Compatibility mode (long mode, CS.L = 0): 32-bit code through the 4-level
    /// tables; 64-bit mode decodes 64-bit offsets.
    #[test]
    fn compatibility_and_64_bit_mode() {
        let (v, f) = in_mode(GUEST_CR0, LONG_MODE, CS32, 0, 0x10_0000, 0b100);
        assert_eq!(v.mode(), CpuMode::Compatibility(CodeSize::Bits32));
        let mem = memory_with(0x10_0000, &MOV_MOFFS);
        assert_eq!(v.decode_mmio(&f, &mem).unwrap().insn_len, 5);
        let (v, f) = in_mode(GUEST_CR0, LONG_MODE, CS64, 0, 0x10_0000, 0b100);
        assert_eq!(v.mode(), CpuMode::Long);
        assert_eq!(v.decode_mmio(&f, &mem).unwrap().insn_len, 9);
    }

    /// Paging modes the guest walk does not implement are refused with an error
    /// naming them, never guessed.
    #[test]
    fn legacy_paging_is_refused_by_name() {
        let (v, f) = in_mode(GUEST_CR0, 0, CS32, 0, 0x10_0000, 0b100);
        let mem = memory_with(0x10_0000, &[0x8b, 0x07]);
        assert_eq!(
            v.decode_mmio(&f, &mem),
            Err(MmioDecodeError::Mode {
                pc: 0x10_0000,
                mode: "PAE paging"
            })
        );
    }

    /// A failed VMCB allocation is out of memory (it was reported as a missing
    /// hardware feature); a VM id past the ASIDs keeps its cause (it was an invalid
    /// value without one).
    #[test]
    fn vmcb_allocation_failure_is_out_of_memory() {
        #[derive(Default, Clone, Copy)]
        struct NoFrames;
        // SAFETY: it never hands out a frame.
        unsafe impl FrameAllocator for NoFrames {
            fn alloc_frames(&self, _: usize, _: usize) -> Option<HostPhysAddr> {
                None
            }
            unsafe fn dealloc_frames(&self, _: HostPhysAddr, _: usize) {
                unreachable!("nothing was allocated");
            }
            fn phys_to_virt(&self, hpa: HostPhysAddr) -> HostVirtAddr {
                HostVirtAddr::from_usize(hpa.as_usize())
            }
        }
        crate::cpu::set_cpu_for_tests(SvmFeatures::from_cpuid(1 << 2, 1, 16, 1).unwrap());
        assert!(matches!(
            SvmVCpu::<NoFrames>::new(0, 0, ()),
            Err(VCpuError::OutOfMemory { frames: 6, .. })
        ));
        // A VM that claimed no ASID gets no vCPU (running out of ASIDs is
        // tlb.rs's live_vms_never_share_an_asid).
        assert!(matches!(
            SvmVCpu::<TestFrames>::new(15, 0, ()),
            Err(VCpuError::NotConfigured { .. })
        ));
    }

    #[test]
    fn frames_are_freed_on_drop() {
        let v = vcpu();
        let (vmcb, iopm) = (v.vmcb_pa().as_usize(), v.frames.iopm.as_usize());
        let held = |pa| POOL.lock().unwrap().iter().any(|&(p, _)| p == pa);
        assert!(held(vmcb) && held(iopm));
        drop(v);
        // Test frames are never reused, so no other test can hold these addresses.
        assert!(!held(vmcb) && !held(iopm));
    }
}
