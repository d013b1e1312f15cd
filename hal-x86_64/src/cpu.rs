//! The physical CPU: turning SVM on ([`enable`]) and what the processor offers: CPUID
//! Fn8000_0001/Fn8000_000A decoding (pure), EFER.SVME and VM_HSAVE_PA (APM vol. 2,
//! 15.4 "Enabling SVM", 15.30.4 "VM_HSAVE_PA MSR"), and the MSR and CPUID
//! instructions.

use core::fmt;

use addrspace::{FrameAllocator, HostPhysAddr};

use crate::regs::{EFER_NXE, EFER_SVME, MSR_EFER, MSR_VM_CR, MSR_VM_HSAVE_PA, VM_CR_SVMDIS};

/// Why SVM cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmError {
    /// CPUID Fn8000_0001 ECX\[SVM\] is clear.
    NoSvm,
    /// CPUID Fn8000_000A EDX\[NP\] is clear: no nested paging.
    NoNestedPaging,
    /// VM_CR.SVMDIS is set (disabled by firmware).
    Disabled,
    /// No frame for the host save area.
    OutOfMemory,
}

impl fmt::Display for SvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSvm => f.write_str("the processor has no SVM (CPUID 8000_0001 ECX[2])"),
            Self::NoNestedPaging => {
                f.write_str("the processor has no nested paging (CPUID 8000_000A EDX[0])")
            }
            Self::Disabled => f.write_str("SVM is disabled by firmware (VM_CR.SVMDIS)"),
            Self::OutOfMemory => f.write_str("no frame for the host save area"),
        }
    }
}

impl From<SvmError> for vcpu_api::VCpuError {
    fn from(e: SvmError) -> Self {
        match e {
            SvmError::NoSvm => Self::Unsupported {
                feature: "SVM (CPUID 8000_0001 ECX[2])",
            },
            SvmError::NoNestedPaging => Self::Unsupported {
                feature: "nested paging (CPUID 8000_000A EDX[0])",
            },
            SvmError::Disabled => Self::Unsupported {
                feature: "SVM enabled by firmware (VM_CR.SVMDIS is set)",
            },
            SvmError::OutOfMemory => Self::OutOfMemory {
                what: "the host save area",
                frames: 1,
            },
        }
    }
}

/// What the processor's SVM offers (CPUID Fn8000_000A, APM vol. 3, appendix E.4.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvmFeatures {
    /// SVM revision (EAX\[7:0\]).
    pub revision: u8,
    /// Number of ASIDs (EBX).
    pub nasid: u32,
    /// Nested paging (EDX\[0\]).
    pub nested_paging: bool,
    /// NRIP save (EDX\[3\]): the VMCB gives the next RIP on instruction intercepts.
    pub nrips: bool,
    /// Flush by ASID (EDX\[6\]): TLB_CONTROL values 3 and 7.
    pub flush_by_asid: bool,
    /// Decode assists (EDX\[7\]): instruction bytes in the VMCB on #NPF.
    pub decode_assists: bool,
}

impl SvmFeatures {
    /// Decodes CPUID Fn8000_0001 ECX and Fn8000_000A EAX/EBX/EDX.
    pub fn from_cpuid(ext1_ecx: u32, eax: u32, ebx: u32, edx: u32) -> Result<Self, SvmError> {
        if ext1_ecx & (1 << 2) == 0 {
            return Err(SvmError::NoSvm);
        }
        let f = Self {
            revision: vcpu_api::low_u8(u64::from(eax)),
            nasid: ebx,
            nested_paging: edx & 1 != 0,
            nrips: edx & (1 << 3) != 0,
            flush_by_asid: edx & (1 << 6) != 0,
            decode_assists: edx & (1 << 7) != 0,
        };
        if !f.nested_paging {
            return Err(SvmError::NoNestedPaging);
        }
        Ok(f)
    }
}

/// The SVM state of the physical CPU: its features and where `VMSAVE` keeps the
/// host's hidden segment state between runs.
///
/// There is one, for the boot CPU: the QEMU board runs every vCPU on one physical
/// CPU. More physical CPUs need one host save area and host VMCB each (per-CPU
/// state), which is not implemented.
#[derive(Clone, Copy, Debug)]
pub struct SvmCpu {
    /// What the processor offers.
    pub features: SvmFeatures,
    /// The host save area given to VM_HSAVE_PA.
    pub hsave: HostPhysAddr,
    /// A VMCB-sized page for `VMSAVE`/`VMLOAD` of the host's FS, GS, TR, LDTR and
    /// SYSCALL MSRs around each run.
    pub host_vmcb: HostPhysAddr,
}

static CPU: spin::Once<SvmCpu> = spin::Once::new();

/// The SVM state set up by `enable` (or by the unit tests), if any.
pub fn cpu() -> Option<&'static SvmCpu> {
    CPU.get()
}

