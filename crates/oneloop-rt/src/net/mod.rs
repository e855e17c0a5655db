//! Sockets on the ring: TCP, Unix-domain streams, UDP.
//!
//! # Cancellation
//! Dropping an op future cancels its op; its buffer stays with the ring until the op's final
//! completion. A connection accepted by a dropped `accept` is closed, never leaked. Dropping a
//! socket cancels the ops still in flight on it before its descriptor is closed.
#![forbid(unsafe_code)]

mod tcp;
mod udp;
mod unix;

pub use tcp::{Incoming, OwnedReadHalf, OwnedWriteHalf, TcpListener, TcpStream, INCOMING_UNTAKEN};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use oneloop::{
    Handover, IoBuf, IoBufMut, Lease, OpId, Output, Poll as Poll_, PollMask, Recv, RecvMulti, Send,
    Submission,
};

use crate::executor::{
    op_budget_left, ring_epoch, ring_waker_of, spend_op_budget, try_with_context, with_context,
};
pub(crate) use crate::fs::Registration;
use crate::op::{abandon, run, typed, with_buf, Submit};

/// What a stream knows of its socket's readiness, and the multishot poll that keeps its read
/// side informed. Tokio's way: a transfer is tried straight from the future's poll, and waits
/// only when the socket says "not now".
///
/// **Reads** wait on the stream's *watch*: one multishot [`Poll`] for input, submitted at the
/// first read that finds the socket empty and kept until the stream is dropped, claimed with
/// [`Ring::watch`](oneloop::Ring::watch) so that the events between two reads fold into one.
/// A read tries `recv` unless the last attempt saw `EAGAIN` and no event came since; on
/// `EAGAIN` it parks on the watch (no submission, no system call), and each event lets it try
/// again. The watch is armed after an `EAGAIN` and reports the socket's state at arming (every
/// backend's poll does), so data that came in between is not missed; it stays armed from then
/// on, so nothing that comes later is either. Only one read parks on the watch at a time: a
/// second read of the same stream in parallel (two tasks sharing it) waits through the ring
/// with a `Recv` op of its own, so no read's wake-up is lost to another's.
///
/// **Sends** are tried first unless the last one saw `EAGAIN` or came back short (the send
/// buffer filled); then, and whenever a try says "not now", the send goes through the ring (a
/// `Send` op that waits for room, then sends). One that sends its whole buffer reopens the
/// direction. A wrong guess costs one system call, never a lost wake-up.
///
/// **On io_uring, reads are fed** by one multishot [`RecvMulti`] per stream instead, into the
/// executor's buffer ring ([`Builder::recv_buffers`](crate::Builder::recv_buffers)): the
/// kernel receives as data arrives, and a read takes the next buffer's bytes without a system
/// call. Submitted at the stream's first read, it runs until it ends; a buffer holds what a
/// read had no room for until the next read. At most [`FEED_UNREAD`] buffers wait unread: then
/// the ring cancels the receive ([`Ring::bound_unread`](oneloop::Ring::bound_unread)), and
/// the next read submits it again — so a connection nobody reads cannot take the ring's
/// buffers from the others, and TCP's flow control still pushes back on its sender. When the
/// buffer ring is empty (`ENOBUFS`), that read goes the readiness way.
///
/// Every attempt counts against the task's op budget: past it, the task yields first.
#[derive(Default)]
pub(crate) struct Readiness {
    /// The last read attempt saw `EAGAIN`, and the watch reported nothing since.
    read_blocked: Cell<bool>,
    /// The last send attempt saw `EAGAIN` or a full send buffer.
    write_blocked: Cell<bool>,
    /// The read watch: its op and the executor whose ring runs it.
    watch: Cell<Option<(OpId, u64)>>,
    /// A read is parked on the watch (the watch holds its task's waker).
    parked: Cell<bool>,
    /// When a read last left its task's waker in the watch's claim ([`ring_epoch`]), and
    /// which waker (its data and vtable addresses): while the ring has not been used since, a
    /// read of the same task that finds the socket empty is parked already, without touching
    /// the ring. Addresses, not a clone: a clone here would keep the task alive from inside
    /// its own future (a cycle nothing breaks at teardown). They cannot name another task by
    /// reuse: while the epoch is unchanged, the claim still holds that very waker, so its
    /// task is alive.
    left: Cell<Option<(u64, u64)>>,
    left_waker: Cell<(usize, usize)>,
    /// The multishot receive feeding reads (io_uring): its op and executor.
    feed: Cell<Option<(OpId, u64)>>,
    /// A fed buffer a read had no room for all of: its bytes from `.1` on come next.
    rest: Cell<Option<(Lease, usize)>>,
    /// What the feed of a thread the stream left hands over (see `Waker::hand_over`).
    handed: Cell<Option<std::sync::Arc<Handover>>>,
}

