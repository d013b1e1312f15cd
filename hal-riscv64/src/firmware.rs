//! The Supervisor Binary Interface as the guest sees it: extension and function ids,
//! error codes, and [`SbiRequest`], the decoded form of a guest's ECALL.
//!
//! RISC-V SBI specification v2.0: chapter 3 (binary encoding: EID in a7, FID in a6,
//! arguments in a0..a5, error in a0 and value in a1), 4 (Base), 5 (legacy extensions,
//! EIDs 0x00..0x0f, result in a0 only), 6 (TIME), 7 (IPI), 8 (RFENCE), 9 (HSM),
//! 10 (SRST), 12 (DBCN). Decoding is a pure function of the registers.

/// Base extension ("0x10").
pub const EID_BASE: u64 = 0x10;
/// Legacy `sbi_set_timer`.
pub const EID_LEGACY_SET_TIMER: u64 = 0x00;
/// Legacy `sbi_console_putchar`.
pub const EID_LEGACY_PUTCHAR: u64 = 0x01;
/// Legacy `sbi_console_getchar`.
pub const EID_LEGACY_GETCHAR: u64 = 0x02;
/// Legacy `sbi_shutdown`.
pub const EID_LEGACY_SHUTDOWN: u64 = 0x08;
/// Timer extension ("TIME").
pub const EID_TIME: u64 = 0x5449_4d45;
/// IPI extension ("sPI").
pub const EID_IPI: u64 = 0x0073_5049;
/// Remote fence extension ("RFNC").
pub const EID_RFENCE: u64 = 0x5246_4e43;
/// Hart state management ("HSM").
pub const EID_HSM: u64 = 0x0048_534d;
/// System reset ("SRST").
pub const EID_SRST: u64 = 0x5352_5354;
/// Debug console ("DBCN").
pub const EID_DBCN: u64 = 0x4442_434e;

/// SBI error codes (a0), section 3.2.
pub mod error {
    /// Completed successfully.
    pub const SUCCESS: i64 = 0;
    /// Failed.
    pub const FAILED: i64 = -1;
    /// Not supported.
    pub const NOT_SUPPORTED: i64 = -2;
    /// Invalid parameter(s).
    pub const INVALID_PARAM: i64 = -3;
    /// Denied or not allowed.
    pub const DENIED: i64 = -4;
    /// Invalid address(s).
    pub const INVALID_ADDRESS: i64 = -5;
    /// Already available.
    pub const ALREADY_AVAILABLE: i64 = -6;
    /// Already started.
    pub const ALREADY_STARTED: i64 = -7;
    /// Already stopped.
    pub const ALREADY_STOPPED: i64 = -8;
}

/// HSM hart states (`hart_get_status`), section 9.1.
pub mod hart_state {
    /// The hart is running.
    pub const STARTED: u64 = 0;
    /// The hart is not running.
    pub const STOPPED: u64 = 1;
    /// `hart_start` was called and the hart has not started yet.
    pub const START_PENDING: u64 = 2;
    /// `hart_stop` was called and the hart has not stopped yet.
    pub const STOP_PENDING: u64 = 3;
}

/// The SBI specification version we implement: 2.0 (major in bits 30:24).
pub const SPEC_VERSION: u64 = 2 << 24;
/// Our implementation id. The SBI specification's registered ids stop at 11 (bhyve);
/// this one is outside the registered range on purpose and spells "HVC".
pub const IMPL_ID: u64 = 0x0048_5643;

/// Which harts an IPI or remote fence targets (section 3.1: `hart_mask` is a bit
/// vector starting at `hart_mask_base`; a base of -1 means every hart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HartMask {
    /// The bit vector.
    pub mask: u64,
    /// Hart id of bit 0, or `u64::MAX` for all harts.
    pub base: u64,
}

impl HartMask {
    /// Whether hart `hart` is a target.
    pub fn contains(&self, hart: u64) -> bool {
        if self.base == u64::MAX {
            return true;
        }
        hart.checked_sub(self.base)
            .is_some_and(|bit| bit < 64 && self.mask & (1 << bit) != 0)
    }
}

