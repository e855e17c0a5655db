//! Cases 1–9: one-shot and multishot polls.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use oneloop::{BackendKind, CancelOutcome, Poll, PollMask};

use crate::harness::*;

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(10);

/// Case 1: Poll a pipe's read end, write to it: exactly one completion, mask has IN.
pub fn c01_poll_pipe_write(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let id = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 11)
        .unwrap();
    assert!(
        quiet(&mut ring, SHORT).is_empty(),
        "completed before the pipe was written"
    );
    write_fd(wr.as_raw_fd(), b"x");
    let got = collect(&mut ring, 1, LONG);
    assert_eq!(got.len(), 1);
    let c = &got[0];
    assert_eq!((c.id(), c.user_data(), c.is_more()), (id, 11, false));
    assert!(c.poll_mask().unwrap().contains(PollMask::IN), "{c:?}");
    assert!(
        quiet(&mut ring, SHORT).is_empty(),
        "a second completion followed"
    );
    assert_eq!(ring.in_flight(), 0);
    Outcome::Pass
}

/// Case 2: Poll an fd that is already ready: it completes without any new event.
pub fn c02_poll_ready_at_arm(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    write_fd(wr.as_raw_fd(), b"ready");
    ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 1)
        .unwrap();
    ring.submit(Poll::new(wr.as_raw_fd(), PollMask::OUT), 2)
        .unwrap();
    let mut got = collect(&mut ring, 2, LONG);
    got.sort_by_key(|c| c.user_data());
    assert_eq!(got.len(), 2);
    assert!(got[0].poll_mask().unwrap().contains(PollMask::IN));
    assert!(got[1].poll_mask().unwrap().contains(PollMask::OUT));
    Outcome::Pass
}

/// Case 3: Poll a regular file: ready at once with requested ∩ IN|OUT; EINVAL if that is empty.
pub fn c03_poll_regular_file(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let file = TempFile::new("poll", b"data");
    let cases = [
        (PollMask::IN, Ok(PollMask::IN)),
        (PollMask::OUT, Ok(PollMask::OUT)),
        (
            PollMask::IN | PollMask::OUT | PollMask::PRI,
            Ok(PollMask::IN | PollMask::OUT),
        ),
        (PollMask::PRI, Err(libc::EINVAL)),
    ];
    for (i, (asked, _)) in cases.iter().enumerate() {
        ring.submit(Poll::new(file.fd(), *asked), i as u64).unwrap();
    }
    let got = collect(&mut ring, cases.len(), LONG);
    assert_eq!(got.len(), cases.len());
    for c in got {
        let (asked, want) = cases[c.user_data() as usize];
        match want {
            Ok(mask) => assert_eq!(c.poll_mask(), Some(mask), "asked {asked:?}"),
            Err(code) => assert_eq!(errno(&c), Some(code), "asked {asked:?}: {c:?}"),
        }
    }
    let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
    ring.submit(Poll::new(dir.as_raw_fd(), PollMask::IN), 9)
        .unwrap();
    let got = collect(&mut ring, 1, LONG);
    assert_eq!(
        got[0].poll_mask(),
        Some(PollMask::IN),
        "a directory is readable at once"
    );
    Outcome::Pass
}

/// Case 4: Poll a socket whose peer closes: HUP (and RDHUP if asked) is reported.
pub fn c04_poll_peer_close_hup(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (a, b) = UnixStream::pair().unwrap();
    ring.submit(Poll::new(a.as_raw_fd(), PollMask::IN | PollMask::RDHUP), 1)
        .unwrap();
    ring.submit(Poll::new(a.as_raw_fd(), PollMask::OUT), 2)
        .unwrap();
    // The OUT poll completes at once (the socket is writable); take it first.
    let first = collect(&mut ring, 1, LONG);
    assert_eq!(first[0].user_data(), 2);
    ring.submit(Poll::new(a.as_raw_fd(), PollMask::PRI), 3)
        .unwrap();
    assert!(quiet(&mut ring, SHORT).is_empty());
    drop(b);
    let got = collect(&mut ring, 2, LONG);
    assert_eq!(got.len(), 2, "{got:?}");
    for c in got {
        let mask = c.poll_mask().unwrap();
        assert!(
            mask.contains(PollMask::HUP),
            "HUP is reported even unasked: {mask:?}"
        );
        match c.user_data() {
            1 => assert!(mask.contains(PollMask::RDHUP | PollMask::IN), "{mask:?}"),
            // RDHUP, like ERR, HUP and NVAL, may be reported unasked (io_uring does).
            3 => {}
            other => panic!("unexpected user_data {other}"),
        }
    }
    Outcome::Pass
}

/// Case 5: Multishot: N readiness edges give 1..=N completions, all MORE; cancel gives one final
/// completion without MORE; nothing follows it.
pub fn c05_multishot_edges_then_cancel(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let id = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN).multishot(), 5)
        .unwrap();
    const EDGES: usize = 5;
    let mut got = Vec::new();
    for _ in 0..EDGES {
        write_fd(wr.as_raw_fd(), b"e");
        got.extend(quiet(&mut ring, Duration::from_millis(10)));
    }
    got.extend(quiet(&mut ring, SHORT));
    assert!(
        (1..=EDGES).contains(&got.len()),
        "{} completions for {EDGES} edges",
        got.len()
    );
    for c in &got {
        assert!(
            c.is_more(),
            "every completion before the cancel carries MORE: {c:?}"
        );
        assert!(c.poll_mask().unwrap().contains(PollMask::IN));
        assert_eq!(c.id(), id);
    }
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    let (mores, last) = final_of(&mut ring, id);
    assert!(mores.iter().all(|c| c.poll_mask().is_some()));
    assert!(last.is_cancelled(), "{last:?}");
    assert!(
        quiet(&mut ring, SHORT).is_empty(),
        "something followed the final completion"
    );
    write_fd(wr.as_raw_fd(), b"late");
    assert!(quiet(&mut ring, SHORT).is_empty(), "a cancelled poll fired");
    Outcome::Pass
}

