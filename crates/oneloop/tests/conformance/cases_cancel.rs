//! Cases 10–15: cancellation and teardown (13d: cancels nobody waits for).

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use oneloop::{
    BackendKind, CancelOutcome, EpollEvents, EpollWait, Nop, Output, Poll, PollMask, Read, Timeout,
    CURRENT_POSITION,
};

use crate::alloc_count::{live_tracked, TRACKED_SIZE};
use crate::harness::*;

const LONG: Duration = Duration::from_secs(10);

/// Case 10: Cancel a pending poll: ECANCELED and `Cancelled`; a finished id and a stale id (slot
/// reused) report `NotFound` and touch nothing.
pub fn c10_cancel_pending_and_stale(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let old = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 1)
        .unwrap();
    assert_eq!(ring.cancel(old).unwrap(), CancelOutcome::Cancelled);
    let (_, last) = final_of(&mut ring, old);
    assert!(last.is_cancelled() && last.user_data() == 1, "{last:?}");
    assert_eq!(
        ring.cancel(old).unwrap(),
        CancelOutcome::NotFound,
        "finished id"
    );
    // The next op reuses the slot under a new generation.
    let new = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 2)
        .unwrap();
    assert_ne!(new, old);
    assert_eq!(
        ring.cancel(old).unwrap(),
        CancelOutcome::NotFound,
        "stale id"
    );
    write_fd(wr.as_raw_fd(), b"x");
    let got = collect(&mut ring, 1, LONG);
    assert_eq!(got[0].id(), new);
    assert!(
        got[0].poll_mask().unwrap().contains(PollMask::IN),
        "the stale cancel touched it"
    );
    Outcome::Pass
}

/// Case 11: Arm and cancel 10,000 polls: every one accounted for, no slot leaked.
pub fn c11_cancel_ten_thousand_polls(h: &Harness) -> Outcome {
    const N: usize = 10_000;
    let mut ring = h.ring();
    let (rd, _wr) = pipe();
    let ids: Vec<_> = (0..N)
        .map(|i| {
            ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), i as u64)
                .unwrap()
        })
        .collect();
    assert_eq!(ring.in_flight(), N);
    let mut cancelled = 0;
    for id in &ids[..N / 2] {
        assert_eq!(ring.cancel(*id).unwrap(), CancelOutcome::Cancelled);
        cancelled += 1;
    }
    let rest = ring.cancel_all().unwrap();
    assert_eq!((rest.cancelled, rest.too_late), (N - N / 2, 0));
    cancelled += rest.cancelled;
    let got = collect(&mut ring, N, LONG);
    assert_eq!(got.len(), N);
    let mut seen = HashSet::new();
    for c in &got {
        assert!(c.is_cancelled(), "{c:?}");
        assert!(
            seen.insert(c.user_data()),
            "user_data {} ended twice",
            c.user_data()
        );
    }
    assert_eq!(cancelled, N);
    assert_eq!(ring.in_flight(), 0, "slots leaked");
    assert!(quiet(&mut ring, Duration::from_millis(20)).is_empty());
    // Every slot is reusable.
    for i in 0..N {
        ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), i as u64)
            .unwrap();
    }
    assert_eq!(ring.cancel_all().unwrap().cancelled, N);
    assert_eq!(collect(&mut ring, N, LONG).len(), N);
    Outcome::Pass
}

