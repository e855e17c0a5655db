//! The `aio` backend: the readiness core (`backend/ready`) with a Linux AIO context
//! beneath it (`engine.rs`), waiting in `io_getevents`.
//!
//! Where it sits: [`Ring`](crate::Ring) → `backend::Driver::Aio` → `Ready<Aio>` → this →
//! `io_submit`/`io_getevents` — the 2006 seed's `IOCB_CMD_EPOLL_WAIT`, realised with today's
//! kernels: the core's epoll set is itself watched by one `IOCB_CMD_POLL`.
//!
//! * One-shot `Poll` and `EpollWait` are `IOCB_CMD_POLL`s (a cancelled poll's event has
//!   `res == 0`: reported as the cancel's result).
//! * `Read`/`Write`/`Readv`/`Writev` at an offset go to AIO with `RWF_NOWAIT`, because buffered
//!   AIO would block inside `io_submit`: a page-cache hit completes in the kernel at once; on
//!   `EAGAIN` an `O_DIRECT` file is submitted again without it, a buffered file goes to the
//!   blocking pool, and a pipe or socket waits for readiness.
//! * `Fsync` is `IOCB_CMD_FSYNC`/`FDSYNC`; where the filesystem refuses it (`EINVAL`), the pool
//!   does it.
//! * Multishot polls and socket readiness use the core's epoll set (edge-triggered, as on
//!   the epoll backend), whose fd is watched by one `IOCB_CMD_POLL`, re-armed after each event:
//!   no busy-spin on data nobody consumes.
//! * The wake and pool eventfds are watched by their own `IOCB_CMD_POLL`s.
//!
//! Which op becomes which request is each op's own (`op/`'s `AioPlan`).
#![deny(unsafe_code)]

mod engine;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::engine::{Cancel, Engine, Owner, RequestKey};
use super::ready::{Beneath, Ready, State};
use crate::common::{Settings, WakeFd};
use crate::completion::CancelOutcome;
use crate::op::plan::{AioNext, AioStart};
use crate::op::Op;
use crate::sink::Sink;
use crate::slab::Key;

const POLLIN: u32 = libc::POLLIN as u32;

/// How long a wait lasts at most while requests wait to be submitted (after `EAGAIN`).
const RESUBMIT_AFTER: Duration = Duration::from_millis(1);

/// How long opening the backend waits to see `IOCB_CMD_POLL` work.
const PROBE_TIME: Duration = Duration::from_secs(1);

/// What the aio backend has beneath the readiness core: the AIO context and the events
/// reaped from it, waiting to be handled.
pub(crate) struct Aio {
    /// `None` once closed (at the ring's drop).
    engine: Option<Engine>,
    events: Vec<(Owner, i64)>,
    nr_events: u32,
}

/// An op's AIO request, kept in its slot.
pub(crate) struct AioRequest {
    key: RequestKey,
    /// Whether it was submitted with `RWF_NOWAIT` (an `EAGAIN` then means "would block", not
    /// an error).
    nowait: bool,
    /// Set when a cancel or deadline has started cancelling it: the result to report when its
    /// event arrives.
    ended_by: Option<i32>,
    /// Set when its op was changed and the kernel is cancelling the old request: when that
    /// request's event arrives, the op is requested again instead of ending.
    restart: bool,
}

/// The AIO context's size: four events per submission-batch entry, at most the in-flight cap.
/// AIO events count against the system-wide `aio-max-nr`, so rings stay modest by default.
fn nr_events(config: &Settings) -> u32 {
    let wanted = (config.entries as usize).saturating_mul(4).max(64);
    wanted
        .min(config.in_flight_max.max(64))
        .min(u32::MAX as usize) as u32
}

impl Aio {
    /// Opens the aio backend: the readiness core, then the AIO context beneath it (see
    /// [`Aio::engine`]).
    pub fn open(config: &Settings, wake: Arc<WakeFd>) -> io::Result<Ready<Aio>> {
        let beneath = Aio {
            engine: None,
            events: Vec::with_capacity(256),
            nr_events: nr_events(config),
        };
        let mut ready = Ready::open(config, wake, beneath)?;
        let engine = Aio::engine(config, &ready.wake, &ready.pool_fd, &ready.epfd)?;
        ready.beneath.engine = Some(engine);
        Ok(ready)
    }

