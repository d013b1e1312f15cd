//! The guest's calls by HVC and SMC: PSCI (Arm DEN0022 "Power State Coordination
//! Interface") decoded from the SMCCC registers x0..x3 into a
//! [`vcpu_api::FirmwareCall`], other HVCs as hypercalls, and the reply encoded in x0
//! with PSCI's return codes. Pure functions; which calls are served and what they
//! answer is vm-core's decision.
//!
//! Function ids (DEN0022D §5.1): owner "standard secure service" (OEN 4), fast calls,
//! `0x8400_00nn` for SMC32 and `0xc400_00nn` for SMC64. Return codes: §5.2.2.

use vcpu_api::{
    Conduit, CpuState, FirmwareCall, FirmwareError, FirmwareReply, Hypercall, Service, gpa_of,
    low_u32,
};

use crate::regs::MPIDR_AFFINITY_MASK;

/// PSCI_VERSION (SMC32).
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND (SMC32; SMC64 is `0xc400_0001`).
pub const CPU_SUSPEND: u32 = 0x8400_0001;
/// CPU_OFF (SMC32).
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON (SMC32; SMC64 is [`CPU_ON_64`]).
pub const CPU_ON: u32 = 0x8400_0003;
/// CPU_ON (SMC64).
pub const CPU_ON_64: u32 = 0xc400_0003;
/// AFFINITY_INFO (SMC32).
pub const AFFINITY_INFO: u32 = 0x8400_0004;
/// AFFINITY_INFO (SMC64).
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
/// MIGRATE_INFO_TYPE (SMC32).
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF (SMC32).
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET (SMC32).
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES (SMC32).
pub const PSCI_FEATURES: u32 = 0x8400_000a;

/// PSCI return codes (signed 32-bit values, sign-extended into x0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum PsciError {
    /// NOT_SUPPORTED.
    NotSupported = -1,
    /// INVALID_PARAMETERS.
    InvalidParameters = -2,
    /// DENIED.
    Denied = -3,
    /// ALREADY_ON.
    AlreadyOn = -4,
    /// ON_PENDING.
    OnPending = -5,
    /// INTERNAL_FAILURE.
    InternalFailure = -6,
    /// NOT_PRESENT.
    NotPresent = -7,
    /// DISABLED.
    Disabled = -8,
    /// INVALID_ADDRESS.
    InvalidAddress = -9,
}

impl PsciError {
    /// The value for x0 (sign-extended to 64 bits).
    pub const fn to_x0(self) -> u64 {
        self as i32 as i64 as u64
    }
}

/// The SMCCC "unknown function" return value, -1 in x0.
pub const SMCCC_NOT_SUPPORTED: u64 = u64::MAX;

/// Which instruction the guest uses for PSCI (the "method" of the DT `psci` node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PsciConduit {
    /// `hvc #0` (what KVM guests use).
    #[default]
    Hvc,
    /// `smc #0`, trapped to EL2 by HCR_EL2.TSC.
    Smc,
}

/// Whether `function_id` (x0) is in the PSCI range: SMCCC fast call, owner 4
/// (standard secure service), function numbers 0x00..=0x1f, SMC32 or SMC64.
pub const fn is_psci(function_id: u64) -> bool {
    function_id >> 32 == 0 && (low_u32(function_id) & !0x4000_001f) == 0x8400_0000
}

/// Decodes the call the guest made by `conduit` (`hvc` or `smc`) from x0..x6, given
/// which of the two carries PSCI: a PSCI function there is a PSCI call; any other
/// HVC is a hypercall for the board; any other SMC is an unsupported function (the
/// guest has no secure firmware behind it).
pub fn decode_call(x: &[u64; 7], conduit: Conduit, psci: PsciConduit) -> FirmwareCall {
    let psci_here = matches!(
        (conduit, psci),
        (Conduit::Hvc, PsciConduit::Hvc) | (Conduit::Smc, PsciConduit::Smc)
    );
    if psci_here && let Some(call) = decode_psci([x[0], x[1], x[2], x[3]]) {
        return call;
    }
    match conduit {
        Conduit::Hvc => FirmwareCall::Hypercall(Hypercall {
            nr: x[0],
            function: 0,
            args: [x[1], x[2], x[3], x[4], x[5], x[6]],
        }),
        _ => FirmwareCall::Unsupported {
            nr: x[0],
            function: 0,
        },
    }
}

