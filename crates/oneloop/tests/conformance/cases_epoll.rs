//! Cases 19–21: `epoll_wait` as an op (every variant the backend has).

use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use oneloop::{CancelOutcome, EpollEvents, EpollWait};

use crate::harness::*;

const SHORT: Duration = Duration::from_millis(50);

/// Case 19: Not ready → no completion; a member becomes ready → one completion with its events.
pub fn c19_epoll_wait_member_ready(h: &Harness) -> Outcome {
    for (variant, builder) in h.epoll_wait_variants() {
        let mut ring = builder.build().unwrap();
        let ep = epoll_create();
        let (a, b) = UnixStream::pair().unwrap();
        let (rd, wr) = pipe();
        epoll_add(ep.as_raw_fd(), a.as_raw_fd(), libc::EPOLLIN as u32, 42);
        epoll_add(ep.as_raw_fd(), rd.as_raw_fd(), libc::EPOLLIN as u32, 43);
        let id = ring
            .submit(
                EpollWait::new(ep.as_raw_fd(), EpollEvents::with_capacity(8)),
                19,
            )
            .unwrap();
        assert!(
            quiet(&mut ring, SHORT).is_empty(),
            "{variant}: completed with nothing ready"
        );
        std::io::Write::write_all(&mut &b, b"ping").unwrap();
        let (_, mut c) = final_of(&mut ring, id);
        assert_eq!(c.result().as_ref().unwrap(), &1, "{variant}: {c:?}");
        let events = c.take_events().unwrap();
        let list: Vec<(u32, u64)> = events.iter().collect();
        assert_eq!(list, [(libc::EPOLLIN as u32, 42)], "{variant}");
        // Both members ready: both reported, the buffer reused.
        write_fd(wr.as_raw_fd(), b"x");
        let id = ring
            .submit(EpollWait::new(ep.as_raw_fd(), events), 20)
            .unwrap();
        let (_, mut c) = final_of(&mut ring, id);
        assert_eq!(c.result().as_ref().unwrap(), &2, "{variant}: {c:?}");
        let mut tags: Vec<u64> = c.take_events().unwrap().iter().map(|(_, d)| d).collect();
        tags.sort();
        assert_eq!(tags, [42, 43], "{variant}");
    }
    Outcome::Pass
}

/// Case 20: A member removed while the wait is pending, or the epoll fd closed under it: no hang,
/// no crash, one defined final completion.
pub fn c20_epoll_wait_member_removed_or_closed(h: &Harness) -> Outcome {
    for (variant, builder) in h.epoll_wait_variants() {
        let mut ring = builder.build().unwrap();
        let ep = epoll_create();
        let (rd, wr) = pipe();
        epoll_add(ep.as_raw_fd(), rd.as_raw_fd(), libc::EPOLLIN as u32, 1);
        let wait = EpollWait::new(ep.as_raw_fd(), EpollEvents::with_capacity(4));
        let id = ring
            .submit(wait.deadline(Duration::from_millis(80)), 1)
            .unwrap();
        ring.wait(0, None).unwrap();
        // SAFETY: both descriptors are open; EPOLL_CTL_DEL ignores the event pointer.
        let rc = unsafe {
            libc::epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                rd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0);
        write_fd(wr.as_raw_fd(), b"x");
        let (_, c) = final_of(&mut ring, id);
        assert!(
            c.is_timed_out(),
            "{variant}: a removed member reported: {c:?}"
        );

        // The epoll fd closed while the wait is pending: the kernel keeps the instance alive.
        let ep2 = epoll_create();
        let (rd2, wr2) = pipe();
        epoll_add(ep2.as_raw_fd(), rd2.as_raw_fd(), libc::EPOLLIN as u32, 2);
        let id = ring
            .submit(
                EpollWait::new(ep2.as_raw_fd(), EpollEvents::with_capacity(4)),
                2,
            )
            .unwrap();
        ring.wait(0, None).unwrap();
        // SAFETY: `into_raw_fd` gave up ownership, so this is the only close.
        unsafe { libc::close(ep2.into_raw_fd()) };
        assert!(
            quiet(&mut ring, SHORT).is_empty(),
            "{variant}: completed on close"
        );
        write_fd(wr2.as_raw_fd(), b"y");
        let early = quiet(&mut ring, SHORT);
        let outcome = ring.cancel(id).unwrap();
        let last = match early.into_iter().next() {
            Some(c) => {
                assert_eq!(outcome, CancelOutcome::NotFound, "{variant}");
                c
            }
            None => final_of(&mut ring, id).1,
        };
        match outcome {
            CancelOutcome::Cancelled => assert!(last.is_cancelled(), "{variant}: {last:?}"),
            // The closed fd's number may be gone or reused: an event count or an error.
            _ => assert!(!last.is_more(), "{variant}: {last:?}"),
        }
        assert!(
            quiet(&mut ring, SHORT).is_empty(),
            "{variant}: more than one final completion"
        );
        assert_eq!(ring.in_flight(), 0);
    }
    Outcome::Pass
}

/// Case 21: EpollWait with a deadline and nothing ready: TimedOut.
pub fn c21_epoll_wait_deadline(h: &Harness) -> Outcome {
    for (variant, builder) in h.epoll_wait_variants() {
        let mut ring = builder.build().unwrap();
        let ep = epoll_create();
        let (rd, _wr) = pipe();
        epoll_add(ep.as_raw_fd(), rd.as_raw_fd(), libc::EPOLLIN as u32, 1);
        let start = std::time::Instant::now();
        let wait = EpollWait::new(ep.as_raw_fd(), EpollEvents::with_capacity(4));
        let id = ring
            .submit(wait.deadline(Duration::from_millis(40)), 21)
            .unwrap();
        let (_, mut c) = final_of(&mut ring, id);
        assert!(c.is_timed_out(), "{variant}: {c:?}");
        assert!(
            start.elapsed() >= Duration::from_millis(40),
            "{variant}: early"
        );
        assert!(
            c.take_events().unwrap().is_empty(),
            "{variant}: the buffer comes back empty"
        );
        assert!(quiet(&mut ring, Duration::from_millis(20)).is_empty() && ring.in_flight() == 0);
    }
    Outcome::Pass
}
