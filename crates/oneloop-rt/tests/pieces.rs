//! The runtime pieces users reach for, on every backend: split streams used by two tasks,
//! signals as a stream, `spawn_blocking`, `JoinSet`, and `select`/`join` from the `futures`
//! crates (a losing branch is dropped, which cancels its op).
//!
//! The signal test raises signals to its own thread only (thread-directed), so the test
//! harness's other threads never see them.
#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use futures_util::future::{self, Either};
use futures_util::StreamExt;
use oneloop_rt::net::{TcpListener, TcpStream};
use oneloop_rt::time::sleep;

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connect = oneloop_rt::spawn(async move { TcpStream::connect(addr).await });
    let (server, _) = listener.accept().await.unwrap();
    (server, connect.await.unwrap())
}

#[test]
fn split_halves_serve_two_tasks() {
    common::on_every_backend("into_split", |_| async {
        let (server, client) = pair().await;
        let (reader, writer) = server.into_split();
        // One task reads and counts; the other writes a greeting, then shuts its side.
        let counter = oneloop_rt::spawn(async move {
            let mut total = 0;
            loop {
                let (res, _) = reader.read(Vec::with_capacity(4096)).await;
                match res.unwrap() {
                    0 => return total,
                    n => total += n,
                }
            }
        });
        let greeter = oneloop_rt::spawn(async move {
            let (res, _) = writer.write_all(b"hello".to_vec()).await;
            res.unwrap();
            writer.shutdown().unwrap();
        });
        let (res, _) = client.write_all(vec![7u8; 100_000]).await;
        res.unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        greeter.await;
        let mut got = Vec::new();
        loop {
            let (res, buf) = client.read(Vec::with_capacity(64)).await;
            if res.unwrap() == 0 {
                break;
            }
            got.extend_from_slice(&buf);
        }
        assert_eq!(got, b"hello");
        assert_eq!(counter.await, 100_000);
    });
}

#[test]
fn signals_arrive_as_a_stream() {
    common::on_every_backend("signals", |_| {
        let mut signals =
            oneloop_rt::signal::Signals::new(&[libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        async move {
            // SAFETY: raising signals this thread blocks only makes them pending here.
            #[allow(unsafe_code)]
            unsafe {
                libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2);
            }
            assert_eq!(signals.next().await.unwrap().unwrap(), libc::SIGUSR2);
            // Nothing pending: the wait is on the ring, and a later signal ends it.
            let waiter = async { signals.recv().await.unwrap() };
            let raiser = async {
                sleep(Duration::from_millis(20)).await;
                // SAFETY: as above.
                #[allow(unsafe_code)]
                unsafe {
                    libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1);
                }
            };
            let (got, ()) = future::join(waiter, raiser).await;
            assert_eq!(got, libc::SIGUSR1);
        }
    });
}

#[test]
fn spawn_blocking_runs_off_the_loop_and_returns() {
    common::on_every_backend("spawn_blocking", |_| async {
        let loop_thread = std::thread::current().id();
        let start = Instant::now();
        // Two 100 ms sleeps at once, and the loop's own timer meanwhile.
        let a = oneloop_rt::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::thread::current().id()
        });
        let b = oneloop_rt::spawn_blocking(|| {
            std::thread::sleep(Duration::from_millis(100));
            6 * 7
        });
        let ticked = async {
            sleep(Duration::from_millis(10)).await;
            start.elapsed()
        };
        let (worker, answer, ticked) = future::join3(a, b, ticked).await;
        assert_ne!(worker, loop_thread, "ran on the loop's thread");
        assert_eq!(answer, 42);
        assert!(
            ticked < Duration::from_millis(90),
            "the loop was held: {ticked:?}"
        );
        assert!(
            start.elapsed() < Duration::from_millis(190),
            "the jobs ran one by one"
        );
        // A panic in the job comes back to the awaiting task.
        use futures_util::FutureExt;
        let job = oneloop_rt::spawn_blocking(|| -> u8 { panic!("in the pool") });
        let caught = std::panic::AssertUnwindSafe(job).catch_unwind().await;
        assert!(caught.is_err(), "the panic was lost");
    });
}

