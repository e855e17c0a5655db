//! TCP: `TcpListener` (bind, accept) and `TcpStream` (connect, read, write, write_all,
//! shutdown, readable/writable).

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use oneloop::{
    Accept, AcceptMulti, Connect, IoBuf, IoBufMut, OpId, Output, PollMask, SendFile, SendZc,
};

use super::{write_all, Readiness, Registration};
use crate::fs::cancel_ops_on;
use crate::op::{clone_error, plain, run, with_buf};

/// A listening TCP socket.
#[derive(Debug)]
pub struct TcpListener {
    inner: std::net::TcpListener,
    reg: Registration,
}

impl TcpListener {
    /// Binds and listens on `addr` (the first address it resolves to that works).
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        Ok(TcpListener::from_std(std::net::TcpListener::bind(addr)?))
    }

    /// Binds and listens on `addr` with `SO_REUSEPORT`, so every executor thread of a
    /// [`Runtime::run`](crate::Runtime::run) can listen on the same port.
    pub fn bind_reuse_port(addr: SocketAddr) -> io::Result<TcpListener> {
        Ok(TcpListener::from_std(
            oneloop::sockets::tcp_listener_reuse_port(&addr, 1024)?,
        ))
    }

    /// Takes over a listener bound elsewhere.
    pub fn from_std(inner: std::net::TcpListener) -> TcpListener {
        let reg = Registration::new(inner.as_raw_fd());
        TcpListener { inner, reg }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits for a connection.
    ///
    /// # Cancellation
    /// A connection that arrives after the future was dropped is closed.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let mut c = run(Accept::new(self.inner.as_raw_fd()))
            .await
            .map_err(|(e, _)| e)?;
        if let Err(e) = c.result() {
            return Err(clone_error(e));
        }
        let fd = c.take_fd().expect("Accept hands over the socket");
        let stream = TcpStream::from_fd(fd);
        let peer = stream.inner.peer_addr()?;
        Ok((stream, peer))
    }

    /// Connections as they arrive, from one multishot accept ([`AcceptMulti`]) that serves
    /// them all: on io_uring the kernel's (no request per connection), elsewhere rounds of
    /// `accept4` on readiness. Take them with [`Incoming::next`].
    ///
    /// At most [`INCOMING_UNTAKEN`] accepted connections wait untaken: then the accept is
    /// stopped, and the next call starts it again (new connections wait in the listen backlog
    /// meanwhile). An error (`EMFILE`, say) ends the accept: `next` returns it, and the call
    /// after it starts a new one.
    ///
    /// # Cancellation
    /// Dropping `Incoming` ends its accept; connections it accepted and nobody took are
    /// closed. It stays on the thread that made it.
    ///
    /// # Examples
    /// ```
    /// # oneloop_rt::block_on(async {
    /// let listener = oneloop_rt::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let client = oneloop_rt::spawn(async move {
    ///     oneloop_rt::net::TcpStream::connect(addr).await.unwrap()
    /// });
    /// let mut incoming = listener.incoming();
    /// let (stream, peer) = incoming.next().await.unwrap();
    /// assert_eq!(peer, client.await.local_addr().unwrap());
    /// # drop(stream);
    /// # });
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            listener: self,
            op: None,
            _one_thread: std::marker::PhantomData,
        }
    }
}

/// The most accepted connections an [`Incoming`] holds untaken before its accept stops.
pub const INCOMING_UNTAKEN: u16 = 64;

/// A listener's connections as they arrive (see [`TcpListener::incoming`]).
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    /// The multishot accept and the executor that runs it.
    op: Option<(OpId, u64)>,
    _one_thread: std::marker::PhantomData<std::rc::Rc<()>>,
}

