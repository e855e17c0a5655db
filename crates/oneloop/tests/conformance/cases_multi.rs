//! Case 31 (wave 3): buffer rings and multishot `RecvMulti`, `ReadMulti`, `AcceptMulti` — the
//! same completions on every backend (io_uring's kernel ops, the emulation elsewhere).
//! `MORE` completions carry output: a lease on the buffer that holds the bytes, or the
//! accepted socket (contract point 2, as amended).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use oneloop::{
    AcceptMulti, BufRing, CancelOutcome, Completion, Lease, OpId, Output, ReadMulti, RecvMulti,
    Ring,
};

use crate::harness::*;

const LONG: Duration = Duration::from_secs(10);

/// Distinct bytes, so that a misplaced or repeated range shows.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + seed + i / 251) as u8).collect()
}

/// The lease a completion carries (panics if it carries something else).
fn lease_of(c: Completion) -> Lease {
    match c.into_output() {
        Output::Lease(l) => l,
        other => panic!("expected a lease, got {other:?}"),
    }
}

/// Waits for op `id`'s completions until `want` bytes arrived in `MORE` completions (their
/// leases kept, in order), or its final completion came; returns both.
fn receive(ring: &mut Ring, id: OpId, want: usize) -> (Vec<Lease>, Option<Completion>) {
    let start = Instant::now();
    let (mut leases, mut got) = (Vec::new(), 0);
    while got < want {
        assert!(
            start.elapsed() < LONG,
            "received {got} of {want} bytes in 10 s"
        );
        ring.wait(1, Some(Duration::from_millis(100))).unwrap();
        while let Some(c) = ring.next_completion() {
            assert_eq!(c.id(), id, "a completion of another op: {c:?}");
            if !c.is_more() {
                return (leases, Some(c));
            }
            let n = *c.result().as_ref().expect("a MORE completion is a success") as usize;
            let lease = lease_of(c);
            assert_eq!(lease.len(), n, "the result is the lease's length");
            assert!(n > 0, "a MORE receive moved bytes");
            got += n;
            leases.push(lease);
        }
    }
    (leases, None)
}

fn concat(leases: &[Lease]) -> Vec<u8> {
    leases.iter().flat_map(|l| l.iter().copied()).collect()
}

/// Several sends arrive as `MORE` completions, each with a lease holding the bytes in order;
/// the peer's close ends the op with `Ok(0)`; nothing follows the final completion.
pub fn m1_recv_multi_stream_and_end(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    if h.emulate_multishot {
        assert!(
            !ring.kernel_multishot(),
            "the switch emulates multishot ops"
        );
    }
    let bufs = ring.buf_ring(16, 4096).unwrap();
    let (ours, mut peer) = tcp_pair();
    let id = ring
        .submit(RecvMulti::new(ours.as_raw_fd(), &bufs), 5)
        .unwrap();
    let mut sent = Vec::new();
    let mut leases = Vec::new();
    for round in 0..5 {
        let chunk = pattern(3000 + round * 500, round);
        peer.write_all(&chunk).unwrap();
        sent.extend_from_slice(&chunk);
        let (got, end) = receive(&mut ring, id, chunk.len());
        assert!(end.is_none(), "ended early: {end:?}");
        // Leases given back as they go: a ring of 16 never runs dry.
        leases.push(concat(&got));
    }
    assert_eq!(
        leases.concat(),
        sent,
        "bytes in order, none lost or repeated"
    );
    drop(peer);
    let (rest, end) = receive(&mut ring, id, usize::MAX);
    assert!(rest.is_empty(), "no bytes after the end: {rest:?}");
    let end = end.expect("a final completion");
    assert_eq!(end.result().as_ref().unwrap(), &0, "end of stream is Ok(0)");
    assert_eq!(end.user_data(), 5);
    assert!(quiet(&mut ring, Duration::from_millis(50)).is_empty());
    Outcome::Pass
}

