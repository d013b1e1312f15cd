//! Virtual interrupt delivery through the GICv3 virtual CPU interface: the list
//! registers (`ICH_LR<n>_EL2`), `ICH_HCR_EL2`, `ICH_VMCR_EL2` and the active-priority
//! registers, and the physical CPU interface calls the exit path needs (deactivate).
//!
//! Which interrupts go into the list registers is not decided here: a
//! [`VirtualInterrupts`] (the board's glue to a virtual GIC model such as vm-core's)
//! fills them before each entry and takes them back after each exit. This module moves
//! the raw values between that model and the registers, writing only what changed.
//!
//! Arm IHI 0069H.b, 12.6 "AArch64 virtualization control System registers":
//! ICH_VTR_EL2.ListRegs \[4:0\] (list registers - 1), ICH_HCR_EL2, ICH_VMCR_EL2,
//! `ICH_AP0R<n>_EL2`/`ICH_AP1R<n>_EL2`, `ICH_LR<n>_EL2`; 12.2 ICC_DIR_EL1.

use vcpu_api::VCpuResult;

/// The most list registers a GICv3 CPU interface has.
pub const MAX_LIST_REGS: usize = 16;

/// The owner of a VM's virtual interrupt state, called by the vCPU around each run.
pub trait VirtualInterrupts: Send + Sync {
    /// Vcpu `vcpu` is about to enter the guest on physical CPU `pcpu`: fill `lrs`
    /// (one entry per implemented list register, free ones 0), call `deactivate`
    /// for each physical INTID to deactivate before the entry, and return the
    /// `ICH_HCR_EL2` value to run with.
    fn flush(
        &self,
        vcpu: usize,
        pcpu: usize,
        lrs: &mut [u64],
        deactivate: &mut dyn FnMut(u32),
    ) -> u64;

    /// Vcpu `vcpu` left the guest: `lrs` and `hcr` as the hardware holds them now.
    fn fold(&self, vcpu: usize, lrs: &[u64], hcr: u64);

    /// Makes interrupt `intid` pending for `vcpu` (`ArchVCpu::inject_interrupt`);
    /// `false` when there is no such interrupt.
    fn inject(&self, vcpu: usize, intid: u32) -> bool;
}

/// A vCPU's virtual CPU interface: what its list registers hold (as last written or
/// read back), and the registers kept across runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInterface {
    /// The list registers.
    pub lrs: [u64; MAX_LIST_REGS],
    /// How many the CPU implements (0 until bound).
    pub count: usize,
    /// ICH_HCR_EL2.
    pub hcr: u64,
    /// ICH_VMCR_EL2 (the guest's priority mask, binary points, group enables).
    pub vmcr: u64,
    /// `ICH_AP1R<n>_EL2`, n = 0..4 (active priorities of Group 1).
    pub ap1r: [u64; 4],
    /// `ICH_AP0R<n>_EL2`.
    pub ap0r: [u64; 4],
}

/// `ICH_VTR_EL2.ListRegs` + 1 (at most 16: the field's larger values are reserved).
pub const fn list_registers(vtr: u64) -> usize {
    let n = (vtr & 0x1f) as usize + 1;
    if n > MAX_LIST_REGS { MAX_LIST_REGS } else { n }
}

