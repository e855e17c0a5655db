//! The `uring` backend: every op is a native io_uring request.
//!
//! Where it sits: [`Ring`](crate::Ring) → `backend::Driver::Uring` → this → `io_uring_enter`.
//!
//! * **Ids.** Each SQE's `user_data` is a tag (top 8 bits: main request, linked timeout,
//!   cancel, wake) over the slot key (56 bits: generation and index). A CQE whose key no longer
//!   matches a live slot is stale and ignored.
//! * **Final completion.** A slot is finished only when its main request's last CQE, every
//!   linked-timeout CQE and every cancel CQE naming it have arrived; only then does the user's
//!   final completion go out and the slot's memory become free (see `inflight.rs`).
//! * **Timers.** `Timeout` ops live in the ring's own heap (`backend/timers.rs`), never in the
//!   kernel: the wait's timeout is bounded by the earliest one, so arming is a heap push and
//!   cancelling one answers `Cancelled` at once, without a system call.
//! * **Deadlines** are `LINK_TIMEOUT`s. The target then ends `ECANCELED`; the driver reports
//!   `TimedOut` when the linked timeout fired (`-ETIME`) and no user cancel succeeded.
//! * **Cancel** is `ASYNC_CANCEL` by `user_data`, awaited synchronously: `0` → `Cancelled`,
//!   `-ENOENT`/`-EALREADY` → `TooLate` (the op's CQE is posted, or it is running).
//! * **Backpressure.** A full SQ is flushed; `EBUSY` (CQ overflow backlog) means reap, then retry;
//!   the kernel keeps overflowed CQEs (`FEAT_NODROP`) and `EBADR` (a CQE the kernel had to drop)
//!   breaks the ring loudly. `EINTR` is retried with the remaining time.
#![deny(unsafe_code)]

mod cancel;
mod files;
mod inflight;
mod lower;
mod setup;

pub(crate) use self::setup::probe_opcodes;

use io_uring::cqueue;
use io_uring::Probe;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::files::Files;
use self::inflight::{Armed, InFlight, UringSlot};
use self::lower::Native;
use super::by_fd::ByFd;
use super::timers::{Fire, Timers};
use crate::common::{Stats, SubmitError, WakeFd};
use crate::completion::{raw_result, Completion};
use crate::fault::{self, Fault};
use crate::op::plan::{Multi, Step};
use crate::op::OpId;
use crate::op::{Op, Output, Submission};
use crate::sink::Sink;
use crate::slab::Key;
use crate::sys::buf_ring::{KernelRing, Pool};
use crate::sys::{self, uring::RingFd};

const TAG_SHIFT: u32 = 56;
const TAG_MAIN: u64 = 0;
// A main request's `user_data` is its `OpId`: ops that name another op to the kernel rely on it.
const _: () = assert!(TAG_MAIN == 0);
const TAG_LINK: u64 = 1;
const TAG_CANCEL: u64 = 2;
const TAG_WAKE: u64 = 3;
const KEY_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// The error every call on a broken ring returns.
#[cold]
fn broken_error(why: &str) -> io::Error {
    io::Error::other(format!("ring is broken: {why}"))
}

fn user_data(tag: u64, key: Key) -> u64 {
    (tag << TAG_SHIFT) | key.pack()
}

