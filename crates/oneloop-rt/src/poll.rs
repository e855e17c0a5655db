//! Readiness of any descriptor: `readable`, `writable`, `ready`, and [`Readiness`], a
//! multishot stream of readiness.
//!
//! # Cancellation
//! Dropping the future (or the stream) cancels its poll op.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use oneloop::{Poll as PollOp, PollMask};

use crate::op::{clone_error, plain, run, Multishot};

/// Waits until `fd` is readable; returns the readiness seen (may include `HUP`/`ERR`).
///
/// # Cancellation
/// Dropping the future cancels the op.
pub async fn readable(fd: &impl AsRawFd) -> io::Result<PollMask> {
    ready(fd.as_raw_fd(), PollMask::IN).await
}

/// Waits until `fd` is writable; returns the readiness seen.
///
/// # Cancellation
/// Dropping the future cancels the op.
pub async fn writable(fd: &impl AsRawFd) -> io::Result<PollMask> {
    ready(fd.as_raw_fd(), PollMask::OUT).await
}

/// Waits until `fd` is ready for any of `mask`.
///
/// # Cancellation
/// Dropping the future cancels the op.
pub async fn ready(fd: RawFd, mask: PollMask) -> io::Result<PollMask> {
    plain(run(PollOp::new(fd, mask)).await).map(PollMask::from_bits)
}

/// Readiness of `fd` for `mask`, as a stream: one item per readiness observed since the
/// previous one (several events may be coalesced), never lost. If the backend ends its
/// multishot poll (the kernel may, e.g. on completion-queue overflow), the stream re-arms it.
///
/// # Examples
/// ```
/// use futures_core::Stream;
/// oneloop_rt::block_on(async {
///     let (rd, wr) = std::io::pipe().unwrap();
///     let mut events = oneloop_rt::poll::readiness(&rd, oneloop::PollMask::IN);
///     std::io::Write::write_all(&mut &wr, b"x").unwrap();
///     let first = std::future::poll_fn(|cx| std::pin::Pin::new(&mut events).poll_next(cx)).await;
///     assert!(first.unwrap().unwrap().contains(oneloop::PollMask::IN));
/// });
/// ```
///
/// # Cancellation
/// Dropping the future cancels the op.
pub fn readiness(fd: &impl AsRawFd, mask: PollMask) -> Readiness {
    let fd = fd.as_raw_fd();
    Readiness {
        fd,
        mask,
        op: Multishot::new(PollOp::new(fd, mask).multishot()),
    }
}

/// A multishot readiness stream; see [`readiness`].
pub struct Readiness {
    fd: RawFd,
    mask: PollMask,
    op: Multishot,
}

impl Stream for Readiness {
    type Item = io::Result<PollMask>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.op.poll_next(cx) {
                Poll::Ready(Some(Ok(c))) => {
                    let more = c.is_more();
                    match c.result() {
                        Ok(bits) => {
                            if !more {
                                // The backend ended the stream: re-arm for the next item.
                                let (fd, mask) = (self.fd, self.mask);
                                self.op = Multishot::new(PollOp::new(fd, mask).multishot());
                            }
                            return Poll::Ready(Some(Ok(PollMask::from_bits(*bits))));
                        }
                        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {
                            return Poll::Ready(None)
                        }
                        Err(e) => return Poll::Ready(Some(Err(clone_error(e)))),
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    let (fd, mask) = (self.fd, self.mask);
                    self.op = Multishot::new(PollOp::new(fd, mask).multishot());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