/// With every buffer lent out, data that arrives ends the op with `ENOBUFS`, and the bytes
/// stay in the socket: nothing is lost. Giving the leases back (one on another thread) and
/// submitting again goes on where it stopped.
pub fn m2_recv_multi_empty_ring_enobufs(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let bufs = ring.buf_ring(2, 16).unwrap();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    let sent = pattern(100, 3);
    peer.write_all(&sent).unwrap();
    let mut got = Vec::new();
    let mut dry = 0;
    let start = Instant::now();
    while got.len() < sent.len() {
        assert!(start.elapsed() < LONG, "received {} of 100", got.len());
        let id = ring.submit(RecvMulti::new(fd, &bufs), 1).unwrap();
        let (held, end) = receive(&mut ring, id, sent.len() - got.len());
        got.extend_from_slice(&concat(&held));
        match end {
            Some(end) => {
                assert_eq!(errno(&end), Some(libc::ENOBUFS), "{end:?}");
                assert_eq!(held.len(), 2, "ends only with both buffers lent: {held:?}");
                dry += 1;
            }
            None => {
                ring.cancel(id).unwrap();
                let (late, _) = final_of(&mut ring, id);
                assert!(late.is_empty(), "no data was left: {late:?}");
            }
        }
        let mut held = held.into_iter();
        if let Some(first) = held.next() {
            std::thread::spawn(move || drop(first)).join().unwrap();
        }
    }
    assert_eq!(got, sent, "every byte, in order, across each ENOBUFS");
    assert!(
        dry >= 3,
        "100 bytes in 16-byte buffers, two at a time: ran dry {dry} times"
    );
    Outcome::Pass
}

/// Cancel ends the op with `ECANCELED` (or, if a result raced it, the op's own end); leases
/// delivered before stay valid — after the cancel, and after the ring itself is dropped.
pub fn m3_cancel_leases_outlive_op_and_ring(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let bufs = ring.buf_ring(4, 4096).unwrap();
    let (ours, mut peer) = tcp_pair();
    let id = ring
        .submit(RecvMulti::new(ours.as_raw_fd(), &bufs), 1)
        .unwrap();
    let sent = pattern(1000, 9);
    peer.write_all(&sent).unwrap();
    let (held, end) = receive(&mut ring, id, sent.len());
    assert!(end.is_none());
    let outcome = ring.cancel(id).unwrap();
    assert_eq!(
        outcome,
        CancelOutcome::Cancelled,
        "a waiting receive is cancellable"
    );
    let (_, end) = final_of(&mut ring, id);
    assert!(end.is_cancelled(), "{end:?}");
    assert_eq!(concat(&held), sent, "leases intact after the cancel");
    drop(bufs);
    drop(ring);
    assert_eq!(concat(&held), sent, "leases intact after the ring is gone");
    // Given back after the ring: nothing to do but free the memory (no crash, no leak shows).
    std::thread::spawn(move || drop(held)).join().unwrap();
    Outcome::Pass
}

/// A ring of one buffer: the second message waits in the socket until the lease is dropped
/// (on another thread) and the op submitted again — so a buffer given back is used again.
/// Each message fills the buffer, so an incrementally consumed one is given up whole too.
pub fn m4_buffer_given_back_is_reused(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let bufs = ring.buf_ring(1, 64).unwrap();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    for round in 0..20 {
        let id = ring.submit(RecvMulti::new(fd, &bufs), round).unwrap();
        let msg = pattern(64, round as usize);
        peer.write_all(&msg).unwrap();
        let (mut got, end) = receive(&mut ring, id, msg.len());
        let lease = got.pop().unwrap();
        assert_eq!(&lease[..], &msg[..]);
        assert_eq!(lease.buffer_id(), 0);
        let end = match end {
            // With its one buffer lent the op may already have ended dry (data and the end
            // of the stream count as waiting).
            Some(end) => end,
            // Cancel before giving back, so the next round's op starts from a known state.
            None => {
                ring.cancel(id).unwrap();
                final_of(&mut ring, id).1
            }
        };
        assert!(
            end.is_cancelled() || errno(&end) == Some(libc::ENOBUFS),
            "{end:?}"
        );
        std::thread::spawn(move || drop(lease)).join().unwrap();
    }
    Outcome::Pass
}

