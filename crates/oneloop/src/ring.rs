//! The [`Ring`]: submit any op, cancel it, wait, and drain one queue of completions.
//!
//! A ring belongs to the thread that built it (`!Send`): io_uring's `SINGLE_ISSUER` and
//! `DEFER_TASKRUN` need one submitter, and thread-per-core is the model. Other threads reach it
//! through its [`Waker`].
//!
//! The contract every backend keeps (each point is a conformance case):
//! 1. exactly one final completion per accepted submission (multishot: `MORE`s, then one);
//! 2. the ring owns what an op names until that final completion, and hands buffers back there;
//! 3. ids carry a generation, so stale ids never touch a reused slot;
//! 4. cancel is a request: `Cancelled` means the op ends `ECANCELED`, `TooLate` that its real
//!    result stands, `NotFound` that the id is unknown or finished;
//! 5. no completion is ever lost: a full queue is backpressure, never a drop;
//! 6. `EINTR` never reaches the caller of [`Ring::wait`];
//! 7. dropping a ring cancels what is in flight, drains it, and only then frees buffers.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::{self, Driver};
use crate::completion::{CancelCount, CancelOutcome, Completion, OpId};
use crate::op::{Op, Submission};
use crate::pool::{Ownership, Release};

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

/// A backend that `Auto` tried and passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The backend.
    pub backend: BackendKind,
    /// Why it could not be used, in the machine's terms.
    pub reason: String,
}

/// How to build a ring. Start from [`Ring::builder`].
#[derive(Clone, Debug)]
pub struct RingBuilder {
    pub(crate) backend: BackendKind,
    pub(crate) entries: u32,
    pub(crate) cq_entries: Option<u32>,
    pub(crate) in_flight_max: usize,
    pub(crate) emulate_epoll_wait: bool,
    pub(crate) pool_threads: usize,
    pub(crate) excluded: Vec<BackendKind>,
}

impl Default for RingBuilder {
    fn default() -> Self {
        RingBuilder {
            backend: BackendKind::Auto,
            entries: 256,
            cq_entries: None,
            in_flight_max: 16_384,
            emulate_epoll_wait: false,
            pool_threads: 4,
            excluded: Vec::new(),
        }
    }
}

impl RingBuilder {
    /// Picks the backend (default `Auto`). `ONELOOP_BACKEND` overrides `Auto` only.
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.backend = backend;
        self
    }

    /// The submission batch size (io_uring SQ entries), default 256. Ops beyond it are not
    /// refused: the ring flushes the batch to the kernel to make room.
    ///
    /// # Backends
    /// `aio`: the AIO context holds `4 × entries` events (at least 64, at most
    /// `in_flight_max`), drawn from the system-wide `aio-max-nr`. More AIO requests than that
    /// wait in user space until earlier ones complete (a queued poll is armed then, and sees
    /// the fd's state at that moment: nothing is lost, only delayed).
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries.max(1);
        self
    }

    /// The kernel completion queue size (io_uring CQ entries; default twice `entries`). A small
    /// queue loses nothing: completions past it wait in the kernel until reaped.
    pub fn cq_entries(mut self, cq_entries: u32) -> Self {
        self.cq_entries = Some(cq_entries.max(1));
        self
    }

    /// The most ops in flight at once (default 16,384; at most 16,777,216). `submit` beyond it
    /// fails with `ErrorKind::ResourceBusy` and gives the op back.
    pub fn in_flight_max(mut self, in_flight_max: usize) -> Self {
        self.in_flight_max = in_flight_max.clamp(1, crate::slab::CAPACITY_MAX);
        self
    }

    /// Always runs `EpollWait` as a poll on the epoll fd plus `epoll_wait(.., 0)`, even where the
    /// kernel has a native op. For tests of that path; costs one more syscall per wait.
    pub fn emulate_epoll_wait(mut self, emulate: bool) -> Self {
        self.emulate_epoll_wait = emulate;
        self
    }

    /// The most threads the blocking pool may run (default 4; epoll and aio backends only).
    /// Threads start on demand: a ring that never needs the pool starts none.
    pub fn pool_threads(mut self, threads: usize) -> Self {
        self.pool_threads = threads.max(1);
        self
    }

    /// Makes `Auto` pass over `backend` (recorded in [`Ring::skipped`] as excluded), e.g. to
    /// keep io_uring out of a process by policy. An explicit choice of it still works.
    pub fn exclude(mut self, backend: BackendKind) -> Self {
        self.excluded.push(backend);
        self
    }

    /// Builds the ring on the first usable backend.
    ///
    /// # Errors
    /// For an explicit backend, why it cannot run here. For `Auto`, an error naming every
    /// backend's reason. `InvalidInput` for a bad `ONELOOP_BACKEND`.
    pub fn build(self) -> io::Result<Ring> {
        let requested = match self.backend {
            BackendKind::Auto => BackendKind::from_env()?.unwrap_or(BackendKind::Auto),
            explicit => explicit,
        };
        let wake = Arc::new(WakeFd {
            fd: crate::sys::eventfd()?,
            state: Ownership::new(),
            unregistered: Mutex::new(Vec::new()),
            has_unregistered: AtomicBool::new(false),
        });
        if requested != BackendKind::Auto {
            let driver = backend::open(requested, &self, &wake)?;
            return Ok(Ring::assemble(driver, requested, Vec::new(), wake, &self));
        }
        let mut skipped = Vec::new();
        for kind in BackendKind::ALL {
            if self.excluded.contains(&kind) {
                let reason = "excluded by RingBuilder::exclude".to_string();
                skipped.push(Skipped {
                    backend: kind,
                    reason,
                });
                continue;
            }
            match backend::open(kind, &self, &wake) {
                Ok(driver) => return Ok(Ring::assemble(driver, kind, skipped, wake, &self)),
                Err(e) => {
                    tracing::debug!(backend = kind.name(), error = %e, "backend skipped");
                    skipped.push(Skipped {
                        backend: kind,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("{}: {}", s.backend, s.reason))
            .collect();
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("no usable backend ({})", reasons.join("; ")),
        ))
    }
}

/// The eventfd a [`Waker`] signals and the ring's backend watches.
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
}

