//! Cancellation by drop, on every backend, 128 rounds each: a read dropped before its
//! completion, after its completion was reaped but before the task polled again, and while
//! it runs on the blocking pool; an `accept` and an `open` dropped mid-flight. Afterwards the
//! process's descriptor count and the count of live read buffers are back at their baseline.
//!
//! One test in this binary, so nothing else opens descriptors or allocates counted buffers.
#![allow(missing_docs)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use oneloop::CURRENT_POSITION;
use oneloop_rt::fs::File;
use oneloop_rt::net::{TcpListener, TcpStream};
use oneloop_rt::time::{sleep, timeout};

/// Read buffers in these tests have exactly this capacity; nothing else allocates it.
const TRACKED: usize = 4093;
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: defers every call to `System`, only counting on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == TRACKED {
            LIVE.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == TRACKED {
            LIVE.fetch_sub(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUNDS: usize = 128;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn pipe() -> (File, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (File::from(OwnedFd::from(r)), OwnedFd::from(w))
}

/// Lets orphaned completions arrive and be dropped.
async fn settle() {
    sleep(Duration::from_millis(20)).await;
}

async fn read_dropped_before_completion() {
    let (rd, _wr) = pipe();
    for _ in 0..ROUNDS {
        let r = timeout(
            Duration::from_micros(50),
            rd.read_at(Vec::with_capacity(TRACKED), CURRENT_POSITION),
        )
        .await;
        assert!(r.is_err(), "nothing was written: the read must time out");
    }
}

async fn read_dropped_after_completion_before_poll() {
    let (rd, wr) = pipe();
    for _ in 0..ROUNDS {
        let mut read = std::pin::pin!(rd.read_at(Vec::with_capacity(TRACKED), CURRENT_POSITION));
        // Poll once: the read is submitted.
        std::future::poll_fn(|cx| {
            assert!(read.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        std::io::Write::write_all(&mut std::fs::File::from(wr.try_clone().unwrap()), b"x").unwrap();
        // The executor reaps the completion meanwhile; the read future is never polled again.
        sleep(Duration::from_millis(1)).await;
    }
}

async fn read_dropped_on_the_pool(kind: oneloop::BackendKind) {
    let path = std::env::temp_dir().join(format!("oneloop-rt-cold-{}-{kind}", std::process::id()));
    std::fs::write(&path, vec![5u8; 1 << 20]).unwrap();
    let file = File::open(&path).await.unwrap();
    for round in 0..ROUNDS {
        // Evict the pages so the read misses the cache (the pool, on epoll and aio).
        // SAFETY: no pointers; the descriptor is open.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let pos = (round as u64 * 4096) % (1 << 20);
        let read = file.read_at(Vec::with_capacity(TRACKED), pos);
        let _ = timeout(Duration::from_micros(1), read).await;
    }
    settle().await;
    drop(file);
    std::fs::remove_file(&path).unwrap();
}

async fn accept_dropped_mid_flight() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for round in 0..ROUNDS {
        // A client connects while the accept may be timing out: either the accept wins (and
        // the stream is dropped here) or the connection arrives for a dropped accept.
        let client = oneloop_rt::spawn(async move { TcpStream::connect(addr).await });
        let wait = Duration::from_micros(20 * (round as u64 % 8));
        let accepted = timeout(wait, listener.accept()).await;
        drop(accepted);
        let client = client.await.unwrap();
        drop(client);
    }
    settle().await;
    // Drain any connection the kernel queued for an accept that was cancelled in time.
    while let Ok(Ok(pair)) = timeout(Duration::from_millis(5), listener.accept()).await {
        drop(pair);
    }
}

async fn open_dropped_mid_flight(kind: oneloop::BackendKind) {
    let path = std::env::temp_dir().join(format!("oneloop-rt-open-{}-{kind}", std::process::id()));
    std::fs::write(&path, b"x").unwrap();
    for round in 0..ROUNDS {
        let wait = Duration::from_micros(5 * (round as u64 % 8));
        let _ = timeout(wait, File::open(&path)).await;
    }
    settle().await;
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn dropped_futures_leak_nothing() {
    common::on_every_backend("dropped_futures_leak_nothing", |kind| async move {
        settle().await;
        let (fds, live) = (fd_count(), LIVE.load(Ordering::SeqCst));
        read_dropped_before_completion().await;
        read_dropped_after_completion_before_poll().await;
        read_dropped_on_the_pool(kind).await;
        accept_dropped_mid_flight().await;
        open_dropped_mid_flight(kind).await;
        settle().await;
        assert_eq!(
            LIVE.load(Ordering::SeqCst),
            live,
            "{kind}: read buffers not freed"
        );
        assert_eq!(fd_count(), fds, "{kind}: descriptors leaked");
    });
}
