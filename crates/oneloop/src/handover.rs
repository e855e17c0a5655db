//! [`Handover`]: an op's completions carried to a consumer on any thread.
//!
//! A ring belongs to its thread, and so do its claims. When the consumer of a running op moves
//! to another thread (a socket sent there, read there), [`Waker::hand_over`] asks the op's
//! ring to end the op and to put its completions — those waiting in the ring and those still
//! to come, up to the final one — into a `Handover` the consumer holds, in order. Nothing the
//! op produced is lost on the way.
//!
//! [`Waker::hand_over`]: crate::Waker::hand_over
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::completion::Completion;

/// Where a handed-over op's completions go (see the [module](self)). `Send` and `Sync`.
pub struct Handover {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Completion>,
    waker: Option<Waker>,
    /// No more will come: the final completion is in `queue` (or taken), or the ring is gone.
    closed: bool,
}

impl fmt::Debug for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Handover")
            .field("queued", &state.queue.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl Handover {
    /// An empty handover, to give to [`Waker::hand_over`](crate::Waker::hand_over).
    pub fn new() -> Arc<Handover> {
        Arc::new(Handover {
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next completion: `Ready(Some(..))`, oldest first, the op's final one last;
    /// `Ready(None)` once everything was taken (after the final one, or if the op's ring
    /// ended without delivering it); `Pending` until something comes (`cx`'s waker is woken
    /// then, from the ring's thread).
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let mut state = self.lock();
        if let Some(c) = state.queue.pop_front() {
            return Poll::Ready(Some(c));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The ring's side: one more completion of the op.
    pub(crate) fn push(&self, c: Completion) {
        let waker = {
            let mut state = self.lock();
            state.closed |= !c.more;
            state.queue.push_back(c);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The ring's side: nothing more will come.
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}
