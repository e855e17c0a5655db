//! Socket ops: `Accept`, `Connect`, `Recv`, `Send`, `SendZc` — each declared once, with its io_uring
//! request and its readiness plan (a non-blocking attempt, then readiness). On aio they take
//! the readiness path (AIO has no socket requests). `SendFile` is in `send_file.rs`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};

use io_uring::opcode;

use super::plan::{
    aio_takes_readiness, clamp_len, done, errno, no_target, on_fd, one_request, one_shot_on,
    pool_is_final, retry, short, AioNext, AioPlan, AioStart, Lowered, Next, OpBase, ReadyCx,
    ReadyPlan, Step, UringCx, UringPlan, IN, OUT,
};
use super::Output;
use crate::buf::{Buf, IoBuf, IoBufMut};
use crate::sys::posix as sio;
use crate::sys::Done;
use crate::sys::RawSockAddr;

/// Accepts a connection on a listening socket (`accept4(2)`, close-on-exec).
///
/// Completes with the new socket's descriptor number and the socket itself as an owned fd in
/// the completion: dropping the completion closes it, so nothing leaks.
///
/// # Backends
/// `uring`: `ACCEPT`. `epoll`, `aio`: readiness, then `accept4`; the listening socket is
/// switched to `O_NONBLOCK` (so a connection taken by someone else cannot block the loop).
#[derive(Debug, Clone, Copy)]
pub struct Accept {
    pub(crate) fd: RawFd,
    pub(crate) flags: i32,
}

impl Accept {
    /// Accepts on `fd`; the new socket is close-on-exec.
    pub fn new(fd: RawFd) -> Accept {
        Accept {
            fd,
            flags: libc::SOCK_CLOEXEC,
        }
    }
    /// Makes the new socket non-blocking too.
    pub fn nonblocking(mut self) -> Accept {
        self.flags |= libc::SOCK_NONBLOCK;
        self
    }
}

/// Connects a socket to `addr` (`connect(2)`). Completes with `Ok(0)`.
///
/// # Backends
/// `uring`: `CONNECT`. `epoll`, `aio`: the socket is switched to `O_NONBLOCK`, then
/// `connect`, writability, and `SO_ERROR`.
#[derive(Debug, Clone, Copy)]
pub struct Connect {
    pub(crate) fd: RawFd,
    pub(crate) addr: SocketAddr,
}

impl Connect {
    /// Connects `fd` to `addr`.
    pub fn new(fd: RawFd, addr: SocketAddr) -> Connect {
        Connect { fd, addr }
    }
}

/// Receives from a socket into an owned buffer (`recv(2)`); like [`Read`](super::Read) for where bytes go.
#[derive(Debug)]
pub struct Recv {
    pub(crate) fd: RawFd,
    pub(crate) buf: Buf,
    pub(crate) flags: i32,
}

impl Recv {
    /// Receives into `buf` from `fd`.
    #[inline]
    pub fn new(fd: RawFd, buf: impl IoBufMut) -> Recv {
        Recv {
            fd,
            buf: buf.into_buf(),
            flags: 0,
        }
    }
    /// Adds `MSG_*` flags.
    pub fn flags(mut self, flags: i32) -> Recv {
        self.flags |= flags;
        self
    }

    /// One non-blocking attempt now, outside any ring (`recv` with `MSG_DONTWAIT`, retried on
    /// `EINTR`): received bytes land in the buffer as the op's completion would leave them.
    /// `Ok(None)` when nothing is queued (`EAGAIN`). For a caller that keeps its own readiness hint and
    /// submits the op only when this says "not now".
    ///
    /// # Examples
    /// ```
    /// use oneloop::Recv;
    /// use std::io::Write;
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (a, mut b) = UnixStream::pair()?;
    /// let mut recv = Recv::new(a.as_raw_fd(), Vec::with_capacity(8));
    /// assert!(recv.try_now()?.is_none(), "nothing to receive yet");
    /// b.write_all(b"hi")?;
    /// let got = recv.try_now()?.expect("received");
    /// assert_eq!((got.done, got.asked), (2, 8));
    /// assert_eq!(recv.into_buf().as_slice(), b"hi");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[inline]
    pub fn try_now(&mut self) -> std::io::Result<Option<Transfer>> {
        let (fd, flags) = (self.fd, self.flags | libc::MSG_DONTWAIT);
        sio::recv_now(fd, &mut self.buf, flags)
            .map(|moved| moved.map(|(done, asked)| Transfer { done, asked }))
    }

    /// How many bytes a receive may put into the buffer now.
    #[inline]
    pub fn room(&self) -> usize {
        self.buf.room()
    }

