//! The [`Ring`]: submit any op, cancel it, wait, and drain one queue of completions.
//!
//! A ring belongs to the thread that built it (`!Send`): io_uring's `SINGLE_ISSUER` and
//! `DEFER_TASKRUN` need one submitter, and thread-per-core is the model. Other threads reach it
//! through its [`Waker`].
//!
//! The contract every backend keeps (each point is a conformance case):
//! 1. exactly one final completion per accepted submission (multishot: `MORE`s, then one);
//! 2. the ring owns what an op names until that final completion, and hands buffers back there;
//!    a multishot op's `MORE` completions carry what each result produced (a
//!    [`Lease`](crate::Lease) on a buffer-ring buffer, an accepted socket), which is the
//!    caller's from then on;
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
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task;
use std::time::Duration;

use crate::backend::{self, Driver};
use crate::common::{BackendKind, Settings, Stats, SubmitError, WakeFd};
use crate::completion::{CancelCount, CancelOutcome, Completion};
use crate::op::Submission;
use crate::op::{OpId, Output};
use crate::sink::{slot_of, Sink};

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
    backend: BackendKind,
    settings: Settings,
    excluded: Vec<BackendKind>,
}

impl Default for RingBuilder {
    fn default() -> Self {
        RingBuilder {
            backend: BackendKind::Auto,
            settings: Settings::default(),
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
        self.settings.entries = entries.max(1);
        self
    }

    /// The kernel completion queue size (io_uring CQ entries; default twice `entries`). A small
    /// queue loses nothing: completions past it wait in the kernel until reaped.
    pub fn cq_entries(mut self, cq_entries: u32) -> Self {
        self.settings.cq_entries = Some(cq_entries.max(1));
        self
    }

    /// The most ops in flight at once (default 16,384; at most 16,777,216). `submit` beyond it
    /// fails with `ErrorKind::ResourceBusy` and gives the op back.
    pub fn in_flight_max(mut self, in_flight_max: usize) -> Self {
        self.settings.in_flight_max = in_flight_max.clamp(1, crate::slab::CAPACITY_MAX);
        self
    }

    /// Always runs `EpollWait` as a poll on the epoll fd plus `epoll_wait(.., 0)`, even where the
    /// kernel has a native op. For tests of that path; costs one more syscall per wait.
    pub fn emulate_epoll_wait(mut self, emulate: bool) -> Self {
        self.settings.emulate_epoll_wait = emulate;
        self
    }

    /// On io_uring, runs [`RecvMulti`](crate::RecvMulti), [`ReadMulti`](crate::ReadMulti) and
    /// [`AcceptMulti`](crate::AcceptMulti) as the other backends do — a poll of the fd, then
    /// rounds of non-blocking attempts in user space into buffers taken from the
    /// [`BufRing`](crate::BufRing) there — instead of the kernel's multishot requests and a
    /// registered buffer ring. The same completions either way. A kernel without them (before
    /// 6.7's `READ_MULTISHOT`) gets this path by itself; the switch makes it run on any
    /// kernel, for tests and for comparison ([`Ring::kernel_multishot`] says which runs).
    pub fn emulate_multishot(mut self, emulate: bool) -> Self {
        self.settings.emulate_multishot = emulate;
        self
    }

    /// On io_uring, registers [`BufRing`](crate::BufRing)s for incremental consumption
    /// (`IOU_PBUF_RING_INC`, Linux 6.12; default on): a receive takes from a buffer only the
    /// bytes it fills, and the next receive fills the rest, so a 16 KiB buffer can hold many
    /// small messages and a large one still arrives in one lease. Leases are then pieces of
    /// buffers ([`Lease::offset`](crate::buf_ring::Lease::offset)); a buffer returns when
    /// every piece is dropped. Off, or on a kernel without it, each receive takes a whole
    /// buffer. The other backends always take whole buffers. [`Ring::describe`] says which.
    pub fn incremental_buffers(mut self, incremental: bool) -> Self {
        self.settings.incremental_buffers = incremental;
        self
    }

    /// On io_uring, lets a [`RecvMulti`](crate::RecvMulti) fill several buffers in one go
    /// when more bytes wait than one buffer holds (`IORING_RECVSEND_BUNDLE`, Linux 6.10;
    /// default **off**): one receive in the kernel, one completion per buffer here — the same
    /// completions as without, fewer trips through the socket. Off, or on a kernel without
    /// it, each receive fills one buffer. [`Ring::describe`] says which.
    ///
    /// Off by default because one bundle takes as many buffers as bytes wait in the socket —
    /// up to the whole ring — before [`Ring::bound_unread`] can stop it: a connection that is
    /// not read, with megabytes queued, leaves the others `ENOBUFS` (measured: oneloop-rt's
    /// unread-stream test ran the ring dry every round with bundles on). Turn it on where
    /// each `BufRing` serves one consumer that reads as fast as it receives.
    pub fn recv_bundles(mut self, bundles: bool) -> Self {
        self.settings.recv_bundles = bundles;
        self
    }

    /// On io_uring with `IORING_FEAT_MIN_TIMEOUT` (Linux 6.12), makes a [`wait`](Ring::wait)
    /// that blocks a batched one: the kernel waits up to `min_wait` for `min_complete`
    /// completions, then returns as soon as it has one — fewer wake-ups under load, at the
    /// cost of up to `min_wait` of latency for a completion that comes alone (a wake from
    /// another thread included; timers still fire on time). Off by default. Elsewhere (the
    /// other backends, an older kernel) waits are as without it; [`Ring::describe`] says
    /// whether it runs.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let ring = oneloop::Ring::builder()
    ///     .batch_wait(16, Duration::from_micros(50))
    ///     .build()?;
    /// println!("{}", ring.describe());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn batch_wait(mut self, min_complete: u32, min_wait: std::time::Duration) -> Self {
        self.settings.batch_wait = Some((min_complete, min_wait));
        self
    }