/// The uring driver.
pub(crate) struct Uring {
    /// The ring's descriptor registered with this thread (`RingBuilder::register_ring_fd`),
    /// through which every enter goes. Declared before `table`: fields drop in order, and it
    /// must be unregistered while the ring's descriptor is still open.
    ring_fd: Option<RingFd>,
    table: InFlight,
    probe: Probe,
    native_epoll_wait: bool,
    /// Whether `RecvMulti`, `ReadMulti` and `AcceptMulti` are the kernel's multishot requests
    /// (else a one-shot poll each time, and the op's rounds run here, as on epoll).
    native_multishot: bool,
    wake: Arc<WakeFd>,
    woken: bool,
    /// Raw CQEs reaped but not yet processed (reused; never reallocates in steady state).
    cqes: Vec<(u64, i32, u32)>,
    /// Results of cancel requests, as `(target, res)`, for the cancel being awaited.
    cancel_results: Vec<(Key, i32)>,
    /// Emulated `EpollWait`s to re-arm once the current reap is over.
    rearms: Vec<Key>,
    /// `Timeout` ops, by deadline.
    timers: Timers,
    /// Scratch lists for `cancel_where` (ops to cancel in the kernel, timers), kept to reuse.
    cancel_scratch: (Vec<Key>, Vec<Key>),
    /// The live slots of each descriptor, for `cancel_where`.
    by_fd: ByFd,
    /// Descriptors in the fixed-file table (`Ring::register_fd`).
    files: Files,
    broken: Option<String>,
    /// Bit `k` set: an op of kind `k` is refused at submission, its opcode missing from this
    /// kernel (from the probe, at setup) — or every bit, once the ring is broken. Submission
    /// tests one bit instead of looking the op up in the probe.
    refused: u64,
    /// Bit `k` set: ops of kind `k` are plain (`UringPlan::plain`), and take the short path
    /// when they have no deadline.
    plain: u64,
    setup: &'static str,
    /// The buffer rings registered with this ring (`Ring::buf_ring`).
    groups: Vec<KernelRing>,
    /// Whether buffer rings are registered for incremental consumption (`IOU_PBUF_RING_INC`):
    /// the setting, until a kernel refuses it.
    pub(super) incremental: bool,
    /// Whether multishot receives fill several buffers at once (`IORING_RECVSEND_BUNDLE`).
    pub(super) recv_bundles: bool,
    /// Blocking waits batched (`RingBuilder::batch_wait`, where the kernel has
    /// `IORING_FEAT_MIN_TIMEOUT`): `(min_complete, min_wait_usec)`.
    pub(super) batch_wait: Option<(usize, u32)>,
    /// The id of the `FixedBufPool` registered with this ring (0: none).
    fixed_pool: u64,
    /// `SEND_ZC`s that sent bytes (`Stats::zero_copy_sends`).
    zero_copy_sends: u64,
    /// Whether the kernel has `SEND_ZC` (6.0); else a `SendZc` is a `SEND`.
    native_send_zc: bool,
}

impl Uring {
    /// The backend's own counters: on io_uring, the ops run on registered buffers (the ring
    /// counts submissions itself).
    pub fn stats(&self) -> Stats {
        Stats {
            fixed_buffer_ops: self.table.fixed_ops,
            zero_copy_sends: self.zero_copy_sends,
            ..Stats::default()
        }
    }

    pub fn in_flight(&self) -> usize {
        self.table.slots.len()
    }

    /// Whether op `id` is accepted and its final completion not yet made.
    pub fn is_live(&self, id: OpId) -> bool {
        self.table.slots.get(Key::unpack(id.0)).is_some()
    }

    /// Frees the retired slot of op `id`, whose final completion was taken.
    pub fn release(&mut self, id: OpId) {
        self.table.slots.release(Key::unpack(id.0));
    }

    #[inline]
    fn check_broken(&self) -> io::Result<()> {
        match &self.broken {
            Some(why) => Err(broken_error(why)),
            None => Ok(()),
        }
    }

    pub fn submit(
        &mut self,
        sub: Submission,
        user_data: u64,
        out: &mut Sink,
    ) -> Result<OpId, SubmitError> {
        let Submission { op, deadline } = sub;
        let kind = 1 << op.kind();
        // One test for both a broken ring and an op this kernel lacks (see `refused`).
        if self.refused & kind != 0 {
            let e = self.check_broken().and_then(|()| self.check_supported(&op));
            return Err(SubmitError::new(
                e.expect_err("a refused kind is unsupported, or the ring broken"),
                op,
            ));
        }
        if self.plain & kind != 0 && deadline.is_none() {
            return self.submit_plain(op, user_data, out);
        }
        // A timer with no deadline of its own: its slot and its heap entry, no request.
        let mut op = op;
        if let (Op::Timeout(t), None) = (&mut op, deadline) {
            let at = t.when.instant(Instant::now());
            t.when = crate::op::Deadline::At(at);
            let mut slot = UringSlot::new(op, user_data, None);
            slot.timer = true;
            return match self.table.slots.insert(slot) {
                Ok(key) => {
                    self.timers.arm(at, key, Fire::Timeout);
                    Ok(OpId(key.pack()))
                }
                Err(slot) => Err(SubmitError::full(self.table.slots.capacity(), slot.op)),
            };
        }
        // The clock is read only for ops that need it (a timer, a deadline).
        let now = (deadline.is_some() || matches!(op, Op::Timeout(_))).then(Instant::now);
        if let (Op::Timeout(t), Some(now)) = (&mut op, now) {
            t.when = crate::op::Deadline::At(t.when.instant(now));
        }
        let slot = UringSlot::new(
            op,
            user_data,
            deadline.zip(now).map(|(d, now)| d.instant(now)),
        );
        // An emulated EpollWait (a poll of its fd) first checks that the fd is an epoll
        // instance, as the native op would.
        let refused = match (&slot.op, self.native_epoll_wait) {
            (Op::EpollWait(o), false) => crate::sys::epoll_check(o.epfd, self.wake.raw())
                .err()
                .map(|e| -e.raw_os_error().unwrap_or(libc::EINVAL)),
            // So does an emulated multishot op, its fd prepared as on the other backends.
            (op, _) if !self.native_multishot && op.has_rounds() => op
                .prepare_rounds()
                .err()
                .map(|e| -e.raw_os_error().unwrap_or(libc::EINVAL)),
            _ => None,
        };
        let (fd, target) = (slot.op.fd(), slot.op.target());
        let key = match self.table.slots.insert(slot) {
            Ok(key) => key,
            Err(slot) => return Err(SubmitError::full(self.table.slots.capacity(), slot.op)),
        };
        self.by_fd.add(fd, key);
        let refused = match (refused, target) {
            (None, Some(target)) => self.apply_target(key, target),
            (refused, _) => refused,
        };
        if let Some(res) = refused {
            // As the kernel would: the op ends at once with the error.
            let slot = self.table.slots.get_mut(key).expect("slot just inserted");
            slot.main_res = Some(res);
            self.try_finish(key, out);
            return Ok(OpId(key.pack()));
        }
        if let Err(e) = self.arm(key, now, out) {
            let slot = self.table.slots.remove(key).expect("slot just inserted");
            self.by_fd.remove(fd, key);
            return Err(SubmitError::new(e, slot.op));
        }
        Ok(OpId(key.pack()))
    }

