//! Dropping an epoll or aio ring whose pool jobs are running waits for them (they are quick
//! here) and stops the pool itself: it never gives up on them (which it says with a warning)
//! and no descriptor outlives the ring. (A drop used to spin for its whole grace period
//! without looking for the pool's results, then leave the jobs to their threads.)
//!
//! One test in this binary: it counts the process's descriptors.
#![allow(missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use oneloop::{BackendKind, OpenAt, Ring};

/// Counts the warnings emitted on this thread (the ring warns when it leaves pool jobs behind).
struct Warnings(AtomicUsize);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn pool_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "oneloop-pool")
        })
        .count()
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn drop_waits_for_pool_jobs_and_stops_the_pool() {
    let warnings = Arc::new(Warnings(AtomicUsize::new(0)));
    let _guard = tracing::subscriber::set_default(Arc::clone(&warnings));
    for kind in [BackendKind::Epoll, BackendKind::Aio] {
        let build = || {
            Ring::builder()
                .backend(kind)
                .entries(8)
                .pool_threads(4)
                .build()
        };
        if let Err(e) = build() {
            eprintln!("SKIP {kind}: backend unavailable here: {e}");
            continue;
        }
        let fds = fd_count();
        for round in 0..50 {
            let mut ring = build().unwrap();
            // An OpenAt that creates a file runs on the pool on both backends (a plain open
            // may finish inline from the caches); the ring is dropped while they run.
            let dir = std::env::temp_dir();
            let dir = std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()).to_vec();
            for i in 0..8 {
                let flags = libc::O_TMPFILE | libc::O_RDWR;
                let open = OpenAt::new(libc::AT_FDCWD, dir.clone(), flags).unwrap();
                ring.submit(open, i).unwrap();
            }
            ring.wait(1, Some(Duration::from_millis(1))).unwrap();
            // A pool thread names itself once it runs: on a loaded machine that can take a
            // moment after the job was handed over.
            let start = std::time::Instant::now();
            while pool_threads() == 0 && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(
                pool_threads() > 0,
                "{kind}: the opens did not reach the pool"
            );
            drop(ring);
            let warned = warnings.0.load(Ordering::SeqCst);
            assert_eq!(
                warned, 0,
                "{kind} round {round}: the drop left pool jobs behind"
            );
            let now = fd_count();
            assert_eq!(
                now, fds,
                "{kind} round {round}: descriptors outlive the ring"
            );
        }
        eprintln!("PASS {kind}: 50 drops with pool jobs in flight, none left behind");
    }
}
