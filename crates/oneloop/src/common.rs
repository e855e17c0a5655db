//! What the [`Ring`](crate::Ring) and every backend share: which backend, the settings a
//! ring is built with, its counters, the refused-submission error, and the wake eventfd.
//! Nothing here depends on the Ring or on a backend, so neither imports the other for these.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::op::Op;
use crate::pool::{Ownership, Release};

/// The sizes and switches a ring is built with (set through [`RingBuilder`](crate::RingBuilder)).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub entries: u32,
    pub cq_entries: Option<u32>,
    pub in_flight_max: usize,
    pub emulate_epoll_wait: bool,
    /// Run multishot receive, read and accept in user space on io_uring too.
    pub emulate_multishot: bool,
    /// Register buffer rings for incremental consumption where io_uring has it.
    pub incremental_buffers: bool,
    /// Multishot receives fill several buffers at once where io_uring has bundles.
    pub recv_bundles: bool,
    /// Blocking waits batched on io_uring (`RingBuilder::batch_wait`).
    pub batch_wait: Option<(u32, std::time::Duration)>,
    /// Enter io_uring through the ring's descriptor registered with its thread.
    pub register_ring_fd: bool,
    /// A pool of registered buffers: `(count, size)` (`RingBuilder::fixed_buffers`).
    pub fixed_buffers: Option<(usize, usize)>,
    pub pool_threads: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            entries: 256,
            cq_entries: None,
            in_flight_max: 16_384,
            emulate_epoll_wait: false,
            emulate_multishot: false,
            incremental_buffers: true,
            recv_bundles: false,
            batch_wait: None,
            register_ring_fd: true,
            fixed_buffers: None,
            pool_threads: 4,
        }
    }
}

/// Which kernel mechanism a ring runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The first that works: uring, then aio, then epoll (or what `ONELOOP_BACKEND` names).
    Auto,
    /// io_uring.
    Uring,
    /// Linux AIO with `IOCB_CMD_POLL`.
    Aio,
    /// epoll plus a small blocking pool.
    Epoll,
}

impl BackendKind {
    /// The concrete backends, in the order `Auto` tries them.
    pub const ALL: [BackendKind; 3] = [BackendKind::Uring, BackendKind::Aio, BackendKind::Epoll];

    /// The lower-case name used everywhere (`uring`, `aio`, `epoll`, `auto`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Uring => "uring",
            BackendKind::Aio => "aio",
            BackendKind::Epoll => "epoll",
        }
    }

    /// The backend `ONELOOP_BACKEND` forces, if it is set.
    ///
    /// # Errors
    /// `InvalidInput` if the variable holds anything but `uring`, `aio`, `epoll` or `auto`.
    pub fn from_env() -> io::Result<Option<BackendKind>> {
        match std::env::var("ONELOOP_BACKEND") {
            Ok(v) if v.is_empty() => Ok(None),
            Ok(v) => v.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ONELOOP_BACKEND: {e}"),
            )),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<BackendKind> {
        match s {
            "auto" => Ok(BackendKind::Auto),
            "uring" => Ok(BackendKind::Uring),
            "aio" => Ok(BackendKind::Aio),
            "epoll" => Ok(BackendKind::Epoll),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown backend {other:?}: expected uring, aio, epoll or auto"),
            )),
        }
    }
}

/// Hand-overs posted to a ring: each op and where its completions go.
pub(crate) type Handed = Vec<(crate::op::OpId, Arc<crate::Handover>)>;