/// The most completions a multishot poll may give for one write never consumed, over 200 ms.
fn busy_spin_bound(kind: BackendKind) -> usize {
    match kind {
        // Completes on kernel wakeups only: one write, one wakeup, one completion.
        BackendKind::Uring => 1,
        // Edge-triggered registrations (aio: in its internal epoll set): one edge, one
        // completion; nothing re-reports a level nobody consumes.
        BackendKind::Epoll | BackendKind::Aio => 1,
        BackendKind::Auto => unreachable!("cases run on a concrete backend"),
    }
}

/// Case 6: Multishot with data never consumed: no busy-spin (the bound is documented per backend).
pub fn c06_multishot_no_busy_spin(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let id = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN).multishot(), 6)
        .unwrap();
    write_fd(wr.as_raw_fd(), b"never read");
    let got = quiet(&mut ring, Duration::from_millis(200));
    let bound = busy_spin_bound(h.kind);
    assert!(!got.is_empty(), "the first readiness was reported");
    assert!(
        got.len() <= bound,
        "{} completions over 200 ms, bound {bound}",
        got.len()
    );
    assert!(got.iter().all(|c| c.is_more()));
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    let (_, last) = final_of(&mut ring, id);
    assert!(last.is_cancelled());
    Outcome::Pass
}

/// Case 7: `send` then `shutdown` back to back: a multishot consumer still sees the data and EOF.
pub fn c07_multishot_send_shutdown(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.set_nonblocking(true).unwrap();
    let id = ring
        .submit(
            Poll::new(server.as_raw_fd(), PollMask::IN | PollMask::RDHUP).multishot(),
            7,
        )
        .unwrap();
    client.write_all(b"last words").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let (mut data, mut eof) = (Vec::new(), false);
    let start = std::time::Instant::now();
    while !eof && start.elapsed() < LONG {
        ring.wait(1, Some(Duration::from_millis(100))).unwrap();
        for c in ring.completions() {
            assert_eq!(c.id(), id);
            assert!(c.result().is_ok(), "{c:?}");
            let mut buf = [0u8; 64];
            loop {
                match server.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }
    assert!(eof, "the consumer never saw EOF");
    assert_eq!(data, b"last words");
    let _ = ring.cancel(id).unwrap();
    let (_, last) = final_of(&mut ring, id);
    assert!(!last.is_more());
    Outcome::Pass
}

/// Case 8: Two polls on the same fd with different interests both complete correctly.
pub fn c08_two_polls_one_fd(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (a, b) = UnixStream::pair().unwrap();
    ring.submit(Poll::new(a.as_raw_fd(), PollMask::IN), 1)
        .unwrap();
    ring.submit(Poll::new(a.as_raw_fd(), PollMask::OUT), 2)
        .unwrap();
    let out = collect(&mut ring, 1, LONG);
    assert_eq!(out[0].user_data(), 2, "only the OUT poll is ready: {out:?}");
    assert!(out[0].poll_mask().unwrap().contains(PollMask::OUT));
    assert!(!out[0].poll_mask().unwrap().contains(PollMask::IN));
    assert!(
        quiet(&mut ring, SHORT).is_empty(),
        "the IN poll fired with nothing to read"
    );
    (&b).write_all(b"x").unwrap();
    let inn = collect(&mut ring, 1, LONG);
    assert_eq!(inn[0].user_data(), 1);
    assert!(inn[0].poll_mask().unwrap().contains(PollMask::IN));
    // Both again, multishot and one-shot mixed on one fd.
    let m = ring
        .submit(Poll::new(a.as_raw_fd(), PollMask::IN).multishot(), 3)
        .unwrap();
    ring.submit(Poll::new(a.as_raw_fd(), PollMask::IN), 4)
        .unwrap();
    let both = collect(&mut ring, 2, LONG);
    let mut tags: Vec<u64> = both.iter().map(|c| c.user_data()).collect();
    tags.sort();
    assert_eq!(tags, [3, 4], "{both:?}");
    ring.cancel(m).unwrap();
    let (_, last) = final_of(&mut ring, m);
    assert!(last.is_cancelled());
    Outcome::Pass
}

/// Case 9: A poll whose mask does not match, cancelled and re-armed with one that does, fires.
pub fn c09_poll_rearmed_with_matching_mask(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    write_fd(wr.as_raw_fd(), b"data");
    // A pipe's read end is never writable.
    let id = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::OUT), 1)
        .unwrap();
    assert!(
        quiet(&mut ring, SHORT).is_empty(),
        "OUT on a read end fired"
    );
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    let (_, last) = final_of(&mut ring, id);
    assert!(last.is_cancelled());
    ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 2)
        .unwrap();
    let got = collect(&mut ring, 1, LONG);
    assert!(got[0].poll_mask().unwrap().contains(PollMask::IN));
    assert_eq!(read_fd(rd.as_raw_fd(), 16), b"data");
    Outcome::Pass
}
