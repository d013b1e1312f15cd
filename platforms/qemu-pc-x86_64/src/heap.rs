//! The hypervisor's heap: a first-fit free-list allocator over one fixed region,
//! with coalescing on free. Small and boring on purpose: the board allocates a few
//! hundred small objects (the VM, its areas, device models).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

/// A free block: its size (bytes, including this header) and the next free block,
/// kept sorted by address.
struct Free {
    size: usize,
    next: Option<NonNull<Free>>,
}

const ALIGN: usize = 16;
/// Every block is a multiple of 16 bytes and at least one header, so any split of a
/// block at a 16-byte boundary leaves whole blocks: nothing is ever lost.
const MIN_BLOCK: usize = 16;
const _: () = assert!(size_of::<Free>() <= MIN_BLOCK && align_of::<Free>() <= ALIGN);

/// The list of free blocks.
struct FreeList {
    head: Option<NonNull<Free>>,
}

// SAFETY: the list is only touched under the allocator's lock.
unsafe impl Send for FreeList {}

/// A first-fit heap over `[start, start + size)`, given with [`Heap::init`].
pub(crate) struct Heap {
    list: spin::Mutex<FreeList>,
}

impl Heap {
    /// An empty heap (every allocation fails until [`Heap::init`]).
    pub(crate) const fn empty() -> Self {
        Self {
            list: spin::Mutex::new(FreeList { head: None }),
        }
    }

    /// Gives the heap the memory `[start, start + size)`.
    ///
    /// # Safety
    ///
    /// The range is writable memory used by nothing else for as long as the heap
    /// lives, and `init` is called once.
    pub(crate) unsafe fn init(&self, start: *mut u8, size: usize) {
        let aligned = start.align_offset(ALIGN);
        let size = size.saturating_sub(aligned) & !(ALIGN - 1);
        if size < MIN_BLOCK {
            return;
        }
        // SAFETY: per the caller, `start + aligned` is ours, aligned for `Free`.
        unsafe {
            let block = start.add(aligned).cast::<Free>();
            block.write(Free { size, next: None });
            self.list.lock().head = NonNull::new(block);
        }
    }

    /// Bytes a request takes from a block (rounded up, at least a `Free` header).
    fn block_size(layout: &Layout) -> usize {
        layout.size().max(MIN_BLOCK).next_multiple_of(ALIGN)
    }

    /// Puts `[addr, addr + size)` back, merging with its neighbours.
    ///
    /// # Safety
    ///
    /// The range was handed out by this heap and is no longer used.
    unsafe fn insert(list: &mut FreeList, addr: *mut u8, size: usize) {
        let mut prev: Option<NonNull<Free>> = None;
        let mut cur = list.head;
        // SAFETY: every pointer in the list is a free block of this heap.
        unsafe {
            while let Some(c) = cur {
                if c.as_ptr().cast::<u8>() > addr {
                    break;
                }
                prev = cur;
                cur = c.as_ref().next;
            }
            let block = addr.cast::<Free>();
            block.write(Free { size, next: cur });
            let mut block = NonNull::new_unchecked(block);
            // Merge with the next block.
            if let Some(n) = cur
                && addr.add(size) == n.as_ptr().cast::<u8>()
            {
                block.as_mut().size += n.as_ref().size;
                block.as_mut().next = n.as_ref().next;
            }
            match prev {
                None => list.head = Some(block),
                Some(mut p) => {
                    if p.as_ptr().cast::<u8>().add(p.as_ref().size) == addr {
                        p.as_mut().size += block.as_ref().size;
                        p.as_mut().next = block.as_ref().next;
                    } else {
                        p.as_mut().next = Some(block);
                    }
                }
            }
        }
    }
}

