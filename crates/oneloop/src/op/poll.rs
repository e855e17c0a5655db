//! Readiness ops: `Poll` (one-shot and multishot) and `EpollWait` — each declared once, with
//! its io_uring request, its readiness plan and its AIO request (`IOCB_CMD_POLL`).
//!
//! The drivers know one thing more about these two than about other ops: a multishot poll
//! completes with `MORE` from the driver's readiness dispatch, and an emulated `EpollWait`
//! (a poll of its epoll fd) collects its events when that poll fires.
#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::ops::{BitAnd, BitOr, BitOrAssign};
use std::os::fd::{OwnedFd, RawFd};

use io_uring::opcode;
use io_uring::types::Fd;

use super::plan::{
    errno, no_target, on_fd, one_request, one_shot_on, pool_is_final, AioNext, AioPlan, AioStart,
    Lowered, Next, OpBase, ReadyCx, ReadyPlan, UringCx, UringPlan, IN,
};
use super::OpId;
use super::{Op, Output};
use crate::sys::aio::{self as aio_abi, Iocb};
use crate::sys::posix as sio;
use crate::sys::Done;

/// Bits reported whether asked or not (as io_uring's poll does).
pub(crate) const UNMASKED: u32 =
    (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32 | libc::POLLNVAL as u32;

/// An `IOCB_CMD_POLL` of `fd` for `events`.
pub(crate) fn poll_iocb(fd: RawFd, events: u32) -> AioStart {
    let iocb = Iocb {
        aio_lio_opcode: aio_abi::IOCB_CMD_POLL,
        aio_fildes: fd as u32,
        aio_buf: u64::from(events),
        ..Iocb::default()
    };
    AioStart::Request {
        iocb,
        iovecs: Vec::new(),
        nowait: false,
    }
}

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

impl OpBase for Poll {
    no_target!();
    fn fd(&self) -> Option<RawFd> {
        Some(self.fd)
    }
    fn is_multishot(&self) -> bool {
        self.multishot
    }
    fn finish(self, _: Done) -> Output {
        Output::None
    }
}

impl UringPlan for Poll {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("POLL_ADD", opcode::PollAdd::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::PollAdd::CODE)
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        Lowered::Sqe(on_fd!(cx, self.fd, |t| opcode::PollAdd::new(
            t,
            self.mask.bits()
        )
        .multi(self.multishot)
        .build()))
    }
}

impl ReadyPlan for Poll {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        false
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        Next::Wait(self.mask.bits())
    }
    fn again(&mut self, _: bool) -> Next {
        unreachable!("the driver completes polls on readiness itself")
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("Poll never goes to the pool")
    }
}

impl AioPlan for Poll {
    fn aio_start(&mut self, _: &ReadyCx, _: bool) -> AioStart {
        // The kernel's AIO poll is one-shot and level-checked at arm time: a multishot poll
        // re-armed after each completion would spin on data nobody reads, so it joins the
        // internal epoll set. An AIO poll never sees a signalfd's signals (it is re-checked
        // from a kernel worker): the readiness path too.
        if self.multishot || sio::is_signalfd(self.fd) {
            return AioStart::Ready;
        }
        poll_iocb(self.fd, self.mask.bits())
    }
    fn aio_event(&mut self, res: i32, _: bool) -> AioNext {
        match res {
            // 0 only when cancelled (by us, or by the kernel when the file's wait queue goes
            // away).
            0 => AioNext::Done(-libc::ECANCELED),
            // A poll completed by the wakeup itself carries the waker's whole mask (RDNORM,
            // WRNORM, ...): report only what was asked, plus what is always reported. Nothing
            // of it left: the poll fired for a mask it no longer has (a `PollUpdate` raced
            // it), so it polls again.
            res if res > 0 => match res as u32 & (self.mask.bits() | UNMASKED) {
                0 => AioNext::Again { nowait: false },
                mask => AioNext::Done(mask as i32),
            },
            res => AioNext::Done(res),
        }
    }
}

impl OpBase for EpollWait {
    no_target!();
    one_shot_on!(epfd);
    fn finish(mut self, done: Done) -> Output {
        self.events.len = done.count().map_or(0, |n| n.min(self.events.capacity()));
        Output::Events(self.events)
    }
}

