//! Claimed ops (`Ring::set_waker`, `take`, `abandon`) on every backend: the completion stays in
//! the op's slot beside the waker, never joins the queue, and keeps the slot — so its index is
//! not reused — until taken; an abandoned op's completion is dropped on arrival (its
//! descriptor closed); and an id from a ring that is gone is not taken for a new ring's op,
//! although the new ring's slots restart their generations.
#![allow(missing_docs)]

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use oneloop::{Accept, BackendKind, CancelOutcome, Nop, Ring, Timeout};

#[path = "support/rings.rs"]
mod support_rings;
use support_rings::rings_with;

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A ring of each kind this machine runs, with room for one op; SKIP with the reason for the
/// others.
fn rings() -> impl Iterator<Item = (BackendKind, Ring)> {
    rings_with(|kind| Ring::builder().backend(kind).in_flight_max(1))
}

fn counter() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    (count, waker)
}

#[test]
fn a_claimed_completion_waits_in_its_slot_until_taken() {
    // `in_flight_max(1)`: one slot, so whether it is free is visible in what `submit` says.
    for (kind, mut ring) in rings() {
        let id = ring
            .submit(Timeout::after(Duration::from_millis(5)), 0)
            .unwrap();
        let (count, waker) = counter();
        ring.set_waker(id, &waker);
        assert!(ring.take(id).is_none(), "{kind}: nothing yet");
        while count.0.load(Ordering::Relaxed) == 0 {
            ring.wait(1, Some(Duration::from_secs(5))).unwrap();
        }
        assert_eq!(
            ring.ready(),
            0,
            "{kind}: a claimed completion never joins the queue"
        );
        assert_eq!(ring.in_flight(), 0, "{kind}");
        assert_eq!(
            ring.cancel(id).unwrap(),
            CancelOutcome::TooLate,
            "{kind}: finished, not yet taken"
        );
        let refused = ring.submit(Nop, 0).unwrap_err();
        assert_eq!(
            refused.error().kind(),
            std::io::ErrorKind::ResourceBusy,
            "{kind}: the slot is kept until its completion is taken"
        );
        let done = ring.take(id).expect("arrived");
        assert!(done.is_timed_out(), "{kind}: {done:?}");
        assert!(ring.take(id).is_none(), "{kind}: taken once");
        assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::NotFound, "{kind}");
        ring.call(Nop).unwrap();
    }
}

#[test]
fn an_abandoned_op_is_dropped_on_arrival_and_frees_its_slot() {
    for (kind, mut ring) in rings() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let id = ring.submit(Accept::new(listener.as_raw_fd()), 0).unwrap();
        let (count, waker) = counter();
        ring.set_waker(id, &waker);
        ring.abandon(id).unwrap();
        // The cancel may race a connection; either way nothing is queued, the accepted socket
        // (if any) is closed, and the slot comes back.
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap());
        for _ in 0..100 {
            if ring.in_flight() == 0 {
                break;
            }
            ring.wait(1, Some(Duration::from_millis(50))).unwrap();
        }
        assert_eq!((ring.in_flight(), ring.ready()), (0, 0), "{kind}");
        assert!(ring.take(id).is_none(), "{kind}");
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            0,
            "{kind}: an abandoned op wakes no one"
        );
        ring.call(Nop).expect("the slot is free again");
    }
}

