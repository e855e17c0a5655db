//! Cases 24–27: backpressure, the in-flight cap, CQ overflow, wakes and signals.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oneloop::{Nop, Op, Poll, PollMask, Read, Timeout, CURRENT_POSITION};

use crate::harness::*;

const LONG: Duration = Duration::from_secs(10);

/// Case 24: A ring of 4 entries with 1,000 ops queued completes them all through backpressure;
/// submitting past the in-flight cap is a clear error that gives the op back.
pub fn c24_backpressure_and_in_flight_cap(h: &Harness) -> Outcome {
    let mut ring = h.builder().entries(4).in_flight_max(2048).build().unwrap();
    for i in 0..1000u64 {
        if i % 2 == 0 {
            ring.submit(Nop, i).unwrap();
        } else {
            ring.submit(Timeout::after(Duration::from_millis(1)), i)
                .unwrap();
        }
    }
    let got = collect(&mut ring, 1000, LONG);
    let tags: HashSet<u64> = got.iter().map(|c| c.user_data()).collect();
    assert_eq!(tags.len(), 1000, "every op completed once");

    let mut ring = h.builder().entries(4).in_flight_max(16).build().unwrap();
    let (rd, wr) = pipe();
    for i in 0..16 {
        ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), i)
            .unwrap();
    }
    let refused = ring
        .submit(
            Read::new(rd.as_raw_fd(), b"keep me".to_vec(), CURRENT_POSITION),
            99,
        )
        .expect_err("the 17th op is over the cap");
    assert_eq!(refused.error().kind(), ErrorKind::ResourceBusy, "{refused}");
    assert!(
        refused.to_string().contains("in flight"),
        "a clear message: {refused}"
    );
    match refused.into_op() {
        Op::Read(_) => {}
        other => panic!("the op came back changed: {other:?}"),
    }
    write_fd(wr.as_raw_fd(), b"x");
    let got = collect(&mut ring, 16, LONG);
    assert_eq!(got.len(), 16);
    ring.submit(Nop, 100)
        .expect("room again once completions are out");
    Outcome::Pass
}

/// Case 25: With a tiny kernel completion queue, every op's completion is eventually seen.
pub fn c25_cq_overflow_loses_nothing(h: &Harness) -> Outcome {
    const N: u64 = 600;
    let mut ring = h.builder().entries(4).cq_entries(4).build().unwrap();
    // All expire together, long after they are submitted: far more CQEs than CQ entries.
    let at = Instant::now() + Duration::from_millis(100);
    for i in 0..N {
        ring.submit(Timeout::at(at), i).unwrap();
    }
    ring.wait(0, None).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let got = collect(&mut ring, N as usize, LONG);
    let tags: HashSet<u64> = got.iter().map(|c| c.user_data()).collect();
    assert_eq!(tags.len(), N as usize, "completions lost");
    assert!(got.iter().all(|c| c.is_timed_out()));
    // A multishot poll across an overflow still ends with exactly one final completion.
    let (rd, wr) = pipe();
    let id = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN).multishot(), 1)
        .unwrap();
    ring.wait(0, None).unwrap();
    for _ in 0..64 {
        write_fd(wr.as_raw_fd(), b"z");
    }
    let seen = quiet(&mut ring, Duration::from_millis(30));
    assert!(
        seen.iter().any(|c| c.poll_mask().is_some()),
        "no readiness reported: {seen:?}"
    );
    let ended = seen.iter().any(|c| !c.is_more());
    if !ended {
        let _ = ring.cancel(id).unwrap();
        let (_, last) = final_of(&mut ring, id);
        assert!(!last.is_more());
    }
    assert!(quiet(&mut ring, Duration::from_millis(20)).is_empty());
    Outcome::Pass
}

/// Case 26: A wake from another thread ends a `wait` promptly; a completion caused outside the
/// loop is picked up.
pub fn c26_wake_from_another_thread(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let waker = ring.waker();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        waker.wake();
    });
    let n = ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(n, 0, "a wake is not a completion");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the wake did not end the wait"
    );
    t.join().unwrap();
    // Also a wait for more completions than will come.
    let waker = ring.waker();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        waker.wake();
    });
    ring.wait(4, Some(Duration::from_secs(30))).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the wake did not end a wait for four"
    );
    t.join().unwrap();

    let (rd, wr) = pipe();
    ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 5)
        .unwrap();
    let wfd = wr.as_raw_fd();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        write_fd(wfd, b"outside");
    });
    let n = ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(n, 1);
    assert_eq!(ring.next_completion().unwrap().user_data(), 5);
    t.join().unwrap();
    // A wake that lands before the wait (here reaped by a cancel's trip to the kernel first)
    // still ends the next wait: wakes are never lost.
    let (prd, _pwr) = pipe();
    let pending = ring
        .submit(Poll::new(prd.as_raw_fd(), PollMask::IN), 6)
        .unwrap();
    ring.wait(0, None).unwrap();
    ring.waker().wake();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        ring.cancel(pending).unwrap(),
        oneloop::CancelOutcome::Cancelled
    );
    let start = Instant::now();
    ring.wait(2, Some(Duration::from_secs(30))).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "a wake reaped early was lost"
    );
    // The cancelled poll's final completion (on aio it may come after the wake).
    let (_, last) = final_of(&mut ring, pending);
    assert!(last.is_cancelled(), "{last:?}");
    // Many wakes coalesce and leave no stale wake behind that ends a later wait early.
    let waker = ring.waker();
    for _ in 0..100 {
        waker.wake();
    }
    ring.wait(1, Some(Duration::from_millis(10))).unwrap();
    let start = Instant::now();
    ring.wait(1, Some(Duration::from_millis(40))).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(40),
        "a stale wake ended the wait"
    );
    Outcome::Pass
}

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// Case 27: Signals during `wait` (EINTR): the wait continues to its deadline; nothing is lost.
pub fn c27_signal_during_wait(h: &Harness) -> Outcome {
    // SIGURG: ignored by default, so a stray one can never kill the test binary.
    // SAFETY: `act` is a zeroed, then filled sigaction; the handler only touches an atomic.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count_signal as *const () as usize;
        act.sa_flags = 0; // no SA_RESTART: the wait sees EINTR
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGURG, &act, std::ptr::null_mut()), 0);
    }
    let mut ring = h.ring();
    // SAFETY: no arguments; returns this thread's handle.
    let me = unsafe { libc::pthread_self() } as usize;
    let before = SIGNALS.load(Ordering::SeqCst);
    let pester = std::thread::spawn(move || {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
            // SAFETY: the target thread outlives this thread (it joins it).
            unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGURG) };
        }
    });
    let start = Instant::now();
    assert_eq!(ring.wait(1, Some(Duration::from_millis(100))).unwrap(), 0);
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "a signal ended the wait early"
    );
    ring.submit(Timeout::after(Duration::from_millis(60)), 7)
        .unwrap();
    let n = ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(n, 1, "the completion that arrived among signals was kept");
    assert_eq!(ring.next_completion().unwrap().user_data(), 7);
    pester.join().unwrap();
    let caught = SIGNALS.load(Ordering::SeqCst) - before;
    assert!(
        caught > 0,
        "no signal reached the waiting thread: the case proved nothing"
    );
    Outcome::Pass
}
