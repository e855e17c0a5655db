//! Zero-copy sends (`SendZc`): one final completion per op, after the kernel let go of the
//! buffer (io_uring's notification), never a `MORE` one; the count sent (short when the
//! socket fills) with the bytes in order; cancel, deadline and a peer's reset each end it once
//! with the buffer back. On aio and epoll it is an ordinary send, under the same contract.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use oneloop::{CancelOutcome, FixedBuf, IoBuf, SendZc};

use crate::harness::*;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Sets a socket buffer size (`SO_SNDBUF`/`SO_RCVBUF`), which also stops the kernel growing it.
fn set_buf(fd: i32, opt: i32, bytes: i32) {
    // SAFETY: `bytes` is a valid int for the call's duration.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// A loopback pair whose buffers are small and fixed, and `sock`'s send path filled until it
/// takes not one byte more (the peer reads nothing): the pair and the bytes put.
fn full_pair() -> (TcpStream, TcpStream, usize) {
    let (sock, peer) = tcp_pair();
    set_buf(sock.as_raw_fd(), libc::SO_SNDBUF, 64 << 10);
    set_buf(peer.as_raw_fd(), libc::SO_RCVBUF, 64 << 10);
    sock.set_nonblocking(true).unwrap();
    let filler = vec![0xAA_u8; 1 << 16];
    let mut filled = 0;
    // Until the path stays full over three pauses: bytes in flight are taken by the peer's
    // side for a while after the first refusal. (Large writes only: tiny ones would make
    // the peer's side merge them later, which frees room again.)
    let mut quiet_rounds = 0;
    while quiet_rounds < 3 {
        let before = filled;
        loop {
            match (&sock).write(&filler) {
                Ok(n) if n > 0 => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                other => panic!("fill: {other:?}"),
            }
        }
        quiet_rounds = if filled == before {
            quiet_rounds + 1
        } else {
            0
        };
        std::thread::sleep(Duration::from_millis(20));
    }
    sock.set_nonblocking(false).unwrap();
    (sock, peer, filled)
}

/// Reads everything `peer` gets until the other side shuts down (10 s at most).
fn read_to_end(mut peer: TcpStream) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("read to the end");
        got
    })
}

/// Reads from `peer` until `n` bytes came (or 10 s passed).
fn read_n(peer: &mut TcpStream, n: usize) -> Vec<u8> {
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = vec![0u8; n];
    peer.read_exact(&mut got).expect("the peer gets every byte");
    got
}

/// Z1: a large zero-copy send while the peer reads: the count (all, or short) and the bytes
/// in order; one final completion, no `MORE`; the buffer comes back as it was. The rest is
/// sent by more ops until all arrived. A `FixedBuf` of the ring's pool sends the same way.
pub fn z1_send_zc_counts_bytes_once(h: &Harness) -> Outcome {
    let mut ring = h.builder().fixed_buffers(2, 64 << 10).build().unwrap();
    let (sock, mut peer) = tcp_pair();
    let data = pattern(4 << 20);
    let total = data.len();
    let reader = std::thread::spawn(move || read_n(&mut peer, total + 64 * 1024));
    let mut sent = 0;
    let mut buf = data.clone();
    while sent < total {
        let id = ring.submit(SendZc::new(sock.as_raw_fd(), buf), 1).unwrap();
        let (mores, mut c) = final_of(&mut ring, id);
        assert!(mores.is_empty(), "no MORE completion: {mores:?}");
        let n = *c.result().as_ref().expect("sent") as usize;
        assert!(n > 0 && sent + n <= total, "{n} of {}", total - sent);
        let back = c.take_buf().unwrap().into_vec().unwrap();
        assert_eq!(back, data[sent..], "the buffer comes back as it was");
        sent += n;
        buf = data[sent..].to_vec();
    }
    // A registered buffer.
    let pool = ring.fixed_buffers().unwrap().clone();
    let mut fixed = pool.take().unwrap();
    fixed.extend_from_slice(&pattern(64 << 10));
    let fixed_before = ring.stats().fixed_buffer_ops;
    let id = ring
        .submit(SendZc::new(sock.as_raw_fd(), fixed), 2)
        .unwrap();
    let (mores, mut c) = final_of(&mut ring, id);
    assert!(mores.is_empty());
    let n = *c.result().as_ref().unwrap() as usize;
    let fixed = FixedBuf::from_buf(c.take_buf().unwrap()).unwrap();
    let named = u64::from(h.kind == oneloop::BackendKind::Uring && pool.registered().is_ok());
    assert_eq!(
        ring.stats().fixed_buffer_ops - fixed_before,
        named,
        "named by index where the pool is registered"
    );
    let mut rest_sent = n;
    while rest_sent < fixed.len() {
        let rest = fixed.as_slice()[rest_sent..].to_vec();
        let id = ring.submit(SendZc::new(sock.as_raw_fd(), rest), 3).unwrap();
        rest_sent += *final_of(&mut ring, id).1.result().as_ref().unwrap() as usize;
    }
    let got = reader.join().unwrap();
    assert!(got[..total] == data[..], "the bytes in order");
    // io_uring sent them zero-copy (TCP can); the others the ordinary way.
    let zc = ring.stats().zero_copy_sends;
    match h.kind {
        oneloop::BackendKind::Uring => assert!(zc >= 2, "{zc} zero-copy sends"),
        _ => assert_eq!(zc, 0),
    }
    // A Unix socket cannot: the op sends the ordinary way, the same bytes.
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let id = ring
        .submit(SendZc::new(a.as_raw_fd(), b"unix".to_vec()), 4)
        .unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert_eq!(c.result().as_ref().unwrap(), &4, "{c:?}");
    let mut four = [0u8; 4];
    b.read_exact(&mut four).unwrap();
    assert_eq!(&four, b"unix");
    assert_eq!(ring.stats().zero_copy_sends, zc, "not zero-copy");
    assert!(
        got[total..] == pattern(64 << 10)[..],
        "the fixed buffer's bytes"
    );
    assert_eq!(ring.in_flight(), 0);
    Outcome::Pass
}