impl UringPlan for EpollWait {
    // Emulated, its poll's CQE is followed by `epoll_wait(.., 0)`, and maybe a re-arm.
    one_request!(plain = |native| native);
    const OPCODES: &'static [(&'static str, u8)] = &[("EPOLL_WAIT", opcode::EpollWait::CODE)];
    fn opcode(native_epoll_wait: bool) -> Option<u8> {
        Some(if native_epoll_wait {
            opcode::EpollWait::CODE
        } else {
            opcode::PollAdd::CODE
        })
    }
    /// Natively `IORING_OP_EPOLL_WAIT`; otherwise a one-shot `POLL_ADD` on the epoll fd, and
    /// the driver calls `epoll_wait(.., 0)` when it fires. The epoll fd is always plain.
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        let entry = if cx.native_epoll_wait {
            let events = self.events.raw.as_mut_ptr().cast();
            opcode::EpollWait::new(Fd(self.epfd), events, self.events.capacity() as u32).build()
        } else {
            opcode::PollAdd::new(Fd(self.epfd), libc::POLLIN as u32).build()
        };
        Lowered::Sqe(entry)
    }
}

impl EpollWait {
    /// `epoll_wait(.., 0)` into the op's events, once its epoll fd reported readiness: the
    /// count (0: nothing after all), or `-errno`.
    pub(crate) fn collect(&mut self) -> i32 {
        match crate::sys::epoll_wait_now(self.epfd, &mut self.events.raw) {
            Ok(n) => n as i32,
            Err(e) => -errno(&e),
        }
    }
}

impl ReadyPlan for EpollWait {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        false
    }
    fn first(&mut self, cx: &ReadyCx) -> Next {
        match cx.epoll_check(self.epfd) {
            Ok(()) => Next::Wait(IN),
            Err(e) => Next::Done(-errno(&e)),
        }
    }
    fn again(&mut self, _: bool) -> Next {
        match self.collect() {
            0 => Next::Wait(IN),
            res => Next::Done(res),
        }
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("EpollWait never goes to the pool")
    }
}

impl AioPlan for EpollWait {
    fn aio_start(&mut self, cx: &ReadyCx, _: bool) -> AioStart {
        match cx.epoll_check(self.epfd) {
            Ok(()) => poll_iocb(self.epfd, libc::POLLIN as u32),
            Err(e) => AioStart::Done(-errno(&e)),
        }
    }
    fn aio_event(&mut self, res: i32, _: bool) -> AioNext {
        if res <= 0 {
            return AioNext::Done(res);
        }
        match self.collect() {
            // Nothing after all: poll the epoll fd again.
            0 => AioNext::Again { nowait: false },
            res => AioNext::Done(res),
        }
    }
}

/// Changes what a pending [`Poll`] waits for: `POLL_REMOVE` with `IORING_POLL_UPDATE_EVENTS`
/// as an op. [`Ring::update_poll`](crate::Ring::update_poll) does it and waits for the answer.
///
/// Completes with `Ok(0)` once the poll waits for `mask`: a one-shot poll that is ready for
/// it completes at once, a multishot poll keeps its id and its `MORE` stream. `ENOENT`: no
/// poll with that id is in flight (never was, or it finished); `EALREADY`: the poll is
/// completing, and its own result stands; `EINVAL`: the id names an op that is not a poll.
/// Either way the target's contract is unchanged: exactly one final completion.
///
/// # Backends
/// `uring`: `POLL_REMOVE` with `IORING_POLL_UPDATE_EVENTS` (the kernel re-checks readiness
/// with the new mask). `epoll`: the poll's interest changes and its fd is registered again
/// (`EPOLL_CTL_MOD`, which reports current readiness). `aio`: a one-shot poll's
/// `IOCB_CMD_POLL` is cancelled and submitted again with the new mask; a multishot poll
/// (in the backend's epoll set) is changed as on epoll. On epoll and aio the update is
/// answered inside `submit`.
///
/// # Examples
/// ```
/// use oneloop::{Poll, PollMask, PollUpdate, Ring};
/// use std::os::fd::AsRawFd;
///
/// let mut ring = Ring::new()?;
/// let (rd, wr) = std::io::pipe()?;
/// // The write end is writable at once, but the poll waits for IN: nothing comes.
/// let id = ring.submit(Poll::new(wr.as_raw_fd(), PollMask::IN), 1)?;
/// ring.submit(PollUpdate::new(id, PollMask::OUT), 2)?;
/// let mut seen = Vec::new();
/// while seen.len() < 2 {
///     ring.wait(1, None)?;
///     seen.extend(ring.completions().map(|c| (c.user_data(), c.result().is_ok())));
/// }
/// seen.sort();
/// assert_eq!(seen, [(1, true), (2, true)]);   // the update, then the poll fired
/// # drop(rd);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PollUpdate {
    target: OpId,
    mask: PollMask,
    /// Whether the target is multishot (learnt when applied; the kernel needs to be told).
    multishot: bool,
}

