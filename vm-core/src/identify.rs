//! What the guest learns about the CPU it runs on, decided here for every
//! architecture: the arch layer traps the guest's identification (x86 CPUID; Arm ID
//! registers once trapped) and carries the host's answer in the exit; this module
//! computes the guest's.

use vcpu_api::CpuidRegs;

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

#[cfg(test)]
mod tests {
    use super::*;

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