/// Z2: a zero-copy send to a full socket waits; a cancel ends it once — `Cancelled` with
/// `ECANCELED` and the buffer back, or `TooLate` with the count the peer then receives; a
/// deadline ends another with `TimedOut` (or, if bytes went first, with their count, once the
/// kernel let go of them: the peer reads meanwhile). The peer gets exactly the bytes counted.
pub fn z2_send_zc_cancel_and_deadline(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (sock, peer, filled) = full_pair();
    let data = pattern(1 << 20);
    let id = ring
        .submit(SendZc::new(sock.as_raw_fd(), data.clone()), 7)
        .unwrap();
    assert!(
        quiet(&mut ring, Duration::from_millis(50)).is_empty(),
        "a full socket: it waits"
    );
    let answer = ring.cancel(id).unwrap();
    let reader = read_to_end(peer);
    let (mores, mut c) = final_of(&mut ring, id);
    assert!(mores.is_empty());
    let counted = match (answer, c.result()) {
        (CancelOutcome::Cancelled, Err(_)) if c.is_cancelled() => 0,
        (CancelOutcome::TooLate, Ok(n)) => *n as usize,
        other => panic!("cancel answered {:?}, the op ended {c:?}", other.0),
    };
    assert_eq!(
        c.take_buf().unwrap().into_vec().unwrap(),
        data,
        "the buffer back"
    );

    let id = ring
        .submit(
            SendZc::new(sock.as_raw_fd(), data.clone()).deadline(Duration::from_millis(1)),
            8,
        )
        .unwrap();
    let (mores, mut c) = final_of(&mut ring, id);
    assert!(mores.is_empty());
    let late = match c.result() {
        Ok(n) => *n as usize,
        Err(_) => {
            assert!(c.is_timed_out(), "{c:?}");
            0
        }
    };
    assert_eq!(
        c.take_buf().unwrap().into_vec().unwrap(),
        data,
        "the buffer back"
    );
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(
        got.len(),
        filled + counted + late,
        "exactly the bytes counted"
    );
    assert!(got[filled..filled + counted] == data[..counted]);
    assert!(got[filled + counted..] == data[..late]);
    assert!(
        quiet(&mut ring, Duration::from_millis(30)).is_empty(),
        "nothing more"
    );
    Outcome::Pass
}

/// Z3: a peer that resets the connection (`SO_LINGER` 0) ends a waiting zero-copy send
/// once, with `ECONNRESET` or `EPIPE` (or the count of bytes that went just before), and a
/// later one at once with the error; the buffer back each time.
pub fn z3_send_zc_peer_reset(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (sock, peer, _) = full_pair();
    let data = pattern(256 << 10);
    let id = ring
        .submit(SendZc::new(sock.as_raw_fd(), data.clone()), 1)
        .unwrap();
    assert!(quiet(&mut ring, Duration::from_millis(30)).is_empty());
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid `struct linger` for the call's duration.
    let rc = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(peer);
    let start = Instant::now();
    let (mores, mut c) = final_of(&mut ring, id);
    assert!(mores.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));
    let reset = |c: &oneloop::Completion| matches!(errno(c), Some(libc::ECONNRESET | libc::EPIPE));
    // Reset while it waited; or some bytes went just before (their count stands).
    assert!(
        reset(&c) || c.result().as_ref().is_ok_and(|&n| n > 0),
        "{c:?}"
    );
    assert_eq!(c.take_buf().unwrap().into_vec().unwrap(), data);
    let id = ring
        .submit(SendZc::new(sock.as_raw_fd(), data.clone()), 2)
        .unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert!(reset(&c), "{c:?}");
    Outcome::Pass
}

/// Z4: a ring dropped while a zero-copy send's bytes wait for a peer that reads nothing (its
/// result in, the kernel's notification not): the drop does not wait for the peer; the
/// buffer stays with the kernel (leaked, never freed under it); a cancel of such a send
/// answers at once from its result.
pub fn z4_send_zc_drop_and_cancel_while_bytes_wait(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (sock, peer) = tcp_pair();
    set_buf(sock.as_raw_fd(), libc::SO_SNDBUF, 64 << 10);
    set_buf(peer.as_raw_fd(), libc::SO_RCVBUF, 64 << 10);
    // More than the path holds: part goes, the rest stays unsent until the peer reads.
    let id = ring
        .submit(SendZc::new(sock.as_raw_fd(), pattern(4 << 20)), 1)
        .unwrap();
    ring.wait(0, Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    let answer = ring.cancel(id).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the cancel did not wait for the peer"
    );
    note(&format!("  cancel of a send whose bytes wait: {answer:?}"));
    ring.submit(SendZc::new(sock.as_raw_fd(), pattern(1 << 20)), 2)
        .unwrap();
    ring.wait(0, Some(Duration::from_millis(20))).unwrap();
    let start = Instant::now();
    drop(ring);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the drop waited {:?} for the peer",
        start.elapsed()
    );
    drop(peer);
    Outcome::Pass
}
