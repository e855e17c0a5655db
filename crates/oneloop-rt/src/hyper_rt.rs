//! With the `hyper` feature: what hyper needs from a runtime besides I/O —
//! an [`Executor`] that spawns on this thread's executor, and a [`Timer`] on the ring's timers.
//! The I/O traits are on [`io::AsyncStream`](crate::io::AsyncStream).
//!
//! ```no_run
//! use hyper::server::conn::http1;
//! use oneloop_rt::{hyper_rt, io::AsyncStream, net::TcpListener};
//! # async fn demo(service: impl hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<String>, Error = std::convert::Infallible, Future = std::future::Ready<Result<hyper::Response<String>, std::convert::Infallible>>> + Clone + 'static) -> std::io::Result<()> {
//! let listener = TcpListener::bind("127.0.0.1:8080")?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let conn = http1::Builder::new()
//!         .timer(hyper_rt::Timer)
//!         .serve_connection(AsyncStream::new(stream), service.clone());
//!     oneloop_rt::spawn(async move { let _ = conn.await; });
//! }
//! # }
//! ```
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Spawns hyper's background futures (HTTP/2 streams, a client connection) with
/// [`spawn`](crate::spawn): they run on the calling thread's executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Executor;

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        drop(crate::spawn(future));
    }
}

/// hyper's timer (header-read timeouts, keep-alive) on the ring: each sleep is a ring
/// `Timeout`.
///
/// hyper wants its sleeps `Send + Sync`; a ring op belongs to its thread. So a sleep hands
/// hyper only its deadline and a key, and keeps the ring op in a table of the thread that
/// first polls it. It must be polled and dropped on that thread — as hyper does with the
/// connections this runtime's executor runs (a sleep dropped on another thread leaves its
/// timer to fire unobserved).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timer;

impl hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::new(Instant::now() + duration))
    }
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::new(deadline))
    }
    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

thread_local! {
    /// This thread's pending sleeps: the ring timers behind the `Send` handles.
    static SLEEPS: RefCell<Vec<Option<crate::time::Sleep>>> = const { RefCell::new(Vec::new()) };
    /// A number for this thread (0: not yet given).
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

fn thread_number() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    THREAD.with(|t| {
        if t.get() == 0 {
            t.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        t.get()
    })
}

/// A sleep as hyper holds it: plain data, so `Send + Sync`.
struct Sleep {
    deadline: Instant,
    /// The thread that polled it first, and its entry in that thread's table.
    slot: Option<(u64, usize)>,
}

impl Sleep {
    fn new(deadline: Instant) -> Sleep {
        Sleep {
            deadline,
            slot: None,
        }
    }
}

impl hyper::rt::Sleep for Sleep {}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let here = thread_number();
        let index = match self.slot {
            Some((thread, index)) => {
                assert_eq!(
                    thread, here,
                    "oneloop-rt: a hyper sleep polled on another thread than its first poll"
                );
                index
            }
            None => {
                if Instant::now() >= self.deadline {
                    return Poll::Ready(());
                }
                let sleep = crate::time::sleep_until(self.deadline);
                let index = SLEEPS.with(|s| {
                    let mut s = s.borrow_mut();
                    match s.iter().position(Option::is_none) {
                        Some(i) => {
                            s[i] = Some(sleep);
                            i
                        }
                        None => {
                            s.push(Some(sleep));
                            s.len() - 1
                        }
                    }
                });
                self.slot = Some((here, index));
                index
            }
        };
        let done = SLEEPS.with(|s| {
            let mut s = s.borrow_mut();
            let sleep = s[index].as_mut().expect("a pending sleep's entry");
            Pin::new(sleep).poll(cx).is_ready()
        });
        if done {
            SLEEPS.with(|s| s.borrow_mut()[index] = None);
            self.slot = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((thread, index)) = self.slot {
            if thread == thread_number() {
                // Dropping the ring sleep cancels its timer.
                let _ = SLEEPS.try_with(|s| s.borrow_mut()[index].take());
            }
        }
    }
}
