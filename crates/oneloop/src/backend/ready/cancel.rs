//! Cancels on the readiness backends: user-space and synchronous. A waiter or timer is
//! removed and ends `ECANCELED`; a pool job that has not started is reclaimed; one that is
//! running reports `TooLate` and its real result arrives; a request beneath is `B`'s to end.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::{Beneath, Ready, State, INLINE_ID};
use crate::completion::{CancelCount, CancelOutcome};
use crate::op::OpId;
use crate::sink::Sink;
use crate::slab::Key;

impl<B: Beneath> Ready<B> {
    /// Ends slot `key` early with `res` (`-ECANCELED` for a cancel, `-ETIME` for a deadline)
    /// if nobody else owns it by now.
    pub(super) fn end_early(&mut self, key: Key, res: i32, out: &mut Sink) -> CancelOutcome {
        let outcome = self.try_end_early(key, res, out);
        if outcome == CancelOutcome::TooLate && res == -libc::ECANCELED {
            if let Some(slot) = self.slots.get_mut(key) {
                slot.too_late = true;
            }
        }
        outcome
    }

    pub(super) fn try_end_early(&mut self, key: Key, res: i32, out: &mut Sink) -> CancelOutcome {
        let Some(slot) = self.slots.get(key) else {
            return CancelOutcome::NotFound;
        };
        if slot.too_late {
            return CancelOutcome::TooLate;
        }
        match &slot.state {
            State::Pool(job) => {
                if !self.pool.cancel(job) {
                    // Running. A job that only prepares a later step leaves the op undecided:
                    // it ends with `res` when the job returns.
                    if slot.pool_prepares && slot.ended_by.is_none() {
                        self.slot(key).ended_by = Some(res);
                        return CancelOutcome::Cancelled;
                    }
                    return CancelOutcome::TooLate;
                }
                let job = Arc::clone(job);
                let (work, _) = job.take().expect("a won cancel ends the job");
                self.slot(key).op = Some(work.into_op());
                self.complete(key, res, out);
            }
            State::Request(_) => return B::end_early(self, key, res, out),
            State::Fd(_) | State::Timer | State::Starting => self.complete(key, res, out),
        }
        CancelOutcome::Cancelled
    }

    pub fn cancel(&mut self, id: OpId, out: &mut Sink) -> io::Result<CancelOutcome> {
        if id.0 & INLINE_ID != 0 {
            // Finished at submission: its completion was queued then (the ring says TooLate
            // while it waits there).
            return Ok(CancelOutcome::NotFound);
        }
        Ok(self.end_early(Key::unpack(id.0), -libc::ECANCELED, out))
    }

    /// Cancels here never wait for the kernel: the answer is simply not needed.
    pub fn cancel_nowait(&mut self, id: OpId, out: &mut Sink) -> io::Result<()> {
        self.cancel(id, out).map(drop)
    }

    pub fn cancel_where(&mut self, fd: Option<RawFd>, out: &mut Sink) -> io::Result<CancelCount> {
        // A reused list: a cancel by fd at every socket's close allocates nothing.
        let mut targets = std::mem::take(&mut self.cancel_scratch);
        targets.clear();
        // Only `fd`'s own slots are looked at (see `by_fd.rs`).
        match fd {
            Some(fd) => targets.extend_from_slice(self.by_fd.keys(fd)),
            None => targets.extend(self.slots.iter().map(|(key, _)| key)),
        }
        let mut count = CancelCount::default();
        for &key in &targets {
            match self.end_early(key, -libc::ECANCELED, out) {
                CancelOutcome::Cancelled => count.cancelled += 1,
                _ => count.too_late += 1,
            }
        }
        self.cancel_scratch = targets;
        Ok(count)
    }
}
