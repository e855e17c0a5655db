//! The closed set of operations: one struct per op, gathered in [`Op`].
//!
//! Each op names the syscall or opcode it stands for. Ops own what the kernel may touch
//! (buffers, event arrays, paths, addresses); the ring keeps them until the final completion
//! and returns the buffers there. Any op may carry a [deadline](Submission::deadline).
//!
//! Each backend lowers `Op` with one exhaustive `match`, so a new op cannot be forgotten by a
//! backend: the compiler refuses it.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::fmt;
use std::net::SocketAddr;
use std::ops::{BitAnd, BitOr, BitOrAssign};
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::buf::{Buf, IoBuf, IoBufMut};

/// Offset meaning "the file's current position" (for pipes, sockets and other streams).
pub const CURRENT_POSITION: u64 = u64::MAX;

/// Readiness bits, as `poll(2)` and `epoll(7)` define them (the values are the kernel's).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PollMask(u32);

impl PollMask {
    /// Readable (`POLLIN`).
    pub const IN: PollMask = PollMask(libc::POLLIN as u32);
    /// Urgent data (`POLLPRI`).
    pub const PRI: PollMask = PollMask(libc::POLLPRI as u32);
    /// Writable (`POLLOUT`).
    pub const OUT: PollMask = PollMask(libc::POLLOUT as u32);
    /// Error (`POLLERR`): reported even when not requested.
    pub const ERR: PollMask = PollMask(libc::POLLERR as u32);
    /// Hang-up (`POLLHUP`): reported even when not requested.
    pub const HUP: PollMask = PollMask(libc::POLLHUP as u32);
    /// Invalid descriptor (`POLLNVAL`).
    pub const NVAL: PollMask = PollMask(libc::POLLNVAL as u32);
    /// The peer shut down its writing half (`POLLRDHUP`).
    pub const RDHUP: PollMask = PollMask(libc::POLLRDHUP as u32);

    /// The empty mask.
    pub const fn empty() -> PollMask {
        PollMask(0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// A mask from raw bits (unknown bits are kept).
    pub const fn from_bits(bits: u32) -> PollMask {
        PollMask(bits)
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: PollMask) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: PollMask) -> bool {
        self.0 & other.0 != 0
    }
    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for PollMask {
    type Output = PollMask;
    fn bitor(self, rhs: PollMask) -> PollMask {
        PollMask(self.0 | rhs.0)
    }
}
impl BitOrAssign for PollMask {
    fn bitor_assign(&mut self, rhs: PollMask) {
        self.0 |= rhs.0;
    }
}
impl BitAnd for PollMask {
    type Output = PollMask;
    fn bitand(self, rhs: PollMask) -> PollMask {
        PollMask(self.0 & rhs.0)
    }
}

impl fmt::Debug for PollMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(PollMask, &str); 7] = [
            (PollMask::IN, "IN"),
            (PollMask::PRI, "PRI"),
            (PollMask::OUT, "OUT"),
            (PollMask::ERR, "ERR"),
            (PollMask::HUP, "HUP"),
            (PollMask::NVAL, "NVAL"),
            (PollMask::RDHUP, "RDHUP"),
        ];
        let mut first = true;
        let mut rest = self.0;
        for (bit, name) in NAMES {
            if self.contains(bit) {
                write!(f, "{}{name}", if first { "" } else { "|" })?;
                first = false;
                rest &= !bit.0;
            }
        }
        if rest != 0 || first {
            write!(f, "{}{rest:#x}", if first { "" } else { "|" })?;
        }
        Ok(())
    }
}

/// When an op (or a [`Timeout`]) gives up: a delay from submission, or an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// This long after `submit`.
    After(Duration),
    /// At this instant (`CLOCK_MONOTONIC`).
    At(Instant),
}

impl Deadline {
    /// The instant this deadline falls on, for an op submitted at `now`.
    ///
    /// A delay too long for an `Instant` (`Duration::MAX`, say) falls a century from `now`:
    /// in practice never, and still cancellable.
    pub fn instant(self, now: Instant) -> Instant {
        match self {
            Deadline::After(d) => now.checked_add(d).unwrap_or(now + Deadline::FAR),
            Deadline::At(at) => at,
        }
    }