/// Whether this thread's executor feeds stream reads from a buffer ring (io_uring, unless
/// [`Builder::recv_buffers`](crate::Builder::recv_buffers) switched it off); `false` outside a
/// runtime.
pub fn reads_fed() -> bool {
    crate::executor::reads_fed()
}

/// A stream's fed reads, lent to [`AsyncStream`](crate::io::AsyncStream) (see
/// [`io::Socket`](crate::io::Socket)): the adapter takes bytes where the stream's own reads
/// do, so none is skipped or read twice.
#[doc(hidden)]
pub struct FeedOf<'a> {
    ready: &'a Readiness,
    fd: RawFd,
}

impl<'a> FeedOf<'a> {
    pub(crate) fn new(ready: &'a Readiness, fd: RawFd) -> Self {
        FeedOf { ready, fd }
    }

    /// A read into `buf` from the stream's feed; `None` where it is not fed (not io_uring,
    /// switched off, the buffer ring ran dry): the caller reads another way.
    pub(crate) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut oneloop::Buf,
    ) -> Option<Poll<io::Result<usize>>> {
        if !crate::executor::reads_fed() {
            return None;
        }
        match self.ready.poll_feed(self.fd, buf, cx) {
            Fed::Ready(res) => Some(Poll::Ready(res)),
            Fed::Pending => Some(Poll::Pending),
            Fed::Off => None,
        }
    }
}

/// The most fed buffers a stream holds unread before its receive is cancelled.
pub(crate) const FEED_UNREAD: u16 = 2;

/// What a fed read found.
enum Fed {
    /// Bytes (or the end, 0, or an error) for the read.
    Ready(io::Result<usize>),
    /// Nothing yet: parked on the feed's claim.
    Pending,
    /// No feed here (not io_uring, switched off, the ring ran dry): go the readiness way.
    Off,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("read_blocked", &self.read_blocked.get())
            .field("write_blocked", &self.write_blocked.get())
            .field("watch", &self.watch.get())
            .field("parked", &self.parked.get())
            .finish_non_exhaustive()
    }
}

/// What `Waker::will_wake` compares: the waker's data and vtable addresses.
fn identity(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    )
}

/// The events a read watch waits for (errors and hang-ups are always reported).
const WATCHED: PollMask = PollMask::from_bits(PollMask::IN.bits() | PollMask::RDHUP.bits());

impl Readiness {
    /// Waits for the watch to report an event, arming it first if need be. `Ready(Ok)`: try
    /// again (an event came, or the watch ended and is to be armed again).
    fn poll_watch(&self, fd: RawFd, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = self.poll_ring(fd, cx);
        if self.watch.get().is_some() && !matches!(polled, Poll::Ready(Err(_))) {
            // The claim holds `cx`'s waker now (a watch keeps it, see `Ring::watch`).
            self.left.set(Some(ring_epoch()));
            self.left_waker.set(identity(cx.waker()));
        }
        polled
    }

    /// Whether the watch's claim holds `cx`'s waker and nothing has reached the ring since it
    /// was left there ([`poll_watch`](Self::poll_watch)): a read that finds the socket empty
    /// is parked already.
    #[inline]
    fn parked_already(&self, cx: &Context<'_>) -> bool {
        self.left.get() == Some(ring_epoch()) && self.left_waker.get() == identity(cx.waker())
    }