    /// The short path of a plain op without a deadline: its slot, and its one request in the
    /// SQ — or, if the SQ is full, the general path (`arm`), which makes room.
    #[inline]
    fn submit_plain(&mut self, op: Op, data: u64, out: &mut Sink) -> Result<OpId, SubmitError> {
        let fd = op.fd();
        let key = match self.table.slots.insert(UringSlot::new(op, data, None)) {
            Ok(key) => key,
            Err(slot) => return Err(SubmitError::full(self.table.slots.capacity(), slot.op)),
        };
        self.by_fd.add(fd, key);
        // Unregistrations posted from other threads apply before any fd is looked up.
        self.apply_unregistered();
        let native = self.native();
        if !self
            .table
            .push_plain(key, &self.files, native, user_data(TAG_MAIN, key))
        {
            if let Err(e) = self.arm(key, None, out) {
                let slot = self.table.slots.remove(key).expect("slot just inserted");
                self.by_fd.remove(fd, key);
                return Err(SubmitError::new(e, slot.op));
            }
        }
        Ok(OpId(key.pack()))
    }

    /// For an op that changes another (see `OpBase::target`): lets it change its live target
    /// in user space first (the kernel then changes the request). `Some(-errno)` ends the op
    /// at once: `-ENOENT` (no such op in flight), `-EALREADY` (its end is decided), or what
    /// `apply` said. A main request's `user_data` is its `OpId` (`TAG_MAIN` is 0), which is
    /// how the op names its target to the kernel.
    #[cold]
    fn apply_target(&mut self, key: Key, target: OpId) -> Option<i32> {
        let target = Key::unpack(target.0);
        let slot = self.table.slots.get_mut(key)?;
        let mut op = std::mem::replace(&mut slot.op, Op::Nop(crate::op::Nop));
        let res = match self.table.slots.get_mut(target) {
            None => -libc::ENOENT,
            Some(t) if t.main_res.is_some() || t.cancel_answered || t.discarded => -libc::EALREADY,
            Some(t) => op.apply(&mut t.op),
        };
        self.table.slots.get_mut(key)?.op = op;
        (res != 0).then_some(res)
    }

    /// Which of the kernel's requests lowering picks.
    #[inline]
    fn native(&self) -> Native {
        Native {
            epoll_wait: self.native_epoll_wait,
            multishot: self.native_multishot,
            recv_bundle: self.recv_bundles,
            fixed_pool: self.fixed_pool,
            send_zc: self.native_send_zc,
        }
    }

    /// Whether multishot ops are the kernel's (see the field).
    pub fn native_multishot(&self) -> bool {
        self.native_multishot
    }

