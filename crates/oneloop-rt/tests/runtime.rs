//! The runtime on every backend: tasks, time, files, TCP.
#![allow(missing_docs)]

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::on_every_backend;
use oneloop_rt::fs::{File, OpenOptions};
use oneloop_rt::net::{TcpListener, TcpStream};
use oneloop_rt::time::{sleep, timeout, Elapsed};

#[test]
fn tasks_spawn_join_and_abort() {
    on_every_backend("tasks_spawn_join_and_abort", |_| async {
        // !Send state shared by tasks on one thread.
        let counter = Rc::new(Cell::new(0));
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let counter = Rc::clone(&counter);
                oneloop_rt::spawn(async move {
                    sleep(Duration::from_millis(i)).await;
                    counter.set(counter.get() + 1);
                    i * 2
                })
            })
            .collect();
        let mut sum = 0;
        for h in handles {
            sum += h.await;
        }
        assert_eq!((sum, counter.get()), (90, 10));

        let flag = Rc::new(Cell::new(false));
        let f = Rc::clone(&flag);
        let long = oneloop_rt::spawn(async move {
            sleep(Duration::from_secs(3600)).await;
            f.set(true);
        });
        sleep(Duration::from_millis(5)).await;
        assert!(!long.is_finished());
        long.abort();
        sleep(Duration::from_millis(5)).await;
        assert!(!flag.get(), "an aborted task never resumes");
    });
}

#[test]
fn sleep_and_timeout() {
    on_every_backend("sleep_and_timeout", |_| async {
        let start = Instant::now();
        sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(
            timeout(Duration::from_millis(10), sleep(Duration::from_secs(3600))).await,
            Err(Elapsed)
        );
        assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
        let until = Instant::now() + Duration::from_millis(10);
        oneloop_rt::time::sleep_until(until).await;
        assert!(Instant::now() >= until);
    });
}