/// Which remote fence the guest asked for (RFENCE, section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteFence {
    /// FENCE.I on the targets.
    FenceI,
    /// SFENCE.VMA of `[start, start + size)` (size 0 or all-ones: everything),
    /// optionally for one ASID.
    SfenceVma {
        /// First guest-virtual address.
        start: u64,
        /// Size in bytes.
        size: u64,
        /// Only this ASID, when given.
        asid: Option<u64>,
    },
}

/// A guest's SBI call, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbiRequest {
    /// Base: `get_spec_version`.
    GetSpecVersion,
    /// Base: `get_impl_id`.
    GetImplId,
    /// Base: `get_impl_version`.
    GetImplVersion,
    /// Base: `probe_extension(eid)`.
    ProbeExtension {
        /// The extension asked about.
        eid: u64,
    },
    /// Base: `get_mvendorid`, `get_marchid`, `get_mimpid` (we report 0: "not
    /// implemented" as section 4.5 allows, so the guest learns nothing of the host).
    MachineId,
    /// TIME `set_timer` or legacy `set_timer`: the next timer event at `stime_value`.
    SetTimer {
        /// Absolute time.
        stime_value: u64,
    },
    /// Legacy `console_putchar`.
    LegacyPutchar {
        /// The byte.
        byte: u8,
    },
    /// Legacy `console_getchar`.
    LegacyGetchar,
    /// Legacy `shutdown`.
    LegacyShutdown,
    /// IPI `send_ipi`.
    SendIpi {
        /// Targets.
        harts: HartMask,
    },
    /// RFENCE (the guest has no hypervisor extension, so the HFENCE functions 3..=6
    /// are [`SbiRequest::Unsupported`]).
    RemoteFence {
        /// Targets.
        harts: HartMask,
        /// What to fence.
        fence: RemoteFence,
    },
    /// HSM `hart_start`.
    HartStart {
        /// The hart to start.
        hart: u64,
        /// Its start address (guest-physical, since it starts with translation off).
        start_addr: u64,
        /// Its a1.
        opaque: u64,
    },
    /// HSM `hart_stop`.
    HartStop,
    /// HSM `hart_get_status`.
    HartStatus {
        /// The hart asked about.
        hart: u64,
    },
    /// SRST `system_reset`.
    SystemReset {
        /// 0 shutdown, 1 cold reboot, 2 warm reboot (others are reserved or
        /// vendor-specific and refused).
        reset_type: u32,
        /// 0 no reason, 1 system failure.
        reason: u32,
    },
    /// DBCN `console_write`: `len` bytes at guest-physical `addr`.
    ConsoleWrite {
        /// Bytes to write.
        len: u64,
        /// Guest-physical address of the buffer.
        addr: u64,
    },
    /// DBCN `console_read` into the buffer at guest-physical `addr`.
    ConsoleRead {
        /// Buffer size.
        len: u64,
        /// Guest-physical address of the buffer.
        addr: u64,
    },
    /// DBCN `console_write_byte`.
    ConsoleWriteByte {
        /// The byte.
        byte: u8,
    },
    /// An extension the arch layer does not serve: the VM layer gets it as a
    /// hypercall (our test protocol's extension among them).
    Forward {
        /// a7.
        eid: u64,
        /// a6.
        fid: u64,
    },
    /// A function of an extension we serve that does not exist or is not
    /// supported (answered with `SBI_ERR_NOT_SUPPORTED`).
    Unsupported {
        /// a7.
        eid: u64,
        /// a6.
        fid: u64,
    },
}

/// The extensions the vCPU serves without conditions (`probe_extension` says so).
/// The console ones (legacy putchar/getchar, DBCN) need a console, TIME needs Sstc,
/// and IPI is served by the VM layer, which declares it with the extensions it
/// serves.
pub const SERVED_EXTENSIONS: [u64; 5] =
    [EID_BASE, EID_LEGACY_SHUTDOWN, EID_RFENCE, EID_HSM, EID_SRST];