    /// How far away "never" is: what a delay that overflows an `Instant` is clamped to.
    pub(crate) const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);
}

impl From<Duration> for Deadline {
    fn from(d: Duration) -> Deadline {
        Deadline::After(d)
    }
}
impl From<Instant> for Deadline {
    fn from(at: Instant) -> Deadline {
        Deadline::At(at)
    }
}

/// An op and its optional deadline: what [`Ring::submit`](crate::Ring::submit) takes.
///
/// Every op converts into a `Submission`; call `.deadline(..)` on an op to add one.
#[derive(Debug)]
pub struct Submission {
    pub(crate) op: Op,
    pub(crate) deadline: Option<Deadline>,
}

impl Submission {
    /// The op's kind (see [`Op::kind`]).
    pub(crate) fn op_kind(&self) -> usize {
        self.op.kind()
    }

    /// Ends the op with `TimedOut` if it has not completed by `deadline`.
    ///
    /// Exactly one final completion results either way: the op's own, or `TimedOut`. On a
    /// multishot poll the deadline ends the whole stream.
    ///
    /// # Backends
    /// `uring`: a linked timeout (`LINK_TIMEOUT`). `epoll`, `aio`: a timer that cancels the op;
    /// an op already running on the blocking pool, or an AIO file request (not cancellable),
    /// cannot be interrupted and ends with its real result.
    pub fn deadline(mut self, deadline: impl Into<Deadline>) -> Submission {
        self.deadline = Some(deadline.into());
        self
    }

    /// The op, without its deadline.
    pub fn into_op(self) -> Op {
        self.op
    }
}

impl<T: Into<Op>> From<T> for Submission {
    fn from(op: T) -> Submission {
        Submission {
            op: op.into(),
            deadline: None,
        }
    }
}

/// Every operation a ring can run. See each struct for its semantics and errors.
#[derive(Debug)]
pub enum Op {
    /// Completes at once with `Ok(0)`.
    Nop(Nop),
    /// `pread`.
    Read(Read),
    /// `pwrite`.
    Write(Write),
    /// `preadv`.
    Readv(Readv),
    /// `pwritev`.
    Writev(Writev),
    /// `fsync` / `fdatasync`.
    Fsync(Fsync),
    /// Readiness of any descriptor, one-shot or multishot.
    Poll(Poll),
    /// `epoll_wait` as an op.
    EpollWait(EpollWait),
    /// A timer.
    Timeout(Timeout),
    /// `accept4`.
    Accept(Accept),
    /// `connect`.
    Connect(Connect),
    /// `recv`.
    Recv(Recv),
    /// `send`.
    Send(Send),
    /// `close`.
    Close(Close),
    /// `openat2`.
    OpenAt(OpenAt),
}

impl Op {
    /// The descriptor the op works on, if any (what [`Ring::cancel_fd`](crate::Ring::cancel_fd) matches).
    pub fn fd(&self) -> Option<RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            Op::Nop(_) | Op::Timeout(_) => None,
            Op::Read(o) => Some(o.fd),
            Op::Write(o) => Some(o.fd),
            Op::Readv(o) => Some(o.fd),
            Op::Writev(o) => Some(o.fd),
            Op::Fsync(o) => Some(o.fd),
            Op::Poll(o) => Some(o.fd),
            Op::EpollWait(o) => Some(o.epfd),
            Op::Accept(o) => Some(o.fd),
            Op::Connect(o) => Some(o.fd),
            Op::Recv(o) => Some(o.fd),
            Op::Send(o) => Some(o.fd),
            Op::Close(o) => Some(o.fd.as_raw_fd()),
            Op::OpenAt(o) => Some(o.dirfd),
        }
    }

    /// Every op's name, in the order of [`kind`](Self::kind).
    pub const NAMES: [&'static str; 15] = [
        "Nop",
        "Read",
        "Write",
        "Readv",
        "Writev",
        "Fsync",
        "Poll",
        "EpollWait",
        "Timeout",
        "Accept",
        "Connect",
        "Recv",
        "Send",
        "Close",
        "OpenAt",
    ];

    /// The op's kind as an index into [`NAMES`](Self::NAMES) (and [`Stats::submitted`]).
    ///
    /// [`Stats::submitted`]: crate::Stats::submitted
    pub fn kind(&self) -> usize {
        match self {
            Op::Nop(_) => 0,
            Op::Read(_) => 1,
            Op::Write(_) => 2,
            Op::Readv(_) => 3,
            Op::Writev(_) => 4,
            Op::Fsync(_) => 5,
            Op::Poll(_) => 6,
            Op::EpollWait(_) => 7,
            Op::Timeout(_) => 8,
            Op::Accept(_) => 9,
            Op::Connect(_) => 10,
            Op::Recv(_) => 11,
            Op::Send(_) => 12,
            Op::Close(_) => 13,
            Op::OpenAt(_) => 14,
        }
    }

    /// The op's name, for messages (`"Read"`, `"EpollWait"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Nop(_) => "Nop",
            Op::Read(_) => "Read",
            Op::Write(_) => "Write",
            Op::Readv(_) => "Readv",
            Op::Writev(_) => "Writev",
            Op::Fsync(_) => "Fsync",
            Op::Poll(_) => "Poll",
            Op::EpollWait(_) => "EpollWait",
            Op::Timeout(_) => "Timeout",
            Op::Accept(_) => "Accept",
            Op::Connect(_) => "Connect",
            Op::Recv(_) => "Recv",
            Op::Send(_) => "Send",
            Op::Close(_) => "Close",
            Op::OpenAt(_) => "OpenAt",
        }
    }

    /// Whether the op may complete more than once (a multishot poll).
    pub fn is_multishot(&self) -> bool {
        matches!(self, Op::Poll(p) if p.multishot)
    }
}

