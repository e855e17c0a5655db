//! The uring in-flight table: every accepted op lives in a slot here until the kernel is done.
//!
//! This is where memory is handed to the kernel, so it is one of the two places `unsafe`
//! lives. The argument is short:
//!
//! * every SQE pushed through [`InFlight::push`] is built by `lower.rs` from a slot of
//!   `slots`, and points only into what that slot owns: the op's buffers (heap memory the op
//!   owns), and the slot's [`Aux`] fields (inside the slab, whose addresses never move);
//! * a slot is removed only once every CQE that names it has been reaped (its main CQE and
//!   any linked-timeout CQE; cancel CQEs name no memory), see `try_finish` in `mod.rs`;
//! * on teardown, slots the kernel might still hold are leaked, never freed.
#![allow(unsafe_code)]

use io_uring::opcode;
use io_uring::squeue::{self, Flags};
use io_uring::types::Fd;
use io_uring::types::Timespec;
use io_uring::IoUring;
use std::os::fd::RawFd;
use std::time::Instant;

use super::files::Files;
use super::lower;
use crate::op::plan::{Lowered, Step};
use crate::slab::Key;

use crate::completion::finish;
use crate::op::plan::UringScratch;
use crate::op::{Op, Output};
use crate::slab::Slab;
use crate::sys::buf_ring::{KernelRing, Lease};
use crate::sys::Done;

/// Kernel-visible scratch an op may need besides its buffers.
pub(super) struct Aux {
    /// The deadline's linked-timeout timespec.
    pub link_ts: Timespec,
    /// What only some ops need, boxed so that every slot stays small (slots are moved on
    /// insert and remove): iovecs, a socket address, an `open_how`.
    pub scratch: Option<Box<UringScratch>>,
}

/// One op in flight and what the kernel has said about it so far.
pub(super) struct UringSlot {
    pub op: Op,
    pub user_data: u64,
    /// The op's deadline, absolute.
    pub deadline: Option<Instant>,
    pub aux: Aux,
    /// A `Timeout` op's timer in the ring's heap, while it is armed.
    pub timer: bool,
    /// The main request's final result, once its last CQE (no `MORE`) arrived.
    pub main_res: Option<i32>,
    /// Linked-timeout CQEs still to come.
    pub links_pending: u8,
    /// The linked timeout fired: its CQE is `-ETIME` (the op was cancelled), `-EALREADY`
    /// (the op was running on io-wq and may yet end `ECANCELED`) or `-ENOENT` (the op was
    /// already completing); only a timeout cancelled because the op finished says `-ECANCELED`.
    pub link_fired: bool,
    /// Cancel CQEs still to come.
    pub cancels_pending: u8,
    /// A user cancel reported `Cancelled` for this op.
    pub user_cancelled: bool,
    /// A cancel has answered for this op (`Cancelled` or `TooLate`): its end is decided, and
    /// later cancels answer `TooLate` without asking the kernel again (which may still find a
    /// request it is cancelling, and say 0 once more).
    pub cancel_answered: bool,
    /// An emulated `EpollWait` waiting to be re-armed (its poll fired, `epoll_wait` found
    /// nothing): the kernel holds no request for it.
    pub rearm_pending: bool,
    /// A cancel was asked for with no one waiting for its answer (`Ring::cancel_nowait`): its
    /// cancel CQEs are nobody's result, and the op ends as the kernel decides.
    pub discarded: bool,
}

impl UringSlot {
    pub fn new(op: Op, user_data: u64, deadline: Option<Instant>) -> UringSlot {
        UringSlot {
            op,
            user_data,
            deadline,
            aux: Aux {
                link_ts: Timespec::new(),
                scratch: None,
            },
            timer: false,
            main_res: None,
            links_pending: 0,
            link_fired: false,
            cancels_pending: 0,
            user_cancelled: false,
            cancel_answered: false,
            rearm_pending: false,
            discarded: false,
        }
    }

    /// What the op ends with when it is stopped between two of its requests (cancelled, with
    /// none in the kernel): what it achieved so far, or `-ECANCELED`.
    pub fn stopped(&mut self) -> i32 {
        match self.op.uring_step(-libc::ECANCELED, true) {
            Step::Done(res) => res,
            Step::Again => -libc::ECANCELED,
        }
    }

    /// Whether the kernel may still post a CQE naming this slot.
    pub fn kernel_holds(&self) -> bool {
        self.main_res.is_none() || self.links_pending > 0 || self.cancels_pending > 0
    }
}

