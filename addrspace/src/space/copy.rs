//! Guest-memory copies for the host: [`AddrSpace::read`] and [`AddrSpace::write`]
//! (bytes), [`AddrSpace::read_obj`] and [`AddrSpace::write_obj`] (objects that
//! zerocopy's derives prove valid for every bit pattern and free of padding).
//!
//! Guest memory changes under a copy (vCPUs run, and other host threads may copy
//! through the same `&AddrSpace`), so it is reached through raw pointers only, never
//! a reference, and copied as rust-vmm's vm-memory copies it: a naturally aligned
//! object of 1, 2, 4 or 8 bytes in one volatile access of its width (never torn,
//! never read twice), anything else with `copy_nonoverlapping`.

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{AddrSpace, gpa_of};
use crate::format::NestedFormat;
use crate::{Error, FrameAllocator, GuestPhysAddr, HostPhysAddr, MappingFlags, PAGE_SIZE, Result};

/// Copies `len` bytes from `src` to `dst`, one of which is guest memory.
///
/// # Safety
///
/// `src` is valid for `len` bytes of reads and `dst` for `len` bytes of writes, and
/// the two do not overlap.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    let aligned = |width: usize| (src as usize | dst as usize) & (width - 1) == 0;
    // SAFETY: per the caller both ends are valid for `len` bytes; the volatile arms
    // read and write exactly `len` bytes at addresses aligned to their width.
    unsafe {
        match len {
            8 if aligned(8) => dst
                .cast::<u64>()
                .write_volatile(src.cast::<u64>().read_volatile()),
            4 if aligned(4) => dst
                .cast::<u32>()
                .write_volatile(src.cast::<u32>().read_volatile()),
            2 if aligned(2) => dst
                .cast::<u16>()
                .write_volatile(src.cast::<u16>().read_volatile()),
            1 => dst.write_volatile(src.read_volatile()),
            _ => core::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

impl<F: NestedFormat, A: FrameAllocator> AddrSpace<F, A> {
    /// Calls `f(hva, offset, len)` for each piece of `[gpa, gpa + len)` whose host
    /// memory is contiguous (pages whose host-virtual addresses follow each other are
    /// merged into one piece), after checking that the whole range is readable RAM.
    /// Nothing is copied when any part fails.
    fn for_each_chunk(
        &self,
        gpa: GuestPhysAddr,
        len: usize,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<()> {
        /// Pieces kept from the checking walk; more are found again by a second walk.
        const KEPT: usize = 8;
        if len == 0 {
            return Ok(());
        }
        let end = gpa
            .as_usize()
            .checked_add(len)
            .ok_or(Error::Overflow { gpa, size: len })?;
        // Pass 1 checks every leaf and keeps the first pieces; pass 2 copies. So a
        // failing access copies nothing.
        let mut kept = [(core::ptr::null_mut::<u8>(), 0usize, 0usize); KEPT];
        let mut pieces = 0;
        let mut device = None;
        let walked = self.for_each_piece(gpa.as_usize(), end, &mut device, |hva, off, n| {
            if let Some(slot) = kept.get_mut(pieces) {
                *slot = (hva, off, n);
            }
            pieces += 1;
        });
        match (walked, device) {
            (Err(hole), Some(d)) if d < hole => return Err(Error::DeviceMemory { gpa: gpa_of(d) }),
            (Err(hole), _) => return Err(self.why_untranslated(gpa_of(hole))),
            (Ok(()), Some(d)) => return Err(Error::DeviceMemory { gpa: gpa_of(d) }),
            (Ok(()), None) => {}
        }
        if pieces <= KEPT {
            for &(hva, off, n) in &kept[..pieces] {
                f(hva, off, n);
            }
            return Ok(());
        }
        // Nothing changed since the first walk (`&self`), so this one succeeds too.
        self.for_each_piece(gpa.as_usize(), end, &mut device, f)
            .map_err(|hole| self.why_untranslated(gpa_of(hole)))
    }

    /// Walks `[start, end)` leaf by leaf, calling `emit(hva, offset, len)` for each
    /// run of host-contiguous memory, and noting in `device` the first address in a
    /// `DEVICE` leaf. Returns the first untranslated address, if any.
    fn for_each_piece(
        &self,
        start: usize,
        end: usize,
        device: &mut Option<usize>,
        mut emit: impl FnMut(*mut u8, usize, usize),
    ) -> core::result::Result<(), usize> {
        let alloc = self.pt.allocator();
        let mut run: Option<(*mut u8, usize, usize)> = None;
        self.pt.for_each_translation(start, end, |leaf_gpa, t| {
            if t.flags.contains(MappingFlags::DEVICE) {
                device.get_or_insert(leaf_gpa);
                return;
            }
            let leaf_end = (leaf_gpa | (t.size.bytes() - 1)).saturating_add(1).min(end);
            let (mut cur, mut hpa) = (leaf_gpa, t.hpa.as_usize());
            while cur < leaf_end {
                let chunk = (PAGE_SIZE - (hpa & (PAGE_SIZE - 1))).min(leaf_end - cur);
                let frame = HostPhysAddr::from_usize(hpa & !(PAGE_SIZE - 1));
                // The offset stays inside the frame: `chunk` ends at its end at most.
                let hva = alloc
                    .phys_to_virt(frame)
                    .as_mut_ptr::<u8>()
                    .wrapping_add(hpa & (PAGE_SIZE - 1));
                match &mut run {
                    Some((h, _, n)) if h.wrapping_add(*n) == hva => *n += chunk,
                    _ => {
                        if let Some((h, off, n)) = run.take() {
                            emit(h, off, n);
                        }
                        run = Some((hva, cur - start, chunk));
                    }
                }
                cur += chunk;
                hpa += chunk;
            }
        })?;
        if let Some((h, off, n)) = run {
            emit(h, off, n);
        }
        Ok(())
    }

    /// Copies guest memory at `gpa` into `buf`, across pages and areas.
    ///
    /// Errors (and nothing copied): [`Error::NoArea`] at a hole,
    /// [`Error::NotPopulated`] at a lazy page not faulted in, [`Error::Reserved`],
    /// [`Error::DeviceMemory`], [`Error::Overflow`].
    pub fn read(&self, gpa: GuestPhysAddr, buf: &mut [u8]) -> Result<()> {
        self.for_each_chunk(gpa, buf.len(), |src, off, len| {
            let dst = &mut buf[off..off + len];
            // SAFETY: `src..src + len` lies in mapped RAM frames whose host-virtual
            // addresses follow each other (checked by `for_each_chunk`; RAM by the
            // `map_linear` contract or our allocation), and guest memory never
            // aliases `buf`.
            unsafe { copy_bytes(src, dst.as_mut_ptr(), len) }
        })
    }

    /// Copies `buf` into guest memory at `gpa`; errors as [`AddrSpace::read`], with
    /// nothing written. The write ignores the guest's permissions (the hypervisor may
    /// write a read-only page, e.g. to load an image).
    pub fn write(&self, gpa: GuestPhysAddr, buf: &[u8]) -> Result<()> {
        self.for_each_chunk(gpa, buf.len(), |dst, off, len| {
            let src = &buf[off..off + len];
            // SAFETY: as in `read`, with the roles swapped.
            unsafe { copy_bytes(src.as_ptr(), dst, len) }
        })
    }

    /// Reads a `T` at `gpa` (any alignment); errors as [`AddrSpace::read`]. `T` is
    /// valid for every bit pattern and has no padding (zerocopy's derives prove it;
    /// integers and arrays of them qualify). A naturally aligned `T` of 1, 2, 4 or 8
    /// bytes is read in one access, so a vCPU's concurrent store of it is seen whole
    /// or not at all.
    ///
    /// ```
    /// # use addrspace::{AddrSpace, Ept, GuestPhysAddr, MappingFlags, Populate};
    /// # use addrspace::testing::PoolAllocator;
    /// # let pool = PoolAllocator::new(64);
    /// # let mut space = AddrSpace::<Ept, _>::new(&pool).unwrap();
    /// # let ram = GuestPhysAddr::from_usize(0x8000_0000);
    /// # space.map_alloc(ram, 0x1000, MappingFlags::RW, Populate::Eager).unwrap();
    /// #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, Debug, PartialEq)]
    /// #[repr(C)]
    /// struct Header { magic: u32, len: u32 }
    /// space.write_obj(ram, &Header { magic: 0xfeed, len: 8 }).unwrap();
    /// assert_eq!(space.read_obj::<Header>(ram).unwrap(), Header { magic: 0xfeed, len: 8 });
    /// ```
    ///
    /// A type with padding is refused when it is compiled:
    ///
    /// ```compile_fail
    /// #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
    /// #[repr(C)]
    /// struct Padded { tag: u8, value: u32 }
    /// ```
    pub fn read_obj<T: FromBytes + IntoBytes>(&self, gpa: GuestPhysAddr) -> Result<T> {
        let mut value = T::new_zeroed();
        self.read(gpa, value.as_mut_bytes())?;
        Ok(value)
    }

    /// Writes `value` at `gpa` (any alignment); errors as [`AddrSpace::write`].
    /// `T` has no padding and no interior mutability (zerocopy's `IntoBytes` and
    /// `Immutable`), so all its bytes are initialized and stable while copied.
    pub fn write_obj<T: IntoBytes + Immutable>(&self, gpa: GuestPhysAddr, value: &T) -> Result<()> {
        self.write(gpa, value.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::copy_bytes;

    /// Every length and alignment copies exactly its bytes: the one-access widths
    /// (aligned 1, 2, 4, 8) and the `copy_nonoverlapping` rest.
    #[test]
    fn every_width_and_alignment_copies_exactly() {
        let words: [u64; 8] = core::array::from_fn(|i| 0x0102_0304_0506_0708 * (i as u64 + 1));
        let src: [u8; 64] = core::array::from_fn(|i| words[i / 8].to_le_bytes()[i % 8]);
        for len in 0..40 {
            for off in 0..8 {
                let mut dst = [0xa5a5_a5a5_a5a5_a5a5_u64; 8];
                let d = dst.as_mut_ptr().cast::<u8>();
                // SAFETY: `src` and `dst` hold 64 bytes each and `off + len <= 47`
                // and `8 + off + len <= 55`.
                unsafe { copy_bytes(src.as_ptr().add(off), d.add(8 + off), len) };
                let got: [u8; 64] = core::array::from_fn(|i| dst[i / 8].to_le_bytes()[i % 8]);
                for (i, b) in got.iter().enumerate() {
                    let want = if (8 + off..8 + off + len).contains(&i) {
                        src[i - 8]
                    } else {
                        0xa5
                    };
                    assert_eq!(*b, want, "len {len}, offset {off}, byte {i}");
                }
            }
        }
    }
}