/// `AcceptMulti`: one op, a `MORE` completion with a new socket per connection (the one the
/// client made), cancel ends it with `ECANCELED`.
pub fn m5_accept_multi(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let id = ring
        .submit(AcceptMulti::new(listener.as_raw_fd()), 3)
        .unwrap();
    let mut clients = Vec::new();
    let mut accepted = Vec::new();
    let start = Instant::now();
    for _ in 0..5 {
        clients.push(TcpStream::connect(addr).unwrap());
    }
    while accepted.len() < 5 {
        assert!(start.elapsed() < LONG, "accepted {} of 5", accepted.len());
        ring.wait(1, Some(Duration::from_millis(100))).unwrap();
        for c in ring.completions() {
            assert!(c.is_more(), "ended early: {c:?}");
            let n = *c.result().as_ref().unwrap();
            let Output::Fd(fd) = c.into_output() else {
                panic!("an accept hands a socket")
            };
            assert_eq!(fd.as_raw_fd() as u32, n);
            accepted.push(TcpStream::from(fd));
        }
    }
    let mut peers: Vec<_> = accepted.iter().map(|s| s.peer_addr().unwrap()).collect();
    let mut locals: Vec<_> = clients.iter().map(|s| s.local_addr().unwrap()).collect();
    peers.sort();
    locals.sort();
    assert_eq!(peers, locals, "each accepted socket is one client's");
    // The sockets work.
    accepted[0].write_all(b"hi").unwrap();
    let mut two = [0u8; 2];
    let i = locals
        .iter()
        .position(|a| *a == accepted[0].peer_addr().unwrap())
        .unwrap();
    let client = clients
        .iter_mut()
        .find(|c| c.local_addr().unwrap() == locals[i])
        .unwrap();
    client.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"hi");
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    let (mores, end) = final_of(&mut ring, id);
    assert!(mores.is_empty());
    assert!(end.is_cancelled(), "{end:?}");
    Outcome::Pass
}

/// `ReadMulti` on a pipe, plain and registered (`register_fd`): writes arrive as leases, the
/// writer's close ends it with `Ok(0)`; a regular file is refused with `EBADFD`.
pub fn m6_read_multi_pipe_and_file(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let bufs = ring.buf_ring(8, 1024).unwrap();
    for registered in [false, true] {
        let (r, w) = pipe();
        if registered {
            ring.register_fd(r.as_raw_fd()).unwrap();
        }
        let id = ring
            .submit(ReadMulti::new(r.as_raw_fd(), &bufs), 4)
            .unwrap();
        for round in 0..4 {
            let chunk = pattern(700, round);
            write_fd(w.as_raw_fd(), &chunk);
            let (got, end) = receive(&mut ring, id, chunk.len());
            assert!(end.is_none(), "registered {registered}: {end:?}");
            assert_eq!(concat(&got), chunk, "registered {registered}");
        }
        drop(w);
        let (rest, end) = receive(&mut ring, id, usize::MAX);
        assert!(rest.is_empty());
        assert_eq!(end.expect("final").result().as_ref().unwrap(), &0);
        if registered {
            ring.unregister_fd(r.as_raw_fd());
        }
    }
    let file = TempFile::new("readmulti", b"abc");
    let id = ring.submit(ReadMulti::new(file.fd(), &bufs), 5).unwrap();
    let (mores, end) = final_of(&mut ring, id);
    assert!(mores.is_empty());
    assert_eq!(errno(&end), Some(libc::EBADFD), "{end:?}");
    Outcome::Pass
}

/// Bad input: a buffer ring of another ring is refused at submit (`InvalidInput`); sizes that
/// are not a power of two, zero, or too many, are refused when the ring is made.
pub fn m7_buf_ring_bad_input(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let mut other = h.ring();
    let theirs: BufRing = other.buf_ring(4, 64).unwrap();
    let (ours, _peer) = tcp_pair();
    let err = ring
        .submit(RecvMulti::new(ours.as_raw_fd(), &theirs), 0)
        .expect_err("another ring's buffers");
    assert_eq!(err.error().kind(), std::io::ErrorKind::InvalidInput);
    for (count, size) in [(3, 64), (0, 64), (4, 0), (65_536, 64)] {
        let e = ring.buf_ring(count, size).expect_err("bad sizes");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "{count} × {size}"
        );
    }
    Outcome::Pass
}