impl SbiRequest {
    /// Decodes an ECALL from `a7` (EID), `a6` (FID) and `a0..a5`.
    pub fn decode(eid: u64, fid: u64, a: [u64; 6]) -> SbiRequest {
        let unsupported = SbiRequest::Unsupported { eid, fid };
        let harts = HartMask {
            mask: a[0],
            base: a[1],
        };
        match eid {
            EID_BASE => match fid {
                0 => SbiRequest::GetSpecVersion,
                1 => SbiRequest::GetImplId,
                2 => SbiRequest::GetImplVersion,
                3 => SbiRequest::ProbeExtension { eid: a[0] },
                4..=6 => SbiRequest::MachineId,
                _ => unsupported,
            },
            // Legacy calls ignore a6.
            EID_LEGACY_SET_TIMER => SbiRequest::SetTimer { stime_value: a[0] },
            EID_LEGACY_PUTCHAR => SbiRequest::LegacyPutchar { byte: a[0] as u8 },
            EID_LEGACY_GETCHAR => SbiRequest::LegacyGetchar,
            EID_LEGACY_SHUTDOWN => SbiRequest::LegacyShutdown,
            EID_TIME => match fid {
                0 => SbiRequest::SetTimer { stime_value: a[0] },
                _ => unsupported,
            },
            EID_IPI => match fid {
                0 => SbiRequest::SendIpi { harts },
                _ => unsupported,
            },
            EID_RFENCE => match fid {
                0 => SbiRequest::RemoteFence {
                    harts,
                    fence: RemoteFence::FenceI,
                },
                1 | 2 => SbiRequest::RemoteFence {
                    harts,
                    fence: RemoteFence::SfenceVma {
                        start: a[2],
                        size: a[3],
                        asid: (fid == 2).then_some(a[4]),
                    },
                },
                _ => unsupported,
            },
            EID_HSM => match fid {
                0 => SbiRequest::HartStart {
                    hart: a[0],
                    start_addr: a[1],
                    opaque: a[2],
                },
                1 => SbiRequest::HartStop,
                2 => SbiRequest::HartStatus { hart: a[0] },
                _ => unsupported,
            },
            EID_SRST => match fid {
                0 => SbiRequest::SystemReset {
                    reset_type: a[0] as u32,
                    reason: a[1] as u32,
                },
                _ => unsupported,
            },
            EID_DBCN => {
                // The buffer address is base_addr_lo | base_addr_hi << XLEN; on RV64
                // a nonzero high half is beyond any physical address: u64::MAX
                // stands for it (no guest has RAM there, so the access fails).
                let addr = if a[2] == 0 { a[1] } else { u64::MAX };
                match fid {
                    0 => SbiRequest::ConsoleWrite { len: a[0], addr },
                    1 => SbiRequest::ConsoleRead { len: a[0], addr },
                    2 => SbiRequest::ConsoleWriteByte { byte: a[0] as u8 },
                    _ => unsupported,
                }
            }
            _ => SbiRequest::Forward { eid, fid },
        }
    }

