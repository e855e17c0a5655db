//! The epoll backend's per-op decision: **done now**, **wait for readiness**, or **offload to
//! the pool** — and the non-blocking attempts behind it.
//!
//! * Reads try `preadv2(RWF_NOWAIT)` first, so a page-cache hit completes inline and never
//!   reaches the pool; writes try `pwritev2(RWF_NOWAIT)`. `EAGAIN` then means "wait for
//!   readiness" on a pipe, socket or tty, and "offload" on a regular file or block device.
//! * Sockets use `MSG_DONTWAIT`; `Accept` and `Connect` switch the socket to `O_NONBLOCK`.
//! * `OpenAt` tries `openat2(RESOLVE_CACHED | O_NONBLOCK)` first: a regular file or directory
//!   whose look-up needs no disk I/O (a server's hot files) opens inline; the rest go to the
//!   pool (see `open_cached`).
//! * `Readv`/`Writev`/`Fsync` go to the pool; `Close` and `Nop` are done now.
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use crate::op::Op;
use crate::pool::Work;
use crate::slab::Key;
use crate::sys::posix::{self as sio, FdKind};
use crate::sys::RawSockAddr;

/// What to do with an op next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Finished with this raw result (`>= 0`, or `-errno`).
    Done(i32),
    /// A receive or send finished having moved fewer bytes than asked (`res > 0`): on a TCP
    /// socket, `direction` (`IN`/`OUT`) of `fd` is not ready now.
    Short { res: i32, fd: i32, direction: u32 },
    /// Try again when the fd reports any of these epoll bits; the attempt just saw `EAGAIN`
    /// (so the next change of state is a new edge).
    Wait(u32),
    /// Try again when the fd reports any of these bits; no attempt saw `EAGAIN` (the fd could
    /// not say, e.g. `EOPNOTSUPP` for `RWF_NOWAIT`), so the registration must report the fd's
    /// current readiness.
    Arm(u32),
    /// Run it on the blocking pool.
    Pool,
}

const IN: u32 = libc::EPOLLIN as u32;
/// `openat2`'s "look up from the caches only, else `EAGAIN`" (Linux 5.12).
const RESOLVE_CACHED: u64 = 0x20;
const OUT: u32 = libc::EPOLLOUT as u32;

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn done(r: std::io::Result<usize>) -> Next {
    match r {
        Ok(n) => Next::Done(n.min(i32::MAX as usize) as i32),
        Err(e) => Next::Done(-errno(&e)),
    }
}

fn short(n: usize, fd: i32, direction: u32) -> Next {
    Next::Short {
        res: n.min(i32::MAX as usize) as i32,
        fd,
        direction,
    }
}

/// Runs `f` again while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// For a non-blocking attempt that said "not now" (`eagain`) or could not say: wait on a
/// pollable fd, else offload.
fn would_block(fd: i32, bits: u32, eagain: bool) -> Next {
    match sio::fd_kind(fd) {
        Ok(FdKind::Pollable) if eagain => Next::Wait(bits),
        Ok(FdKind::Pollable) => Next::Arm(bits),
        Ok(FdKind::File | FdKind::Block) => Next::Pool,
        Err(e) => Next::Done(-errno(&e)),
    }
}

/// The first attempt, at submission. `Poll`, `EpollWait` and `Timeout` are not attempted here
/// (the driver arms them directly).
pub(super) fn first(op: &mut Op) -> Next {
    match op {
        Op::Nop(_) => Next::Done(0),
        Op::Read(_) | Op::Write(_) | Op::Recv(_) | Op::Send(_) | Op::Accept(_) => again(op, true),
        Op::Readv(_) | Op::Writev(_) | Op::Fsync(_) => Next::Pool,
        Op::OpenAt(o) => open_cached(o),
        Op::Connect(o) => {
            if let Err(e) = sio::set_nonblocking(o.fd) {
                return Next::Done(-errno(&e));
            }
            match retry(|| sio::connect(o.fd, &RawSockAddr::from_socket_addr(&o.addr))) {
                Ok(()) => Next::Done(0),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Next::Wait(OUT),
                Err(e) => Next::Done(-errno(&e)),
            }
        }
        Op::Close(o) => match sio::close(o.fd.as_raw_fd()) {
            Ok(()) => Next::Done(0),
            Err(e) => Next::Done(-errno(&e)),
        },
        Op::Poll(_) | Op::EpollWait(_) | Op::Timeout(_) => unreachable!("armed by the driver"),
    }
}