/// Dropping a ring with a multishot receive in flight and leases out: the drop cancels and
/// drains the op, the leases stay readable, and no descriptor is left behind.
pub fn m8_drop_ring_with_multishot_in_flight(h: &Harness) -> Outcome {
    let (ours, mut peer) = tcp_pair();
    let before = fd_count();
    let mut ring = h.ring();
    let bufs = ring.buf_ring(8, 512).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    ring.submit(AcceptMulti::new(listener.as_raw_fd()), 1)
        .unwrap();
    let id = ring
        .submit(RecvMulti::new(ours.as_raw_fd(), &bufs), 2)
        .unwrap();
    let sent = pattern(300, 1);
    peer.write_all(&sent).unwrap();
    let (held, end) = receive(&mut ring, id, sent.len());
    assert!(end.is_none());
    drop(ring);
    drop(listener);
    assert_eq!(concat(&held), sent);
    drop(held);
    drop(bufs);
    assert_eq!(
        fd_count(),
        before,
        "the ring's descriptors are gone, none leaked"
    );
    // The socket still works after the ring let go of it.
    peer.write_all(b"after").unwrap();
    let mut five = [0u8; 5];
    (&ours).read_exact(&mut five).unwrap();
    assert_eq!(&five, b"after");
    Outcome::Pass
}

/// Incremental consumption (io_uring, 6.12): receives take pieces of one buffer — each lease
/// its own bytes at its own offset — and the buffer returns to the ring only when the kernel
/// has filled it and every piece is dropped (the last on another thread). Where buffers are
/// taken whole (the other backends, or the switch off), each receive takes a buffer of its own.
pub fn m9_incremental_pieces_share_a_buffer(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let bufs = ring.buf_ring(1, 256).unwrap();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    let expect_incremental =
        h.kind == oneloop::BackendKind::Uring && h.incremental && ring.kernel_multishot();
    if bufs.incremental() != expect_incremental {
        // Only a kernel before 6.12 registers whole buffers when asked for pieces.
        assert!(
            expect_incremental,
            "buffers are consumed incrementally only on io_uring, when asked: {bufs:?}"
        );
        return Outcome::Skip("this kernel has no incremental consumption (6.12+)".into());
    }
    let id = ring.submit(RecvMulti::new(fd, &bufs), 1).unwrap();
    let (a, b) = (pattern(100, 1), pattern(100, 2));
    peer.write_all(&a).unwrap();
    let (mut first, end) = receive(&mut ring, id, a.len());
    let first = first.remove(0);
    assert_eq!(&first[..], &a[..]);
    assert_eq!(first.offset(), 0);
    peer.write_all(&b).unwrap();
    if !bufs.incremental() {
        // The one buffer is lent whole: the op ends dry (it may have already, had the
        // second bytes come by then), the bytes wait in the socket.
        let end = match end {
            Some(end) => end,
            None => {
                let (none, end) = receive(&mut ring, id, b.len());
                assert!(none.is_empty(), "{none:?}");
                end.expect("ended")
            }
        };
        assert_eq!(errno(&end), Some(libc::ENOBUFS));
        drop(first);
        let id = ring.submit(RecvMulti::new(fd, &bufs), 2).unwrap();
        let (got, _) = receive(&mut ring, id, b.len());
        assert_eq!(concat(&got), b);
        return Outcome::Pass;
    }
    assert!(end.is_none(), "a piece leaves room: {end:?}");
    let (mut second, end) = receive(&mut ring, id, b.len());
    assert!(end.is_none(), "{end:?}");
    let second = second.remove(0);
    assert_eq!(
        &second[..],
        &b[..],
        "the second piece holds the second bytes"
    );
    assert_eq!((second.buffer_id(), second.offset()), (0, 100));
    assert_eq!(
        &first[..],
        &a[..],
        "the first piece is untouched by the second"
    );
    // 56 bytes fill the buffer (the kernel gives it up); the other 44 find the ring empty.
    let c = pattern(100, 3);
    peer.write_all(&c).unwrap();
    let (mut third, end) = receive(&mut ring, id, 56);
    let third = third.remove(0);
    assert_eq!((third.offset(), third.len()), (200, 56));
    assert_eq!(&third[..], &c[..56]);
    let end = match end {
        Some(end) => end,
        None => final_of(&mut ring, id).1,
    };
    assert_eq!(errno(&end), Some(libc::ENOBUFS), "{end:?}");
    // Two pieces dropped: the third still holds the buffer, so the ring stays empty.
    drop((first, second));
    let id = ring.submit(RecvMulti::new(fd, &bufs), 3).unwrap();
    let (none, end) = receive(&mut ring, id, 44);
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(errno(&end.expect("ended")), Some(libc::ENOBUFS));
    // The last piece, dropped on another thread, brings the buffer back, whole.
    std::thread::spawn(move || drop(third)).join().unwrap();
    let id = ring.submit(RecvMulti::new(fd, &bufs), 4).unwrap();
    let (got, end) = receive(&mut ring, id, 44);
    assert!(end.is_none(), "{end:?}");
    assert_eq!(concat(&got), &c[56..]);
    assert_eq!(
        got[0].offset(),
        0,
        "a returned buffer is filled from its start"
    );
    Outcome::Pass
}