    /// Whether the call uses the legacy convention (result in a0 only, no error code
    /// in a0 and value in a1).
    pub const fn is_legacy(eid: u64) -> bool {
        eid < 0x10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EIDs are the ASCII names of section 3.
    #[test]
    fn eids_spell_their_names() {
        assert_eq!(&EID_TIME.to_be_bytes()[4..], b"TIME");
        assert_eq!(&EID_RFENCE.to_be_bytes()[4..], b"RFNC");
        assert_eq!(&EID_SRST.to_be_bytes()[4..], b"SRST");
        assert_eq!(&EID_DBCN.to_be_bytes()[4..], b"DBCN");
        assert_eq!(&EID_HSM.to_be_bytes()[5..], b"HSM");
        assert_eq!(&EID_IPI.to_be_bytes()[5..], b"sPI");
    }

    /// Linux's `sbi_init` probes with base calls: spec version (a6 = 0), probe of
    /// TIME (a6 = 3, a0 = "TIME").
    #[test]
    fn base_calls() {
        assert_eq!(
            SbiRequest::decode(0x10, 0, [0; 6]),
            SbiRequest::GetSpecVersion
        );
        assert_eq!(
            SbiRequest::decode(0x10, 3, [EID_TIME, 0, 0, 0, 0, 0]),
            SbiRequest::ProbeExtension { eid: EID_TIME }
        );
        assert_eq!(SbiRequest::decode(0x10, 5, [0; 6]), SbiRequest::MachineId);
        assert_eq!(
            SbiRequest::decode(0x10, 7, [0; 6]),
            SbiRequest::Unsupported { eid: 0x10, fid: 7 }
        );
    }

    #[test]
    fn hsm_start_stop_status() {
        assert_eq!(
            SbiRequest::decode(EID_HSM, 0, [1, 0x8000_1000, 0x5ec0_0001, 0, 0, 0]),
            SbiRequest::HartStart {
                hart: 1,
                start_addr: 0x8000_1000,
                opaque: 0x5ec0_0001
            }
        );
        assert_eq!(SbiRequest::decode(EID_HSM, 1, [0; 6]), SbiRequest::HartStop);
        assert_eq!(
            SbiRequest::decode(EID_HSM, 2, [1, 0, 0, 0, 0, 0]),
            SbiRequest::HartStatus { hart: 1 }
        );
        // hart_suspend is not served.
        assert_eq!(
            SbiRequest::decode(EID_HSM, 3, [0; 6]),
            SbiRequest::Unsupported {
                eid: EID_HSM,
                fid: 3
            }
        );
    }

    #[test]
    fn srst_and_legacy() {
        assert_eq!(
            SbiRequest::decode(EID_SRST, 0, [0, 1, 0, 0, 0, 0]),
            SbiRequest::SystemReset {
                reset_type: 0,
                reason: 1
            }
        );
        assert_eq!(
            SbiRequest::decode(0x01, 0x1234, [0x141, 0, 0, 0, 0, 0]),
            SbiRequest::LegacyPutchar { byte: 0x41 }
        );
        assert_eq!(
            SbiRequest::decode(0x00, 0, [12345, 0, 0, 0, 0, 0]),
            SbiRequest::SetTimer { stime_value: 12345 }
        );
        assert!(SbiRequest::is_legacy(0x02));
        assert!(!SbiRequest::is_legacy(EID_BASE));
    }

    #[test]
    fn dbcn() {
        assert_eq!(
            SbiRequest::decode(EID_DBCN, 0, [5, 0x8010_0000, 0, 0, 0, 0]),
            SbiRequest::ConsoleWrite {
                len: 5,
                addr: 0x8010_0000
            }
        );
        // A high half of the address: beyond RV64 physical memory.
        assert_eq!(
            SbiRequest::decode(EID_DBCN, 0, [5, 0x8010_0000, 1, 0, 0, 0]),
            SbiRequest::ConsoleWrite {
                len: 5,
                addr: u64::MAX
            }
        );
        assert_eq!(
            SbiRequest::decode(EID_DBCN, 1, [5, 0, 2, 0, 0, 0]),
            SbiRequest::ConsoleRead {
                len: 5,
                addr: u64::MAX
            }
        );
        assert_eq!(
            SbiRequest::decode(EID_DBCN, 2, [0x10a, 0, 0, 0, 0, 0]),
            SbiRequest::ConsoleWriteByte { byte: 0x0a }
        );
    }

    #[test]
    fn ipi_and_rfence() {
        let r = SbiRequest::decode(EID_IPI, 0, [0b10, 0, 0, 0, 0, 0]);
        let SbiRequest::SendIpi { harts } = r else {
            panic!("{r:?}")
        };
        assert!(harts.contains(1));
        assert!(!harts.contains(0));
        assert!(!harts.contains(64 + 1));
        let all = HartMask {
            mask: 0,
            base: u64::MAX,
        };
        assert!(all.contains(7));
        let based = HartMask { mask: 1, base: 4 };
        assert!(based.contains(4) && !based.contains(3) && !based.contains(5));
        assert_eq!(
            SbiRequest::decode(EID_RFENCE, 2, [1, 0, 0x1000, 0x2000, 7, 0]),
            SbiRequest::RemoteFence {
                harts: HartMask { mask: 1, base: 0 },
                fence: RemoteFence::SfenceVma {
                    start: 0x1000,
                    size: 0x2000,
                    asid: Some(7)
                }
            }
        );
        // remote_hfence_gvma_vmid: the guest has no H extension.
        assert_eq!(
            SbiRequest::decode(EID_RFENCE, 3, [0; 6]),
            SbiRequest::Unsupported {
                eid: EID_RFENCE,
                fid: 3
            }
        );
    }

    #[test]
    fn other_extensions_are_forwarded() {
        assert_eq!(
            SbiRequest::decode(0x0848_5654, 2, [1, 2, 3, 4, 0, 0]),
            SbiRequest::Forward {
                eid: 0x0848_5654,
                fid: 2
            }
        );
    }
}