/// Decodes a PSCI call from x0..x3, or `None` if x0 is not a PSCI function id.
/// SMC32 calls use only the low 32 bits of their arguments (SMCCC §2.6). A function
/// this implementation does not serve (CPU_SUSPEND, MIGRATE, AFFINITY_INFO above
/// level 0, ...) is [`FirmwareCall::Unsupported`].
pub fn decode_psci(x: [u64; 4]) -> Option<FirmwareCall> {
    if !is_psci(x[0]) {
        return None;
    }
    // x0 has no bits above 31 (is_psci).
    let function = low_u32(x[0]);
    let smc64 = function & 0x4000_0000 != 0;
    let arg = |v: u64| if smc64 { v } else { v & 0xffff_ffff };
    let call = match function & !0x4000_0000 {
        PSCI_VERSION if !smc64 => FirmwareCall::Version,
        CPU_OFF if !smc64 => FirmwareCall::CpuOff,
        CPU_ON => FirmwareCall::CpuOn {
            target: arg(x[1]) & MPIDR_AFFINITY_MASK,
            entry: gpa_of(arg(x[2])),
            arg: arg(x[3]),
        },
        AFFINITY_INFO if arg(x[2]) == 0 => FirmwareCall::CpuStatus {
            target: arg(x[1]) & MPIDR_AFFINITY_MASK,
        },
        MIGRATE_INFO_TYPE if !smc64 => FirmwareCall::MigrateInfoType,
        SYSTEM_OFF if !smc64 => FirmwareCall::SystemOff,
        SYSTEM_RESET if !smc64 => FirmwareCall::SystemReset,
        PSCI_FEATURES if !smc64 => FirmwareCall::Probe {
            // An SMC32 call: the upper half of x1 is ignored (SMCCC).
            service: service_of(low_u32(x[1])),
        },
        _ => FirmwareCall::Unsupported {
            nr: u64::from(function),
            function: 0,
        },
    };
    Some(call)
}

/// The service PSCI function `function` belongs to (what PSCI_FEATURES asks about),
/// for the functions [`decode_psci`] decodes; `None` for any other.
pub const fn service_of(function: u32) -> Option<Service> {
    match function {
        PSCI_VERSION | PSCI_FEATURES => Some(Service::Base),
        MIGRATE_INFO_TYPE => Some(Service::MigrateInfo),
        CPU_ON | CPU_ON_64 | CPU_OFF | AFFINITY_INFO | AFFINITY_INFO_64 => Some(Service::CpuPower),
        SYSTEM_OFF | SYSTEM_RESET => Some(Service::SystemPower),
        _ => None,
    }
}

impl From<FirmwareError> for PsciError {
    fn from(e: FirmwareError) -> Self {
        match e {
            FirmwareError::NotSupported => Self::NotSupported,
            FirmwareError::InvalidParameters => Self::InvalidParameters,
            FirmwareError::AlreadyOn => Self::AlreadyOn,
            FirmwareError::InvalidAddress => Self::InvalidAddress,
            FirmwareError::Failed => Self::InternalFailure,
        }
    }
}