    /// Sets up the context, proves `IOCB_CMD_POLL` works (poll the wake eventfd, write it, get
    /// the event), then arms the polls of the wake eventfd, the pool eventfd and the epoll fd.
    fn engine(
        config: &Settings,
        wake: &Arc<WakeFd>,
        pool_fd: &Arc<OwnedFd>,
        epfd: &OwnedFd,
    ) -> io::Result<Engine> {
        let mut engine = Engine::open(nr_events(config), config.in_flight_max + 8)?;
        let mut events = Vec::with_capacity(4);
        engine.poll(Owner::Wake, wake.raw(), POLLIN)?;
        // A busy queue (EAGAIN) leaves the poll queued: retry for up to a second.
        let start = Instant::now();
        while engine.has_queued() && events.is_empty() && start.elapsed() < PROBE_TIME {
            engine.flush(&mut events)?;
        }
        if let Some((_, res)) = events.first() {
            let e = io::Error::from_raw_os_error(-*res as i32);
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("IOCB_CMD_POLL refused ({e}): kernel older than 4.19"),
            ));
        }
        crate::sys::eventfd_write(wake.raw())?;
        // An interrupted wait returns with nothing: wait again, up to a second in all.
        while !engine.has_queued() && events.is_empty() && start.elapsed() < PROBE_TIME {
            engine.reap(Some(Duration::from_millis(100)), &mut events)?;
        }
        if !events
            .iter()
            .any(|&(owner, res)| owner == Owner::Wake && res & i64::from(POLLIN) != 0)
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "IOCB_CMD_POLL gave no event for a written eventfd",
            ));
        }
        crate::sys::eventfd_reset(wake.raw())?;
        engine.poll(Owner::Wake, wake.raw(), POLLIN)?;
        engine.poll(Owner::Pool, pool_fd.as_raw_fd(), POLLIN)?;
        engine.poll(Owner::Epfd, epfd.as_raw_fd(), POLLIN)?;
        Ok(engine)
    }

    /// The open context (it is closed only at the ring's drop, after the last use).
    fn context(&mut self) -> &mut Engine {
        self.engine
            .as_mut()
            .expect("the AIO context is open until the drop")
    }
}

impl Beneath for Aio {
    type Request = AioRequest;
    const REQUESTS: bool = true;

    fn describe(ready: &Ready<Aio>) -> String {
        let reaped = match &ready.beneath.engine {
            Some(engine) if engine.reaps_in_user_space() => "from the mapped ring",
            _ => "with io_getevents",
        };
        format!(
            "aio (IOCB_CMD_POLL, {}-event context, completions reaped {reaped}, internal epoll for multishot polls and sockets, blocking pool of up to {} threads)",
            ready.beneath.nr_events,
            ready.pool_threads().0,
        )
    }

    fn requests(&self) -> u64 {
        self.engine.as_ref().map_or(0, |e| e.submitted)
    }

    fn start(ready: &mut Ready<Aio>, key: Key, out: &mut Sink) -> bool {
        ready.request(key, true, out)
    }

    fn end_early(ready: &mut Ready<Aio>, key: Key, res: i32, out: &mut Sink) -> CancelOutcome {
        ready.end_request_early(key, res, out)
    }

    fn restart(
        ready: &mut Ready<Aio>,
        key: Key,
        apply: &mut dyn FnMut(&mut Op) -> i32,
        out: &mut Sink,
    ) -> i32 {
        ready.restart_request(key, apply, out)
    }

    fn wait_once(
        ready: &mut Ready<Aio>,
        timeout: Option<Duration>,
        out: &mut Sink,
    ) -> io::Result<()> {
        ready.aio_once(timeout, out)
    }

    fn close(&mut self) {
        // io_destroy waits until the kernel is done with every request.
        drop(self.engine.take());
    }
}