/// 24 connections share a ring of 8 small buffers, their bytes arriving interleaved in
/// messages of many sizes (incrementally consumed buffers hold pieces of several
/// connections): each connection's bytes arrive in order, none lost, none another's. Leases
/// are dropped as read; an op that ends dry is submitted again.
pub fn m10_many_streams_share_one_ring(h: &Harness) -> Outcome {
    const CONNS: usize = 24;
    let mut ring = h.ring();
    let bufs = ring.buf_ring(8, 512).unwrap();
    let pairs: Vec<_> = (0..CONNS).map(|_| tcp_pair()).collect();
    let mut ids = Vec::new();
    for (i, (ours, _)) in pairs.iter().enumerate() {
        ids.push(
            ring.submit(RecvMulti::new(ours.as_raw_fd(), &bufs), i as u64)
                .unwrap(),
        );
    }
    let mut sent = vec![Vec::new(); CONNS];
    let mut got = vec![Vec::new(); CONNS];
    let start = Instant::now();
    for round in 0..40 {
        for (i, (_, peer)) in pairs.iter().enumerate() {
            let msg = pattern(1 + (round * 37 + i * 11) % 300, i * 1000 + round);
            (&*peer).write_all(&msg).unwrap();
            sent[i].extend_from_slice(&msg);
        }
        while got.iter().zip(&sent).any(|(g, s)| g.len() < s.len()) {
            assert!(start.elapsed() < LONG, "stalled at round {round}");
            ring.wait(1, Some(Duration::from_millis(100))).unwrap();
            while let Some(c) = ring.next_completion() {
                let i = c.user_data() as usize;
                assert_eq!(c.id(), ids[i]);
                if c.is_more() {
                    got[i].extend_from_slice(&lease_of(c));
                    continue;
                }
                assert_eq!(errno(&c), Some(libc::ENOBUFS), "conn {i}: {c:?}");
                let fd = pairs[i].0.as_raw_fd();
                ids[i] = ring.submit(RecvMulti::new(fd, &bufs), i as u64).unwrap();
            }
        }
    }
    assert_eq!(got, sent, "each connection's bytes, in order");
    Outcome::Pass
}