#[test]
fn an_id_from_a_dropped_ring_is_not_a_new_rings_op() {
    for (kind, mut old) in rings() {
        let stale = old
            .submit(Timeout::after(Duration::from_secs(60)), 0)
            .unwrap();
        drop(old);
        let mut ring = Ring::builder()
            .backend(kind)
            .in_flight_max(1)
            .build()
            .unwrap();
        let id = ring
            .submit(Timeout::after(Duration::from_millis(5)), 0)
            .unwrap();
        assert_eq!(
            id.as_u64() & 0xFF_FFFF_FFFF_FFFF,
            stale.as_u64() & 0xFF_FFFF_FFFF_FFFF,
            "{kind}: the same slot and generation"
        );
        assert_ne!(id, stale, "{kind}: told apart by the ring's tag");
        let (count, waker) = counter();
        ring.set_waker(stale, &waker);
        ring.abandon(stale).unwrap();
        assert_eq!(
            ring.cancel(stale).unwrap(),
            CancelOutcome::NotFound,
            "{kind}"
        );
        assert!(ring.take(stale).is_none(), "{kind}");
        let done = ring.call(Nop);
        assert!(
            done.is_err(),
            "{kind}: the one slot is still the live timeout's"
        );
        let mut got = None;
        while got.is_none() {
            ring.wait(1, Some(Duration::from_secs(5))).unwrap();
            got = ring.next_completion();
        }
        let got = got.unwrap();
        assert_eq!(got.id(), id, "{kind}");
        assert!(
            got.is_timed_out(),
            "{kind}: the new op ran untouched: {got:?}"
        );
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "{kind}");
    }
}

/// Waits until `count` reaches `n` (or 5 s pass), turning the ring.
fn wait_for(ring: &mut Ring, count: &Count, n: usize) {
    let start = std::time::Instant::now();
    while count.0.load(Ordering::Relaxed) < n && start.elapsed() < Duration::from_secs(5) {
        ring.wait(1, Some(Duration::from_millis(50))).unwrap();
    }
}

/// A watched multishot poll keeps its waker: events that came before `watch` wake it at once
/// and are taken as one; events after that wake it again. Its final completion comes after the
/// events not yet taken, which it does not swallow.
#[test]
fn a_watch_keeps_its_waker_and_its_events() {
    use std::io::Write;
    for (kind, _) in rings() {
        let mut ring = Ring::builder().backend(kind).build().unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let id = ring
            .submit(
                oneloop::Poll::new(reader.as_raw_fd(), oneloop::PollMask::IN).multishot(),
                0,
            )
            .unwrap();
        writer.write_all(b"a").unwrap();
        ring.wait(1, Some(Duration::from_secs(5))).unwrap();
        let (count, waker) = counter();
        // Events already queued: woken at once, and the claim keeps the waker.
        ring.watch(id, &waker);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "{kind}: woken for what came before"
        );
        let first = ring.take(id).expect("the queued event");
        assert!(first.is_more(), "{kind}: {first:?}");
        assert!(ring.take(id).is_none(), "{kind}: taken once");
        // Level data stays in the pipe; a new write is a new event.
        writer.write_all(b"b").unwrap();
        wait_for(&mut ring, &count, 2);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            2,
            "{kind}: woken again after a take"
        );
        // An event not taken, then the end: the event first, then the final completion.
        assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled, "{kind}");
        let mut taken = Vec::new();
        let start = std::time::Instant::now();
        while taken
            .last()
            .is_none_or(|c: &oneloop::Completion| c.is_more())
            && start.elapsed() < Duration::from_secs(5)
        {
            match ring.take(id) {
                Some(c) => taken.push(c),
                None => {
                    ring.wait(1, Some(Duration::from_millis(50))).unwrap();
                }
            }
        }
        let shape: Vec<bool> = taken.iter().map(|c| c.is_more()).collect();
        assert_eq!(
            shape,
            [true, false],
            "{kind}: the event, then the end: {taken:?}"
        );
        assert!(taken[1].is_cancelled(), "{kind}: {:?}", taken[1]);
        assert!(ring.take(id).is_none(), "{kind}: nothing after the final");
    }
}

/// Closes `old` and gives its number to another descriptor of `new`'s file, in one step
/// (`dup2`): what a close followed by an open that reuses the number does, without another
/// test thread's descriptors taking the number in between.
fn reuse_number(old: impl std::os::fd::IntoRawFd, new: &impl AsRawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let number = old.into_raw_fd();
    // SAFETY: no pointers; `number` was ours (now closed by dup2 and reused for `new`'s file),
    // and the returned value owns it.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::dup2(new.as_raw_fd(), number), number);
        std::os::fd::OwnedFd::from_raw_fd(number)
    }
}

