//! `futures_io::AsyncRead`/`AsyncWrite` for ring sockets — and, with the `tokio` and `hyper`
//! features, tokio's I/O traits and hyper's `rt::Read`/`rt::Write` — so ecosystem crates
//! written against those traits run on oneloop-rt.
//!
//! The traits lend a buffer for one call; the ring needs one it owns until the op's final
//! completion. So the adapter keeps its own buffers: a read lands in the adapter's buffer
//! and is copied out (bytes beyond what the caller's slice holds wait for the next call); a
//! write copies the caller's bytes in, and reports them written once the op completes. A
//! caller that gets `Pending` from `poll_write` must call again with the same bytes, as the
//! traits require.
//!
//! The runtime's streams ([`TcpStream`](crate::net::TcpStream),
//! [`UnixStream`](crate::net::UnixStream)) are read the way their own reads go: on io_uring
//! from the stream's feed (see [`net`](crate::net)), so bytes the stream received before it
//! was wrapped, or holds from a read that had no room for them, come first and once. Another
//! socket type implements [`Socket`] with its defaults, and is read with `Recv` ops.
//!
//! # Cancellation
//! Dropping the adapter cancels its in-flight read and write; their buffers stay with the
//! ring until the final completions.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use oneloop::{Recv, Send};

use crate::op::{with_buf, Submit};

const CHUNK: usize = 64 * 1024;

/// A socket [`AsyncStream`] can wrap: anything [`AsRawFd`] that supports `recv`/`send`. The
/// runtime's streams implement it to lend their fed reads; for another type the defaults do
/// (`impl oneloop_rt::io::Socket for MySocket {}`), and the adapter reads with `Recv` ops.
pub trait Socket: AsRawFd {
    /// The stream's fed reads, if it has them.
    #[doc(hidden)]
    fn feed(&self) -> Option<crate::net::FeedOf<'_>> {
        None
    }
}

/// A socket (anything [`AsRawFd`] that supports `recv`/`send`) as `AsyncRead + AsyncWrite`.
///
/// # Examples
/// ```no_run
/// # async fn demo(stream: oneloop_rt::net::TcpStream) {
/// let io = oneloop_rt::io::AsyncStream::new(stream);
/// // pass `io` to code written against futures_io::AsyncRead / AsyncWrite
/// # drop(io);
/// # }
/// ```
pub struct AsyncStream<S> {
    inner: S,
    read: Option<Submit>,
    /// Bytes read but not yet handed out, from `read_pos`.
    read_buf: Vec<u8>,
    read_pos: usize,
    write: Option<Submit>,
    spare: Option<Vec<u8>>,
}

impl<S: Socket> AsyncStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> AsyncStream<S> {
        AsyncStream {
            inner,
            read: None,
            read_buf: Vec::new(),
            read_pos: 0,
            write: None,
            spare: None,
        }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn poll_write_op(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(op) = &mut self.write else {
            return Poll::Ready(Ok(0));
        };
        let done = std::task::ready!(Pin::new(op).poll(cx));
        self.write = None;
        let (res, buf) = with_buf::<Vec<u8>>(done);
        self.spare = Some(buf);
        Poll::Ready(res)
    }
}

