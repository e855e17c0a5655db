//! Where the readiness backends end an op, and the op's trip to the blocking pool.
//!
//! Each op decides for itself what happens next (`op/`'s `ReadyPlan`: done now, wait for
//! readiness, hand to the pool); its attempts and its blocking call are its own. What is
//! left here is the one place a raw result is vouched for ([`complete`]), so this is the
//! epoll and aio backends' only `unsafe`.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;

use crate::completion::finish;
use crate::op::{Op, Output};
use crate::pool::Work;
use crate::slab::Key;
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
    pub op: Op,
    /// A descriptor the op produced (`OpenAt`), closed on drop unless taken: a result nobody
    /// collects never leaks.
    pub produced: Option<OwnedFd>,
}

impl Work for Blocking {
    fn run(&mut self) -> i32 {
        self.op.blocking(&mut self.produced)
    }
}
