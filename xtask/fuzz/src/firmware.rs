//! Structured firmware replies for the firmware targets.

use arbitrary::Arbitrary;
use vcpu_api::{CpuState, CpuidRegs, FirmwareError, FirmwareReply};

/// A [`FirmwareReply`] built from fuzz input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Reply {
    /// Value.
    Value(u64),
    /// Error, by index.
    Error(u8),
    /// Offered.
    Offered(bool),
    /// Version.
    Version(u16, u16),
    /// CPU state, by index.
    CpuState(u8),
    /// CPUID registers.
    Cpuid([u32; 4]),
}

impl Reply {
    /// The reply.
    pub fn get(self) -> FirmwareReply {
        use FirmwareError as E;
        match self {
            Self::Value(v) => FirmwareReply::Value(v),
            Self::Error(i) => FirmwareReply::Error(
                [
                    E::NotSupported,
                    E::InvalidParameters,
                    E::AlreadyOn,
                    E::InvalidAddress,
                    E::Failed,
                ][usize::from(i) % 5],
            ),
            Self::Offered(b) => FirmwareReply::Offered(b),
            Self::Version(major, minor) => FirmwareReply::Version { major, minor },
            Self::CpuState(i) => FirmwareReply::CpuState(
                [CpuState::On, CpuState::Off, CpuState::OnPending][usize::from(i) % 3],
            ),
            Self::Cpuid([eax, ebx, ecx, edx]) => {
                FirmwareReply::Cpuid(CpuidRegs { eax, ebx, ecx, edx })
            }
        }
    }
}