/// A socket closed right after its op is abandoned, its number taken at once by a new socket:
/// the abandoned op must not act on the new one. On io_uring a request still queued for the
/// kernel names the descriptor by number, so `abandon` submits the queue first (found by the
/// model test under faults, where a `Connect` abandoned while queued connected the next
/// `Connect`'s socket, which then failed with `EISCONN`).
#[test]
fn an_abandoned_op_never_acts_on_the_next_file_with_its_number() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = || {
        // SAFETY: no pointers; the descriptor is fresh and owned by the returned value.
        #[allow(unsafe_code)]
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            OwnedFd::from_raw_fd(fd)
        }
    };
    for (kind, mut ring) in rings_with(|kind| Ring::builder().backend(kind)) {
        for round in 0..20 {
            let first = socket();
            let number = first.as_raw_fd();
            let id = ring.submit(oneloop::Connect::new(number, addr), 0).unwrap();
            ring.abandon(id).unwrap();
            let second = socket();
            let _same_number = reuse_number(first, &second);
            ring.wait(0, Some(Duration::from_millis(20))).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            ring.wait(0, None).unwrap();
            // SAFETY: a sockaddr_storage buffer of the size given.
            #[allow(unsafe_code)]
            let connected = unsafe {
                let mut storage: libc::sockaddr_storage = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                libc::getpeername(
                    second.as_raw_fd(),
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                ) == 0
            };
            assert!(
                !connected,
                "{kind}, round {round}: the abandoned Connect connected the new socket"
            );
            // Keep the listener's backlog short.
            listener.set_nonblocking(true).unwrap();
            while listener.accept().is_ok() {}
        }
        eprintln!("PASS {kind}: abandoned ops stay on their own file");
    }
}

/// The same on the blocking pool: a file write handed to a pool worker (epoll: this
/// filesystem's buffered writes go there) and held back there a little (an injected delay),
/// abandoned, its file closed and another opened with the same number: the worker writes into
/// the first file, never into the second — the job works on a duplicate of the descriptor.
#[test]
fn an_abandoned_pool_job_never_acts_on_the_next_file_with_its_number() {
    use oneloop::fault::{Fault, Plan};
    use oneloop::Write;
    let _delays = Plan::new(7).rate(Fault::PoolDelay, 1_000_000).install();
    let dir = std::env::temp_dir().join(format!("oneloop-pool-fd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (kind, mut ring) in rings_with(|kind| Ring::builder().backend(kind)) {
        let mut pooled = 0;
        for round in 0..20 {
            let (first_path, second_path) = (dir.join("first"), dir.join("second"));
            let first = std::fs::File::create(&first_path).unwrap();
            let number = first.as_raw_fd();
            let jobs = ring.stats().pool_jobs;
            let id = ring
                .submit(Write::new(number, vec![b'x'; 4096], 0), 0)
                .unwrap();
            pooled += ring.stats().pool_jobs - jobs;
            // Long enough for a worker to take the job (it then sleeps up to 2 ms before its
            // write): the abandon finds it running, too late to cancel.
            std::thread::sleep(Duration::from_micros(500));
            ring.abandon(id).unwrap();
            let second = std::fs::File::create(&second_path).unwrap();
            let _same_number = reuse_number(first, &second);
            // The delayed job runs (at most 2 ms); the ring collects it.
            std::thread::sleep(Duration::from_millis(5));
            ring.wait(0, Some(Duration::from_millis(5))).unwrap();
            let written = std::fs::metadata(&second_path).unwrap().len();
            assert_eq!(
                written, 0,
                "{kind}, round {round}: the abandoned write went into the next file"
            );
            drop(second);
        }
        eprintln!("PASS {kind}: abandoned pool jobs stay on their own file ({pooled} of 20 went to the pool)");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
