//! Case 30 (wave 3): `SendFile` — bytes of a file to a socket without a user-space copy.

use std::io::Read as _;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use oneloop::{Ring, SendFile};

use crate::harness::*;

const LONG: Duration = Duration::from_secs(10);

/// Distinct bytes, so that a misplaced or repeated range shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sends `len` bytes of `file` from `offset` with as many `SendFile`s as it takes (each may be
/// short), reading the peer meanwhile; returns what the peer received.
fn send_all(
    ring: &mut Ring,
    sock: &TcpStream,
    peer: &mut TcpStream,
    file: &TempFile,
    offset: u64,
    len: usize,
) -> Vec<u8> {
    peer.set_nonblocking(true).unwrap();
    let mut got = Vec::with_capacity(len);
    let mut sent = 0;
    let start = Instant::now();
    while sent < len {
        assert!(start.elapsed() < LONG, "sent {sent} of {len} in 10 s");
        let op = SendFile::new(
            sock.as_raw_fd(),
            file.fd(),
            offset + sent as u64,
            len - sent,
        );
        let id = ring.submit(op, 1).unwrap();
        loop {
            drain(peer, &mut got);
            ring.wait(1, Some(Duration::from_millis(5))).unwrap();
            if let Some(c) = ring.next_completion() {
                assert_eq!(c.id(), id);
                let n = *c.result().as_ref().expect("SendFile failed") as usize;
                assert!(n > 0 && n <= len - sent, "{n} of {}", len - sent);
                sent += n;
                break;
            }
        }
    }
    while got.len() < len && start.elapsed() < LONG {
        drain(peer, &mut got);
    }
    got
}

/// Reads whatever the peer has now.
fn drain(peer: &mut TcpStream, into: &mut Vec<u8>) {
    let mut buf = [0u8; 65536];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("peer read: {e}"),
        }
    }
}

/// Case 30a: a cached range (just written) and an uncached one (evicted first): the peer
/// receives exactly those bytes, in order, however many ops it took.
pub fn c30_sendfile_cached_and_uncached(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let data = pattern(3 << 20);
    let file = TempFile::new("sendfile", &data);
    let (sock, mut peer) = tcp_pair();
    let got = send_all(&mut ring, &sock, &mut peer, &file, 1000, 200_000);
    assert!(got == data[1000..201_000], "cached range: wrong bytes");
    // Evicted (clean pages go at once): the readiness backends read it on the pool.
    file.file.sync_all().unwrap();
    // SAFETY: no pointers.
    unsafe { libc::posix_fadvise(file.fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let got = send_all(&mut ring, &sock, &mut peer, &file, 500_000, 2_000_000);
    assert!(
        got == data[500_000..2_500_000],
        "uncached range: wrong bytes"
    );
    // At the end of the file: 0.
    let done = ring
        .call(SendFile::new(
            sock.as_raw_fd(),
            file.fd(),
            data.len() as u64,
            100,
        ))
        .unwrap();
    assert_eq!(done.result().as_ref().unwrap(), &0, "{done:?}");
    assert_eq!(ring.in_flight(), 0);
    Outcome::Pass
}

/// Case 30b: a peer that stops reading leaves the op pending (or short), never losing a
/// byte; a cancel then ends it once — with the bytes that reached the socket, or
/// `ECANCELED` if none did — and the peer receives exactly the bytes counted.
pub fn c30_sendfile_stalled_peer_and_cancel(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let data = pattern(8 << 20);
    let file = TempFile::new("sendfile-stall", &data);
    let (sock, mut peer) = tcp_pair();
    sock.set_nonblocking(true).unwrap();
    // Fill the socket until it takes no more: the peer reads nothing yet.
    let filler = vec![0xAA_u8; 1 << 16];
    let mut filled = 0;
    while let Some(n) = (&sock).write_nonblocking(&filler) {
        filled += n;
    }
    let id = ring
        .submit(SendFile::new(sock.as_raw_fd(), file.fd(), 0, data.len()), 9)
        .unwrap();
    ring.wait(1, Some(Duration::from_millis(100))).unwrap();
    let early = ring.next_completion();
    let counted = match early {
        // It went short before the socket filled up again.
        Some(c) => *c.result().as_ref().expect("short, not failed") as usize,
        None => {
            let answer = ring.cancel(id).unwrap();
            let (mores, c) = final_of(&mut ring, id);
            assert!(mores.is_empty());
            // The answer is true: Cancelled ⇒ ECANCELED; TooLate ⇒ its real result.
            match (answer, c.result()) {
                (oneloop::CancelOutcome::TooLate, Ok(n)) => *n as usize,
                (oneloop::CancelOutcome::Cancelled, Err(_)) if c.is_cancelled() => 0,
                other => panic!("cancel answered {:?}, the op ended {:?}", other.0, c),
            }
        }
    };
    assert!(
        quiet(&mut ring, Duration::from_millis(50)).is_empty(),
        "something followed"
    );
    peer.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < filled + counted && start.elapsed() < LONG {
        drain(&mut peer, &mut got);
    }
    std::thread::sleep(Duration::from_millis(50));
    drain(&mut peer, &mut got);
    assert_eq!(
        got.len(),
        filled + counted,
        "the peer got exactly what was counted"
    );
    assert!(got[filled..] == data[..counted], "wrong bytes");
    Outcome::Pass
}

trait WriteNonblocking {
    fn write_nonblocking(self, bytes: &[u8]) -> Option<usize>;
}

impl WriteNonblocking for &TcpStream {
    fn write_nonblocking(self, bytes: &[u8]) -> Option<usize> {
        use std::io::Write as _;
        let mut s = self;
        match s.write(bytes) {
            Ok(n) if n > 0 => Some(n),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("fill: {e}"),
        }
    }
}
