//! The closed set of operations, each declared once.
//!
//! Each op names the syscall or opcode it stands for. Ops own what the kernel may touch
//! (buffers, event arrays, paths, addresses); the ring keeps them until the final completion
//! and returns the buffers there. Any op may carry a [deadline](Submission::deadline).
//!
//! An op (or a family of ops) lives in one file — `file.rs`, `net.rs`, `send_file.rs`,
//! `fs.rs`, `poll.rs`, `time.rs` — with its struct, its builder, its docs and one impl of each backend's trait
//! (see `plan.rs`): its io_uring request, its readiness plan (done now / wait for which
//! readiness / hand to the pool), its AIO request, and what it hands back. No trait has a
//! default method, so the compiler names every backend an op lacks.
//!
//! # Adding an op
//! 1. Write its struct, docs and the four impls (`OpBase`, `UringPlan`, `ReadyPlan`,
//!    `AioPlan`) in its family's file, or in a file of its own (then with its `mod` and
//!    `pub use` lines here).
//! 2. Add its name to the `ops!` list below: the [`Op`] variant, [`Op::NAMES`], [`Op::COUNT`],
//!    its kind, the dispatch to each backend, `From<_> for Op`, `.deadline(..)` and the
//!    probe's opcode list all come from that one line.
//! 3. Re-export it from `lib.rs` if users name it there.
#![forbid(unsafe_code)]

mod file;
mod fs;
mod multi;
mod net;
pub(crate) mod plan;
mod poll;
mod send_file;
mod time;

use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

// Every family's public items: a new op (or its answer type) needs no line here.
pub use self::file::*;
pub use self::fs::*;
pub use self::multi::*;
pub use self::net::*;
pub use self::poll::*;
pub use self::send_file::*;
pub use self::time::*;

use self::plan::{
    AioNext, AioPlan, AioStart, Lowered, Next, OpBase, ReadyCx, ReadyPlan, UringCx, UringPlan,
};
use crate::buf::Buf;
use crate::sys::Done;

/// Offset meaning "the file's current position" (for pipes, sockets and other streams).
pub const CURRENT_POSITION: u64 = crate::sys::posix::CURRENT_POSITION;

/// An accepted submission's identity: a slot, its generation, and its ring's tag.
///
/// Ids are never reused while a stale copy could matter: a slot's generation changes every
/// time it is reused, so a cancel with an old id reports `NotFound` and touches nothing. The
/// tag (7 spare bits) tells rings apart, so an id kept past its ring's life is not taken for
/// an op of a newer ring on the same thread, whose slots restart their generations (tags
/// repeat after 127 rings).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The id as a number (stable for the op's lifetime; opaque otherwise).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (index, generation) = (self.0 & 0xFF_FFFF, (self.0 >> 24) as u32);
        write!(f, "OpId({index}g{generation}r{})", (self.0 >> 56) & 0x7F)
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

/// What an op hands back with its final completion.
#[derive(Debug, Default)]
pub enum Output {
    /// Nothing (polls, timeouts, nops, fsync, connect, close).
    #[default]
    None,
    /// The op's buffer (`Read`, `Write`, `Recv`, `Send`).
    Buf(Buf),
    /// The op's buffers (`Readv`, `Writev`).
    Bufs(Vec<Buf>),
    /// The events an `EpollWait` returned.
    Events(EpollEvents),
    /// A new descriptor (`Accept`, `AcceptMulti`, `OpenAt`), or the descriptor of a
    /// cancelled `Close`.
    Fd(OwnedFd),
    /// A buffer of a [`BufRing`](crate::BufRing) holding what a `RecvMulti` or `ReadMulti`
    /// received (on `MORE` completions, and on a final one that carries data).
    Lease(crate::buf_ring::Lease),
}