    /// Gives the buffer back (with what [`try_now`](Self::try_now) received).
    #[inline]
    pub fn into_buf(self) -> Buf {
        self.buf
    }

    /// The buffer, for a caller that fills it another way before (or instead of) submitting
    /// the op — with bytes from a [`Lease`](crate::Lease), say ([`Buf::fill_from`]).
    #[inline]
    pub fn buf_mut(&mut self) -> &mut Buf {
        &mut self.buf
    }
}

/// What one attempt of [`Recv::try_now`] or [`Send::try_now`] moved: `done` bytes of the
/// `asked` it offered. `done < asked` says the socket was drained (a receive) or its send
/// buffer filled (a send), so the next attempt would likely say "not now".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes moved.
    pub done: usize,
    /// Bytes offered: the buffer's room (a receive) or its bytes (a send).
    pub asked: usize,
}

/// Sends an owned buffer's bytes on a socket (`send(2)`, with `MSG_NOSIGNAL`).
#[derive(Debug)]
pub struct Send {
    pub(crate) fd: RawFd,
    pub(crate) buf: Buf,
    pub(crate) flags: i32,
}

impl Send {
    /// Sends `buf` on `fd`; a closed peer gives `EPIPE`, never `SIGPIPE`.
    #[inline]
    pub fn new(fd: RawFd, buf: impl IoBuf) -> Send {
        Send {
            fd,
            buf: buf.into_buf(),
            flags: libc::MSG_NOSIGNAL,
        }
    }
    /// Adds `MSG_*` flags.
    pub fn flags(mut self, flags: i32) -> Send {
        self.flags |= flags;
        self
    }

    /// One non-blocking attempt now, outside any ring (`send` with `MSG_DONTWAIT`, retried on
    /// `EINTR`), as [`Recv::try_now`]: `Ok(None)` when the send buffer is full. A later
    /// submission of the op sends the buffer from its start again: after a partial attempt,
    /// submit a `Send` of the rest.
    #[inline]
    pub fn try_now(&mut self) -> std::io::Result<Option<Transfer>> {
        let (fd, flags) = (self.fd, self.flags | libc::MSG_DONTWAIT);
        sio::send_now(fd, &self.buf, flags)
            .map(|moved| moved.map(|(done, asked)| Transfer { done, asked }))
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_buf(self) -> Buf {
        self.buf
    }
}

impl OpBase for Accept {
    no_target!();
    one_shot_on!(fd);
    fn finish(self, done: Done) -> Output {
        done.into_fd().map_or(Output::None, Output::Fd)
    }
}

impl UringPlan for Accept {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("ACCEPT", opcode::Accept::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Accept::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let null = std::ptr::null_mut();
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Accept::new(
            t,
            null,
            null.cast()
        )
        .flags(self.flags)
        .build()))
    }
}

impl ReadyPlan for Accept {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        Some((self.fd, IN))
    }
    fn tried_inline(&self, _: bool) -> bool {
        false
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        self.again(true)
    }
    fn again(&mut self, first_time: bool) -> Next {
        // Non-blocking, so a connection taken by someone else cannot block the loop.
        if first_time {
            if let Err(e) = sio::set_nonblocking(self.fd) {
                return Next::Done(-errno(&e));
            }
        }
        match retry(|| sio::accept(self.fd, self.flags)) {
            Ok(fd) => Next::Done(fd.into_raw_fd()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait(IN),
            Err(e) => Next::Done(-errno(&e)),
        }
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("Accept never goes to the pool")
    }
}

impl AioPlan for Accept {
    aio_takes_readiness!();
}

impl OpBase for Connect {
    no_target!();
    one_shot_on!(fd);
    fn finish(self, _: Done) -> Output {
        Output::None
    }
}

impl UringPlan for Connect {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("CONNECT", opcode::Connect::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Connect::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let addr = &mut cx.scratch().addr;
        *addr = RawSockAddr::from_socket_addr(&self.addr);
        let (ptr, len) = (addr.as_ptr(), addr.len);
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Connect::new(t, ptr, len).build()))
    }
}

impl ReadyPlan for Connect {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        false
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        if let Err(e) = sio::set_nonblocking(self.fd) {
            return Next::Done(-errno(&e));
        }
        match retry(|| sio::connect(self.fd, &RawSockAddr::from_socket_addr(&self.addr))) {
            Ok(()) => Next::Done(0),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Next::Wait(OUT),
            Err(e) => Next::Done(-errno(&e)),
        }
    }
    fn again(&mut self, _: bool) -> Next {
        match sio::socket_error(self.fd) {
            // Readiness is a hint: writable without an error may still be connecting.
            Ok(0) => match sio::is_connected(self.fd) {
                Ok(true) => Next::Done(0),
                Ok(false) => Next::Wait(OUT),
                Err(e) => Next::Done(-errno(&e)),
            },
            Ok(err) => Next::Done(-err),
            Err(e) => Next::Done(-errno(&e)),
        }
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("Connect never goes to the pool")
    }
}

