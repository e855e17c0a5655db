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

mod files;
mod inflight;
mod lower;

use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue::Flags;
use io_uring::types::{Fd, SubmitArgs};
use io_uring::{IoUring, Probe};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::files::Files;
use self::inflight::{InFlight, Slot};
use super::by_fd::ByFd;
use super::timers::{Fire, Timers};
use crate::common::{Settings, Stats, SubmitError, WakeFd};
use crate::completion::{raw_result, CancelCount, CancelOutcome, Completion, OpId};
use crate::fault::{self, Fault};
use crate::op::plan::Lowered;
use crate::op::{Op, Submission};
use crate::slab::{Key, Slab};

const TAG_SHIFT: u32 = 56;
const TAG_MAIN: u64 = 0;
const TAG_LINK: u64 = 1;
const TAG_CANCEL: u64 = 2;
const TAG_WAKE: u64 = 3;
const KEY_MASK: u64 = (1 << TAG_SHIFT) - 1;

fn user_data(tag: u64, key: Key) -> u64 {
    (tag << TAG_SHIFT) | key.pack()
}

/// Setup flag sets tried in order, most capable first, with their names.
const SETUP_ATTEMPTS: [(&str, u8); 3] = [
    ("SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN", 2),
    ("COOP_TASKRUN", 1),
    ("none", 0),
];

/// The uring driver.
pub(crate) struct Uring {
    table: InFlight,
    probe: Probe,
    native_epoll_wait: bool,
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
    setup: &'static str,
}

impl Uring {
    /// Opens a ring per `config`; errors say why io_uring cannot be used here.
    pub fn open(config: &Settings, wake: Arc<WakeFd>) -> io::Result<Uring> {
        if fault::hit(Fault::SetupFails) {
            // Injected: the answer a ring over the memlock limit gets.
            return Err(describe_setup_error(io::Error::from_raw_os_error(
                libc::ENOMEM,
            )));
        }
        let (ring, setup) = build_ring(config)?;
        let params = ring.params();
        if !params.is_feature_nodrop() || !params.is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks FEAT_NODROP or FEAT_EXT_ARG (kernel older than 5.11)",
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let native_epoll_wait =
            !config.emulate_epoll_wait && probe.is_supported(opcode::EpollWait::CODE);
        let cq = ring.params().cq_entries() as usize;
        let files = Files::open(&ring);
        let mut uring = Uring {
            table: InFlight {
                ring,
                slots: Slab::with_capacity(config.in_flight_max),
            },
            probe,
            native_epoll_wait,
            wake,
            woken: false,
            cqes: Vec::with_capacity(cq.max(64)),
            cancel_results: Vec::with_capacity(64),
            rearms: Vec::with_capacity(64),
            timers: Timers::new(),
            cancel_scratch: (Vec::with_capacity(64), Vec::with_capacity(64)),
            by_fd: ByFd::default(),
            files,
            broken: None,
            setup,
        };
        uring.arm_wake(&mut VecDeque::new())?;
        Ok(uring)
    }

    /// A line for `Ring::describe`.
    pub fn describe(&self) -> String {
        let p = self.table.ring.params();
        format!(
            "uring (setup {}, sq {}, cq {}, EpollWait {}, {})",
            self.setup,
            p.sq_entries(),
            p.cq_entries(),
            if self.native_epoll_wait {
                "native"
            } else {
                "poll + epoll_wait"
            },
            self.files.describe()
        )
    }

    /// The backend's own counters: none on io_uring (the ring counts submissions itself).
    pub fn stats(&self) -> Stats {
        Stats::default()
    }

    pub fn in_flight(&self) -> usize {
        self.table.slots.len()
    }

    fn check_broken(&self) -> io::Result<()> {
        match &self.broken {
            Some(why) => Err(io::Error::other(format!("ring is broken: {why}"))),
            None => Ok(()),
        }
    }

