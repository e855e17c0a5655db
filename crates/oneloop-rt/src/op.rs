//! Op futures: each I/O call submits one op and awaits its final completion.
//!
//! **One record per op.** A future claims its op in the ring ([`Ring::set_waker`]): the final
//! completion stays in the op's own slot, beside the task's waker, until the future takes it
//! ([`Ring::take`], O(1)). The runtime keeps no table of its own; a wake goes straight from
//! the ring to the task.
//!
//! **Dropping a future cancels its op.** The future *abandons* it ([`Ring::abandon`]): the ring
//! keeps the buffers until the final completion arrives, and then drops that completion —
//! freeing the buffers and closing any descriptor it carries (an accepted socket, an opened
//! file), so nothing leaks and no memory is freed while the kernel may write it. An id kept
//! past its runtime's life carries another ring's tag: a later runtime's ring ignores it.
//!
//! [`Ring::set_waker`]: oneloop::Ring::set_waker
//! [`Ring::take`]: oneloop::Ring::take
//! [`Ring::abandon`]: oneloop::Ring::abandon
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use oneloop::{Completion, Op, OpId, Output, Submission};

use crate::executor::{op_budget_left, spend_op_budget, try_with_context, with_context};

/// Where an op future is.
enum Stage {
    /// Not yet accepted by the ring (or refused for want of room: it retries).
    New(Op),
    /// In flight under this id, claimed in the ring of executor `executor`.
    Running { id: OpId, executor: u64 },
    /// Finished at its first poll past the task's op budget: handed out at the next poll, so
    /// the task yields first.
    Finished(Completion),
    /// Its completion was handed out.
    Over,
}

/// Submits `op` and waits for its final completion; a refused submission comes back as
/// `Err` with the op, so its buffers are never lost.
pub(crate) struct Submit {
    stage: Stage,
}

impl Submit {
    pub(crate) fn new(op: impl Into<Op>) -> Submit {
        Submit {
            stage: Stage::New(op.into()),
        }
    }
}

impl Future for Submit {
    type Output = Result<Completion, (io::Error, Op)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match std::mem::replace(&mut this.stage, Stage::Over) {
            Stage::Running { id, executor } => with_context(|ctx| {
                assert_eq!(
                    executor, ctx.id,
                    "oneloop-rt: an op future polled under another runtime than the one it started on"
                );
                match ctx.ring_mut().poll_take(id, cx.waker()) {
                    Poll::Ready(c) => Poll::Ready(Ok(c)),
                    Poll::Pending => {
                        this.stage = Stage::Running { id, executor };
                        Poll::Pending
                    }
                }
            }),
            Stage::New(op) => with_context(|ctx| {
                let mut ring = ctx.ring_mut();
                match ring.submit(Submission::from(op), 0) {
                    // Finished inside submit (epoll and aio often do): ready at the first poll
                    // while the task's op budget lasts; past it, the task yields first.
                    Ok(id) => match ring.take_completion(id) {
                        Some(c) if op_budget_left() => {
                            spend_op_budget();
                            Poll::Ready(Ok(c))
                        }
                        Some(c) => {
                            this.stage = Stage::Finished(c);
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                        None => {
                            ring.set_waker(id, cx.waker());
                            let executor = ctx.id;
                            this.stage = Stage::Running { id, executor };
                            Poll::Pending
                        }
                    },
                    Err(refused) => {
                        let error = io::Error::new(refused.error().kind(), refused.to_string());
                        if refused.error().kind() == io::ErrorKind::ResourceBusy {
                            // The ring is full: retry once completions make room.
                            this.stage = Stage::New(refused.into_op());
                            ctx.room_waiters.borrow_mut().push(cx.waker().clone());
                            return Poll::Pending;
                        }
                        Poll::Ready(Err((error, refused.into_op())))
                    }
                }
            }),
            Stage::Finished(c) => Poll::Ready(Ok(c)),
            Stage::Over => panic!("an op future polled after completion"),
        }
    }
}

impl Drop for Submit {
    fn drop(&mut self) {
        if let Stage::Running { id, executor } = self.stage {
            abandon(id, executor);
        }
    }
}

