//! The readiness core the `epoll` and `aio` backends share: op slots, the fd registry with
//! its readiness cache, the timer heap, the blocking-pool bridge, cancels and the wait loop.
//!
//! Where it sits: [`Ring`](crate::Ring) → `backend::Driver::{Epoll, Aio}` → [`Ready<B>`] →
//! non-blocking syscalls, an epoll set, the [pool](crate::pool) — and beneath it `B`, the
//! backend's own mechanism ([`Beneath`]): nothing more for epoll (it waits in
//! `epoll_pwait2`), an AIO context for aio (it waits in `io_getevents`, and some ops are AIO
//! requests).
//!
//! * Each op decides at submission what it does first (`op/`'s `ReadyPlan`): done now (a
//!   page-cache read with `RWF_NOWAIT`, a `Close`, a `Nop`), wait for readiness (a
//!   registration in `fds.rs`), a timer (`timers.rs`), a pool job — or, on aio, an AIO
//!   request. Completions produced at submission are queued at once.
//! * A slot lives from `submit` to its final completion; while a pool job runs, the job owns
//!   the op (and its buffers) and the slot keeps the job.
//! * Cancel is user-space and synchronous: a waiter or timer is removed and ends `ECANCELED`;
//!   a pool job that has not started is reclaimed; one that is running reports `TooLate` and
//!   its real result arrives; a request beneath is `B`'s to end.
//! * A deadline is a timer that cancels its op internally; the op then ends `TimedOut`.
#![deny(unsafe_code)]

mod cancel;
mod events;
pub(crate) mod fds;
mod inflight;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::fds::{Fds, Waiter};
pub(crate) use self::inflight::complete;
use self::inflight::Blocking;
use super::by_fd::ByFd;
use super::timers::{Fire, Timers};
use crate::common::{Settings, Stats, SubmitError, WakeFd};
use crate::completion::{CancelOutcome, Completion};
use crate::op::plan::{Next, ReadyCx};
use crate::op::OpId;
use crate::op::{Op, Submission};
use crate::pool::{Job, Pool};
use crate::sink::Sink;
use crate::slab::{Key, Slab};
use crate::sys::posix as sio;

/// The top bit marks the id of an op that finished at submission and never took a slot
/// (slot ids use the low 56 bits; the ring's tag the 7 bits between).
pub(super) const INLINE_ID: u64 = crate::sink::INLINE;

/// The `epoll_event.data` of the wake eventfd and of the pool's eventfd (epoll backend).
pub(crate) const DATA_WAKE: u64 = 1;
pub(crate) const DATA_POOL: u64 = 2;

/// The mechanism beneath the readiness core: what the epoll and aio backends do differently.
pub(crate) trait Beneath: Sized {
    /// An op's request in this mechanism, kept in its slot while it is in flight.
    type Request;
    /// Whether ops may become requests here (then file I/O at an offset is not tried inline).
    const REQUESTS: bool;
    /// A line for `Ring::describe`.
    fn describe(ready: &Ready<Self>) -> String;
    /// Requests accepted by the kernel so far (`Stats::aio_requests`).
    fn requests(&self) -> u64;
    /// Makes slot `key`'s fresh op a request beneath; `false`: the readiness path does it.
    fn start(ready: &mut Ready<Self>, key: Key, out: &mut Sink) -> bool;
    /// Ends slot `key`, whose request is beneath, early with `res`.
    fn end_early(ready: &mut Ready<Self>, key: Key, res: i32, out: &mut Sink) -> CancelOutcome;
    /// Slot `key`'s op has a request beneath, and another op changes it (see
    /// `OpBase::apply`): takes the request back — or answers `-EALREADY`, changing nothing,
    /// if it has ended — then `apply`s the change and makes the request again as the op now
    /// is (at once, or when the old request's event comes). `apply`'s answer, or `-EALREADY`.
    fn restart(
        ready: &mut Ready<Self>,
        key: Key,
        apply: &mut dyn FnMut(&mut Op) -> i32,
        out: &mut Sink,
    ) -> i32;
    /// Waits up to `timeout` for events and dispatches them. `EINTR` is a normal return.
    fn wait_once(
        ready: &mut Ready<Self>,
        timeout: Option<Duration>,
        out: &mut Sink,
    ) -> io::Result<()>;
    /// Lets go of every request (the kernel is done with their memory when this returns).
    fn close(&mut self);
}

