//! Where the readiness backends end an op, and the op's trip to the blocking pool.
//!
//! Each op decides for itself what happens next (`op/`'s `ReadyPlan`: done now, wait for
//! readiness, hand to the pool); its attempts and its blocking call are its own. What is
//! left here is the one place a raw result is vouched for ([`complete`]), so this is the
//! epoll and aio backends' only `unsafe`.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::completion::finish;
use crate::op::{Op, Output};
use crate::pool::Work;
use crate::slab::Key;
use crate::sys::posix as sio;
use crate::sys::Done;

/// Ends `op` with `res`: the result as a Rust result and what the op hands back.
///
/// The drivers call this only with what this very op did — its own non-blocking attempt's
/// result (made on its own buffers, `Next::Done`), its AIO request's event, its pool job's
/// result — or with an errno they decided (`-ECANCELED`, `-ETIME`), so `res` vouches for
/// what was written into the op's buffers, and a descriptor count is a new descriptor that
/// was released only to be wrapped here.
pub(crate) fn complete(op: Op, res: i32) -> (std::io::Result<u32>, Output) {
    // SAFETY: as above: `res` is this op's own result or an errno.
    finish(op, unsafe { Done::new(res) })
}

/// An op running on the blocking pool.
pub(crate) struct Blocking {
    /// The slot the op came from (checked against the slot's job when it comes back).
    pub key: Key,
    op: Op,
    /// A descriptor the op produced (`OpenAt`), closed on drop unless taken: a result nobody
    /// collects never leaks.
    pub produced: Option<OwnedFd>,
    /// The caller's number for the descriptor the job works on, and the duplicate the job
    /// uses instead while it holds the op (closed when the op comes back, or with the job).
    /// A caller that gives up on the op may close its descriptor at once (`Ring::abandon`):
    /// the job, which may already be in its system call, never acts on another file that
    /// takes the number.
    lent: Option<(RawFd, OwnedFd)>,
}

impl Blocking {
    /// A job for slot `key`'s op, on a duplicate of its descriptor (when one can be made:
    /// out of descriptors, the job uses the caller's number, as before there was a duplicate).
    pub fn new(key: Key, mut op: Op) -> Blocking {
        let lent = op.pool_fd_mut().and_then(|fd| {
            let dup = sio::dup_cloexec(*fd).ok()?;
            Some((std::mem::replace(fd, dup.as_raw_fd()), dup))
        });
        Blocking {
            key,
            op,
            produced: None,
            lent,
        }
    }

    /// The op, with its own descriptor number back (the duplicate is closed).
    pub fn into_op(mut self) -> Op {
        if let Some((number, _dup)) = self.lent.take() {
            if let Some(fd) = self.op.pool_fd_mut() {
                *fd = number;
            }
        }
        self.op
    }
}

impl Work for Blocking {
    fn run(&mut self) -> i32 {
        self.op.blocking(&mut self.produced)
    }
}