/// Case 12: Cancel by fd and cancel-all return how many they hit; each target ends exactly once.
pub fn c12_cancel_by_fd_and_all(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd1, _wr1) = pipe();
    let (rd2, _wr2) = pipe();
    for i in 0..3 {
        ring.submit(Poll::new(rd1.as_raw_fd(), PollMask::IN), 100 + i)
            .unwrap();
    }
    ring.submit(Poll::new(rd1.as_raw_fd(), PollMask::IN).multishot(), 103)
        .unwrap();
    ring.submit(
        Read::new(rd1.as_raw_fd(), Vec::with_capacity(16), CURRENT_POSITION),
        104,
    )
    .unwrap();
    for i in 0..2 {
        ring.submit(Poll::new(rd2.as_raw_fd(), PollMask::IN), 200 + i)
            .unwrap();
    }
    ring.submit(Timeout::after(Duration::from_secs(3600)), 300)
        .unwrap();
    let (none_rd, _none_wr) = pipe();
    assert_eq!(ring.cancel_fd(none_rd.as_raw_fd()).unwrap().total(), 0);
    let on_fd = ring.cancel_fd(rd1.as_raw_fd()).unwrap();
    assert_eq!((on_fd.cancelled, on_fd.too_late), (5, 0), "{on_fd:?}");
    let first = collect(&mut ring, 5, LONG);
    let tags: HashSet<u64> = first.iter().map(|c| c.user_data()).collect();
    assert_eq!(tags, (100..105).collect());
    assert!(
        first.iter().all(|c| c.is_cancelled() && !c.is_more()),
        "{first:?}"
    );
    assert_eq!(ring.in_flight(), 3);
    let all = ring.cancel_all().unwrap();
    assert_eq!((all.cancelled, all.too_late), (3, 0));
    let second = collect(&mut ring, 3, LONG);
    let tags: HashSet<u64> = second.iter().map(|c| c.user_data()).collect();
    assert_eq!(tags, [200, 201, 300].into_iter().collect());
    assert!(
        quiet(&mut ring, Duration::from_millis(30)).is_empty(),
        "an op ended twice"
    );
    assert_eq!(ring.cancel_all().unwrap().total(), 0);
    Outcome::Pass
}

/// Case 13: Cancel racing completion: each op ends exactly once, with its result or ECANCELED,
/// matching what the cancel reported.
pub fn c13_cancel_races_completion(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let rounds = rounds(100_000);
    let (mut cancelled, mut too_late) = (0usize, 0usize);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..rounds {
        let delay = Duration::from_nanos(next() % 20_000);
        let id = ring.submit(Timeout::after(delay), round as u64).unwrap();
        // Let the timer run for a random while (sometimes flushing it to the kernel first).
        if next() % 2 == 0 {
            ring.wait(0, None).unwrap();
        }
        let spin = Instant::now();
        let spin_for = Duration::from_nanos(next() % 20_000);
        while spin.elapsed() < spin_for {
            std::hint::spin_loop();
        }
        let outcome = ring.cancel(id).unwrap();
        let (mores, last) = final_of(&mut ring, id);
        assert!(mores.is_empty());
        assert_eq!(last.user_data(), round as u64);
        match outcome {
            CancelOutcome::Cancelled => {
                assert!(last.is_cancelled(), "round {round}: Cancelled but {last:?}");
                cancelled += 1;
            }
            CancelOutcome::TooLate => {
                assert!(last.is_timed_out(), "round {round}: TooLate but {last:?}");
                too_late += 1;
            }
            // Its completion was reaped (by the flushing wait) before the cancel: already ended.
            CancelOutcome::NotFound => {
                assert!(last.is_timed_out(), "round {round}: NotFound but {last:?}");
                too_late += 1;
            }
        }
    }
    assert_eq!(ring.in_flight(), 0);
    assert!(
        quiet(&mut ring, Duration::from_millis(20)).is_empty(),
        "an op ended twice"
    );
    assert!(
        cancelled > 0 && too_late > 0,
        "no race happened: {cancelled} cancelled, {too_late} too late"
    );
    note(&format!(
        "c13: {rounds} rounds, {cancelled} cancelled, {too_late} completed first"
    ));
    Outcome::Pass
}

/// Case 14: Cancel a disk read the kernel cannot cancel: it ends with its real result, the
/// cancel reports TooLate, the buffer comes back intact. (A read still queued in user space,
/// not yet handed to the kernel, may be cancelled instead: then it ends ECANCELED and its
/// buffer comes back untouched.)
pub fn c14_cancel_uncancellable_read(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let contents: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = TempFile::new("uncancellable", &contents);
    for round in 0..16 {
        let id = ring
            .submit(Read::new(file.fd(), Vec::with_capacity(4096), 0), round)
            .unwrap();
        let in_kernel = round % 2 == 0;
        if in_kernel {
            // Hand it to the kernel first: a page-cache read then completes at once.
            ring.wait(0, None).unwrap();
        }
        let outcome = ring.cancel(id).unwrap();
        let (_, mut last) = final_of(&mut ring, id);
        let buf = last.take_buf().unwrap().into_vec().unwrap();
        match outcome {
            CancelOutcome::TooLate => {
                assert_eq!(last.result().as_ref().unwrap(), &4096);
                assert_eq!(buf, contents);
            }
            CancelOutcome::Cancelled if !in_kernel => {
                assert!(last.is_cancelled(), "{last:?}");
                assert!(
                    buf.is_empty(),
                    "a read that never ran leaves its buffer untouched"
                );
            }
            other => panic!("round {round}: a read in the kernel reported {other:?}"),
        }
    }
    Outcome::Pass
}

