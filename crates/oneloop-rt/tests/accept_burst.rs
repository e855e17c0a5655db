//! A listener under a burst of connections, as a server at thousands of connections sees it:
//! a client thread keeps making connections (blocking `connect`s, so it waits whenever the
//! listen queue is full) while the server accepts each and parks a task reading it. Every
//! connection must be accepted: a lost wake-up on the listener leaves its queue full and the
//! client stalled, which the test reports instead of hanging (the client gives up after 20 s).
#![allow(missing_docs)]

mod common;

use std::net::TcpStream as StdStream;
use std::time::{Duration, Instant};

use oneloop_rt::net::TcpListener;

/// Connections made, within what the descriptor limit leaves (each one is two descriptors
/// here: the client's end and the server's).
fn conns() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    3000.min(soft.saturating_sub(200) / 2)
}

#[test]
fn every_connection_of_a_burst_is_accepted() {
    let conns = conns();
    if conns < 500 {
        eprintln!("SKIP accept burst: the descriptor limit leaves room for {conns} connections");
        return;
    }
    common::on_every_backend("accept burst", |kind| async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let start = Instant::now();
            let mut kept = Vec::with_capacity(conns);
            for _ in 0..conns {
                if start.elapsed() > Duration::from_secs(20) {
                    break;
                }
                kept.push(StdStream::connect(addr).unwrap());
            }
            (kept.len(), start.elapsed(), kept)
        });
        let mut readers = Vec::with_capacity(conns);
        let deadline = Duration::from_secs(30);
        while readers.len() < conns {
            let accepted = oneloop_rt::time::timeout(deadline, listener.accept()).await;
            let Ok(accepted) = accepted else {
                panic!(
                    "{kind}: no connection came for {deadline:?} after {} were accepted",
                    readers.len()
                );
            };
            let (stream, _) = accepted.unwrap();
            readers.push(oneloop_rt::spawn(async move {
                let read = stream.read(Vec::with_capacity(16));
                let (res, _) = oneloop_rt::time::timeout(Duration::from_secs(60), read)
                    .await
                    .expect("within a minute");
                res.unwrap()
            }));
        }
        let (made, took, kept) = client.join().unwrap();
        assert_eq!(
            made, conns,
            "{kind}: the client stalled after {made} connections ({took:?})"
        );
        drop(kept);
        for r in readers {
            assert_eq!(r.await, 0, "{kind}: each connection ends without data");
        }
    });
}