/// Implements `From<$op> for Op` and `$op::deadline`.
macro_rules! op_conversions {
    ($($op:ident),* $(,)?) => {$(
        impl From<$op> for Op {
            fn from(op: $op) -> Op {
                Op::$op(op)
            }
        }
        impl $op {
            /// Adds a deadline: see [`Submission::deadline`].
            pub fn deadline(self, deadline: impl Into<Deadline>) -> Submission {
                Submission::from(self).deadline(deadline)
            }
        }
    )*};
}
op_conversions!(
    Nop, Read, Write, Readv, Writev, Fsync, Poll, EpollWait, Timeout, Accept, Connect, Recv, Send,
    Close, OpenAt
);

/// Does nothing and completes with `Ok(0)`: measures the ring's own cost.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nop;

/// Reads from `fd` at `offset` into an owned buffer (`pread(2)`).
///
/// Completes with the number of bytes read (0 at end of file); the buffer comes back in the
/// completion with its length grown by that much (see [`crate::buf`] for where bytes go).
/// Use [`CURRENT_POSITION`] for pipes, sockets and other streams.
///
/// # Errors
/// The kernel's: `EBADF` (fd closed or not open for reading), `EINVAL` (misaligned
/// `O_DIRECT`), `EISDIR`, ...
///
/// # Backends
/// `uring`: `READ`. `epoll`: `preadv2(RWF_NOWAIT)` at submission, so a page-cache hit
/// completes inline; a miss goes to the blocking pool; a pipe, socket or tty waits for
/// readiness and then reads. `aio`: at an offset, `IOCB_CMD_PREAD` with `RWF_NOWAIT` (a hit
/// completes in the kernel at once); on `EAGAIN` an `O_DIRECT` file is read again without the
/// flag, a buffered one on the pool; at [`CURRENT_POSITION`], as on epoll. A submitted AIO
/// read cannot be cancelled (`TooLate`).
#[derive(Debug)]
pub struct Read {
    pub(crate) fd: RawFd,
    pub(crate) buf: Buf,
    pub(crate) offset: u64,
}

impl Read {
    /// Reads into `buf` from `fd` at `offset`.
    pub fn new(fd: RawFd, buf: impl IoBufMut, offset: u64) -> Read {
        Read {
            fd,
            buf: buf.into_buf(),
            offset,
        }
    }
}

