//! The aio backend's half of the driver: which ops become AIO requests, what their events
//! mean, and the `io_getevents` wait.
//!
//! * One-shot `Poll` and `EpollWait` are `IOCB_CMD_POLL`s (a cancelled poll's event has
//!   `res == 0`: reported as the cancel's result).
//! * `Read`/`Write`/`Readv`/`Writev` at an offset go to AIO with `RWF_NOWAIT`, because buffered
//!   AIO would block inside `io_submit`: a page-cache hit completes in the kernel at once; on
//!   `EAGAIN` an `O_DIRECT` file is submitted again without it, a buffered file goes to the
//!   blocking pool, and a pipe or socket waits for readiness.
//! * `Fsync` is `IOCB_CMD_FSYNC`/`FDSYNC`; where the filesystem refuses it (`EINVAL`), the pool
//!   does it.
//! * Multishot polls and socket readiness use the internal epoll set (edge-triggered, as on
//!   the epoll backend), whose fd is watched by one `IOCB_CMD_POLL`, re-armed after each event:
//!   no busy-spin on data nobody consumes.
//! * The wake and pool eventfds are watched by their own `IOCB_CMD_POLL`s.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Epoll, State};
use crate::backend::aio::{Cancel, Engine, Owner, RequestKey};
use crate::common::{Settings, WakeFd};
use crate::completion::{CancelOutcome, Completion};
use crate::op::plan::{AioNext, AioStart};
use crate::op::Op;
use crate::slab::Key;

const POLLIN: u32 = libc::POLLIN as u32;

/// How long a wait lasts at most while requests wait to be submitted (after `EAGAIN`).
const RESUBMIT_AFTER: Duration = Duration::from_millis(1);

/// How long opening the backend waits to see `IOCB_CMD_POLL` work.
const PROBE_TIME: Duration = Duration::from_secs(1);

/// The AIO context and the events reaped from it, waiting to be handled.
pub(super) struct Aio {
    engine: Engine,
    events: Vec<(Owner, i64)>,
    nr_events: u32,
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
    /// Sets up the context, proves `IOCB_CMD_POLL` works (poll the wake eventfd, write it, get
    /// the event), then arms the polls of the wake eventfd, the pool eventfd and the epoll fd.
    pub fn open(
        config: &Settings,
        wake: &Arc<WakeFd>,
        pool_fd: &Arc<OwnedFd>,
        epfd: &OwnedFd,
    ) -> io::Result<Aio> {
        let nr = nr_events(config);
        let mut engine = Engine::open(nr, config.in_flight_max + 8)?;
        let mut events = Vec::with_capacity(256);
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
        events.clear();
        engine.poll(Owner::Wake, wake.raw(), POLLIN)?;
        engine.poll(Owner::Pool, pool_fd.as_raw_fd(), POLLIN)?;
        engine.poll(Owner::Epfd, epfd.as_raw_fd(), POLLIN)?;
        Ok(Aio {
            engine,
            events,
            nr_events: nr,
        })
    }

    pub fn describe(&self, pool_threads: usize) -> String {
        format!(
            "aio (IOCB_CMD_POLL, {}-event context, completions reaped {}, internal epoll for multishot polls and sockets, blocking pool of up to {pool_threads} threads)",
            self.nr_events,
            if self.engine.reaps_in_user_space() { "from the mapped ring" } else { "with io_getevents" }
        )
    }

    pub fn submitted(&self) -> u64 {
        self.engine.submitted
    }
}

impl Epoll {
    fn aio(&mut self) -> &mut Aio {
        self.engine.as_mut().expect("the aio backend has an engine")
    }

    /// Makes slot `key`'s fresh op an AIO request if this backend does it that way;
    /// `false` sends it down the epoll path instead.
    pub(super) fn start_aio(&mut self, key: Key, out: &mut VecDeque<Completion>) -> bool {
        self.request(key, true, out)
    }

    /// Makes slot `key`'s op an AIO request (`nowait`: file I/O may carry `RWF_NOWAIT`);
    /// `false` if the op takes the readiness path.
    fn request(&mut self, key: Key, nowait: bool, out: &mut VecDeque<Completion>) -> bool {
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
        let engine = &mut self.engine.as_mut().expect("aio").engine;
        match engine.queue(Owner::Slot(key), iocb, iovecs) {
            Ok(request) => {
                slot.state = State::Iocb(request);
                slot.nowait = nowait;
            }
            Err(e) => self.complete(key, -e.raw_os_error().unwrap_or(libc::EBUSY), out),
        }
        true
    }

    /// Submits what is queued, collects events (waiting up to `timeout`), and handles them.
    pub(super) fn aio_once(
        &mut self,
        timeout: Option<Duration>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<()> {
        let aio = self.aio();
        let mut events = std::mem::take(&mut aio.events);
        let result = aio.engine.flush(&mut events).and_then(|()| {
            let timeout = if !events.is_empty() {
                // A refused submission is an event already: do not block then.
                Some(Duration::ZERO)
            } else if aio.engine.has_queued() {
                // io_submit said EAGAIN: requests wait their turn (the wake poll among them,
                // maybe), and nothing may be in flight to end the wait: retry soon.
                Some(timeout.map_or(RESUBMIT_AFTER, |t| t.min(RESUBMIT_AFTER)))
            } else {
                timeout
            };
            aio.engine.reap(timeout, &mut events)
        });
        for (owner, res) in events.drain(..) {
            self.on_aio(owner, res, out);
        }
        self.aio().events = events;
        result
    }

    fn on_aio(&mut self, owner: Owner, res: i64, out: &mut VecDeque<Completion>) {
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
        if let Err(e) = self.aio().engine.poll(owner, fd, POLLIN) {
            tracing::error!(?owner, error = %e, "cannot re-arm an internal AIO poll");
        }
    }

    /// An op's AIO request has ended with `res`.
    fn on_request(&mut self, key: Key, res: i64, out: &mut VecDeque<Completion>) {
        let Some(slot) = self.slots.get_mut(key) else {
            tracing::error!(?key, "AIO event for a finished op");
            return;
        };
        slot.state = State::Starting;
        if let Some(ended_by) = slot.ended_by {
            return self.complete(key, ended_by, out);
        }
        let res = res.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        let nowait = slot.nowait;
        let op = slot.op.as_mut().expect("an AIO op holds its op");
        match op.aio_event(res, nowait) {
            AioNext::Done(res) => self.complete(key, res, out),
            AioNext::Again { nowait } => {
                if !self.request(key, nowait, out) {
                    unreachable!("an AIO op stays one")
                }
            }
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
    pub(super) fn end_iocb_early(
        &mut self,
        key: Key,
        request: RequestKey,
        res: i32,
        out: &mut VecDeque<Completion>,
    ) -> CancelOutcome {
        if self.slot(key).ended_by.is_some() {
            return CancelOutcome::TooLate;
        }
        match self.aio().engine.cancel(request) {
            Cancel::Dequeued => {
                self.slot(key).state = State::Starting;
                self.complete(key, res, out);
                CancelOutcome::Cancelled
            }
            Cancel::Started => {
                self.slot(key).ended_by = Some(res);
                CancelOutcome::Cancelled
            }
            Cancel::TooLate if matches!(self.slot(key).op, Some(Op::EpollWait(_))) => {
                self.slot(key).ended_by = Some(res);
                CancelOutcome::Cancelled
            }
            Cancel::TooLate => CancelOutcome::TooLate,
        }
    }
}
