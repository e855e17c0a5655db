//! Aligned, zeroed heap memory for `O_DIRECT` buffers.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;

/// A zero-initialised heap block with a chosen alignment.
///
/// # Invariant
/// `ptr` points to `layout.size()` bytes allocated with `layout` (or is dangling when the size
/// is 0), all initialised (zeroed at allocation), owned by this value alone.
pub(crate) struct AlignedAlloc {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the block is uniquely owned (invariant); moving it between threads moves that
// ownership, like a `Box<[u8]>`.
unsafe impl Send for AlignedAlloc {}
// SAFETY: shared access only hands out `&[u8]`, which is `Sync`.
unsafe impl Sync for AlignedAlloc {}

impl AlignedAlloc {
    /// Allocates `size` zeroed bytes aligned to `align` (a power of two).
    pub fn zeroed(size: usize, align: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(size, align).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("alignment {align} is not a power of two, or size {size} overflows"),
            )
        })?;
        if size == 0 {
            // A dangling pointer aligned to `align`: never read or written (size 0).
            let ptr = NonNull::new(align as *mut u8).expect("align is non-zero");
            return Ok(AlignedAlloc { ptr, layout });
        }
        // SAFETY: `layout` has a non-zero size (checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(AlignedAlloc { ptr, layout })
    }

    /// The whole block.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the invariant says `size` initialised bytes live at `ptr`, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The whole block, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The block's alignment.
    pub fn align(&self) -> usize {
        self.layout.align()
    }
}

impl Drop for AlignedAlloc {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: allocated in `zeroed` with this very layout (invariant), freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}
