//! The guest's own paging: translating a guest-virtual address (the RIP of a
//! faulting instruction) to a guest-physical one by walking the guest's page tables
//! through [`vcpu_api::GuestMemory`], and the identity tables the board gives a guest
//! that starts directly in long mode. AMD64 APM vol. 2, 5.3 "Long-Mode Page
//! Translation".

use addrspace::GuestPhysAddr;
use vcpu_api::GuestMemory;

use crate::regs::{CR0_PG, CR4_LA57, CR4_PAE, EFER_LMA};

const P: u64 = 1;
const RW: u64 = 1 << 1;
const PS: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// The guest's paging registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPaging {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

/// Why a guest-virtual address has no translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at `level` (3 = PML4E .. 0 = PTE) is not present.
    NotPresent {
        /// The level.
        level: u8,
    },
    /// A table of the walk is not in guest RAM.
    TableNotInRam {
        /// The entry's guest-physical address.
        entry_gpa: u64,
        /// What guest memory said.
        error: addrspace::Error,
    },
    /// The guest uses a paging mode we do not walk.
    UnsupportedMode {
        /// Which (`"32-bit paging"`, `"PAE paging"`, `"5-level paging"`).
        paging: &'static str,
    },
}

impl GuestPaging {
    /// Translates linear address `va` to a guest-physical address: as it is with
    /// paging off (real mode, protected mode without paging: linear addresses are
    /// physical), through the 4-level tables in long mode (64-bit and compatibility
    /// mode); other paging modes are refused by name.
    pub fn translate(&self, va: u64, mem: &dyn GuestMemory) -> Result<GuestPhysAddr, WalkError> {
        if self.cr0 & CR0_PG == 0 {
            return Ok(vcpu_api::gpa_of(va));
        }
        let paging = if self.efer & EFER_LMA == 0 {
            if self.cr4 & CR4_PAE == 0 {
                Some("32-bit paging")
            } else {
                Some("PAE paging")
            }
        } else if self.cr4 & CR4_LA57 != 0 {
            Some("5-level paging")
        } else {
            None
        };
        if let Some(paging) = paging {
            return Err(WalkError::UnsupportedMode { paging });
        }
        let mut table = self.cr3 & ADDR;
        for level in (0..4u8).rev() {
            let index = (va >> (12 + 9 * u32::from(level))) & 0x1ff;
            let entry_gpa = table + index * 8;
            let mut raw = [0u8; 8];
            if let Err(error) = mem.read(vcpu_api::gpa_of(entry_gpa), &mut raw) {
                return Err(WalkError::TableNotInRam { entry_gpa, error });
            }
            let entry = u64::from_le_bytes(raw);
            if entry & P == 0 {
                return Err(WalkError::NotPresent { level });
            }
            if level == 0 || (level < 3 && entry & PS != 0) {
                let page_bits = 12 + 9 * u32::from(level);
                let offset_mask = (1u64 << page_bits) - 1;
                // Bit 12 of a large-page entry is PAT, not address.
                let base = entry & ADDR & !offset_mask;
                return Ok(vcpu_api::gpa_of(base | (va & offset_mask)));
            }
            table = entry & ADDR;
        }
        Err(WalkError::NotPresent { level: 0 })
    }
}

/// Frames [`identity_tables`] fills: one PML4, one PDPT and four page directories.
pub const IDENTITY_TABLE_FRAMES: usize = 6;

