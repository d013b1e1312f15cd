//! The Supervisor Binary Interface as the guest sees it: extension and function ids,
//! error codes, the guest's ECALL decoded into a [`vcpu_api::FirmwareCall`]
//! ([`decode_call`]) and the reply encoded in a0/a1 ([`encode_reply`]). Pure
//! functions; which calls are served and what they answer is vm-core's decision.
//!
//! RISC-V SBI specification v2.0: chapter 3 (binary encoding: EID in a7, FID in a6,
//! arguments in a0..a5, error in a0 and value in a1), 4 (Base), 5 (legacy extensions,
//! EIDs 0x00..0x0f, result in a0 only), 6 (TIME), 7 (IPI), 8 (RFENCE), 9 (HSM),
//! 10 (SRST), 12 (DBCN). Decoding is a pure function of the registers.

use vcpu_api::{
    Conduit, CpuMask, CpuState, FirmwareCall, FirmwareError, FirmwareReply, GuestCall, Hypercall,
    RemoteFence, Service,
};
use vcpu_api::{gpa_of, low_u8};

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

/// Whether extension `eid` uses the legacy convention (result in a0 only, no error
/// code in a0 and value in a1).
pub const fn is_legacy(eid: u64) -> bool {
    eid < 0x10
}

/// Decodes the guest's ECALL from `a7` (EID), `a6` (FID) and `a0..a5`: the call and
/// its conduit (legacy extensions answer in a0 only). An extension this module does
/// not know is a hypercall of the board's; a function of a known extension that does
/// not exist or is not implemented is [`FirmwareCall::Unsupported`].
pub fn decode_call(eid: u64, fid: u64, a: [u64; 6]) -> GuestCall {
    let conduit = if is_legacy(eid) {
        Conduit::EcallLegacy
    } else {
        Conduit::Ecall
    };
    GuestCall {
        call: decode(eid, fid, a),
        conduit,
    }
}

fn decode(eid: u64, fid: u64, a: [u64; 6]) -> FirmwareCall {
    let unsupported = FirmwareCall::Unsupported {
        nr: eid,
        function: fid,
    };
    let targets = CpuMask {
        mask: a[0],
        base: a[1],
    };
    let gpa = gpa_of;
    match eid {
        EID_BASE => match fid {
            0 => FirmwareCall::Version,
            1 => FirmwareCall::ImplId,
            2 => FirmwareCall::ImplVersion,
            3 => FirmwareCall::Probe {
                service: service_of(a[0]),
            },
            // get_mvendorid, get_marchid, get_mimpid.
            4..=6 => FirmwareCall::MachineId,
            _ => unsupported,
        },
        // Legacy calls ignore a6.
        EID_LEGACY_SET_TIMER => FirmwareCall::SetTimer { deadline: a[0] },
        EID_LEGACY_PUTCHAR => FirmwareCall::ConsoleWriteByte { byte: low_u8(a[0]) },
        EID_LEGACY_GETCHAR => FirmwareCall::ConsoleReadByte,
        EID_LEGACY_SHUTDOWN => FirmwareCall::SystemOff,
        EID_TIME => match fid {
            0 => FirmwareCall::SetTimer { deadline: a[0] },
            _ => unsupported,
        },
        EID_IPI => match fid {
            0 => FirmwareCall::SendIpi { targets },
            _ => unsupported,
        },
        // The guest has no hypervisor extension, so the HFENCE functions 3..=6 are
        // not served.
        EID_RFENCE => match fid {
            0 => FirmwareCall::RemoteFence {
                targets,
                fence: RemoteFence::FenceI,
            },
            1 | 2 => FirmwareCall::RemoteFence {
                targets,
                fence: RemoteFence::SfenceVma {
                    start: a[2],
                    size: a[3],
                    asid: (fid == 2).then_some(a[4]),
                },
            },
            _ => unsupported,
        },
        EID_HSM => match fid {
            // The start address is guest-physical: the hart starts with its
            // translation off.
            0 => FirmwareCall::CpuOn {
                target: a[0],
                entry: gpa(a[1]),
                arg: a[2],
            },
            1 => FirmwareCall::CpuOff,
            2 => FirmwareCall::CpuStatus { target: a[0] },
            _ => unsupported,
        },
        // system_reset(reset_type, reason): 0 shutdown, 1 cold reboot, 2 warm
        // reboot; the other types are reserved or vendor-specific.
        EID_SRST => match (fid, a[0]) {
            (0, 0) => FirmwareCall::SystemOff,
            (0, 1 | 2) => FirmwareCall::SystemReset,
            (0, _) => FirmwareCall::InvalidParameters {
                nr: eid,
                function: fid,
            },
            _ => unsupported,
        },
        EID_DBCN => {
            // The buffer address is base_addr_lo | base_addr_hi << XLEN; on RV64
            // a nonzero high half is beyond any physical address: u64::MAX
            // stands for it (no guest has RAM there, so the access fails).
            let addr = if a[2] == 0 { a[1] } else { u64::MAX };
            match fid {
                0 => FirmwareCall::ConsoleWrite {
                    gpa: gpa(addr),
                    len: a[0],
                },
                1 => FirmwareCall::ConsoleRead {
                    gpa: gpa(addr),
                    len: a[0],
                },
                2 => FirmwareCall::ConsoleWriteByte { byte: low_u8(a[0]) },
                _ => unsupported,
            }
        }
        // The other legacy extensions (clear_ipi, send_ipi, remote fences) are
        // superseded and not served.
        0x03..=0x0f => unsupported,
        _ => FirmwareCall::Hypercall(Hypercall {
            nr: eid,
            function: fid,
            args: a,
        }),
    }
}

