//! Stream reads fed by a multishot receive into the executor's buffer ring (io_uring's default;
//! see `net::Readiness`): bytes a read has no room for wait for the next read; a stream nobody
//! reads holds at most a couple of buffers (its receive is cancelled, TCP pushes back on its
//! sender) and others go on being fed; a ring that runs dry sends a read the readiness way; a
//! stream moved to another thread keeps every byte its old thread's feed received. Each test
//! runs on every read path (`common::on_every_backend` runs io_uring fed and not fed); the
//! properties hold on all of them, the feed's own counts only where reads are fed.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use oneloop_rt::net::{TcpListener, TcpStream, UnixStream};
use oneloop_rt::time::{sleep, timeout};

fn submitted(name: &str) -> u64 {
    let kind = oneloop::Op::NAMES.iter().position(|n| *n == name).unwrap();
    oneloop_rt::stats().unwrap().ring.submitted[kind]
}

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 251) as u8
}

const LONG: Duration = Duration::from_secs(20);

/// Reads `total` bytes with reads of at most `chunk`, checking each against the pattern.
async fn read_exactly(s: &UnixStream, total: usize, chunk: usize) {
    let mut got = 0;
    while got < total {
        let (res, buf) = timeout(LONG, s.read(Vec::with_capacity(chunk)))
            .await
            .expect("a read timed out");
        let n = res.expect("read");
        assert!(n > 0, "early end of stream at {got} of {total}");
        assert!(n <= chunk);
        for (i, &b) in buf.iter().enumerate() {
            assert_eq!(b, pattern(got + i), "byte {}", got + i);
        }
        got += n;
    }
}

/// Reads smaller than what arrived: the rest of a buffer waits for the next read, in order.
#[test]
fn small_reads_take_a_buffer_in_pieces() {
    common::on_every_backend("small reads of fed buffers", |_| async {
        let (a, b) = UnixStream::pair().unwrap();
        let total = 64 << 10;
        let writer = oneloop_rt::spawn(async move {
            let bytes: Vec<u8> = (0..total).map(pattern).collect();
            let (res, _) = a.write_all(bytes).await;
            res.unwrap();
            a
        });
        read_exactly(&b, total, 7).await;
        drop(writer.await);
        let (res, _) = b.read(Vec::with_capacity(8)).await;
        assert_eq!(res.unwrap(), 0, "end of stream after the writer closed");
    });
}

/// A stream nobody reads, whose peer sends much more than a few buffers: its receive is
/// cancelled at its bound, so it holds few of the ring's buffers and another stream is still
/// fed; read later, every byte is there, in order (TCP held the rest back).
#[test]
fn an_unread_stream_does_not_drain_the_ring() {
    common::on_every_backend("unread stream bounded", |_| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let total = 8 << 20; // 2,048 buffers' worth: more than the ring holds
        let sender = oneloop_rt::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let bytes: Vec<u8> = (0..total).map(pattern).collect();
            let (res, _) = s.write_all(bytes).await;
            res.unwrap();
        });
        let (quiet, _) = listener.accept().await.unwrap();
        // One read arms the feed; then nobody reads this stream for a while.
        let (res, first) = quiet.read(Vec::with_capacity(1)).await;
        assert_eq!(res.unwrap(), 1);
        assert_eq!(first[0], pattern(0));
        sleep(Duration::from_millis(100)).await;
        // Another connection is fed meanwhile — by one receive, from the ring's buffers, which
        // the quiet stream did not take (had it, the ring would be dry: each of these reads
        // would find its receive ended with ENOBUFS and submit another).
        let multis = submitted("RecvMulti");
        let (c, d) = UnixStream::pair().unwrap();
        for round in 0..50 {
            let (res, _) = c.write_all(vec![round as u8; 100]).await;
            res.unwrap();
            // In one read or two: an incrementally consumed buffer may end inside the 100.
            let mut got = 0;
            while got < 100 {
                let (res, buf) = timeout(LONG, d.read(Vec::with_capacity(100 - got)))
                    .await
                    .expect("another stream starved");
                got += res.unwrap();
                assert!(buf.iter().all(|&b| b == round as u8));
            }
            assert_eq!(got, 100);
        }
        if oneloop_rt::net::reads_fed() {
            let resubmitted = submitted("RecvMulti") - multis;
            assert!(
                resubmitted <= 2,
                "the ring ran dry: the other stream's receive was submitted {resubmitted} times"
            );
            // The quiet stream's feed ended at its bound: in flight are at most the other
            // stream's feed and the sender's send, waiting for room.
            let stats = oneloop_rt::stats().unwrap();
            assert!(
                stats.in_flight <= 2,
                "the quiet stream's receive was cancelled: {} in flight",
                stats.in_flight
            );
        }
        let mut got = 1;
        while got < total {
            let (res, buf) = timeout(LONG, quiet.read(Vec::with_capacity(64 << 10)))
                .await
                .expect("a read timed out");
            let n = res.unwrap();
            assert!(n > 0);
            for (i, &b) in buf.iter().enumerate() {
                assert_eq!(b, pattern(got + i), "byte {}", got + i);
            }
            got += n;
        }
        sender.await;
    });
}

