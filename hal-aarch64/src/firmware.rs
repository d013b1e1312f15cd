//! The guest's PSCI calls (Arm DEN0022 "Power State Coordination Interface"), decoded
//! from the SMCCC registers x0..x3 by a pure function, and the return codes.
//!
//! Function ids (DEN0022D §5.1): owner "standard secure service" (OEN 4), fast calls,
//! `0x8400_00nn` for SMC32 and `0xc400_00nn` for SMC64. Return codes: §5.2.2.

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
/// AFFINITY_INFO (SMC32; SMC64 is `0xc400_0004`).
pub const AFFINITY_INFO: u32 = 0x8400_0004;
/// MIGRATE_INFO_TYPE (SMC32).
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF (SMC32).
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET (SMC32).
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES (SMC32).
pub const PSCI_FEATURES: u32 = 0x8400_000a;

/// The PSCI version this hypervisor implements: 1.0 (major in bits 31:16).
pub const VERSION_1_0: u64 = 0x0001_0000;

/// MIGRATE_INFO_TYPE's answer: no Trusted OS, migration not required.
pub const MIGRATE_NOT_REQUIRED: u64 = 2;

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

/// A decoded PSCI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciCall {
    /// PSCI_VERSION.
    Version,
    /// CPU_ON: start the CPU with MPIDR affinity `target` at `entry` with `context`
    /// in its x0.
    CpuOn {
        /// Target affinity (MPIDR Aff3..Aff0 fields).
        target: u64,
        /// Entry point (IPA; the guest's MMU is off there).
        entry: u64,
        /// The value for the target's x0.
        context: u64,
    },
    /// CPU_OFF.
    CpuOff,
    /// AFFINITY_INFO for `target` at `lowest_level`.
    AffinityInfo {
        /// Target affinity.
        target: u64,
        /// Lowest affinity level.
        lowest_level: u64,
    },
    /// MIGRATE_INFO_TYPE.
    MigrateInfoType,
    /// SYSTEM_OFF.
    SystemOff,
    /// SYSTEM_RESET.
    SystemReset,
    /// PSCI_FEATURES for function `function`.
    Features {
        /// The function id asked about.
        function: u32,
    },
    /// A PSCI function id this implementation does not serve (CPU_SUSPEND,
    /// MIGRATE, ...): the answer is NOT_SUPPORTED.
    Unsupported {
        /// The function id.
        function: u32,
    },
}

/// Whether `function_id` (x0) is in the PSCI range: SMCCC fast call, owner 4
/// (standard secure service), function numbers 0x00..=0x1f, SMC32 or SMC64.
pub const fn is_psci(function_id: u64) -> bool {
    function_id >> 32 == 0 && (function_id as u32 & !0x4000_001f) == 0x8400_0000
}

/// Decodes a PSCI call from x0..x3, or `None` if x0 is not a PSCI function id.
/// SMC32 calls use only the low 32 bits of their arguments (SMCCC §2.6).
pub fn decode(x: [u64; 4]) -> Option<PsciCall> {
    if !is_psci(x[0]) {
        return None;
    }
    let function = x[0] as u32;
    let smc64 = function & 0x4000_0000 != 0;
    let arg = |v: u64| if smc64 { v } else { v & 0xffff_ffff };
    let call = match function & !0x4000_0000 {
        PSCI_VERSION if !smc64 => PsciCall::Version,
        CPU_OFF if !smc64 => PsciCall::CpuOff,
        CPU_ON => PsciCall::CpuOn {
            target: arg(x[1]),
            entry: arg(x[2]),
            context: arg(x[3]),
        },
        AFFINITY_INFO => PsciCall::AffinityInfo {
            target: arg(x[1]),
            lowest_level: arg(x[2]),
        },
        MIGRATE_INFO_TYPE if !smc64 => PsciCall::MigrateInfoType,
        SYSTEM_OFF if !smc64 => PsciCall::SystemOff,
        SYSTEM_RESET if !smc64 => PsciCall::SystemReset,
        PSCI_FEATURES if !smc64 => PsciCall::Features {
            function: x[1] as u32,
        },
        _ => PsciCall::Unsupported { function },
    };
    Some(call)
}

/// PSCI_FEATURES: 0 for the functions [`decode`] serves, NOT_SUPPORTED otherwise.
pub const fn features(function: u32) -> u64 {
    match function {
        PSCI_VERSION | CPU_OFF | CPU_ON | CPU_ON_64 | MIGRATE_INFO_TYPE | SYSTEM_OFF
        | SYSTEM_RESET | PSCI_FEATURES => 0,
        _ => PsciError::NotSupported.to_x0(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_on_64_keeps_full_arguments() {
        assert_eq!(
            decode([0xc400_0003, 1, 0x4000_1000, 0x1_0000_0005]),
            Some(PsciCall::CpuOn {
                target: 1,
                entry: 0x4000_1000,
                context: 0x1_0000_0005
            })
        );
    }

    #[test]
    fn smc32_arguments_are_cut_to_32_bits() {
        assert_eq!(
            decode([0x8400_0003, 0xffff_ffff_0000_0001, 0xdead_0000_4000_0000, 7]),
            Some(PsciCall::CpuOn {
                target: 1,
                entry: 0x4000_0000,
                context: 7
            })
        );
    }

    #[test]
    fn simple_calls() {
        assert_eq!(decode([0x8400_0000, 0, 0, 0]), Some(PsciCall::Version));
        assert_eq!(decode([0x8400_0002, 0, 0, 0]), Some(PsciCall::CpuOff));
        assert_eq!(decode([0x8400_0008, 0, 0, 0]), Some(PsciCall::SystemOff));
        assert_eq!(decode([0x8400_0009, 0, 0, 0]), Some(PsciCall::SystemReset));
        assert_eq!(
            decode([0x8400_000a, 0xc400_0003, 0, 0]),
            Some(PsciCall::Features {
                function: 0xc400_0003
            })
        );
        // CPU_SUSPEND (SMC64) is PSCI but not served; SYSTEM_OFF has no SMC64 form.
        assert_eq!(
            decode([0xc400_0001, 0, 0, 0]),
            Some(PsciCall::Unsupported {
                function: 0xc400_0001
            })
        );
        assert_eq!(
            decode([0xc400_0008, 0, 0, 0]),
            Some(PsciCall::Unsupported {
                function: 0xc400_0008
            })
        );
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
            assert_eq!(decode([id, 0, 0, 0]), None, "{id:#x}");
        }
    }

    #[test]
    fn return_codes_are_sign_extended() {
        assert_eq!(PsciError::NotSupported.to_x0(), u64::MAX);
        assert_eq!(PsciError::AlreadyOn.to_x0(), (-4i64) as u64);
        assert_eq!(features(CPU_ON), 0);
        assert_eq!(features(CPU_SUSPEND), u64::MAX);
    }
}
