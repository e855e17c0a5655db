//! Signals as a stream: SIGINT, SIGTERM, SIGHUP (any blockable signal) read from a `signalfd`
//! that the ring polls like any descriptor.
//!
//! **Create [`Signals`] before starting other threads** (in `main`, before
//! [`Runtime::run`](crate::Runtime::run)): it blocks the signals in the calling thread, and
//! threads started afterwards inherit the mask. A thread started earlier that does not block
//! them would take them with their default action (for SIGINT: exit).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! let mut signals = oneloop_rt::signal::Signals::new(&[libc::SIGINT, libc::SIGTERM])?;
//! oneloop_rt::block_on(async {
//!     let signal = signals.recv().await?;
//!     println!("got signal {signal}; shutting down");
//!     Ok::<(), std::io::Error>(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use oneloop::PollMask;

/// Pending signals, one item per delivery (the signal's number).
pub struct Signals {
    // Declared first, so dropped first: the poll is cancelled before the fd closes.
    wait: Option<Pin<Box<dyn Future<Output = io::Result<PollMask>>>>>,
    fd: File,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals").field("fd", &self.fd).finish()
    }
}

impl Signals {
    /// Blocks `signals` in this thread and listens for them (see the module doc).
    ///
    /// # Errors
    /// `EINVAL` for a number that is not a blockable signal.
    pub fn new(signals: &[i32]) -> io::Result<Signals> {
        Ok(Signals {
            wait: None,
            fd: File::from(oneloop::sockets::signal_fd(signals)?),
        })
    }

    /// Waits for the next signal; its number.
    ///
    /// # Cancellation
    /// Dropping the future cancels its poll; no signal is taken without being returned.
    pub async fn recv(&mut self) -> io::Result<i32> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<i32>> {
        loop {
            // One `signalfd_siginfo` per pending signal; its first field is the number.
            let mut info = [0u8; 128];
            match (&self.fd).read(&mut info) {
                Ok(128) => {
                    let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                    return Poll::Ready(Ok(signo as i32));
                }
                Ok(n) => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "signalfd gave {n} bytes, not one siginfo"
                    ))))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            let fd = self.fd.as_raw_fd();
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(crate::poll::ready(fd, PollMask::IN)));
            let polled = std::task::ready!(wait.as_mut().poll(cx));
            self.wait = None;
            polled?;
        }
    }
}

impl futures_core::Stream for Signals {
    type Item = io::Result<i32>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_recv(cx).map(Some)
    }
}
