//! Unix-domain stream sockets: `UnixListener` (bind, accept) and `UnixStream` (connect, pair,
//! read, write, write_all, shutdown).

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use oneloop::{Accept, IoBuf, IoBufMut};

use super::{write_all, Readiness, Registration};
use crate::fs::cancel_ops_on;
use crate::op::{clone_error, run};

/// A listening Unix-domain socket.
#[derive(Debug)]
pub struct UnixListener {
    inner: std::os::unix::net::UnixListener,
}

impl UnixListener {
    /// Binds and listens on `path`.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        Ok(UnixListener {
            inner: std::os::unix::net::UnixListener::bind(path)?,
        })
    }

    /// Waits for a connection.
    ///
    /// # Cancellation
    /// A connection that arrives after the future was dropped is closed.
    pub async fn accept(&self) -> io::Result<UnixStream> {
        let mut c = run(Accept::new(self.inner.as_raw_fd()))
            .await
            .map_err(|(e, _)| e)?;
        if let Err(e) = c.result() {
            return Err(clone_error(e));
        }
        Ok(UnixStream::from(
            c.take_fd().expect("Accept hands over the socket"),
        ))
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        cancel_ops_on(self.inner.as_raw_fd());
    }
}

/// A Unix-domain stream connection.
#[derive(Debug)]
pub struct UnixStream {
    inner: std::os::unix::net::UnixStream,
    reg: Registration,
    ready: Readiness,
}

impl From<OwnedFd> for UnixStream {
    fn from(fd: OwnedFd) -> UnixStream {
        UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
    }
}

impl UnixStream {
    /// Connects to `path`. A local connect completes at once unless the listener's backlog is
    /// full, so it is made directly rather than as a ring op.
    pub fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        Ok(UnixStream::from_std(
            std::os::unix::net::UnixStream::connect(path)?,
        ))
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a), UnixStream::from_std(b)))
    }

    fn from_std(inner: std::os::unix::net::UnixStream) -> UnixStream {
        let reg = Registration::new(inner.as_raw_fd());
        UnixStream {
            inner,
            reg,
            ready: Readiness::default(),
        }
    }

    /// Reads into `buf`; 0 means the peer closed its side.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = (io::Result<usize>, B)> + '_ {
        super::recv(self.inner.as_raw_fd(), &self.ready, buf)
    }

    /// Writes `buf`'s bytes; may write fewer.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        super::send(self.inner.as_raw_fd(), &self.ready, buf).await
    }

    /// Writes all of `buf`.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed.
    pub fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> + '_ {
        write_all(self.inner.as_raw_fd(), &self.ready, buf)
    }

    /// Shuts down the read side, the write side, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }
}

impl crate::io::Socket for UnixStream {
    fn feed(&self) -> Option<super::FeedOf<'_>> {
        Some(super::FeedOf::new(&self.ready, self.inner.as_raw_fd()))
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl Drop for UnixStream {
    fn drop(&mut self) {
        self.ready.release();
        cancel_ops_on(self.inner.as_raw_fd());
        self.reg.release(self.inner.as_raw_fd());
    }
}
