//! What an op tells each backend: one trait per backend, none with a default method, so an
//! op that lacks a backend's impl does not compile (the error names the op and the trait).
//!
//! * [`OpBase`]: the descriptor it works on and what it hands back at its final completion.
//! * [`UringPlan`]: its io_uring request ("lowering") and the opcodes it needs.
//! * [`ReadyPlan`]: the readiness backends' decision — done now, wait for readiness (which
//!   direction), or hand to the blocking pool — the non-blocking attempts behind it, and the
//!   blocking call the pool makes.
//! * [`AioPlan`]: the Linux AIO request it becomes (or the readiness path), and what the
//!   request's event means.
//!
//! The types here are plain descriptions (an SQE, an `iocb`, a decision); the drivers in
//! `backend/` act on them. Nothing here imports a backend, so ops and drivers do not import
//! each other in a circle.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Instant;

use io_uring::squeue;
use io_uring::types::OpenHow;

use super::OpId;
use super::{Deadline, Op, Output};
use crate::sys::aio::Iocb;
use crate::sys::Done;
use crate::sys::RawSockAddr;

/// What every op declares, whatever the backend.
pub(crate) trait OpBase {
    /// The descriptor the op works on (what a cancel by fd matches), if any.
    fn fd(&self) -> Option<RawFd>;
    /// Whether the op may complete more than once (`MORE` completions, then a final one).
    fn is_multishot(&self) -> bool;
    /// Hands back what the op owned, updated by its result (a read's buffer grown by the
    /// bytes the kernel wrote, an accepted socket wrapped).
    fn finish(self, done: Done) -> Output;
    /// The op in flight this op acts on, if any (an op that changes another one). Every
    /// driver then looks the target up first: gone → `-ENOENT`, its end decided →
    /// `-EALREADY`; else it calls [`apply`](Self::apply) and re-arms the target.
    fn target(&self) -> Option<OpId>;
    /// Changes `target` (the live op [`target`](Self::target) names) in user space: `0`, or
    /// `-errno` (`-EINVAL`: not an op this one can change). Called only for ops with a target.
    fn apply(&mut self, target: &mut Op) -> i32;
}

/// `OpBase::fd` and `OpBase::is_multishot` for a one-shot op on the descriptor in field
/// `$field` (or on none, without an argument).
macro_rules! one_shot_on {
    ($field:ident) => {
        fn fd(&self) -> Option<std::os::fd::RawFd> {
            Some(self.$field)
        }
        fn is_multishot(&self) -> bool {
            false
        }
    };
    () => {
        fn fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
        fn is_multishot(&self) -> bool {
            false
        }
    };
}
pub(crate) use one_shot_on;

/// `AioPlan` for an op that is never an AIO request (the readiness path does it on aio).
macro_rules! aio_takes_readiness {
    () => {
        fn aio_start(&mut self, _: &ReadyCx, _: bool) -> AioStart {
            AioStart::Ready
        }
        fn aio_event(&mut self, _: i32, _: bool) -> AioNext {
            unreachable!("not an AIO request")
        }
    };
}
pub(crate) use aio_takes_readiness;

/// `OpBase::target` and `OpBase::apply` for an op that acts on no other op.
macro_rules! no_target {
    () => {
        fn target(&self) -> Option<crate::op::OpId> {
            None
        }
        fn apply(&mut self, _: &mut crate::op::Op) -> i32 {
            unreachable!("an op without a target is never applied")
        }
    };
}
pub(crate) use no_target;

/// The op on io_uring.
pub(crate) trait UringPlan {
    /// The opcodes this op may need, for `oneloop probe` (name, code).
    const OPCODES: &'static [(&'static str, u8)];
    /// The opcode this kind of op needs (`None`: it never reaches the kernel). The same for
    /// every op of the kind, so a ring checks its kernel's support once per kind, at setup.
    fn opcode(native_epoll_wait: bool) -> Option<u8>;
    /// The request for the kernel, pointing only into what the op owns and into `cx.scratch`.
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered;
    /// The op's request ended with `res` (its last CQE): is the op done, or does it make
    /// another request (an op of several steps)? `stop`: a cancel or deadline is under way —
    /// the op must end now, with what it achieved so far or `-ECANCELED`.
    fn step(&mut self, res: i32, stop: bool) -> Step;
    /// Whether every op of this kind is *plain* on io_uring: one request, lowered without the
    /// clock, acting on no other op, whose last CQE is the op's result — nothing to do
    /// between the kernel's answer and the op's end. The driver gives plain ops (without a
    /// deadline) a short path in and out.
    fn plain(native_epoll_wait: bool) -> bool;
}

/// After an op's request ended, on io_uring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The op ends with this raw result.
    Done(i32),
    /// Lower the op again and submit its next request.
    Again,
}