impl PollUpdate {
    /// Makes the poll `target` wait for `mask` instead.
    pub fn new(target: OpId, mask: PollMask) -> PollUpdate {
        PollUpdate {
            target,
            mask,
            multishot: false,
        }
    }
}

/// What [`Ring::update_poll`](crate::Ring::update_poll) achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The poll now waits for the new mask.
    Updated,
    /// The poll had already completed, or is completing: its real result stands.
    TooLate,
    /// No poll with this id is known (never existed, or its final completion was taken).
    NotFound,
}

impl crate::Ring {
    /// Makes the pending poll `id` wait for `mask` instead (see [`PollUpdate`]), and says
    /// whether it did.
    ///
    /// # Errors
    /// `EINVAL` if `id` names an op that is not a poll; a broken ring.
    pub fn update_poll(&mut self, id: OpId, mask: PollMask) -> io::Result<UpdateOutcome> {
        let done = self.call(PollUpdate::new(id, mask))?;
        match done.result().as_ref().map_err(io::Error::raw_os_error) {
            Ok(_) => Ok(UpdateOutcome::Updated),
            Err(Some(libc::EALREADY)) => Ok(UpdateOutcome::TooLate),
            // Finished, but its final completion is still waiting to be taken.
            Err(Some(libc::ENOENT)) if self.final_ready(id) => Ok(UpdateOutcome::TooLate),
            Err(Some(libc::ENOENT)) => Ok(UpdateOutcome::NotFound),
            Err(_) => Err(done.into_parts().0.expect_err("an error")),
        }
    }
}

impl OpBase for PollUpdate {
    one_shot_on!();
    fn finish(self, _: Done) -> Output {
        Output::None
    }
    fn target(&self) -> Option<OpId> {
        Some(self.target)
    }
    fn apply(&mut self, target: &mut Op) -> i32 {
        match target {
            Op::Poll(poll) => {
                poll.mask = self.mask;
                self.multishot = poll.multishot;
                0
            }
            _ => -libc::EINVAL,
        }
    }
}

impl UringPlan for PollUpdate {
    // It acts on another op.
    one_request!(plain = |_native| false);
    const OPCODES: &'static [(&'static str, u8)] = &[("POLL_REMOVE", opcode::PollRemove::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::PollRemove::CODE)
    }
    /// The target's request is named by its `user_data`, which is its id on this backend.
    /// Without `IORING_POLL_ADD_MULTI` an update would make a multishot poll one-shot.
    fn lower(&mut self, _: &mut UringCx<'_>) -> Lowered {
        const UPDATE_EVENTS: u32 = 1 << 1;
        const ADD_MULTI: u32 = 1;
        let flags = UPDATE_EVENTS | if self.multishot { ADD_MULTI } else { 0 };
        let entry = opcode::PollRemove::new(self.target.as_u64() & crate::sink::KEY_BITS).build();
        let entry = crate::sys::sqe_with_len_and_flags(entry, flags, self.mask.bits());
        Lowered::Sqe(entry)
    }
}

impl ReadyPlan for PollUpdate {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        true
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        unreachable!("the core applies an op with a target itself")
    }
    fn again(&mut self, _: bool) -> Next {
        unreachable!("the core applies an op with a target itself")
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("the core applies an op with a target itself")
    }
}

impl AioPlan for PollUpdate {
    fn aio_start(&mut self, _: &ReadyCx, _: bool) -> AioStart {
        unreachable!("the core applies an op with a target itself")
    }
    fn aio_event(&mut self, _: i32, _: bool) -> AioNext {
        unreachable!("the core applies an op with a target itself")
    }
}