impl WakeFd {
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The ring's side: hands each descriptor unregistered through a [`Waker`] to `f`.
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

/// Wakes a ring's [`wait`](Ring::wait) from any thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Waker {
    wake: Arc<WakeFd>,
}

impl Waker {
    /// Makes the ring's current or next `wait` return promptly. Never blocks; wakes coalesce
    /// (only the first of a burst writes the eventfd).
    pub fn wake(&self) {
        if self.wake.state.try_own() {
            if let Err(e) = crate::sys::eventfd_write(self.wake.raw()) {
                tracing::error!(error = %e, "wake failed");
            }
        }
    }

    /// [`Ring::unregister_fd`] from any thread: call it before closing `fd`. The ring applies
    /// it before it next relies on a registration (and before it registers any fd), so a
    /// number reused after the close is never mistaken for the old file; it also wakes the
    /// ring, which applies it then (on io_uring the registration holds the file open).
    pub fn unregister_fd(&self, fd: RawFd) {
        self.wake
            .unregistered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fd);
        self.wake.has_unregistered.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether this waker wakes `ring`.
    pub fn wakes(&self, ring: &Ring) -> bool {
        Arc::ptr_eq(&self.wake, &ring.wake)
    }
}

/// Counters a ring keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ops handed to the blocking pool (epoll and aio backends; always 0 on uring).
    pub pool_jobs: u64,
    /// AIO requests the kernel accepted (aio backend only): polls, reads, writes, fsyncs, and
    /// the backend's own polls of its eventfds and epoll fd.
    pub aio_requests: u64,
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

/// One completion queue for every kind of I/O.
///
/// # Examples
/// ```
/// use oneloop::{Nop, Ring};
///
/// let mut ring = Ring::new()?;
/// let id = ring.submit(Nop, 7)?;
/// ring.wait(1, None)?;
/// let done = ring.next_completion().unwrap();
/// assert_eq!((done.id(), done.user_data()), (id, 7));
/// assert_eq!(done.result().as_ref().unwrap(), &0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Ring {
    driver: Driver,
    completions: VecDeque<Completion>,
    kind: BackendKind,
    skipped: Vec<Skipped>,
    wake: Arc<WakeFd>,
    _single_thread: PhantomData<*const ()>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("backend", &self.kind)
            .field("in_flight", &self.in_flight())
            .field("ready", &self.completions.len())
            .finish()
    }
}