/// Case 15: Drop the ring with 1,000 polls, reads and timeouts in flight: no hang, every buffer
/// freed, the fd count back where it was.
pub fn c15_drop_ring_with_ops_in_flight(h: &Harness) -> Outcome {
    let fds_before = fd_count();
    let live_before = live_tracked();
    {
        let mut ring = h.ring();
        let pipes: Vec<_> = (0..10).map(|_| pipe()).collect();
        for i in 0..1000usize {
            let (rd, _) = &pipes[i % pipes.len()];
            let id = match i % 3 {
                0 => ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), i as u64),
                1 => ring.submit(
                    Read::new(
                        rd.as_raw_fd(),
                        Vec::with_capacity(TRACKED_SIZE),
                        CURRENT_POSITION,
                    ),
                    i as u64,
                ),
                _ => ring.submit(Timeout::after(Duration::from_secs(3600)), i as u64),
            };
            id.unwrap();
        }
        ring.wait(0, None).unwrap();
        assert_eq!(ring.in_flight(), 1000);
        assert_eq!(
            live_tracked() - live_before,
            333,
            "the ring holds the read buffers"
        );
        let start = Instant::now();
        drop(ring);
        assert!(start.elapsed() < Duration::from_secs(30), "drop hung");
    }
    assert_eq!(live_tracked(), live_before, "buffers leaked by the drop");
    assert_eq!(fd_count(), fds_before, "descriptors leaked by the drop");
    // Completions waiting in the queue are freed too.
    {
        let mut ring = h.ring();
        let (rd, wr) = pipe();
        write_fd(wr.as_raw_fd(), b"abc");
        ring.submit(
            Read::new(
                rd.as_raw_fd(),
                Vec::with_capacity(TRACKED_SIZE),
                CURRENT_POSITION,
            ),
            1,
        )
        .unwrap();
        ring.wait(1, Some(LONG)).unwrap();
        assert_eq!(ring.ready(), 1);
        assert!(matches!(
            ring.completions().next().map(|c| c.into_output()),
            Some(Output::Buf(_))
        ));
        ring.submit(
            Read::new(
                rd.as_raw_fd(),
                Vec::with_capacity(TRACKED_SIZE),
                CURRENT_POSITION,
            ),
            2,
        )
        .unwrap();
        write_fd(wr.as_raw_fd(), b"def");
        ring.wait(1, Some(LONG)).unwrap();
    }
    assert_eq!(
        live_tracked(),
        live_before,
        "a queued completion's buffer leaked"
    );
    assert_eq!(fd_count(), fds_before);
    Outcome::Pass
}