// SAFETY: blocks are handed out only from the free list under the lock, aligned to
// the layout (padding before an aligned start goes back to the list), never twice;
// `dealloc` puts back exactly the size `alloc` took (same rounding of the layout).
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = Self::block_size(&layout);
        let align = layout.align().max(ALIGN);
        let mut list = self.list.lock();
        let mut prev: Option<NonNull<Free>> = None;
        let mut cur = list.head;
        // SAFETY: the list holds free blocks of this heap; a block is unlinked
        // before its memory is handed out.
        unsafe {
            while let Some(c) = cur {
                let start = c.as_ptr().cast::<u8>();
                let bsize = c.as_ref().size;
                let next = c.as_ref().next;
                // Blocks start 16-byte aligned, so the padding is a multiple of 16:
                // zero or a whole block.
                let pad = start.align_offset(align);
                if pad + size <= bsize {
                    match prev {
                        None => list.head = next,
                        Some(mut p) => p.as_mut().next = next,
                    }
                    let rest = bsize - pad - size;
                    if rest != 0 {
                        Self::insert(&mut list, start.add(pad + size), rest);
                    }
                    if pad != 0 {
                        Self::insert(&mut list, start, pad);
                    }
                    let p = start.add(pad);
                    return p;
                }
                prev = cur;
                cur = next;
            }
        }
        ptr::null_mut()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mut list = self.list.lock();
        // SAFETY: per the GlobalAlloc contract `ptr` came from `alloc` with `layout`.
        unsafe { Self::insert(&mut list, ptr, Self::block_size(&layout)) };
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    fn heap(bytes: usize) -> (Heap, Vec<u8>) {
        let mut mem = std::vec![0u8; bytes];
        let h = Heap::empty();
        // SAFETY: `mem` outlives the heap in every test (returned alongside).
        unsafe { h.init(mem.as_mut_ptr(), bytes) };
        (h, mem)
    }

    fn free_bytes(h: &Heap) -> usize {
        let list = h.list.lock();
        let mut n = 0;
        let mut cur = list.head;
        while let Some(c) = cur {
            // SAFETY: list entries are free blocks.
            unsafe {
                n += c.as_ref().size;
                cur = c.as_ref().next;
            }
        }
        n
    }

    #[test]
    fn alloc_free_and_coalesce() {
        let (h, _mem) = heap(4096);
        let total = free_bytes(&h);
        let l = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: layouts are non-zero; pointers are freed with their layouts.
        unsafe {
            let a = h.alloc(l);
            let b = h.alloc(l);
            let c = h.alloc(l);
            assert!(!a.is_null() && !b.is_null() && !c.is_null());
            assert!(a != b && b != c);
            ptr::write_bytes(b, 0xaa, 100);
            h.dealloc(b, l);
            h.dealloc(a, l);
            h.dealloc(c, l);
        }
        assert_eq!(free_bytes(&h), total, "everything merged back");
        assert!(h.list.lock().head.is_some_and(|b| {
            // SAFETY: a free block.
            unsafe { b.as_ref().next.is_none() }
        }));
    }

    #[test]
    fn alignment_and_exhaustion() {
        let (h, _mem) = heap(16384);
        let total = free_bytes(&h);
        let big = Layout::from_size_align(4096, 4096).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = h.alloc(big);
            assert!(!p.is_null());
            assert_eq!(p as usize % 4096, 0);
            let q = h.alloc(Layout::from_size_align(64, 64).unwrap());
            assert_eq!(q as usize % 64, 0);
            assert!(
                h.alloc(Layout::from_size_align(16384, 8).unwrap())
                    .is_null()
            );
            h.dealloc(q, Layout::from_size_align(64, 64).unwrap());
            h.dealloc(p, big);
        }
        assert_eq!(free_bytes(&h), total);
    }

    #[test]
    fn many_mixed_allocations_return_everything() {
        let (h, _mem) = heap(1 << 16);
        let total = free_bytes(&h);
        let mut live = Vec::new();
        for i in 0..200usize {
            let l = Layout::from_size_align(1 + (i * 37) % 300, 1 << (i % 6)).unwrap();
            // SAFETY: non-zero layout.
            let p = unsafe { h.alloc(l) };
            assert!(!p.is_null());
            live.push((p, l));
            if i % 3 == 0 {
                let (p, l) = live.swap_remove(i % live.len());
                // SAFETY: allocated above with `l`.
                unsafe { h.dealloc(p, l) };
            }
        }
        for (p, l) in live {
            // SAFETY: allocated above with `l`.
            unsafe { h.dealloc(p, l) };
        }
        assert_eq!(free_bytes(&h), total);
    }
}