    fn check_supported(&self, op: &Op) -> io::Result<()> {
        if op.has_rounds() && !self.native_multishot {
            return Ok(()); // a poll, which every kernel this driver runs on has
        }
        let Some(code) = op.uring_opcode(self.native_epoll_wait) else {
            return Ok(());
        };
        if self.probe.is_supported(code) {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "this kernel's io_uring lacks the opcode for {} ({code})",
                op.name()
            ),
        ))
    }

    /// Lowers slot `key` and queues its SQE (plus its deadline's linked timeout), or arms its
    /// timer. `now` is the clock read at submission, if it was read.
    fn arm(&mut self, key: Key, now: Option<Instant>, out: &mut Sink) -> io::Result<()> {
        // Unregistrations posted from other threads apply before any fd is looked up.
        self.apply_unregistered();
        let user_data = (user_data(TAG_MAIN, key), user_data(TAG_LINK, key));
        loop {
            let native = self.native();
            match self.table.push_op(key, &self.files, native, now, user_data) {
                // A re-armed emulated EpollWait is held by no request until its SQE is
                // queued: the flag is cleared only then (if making room fails, a cancel still
                // finds it ours).
                Armed::Pushed => return Ok(()),
                Armed::Timer(at) => {
                    let slot = self.table.slots.get_mut(key).expect("arming a live slot");
                    slot.rearm_pending = false;
                    // A deadline before the timer ends it the same way: -ETIME, `TimedOut`.
                    let at = slot.deadline.map_or(at, |d| d.min(at));
                    debug_assert!(!slot.timer, "a slot arms one timer in its life");
                    slot.timer = true;
                    self.timers.arm(at, key, Fire::Timeout);
                    return Ok(());
                }
                Armed::Full(room) => self.ensure_sq_room(room, out)?,
                Armed::Done(res) => {
                    let slot = self.table.slots.get_mut(key).expect("arming a live slot");
                    slot.rearm_pending = false;
                    slot.main_res = Some(res);
                    self.try_finish(key, out);
                    return Ok(());
                }
            }
        }
    }

    fn arm_wake(&mut self, out: &mut Sink) -> io::Result<()> {
        self.ensure_sq_room(1, out)?;
        let pushed = self.table.push_poll(self.wake.raw(), TAG_WAKE << TAG_SHIFT);
        assert!(pushed, "SQ room was ensured");
        Ok(())
    }

    /// Makes room for `n` SQEs by submitting what is queued.
    fn ensure_sq_room(&mut self, n: usize, out: &mut Sink) -> io::Result<()> {
        while self.table.sq_room() < n {
            self.enter(0, None)?;
            self.reap(out);
        }
        Ok(())
    }

    /// One `io_uring_enter`: submits what is queued and waits for `want` CQEs (bounded by
    /// `timeout`). Interruptions, expiry and backpressure are normal returns: callers loop.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        self.enter_with(want, timeout, None)
    }

    /// [`enter`](Self::enter), a blocking wait batched as `RingBuilder::batch_wait` says
    /// (`Some((min_complete, min_wait_usec))`): up to `min_complete` CQEs, waiting at most
    /// `min_wait_usec` for them before returning with what there is.
    fn enter_with(
        &mut self,
        want: usize,
        timeout: Option<Duration>,
        batch: Option<(usize, u32)>,
    ) -> io::Result<()> {
        self.check_broken()?;
        // Buffers given back since the last call are the kernel's again before it runs.
        for group in &mut self.groups {
            if group.wants_refill() {
                group.refill();
            }
        }
        let res = if fault::hit(Fault::SubmitBusy) {
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        } else if want > 0 && fault::hit(Fault::WaitInterrupted) {
            Err(io::Error::from_raw_os_error(libc::EINTR))
        } else {
            let (want, min_wait_usec) = match batch {
                Some((min_complete, usec)) if want > 0 => (min_complete.max(want), usec),
                _ => (want, 0),
            };
            let want = u32::try_from(want).unwrap_or(u32::MAX);
            let ring_fd = self.ring_fd.as_ref();
            sys::uring::enter(&mut self.table.ring, ring_fd, want, timeout, min_wait_usec)
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN) => Ok(()),
                Some(libc::EBADR) => {
                    let why = "the kernel dropped a completion (EBADR)".to_string();
                    tracing::error!("{why}; tearing the ring down");
                    self.broken = Some(why);
                    self.refused = u64::MAX;
                    self.check_broken()
                }
                _ => Err(e),
            },
        }
    }

    /// Takes every CQE the kernel has posted and processes it.
    #[inline]
    fn reap(&mut self, out: &mut Sink) {
        // Most reaps before an enter find nothing: say so without a call.
        if !self.table.ring.completion().is_empty() {
            self.reap_posted(out);
        }
    }

    fn reap_posted(&mut self, out: &mut Sink) {
        let mut cqes = std::mem::take(&mut self.cqes);
        // Injected: take one CQE this turn and leave the rest in the kernel's queue.
        let one = fault::hit(Fault::ReapOne);
        loop {
            cqes.clear();
            let room = if one { 1 } else { cqes.capacity() };
            for cqe in self.table.ring.completion() {
                cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
                if cqes.len() == room {
                    break;
                }
            }
            if cqes.is_empty() {
                break;
            }
            for &(ud, res, flags) in &cqes {
                self.on_cqe(ud, res, flags, out);
            }
            // A batch that did not fill the buffer emptied the queue as it was: what came
            // since is for the next reap (no second look at an empty queue).
            if one || cqes.len() < room {
                break;
            }
        }
        self.cqes = cqes;
    }

    fn on_cqe(&mut self, ud: u64, res: i32, flags: u32, out: &mut Sink) {
        let key = Key::unpack(ud & KEY_MASK);
        match ud >> TAG_SHIFT {
            TAG_MAIN => self.on_main(key, res, flags, out),
            TAG_LINK => {
                if let Some(slot) = self.table.slots.get_mut(key) {
                    slot.links_pending -= 1;
                    slot.link_fired |= res != -libc::ECANCELED;
                    self.try_finish(key, out);
                }
            }
            TAG_CANCEL => {
                let Some(slot) = self.table.slots.get_mut(key) else {
                    tracing::warn!(?key, "cancel CQE for a finished op");
                    return;
                };
                slot.cancels_pending -= 1;
                slot.user_cancelled |= res == 0;
                if !slot.discarded {
                    self.cancel_results.push((key, res));
                }
                self.try_finish(key, out);
            }
            TAG_WAKE => {
                self.woken = true;
                // Resets the count too, so a re-armed poll does not fire on an old wake.
                self.wake.absorb();
                if !cqueue::more(flags) {
                    // The kernel ended the multishot poll (e.g. on CQ overflow): re-arm it.
                    if let Err(e) = self.arm_wake(out) {
                        tracing::error!(error = %e, "cannot re-arm the wake poll");
                    }
                }
            }
            tag => tracing::error!(tag, "CQE with an unknown tag"),
        }
    }

    fn on_main(&mut self, key: Key, mut res: i32, flags: u32, out: &mut Sink) {
        // An op that acts on another: the kernel did not find the target's request, but the
        // target was live at submission and still is — it is completing (its wakeup came, its
        // completion is on its way): too late, not unknown.
        if res == -libc::ENOENT && self.target_live(key) {
            res = -libc::EALREADY;
        }
        let Some(slot) = self.table.slots.get_mut(key) else {
            tracing::warn!(?key, "CQE for a finished op");
            return;
        };
        // A plain op's last CQE, with no linked timeout or cancel still to answer: the op
        // ends with it (its step is `Done(res)`, whatever stops were asked).
        if !cqueue::more(flags)
            && self.plain & (1 << slot.op.kind()) != 0
            && slot.links_pending == 0
            && slot.cancels_pending == 0
            && !slot.link_fired
        {
            self.end_plain(key, res, out);
            return;
        }
        if cqueue::more(flags) {
            // A zero-copy send's result; its notification (the kernel let go of the buffer)
            // is its last CQE, and only then does it end, with this result.
            if let Op::SendZc(o) = &mut slot.op {
                o.sent = Some(res);
                self.zero_copy_sends += u64::from(res > 0);
                return;
            }
            let id = OpId(key.pack());
            if res >= 0 && matches!(slot.op, Op::Poll(_)) {
                out.push_event(id, slot.user_data, res as u32);
                return;
            }
            let user_data = slot.user_data;
            let mut leased = false;
            // A completion per buffer (a bundle fills several), each with its own length.
            inflight::leases(&mut self.groups, &slot.op, res, flags, |lease| {
                leased = true;
                out.push_back(leased_more(id, user_data, lease));
            });
            if !leased {
                let output = inflight::more_output(&slot.op, res);
                out.push_back(Completion::more(id, user_data, raw_result(res), output));
            }
            return;
        }
        // A cancel under way stops an op of several requests where it is.
        let asked_to_stop = slot.discarded
            || slot.cancels_pending > 0
            || slot.cancel_answered
            || slot.user_cancelled
            || slot.link_fired;
        let expired = slot.deadline.is_some_and(|d| d <= Instant::now());
        // A multishot receive and an empty ring (see `Op::poll_first`): the kernel ended it
        // `ENOBUFS` without looking for data. With none waiting it waits for some — a poll —
        // and then makes its request again, so `ENOBUFS` means what it means elsewhere.
        if self.native_multishot {
            let fd = slot.op.fd();
            if let (Some(poll_first), Some(fd)) = (slot.op.poll_first(), fd) {
                if *poll_first {
                    // Its poll: fired (the request again), failed, or stopped.
                    *poll_first = false;
                    if res >= 0 && !asked_to_stop && !expired {
                        slot.rearm_pending = true;
                        self.rearms.push(key);
                        return;
                    }
                    if res >= 0 {
                        // Stopped while it waited: as a stop ends it (a deadline: `ETIME`).
                        res = if asked_to_stop {
                            slot.stopped()
                        } else {
                            -libc::ETIME
                        };
                    }
                } else if res == -libc::ENOBUFS
                    && !asked_to_stop
                    && !expired
                    && matches!(crate::sys::posix::input_waiting(fd), Ok(false))
                {
                    *poll_first = true;
                    slot.rearm_pending = true;
                    self.rearms.push(key);
                    return;
                }
            }
        }
        // A multishot receive's last CQE may carry buffers too: the kernel ends one whose
        // bundle took the ring's last buffer, or that could not post a CQE. Its bytes go out
        // as `MORE` completions and the receive is submitted again (it goes on, or ends with
        // `ENOBUFS` if data waits and the ring is still empty) — unless a stop is under way:
        // then the last buffer goes with the final (which counts its bytes).
        let (id, user_data) = (OpId(key.pack()), slot.user_data);
        let bytes_out = self.native_multishot && res > 0 && !asked_to_stop;
        let mut last = None;
        inflight::leases(&mut self.groups, &slot.op, res, flags, |lease| {
            if let Some(before) = last.replace(lease) {
                out.push_back(leased_more(id, user_data, before));
            }
        });
        if let Some(lease) = last {
            if bytes_out {
                out.push_back(leased_more(id, user_data, lease));
                if !expired {
                    slot.rearm_pending = true;
                    self.rearms.push(key);
                    return;
                }
                // Its deadline passed: the bytes are out, the op ends as a deadline ends it.
                res = -libc::ETIME;
            } else {
                res = lease.len() as i32;
                slot.op.keep_lease(lease);
            }
        }
        if let (Op::EpollWait(o), false, true) = (&mut slot.op, self.native_epoll_wait, res >= 0) {
            // Emulated EpollWait: the poll on the epoll fd fired; collect the events now.
            match crate::sys::epoll_wait_now(o.epfd, &mut o.events.raw) {
                Ok(0) if slot.discarded => res = -libc::ECANCELED,
                Ok(0) if slot.deadline.is_some_and(|d| d <= Instant::now()) => res = -libc::ETIME,
                Ok(0) => {
                    slot.rearm_pending = true;
                    self.rearms.push(key);
                    return;
                }
                Ok(n) => res = n as i32,
                Err(e) => res = -e.raw_os_error().unwrap_or(libc::EIO),
            }
        }
        if !self.native_multishot && res >= 0 && slot.op.has_rounds() {
            // An emulated multishot op: its poll fired; its round runs here.
            if asked_to_stop {
                res = slot.stopped();
            } else {
                match emulated_round(slot, key, res as u32, out) {
                    Some(end) => res = end,
                    None if slot.deadline.is_some_and(|d| d <= Instant::now()) => {
                        res = -libc::ETIME;
                    }
                    None => {
                        slot.rearm_pending = true;
                        self.rearms.push(key);
                        return;
                    }
                }
            }
        }
        match slot.op.uring_step(res, asked_to_stop) {
            Step::Done(res) => {
                slot.main_res = Some(res);
                self.try_finish(key, out);
            }
            // Its next request, once this reap is over (held by no request until then, as
            // an emulated EpollWait between its poll and its re-arm).
            Step::Again => {
                slot.rearm_pending = true;
                self.rearms.push(key);
            }
        }
    }

    /// Whether slot `key`'s op acts on another op that is still in flight.
    #[cold]
    fn target_live(&self, key: Key) -> bool {
        let target = self.table.slots.get(key).and_then(|s| s.op.target());
        target.is_some_and(|t| self.table.slots.get(Key::unpack(t.0)).is_some())
    }

    /// Delivers slot `key`'s final completion if the kernel is done with it, retiring the slot
    /// (the ring releases it when the completion is taken).
    fn try_finish(&mut self, key: Key, out: &mut Sink) {
        // The op is taken out in place (one look-up); the rest of the slot is dropped where
        // it is.
        let taken = self.table.slots.retire_if(key, |slot| {
            if slot.kernel_holds() {
                return None;
            }
            let mut res = slot.main_res.expect("finished slots have a result");
            if res == -libc::ECANCELED && slot.link_fired && !slot.user_cancelled {
                res = -libc::ETIME;
            }
            let op = std::mem::replace(&mut slot.op, Op::Nop(crate::op::Nop));
            Some((op, res, slot.user_data))
        });
        if let Some((op, res, user_data)) = taken {
            self.deliver(key, op, res, user_data, out);
        }
    }

    /// Delivers plain op `key`'s final completion with `res`, its last CQE's result, and
    /// retires its slot: what `try_finish` does for a slot the kernel holds no more, where no
    /// linked timeout fired.
    #[inline]
    fn end_plain(&mut self, key: Key, res: i32, out: &mut Sink) {
        if let Some(UringSlot { op, user_data, .. }) = self.table.slots.retire(key) {
            self.deliver(key, op, res, user_data, out);
        }
    }

    /// Hands retired slot `key`'s op back in its final completion, with `res`.
    #[inline(always)]
    fn deliver(&mut self, key: Key, op: Op, res: i32, user_data: u64, out: &mut Sink) {
        self.by_fd.remove(op.fd(), key);
        let id = OpId(key.pack());
        out.push_back(Completion::last(id, user_data, inflight::complete(op, res)));
    }

    /// Ends every `Timeout` op that is due with `-ETIME`.
    #[inline]
    fn fire_timers(&mut self, out: &mut Sink) {
        if !self.timers.is_empty() {
            self.fire_due_timers(out);
        }
    }

    fn fire_due_timers(&mut self, out: &mut Sink) {
        let now = Instant::now();
        let now = self.timers.tick(now);
        while let Some((key, _)) = self.timers.pop_due(now) {
            match self.table.slots.get_mut(key) {
                Some(slot) if slot.timer => {
                    slot.timer = false;
                    slot.main_res = Some(-libc::ETIME);
                }
                // A stale entry: its timer was cancelled.
                _ => continue,
            }
            self.timers.fired();
            self.try_finish(key, out);
        }
    }

    /// Re-arms emulated `EpollWait`s whose `epoll_wait(.., 0)` found nothing (and ops of
    /// several requests between two of them).
    #[inline]
    fn run_rearms(&mut self, out: &mut Sink) -> io::Result<()> {
        if self.rearms.is_empty() {
            return Ok(());
        }
        self.run_pending_rearms(out)
    }

    fn run_pending_rearms(&mut self, out: &mut Sink) -> io::Result<()> {
        while let Some(key) = self.rearms.pop() {
            match self.table.slots.get(key) {
                Some(s) if s.rearm_pending && s.discarded => self.end_discarded_rearm(key, out),
                Some(s) if s.rearm_pending => self.arm(key, None, out)?,
                _ => {}
            }
        }
        Ok(())
    }

    pub fn wait(
        &mut self,
        min_complete: usize,
        timeout: Option<Duration>,
        out: &mut Sink,
    ) -> io::Result<()> {
        self.check_broken()?;
        self.apply_unregistered();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // A wake reaped earlier (during a cancel, say) still ends this wait: it is consumed here.
        loop {
            self.reap(out);
            self.fire_timers(out);
            self.run_rearms(out)?;
            if out.len() >= min_complete || self.woken {
                break;
            }
            // The clock is read only when something is timed: the wait or a timer.
            let due = self.timers.next_due();
            let now = (deadline.is_some() || due.is_some()).then(Instant::now);
            let mut left = match deadline.zip(now) {
                Some((d, now)) => match d.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break,
                },
                None => None,
            };
            if let Some((due, now)) = due.zip(now) {
                let until = due.saturating_duration_since(now);
                if until.is_zero() {
                    continue;
                }
                left = Some(left.map_or(until, |l| l.min(until)));
            }
            // One completion at a time, so that a wake (one CQE) always ends the wait — unless
            // waits are batched: then after at most the batch's minimum wait.
            self.enter_with(1, left, self.batch_wait)?;
        }
        self.woken = false;
        // Send what is still queued (and run deferred completions) only if there is any.
        if self.table.needs_enter() {
            self.enter(0, None)?;
            self.reap(out);
            self.run_rearms(out)?;
        }
        Ok(())
    }

    /// Registers a `FixedBufPool`'s buffers (`IORING_REGISTER_BUFFERS`); from then on its
    /// buffers are read and written with `READ_FIXED`/`WRITE_FIXED`. Otherwise why not.
    pub fn register_fixed(&mut self, region: &crate::sys::fixed::Region) -> Result<(), String> {
        match region.register(&self.table.ring) {
            Ok(()) => {
                self.fixed_pool = region.id();
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => Err(format!(
                "IORING_REGISTER_BUFFERS: ENOMEM: {} buffers of {} bytes exceed RLIMIT_MEMLOCK \
                 ({}; CAP_IPC_LOCK lifts it)",
                region.count(),
                region.size(),
                crate::sys::memlock_limit()
                    .map_or("unknown".into(), |(soft, _)| format!("{soft} bytes"))
            )),
            Err(e) => Err(format!("IORING_REGISTER_BUFFERS: {e}")),
        }
    }

    /// Registers `pool`'s group with the kernel (`IORING_REGISTER_PBUF_RING`), consumed
    /// incrementally where the settings ask for it and the kernel takes it.
    pub fn add_buf_ring(&mut self, pool: Pool) -> io::Result<Arc<Pool>> {
        self.check_broken()?;
        let group = KernelRing::register(&self.table.ring.submitter(), pool, self.incremental)?;
        // A kernel that refused it once refuses it for every group.
        self.incremental = group.pool.incremental();
        let pool = Arc::clone(&group.pool);
        self.groups.push(group);
        Ok(pool)
    }

    /// Puts `fd` in the fixed-file table (see `files.rs`).
    pub fn register_fd(&mut self, fd: i32) -> io::Result<()> {
        self.apply_unregistered();
        self.files.register(&self.table.ring, fd)
    }

    /// Applies unregistrations posted through a `Waker` (see `files.rs`).
    fn apply_unregistered(&mut self) {
        let files = &mut self.files;
        let ring = &self.table.ring;
        self.wake.take_unregistered(|fd| files.unregister(ring, fd));
    }

    /// Takes `fd` out of the fixed-file table.
    pub fn unregister_fd(&mut self, fd: i32) {
        self.files.unregister(&self.table.ring, fd);
    }

    /// Drop: cancel everything, drain every CQE, and only then let buffers go.
    pub fn shutdown(&mut self, out: &mut Sink) {
        if self.broken.is_none() {
            if let Err(e) = self.cancel_where(None, out) {
                tracing::error!(error = %e, "cancel on drop failed");
            }
            let start = Instant::now();
            while !self.only_notifications_left() && self.broken.is_none() {
                if start.elapsed() > Duration::from_secs(60) {
                    tracing::error!(
                        left = self.table.slots.len(),
                        "ops still in flight after 60 s"
                    );
                    break;
                }
                if self.wait(1, Some(Duration::from_millis(100)), out).is_err() {
                    break;
                }
            }
        }
        // No op picks from a buffer ring once every slot is gone: unregister them. Slots
        // the kernel still holds keep theirs (registered groups are leaked on drop).
        if self.table.slots.is_empty() {
            let submitter = self.table.ring.submitter();
            for group in self.groups.drain(..) {
                group.unregister(&submitter);
            }
        }
        self.leak_held_slots();
    }

    /// Whether every op left has its result and waits only for the kernel to let go of its
    /// buffer (zero-copy sends whose bytes wait for the peer): no longer worth waiting for.
    fn only_notifications_left(&self) -> bool {
        self.table.slots.iter().all(|(_, slot)| {
            slot.op.result_in().is_some() && slot.links_pending == 0 && slot.cancels_pending == 0
        })
    }

    /// Leaks every slot the kernel may still write, so its memory is never freed under it.
    fn leak_held_slots(&mut self) {
        let held: Vec<Key> = self.table.slots.iter().map(|(k, _)| k).collect();
        if !held.is_empty() {
            tracing::error!(
                count = held.len(),
                "leaking buffers of ops the kernel never finished"
            );
        }
        for key in held {
            if let Some(slot) = self.table.slots.get(key) {
                self.by_fd.remove(slot.op.fd(), key);
            }
            std::mem::forget(self.table.slots.remove(key));
        }
    }
}