impl Ready<Aio> {
    /// Makes slot `key`'s op an AIO request again; an op that is no longer one (a poll whose
    /// descriptor number now names a signalfd, say) takes the readiness path instead.
    fn request_again(&mut self, key: Key, nowait: bool, out: &mut Sink) {
        if !self.request(key, nowait, out) {
            // The core's own start: asked once more, the op says `Ready`, and readiness has it.
            self.start(key, None, out);
        }
    }

    /// Makes slot `key`'s op an AIO request (`nowait`: file I/O may carry `RWF_NOWAIT`);
    /// `false` if the op takes the readiness path.
    fn request(&mut self, key: Key, nowait: bool, out: &mut Sink) -> bool {
        let cx = self.ready_cx();
        let slot = self.slots.get_mut(key).expect("a live slot");
        let op = slot.op.as_mut().expect("an op not on the pool");
        let (iocb, iovecs, nowait) = match op.aio_start(&cx, nowait) {
            AioStart::Request {
                iocb,
                iovecs,
                nowait,
            } => (iocb, iovecs, nowait),
            AioStart::Ready => return false,
            AioStart::Done(res) => {
                self.complete(key, res, out);
                return true;
            }
        };
        match self.beneath.context().queue(Owner::Slot(key), iocb, iovecs) {
            Ok(request) => {
                slot.state = State::Request(AioRequest {
                    key: request,
                    nowait,
                    ended_by: None,
                    restart: false,
                });
            }
            Err(e) => self.complete(key, -e.raw_os_error().unwrap_or(libc::EBUSY), out),
        }
        true
    }

    /// Submits what is queued, collects events (waiting up to `timeout`), and handles them.
    fn aio_once(&mut self, timeout: Option<Duration>, out: &mut Sink) -> io::Result<()> {
        let aio = &mut self.beneath;
        let mut events = std::mem::take(&mut aio.events);
        let engine = aio.engine.as_mut().expect("the AIO context is open");
        let result = engine.flush(&mut events).and_then(|()| {
            let timeout = if !events.is_empty() {
                // A refused submission is an event already: do not block then.
                Some(Duration::ZERO)
            } else if engine.has_queued() {
                // io_submit said EAGAIN: requests wait their turn (the wake poll among them,
                // maybe), and nothing may be in flight to end the wait: retry soon.
                Some(timeout.map_or(RESUBMIT_AFTER, |t| t.min(RESUBMIT_AFTER)))
            } else {
                timeout
            };
            engine.reap(timeout, &mut events)
        });
        for (owner, res) in events.drain(..) {
            self.on_aio(owner, res, out);
        }
        self.beneath.events = events;
        result
    }

    fn on_aio(&mut self, owner: Owner, res: i64, out: &mut Sink) {
        let fd = match owner {
            Owner::Slot(key) => return self.on_request(key, res, out),
            Owner::Wake => {
                self.wake.absorb();
                self.woken = true;
                self.wake.raw()
            }
            Owner::Pool => {
                self.on_pool(out);
                self.pool_fd.as_raw_fd()
            }
            Owner::Epfd => {
                if let Err(e) = self.epoll_once(Some(Duration::ZERO), out) {
                    tracing::error!(error = %e, "epoll_wait on the internal set failed");
                }
                self.epfd.as_raw_fd()
            }
        };
        if res < 0 {
            tracing::error!(?owner, res, "an internal AIO poll failed");
        }
        if let Err(e) = self.beneath.context().poll(owner, fd, POLLIN) {
            tracing::error!(?owner, error = %e, "cannot re-arm an internal AIO poll");
        }
    }