/// Case 13b: Cancel after the wakeup (Viro's rule). A one-shot `Poll`, or an `EpollWait`, is
/// handed to the kernel; its pipe is written (the kernel sees the wakeup at once) and sometimes
/// drained again before the cancel. The cancel either wins (`Cancelled`, the op ends
/// `ECANCELED`) or loses (`TooLate`: the real result stands and arrives without any further
/// help — no later cancel can turn it into `ECANCELED`).
pub fn c13b_cancel_after_wakeup(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    let ep = epoll_create();
    epoll_add(ep.as_raw_fd(), rd.as_raw_fd(), libc::EPOLLIN as u32, 7);
    let rounds = rounds(400);
    let mut tally = std::collections::BTreeMap::new();
    for round in 0..rounds {
        let epoll_wait = round % 2 == 1;
        let drain = round % 4 >= 2;
        let id = if epoll_wait {
            let wait =
                oneloop::EpollWait::new(ep.as_raw_fd(), oneloop::EpollEvents::with_capacity(4));
            ring.submit(wait, round as u64).unwrap()
        } else {
            ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), round as u64)
                .unwrap()
        };
        // Hands the op to the kernel; nothing is ready yet.
        ring.wait(0, Some(Duration::ZERO)).unwrap();
        write_fd(wr.as_raw_fd(), b"x");
        if drain {
            read_fd(rd.as_raw_fd(), 16);
        }
        let outcome = ring.cancel(id).unwrap();
        let what = format!(
            "{} drain={drain}",
            if epoll_wait { "EpollWait" } else { "Poll" }
        );
        let got = collect(&mut ring, 1, LONG);
        assert_eq!(
            got.len(),
            1,
            "round {round} {what}: {outcome:?}, then no final completion"
        );
        let last = &got[0];
        assert_eq!(last.id(), id);
        match outcome {
            CancelOutcome::Cancelled => {
                assert!(
                    last.is_cancelled(),
                    "round {round} {what}: Cancelled but {last:?}"
                )
            }
            CancelOutcome::TooLate => {
                assert!(
                    !last.is_cancelled(),
                    "round {round} {what}: TooLate but {last:?}"
                );
                if epoll_wait {
                    assert!(
                        last.result().as_ref().is_ok_and(|&n| n >= 1),
                        "{what}: {last:?}"
                    );
                } else {
                    assert!(
                        last.poll_mask().is_some_and(|m| m.contains(PollMask::IN)),
                        "{what}: {last:?}"
                    );
                }
            }
            CancelOutcome::NotFound => {
                panic!("round {round} {what}: NotFound before its final completion")
            }
        }
        assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::NotFound);
        *tally
            .entry((what, format!("{outcome:?}")))
            .or_insert(0usize) += 1;
        if !drain {
            read_fd(rd.as_raw_fd(), 16);
        }
    }
    assert!(
        quiet(&mut ring, Duration::from_millis(20)).is_empty(),
        "an op ended twice"
    );
    note(&format!("c13b: {rounds} rounds: {tally:?}"));
    Outcome::Pass
}