/// A `MORE` completion of op `id` carrying `lease` (its result: the lease's length).
fn leased_more(id: OpId, user_data: u64, lease: crate::buf_ring::Lease) -> Completion {
    let n = lease.len() as u32;
    Completion::more(id, user_data, Ok(n), Output::Lease(lease))
}

/// The round of an emulated multishot op whose poll reported `revents`: up to
/// [`MULTI_ROUND`](crate::op::plan::MULTI_ROUND) non-blocking attempts, a `MORE` completion
/// each, as on the readiness backends. `Some(res)`: the op ends with `res`; `None`: it waits
/// for its fd again (it found `EAGAIN`, a short transfer, or the cap; a poll re-armed on a fd
/// still readable fires at once).
fn emulated_round(slot: &mut UringSlot, key: Key, revents: u32, out: &mut Sink) -> Option<i32> {
    let closed = revents & (libc::POLLHUP | libc::POLLERR) as u32 != 0;
    let (id, user_data) = (OpId(key.pack()), slot.user_data);
    for _ in 0..crate::op::plan::MULTI_ROUND {
        match slot.op.multi_again(closed) {
            Multi::More {
                res,
                output,
                drained,
            } => {
                out.push_back(Completion::more(id, user_data, Ok(res as u32), output));
                if drained {
                    return None;
                }
            }
            Multi::Wait => return None,
            Multi::End(res) => return Some(res),
        }
    }
    None
}