/// A non-blocking attempt, at submission (`first_time`) or after readiness.
pub(super) fn again(op: &mut Op, first_time: bool) -> Next {
    match op {
        Op::Read(o) => match retry(|| sio::read_at(o.fd, &mut o.buf, o.offset, true)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block(o.fd, IN, true),
            // No RWF_NOWAIT here: after readiness a plain read does not block.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && first_time => {
                would_block(o.fd, IN, false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                done(retry(|| sio::read_at(o.fd, &mut o.buf, o.offset, false)))
            }
            r => done(r),
        },
        Op::Write(o) => match retry(|| sio::write_at(o.fd, &o.buf, o.offset, true)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block(o.fd, OUT, true),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && first_time => {
                would_block(o.fd, OUT, false)
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                done(retry(|| sio::write_at(o.fd, &o.buf, o.offset, false)))
            }
            r => done(r),
        },
        Op::Recv(o) => match retry(|| sio::recv(o.fd, &mut o.buf, o.flags | libc::MSG_DONTWAIT)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait(IN),
            // A peek leaves the bytes queued, and out-of-band or error-queue reads read another
            // queue: then short says nothing about what is left.
            Ok((n, asked))
                if n > 0
                    && n < asked
                    && o.flags & (libc::MSG_PEEK | libc::MSG_OOB | libc::MSG_ERRQUEUE) == 0 =>
            {
                short(n, o.fd, IN)
            }
            r => done(r.map(|(n, _)| n)),
        },
        Op::Send(o) => match retry(|| sio::send(o.fd, &o.buf, o.flags | libc::MSG_DONTWAIT)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait(OUT),
            Ok((n, asked)) if n > 0 && n < asked => short(n, o.fd, OUT),
            r => done(r.map(|(n, _)| n)),
        },
        Op::Accept(o) => {
            if first_time {
                if let Err(e) = sio::set_nonblocking(o.fd) {
                    return Next::Done(-errno(&e));
                }
            }
            match retry(|| sio::accept(o.fd, o.flags)) {
                Ok(fd) => Next::Done(fd.into_raw_fd()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Next::Wait(IN),
                Err(e) => Next::Done(-errno(&e)),
            }
        }
        Op::Connect(o) => match sio::socket_error(o.fd) {
            // Readiness is a hint: writable without an error may still be connecting.
            Ok(0) => match sio::is_connected(o.fd) {
                Ok(true) => Next::Done(0),
                Ok(false) => Next::Wait(OUT),
                Err(e) => Next::Done(-errno(&e)),
            },
            Ok(err) => Next::Done(-err),
            Err(e) => Next::Done(-errno(&e)),
        },
        Op::EpollWait(o) => match crate::sys::epoll_wait_now(o.epfd, &mut o.events.raw) {
            Ok(0) => Next::Wait(IN),
            Ok(n) => Next::Done(n as i32),
            Err(e) => Next::Done(-errno(&e)),
        },
        // Listed, not `_`: a new op must say here whether readiness drives it.
        other @ (Op::Nop(_)
        | Op::Readv(_)
        | Op::Writev(_)
        | Op::Fsync(_)
        | Op::Poll(_)
        | Op::Timeout(_)
        | Op::Close(_)
        | Op::OpenAt(_)) => unreachable!("{} is not readiness-driven", other.name()),
    }
}

/// The inline try of an `OpenAt`: the look-up from the kernel's caches only
/// (`RESOLVE_CACHED`, else `EAGAIN`), and the open itself non-blocking, so that neither waits
/// for the disk nor for a FIFO's other end. An open that asked for `O_NONBLOCK` is kept as
/// it is (no `fstat`: it is what the pool would open). Otherwise only a regular file or
/// directory is kept (its `O_NONBLOCK` cleared); anything else — a look-up that would block, a
/// creating open (which the kernel never does from the caches), a FIFO or device, an error
/// the non-blocking open may have caused — is opened as asked on the pool. (A FIFO or device
/// found this way was opened non-blocking once and closed before the pool opens it.) Errors of
/// the look-up itself stand.
fn open_cached(o: &crate::op::OpenAt) -> Next {
    let flags = o.flags | libc::O_NONBLOCK;
    let resolve = o.resolve | RESOLVE_CACHED;
    match retry(|| sio::openat2(o.dirfd, &o.path, flags, o.effective_mode(), resolve)) {
        // Asked for non-blocking: whatever it opened is what the pool would have opened.
        Ok(fd) if o.flags & libc::O_NONBLOCK != 0 => Next::Done(fd.into_raw_fd()),
        Ok(fd) => match sio::fd_kind(fd.as_raw_fd()) {
            Ok(FdKind::File) => {
                if o.flags & libc::O_NONBLOCK == 0 {
                    if let Err(e) = sio::clear_nonblocking(fd.as_raw_fd()) {
                        return Next::Done(-errno(&e));
                    }
                }
                Next::Done(fd.into_raw_fd())
            }
            Ok(FdKind::Block | FdKind::Pollable) | Err(_) => Next::Pool,
        },
        Err(e) => match errno(&e) {
            code @ (libc::ENOENT
            | libc::ENOTDIR
            | libc::EXDEV
            | libc::ELOOP
            | libc::EACCES
            | libc::ENAMETOOLONG
            | libc::EISDIR
            | libc::EBADF) => Next::Done(-code),
            // EAGAIN: not cached (or a creating open); EINVAL: a kernel before 5.12.
            _ => Next::Pool,
        },
    }
}

/// An op running on the blocking pool.
pub(crate) struct Blocking {
    /// The slot the op came from (checked against the slot's job when it comes back).
    pub key: Key,
    pub op: Op,
    /// A descriptor the op produced (`OpenAt`), closed on drop unless taken: a result nobody
    /// collects never leaks.
    pub produced: Option<OwnedFd>,
}

impl Work for Blocking {
    fn run(&mut self) -> i32 {
        let r = match &mut self.op {
            Op::Read(o) => retry(|| sio::read_at(o.fd, &mut o.buf, o.offset, false)),
            Op::Write(o) => retry(|| sio::write_at(o.fd, &o.buf, o.offset, false)),
            Op::Readv(o) => retry(|| sio::readv_at(o.fd, &mut o.bufs, o.offset)),
            Op::Writev(o) => retry(|| sio::writev_at(o.fd, &o.bufs, o.offset)),
            Op::Fsync(o) => retry(|| sio::fsync(o.fd, o.data_only)).map(|()| 0),
            Op::OpenAt(o) => {
                match retry(|| {
                    sio::openat2(o.dirfd, &o.path, o.flags, o.effective_mode(), o.resolve)
                }) {
                    Ok(fd) => {
                        let raw = fd.as_raw_fd();
                        self.produced = Some(fd);
                        Ok(raw as usize)
                    }
                    Err(e) => Err(e),
                }
            }
            other @ (Op::Nop(_)
            | Op::Poll(_)
            | Op::EpollWait(_)
            | Op::Timeout(_)
            | Op::Accept(_)
            | Op::Connect(_)
            | Op::Recv(_)
            | Op::Send(_)
            | Op::Close(_)) => unreachable!("{} never goes to the pool", other.name()),
        };
        match done(r) {
            Next::Done(res) => res,
            Next::Short { .. } | Next::Wait(_) | Next::Arm(_) | Next::Pool => {
                unreachable!("done() only returns Done")
            }
        }
    }
}
