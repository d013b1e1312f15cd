//! What the guest learns about the CPU it runs on, decided here for every
//! architecture: the arch layer traps the guest's identification (x86 CPUID; Arm ID
//! registers, HCR_EL2.TID3) and carries the host's answer in the exit; this module
//! computes the guest's.

use vcpu_api::{CpuidRegs, SysRegAddr};

/// What CPUID tells a guest: the host's answer with the hypervisor-present bit set
/// (Fn0000_0001 ECX\[31\]) and SVM hidden (Fn8000_0001 ECX\[2\] clear, Fn8000_000A
/// empty); AMD64 APM vol. 3, appendix E.
pub fn cpuid_for_guest(leaf: u32, host: CpuidRegs) -> CpuidRegs {
    match leaf {
        1 => CpuidRegs {
            ecx: host.ecx | 1 << 31,
            ..host
        },
        0x8000_0001 => CpuidRegs {
            ecx: host.ecx & !(1 << 2),
            ..host
        },
        0x8000_000a => CpuidRegs::default(),
        _ => host,
    }
}

/// ID_AA64PFR0_EL1, ID_AA64PFR1_EL1, ID_AA64ZFR0_EL1 and ID_AA64SMFR0_EL1
/// (`S3_0_C0_C4_<0, 1, 4, 5>`).
const ID_AA64PFR0: SysRegAddr = SysRegAddr::arm(3, 0, 0, 4, 0);
const ID_AA64PFR1: SysRegAddr = SysRegAddr::arm(3, 0, 0, 4, 1);
const ID_AA64ZFR0: SysRegAddr = SysRegAddr::arm(3, 0, 0, 4, 4);
const ID_AA64SMFR0: SysRegAddr = SysRegAddr::arm(3, 0, 0, 4, 5);

/// `value` with the 4-bit ID fields at `shifts` cleared ("not implemented").
const fn without(value: u64, shifts: &[u32]) -> u64 {
    let mut v = value;
    let mut i = 0;
    while i < shifts.len() {
        v &= !(0xf << shifts[i]);
        i += 1;
    }
    v
}

/// What an Arm guest reads from ID register `id` whose value on the physical CPU is
/// `host`: the features whose state a vCPU does not switch between the hypervisor and
/// the guest are hidden, so the guest never uses them, whatever the CPU has (Arm ARM
/// D19.2): SVE (ID_AA64PFR0_EL1.SVE \[35:32\], all of ID_AA64ZFR0_EL1), SME
/// (ID_AA64PFR1_EL1.SME \[27:24\], all of ID_AA64SMFR0_EL1), MTE (PFR1 \[11:8\]),
/// MPAM (PFR0 \[43:40\], PFR1 MPAM_frac \[19:16\]), the activity monitors (PFR0 AMU
/// \[47:44\]) and non-maskable interrupts (PFR1 NMI \[39:36\]). Every other register
/// and field reads as the CPU has it.
pub const fn id_register_for_guest(id: SysRegAddr, host: u64) -> u64 {
    match id {
        ID_AA64PFR0 => without(host, &[32, 40, 44]),
        ID_AA64PFR1 => without(host, &[8, 16, 24, 36]),
        ID_AA64ZFR0 | ID_AA64SMFR0 => 0,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ID_AA64PFR0_EL1 with EL0/EL1 AArch64 (2), EL2/EL3 (1), GIC 1 (\[27:24\]) and
    /// SVE 1 (\[35:32\]): the guest sees SVE 0, the rest unchanged; MPAM (\[43:40\])
    /// and AMU (\[47:44\]) too are cleared, SEL2 (\[39:36\]) and CSV3 (\[63:60\]) kept.
    /// ID_AA64PFR1_EL1 with SME 1 (\[27:24\]) and MTE 2 (\[11:8\]) reads with both
    /// 0, BT (\[3:0\]) and SSBS (\[7:4\]) kept.
    #[test]
    fn id_registers_hide_sve_sme_mte() {
        let pfr0 = SysRegAddr::arm(3, 0, 0, 4, 0);
        assert_eq!(
            id_register_for_guest(pfr0, 0x0000_0001_0100_1122),
            0x0100_1122
        );
        assert_eq!(
            id_register_for_guest(pfr0, 0x1000_f1f0_0000_0000),
            0x1000_00f0_0000_0000
        );
        let pfr1 = SysRegAddr::arm(3, 0, 0, 4, 1);
        assert_eq!(id_register_for_guest(pfr1, 0x0000_0000_0100_0221), 0x21);
        assert_eq!(
            id_register_for_guest(SysRegAddr::arm(3, 0, 0, 4, 4), 0x1111),
            0
        );
        assert_eq!(id_register_for_guest(SysRegAddr::arm(3, 0, 0, 4, 5), !0), 0);
        // ID_AA64ISAR1_EL1 (pointer authentication) and ID_AA64MMFR0_EL1 as they are.
        let isar1 = SysRegAddr::arm(3, 0, 0, 6, 1);
        assert_eq!(
            id_register_for_guest(isar1, 0x0011_1112_1110_1011),
            0x0011_1112_1110_1011
        );
        let mmfr0 = SysRegAddr::arm(3, 0, 0, 7, 0);
        assert_eq!(id_register_for_guest(mmfr0, 0x1_0000_0f06), 0x1_0000_0f06);
    }

    #[test]
    fn cpuid_edits() {
        let host = CpuidRegs {
            eax: 1,
            ebx: 2,
            ecx: 0x7ff8_3203,
            edx: 4,
        };
        assert_eq!(cpuid_for_guest(0, host), host);
        assert_eq!(cpuid_for_guest(1, host).ecx, 0xfff8_3203);
        let ext = CpuidRegs { ecx: 0x75, ..host };
        assert_eq!(cpuid_for_guest(0x8000_0001, ext).ecx, 0x71);
        assert_eq!(cpuid_for_guest(0x8000_000a, host), CpuidRegs::default());
    }
}
