//! `futures_io::AsyncRead`/`AsyncWrite` for ring sockets, so ecosystem crates written against
//! those traits run on oneloop-rt.
//!
//! The traits lend a buffer for one call; the ring needs one it owns until the op's final
//! completion. So the adapter keeps its own buffers: a read lands in the adapter's buffer
//! and is copied out (bytes beyond what the caller's slice holds wait for the next call); a
//! write copies the caller's bytes in, and reports them written once the op completes. A
//! caller that gets `Pending` from `poll_write` must call again with the same bytes, as the
//! traits require.
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

impl<S: AsRawFd> AsyncStream<S> {
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

impl<S: AsRawFd + Unpin> futures_io::AsyncRead for AsyncStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.read_pos == this.read_buf.len() {
            let op = this.read.get_or_insert_with(|| {
                this.read_pos = 0;
                let mut buf = std::mem::take(&mut this.read_buf);
                buf.clear();
                buf.reserve(out.len().clamp(1, CHUNK));
                Submit::new(Recv::new(this.inner.as_raw_fd(), buf))
            });
            let done = std::task::ready!(Pin::new(op).poll(cx));
            this.read = None;
            let (res, buf) = with_buf::<Vec<u8>>(done);
            this.read_buf = buf;
            this.read_pos = 0;
            res?;
        }
        let n = out.len().min(this.read_buf.len() - this.read_pos);
        out[..n].copy_from_slice(&this.read_buf[this.read_pos..this.read_pos + n]);
        this.read_pos += n;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsRawFd + Unpin> futures_io::AsyncWrite for AsyncStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.write.is_none() {
            let mut buf = this.spare.take().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(&data[..data.len().min(CHUNK)]);
            this.write = Some(Submit::new(Send::new(this.inner.as_raw_fd(), buf)));
        }
        this.poll_write_op(cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_op(cx).map_ok(drop)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_write_op(cx))?;
        // SHUT_WR through the descriptor: the peer sees end of stream.
        let fd = self.inner.as_raw_fd();
        Poll::Ready(crate::net::shutdown_write(fd))
    }
}
