//! The boards' `vm_core::VmHal` impl, written once: [`board_vm_hal!`](crate::board_vm_hal)
//! turns a board module's functions into the link-time implementation.

/// Implements `vm_core::VmHal` for a new unit type `$hal` (declared `pub(crate)`):
/// `memory` returns `&$frames`, and every other function of the trait calls the
/// function of the same name and signature in the invoking module
/// (`current_pcpu_id`, `inject_irq`, `kick_pcpu`, `broadcast_guest_tlb_invalidate`,
/// `now_ns`).
///
/// ```ignore
/// // SAFETY: `FRAMES` is the board's one frame pool, ...; `broadcast_guest_tlb_invalidate`
/// // returns `true` only once ...
/// platforms::board_vm_hal!(unsafe impl VmHal for BoardHal, memory = FRAMES);
/// ```
///
/// `unsafe` is part of the invocation because it makes `VmHal`'s promises (its
/// `# Safety`): `$frames` is the allocator every frame of every VM comes from and
/// goes back to, and the module's `broadcast_guest_tlb_invalidate` returns `true`
/// only once no CPU can use a translation of the range any more. Write the
/// `// SAFETY:` comment that shows both above the invocation.
#[macro_export]
macro_rules! board_vm_hal {
    (unsafe impl VmHal for $hal:ident, memory = $frames:path $(,)?) => {
        /// The board's `vm_core::VmHal` (`platforms::board_vm_hal!`).
        pub(crate) struct $hal;

        // SAFETY: the invocation's own `unsafe` and SAFETY comment make the trait's
        // promises for `$frames` and the module's `broadcast_guest_tlb_invalidate`.
        #[$crate::__private::crate_interface::impl_interface]
        unsafe impl $crate::__private::vm_core::VmHal for $hal {
            fn memory() -> &'static (dyn $crate::__private::addrspace::FrameAllocator + Sync) {
                &$frames
            }

            fn current_pcpu_id() -> usize {
                current_pcpu_id()
            }

            fn inject_irq(vm_id: usize, vcpu_id: usize, irq: usize) -> bool {
                inject_irq(vm_id, vcpu_id, irq)
            }

            fn kick_pcpu(pcpu_id: usize) {
                kick_pcpu(pcpu_id)
            }

            fn broadcast_guest_tlb_invalidate(
                vm_id: usize,
                range: $crate::__private::addrspace::GpaRange,
            ) -> bool {
                broadcast_guest_tlb_invalidate(vm_id, range)
            }

            fn now_ns() -> u64 {
                now_ns()
            }
        }
    };
}
