//! `nop`: submit and reap no-op ops in batches. Baseline: a loop written directly on the
//! `io-uring` crate, no abstraction, in the same process.

use std::time::{Duration, Instant};

use anyhow::Result;
use io_uring::{opcode, IoUring};
use oneloop::{BackendKind, Nop, Ring};

use super::{measure, Row};

pub fn run(kind: BackendKind, batch: usize, duration: Duration) -> Result<Row> {
    let ours = measure(|| ours(kind, batch, duration))?;
    let baseline = measure(|| raw(batch, duration))?;
    Ok(Row {
        workload: "nop",
        params: format!("batch={batch}"),
        backend: kind.name(),
        unit: "ops",
        ours,
        baseline_name: "raw io-uring crate loop",
        baseline,
    })
}

fn ours(kind: BackendKind, batch: usize, duration: Duration) -> Result<u64> {
    let mut ring = Ring::builder()
        .backend(kind)
        .entries((batch as u32 * 2).max(64))
        .build()?;
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            for _ in 0..batch {
                ring.submit(Nop, 0)?;
            }
            ring.wait(batch, None)?;
            done += ring.completions().count() as u64;
        }
    }
    Ok(done)
}

fn raw(batch: usize, duration: Duration) -> Result<u64> {
    let mut ring = IoUring::new((batch as u32 * 2).max(64))?;
    let start = Instant::now();
    let mut done = 0u64;
    let nop = opcode::Nop::new().build();
    while start.elapsed() < duration {
        for _ in 0..256 {
            for _ in 0..batch {
                push(&mut ring, &nop);
            }
            ring.submit_and_wait(batch)?;
            done += ring.completion().count() as u64;
        }
    }
    Ok(done)
}

#[allow(unsafe_code)]
fn push(ring: &mut IoUring, entry: &io_uring::squeue::Entry) {
    // SAFETY: a NOP names no memory; the SQ has room (batch <= entries / 2, drained each round).
    unsafe { ring.submission().push(entry) }.expect("room in the SQ");
}
