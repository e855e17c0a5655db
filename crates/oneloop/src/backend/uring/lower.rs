//! An op's io_uring request: the op lowers itself (`op/`'s `UringPlan`); here the driver
//! lends it the slot's scratch and the fd's fixed-file slot, and stamps the `user_data`.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use io_uring::types::Timespec;

use super::files::Files;
use crate::op::plan::{Lowered, UringCx, UringScratch};
use crate::op::Op;

/// A timespec for the time left until `at` (zero if it has passed).
pub(super) fn timespec_until(at: Instant, now: Instant) -> Timespec {
    let left = at.saturating_duration_since(now);
    timespec(left)
}

/// A timespec for `d`.
pub(super) fn timespec(d: Duration) -> Timespec {
    Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos())
}

/// Which of the kernel's requests lowering picks where the driver has a choice.
#[derive(Clone, Copy, Debug)]
pub(super) struct Native {
    /// `IORING_OP_EPOLL_WAIT`; otherwise an `EpollWait` is a one-shot `POLL_ADD` on the epoll
    /// fd, and the driver calls `epoll_wait(.., 0)` when it fires.
    pub epoll_wait: bool,
    /// Multishot `RECV`, `READ_MULTISHOT`, `ACCEPT` with the kernel picking buffers; otherwise
    /// each is a one-shot `POLL_ADD` on its fd, and the driver runs its round when it fires.
    pub multishot: bool,
    /// Multishot `RECV` fills several buffers at once (`IORING_RECVSEND_BUNDLE`).
    pub recv_bundle: bool,
    /// The id of the `FixedBufPool` registered with this ring (0: none): a `FixedBuf` of it
    /// is read or written with `READ_FIXED`/`WRITE_FIXED`.
    pub fixed_pool: u64,
    /// `IORING_OP_SEND_ZC` (6.0); otherwise a `SendZc` is a `SEND`.
    pub send_zc: bool,
}

/// Builds the main SQE for `op` (with its slot's `scratch`); ops on registered fds name their
/// fixed-file slot. `fixed_op` says whether it names a registered buffer (counted once pushed).
#[inline]
pub(super) fn lower(
    op: &mut Op,
    scratch: &mut Option<Box<UringScratch>>,
    files: &Files,
    user_data: u64,
    native: Native,
    now: Option<Instant>,
    fixed_op: &mut bool,
) -> Lowered {
    let fixed = op.fd().and_then(|fd| files.slot(fd));
    let mut cx = UringCx {
        fixed,
        scratch,
        native_epoll_wait: native.epoll_wait,
        native_multishot: native.multishot,
        recv_bundle: native.recv_bundle,
        fixed_pool: native.fixed_pool,
        fixed_op: false,
        send_zc: native.send_zc,
        now,
    };
    let lowered = op.uring_lower(&mut cx);
    *fixed_op = cx.fixed_op;
    match lowered {
        Lowered::Sqe(entry) => Lowered::Sqe(entry.user_data(user_data)),
        timer => timer,
    }
}