#[test]
fn join_set_takes_outputs_as_they_finish_and_aborts_on_drop() {
    common::on_every_backend("JoinSet", |_| async {
        let (server, client) = pair().await;
        let server = std::rc::Rc::new(server);
        let mut set = oneloop_rt::JoinSet::new();
        let reader = std::rc::Rc::clone(&server);
        // A task blocked on a read that never gets data: aborted when the set is dropped.
        set.spawn(async move {
            let (res, _) = reader.read(Vec::with_capacity(8)).await;
            res.map(|_| "read").unwrap_or("error")
        });
        set.spawn(async {
            sleep(Duration::from_millis(5)).await;
            "slept"
        });
        assert_eq!(set.join_next().await, Some("slept"));
        assert_eq!(set.len(), 1);
        drop(set);
        // The aborted read was cancelled: bytes sent now reach a new read.
        let (res, _) = client.write_all(b"late".to_vec()).await;
        res.unwrap();
        let (res, buf) = server.read(Vec::with_capacity(8)).await;
        assert_eq!((res.unwrap(), buf.as_slice()), (4, &b"late"[..]));
    });
}

#[test]
fn select_drops_the_loser_and_cancels_its_op() {
    common::on_every_backend("futures select", |_| async {
        let (server, client) = pair().await;
        // Boxed, so that dropping the loser drops the future itself (a `pin!`ned one would
        // live on, its read still in flight, until the end of the scope).
        let read = Box::pin(server.read(Vec::with_capacity(16)));
        let timer = Box::pin(sleep(Duration::from_millis(20)));
        match future::select(read, timer).await {
            Either::Left(_) => panic!("nothing was sent"),
            Either::Right(((), read)) => drop(read), // the read is cancelled here
        }
        let (res, _) = client.write_all(b"after".to_vec()).await;
        res.unwrap();
        let (res, buf) = server.read(Vec::with_capacity(16)).await;
        assert_eq!((res.unwrap(), buf.as_slice()), (5, &b"after"[..]));
    });
}

/// Two jobs pushed in a row each get a thread, even when one idle thread was about to take
/// the first: here the first waits for the second, which would deadlock on one thread.
#[test]
fn spawn_blocking_gives_each_pending_job_a_thread() {
    common::on_every_backend("spawn_blocking threads", |_| async {
        // Leave one pool thread idle.
        oneloop_rt::spawn_blocking(|| ()).await;
        let (tx, rx) = std::sync::mpsc::channel::<u8>();
        let a = oneloop_rt::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)).is_ok());
        let b = oneloop_rt::spawn_blocking(move || tx.send(1).is_ok());
        let (received, sent) = future::join(a, b).await;
        assert!(
            sent && received,
            "the waiting job never heard from the other"
        );
    });
}

/// An op future that outlives its runtime (taken out of `block_on` still pending) and is
/// dropped under a later runtime on the same thread leaves that runtime's ops alone.
#[test]
fn a_future_from_an_ended_runtime_does_not_touch_the_next() {
    use std::future::Future;
    use std::pin::Pin;
    let forced = oneloop::BackendKind::from_env().unwrap();
    for kind in oneloop::BackendKind::ALL {
        if matches!(forced, Some(f) if f != kind && f != oneloop::BackendKind::Auto) {
            continue;
        }
        if oneloop::Ring::builder()
            .backend(kind)
            .entries(4)
            .build()
            .is_err()
        {
            eprintln!("SKIP {kind}: backend unavailable");
            continue;
        }
        let rt = oneloop_rt::Runtime::builder().backend(kind).build();
        // Runtime 1: start a read that never completes, and take its future out.
        type Pending = Pin<Box<dyn Future<Output = ()>>>;
        let (stale, _peer): (Pending, _) = rt
            .block_on(async {
                let (stream, peer) = oneloop_rt::net::UnixStream::pair().unwrap();
                let mut read: Pending = Box::pin(async move {
                    let _ = stream.read(Vec::with_capacity(8)).await;
                });
                std::future::poll_fn(|cx| {
                    assert!(read.as_mut().poll(cx).is_pending());
                    std::task::Poll::Ready(())
                })
                .await;
                (read, peer)
            })
            .unwrap();
        // Runtime 2: a read in the same table slot; dropping the stale future meanwhile
        // must not cancel it.
        let got = rt
            .block_on(async move {
                let (stream, b_peer) = oneloop_rt::net::UnixStream::pair().unwrap();
                let read = oneloop_rt::spawn(async move {
                    let (res, buf) = stream.read(Vec::with_capacity(8)).await;
                    res.map(|n| buf[..n].to_vec())
                });
                // Let the read task submit (into slot 0, where the stale one was) without
                // an op of our own: yield once.
                let mut yielded = false;
                std::future::poll_fn(|cx| {
                    if yielded {
                        return std::task::Poll::Ready(());
                    }
                    yielded = true;
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                })
                .await;
                drop(stale);
                let (res, _) = b_peer.write_all(b"ok".to_vec()).await;
                res.unwrap();
                oneloop_rt::time::timeout(Duration::from_secs(10), read).await
            })
            .unwrap();
        let got =
            got.unwrap_or_else(|_| panic!("{kind}: the read was cancelled by a stale future"));
        assert_eq!(got.unwrap(), b"ok", "{kind}");
        eprintln!("PASS {kind}: a stale future left the next runtime alone");
    }
}