    fn poll_ring(&self, fd: RawFd, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_context(|ctx| {
            let mut ring = ctx.ring_mut();
            match self.watch.get() {
                Some((id, executor)) if executor == ctx.id => {
                    return match ring.poll_take(id, cx.waker()) {
                        Poll::Ready(event) => {
                            if !event.is_more() {
                                self.watch.set(None);
                            }
                            Poll::Ready(Ok(()))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                // Armed under another executor (the stream moved threads) or one that is gone.
                Some(_) => self.end_watch(ctx.id),
                None => {}
            }
            match ring.submit(Submission::from(Poll_::new(fd, WATCHED).multishot()), 0) {
                Ok(id) => {
                    self.watch.set(Some((id, ctx.id)));
                    // Reports the socket's state now: an event already there wakes at once.
                    ring.watch(id, cx.waker());
                    Poll::Pending
                }
                Err(refused) if refused.error().kind() == io::ErrorKind::ResourceBusy => {
                    ctx.room_waiters.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
                Err(refused) => Poll::Ready(Err(io::Error::new(
                    refused.error().kind(),
                    refused.to_string(),
                ))),
            }
        })
    }

    /// Ends the watch and the feed (the stream is being dropped): their final completions
    /// are dropped when they come.
    pub(crate) fn release(&self) {
        let here = try_with_context(|ctx| ctx.id).unwrap_or(0);
        self.end_watch(here);
        match self.feed.take() {
            Some((id, executor)) if executor == here => abandon(id, executor),
            Some((id, executor)) => {
                if let Some(ring) = ring_waker_of(executor) {
                    ring.abandon(id);
                }
            }
            None => {}
        }
        self.rest.take();
        self.handed.take();
    }

    /// A fed read into `buf`: bytes left from the last buffer, else the feed's next buffer
    /// (submitting the feed if it is not running).
    fn poll_feed(&self, fd: RawFd, buf: &mut oneloop::Buf, cx: &mut Context<'_>) -> Fed {
        if let Some((lease, at)) = self.rest.take() {
            return Fed::Ready(Ok(self.fill(buf, lease, at)));
        }
        loop {
            // What the feed received on the thread the stream left comes first, in order.
            if let Some(handed) = self.handed.take() {
                match handed.poll_next(cx) {
                    Poll::Pending => {
                        self.handed.set(Some(handed));
                        return Fed::Pending;
                    }
                    Poll::Ready(None) => continue,
                    Poll::Ready(Some(c)) => {
                        if c.is_more() {
                            self.handed.set(Some(handed));
                        }
                        match self.fed(c, buf) {
                            Some(fed) => return fed,
                            None => continue,
                        }
                    }
                }
            }
            let taken = try_with_context(|ctx| {
                let bufs = ctx.recv_bufs.as_ref()?;
                let mut ring = ctx.ring_mut();
                let id = match self.feed.get() {
                    Some((id, executor)) if executor == ctx.id => id,
                    // Running on the ring of a thread the stream left: that ring hands what
                    // it received (and will, until the feed ends) over to this thread.
                    Some((id, executor)) => {
                        self.feed.set(None);
                        let to = Handover::new();
                        match ring_waker_of(executor) {
                            Some(ring) => ring.hand_over(id, std::sync::Arc::clone(&to)),
                            // That executor is gone, and its ring with it: nothing to hand over.
                            None => return Some(None),
                        }
                        self.handed.set(Some(to));
                        return Some(None);
                    }
                    None => {
                        let id = ring.submit(RecvMulti::new(fd, bufs), 0).ok()?;
                        ring.set_waker(id, cx.waker());
                        ring.bound_unread(id, FEED_UNREAD);
                        self.feed.set(Some((id, ctx.id)));
                        return Some(Some(Poll::Pending));
                    }
                };
                Some(Some(ring.poll_take(id, cx.waker())))
            })
            .flatten();
            let c = match taken {
                None => return Fed::Off,
                Some(None) => continue,
                Some(Some(Poll::Pending)) => return Fed::Pending,
                Some(Some(Poll::Ready(c))) => c,
            };
            if !c.is_more() {
                self.feed.set(None);
            }
            if let Some(fed) = self.fed(c, buf) {
                return fed;
            }
        }
    }

    /// What one of the feed's completions gives a read; `None`: the feed ended by a cancel
    /// (its bound, a hand-over): submit it again.
    fn fed(&self, c: oneloop::Completion, buf: &mut oneloop::Buf) -> Option<Fed> {
        let (result, output) = c.into_parts();
        Some(match (result, output) {
            (Ok(_), Output::Lease(lease)) => Fed::Ready(Ok(self.fill(buf, lease, 0))),
            (Ok(n), _) => Fed::Ready(Ok(n as usize)),
            (Err(e), _) if e.raw_os_error() == Some(libc::ECANCELED) => return None,
            // The buffer ring is empty: this read goes the readiness way.
            (Err(e), _) if e.raw_os_error() == Some(libc::ENOBUFS) => Fed::Off,
            (Err(e), _) => Fed::Ready(Err(e)),
        })
    }

    /// Copies `lease`'s bytes from `at` into `buf`; what does not fit waits in `rest`.
    fn fill(&self, buf: &mut oneloop::Buf, lease: Lease, at: usize) -> usize {
        let n = buf.fill_from(&lease[at..]);
        if at + n < lease.len() {
            self.rest.set(Some((lease, at + n)));
        }
        n
    }

    /// Gives up the watch, from executor `here`: abandoned in place if it is this executor's,
    /// else posted to its ring (the stream moved threads), which ends it at its next wait — on
    /// io_uring its poll would otherwise hold the socket open after the stream closed it.
    fn end_watch(&self, here: u64) {
        let Some((id, executor)) = self.watch.take() else {
            return;
        };
        if executor == here {
            abandon(id, executor);
        } else if let Some(ring) = ring_waker_of(executor) {
            ring.abandon(id);
        }
    }
}

/// Receives into `buf` from a stream socket: at once if bytes are there, else when the
/// stream's watch reports some (see [`Readiness`]).
pub(crate) fn recv<B: IoBufMut>(fd: RawFd, ready: &Readiness, buf: B) -> Read<'_, B> {
    Read {
        fd,
        ready,
        op: Some(Recv::new(fd, buf)),
        parked: false,
        yielded: false,
        ring: None,
        buf: PhantomData,
    }
}

/// A stream's read: the future [`recv`] returns. Written out by hand rather than as an
/// `async fn`, as the hottest future of a server: no state machine to move between polls.
pub(crate) struct Read<'a, B> {
    fd: RawFd,
    ready: &'a Readiness,
    /// The receive, tried from here; `None` once the read has ended (or gone to the ring).
    op: Option<Recv>,
    /// This read holds the watch's one parking place.
    parked: bool,
    /// It yielded once for the task's op budget.
    yielded: bool,
    /// Another read is parked on the watch: this one waits through the ring.
    ring: Option<Pin<Box<Submit>>>,
    buf: PhantomData<fn() -> B>,
}

impl<B: IoBufMut> Read<'_, B> {
    fn unpark(&mut self) {
        if std::mem::take(&mut self.parked) {
            self.ready.parked.set(false);
        }
    }

    /// A fed read (see [`Readiness::poll_feed`]) into this read's buffer.
    #[inline]
    fn poll_fed(&mut self, cx: &mut Context<'_>) -> Fed {
        let op = self.op.as_mut().expect("a read polled after it ended");
        self.ready.poll_feed(self.fd, op.buf_mut(), cx)
    }

    /// Ends the read with `res` and the buffer.
    fn end(&mut self, res: io::Result<usize>) -> Poll<(io::Result<usize>, B)> {
        self.unpark();
        let op = self.op.take().expect("a read polled after it ended");
        Poll::Ready((res, typed(op.into_buf())))
    }
}

impl<B: IoBufMut> Future for Read<'_, B> {
    type Output = (io::Result<usize>, B);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(ring) = &mut this.ring {
            let done = std::task::ready!(ring.as_mut().poll(cx));
            this.ring = None;
            return Poll::Ready(with_buf(done));
        }
        loop {
            if !op_budget_left() && !this.yielded {
                // Past the task's op budget: let the others run first.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Fed (io_uring): only one read at a time takes from the feed, as from the watch.
            if crate::executor::reads_fed() && (!this.ready.parked.get() || this.parked) {
                match this.poll_fed(cx) {
                    Fed::Ready(res) => {
                        spend_op_budget();
                        return this.end(res);
                    }
                    Fed::Pending => {
                        if !this.parked {
                            this.ready.parked.set(true);
                            this.parked = true;
                        }
                        return Poll::Pending;
                    }
                    Fed::Off => {}
                }
            }
            if !this.ready.read_blocked.get() {
                let op = this.op.as_mut().expect("a read polled after it ended");
                match op.try_now() {
                    Ok(None) => this.ready.read_blocked.set(true),
                    Ok(Some(t)) => {
                        spend_op_budget();
                        return this.end(Ok(t.done));
                    }
                    Err(e) => {
                        spend_op_budget();
                        return this.end(Err(e));
                    }
                }
            }
            if !this.parked {
                if this.ready.parked.get() {
                    let op = this.op.take().expect("a read polled after it ended");
                    this.ring = Some(Box::pin(Submit::new(op)));
                    return Pin::new(this).poll(cx);
                }
                this.ready.parked.set(true);
                this.parked = true;
            }
            if this.ready.parked_already(cx) {
                return Poll::Pending;
            }
            match this.ready.poll_watch(this.fd, cx) {
                Poll::Ready(Ok(())) => this.ready.read_blocked.set(false),
                Poll::Ready(Err(e)) => return this.end(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<B> Drop for Read<'_, B> {
    fn drop(&mut self) {
        if self.parked {
            self.ready.parked.set(false);
        }
    }
}

/// Sends `buf`'s bytes on a stream socket (maybe fewer): at once if there is room, else through
/// the ring.
pub(crate) async fn send<B: IoBuf>(fd: RawFd, ready: &Readiness, buf: B) -> (io::Result<usize>, B) {
    let mut op = Send::new(fd, buf);
    if !ready.write_blocked.get() && op_budget_left() {
        match op.try_now() {
            Ok(None) => ready.write_blocked.set(true),
            Ok(Some(t)) => {
                spend_op_budget();
                ready.write_blocked.set(t.done < t.asked);
                return (Ok(t.done), typed(op.into_buf()));
            }
            Err(e) => {
                spend_op_budget();
                return (Err(e), typed(op.into_buf()));
            }
        }
    }
    let (res, buf) = with_buf::<B>(run(op).await);
    if res.is_ok() {
        // The ring waited for room, and the send took what it could.
        ready.write_blocked.set(false);
    }
    (res, buf)
}

/// Sends all of `buf` on a connected stream socket: at once while there is room, through
/// the ring (a `Send` that waits for room) when there is not.
pub(crate) fn write_all(fd: RawFd, ready: &Readiness, buf: Vec<u8>) -> WriteAll<'_> {
    WriteAll {
        fd,
        ready,
        buf: Some(buf),
        sent: 0,
        ring: None,
    }
}

/// The future [`write_all`] returns (by hand, as [`Read`]).
pub(crate) struct WriteAll<'a> {
    fd: RawFd,
    ready: &'a Readiness,
    /// The caller's buffer, handed back at the end; `None` while a `Send` of it is in the ring.
    buf: Option<Vec<u8>>,
    /// How many of its bytes are sent.
    sent: usize,
    /// A `Send` in the ring: of the whole buffer (`sent == 0`), else of a copy of the rest.
    ring: Option<Pin<Box<Submit>>>,
}

impl Future for WriteAll<'_> {
    type Output = (io::Result<()>, Vec<u8>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            if let Some(ring) = &mut this.ring {
                let done = std::task::ready!(ring.as_mut().poll(cx));
                this.ring = None;
                let (res, back) = with_buf::<Vec<u8>>(done);
                if this.buf.is_none() {
                    this.buf = Some(back);
                }
                match res {
                    Ok(0) => return this.end(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        // The ring waited for room, and the send took what it could.
                        this.ready.write_blocked.set(false);
                        this.sent += n;
                    }
                    Err(e) => return this.end(Err(e)),
                }
            }
            let buf = this.buf.as_ref().expect("a write polled after it ended");
            let rest = &buf[this.sent..];
            if rest.is_empty() {
                return this.end(Ok(()));
            }
            if !this.ready.write_blocked.get() && op_budget_left() {
                match oneloop::sockets::send_now(this.fd, rest) {
                    Ok(Some(0)) => return this.end(Err(io::ErrorKind::WriteZero.into())),
                    Ok(Some(n)) => {
                        spend_op_budget();
                        this.ready.write_blocked.set(n < rest.len());
                        this.sent += n;
                        continue;
                    }
                    Ok(None) => this.ready.write_blocked.set(true),
                    Err(e) => return this.end(Err(e)),
                }
            }
            let op = if this.sent == 0 {
                Send::new(this.fd, this.buf.take().expect("checked"))
            } else {
                Send::new(this.fd, rest.to_vec())
            };
            this.ring = Some(Box::pin(Submit::new(op)));
        }
    }
}

impl WriteAll<'_> {
    fn end(&mut self, res: io::Result<()>) -> Poll<(io::Result<()>, Vec<u8>)> {
        Poll::Ready((res, self.buf.take().unwrap_or_default()))
    }
}

/// Shuts down the writing half of a socket given by descriptor.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    oneloop::sockets::shutdown_write(fd)
}