/// `ICH_VTR_EL2.PREbits` + 1: how many `ICH_AP<g>R<n>_EL2` exist (1, 2 or 4).
pub const fn active_priority_registers(vtr: u64) -> usize {
    match (vtr >> 26) & 7 {
        0..=4 => 1,
        5 => 2,
        _ => 4,
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hw {
    //! The registers themselves.

    use core::arch::asm;

    use super::{CpuInterface, active_priority_registers, list_registers};
    use crate::regs::{mrs, msr};

    /// Reads or writes `ICH_LR<n>_EL2` for a run-time `n` (the register is named in
    /// the instruction).
    macro_rules! lr_access {
        ($($i:literal => $name:literal),*) => {
            pub(super) fn read_lr(n: usize) -> u64 {
                match n {
                    $($i => mrs!($name),)*
                    _ => 0,
                }
            }

            /// # Safety
            ///
            /// At EL2 with no guest running on this CPU.
            pub(super) unsafe fn write_lr(n: usize, v: u64) {
                // SAFETY: per the caller; a list register only affects the guest.
                unsafe {
                    match n {
                        $($i => msr!($name, v),)*
                        _ => {}
                    }
                }
            }
        };
    }

    lr_access!(
        0 => "ich_lr0_el2", 1 => "ich_lr1_el2", 2 => "ich_lr2_el2", 3 => "ich_lr3_el2",
        4 => "ich_lr4_el2", 5 => "ich_lr5_el2", 6 => "ich_lr6_el2", 7 => "ich_lr7_el2",
        8 => "ich_lr8_el2", 9 => "ich_lr9_el2", 10 => "ich_lr10_el2", 11 => "ich_lr11_el2",
        12 => "ich_lr12_el2", 13 => "ich_lr13_el2", 14 => "ich_lr14_el2", 15 => "ich_lr15_el2"
    );

    fn vtr() -> u64 {
        mrs!("ich_vtr_el2")
    }

    /// Loads `cif` onto this CPU when its vCPU is bound: every list register, the
    /// control registers and the active priorities.
    pub(super) fn load(cif: &mut CpuInterface) {
        let vtr = vtr();
        cif.count = list_registers(vtr);
        let aprs = active_priority_registers(vtr);
        // SAFETY: at EL2 while binding: no guest runs here; these registers only
        // affect the guest's virtual CPU interface.
        unsafe {
            for n in 0..cif.count {
                write_lr(n, cif.lrs[n]);
            }
            msr!("ich_vmcr_el2", cif.vmcr);
            let ap1 = cif.ap1r;
            let ap0 = cif.ap0r;
            msr!("ich_ap1r0_el2", ap1[0]);
            msr!("ich_ap0r0_el2", ap0[0]);
            if aprs > 1 {
                msr!("ich_ap1r1_el2", ap1[1]);
                msr!("ich_ap0r1_el2", ap0[1]);
            }
            if aprs > 2 {
                msr!("ich_ap1r2_el2", ap1[2]);
                msr!("ich_ap1r3_el2", ap1[3]);
                msr!("ich_ap0r2_el2", ap0[2]);
                msr!("ich_ap0r3_el2", ap0[3]);
            }
            msr!("ich_hcr_el2", cif.hcr);
            asm!("isb", options(nostack, preserves_flags));
        }
    }

    /// Saves this CPU's virtual CPU interface into `cif` and disables it (the vCPU
    /// is unbound).
    pub(super) fn save(cif: &mut CpuInterface) {
        let aprs = active_priority_registers(vtr());
        for n in 0..cif.count {
            cif.lrs[n] = read_lr(n);
        }
        cif.hcr = mrs!("ich_hcr_el2");
        cif.vmcr = mrs!("ich_vmcr_el2");
        cif.ap1r[0] = mrs!("ich_ap1r0_el2");
        cif.ap0r[0] = mrs!("ich_ap0r0_el2");
        if aprs > 1 {
            cif.ap1r[1] = mrs!("ich_ap1r1_el2");
            cif.ap0r[1] = mrs!("ich_ap0r1_el2");
        }
        if aprs > 2 {
            cif.ap1r[2] = mrs!("ich_ap1r2_el2");
            cif.ap1r[3] = mrs!("ich_ap1r3_el2");
            cif.ap0r[2] = mrs!("ich_ap0r2_el2");
            cif.ap0r[3] = mrs!("ich_ap0r3_el2");
        }
        // SAFETY: the vCPU is being unbound: nothing of it runs here any more.
        unsafe {
            for n in 0..cif.count {
                write_lr(n, 0);
            }
            msr!("ich_hcr_el2", 0u64);
            asm!("isb", options(nostack, preserves_flags));
        }
    }

    /// Writes the list registers that differ from what the hardware holds
    /// (`shadow`), and ICH_HCR_EL2 when it changed.
    pub(super) fn write_changed(cif: &mut CpuInterface, lrs: &[u64], hcr: u64) {
        // SAFETY: called right before the entry, at EL2, with the guest stopped.
        unsafe {
            for (n, &v) in lrs.iter().enumerate().take(cif.count) {
                if cif.lrs[n] != v {
                    write_lr(n, v);
                    cif.lrs[n] = v;
                }
            }
            if cif.hcr != hcr {
                msr!("ich_hcr_el2", hcr);
                cif.hcr = hcr;
            }
        }
    }

    /// Reads back the list registers in use (non-zero) and ICH_HCR_EL2 after an exit.
    pub(super) fn read_back(cif: &mut CpuInterface) {
        for n in 0..cif.count {
            if cif.lrs[n] != 0 {
                cif.lrs[n] = read_lr(n);
            }
        }
        if cif.hcr != 0 {
            cif.hcr = mrs!("ich_hcr_el2");
        }
    }

    /// Deactivates physical interrupt `intid` (ICC_DIR_EL1, with EOImode = 1).
    pub(super) fn deactivate(intid: u32) {
        // SAFETY: deactivating an interrupt the host acknowledged has no memory
        // effect.
        unsafe {
            msr!("icc_dir_el1", u64::from(intid));
            asm!("isb", options(nostack, preserves_flags));
        }
    }
}

impl CpuInterface {
    /// Loads this interface onto the CPU the vCPU is bound to.
    pub(crate) fn bind(&mut self) -> VCpuResult {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        {
            hw::load(self);
            Ok(())
        }
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        Err(crate::cpu::NO_EL2)
    }

    /// Saves it when the vCPU is unbound.
    pub(crate) fn unbind(&mut self) {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        hw::save(self);
    }

    /// Before an entry: asks `source` for the list registers of `vcpu` and writes
    /// them.
    pub(crate) fn flush(&mut self, source: &dyn VirtualInterrupts, vcpu: usize, pcpu: usize) {
        let mut lrs = self.lrs;
        let count = self.count.min(MAX_LIST_REGS);
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        let mut deactivate = |p: u32| hw::deactivate(p);
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        let mut deactivate = |_: u32| {};
        let hcr = source.flush(vcpu, pcpu, &mut lrs[..count], &mut deactivate);
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        hw::write_changed(self, &lrs[..count], hcr);
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        {
            self.lrs = lrs;
            self.hcr = hcr;
        }
    }

    /// After an exit: reads the list registers back and hands them to `source`.
    pub(crate) fn fold(&mut self, source: &dyn VirtualInterrupts, vcpu: usize) {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        hw::read_back(self);
        let count = self.count.min(MAX_LIST_REGS);
        source.fold(vcpu, &self.lrs[..count], self.hcr);
    }
}

/// Deactivates a physical interrupt the host acknowledged with EOImode = 1 (priority
/// drop only): ICC_DIR_EL1.
pub fn deactivate_physical(intid: u32) {
    #[cfg(all(target_arch = "aarch64", target_os = "none"))]
    hw::deactivate(intid);
    #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
    let _ = intid;
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::vec::Vec;
    use std::sync::Mutex;

    use super::*;

    type Call = (&'static str, usize, Vec<u64>, u64);

    /// A [`VirtualInterrupts`] that fills the list registers with `next` and
    /// records what the vCPU asked.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<Call>>,
        next: Vec<u64>,
    }

    impl VirtualInterrupts for Recorder {
        fn flush(
            &self,
            vcpu: usize,
            _pcpu: usize,
            lrs: &mut [u64],
            deactivate: &mut dyn FnMut(u32),
        ) -> u64 {
            for (l, v) in lrs.iter_mut().zip(&self.next) {
                *l = *v;
            }
            deactivate(27);
            self.calls
                .lock()
                .unwrap()
                .push(("flush", vcpu, lrs.to_vec(), 0));
            0b11
        }
        fn fold(&self, vcpu: usize, lrs: &[u64], hcr: u64) {
            self.calls
                .lock()
                .unwrap()
                .push(("fold", vcpu, lrs.to_vec(), hcr));
        }
        fn inject(&self, vcpu: usize, intid: u32) -> bool {
            let call = ("inject", vcpu, Vec::from([u64::from(intid)]), 0);
            self.calls.lock().unwrap().push(call);
            intid < 1020
        }
    }

    /// Flush hands the source one slot per implemented list register and keeps what
    /// it wrote (the values the hardware gets) and the ICH_HCR_EL2 value; fold hands
    /// the same back.
    #[test]
    fn flush_and_fold_move_the_list_registers() {
        let source = Recorder {
            next: Vec::from([0x50a0_0000_0000_001b, 0, 7]),
            ..Default::default()
        };
        let mut cif = CpuInterface {
            count: 4,
            ..Default::default()
        };
        cif.flush(&source, 1, 1);
        assert_eq!(cif.lrs[..4], [0x50a0_0000_0000_001b, 0, 7, 0]);
        assert_eq!(cif.lrs[4..], [0; 12]);
        assert_eq!(cif.hcr, 0b11);
        cif.fold(&source, 1);
        let calls = source.calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1], ("fold", 1, Vec::from(&cif.lrs[..4]), 0b11));
    }

    /// ICH_VTR_EL2 of QEMU's GICv3: ListRegs 3 (4 registers), PREbits 4 (5 bits:
    /// one active-priority register), PRIbits 4.
    #[test]
    fn vtr_fields() {
        let qemu = (4u64 << 29) | (4 << 26) | (1 << 23) | 3;
        assert_eq!(list_registers(qemu), 4);
        assert_eq!(active_priority_registers(qemu), 1);
        assert_eq!(active_priority_registers(5 << 26), 2);
        assert_eq!(active_priority_registers(6 << 26), 4);
        assert_eq!(list_registers(0x1f), 16);
    }
}