impl AioPlan for Connect {
    aio_takes_readiness!();
}

impl OpBase for Recv {
    no_target!();
    one_shot_on!(fd);
    fn finish(mut self, done: Done) -> Output {
        done.fill(&mut self.buf);
        Output::Buf(self.buf)
    }
}

impl UringPlan for Recv {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("RECV", opcode::Recv::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Recv::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let (ptr, len) = self.buf.read_target();
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Recv::new(
            t,
            ptr,
            clamp_len(len)
        )
        .flags(self.flags)
        .build()))
    }
}

impl ReadyPlan for Recv {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        Some((self.fd, IN))
    }
    fn tried_inline(&self, _: bool) -> bool {
        true
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        self.again(true)
    }
    fn again(&mut self, _: bool) -> Next {
        let (fd, flags) = (self.fd, self.flags);
        match retry(|| sio::recv(fd, &mut self.buf, flags | libc::MSG_DONTWAIT)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait(IN),
            // A peek leaves the bytes queued, and out-of-band or error-queue reads read another
            // queue: then short says nothing about what is left.
            Ok((n, asked))
                if n > 0
                    && n < asked
                    && flags & (libc::MSG_PEEK | libc::MSG_OOB | libc::MSG_ERRQUEUE) == 0 =>
            {
                short(n, fd, IN)
            }
            r => done(r.map(|(n, _)| n)),
        }
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("Recv never goes to the pool")
    }
}

impl AioPlan for Recv {
    aio_takes_readiness!();
}

impl OpBase for Send {
    no_target!();
    one_shot_on!(fd);
    fn finish(self, _: Done) -> Output {
        Output::Buf(self.buf)
    }
}

impl UringPlan for Send {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("SEND", opcode::Send::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Send::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let (ptr, len) = self.buf.write_source();
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::Send::new(
            t,
            ptr,
            clamp_len(len)
        )
        .flags(self.flags)
        .build()))
    }
}

impl ReadyPlan for Send {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        Some((self.fd, OUT))
    }
    fn tried_inline(&self, _: bool) -> bool {
        true
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        self.again(true)
    }
    fn again(&mut self, _: bool) -> Next {
        match retry(|| sio::send(self.fd, &self.buf, self.flags | libc::MSG_DONTWAIT)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait(OUT),
            Ok((n, asked)) if n > 0 && n < asked => short(n, self.fd, OUT),
            r => done(r.map(|(n, _)| n)),
        }
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("Send never goes to the pool")
    }
}

impl AioPlan for Send {
    aio_takes_readiness!();
}

/// Sends an owned buffer's bytes on a socket without copying them where the kernel can
/// (`send(2)` with `MSG_ZEROCOPY`'s io_uring form, `SEND_ZC`; `MSG_NOSIGNAL`).
///
/// The kernel may read the buffer after the bytes are counted as sent — until the network
/// device is done with it — so the ring keeps the buffer until the kernel says it has let
/// go (its notification), and only then delivers the op's one final completion: the count
/// sent (a short count is possible, as for [`Send`]) and the buffer. A cancel or deadline
/// also waits for that notification; dropping the ring waits for it like any op in flight.
///
/// Worth it for large sends (tens of KiB and up) on a real network device. To a loopback
/// destination the kernel copies the bytes anyway, and the notification is one more
/// completion to wait for: use [`Send`] there (oneloop's own `serve` sends zero-copy only
/// to other hosts unless told otherwise).
///
/// A socket that cannot send zero-copy (a Unix socket; the kernel says `EOPNOTSUPP`) is sent
/// to the ordinary way by the same op, as on a kernel without `SEND_ZC` (before 6.0).
///
/// # Errors
/// As [`Send`]: `EPIPE` after the peer closed, `ECONNRESET`, `EAGAIN` never (it waits).
///
/// # Backends
/// `uring`: `SEND_ZC` (Linux 6.0); a [`FixedBuf`](crate::FixedBuf) of the ring's registered
/// pool is named by its index (`IORING_RECVSEND_FIXED_BUF`: not even the pages are looked
/// up). `epoll`, `aio`: an ordinary send, as [`Send`] does it.
///
/// # Examples
/// ```
/// use std::io::Read as _;
/// use std::os::fd::AsRawFd;
/// use oneloop::{Ring, SendZc};
///
/// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
/// let mut ring = Ring::new()?;
/// ring.submit(SendZc::new(a.as_raw_fd(), vec![7u8; 64 << 10]), 1)?;
/// let mut got = vec![0u8; 64 << 10];
/// let reader = std::thread::spawn(move || b.read_exact(&mut got).map(|()| got));
/// let done = loop {
///     ring.wait(1, None)?;
///     if let Some(c) = ring.completions().next() {
///         break c;
///     }
/// };
/// assert_eq!(*done.result().as_ref().unwrap(), 64 << 10);
/// assert!(reader.join().unwrap()?.iter().all(|&x| x == 7));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct SendZc {
    pub(crate) send: Send,
    /// io_uring: the result of the request's first CQE, kept while the kernel still holds
    /// the buffer (its notification to come).
    pub(crate) sent: Option<i32>,
    /// io_uring: the socket cannot send zero-copy (`EOPNOTSUPP`: a Unix socket, say), so
    /// the op sends the ordinary way (`SEND`).
    copy: bool,
}