/// Writes an owned buffer's bytes to `fd` at `offset` (`pwrite(2)`).
///
/// Completes with the number of bytes written (a short write is possible); the buffer comes
/// back unchanged. Use [`CURRENT_POSITION`] for streams and `O_APPEND` files.
///
/// # Errors
/// The kernel's: `EBADF`, `EINVAL`, `ENOSPC`, `EPIPE`, ...
///
/// # Backends
/// `uring`: `WRITE` (a pipe or socket is written in full unless an error intervenes).
/// `epoll`: `pwritev2(RWF_NOWAIT)` at submission, the blocking pool when the filesystem cannot
/// take the write without blocking; a pipe or socket waits for readiness and may complete
/// with a short count. `aio`: at an offset, `IOCB_CMD_PWRITE` with `RWF_NOWAIT`, then as for
/// `Read` (`EOPNOTSUPP`, e.g. buffered writes on ext4, also means the pool).
#[derive(Debug)]
pub struct Write {
    pub(crate) fd: RawFd,
    pub(crate) buf: Buf,
    pub(crate) offset: u64,
}

impl Write {
    /// Writes `buf` to `fd` at `offset`.
    pub fn new(fd: RawFd, buf: impl IoBuf, offset: u64) -> Write {
        Write {
            fd,
            buf: buf.into_buf(),
            offset,
        }
    }
}

/// Reads from `fd` at `offset` into several buffers in order (`preadv(2)`).
///
/// Completes with the total bytes read; the buffers come back, each grown by its share.
#[derive(Debug)]
pub struct Readv {
    pub(crate) fd: RawFd,
    pub(crate) bufs: Vec<Buf>,
    pub(crate) offset: u64,
}

impl Readv {
    /// Reads into `bufs`, in order, from `fd` at `offset`.
    pub fn new<B: IoBufMut>(fd: RawFd, bufs: Vec<B>, offset: u64) -> Readv {
        Readv {
            fd,
            bufs: bufs.into_iter().map(IoBuf::into_buf).collect(),
            offset,
        }
    }
}

/// Writes several buffers in order to `fd` at `offset` (`pwritev(2)`).
#[derive(Debug)]
pub struct Writev {
    pub(crate) fd: RawFd,
    pub(crate) bufs: Vec<Buf>,
    pub(crate) offset: u64,
}

impl Writev {
    /// Writes `bufs`, in order, to `fd` at `offset`.
    pub fn new<B: IoBuf>(fd: RawFd, bufs: Vec<B>, offset: u64) -> Writev {
        Writev {
            fd,
            bufs: bufs.into_iter().map(IoBuf::into_buf).collect(),
            offset,
        }
    }
}

/// Flushes a file to stable storage: `fsync(2)`, or `fdatasync(2)` with [`Fsync::data_only`].
///
/// # Backends
/// `uring`: `FSYNC`. `epoll`: the blocking pool (as are `Readv`, `Writev` and `OpenAt`); a
/// cancel reaches it only before a worker has started it, else it reports `TooLate`. `aio`:
/// `IOCB_CMD_FSYNC`/`FDSYNC`, the pool where the filesystem refuses them (`Readv`/`Writev` at
/// an offset are `PREADV`/`PWRITEV` with `RWF_NOWAIT`, like `Read`).
#[derive(Debug, Clone, Copy)]
pub struct Fsync {
    pub(crate) fd: RawFd,
    pub(crate) data_only: bool,
}

impl Fsync {
    /// `fsync(fd)`.
    pub fn new(fd: RawFd) -> Fsync {
        Fsync {
            fd,
            data_only: false,
        }
    }
    /// `fdatasync(fd)`: skips metadata not needed to read the data back.
    pub fn data_only(mut self) -> Fsync {
        self.data_only = true;
        self
    }
}

