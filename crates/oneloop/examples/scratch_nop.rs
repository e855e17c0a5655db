//! Scratch: nop batches for strace/callgrind.
use oneloop::{BackendKind, Nop, Ring};
fn main() {
    let kind: BackendKind = std::env::args().nth(1).unwrap().parse().unwrap();
    let batch: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let rounds: usize = std::env::args().nth(3).unwrap().parse().unwrap();
    let mut ring = Ring::builder()
        .backend(kind)
        .entries((batch as u32 * 2).max(64))
        .build()
        .unwrap();
    let mut done = 0;
    for _ in 0..rounds {
        for _ in 0..batch {
            ring.submit(Nop, 0).unwrap();
        }
        ring.wait(batch, None).unwrap();
        done += ring.completions().count();
    }
    assert_eq!(done, batch * rounds);
}
