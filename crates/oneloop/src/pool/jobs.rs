//! Jobs, workers and the hand-back queue.
//!
//! A job is `Arc`-shared between the ring (which may cancel it) and a worker (which runs it).
//! Its [`Ownership`] word decides who acts: a worker runs it only if it becomes owner; a cancel
//! that becomes owner first ends it as `ECANCELED` without running it. A finished job is marked
//! `DONE`, then queued for the ring; the worker writes the ring's eventfd only when that queue
//! goes from empty to non-empty, so a burst of results costs one wake.

use std::collections::VecDeque;

use super::protocol::Ownership;
use super::sync::{faults, thread, Arc, Condvar, Mutex, MutexGuard};

/// Blocking work: one system call on memory the work owns.
pub(crate) trait Work: Send + 'static {
    /// Runs the call; returns its raw result (`>= 0`, or `-errno`).
    fn run(&mut self) -> i32;
}

/// What the owner of a job has produced.
struct Outcome<W> {
    work: Option<W>,
    result: Option<i32>,
}

/// One unit of blocking work, shared by the ring and a worker.
pub(crate) struct Job<W> {
    state: Ownership,
    /// Only the job's owner writes here; the ring reads it once the job is `DONE`.
    outcome: Mutex<Outcome<W>>,
}

impl<W: Work> Job<W> {
    fn new(work: W) -> Job<W> {
        Job {
            state: Ownership::new(),
            outcome: Mutex::new(Outcome {
                work: Some(work),
                result: None,
            }),
        }
    }

    /// Refills a finished job with new work; the caller holds the only reference.
    fn reset(&self, work: W) {
        let mut outcome = lock(&self.outcome);
        outcome.work = Some(work);
        outcome.result = None;
        drop(outcome);
        self.state.reset();
    }

    /// Takes the work back with its result, once the job has ended; `None` before that (or
    /// if already taken).
    pub(crate) fn take(&self) -> Option<(W, i32)> {
        if !self.state.is_done() {
            return None;
        }
        let mut outcome = lock(&self.outcome);
        let result = outcome.result?;
        let work = outcome.work.take()?;
        Some((work, result))
    }

    /// Ends the job as its owner with `result`.
    fn end(&self, work: Option<W>, result: i32) {
        {
            let mut outcome = lock(&self.outcome);
            if let Some(work) = work {
                outcome.work = Some(work);
            }
            outcome.result = Some(result);
        }
        self.state.finish();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Queue<W> {
    jobs: VecDeque<Arc<Job<W>>>,
    /// Workers waiting on `work_ready`.
    idle: usize,
    /// Workers between taking a job and coming back for the next.
    busy: usize,
    shutdown: bool,
}

struct Workers<W> {
    queue: Mutex<Queue<W>>,
    work_ready: Condvar,
    done: Mutex<Vec<Arc<Job<W>>>>,
    notify: Box<dyn Fn() + Send + Sync>,
}

/// A bounded set of worker threads, spawned on demand.
pub(crate) struct Pool<W: Work> {
    shared: Arc<Workers<W>>,
    threads: Vec<thread::JoinHandle<()>>,
    threads_max: usize,
    on_start: fn(),
    /// Finished jobs kept for reuse, so steady-state offloading allocates nothing.
    spare: Vec<Arc<Job<W>>>,
}

impl<W: Work> Pool<W> {
    /// A pool of at most `threads_max` workers; `notify` is called (from a worker) when
    /// finished jobs become available; `on_start` runs first in each worker thread.
    pub(crate) fn new(
        threads_max: usize,
        notify: Box<dyn Fn() + Send + Sync>,
        on_start: fn(),
    ) -> Pool<W> {
        let shared = Arc::new(Workers {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
                busy: 0,
                shutdown: false,
            }),
            work_ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            notify,
        });
        Pool {
            shared,
            threads: Vec::new(),
            threads_max: threads_max.max(1),
            on_start,
            spare: Vec::new(),
        }
    }