/// Waits until `fd` is ready for any of `mask`.
///
/// **One-shot** (the default): completes once with `Ok(mask)`, never empty, a subset of the
/// requested bits plus `ERR`, `HUP`, `NVAL` (which the kernel reports unasked). An fd ready at
/// arm time completes at once. Readiness is a hint: re-poll on `EAGAIN`.
///
/// **Multishot** ([`Poll::multishot`]): completes with `MORE` each time readiness is observed
/// since the previous completion (events may be coalesced; a new event after a posted
/// completion is never lost), and ends with one final completion without `MORE`: `ECANCELED`
/// when cancelled, an error, or the last mask when the backend cannot continue (re-arm then).
///
/// A regular file or directory (no `->poll`) is ready at once with `mask ∩ (IN|OUT)`, or fails
/// with `EINVAL` if that is empty.
///
/// # Backends
/// `uring`: `POLL_ADD` (`IORING_POLL_ADD_MULTI` for multishot). `epoll`: one edge-triggered
/// registration per fd, shared by every op waiting on it (interests merged); each arm
/// re-registers with `EPOLL_CTL_MOD`, which reports current readiness at once.
///
/// `aio`: a one-shot poll is `IOCB_CMD_POLL`. The kernel's AIO poll is one-shot and
/// level-checked at arm time, so re-arming it after each completion would spin on data nobody
/// reads; a multishot poll therefore joins the backend's internal epoll set (edge-triggered,
/// as on epoll), whose fd is watched by a single `IOCB_CMD_POLL` re-armed after each event.
/// A cancelled AIO poll completes with `res == 0`, reported as `ECANCELED`.
///
/// On all three, a multishot poll completes on each new readiness edge (each write to a pipe, say),
/// not while a level persists: data that is never consumed yields no further completions until
/// new data arrives (at most one extra when another op arms on the same fd). The conformance
/// suite checks one completion for one unconsumed write over 200 ms.
///
/// Closing `fd` while a poll on it is pending neither completes nor cancels the poll (the
/// kernel keeps the file alive): cancel by fd first.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub(crate) fd: RawFd,
    pub(crate) mask: PollMask,
    pub(crate) multishot: bool,
}

impl Poll {
    /// A one-shot poll of `fd` for `mask`.
    pub fn new(fd: RawFd, mask: PollMask) -> Poll {
        Poll {
            fd,
            mask,
            multishot: false,
        }
    }
    /// Makes the poll multishot.
    pub fn multishot(mut self) -> Poll {
        self.multishot = true;
        self
    }
}

/// Room for the events an [`EpollWait`] returns.
///
/// # Examples
/// ```
/// let events = oneloop::EpollEvents::with_capacity(16);
/// assert_eq!(events.capacity(), 16);
/// assert!(events.is_empty());
/// ```
#[derive(Clone)]
pub struct EpollEvents {
    pub(crate) raw: Vec<libc::epoll_event>,
    pub(crate) len: usize,
}

impl fmt::Debug for EpollEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(m, d)| (PollMask::from_bits(m), d)))
            .finish()
    }
}

impl EpollEvents {
    /// Room for `max` events (at least 1).
    pub fn with_capacity(max: usize) -> EpollEvents {
        EpollEvents {
            raw: vec![libc::epoll_event { events: 0, u64: 0 }; max.max(1)],
            len: 0,
        }
    }
    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The most events one wait can return.
    pub fn capacity(&self) -> usize {
        self.raw.len()
    }
    /// The events: `(event bits, the data registered with epoll_ctl)`.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.raw[..self.len].iter().map(|e| {
            let (events, data) = (e.events, e.u64);
            (events, data)
        })
    }
    /// Forgets the events, keeping the room.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Waits on an epoll instance as an op: `epoll_wait(epfd, events, max, ..)` in the ring.
///
/// Completes with the number of events (≥ 1) copied into the returned [`EpollEvents`]; with a
/// deadline and nothing ready, `TimedOut`. Never put the ring's own descriptor in `epfd`.
///
/// # Backends
/// `uring`: `IORING_OP_EPOLL_WAIT` where the kernel has it (6.15+), else a `POLL_ADD` on the
/// epoll fd followed by `epoll_wait(.., 0)`, re-armed if that finds nothing. `epoll`: the
/// epoll fd is registered in the ring's own epoll instance (epoll fds are pollable), then
/// `epoll_wait(.., 0)`. `aio`: `IOCB_CMD_POLL` on the epoll fd, then `epoll_wait(.., 0)`,
/// polled again if that finds nothing (the 2006 `IOCB_CMD_EPOLL_WAIT` idea, with today's
/// kernels).
#[derive(Debug)]
pub struct EpollWait {
    pub(crate) epfd: RawFd,
    pub(crate) events: EpollEvents,
}

impl EpollWait {
    /// Waits on `epfd`, returning up to `events.capacity()` events.
    pub fn new(epfd: RawFd, mut events: EpollEvents) -> EpollWait {
        events.clear();
        EpollWait { epfd, events }
    }
}