/// A buffer ring of two tiny buffers shared by four streams: the feed runs dry again and
/// again (`ENOBUFS`) and those reads go the readiness way — every byte still arrives once, in
/// order, on every stream.
#[test]
fn a_dry_ring_loses_nothing() {
    let forced = oneloop::BackendKind::from_env().unwrap();
    if forced.is_some_and(|f| f != oneloop::BackendKind::Uring) {
        eprintln!("SKIP dry ring: ONELOOP_BACKEND selects another backend");
        return;
    }
    if !common::usable(oneloop::BackendKind::Uring, "dry ring") {
        return;
    }
    let rt = oneloop_rt::Runtime::builder()
        .backend(oneloop::BackendKind::Uring)
        .recv_buffers(Some((2, 16)))
        .build();
    rt.block_on(async {
        assert!(oneloop_rt::net::reads_fed());
        let total = 20_000;
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (a, b) = UnixStream::pair().unwrap();
            oneloop_rt::spawn(async move {
                let bytes: Vec<u8> = (0..total).map(pattern).collect();
                let (res, _) = a.write_all(bytes).await;
                res.unwrap();
            });
            readers.push(oneloop_rt::spawn(async move {
                read_exactly(&b, total, 4096).await
            }));
        }
        for r in readers {
            r.await;
        }
    })
    .unwrap();
    eprintln!("PASS uring dry ring");
}

/// A stream that was read on one thread (its feed received more than was read) moves to
/// another thread and is read there: the old thread's ring hands what its feed received over
/// (`Waker::hand_over`) — every byte arrives once, in order.
#[test]
fn a_stream_moved_after_reading_keeps_every_byte() {
    use std::sync::mpsc;
    for kind in oneloop::BackendKind::ALL {
        if !common::usable(kind, "moved fed stream") {
            continue;
        }
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let total = 256 << 10;
        let (to_b, from_a) = mpsc::channel::<UnixStream>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let a = std::thread::spawn(move || {
            let rt = oneloop_rt::Runtime::builder().backend(kind).build();
            rt.block_on(async move {
                let stream = UnixStream::from(std::os::fd::OwnedFd::from(ours));
                let mut peer = theirs;
                let bytes: Vec<u8> = (0..total).map(pattern).collect();
                let writer = std::thread::spawn(move || {
                    std::io::Write::write_all(&mut peer, &bytes).unwrap();
                    peer
                });
                // Read a little; the feed (io_uring) receives more meanwhile.
                read_exactly(&stream, 1000, 1000).await;
                sleep(Duration::from_millis(50)).await;
                to_b.send(stream).unwrap();
                // Keep turning, so this ring hands over what its feed received.
                while done_rx.try_recv().is_err() {
                    sleep(Duration::from_millis(2)).await;
                }
                drop(writer.join().unwrap());
            })
            .unwrap();
        });
        let stream = from_a.recv().unwrap();
        let b = std::thread::spawn(move || {
            let rt = oneloop_rt::Runtime::builder().backend(kind).build();
            rt.block_on(async move {
                let mut got = 1000;
                while got < total {
                    let (res, buf) = timeout(LONG, stream.read(Vec::with_capacity(8192)))
                        .await
                        .expect("a read on the new thread timed out");
                    let n = res.unwrap();
                    assert!(n > 0, "{kind}: early end at {got}");
                    for (i, &b) in buf.iter().enumerate() {
                        assert_eq!(b, pattern(got + i), "{kind}: byte {}", got + i);
                    }
                    got += n;
                }
            })
            .unwrap();
        });
        b.join().unwrap();
        done_tx.send(()).unwrap();
        a.join().unwrap();
        eprintln!("PASS {kind} moved fed stream");
    }
}

/// A buffer ring the ring refuses (here: 3 buffers, not a power of two; on a kernel before
/// 5.19, any) leaves reads unfed: the runtime starts, and reads go the readiness way.
#[test]
fn a_refused_buffer_ring_leaves_reads_unfed() {
    for kind in oneloop::BackendKind::ALL {
        if !common::usable(kind, "refused buffer ring") {
            continue;
        }
        let rt = oneloop_rt::Runtime::builder()
            .backend(kind)
            .recv_buffers(Some((3, 4096)))
            .build();
        rt.block_on(async {
            assert!(!oneloop_rt::net::reads_fed());
            let (a, b) = UnixStream::pair().unwrap();
            let (res, _) = a.write_all(b"hello".to_vec()).await;
            res.unwrap();
            let (res, buf) = b.read(Vec::with_capacity(8)).await;
            assert_eq!(res.unwrap(), 5);
            assert_eq!(buf, b"hello");
        })
        .unwrap();
        eprintln!("PASS {kind} refused buffer ring");
    }
}

