//! Model checks (loom) of the ownership protocol and the blocking pool: the real
//! `src/pool/protocol.rs` and `src/pool/jobs.rs`, compiled here over loom's atomics, mutexes
//! and threads, explored under every interleaving up to a preemption bound (conformance case 28).
//!
//! Races checked: wakeup during arming, double wakeup, cancel during wakeup, cancel racing
//! completion (and after it), drop of the submitter's handle while a worker holds the buffer,
//! and pool shutdown with jobs in flight. A deliberately broken release (no re-check) is shown
//! to lose a wakeup: loom finds the interleaving.
#![allow(missing_docs, dead_code)]

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicU32, Ordering};
    pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
    pub(crate) use loom::thread;

    /// No faults are injected under loom.
    pub(crate) mod faults {
        pub(crate) struct Plan;
        impl Plan {
            pub(crate) fn adopt(self) {}
        }
        pub(crate) fn inherit() -> Option<Plan> {
            None
        }
        pub(crate) fn spawn_fails() -> bool {
            false
        }
        pub(crate) fn delay() {}
    }
}

#[path = "../src/pool/jobs.rs"]
mod jobs;
#[path = "../src/pool/protocol.rs"]
mod protocol;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use jobs::{Pool, Work};
use protocol::{Ownership, Release};

/// Explores every interleaving with at most `PREEMPTIONS` preemptions per execution
/// (`LOOM_MAX_PREEMPTIONS` overrides), so the suite stays fast in CI.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A request whose events only its owner may handle.
struct Request {
    own: Ownership,
    /// Events posted and not yet handled.
    posted: AtomicUsize,
    /// Owner-only state: loom reports any access by two threads at once.
    handled: UnsafeCell<usize>,
    ended: UnsafeCell<usize>,
}

impl Request {
    fn new(own: Ownership) -> Request {
        Request {
            own,
            posted: AtomicUsize::new(0),
            handled: UnsafeCell::new(0),
            ended: UnsafeCell::new(0),
        }
    }

    /// One unit of the owner's work: handle what was posted; end the request if cancelled.
    fn handle(&self, cancelled: bool) {
        let n = self.posted.swap(0, Ordering::AcqRel);
        // SAFETY: only the owner calls `handle`; loom checks that no two threads do at once.
        self.handled.with_mut(|h| unsafe { *h += n });
        if cancelled || self.own.is_cancelled() {
            // SAFETY: as above.
            let first = self.ended.with_mut(|e| unsafe {
                *e += 1;
                *e == 1
            });
            if first {
                self.own.finish();
            } else {
                // SAFETY: as above; undo, the request ends once.
                self.ended.with_mut(|e| unsafe { *e -= 1 });
            }
        }
    }

    /// The owner's loop: handle, release what was seen, and re-check what arrived meanwhile.
    fn drive(&self, mut refs: u32) {
        let mut cancelled = false;
        loop {
            self.handle(cancelled);
            match self.own.release(refs) {
                Release::Released => return,
                Release::Again {
                    refs: more,
                    cancelled: c,
                } => {
                    refs = more;
                    cancelled |= c;
                }
            }
        }
    }

    /// The broken owner: releases everything without re-checking.
    fn drive_broken(&self) {
        self.handle(false);
        self.own.release_without_recheck();
    }

    /// A wakeup: post an event, and handle it if this makes us the owner.
    fn wake(&self) {
        self.posted.fetch_add(1, Ordering::AcqRel);
        if self.own.try_own() {
            self.drive(1);
        }
    }

    fn handled(&self) -> usize {
        // SAFETY: called after every other thread was joined.
        self.handled.with(|h| unsafe { *h })
    }

    fn ended(&self) -> usize {
        // SAFETY: called after every other thread was joined.
        self.ended.with(|e| unsafe { *e })
    }
}

#[test]
fn wakeup_during_arming_is_not_lost() {
    model(|| {
        // The arming thread owns the request from the start.
        let req = Arc::new(Request::new(Ownership::owned()));
        let waker = {
            let req = Arc::clone(&req);
            thread::spawn(move || req.wake())
        };
        req.drive(1);
        waker.join().unwrap();
        assert_eq!(req.handled(), 1, "the wakeup was handled");
        assert_eq!(req.posted.load(Ordering::Acquire), 0);
    });
}

#[test]
#[should_panic(expected = "the wakeup was handled")]
fn broken_release_without_recheck_loses_a_wakeup() {
    model(|| {
        let req = Arc::new(Request::new(Ownership::owned()));
        let waker = {
            let req = Arc::clone(&req);
            thread::spawn(move || {
                req.posted.fetch_add(1, Ordering::AcqRel);
                if req.own.try_own() {
                    req.drive_broken();
                }
            })
        };
        req.drive_broken();
        waker.join().unwrap();
        assert_eq!(req.handled(), 1, "the wakeup was handled");
    });
}

