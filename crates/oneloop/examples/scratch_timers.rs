//! Scratch: timers under callgrind.
use oneloop::{BackendKind, Ring, Timeout};
use std::time::Duration;
fn main() {
    let kind: BackendKind = std::env::args().nth(1).unwrap().parse().unwrap();
    const N: u64 = 100_000;
    let mut ring = Ring::builder()
        .backend(kind)
        .entries(4096)
        .in_flight_max(N as usize + 1)
        .build()
        .unwrap();
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
    for id in ids.iter().step_by(2) {
        ring.cancel(*id).unwrap();
    }
    let mut ended = 0;
    while ended < N as usize {
        ring.wait(1, None).unwrap();
        ended += ring.completions().count();
    }
}
