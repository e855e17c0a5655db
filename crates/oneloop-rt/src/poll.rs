//! Readiness of any descriptor: `readable`, `writable`, `ready`.
//!
//! # Cancellation
//! Dropping the future cancels its poll op.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use oneloop::{Poll as PollOp, PollMask};

use crate::op::{plain, run};

/// Waits until `fd` is readable; returns the readiness seen (may include `HUP`/`ERR`).
pub async fn readable(fd: &impl AsRawFd) -> io::Result<PollMask> {
    ready(fd.as_raw_fd(), PollMask::IN).await
}

/// Waits until `fd` is writable; returns the readiness seen.
pub async fn writable(fd: &impl AsRawFd) -> io::Result<PollMask> {
    ready(fd.as_raw_fd(), PollMask::OUT).await
}

/// Waits until `fd` is ready for any of `mask`.
pub async fn ready(fd: RawFd, mask: PollMask) -> io::Result<PollMask> {
    plain(run(PollOp::new(fd, mask)).await).map(PollMask::from_bits)
}
