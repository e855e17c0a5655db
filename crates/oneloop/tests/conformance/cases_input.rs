//! Bad input, tried as a new user would: each has one answer on every backend.

use std::os::fd::AsRawFd;
use std::time::Duration;

use oneloop::{CancelOutcome, EpollEvents, EpollWait, Poll, PollMask, Timeout};

use crate::harness::*;

const LONG: Duration = Duration::from_secs(10);

/// A timer or deadline too far away to fit in an `Instant` is accepted, never fires in the
/// test's lifetime, and is cancellable; `wait` with an enormous timeout does not panic either.
pub fn b1_duration_max(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let timer = ring.submit(Timeout::after(Duration::MAX), 1).unwrap();
    let poll = ring
        .submit(
            Poll::new(rd.as_raw_fd(), PollMask::IN).deadline(Duration::MAX),
            2,
        )
        .unwrap();
    assert!(quiet(&mut ring, Duration::from_millis(30)).is_empty());
    assert_eq!(ring.cancel(timer).unwrap(), CancelOutcome::Cancelled);
    let (_, c) = final_of(&mut ring, timer);
    assert!(c.is_cancelled(), "{c:?}");
    write_fd(wr.as_raw_fd(), b"x");
    // A wait whose timeout overflows `Instant` waits until there is work.
    ring.wait(1, Some(Duration::MAX)).unwrap();
    let (_, c) = final_of(&mut ring, poll);
    assert!(c.poll_mask().unwrap().contains(PollMask::IN), "{c:?}");
    Outcome::Pass
}

/// A poll with an empty mask waits (only ERR/HUP could end it): its deadline ends it with
/// `TimedOut`; a later poll of the same fd behaves normally.
pub fn b2_poll_empty_mask_then_normal(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let empty = ring
        .submit(
            Poll::new(rd.as_raw_fd(), PollMask::empty()).deadline(Duration::from_millis(20)),
            1,
        )
        .unwrap();
    let (_, c) = final_of(&mut ring, empty);
    assert!(c.is_timed_out(), "empty mask: {c:?}");
    for round in 0..3 {
        let id = ring
            .submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 2)
            .unwrap();
        write_fd(wr.as_raw_fd(), b"x");
        let (_, c) = final_of(&mut ring, id);
        assert!(
            c.poll_mask().is_some_and(|m| m.contains(PollMask::IN)),
            "round {round}: {c:?}"
        );
        read_fd(rd.as_raw_fd(), 16);
    }
    Outcome::Pass
}

/// `EpollWait` on a descriptor that is not an epoll instance ends at once with `EINVAL`; on
/// a closed descriptor with `EBADF`.
pub fn b3_epoll_wait_not_an_epoll_fd(h: &Harness) -> Outcome {
    for (variant, builder) in h.epoll_wait_variants() {
        let mut ring = builder.build().unwrap();
        let (rd, _wr) = pipe();
        let id = ring
            .submit(
                EpollWait::new(rd.as_raw_fd(), EpollEvents::with_capacity(4)),
                1,
            )
            .unwrap();
        let got = collect(&mut ring, 1, Duration::from_secs(2));
        assert_eq!(got.len(), 1, "{variant}: no completion for a pipe");
        assert_eq!(
            (got[0].id(), errno(&got[0])),
            (id, Some(libc::EINVAL)),
            "{variant}"
        );
        // A number no test opens (parallel tests reuse freed numbers at once).
        let closed = 0x3fff_fff0;
        let id = ring
            .submit(EpollWait::new(closed, EpollEvents::with_capacity(4)), 2)
            .unwrap();
        let got = collect(&mut ring, 1, LONG);
        assert_eq!(got.len(), 1, "{variant}: no completion for a closed fd");
        assert_eq!(
            (got[0].id(), errno(&got[0])),
            (id, Some(libc::EBADF)),
            "{variant}"
        );
    }
    Outcome::Pass
}