impl Ring {
    /// A ring on the first usable backend, with default sizes.
    ///
    /// # Errors
    /// See [`RingBuilder::build`].
    pub fn new() -> io::Result<Ring> {
        Ring::builder().build()
    }

    /// Starts configuring a ring.
    pub fn builder() -> RingBuilder {
        RingBuilder::default()
    }

    fn assemble(
        driver: Driver,
        kind: BackendKind,
        skipped: Vec<Skipped>,
        wake: Arc<WakeFd>,
        config: &RingBuilder,
    ) -> Ring {
        let completions = VecDeque::with_capacity(config.in_flight_max.min(65_536) * 2);
        Ring {
            driver,
            completions,
            kind,
            skipped,
            wake,
            _single_thread: PhantomData,
        }
    }

    /// The backend this ring runs on.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// The backends `Auto` passed over before this one, with why.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// A line describing the backend and the kernel features in use.
    pub fn describe(&self) -> String {
        self.driver.describe()
    }

    /// Starts `op`; its completions will carry `user_data`.
    ///
    /// Nothing blocks: the op is queued and reaches the kernel at the next [`wait`](Self::wait)
    /// (or earlier, when the submission batch fills).
    ///
    /// # Errors
    /// `ResourceBusy` when `in_flight_max` ops are already in flight, `Unsupported` for an op
    /// this backend or kernel cannot run, `InvalidInput` for malformed ops; each gives the op
    /// back in the [`SubmitError`]. Kernel-side failures (a bad fd, say) are not submit errors:
    /// they arrive as the op's completion.
    pub fn submit(
        &mut self,
        op: impl Into<Submission>,
        user_data: u64,
    ) -> Result<OpId, SubmitError> {
        self.driver
            .submit(op.into(), user_data, &mut self.completions)
    }

    /// Asks for an op to end early; see [`CancelOutcome`] for what each answer promises.
    ///
    /// # Errors
    /// Only if the kernel refuses the cancel request itself (the ring is then broken).
    pub fn cancel(&mut self, id: OpId) -> io::Result<CancelOutcome> {
        match self.driver.cancel(id, &mut self.completions)? {
            // Finished, but its final completion is still waiting here to be taken.
            CancelOutcome::NotFound if self.completions.iter().any(|c| c.id == id && !c.more) => {
                Ok(CancelOutcome::TooLate)
            }
            outcome => Ok(outcome),
        }
    }

