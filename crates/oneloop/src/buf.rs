//! Owned buffers: the ring holds them while the kernel may touch them and hands them back.
//!
//! Every op that reads or writes memory takes its buffer **by value**. From `submit` until the
//! op's final completion the ring owns it, so cancelling or dropping never frees memory the
//! kernel may still write. The final [`Completion`](crate::Completion) gives it back.
//!
//! Four buffer types are accepted, all stored as one type-erased [`Buf`] (no allocation, no
//! boxing per op):
//!
//! | type | a read fills | a write sends |
//! |---|---|---|
//! | `Vec<u8>` | its spare capacity, `len..capacity`, then grows `len` | `..len` |
//! | `Box<[u8]>` | the whole slice from 0 | the whole slice |
//! | [`AlignedBuf`] | `len..capacity`, then grows `len` (like `Vec`) | `..len` |
//! | [`FixedBuf`] | `len..capacity`, then grows `len` (like `Vec`) | `..len` |
//!
//! [`AlignedBuf`] has a chosen alignment for `O_DIRECT`, whose buffers, lengths and offsets must
//! be multiples of the device's logical block size (4096 is always safe). A [`FixedBuf`] comes
//! from a ring's pool of registered buffers (see [`crate::fixed_buf`]).
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

use crate::fixed_buf::FixedBuf;
use crate::sys::AlignedAlloc;

/// A buffer owned by the ring while an op uses it: one of the three accepted kinds.
pub enum Buf {
    /// A `Vec<u8>`.
    Vec(Vec<u8>),
    /// A boxed slice.
    Boxed(Box<[u8]>),
    /// An aligned buffer.
    Aligned(AlignedBuf),
    /// A buffer of a ring's registered pool.
    Fixed(FixedBuf),
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Buf::Vec(_) => "Vec",
            Buf::Boxed(_) => "Boxed",
            Buf::Aligned(_) => "Aligned",
            Buf::Fixed(_) => "Fixed",
        };
        f.debug_struct("Buf")
            .field("kind", &kind)
            .field("len", &self.len())
            .finish()
    }
}

impl Buf {
    /// The bytes a write would send (the initialised part).
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Buf::Vec(v) => v,
            Buf::Boxed(b) => b,
            Buf::Aligned(a) => a.as_slice(),
            Buf::Fixed(f) => f.as_slice(),
        }
    }

    /// How many initialised bytes the buffer holds.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the buffer holds no initialised bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The region a read fills: its address and length.
    #[inline]
    pub(crate) fn read_target(&mut self) -> (*mut u8, usize) {
        let (ptr, len) = self.read_region();
        (ptr, self.maybe_short(len))
    }

    /// The bytes a write sends: their address and length.
    #[inline]
    pub(crate) fn write_source(&self) -> (*const u8, usize) {
        let s = self.as_slice();
        (s.as_ptr(), self.maybe_short(s.len()))
    }

    /// `len`, or (injected) a shorter length, so the transfer comes back short. Aligned and
    /// fixed buffers keep their length: `O_DIRECT` would refuse a short one.
    #[inline]
    fn maybe_short(&self, len: usize) -> usize {
        use crate::fault::{self, Fault};
        if len > 1
            && !matches!(self, Buf::Aligned(_) | Buf::Fixed(_))
            && fault::hit(Fault::ShortTransfer)
        {
            1 + fault::below(len as u64 - 1) as usize
        } else {
            len
        }
    }

    /// How many bytes a read may put into the buffer (see the module table for where).
    #[inline]
    pub fn room(&self) -> usize {
        match self {
            Buf::Vec(v) => v.capacity() - v.len(),
            Buf::Boxed(b) => b.len(),
            Buf::Aligned(a) => a.capacity() - a.len(),
            Buf::Fixed(f) => f.capacity() - f.len(),
        }
    }

    /// The whole spare region of the buffer.
    #[inline]
    fn read_region(&mut self) -> (*mut u8, usize) {
        match self {
            Buf::Vec(v) => {
                let spare = v.spare_capacity_mut();
                (spare.as_mut_ptr().cast(), spare.len())
            }
            Buf::Boxed(b) => (b.as_mut_ptr(), b.len()),
            Buf::Aligned(a) => {
                let spare = a.spare_mut();
                (spare.as_mut_ptr(), spare.len())
            }
            Buf::Fixed(f) => {
                let spare = f.spare_mut();
                (spare.as_mut_ptr(), spare.len())
            }
        }
    }

    /// The read target as one iovec.
    ///
    /// Never shortened: a vectored read fills its buffers in order, so each must be whole.
    pub(crate) fn read_iovec(&mut self) -> libc::iovec {
        let (ptr, len) = self.read_region();
        libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        }
    }

    /// The bytes a write sends, as one iovec.
    pub(crate) fn write_iovec(&self) -> libc::iovec {
        let s = self.as_slice();
        let (ptr, len) = (s.as_ptr(), s.len());
        libc::iovec {
            iov_base: ptr.cast_mut().cast(),
            iov_len: len,
        }
    }

    /// Puts `bytes` where a read would (see the module table), as many as there is room for:
    /// the count put, which is what a read that received them would report.
    ///
    /// # Examples
    /// ```
    /// use oneloop::IoBuf;
    /// let mut buf = Vec::<u8>::with_capacity(4).into_buf();
    /// assert_eq!(buf.fill_from(b"hello"), 4);
    /// assert_eq!(buf.as_slice(), b"hell");
    /// ```
    pub fn fill_from(&mut self, bytes: &[u8]) -> usize {
        let n = self.room().min(bytes.len());
        match self {
            Buf::Vec(v) => v.extend_from_slice(&bytes[..n]),
            Buf::Boxed(b) => b[..n].copy_from_slice(&bytes[..n]),
            Buf::Aligned(a) => a.extend_from_slice(&bytes[..n]),
            Buf::Fixed(f) => f.extend_from_slice(&bytes[..n]),
        }
        n
    }

    /// The index of a [`FixedBuf`] of the pool with id `pool` (a ring's registered one), for a
    /// request that names it; `None` for any other buffer.
    #[inline]
    pub(crate) fn fixed_index(&self, pool: u64) -> Option<u16> {
        match self {
            Buf::Fixed(f) => f.fixed_index(pool),
            _ => None,
        }
    }

    /// Unwraps a `Vec<u8>`; `None` if the buffer is of another kind.
    pub fn into_vec(self) -> Option<Vec<u8>> {
        match self {
            Buf::Vec(v) => Some(v),
            _ => None,
        }
    }
}

