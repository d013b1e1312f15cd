//! The guest's calls to the hypervisor: `VMMCALL` (the number in RAX, arguments in
//! RDI, RSI, RDX, RCX, R8, R9, the result back in RAX) and `CPUID`, whose answer is
//! the host's with the hypervisor-present bit set and SVM hidden (CPUID Fn0000_0001
//! ECX\[31\], Fn8000_0001 ECX\[2\], Fn8000_000A; AMD64 APM vol. 3, appendix E).

use crate::context::{R8, R9, RCX, RDI, RDX, RSI};

/// A CPUID answer: EAX, EBX, ECX, EDX.
pub type CpuidRegs = (u32, u32, u32, u32);

/// The guest's view of CPUID leaf `leaf` given what the host answered.
pub fn cpuid_for_guest(leaf: u32, host: CpuidRegs) -> CpuidRegs {
    match (leaf, host) {
        (1, (a, b, c, d)) => (a, b, c | 1 << 31, d),
        // SVM (ECX[2]) hidden, and its feature leaf empty.
        (0x8000_0001, (a, b, c, d)) => (a, b, c & !(1 << 2), d),
        (0x8000_000a, _) => (0, 0, 0, 0),
        (_, r) => r,
    }
}

/// The arguments of a `VMMCALL`, from the general registers (the `ArchVCpu`
/// numbering).
pub fn hypercall_args(gprs: &[u64; 16]) -> [u64; 6] {
    [
        gprs[RDI], gprs[RSI], gprs[RDX], gprs[RCX], gprs[R8], gprs[R9],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_edits() {
        let host = (1, 2, 0x7ff8_3203, 4);
        assert_eq!(cpuid_for_guest(0, host), host);
        assert_eq!(cpuid_for_guest(1, host), (1, 2, 0xfff8_3203, 4));
        assert_eq!(
            cpuid_for_guest(0x8000_0001, (0, 0, 0x75, 0)),
            (0, 0, 0x71, 0)
        );
        assert_eq!(cpuid_for_guest(0x8000_000a, host), (0, 0, 0, 0));
    }
}
