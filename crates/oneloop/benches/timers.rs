//! 100,000 pending timers per backend: arm them, cancel half, let the rest fire. Prints each
//! phase's time beside a baseline measured in the same run: a bare `BinaryHeap` doing the same
//! pushes and pops (the data structure's floor, no I/O), in alternating rounds; prints medians.
//! Run: `cargo bench -p oneloop --bench timers`.
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

const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!(
        "100,000 timers: arm all, cancel half, fire the rest (the rest are due within 5 ms); \
         {ROUNDS} rounds, each a fresh ring per backend beside the baseline, medians"
    );
    println!(
        "{:<8} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "backend", "arm", "cancel half", "fire rest", "total", "÷ baseline"
    );
    // Rounds alternate the baseline and every backend, so a noisy neighbour hits all alike.
    let mut base = Vec::new();
    let mut rows: Vec<Vec<(Duration, Duration, Duration)>> =
        vec![Vec::new(); BackendKind::ALL.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); BackendKind::ALL.len()];
    for _ in 0..ROUNDS {
        let b = baseline();
        base.push(b.as_secs_f64());
        for (i, kind) in BackendKind::ALL.into_iter().enumerate() {
            if let Some(r) = run(kind) {
                ratios[i].push((r.0 + r.1 + r.2).as_secs_f64() / b.as_secs_f64());
                rows[i].push(r);
            }
        }
    }
    let ms = |v: Vec<f64>| format!("{:.1}ms", median(v) * 1e3);
    for (i, kind) in BackendKind::ALL.into_iter().enumerate() {
        let r = &rows[i];
        if r.is_empty() {
            println!("{:<8} SKIP: the backend is unavailable here", kind.name());
            continue;
        }
        let col = |f: fn(&(Duration, Duration, Duration)) -> Duration| {
            ms(r.iter().map(|x| f(x).as_secs_f64()).collect())
        };
        println!(
            "{:<8} {:>10} {:>12} {:>10} {:>10} {:>10.2}",
            kind.name(),
            col(|x| x.0),
            col(|x| x.1),
            col(|x| x.2),
            col(|x| x.0 + x.1 + x.2),
            median(ratios[i].clone()),
        );
    }
    println!("{:<8} {:>47}", "baseline", ms(base));
    println!("(baseline: BinaryHeap push + pop of 100,000 entries in the same rounds; the ratio is each round's total over that round's baseline)");
}