/// A future gave up on op `id` of executor `executor`'s ring: cancel it (its final
/// completion, when it comes, is dropped), or drop at once what already arrived. Nothing to do
/// if that executor is gone (its ring cancelled and drained the op when it shut down).
pub(crate) fn abandon(id: OpId, executor: u64) {
    try_with_context(|ctx| {
        if ctx.id != executor {
            return;
        }
        match ctx.try_ring_mut() {
            // (Fails only on a broken ring, which the next wait reports.)
            Some(mut ring) => {
                let _ = ring.abandon(id);
            }
            None => ctx.deferred_abandons.borrow_mut().push(id),
        }
    });
}

/// Submits a multishot `op` and yields each completion, the final one last.
pub(crate) struct Multishot {
    stage: Stage,
}

impl Multishot {
    pub(crate) fn new(op: impl Into<Op>) -> Multishot {
        Multishot {
            stage: Stage::New(op.into()),
        }
    }

    /// The next completion; `None` after the final one.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Completion, io::Error>>> {
        with_context(|ctx| {
            let mut ring = ctx.ring_mut();
            let (id, executor) = match std::mem::replace(&mut self.stage, Stage::Over) {
                Stage::Over | Stage::Finished(_) => return Poll::Ready(None),
                Stage::Running { id, executor } => {
                    assert_eq!(
                        executor, ctx.id,
                        "oneloop-rt: a stream polled under another runtime than the one it started on"
                    );
                    (id, executor)
                }
                Stage::New(op) => match ring.submit(Submission::from(op), 0) {
                    Ok(id) => {
                        // Claimed at once: what it already produced moves into its slot.
                        ring.set_waker(id, cx.waker());
                        (id, ctx.id)
                    }
                    Err(refused) => {
                        return Poll::Ready(Some(Err(io::Error::new(
                            refused.error().kind(),
                            refused.to_string(),
                        ))));
                    }
                },
            };
            match ring.take(id) {
                Some(c) => {
                    if c.is_more() {
                        self.stage = Stage::Running { id, executor };
                    }
                    Poll::Ready(Some(Ok(c)))
                }
                None => {
                    ring.set_waker(id, cx.waker());
                    self.stage = Stage::Running { id, executor };
                    Poll::Pending
                }
            }
        })
    }
}

impl Drop for Multishot {
    fn drop(&mut self) {
        if let Stage::Running { id, executor } = self.stage {
            abandon(id, executor);
        }
    }
}

/// Runs `op` to its final completion.
pub(crate) async fn run(op: impl Into<Op>) -> Result<Completion, (io::Error, Op)> {
    Submit::new(op).await
}

/// An op's count (bytes, events) and what it hands back, whether it ran or was refused.
pub(crate) fn split(done: Result<Completion, (io::Error, Op)>) -> (io::Result<usize>, Output) {
    match done {
        Ok(c) => {
            let (result, output) = c.into_parts();
            (result.map(|n| n as usize), output)
        }
        Err((e, op)) => (Err(e), op.into_output()),
    }
}

/// The typed result of an op that hands back one buffer of type `B`.
pub(crate) fn with_buf<B: oneloop::IoBuf>(
    done: Result<Completion, (io::Error, Op)>,
) -> (io::Result<usize>, B) {
    let (result, output) = split(done);
    match output {
        Output::Buf(buf) => (result, typed(buf)),
        other => unreachable!("a buffer op returned {other:?}"),
    }
}

/// A buffer back in the type it was given as.
pub(crate) fn typed<B: oneloop::IoBuf>(buf: oneloop::Buf) -> B {
    B::from_buf(buf).unwrap_or_else(|_| unreachable!("an op returns the buffer it was given"))
}

/// The typed result of an op with no buffer.
pub(crate) fn plain(done: Result<Completion, (io::Error, Op)>) -> io::Result<u32> {
    match done {
        Ok(c) => c.into_parts().0,
        Err((e, _)) => Err(e),
    }
}

/// Copies an `io::Error` from a completion (raw OS errors stay raw).
pub(crate) fn clone_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}