/// The service extension `eid` stands for (what `probe_extension` asks about): the
/// standard ones by name, any other non-legacy one as a possible hypercall interface
/// of the board's.
pub const fn service_of(eid: u64) -> Option<Service> {
    match eid {
        EID_BASE => Some(Service::Base),
        EID_LEGACY_SET_TIMER | EID_TIME => Some(Service::Timer),
        EID_LEGACY_PUTCHAR | EID_LEGACY_GETCHAR | EID_DBCN => Some(Service::Console),
        EID_LEGACY_SHUTDOWN | EID_SRST => Some(Service::SystemPower),
        EID_IPI => Some(Service::Ipi),
        EID_RFENCE => Some(Service::RemoteFence),
        EID_HSM => Some(Service::CpuPower),
        0x03..=0x0f => None,
        nr => Some(Service::Hypercall { nr }),
    }
}

/// The SBI error code for `e` (section 3.2).
pub const fn error_code(e: FirmwareError) -> i64 {
    match e {
        FirmwareError::NotSupported => error::NOT_SUPPORTED,
        FirmwareError::InvalidParameters => error::INVALID_PARAM,
        FirmwareError::AlreadyOn => error::ALREADY_AVAILABLE,
        FirmwareError::InvalidAddress => error::INVALID_ADDRESS,
        FirmwareError::Failed => error::FAILED,
    }
}