/// Case 13c: Cancel file writes that may be running on a kernel worker (io_uring's io-wq, the
/// pool), by id and by fd: every answer matches the op's end — `Cancelled` ⇒ `ECANCELED`,
/// `TooLate` ⇒ its real result (or `TimedOut` from its own deadline), a cancel by fd counts
/// exactly the ops that end `ECANCELED`. (On io_uring an op running on io-wq is flagged by a
/// cancel that answers `ENOENT` or `EALREADY` and may still end `ECANCELED`: the ring waits for
/// its result before it answers.)
pub fn c13c_cancel_running_writes(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let file = TempFile::new("c13c", &[0u8; 4096]);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut tally = std::collections::BTreeMap::new();
    for round in 0..rounds(1_500) {
        if round % 100 == 0 {
            file.file.set_len(0).unwrap();
        }
        let mut ids = Vec::new();
        for _ in 0..1 + next(3) {
            let bufs = vec![vec![b'v'; 40_000], vec![b'w'; 40_000]];
            // Fresh offsets (the file is cut back every 100 rounds): each write allocates
            // blocks, so a no-wait attempt (aio) says EAGAIN and the write moves to the pool.
            let offset = (round as u64 % 100) * 262_144 + next(65_536);
            let op = oneloop::Writev::new(file.fd(), bufs, offset);
            let deadline = next(3) == 0;
            let sub = if deadline {
                op.deadline(Duration::from_micros(next(500)))
            } else {
                op.into()
            };
            ids.push((ring.submit(sub, round as u64).unwrap(), deadline));
        }
        if next(2) == 0 {
            ring.wait(0, Some(Duration::ZERO)).unwrap();
        }
        let mode = next(4);
        let (answers, count) = if mode == 0 {
            (Vec::new(), Some(ring.cancel_fd(file.fd()).unwrap()))
        } else {
            let answers: Vec<_> = ids
                .iter()
                .map(|(id, _)| ring.cancel(*id).unwrap())
                .collect();
            if mode == 1 {
                // Every op has had its answer: a cancel by fd now may cancel none of them,
                // whatever stage an op has moved on to meanwhile.
                ring.wait(0, Some(Duration::ZERO)).unwrap();
                let again = ring.cancel_fd(file.fd()).unwrap();
                assert_eq!(
                    again.cancelled, 0,
                    "round {round}: decided ops cancelled again"
                );
                *tally
                    .entry("by id, then by fd".to_string())
                    .or_insert(0usize) += 1;
            }
            (answers, None)
        };
        let finals = collect(&mut ring, ids.len(), LONG);
        assert_eq!(
            finals.len(),
            ids.len(),
            "round {round}: a final completion is missing"
        );
        let ended = |id: oneloop::OpId| finals.iter().find(|c| c.id() == id).expect("final");
        for (i, &(id, deadline)) in ids.iter().enumerate() {
            let c = ended(id);
            let what = if c.is_cancelled() {
                "ECANCELED"
            } else if c.is_timed_out() {
                assert!(deadline, "round {round}: TimedOut without a deadline");
                "TimedOut"
            } else {
                assert!(c.result().is_ok(), "round {round}: {c:?}");
                "done"
            };
            if let Some(answer) = answers.get(i) {
                match answer {
                    CancelOutcome::Cancelled => {
                        assert_eq!(what, "ECANCELED", "round {round}: Cancelled")
                    }
                    CancelOutcome::TooLate => {
                        assert_ne!(what, "ECANCELED", "round {round}: TooLate")
                    }
                    CancelOutcome::NotFound => panic!("round {round}: NotFound before the final"),
                }
                *tally.entry(format!("{answer:?} {what}")).or_insert(0usize) += 1;
            }
        }
        if let Some(count) = count {
            let cancelled = finals.iter().filter(|c| c.is_cancelled()).count();
            // Ops already finished (their completions waiting in the queue) are not reached.
            assert!(count.total() <= ids.len(), "round {round}: {count:?}");
            assert_eq!(count.cancelled, cancelled, "round {round}: {count:?}");
            *tally.entry("by fd".to_string()).or_insert(0) += 1;
        }
    }
    note(&format!("c13c: {tally:?}"));
    Outcome::Pass
}

