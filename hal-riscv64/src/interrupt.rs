//! Virtual interrupt delivery: the `hvip` bit that makes an interrupt pending for the
//! guest (Privileged Architecture 20211203, section 8.2.3). The vCPU ORs it into
//! `hvip` at its next entry.

use crate::exit::interrupt;
use crate::regs::hvip;

/// The `hvip` bit for interrupt `vector` as the guest sees it: VS-level software,
/// timer, external (2, 6, 10), or the supervisor numbers (1, 5, 9), which a guest in
/// VS-mode takes as the same interrupts. `None` for anything else.
pub fn hvip_bit(vector: usize) -> Option<u64> {
    match vector as u64 {
        interrupt::VSSI | interrupt::SSI => Some(hvip::VSSIP),
        interrupt::VSTI | interrupt::STI => Some(hvip::VSTIP),
        interrupt::VSEI | interrupt::SEI => Some(hvip::VSEIP),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_and_vs_numbers_are_the_same_interrupts() {
        assert_eq!(hvip_bit(1), hvip_bit(2));
        assert_eq!(hvip_bit(5), Some(hvip::VSTIP));
        assert_eq!(hvip_bit(10), Some(hvip::VSEIP));
        assert_eq!(hvip_bit(3), None);
        assert_eq!(hvip_bit(usize::MAX), None);
    }
}