/// Where an op is while in flight.
pub(crate) enum State<R> {
    /// Being decided at submission (or a spent timer).
    Starting,
    /// Waiting for readiness on `fd`.
    Fd(RawFd),
    /// A `Timeout` op's timer.
    Timer,
    /// On the blocking pool; the job owns the op.
    Pool(Arc<Job<Blocking>>),
    /// A request beneath (aio: an AIO request); the slot keeps the op, whose memory the
    /// request names, until the request's event arrives.
    Request(R),
}

/// One op in flight on a readiness backend.
pub(crate) struct ReadySlot<R> {
    /// The op; `None` while a pool job holds it.
    pub op: Option<Op>,
    user_data: u64,
    /// The descriptor the op works on (for `cancel_fd`), kept while the pool holds the op.
    fd: Option<RawFd>,
    pub state: State<R>,
    /// The op's deadline is armed (in `timers`).
    deadline: bool,
    /// A cancel answered `TooLate`: the op's end is decided, even if it moves on (an AIO
    /// request that would block goes to the pool, where it could be cancelled again).
    too_late: bool,
    /// The op's pool job only prepares a later step (`ReadyPlan::pool_is_final` is false).
    pool_prepares: bool,
    /// A cancel or deadline that came while such a job ran: the result the op ends with when
    /// the job returns.
    ended_by: Option<i32>,
}

impl<R> ReadySlot<R> {
    fn new(op: Op, user_data: u64, state: State<R>) -> ReadySlot<R> {
        ReadySlot {
            fd: op.fd(),
            op: Some(op),
            user_data,
            state,
            deadline: false,
            too_late: false,
            pool_prepares: false,
            ended_by: None,
        }
    }

    /// Whether the slot's timer of kind `fire` is armed.
    fn has_timer(&self, fire: Fire) -> bool {
        match fire {
            Fire::Timeout => matches!(self.state, State::Timer),
            Fire::Deadline => self.deadline,
        }
    }
}

/// The readiness core, with `B` beneath.
pub(crate) struct Ready<B: Beneath> {
    /// The core's epoll set: every readiness wait (and, on epoll, the wake and pool eventfds).
    pub epfd: OwnedFd,
    pub slots: Slab<ReadySlot<B::Request>>,
    fds: Fds,
    timers: Timers,
    pool: Pool<Blocking>,
    pub pool_fd: Arc<OwnedFd>,
    pub wake: Arc<WakeFd>,
    pub woken: bool,
    events: Vec<libc::epoll_event>,
    done_jobs: Vec<Arc<Job<Blocking>>>,
    stats: Stats,
    /// The mechanism beneath.
    pub beneath: B,
    /// Ops finished at submission so far (their ids count up from here).
    inline_ops: u64,
    /// Scratch list for `cancel_where`, kept to reuse.
    cancel_scratch: Vec<Key>,
    /// The live slots of each descriptor, for `cancel_where`.
    by_fd: ByFd,
    /// Multishot ops whose round the cap cut short (see `multi_round`).
    multi_pending: Vec<Key>,
}

pub(super) use crate::op::plan::MULTI_ROUND;

