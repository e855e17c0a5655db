//! What the io_uring enter settings change, measured beside each other in alternating rounds:
//!
//! * `RingBuilder::register_ring_fd` on (the default) or off: a `Nop` round trip — submit,
//!   one `io_uring_enter` that waits for it, reap — with the ring entered through its
//!   registered index or through its descriptor; once in a single-threaded process and once
//!   with a second thread alive (the kernel then counts a reference on the file per call);
//! * `RingBuilder::batch_wait(n, min_wait)`: the same round trip with waits batched, which a
//!   lone completion pays for with up to `min_wait` (what the setting trades: fewer wake-ups
//!   under load for a lone completion's latency).
//!
//! Prints medians of 7 rounds of 0.3 s per side. SKIP where io_uring or a feature is missing.
//! Run: `cargo bench -p oneloop --bench enter_settings`.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use oneloop::{BackendKind, Nop, Ring, RingBuilder};

const ROUNDS: usize = 7;
const ROUND: Duration = Duration::from_millis(300);

/// Nanoseconds per `Nop` round trip on a ring built by `builder`.
fn round_trip(builder: RingBuilder) -> f64 {
    let mut ring = builder.build().expect("io_uring");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND {
        for _ in 0..64 {
            ring.submit(Nop, 0).expect("submit");
            ring.wait(1, None).expect("wait");
            ring.completions().for_each(drop);
            n += 1;
        }
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Medians of `a` and `b`, measured in alternating rounds.
fn ab(a: impl Fn() -> RingBuilder, b: impl Fn() -> RingBuilder) -> (f64, f64) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        xs.push(round_trip(a()));
        ys.push(round_trip(b()));
    }
    (median(xs), median(ys))
}

fn uring() -> RingBuilder {
    Ring::builder().backend(BackendKind::Uring).entries(8)
}

fn main() {
    let probe = match uring().build() {
        Ok(ring) => ring,
        Err(e) => return println!("SKIP: io_uring unavailable: {e}"),
    };
    println!("Nop round trips on io_uring (submit, one enter waiting for it, reap): ns, medians of {ROUNDS} alternating rounds of {ROUND:?}");
    if probe.describe().contains("ring fd not registered") {
        println!("SKIP register_ring_fd: refused here (Linux 5.18+)");
    } else {
        let (on, off) = ab(uring, || uring().register_ring_fd(false));
        println!(
            "register_ring_fd  1 thread:  on {on:.0}, off {off:.0}, on ÷ off {:.3}",
            on / off
        );
        let other = std::thread::spawn(|| std::thread::sleep(ROUND * (2 * ROUNDS as u32 + 2)));
        let (on, off) = ab(uring, || uring().register_ring_fd(false));
        println!(
            "register_ring_fd  2 threads: on {on:.0}, off {off:.0}, on ÷ off {:.3}",
            on / off
        );
        other.join().unwrap();
    }
    let window = Duration::from_micros(50);
    let batched = uring().batch_wait(8, window).build().expect("io_uring");
    if batched.describe().contains("waits batched") {
        drop(batched);
        let (on, off) = ab(|| uring().batch_wait(8, window), uring);
        println!("batch_wait(8, {window:?}), a lone completion: on {on:.0}, off {off:.0} (each wait held up to the window)");
    } else {
        println!("SKIP batch_wait: IORING_FEAT_MIN_TIMEOUT missing (Linux 6.12+)");
    }
}