    /// On io_uring (Linux 5.18+), registers the ring's own descriptor with the thread that
    /// builds it (`IORING_REGISTER_RING_FDS`, default **on**) and enters the kernel through
    /// that: each `io_uring_enter` skips looking the descriptor up in the process's file
    /// table (and, in a process with threads, counting a reference on it). A thread holds at
    /// most 16; a ring past that, or on an older kernel, enters through its descriptor, as
    /// with this off. [`Ring::describe`] says which. The other backends ignore it.
    pub fn register_ring_fd(mut self, register: bool) -> Self {
        self.settings.register_ring_fd = register;
        self
    }

    /// Gives the ring a pool of `count` buffers of `size` bytes each ([`Ring::fixed_buffers`];
    /// none by default), registered with io_uring so that a [`Read`](crate::Read) or
    /// [`Write`](crate::Write) into one of them is a `READ_FIXED`/`WRITE_FIXED`: the kernel
    /// maps the pages once, not on every op. Each buffer starts on a 4 KiB boundary. Where the
    /// kernel refuses the registration (over `RLIMIT_MEMLOCK`, say) and on the other backends
    /// the pool's buffers work as ordinary memory; [`FixedBufPool::registered`] says why.
    /// See [`crate::fixed_buf`] for an example.
    ///
    /// [`build`](Self::build) fails with `InvalidInput` for a count of 0 or over 16,384 or a
    /// size of 0 or over 1 GiB (io_uring's limits).
    ///
    /// [`FixedBufPool::registered`]: crate::FixedBufPool::registered
    pub fn fixed_buffers(mut self, count: usize, size: usize) -> Self {
        self.settings.fixed_buffers = Some((count, size));
        self
    }

