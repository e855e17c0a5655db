//! Multishot ops: `RecvMulti`, `ReadMulti` (each result in a buffer of a
//! [`BufRing`](crate::BufRing)) and `AcceptMulti` — one submission, a `MORE` completion per
//! result, and one final completion.
//!
//! # Endings (the same on every backend)
//! * end of stream: the final completion is `Ok(0)`;
//! * the buffer ring is empty while data is waiting: `ENOBUFS` (the data stays queued; give
//!   leases back and submit again). The kernel's multishot requests pick a buffer before
//!   they look for data: on io_uring, one that ends so with no data waiting is followed by
//!   a poll for input, then made again;
//! * an error (for `AcceptMulti`, `EMFILE` too) ends it with that error;
//! * cancel (or a deadline) ends it with `ECANCELED` (`TimedOut`); leases already delivered
//!   stay valid;
//! * the backend may also end it with a final completion that carries a result of its own
//!   (`Ok(n)` and a lease, or `Ok(fd)`) when it cannot go on (io_uring's completion queue
//!   overflowed): submit again to continue.
//!
//! # Backends
//! `uring`: multishot `RECV` with buffer select / `READ_MULTISHOT` / multishot `ACCEPT`.
//! `epoll`, `aio` (emulated): on readiness, up to 16 receives (or accepts) into buffers of the
//! same ring, one `MORE` completion each, until the descriptor says `EAGAIN`; a receive that
//! moves less than a buffer's size stops the round until the next readiness edge.
#![forbid(unsafe_code)]

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use io_uring::opcode;

use super::plan::{
    aio_takes_readiness, errno, no_target, on_fd, pool_is_final, retry, AioNext, AioPlan, AioStart,
    Lowered, Multi, Next, OpBase, ReadyCx, ReadyPlan, UringCx, UringPlan, IN,
};
use super::Output;
use crate::buf_ring::{BufRing, Lease};
use crate::sys::buf_ring::Pool;
use crate::sys::posix as sio;
use crate::sys::Done;

/// Receives from a socket again and again (`recv(2)`), each time into a buffer the ring picks
/// from `bufs` when data arrives: a `MORE` completion per receive, `Ok(n)` with the bytes in
/// an [`Output::Lease`]. See the [module](self) for how it ends.
///
/// # Examples
/// ```
/// use oneloop::{Output, RecvMulti, Ring};
/// use std::io::Write;
/// use std::os::fd::AsRawFd;
/// use std::os::unix::net::UnixStream;
///
/// let mut ring = Ring::new()?;
/// let bufs = ring.buf_ring(4, 1024)?;
/// let (a, mut b) = UnixStream::pair()?;
/// ring.submit(RecvMulti::new(a.as_raw_fd(), &bufs), 7)?;
/// b.write_all(b"one")?;
/// drop(b); // end of stream
/// let mut got = Vec::new();
/// loop {
///     ring.wait(1, None)?;
///     let c = ring.next_completion().unwrap();
///     if let Output::Lease(lease) = c.output() {
///         got.extend_from_slice(lease);
///     }
///     if !c.is_more() {
///         assert_eq!(c.result().as_ref().unwrap(), &0); // end of stream
///         break;
///     }
/// }
/// assert_eq!(got, b"one");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct RecvMulti {
    pub(crate) fd: RawFd,
    pub(crate) pool: Arc<Pool>,
    pub(crate) flags: i32,
    /// io_uring: its next request is a poll for data (see [`Op::poll_first`](super::Op)).
    pub(crate) poll_first: bool,
    /// A buffer the final completion carries (io_uring: a last receive without `MORE`).
    last: Option<Lease>,
}

impl RecvMulti {
    /// Receives from `fd` into buffers of `bufs`.
    pub fn new(fd: RawFd, bufs: &BufRing) -> RecvMulti {
        RecvMulti {
            fd,
            pool: Arc::clone(&bufs.pool),
            flags: 0,
            poll_first: false,
            last: None,
        }
    }
    /// Adds `MSG_*` flags (not `MSG_PEEK`, which would receive the same bytes forever).
    pub fn flags(mut self, flags: i32) -> RecvMulti {
        self.flags |= flags;
        self
    }
}

/// Reads from a pipe, FIFO, character device or other pollable stream again and again
/// (`read(2)` at the current position), as [`RecvMulti`] does from a socket. A regular file
/// or block device is refused with `EBADFD` (it is never "not ready").
///
/// # Backends
/// `epoll`, `aio`: each read is `preadv2` with `RWF_NOWAIT`; a descriptor that refuses it (some
/// character devices) is switched to `O_NONBLOCK`.
#[derive(Debug)]
pub struct ReadMulti {
    pub(crate) fd: RawFd,
    pub(crate) pool: Arc<Pool>,
    /// io_uring: its next request is a poll for data (see [`Op::poll_first`](super::Op)).
    pub(crate) poll_first: bool,
    last: Option<Lease>,
}