/// Bytes already queued when a receive starts, more than one buffer holds: on io_uring with
/// bundles (6.10) the kernel fills several buffers in one go; here each still arrives as a
/// completion of its own, no lease longer than its buffer, every byte in order. Then more
/// than the whole ring, so receives end dry and start again while buffers come back (some
/// on another thread) in another order than they went out.
pub fn m11_bundles_span_buffers(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let bundles = h.kind == oneloop::BackendKind::Uring && h.bundles && ring.kernel_multishot();
    let kernel_has = || {
        oneloop::probe::probe().backends.iter().any(|b| {
            b.features
                .iter()
                .any(|f| f.name == "RECVSEND_BUNDLE" && f.available)
        })
    };
    assert_eq!(
        ring.describe().contains("receive bundles"),
        bundles && kernel_has(),
        "bundles are used exactly where asked for and the kernel has them: {}",
        ring.describe()
    );
    let bufs = ring.buf_ring(8, 1024).unwrap();
    let (ours, mut peer) = tcp_pair();
    let fd = ours.as_raw_fd();
    let first = pattern(6000, 4);
    peer.write_all(&first).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let id = ring.submit(RecvMulti::new(fd, &bufs), 1).unwrap();
    let (held, end) = receive(&mut ring, id, first.len());
    assert!(end.is_none(), "{end:?}");
    assert!(
        held.len() >= 6,
        "6,000 bytes in 1,024-byte buffers: {} leases",
        held.len()
    );
    for l in &held {
        assert!(l.len() <= l.capacity() && l.len() <= 1024, "{l:?}");
    }
    assert_eq!(concat(&held), first);
    // Given back out of order, half of them on another thread.
    let mut held = held;
    held.reverse();
    let other: Vec<Lease> = held.drain(..held.len() / 2).collect();
    std::thread::spawn(move || drop(other)).join().unwrap();
    drop(held);
    let more = pattern(40_000, 5);
    let writer = {
        let mut peer = peer.try_clone().unwrap();
        let more = more.clone();
        std::thread::spawn(move || peer.write_all(&more).unwrap())
    };
    let mut got = Vec::new();
    let mut id = id;
    let start = Instant::now();
    while got.len() < more.len() {
        assert!(start.elapsed() < LONG, "received {} of 40,000", got.len());
        ring.wait(1, Some(Duration::from_millis(100))).unwrap();
        while let Some(c) = ring.next_completion() {
            assert_eq!(c.id(), id);
            if c.is_more() {
                let lease = lease_of(c);
                assert!(lease.len() <= 1024);
                got.extend_from_slice(&lease);
                continue;
            }
            assert_eq!(errno(&c), Some(libc::ENOBUFS), "{c:?}");
            id = ring.submit(RecvMulti::new(fd, &bufs), 1).unwrap();
        }
    }
    writer.join().unwrap();
    assert_eq!(got, more, "every byte in order across buffers coming back");
    drop(peer);
    Outcome::Pass
}

/// A receive submitted while the ring is empty waits like any other (nothing comes while no
/// data does), and ends with `ENOBUFS` only when data arrives — on every backend (io_uring's
/// kernel ends it at once, and the ring waits for data with a poll instead).
pub fn m12_empty_ring_waits_for_data(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let bufs = ring.buf_ring(1, 64).unwrap();
    let (a, mut peer_a) = tcp_pair();
    let (b, mut peer_b) = tcp_pair();
    let first = ring
        .submit(RecvMulti::new(a.as_raw_fd(), &bufs), 1)
        .unwrap();
    let msg = pattern(64, 1);
    peer_a.write_all(&msg).unwrap();
    let (held, _) = receive(&mut ring, first, msg.len());
    assert_eq!(concat(&held), msg, "the only buffer, filled and held");
    let second = ring
        .submit(RecvMulti::new(b.as_raw_fd(), &bufs), 2)
        .unwrap();
    let early: Vec<_> = quiet(&mut ring, Duration::from_millis(50))
        .into_iter()
        .filter(|c| c.id() == second)
        .collect();
    assert!(early.is_empty(), "no data, no ending: {early:?}");
    peer_b.write_all(b"late").unwrap();
    let (none, end) = receive(&mut ring, second, usize::MAX);
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(errno(&end.expect("ended")), Some(libc::ENOBUFS));
    // The bytes stayed in the socket; with the buffer back they come.
    drop(held);
    let again = ring
        .submit(RecvMulti::new(b.as_raw_fd(), &bufs), 3)
        .unwrap();
    let (got, _) = receive(&mut ring, again, 4);
    assert_eq!(concat(&got), b"late");
    // Waiting for data is still a receive: cancel ends it.
    let (c, _peer_c) = tcp_pair();
    let _keep = got;
    let third = ring
        .submit(RecvMulti::new(c.as_raw_fd(), &bufs), 4)
        .unwrap();
    assert!(quiet(&mut ring, Duration::from_millis(30))
        .iter()
        .all(|x| x.id() != third));
    ring.cancel(third).unwrap();
    let (_, end) = final_of(&mut ring, third);
    assert!(end.is_cancelled(), "{end:?}");
    // And its deadline ends it as a deadline does.
    let timed = ring
        .submit(
            RecvMulti::new(c.as_raw_fd(), &bufs).deadline(Duration::from_millis(30)),
            5,
        )
        .unwrap();
    let (_, end) = final_of(&mut ring, timed);
    assert!(end.is_timed_out(), "{end:?}");
    Outcome::Pass
}