    /// Queues `work`; a worker runs it unless it is cancelled first.
    ///
    /// # Errors
    /// If no worker exists and none can be spawned; the work comes back with the error.
    pub(crate) fn submit(&mut self, work: W) -> Result<Arc<Job<W>>, (std::io::Error, W)> {
        let need_thread = {
            // Spawn only when the jobs waiting (this one included) outnumber the workers that
            // are not running one: a worker that just finished is about to take the next.
            let queue = lock(&self.shared.queue);
            let free = self.threads.len() - queue.busy.min(self.threads.len());
            queue.jobs.len() + 1 > free && self.threads.len() < self.threads_max
        };
        if need_thread {
            if let Err(e) = self.spawn() {
                if self.threads.is_empty() {
                    return Err((e, work));
                }
            }
        }
        let job = match self.spare.pop() {
            Some(job) => {
                job.reset(work);
                job
            }
            None => Arc::new(Job::new(work)),
        };
        let mut queue = lock(&self.shared.queue);
        queue.jobs.push_back(Arc::clone(&job));
        if queue.idle > 0 {
            self.shared.work_ready.notify_one();
        }
        Ok(job)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        if faults::spawn_fails() {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let shared = Arc::clone(&self.shared);
        let on_start = self.on_start;
        let plan = faults::inherit();
        let handle = thread::Builder::new()
            .name("oneloop-pool".into())
            .spawn(move || {
                if let Some(plan) = plan {
                    plan.adopt();
                }
                on_start();
                worker(&shared);
            })?;
        self.threads.push(handle);
        Ok(())
    }

    /// Tries to cancel `job`: `true` if it had not started (it is now ended with `ECANCELED`
    /// and its work can be taken back); `false` if a worker is running it or it has finished,
    /// in which case its real result will come back through `take_done`.
    pub(crate) fn cancel(&self, job: &Job<W>) -> bool {
        if job.state.cancel() {
            job.end(None, -libc::ECANCELED);
            true
        } else {
            false
        }
    }

    /// Keeps a job whose work was taken back, for reuse, if nothing else still holds it.
    pub(crate) fn recycle(&mut self, job: Arc<Job<W>>) {
        if Arc::strong_count(&job) == 1 && self.spare.len() < 256 {
            self.spare.push(job);
        }
    }

    /// Moves every finished job into `into` (keeping `into`'s allocation).
    pub(crate) fn take_done(&self, into: &mut Vec<Arc<Job<W>>>) {
        into.append(&mut lock(&self.shared.done));
    }

    /// The most worker threads this pool spawns.
    pub(crate) fn threads_max(&self) -> usize {
        self.threads_max
    }

    /// How many worker threads exist.
    pub(crate) fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Stops the workers after they finish every queued job that was not cancelled, and
    /// joins them. Finished jobs stay available to `take_done`.
    pub(crate) fn shutdown(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.work_ready.notify_all();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }

    /// Stops the workers without waiting: each finishes the job it is running (a job blocked
    /// for good keeps its thread), then exits. A running job's work stays alive, held by its
    /// worker, until that job ends; then it is dropped (buffers freed, descriptors closed).
    pub(crate) fn detach(&mut self) {
        lock(&self.shared.queue).shutdown = true;
        self.shared.work_ready.notify_all();
        self.threads.clear();
    }
}

impl<W: Work> Drop for Pool<W> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A worker: takes jobs until shutdown leaves the queue empty.
fn worker<W: Work>(shared: &Workers<W>) {
    while let Some(job) = next_job(shared) {
        if !job.state.try_own() {
            // A cancel owns it: ended already, nothing to run.
            not_busy(shared);
            continue;
        }
        let work = lock(&job.outcome).work.take();
        let Some(mut work) = work else {
            not_busy(shared);
            continue;
        };
        faults::delay();
        let result = work.run();
        job.end(Some(work), result);
        // Free again before the ring hears of the result, so its next job finds us free.
        not_busy(shared);
        let was_empty = {
            let mut done = lock(&shared.done);
            let was_empty = done.is_empty();
            done.push(job);
            was_empty
        };
        if was_empty {
            (shared.notify)();
        }
    }
}

/// Counts the calling worker as no longer running a job.
fn not_busy<W>(shared: &Workers<W>) {
    lock(&shared.queue).busy -= 1;
}

/// The next job to run (counted busy until [`not_busy`]).
fn next_job<W>(shared: &Workers<W>) -> Option<Arc<Job<W>>> {
    let mut queue = lock(&shared.queue);
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            queue.busy += 1;
            return Some(job);
        }
        if queue.shutdown {
            return None;
        }
        queue.idle += 1;
        queue = shared
            .work_ready
            .wait(queue)
            .unwrap_or_else(|e| e.into_inner());
        queue.idle -= 1;
    }
}
