//! The AIO engine behind the `aio` backend: Linux AIO requests (`IOCB_CMD_POLL`, reads,
//! writes, fsyncs) submitted in batches and reaped from one `io_getevents` loop.
//!
//! Where it sits: the `aio` driver (`aio/mod.rs`) is the readiness core (`backend/ready`:
//! slots, timers, the blocking pool, an epoll set for multishot polls and socket readiness)
//! with this engine underneath: one-shot polls, `EpollWait`, file I/O and the wake and pool
//! eventfds are AIO requests (each op's own, from `op/`'s `AioPlan`), the core's epoll fd is
//! itself watched by one `IOCB_CMD_POLL`, and the thread blocks in `io_getevents` — the 2006
//! seed's `IOCB_CMD_EPOLL_WAIT`, realised with today's kernels.
//!
//! The quirks hidden here:
//! * `io_submit` may accept only a prefix: the rest is submitted again; `EAGAIN` (no free
//!   event slots) leaves the rest queued until completions are reaped; an error on the first
//!   iocb fails that request alone.
//! * `io_cancel` success is `-EINPROGRESS` and the event still arrives (a cancelled poll with
//!   `res == 0`); `-EINVAL` means not cancellable (file I/O) or already completed.
//! * Completions are read from the ring the kernel maps into user space when its layout is
//!   the known one (no system call when events are there), else with `io_getevents`.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use crate::fault::{self, Fault};
use crate::slab::{Key, Slab};

/// The engine's request table (its keys are not op-slot keys).
pub(crate) enum Requests {}

/// A key of the engine's request table.
pub(crate) type RequestKey = Key<Requests>;
use crate::sys::aio::{self, AioContext, IoEvent, Iocb, UserRing};

/// Who an AIO request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// An op's slot in the driver.
    Slot(Key),
    /// The wake eventfd's poll.
    Wake,
    /// The pool eventfd's poll.
    Pool,
    /// The internal epoll fd's poll.
    Epfd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Built, waiting to be submitted.
    Queued,
    /// Accepted by the kernel.
    Submitted,
}

struct Request {
    iocb: Iocb,
    /// The iovec array of a vectored request (read by the kernel at submission).
    iovecs: Vec<libc::iovec>,
    owner: Owner,
    phase: Phase,
}

/// What a cancel achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// Never submitted: removed; no event will come.
    Dequeued,
    /// The kernel is cancelling it; its event will come (`res == 0` for a poll).
    Started,
    /// Not cancellable or already completed: its real event will come (or has come).
    TooLate,
}

/// An AIO context and the requests in it.
pub(crate) struct Engine {
    ctx: AioContext,
    ring: Option<UserRing>,
    /// # Invariant
    /// A request stays here (its `Iocb` at a fixed address) from `prep` until its event is
    /// reaped or it is dequeued before submission.
    requests: Slab<Request, Requests>,
    queued: VecDeque<RequestKey>,
    batch: Vec<*mut Iocb>,
    events: Vec<IoEvent>,
    /// Requests accepted by `io_submit` so far.
    pub submitted: u64,
}

impl Engine {
    /// A context with room for `nr_events` completions; `requests_max` bounds what may be
    /// queued or in flight.
    pub fn open(nr_events: u32, requests_max: usize) -> io::Result<Engine> {
        let setup = if fault::hit(Fault::SetupFails) {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        } else {
            aio::io_setup(nr_events)
        };
        let ctx = setup
            .map_err(|e| io::Error::new(e.kind(), aio::describe_setup_error(&e, nr_events)))?;
        Ok(Engine {
            ctx,
            ring: inflight::user_ring(ctx),
            requests: Slab::with_capacity(requests_max),
            queued: VecDeque::new(),
            batch: Vec::with_capacity(256),
            events: Vec::with_capacity(256),
            submitted: 0,
        })
    }

    /// Whether requests are waiting to be submitted.
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Whether completions are read from the mapped ring (no system call when present).
    pub fn reaps_in_user_space(&self) -> bool {
        self.ring.is_some()
    }

    /// Queues `iocb` for `owner` (an op's request, as the op made it: `op/`'s `AioPlan`);
    /// `iovecs`, for a vectored request, are kept with it until its event.
    pub fn queue(
        &mut self,
        owner: Owner,
        iocb: Iocb,
        iovecs: Vec<libc::iovec>,
    ) -> io::Result<RequestKey> {
        let request = Request {
            iocb,
            iovecs,
            owner,
            phase: Phase::Queued,
        };
        let key = self.requests.insert(request).map_err(|_| {
            io::Error::new(
                io::ErrorKind::ResourceBusy,
                "too many AIO requests in flight",
            )
        })?;
        let request = self.requests.get_mut(key).expect("just inserted");
        request.iocb.aio_data = key.pack();
        if !request.iovecs.is_empty() {
            request.iocb.aio_buf = request.iovecs.as_ptr() as u64;
            request.iocb.aio_nbytes = request.iovecs.len() as u64;
        }
        self.queued.push_back(key);
        Ok(key)
    }

    /// Queues `IOCB_CMD_POLL` of `fd` for `events` (poll bits): the backend's own polls.
    pub fn poll(&mut self, owner: Owner, fd: i32, events: u32) -> io::Result<RequestKey> {
        let iocb = Iocb {
            aio_lio_opcode: aio::IOCB_CMD_POLL,
            aio_fildes: fd as u32,
            aio_buf: u64::from(events),
            ..Iocb::default()
        };
        self.queue(owner, iocb, Vec::new())
    }