/// `UringPlan::step` for an op of one request: its result is the op's. Such an op is plain
/// (`UringPlan::plain`) unless `plain = |native_epoll_wait| ..` says otherwise.
macro_rules! one_request {
    () => {
        crate::op::plan::one_request!(plain = |_native| true);
    };
    (plain = |$native:ident| $plain:expr) => {
        fn step(&mut self, res: i32, _: bool) -> crate::op::plan::Step {
            crate::op::plan::Step::Done(res)
        }
        fn plain($native: bool) -> bool {
            $plain
        }
    };
}
pub(crate) use one_request;

/// What a lowering may use.
pub(crate) struct UringCx<'a> {
    /// The fixed-file slot of the op's descriptor, if it is registered.
    pub fixed: Option<u32>,
    /// Kernel-visible scratch in the op's slot (stable while the slot lives).
    pub scratch: &'a mut Option<Box<UringScratch>>,
    /// Whether the kernel has `IORING_OP_EPOLL_WAIT` (and it is not to be emulated).
    pub native_epoll_wait: bool,
    /// Whether multishot ops are the kernel's (else each request is a one-shot poll of the
    /// op's fd, and the driver runs the op's rounds when it fires).
    pub native_multishot: bool,
    /// Whether a multishot receive may fill several buffers at once (a bundle).
    pub recv_bundle: bool,
    /// The id of the ring's registered `FixedBufPool` (0: none).
    pub fixed_pool: u64,
    /// Set by an op lowered to `READ_FIXED`/`WRITE_FIXED` (counted in `Stats`).
    pub fixed_op: bool,
    /// Whether the kernel has `SEND_ZC` (else a `SendZc` is a `SEND`).
    pub send_zc: bool,
    /// The clock at submission, for ops that read it.
    pub now: Option<Instant>,
}

impl UringCx<'_> {
    /// The slot's scratch, made on first use.
    pub fn scratch(&mut self) -> &mut UringScratch {
        self.scratch.get_or_insert_with(|| {
            Box::new(UringScratch {
                iovecs: Vec::new(),
                addr: RawSockAddr::empty(),
                how: OpenHow::new(),
            })
        })
    }
}

/// Scratch the kernel reads for vectored I/O, `Connect` and `OpenAt` (boxed, so every slot
/// stays small; stable while the slot lives).
pub(crate) struct UringScratch {
    /// Iovecs for `Readv`/`Writev`.
    pub iovecs: Vec<libc::iovec>,
    /// `Connect`'s address.
    pub addr: RawSockAddr,
    /// `OpenAt`'s `open_how`.
    pub how: OpenHow,
}

/// What an op becomes on io_uring.
pub(crate) enum Lowered {
    /// A request for the kernel (its `user_data` is set by the driver).
    Sqe(squeue::Entry),
    /// A timer in the ring's own heap, due at this instant: `Timeout` ops never reach the
    /// kernel (one kernel `TIMEOUT` and one `ASYNC_CANCEL` per timer cost ~10 × more).
    Timer(Instant),
    /// Ended before any request, with this raw result (`-errno`: what it needed failed).
    Done(i32),
}

/// The op on the readiness backends (epoll, and aio's readiness path).
pub(crate) trait ReadyPlan {
    /// For an op that moves data in one direction of a socket (receive, accept: `IN`; send:
    /// `OUT`), that descriptor and direction: a registered fd whose cache knows that
    /// direction is not ready waits without trying.
    fn direction(&self) -> Option<(RawFd, u32)>;
    /// Whether the first attempt is made before the op takes a slot (ops that often finish
    /// at once: a finished op never takes one). `aio` tells whether the op becomes an AIO
    /// request (then it is not attempted here).
    fn tried_inline(&self, aio: bool) -> bool;
    /// The first decision, at submission.
    fn first(&mut self, cx: &ReadyCx) -> Next;
    /// A non-blocking attempt after the fd reported readiness (`first_time`: at submission).
    fn again(&mut self, first_time: bool) -> Next;
    /// The blocking call a pool thread makes; a descriptor it opens goes to `produced` (so a
    /// result nobody collects is closed, never leaked). A raw result: `>= 0` or `-errno`.
    fn blocking(&mut self, produced: &mut Option<OwnedFd>) -> i32;
    /// What follows the pool's `res`: `Next::Done(res)` for most ops; an op of several steps
    /// may go on.
    fn after_pool(&mut self, res: i32) -> Next;
    /// Whether the pool's result is the op's (`false`: the pool only prepares a later step,
    /// so a cancel while the job runs can still end the op `ECANCELED` when it returns).
    fn pool_is_final(&self) -> bool;
}

/// `ReadyPlan::after_pool` for an op the pool finishes.
macro_rules! pool_is_final {
    () => {
        fn after_pool(&mut self, res: i32) -> crate::op::plan::Next {
            crate::op::plan::Next::Done(res)
        }
        fn pool_is_final(&self) -> bool {
            true
        }
    };
}
pub(crate) use pool_is_final;

/// What the readiness backends lend an op's first decision.
pub(crate) struct ReadyCx {
    /// The ring's own epoll instance, if it has one (an `EpollWait` on it is refused).
    pub own_epfd: Option<RawFd>,
    /// A descriptor no caller's epoll set holds (the ring's wake eventfd), to tell an epoll
    /// instance from another file.
    pub probe: RawFd,
}

