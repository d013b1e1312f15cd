//! Virtual interrupt delivery: the VMCB's EVENTINJ field (APM vol. 2, 15.20 "Event
//! Injection"), which the processor delivers to the guest at the next VMRUN.

use vcpu_api::{VCpuError, VCpuResult};

/// EVENTINJ.V (bit 31): the event is valid.
const EVENTINJ_VALID: u64 = 1 << 31;

/// EVENTINJ for external interrupt `vector` (TYPE 0 in bits 10:8, no error code).
pub fn external_interrupt(vector: usize) -> VCpuResult<u64> {
    let Ok(vector) = u8::try_from(vector) else {
        return Err(VCpuError::InvalidValue {
            what: "interrupt vector",
            value: vector as u64,
        });
    };
    Ok(u64::from(vector) | EVENTINJ_VALID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_fit_a_byte() {
        assert_eq!(external_interrupt(0x20), Ok(0x8000_0020));
        assert!(matches!(
            external_interrupt(256),
            Err(VCpuError::InvalidValue { value: 256, .. })
        ));
    }
}