impl<B: Beneath> Ready<B> {
    /// The core with `beneath` under it: an epoll set, the pool and its eventfd.
    pub fn open(config: &Settings, wake: Arc<WakeFd>, beneath: B) -> io::Result<Ready<B>> {
        let epfd = crate::sys::epoll_create()?;
        let pool_fd = Arc::new(crate::sys::eventfd()?);
        let notify_fd = Arc::clone(&pool_fd);
        let notify = Box::new(move || {
            if let Err(e) = crate::sys::eventfd_write(notify_fd.as_raw_fd()) {
                tracing::error!(error = %e, "pool notify failed");
            }
        });
        Ok(Ready {
            epfd,
            slots: Slab::with_capacity(config.in_flight_max),
            fds: Fds::default(),
            timers: Timers::new(config.in_flight_max.min(65_536)),
            pool: Pool::new(config.pool_threads, notify, sio::block_signals),
            pool_fd,
            wake,
            woken: false,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            done_jobs: Vec::with_capacity(64),
            stats: Stats::default(),
            beneath,
            inline_ops: 0,
            cancel_scratch: Vec::with_capacity(64),
            by_fd: ByFd::default(),
            multi_pending: Vec::new(),
        })
    }

    /// The blocking pool's size, for `describe`.
    pub fn pool_threads(&self) -> (usize, usize) {
        (self.pool.threads_max(), self.pool.threads())
    }

    pub fn describe(&self) -> String {
        B::describe(self)
    }

    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Whether op `id` is accepted and its final completion not yet made.
    pub fn is_live(&self, id: OpId) -> bool {
        self.slots.get(Key::unpack(id.0)).is_some()
    }