/// The eventfd a [`Waker`](crate::Waker) signals and the ring's backend watches.
///
/// Wakes follow the [ownership protocol](crate::pool::Ownership): a waker that raises the
/// count from 0 writes the eventfd and hands ownership to the ring; wakers that find it owned
/// only leave their increment. The ring, when the eventfd fires, releases what it saw and
/// re-checks, so a burst of wakes costs one `write` and none is lost.
#[derive(Debug)]
pub(crate) struct WakeFd {
    fd: OwnedFd,
    state: Ownership,
    /// Descriptors unregistered through a [`Waker`] (from any thread), not yet applied.
    unregistered: Mutex<Vec<RawFd>>,
    /// Whether `unregistered` may hold any (checked without the lock).
    has_unregistered: AtomicBool,
    /// Ops abandoned through a [`Waker`] (from any thread), not yet applied.
    abandoned: Mutex<Vec<crate::op::OpId>>,
    /// Whether `abandoned` or `handed` may hold any (checked without the lock).
    has_abandoned: AtomicBool,
    /// Ops handed over through a [`Waker`] (from any thread), not yet applied; `None` once
    /// the ring is gone (a hand-over posted then is closed at once).
    handed: Mutex<Option<Handed>>,
}

impl WakeFd {
    pub(crate) fn new() -> io::Result<WakeFd> {
        Ok(WakeFd {
            fd: crate::sys::eventfd()?,
            state: Ownership::new(),
            unregistered: Mutex::new(Vec::new()),
            has_unregistered: AtomicBool::new(false),
            abandoned: Mutex::new(Vec::new()),
            has_abandoned: AtomicBool::new(false),
            handed: Mutex::new(Some(Vec::new())),
        })
    }

    /// Makes the ring's current or next wait return (only the first of a burst writes).
    pub(crate) fn wake(&self) {
        if self.state.try_own() {
            if let Err(e) = crate::sys::eventfd_write(self.raw()) {
                tracing::error!(error = %e, "wake failed");
            }
        }
    }

    /// Records that `fd` was unregistered from another thread (see `Waker::unregister_fd`).
    pub(crate) fn post_unregistered(&self, fd: RawFd) {
        self.unregistered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fd);
        self.has_unregistered.store(true, Ordering::Release);
    }

    /// Records that op `id` was abandoned from another thread (see `Waker::abandon`).
    pub(crate) fn post_abandoned(&self, id: crate::op::OpId) {
        self.abandoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        self.has_abandoned.store(true, Ordering::Release);
    }

    /// Records that op `id` is handed over to `to` from another thread (see
    /// `Waker::hand_over`); closes `to` at once if the ring is gone.
    pub(crate) fn post_handed(&self, id: crate::op::OpId, to: Arc<crate::Handover>) {
        let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        match handed.as_mut() {
            Some(list) => {
                list.push((id, to));
                self.has_abandoned.store(true, Ordering::Release);
            }
            None => to.close(),
        }
    }

    /// The ring's side: the hand-overs posted since the last call; `closing`: the ring is
    /// going, and later posts are closed at once.
    pub(crate) fn take_handed(&self, closing: bool) -> Handed {
        let mut handed = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        let taken = if closing {
            handed.take()
        } else {
            handed.as_mut().map(std::mem::take)
        };
        taken.unwrap_or_default()
    }

    /// Whether ops were abandoned through a [`Waker`](crate::Waker) since the last
    /// [`take_abandoned`](Self::take_abandoned) (one atomic load).
    #[inline]
    pub(crate) fn abandoned_posted(&self) -> bool {
        self.has_abandoned.load(Ordering::Acquire)
    }

    /// The ring's side: the ops abandoned through a [`Waker`](crate::Waker) since the last
    /// call (none, without taking the lock, in the common case).
    #[inline]
    pub(crate) fn take_abandoned(&self) -> Vec<crate::op::OpId> {
        if !self.has_abandoned.load(Ordering::Acquire)
            || !self.has_abandoned.swap(false, Ordering::AcqRel)
        {
            return Vec::new();
        }
        std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The ring's side: hands each descriptor unregistered through a [`Waker`](crate::Waker)
    /// to `f`.
    #[inline]
    pub(crate) fn take_unregistered(&self, f: impl FnMut(RawFd)) {
        if self.has_unregistered.load(Ordering::Acquire) {
            self.take_unregistered_slow(f);
        }
    }

    #[cold]
    fn take_unregistered_slow(&self, f: impl FnMut(RawFd)) {
        if !self.has_unregistered.swap(false, Ordering::AcqRel) {
            return;
        }
        let fds = std::mem::take(&mut *self.unregistered.lock().unwrap_or_else(|e| e.into_inner()));
        fds.into_iter().for_each(f);
    }

    /// The ring's side: the eventfd fired; takes every wake posted so far.
    pub(crate) fn absorb(&self) {
        if let Err(e) = crate::sys::eventfd_reset(self.raw()) {
            tracing::error!(error = %e, "cannot reset the wake eventfd");
        }
        let mut refs = self.state.refs();
        while let Release::Again { refs: more, .. } = self.state.release(refs) {
            refs = more;
        }
    }
}