    /// Submits queued requests. Stops early (leaving the rest queued) when the kernel has no
    /// free event slots; a request the kernel refuses outright comes back in `failed` with its
    /// error, as if it had completed.
    pub fn flush(&mut self, failed: &mut Vec<(Owner, i64)>) -> io::Result<()> {
        while !self.queued.is_empty() {
            self.batch.clear();
            for &key in self.queued.iter().take(self.batch.capacity()) {
                let request = self
                    .requests
                    .get_mut(key)
                    .expect("queued requests are live");
                self.batch.push(std::ptr::addr_of_mut!(request.iocb));
            }
            match self.submit_batch() {
                Ok(n) => {
                    for _ in 0..n {
                        let key = self.queued.pop_front().expect("submitted from the queue");
                        self.requests.get_mut(key).expect("live").phase = Phase::Submitted;
                    }
                    self.submitted += n as u64;
                    if n == 0 {
                        return Ok(());
                    }
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {
                    return Ok(())
                }
                Err(e) => {
                    // The first request is refused; the rest were not looked at.
                    let key = self.queued.pop_front().expect("non-empty");
                    let request = self.requests.remove(key).expect("live");
                    failed.push((
                        request.owner,
                        -i64::from(e.raw_os_error().unwrap_or(libc::EIO)),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `io_submit` of the batch (or, injected, of a prefix of it, or refused with `EAGAIN`).
    fn submit_batch(&mut self) -> io::Result<usize> {
        if fault::hit(Fault::SubmitBusy) {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let mut len = self.batch.len();
        if len > 1 && fault::hit(Fault::SubmitPartial) {
            len = 1 + fault::below(len as u64 - 1) as usize;
        }
        inflight::submit(self.ctx, &self.batch[..len])
    }

    /// Collects completions into `out`: from the mapped ring if any are there, else by
    /// waiting in `io_getevents` for at least one (up to `timeout`; `Some(ZERO)` never blocks).
    /// An interrupted wait returns with nothing.
    pub fn reap(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<(Owner, i64)>,
    ) -> io::Result<()> {
        self.events.clear();
        // Injected: take at most one event this turn.
        let room = if fault::hit(Fault::ReapOne) {
            1
        } else {
            self.events.capacity()
        };
        if let Some(ring) = &mut self.ring {
            ring.reap(&mut self.events, room);
        }
        if self.events.is_empty() && timeout != Some(Duration::ZERO) || self.ring.is_none() {
            let min = if timeout == Some(Duration::ZERO) {
                0
            } else {
                1
            };
            self.events.resize(room, IoEvent::default());
            let waited = if min > 0 && fault::hit(Fault::WaitInterrupted) {
                Err(io::Error::from_raw_os_error(libc::EINTR))
            } else {
                aio::io_getevents(self.ctx, min, &mut self.events, timeout)
            };
            let got = match waited {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
                Err(e) => return Err(e),
            };
            self.events.truncate(got);
        }
        for event in &self.events {
            let key = RequestKey::unpack(event.data);
            if let Some(request) = self.requests.remove(key) {
                out.push((request.owner, event.res));
            } else {
                tracing::error!(?key, "AIO event for an unknown request");
            }
        }
        Ok(())
    }

    /// Cancels request `key`.
    pub fn cancel(&mut self, key: RequestKey) -> Cancel {
        let Some(request) = self.requests.get(key) else {
            return Cancel::TooLate;
        };
        match request.phase {
            Phase::Queued => {
                self.queued.retain(|k| *k != key);
                self.requests.remove(key);
                Cancel::Dequeued
            }
            Phase::Submitted => match aio::io_cancel(self.ctx, std::ptr::addr_of!(request.iocb)) {
                Ok(()) => Cancel::Started,
                Err(_) => Cancel::TooLate,
            },
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ring = None;
        // Waits for every request still in flight (polls are cancelled): after this the kernel
        // touches none of the memory the requests named.
        if let Err(e) = aio::io_destroy(self.ctx) {
            tracing::error!(error = %e, "io_destroy failed");
        }
    }
}

/// Where memory is handed to the kernel.
#[allow(unsafe_code)]
mod inflight {
    use super::*;

    /// `io_submit` of `batch`.
    ///
    /// Every pointer in `batch` is the `iocb` of a request in `Engine::requests` (see its
    /// invariant), so it stays put until its event is reaped. The buffers and iovecs an iocb
    /// names are owned by that request (iovecs) or by the op of a driver slot that stays in
    /// the `Iocb` state — op untouched — until the event arrives; and the engine is destroyed
    /// (`io_destroy`, which waits for every request) before any of that memory is freed.
    pub(super) fn submit(ctx: AioContext, batch: &[*mut Iocb]) -> io::Result<usize> {
        // SAFETY: see above.
        unsafe { aio::io_submit(ctx, batch) }
    }

    /// The mapped completion ring of `ctx`.
    pub(super) fn user_ring(ctx: AioContext) -> Option<UserRing> {
        // SAFETY: `ctx` was just created; `Engine` drops the ring before destroying it.
        unsafe { UserRing::new(ctx) }
    }
}