#[test]
fn files_round_trip() {
    on_every_backend("files_round_trip", |kind| async move {
        let path =
            std::env::temp_dir().join(format!("oneloop-rt-files-{}-{kind}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (res, back) = file.write_all_at(data.clone(), 0).await;
        res.unwrap();
        assert_eq!(back, data, "the buffer comes back");
        file.sync_data().await.unwrap();
        let (res, got) = file.read_exact_at(Vec::with_capacity(data.len()), 0).await;
        res.unwrap();
        assert_eq!(got, data);
        let (res, _) = file.read_exact_at(Vec::with_capacity(10), 99_995).await;
        assert_eq!(res.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        let (res, _) = file
            .writev_at(vec![b"ab".to_vec(), b"cd".to_vec()], 0)
            .await;
        assert_eq!(res.unwrap(), 4);
        let (res, bufs) = file
            .readv_at(vec![Vec::with_capacity(1), Vec::with_capacity(3)], 0)
            .await;
        assert_eq!(res.unwrap(), 4);
        assert_eq!(bufs, [b"a".to_vec(), b"bcd".to_vec()]);
        file.sync_all().await.unwrap();
        file.close().await.unwrap();
        let missing = File::open(path.with_extension("missing"))
            .await
            .unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_file(&path).unwrap();
    });
}

#[test]
fn tcp_echo_between_tasks() {
    on_every_backend("tcp_echo_between_tasks", |_| async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = oneloop_rt::spawn(async move {
            for _ in 0..10 {
                let (stream, _) = listener.accept().await.unwrap();
                oneloop_rt::spawn(async move {
                    let mut buf = Vec::with_capacity(64);
                    loop {
                        buf.clear();
                        let (res, b) = stream.read(buf).await;
                        buf = b;
                        match res.unwrap() {
                            0 => break,
                            _ => {
                                let (res, b) = stream.write_all(buf).await;
                                res.unwrap();
                                buf = b;
                            }
                        }
                    }
                })
                .await;
            }
        });
        let clients: Vec<_> = (0..10u8)
            .map(|c| {
                oneloop_rt::spawn(async move {
                    let stream = TcpStream::connect(addr).await.unwrap();
                    for m in 0..10u8 {
                        let msg = vec![c, m, 42];
                        let (res, _) = stream.write_all(msg.clone()).await;
                        res.unwrap();
                        let (res, got) = stream.read(Vec::with_capacity(64)).await;
                        assert_eq!(res.unwrap(), 3);
                        assert_eq!(got, msg);
                    }
                    stream.shutdown(std::net::Shutdown::Write).unwrap();
                })
            })
            .collect();
        for c in clients {
            c.await;
        }
        server.await;
    });
}

#[test]
fn a_wake_from_another_thread_reaches_a_blocked_executor() {
    on_every_backend("a_wake_from_another_thread", |_| async {
        let slot: std::sync::Arc<std::sync::Mutex<(bool, Option<std::task::Waker>)>> =
            Default::default();
        let remote = std::sync::Arc::clone(&slot);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let mut s = remote.lock().unwrap();
            s.0 = true;
            if let Some(w) = s.1.take() {
                w.wake();
            }
        });
        let start = Instant::now();
        std::future::poll_fn(|cx| {
            let mut s = slot.lock().unwrap();
            if s.0 {
                std::task::Poll::Ready(())
            } else {
                s.1 = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await;
        assert!(start.elapsed() < Duration::from_secs(30));
        t.join().unwrap();
    });
}

#[test]
fn unix_streams_udp_streams_and_epoll_sets() {
    use futures_core::Stream;
    use oneloop_rt::net::{UdpSocket, UnixListener, UnixStream};
    use std::os::fd::AsRawFd;
    on_every_backend("unix_udp_readiness_interval_epoll", |kind| async move {
        // Unix stream through a listener.
        let path =
            std::env::temp_dir().join(format!("oneloop-rt-unix-{}-{kind}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let client = UnixStream::connect(&path).unwrap();
        let server = listener.accept().await.unwrap();
        let (res, _) = client.write_all(b"over unix".to_vec()).await;
        res.unwrap();
        let (res, got) = server.read(Vec::with_capacity(32)).await;
        assert_eq!((res.unwrap(), got.as_slice()), (9, &b"over unix"[..]));
        std::fs::remove_file(&path).unwrap();

        // UDP both ways.
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (res, _) = a
            .send_to(b"datagram".to_vec(), b.local_addr().unwrap())
            .await;
        assert_eq!(res.unwrap(), 8);
        let (res, got) = b.recv_from(Vec::with_capacity(64)).await;
        let (n, from) = res.unwrap();
        assert_eq!(
            (n, from, got.as_slice()),
            (8, a.local_addr().unwrap(), &b"datagram"[..])
        );

        // A multishot readiness stream: one item per write.
        let (x, y) = UnixStream::pair().unwrap();
        let mut events = oneloop_rt::poll::readiness(&x, oneloop::PollMask::IN);
        for i in 0..3u8 {
            let (res, _) = y.write_all(vec![i]).await;
            res.unwrap();
            let item =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut events).poll_next(cx)).await;
            assert!(item.unwrap().unwrap().contains(oneloop::PollMask::IN));
        }
        drop(events);

        // An interval ticks a period apart.
        let mut every = oneloop_rt::time::interval(Duration::from_millis(3));
        let t0 = every.tick().await;
        let t1 = every.tick().await;
        assert!(t1 - t0 >= Duration::from_millis(3));

        // An epoll set awaited beside the rest.
        let set = oneloop_rt::epoll::EpollSet::new().unwrap();
        set.add(x.as_raw_fd(), libc::EPOLLIN as u32, 99).unwrap();
        let (n, evs) = set.wait(oneloop::EpollEvents::with_capacity(4)).await;
        assert_eq!(n.unwrap(), 1, "x still has unread bytes");
        assert_eq!(evs.iter().next().unwrap().1, 99);
    });
}

#[test]
fn one_executor_per_thread_sharing_a_port() {
    use oneloop::BackendKind;
    let forced = BackendKind::from_env().unwrap();
    for kind in BackendKind::ALL {
        if matches!(forced, Some(f) if f != kind && f != BackendKind::Auto)
            || oneloop::Ring::builder()
                .backend(kind)
                .entries(4)
                .build()
                .is_err()
        {
            continue;
        }
        // Reserve a port, then let two executor threads listen on it with SO_REUSEPORT.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let rt = oneloop_rt::Runtime::builder()
            .backend(kind)
            .threads(2)
            .pin_to_cores(true)
            .build();
        let client = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            oneloop_rt::Runtime::builder()
                .backend(kind)
                .build()
                .block_on(async move {
                    // Enough connections that both listeners get some (the kernel hashes them).
                    let mut served = std::collections::HashSet::new();
                    for _ in 0..64 {
                        // Retry while the listeners are still starting up.
                        let mut tries = 0;
                        let s = loop {
                            match TcpStream::connect(addr).await {
                                Ok(s) => break s,
                                Err(e) if tries < 100 => {
                                    tries += 1;
                                    eprintln!("connect: {e}; retrying");
                                    sleep(Duration::from_millis(20)).await;
                                }
                                Err(e) => panic!("connect: {e}"),
                            }
                        };
                        let (res, got) = s.read(Vec::with_capacity(8)).await;
                        res.unwrap();
                        served.insert(got[0]);
                        if served.len() == 2 {
                            break;
                        }
                    }
                    served
                })
        });
        let counts = rt
            .run(move |i| async move {
                let listener = TcpListener::bind_reuse_port(addr).unwrap();
                // Each thread answers with its index until the client is done (it stops
                // connecting once both answered).
                let mut answered = 0;
                while let Ok(Ok((s, _))) =
                    timeout(Duration::from_millis(800), listener.accept()).await
                {
                    let (res, _) = s.write_all(vec![i as u8]).await;
                    res.unwrap();
                    answered += 1;
                }
                answered
            })
            .unwrap();
        let served = client.join().unwrap().unwrap();
        assert_eq!(
            served.len(),
            2,
            "{kind}: both threads accepted on the shared port ({counts:?})"
        );
        eprintln!("PASS {kind} one_executor_per_thread: accepts per thread {counts:?}");
    }
}

#[test]
fn futures_io_adapters_read_and_write() {
    use futures_io::{AsyncRead, AsyncWrite};
    use oneloop_rt::io::AsyncStream;
    use oneloop_rt::net::UnixStream;
    use std::pin::Pin;
    on_every_backend("futures_io_adapters", |_| async {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = AsyncStream::new(a);
        let mut b = AsyncStream::new(b);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
        let expected = payload.clone();
        let writer = oneloop_rt::spawn(async move {
            let mut sent = 0;
            while sent < payload.len() {
                let n =
                    std::future::poll_fn(|cx| Pin::new(&mut a).poll_write(cx, &payload[sent..]))
                        .await
                        .unwrap();
                sent += n;
            }
            std::future::poll_fn(|cx| Pin::new(&mut a).poll_close(cx))
                .await
                .unwrap();
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 1000];
        loop {
            let n = std::future::poll_fn(|cx| Pin::new(&mut b).poll_read(cx, &mut chunk))
                .await
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await;
        assert_eq!(got, expected, "every byte through the adapters, in order");
    });
}

/// A task whose every op finishes at once (writes to a socket with room; on epoll and aio they
/// end inside `submit`) still lets the other tasks run: past its op budget it yields. Without
/// the budget the writer below yields only at its own sleep, after 100 writes, and the check
/// fails. (On uring no op ends inside `submit`: every write yields, and the check holds.)
#[test]
fn a_task_whose_ops_finish_at_once_yields() {
    on_every_backend("a_task_whose_ops_finish_at_once_yields", |_| async {
        use oneloop_rt::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        let stop = Rc::new(Cell::new(false));
        let writes = Rc::new(Cell::new(0u64));
        let (s, w) = (Rc::clone(&stop), Rc::clone(&writes));
        let writer = oneloop_rt::spawn(async move {
            let mut buf = vec![0u8; 1];
            while !s.get() {
                let (res, back) = a.write(buf).await;
                res.expect("write");
                buf = back;
                w.set(w.get() + 1);
                // A yield of its own every 100 writes (well before the socket fills: its peer
                // never reads, and a write that waits would yield and prove nothing).
                if w.get() % 100 == 0 {
                    oneloop_rt::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let s = Rc::clone(&stop);
        let flag = oneloop_rt::spawn(async move { s.set(true) });
        flag.await;
        writer.await;
        assert!(
            writes.get() < 100,
            "the writer ran {} ops before the other task got the thread",
            writes.get()
        );
        drop(b);
    });
}

/// An op future that outlives its runtime (its ring cancelled and drained the op at shutdown)
/// and is dropped under a new runtime on the same thread touches nothing there, although the
/// new ring's slots restart their generations: its op's id is the old ring's.
#[test]
#[allow(clippy::async_yields_async)] // the future is handed out of its runtime on purpose
fn an_op_future_outliving_its_runtime_is_dropped_harmlessly_under_a_new_one() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    for kind in oneloop::BackendKind::ALL {
        if oneloop::Ring::builder().backend(kind).build().is_err() {
            eprintln!("SKIP {kind}: backend unavailable here");
            continue;
        }
        let rt = oneloop_rt::Runtime::builder().backend(kind).build();
        // A receive that never completes, polled once (so its op is in flight), kept.
        let old: Pin<Box<dyn Future<Output = usize>>> = rt
            .block_on(async {
                let (a, b) = oneloop_rt::net::UnixStream::pair().unwrap();
                let mut fut: Pin<Box<dyn Future<Output = usize>>> = Box::pin(async move {
                    let _peer = b;
                    a.read(Vec::with_capacity(8)).await.0.unwrap()
                });
                std::future::poll_fn(|cx| {
                    assert!(fut.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                fut
            })
            .unwrap();
        let got = rt
            .block_on(async move {
                // The new ring's first op takes the slot (and generation) the old op had.
                let timer = oneloop_rt::spawn(async {
                    sleep(Duration::from_millis(20)).await;
                    7
                });
                oneloop_rt::time::sleep(Duration::from_millis(1)).await;
                drop(old);
                timer.await
            })
            .unwrap();
        assert_eq!(got, 7, "{kind}: the new runtime's op ran untouched");
    }
}
