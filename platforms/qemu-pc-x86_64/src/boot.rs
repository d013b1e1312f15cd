//! The multiboot 1 entry: the a.out-kludge header QEMU's `-kernel` loader reads, and
//! the 32-bit stub that identity-maps the first 4 GiB with 2 MiB pages, enters long
//! mode and calls [`crate::hv_main`] with the loader's EAX and EBX.

use core::arch::global_asm;

use hal_x86_64::multiboot::{HEADER_FLAGS, HEADER_MAGIC};

global_asm!(
    r#"
    .section .text.boot, "ax"
    .code32
    .balign 4
multiboot_header:
    .long {magic}
    .long {flags}
    .long -({magic} + {flags})
    .long multiboot_header              // header_addr
    .long __image_start                 // load_addr
    .long __load_end                    // load_end_addr
    .long __bss_end                     // bss_end_addr
    .long _start32                      // entry_addr

    .global _start32
_start32:
    // 32-bit protected mode, paging off; EAX = 0x2BADB002, EBX = boot information.
    cli
    cld
    mov     %eax, %ebp
    mov     %ebx, %esi
    mov     $boot_stack_top, %esp
    // Zero .bss (page tables, stack, statics).
    mov     $__bss_start, %edi
    mov     $__bss_end, %ecx
    sub     %edi, %ecx
    xor     %eax, %eax
    rep stosb
    // PML4[0] -> PDPT; PDPT[0..4] -> four page directories of 2 MiB pages.
    mov     $boot_pdpt, %eax
    or      $0x3, %eax
    mov     %eax, boot_pml4
    xor     %ecx, %ecx
1:  mov     %ecx, %eax
    shl     $12, %eax
    add     $boot_pd, %eax
    or      $0x3, %eax
    mov     %eax, boot_pdpt(,%ecx,8)
    inc     %ecx
    cmp     $4, %ecx
    jne     1b
    xor     %ecx, %ecx
2:  mov     %ecx, %eax
    shl     $21, %eax
    or      $0x83, %eax                 // present | writable | PS
    mov     %eax, boot_pd(,%ecx,8)
    mov     %ecx, %eax
    shr     $11, %eax                   // bits 63:32 of the 2 MiB frame address
    mov     %eax, boot_pd+4(,%ecx,8)
    inc     %ecx
    cmp     $2048, %ecx
    jne     2b
    // CR4.PAE, CR3, EFER.LME, CR0.PG|PE, then a far jump to 64-bit code.
    mov     %cr4, %eax
    or      $0x20, %eax
    mov     %eax, %cr4
    mov     $boot_pml4, %eax
    mov     %eax, %cr3
    mov     $0xC0000080, %ecx
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax
    mov     %eax, %cr0
    lgdt    boot_gdt_ptr
    ljmp    $0x08, $long_mode_entry

    .code64
long_mode_entry:
    mov     $0x10, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     %ax, %fs
    mov     %ax, %gs
    mov     $boot_stack_top, %rsp
    mov     %ebp, %edi                  // arg 0: EAX of the loader (zero-extended)
    mov     %esi, %esi                  // arg 1: EBX, the boot information
    call    {main}
3:  cli
    hlt
    jmp     3b

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF            // 0x08: 64-bit code
    .quad 0x00CF92000000FFFF            // 0x10: data
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:  .skip 4096
boot_pdpt:  .skip 4096
boot_pd:    .skip 4096 * 4
boot_stack: .skip 0x40000
boot_stack_top:
"#,
    magic = const HEADER_MAGIC,
    flags = const HEADER_FLAGS,
    main = sym crate::hv_main,
    options(att_syntax)
);
