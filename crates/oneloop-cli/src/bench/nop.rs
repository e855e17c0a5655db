//! `nop`: submit and reap no-op ops in batches. Baseline on uring: a loop written directly on
//! the `io-uring` crate, no abstraction, in the same process. On aio and epoll a `Nop` never
//! leaves user space, so its fitting baseline is the least a user-space completion queue does:
//! push a `(user_data, result)` record per op into a `VecDeque` and pop them all.
//!
//! Each side's time is split into [`ROUNDS`] rounds taken in turn (ours, baseline, ours, ...),
//! so that the shared machine's drift falls on both alike; each side's figure is its total.

use std::time::{Duration, Instant};

use anyhow::Result;
use io_uring::{opcode, IoUring};
use oneloop::{BackendKind, Nop, Ring};

use super::{measure, Row, Sample};

/// Alternating rounds per side.
const ROUNDS: u32 = 5;

pub fn run(kind: BackendKind, batch: usize, duration: Duration) -> Result<Row> {
    let round = duration / ROUNDS;
    let baseline_name = match kind {
        BackendKind::Uring => "raw io-uring crate loop",
        BackendKind::Aio | BackendKind::Epoll | BackendKind::Auto => {
            "user-space queue: VecDeque push + pop per op"
        }
    };
    let (mut ours_total, mut baseline) = (Sample::default(), Sample::default());
    for _ in 0..ROUNDS {
        ours_total.absorb(measure(|| ours(kind, batch, round))?);
        baseline.absorb(match kind {
            BackendKind::Uring => measure(|| raw(batch, round))?,
            _ => measure(|| user_queue(batch, round))?,
        });
    }
    let ours = ours_total;
    Ok(Row {
        workload: "nop",
        params: format!("batch={batch}"),
        backend: kind.name(),
        unit: "ops",
        ours,
        baseline_name,
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

fn user_queue(batch: usize, duration: Duration) -> Result<u64> {
    let mut queue = std::collections::VecDeque::with_capacity(batch * 2);
    let start = Instant::now();
    let mut done = 0u64;
    let mut tag = 0u64;
    while start.elapsed() < duration {
        for _ in 0..256 {
            for _ in 0..batch {
                tag += 1;
                queue.push_back(std::hint::black_box((tag, 0i32)));
            }
            while let Some(record) = queue.pop_front() {
                std::hint::black_box(record);
                done += 1;
            }
        }
    }
    Ok(done)
}

#[allow(unsafe_code)]
fn push(ring: &mut IoUring, entry: &io_uring::squeue::Entry) {
    // SAFETY: a NOP names no memory; the SQ has room (batch <= entries / 2, drained each round).
    unsafe { ring.submission().push(entry) }.expect("room in the SQ");
}