/// How many ops of kind `name` this thread's ring has been handed so far.
fn submitted(name: &str) -> u64 {
    let kind = oneloop::Op::NAMES.iter().position(|n| *n == name).unwrap();
    oneloop_rt::stats().unwrap().ring.submitted[kind]
}

/// A stream tries each transfer straight from the future first. A send the socket refuses goes
/// to the ring; a read that finds the socket empty parks on the stream's watch — one multishot
/// poll armed at the first such read and kept — and never submits a receive. Every byte
/// arrives once, in order, and the watch ends with the stream.
#[test]
fn transfers_tried_first_or_waiting_on_the_watch_keep_every_byte() {
    common::on_every_backend("stream fast path", |_| async {
        const TOTAL: usize = 4 << 20;
        let (a, b) = oneloop_rt::net::UnixStream::pair().unwrap();
        let pattern = |i: usize| (i * 7 + i / 251) as u8;
        let before = (
            submitted("Send"),
            submitted("Recv"),
            submitted("Poll"),
            submitted("RecvMulti"),
        );
        // The writer runs first and fills the socket (a Unix socket holds a few hundred KiB),
        // so some of its sends must wait in the ring, and the reader finds it empty at times.
        let writer = oneloop_rt::spawn(async move {
            for chunk in (0..TOTAL).step_by(256 << 10) {
                let bytes: Vec<u8> = (chunk..chunk + (256 << 10)).map(pattern).collect();
                let (res, _) = a.write_all(bytes).await;
                res.unwrap();
            }
        });
        let mut got = 0;
        while got < TOTAL {
            let (res, buf) = b.read(Vec::with_capacity(64 << 10)).await;
            let n = res.unwrap();
            assert!(n > 0, "early end of stream at {got}");
            for (i, &byte) in buf.iter().enumerate() {
                assert_eq!(byte, pattern(got + i), "byte {}", got + i);
            }
            got += n;
        }
        writer.await;
        let (sends, recvs, polls, multis) = (
            submitted("Send") - before.0,
            submitted("Recv") - before.1,
            submitted("Poll") - before.2,
            submitted("RecvMulti") - before.3,
        );
        assert!(sends > 0, "a full socket sends through the ring");
        assert_eq!(
            recvs, 0,
            "a read waits on the watch or the feed, not with a receive of its own"
        );
        if oneloop_rt::net::reads_fed() {
            assert_eq!(polls, 0, "fed reads need no watch");
            assert!(multis >= 1, "the feed is a multishot receive");
        } else {
            assert_eq!(polls, 1, "the watch is armed once and kept");
            assert_eq!(multis, 0);
        }
        assert!(
            in_flight() <= 1,
            "the watch or the feed runs while the stream lives"
        );
        drop(b);
        // Its cancel may take a turn of the ring (io_uring answers in the next wait).
        for _ in 0..1000 {
            if in_flight() == 0 {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(in_flight(), 0, "the watch (or feed) ends with its stream");
    });
}

/// Two tasks read one stream at once: one parks on the watch, the other waits with a receive
/// of its own through the ring — neither misses its wake-up, and every byte reaches one of them.
#[test]
fn two_reads_of_one_stream_at_once_both_finish() {
    common::on_every_backend("parallel reads", |_| async {
        let (a, b) = oneloop_rt::net::UnixStream::pair().unwrap();
        let b = std::rc::Rc::new(b);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let b = std::rc::Rc::clone(&b);
                oneloop_rt::spawn(async move {
                    let (res, buf) = b.read(Vec::with_capacity(1)).await;
                    assert_eq!(res.unwrap(), 1);
                    buf[0]
                })
            })
            .collect();
        // Both readers are parked (the socket is empty) before any byte is sent.
        sleep(Duration::from_millis(20)).await;
        for byte in [1u8, 2] {
            let (res, _) = a.write_all(vec![byte]).await;
            res.unwrap();
            sleep(Duration::from_millis(5)).await;
        }
        let mut got = Vec::new();
        for reader in readers {
            let read = oneloop_rt::time::timeout(Duration::from_secs(10), reader).await;
            got.push(read.expect("a parallel read missed its wake-up"));
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

fn in_flight() -> usize {
    oneloop_rt::stats().unwrap().in_flight
}

/// A stream whose read armed its watch on one thread's runtime, then moved to another thread
/// and dropped there: the first ring is told to end the watch, so the socket really closes (on
/// io_uring the watch's poll would otherwise hold it open) and the peer reads end of stream.
#[test]
fn a_stream_moved_to_another_thread_closes_when_dropped_there() {
    use std::os::fd::OwnedFd;
    use std::sync::mpsc;

    for kind in oneloop::BackendKind::ALL {
        if !common::usable(kind, "moved stream") {
            continue;
        }
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (to_b, from_a) = mpsc::channel::<oneloop_rt::net::UnixStream>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let rt = oneloop_rt::Runtime::builder().backend(kind).build();
        let a = std::thread::spawn(move || {
            rt.block_on(async move {
                let stream = oneloop_rt::net::UnixStream::from(OwnedFd::from(ours));
                // Nothing to read: the read arms the stream's watch, then gives up.
                let read = stream.read(Vec::with_capacity(8));
                let timed_out = oneloop_rt::time::timeout(Duration::from_millis(20), read).await;
                assert!(timed_out.is_err(), "{kind}: nothing was sent");
                to_b.send(stream).unwrap();
                // This runtime keeps turning (its ring must apply what the other thread posts).
                while done_rx.try_recv().is_err() {
                    sleep(Duration::from_millis(5)).await;
                }
            })
            .unwrap();
        });
        let stream = from_a.recv().unwrap();
        let b = std::thread::spawn(move || {
            let rt = oneloop_rt::Runtime::builder().backend(kind).build();
            rt.block_on(async move { drop(stream) }).unwrap();
        });
        b.join().unwrap();
        let got = common::read_once(&mut peer);
        done_tx.send(()).unwrap();
        a.join().unwrap();
        assert_eq!(
            got,
            Ok(0),
            "{kind}: the peer reads end of stream once the moved stream is dropped"
        );
        eprintln!("PASS {kind} moved stream");
    }
}

/// Spawns `park(stream)` detached on each backend, lets it park, and returns from `block_on`:
/// the task must be dropped with the runtime, so that the stream's peer reads end of stream.
fn stream_closes_at_teardown<F, Fut>(name: &str, park: F)
where
    F: Fn(oneloop_rt::net::UnixStream) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    use std::os::fd::OwnedFd;

    for kind in oneloop::BackendKind::ALL {
        if !common::usable(kind, name) {
            continue;
        }
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let rt = oneloop_rt::Runtime::builder().backend(kind).build();
        rt.block_on(async {
            let stream = oneloop_rt::net::UnixStream::from(OwnedFd::from(ours));
            drop(oneloop_rt::spawn(park(stream)));
            // The task runs, and parks.
            sleep(Duration::from_millis(20)).await;
        })
        .unwrap();
        let got = common::read_once(&mut peer);
        assert_eq!(
            got,
            Ok(0),
            "{kind} {name}: the parked task's stream is closed once the runtime is gone"
        );
        eprintln!("PASS {kind} {name}");
    }
}

/// A detached task still parked on a read when `block_on` returns is dropped with the runtime:
/// its stream closes (the peer reads end of stream), nothing keeps it alive.
#[test]
fn a_task_parked_on_a_read_is_dropped_at_teardown() {
    stream_closes_at_teardown("teardown", |stream| async move {
        // Finds nothing, and parks on its stream's watch.
        let _ = stream.read(Vec::with_capacity(8)).await;
    });
}

/// A detached task parked on a waker only it can reach (a wait list it holds itself, as a
/// gate's or channel's waiters are) is dropped with the runtime too: its stream closes.
/// Without the executor's own list of its tasks, the cycle — task, wait list, waker, task —
/// would keep the task, and its socket, alive for the life of the process.
#[test]
fn a_task_parked_on_its_own_wait_list_is_dropped_at_teardown() {
    use std::cell::RefCell;
    use std::rc::Rc;

    stream_closes_at_teardown("teardown of a self-parked task", |stream| async move {
        let _stream = stream;
        let waiters: Rc<RefCell<Vec<std::task::Waker>>> = Rc::default();
        let held = Rc::clone(&waiters);
        std::future::poll_fn(move |cx| {
            held.borrow_mut().push(cx.waker().clone());
            std::task::Poll::<()>::Pending
        })
        .await;
        drop(waiters);
    });
}