/// The ring and the slots whose memory it may touch.
pub(super) struct InFlight {
    pub ring: IoUring,
    pub slots: Slab<UringSlot>,
    /// Requests lowered to `READ_FIXED`/`WRITE_FIXED` (`Stats::fixed_buffer_ops`).
    pub fixed_ops: u64,
}

impl InFlight {
    /// Free SQ entries.
    pub fn sq_room(&mut self) -> usize {
        sq_room(&mut self.ring)
    }

    /// Whether an `io_uring_enter` has work to do: queued SQEs, completion work the kernel
    /// deferred to us (`IORING_SQ_TASKRUN`), or overflowed CQEs to flush.
    pub fn needs_enter(&mut self) -> bool {
        let sq = self.ring.submission();
        !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
    }

    /// Lowers slot `key`'s op and pushes its SQE, with its deadline's linked timeout chained
    /// behind it, if the SQ has room for both (`Armed::Full` otherwise: make room, then ask
    /// again). A `Timeout` op becomes a timer instead (`Armed::Timer`).
    /// `now` is the clock read at submission, if it was; it is read here if the op needs it
    /// (a deadline, a timer) and it was not.
    #[inline]
    pub fn push_op(
        &mut self,
        key: Key,
        files: &Files,
        native: lower::Native,
        now: Option<Instant>,
        user_data: (u64, u64),
    ) -> Armed {
        let slot = self.slots.get_mut(key).expect("arming a live slot");
        let needs_clock = slot.deadline.is_some() || matches!(slot.op, Op::Timeout(_));
        let now = now.or_else(|| needs_clock.then(Instant::now));
        let mut fixed_op = false;
        let main = match lower::lower(
            &mut slot.op,
            &mut slot.aux.scratch,
            files,
            user_data.0,
            native,
            now,
            &mut fixed_op,
        ) {
            Lowered::Sqe(main) => main,
            Lowered::Timer(at) => return Armed::Timer(at),
            Lowered::Done(res) => return Armed::Done(res),
        };
        let Some(deadline) = slot.deadline else {
            // SAFETY: `main` was lowered from slot `key` (its buffers, its `aux`), which lives
            // until its CQEs are reaped (see the module doc).
            let pushed = unsafe { push(&mut self.ring, std::slice::from_ref(&main)) };
            if !pushed {
                return Armed::Full(1);
            }
            self.fixed_ops += u64::from(fixed_op);
            // Held by its request from now on (an op between two requests was held by none).
            slot.rearm_pending = false;
            return Armed::Pushed;
        };
        if sq_room(&mut self.ring) < 2 {
            return Armed::Full(2);
        }
        slot.aux.link_ts = lower::timespec_until(deadline, now.unwrap_or_else(Instant::now));
        slot.links_pending += 1;
        let link = opcode::LinkTimeout::new(&slot.aux.link_ts)
            .build()
            .user_data(user_data.1);
        let chain = [main.flags(Flags::IO_LINK), link];
        // SAFETY: `main` as above; `link` names the slot's `aux.link_ts`; the slot lives until
        // both CQEs are reaped (`links_pending`).
        let pushed = unsafe { push(&mut self.ring, &chain) };
        assert!(pushed, "SQ room was checked");
        self.fixed_ops += u64::from(fixed_op);
        slot.rearm_pending = false;
        Armed::Pushed
    }

    /// Lowers plain op `key` (see `UringPlan::plain`; no deadline) and pushes its SQE; `false`,
    /// having done nothing, if the SQ is full or the op did not lower to a request.
    #[inline]
    pub fn push_plain(
        &mut self,
        key: Key,
        files: &Files,
        native: lower::Native,
        user_data: u64,
    ) -> bool {
        if sq_room(&mut self.ring) == 0 {
            return false;
        }
        let slot = self.slots.get_mut(key).expect("a plain op just inserted");
        let mut fixed_op = false;
        let main = match lower::lower(
            &mut slot.op,
            &mut slot.aux.scratch,
            files,
            user_data,
            native,
            None,
            &mut fixed_op,
        ) {
            Lowered::Sqe(main) => main,
            Lowered::Timer(_) | Lowered::Done(_) => return false,
        };
        // SAFETY: `main` was lowered from slot `key` (its buffers, its `aux`), which lives
        // until its CQE is reaped (see the module doc).
        let pushed = unsafe { push(&mut self.ring, std::slice::from_ref(&main)) };
        debug_assert!(pushed, "SQ room was checked");
        self.fixed_ops += u64::from(pushed && fixed_op);
        pushed
    }