impl Op {
    /// The descriptor a blocking-pool job of this op works on, by number — for the pool
    /// hand-off to lend the job a duplicate (`backend/ready/inflight.rs`). `None` for ops that
    /// never go to the pool, or whose pool work names no caller's descriptor by number
    /// (`OpenAt::in_dir` keeps its own directory open).
    pub(crate) fn pool_fd_mut(&mut self) -> Option<&mut RawFd> {
        match self {
            Op::Read(o) => Some(&mut o.fd),
            Op::Write(o) => Some(&mut o.fd),
            Op::Readv(o) => Some(&mut o.fd),
            Op::Writev(o) => Some(&mut o.fd),
            Op::Fsync(o) => Some(&mut o.fd),
            Op::SendFile(o) => Some(o.file_mut()),
            _ => None,
        }
    }
}

/// Declares every op once: the [`Op`] enum and everything that lists the ops.
macro_rules! ops {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Every operation a ring can run. See each struct for its semantics and errors.
        #[derive(Debug)]
        pub enum Op {
            $($(#[$doc])* $name($name),)*
        }

        /// Each op's kind: its place in the list.
        #[derive(Clone, Copy)]
        enum Kind {
            $($name,)*
        }

        impl Op {
            /// How many kinds of op there are.
            pub const COUNT: usize = [$(stringify!($name)),*].len();

            /// Every op's name, in the order of [`kind`](Self::kind).
            pub const NAMES: [&'static str; Op::COUNT] = [$(stringify!($name)),*];

            /// The op's kind as an index into [`NAMES`](Self::NAMES) (and [`Stats::submitted`]).
            ///
            /// [`Stats::submitted`]: crate::Stats::submitted
            #[inline]
            pub fn kind(&self) -> usize {
                match self {
                    $(Op::$name(_) => Kind::$name as usize,)*
                }
            }

            /// The descriptor the op works on, if any (what [`Ring::cancel_fd`](crate::Ring::cancel_fd) matches).
            #[inline]
            pub fn fd(&self) -> Option<RawFd> {
                match self {
                    $(Op::$name(o) => OpBase::fd(o),)*
                }
            }

            /// Whether the op may complete more than once (a multishot poll).
            #[inline]
            pub fn is_multishot(&self) -> bool {
                match self {
                    $(Op::$name(o) => OpBase::is_multishot(o),)*
                }
            }

            /// What the op hands back at its final completion.
            #[inline]
            pub(crate) fn finish(self, done: Done) -> Output {
                match self {
                    $(Op::$name(o) => OpBase::finish(o, done),)*
                }
            }

            /// Every opcode some op may need on io_uring, for `oneloop probe`.
            pub(crate) const URING_OPCODES: &'static [&'static [(&'static str, u8)]] =
                &[$(<$name as UringPlan>::OPCODES),*];

            /// See [`OpBase::target`].
            #[inline]
            pub(crate) fn target(&self) -> Option<OpId> {
                match self {
                    $(Op::$name(o) => OpBase::target(o),)*
                }
            }

            /// See [`OpBase::apply`].
            #[inline]
            pub(crate) fn apply(&mut self, target: &mut Op) -> i32 {
                match self {
                    $(Op::$name(o) => OpBase::apply(o, target),)*
                }
            }

            /// See [`UringPlan::opcode`].
            #[inline]
            pub(crate) fn uring_opcode(&self, native_epoll_wait: bool) -> Option<u8> {
                Op::uring_opcodes(native_epoll_wait)[self.kind()]
            }

            /// Every kind's io_uring opcode (see [`UringPlan::opcode`]), by [`kind`](Self::kind).
            pub(crate) fn uring_opcodes(native_epoll_wait: bool) -> [Option<u8>; Op::COUNT] {
                [$(<$name as UringPlan>::opcode(native_epoll_wait),)*]
            }

            /// The kinds that are plain on io_uring (see [`UringPlan::plain`]): bit `k` for
            /// kind `k`.
            pub(crate) fn uring_plain_kinds(native_epoll_wait: bool) -> u64 {
                [$(<$name as UringPlan>::plain(native_epoll_wait),)*]
                    .iter()
                    .enumerate()
                    .fold(0, |bits, (kind, &plain)| bits | (u64::from(plain) << kind))
            }

            /// See [`UringPlan::lower`].
            #[inline]
            pub(crate) fn uring_lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
                match self {
                    $(Op::$name(o) => UringPlan::lower(o, cx),)*
                }
            }

            /// See [`UringPlan::step`].
            #[inline]
            pub(crate) fn uring_step(&mut self, res: i32, stop: bool) -> crate::op::plan::Step {
                match self {
                    $(Op::$name(o) => UringPlan::step(o, res, stop),)*
                }
            }

            /// See [`ReadyPlan::after_pool`].
            #[inline]
            pub(crate) fn after_pool(&mut self, res: i32) -> Next {
                match self {
                    $(Op::$name(o) => ReadyPlan::after_pool(o, res),)*
                }
            }

            /// See [`ReadyPlan::pool_is_final`].
            #[inline]
            pub(crate) fn pool_is_final(&self) -> bool {
                match self {
                    $(Op::$name(o) => ReadyPlan::pool_is_final(o),)*
                }
            }

            /// See [`ReadyPlan::direction`].
            #[inline]
            pub(crate) fn ready_direction(&self) -> Option<(RawFd, u32)> {
                match self {
                    $(Op::$name(o) => ReadyPlan::direction(o),)*
                }
            }

            /// See [`ReadyPlan::tried_inline`].
            #[inline]
            pub(crate) fn ready_inline(&self, aio: bool) -> bool {
                match self {
                    $(Op::$name(o) => ReadyPlan::tried_inline(o, aio),)*
                }
            }

            /// See [`ReadyPlan::first`].
            #[inline]
            pub(crate) fn ready_first(&mut self, cx: &ReadyCx) -> Next {
                match self {
                    $(Op::$name(o) => ReadyPlan::first(o, cx),)*
                }
            }

            /// See [`ReadyPlan::again`].
            #[inline]
            pub(crate) fn ready_again(&mut self, first_time: bool) -> Next {
                match self {
                    $(Op::$name(o) => ReadyPlan::again(o, first_time),)*
                }
            }

            /// See [`ReadyPlan::blocking`].
            #[inline]
            pub(crate) fn blocking(&mut self, produced: &mut Option<OwnedFd>) -> i32 {
                match self {
                    $(Op::$name(o) => ReadyPlan::blocking(o, produced),)*
                }
            }

            /// See [`AioPlan::aio_start`].
            #[inline]
            pub(crate) fn aio_start(&mut self, cx: &ReadyCx, nowait: bool) -> AioStart {
                match self {
                    $(Op::$name(o) => AioPlan::aio_start(o, cx, nowait),)*
                }
            }

            /// See [`AioPlan::aio_event`].
            #[inline]
            pub(crate) fn aio_event(&mut self, res: i32, nowait: bool) -> AioNext {
                match self {
                    $(Op::$name(o) => AioPlan::aio_event(o, res, nowait),)*
                }
            }
        }

        $(
            impl From<$name> for Op {
                fn from(op: $name) -> Op {
                    Op::$name(op)
                }
            }
            impl $name {
                /// Adds a deadline: see [`Submission::deadline`].
                pub fn deadline(self, deadline: impl Into<Deadline>) -> Submission {
                    Submission::from(self).deadline(deadline)
                }
            }
        )*
    };
}

ops! {
    /// Completes at once with `Ok(0)`.
    Nop,
    /// `pread`.
    Read,
    /// `pwrite`.
    Write,
    /// `preadv`.
    Readv,
    /// `pwritev`.
    Writev,
    /// `fsync` / `fdatasync`.
    Fsync,
    /// Readiness of any descriptor, one-shot or multishot.
    Poll,
    /// A pending poll's mask changed.
    PollUpdate,
    /// `epoll_wait` as an op.
    EpollWait,
    /// A timer.
    Timeout,
    /// `accept4`.
    Accept,
    /// `connect`.
    Connect,
    /// `recv`.
    Recv,
    /// `send`.
    Send,
    /// `send`, zero-copy where the backend can.
    SendZc,
    /// `sendfile`.
    SendFile,
    /// `close`.
    Close,
    /// `openat2`.
    OpenAt,
    /// `recv`, multishot, into a buffer ring.
    RecvMulti,
    /// `read`, multishot, into a buffer ring.
    ReadMulti,
    /// `accept4`, multishot.
    AcceptMulti,
}

impl Op {
    /// io_uring: the result of an op whose result is in while the kernel still holds its
    /// buffer (a zero-copy send waiting for its notification); `None` for any other.
    #[inline]
    pub(crate) fn result_in(&self) -> Option<i32> {
        match self {
            Op::SendZc(o) => o.result_in(),
            _ => None,
        }
    }

    /// The buffer group a multishot receive picks from.
    #[inline]
    pub(crate) fn buf_pool(&self) -> Option<&std::sync::Arc<crate::sys::buf_ring::Pool>> {
        match self {
            Op::RecvMulti(o) => Some(&o.pool),
            Op::ReadMulti(o) => Some(&o.pool),
            _ => None,
        }
    }

    /// A multishot op's next attempt on the readiness backends (see `multi.rs`).
    pub(crate) fn multi_again(&mut self, closed: bool) -> self::plan::Multi {
        use self::multi::MultiPlan;
        match self {
            Op::RecvMulti(o) => o.round(closed),
            Op::ReadMulti(o) => o.round(closed),
            Op::AcceptMulti(o) => o.round(closed),
            _ => unreachable!("not a multishot op with rounds"),
        }
    }

    /// Prepares a multishot op's fd where it is emulated (see `MultiPlan::prepare`).
    pub(crate) fn prepare_rounds(&self) -> std::io::Result<()> {
        use self::multi::MultiPlan;
        match self {
            Op::RecvMulti(o) => o.prepare(),
            Op::ReadMulti(o) => o.prepare(),
            Op::AcceptMulti(o) => o.prepare(),
            _ => Ok(()),
        }
    }

    /// Keeps the buffer of a multishot receive's final result, for its final completion.
    pub(crate) fn keep_lease(&mut self, lease: crate::buf_ring::Lease) {
        use self::multi::MultiPlan;
        match self {
            Op::RecvMulti(o) => o.keep(lease),
            Op::ReadMulti(o) => o.keep(lease),
            _ => drop(lease),
        }
    }

    /// Whether the op runs in rounds where multishot ops are emulated (`RecvMulti`,
    /// `ReadMulti`, `AcceptMulti`; see `multi.rs`).
    #[inline]
    pub(crate) fn has_rounds(&self) -> bool {
        matches!(
            self,
            Op::RecvMulti(_) | Op::ReadMulti(_) | Op::AcceptMulti(_)
        )
    }

    /// Whether the op's `MORE` completions carry new descriptors (`AcceptMulti`).
    #[inline]
    pub(crate) fn accepts_many(&self) -> bool {
        matches!(self, Op::AcceptMulti(_))
    }

    /// A multishot receive's "poll first" state on io_uring (`None` for other ops): set, its
    /// next request is a one-shot poll for input instead of the kernel's multishot request.
    /// The kernel picks a buffer before it looks for data, so a request made while the ring
    /// is empty would end `ENOBUFS` with no data waiting; the driver waits for data this way
    /// instead, as the other backends do.
    pub(crate) fn poll_first(&mut self) -> Option<&mut bool> {
        match self {
            Op::RecvMulti(o) => Some(&mut o.poll_first),
            Op::ReadMulti(o) => Some(&mut o.poll_first),
            _ => None,
        }
    }

    /// The op's name, for messages (`"Read"`, `"EpollWait"`, ...).
    pub fn name(&self) -> &'static str {
        Op::NAMES[self.kind()]
    }

    /// What the op owns (its buffers, event array or descriptor), as a completion would hand
    /// it back, for an op that never ran (a refused submission): buffers untouched, a
    /// `Close`'s descriptor.
    pub fn into_output(self) -> Output {
        self.finish(Done::error(libc::ECANCELED))
    }
}
