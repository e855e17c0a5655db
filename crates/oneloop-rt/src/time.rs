//! Time: `sleep`, `sleep_until`, `timeout`, `interval` — each a ring `Timeout` op.
//!
//! # Cancellation
//! Dropping a sleep cancels its timer op; a `timeout` that finishes first cancels its timer.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use oneloop::Timeout;

use crate::op::Submit;

/// Completes after `duration`.
///
/// # Examples
/// ```
/// oneloop_rt::block_on(async {
///     let start = std::time::Instant::now();
///     oneloop_rt::time::sleep(std::time::Duration::from_millis(5)).await;
///     assert!(start.elapsed() >= std::time::Duration::from_millis(5));
/// });
/// ```
///
/// # Cancellation
/// Dropping the future cancels the op.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        op: Submit::new(Timeout::after(duration)),
    }
}

/// Completes at `deadline`.
///
/// # Cancellation
/// Dropping the future cancels the op.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        op: Submit::new(Timeout::at(deadline)),
    }
}

/// A pending sleep.
pub struct Sleep {
    op: Submit,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Expiry (TimedOut) is the normal end; any other ending is also the end of the sleep.
        Pin::new(&mut self.op).poll(cx).map(drop)
    }
}

/// The error [`timeout`] gives when the time ran out first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(_: Elapsed) -> io::Error {
        io::Error::from(io::ErrorKind::TimedOut)
    }
}

/// Runs `future` for at most `duration`: its output, or [`Elapsed`] (and `future` is dropped,
/// cancelling its ops).
///
/// # Cancellation
/// Dropping it drops `future` (cancelling its ops) and cancels the timer.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let mut timer = sleep(duration);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        Pin::new(&mut timer).poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// Ticks every `period`, the first tick at once; missed ticks are not replayed (the next one
/// is scheduled a period after the late one). Also a [`Stream`](futures_core::Stream) of
/// tick instants.
///
/// # Examples
/// ```
/// oneloop_rt::block_on(async {
///     let mut every = oneloop_rt::time::interval(std::time::Duration::from_millis(2));
///     let a = every.tick().await;
///     let b = every.tick().await;
///     assert!(b - a >= std::time::Duration::from_millis(2));
/// });
/// ```
///
/// # Cancellation
/// Dropping the interval (or a pending `tick`) cancels its timer op.
pub fn interval(period: Duration) -> Interval {
    Interval {
        period: period.max(Duration::from_nanos(1)),
        next: Instant::now(),
        sleep: None,
    }
}

/// A periodic timer; see [`interval`].
pub struct Interval {
    period: Duration,
    next: Instant,
    sleep: Option<Sleep>,
}

impl Interval {
    /// Waits for the next tick; returns when it was due.
    ///
    /// # Cancellation
    /// Dropping the future cancels the op.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        let due = self.next;
        let sleep = self.sleep.get_or_insert_with(|| sleep_until(due));
        if Pin::new(sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.sleep = None;
        let now = Instant::now();
        self.next = if due + self.period > now {
            due + self.period
        } else {
            now + self.period
        };
        Poll::Ready(due)
    }
}

impl futures_core::Stream for Interval {
    type Item = Instant;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Instant>> {
        self.poll_tick(cx).map(Some)
    }
}
