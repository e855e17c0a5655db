//! 100,000 pending timers per backend: arm them, cancel half, let the rest fire. Prints each
//! phase's time beside a baseline measured in the same run: a bare `BinaryHeap` doing the same
//! pushes and pops (the data structure's floor, no I/O). Run: `cargo bench -p oneloop --bench timers`.
#![allow(missing_docs)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use oneloop::{BackendKind, Ring, Timeout};

const N: u64 = 100_000;

fn baseline() -> Duration {
    let start = Instant::now();
    let now = Instant::now();
    let mut heap = BinaryHeap::with_capacity(N as usize);
    for i in 0..N {
        heap.push(Reverse((now + Duration::from_micros(i % 5000), i)));
    }
    while let Some(Reverse(entry)) = heap.pop() {
        std::hint::black_box(entry);
    }
    start.elapsed()
}

fn run(kind: BackendKind) -> Option<(Duration, Duration, Duration)> {
    let mut ring = Ring::builder()
        .backend(kind)
        .entries(4096)
        .in_flight_max(N as usize + 1)
        .build()
        .ok()?;
    let start = Instant::now();
    // Odd timers are due within 5 ms; even ones in a minute (they are cancelled).
    let ids: Vec<_> = (0..N)
        .map(|i| {
            let after = if i % 2 == 0 {
                Duration::from_secs(60)
            } else {
                Duration::from_micros(i % 5000)
            };
            ring.submit(Timeout::after(after), i).unwrap()
        })
        .collect();
    ring.wait(0, None).unwrap();
    let armed = start.elapsed();
    for id in ids.iter().step_by(2) {
        ring.cancel(*id).unwrap();
    }
    let cancelled = start.elapsed() - armed;
    let mut ended = 0;
    while ended < N as usize {
        ring.wait(1, None).unwrap();
        ended += ring.completions().count();
    }
    Some((armed, cancelled, start.elapsed() - armed - cancelled))
}

fn main() {
    let base = baseline();
    println!("100,000 timers: arm all, cancel half, fire the rest (the rest are due within 5 ms)");
    println!(
        "{:<8} {:>12} {:>14} {:>12} {:>12}",
        "backend", "arm", "cancel half", "fire rest", "total"
    );
    for kind in BackendKind::ALL {
        match run(kind) {
            Some((a, c, f)) => println!(
                "{:<8} {:>12.1?} {:>14.1?} {:>12.1?} {:>12.1?}",
                kind.name(),
                a,
                c,
                f,
                a + c + f
            ),
            None => println!("{:<8} unavailable here", kind.name()),
        }
    }
    println!("{:<8} {:>54.1?}", "baseline", base);
    println!("(baseline: BinaryHeap push + pop of 100,000 entries, same run)");
}
