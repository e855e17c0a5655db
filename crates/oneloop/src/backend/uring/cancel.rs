//! Cancels on io_uring: `ASYNC_CANCEL` by `user_data`, awaited synchronously (`cancel`,
//! `cancel_where`), or riding in the next submission (`cancel_nowait`). `0` → `Cancelled`;
//! `-ENOENT`/`-EALREADY` → the op was completing or runs on io-wq, and its own completion
//! decides the answer. A `Timeout` (a timer in the ring's heap) is cancelled in user space.
#![forbid(unsafe_code)]

use std::io;

use super::{user_data, Uring, TAG_CANCEL, TAG_MAIN};
use crate::completion::{CancelCount, CancelOutcome};
use crate::op::OpId;
use crate::sink::Sink;
use crate::slab::Key;

impl Uring {
    /// Whether live op `id` names a descriptor (by its number, unless it was registered when
    /// the request was made: counted either way).
    pub fn names_fd(&self, id: OpId) -> bool {
        self.table
            .slots
            .get(Key::unpack(id.0))
            .is_some_and(|s| s.op.fd().is_some())
    }

    /// Submits every queued request (reaping to make room when the kernel pushes back), so
    /// none still names a descriptor only by its number.
    pub fn submit_queued(&mut self, out: &mut Sink) -> io::Result<()> {
        while !self.table.ring.submission().is_empty() {
            self.enter(0, None)?;
            self.reap(out);
        }
        Ok(())
    }

    /// Ends slot `key`'s `Timeout` op `ECANCELED` if its timer is armed; `false` if it is not a
    /// timer.
    pub(super) fn cancel_timer(&mut self, key: Key, out: &mut Sink) -> bool {
        let Some(slot) = self.table.slots.get_mut(key) else {
            return false;
        };
        if !std::mem::take(&mut slot.timer) {
            return false;
        }
        slot.main_res = Some(-libc::ECANCELED);
        slot.user_cancelled = true;
        let slots = &self.table.slots;
        self.timers
            .disarm(|k, _| slots.get(k).is_some_and(|s| s.timer));
        self.try_finish(key, out);
        true
    }

