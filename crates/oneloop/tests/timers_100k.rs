//! 100,000 pending timers on every backend: arm them, cancel half, let the rest fire; every one
//! ends exactly once, as it should. The time each phase took is printed (never asserted).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use oneloop::{BackendKind, CancelOutcome, Ring, Timeout};

const N: u64 = 100_000;

fn run(kind: BackendKind) {
    let ring = Ring::builder()
        .backend(kind)
        .entries(4096)
        .in_flight_max(N as usize + 1)
        .build();
    let mut ring = match ring {
        Ok(ring) => ring,
        Err(e) => return eprintln!("SKIP {kind} timers_100k: {e}"),
    };
    let start = Instant::now();
    // Odd timers fire within 50-250 ms; even ones (cancelled below) would wait a minute.
    let delay = |i: u64| {
        if i.is_multiple_of(2) {
            Duration::from_secs(60)
        } else {
            Duration::from_millis(50 + i % 200)
        }
    };
    let ids: Vec<_> = (0..N)
        .map(|i| ring.submit(Timeout::after(delay(i)), i).unwrap())
        .collect();
    ring.wait(0, None).unwrap();
    let armed = start.elapsed();
    let mut cancelled = 0;
    for id in ids.iter().step_by(2) {
        assert_eq!(ring.cancel(*id).unwrap(), CancelOutcome::Cancelled);
        cancelled += 1;
    }
    let cancelled_at = start.elapsed();
    let mut seen = vec![false; N as usize];
    let (mut fired, mut ended_cancelled) = (0u64, 0u64);
    while fired + ended_cancelled < N {
        ring.wait(1, Some(Duration::from_secs(30))).unwrap();
        let batch: Vec<_> = ring.completions().collect();
        assert!(!batch.is_empty(), "timers stopped firing");
        for c in batch {
            let i = c.user_data() as usize;
            assert!(!seen[i], "timer {i} ended twice");
            seen[i] = true;
            if i.is_multiple_of(2) {
                assert!(c.is_cancelled(), "{c:?}");
                ended_cancelled += 1;
            } else {
                assert!(c.is_timed_out(), "{c:?}");
                fired += 1;
            }
        }
    }
    assert_eq!((fired, ended_cancelled, cancelled), (N / 2, N / 2, N / 2));
    assert_eq!(ring.in_flight(), 0);
    eprintln!(
        "{kind}: armed {N} in {armed:?}, cancelled half by {cancelled_at:?}, all ended by {:?}",
        start.elapsed()
    );
}

#[test]
fn hundred_thousand_timers() {
    for kind in BackendKind::ALL {
        match BackendKind::from_env().unwrap() {
            Some(forced) if forced != kind && forced != BackendKind::Auto => continue,
            _ => run(kind),
        }
    }
}