    /// Pushes an `ASYNC_CANCEL` of the request whose `user_data` is `target`; `false` if the
    /// SQ is full.
    pub fn push_cancel(&mut self, target: u64, user_data: u64) -> bool {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data);
        // SAFETY: a cancel names no memory (its target is a `user_data` value).
        unsafe { push(&mut self.ring, &[entry]) }
    }

    /// Pushes a multishot `POLL_ADD` of `fd` for `POLLIN`; `false` if the SQ is full.
    pub fn push_poll(&mut self, fd: RawFd, user_data: u64) -> bool {
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data);
        // SAFETY: a poll names no memory.
        unsafe { push(&mut self.ring, &[entry]) }
    }
}

/// What arming an op did.
pub(super) enum Armed {
    /// Its request is queued.
    Pushed,
    /// It is a timer due at this instant (the driver arms it in its heap).
    Timer(Instant),
    /// The SQ has no room for this many entries: make room, then arm again.
    Full(usize),
    /// It ended before any request, with this raw result.
    Done(i32),
}

/// Free SQ entries.
fn sq_room(ring: &mut IoUring) -> usize {
    let sq = ring.submission();
    sq.capacity() - sq.len()
}

/// Pushes `entries` as one unit (a linked chain stays together); `false` if they do not fit.
///
/// # Safety
/// Every pointer in `entries` must name nothing (cancel, poll, nop, close, accept without
/// an address) or memory owned by a live slot of `InFlight::slots` — what `lower.rs` builds
/// from that slot: the op's heap buffers and the slot's `Aux` fields (stable slab
/// addresses) — and whose `user_data` keeps that slot from being removed until every CQE
/// naming it is reaped (the tags of `mod.rs` and `try_finish` see to that).
unsafe fn push(ring: &mut IoUring, entries: &[squeue::Entry]) -> bool {
    let mut sq = ring.submission();
    if sq.capacity() - sq.len() < entries.len() {
        return false;
    }
    // SAFETY: by this function's contract every pointer names nothing or memory of a live
    // slot that outlives the request (slots the kernel may still hold are leaked on
    // teardown, never freed).
    unsafe { sq.push_multiple(entries) }.is_ok()
}

/// Ends slot's `op` with `res`: the result as a Rust result and what the op hands back.
///
/// The driver calls this only with the op's own main CQE result (the kernel's, for the SQE
/// `lower.rs` built from this slot) or an errno it decided (`-ECANCELED`, `-ETIME`, a refused
/// `EpollWait`'s error), once the slot is finished (`try_finish` in `mod.rs`), so `res`
/// vouches for what the kernel wrote into the op's buffers.
pub(super) fn complete(op: Op, res: i32) -> (std::io::Result<u32>, Output) {
    // SAFETY: as above: `res` is this op's own result or an errno.
    finish(op, unsafe { Done::new(res) })
}

/// What a `MORE` CQE of `op` carries besides buffers (see [`leases`]), from its result
/// `res`: an accepted socket.
///
/// The driver calls this only with a `MORE` CQE of this op's own main request (the kernel's
/// word that it made this descriptor), so the result vouches for it.
pub(super) fn more_output(op: &Op, res: i32) -> Output {
    if res < 0 || !op.accepts_many() {
        return Output::None;
    }
    // SAFETY: as above: a new descriptor the kernel made for this accept.
    unsafe { Done::new(res) }
        .into_fd()
        .map_or(Output::None, Output::Fd)
}

/// The leases a CQE of `op` carries (an op that picks from a buffer ring, a CQE that names a
/// buffer in `flags`), in order, handed to `each`: the `res` bytes the kernel wrote, in one
/// buffer or — a bundle — several. `groups`: the ring's registered groups, by id.
///
/// The driver calls this only with a CQE of this op's own main request, in the order the
/// kernel posted them, so the result and flags vouch for the buffers.
pub(super) fn leases(
    groups: &mut [KernelRing],
    op: &Op,
    res: i32,
    flags: u32,
    each: impl FnMut(Lease),
) {
    let (Some(bid), Some(pool)) = (io_uring::cqueue::buffer_select(flags), op.buf_pool()) else {
        return;
    };
    let Some(group) = groups
        .get_mut(usize::from(pool.bgid))
        .filter(|g| std::sync::Arc::ptr_eq(&g.pool, pool))
    else {
        tracing::error!(
            bgid = pool.bgid,
            "a CQE names a buffer of a group not registered here"
        );
        return;
    };
    let len = u32::try_from(res).unwrap_or(0);
    // SAFETY: the kernel named buffer `bid` of this op's group in the op's own CQE, having
    // written `len` bytes from there on; CQEs are taken in the order the kernel posted them.
    unsafe { group.take(bid, len, io_uring::cqueue::buffer_more(flags), each) }
}