    pub fn cancel(&mut self, id: OpId, out: &mut Sink) -> io::Result<CancelOutcome> {
        self.check_broken()?;
        let key = Key::unpack(id.0);
        match self.table.slots.get(key) {
            None => return Ok(CancelOutcome::NotFound),
            // Its result is in (a zero-copy send's, its buffer still held): its end is decided.
            Some(slot)
                if slot.main_res.is_some()
                    || slot.cancel_answered
                    || slot.op.result_in().is_some() =>
            {
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
    pub fn cancel_where(&mut self, fd: Option<i32>, out: &mut Sink) -> io::Result<CancelCount> {
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
            if slot.main_res.is_some()
                || slot.cancel_answered
                || slot.discarded
                || slot.op.result_in().is_some()
            {
                count.too_late += 1;
                false
            } else if slot.timer {
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

    /// Asks for op `id` to end early without waiting for the kernel's answer: the
    /// `ASYNC_CANCEL` rides in the next submission, and the op's final completion says how it
    /// ended. A timer ends at once.
    pub fn cancel_nowait(&mut self, id: OpId, out: &mut Sink) -> io::Result<()> {
        self.check_broken()?;
        let key = Key::unpack(id.0);
        match self.table.slots.get_mut(key) {
            None => return Ok(()),
            Some(slot) if slot.main_res.is_some() || slot.cancel_answered || slot.discarded => {
                return Ok(())
            }
            // An op between two of its requests (an emulated EpollWait between its poll and
            // its re-arm, say): no request to cancel.
            Some(slot) if slot.rearm_pending => {
                slot.rearm_pending = false;
                slot.user_cancelled = true;
                slot.main_res = Some(slot.stopped());
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
    pub(super) fn end_discarded_rearm(&mut self, key: Key, out: &mut Sink) {
        if let Some(slot) = self.table.slots.get_mut(key) {
            if slot.discarded && slot.rearm_pending {
                slot.rearm_pending = false;
                slot.user_cancelled = true;
                slot.main_res = Some(slot.stopped());
                self.try_finish(key, out);
            }
        }
    }

    /// Records that a cancel has answered for slot `key` (if it is still there).
    pub(super) fn answered(&mut self, key: Key) {
        if let Some(slot) = self.table.slots.get_mut(key) {
            slot.cancel_answered = true;
        }
    }

    /// Queues an `ASYNC_CANCEL` for slot `key`; `false` if making room for it let the op
    /// finish first (nothing to cancel then: its result stands).
    pub(super) fn push_cancel(&mut self, key: Key, out: &mut Sink) -> io::Result<bool> {
        self.ensure_sq_room(1, out)?;
        match self.table.slots.get_mut(key) {
            Some(slot) if slot.main_res.is_none() => slot.cancels_pending += 1,
            _ => return Ok(false),
        }
        let target = user_data(TAG_MAIN, key);
        let pushed = self.table.push_cancel(target, user_data(TAG_CANCEL, key));
        assert!(pushed, "SQ room was ensured");
        Ok(true)
    }

    pub(super) fn await_cancels(&mut self, n: usize, out: &mut Sink) -> io::Result<()> {
        loop {
            self.reap(out);
            if self.cancel_results.len() >= n {
                return Ok(());
            }
            self.enter(1, None)?;
        }
    }

    /// Maps a cancel CQE's result to what the caller is told.
    pub(super) fn cancel_outcome(
        &mut self,
        key: Key,
        res: i32,
        out: &mut Sink,
    ) -> io::Result<CancelOutcome> {
        match res {
            // The request was cancelled; the op ends `ECANCELED` — unless it is an op of
            // several requests that had achieved something already (a `SendFile` that sent
            // bytes ends with them): its own end decides, and comes at once.
            0 => self.settle_running(key, out),
            _ if res == -libc::ENOENT || res == -libc::EALREADY => {
                // An op between two of its requests (an emulated EpollWait between its poll
                // and its re-arm, say) is held by no one but us: end it here.
                if let Some(slot) = self.table.slots.get_mut(key) {
                    if slot.rearm_pending {
                        slot.rearm_pending = false;
                        let res = slot.stopped();
                        slot.user_cancelled = res == -libc::ECANCELED;
                        slot.main_res = Some(res);
                        self.try_finish(key, out);
                        return Ok(if res == -libc::ECANCELED {
                            CancelOutcome::Cancelled
                        } else {
                            CancelOutcome::TooLate
                        });
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
    pub(super) fn settle_running(&mut self, key: Key, out: &mut Sink) -> io::Result<CancelOutcome> {
        let id = OpId(key.pack());
        loop {
            match self.table.slots.get_mut(key) {
                // Between two of its requests (its last one ended while we waited): no
                // request of it is in the kernel, and it is wanted no more: it ends here.
                Some(slot) if slot.main_res.is_none() && slot.rearm_pending => {
                    slot.rearm_pending = false;
                    slot.main_res = Some(slot.stopped());
                    continue;
                }
                // Its result is in and only the kernel's hold on its buffer keeps it (a
                // zero-copy send waiting for its notification, which may wait for the peer):
                // the result answers; the final completion comes with the notification.
                Some(slot) if slot.main_res.is_none() && slot.op.result_in().is_some() => {
                    // `ECANCELED` by this cancel, not by its deadline (then it ends `ETIME`).
                    let cancelled =
                        slot.op.result_in() == Some(-libc::ECANCELED) && !slot.link_fired;
                    slot.user_cancelled |= cancelled;
                    return Ok(if cancelled {
                        CancelOutcome::Cancelled
                    } else {
                        CancelOutcome::TooLate
                    });
                }
                Some(slot) if slot.main_res.is_none() => {}
                Some(slot) => {
                    let cancelled = slot.main_res == Some(-libc::ECANCELED);
                    slot.user_cancelled |= cancelled;
                    let outcome = if cancelled {
                        CancelOutcome::Cancelled
                    } else {
                        CancelOutcome::TooLate
                    };
                    self.try_finish(key, out);
                    return Ok(outcome);
                }
                None => {
                    let last = out.final_of(id);
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
}