/// Case 13d: `cancel_nowait` — a cancel nobody waits for, as a dropped future asks. The op
/// still ends exactly once, `ECANCELED` or with its real result, and hands its buffer back; on
/// io_uring the request waits for the next submission (no completion appears before a `wait`);
/// a timer ends at once; a later `cancel` answers `TooLate`; unknown and finished
/// ids are ignored. `take_completion` takes only a final completion that is newest.
pub fn c13d_cancel_nowait(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let (rd, wr) = pipe();
    // A pending read: ends ECANCELED with its buffer.
    let read = ring
        .submit(
            Read::new(rd.as_raw_fd(), Vec::with_capacity(64), CURRENT_POSITION),
            1,
        )
        .unwrap();
    assert!(
        ring.take_completion(read).is_none(),
        "a pending op was taken"
    );
    ring.cancel_nowait(read).unwrap();
    if h.kind == BackendKind::Uring {
        assert_eq!(ring.ready(), 0, "cancel_nowait waited for the kernel");
    }
    let (_, last) = final_of(&mut ring, read);
    assert!(last.is_cancelled(), "{last:?}");
    match last.into_output() {
        Output::Buf(b) => {
            let v = b.into_vec().expect("the Vec it was given");
            assert!(v.capacity() >= 64 && v.is_empty(), "{v:?}");
        }
        other => panic!("the buffer did not come back: {other:?}"),
    }
    // Finished and unknown ids: nothing happens.
    ring.cancel_nowait(read).unwrap();
    // A timer ends at once, on every backend.
    let timer = ring.submit(Timeout::after(LONG), 2).unwrap();
    ring.cancel_nowait(timer).unwrap();
    let done = ring
        .take_completion(timer)
        .expect("the timer ended at once");
    assert!(done.is_cancelled() && done.user_data() == 2, "{done:?}");
    // A multishot poll: its stream ends with one final completion.
    let multi = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN).multishot(), 3)
        .unwrap();
    ring.cancel_nowait(multi).unwrap();
    let (_, last) = final_of(&mut ring, multi);
    assert!(last.is_cancelled(), "{last:?}");
    // A later cancel answers what the op then does.
    let poll = ring
        .submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 4)
        .unwrap();
    ring.cancel_nowait(poll).unwrap();
    let outcome = ring.cancel(poll).unwrap();
    let (_, last) = final_of(&mut ring, poll);
    // The first request decides its end; the second is too late, and the poll ends once.
    assert_eq!(outcome, CancelOutcome::TooLate, "{last:?}");
    assert!(last.is_cancelled(), "{last:?}");
    // Racing the data: each read ends exactly once, with the bytes or ECANCELED.
    let rounds = rounds(2_000);
    let (mut cancelled, mut read_first) = (0usize, 0usize);
    for round in 0..rounds {
        let id = ring
            .submit(
                Read::new(rd.as_raw_fd(), Vec::with_capacity(8), CURRENT_POSITION),
                100 + round as u64,
            )
            .unwrap();
        if round % 2 == 0 {
            ring.wait(0, None).unwrap();
        }
        write_fd(wr.as_raw_fd(), b"x");
        if round % 3 == 0 {
            ring.wait(0, None).unwrap();
        }
        ring.cancel_nowait(id).unwrap();
        let (_, last) = final_of(&mut ring, id);
        assert_eq!(last.user_data(), 100 + round as u64);
        if last.is_cancelled() {
            cancelled += 1;
            assert_eq!(
                read_fd(rd.as_raw_fd(), 8),
                b"x",
                "a cancelled read took the byte"
            );
        } else {
            assert_eq!(last.result().as_ref().ok(), Some(&1), "{last:?}");
            read_first += 1;
        }
    }
    // A finished op's completion, and only the newest one, is taken.
    let nop = ring.submit(Nop, 5).unwrap();
    let taken = ring.take_completion(nop);
    if h.kind == BackendKind::Uring {
        assert!(taken.is_none(), "uring answers a Nop in the kernel");
        let (_, last) = final_of(&mut ring, nop);
        assert_eq!(last.user_data(), 5);
    } else {
        assert_eq!(taken.expect("ended in submit").user_data(), 5);
    }
    assert_eq!(ring.in_flight(), 0, "slots leaked");
    assert!(
        quiet(&mut ring, Duration::from_millis(20)).is_empty(),
        "an op ended twice"
    );
    // An EpollWait (on uring also the emulated kind, a poll of the epoll fd) whose poll has
    // fired on a set that is empty again, cancelled while the submission queue is full: making
    // room reaps its poll, and it must end rather than be re-armed.
    for (variant, builder) in h.epoll_wait_variants() {
        let mut ring = builder.entries(4).build().unwrap();
        let epfd = epoll_create();
        let (member, feed) = pipe();
        epoll_add(
            epfd.as_raw_fd(),
            member.as_raw_fd(),
            libc::EPOLLIN as u32,
            7,
        );
        let id = ring
            .submit(
                EpollWait::new(epfd.as_raw_fd(), EpollEvents::with_capacity(8)),
                9,
            )
            .unwrap();
        ring.wait(0, None).unwrap();
        write_fd(feed.as_raw_fd(), b"x");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(read_fd(member.as_raw_fd(), 8), b"x");
        let nops: Vec<_> = (0..4).map(|i| ring.submit(Nop, 100 + i).unwrap()).collect();
        ring.cancel_nowait(id).unwrap();
        let mut ended = None;
        let mut others = 0;
        for c in collect(&mut ring, nops.len() + 1, LONG) {
            if c.id() == id {
                ended = Some(c);
            } else {
                others += 1;
            }
        }
        let ended = ended.unwrap_or_else(|| panic!("{variant}: the EpollWait never ended"));
        assert!(
            ended.is_cancelled() || ended.result().is_ok(),
            "{variant}: {ended:?}"
        );
        assert_eq!(others, nops.len());
        assert_eq!(ring.in_flight(), 0, "{variant}: an op is left in flight");
    }
    note(&format!(
        "c13d: {rounds} rounds, {cancelled} cancelled, {read_first} read first"
    ));
    Outcome::Pass
}