/// Many request/response exchanges, each response two buffers long, over more streams than a
/// small buffer ring has buffers (the ring runs dry often, and every response reaches a
/// stream's bound): every exchange completes, none stalls.
#[test]
fn many_streams_on_a_small_ring_never_stall() {
    const CONNS: usize = 300;
    const ROUNDS: usize = 30;
    const RESPONSE: usize = 4300;
    let forced = oneloop::BackendKind::from_env().expect("ONELOOP_BACKEND");
    if forced.is_some_and(|f| f != oneloop::BackendKind::Uring && f != oneloop::BackendKind::Auto) {
        eprintln!("SKIP many streams on a small ring: reads are fed on io_uring only");
        return;
    }
    if !common::usable(oneloop::BackendKind::Uring, "many streams on a small ring") {
        return;
    }
    let rt = oneloop_rt::Runtime::builder()
        .backend(oneloop::BackendKind::Uring)
        .recv_buffers(Some((64, 4096)))
        .build();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = oneloop_rt::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..CONNS {
                let (s, _) = listener.accept().await.unwrap();
                tasks.push(oneloop_rt::spawn(async move {
                    let response: Vec<u8> = (0..RESPONSE).map(pattern).collect();
                    let mut response = Some(response);
                    loop {
                        let (res, _) = s.read(Vec::with_capacity(64)).await;
                        if res.unwrap() == 0 {
                            return;
                        }
                        let (res, back) = s.write_all(response.take().unwrap()).await;
                        res.unwrap();
                        response = Some(back);
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
        });
        let mut clients = Vec::new();
        for c in 0..CONNS {
            // One connection at a time: a burst of thousands would overflow the listen backlog.
            let s = TcpStream::connect(addr).await.unwrap();
            clients.push(oneloop_rt::spawn(async move {
                let mut buf = Vec::with_capacity(256 << 10);
                for round in 0..ROUNDS {
                    let (res, _) = s.write_all(b"GET\n".to_vec()).await;
                    res.unwrap();
                    let mut got = 0;
                    while got < RESPONSE {
                        buf.clear();
                        let (res, back) = timeout(LONG, s.read(buf))
                            .await
                            .unwrap_or_else(|_| panic!("conn {c} round {round}: stalled at {got}"));
                        buf = back;
                        let n = res.unwrap();
                        assert!(n > 0, "conn {c} round {round}: end of stream at {got}");
                        for (i, &b) in buf.iter().enumerate() {
                            assert_eq!(
                                b,
                                pattern(got + i),
                                "conn {c} round {round} byte {}",
                                got + i
                            );
                        }
                        got += n;
                    }
                    assert_eq!(got, RESPONSE);
                }
            }));
        }
        for c in clients {
            c.await;
        }
        server.await;
    })
    .unwrap();
    eprintln!("PASS uring many streams on a small ring");
}

/// A stream read directly (its feed running), then wrapped in `AsyncStream`: the adapter reads
/// through the same feed, so every byte comes once and in order — none taken by a receive of
/// its own while the feed still holds or receives others.
#[test]
fn async_stream_reads_through_the_feed() {
    use futures_io::AsyncRead;
    use oneloop_rt::io::AsyncStream;
    common::on_every_backend("AsyncStream after direct reads", |_| async {
        let (a, b) = UnixStream::pair().unwrap();
        let total = 256 << 10;
        let writer = oneloop_rt::spawn(async move {
            let bytes: Vec<u8> = (0..total).map(pattern).collect();
            let (res, _) = a.write_all(bytes[..100].to_vec()).await;
            res.unwrap();
            sleep(Duration::from_millis(20)).await;
            let (res, _) = a.write_all(bytes[100..].to_vec()).await;
            res.unwrap();
            a
        });
        // A direct read first: on io_uring it starts the stream's feed.
        read_exactly(&b, 10, 10).await;
        let mut io = AsyncStream::new(b);
        let mut got = 10;
        let mut chunk = vec![0u8; 3000];
        while got < total {
            let n = timeout(
                LONG,
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut io).poll_read(cx, &mut chunk)),
            )
            .await
            .expect("a read through the adapter timed out")
            .unwrap();
            assert!(n > 0, "early end of stream at {got} of {total}");
            for (i, &byte) in chunk[..n].iter().enumerate() {
                assert_eq!(byte, pattern(got + i), "byte {}", got + i);
            }
            got += n;
        }
        drop(writer.await);
    });
}
