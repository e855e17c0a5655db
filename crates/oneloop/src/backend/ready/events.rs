//! What the readiness backends do when something happens: a timer is due, a descriptor
//! reports readiness, the pool finishes jobs, the epoll set has events.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fds;
use super::{complete, Beneath, Ready, ReadySlot, State, DATA_POOL, DATA_WAKE, MULTI_ROUND};
use crate::backend::timers::Fire;
use crate::completion::Completion;
use crate::fault::{self, Fault};
use crate::op::plan::{Multi, Next, IN};
use crate::op::OpId;
use crate::op::{Op, UNMASKED};
use crate::sink::Sink;
use crate::slab::Key;
use crate::sys::posix as sio;

impl<B: Beneath> Ready<B> {
    /// Fires every timer due at `now`.
    pub(super) fn fire_timers(&mut self, now: Instant, out: &mut Sink) {
        let now = self.timers.tick(now);
        while let Some((key, fire)) = self.timers.pop_due(now) {
            let live = self.slots.get(key).is_some_and(|s| s.has_timer(fire));
            if !live {
                continue;
            }
            self.timers.fired();
            // The timer is spent: forget it before ending the slot, which disarms the rest.
            match fire {
                Fire::Timeout => {
                    self.slot(key).state = State::Starting;
                    self.complete(key, -libc::ETIME, out);
                }
                Fire::Deadline => {
                    self.slot(key).deadline = false;
                    self.end_early(key, -libc::ETIME, out);
                }
            }
        }
    }

    /// Handles readiness `events` on `fd`: every waiter whose interest they meet acts.
    pub(super) fn on_fd(&mut self, fd: RawFd, events: u32, out: &mut Sink) {
        let mut blocked = 0;
        // Most descriptors have one waiter (a stream's watch, say): it acts in place.
        if let Some(w) = self.fds.note(fd, events) {
            if !self.on_ready(w.key, w.interest, events, &mut blocked, out) {
                // Ended (its end removed it), or gone without an end: removed either way.
                self.fds.remove(fd, w.key);
            }
            self.fds.blocked(fd, blocked);
            return;
        }
        let mut waiters = self.fds.take(fd);
        waiters.retain(|w| self.on_ready(w.key, w.interest, events, &mut blocked, out));
        self.fds.put_back(fd, waiters, blocked);
    }

    /// One waiter's turn; `true` if it keeps waiting (its attempt saw `EAGAIN`: its interest
    /// is added to `blocked`).
    pub(super) fn on_ready(
        &mut self,
        key: Key,
        interest: u32,
        events: u32,
        blocked: &mut u32,
        out: &mut Sink,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        if events & (interest | UNMASKED) == 0 {
            return true;
        }
        let op = slot.op.as_mut().expect("a waiting slot holds its op");
        if let Op::Poll(p) = op {
            let got = events & (p.mask.bits() | UNMASKED);
            if p.multishot {
                out.push_event(OpId(key.pack()), slot.user_data, got);
                return true;
            }
            self.complete(key, got as i32, out);
            return false;
        }
        if op.is_multishot() {
            let closed = events & UNMASKED != 0;
            return self.multi_round(key, closed, blocked, out);
        }
        match op.ready_again(false) {
            Next::Wait(bits) => {
                *blocked |= bits;
                true
            }
            // It stays registered as it is; nothing was learnt about its readiness.
            Next::Arm(_) => true,
            Next::Short { res, fd, direction } => {
                self.fds.short_transfer(fd, direction);
                self.complete(key, res, out);
                false
            }
            Next::Done(res) => {
                self.complete(key, res, out);
                false
            }
            // Ready now, but the rest would block on the disk (an uncached file range).
            Next::Pool => {
                self.offload(key, out);
                false
            }
            Next::Timer(_) => unreachable!("a timer is armed at the start"),
        }
    }