/// x0 for `reply` to a PSCI call or a hypercall (SMCCC: one value in x0, -1 for an
/// unknown function); `None` for a reply no such call can have (CPUID registers).
pub fn encode_reply(reply: FirmwareReply) -> Option<u64> {
    Some(match reply {
        FirmwareReply::Value(v) => v,
        FirmwareReply::Error(e) => PsciError::from(e).to_x0(),
        // PSCI_FEATURES: 0 (no feature flags) or NOT_SUPPORTED.
        FirmwareReply::Offered(true) => 0,
        FirmwareReply::Offered(false) => PsciError::NotSupported.to_x0(),
        FirmwareReply::Version { major, minor } => u64::from(major) << 16 | u64::from(minor),
        // AFFINITY_INFO: ON 0, OFF 1, ON_PENDING 2 (DEN0022D §5.7.1).
        FirmwareReply::CpuState(CpuState::On) => 0,
        FirmwareReply::CpuState(CpuState::Off) => 1,
        FirmwareReply::CpuState(CpuState::OnPending) => 2,
        FirmwareReply::Cpuid(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use addrspace::GuestPhysAddr;

    use super::*;

    fn on(target: u64, entry: usize, arg: u64) -> Option<FirmwareCall> {
        Some(FirmwareCall::CpuOn {
            target,
            entry: GuestPhysAddr::from_usize(entry),
            arg,
        })
    }

    #[test]
    fn cpu_on_64_keeps_full_arguments() {
        assert_eq!(
            decode_psci([0xc400_0003, 0x100, 0x4000_1000, 0x1_0000_0005]),
            on(0x100, 0x4000_1000, 0x1_0000_0005)
        );
    }

    /// SMC32 arguments are cut to 32 bits; MPIDR bits outside the affinity fields
    /// (RES1 bit 31, U, MT) are not part of the target.
    #[test]
    fn smc32_arguments_are_cut_to_32_bits() {
        assert_eq!(
            decode_psci([0x8400_0003, 0xffff_ffff_8000_0101, 0xdead_0000_4000_0000, 7]),
            on(0x101, 0x4000_0000, 7)
        );
    }

    #[test]
    fn simple_calls() {
        let d = |x0| decode_psci([x0, 0, 0, 0]);
        assert_eq!(d(0x8400_0000), Some(FirmwareCall::Version));
        assert_eq!(d(0x8400_0002), Some(FirmwareCall::CpuOff));
        assert_eq!(d(0x8400_0008), Some(FirmwareCall::SystemOff));
        assert_eq!(d(0x8400_0009), Some(FirmwareCall::SystemReset));
        assert_eq!(d(0x8400_0006), Some(FirmwareCall::MigrateInfoType));
        assert_eq!(
            decode_psci([0xc400_0004, 0x101, 0, 0]),
            Some(FirmwareCall::CpuStatus { target: 0x101 })
        );
        // CPU_SUSPEND (SMC64) is PSCI but not served; SYSTEM_OFF has no SMC64 form;
        // AFFINITY_INFO above level 0 is not served.
        for x in [
            [0xc400_0001, 0, 0, 0],
            [0xc400_0008, 0, 0, 0],
            [0x8400_0004, 1, 1, 0],
        ] {
            assert_eq!(
                decode_psci(x),
                Some(FirmwareCall::Unsupported {
                    nr: x[0],
                    function: 0
                })
            );
        }
    }

    #[test]
    fn features_name_the_service() {
        let probe = |f: u32| decode_psci([0x8400_000a, u64::from(f), 0, 0]);
        let service = |s| Some(FirmwareCall::Probe { service: s });
        assert_eq!(probe(CPU_ON_64), service(Some(Service::CpuPower)));
        assert_eq!(probe(SYSTEM_RESET), service(Some(Service::SystemPower)));
        assert_eq!(probe(PSCI_FEATURES), service(Some(Service::Base)));
        assert_eq!(probe(CPU_SUSPEND), service(None));
        // SMCCC_VERSION (what Linux asks about first) is not PSCI.
        assert_eq!(probe(0x8000_0000), service(None));
    }

    /// Other SMCCC owners (our vendor hypervisor calls, 0xc600_00xx), PSCI numbers
    /// above 0x1f, yielding calls and values with upper bits are not PSCI.
    #[test]
    fn non_psci_ids() {
        for id in [
            0xc600_0001u64,
            0x8400_0020,
            0x0400_0000,
            0x1_8400_0000,
            0x8500_0000,
        ] {
            assert_eq!(decode_psci([id, 0, 0, 0]), None, "{id:#x}");
        }
    }

    /// PSCI by the configured instruction; other HVCs are hypercalls with x1..x6,
    /// other SMCs unsupported.
    #[test]
    fn conduits() {
        let mut x = [0x8400_0000u64, 1, 2, 3, 4, 5, 6];
        assert_eq!(
            decode_call(&x, Conduit::Smc, PsciConduit::Smc),
            FirmwareCall::Version
        );
        assert_eq!(
            decode_call(&x, Conduit::Hvc, PsciConduit::Smc),
            FirmwareCall::Hypercall(Hypercall {
                nr: 0x8400_0000,
                function: 0,
                args: [1, 2, 3, 4, 5, 6]
            })
        );
        assert_eq!(
            decode_call(&x, Conduit::Smc, PsciConduit::Hvc),
            FirmwareCall::Unsupported {
                nr: 0x8400_0000,
                function: 0
            }
        );
        x[0] = 0xc600_0002;
        assert!(matches!(
            decode_call(&x, Conduit::Hvc, PsciConduit::Hvc),
            FirmwareCall::Hypercall(Hypercall {
                nr: 0xc600_0002,
                ..
            })
        ));
    }

    #[test]
    fn replies_in_x0() {
        assert_eq!(PsciError::NotSupported.to_x0(), u64::MAX);
        assert_eq!(PsciError::AlreadyOn.to_x0(), (-4i64) as u64);
        let e = |e| encode_reply(FirmwareReply::Error(e));
        assert_eq!(e(FirmwareError::InvalidParameters), Some((-2i64) as u64));
        assert_eq!(e(FirmwareError::Failed), Some((-6i64) as u64));
        assert_eq!(e(FirmwareError::InvalidAddress), Some((-9i64) as u64));
        assert_eq!(
            encode_reply(FirmwareReply::Version { major: 1, minor: 0 }),
            Some(0x1_0000)
        );
        assert_eq!(encode_reply(FirmwareReply::Offered(true)), Some(0));
        assert_eq!(encode_reply(FirmwareReply::Offered(false)), Some(u64::MAX));
        assert_eq!(
            encode_reply(FirmwareReply::CpuState(CpuState::Off)),
            Some(1)
        );
        assert_eq!(encode_reply(FirmwareReply::Cpuid(Default::default())), None);
    }
}