    /// Frees the retired slot of op `id`, whose final completion was taken.
    pub fn release(&mut self, id: OpId) {
        self.slots.release(Key::unpack(id.0));
    }

    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.aio_requests = self.beneath.requests();
        stats
    }

    pub fn submit(
        &mut self,
        sub: Submission,
        user_data: u64,
        out: &mut Sink,
    ) -> Result<OpId, SubmitError> {
        let Submission { mut op, deadline } = sub;
        // The cap holds for every op, including those that would finish at once.
        if self.slots.is_full() {
            return Err(SubmitError::full(self.slots.capacity(), op));
        }
        // A timer with no deadline of its own: its slot and its heap entry, nothing to try.
        if let (Op::Timeout(t), None) = (&op, &deadline) {
            let at = t.when.instant(Instant::now());
            return match self
                .slots
                .insert(ReadySlot::new(op, user_data, State::Timer))
            {
                Ok(key) => {
                    self.timers.arm(at, key, Fire::Timeout);
                    Ok(OpId(key.pack()))
                }
                Err(slot) => Err(SubmitError::full(
                    self.slots.capacity(),
                    slot.op.expect("not yet started"),
                )),
            };
        }
        // Ops that may finish right here are tried first; finished, they never take a slot.
        // On a pinned fd whose cache says "not ready", a receive or send waits without trying.
        // An op that changes another is done here too.
        let first = match (op.target(), self.known_blocked(&op)) {
            (Some(target), _) => Some(Next::Done(self.apply_to(target, &mut op, out))),
            (None, Some(interest)) => Some(Next::Wait(interest)),
            (None, None) => self.try_inline(&mut op),
        };
        let first = first.map(|next| self.note_short(next));
        if let Some(Next::Done(res)) = first {
            self.inline_ops += 1;
            let id = OpId(INLINE_ID | (self.inline_ops & ((1 << 56) - 1)));
            out.push_back(Completion::last(id, user_data, complete(op, res)));
            return Ok(id);
        }
        // The clock is read only for ops that need it (a timer, a deadline).
        let now = (deadline.is_some() || matches!(op, Op::Timeout(_))).then(Instant::now);
        let slot = ReadySlot::new(op, user_data, State::Starting);
        let fd = slot.fd;
        let key = match self.slots.insert(slot) {
            Ok(key) => key,
            Err(slot) => {
                let op = slot.op.expect("not yet started");
                return Err(SubmitError::full(self.slots.capacity(), op));
            }
        };
        self.by_fd.add(fd, key);
        if let Some(d) = deadline {
            self.timers.arm(
                d.instant(now.unwrap_or_else(Instant::now)),
                key,
                Fire::Deadline,
            );
            self.slot(key).deadline = true;
        }
        match first {
            Some(next) => self.follow(key, next, out),
            None => self.start(key, now, out),
        }
        Ok(OpId(key.pack()))
    }

    /// Lets `op` change its live `target` and re-arms the target as it now is: `0`, or
    /// `-ENOENT` (no such op in flight), `-EALREADY` (its end is decided), what `apply` said.
    fn apply_to(&mut self, target: OpId, op: &mut Op, out: &mut Sink) -> i32 {
        let key = Key::unpack(target.0);
        let slot = match self.slots.get_mut(key) {
            Some(slot) if target.0 & INLINE_ID == 0 => slot,
            _ => return -libc::ENOENT,
        };
        // Decided, or on the pool (where only the job holds the op).
        if slot.too_late || slot.op.is_none() {
            return -libc::EALREADY;
        }
        // A request beneath is taken back first: if it is too late for that, the target is
        // left as it was.
        if let State::Request(_) = slot.state {
            return B::restart(self, key, &mut |target| op.apply(target), out);
        }
        let res = op.apply(slot.op.as_mut().expect("checked"));
        if res != 0 {
            return res;
        }
        if let State::Fd(fd) = slot.state {
            // Registered again with what it now waits for, which reports the fd's current
            // readiness: a target now ready completes at once.
            self.fds.remove(fd, key);
            let cx = self.ready_cx();
            let next = self.slot(key).op.as_mut().expect("checked");
            let next = next.ready_first(&cx);
            self.follow(key, next, out);
        }
        0
    }

    /// The direction `op` would wait for if its fd is pinned and known not ready for it.
    fn known_blocked(&mut self, op: &Op) -> Option<u32> {
        let (fd, interest) = op.ready_direction()?;
        self.apply_unregistered();
        self.fds.known_blocked(fd, interest).then_some(interest)
    }

    /// Applies unregistrations posted through a `Waker` before a registration is trusted.
    fn apply_unregistered(&mut self) {
        let fds = &mut self.fds;
        self.wake.take_unregistered(|fd| fds.unpin(fd));
    }

    /// Records a short receive or send in the readiness cache (see `fds.rs`); it is `Done`.
    fn note_short(&mut self, next: Next) -> Next {
        match next {
            Next::Short { res, fd, direction } => {
                self.fds.short_transfer(fd, direction);
                Next::Done(res)
            }
            Next::Done(_) | Next::Wait(_) | Next::Arm(_) | Next::Pool | Next::Timer(_) => next,
        }
    }

    /// Pins `fd` (see `fds.rs`): one registration until `unregister_fd`, no re-registration
    /// per wait.
    pub fn register_fd(&mut self, fd: RawFd) -> io::Result<()> {
        self.apply_unregistered();
        self.fds.pin(&self.epfd, fd)
    }

    /// Ends `fd`'s pinning before it is closed.
    pub fn unregister_fd(&mut self, fd: RawFd) {
        self.fds.unpin(fd);
    }

    /// The first non-blocking attempt for ops that often finish at once (`None`: not such an
    /// op here). On aio, file I/O at an offset is an AIO request instead.
    fn try_inline(&mut self, op: &mut Op) -> Option<Next> {
        let cx = self.ready_cx();
        op.ready_inline(B::REQUESTS).then(|| op.ready_first(&cx))
    }

    /// What an op's first decision may use.
    pub fn ready_cx(&self) -> ReadyCx {
        ReadyCx {
            own_epfd: Some(self.epfd.as_raw_fd()),
            probe: self.wake.raw(),
        }
    }

    pub fn slot(&mut self, key: Key) -> &mut ReadySlot<B::Request> {
        self.slots.get_mut(key).expect("a live slot")
    }

    /// Decides what slot `key`'s fresh op does first, and does it.
    pub(super) fn start(&mut self, key: Key, now: Option<Instant>, out: &mut Sink) {
        if B::REQUESTS && B::start(self, key, out) {
            return;
        }
        let cx = self.ready_cx();
        let op = self.slot(key).op.as_mut().expect("a fresh op");
        let next = match op.ready_first(&cx) {
            Next::Timer(when) => {
                let at = when.instant(now.unwrap_or_else(Instant::now));
                self.timers.arm(at, key, Fire::Timeout);
                self.slot(key).state = State::Timer;
                return;
            }
            next => next,
        };
        self.follow(key, next, out);
    }

    /// Acts on a decision for slot `key`.
    pub(super) fn follow(&mut self, key: Key, next: Next, out: &mut Sink) {
        match self.note_short(next) {
            Next::Done(res) | Next::Short { res, .. } => self.complete(key, res, out),
            Next::Wait(interest) => self.arm_fd(key, interest, true, out),
            Next::Arm(interest) => self.arm_fd(key, interest, false, out),
            Next::Pool => self.offload(key, out),
            Next::Timer(_) => unreachable!("a timer is armed at the start"),
        }
    }

    /// Makes slot `key` wait for `interest` on its fd; `after_eagain` if its own attempt just
    /// saw `EAGAIN` (then a registered fd needs no re-registration to report what comes next).
    pub fn arm_fd(&mut self, key: Key, interest: u32, after_eagain: bool, out: &mut Sink) {
        self.apply_unregistered();
        let slot = self.slots.get_mut(key).expect("a live slot");
        let op = slot.op.as_ref().expect("op present");
        let fd = op.fd().expect("readiness ops have an fd");
        let is_poll = matches!(op, Op::Poll(_));
        let waiter = Waiter { key, interest };
        // Polls and EpollWaits made no attempt, and some attempts could not say: only a
        // (re-)registration reports the fd's current readiness then.
        let registered = if !after_eagain || is_poll || matches!(op, Op::EpollWait(_)) {
            self.fds.add(&self.epfd, fd, waiter)
        } else {
            self.fds.add_blocked(&self.epfd, fd, waiter)
        };
        match registered {
            Ok(()) => slot.state = State::Fd(fd),
            // epoll refuses regular files and directories: they are always ready.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && is_poll => {
                let ready = interest & (libc::EPOLLIN | libc::EPOLLOUT) as u32;
                let res = if ready == 0 {
                    -libc::EINVAL
                } else {
                    ready as i32
                };
                self.complete(key, res, out);
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                self.complete(key, -libc::EINVAL, out)
            }
            Err(e) => self.complete(key, -e.raw_os_error().unwrap_or(libc::EIO), out),
        }
    }

    pub fn offload(&mut self, key: Key, out: &mut Sink) {
        let slot = self.slot(key);
        let op = slot.op.take().expect("op present");
        slot.pool_prepares = !op.pool_is_final();
        let work = Blocking::new(key, op);
        match self.pool.submit(work) {
            Ok(job) => {
                self.stats.pool_jobs += 1;
                self.slot(key).state = State::Pool(job);
            }
            Err((e, work)) => {
                tracing::error!(error = %e, "cannot start a pool thread");
                self.slot(key).op = Some(work.into_op());
                self.complete(key, -e.raw_os_error().unwrap_or(libc::EAGAIN), out);
            }
        }
    }

    /// Ends slot `key` with `res`: retires it (the ring releases it when the completion is
    /// taken), disarms its timers and waiter, hands back its op's output.
    pub fn complete(&mut self, key: Key, res: i32, out: &mut Sink) {
        // What the rest needs is taken out in place; the slot's remains are dropped there.
        let taken = self.slots.retire_if(key, |slot| {
            let timers =
                usize::from(slot.deadline) + usize::from(matches!(slot.state, State::Timer));
            let waiting_on = match slot.state {
                State::Fd(fd) => Some(fd),
                _ => None,
            };
            let op = slot.op.take().expect("completing a slot that holds its op");
            Some((op, slot.fd, slot.user_data, timers, waiting_on))
        });
        let Some((op, fd, user_data, timers, waiting_on)) = taken else {
            return;
        };
        self.by_fd.remove(fd, key);
        self.forget(key, timers, waiting_on);
        // Every caller passes what this slot's op did, or an errno (see `inflight.rs`).
        out.push_back(Completion::last(
            OpId(key.pack()),
            user_data,
            complete(op, res),
        ));
    }

    /// Drops what refers to a removed slot: its `timers` armed (lazily) and its waiter on the
    /// descriptor it was `waiting_on`.
    fn forget(&mut self, key: Key, timers: usize, waiting_on: Option<RawFd>) {
        for _ in 0..timers {
            let slots = &self.slots;
            self.timers
                .disarm(|k, fire| slots.get(k).is_some_and(|s| s.has_timer(fire)));
        }
        if let Some(fd) = waiting_on {
            self.fds.remove(fd, key);
        }
    }

    pub fn wait(
        &mut self,
        min_complete: usize,
        timeout: Option<Duration>,
        out: &mut Sink,
    ) -> io::Result<()> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // The clock is read only while a timer is armed.
            let now = self.timers.next_due().map(|_| Instant::now());
            if let Some(now) = now {
                self.fire_timers(now, out);
            }
            if !self.multi_pending.is_empty() {
                self.run_multi_pending(out);
            }
            if out.len() >= min_complete || self.woken {
                break;
            }
            let now = now.unwrap_or_else(Instant::now);
            let mut limit = deadline.map(|d| d.saturating_duration_since(now));
            if limit == Some(Duration::ZERO) {
                break;
            }
            if let Some(due) = self.timers.next_due() {
                let until = due.saturating_duration_since(now);
                limit = Some(limit.map_or(until, |l| l.min(until)));
            }
            // Rounds still to go on: look at the fds without blocking, then go on with them.
            if !self.multi_pending.is_empty() {
                limit = Some(Duration::ZERO);
            }
            B::wait_once(self, limit, out)?;
        }
        self.woken = false;
        if min_complete == 0 {
            B::wait_once(self, Some(Duration::ZERO), out)?;
            if self.timers.next_due().is_some() {
                self.fire_timers(Instant::now(), out);
            }
        }
        Ok(())
    }

    /// Drop: cancel everything; give running pool jobs a moment; then stop the pool.
    ///
    /// A pool job still running after [`DROP_GRACE`] (an `openat2` blocked on a FIFO, a slow
    /// `fsync`) is left to its worker, which keeps the op's buffers alive until the call
    /// returns and then frees them (and closes any descriptor it produced): nothing the kernel
    /// may still write is freed, and the drop does not hang.
    pub fn shutdown(&mut self, out: &mut Sink) {
        let _ = self.cancel_where(None, out);
        let start = Instant::now();
        while !self.slots.is_empty() && start.elapsed() < DROP_GRACE {
            // One more than is queued already: the cancels' completions are in `out`, and a
            // wait for fewer would return at once without looking for the pool's results.
            if self
                .wait(out.len() + 1, Some(Duration::from_millis(10)), out)
                .is_err()
            {
                break;
            }
        }
        // What is beneath goes first: the AIO context's io_destroy waits until the kernel is
        // done with every request, so no memory a request names is freed before that.
        self.beneath.close();
        if self.slots.is_empty() {
            self.pool.shutdown();
        } else {
            tracing::warn!(
                running = self.slots.len(),
                "pool jobs still running at drop: left to their workers"
            );
            self.pool.detach();
        }
    }
}

/// How long dropping a ring waits for pool jobs that are already running.
const DROP_GRACE: Duration = Duration::from_secs(1);
