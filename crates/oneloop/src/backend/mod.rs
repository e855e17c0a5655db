//! The backends, behind one closed `Driver` enum the [`Ring`](crate::Ring) dispatches to: one
//! variant per backend, peers — `uring/`, and `epoll/` and `aio/`, both drivers over the
//! readiness core they share (`ready/`). What each op does on each is the op's own (`op/`).
//!
//! Every backend keeps the same contract (see `ring.rs`): one final completion per accepted
//! op, buffers owned until then, generation-checked ids, synchronous cancel outcomes, no lost
//! completions, `EINTR` handled inside, and a draining drop.
#![deny(unsafe_code)]

pub(crate) mod aio;
mod by_fd;
pub(crate) mod epoll;
mod ready;
mod timers;
pub(crate) mod uring;

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{BackendKind, Settings, Stats, SubmitError, WakeFd};
use crate::completion::{CancelCount, CancelOutcome};
use crate::op::OpId;
use crate::op::Submission;
use crate::sink::Sink;
use crate::sys::buf_ring::Pool;

/// Hashes a descriptor number cheaply (descriptors are small, dense integers; SipHash's
/// protection against chosen keys buys nothing here and cost ~5% of an echo round trip).
#[derive(Default)]
pub(crate) struct FdHasher(u64);

impl std::hash::Hasher for FdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i32(&mut self, fd: i32) {
        self.0 = (fd as u32 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One backend's driver.
pub(crate) enum Driver {
    Uring(Box<uring::Uring>),
    Aio(Box<ready::Ready<aio::Aio>>),
    Epoll(Box<ready::Ready<epoll::Epoll>>),
}

/// Calls `$call` on whichever driver `$driver` is.
macro_rules! each {
    ($driver:expr, |$d:ident| $call:expr) => {
        match $driver {
            Driver::Uring($d) => $call,
            Driver::Aio($d) => $call,
            Driver::Epoll($d) => $call,
        }
    };
}

/// Opens `kind` (not `Auto`) per `config`.
pub(crate) fn open(kind: BackendKind, config: &Settings, wake: &Arc<WakeFd>) -> io::Result<Driver> {
    match kind {
        BackendKind::Uring => Ok(Driver::Uring(Box::new(uring::Uring::open(
            config,
            Arc::clone(wake),
        )?))),
        BackendKind::Epoll => Ok(Driver::Epoll(Box::new(epoll::Epoll::open(
            config,
            Arc::clone(wake),
        )?))),
        BackendKind::Aio => Ok(Driver::Aio(Box::new(aio::Aio::open(
            config,
            Arc::clone(wake),
        )?))),
        BackendKind::Auto => unreachable!("Auto is resolved by the builder"),
    }
}

impl Driver {
    pub fn submit(
        &mut self,
        sub: Submission,
        user_data: u64,
        out: &mut Sink,
    ) -> Result<OpId, SubmitError> {
        each!(self, |d| d.submit(sub, user_data, out))
    }

    pub fn cancel(&mut self, id: OpId, out: &mut Sink) -> io::Result<CancelOutcome> {
        each!(self, |d| d.cancel(id, out))
    }

    pub fn cancel_nowait(&mut self, id: OpId, out: &mut Sink) -> io::Result<()> {
        each!(self, |d| d.cancel_nowait(id, out))
    }

    /// Whether live op `id` names a descriptor by its number (see [`Ring::abandon`]).
    ///
    /// [`Ring::abandon`]: crate::Ring::abandon
    pub fn names_fd(&self, id: OpId) -> bool {
        match self {
            Driver::Uring(d) => d.names_fd(id),
            // Their ops leave user space (an AIO request, a pool job) holding what they need,
            // or are ended in user space by a cancel.
            Driver::Aio(_) | Driver::Epoll(_) => false,
        }
    }

    /// Hands every queued request to the kernel now (io_uring; nothing elsewhere).
    pub fn submit_queued(&mut self, out: &mut Sink) -> io::Result<()> {
        match self {
            Driver::Uring(d) => d.submit_queued(out),
            Driver::Aio(_) | Driver::Epoll(_) => Ok(()),
        }
    }

    /// A group of `count` buffers of `size` bytes for ring `owner`, as group `bgid`: on
    /// io_uring with multishot ops in the kernel, registered with it; elsewhere (the other
    /// backends, multishot emulated) every buffer starts available in user space, where an
    /// emulated receive takes it.
    pub fn buf_ring(
        &mut self,
        count: u32,
        size: u32,
        owner: u64,
        bgid: u16,
    ) -> io::Result<Arc<Pool>> {
        let kernel_picks = self.kernel_multishot();
        let pool = Pool::new(count, size, owner, bgid, !kernel_picks)?;
        match (&mut *self, kernel_picks) {
            (Driver::Uring(d), true) => d.add_buf_ring(pool),
            _ => Ok(Arc::new(pool)),
        }
    }

    /// Registers a pool of fixed buffers with the kernel where the backend has such a thing
    /// (io_uring); otherwise, or when the kernel refuses, says why not.
    pub fn register_fixed(&mut self, region: &crate::sys::fixed::Region) -> Result<(), String> {
        match self {
            Driver::Uring(d) => d.register_fixed(region),
            Driver::Aio(_) => Err("the aio backend has no registered buffers".into()),
            Driver::Epoll(_) => Err("the epoll backend has no registered buffers".into()),
        }
    }

    /// Whether multishot ops run in the kernel (io_uring, not emulated).
    pub fn kernel_multishot(&self) -> bool {
        match self {
            Driver::Uring(d) => d.native_multishot(),
            _ => false,
        }
    }

    pub fn register_fd(&mut self, fd: RawFd) -> io::Result<()> {
        each!(self, |d| d.register_fd(fd))
    }

    pub fn unregister_fd(&mut self, fd: RawFd) {
        each!(self, |d| d.unregister_fd(fd))
    }

    pub fn cancel_where(&mut self, fd: Option<RawFd>, out: &mut Sink) -> io::Result<CancelCount> {
        each!(self, |d| d.cancel_where(fd, out))
    }

    pub fn wait(
        &mut self,
        min_complete: usize,
        timeout: Option<Duration>,
        out: &mut Sink,
    ) -> io::Result<()> {
        each!(self, |d| d.wait(min_complete, timeout, out))
    }

    pub fn in_flight(&self) -> usize {
        each!(self, |d| d.in_flight())
    }

    /// Whether op `id` (the backend's id) is live: accepted, final completion not yet made.
    pub fn is_live(&self, id: OpId) -> bool {
        each!(self, |d| d.is_live(id))
    }

    /// Frees the retired slot of op `id` (the backend's id), whose final completion left the
    /// ring (see `sink.rs`).
    #[inline]
    pub fn release(&mut self, id: OpId) {
        each!(self, |d| d.release(id))
    }

    /// [`release`](Self::release) for each of `ids`, with one dispatch for all.
    #[inline]
    pub fn release_all(&mut self, ids: impl Iterator<Item = OpId>) {
        each!(self, |d| ids.for_each(|id| d.release(id)))
    }

    pub fn describe(&self) -> String {
        each!(self, |d| d.describe())
    }

    pub fn stats(&self) -> Stats {
        each!(self, |d| d.stats())
    }

    pub fn shutdown(&mut self, out: &mut Sink) {
        each!(self, |d| d.shutdown(out))
    }
}
