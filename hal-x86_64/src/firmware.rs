//! The guest's calls to the hypervisor, decoded into a [`vcpu_api::FirmwareCall`]:
//! `VMMCALL` (the number in RAX, arguments in RDI, RSI, RDX, RCX, R8, R9, the result
//! back in RAX) and `CPUID` (the leaf in EAX, the subleaf in ECX; the answer in EAX,
//! EBX, ECX, EDX), and the replies encoded. What CPUID reports is vm-core's
//! decision: the call carries the host's answer for it to edit.

use vcpu_api::{CpuidRegs, FirmwareCall, FirmwareReply, Hypercall};

use crate::context::{R8, R9, RCX, RDI, RDX, RSI};

/// The call of a `VMMCALL`: a hypercall with RAX as its number and the arguments
/// from the general registers (the `ArchVCpu` numbering).
pub fn decode_vmmcall(rax: u64, gprs: &[u64; 16]) -> FirmwareCall {
    FirmwareCall::Hypercall(Hypercall {
        nr: rax,
        function: 0,
        args: [
            gprs[RDI], gprs[RSI], gprs[RDX], gprs[RCX], gprs[R8], gprs[R9],
        ],
    })
}

/// The call of a `CPUID` with `rax` and `rcx`, given what the host answers for it.
pub fn decode_cpuid(rax: u64, rcx: u64, host: CpuidRegs) -> FirmwareCall {
    FirmwareCall::Cpuid {
        leaf: vcpu_api::low_u32(rax),
        subleaf: vcpu_api::low_u32(rcx),
        host,
    }
}

/// RAX for `reply` to a `VMMCALL`: the value, or all-ones for a refusal (and for a
/// probe, 1 or 0); `None` for a reply no hypercall can have.
pub fn encode_vmmcall_reply(reply: FirmwareReply) -> Option<u64> {
    match reply {
        FirmwareReply::Value(v) => Some(v),
        FirmwareReply::Error(_) => Some(u64::MAX),
        FirmwareReply::Offered(yes) => Some(u64::from(yes)),
        FirmwareReply::Version { .. } | FirmwareReply::CpuState(_) | FirmwareReply::Cpuid(_) => {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use vcpu_api::FirmwareError;

    use super::*;

    #[test]
    fn vmmcall_arguments_and_replies() {
        let mut g = [0u64; 16];
        for (i, r) in [RDI, RSI, RDX, RCX, R8, R9].into_iter().enumerate() {
            g[r] = 10 + i as u64;
        }
        assert_eq!(
            decode_vmmcall(0x4856_0002, &g),
            FirmwareCall::Hypercall(Hypercall {
                nr: 0x4856_0002,
                function: 0,
                args: [10, 11, 12, 13, 14, 15]
            })
        );
        assert_eq!(encode_vmmcall_reply(FirmwareReply::Value(7)), Some(7));
        assert_eq!(
            encode_vmmcall_reply(FirmwareReply::Error(FirmwareError::NotSupported)),
            Some(u64::MAX)
        );
        assert_eq!(
            encode_vmmcall_reply(FirmwareReply::Cpuid(CpuidRegs::default())),
            None
        );
    }

    #[test]
    fn cpuid_takes_eax_and_ecx() {
        let host = CpuidRegs {
            eax: 1,
            ..CpuidRegs::default()
        };
        assert_eq!(
            decode_cpuid(0xdead_0000_8000_0001, 0x1_0000_0002, host),
            FirmwareCall::Cpuid {
                leaf: 0x8000_0001,
                subleaf: 2,
                host
            }
        );
    }
}