    pub fn submit(
        &mut self,
        sub: Submission,
        user_data: u64,
        out: &mut VecDeque<Completion>,
    ) -> Result<OpId, SubmitError> {
        let Submission { op, deadline } = sub;
        if let Err(e) = self.check_broken().and_then(|()| self.check_supported(&op)) {
            return Err(SubmitError::new(e, op));
        }
        let mut op = op;
        // The clock is read only for ops that need it (a timer, a deadline).
        let now = (deadline.is_some() || matches!(op, Op::Timeout(_))).then(Instant::now);
        if let (Op::Timeout(t), Some(now)) = (&mut op, now) {
            t.when = crate::op::Deadline::At(t.when.instant(now));
        }
        let slot = Slot::new(
            op,
            user_data,
            deadline.zip(now).map(|(d, now)| d.instant(now)),
        );
        // An emulated EpollWait (a poll of its fd) first checks that the fd is an epoll
        // instance, as the native op would.
        let refused = if let (Op::EpollWait(o), false) = (&slot.op, self.native_epoll_wait) {
            crate::sys::epoll_check(o.epfd, self.wake.raw()).err()
        } else {
            None
        };
        let fd = slot.op.fd();
        let key = match self.table.slots.insert(slot) {
            Ok(key) => key,
            Err(slot) => return Err(SubmitError::full(self.table.slots.capacity(), slot.op)),
        };
        self.by_fd.add(fd, key);
        if let Some(e) = refused {
            // As the native EPOLL_WAIT would: the op ends at once with the error.
            let slot = self.table.slots.get_mut(key).expect("slot just inserted");
            slot.main_res = Some(-e.raw_os_error().unwrap_or(libc::EINVAL));
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

    fn check_supported(&self, op: &Op) -> io::Result<()> {
        let Some(code) = lower::opcode_of(op, self.native_epoll_wait) else {
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
    fn arm(
        &mut self,
        key: Key,
        now: Option<Instant>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<()> {
        // Unregistrations posted from other threads apply before any fd is looked up.
        self.apply_unregistered();
        let native = self.native_epoll_wait;
        let slot = self.table.slots.get_mut(key).expect("arming a live slot");
        let needs_clock = slot.deadline.is_some() || matches!(slot.op, Op::Timeout(_));
        let now = now.or_else(|| needs_clock.then(Instant::now));
        let main = match lower::lower(slot, &self.files, user_data(TAG_MAIN, key), native, now) {
            Lowered::Sqe(main) => main,
            Lowered::Timer(at) => {
                slot.rearm_pending = false;
                // A deadline before the timer ends it the same way: -ETIME, `TimedOut`.
                let at = slot.deadline.map_or(at, |d| d.min(at));
                slot.timer = Some(self.timers.arm(at, key, Fire::Timeout));
                return Ok(());
            }
        };
        // A re-armed emulated EpollWait is held by no request until its SQE is queued: the
        // flag is cleared only then (if making room fails, a cancel still finds it ours).
        let Some(deadline) = slot.deadline else {
            // The common case: one SQE, pushed at once if the queue has room.
            // SAFETY: `main` was lowered from slot `key`, live until its CQEs are reaped.
            #[allow(unsafe_code)]
            let pushed = unsafe { self.table.push(std::slice::from_ref(&main)) };
            if !pushed {
                self.ensure_sq_room(1, out)?;
                // SAFETY: as above; the slot's memory stayed put while room was made.
                #[allow(unsafe_code)]
                let pushed = unsafe { self.table.push(&[main]) };
                assert!(pushed, "SQ room was ensured");
            }
            self.table.slots.get_mut(key).expect("armed").rearm_pending = false;
            return Ok(());
        };
        self.ensure_sq_room(2, out)?;
        let slot = self.table.slots.get_mut(key).expect("arming a live slot");
        slot.aux.link_ts = lower::timespec_until(deadline, now.unwrap_or_else(Instant::now));
        slot.links_pending += 1;
        let link = opcode::LinkTimeout::new(&slot.aux.link_ts)
            .build()
            .user_data(user_data(TAG_LINK, key));
        // SAFETY: `main` was lowered from slot `key`; `link` names the slot's `aux.link_ts`;
        // the slot lives until both CQEs are reaped (`links_pending`).
        #[allow(unsafe_code)]
        let pushed = unsafe { self.table.push(&[main.flags(Flags::IO_LINK), link]) };
        assert!(pushed, "SQ room was ensured");
        self.table.slots.get_mut(key).expect("armed").rearm_pending = false;
        Ok(())
    }

    fn arm_wake(&mut self, out: &mut VecDeque<Completion>) -> io::Result<()> {
        self.ensure_sq_room(1, out)?;
        let entry = opcode::PollAdd::new(Fd(self.wake.raw()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(TAG_WAKE << TAG_SHIFT);
        // SAFETY: a poll names no memory.
        #[allow(unsafe_code)]
        let pushed = unsafe { self.table.push(&[entry]) };
        assert!(pushed, "SQ room was ensured");
        Ok(())
    }

    /// Makes room for `n` SQEs by submitting what is queued.
    fn ensure_sq_room(&mut self, n: usize, out: &mut VecDeque<Completion>) -> io::Result<()> {
        while self.table.sq_room() < n {
            self.enter(0, None)?;
            self.reap(out);
        }
        Ok(())
    }

    /// One `io_uring_enter`: submits what is queued and waits for `want` CQEs (bounded by
    /// `timeout`). Interruptions, expiry and backpressure are normal returns: callers loop.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<()> {
        self.check_broken()?;
        let res = if fault::hit(Fault::SubmitBusy) {
            Err(io::Error::from_raw_os_error(libc::EBUSY))
        } else if want > 0 && fault::hit(Fault::WaitInterrupted) {
            Err(io::Error::from_raw_os_error(libc::EINTR))
        } else {
            self.enter_now(want, timeout)
        };
        match res {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN) => Ok(()),
                Some(libc::EBADR) => {
                    let why = "the kernel dropped a completion (EBADR)".to_string();
                    tracing::error!("{why}; tearing the ring down");
                    self.broken = Some(why);
                    self.check_broken()
                }
                _ => Err(e),
            },
        }
    }

    /// The system call itself: submit, and wait for `want` CQEs up to `timeout`.
    fn enter_now(&mut self, want: usize, timeout: Option<Duration>) -> io::Result<usize> {
        match timeout {
            None => self.table.ring.submit_and_wait(want),
            Some(t) => {
                let ts = lower::timespec(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.table.ring.submitter().submit_with_args(want, &args)
            }
        }
    }

    /// Takes every CQE the kernel has posted and processes it.
    fn reap(&mut self, out: &mut VecDeque<Completion>) {
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
            if one {
                break;
            }
        }
        self.cqes = cqes;
    }

    fn on_cqe(&mut self, ud: u64, res: i32, flags: u32, out: &mut VecDeque<Completion>) {
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

    fn on_main(&mut self, key: Key, mut res: i32, flags: u32, out: &mut VecDeque<Completion>) {
        let native = self.native_epoll_wait;
        let Some(slot) = self.table.slots.get_mut(key) else {
            tracing::warn!(?key, "CQE for a finished op");
            return;
        };
        if cqueue::more(flags) {
            let id = OpId(key.pack());
            let result = raw_result(res);
            out.push_back(Completion {
                id,
                user_data: slot.user_data,
                result,
                more: true,
                output: Default::default(),
            });
            return;
        }
        if let (Op::EpollWait(o), false, true) = (&mut slot.op, native, res >= 0) {
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
        slot.main_res = Some(res);
        self.try_finish(key, out);
    }

    /// Delivers slot `key`'s final completion if the kernel is done with it.
    fn try_finish(&mut self, key: Key, out: &mut VecDeque<Completion>) {
        match self.table.slots.get(key) {
            Some(slot) if !slot.kernel_holds() => self.by_fd.remove(slot.op.fd(), key),
            _ => return,
        }
        // The op is taken out in place; the rest of the slot is dropped where it is.
        let (op, res, user_data) = self
            .table
            .slots
            .remove_with(key, |slot| {
                let mut res = slot.main_res.expect("finished slots have a result");
                if res == -libc::ECANCELED && slot.link_fired && !slot.user_cancelled {
                    res = -libc::ETIME;
                }
                let op = std::mem::replace(&mut slot.op, Op::Nop(crate::op::Nop));
                (op, res, slot.user_data)
            })
            .expect("checked live");
        let (result, output) = inflight::complete(op, res);
        out.push_back(Completion {
            id: OpId(key.pack()),
            user_data,
            result,
            more: false,
            output,
        });
    }

    /// Ends every `Timeout` op that is due with `-ETIME`.
    fn fire_timers(&mut self, out: &mut VecDeque<Completion>) {
        if self.timers.next_due().is_none() {
            return;
        }
        let now = Instant::now();
        while let Some((key, seq, _)) = self.timers.pop_due(now) {
            match self.table.slots.get_mut(key) {
                Some(slot) if slot.timer == Some(seq) => {
                    slot.timer = None;
                    slot.main_res = Some(-libc::ETIME);
                }
                // A stale entry: its timer was cancelled.
                _ => continue,
            }
            self.timers.fired();
            self.try_finish(key, out);
        }
    }

    /// Ends slot `key`'s `Timeout` op `ECANCELED` if its timer is armed; `false` if it is not a
    /// timer.
    fn cancel_timer(&mut self, key: Key, out: &mut VecDeque<Completion>) -> bool {
        let Some(slot) = self.table.slots.get_mut(key) else {
            return false;
        };
        if slot.timer.take().is_none() {
            return false;
        }
        slot.main_res = Some(-libc::ECANCELED);
        slot.user_cancelled = true;
        let slots = &self.table.slots;
        self.timers
            .disarm(|k, seq| slots.get(k).is_some_and(|s| s.timer == Some(seq)));
        self.try_finish(key, out);
        true
    }

    /// Re-arms emulated `EpollWait`s whose `epoll_wait(.., 0)` found nothing.
    fn run_rearms(&mut self, out: &mut VecDeque<Completion>) -> io::Result<()> {
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
        out: &mut VecDeque<Completion>,
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
            let now = Instant::now();
            let mut left = match deadline {
                Some(d) => match d.checked_duration_since(now) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break,
                },
                None => None,
            };
            if let Some(due) = self.timers.next_due() {
                let until = due.saturating_duration_since(now);
                if until.is_zero() {
                    continue;
                }
                left = Some(left.map_or(until, |l| l.min(until)));
            }
            self.enter(1, left)?;
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

    pub fn cancel(
        &mut self,
        id: OpId,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<CancelOutcome> {
        self.check_broken()?;
        let key = Key::unpack(id.0);
        match self.table.slots.get(key) {
            None => return Ok(CancelOutcome::NotFound),
            Some(slot) if slot.main_res.is_some() || slot.cancel_answered => {
                return Ok(CancelOutcome::TooLate)
            }
            // `cancel_nowait` asked first; its request decides how the op ends, this one is
            // too late (as on the other backends, where that request ended the op at once).
            Some(slot) if slot.discarded => return Ok(CancelOutcome::TooLate),
            Some(_) => {}
        }
        if self.cancel_timer(key, out) {
            return Ok(CancelOutcome::Cancelled);
        }
        self.cancel_results.clear();
        if !self.push_cancel(key, out)? {
            return Ok(CancelOutcome::TooLate);
        }
        self.await_cancels(1, out)?;
        let (_, res) = self.cancel_results[0];
        let outcome = self.cancel_outcome(key, res, out)?;
        self.answered(key);
        self.run_rearms(out)?;
        Ok(outcome)
    }

    /// Cancels every op on `fd` (or every op) and counts the outcomes.
    pub fn cancel_where(
        &mut self,
        fd: Option<i32>,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<CancelCount> {
        self.check_broken()?;
        let mut count = CancelCount::default();
        // Reused lists: a cancel by fd at every socket's close allocates nothing.
        let (mut targets, mut timers) = std::mem::take(&mut self.cancel_scratch);
        targets.clear();
        timers.clear();
        // Only `fd`'s own slots are looked at (see `by_fd.rs`).
        match fd {
            Some(fd) => targets.extend_from_slice(self.by_fd.keys(fd)),
            None => targets.extend(self.table.slots.iter().map(|(key, _)| key)),
        }
        let slots = &self.table.slots;
        targets.retain(|&key| {
            let slot = slots.get(key).expect("listed slots are live");
            if slot.main_res.is_some() || slot.cancel_answered || slot.discarded {
                count.too_late += 1;
                false
            } else if slot.timer.is_some() {
                timers.push(key);
                false
            } else {
                true
            }
        });
        for &key in &timers {
            if self.cancel_timer(key, out) {
                count.cancelled += 1;
            }
        }
        self.cancel_results.clear();
        let mut pushed = 0;
        for &key in &targets {
            match self.push_cancel(key, out) {
                Ok(true) => pushed += 1,
                Ok(false) => count.too_late += 1,
                Err(e) => {
                    self.cancel_scratch = (targets, timers);
                    return Err(e);
                }
            }
        }
        self.cancel_scratch = (targets, timers);
        self.await_cancels(pushed, out)?;
        let results = std::mem::take(&mut self.cancel_results);
        for &(key, res) in &results {
            match self.cancel_outcome(key, res, out)? {
                CancelOutcome::Cancelled => count.cancelled += 1,
                _ => count.too_late += 1,
            }
            self.answered(key);
        }
        self.cancel_results = results;
        self.run_rearms(out)?;
        Ok(count)
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

    /// Asks for op `id` to end early without waiting for the kernel's answer: the
    /// `ASYNC_CANCEL` rides in the next submission, and the op's final completion says how it
    /// ended. A timer ends at once.
    pub fn cancel_nowait(&mut self, id: OpId, out: &mut VecDeque<Completion>) -> io::Result<()> {
        self.check_broken()?;
        let key = Key::unpack(id.0);
        match self.table.slots.get_mut(key) {
            None => return Ok(()),
            Some(slot) if slot.main_res.is_some() || slot.cancel_answered || slot.discarded => {
                return Ok(())
            }
            // An emulated EpollWait between its poll and its re-arm: no request to cancel.
            Some(slot) if slot.rearm_pending => {
                slot.rearm_pending = false;
                slot.user_cancelled = true;
                slot.main_res = Some(-libc::ECANCELED);
                self.try_finish(key, out);
                return Ok(());
            }
            Some(_) => {}
        }
        if self.cancel_timer(key, out) {
            return Ok(());
        }
        // Marked first: making room for the cancel may reap this op's own CQE, and an emulated
        // EpollWait that finds nothing must then end instead of being re-armed.
        if let Some(slot) = self.table.slots.get_mut(key) {
            slot.discarded = true;
        }
        self.push_cancel(key, out)?;
        self.end_discarded_rearm(key, out);
        Ok(())
    }

    /// Ends slot `key` `ECANCELED` if it is a discarded emulated `EpollWait` waiting to be
    /// re-armed (no request of it is in the kernel, and nobody wants it any more).
    fn end_discarded_rearm(&mut self, key: Key, out: &mut VecDeque<Completion>) {
        if let Some(slot) = self.table.slots.get_mut(key) {
            if slot.discarded && slot.rearm_pending {
                slot.rearm_pending = false;
                slot.user_cancelled = true;
                slot.main_res = Some(-libc::ECANCELED);
                self.try_finish(key, out);
            }
        }
    }

    /// Records that a cancel has answered for slot `key` (if it is still there).
    fn answered(&mut self, key: Key) {
        if let Some(slot) = self.table.slots.get_mut(key) {
            slot.cancel_answered = true;
        }
    }

    /// Queues an `ASYNC_CANCEL` for slot `key`; `false` if making room for it let the op
    /// finish first (nothing to cancel then: its result stands).
    fn push_cancel(&mut self, key: Key, out: &mut VecDeque<Completion>) -> io::Result<bool> {
        self.ensure_sq_room(1, out)?;
        match self.table.slots.get_mut(key) {
            Some(slot) if slot.main_res.is_none() => slot.cancels_pending += 1,
            _ => return Ok(false),
        }
        let entry = opcode::AsyncCancel::new(user_data(TAG_MAIN, key))
            .build()
            .user_data(user_data(TAG_CANCEL, key));
        // SAFETY: a cancel names no memory (its target is a `user_data` value).
        #[allow(unsafe_code)]
        let pushed = unsafe { self.table.push(&[entry]) };
        assert!(pushed, "SQ room was ensured");
        Ok(true)
    }

    fn await_cancels(&mut self, n: usize, out: &mut VecDeque<Completion>) -> io::Result<()> {
        loop {
            self.reap(out);
            if self.cancel_results.len() >= n {
                return Ok(());
            }
            self.enter(1, None)?;
        }
    }

    /// Maps a cancel CQE's result to what the caller is told.
    fn cancel_outcome(
        &mut self,
        key: Key,
        res: i32,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<CancelOutcome> {
        match res {
            0 => Ok(CancelOutcome::Cancelled),
            _ if res == -libc::ENOENT || res == -libc::EALREADY => {
                // An emulated EpollWait between its poll and its re-arm is held by no one but
                // us: end it here.
                if let Some(slot) = self.table.slots.get_mut(key) {
                    if slot.rearm_pending {
                        slot.rearm_pending = false;
                        slot.user_cancelled = true;
                        slot.main_res = Some(-libc::ECANCELED);
                        self.try_finish(key, out);
                        return Ok(CancelOutcome::Cancelled);
                    }
                }
                // Not ended at once: the op was completing (its CQE is on its way) or runs on
                // io-wq, where the kernel has flagged it all the same (the cancel goes on to
                // the poll and timeout tables, which turn EALREADY into ENOENT), so it may
                // still end ECANCELED — its CQE may even come before the cancel's. Its own
                // result decides the answer.
                self.settle_running(key, out)
            }
            _ => Err(io::Error::from_raw_os_error(-res)),
        }
    }

    /// The cancel did not end the op at once, but the op has not finished either: it may be
    /// running on an io-wq worker, which the kernel has flagged and signalled, so it may yet
    /// end `ECANCELED` — or with its real result. Waits for its own completion to give the
    /// answer that is true: `Cancelled` if it ended `ECANCELED`, `TooLate` otherwise.
    fn settle_running(
        &mut self,
        key: Key,
        out: &mut VecDeque<Completion>,
    ) -> io::Result<CancelOutcome> {
        let id = OpId(key.pack());
        loop {
            match self.table.slots.get_mut(key) {
                Some(slot) if slot.main_res.is_none() => {}
                Some(slot) => {
                    let cancelled = slot.main_res == Some(-libc::ECANCELED);
                    slot.user_cancelled |= cancelled;
                    return Ok(if cancelled {
                        CancelOutcome::Cancelled
                    } else {
                        CancelOutcome::TooLate
                    });
                }
                None => {
                    let last = out.iter().rev().find(|c| c.id == id && !c.more);
                    return Ok(match last {
                        Some(c) if c.is_cancelled() => CancelOutcome::Cancelled,
                        _ => CancelOutcome::TooLate,
                    });
                }
            }
            self.enter(1, None)?;
            self.reap(out);
        }
    }

    /// Drop: cancel everything, drain every CQE, and only then let buffers go.
    pub fn shutdown(&mut self, out: &mut VecDeque<Completion>) {
        if self.broken.is_none() {
            if let Err(e) = self.cancel_where(None, out) {
                tracing::error!(error = %e, "cancel on drop failed");
            }
            let start = Instant::now();
            while !self.table.slots.is_empty() && self.broken.is_none() {
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
        self.leak_held_slots();
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

/// Creates the io_uring with the most capable setup flags this kernel takes.
fn build_ring(config: &Settings) -> io::Result<(IoUring, &'static str)> {
    let sq = config.entries.next_power_of_two().min(32_768);
    let cq = config
        .cq_entries
        .unwrap_or(sq * 2)
        .next_power_of_two()
        .max(sq);
    let mut last_error = None;
    for (name, level) in SETUP_ATTEMPTS {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_clamp();
        if level >= 1 {
            builder.setup_coop_taskrun().setup_taskrun_flag();
        }
        if level >= 2 {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        match builder.build(sq) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_error = Some(e),
            Err(e) => return Err(describe_setup_error(e)),
        }
    }
    Err(describe_setup_error(
        last_error.expect("at least one attempt"),
    ))
}

/// Says why `io_uring_setup` failed, in the machine's terms.
pub(crate) fn describe_setup_error(e: io::Error) -> io::Error {
    let disabled = crate::sys::read_sysctl("/proc/sys/kernel/io_uring_disabled");
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring_setup: ENOSYS, kernel built without io_uring".to_string(),
        Some(libc::EPERM) if disabled == Some(2) => {
            "io_uring_setup: EPERM, io_uring_disabled=2 (sysctl kernel.io_uring_disabled)"
                .to_string()
        }
        Some(libc::EPERM) if disabled == Some(1) => {
            "io_uring_setup: EPERM, io_uring_disabled=1 and this process is not in io_uring_group"
                .to_string()
        }
        Some(libc::EPERM) => {
            "io_uring_setup: EPERM, refused by a seccomp profile or LSM".to_string()
        }
        Some(libc::ENOMEM) => format!(
            "io_uring_setup: ENOMEM, ring memory exceeds the memlock limit ({})",
            crate::sys::memlock_limit()
                .map_or("unknown".into(), |(soft, _)| format!("{soft} bytes"))
        ),
        _ => format!("io_uring_setup: {e}"),
    };
    io::Error::new(e.kind(), why)
}

/// The opcodes oneloop uses and whether this kernel has them, for `oneloop probe`.
pub(crate) fn probe_opcodes() -> io::Result<Vec<(&'static str, bool)>> {
    let ring = IoUring::new(2).map_err(describe_setup_error)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    // The driver's own requests, then every op's.
    let own: &[(&str, u8)] = &[
        ("LINK_TIMEOUT", opcode::LinkTimeout::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ];
    let mut ops: Vec<(&str, u8)> = own.to_vec();
    for &(name, code) in Op::URING_OPCODES.iter().copied().flatten() {
        if !ops.iter().any(|&(n, _)| n == name) {
            ops.push((name, code));
        }
    }
    Ok(ops
        .iter()
        .map(|&(name, code)| (name, probe.is_supported(code)))
        .collect())
}