    /// The most threads the blocking pool may run (default 4; epoll and aio backends only).
    /// Threads start on demand: a ring that never needs the pool starts none.
    pub fn pool_threads(mut self, threads: usize) -> Self {
        self.settings.pool_threads = threads.max(1);
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
        let wake = Arc::new(WakeFd::new()?);
        let config = &self.settings;
        let fixed = config
            .fixed_buffers
            .map(|(count, size)| crate::sys::fixed::Region::new(count, size))
            .transpose()?;
        if requested != BackendKind::Auto {
            let driver = backend::open(requested, config, &wake)?;
            return Ok(Ring::assemble(
                driver,
                requested,
                Vec::new(),
                wake,
                config,
                fixed,
            ));
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
            match backend::open(kind, config, &wake) {
                Ok(driver) => {
                    return Ok(Ring::assemble(driver, kind, skipped, wake, config, fixed))
                }
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

/// Wakes a ring's [`wait`](Ring::wait) from any thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Waker {
    wake: Arc<WakeFd>,
}

impl Waker {
    /// Makes the ring's current or next `wait` return promptly. Never blocks; wakes coalesce
    /// (only the first of a burst writes the eventfd).
    pub fn wake(&self) {
        self.wake.wake();
    }

    /// [`Ring::unregister_fd`] from any thread: call it before closing `fd`. The ring applies
    /// it before it next relies on a registration or registers any fd, so a number reused
    /// after the close is never mistaken for the old file. It also wakes the ring, whose next
    /// `wait` applies it on io_uring (where the registration holds the file open until then).
    pub fn unregister_fd(&self, fd: RawFd) {
        self.wake.post_unregistered(fd);
        self.wake.wake();
    }

    /// [`Ring::abandon`] from any thread: for an owner that gave up on op `id` on another
    /// thread than the ring's (a socket moved there and dropped, say). The ring applies it at
    /// its next [`wait`](Ring::wait), which this wakes: until then the op runs on (on io_uring
    /// a poll holds its file open).
    pub fn abandon(&self, id: OpId) {
        self.wake.post_abandoned(id);
        self.wake.wake();
    }

    /// Hands op `id` over to `to`, from any thread: the ring asks the op to end
    /// ([`Ring::cancel_nowait`]) and puts its completions into `to` — those waiting in the ring
    /// and those still to come, up to the final one, in order — at its next
    /// [`wait`](Ring::wait), which this wakes. For a consumer that moved to another thread
    /// while its op ran (a socket moved there and read there): nothing the op produced is lost.
    /// If the ring is gone, or `id` unknown, `to` is closed (it yields nothing more).
    pub fn hand_over(&self, id: OpId, to: Arc<crate::Handover>) {
        self.wake.post_handed(id, to);
        self.wake.wake();
    }

    /// Whether this waker wakes `ring`.
    pub fn wakes(&self, ring: &Ring) -> bool {
        Arc::ptr_eq(&self.wake, &ring.wake)
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
    /// The counters the ring keeps itself (the backend adds its own in `stats`).
    counts: Stats,
    /// The queue of completions, and the claimed ops' own (see `sink.rs`).
    sink: Sink,
    kind: BackendKind,
    skipped: Vec<Skipped>,
    wake: Arc<WakeFd>,
    /// This ring among every ring the process made (buffer rings are checked against it).
    serial: u64,
    /// Buffer rings made so far (the next one's id).
    buf_rings: u16,
    /// The pool of registered buffers (`RingBuilder::fixed_buffers`).
    fixed: Option<crate::FixedBufPool>,
    _single_thread: PhantomData<*const ()>,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("backend", &self.kind)
            .field("in_flight", &self.in_flight())
            .field("ready", &self.sink.queue.len())
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
        config: &Settings,
        fixed: Option<Arc<crate::sys::fixed::Region>>,
    ) -> Ring {
        let mut driver = driver;
        let fixed = fixed.map(|region| {
            let registered = driver.register_fixed(&region);
            crate::FixedBufPool::new(region, registered)
        });
        // A tag for each ring the process makes, never 0 (see `OpId`).
        static NEXT_TAG: AtomicU8 = AtomicU8::new(0);
        static NEXT_SERIAL: AtomicU64 = AtomicU64::new(0);
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed) % 127 + 1;
        Ring {
            driver,
            counts: Stats::default(),
            sink: Sink::new(config.in_flight_max.min(65_536) * 2, tag),
            kind,
            skipped,
            wake,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            buf_rings: 0,
            fixed,
            _single_thread: PhantomData,
        }
    }

    /// A group of `count` buffers of `size` bytes each that multishot receives
    /// ([`RecvMulti`](crate::RecvMulti), [`ReadMulti`](crate::ReadMulti)) pick from when data
    /// arrives (see [`buf_ring`](crate::buf_ring)). It stays registered for the ring's life.
    ///
    /// # Errors
    /// `InvalidInput`: `count` is not a power of two from 1 to 32,768, `size` is 0 or above
    /// 2 GiB, or this ring already has 65,536 buffer rings. On io_uring, what
    /// `IORING_REGISTER_PBUF_RING` says (a kernel before 5.19: `EINVAL`).
    ///
    /// # Examples
    /// ```
    /// let mut ring = oneloop::Ring::new()?;
    /// let bufs = ring.buf_ring(64, 16 * 1024)?;
    /// assert_eq!((bufs.count(), bufs.size()), (64, 16 * 1024));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn buf_ring(&mut self, count: u32, size: u32) -> io::Result<crate::BufRing> {
        let bgid = self.buf_rings;
        let next = bgid.checked_add(1).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "a ring holds at most 65,535 buffer rings",
            )
        })?;
        let pool = self.driver.buf_ring(count, size, self.serial, bgid)?;
        self.buf_rings = next;
        Ok(crate::BufRing { pool })
    }

    /// Whether multishot ops run in the kernel: `true` on io_uring with multishot receive,
    /// read and accept and provided-buffer rings (6.7 and later), unless
    /// [`RingBuilder::emulate_multishot`] said otherwise; `false` where they are emulated (the
    /// other backends, or an older kernel).
    pub fn kernel_multishot(&self) -> bool {
        self.driver.kernel_multishot()
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
        match &self.fixed {
            Some(pool) => format!("{}; {}", self.driver.describe(), pool.describe()),
            None => self.driver.describe(),
        }
    }

    /// The ring's pool of registered buffers, if [`RingBuilder::fixed_buffers`] asked for one.
    pub fn fixed_buffers(&self) -> Option<&crate::FixedBufPool> {
        self.fixed.as_ref()
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
        let sub = op.into();
        if let Some(pool) = sub.op.buf_pool() {
            if pool.owner != self.serial {
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the op's buffer ring belongs to another ring",
                );
                return Err(SubmitError::new(e, sub.op));
            }
        }
        let kind = sub.op_kind();
        let submitted = self.driver.submit(sub, user_data, &mut self.sink);
        self.settle();
        let id = submitted?;
        self.counts.submitted[kind] += 1;
        Ok(self.sink.tag(id.0))
    }

    /// Releases the slots whose final completions the sink dropped on arrival.
    #[inline]
    fn settle(&mut self) {
        if !self.sink.released.is_empty() {
            self.release_dropped();
        }
        if !self.sink.over.is_empty() {
            self.cancel_over();
        }
    }

    /// Asks the ops past their bound of unread completions to end (see
    /// [`bound_unread`](Self::bound_unread)).
    #[cold]
    fn cancel_over(&mut self) {
        let mut over = std::mem::take(&mut self.sink.over);
        for id in over.drain(..) {
            if let Some(local) = self.sink.untag(id) {
                if let Err(e) = self.driver.cancel_nowait(local, &mut self.sink) {
                    tracing::error!(error = %e, ?id, "cannot cancel an op past its bound");
                }
            }
        }
        if self.sink.over.is_empty() {
            self.sink.over = over;
        }
    }

    /// Bounds how many `MORE` completions of claimed multishot op `id` (see
    /// [`set_waker`](Self::set_waker)) may wait untaken: when `max` wait, the ring asks the op to
    /// end ([`cancel_nowait`](Self::cancel_nowait)) as soon as it settles — a burst that was
    /// under way may add a few more (io_uring posts what one wake-up of the kernel received;
    /// the emulation's round, up to 16). Its final completion (`ECANCELED`, or its own end if
    /// that came first) follows what it produced before. A consumer that stops taking
    /// thus stops the op from taking more — a [`RecvMulti`](crate::RecvMulti) that would drain
    /// its buffer ring for one connection nobody reads, say; the consumer submits it again when
    /// it reads. `max` 0 removes the bound; unknown, finished or foreign ids are ignored.
    ///
    /// # Examples
    /// ```
    /// use oneloop::{RecvMulti, Ring};
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use std::task::Waker;
    ///
    /// let mut ring = Ring::new()?;
    /// let bufs = ring.buf_ring(16, 8)?;
    /// let (a, mut b) = UnixStream::pair()?;
    /// let id = ring.submit(RecvMulti::new(a.as_raw_fd(), &bufs), 0)?;
    /// ring.set_waker(id, Waker::noop());
    /// ring.bound_unread(id, 2);
    /// b.write_all(&[7; 64])?; // eight buffers' worth
    /// let mut got = Vec::new();
    /// while got.last().is_none_or(|c: &oneloop::Completion| c.is_more()) {
    ///     ring.wait(1, Some(std::time::Duration::from_millis(10)))?;
    ///     while let Some(c) = ring.take(id) {
    ///         got.push(c);
    ///     }
    /// }
    /// // Ended by its bound (nobody cancelled it), after at most what one burst produced.
    /// assert!(got.last().unwrap().is_cancelled());
    /// assert!(got.len() <= 9);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn bound_unread(&mut self, id: OpId, max: u16) {
        let Some(local) = self.sink.untag(id) else {
            return;
        };
        let driver = &self.driver;
        self.sink.bound(id, max, || driver.is_live(local));
    }

    #[cold]
    fn release_dropped(&mut self) {
        // The list keeps its capacity: abandoning ops allocates nothing in steady state.
        let mut released = std::mem::take(&mut self.sink.released);
        for id in released.drain(..) {
            self.release(id);
        }
        self.sink.released = released;
    }

    /// Frees the slot of a final completion that leaves the ring now.
    #[inline]
    fn leaving(&mut self, c: &Completion) {
        if !c.more {
            self.release(c.id);
        }
    }

    /// Frees the retired slot of op `id` (an op that finished inside `submit` has none).
    #[inline]
    fn release(&mut self, id: OpId) {
        if let Some(slot) = slot_of(id) {
            self.driver.release(slot);
        }
    }

    /// Asks for an op to end early; see [`CancelOutcome`] for what each answer promises.
    ///
    /// # Errors
    /// Only if the kernel refuses the cancel request itself (the ring is then broken).
    pub fn cancel(&mut self, id: OpId) -> io::Result<CancelOutcome> {
        self.counts.cancels += 1;
        let Some(local) = self.sink.untag(id) else {
            return Ok(CancelOutcome::NotFound);
        };
        let outcome = self.driver.cancel(local, &mut self.sink);
        self.settle();
        match outcome? {
            // Finished, but its final completion is still waiting here to be taken.
            CancelOutcome::NotFound if self.final_ready(id) => Ok(CancelOutcome::TooLate),
            outcome => Ok(outcome),
        }
    }

    /// Whether op `id`'s final completion is waiting in the ring, not yet taken.
    pub(crate) fn final_ready(&self, id: OpId) -> bool {
        self.sink.untag(id).is_some() && self.sink.final_of(id).is_some()
    }

    /// Submits `op` and waits for its final completion, which it returns; every other
    /// completion that arrives meanwhile stays in the ring for the caller. For a request
    /// answered at once (a poll update, say) or a short one-shot op; a
    /// multishot op's `MORE` completions stay in the ring too.
    ///
    /// # Errors
    /// The op's refusal (as [`submit`](Self::submit)), or a broken ring (as
    /// [`wait`](Self::wait)). The op's own result is the completion's.
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Nop, Ring};
    ///
    /// let mut ring = Ring::new()?;
    /// let done = ring.call(Nop)?;
    /// assert_eq!(done.result().as_ref().unwrap(), &0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn call(&mut self, op: impl Into<Submission>) -> io::Result<Completion> {
        let id = self.submit(op, 0)?;
        loop {
            let at = self.sink.queue.iter().rposition(|c| c.id == id && !c.more);
            if let Some(done) = at.and_then(|at| self.sink.queue.remove(at)) {
                self.leaving(&done);
                return Ok(done);
            }
            self.wait(self.sink.queue.len() + 1, None)?;
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
        self.counts.cancels += 1;
        let Some(local) = self.sink.untag(id) else {
            return Ok(());
        };
        let cancelled = self.driver.cancel_nowait(local, &mut self.sink);
        self.settle();
        cancelled
    }

    /// Claims op `id`: its final completion (and a multishot op's `MORE`s) will stay in the
    /// ring for [`take`](Self::take) instead of joining the queue, and `waker` is woken when
    /// one arrives — or at once, if one already has. Call it again to replace the waker.
    /// Unknown, finished or foreign ids are ignored.
    ///
    /// This is how an executor waits for an op with no table of its own: one record per op,
    /// the ring's slot, from submission until the completion is taken.
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Ring, Timeout};
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use std::task::{Wake, Waker};
    /// use std::time::Duration;
    ///
    /// struct Flag(AtomicBool);
    /// impl Wake for Flag {
    ///     fn wake(self: Arc<Self>) {
    ///         self.0.store(true, Ordering::Relaxed);
    ///     }
    /// }
    ///
    /// let mut ring = Ring::new()?;
    /// let id = ring.submit(Timeout::after(Duration::from_millis(1)), 0)?;
    /// let flag = Arc::new(Flag(AtomicBool::new(false)));
    /// ring.set_waker(id, &Waker::from(Arc::clone(&flag)));
    /// while ring.take(id).is_none() {
    ///     ring.wait(1, None)?;
    /// }
    /// assert!(flag.0.load(Ordering::Relaxed));
    /// assert_eq!(ring.ready(), 0, "the completion never joined the queue");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_waker(&mut self, id: OpId, waker: &task::Waker) {
        let Some(local) = self.sink.untag(id) else {
            return;
        };
        let driver = &self.driver;
        self.sink.set_waker(id, waker, || driver.is_live(local));
    }

    /// Claims multishot op `id` as [`set_waker`](Self::set_waker) does, except that its `MORE`
    /// completions *fold*: those that arrive before the next [`take`](Self::take) are taken as
    /// one, whose result is the union of theirs — for a multishot [`Poll`](crate::Poll), every
    /// event since the last take. The final completion is taken on its own after them. Memory
    /// stays constant however often the op fires while nobody takes: the way to watch a
    /// socket's readiness for as long as it is open (an executor's read side does). The waker
    /// stays registered when it is woken and when events are taken: after a
    /// [`poll_take`](Self::poll_take) that took events, the caller is parked for the next ones
    /// already (nothing can arrive before the ring next reaps completions: in a `wait`, or a
    /// `submit` or `cancel` that must make room).
    /// Unknown, finished or foreign ids are ignored; an op already claimed by `set_waker`
    /// stays unfolded.
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Poll, PollMask, Ring};
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use std::task::Waker;
    ///
    /// let mut ring = Ring::new()?;
    /// let (reader, mut writer) = std::io::pipe()?;
    /// let id = ring.submit(Poll::new(reader.as_raw_fd(), PollMask::IN).multishot(), 0)?;
    /// ring.watch(id, Waker::noop());
    /// writer.write_all(b"a")?;
    /// ring.wait(1, None)?;
    /// writer.write_all(b"b")?;
    /// ring.wait(0, None)?;
    /// let fired = ring.take(id).expect("it fired");
    /// assert!(fired.is_more());
    /// assert!(fired.result().as_ref().unwrap() & PollMask::IN.bits() != 0);
    /// assert!(ring.take(id).is_none(), "one completion for both events");
    /// ring.cancel(id)?;
    /// let end = loop {
    ///     match ring.take(id) {
    ///         Some(end) => break end,
    ///         None => ring.wait(1, None)?,
    ///     };
    /// };
    /// assert!(end.is_cancelled());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn watch(&mut self, id: OpId, waker: &task::Waker) {
        let Some(local) = self.sink.untag(id) else {
            return;
        };
        let driver = &self.driver;
        self.sink.watch(id, waker, || driver.is_live(local));
    }

    /// Takes claimed op `id`'s next completion (see [`set_waker`](Self::set_waker)): its final
    /// one, or a multishot op's oldest; `None` if nothing has arrived (or `id` is not claimed).
    /// O(1).
    #[inline]
    pub fn take(&mut self, id: OpId) -> Option<Completion> {
        let c = self.sink.take(id)?;
        self.leaving(&c);
        Some(c)
    }

    /// Takes claimed op `id`'s next completion as [`take`](Self::take) does, or — if none has
    /// arrived — leaves `waker` to be woken when one does, as [`set_waker`](Self::set_waker)
    /// does (claiming `id` if it was not yet): both in one look-up, as an executor's future
    /// needs at each poll. A claim made by [`watch`](Self::watch) keeps folding. An unknown,
    /// finished or foreign id stays `Pending` (nothing will wake `waker` for it).
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Ring, Timeout};
    /// use std::task::{Poll, Waker};
    /// use std::time::Duration;
    ///
    /// let mut ring = Ring::new()?;
    /// let id = ring.submit(Timeout::after(Duration::from_millis(1)), 0)?;
    /// let done = loop {
    ///     match ring.poll_take(id, Waker::noop()) {
    ///         Poll::Ready(done) => break done,
    ///         Poll::Pending => ring.wait(1, None)?,
    ///     };
    /// };
    /// assert!(done.is_timed_out());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn poll_take(&mut self, id: OpId, waker: &task::Waker) -> task::Poll<Completion> {
        // A watch's events, the hottest case, are made into a completion here, where the
        // caller can see it carries nothing to drop.
        if let Some(polled) = self.sink.poll_watch(id, waker) {
            return polled.map(|(events, user_data)| Completion {
                id,
                user_data,
                result: Ok(events),
                more: true,
                output: Output::None,
            });
        }
        self.poll_take_claimed(id, waker)
    }

    fn poll_take_claimed(&mut self, id: OpId, waker: &task::Waker) -> task::Poll<Completion> {
        let Some(local) = self.sink.untag(id) else {
            return task::Poll::Pending;
        };
        let driver = &self.driver;
        match self.sink.poll_take(id, waker, || driver.is_live(local)) {
            Some(c) => {
                self.leaving(&c);
                task::Poll::Ready(c)
            }
            None => task::Poll::Pending,
        }
    }

    /// Hands op `id` over to `to` on this thread: see [`Waker::hand_over`], which does it from
    /// any thread. The op is asked to end; its completions, waiting and to come, go to `to`.
    ///
    /// # Errors
    /// As [`cancel_nowait`](Self::cancel_nowait).
    ///
    /// # Examples
    /// ```
    /// use oneloop::{Handover, Ring, Timeout};
    /// use std::task::{Context, Poll, Waker};
    /// use std::time::Duration;
    ///
    /// let mut ring = Ring::new()?;
    /// let id = ring.submit(Timeout::after(Duration::from_secs(60)), 0)?;
    /// let to = Handover::new();
    /// ring.hand_over(id, to.clone())?;
    /// ring.wait(0, None)?;
    /// let mut cx = Context::from_waker(Waker::noop());
    /// let Poll::Ready(Some(end)) = to.poll_next(&mut cx) else { panic!("handed over") };
    /// assert!(end.is_cancelled());
    /// assert!(matches!(to.poll_next(&mut cx), Poll::Ready(None)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn hand_over(&mut self, id: OpId, to: Arc<crate::Handover>) -> io::Result<()> {
        let Some(local) = self.sink.untag(id) else {
            to.close();
            return Ok(());
        };
        let driver = &self.driver;
        match self.sink.hand_over(id, to, || driver.is_live(local)) {
            Some(true) => {
                self.release(local);
                Ok(())
            }
            Some(false) => self.cancel_nowait(id),
            None => Ok(()),
        }
    }

    /// Gives up on op `id`: what arrived for it is dropped now (buffers freed, descriptors
    /// closed), and its final completion, if still to come, is dropped on arrival — after a
    /// [`cancel_nowait`](Self::cancel_nowait), which this makes. For a future dropped before
    /// its op ended. Unknown, finished or foreign ids are ignored.
    ///
    /// Once it returns, the caller may close a socket or pipe the op names (a future's socket
    /// dropped with it, say): on io_uring a request still queued for the kernel names a
    /// descriptor by its number, and would act on whatever file that number names when it is
    /// submitted — so an abandoned op that names one has the queue submitted first (a system
    /// call, only when requests are queued); a job on the blocking pool (epoll, aio: a file
    /// read or write that would block) works on a duplicate of the op's descriptor. Not
    /// covered: the directory a raw `OpenAt::new` names, and [`Waker::abandon`] from another
    /// thread, which takes effect at the ring's next `wait` only.
    ///
    /// # Errors
    /// As [`cancel_nowait`](Self::cancel_nowait).
    pub fn abandon(&mut self, id: OpId) -> io::Result<()> {
        let Some(local) = self.sink.untag(id) else {
            return Ok(());
        };
        let driver = &self.driver;
        match self.sink.abandon(id, || driver.is_live(local)) {
            Some(true) => {
                self.release(local);
                Ok(())
            }
            Some(false) => {
                let names_fd = self.driver.names_fd(local);
                self.cancel_nowait(id)?;
                if names_fd {
                    self.driver.submit_queued(&mut self.sink)?;
                    self.settle();
                }
                Ok(())
            }
            None => Ok(()),
        }
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
        match self.sink.queue.back() {
            Some(c) if c.id == id && !c.more => {
                let c = self.sink.queue.pop_back()?;
                self.leaving(&c);
                Some(c)
            }
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
        let count = self.driver.cancel_where(Some(fd), &mut self.sink);
        self.settle();
        let count = count?;
        self.counts.cancels += (count.cancelled + count.too_late) as u64;
        Ok(count)
    }

    /// Cancels every op in flight.
    ///
    /// # Errors
    /// As [`cancel`](Self::cancel).
    pub fn cancel_all(&mut self) -> io::Result<CancelCount> {
        let count = self.driver.cancel_where(None, &mut self.sink);
        self.settle();
        let count = count?;
        self.counts.cancels += (count.cancelled + count.too_late) as u64;
        Ok(count)
    }

    /// Sends queued ops to the kernel and waits until at least `min_complete` completions are
    /// ready, `timeout` passes, or a [`Waker`] fires; returns how many are ready (queued, plus
    /// those this wait handed to claimed ops, see [`set_waker`](Self::set_waker)).
    ///
    /// `min_complete == 0` only reaps what is there. `None` waits without a time limit. A
    /// signal (`EINTR`) does not end the wait: it continues to its deadline.
    ///
    /// # Errors
    /// Only if the ring is broken (the kernel refused to enter, or dropped a completion).
    pub fn wait(&mut self, min_complete: usize, timeout: Option<Duration>) -> io::Result<usize> {
        self.apply_posted_abandons()?;
        self.sink.reset_delivered();
        let waited = self.driver.wait(min_complete, timeout, &mut self.sink);
        self.settle();
        waited?;
        Ok(self.sink.len())
    }

    /// Abandons the ops other threads gave up on through a [`Waker`] (see
    /// [`Waker::abandon`]).
    #[inline]
    fn apply_posted_abandons(&mut self) -> io::Result<()> {
        if !self.wake.abandoned_posted() {
            return Ok(());
        }
        for id in self.wake.take_abandoned() {
            self.abandon(id)?;
        }
        for (id, to) in self.wake.take_handed(false) {
            self.hand_over(id, to)?;
        }
        Ok(())
    }

    /// Takes the oldest ready completion.
    pub fn next_completion(&mut self) -> Option<Completion> {
        let c = self.sink.queue.pop_front()?;
        self.leaving(&c);
        Some(c)
    }

    /// Takes every ready completion, oldest first. Those the iterator has not yielded when it
    /// is dropped are dropped with it (their buffers freed, descriptors closed).
    pub fn completions(&mut self) -> Completions<'_> {
        // Each leaves as the iterator passes it, or is dropped with it: either way, now.
        let finals = self.sink.queue.iter().filter(|c| !c.more);
        self.driver
            .release_all(finals.filter_map(|c| slot_of(c.id)));
        Completions {
            queue: &mut self.sink.queue,
        }
    }

    /// How many completions are ready to take from the queue.
    pub fn ready(&self) -> usize {
        self.sink.queue.len()
    }

    /// How many ops are in flight (accepted, final completion not yet produced).
    pub fn in_flight(&self) -> usize {
        self.driver.in_flight()
    }

    /// Counters about this ring's work so far.
    pub fn stats(&self) -> Stats {
        let mut stats = self.driver.stats();
        stats.submitted = self.counts.submitted;
        stats.cancels = self.counts.cancels;
        stats
    }

    /// A handle that wakes this ring's `wait` from another thread.
    pub fn waker(&self) -> Waker {
        Waker {
            wake: Arc::clone(&self.wake),
        }
    }
}

/// Every completion that was ready, oldest first: what [`Ring::completions`] returns.
#[derive(Debug)]
pub struct Completions<'a> {
    queue: &'a mut VecDeque<Completion>,
}

impl Iterator for Completions<'_> {
    type Item = Completion;

    #[inline]
    fn next(&mut self) -> Option<Completion> {
        self.queue.pop_front()
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.queue.len(), Some(self.queue.len()))
    }
}

impl DoubleEndedIterator for Completions<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Completion> {
        self.queue.pop_back()
    }
}

impl ExactSizeIterator for Completions<'_> {}

impl std::iter::FusedIterator for Completions<'_> {}

impl Drop for Completions<'_> {
    #[inline]
    fn drop(&mut self) {
        // The ring released their slots when the iterator was made.
        if !self.queue.is_empty() {
            self.queue.clear();
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Hand-overs posted before the drop are applied (their ops end with the rest).
        for (id, to) in self.wake.take_handed(false) {
            let _ = self.hand_over(id, to);
        }
        self.driver.shutdown(&mut self.sink);
        // Posted since, or from now on: their ops are gone.
        for (_, to) in self.wake.take_handed(true) {
            to.close();
        }
        self.sink.close_forwarded();
    }
}