impl Incoming<'_> {
    /// The next connection and its peer's address.
    pub async fn next(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next connection (what [`next`](Self::next) awaits).
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(TcpStream, SocketAddr)>> {
        use std::task::Poll;
        let fd = self.listener.inner.as_raw_fd();
        loop {
            let taken = crate::executor::with_context(|ctx| {
                let mut ring = ctx.ring_mut();
                let id = match self.op {
                    Some((id, executor)) if executor == ctx.id => id,
                    _ => {
                        let id = ring
                            .submit(AcceptMulti::new(fd), 0)
                            .map_err(|e| clone_error(e.error()))?;
                        ring.set_waker(id, cx.waker());
                        ring.bound_unread(id, INCOMING_UNTAKEN);
                        self.op = Some((id, ctx.id));
                        return Ok::<_, io::Error>(Poll::Pending);
                    }
                };
                Ok(ring.poll_take(id, cx.waker()))
            })?;
            let Poll::Ready(c) = taken else {
                return Poll::Pending;
            };
            if !c.is_more() {
                self.op = None;
            }
            match c.into_parts() {
                (Ok(_), Output::Fd(fd)) => {
                    let stream = TcpStream::from_fd(fd);
                    return Poll::Ready(stream.inner.peer_addr().map(|peer| (stream, peer)));
                }
                // Stopped at its bound: start again.
                (Err(e), _) if e.raw_os_error() == Some(libc::ECANCELED) => {}
                (Err(e), _) => return Poll::Ready(Err(e)),
                (Ok(_), _) => {}
            }
        }
    }
}

/// `Stream` of the ecosystem's traits: it never ends (`Some` every time).
impl futures_core::Stream for Incoming<'_> {
    type Item = io::Result<(TcpStream, SocketAddr)>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Incoming::poll_next(self.get_mut(), cx).map(Some)
    }
}

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        if let Some((id, executor)) = self.op.take() {
            crate::op::abandon(id, executor);
        }
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        cancel_ops_on(self.inner.as_raw_fd());
        self.reg.release(self.inner.as_raw_fd());
    }
}

/// A TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    inner: std::net::TcpStream,
    reg: Registration,
    ready: Readiness,
}

impl TcpStream {
    fn from_fd(fd: OwnedFd) -> TcpStream {
        let reg = Registration::new(fd.as_raw_fd());
        TcpStream {
            inner: std::net::TcpStream::from(fd),
            reg,
            ready: Readiness::default(),
        }
    }

    /// Connects to `addr`.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let fd = oneloop::sockets::tcp_socket(&addr)?;
        plain(run(Connect::new(fd.as_raw_fd(), addr)).await)?;
        Ok(TcpStream::from_fd(fd))
    }

    /// Reads into `buf`; 0 means the peer closed its side.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the op's final
    /// completion, then is freed. If the kernel had already received into it (the cancel came
    /// too late), those bytes go with the buffer: to give up waiting without that risk, wait
    /// for [`readable`](Self::readable) under the timeout and read after it.
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

    /// Sends `buf`'s bytes zero-copy where the kernel can (io_uring's `SEND_ZC`; see
    /// [`oneloop::SendZc`]): the kernel reads them straight from `buf`, which comes back only
    /// once the kernel has let go of it. May send fewer. Worth it for large buffers sent to
    /// other hosts; to a loopback peer the kernel copies anyway — use [`write`](Self::write).
    /// A [`FixedBuf`](oneloop::FixedBuf) from [`fixed_buffers`](crate::fixed_buffers) is named
    /// to the kernel by its index.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op; the buffer stays with the ring until the kernel
    /// lets go of it, then is freed.
    pub async fn send_zc<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        with_buf(run(SendZc::new(self.inner.as_raw_fd(), buf)).await)
    }

    /// Sends up to `len` bytes of `file`, from `offset`, without copying them through user
    /// space (see [`oneloop::SendFile`]); may send fewer (send the rest with another call);
    /// 0 at the end of the file.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op, which ends with what it sent so far; the op keeps
    /// its own duplicate of `file` until then, so `file` may be closed at once.
    ///
    /// # Examples
    /// ```no_run
    /// # oneloop_rt::block_on(async {
    /// use oneloop_rt::fs::File;
    /// use oneloop_rt::net::TcpStream;
    ///
    /// let stream = TcpStream::connect("127.0.0.1:8080".parse().unwrap()).await?;
    /// let file = File::open("/etc/hostname").await?;
    /// let sent = stream.send_file(&file, 0, 4096).await?;
    /// println!("{sent} bytes");
    /// # Ok::<(), std::io::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn send_file(
        &self,
        file: &crate::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        let file = file.as_fd().try_clone_to_owned()?;
        let op = SendFile::owning(self.inner.as_raw_fd(), file, offset, len);
        plain(run(op).await).map(|n| n as usize)
    }

    /// Shuts down the read side, the write side, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.shutdown(how)
    }

    /// Waits until the socket is readable.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn readable(&self) -> io::Result<PollMask> {
        crate::poll::readable(&self.inner).await
    }

    /// Waits until the socket is writable.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn writable(&self) -> io::Result<PollMask> {
        crate::poll::writable(&self.inner).await
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner.set_nodelay(on)
    }
}