impl SendZc {
    /// Sends `buf` on `fd`, zero-copy where the backend can; a closed peer gives `EPIPE`.
    pub fn new(fd: RawFd, buf: impl IoBuf) -> SendZc {
        SendZc {
            send: Send::new(fd, buf),
            sent: None,
            copy: false,
        }
    }

    /// Adds `MSG_*` flags.
    pub fn flags(mut self, flags: i32) -> SendZc {
        self.send = self.send.flags(flags);
        self
    }

    /// Gives the buffer back.
    pub fn into_buf(self) -> Buf {
        self.send.buf
    }

    /// The op's result while the kernel still holds its buffer (see `Op::result_in`); not a
    /// refusal that the op will answer by sending the ordinary way.
    pub(crate) fn result_in(&self) -> Option<i32> {
        self.sent
            .filter(|&res| self.copy || res != -libc::EOPNOTSUPP)
    }
}

impl OpBase for SendZc {
    no_target!();
    fn fd(&self) -> Option<RawFd> {
        Some(self.send.fd)
    }
    fn is_multishot(&self) -> bool {
        false
    }
    fn finish(self, _: Done) -> Output {
        Output::Buf(self.send.buf)
    }
}

impl UringPlan for SendZc {
    const OPCODES: &'static [(&'static str, u8)] = &[
        ("SEND_ZC", opcode::SendZc::CODE),
        ("SEND", opcode::Send::CODE),
    ];
    fn opcode(_: bool) -> Option<u8> {
        // What it needs at the least: where the kernel lacks SEND_ZC it sends the ordinary way.
        Some(opcode::Send::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        if self.copy || !cx.send_zc {
            return self.send.lower(cx);
        }
        let (ptr, len) = self.send.buf.write_source();
        let index = self.send.buf.fixed_index(cx.fixed_pool);
        cx.fixed_op = index.is_some();
        Lowered::Sqe(on_fd!(cx, self.send.fd, |t| opcode::SendZc::new(
            t,
            ptr,
            clamp_len(len)
        )
        .buf_index(index)
        .flags(self.send.flags)
        .build()))
    }
    /// The request's last CQE: the notification (the result was the first CQE's, kept by the
    /// driver in `sent`), or — when the kernel posted no notification — the result itself.
    fn step(&mut self, res: i32, stop: bool) -> Step {
        let res = self.sent.take().unwrap_or(res);
        if res == -libc::EOPNOTSUPP && !self.copy {
            // Not a socket that sends zero-copy: the ordinary way, once — unless the op is
            // to stop, which it does as if cancelled before it sent (nothing was).
            if stop {
                return Step::Done(-libc::ECANCELED);
            }
            self.copy = true;
            return Step::Again;
        }
        Step::Done(res)
    }
    fn plain(_: bool) -> bool {
        // Two CQEs: the result, then the notification.
        false
    }
}

impl ReadyPlan for SendZc {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        self.send.direction()
    }
    fn tried_inline(&self, aio: bool) -> bool {
        self.send.tried_inline(aio)
    }
    fn first(&mut self, cx: &ReadyCx) -> Next {
        self.send.first(cx)
    }
    fn again(&mut self, first_time: bool) -> Next {
        self.send.again(first_time)
    }
    fn blocking(&mut self, fd: &mut Option<OwnedFd>) -> i32 {
        self.send.blocking(fd)
    }
}

impl AioPlan for SendZc {
    aio_takes_readiness!();
}
