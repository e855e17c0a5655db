//! Cases 16–18: timeouts, deadlines, and waiting with a timeout.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use oneloop::{CancelOutcome, Poll, PollMask, Timeout};

use crate::harness::*;

const LONG: Duration = Duration::from_secs(10);

/// Case 16: A timeout expires with TimedOut, a cancelled one ends ECANCELED, and many timeouts
/// complete in deadline order.
pub fn c16_timeouts_expire_cancel_order(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let start = Instant::now();
    let id = ring
        .submit(Timeout::after(Duration::from_millis(30)), 1)
        .unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert!(c.is_timed_out(), "{c:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "expired early"
    );

    let at = Instant::now() + Duration::from_millis(20);
    let id = ring.submit(Timeout::at(at), 2).unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert!(c.is_timed_out() && Instant::now() >= at, "{c:?}");

    let id = ring
        .submit(Timeout::after(Duration::from_secs(3600)), 3)
        .unwrap();
    ring.wait(0, None).unwrap();
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    let (_, c) = final_of(&mut ring, id);
    assert!(c.is_cancelled(), "{c:?}");

    // Submitted out of order, 6 ms apart: they complete in deadline order.
    let order = [7u64, 2, 9, 4, 1, 8, 3, 6, 5, 10];
    for ms in order {
        ring.submit(Timeout::after(Duration::from_millis(ms * 6)), ms)
            .unwrap();
    }
    let got = collect(&mut ring, order.len(), LONG);
    let tags: Vec<u64> = got.iter().map(|c| c.user_data()).collect();
    assert_eq!(tags, (1..=10).collect::<Vec<u64>>());
    assert!(got.iter().all(|c| c.is_timed_out()));
    Outcome::Pass
}

/// Case 17: A poll with a deadline: the poll wins (its mask) or the deadline wins (TimedOut),
/// exactly one final completion either way, also when they race.
pub fn c17_poll_deadline_race(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    // Nothing arrives: the deadline wins.
    let start = Instant::now();
    let id = ring
        .submit(
            Poll::new(rd.as_raw_fd(), PollMask::IN).deadline(Duration::from_millis(25)),
            1,
        )
        .unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert!(c.is_timed_out(), "{c:?}");
    assert!(start.elapsed() >= Duration::from_millis(25));
    // Ready before the deadline: the poll wins.
    write_fd(wr.as_raw_fd(), b"x");
    let id = ring
        .submit(
            Poll::new(rd.as_raw_fd(), PollMask::IN).deadline(Duration::from_secs(5)),
            2,
        )
        .unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert!(c.poll_mask().unwrap().contains(PollMask::IN), "{c:?}");
    read_fd(rd.as_raw_fd(), 8);
    // Racing: a writer (already running, told when to go) fires around the deadline.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<Duration>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let wfd = wr.as_raw_fd();
    let writer = std::thread::spawn(move || {
        for pause in go_rx {
            let start = Instant::now();
            while start.elapsed() < pause {
                std::hint::spin_loop();
            }
            write_fd(wfd, b"r");
            done_tx.send(()).unwrap();
        }
    });
    let (mut polls, mut timeouts) = (0, 0);
    for round in 0..rounds(400) {
        let pause = Duration::from_micros((round as u64 * 37) % 600);
        let poll = Poll::new(rd.as_raw_fd(), PollMask::IN).deadline(Duration::from_micros(300));
        let id = ring.submit(poll, 3).unwrap();
        ring.wait(0, None).unwrap();
        go_tx.send(pause).unwrap();
        let (mores, c) = final_of(&mut ring, id);
        assert!(mores.is_empty());
        if c.is_timed_out() {
            timeouts += 1;
        } else {
            assert!(
                c.poll_mask().unwrap().contains(PollMask::IN),
                "round {round}: {c:?}"
            );
            polls += 1;
        }
        done_rx.recv().unwrap();
        read_fd(rd.as_raw_fd(), 8);
        assert!(quiet(&mut ring, Duration::from_millis(1)).is_empty());
    }
    drop(go_tx);
    writer.join().unwrap();
    assert!(
        polls > 0 && timeouts > 0,
        "no race: poll won {polls}, deadline won {timeouts}"
    );
    assert_eq!(ring.in_flight(), 0);
    note(&format!("c17: poll won {polls}, deadline won {timeouts}"));
    Outcome::Pass
}

/// A pipe's read end with data in it (its write end is closed, the data stays).
fn rd_ready() -> std::os::fd::OwnedFd {
    let (rd, wr) = pipe();
    write_fd(wr.as_raw_fd(), b"x");
    rd
}

/// Case 18: `wait` with a timeout returns on time and loses no completion that arrives meanwhile.
pub fn c18_wait_timeout_loses_nothing(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let start = Instant::now();
    assert_eq!(ring.wait(1, Some(Duration::from_millis(60))).unwrap(), 0);
    assert!(
        start.elapsed() >= Duration::from_millis(60),
        "returned early"
    );

    // A non-blocking wait picks up what completed while the thread was busy elsewhere.
    ring.submit(Timeout::after(Duration::from_millis(5)), 99)
        .unwrap();
    let ready = rd_ready();
    ring.submit(Poll::new(ready.as_raw_fd(), PollMask::IN), 98)
        .unwrap();
    assert_eq!(
        ring.wait(0, None).unwrap(),
        1,
        "a ready poll completes at submission"
    );
    assert!(ring
        .next_completion()
        .unwrap()
        .poll_mask()
        .unwrap()
        .contains(PollMask::IN));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(
        ring.wait(0, None).unwrap(),
        1,
        "wait(0) reaps without blocking"
    );
    assert!(ring.next_completion().unwrap().is_timed_out());
    ring.completions().for_each(drop);

    // Completions arriving during a wait are all kept.
    for ms in [10u64, 20, 30, 40, 50] {
        ring.submit(Timeout::after(Duration::from_millis(ms)), ms)
            .unwrap();
    }
    let start = Instant::now();
    let n = ring.wait(5, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(n, 5);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "waited out the timeout"
    );

    // A wait that times out while completions trickle in keeps what arrived.
    ring.completions().for_each(drop);
    ring.submit(Timeout::after(Duration::from_millis(10)), 1)
        .unwrap();
    ring.submit(Timeout::after(Duration::from_secs(3600)), 2)
        .unwrap();
    let n = ring.wait(2, Some(Duration::from_millis(80))).unwrap();
    assert_eq!(n, 1);
    assert_eq!(ring.next_completion().unwrap().user_data(), 1);
    assert_eq!(ring.cancel_all().unwrap().cancelled, 1);
    Outcome::Pass
}