/// Records SVM state without touching hardware, so host tests can create vCPUs.
#[cfg(test)]
pub(crate) fn set_cpu_for_tests(features: SvmFeatures) -> &'static SvmCpu {
    CPU.call_once(|| SvmCpu {
        features,
        hsave: HostPhysAddr::from_usize(0),
        host_vmcb: HostPhysAddr::from_usize(0),
    })
}

#[cfg(target_arch = "x86_64")]
mod hw {
    use core::arch::asm;

    /// Reads MSR `msr`.
    ///
    /// # Safety
    ///
    /// `msr` exists on this processor (else #GP) and we run at CPL 0.
    pub(crate) unsafe fn rdmsr(msr: u32) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: per the caller.
        unsafe {
            asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
        }
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// Writes MSR `msr`.
    ///
    /// # Safety
    ///
    /// `msr` exists, `value` is valid for it, and changing it keeps the
    /// hypervisor's execution environment intact.
    pub(crate) unsafe fn wrmsr(msr: u32, value: u64) {
        // SAFETY: per the caller.
        unsafe {
            asm!("wrmsr", in("ecx") msr, in("eax") vcpu_api::low_u32(value), in("edx") vcpu_api::low_u32(value >> 32), options(nostack, preserves_flags));
        }
    }

    /// CPUID leaf `leaf`, subleaf `sub`: (EAX, EBX, ECX, EDX).
    pub(crate) fn cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
        let r = core::arch::x86_64::__cpuid_count(leaf, sub);
        (r.eax, r.ebx, r.ecx, r.edx)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use hw::{cpuid, rdmsr, wrmsr};

/// Enables SVM on this (the only) physical CPU: checks CPUID and VM_CR, sets
/// EFER.SVME and EFER.NXE, gives the processor a host save area. Idempotent.
///
/// # Safety
///
/// Runs at CPL 0 on x86_64 bare metal; `frames` hands out frames the hypervisor
/// owns for good (the save areas are never freed).
#[cfg(target_arch = "x86_64")]
pub unsafe fn enable(frames: &dyn FrameAllocator) -> Result<&'static SvmCpu, SvmError> {
    if let Some(cpu) = CPU.get() {
        return Ok(cpu);
    }
    let (_, _, ext1_ecx, _) = cpuid(0x8000_0001, 0);
    if ext1_ecx & (1 << 2) == 0 {
        return Err(SvmError::NoSvm);
    }
    let (eax, ebx, _, edx) = cpuid(0x8000_000a, 0);
    let features = SvmFeatures::from_cpuid(ext1_ecx, eax, ebx, edx)?;
    // SAFETY: VM_CR exists when CPUID reports SVM.
    if unsafe { rdmsr(MSR_VM_CR) } & VM_CR_SVMDIS != 0 {
        return Err(SvmError::Disabled);
    }
    let hsave = frames.alloc_frame().ok_or(SvmError::OutOfMemory)?;
    let host_vmcb = frames.alloc_frame().ok_or(SvmError::OutOfMemory)?;
    for page in [hsave, host_vmcb] {
        let va = frames.phys_to_virt(page).as_usize() as *mut u8;
        // SAFETY: a fresh frame the allocator mapped at `va` for us.
        unsafe { core::ptr::write_bytes(va, 0, 0x1000) };
    }
    // SAFETY: EFER exists in long mode; SVME is allowed (CPUID, VM_CR checked) and
    // NXE only enables the NX bit in page tables, which ours set deliberately.
    unsafe {
        let efer = rdmsr(MSR_EFER);
        wrmsr(MSR_EFER, efer | EFER_SVME | EFER_NXE);
        wrmsr(MSR_VM_HSAVE_PA, hsave.as_usize() as u64);
    }
    Ok(CPU.call_once(|| SvmCpu {
        features,
        hsave,
        host_vmcb,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 7.2 `-cpu EPYC` (reference probe output): 8000_0001 ECX = 0x75,
    /// 8000_000A EAX = 1, EBX = 16, EDX = 1.
    const QEMU_EPYC: (u32, u32, u32, u32) = (0x75, 1, 16, 1);

    #[test]
    fn qemu_epyc_features() {
        let (c, a, b, d) = QEMU_EPYC;
        let f = SvmFeatures::from_cpuid(c, a, b, d).unwrap();
        assert_eq!(f.revision, 1);
        assert_eq!(f.nasid, 16);
        assert!(f.nested_paging && !f.nrips && !f.flush_by_asid && !f.decode_assists);
    }

    #[test]
    fn flush_by_asid_when_offered() {
        let f = SvmFeatures::from_cpuid(1 << 2, 1, 32768, 0xcf).unwrap();
        assert!(f.flush_by_asid && f.nrips && f.decode_assists);
    }

    #[test]
    fn refusals() {
        assert_eq!(SvmFeatures::from_cpuid(0, 1, 16, 1), Err(SvmError::NoSvm));
        assert_eq!(
            SvmFeatures::from_cpuid(1 << 2, 1, 16, 0),
            Err(SvmError::NoNestedPaging)
        );
    }
}
