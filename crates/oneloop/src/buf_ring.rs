//! Buffer rings: a group of equal buffers a receive picks from only when data arrives, so a
//! connection that waits holds no buffer.
//!
//! Make one with [`Ring::buf_ring`](crate::Ring::buf_ring); name it in a
//! [`RecvMulti`](crate::RecvMulti) or [`ReadMulti`](crate::ReadMulti). Each completion that
//! carries data carries a [`Lease`] on the buffer that holds it; dropping the lease gives the
//! buffer back. A receive that finds the group empty while data is waiting ends with
//! `ENOBUFS` (the data stays queued in the socket): drop leases, then submit again.
//!
//! # Backends
//! `uring`: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the kernel picks the buffer;
//! buffers given back are handed to the kernel again before the ring's next system call.
//! `epoll`, `aio`: the ring takes a buffer from the group when readiness says data is there,
//! and receives into it. The same completions either way.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

pub use crate::sys::buf_ring::Lease;
use crate::sys::buf_ring::Pool;

/// A group of `count` buffers of `size` bytes registered with one [`Ring`](crate::Ring).
///
/// Cheap to clone (all clones name the same group). It lives as long as its ring: ops of other
/// rings are refused (`InvalidInput`). `Send` and `Sync`, as are its leases, which may be
/// dropped on any thread.
#[derive(Clone)]
pub struct BufRing {
    pub(crate) pool: Arc<Pool>,
}

impl BufRing {
    /// How many buffers the group holds.
    pub fn count(&self) -> u32 {
        self.pool.count()
    }
    /// Bytes per buffer.
    pub fn size(&self) -> u32 {
        self.pool.size()
    }
    /// The group's id in its ring (io_uring's buffer group id).
    pub fn id(&self) -> u16 {
        self.pool.bgid
    }
    /// Whether the kernel consumes these buffers incrementally (io_uring's
    /// `IOU_PBUF_RING_INC`, see [`RingBuilder::incremental_buffers`](crate::RingBuilder::incremental_buffers)):
    /// a lease may then be a piece of a buffer. `false` on the other backends.
    pub fn incremental(&self) -> bool {
        self.pool.incremental()
    }
}

impl fmt::Debug for BufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufRing")
            .field("id", &self.id())
            .field("count", &self.count())
            .field("size", &self.size())
            .field("incremental", &self.incremental())
            .finish()
    }
}
