//! The memory of a [`FixedBufPool`](crate::FixedBufPool): `count` buffers of `size` bytes in
//! one page-aligned block, each handed out to one owner at a time, and their registration with
//! an io_uring (`IORING_REGISTER_BUFFERS`) so that `READ_FIXED`/`WRITE_FIXED` can name them.
//!
//! # Invariants
//! * Buffer `i` spans `[base + i * stride, base + i * stride + size)`; `stride` is `size`
//!   rounded up to 4 KiB, so every buffer starts page-aligned (right for `O_DIRECT`).
//! * An index is either on the free list or held by exactly one [`Part`]: a `Part` is the only
//!   access to its bytes, so handing out `&mut [u8]` from it is sound.
//! * The block lives as long as the last `Part` or pool handle ([`Arc`]): a buffer the
//!   kernel still writes (its op not final) is owned by that op, which holds its `Part`.
//!   The kernel's registration pins the pages itself, so a ring outliving the block (or the
//!   reverse) touches no freed memory of ours.

use std::io;
use std::sync::{Arc, Mutex};

use io_uring::IoUring;

use super::AlignedAlloc;

const PAGE: usize = 4096;
/// The most buffers one registration takes (`IORING_MAX_REG_BUFFERS`).
pub(crate) const MAX_COUNT: usize = 1 << 14;
/// The largest buffer one registration takes (the kernel's 1 GiB per buffer).
pub(crate) const MAX_SIZE: usize = 1 << 30;

/// The shared block and its free list.
pub(crate) struct Region {
    /// Owns the memory `base` points into (freed with the region).
    _block: AlignedAlloc,
    base: *mut u8,
    size: usize,
    stride: usize,
    count: usize,
    free: Mutex<Vec<u16>>,
    /// This pool among every pool the process made (never 0); ops compare it with their ring's.
    id: u64,
}

// SAFETY: the block is owned by the region (like a `Box<[u8]>`); its bytes are reached only
// through `Part`s, one per index (invariant), each `Send` like a `Box<[u8]>`.
unsafe impl Send for Region {}
// SAFETY: shared access takes indexes through the `Mutex`ed free list; no bytes are read or
// written through `&Region`.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("count", &self.count)
            .field("size", &self.size)
            .field("id", &self.id)
            .finish()
    }
}

impl Region {
    /// `count` zeroed buffers of `size` bytes.
    ///
    /// # Errors
    /// `InvalidInput` for a count of 0 or over 16,384, a size of 0 or over 1 GiB;
    /// `OutOfMemory` if the block cannot be allocated.
    pub(crate) fn new(count: usize, size: usize) -> io::Result<Arc<Region>> {
        if count == 0 || count > MAX_COUNT || size == 0 || size > MAX_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fixed buffers: {count} x {size} bytes; the count must be 1..={MAX_COUNT} and \
                     the size 1..={MAX_SIZE} (io_uring's limits)"
                ),
            ));
        }
        let stride = size.div_ceil(PAGE) * PAGE;
        let total = stride.checked_mul(count).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "fixed buffers: size overflows")
        })?;
        let mut block = AlignedAlloc::zeroed(total, PAGE)?;
        let base = block.as_mut_slice().as_mut_ptr();
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Arc::new(Region {
            _block: block,
            base,
            size,
            stride,
            count,
            // Taken from the end: the lowest index first.
            free: Mutex::new((0..count as u16).rev().collect()),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }))
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// How many buffers are on the free list.
    pub(crate) fn available(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A free buffer, if any.
    pub(crate) fn take(self: &Arc<Region>) -> Option<Part> {
        let index = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(Part {
            region: Arc::clone(self),
            index,
        })
    }

    /// Registers every buffer with `ring` (`IORING_REGISTER_BUFFERS`): index `i` there is
    /// buffer `i` here. Fails with `ENOMEM` past `RLIMIT_MEMLOCK` (without `CAP_IPC_LOCK`),
    /// `EBUSY` if the ring already has buffers.
    pub(crate) fn register(&self, ring: &IoUring) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> = (0..self.count)
            .map(|i| libc::iovec {
                // SAFETY: `i < count`: within the block (invariant).
                iov_base: unsafe { self.base.add(i * self.stride) }.cast(),
                iov_len: self.size,
            })
            .collect();
        // SAFETY: each iovec is a buffer of this block, which the kernel pins for as long as
        // the registration lasts; after that (the ring closed) it holds no reference to it.
        // Ops name an index only with a `Part` of this region (`Part::fixed_index`).
        unsafe { ring.submitter().register_buffers(&iovecs) }
    }
}

/// One buffer of a [`Region`], held alone (see the invariants).
#[derive(Debug)]
pub(crate) struct Part {
    region: Arc<Region>,
    index: u16,
}

impl Part {
    /// The buffer's index in its pool (and in a ring's registration of it).
    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    /// The pool this buffer belongs to.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// The buffer's capacity.
    pub(crate) fn size(&self) -> usize {
        self.region.size
    }

    fn start(&self) -> *mut u8 {
        // SAFETY: `index < count`: within the block (invariant).
        unsafe {
            self.region
                .base
                .add(self.index as usize * self.region.stride)
        }
    }

    /// The buffer's first `len` bytes (`len <= size`), and no more: the rest may be a read's
    /// target while the op that owns this buffer is in flight.
    pub(crate) fn head(&self, len: usize) -> &[u8] {
        assert!(len <= self.region.size);
        // SAFETY: within the buffer (checked), initialised (zeroed at allocation); this `Part`
        // is the only access to it (invariant).
        unsafe { std::slice::from_raw_parts(self.start(), len) }
    }

    /// The buffer's bytes from `from` to its end, writable.
    pub(crate) fn tail_mut(&mut self, from: usize) -> &mut [u8] {
        assert!(from <= self.region.size);
        // SAFETY: as in `head`; `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.start().add(from), self.region.size - from) }
    }

    /// The buffer's first `len` bytes, writable.
    pub(crate) fn head_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.region.size);
        // SAFETY: as in `tail_mut`.
        unsafe { std::slice::from_raw_parts_mut(self.start(), len) }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.region
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.index);
    }
}