/// A timer: completes with `TimedOut` when it expires, `ECANCELED` when cancelled.
///
/// # Backends
/// `uring`: `TIMEOUT`. `epoll`: a heap of timers feeding `epoll_pwait2`'s nanosecond timeout
/// (cancelled timers are dropped lazily; 100,000 pending timers are cheap). `aio`: the same
/// heap, feeding `io_getevents`' timeout.
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    pub(crate) when: Deadline,
}

impl Timeout {
    /// Expires `delay` after submission.
    pub fn after(delay: Duration) -> Timeout {
        Timeout {
            when: Deadline::After(delay),
        }
    }
    /// Expires at `at`.
    pub fn at(at: Instant) -> Timeout {
        Timeout {
            when: Deadline::At(at),
        }
    }
}

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

/// Receives from a socket into an owned buffer (`recv(2)`); like [`Read`] for where bytes go.
#[derive(Debug)]
pub struct Recv {
    pub(crate) fd: RawFd,
    pub(crate) buf: Buf,
    pub(crate) flags: i32,
}

impl Recv {
    /// Receives into `buf` from `fd`.
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
}

/// Closes a descriptor the ring takes ownership of (`close(2)`). Completes with `Ok(0)`.
///
/// If the op is cancelled before it runs, the completion gives the descriptor back.
#[derive(Debug)]
pub struct Close {
    pub(crate) fd: OwnedFd,
}

impl Close {
    /// Closes `fd`.
    pub fn new(fd: OwnedFd) -> Close {
        Close { fd }
    }
}

/// Opens a file relative to a directory (`openat2(2)`), close-on-exec.
///
/// Completes with the descriptor number and the file as an owned fd in the completion.
/// `resolve` takes `RESOLVE_*` flags, e.g. `libc::RESOLVE_BENEATH` to refuse paths that
/// escape `dirfd`.
#[derive(Debug)]
pub struct OpenAt {
    pub(crate) dirfd: RawFd,
    pub(crate) path: CString,
    pub(crate) flags: i32,
    pub(crate) mode: u32,
    pub(crate) resolve: u64,
    /// The directory `dirfd` names, kept open by the op itself ([`OpenAt::in_dir`]).
    dir: Option<std::sync::Arc<OwnedFd>>,
}

impl OpenAt {
    /// Opens `path` (relative to `dirfd`, or `libc::AT_FDCWD`) with `O_*` `flags`.
    ///
    /// # Errors
    /// `InvalidInput` if `path` contains a NUL byte.
    pub fn new(dirfd: RawFd, path: impl Into<Vec<u8>>, flags: i32) -> std::io::Result<OpenAt> {
        let path = CString::new(path).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains a NUL byte")
        })?;
        Ok(OpenAt {
            dirfd,
            path,
            flags: flags | libc::O_CLOEXEC,
            mode: 0o644,
            resolve: 0,
            dir: None,
        })
    }

    /// Opens `path` relative to the directory `dir`, which the op keeps open until its final
    /// completion: a caller that gives up on the op (and closes its own handle) can never
    /// make the open land in another directory that took the descriptor's number.
    ///
    /// # Errors
    /// `InvalidInput` if `path` contains a NUL byte.
    pub fn in_dir(
        dir: std::sync::Arc<OwnedFd>,
        path: impl Into<Vec<u8>>,
        flags: i32,
    ) -> std::io::Result<OpenAt> {
        let mut op = OpenAt::new(std::os::fd::AsRawFd::as_raw_fd(&*dir), path, flags)?;
        op.dir = Some(dir);
        Ok(op)
    }
    /// The mode for a created file (default `0o644`; ignored unless `O_CREAT` or `O_TMPFILE`).
    pub fn mode(mut self, mode: u32) -> OpenAt {
        self.mode = mode;
        self
    }
    /// `RESOLVE_*` flags for path resolution.
    pub fn resolve(mut self, resolve: u64) -> OpenAt {
        self.resolve = resolve;
        self
    }

    /// The mode the kernel gets: `openat2` refuses a mode unless the open may create a file.
    pub(crate) fn effective_mode(&self) -> u32 {
        let creates =
            self.flags & libc::O_CREAT != 0 || self.flags & libc::O_TMPFILE == libc::O_TMPFILE;
        if creates {
            self.mode
        } else {
            0
        }
    }
}