    /// Asks for an op to end early without waiting for the answer — for a caller that has
    /// given up on the op and needs only its buffers back. The op's final completion still
    /// comes (with `ECANCELED`, or its real result if the cancel came too late) and carries
    /// what it owned. On io_uring the cancel request rides in the next submission instead of
    /// a system call of its own; a `Timeout` ends at once on every backend. A later
    /// [`cancel`](Self::cancel) of the op answers `TooLate` (this request already decides its
    /// end). An unknown or finished id is ignored.
    ///
    /// # Errors
    /// Only if the ring is broken, or making room in the submission queue failed.
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Ring, Timeout};
    /// use std::time::Duration;
    ///
    /// let mut ring = Ring::new()?;
    /// let id = ring.submit(Timeout::after(Duration::from_secs(60)), 1)?;
    /// ring.cancel_nowait(id)?;
    /// ring.wait(1, None)?;
    /// assert!(ring.next_completion().unwrap().is_cancelled());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn cancel_nowait(&mut self, id: OpId) -> io::Result<()> {
        self.driver.cancel_nowait(id, &mut self.completions)
    }

    /// Takes op `id`'s final completion if it is the newest ready one, as it is right after a
    /// [`submit`](Self::submit) that finished the op at once (the epoll and aio backends
    /// finish many sends, receives, reads and writes inside `submit`). Lets a caller skip the
    /// queue for those; `None` otherwise.
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Nop, Ring};
    ///
    /// let mut ring = Ring::new()?;
    /// let id = ring.submit(Nop, 0)?;
    /// // On epoll and aio a Nop ends inside submit; on io_uring the kernel answers later.
    /// match ring.take_completion(id) {
    ///     Some(done) => assert_eq!(done.id(), id),
    ///     None => assert_eq!(ring.wait(1, None)?, 1),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_completion(&mut self, id: OpId) -> Option<Completion> {
        match self.completions.back() {
            Some(c) if c.id == id && !c.more => self.completions.pop_back(),
            _ => None,
        }
    }

    /// Tells the ring that `fd` — a socket, pipe or other pollable descriptor — stays open
    /// until [`unregister_fd`](Self::unregister_fd), so its readiness can be kept rather than
    /// looked up again for every op. On the epoll and aio backends the fd is registered once
    /// (edge-triggered) and a receive, send or accept that would block waits without an
    /// `epoll_ctl` — and without even trying when the last attempt in its direction saw
    /// `EAGAIN` and no event came since (regular files: nothing changes). On io_uring the fd
    /// goes into the ring's fixed-file table (where the kernel has one and a slot is free;
    /// [`describe`](Self::describe) says), and its ops skip the kernel's per-request file
    /// look-up; the table holds the file open until the fd is unregistered.
    ///
    /// **Unregister before closing.** Otherwise, if the number then names a new file, ops on
    /// it may wait for readiness that is never reported (epoll, aio) or reach the old file
    /// (io_uring). Unregistered fds have no such hazard.
    ///
    /// # Errors
    /// The kernel's refusal to watch `fd` (`EBADF`, say).
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Recv, Ring};
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let mut ring = Ring::new()?;
    /// let (a, mut b) = UnixStream::pair()?;
    /// ring.register_fd(a.as_raw_fd())?;
    /// ring.submit(Recv::new(a.as_raw_fd(), Vec::with_capacity(16)), 0)?;
    /// b.write_all(b"hi")?;
    /// ring.wait(1, None)?;
    /// assert_eq!(ring.next_completion().unwrap().result().as_ref().unwrap(), &2);
    /// ring.unregister_fd(a.as_raw_fd());
    /// drop(a);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register_fd(&mut self, fd: RawFd) -> io::Result<()> {
        self.driver.register_fd(fd)
    }

    /// Ends what [`register_fd`](Self::register_fd) promised: call it before closing `fd`.
    /// Ops still pending on `fd` go on as they would for any fd. Unknown fds are ignored.
    pub fn unregister_fd(&mut self, fd: RawFd) {
        self.driver.unregister_fd(fd);
    }

    /// Cancels every op in flight on `fd`, counting what each cancel achieved.
    ///
    /// # Errors
    /// As [`cancel`](Self::cancel).
    pub fn cancel_fd(&mut self, fd: RawFd) -> io::Result<CancelCount> {
        self.driver.cancel_where(Some(fd), &mut self.completions)
    }

    /// Cancels every op in flight.
    ///
    /// # Errors
    /// As [`cancel`](Self::cancel).
    pub fn cancel_all(&mut self) -> io::Result<CancelCount> {
        self.driver.cancel_where(None, &mut self.completions)
    }

    /// Sends queued ops to the kernel and waits until at least `min_complete` completions are
    /// ready, `timeout` passes, or a [`Waker`] fires; returns how many are ready.
    ///
    /// `min_complete == 0` only reaps what is there. `None` waits without a time limit. A
    /// signal (`EINTR`) does not end the wait: it continues to its deadline.
    ///
    /// # Errors
    /// Only if the ring is broken (the kernel refused to enter, or dropped a completion).
    pub fn wait(&mut self, min_complete: usize, timeout: Option<Duration>) -> io::Result<usize> {
        self.driver
            .wait(min_complete, timeout, &mut self.completions)?;
        Ok(self.completions.len())
    }

    /// Takes the oldest ready completion.
    pub fn next_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Takes every ready completion, oldest first.
    pub fn completions(&mut self) -> std::collections::vec_deque::Drain<'_, Completion> {
        self.completions.drain(..)
    }

    /// How many completions are ready to take.
    pub fn ready(&self) -> usize {
        self.completions.len()
    }

    /// How many ops are in flight (accepted, final completion not yet produced).
    pub fn in_flight(&self) -> usize {
        self.driver.in_flight()
    }

    /// Counters about this ring's work so far.
    pub fn stats(&self) -> Stats {
        self.driver.stats()
    }

    /// A handle that wakes this ring's `wait` from another thread.
    pub fn waker(&self) -> Waker {
        Waker {
            wake: Arc::clone(&self.wake),
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.driver.shutdown(&mut self.completions);
    }
}