impl TcpStream {
    /// Splits the stream into a read half and a write half that two tasks can own (tasks of
    /// this thread: the halves share the stream through an `Rc`). The socket closes when both
    /// halves are dropped. (Every method takes `&self`, so an `Rc<TcpStream>` works too.)
    ///
    /// # Examples
    /// ```
    /// use oneloop_rt::net::{TcpListener, TcpStream};
    ///
    /// oneloop_rt::block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0")?;
    ///     let addr = listener.local_addr()?;
    ///     let client = oneloop_rt::spawn(async move {
    ///         let s = TcpStream::connect(addr).await?;
    ///         let (res, _) = s.write_all(b"ping".to_vec()).await;
    ///         res
    ///     });
    ///     let (stream, _) = listener.accept().await?;
    ///     let (reader, writer) = stream.into_split();
    ///     let echo = oneloop_rt::spawn(async move {
    ///         let (res, buf) = reader.read(Vec::with_capacity(16)).await;
    ///         res.map(|_| buf)
    ///     });
    ///     let got = echo.await?;
    ///     let (res, _) = writer.write_all(got.clone()).await;
    ///     res?;
    ///     client.await?;
    ///     assert_eq!(got, b"ping");
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let shared = std::rc::Rc::new(self);
        (
            OwnedReadHalf(std::rc::Rc::clone(&shared)),
            OwnedWriteHalf(shared),
        )
    }
}

/// The read half of a [`TcpStream`] (see [`TcpStream::into_split`]).
#[derive(Debug)]
pub struct OwnedReadHalf(std::rc::Rc<TcpStream>);

/// The write half of a [`TcpStream`] (see [`TcpStream::into_split`]).
#[derive(Debug)]
pub struct OwnedWriteHalf(std::rc::Rc<TcpStream>);

impl OwnedReadHalf {
    /// [`TcpStream::read`].
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = (io::Result<usize>, B)> + '_ {
        self.0.read(buf)
    }
    /// [`TcpStream::readable`].
    pub async fn readable(&self) -> io::Result<PollMask> {
        self.0.readable().await
    }
    /// The stream both halves share.
    pub fn stream(&self) -> &TcpStream {
        &self.0
    }
}

impl OwnedWriteHalf {
    /// [`TcpStream::write`].
    pub async fn write<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        self.0.write(buf).await
    }
    /// [`TcpStream::write_all`].
    pub fn write_all(&self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)> + '_ {
        self.0.write_all(buf)
    }
    /// Shuts the write side: the peer reads end of stream (the read half reads on).
    pub fn shutdown(&self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
    /// The stream both halves share.
    pub fn stream(&self) -> &TcpStream {
        &self.0
    }
}

impl crate::io::Socket for TcpStream {
    fn feed(&self) -> Option<super::FeedOf<'_>> {
        Some(super::FeedOf::new(&self.ready, self.inner.as_raw_fd()))
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// For calls the ring has no op for (`setsockopt`, `sendfile`, ...). Leave the descriptor
/// open: the stream closes it, after cancelling its ops.
impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.ready.release();
        cancel_ops_on(self.inner.as_raw_fd());
        self.reg.release(self.inner.as_raw_fd());
    }
}