impl<S: Socket> AsyncStream<S> {
    /// Bytes read and not yet handed out, reading more (up to `want`, at least 1) when there
    /// are none; empty at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<&[u8]>> {
        if self.read_pos == self.read_buf.len() && self.read.is_none() {
            if let Some(feed) = self.inner.feed() {
                let mut buf = std::mem::take(&mut self.read_buf);
                buf.clear();
                buf.reserve(want.clamp(1, CHUNK));
                let mut buf = oneloop::Buf::Vec(buf);
                let polled = feed.poll_read(cx, &mut buf);
                self.read_buf = buf.into_vec().expect("lent as a Vec");
                self.read_pos = 0;
                match polled {
                    Some(Poll::Ready(res)) => {
                        res?;
                        return Poll::Ready(Ok(&self.read_buf[..]));
                    }
                    Some(Poll::Pending) => return Poll::Pending,
                    // Not fed here: a `Recv` of the adapter's own.
                    None => {}
                }
            }
        }
        if self.read_pos == self.read_buf.len() {
            let op = self.read.get_or_insert_with(|| {
                self.read_pos = 0;
                let mut buf = std::mem::take(&mut self.read_buf);
                buf.clear();
                buf.reserve(want.clamp(1, CHUNK));
                Submit::new(Recv::new(self.inner.as_raw_fd(), buf))
            });
            let done = std::task::ready!(Pin::new(op).poll(cx));
            self.read = None;
            let (res, buf) = with_buf::<Vec<u8>>(done);
            self.read_buf = buf;
            self.read_pos = 0;
            res?;
        }
        Poll::Ready(Ok(&self.read_buf[self.read_pos..]))
    }

    /// Hands up to `room` ready bytes (reading first if none are) to `put`, once; for the
    /// traits whose read buffers are not plain slices (tokio's, hyper's).
    #[cfg(any(feature = "tokio", feature = "hyper"))]
    fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        room: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<()>> {
        if room == 0 {
            return Poll::Ready(Ok(()));
        }
        let ready = std::task::ready!(self.poll_fill(cx, room))?;
        let n = room.min(ready.len());
        put(&ready[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }

    /// Marks `n` bytes from [`poll_fill`](Self::poll_fill) as handed out.
    fn consume(&mut self, n: usize) {
        self.read_pos += n;
    }

    /// Starts a write of (up to a chunk of) `data` if none is in flight, and polls it.
    fn poll_write_some(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.write.is_none() {
            let mut buf = self.spare.take().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(&data[..data.len().min(CHUNK)]);
            self.write = Some(Submit::new(Send::new(self.inner.as_raw_fd(), buf)));
        }
        self.poll_write_op(cx)
    }

    /// Finishes the write in flight, then shuts the write side (the peer reads end of stream).
    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_write_op(cx))?;
        Poll::Ready(crate::net::shutdown_write(self.inner.as_raw_fd()))
    }
}

impl<S: Socket + Unpin> futures_io::AsyncRead for AsyncStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        let ready = std::task::ready!(this.poll_fill(cx, out.len()))?;
        let n = out.len().min(ready.len());
        out[..n].copy_from_slice(&ready[..n]);
        this.consume(n);
        Poll::Ready(Ok(n))
    }
}

impl<S: Socket + Unpin> futures_io::AsyncWrite for AsyncStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_some(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_op(cx).map_ok(drop)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_shutdown_write(cx)
    }
}

/// With the `tokio` feature: the same adapter as `tokio::io::AsyncRead + AsyncWrite`, so
/// `tokio-util` codecs and other crates written against tokio's I/O traits run on oneloop-rt
/// (no tokio runtime is involved).
#[cfg(feature = "tokio")]
impl<S: Socket + Unpin> tokio::io::AsyncRead for AsyncStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = out.remaining();
        self.poll_read_with(cx, room, |bytes| out.put_slice(bytes))
    }
}

#[cfg(feature = "tokio")]
impl<S: Socket + Unpin> tokio::io::AsyncWrite for AsyncStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_some(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_op(cx).map_ok(drop)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_shutdown_write(cx)
    }
}

/// With the `hyper` feature: the adapter as `hyper::rt::Read + Write`, so hyper's HTTP/1
/// client and server connections run over ring sockets.
#[cfg(feature = "hyper")]
impl<S: Socket + Unpin> hyper::rt::Read for AsyncStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut out: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let room = out.remaining();
        self.poll_read_with(cx, room, |bytes| out.put_slice(bytes))
    }
}

#[cfg(feature = "hyper")]
impl<S: Socket + Unpin> hyper::rt::Write for AsyncStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_some(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_op(cx).map_ok(drop)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_shutdown_write(cx)
    }
}