impl ReadMulti {
    /// Reads from `fd` into buffers of `bufs`.
    pub fn new(fd: RawFd, bufs: &BufRing) -> ReadMulti {
        ReadMulti {
            fd,
            pool: Arc::clone(&bufs.pool),
            poll_first: false,
            last: None,
        }
    }
}

/// Accepts connections on a listening socket again and again (`accept4(2)`, close-on-exec): a
/// `MORE` completion per connection, `Ok(fd)` with the socket in an [`Output::Fd`]. Running out
/// of descriptors (`EMFILE`, `ENFILE`) ends it with that error.
///
/// # Backends
/// `epoll`, `aio`: the listening socket is switched to `O_NONBLOCK`.
#[derive(Debug, Clone, Copy)]
pub struct AcceptMulti {
    pub(crate) fd: RawFd,
    pub(crate) flags: i32,
}

impl AcceptMulti {
    /// Accepts on `fd`; each new socket is close-on-exec.
    pub fn new(fd: RawFd) -> AcceptMulti {
        AcceptMulti {
            fd,
            flags: libc::SOCK_CLOEXEC,
        }
    }
    /// Makes each new socket non-blocking too.
    pub fn nonblocking(mut self) -> AcceptMulti {
        self.flags |= libc::SOCK_NONBLOCK;
        self
    }
}

/// `OpBase` for a multishot op on field `fd` that hands back its kept lease, if any.
macro_rules! multi_on_fd {
    () => {
        fn fd(&self) -> Option<RawFd> {
            Some(self.fd)
        }
        fn is_multishot(&self) -> bool {
            true
        }
    };
}

impl OpBase for RecvMulti {
    no_target!();
    multi_on_fd!();
    fn finish(self, _: Done) -> Output {
        self.last.map_or(Output::None, Output::Lease)
    }
}

impl OpBase for ReadMulti {
    no_target!();
    multi_on_fd!();
    fn finish(self, _: Done) -> Output {
        self.last.map_or(Output::None, Output::Lease)
    }
}

impl OpBase for AcceptMulti {
    no_target!();
    multi_on_fd!();
    fn finish(self, done: Done) -> Output {
        done.into_fd().map_or(Output::None, Output::Fd)
    }
}

/// `UringPlan::step` and `plain` for a multishot op: its last CQE is its result, but it is
/// never plain (its CQEs may carry buffers, which the driver turns into leases).
macro_rules! multi_request {
    () => {
        crate::op::plan::one_request!(plain = |_native| false);
    };
}

/// An emulated multishot op's request on io_uring: a one-shot poll for input on its fd; the
/// driver runs the op's round ([`MultiPlan::round`]) when it fires, and polls again.
fn emulated(cx: &mut UringCx<'_>, fd: RawFd) -> Lowered {
    Lowered::Sqe(on_fd!(cx, fd, |t| opcode::PollAdd::new(t, IN).build()))
}

impl UringPlan for RecvMulti {
    multi_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("RECV", opcode::Recv::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::RecvMulti::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        if !cx.native_multishot || self.poll_first {
            return emulated(cx, self.fd);
        }
        let bgid = self.pool.bgid;
        let entry = if cx.recv_bundle {
            on_fd!(cx, self.fd, |t| opcode::RecvMultiBundle::new(t, bgid)
                .flags(self.flags)
                .build())
        } else {
            on_fd!(cx, self.fd, |t| opcode::RecvMulti::new(t, bgid)
                .flags(self.flags)
                .build())
        };
        // Not `IORING_RECVSEND_POLL_FIRST`: on 6.18 a multishot receive armed that way at end
        // of stream never completes. An empty ring is met by `poll_first` instead.
        Lowered::Sqe(entry)
    }
}

impl UringPlan for ReadMulti {
    multi_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("READ_MULTISHOT", opcode::ReadMulti::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::ReadMulti::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        if !cx.native_multishot || self.poll_first {
            return emulated(cx, self.fd);
        }
        let bgid = self.pool.bgid;
        // The builder assigns the SQE's flags (buffer select) rather than adding to them,
        // dropping the fixed-file flag `on_fd!` set: put it back, or the kernel would read
        // the slot index as a descriptor number (another file).
        Lowered::Sqe(match cx.fixed {
            Some(slot) => opcode::ReadMulti::new(io_uring::types::Fixed(slot), 0, bgid)
                .build()
                .flags(io_uring::squeue::Flags::FIXED_FILE),
            None => opcode::ReadMulti::new(io_uring::types::Fd(self.fd), 0, bgid).build(),
        })
    }
}

impl UringPlan for AcceptMulti {
    multi_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("ACCEPT", opcode::Accept::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::AcceptMulti::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        if !cx.native_multishot {
            return emulated(cx, self.fd);
        }
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::AcceptMulti::new(t)
            .flags(self.flags)
            .build()))
    }
}

