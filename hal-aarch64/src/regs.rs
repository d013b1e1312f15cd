//! EL2 control register values: HCR_EL2, SPSR_EL2 for guest entry, the reset
//! values of the EL1 registers a new vCPU starts with, and the `mrs!`/`msr!`
//! system-register accessors the hardware code uses.
//!
//! Arm ARM (DDI 0487K.a) D24.2.48 "HCR_EL2", D24.2.39 "CPTR_EL2", D24.2.32
//! "CNTHCTL_EL2", C5.2.19 "SPSR_EL2", D24.2.161 "SCTLR_EL1".

bitflags::bitflags! {
    /// HCR_EL2, the hypervisor configuration register (the bits this HAL uses).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Hcr: u64 {
        /// VM, bit 0: stage-2 translation for EL1&0.
        const VM = 1 << 0;
        /// SWIO, bit 1: set/way invalidation override (DC ISW acts as DC CISW).
        const SWIO = 1 << 1;
        /// PTW, bit 2: a stage-1 walk that hits stage-2 Device memory faults.
        const PTW = 1 << 2;
        /// FMO, bit 3: physical FIQs go to EL2.
        const FMO = 1 << 3;
        /// IMO, bit 4: physical IRQs go to EL2.
        const IMO = 1 << 4;
        /// AMO, bit 5: SErrors go to EL2.
        const AMO = 1 << 5;
        /// VI, bit 7: a virtual IRQ is pending.
        const VI = 1 << 7;
        /// FB, bit 9: the guest's TLB and I-cache maintenance is broadcast to the
        /// inner shareable domain (a vCPU may move between physical CPUs).
        const FB = 1 << 9;
        /// BSU = 0b01 (bits 11:10): barriers of the guest are upgraded to inner
        /// shareable.
        const BSU_INNER = 1 << 10;
        /// TWI, bit 13: WFI traps to EL2.
        const TWI = 1 << 13;
        /// TWE, bit 14: WFE traps to EL2.
        const TWE = 1 << 14;
        /// TID3, bit 18: EL1 reads of the ID group 3 registers (ID_AA64PFR0_EL1 and
        /// the rest of op0 = 3, op1 = 0, CRn = 0, CRm = 1..7) trap to EL2, so the
        /// guest sees the features its hypervisor lets it use.
        const TID3 = 1 << 18;
        /// TSC, bit 19: SMC traps to EL2 (EC 0x17).
        const TSC = 1 << 19;
        /// TSW, bit 22: data cache maintenance by set/way traps to EL2.
        const TSW = 1 << 22;
        /// RW, bit 31: EL1 is AArch64.
        const RW = 1 << 31;
        /// APK, bit 40: the guest's accesses to the pointer-authentication key
        /// registers do not trap.
        const APK = 1 << 40;
        /// API, bit 41: the guest's pointer-authentication instructions do not trap.
        const API = 1 << 41;
    }
}

impl Hcr {
    /// What a guest runs with: stage 2 on; physical interrupts and SErrors to EL2;
    /// guest TLB maintenance and barriers widened to inner shareable; WFI and SMC
    /// trapped (WFI becomes [`vcpu_api::ExitReason::Halt`], SMC can carry PSCI);
    /// ID register reads trapped (the guest sees only features it may use);
    /// pointer authentication usable (the vCPU drops API and APK on a CPU without
    /// it); EL1 in AArch64 state.
    pub const GUEST: Self = Self::VM
        .union(Self::SWIO)
        .union(Self::PTW)
        .union(Self::FMO)
        .union(Self::IMO)
        .union(Self::AMO)
        .union(Self::FB)
        .union(Self::BSU_INNER)
        .union(Self::TWI)
        .union(Self::TID3)
        .union(Self::TSC)
        .union(Self::RW)
        .union(Self::APK)
        .union(Self::API);

    /// What the hypervisor itself runs with between guests: EL1 is AArch64, no
    /// stage 2.
    pub const HOST: Self = Self::RW;
}

/// SPSR_EL2 for the first entry of a vCPU: EL1h (M = 0b0101, SP_EL1), D, A, I and F
/// masked.
pub const SPSR_EL1H_DAIF_MASKED: u64 = 0x3c5;

/// SCTLR_EL1 at reset as a guest expects it: MMU and caches off, the RES1 bits
/// (29, 28, 23, 22, 20, 11) set.
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// CPTR_EL2 (without VHE): TFP = 0 so neither the guest nor EL2 traps on FP/SIMD;
/// RES1 bits 13:12 and 9:0 (which include TZ, bit 8: SVE stays trapped).
pub const CPTR_EL2_NO_FP_TRAP: u64 = 0x33ff;

/// CNTHCTL_EL2 (without VHE): EL1PCTEN and EL1PCEN, so EL1 reads the physical
/// counter and uses the physical timer without trapping.
pub const CNTHCTL_EL2_EL1_TIMER: u64 = 0b11;

/// MPIDR_EL1 bit 31 is RES1; VMPIDR_EL2 must carry it too.
pub const MPIDR_RES1: u64 = 1 << 31;

/// The affinity fields of an MPIDR (Aff3 in 39:32, Aff2..Aff0 in 23:0): what PSCI
/// CPU_ON's target names.
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Reads a system register (bare-metal aarch64 only).
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
macro_rules! mrs {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: reading this system register at EL2 has no side effect.
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

/// Writes a system register; only inside `unsafe` code that justifies the value.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
macro_rules! msr {
    ($name:literal, $value:expr) => {
        core::arch::asm!(concat!("msr ", $name, ", {}"), in(reg) $value, options(nostack, preserves_flags))
    };
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub(crate) use {mrs, msr};

#[cfg(test)]
mod tests {
    use super::*;

    /// VM | SWIO | PTW | FMO | IMO | AMO = 0x3f, FB | BSU = 0x600, TWI = 0x2000,
    /// TID3 = 0x4_0000, TSC = 0x8_0000, RW = 0x8000_0000, APK | API = 0x300_0000_0000.
    #[test]
    fn guest_hcr_value() {
        assert_eq!(Hcr::GUEST.bits(), 0x300_800c_263f);
        assert!(!Hcr::GUEST.contains(Hcr::TWE));
        assert_eq!(Hcr::HOST.bits(), 0x8000_0000);
    }
}