    /// A multishot op's round (`op/multi.rs`): up to [`MULTI_ROUND`] attempts, a `MORE`
    /// completion each, until the fd says `EAGAIN` (its interest is added to `blocked`) or a
    /// short transfer says it is drained; `true` if the op keeps waiting. `closed`: the fd
    /// reported a hang-up or error (then only `EAGAIN` or the end stops the round). A round
    /// cut short by the cap goes on at the next wait.
    pub(super) fn multi_round(
        &mut self,
        key: Key,
        closed: bool,
        blocked: &mut u32,
        out: &mut Sink,
    ) -> bool {
        for _ in 0..MULTI_ROUND {
            let Some(slot) = self.slots.get_mut(key) else {
                return false;
            };
            let (user_data, fd) = (slot.user_data, slot.fd);
            let op = slot.op.as_mut().expect("a waiting slot holds its op");
            match op.multi_again(closed) {
                Multi::More {
                    res,
                    output,
                    drained,
                } => {
                    let id = OpId(key.pack());
                    out.push_back(Completion::more(id, user_data, Ok(res as u32), output));
                    if drained {
                        if let Some(fd) = fd {
                            self.fds.short_transfer(fd, IN);
                        }
                        return true;
                    }
                }
                Multi::Wait => {
                    *blocked |= IN;
                    return true;
                }
                Multi::End(res) => {
                    self.complete(key, res, out);
                    return false;
                }
            }
        }
        self.multi_pending.push(key);
        true
    }

    /// Goes on with the multishot rounds the cap cut short.
    pub(super) fn run_multi_pending(&mut self, out: &mut Sink) {
        let mut pending = std::mem::take(&mut self.multi_pending);
        for key in pending.drain(..) {
            let fd = match self.slots.get(key) {
                Some(ReadySlot {
                    state: State::Fd(fd),
                    ..
                }) => *fd,
                _ => continue,
            };
            let mut blocked = 0;
            if self.multi_round(key, true, &mut blocked, out) {
                self.fds.blocked(fd, blocked);
            }
        }
        if self.multi_pending.is_empty() {
            self.multi_pending = pending;
        }
    }

    /// Takes finished pool jobs and completes their slots.
    pub fn on_pool(&mut self, out: &mut Sink) {
        let _ = crate::sys::eventfd_reset(self.pool_fd.as_raw_fd());
        let mut jobs = std::mem::take(&mut self.done_jobs);
        self.pool.take_done(&mut jobs);
        for job in jobs.drain(..) {
            let Some((mut work, res)) = job.take() else {
                continue;
            };
            if let Some(fd) = work.produced.take() {
                // Ownership moves to the completion, which wraps the number again.
                let _ = fd.into_raw_fd();
            }
            let key = work.key;
            let ours = matches!(self.slots.get(key), Some(ReadySlot { state: State::Pool(j), .. }) if Arc::ptr_eq(j, &job));
            if ours {
                let slot = self.slot(key);
                slot.state = State::Starting;
                let ended_by = slot.ended_by.take();
                let op = slot.op.insert(work.into_op());
                // Most ops end here; one of several steps may go on (see `after_pool`),
                // unless a cancel or deadline came while its job prepared that step.
                let next = match ended_by {
                    Some(res) => Next::Done(res),
                    None => op.after_pool(res),
                };
                self.follow(key, next, out);
            } else {
                // Its slot is gone: drop the work; its buffers are freed, its fd closed.
                drop(complete(work.into_op(), res));
            }
            self.pool.recycle(job);
        }
        self.done_jobs = jobs;
    }

    /// One `epoll_pwait2` with `timeout`, then dispatch. `EINTR` is a normal return.
    pub fn epoll_once(&mut self, timeout: Option<Duration>, out: &mut Sink) -> io::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        let waited = if timeout != Some(Duration::ZERO) && fault::hit(Fault::WaitInterrupted) {
            Err(io::Error::from_raw_os_error(libc::EINTR))
        } else {
            sio::epoll_wait(&self.epfd, &mut events, timeout)
        };
        let mut n = match waited {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                self.events = events;
                return Err(e);
            }
        };
        if n < events.len() && fault::hit(Fault::SpuriousReadiness) {
            // Injected: a registered descriptor reported ready whether it is or not.
            if let Some(fd) = self.fds.pick(fault::below(u64::MAX)) {
                let all = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
                events[n] = libc::epoll_event {
                    events: all,
                    u64: fds::fd_data(fd),
                };
                n += 1;
            }
        }
        for ev in &events[..n] {
            let (bits, data) = (ev.events, ev.u64);
            match data {
                DATA_WAKE => {
                    self.wake.absorb();
                    self.woken = true;
                }
                DATA_POOL => self.on_pool(out),
                data => self.on_fd(data as u32 as RawFd, bits, out),
            }
        }
        self.events = events;
        Ok(())
    }
}
