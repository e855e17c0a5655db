//! Op futures: each I/O call submits one op and awaits its final completion.
//!
//! **Dropping a future cancels its op.** The op's slot becomes *orphaned*: the ring keeps the
//! buffers until the final completion arrives, and that completion is then dropped — freeing
//! the buffers and closing any descriptor it carries (an accepted socket, an opened file), so
//! nothing leaks and no memory is freed while the kernel may write it.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use oneloop::{Completion, Op, Output, Submission};

use crate::executor::{op_budget_left, spend_op_budget, try_with_context, with_context};
use crate::table::OpRecord;

/// Submits `op` and waits for its final completion; a refused submission comes back as
/// `Err` with the op, so its buffers are never lost.
pub(crate) struct Submit {
    op: Option<Op>,
    /// The op table slot, and the executor whose table it is.
    slot: Option<(usize, u64)>,
}

impl Submit {
    pub(crate) fn new(op: impl Into<Op>) -> Submit {
        Submit {
            op: Some(op.into()),
            slot: None,
        }
    }
}

impl Future for Submit {
    type Output = Result<Completion, (io::Error, Op)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        with_context(|ctx| {
            let mut ops = ctx.ops.borrow_mut();
            if let Some((index, executor)) = this.slot {
                assert_eq!(
                    executor, ctx.id,
                    "oneloop-rt: an op future polled under another runtime than the one it started on"
                );
                return match std::mem::replace(
                    &mut ops.entries[index],
                    OpRecord::Free { next: None },
                ) {
                    OpRecord::Done(c) => {
                        ops.release(index);
                        this.slot = None;
                        Poll::Ready(Ok(c))
                    }
                    OpRecord::Waiting { id, .. } => {
                        ops.entries[index] = OpRecord::Waiting {
                            id,
                            waker: Some(cx.waker().clone()),
                        };
                        Poll::Pending
                    }
                    _ => unreachable!("a submitted op's slot is Waiting or Done"),
                };
            }
            let op = this.op.take().expect("polled after completion");
            let index = ops.alloc();
            let mut ring = ctx.ring.borrow_mut();
            match ring.submit(Submission::from(op), index as u64) {
                // Finished inside submit (epoll and aio often do): ready at the first poll,
                // while the task's op budget lasts (then the completion takes the queue).
                Ok(id) => match op_budget_left().then(|| ring.take_completion(id)).flatten() {
                    Some(c) => {
                        spend_op_budget();
                        ops.release(index);
                        Poll::Ready(Ok(c))
                    }
                    None => {
                        ops.entries[index] = OpRecord::Waiting {
                            id,
                            waker: Some(cx.waker().clone()),
                        };
                        this.slot = Some((index, ctx.id));
                        Poll::Pending
                    }
                },
                Err(refused) => {
                    ops.release(index);
                    let error = io::Error::new(refused.error().kind(), refused.to_string());
                    if refused.error().kind() == io::ErrorKind::ResourceBusy {
                        // The ring is full: retry once completions make room.
                        this.op = Some(refused.into_op());
                        ops.room_waiters.push(cx.waker().clone());
                        return Poll::Pending;
                    }
                    Poll::Ready(Err((error, refused.into_op())))
                }
            }
        })
    }
}

impl Drop for Submit {
    fn drop(&mut self) {
        if let Some((index, executor)) = self.slot {
            orphan(index, executor);
        }
    }
}

/// A future gave up on slot `index` of executor `executor`'s table: cancel its op (the final
/// completion, when it comes, is dropped), or drop at once what already arrived. Nothing to do
/// if that executor is gone (its ring cancelled and drained the op when it shut down) and
/// another runs here now.
fn orphan(index: usize, executor: u64) {
    try_with_context(|ctx| {
        if ctx.id != executor {
            return;
        }
        let Ok(mut ops) = ctx.ops.try_borrow_mut() else {
            return;
        };
        let Some(entry) = ops.entries.get_mut(index) else {
            return;
        };
        match std::mem::replace(entry, OpRecord::Orphaned) {
            OpRecord::Waiting { id, .. }
            | OpRecord::Stream {
                id, ended: false, ..
            } => match ctx.ring.try_borrow_mut() {
                // Nobody waits for the answer: on io_uring the request rides in the next
                // submission.
                // (Fails only on a broken ring, which the next wait reports.)
                Ok(mut ring) => {
                    let _ = ring.cancel_nowait(id);
                }
                Err(_) => ops.deferred_cancels.push(id),
            },
            // Already over: drop the completions now (buffers freed, descriptors closed).
            OpRecord::Done(_) | OpRecord::Stream { ended: true, .. } => ops.release(index),
            other => *entry = other,
        }
    });
}

/// Submits a multishot `op` and yields each completion, the final one last.
pub(crate) struct Multishot {
    op: Option<Op>,
    /// As [`Submit`]'s.
    slot: Option<(usize, u64)>,
    finished: bool,
}

impl Multishot {
    pub(crate) fn new(op: impl Into<Op>) -> Multishot {
        Multishot {
            op: Some(op.into()),
            slot: None,
            finished: false,
        }
    }

    /// The next completion; `None` after the final one.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Completion, io::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        with_context(|ctx| {
            let mut ops = ctx.ops.borrow_mut();
            let Some((index, executor)) = self.slot else {
                let op = self.op.take().expect("not yet submitted");
                let index = ops.alloc();
                return match ctx
                    .ring
                    .borrow_mut()
                    .submit(Submission::from(op), index as u64)
                {
                    Ok(id) => {
                        let waker = Some(cx.waker().clone());
                        ops.entries[index] = OpRecord::Stream {
                            id,
                            waker,
                            queue: VecDeque::new(),
                            ended: false,
                        };
                        self.slot = Some((index, ctx.id));
                        Poll::Pending
                    }
                    Err(refused) => {
                        ops.release(index);
                        self.finished = true;
                        Poll::Ready(Some(Err(io::Error::new(
                            refused.error().kind(),
                            refused.to_string(),
                        ))))
                    }
                };
            };
            assert_eq!(
                executor, ctx.id,
                "oneloop-rt: a stream polled under another runtime than the one it started on"
            );
            let OpRecord::Stream { waker, queue, .. } = &mut ops.entries[index] else {
                unreachable!("a stream's slot is a Stream")
            };
            match queue.pop_front() {
                Some(c) => {
                    if !c.is_more() {
                        self.finished = true;
                        self.slot = None;
                        ops.release(index);
                    }
                    Poll::Ready(Some(Ok(c)))
                }
                None => {
                    *waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

impl Drop for Multishot {
    fn drop(&mut self) {
        if let Some((index, executor)) = self.slot {
            orphan(index, executor);
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