/// A buffer type the ring can take by value and give back as the same type.
pub trait IoBuf: Sized + 'static {
    /// Erases the type.
    fn into_buf(self) -> Buf;
    /// Restores the type; gives the buffer back unchanged if it is of another kind.
    fn from_buf(buf: Buf) -> Result<Self, Buf>;
}

/// A buffer type a read may fill (see the module table for where the bytes go).
pub trait IoBufMut: IoBuf {}

impl IoBuf for Vec<u8> {
    #[inline]
    fn into_buf(self) -> Buf {
        Buf::Vec(self)
    }
    #[inline]
    fn from_buf(buf: Buf) -> Result<Self, Buf> {
        match buf {
            Buf::Vec(v) => Ok(v),
            other => Err(other),
        }
    }
}
impl IoBufMut for Vec<u8> {}

impl IoBuf for Box<[u8]> {
    #[inline]
    fn into_buf(self) -> Buf {
        Buf::Boxed(self)
    }
    #[inline]
    fn from_buf(buf: Buf) -> Result<Self, Buf> {
        match buf {
            Buf::Boxed(b) => Ok(b),
            other => Err(other),
        }
    }
}
impl IoBufMut for Box<[u8]> {}

impl IoBuf for AlignedBuf {
    #[inline]
    fn into_buf(self) -> Buf {
        Buf::Aligned(self)
    }
    #[inline]
    fn from_buf(buf: Buf) -> Result<Self, Buf> {
        match buf {
            Buf::Aligned(a) => Ok(a),
            other => Err(other),
        }
    }
}
impl IoBufMut for AlignedBuf {}

impl IoBuf for FixedBuf {
    #[inline]
    fn into_buf(self) -> Buf {
        Buf::Fixed(self)
    }
    #[inline]
    fn from_buf(buf: Buf) -> Result<Self, Buf> {
        match buf {
            Buf::Fixed(f) => Ok(f),
            other => Err(other),
        }
    }
}
impl IoBufMut for FixedBuf {}

impl IoBuf for Buf {
    #[inline]
    fn into_buf(self) -> Buf {
        self
    }
    #[inline]
    fn from_buf(buf: Buf) -> Result<Self, Buf> {
        Ok(buf)
    }
}
impl IoBufMut for Buf {}

/// A zero-initialised heap buffer with a chosen alignment, for `O_DIRECT`.
///
/// It behaves like a `Vec<u8>` of fixed capacity: `len` bytes are "in use", a read fills
/// `len..capacity`, a write sends `..len`. All bytes are always initialised (zeroed at
/// allocation), so changing `len` is safe.
///
/// # Examples
/// ```
/// let mut buf = oneloop::AlignedBuf::new(4096, 4096).unwrap();
/// assert_eq!(buf.as_slice().as_ptr() as usize % 4096, 0);
/// buf.extend_from_slice(b"hello");
/// assert_eq!(buf.as_slice(), b"hello");
/// ```
pub struct AlignedBuf {
    alloc: AlignedAlloc,
    /// # Invariant
    /// `len <= alloc.as_slice().len()`.
    len: usize,
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("align", &self.alloc.align())
            .finish()
    }
}

impl AlignedBuf {
    /// An empty buffer of `capacity` zeroed bytes aligned to `align` (a power of two).
    ///
    /// # Errors
    /// `InvalidInput` if `align` is not a power of two; `OutOfMemory` if allocation fails.
    pub fn new(capacity: usize, align: usize) -> io::Result<Self> {
        Ok(AlignedBuf {
            alloc: AlignedAlloc::zeroed(capacity, align)?,
            len: 0,
        })
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        &self.alloc.as_slice()[..self.len]
    }

    /// The bytes in use, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.alloc.as_mut_slice()[..len]
    }

    fn spare_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.alloc.as_mut_slice()[len..]
    }

    /// How many bytes are in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fixed capacity.
    pub fn capacity(&self) -> usize {
        self.alloc.as_slice().len()
    }

    /// Sets how many bytes are in use.
    ///
    /// # Panics
    /// If `len > capacity`.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "AlignedBuf::set_len beyond capacity"
        );
        self.len = len;
    }

    /// Empties the buffer (keeps the capacity).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends bytes.
    ///
    /// # Panics
    /// If they do not fit in the capacity.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let start = self.len;
        let end = start + bytes.len();
        assert!(
            end <= self.capacity(),
            "AlignedBuf::extend_from_slice beyond capacity"
        );
        self.alloc.as_mut_slice()[start..end].copy_from_slice(bytes);
        self.len = end;
    }
}