impl ReadyCx {
    /// Whether `epfd` is an epoll instance a caller may wait on (see `sys::epoll_check`).
    pub fn epoll_check(&self, epfd: RawFd) -> io::Result<()> {
        if Some(epfd) == self.own_epfd {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        crate::sys::epoll_check(epfd, self.probe)
    }
}

/// What to do with an op next, on the readiness backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
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
    /// A timer in the ring's heap (a `Timeout` op).
    Timer(Deadline),
}

/// The most attempts of one emulated multishot op per readiness event (every backend's
/// emulation, io_uring's too).
pub(crate) const MULTI_ROUND: usize = 16;

/// One attempt of a multishot op's round on the readiness backends (`op/multi.rs`).
#[derive(Debug)]
pub(crate) enum Multi {
    /// A result for a `MORE` completion, with what it carries. `drained`: the transfer moved
    /// less than it could, so the descriptor likely has nothing more now (the round stops
    /// until the next readiness edge).
    More {
        res: i32,
        output: Output,
        drained: bool,
    },
    /// Nothing now (`EAGAIN`): wait for the next readiness edge.
    Wait,
    /// The op ends with this raw result.
    End(i32),
}

/// The op on the aio backend.
pub(crate) trait AioPlan {
    /// The AIO request the op becomes now, or [`AioStart::Ready`] for the readiness path.
    /// `nowait`: a file request may carry `RWF_NOWAIT` (false when it is submitted again
    /// after `EAGAIN`, allowed to wait in the kernel).
    fn aio_start(&mut self, cx: &ReadyCx, nowait: bool) -> AioStart;
    /// What the request's event `res` means; `nowait`: the request carried `RWF_NOWAIT`.
    fn aio_event(&mut self, res: i32, nowait: bool) -> AioNext;
}

/// An op's AIO request, or not.
pub(crate) enum AioStart {
    /// Submit this `iocb` (its `aio_data` is set by the engine); `iovecs`, if any, are what
    /// a vectored request points at (owned by the request until its event). `nowait`: it
    /// carries `RWF_NOWAIT`.
    Request {
        iocb: Iocb,
        iovecs: Vec<libc::iovec>,
        nowait: bool,
    },
    /// Not an AIO request: the readiness path does it.
    Ready,
    /// Refused before any request (`-errno`).
    Done(i32),
}

/// What an AIO event means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AioNext {
    /// The op ends with this raw result.
    Done(i32),
    /// Submit the op's request again (`nowait` as given): an `EpollWait` that found its set
    /// empty, direct I/O that would block with `RWF_NOWAIT`.
    Again { nowait: bool },
    /// Wait for this readiness on the op's fd (the readiness path), reporting current state.
    Arm(u32),
    /// Run it on the blocking pool.
    Pool,
}

/// Builds `$build` with `$t` bound to the op's fixed-file slot if its descriptor is
/// registered (`$cx.fixed`), else to the plain descriptor `$fd` (the opcode builders take
/// either type).
macro_rules! on_fd {
    ($cx:expr, $fd:expr, |$t:ident| $build:expr) => {
        match $cx.fixed {
            Some(slot) => {
                let $t = io_uring::types::Fixed(slot);
                $build
            }
            None => {
                let $t = io_uring::types::Fd($fd);
                $build
            }
        }
    };
}
pub(crate) use on_fd;

/// An SQE length: the kernel takes 32 bits.
pub(crate) fn clamp_len(len: usize) -> u32 {
    len.min(u32::MAX as usize) as u32
}

/// The readiness bits the attempts speak of.
pub(crate) const IN: u32 = libc::EPOLLIN as u32;
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;

/// An error's errno (`EIO` if it has none).
pub(crate) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// A finished attempt's raw result.
pub(crate) fn done(r: io::Result<usize>) -> Next {
    Next::Done(raw(r))
}

/// A count or an error as a raw result (`>= 0`, or `-errno`).
pub(crate) fn raw(r: io::Result<usize>) -> i32 {
    match r {
        Ok(n) => n.min(i32::MAX as usize) as i32,
        Err(e) => -errno(&e),
    }
}

/// A receive or send that moved `n` bytes, fewer than asked.
pub(crate) fn short(n: usize, fd: i32, direction: u32) -> Next {
    Next::Short {
        res: n.min(i32::MAX as usize) as i32,
        fd,
        direction,
    }
}

/// Runs `f` again while it fails with `EINTR`.
#[inline]
pub(crate) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// For a non-blocking attempt that said "not now" (`eagain`) or could not say: wait on a
/// pollable fd, else offload.
pub(crate) fn would_block(fd: i32, bits: u32, eagain: bool) -> Next {
    use crate::sys::posix::{fd_kind, FdKind};
    match fd_kind(fd) {
        Ok(FdKind::Pollable) if eagain => Next::Wait(bits),
        Ok(FdKind::Pollable) => Next::Arm(bits),
        Ok(FdKind::File | FdKind::Block) => Next::Pool,
        Err(e) => Next::Done(-errno(&e)),
    }
}
