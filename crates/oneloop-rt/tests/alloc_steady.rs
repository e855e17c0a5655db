//! No heap allocation per round trip in steady state, through the runtime as servers use it:
//! two tasks echo 64-byte messages over a socket pair — each read bounded by a `timeout` (a
//! ring timer armed and cancelled per read, as `oneloop serve` does), each write a
//! `write_all` — with the buffers handed back and reused. A counting allocator counts every
//! allocation this thread makes while the measured round trips run, on every backend.
//!
//! One test in this binary, so nothing else allocates on the counted thread.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use oneloop_rt::net::UnixStream;
use oneloop_rt::time::timeout;

#[path = "../../oneloop/tests/support/counting.rs"]
mod counting;

const WARM_UP: usize = 500;
const MEASURED: usize = 2_000;
const MESSAGE: usize = 64;
const LONG: Duration = Duration::from_secs(60);

/// Reads exactly `MESSAGE` bytes into `buf` (cleared first), each read within [`LONG`].
async fn read_message(s: &UnixStream, mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    while buf.len() < MESSAGE {
        let (res, back) = timeout(LONG, s.read(buf)).await.expect("a read timed out");
        buf = back;
        assert!(res.expect("read") > 0, "the peer closed");
    }
    buf
}

#[test]
fn no_allocation_per_round_trip_in_steady_state() {
    common::on_every_backend("no allocation per round trip", |kind| async move {
        let (client, server) = UnixStream::pair().expect("a socket pair");
        let echo = oneloop_rt::spawn(async move {
            let mut buf = Vec::with_capacity(MESSAGE);
            for _ in 0..WARM_UP + MEASURED {
                buf = read_message(&server, buf).await;
                let (res, back) = server.write_all(buf).await;
                res.expect("echo");
                buf = back;
            }
        });
        let mut buf = Vec::with_capacity(MESSAGE);
        let mut counted = 0;
        for i in 0..WARM_UP + MEASURED {
            if i == WARM_UP {
                counting::start();
            }
            buf.clear();
            buf.extend_from_slice(&[i as u8; MESSAGE]);
            let (res, back) = client.write_all(buf).await;
            res.expect("send");
            buf = read_message(&client, back).await;
            assert_eq!(buf, [i as u8; MESSAGE], "{kind}: the echo differs");
            counted += 1;
        }
        let allocations = counting::stop();
        echo.await;
        assert_eq!(counted, MEASURED + WARM_UP);
        assert_eq!(
            allocations, 0,
            "{kind}: {allocations} allocations in {MEASURED} round trips"
        );
    });
}
