//! The world switch: `hal_x86_64_svm_vmrun` loads the guest's general registers
//! (other than RAX and RSP, which live in the VMCB), `VMLOAD`s and `VMRUN`s the
//! guest's VMCB, and at the #VMEXIT saves them back, restoring the host's hidden
//! segment state with `VMSAVE`/`VMLOAD` of a host VMCB (APM vol. 2, 15.5 "VMRUN
//! Instruction", 15.5.2 "VMSAVE and VMLOAD"). x86_64 only.

core::arch::global_asm!(
    r#"
    .text
    .global hal_x86_64_svm_vmrun
    // fn(gprs: *mut [u64; 16] (rdi), guest_vmcb_pa: u64 (rsi), host_vmcb_pa: u64 (rdx))
hal_x86_64_svm_vmrun:
    push    %rbp
    push    %rbx
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    push    %rdi                    // [rsp + 16] after the next two pushes
    push    %rdx                    // host VMCB
    push    %rsi                    // guest VMCB
    mov     %rdx, %rax
    vmsave  %rax                    // host FS/GS/TR/LDTR/KernelGsBase/STAR...
    mov     (%rsp), %rax            // guest VMCB
    mov     8*1(%rdi), %rcx
    mov     8*2(%rdi), %rdx
    mov     8*3(%rdi), %rbx
    mov     8*5(%rdi), %rbp
    mov     8*6(%rdi), %rsi
    mov     8*8(%rdi), %r8
    mov     8*9(%rdi), %r9
    mov     8*10(%rdi), %r10
    mov     8*11(%rdi), %r11
    mov     8*12(%rdi), %r12
    mov     8*13(%rdi), %r13
    mov     8*14(%rdi), %r14
    mov     8*15(%rdi), %r15
    mov     8*7(%rdi), %rdi
    clgi
    vmload  %rax
    vmrun   %rax
    // #VMEXIT: RSP and RAX (the guest VMCB) are the host's again, every other
    // general register holds the guest's value.
    vmsave  %rax
    push    %rdi                    // guest RDI
    mov     8*3(%rsp), %rdi         // gprs
    mov     %rcx, 8*1(%rdi)
    mov     %rdx, 8*2(%rdi)
    mov     %rbx, 8*3(%rdi)
    mov     %rbp, 8*5(%rdi)
    mov     %rsi, 8*6(%rdi)
    mov     %r8, 8*8(%rdi)
    mov     %r9, 8*9(%rdi)
    mov     %r10, 8*10(%rdi)
    mov     %r11, 8*11(%rdi)
    mov     %r12, 8*12(%rdi)
    mov     %r13, 8*13(%rdi)
    mov     %r14, 8*14(%rdi)
    mov     %r15, 8*15(%rdi)
    pop     %rax
    mov     %rax, 8*7(%rdi)
    pop     %rax                    // guest VMCB
    pop     %rax                    // host VMCB
    vmload  %rax
    stgi
    pop     %rdi
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbx
    pop     %rbp
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    /// Runs the guest of the VMCB at `guest_vmcb` until the next #VMEXIT, loading
    /// and saving the general registers other than RAX and RSP from `gprs`.
    fn hal_x86_64_svm_vmrun(gprs: *mut [u64; 16], guest_vmcb: u64, host_vmcb: u64);
}

/// Runs the guest of the VMCB at `guest_vmcb` until its next #VMEXIT.
///
/// # Safety
///
/// `guest_vmcb` is the VMCB of the vCPU whose general registers are `gprs`, set up
/// with its IOPM and MSRPM and a nested root that maps only memory given to the
/// guest; SVM is enabled on this CPU and `host_vmcb` is its host save VMCB.
pub(crate) unsafe fn vmrun(gprs: &mut [u64; 16], guest_vmcb: u64, host_vmcb: u64) {
    // SAFETY: per the caller; the trampoline restores every callee-saved register.
    unsafe { hal_x86_64_svm_vmrun(gprs, guest_vmcb, host_vmcb) }
}
