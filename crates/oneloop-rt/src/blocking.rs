//! [`spawn_blocking`]: run a blocking function (a library without async I/O, CPU-heavy work)
//! on a thread of the runtime's blocking pool, and await its result on the ring's thread.
//!
//! The pool is the process's: threads start on demand up to [`MAX_THREADS`] and leave after
//! [`IDLE`] without work. A finished job wakes its task through the executor's injection
//! queue and the ring's waker (a cross-thread wake: ~60 µs on a 2-core machine here), so keep
//! quick work on the loop and send only what blocks. Files and sockets need none of this:
//! their ops never block the loop.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The most threads the blocking pool runs at once.
pub const MAX_THREADS: usize = 64;
/// How long an idle pool thread waits for work before it leaves.
pub const IDLE: Duration = Duration::from_secs(10);

type BlockingJob = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct BlockingPool {
    state: Mutex<BlockingState>,
    work: Condvar,
}

#[derive(Default)]
struct BlockingState {
    jobs: VecDeque<BlockingJob>,
    threads: usize,
    idle: usize,
}

fn pool() -> &'static BlockingPool {
    static POOL: OnceLock<BlockingPool> = OnceLock::new();
    POOL.get_or_init(BlockingPool::default)
}

impl BlockingPool {
    fn push(&'static self, job: BlockingJob) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.jobs.push_back(job);
        // An idle thread counts as idle until it has the lock again: compare with the jobs
        // waiting, or two jobs pushed in a row would both go to one woken thread (and one
        // waiting on the other would deadlock).
        if state.idle >= state.jobs.len() {
            self.work.notify_one();
        } else if state.threads < MAX_THREADS {
            state.threads += 1;
            let spawned = std::thread::Builder::new()
                .name("oneloop-rt-blocking".into())
                .spawn(move || self.worker());
            if spawned.is_err() {
                state.threads -= 1; // the queued job waits for a running thread
            }
        }
    }

    fn worker(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                job();
                state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, IDLE)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.jobs.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

/// Where a job's result meets the task waiting for it.
struct Handoff<T> {
    result: Option<std::thread::Result<T>>,
    waker: Option<Waker>,
}

/// Runs `f` on the blocking pool; the future resolves to its return value. A panic in `f` is
/// resumed in the awaiting task. Dropping the future does not stop `f` (a thread cannot be
/// interrupted); its result is then dropped.
///
/// # Examples
/// ```
/// let n = oneloop_rt::block_on(async {
///     oneloop_rt::spawn_blocking(|| std::fs::read_dir("/").map(|d| d.count())).await
/// })?;
/// assert!(n > 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn_blocking<F, T>(f: F) -> BlockingHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let slot = Arc::new(Mutex::new(Handoff {
        result: None,
        waker: None,
    }));
    let theirs = Arc::clone(&slot);
    pool().push(Box::new(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let waker = {
            let mut slot = theirs.lock().unwrap_or_else(|e| e.into_inner());
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }));
    BlockingHandle { slot }
}

/// The result of a [`spawn_blocking`] job, to await.
pub struct BlockingHandle<T> {
    slot: Arc<Mutex<Handoff<T>>>,
}

impl<T> Future for BlockingHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match slot.result.take() {
            Some(Ok(value)) => Poll::Ready(value),
            Some(Err(panic)) => {
                drop(slot);
                std::panic::resume_unwind(panic)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