/// Counters a ring keeps about itself: a cheap snapshot (plain integers, no locks) for an
/// application to export.
///
/// # Examples
/// ```
/// use oneloop::{Nop, Op, Ring};
///
/// let mut ring = Ring::new()?;
/// ring.submit(Nop, 0)?;
/// let stats = ring.stats();
/// assert_eq!(stats.submitted[Op::from(Nop).kind()], 1);
/// for (name, n) in stats.by_kind() {
///     println!("{name}: {n}");
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ops handed to the blocking pool (epoll and aio backends; always 0 on uring).
    pub pool_jobs: u64,
    /// AIO requests the kernel accepted (aio backend only): polls, reads, writes, fsyncs, and
    /// the backend's own polls of its eventfds and epoll fd.
    pub aio_requests: u64,
    /// Ops accepted by `submit`, by kind (index with [`Op::kind`](crate::Op::kind)).
    pub submitted: [u64; Op::COUNT],
    /// Cancel requests made (`cancel`, `cancel_nowait`, and each op `cancel_fd`/`cancel_all`
    /// reached).
    pub cancels: u64,
    /// Requests the kernel ran on a registered buffer (`READ_FIXED`/`WRITE_FIXED`, and
    /// `SEND_ZC` naming its buffer by index: a [`FixedBuf`](crate::FixedBuf) of this ring's
    /// registered pool; io_uring only).
    pub fixed_buffer_ops: u64,
    /// [`SendZc`](crate::SendZc)s that io_uring ran as `SEND_ZC` and that sent bytes (0 on
    /// the other backends, on kernels without `SEND_ZC` and where a socket sends the
    /// ordinary way). Whether the kernel then copied the bytes after all — to a loopback
    /// peer it does — is not counted.
    pub zero_copy_sends: u64,
}

impl Stats {
    /// `(name, ops submitted)` for every op kind.
    pub fn by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        crate::Op::NAMES
            .iter()
            .copied()
            .zip(self.submitted.iter().copied())
    }
}

/// A refused submission: why, and the op with its buffers, untouched.
pub struct SubmitError {
    error: io::Error,
    op: Op,
}

impl SubmitError {
    pub(crate) fn new(error: io::Error, op: Op) -> SubmitError {
        SubmitError { error, op }
    }

    /// The refusal when `in_flight_max` ops are already in flight.
    pub(crate) fn full(in_flight_max: usize, op: Op) -> SubmitError {
        let error = io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("{in_flight_max} ops in flight (in_flight_max): reap completions first"),
        );
        SubmitError { error, op }
    }
    /// Why the op was refused.
    pub fn error(&self) -> &io::Error {
        &self.error
    }
    /// The op, with everything it owned.
    pub fn into_op(self) -> Op {
        self.op
    }
}

impl fmt::Debug for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubmitError({} op: {})", self.op.name(), self.error)
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: {}", self.op.name(), self.error)
    }
}

impl std::error::Error for SubmitError {}

impl From<SubmitError> for io::Error {
    fn from(e: SubmitError) -> io::Error {
        io::Error::new(e.error.kind(), e.to_string())
    }
}