/// `ReadyPlan` for a multishot op: prepared ([`MultiPlan::prepare`]) at submission, then
/// armed for `IN` (reporting the fd's current readiness); its rounds are
/// [`MultiPlan::round`]'s.
macro_rules! ready_multi {
    () => {
        pool_is_final!();
        fn direction(&self) -> Option<(RawFd, u32)> {
            None
        }
        fn tried_inline(&self, _: bool) -> bool {
            false
        }
        fn first(&mut self, _: &ReadyCx) -> Next {
            match MultiPlan::prepare(&*self) {
                Ok(()) => Next::Arm(IN),
                Err(e) => Next::Done(-errno(&e)),
            }
        }
        fn again(&mut self, _: bool) -> Next {
            unreachable!("a multishot op's rounds are MultiPlan::round")
        }
        fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
            unreachable!("a multishot op never goes to the pool")
        }
    };
}

impl ReadyPlan for RecvMulti {
    ready_multi!();
}

impl ReadyPlan for ReadMulti {
    ready_multi!();
}

impl ReadyPlan for AcceptMulti {
    ready_multi!();
}

impl AioPlan for RecvMulti {
    aio_takes_readiness!();
}
impl AioPlan for ReadMulti {
    aio_takes_readiness!();
}
impl AioPlan for AcceptMulti {
    aio_takes_readiness!();
}

/// A multishot op where it is emulated (the readiness backends; io_uring when told or on a
/// kernel without the multishot requests): its preparation, and one attempt of a round.
pub(crate) trait MultiPlan {
    /// Checks and prepares the op's fd once, at submission: `EBADFD` for a `ReadMulti` of a
    /// file that is never "not ready" (as the kernel's `READ_MULTISHOT`); a listening socket
    /// made non-blocking for `AcceptMulti` (its rounds must stop at `EAGAIN`).
    fn prepare(&self) -> std::io::Result<()> {
        Ok(())
    }
    /// One non-blocking attempt after readiness; `closed`: the fd reported a hang-up or error
    /// (a short receive then says nothing about what is left).
    fn round(&mut self, closed: bool) -> Multi;
    /// A buffer the kernel picked for this op (io_uring), to hand back with the final
    /// completion.
    fn keep(&mut self, lease: Lease);
}

/// One attempt into a buffer of `pool`: `receive` moves bytes from the fd into it.
fn attempt_into(
    fd: RawFd,
    pool: &Arc<Pool>,
    closed: bool,
    receive: impl FnOnce(crate::sys::buf_ring::Taken) -> std::io::Result<Lease>,
) -> Multi {
    let Some(buf) = pool.take() else {
        // No buffer: the op ends `ENOBUFS` if data (or the end of the stream) is waiting, as
        // the kernel's multishot receive does; the bytes stay queued.
        return match sio::input_waiting(fd) {
            Ok(true) => Multi::End(-libc::ENOBUFS),
            Ok(false) => Multi::Wait,
            Err(e) => Multi::End(-errno(&e)),
        };
    };
    match receive(buf) {
        Ok(lease) if lease.is_empty() => Multi::End(0),
        Ok(lease) => {
            let res = lease.len() as i32;
            let drained = lease.len() < lease.capacity() && !closed;
            Multi::More {
                res,
                output: Output::Lease(lease),
                drained,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Multi::Wait,
        Err(e) => Multi::End(-errno(&e)),
    }
}

impl MultiPlan for RecvMulti {
    fn round(&mut self, closed: bool) -> Multi {
        let (fd, flags) = (self.fd, self.flags);
        attempt_into(fd, &self.pool, closed, |buf| buf.recv(fd, flags))
    }
    fn keep(&mut self, lease: Lease) {
        self.last = Some(lease);
    }
}

impl MultiPlan for ReadMulti {
    fn prepare(&self) -> std::io::Result<()> {
        match sio::fd_kind(self.fd) {
            Ok(sio::FdKind::Pollable) => Ok(()),
            Ok(_) => Err(std::io::Error::from_raw_os_error(libc::EBADFD)),
            Err(e) => Err(e),
        }
    }
    fn round(&mut self, closed: bool) -> Multi {
        let fd = self.fd;
        attempt_into(fd, &self.pool, closed, |buf| buf.read(fd))
    }
    fn keep(&mut self, lease: Lease) {
        self.last = Some(lease);
    }
}

impl MultiPlan for AcceptMulti {
    fn prepare(&self) -> std::io::Result<()> {
        sio::set_nonblocking(self.fd)
    }
    fn round(&mut self, _: bool) -> Multi {
        match retry(|| sio::accept(self.fd, self.flags)) {
            Ok(fd) => {
                use std::os::fd::AsRawFd;
                Multi::More {
                    res: fd.as_raw_fd(),
                    output: Output::Fd(fd),
                    drained: false,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Multi::Wait,
            Err(e) => Multi::End(-errno(&e)),
        }
    }
    fn keep(&mut self, _: Lease) {
        unreachable!("an accept picks no buffer")
    }
}
