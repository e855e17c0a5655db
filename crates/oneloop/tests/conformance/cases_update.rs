//! Case 29 (wave 3): `PollUpdate` — a pending poll's mask changed in flight.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use oneloop::{OpId, Poll, PollMask, PollUpdate, Timeout, UpdateOutcome};

use crate::harness::*;

const SHORT: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(10);

/// A poll of a pipe's write end for `IN`, which never comes: it waits until updated. The
/// pipe's ends are returned to keep them open.
fn waiting_poll(ring: &mut oneloop::Ring, multishot: bool) -> (OwnedFd, OwnedFd, OpId) {
    let (rd, wr) = pipe();
    let poll = Poll::new(wr.as_raw_fd(), PollMask::IN);
    let poll = if multishot { poll.multishot() } else { poll };
    let id = ring.submit(poll, 7).unwrap();
    assert!(quiet(ring, SHORT).is_empty(), "fired before any update");
    (rd, wr, id)
}

/// Case 29a: a pending one-shot poll updated to a mask that is ready now completes at once,
/// with the new mask; the update answers `Updated`, and nothing else follows.
pub fn c29_update_one_shot_to_ready(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    // A pipe's write end is writable at once, never readable.
    let (_rd, _wr, id) = waiting_poll(&mut ring, false);
    assert_eq!(
        ring.update_poll(id, PollMask::OUT).unwrap(),
        UpdateOutcome::Updated
    );
    let got = collect(&mut ring, 1, LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    let c = &got[0];
    assert_eq!((c.id(), c.is_more()), (id, false));
    let mask = c.poll_mask().expect("the poll's mask");
    assert!(mask.contains(PollMask::OUT), "{c:?}");
    assert!(!mask.contains(PollMask::IN), "{c:?}");
    assert!(quiet(&mut ring, SHORT).is_empty(), "something followed");
    assert_eq!(ring.in_flight(), 0);
    Outcome::Pass
}

/// Case 29b: the same as an op in the queue: the update's own completion is `Ok(0)`, the
/// poll's comes with the new mask.
pub fn c29_update_as_an_op(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let id = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::OUT), 1)
        .unwrap();
    ring.submit(PollUpdate::new(id, PollMask::IN), 2).unwrap();
    assert_eq!(collect(&mut ring, 1, LONG).len(), 1, "the update answers");
    assert!(
        quiet(&mut ring, SHORT).is_empty(),
        "the poll fired with no data"
    );
    write_fd(wr.as_raw_fd(), b"x");
    let got = collect(&mut ring, 1, LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].id(), id);
    assert!(got[0].poll_mask().unwrap().contains(PollMask::IN));
    Outcome::Pass
}

/// Case 29c: a multishot poll keeps its id and its `MORE` stream across an update, and the
/// stream now reports the new mask; a cancel still ends it once.
pub fn c29_update_multishot_keeps_stream(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr, id) = waiting_poll(&mut ring, true);
    assert_eq!(
        ring.update_poll(id, PollMask::OUT).unwrap(),
        UpdateOutcome::Updated
    );
    let got = collect(&mut ring, 1, LONG);
    assert!(!got.is_empty(), "no completion after the update");
    for c in &got {
        assert_eq!((c.id(), c.user_data()), (id, 7));
        assert!(c.is_more(), "the stream goes on: {c:?}");
        assert!(c.poll_mask().unwrap().contains(PollMask::OUT), "{c:?}");
    }
    // A new edge (the pipe drained after being filled) is reported on the same stream.
    write_fd(wr.as_raw_fd(), &[0; 4096]);
    let _ = read_fd(rd.as_raw_fd(), 8192);
    let _ = quiet(&mut ring, SHORT);
    assert_eq!(ring.cancel(id).unwrap(), oneloop::CancelOutcome::Cancelled);
    let (mores, last) = final_of(&mut ring, id);
    assert!(mores.iter().all(|c| c.is_more()));
    assert!(last.is_cancelled(), "{last:?}");
    assert!(
        quiet(&mut ring, SHORT).is_empty(),
        "something followed the final"
    );
    Outcome::Pass
}

/// Case 29d: an update of a poll that already fired answers `TooLate` while its completion
/// waits in the ring, `NotFound` once it was taken; an unknown id `NotFound`; an op that is
/// not a poll `EINVAL`, and that op goes on untouched.
pub fn c29_update_too_late_unknown_not_a_poll(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (_rd, wr) = pipe();
    let id = ring
        .submit(Poll::new(wr.as_raw_fd(), PollMask::OUT), 1)
        .unwrap();
    let start = std::time::Instant::now();
    while ring.ready() == 0 && start.elapsed() < LONG {
        ring.wait(1, Some(LONG)).unwrap();
    }
    assert_eq!(ring.ready(), 1, "the poll fired");
    assert_eq!(
        ring.update_poll(id, PollMask::IN).unwrap(),
        UpdateOutcome::TooLate
    );
    let c = ring.next_completion().unwrap();
    assert_eq!(c.id(), id);
    assert!(
        c.poll_mask().unwrap().contains(PollMask::OUT),
        "its real result stands"
    );
    assert_eq!(
        ring.update_poll(id, PollMask::IN).unwrap(),
        UpdateOutcome::NotFound
    );
    // A stale id of a reused slot, and a made-up one.
    let again = ring
        .submit(Poll::new(wr.as_raw_fd(), PollMask::IN), 2)
        .unwrap();
    assert_eq!(
        ring.update_poll(id, PollMask::OUT).unwrap(),
        UpdateOutcome::NotFound
    );
    ring.cancel(again).unwrap();
    let _ = final_of(&mut ring, again);
    let timer = ring.submit(Timeout::after(SHORT), 3).unwrap();
    let e = ring.update_poll(timer, PollMask::IN).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    let (_, c) = final_of(&mut ring, timer);
    assert!(c.is_timed_out(), "the timer went on: {c:?}");
    Outcome::Pass
}

/// Case 29e: two updates in a row, the second before the first has settled in the kernel
/// (on aio, while the poll's old `IOCB_CMD_POLL` is still being cancelled): both are
/// `Updated`, and the poll fires for the last mask.
pub fn c29_two_updates_in_a_row(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (_rd, _wr, id) = waiting_poll(&mut ring, false);
    for mask in [PollMask::IN | PollMask::PRI, PollMask::OUT] {
        assert_eq!(ring.update_poll(id, mask).unwrap(), UpdateOutcome::Updated);
    }
    let got = collect(&mut ring, 1, LONG);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].id(), id);
    assert!(
        got[0].poll_mask().unwrap().contains(PollMask::OUT),
        "{got:?}"
    );
    Outcome::Pass
}
