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

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn rings() -> impl Iterator<Item = (BackendKind, Ring)> {
    BackendKind::ALL.into_iter().filter_map(|kind| {
        match Ring::builder().backend(kind).in_flight_max(1).build() {
            Ok(ring) => Some((kind, ring)),
            Err(e) => {
                eprintln!("SKIP {kind}: {e}");
                None
            }
        }
    })
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