/// `(a0, a1)` for `reply`: SBI's error and value (the legacy convention then keeps
/// the error, or the value when there is none, in a0). `None` for a reply no SBI
/// call can have (CPUID registers).
pub fn encode_reply(reply: FirmwareReply) -> Option<(i64, u64)> {
    Some(match reply {
        FirmwareReply::Value(v) => (error::SUCCESS, v),
        FirmwareReply::Error(e) => (error_code(e), 0),
        FirmwareReply::Offered(yes) => (error::SUCCESS, u64::from(yes)),
        // The major version in bits 30:24, the minor in 23:0.
        FirmwareReply::Version { major, minor } => (
            error::SUCCESS,
            u64::from(major & 0x7f) << 24 | u64::from(minor),
        ),
        FirmwareReply::CpuState(state) => (
            error::SUCCESS,
            match state {
                CpuState::On => hart_state::STARTED,
                CpuState::Off => hart_state::STOPPED,
                CpuState::OnPending => hart_state::START_PENDING,
            },
        ),
        FirmwareReply::Cpuid(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use addrspace::GuestPhysAddr;

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

    fn call(eid: u64, fid: u64, a: [u64; 6]) -> FirmwareCall {
        decode_call(eid, fid, a).call
    }

    /// Linux's `sbi_init` probes with base calls: spec version (a6 = 0), probe of
    /// TIME (a6 = 3, a0 = "TIME").
    #[test]
    fn base_calls() {
        assert_eq!(call(0x10, 0, [0; 6]), FirmwareCall::Version);
        assert_eq!(
            call(0x10, 3, [EID_TIME, 0, 0, 0, 0, 0]),
            FirmwareCall::Probe {
                service: Some(Service::Timer)
            }
        );
        assert_eq!(
            call(0x10, 3, [0x0848_5654, 0, 0, 0, 0, 0]),
            FirmwareCall::Probe {
                service: Some(Service::Hypercall { nr: 0x0848_5654 })
            }
        );
        assert_eq!(call(0x10, 5, [0; 6]), FirmwareCall::MachineId);
        assert_eq!(
            call(0x10, 7, [0; 6]),
            FirmwareCall::Unsupported {
                nr: 0x10,
                function: 7
            }
        );
        assert_eq!(decode_call(0x10, 0, [0; 6]).conduit, Conduit::Ecall);
    }

    #[test]
    fn hsm_start_stop_status() {
        assert_eq!(
            call(EID_HSM, 0, [7, 0x8000_1000, 0x5ec0_0001, 0, 0, 0]),
            FirmwareCall::CpuOn {
                target: 7,
                entry: GuestPhysAddr::from_usize(0x8000_1000),
                arg: 0x5ec0_0001
            }
        );
        assert_eq!(call(EID_HSM, 1, [0; 6]), FirmwareCall::CpuOff);
        assert_eq!(
            call(EID_HSM, 2, [7, 0, 0, 0, 0, 0]),
            FirmwareCall::CpuStatus { target: 7 }
        );
        // hart_suspend is not served.
        assert_eq!(
            call(EID_HSM, 3, [0; 6]),
            FirmwareCall::Unsupported {
                nr: EID_HSM,
                function: 3
            }
        );
    }

    #[test]
    fn srst_and_legacy() {
        assert_eq!(
            call(EID_SRST, 0, [0, 1, 0, 0, 0, 0]),
            FirmwareCall::SystemOff
        );
        assert_eq!(
            call(EID_SRST, 0, [2, 0, 0, 0, 0, 0]),
            FirmwareCall::SystemReset
        );
        assert_eq!(
            call(EID_SRST, 0, [0xf000_0000, 0, 0, 0, 0, 0]),
            FirmwareCall::InvalidParameters {
                nr: EID_SRST,
                function: 0
            }
        );
        let putchar = decode_call(0x01, 0x1234, [0x141, 0, 0, 0, 0, 0]);
        assert_eq!(putchar.call, FirmwareCall::ConsoleWriteByte { byte: 0x41 });
        assert_eq!(putchar.conduit, Conduit::EcallLegacy);
        assert_eq!(
            call(0x00, 0, [12345, 0, 0, 0, 0, 0]),
            FirmwareCall::SetTimer { deadline: 12345 }
        );
        assert_eq!(call(0x08, 0, [0; 6]), FirmwareCall::SystemOff);
        assert!(matches!(
            call(0x04, 0, [0; 6]),
            FirmwareCall::Unsupported { nr: 4, .. }
        ));
        assert!(is_legacy(0x02));
        assert!(!is_legacy(EID_BASE));
    }

    #[test]
    fn dbcn() {
        let gpa = GuestPhysAddr::from_usize;
        assert_eq!(
            call(EID_DBCN, 0, [5, 0x8010_0000, 0, 0, 0, 0]),
            FirmwareCall::ConsoleWrite {
                gpa: gpa(0x8010_0000),
                len: 5
            }
        );
        // A high half of the address: beyond RV64 physical memory.
        assert_eq!(
            call(EID_DBCN, 0, [5, 0x8010_0000, 1, 0, 0, 0]),
            FirmwareCall::ConsoleWrite {
                gpa: gpa(usize::MAX),
                len: 5
            }
        );
        assert_eq!(
            call(EID_DBCN, 1, [5, 0, 2, 0, 0, 0]),
            FirmwareCall::ConsoleRead {
                gpa: gpa(usize::MAX),
                len: 5
            }
        );
        assert_eq!(
            call(EID_DBCN, 2, [0x10a, 0, 0, 0, 0, 0]),
            FirmwareCall::ConsoleWriteByte { byte: 0x0a }
        );
    }

    #[test]
    fn ipi_and_rfence() {
        let FirmwareCall::SendIpi { targets } = call(EID_IPI, 0, [0b10, 0, 0, 0, 0, 0]) else {
            panic!("not an IPI")
        };
        assert!(targets.contains(1));
        assert!(!targets.contains(0));
        assert!(!targets.contains(64 + 1));
        let all = CpuMask {
            mask: 0,
            base: u64::MAX,
        };
        assert!(all.contains(7));
        let based = CpuMask { mask: 1, base: 4 };
        assert!(based.contains(4) && !based.contains(3) && !based.contains(5));
        assert_eq!(
            call(EID_RFENCE, 2, [1, 0, 0x1000, 0x2000, 7, 0]),
            FirmwareCall::RemoteFence {
                targets: CpuMask { mask: 1, base: 0 },
                fence: RemoteFence::SfenceVma {
                    start: 0x1000,
                    size: 0x2000,
                    asid: Some(7)
                }
            }
        );
        // remote_hfence_gvma_vmid: the guest has no H extension.
        assert_eq!(
            call(EID_RFENCE, 3, [0; 6]),
            FirmwareCall::Unsupported {
                nr: EID_RFENCE,
                function: 3
            }
        );
    }

    #[test]
    fn other_extensions_are_hypercalls() {
        assert_eq!(
            call(0x0848_5654, 2, [1, 2, 3, 4, 0, 0]),
            FirmwareCall::Hypercall(Hypercall {
                nr: 0x0848_5654,
                function: 2,
                args: [1, 2, 3, 4, 0, 0]
            })
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            encode_reply(FirmwareReply::Version { major: 2, minor: 0 }),
            Some((0, 0x200_0000))
        );
        assert_eq!(
            encode_reply(FirmwareReply::Error(FirmwareError::AlreadyOn)),
            Some((error::ALREADY_AVAILABLE, 0))
        );
        assert_eq!(
            encode_reply(FirmwareReply::CpuState(CpuState::Off)),
            Some((0, hart_state::STOPPED))
        );
        assert_eq!(encode_reply(FirmwareReply::Offered(true)), Some((0, 1)));
        assert_eq!(encode_reply(FirmwareReply::Cpuid(Default::default())), None);
    }
}