#[test]
fn double_wakeup_is_handled_once_each_never_concurrently() {
    model(|| {
        let req = Arc::new(Request::new(Ownership::new()));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let req = Arc::clone(&req);
                thread::spawn(move || req.wake())
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(req.handled(), 2);
        assert_eq!(req.own.refs(), 0, "ownership was given up");
    });
}

#[test]
fn cancel_during_wakeup_ends_the_request_exactly_once() {
    model(|| {
        let req = Arc::new(Request::new(Ownership::new()));
        let waker = {
            let req = Arc::clone(&req);
            thread::spawn(move || req.wake())
        };
        let canceller = {
            let req = Arc::clone(&req);
            thread::spawn(move || {
                if req.own.cancel() {
                    req.drive(1);
                }
            })
        };
        waker.join().unwrap();
        canceller.join().unwrap();
        assert_eq!(req.ended(), 1, "the cancel was honoured exactly once");
        assert!(req.own.is_done());
    });
}

/// Pool work that records whether it ran and counts drops of its buffer.
struct Tracked {
    ran: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Work for Tracked {
    fn run(&mut self) -> i32 {
        self.ran.fetch_add(1, Ordering::AcqRel);
        7
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::AcqRel);
    }
}

fn tracked() -> (Tracked, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let ran = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    (
        Tracked {
            ran: Arc::clone(&ran),
            dropped: Arc::clone(&dropped),
        },
        ran,
        dropped,
    )
}

fn pool(threads: usize) -> Pool<Tracked> {
    Pool::new(threads, Box::new(|| {}), || {})
}

#[test]
fn cancel_racing_completion_has_one_winner() {
    model(|| {
        let mut pool = pool(1);
        let (work, ran, dropped) = tracked();
        let job = pool.submit(work).map_err(|(e, _)| e).unwrap();
        let cancelled = pool.cancel(&job);
        pool.shutdown();
        let mut done = Vec::new();
        pool.take_done(&mut done);
        let (work, result) = job.take().expect("the job ended either way");
        if cancelled {
            assert_eq!((result, ran.load(Ordering::Acquire)), (-libc::ECANCELED, 0));
            assert!(done.is_empty(), "a cancelled job is never handed back");
        } else {
            assert_eq!((result, ran.load(Ordering::Acquire)), (7, 1));
            assert_eq!(done.len(), 1);
        }
        // Cancel after completion: too late, changes nothing.
        assert!(!pool.cancel(&job));
        drop(work);
        drop(done);
        drop(job);
        assert_eq!(dropped.load(Ordering::Acquire), 1);
    });
}

#[test]
fn dropping_the_handle_while_a_worker_holds_the_buffer_frees_it_once() {
    model(|| {
        let mut pool = pool(1);
        let (work, _ran, dropped) = tracked();
        let job = pool.submit(work).map_err(|(e, _)| e).unwrap();
        // The submitter gives up (a dropped future): cancel, then drop its handle at once,
        // whether or not the worker is still using the work.
        let _ = pool.cancel(&job);
        drop(job);
        pool.shutdown();
        let mut done = Vec::new();
        pool.take_done(&mut done);
        drop(done);
        drop(pool);
        assert_eq!(
            dropped.load(Ordering::Acquire),
            1,
            "freed exactly once, after the worker"
        );
    });
}

#[test]
fn shutdown_with_jobs_in_flight_completes_or_reclaims_each() {
    model(|| {
        let mut pool = pool(1);
        let (a, ran_a, dropped_a) = tracked();
        let (b, ran_b, dropped_b) = tracked();
        let job_a = pool.submit(a).map_err(|(e, _)| e).unwrap();
        let job_b = pool.submit(b).map_err(|(e, _)| e).unwrap();
        let b_cancelled = pool.cancel(&job_b);
        pool.shutdown();
        let mut done = Vec::new();
        pool.take_done(&mut done);
        assert_eq!(
            ran_a.load(Ordering::Acquire),
            1,
            "an uncancelled job runs before shutdown ends"
        );
        assert_eq!(ran_b.load(Ordering::Acquire), usize::from(!b_cancelled));
        assert_eq!(done.len(), 1 + usize::from(!b_cancelled));
        assert!(
            job_a.take().is_some() && job_b.take().is_some(),
            "every job ended"
        );
        drop((done, job_a, job_b, pool));
        assert_eq!(
            (
                dropped_a.load(Ordering::Acquire),
                dropped_b.load(Ordering::Acquire)
            ),
            (1, 1)
        );
    });
}
