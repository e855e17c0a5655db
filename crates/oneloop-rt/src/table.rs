//! The op table: one entry per op this thread's futures have in flight, indexed by the
//! `user_data` they submit with; the executor hands each completion to its entry.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::task::Waker;

use oneloop::{Completion, OpId, Ring};

/// One slot of the op table.
pub(crate) enum OpRecord {
    Free {
        next: Option<usize>,
    },
    /// Submitted; the future waits.
    Waiting {
        id: OpId,
        waker: Option<Waker>,
    },
    /// The final completion arrived; the future will take it.
    Done(Completion),
    /// A multishot op: completions queue up until the stream takes them.
    Stream {
        id: OpId,
        waker: Option<Waker>,
        queue: VecDeque<Completion>,
        ended: bool,
    },
    /// The future was dropped: the final completion, when it comes, is dropped.
    Orphaned,
}

/// Every op this thread's futures have in flight, indexed by the `user_data` they submit with.
#[derive(Default)]
pub(crate) struct OpTable {
    pub(crate) entries: Vec<OpRecord>,
    free: Option<usize>,
    /// Futures waiting for room because the ring's in-flight cap was reached.
    pub(crate) room_waiters: Vec<Waker>,
    /// Cancels asked for while the ring was busy; sent after the current dispatch.
    pub(crate) deferred_cancels: Vec<OpId>,
}

impl OpTable {
    pub(crate) fn alloc(&mut self) -> usize {
        match self.free {
            Some(index) => {
                let OpRecord::Free { next } = self.entries[index] else {
                    unreachable!("free list")
                };
                self.free = next;
                index
            }
            None => {
                self.entries.push(OpRecord::Free { next: None });
                self.entries.len() - 1
            }
        }
    }

    pub(crate) fn release(&mut self, index: usize) {
        self.entries[index] = OpRecord::Free { next: self.free };
        self.free = Some(index);
    }

    /// Hands a completion to its slot.
    pub(crate) fn complete(&mut self, c: Completion) {
        let index = c.user_data() as usize;
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        match entry {
            OpRecord::Waiting { waker, .. } => {
                let waker = waker.take();
                *entry = OpRecord::Done(c);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            OpRecord::Stream {
                waker,
                queue,
                ended,
                ..
            } => {
                *ended |= !c.is_more();
                queue.push_back(c);
                if let Some(w) = waker.take() {
                    w.wake();
                }
            }
            OpRecord::Orphaned => {
                if !c.is_more() {
                    self.release(index);
                }
                // `c` drops here: buffers freed, any descriptor closed.
            }
            OpRecord::Free { .. } | OpRecord::Done(_) => {}
        }
    }

    /// After a dispatch: send deferred cancels, and let futures waiting for room retry.
    /// Whether [`after_dispatch`](Self::after_dispatch) has anything to do.
    pub(crate) fn has_after_dispatch(&self) -> bool {
        !self.deferred_cancels.is_empty() || !self.room_waiters.is_empty()
    }

    pub(crate) fn after_dispatch(&mut self, ring: &mut Ring) {
        for id in self.deferred_cancels.drain(..) {
            // Fails only on a broken ring, which the next wait reports.
            let _ = ring.cancel_nowait(id);
        }
        for waker in self.room_waiters.drain(..) {
            waker.wake();
        }
    }

    /// Empties the table (at executor teardown), handing back what it held.
    pub(crate) fn take_all(&mut self) -> (Vec<OpRecord>, Vec<Waker>) {
        self.free = None;
        (
            std::mem::take(&mut self.entries),
            std::mem::take(&mut self.room_waiters),
        )
    }
}