    /// An op's AIO request has ended with `res`.
    fn on_request(&mut self, key: Key, res: i64, out: &mut Sink) {
        let Some(slot) = self.slots.get_mut(key) else {
            tracing::error!(?key, "AIO event for a finished op");
            return;
        };
        let State::Request(request) = std::mem::replace(&mut slot.state, State::Starting) else {
            tracing::error!(?key, "AIO event for an op without a request");
            return;
        };
        if let Some(ended_by) = request.ended_by {
            return self.complete(key, ended_by, out);
        }
        // The old request of a changed op, cancelled (a poll's cancel event has `res == 0`).
        if request.restart && res == 0 {
            self.request_again(key, true, out);
            return;
        }
        let res = res.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let nowait = request.nowait;
        let op = slot.op.as_mut().expect("an AIO op holds its op");
        match op.aio_event(res, nowait) {
            AioNext::Done(res) => self.complete(key, res, out),
            AioNext::Again { nowait } => self.request_again(key, nowait, out),
            AioNext::Arm(bits) => self.arm_fd(key, bits, false, out),
            AioNext::Pool => self.offload(key, out),
        }
    }

    /// Ends an op whose AIO request is queued or in flight.
    ///
    /// Once a cancel has answered, the op's end is decided: a later cancel (or deadline) finds
    /// `ended_by` set, or the request done, and answers `TooLate`.
    ///
    /// An `EpollWait` whose poll has already fired (`io_cancel` answers `EINVAL`) has not yet
    /// taken any event from its epoll set, so the cancel still wins: it ends `ECANCELED` when
    /// the poll's event arrives, without collecting events. Answering `TooLate` there would
    /// promise a result that may never come: if the set turned out empty by then, the op would
    /// poll again and wait on.
    fn end_request_early(&mut self, key: Key, res: i32, out: &mut Sink) -> CancelOutcome {
        let State::Request(request) = &self.slot(key).state else {
            unreachable!("ended here only with a request in flight")
        };
        if request.ended_by.is_some() {
            return CancelOutcome::TooLate;
        }
        // Its old request is being cancelled for a restart: end it instead when that event
        // comes.
        if request.restart {
            self.end_by(key, res);
            return CancelOutcome::Cancelled;
        }
        let request_key = request.key;
        match self.beneath.context().cancel(request_key) {
            Cancel::Dequeued => {
                self.slot(key).state = State::Starting;
                self.complete(key, res, out);
                CancelOutcome::Cancelled
            }
            Cancel::Started => {
                self.end_by(key, res);
                CancelOutcome::Cancelled
            }
            Cancel::TooLate if matches!(self.slot(key).op, Some(Op::EpollWait(_))) => {
                self.end_by(key, res);
                CancelOutcome::Cancelled
            }
            Cancel::TooLate => CancelOutcome::TooLate,
        }
    }

    /// Takes slot `key`'s request back so that `apply` may change its op, then makes it
    /// again: at once if it was still queued, else when the cancelled request's event comes.
    /// A request the kernel has finished (`io_cancel` too late) is left as it is: `-EALREADY`.
    fn restart_request(
        &mut self,
        key: Key,
        apply: &mut dyn FnMut(&mut Op) -> i32,
        out: &mut Sink,
    ) -> i32 {
        let State::Request(request) = &self.slot(key).state else {
            unreachable!("restarted only with a request in flight")
        };
        if request.ended_by.is_some() {
            return -libc::EALREADY;
        }
        // Already taken back by an earlier change: the request is made again from the op
        // when the old one's event comes, so this change simply joins it.
        if request.restart {
            return apply(self.slot(key).op.as_mut().expect("an AIO op holds its op"));
        }
        let request_key = request.key;
        let cancel = self.beneath.context().cancel(request_key);
        if cancel == Cancel::TooLate {
            return -libc::EALREADY;
        }
        // The old request will not complete the op now: change the op, then request it again
        // (a change it refuses leaves it as it was, requested again all the same).
        let res = apply(self.slot(key).op.as_mut().expect("an AIO op holds its op"));
        match cancel {
            Cancel::Dequeued => {
                self.slot(key).state = State::Starting;
                self.request_again(key, true, out);
            }
            _ => {
                if let State::Request(request) = &mut self.slot(key).state {
                    request.restart = true;
                }
            }
        }
        res
    }

    /// Records that slot `key`'s request ends with `res` when its event arrives.
    fn end_by(&mut self, key: Key, res: i32) {
        if let State::Request(request) = &mut self.slot(key).state {
            request.ended_by = Some(res);
        }
    }
}