/// Page tables that identity-map the first 4 GiB of guest-physical space with 2 MiB
/// pages (present, writable, supervisor), to be copied to guest-physical `base`
/// (4 KiB aligned) and loaded into the guest's CR3 as `base`. Uses 2 MiB pages, not
/// 1 GiB ones, so the guest needs no PDPE1GB support.
pub fn identity_tables(base: u64) -> [[u64; 512]; IDENTITY_TABLE_FRAMES] {
    let mut t = [[0u64; 512]; IDENTITY_TABLE_FRAMES];
    t[0][0] = (base + 0x1000) | P | RW;
    for (gib, i) in (0..4u64).zip(0..) {
        t[1][i] = (base + 0x2000 + gib * 0x1000) | P | RW;
        for (mib2, j) in (0..512u64).zip(0..) {
            t[2 + i][j] = (gib << 30) | (mib2 << 21) | P | RW | PS;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeMap;

    use super::*;

    /// Guest RAM as sparse 8-byte words.
    struct Words(BTreeMap<u64, u64>);

    impl GuestMemory for Words {
        fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<(), addrspace::Error> {
            let a = gpa.as_usize() as u64;
            if buf.len() != 8 || a >= 0x100_0000 {
                return Err(addrspace::Error::NotMapped { gpa });
            }
            buf.copy_from_slice(&self.0.get(&a).copied().unwrap_or(0).to_le_bytes());
            Ok(())
        }
    }

    const LONG: GuestPaging = GuestPaging {
        cr0: CR0_PG | 1,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LMA | (1 << 8),
    };

    fn identity_memory() -> Words {
        let mut m = BTreeMap::new();
        for (i, table) in identity_tables(0x1000).iter().enumerate() {
            for (j, e) in table.iter().enumerate() {
                if *e != 0 {
                    m.insert(0x1000 + i as u64 * 0x1000 + j as u64 * 8, *e);
                }
            }
        }
        Words(m)
    }

    #[test]
    fn identity_tables_translate_to_themselves() {
        let mem = identity_memory();
        for va in [0u64, 0x10_0123, 0x4000_0008, 0xd000_0018, 0xffff_fff8] {
            assert_eq!(LONG.translate(va, &mem), Ok(vcpu_api::gpa_of(va)));
        }
        // Past 4 GiB the PDPT entry is empty.
        assert_eq!(
            LONG.translate(0x1_0000_0000, &mem),
            Err(WalkError::NotPresent { level: 2 })
        );
    }

    #[test]
    fn four_level_walk_with_4k_pages() {
        // va 0x7f_8020_3456 -> PML4 index 0xff, PDPT 0x0, PD 0x1, PT 0x3, offset 0x456.
        let va = (0xffu64 << 39) | (1 << 21) | (3 << 12) | 0x456;
        let mut m = BTreeMap::new();
        m.insert(0x1000 + 0xff * 8, 0x2000 | P | RW);
        m.insert(0x2000, 0x3000 | P);
        m.insert(0x3000 + 8, 0x4000 | P);
        m.insert(0x4000 + 3 * 8, 0xab_c000 | P | (1 << 63));
        let mem = Words(m);
        assert_eq!(
            LONG.translate(va, &mem),
            Ok(GuestPhysAddr::from_usize(0xab_c456))
        );
        // 1 GiB page at the PDPT level, with bit 12 (PAT) ignored.
        let mut m = BTreeMap::new();
        m.insert(0x1000, 0x2000 | P);
        m.insert(0x2000 + 8, 0x8000_0000 | P | PS | (1 << 12));
        assert_eq!(
            LONG.translate(0x4000_1234, &Words(m)),
            Ok(GuestPhysAddr::from_usize(0x8000_1234))
        );
    }

    #[test]
    fn faults_and_modes() {
        let mem = Words(BTreeMap::new());
        assert_eq!(
            LONG.translate(0x1234, &mem),
            Err(WalkError::NotPresent { level: 3 })
        );
        let bad_root = GuestPaging {
            cr3: 0x200_0000,
            ..LONG
        };
        assert_eq!(
            bad_root.translate(0, &mem),
            Err(WalkError::TableNotInRam {
                entry_gpa: 0x200_0000,
                error: addrspace::Error::NotMapped {
                    gpa: GuestPhysAddr::from_usize(0x200_0000)
                }
            })
        );
        let real = GuestPaging { cr0: 1, ..LONG };
        assert_eq!(
            real.translate(0xb8000, &mem),
            Ok(GuestPhysAddr::from_usize(0xb8000))
        );
        let pae32 = GuestPaging { efer: 0, ..LONG };
        assert_eq!(
            pae32.translate(0, &mem),
            Err(WalkError::UnsupportedMode {
                paging: "PAE paging"
            })
        );
        let legacy = GuestPaging {
            efer: 0,
            cr4: 0,
            ..LONG
        };
        assert_eq!(
            legacy.translate(0, &mem),
            Err(WalkError::UnsupportedMode {
                paging: "32-bit paging"
            })
        );
        let la57 = GuestPaging {
            cr4: CR4_PAE | CR4_LA57,
            ..LONG
        };
        assert_eq!(
            la57.translate(0, &mem),
            Err(WalkError::UnsupportedMode {
                paging: "5-level paging"
            })
        );
    }
}
