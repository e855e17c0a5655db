//! Registered buffers: a pool of buffers the ring registers with io_uring once, so reads and
//! writes into them skip mapping the user's pages on every op (`READ_FIXED`/`WRITE_FIXED`).
//!
//! Ask for the pool when building the ring ([`RingBuilder::fixed_buffers`]), take buffers
//! from it ([`FixedBufPool::take`]) and pass them to [`Read`](crate::Read) and
//! [`Write`](crate::Write) like any other buffer; a [`FixedBuf`] goes back to its pool when
//! dropped. It behaves like an [`AlignedBuf`](crate::AlignedBuf) of fixed capacity (a read
//! fills `len..capacity`, a write sends `..len`), and every buffer starts on a 4 KiB boundary,
//! so it suits `O_DIRECT` too.
//!
//! | backend | a `FixedBuf` in `Read`/`Write` |
//! |---|---|
//! | uring, pool registered | `READ_FIXED`/`WRITE_FIXED` naming the buffer's index |
//! | uring, registration refused (e.g. over `RLIMIT_MEMLOCK`) | plain `READ`/`WRITE` |
//! | aio, epoll | as any other buffer |
//!
//! A buffer from one ring's pool used on another ring is an ordinary buffer there. Other ops
//! (`Send`, `Recv`, `Readv`, ...) take a `FixedBuf` as an ordinary buffer.
//!
//! The registration is charged to `RLIMIT_MEMLOCK` for a process without `CAP_IPC_LOCK`
//! (`ulimit -l`, often 8 MiB): past it the ring still builds, the pool's buffers work as
//! ordinary memory, and [`FixedBufPool::registered`] and [`Ring::describe`](crate::Ring::describe)
//! say why. [`Stats::fixed_buffer_ops`](crate::Stats::fixed_buffer_ops) counts the ops the
//! kernel ran on a registered buffer.
//!
//! # Examples
//! ```
//! use std::os::fd::AsRawFd;
//! use oneloop::{FixedBuf, IoBuf, Read, Ring, Write};
//!
//! let mut ring = Ring::builder().fixed_buffers(8, 4096).build()?;
//! let pool = ring.fixed_buffers().expect("asked for").clone();
//! let file = tempfile();
//! let fd = file.as_raw_fd();
//!
//! let mut buf = pool.take().expect("a free buffer");
//! buf.extend_from_slice(b"registered");
//! ring.submit(Write::new(fd, buf, 0), 1)?;
//! ring.wait(1, None)?;
//! let mut done = ring.completions().next().unwrap();
//! assert_eq!(*done.result().as_ref().unwrap(), 10);
//! drop(done); // the buffer goes back to the pool
//!
//! ring.submit(Read::new(fd, pool.take().unwrap(), 0), 2)?;
//! ring.wait(1, None)?;
//! let mut done = ring.completions().next().unwrap();
//! let buf = FixedBuf::from_buf(done.take_buf().unwrap()).unwrap();
//! assert_eq!(buf.as_slice(), b"registered");
//! println!("{}", pool.registered().map_or_else(|why| why.to_string(), |()| "registered".into()));
//! # fn tempfile() -> std::fs::File {
//! #     let path = std::env::temp_dir().join(format!("oneloop-fixed-doc-{}", std::process::id()));
//! #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true)
//! #         .open(&path).unwrap();
//! #     std::fs::remove_file(&path).unwrap();
//! #     f
//! # }
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use crate::sys::fixed::{Part, Region};

/// A ring's pool of registered buffers (see the [module docs](self)). Cheap to clone; any
/// thread may take buffers from it.
#[derive(Clone)]
pub struct FixedBufPool {
    region: Arc<Region>,
    /// `Ok` once registered with the ring; otherwise why not.
    registered: Result<(), Arc<str>>,
}

impl fmt::Debug for FixedBufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBufPool")
            .field("count", &self.count())
            .field("size", &self.size())
            .field("available", &self.available())
            .field("registered", &self.registered)
            .finish()
    }
}

impl FixedBufPool {
    pub(crate) fn new(region: Arc<Region>, registered: Result<(), String>) -> FixedBufPool {
        FixedBufPool {
            region,
            registered: registered.map_err(Arc::from),
        }
    }

    /// A free buffer (empty, `size` bytes of capacity), or `None` while all are taken.
    pub fn take(&self) -> Option<FixedBuf> {
        self.region.take().map(|part| FixedBuf { part, len: 0 })
    }

    /// How many buffers the pool has.
    pub fn count(&self) -> usize {
        self.region.count()
    }

    /// Each buffer's capacity in bytes.
    pub fn size(&self) -> usize {
        self.region.size()
    }

    /// How many buffers are free now.
    pub fn available(&self) -> usize {
        self.region.available()
    }

    /// `Ok` if the ring registered the pool with the kernel (io_uring); otherwise why it did
    /// not (another backend, or the kernel's refusal, e.g. `ENOMEM` over `RLIMIT_MEMLOCK`):
    /// the buffers then work as ordinary memory.
    pub fn registered(&self) -> Result<(), &str> {
        self.registered.as_ref().map(|_| ()).map_err(|why| &**why)
    }

    /// One line for `Ring::describe`.
    pub(crate) fn describe(&self) -> String {
        let what = format!("fixed buffers {} x {} B", self.count(), self.size());
        match &self.registered {
            Ok(()) => format!("{what} registered"),
            Err(why) => format!("{what} not registered ({why})"),
        }
    }
}

/// One buffer of a [`FixedBufPool`]: `len` bytes in use of a fixed capacity. Dropped, it goes
/// back to its pool.
pub struct FixedBuf {
    part: Part,
    /// # Invariant
    /// `len <= part.size()`.
    len: usize,
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.part.index())
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl FixedBuf {
    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        self.part.head(self.len)
    }

    /// The bytes in use, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.part.head_mut(self.len)
    }

    /// How many bytes are in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fixed capacity (the pool's buffer size).
    pub fn capacity(&self) -> usize {
        self.part.size()
    }

    /// The buffer's index in its pool.
    pub fn index(&self) -> u16 {
        self.part.index()
    }

    /// Sets how many bytes are in use (all bytes are initialised: zeroed at allocation).
    ///
    /// # Panics
    /// If `len > capacity`.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "FixedBuf::set_len beyond capacity");
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
            "FixedBuf::extend_from_slice beyond capacity"
        );
        self.part.tail_mut(start)[..bytes.len()].copy_from_slice(bytes);
        self.len = end;
    }

    /// The spare region a read fills.
    pub(crate) fn spare_mut(&mut self) -> &mut [u8] {
        self.part.tail_mut(self.len)
    }

    /// The buffer's index if it belongs to the pool with id `pool` (the ring's registered
    /// one, 0 for none): only then may a request name it.
    #[inline]
    pub(crate) fn fixed_index(&self, pool: u64) -> Option<u16> {
        (self.part.region().id() == pool).then(|| self.part.index())
    }
}
