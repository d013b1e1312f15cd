//! Guest-physical address spaces for hypervisors: nested (second-stage) page tables
//! for x86 EPT, AMD NPT, Arm stage-2 and RISC-V Sv39x4/Sv48x4, and the address-space
//! layer a VM needs on top of them.
//!
//! Design principles:
//! - **One engine, many formats.** Each architecture is a small [`NestedFormat`] type
//!   that encodes and decodes descriptors; [`PageTable`] implements map, unmap,
//!   protect, query and walk once for all of them. Every format compiles and is
//!   tested on any host.
//! - **Errors, not panics.** Every fallible call returns an [`Error`] that names the
//!   bad input, and leaves the table or space exactly as it was: the frames an
//!   operation needs are reserved before any descriptor changes.
//! - **Invalidation is explicit.** Whatever removes or weakens translations returns a
//!   [`Flush`] naming the range; frames it freed stay held until the caller reports the
//!   TLB invalidation done. This crate never executes a TLB instruction.
//! - **Typed addresses.** [`GuestPhysAddr`], [`HostPhysAddr`] and [`HostVirtAddr`]
//!   never mix; host-physical memory is reached only through
//!   [`FrameAllocator::phys_to_virt`].
//! - **No globals.** Frames come from an allocator passed in by value or reference.
//!
//! The crate is `no_std` with `alloc`. [`BitmapFrames`] is a ready frame allocator
//! for a hypervisor image (a fixed physical window, one bit per frame); the `testing`
//! feature adds `testing::PoolAllocator`, a host frame pool for tests and benchmarks
//! on the same bitmap (it needs `std`).

#![cfg_attr(not(any(test, feature = "testing")), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod addr;
mod bitmap;
mod bits;
mod error;
mod fault;
mod flags;
mod flush;
pub mod format;
mod frame;
mod space;
mod table;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod zero;

pub use addr::{GpaRange, GuestPhysAddr, HostPhysAddr, HostVirtAddr, PAGE_SIZE, PageSize};
pub use bitmap::{BitmapFrames, FreeError, Zeroing};
pub use bits::{gpa_of, low_u8, low_u16, low_u32, usize_of};
pub use error::{Error, Result};
pub use fault::{FaultOutcome, FaultPlan};
pub use flags::{AccessKind, MappingFlags};
pub use flush::{Flush, MergeError};
pub use format::{
    ArmStage2, ArmStage2Ipa40, ArmStage2Ipa48, DescKind, Ept, NestedFormat, Npt, RiscvGStage,
    RootRegister, Sv39x4, Sv48x4, Vtcr,
};
pub use frame::{FRAME_SIZE, FrameAllocator};
pub use space::{AddrSpace, Area, Backend, Populate};
pub use table::{MAX_LEVELS, PageTable, Translation, Walk, WalkEnd, WalkStep};
pub use zero::{ZeroFn, aligned_part, zero_plain};
pub use zerocopy::{FromBytes, Immutable, IntoBytes};
