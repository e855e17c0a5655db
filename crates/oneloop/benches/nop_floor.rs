//! How close the ring's own cost per op is to the least any ring of its shape can cost.
//!
//! Three loops submit no-op requests to io_uring in batches, wait, and drain what completed:
//! * `raw`: the `io-uring` crate alone (a 64-byte SQE in, a 16-byte CQE out, nothing kept);
//! * `floor`: the least a ring with oneloop's representation does — each op owned by a
//!   generational slot from submit to completion, and handed back in an 80-byte completion
//!   (id, user data, `io::Result`, `more`, `Output`) queued and drained by value, the slot
//!   freed at the drain. Nothing else: no cancel, deadlines, claims, descriptor index, checks;
//! * `ours`: [`Ring`] on io_uring, all of that included.
//!
//! Rounds alternate the three so that a noisy machine hits all alike; prints medians and the
//! ratios `ours ÷ raw`, `floor ÷ raw` (the best a ring of this shape can reach) and
//! `ours ÷ floor`. Run: `cargo bench -p oneloop --bench nop_floor`.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use io_uring::{opcode, IoUring};
use oneloop::{BackendKind, Nop, Op, Output, Ring};

/// What the floor hands back per op: the same fields, and size, as `oneloop::Completion`
/// (read by whoever takes it; here the drain drops them).
#[allow(dead_code)]
struct Done {
    id: u64,
    user_data: u64,
    result: io::Result<u32>,
    more: bool,
    output: Output,
}

enum Slot {
    Free {
        generation: u32,
        next: u32,
    },
    Live {
        generation: u32,
        op: Op,
        user_data: u64,
    },
    Finished {
        generation: u32,
    },
}

const END: u32 = u32::MAX;

/// The floor ring (see the module doc); `Nop` is the only op it knows.
struct Floor {
    ring: IoUring,
    slots: Vec<Slot>,
    free: u32,
    ready: VecDeque<Done>,
}

impl Floor {
    fn new(entries: u32, capacity: u32) -> io::Result<Floor> {
        let slots = (0..capacity)
            .map(|i| Slot::Free {
                generation: 0,
                next: if i + 1 < capacity { i + 1 } else { END },
            })
            .collect();
        Ok(Floor {
            ring: IoUring::new(entries)?,
            slots,
            free: 0,
            ready: VecDeque::with_capacity(capacity as usize),
        })
    }

    #[inline]
    fn submit(&mut self, op: Op, user_data: u64) -> u64 {
        let index = self.free;
        let slot = &mut self.slots[index as usize];
        let Slot::Free { generation, next } = *slot else {
            panic!("the floor ring is full")
        };
        self.free = next;
        let id = (u64::from(generation) << 24) | u64::from(index);
        let sqe = match op {
            Op::Nop(_) => opcode::Nop::new().build().user_data(id),
            _ => unreachable!("the floor ring runs only Nop"),
        };
        *slot = Slot::Live {
            generation,
            op,
            user_data,
        };
        // SAFETY: a NOP names no memory; the SQ has room (at most `entries` ops per batch,
        // every batch waited for).
        unsafe { self.ring.submission().push(&sqe) }.expect("room in the SQ");
        id
    }

    fn wait(&mut self, want: usize) -> io::Result<()> {
        self.ring.submit_and_wait(want)?;
        for cqe in self.ring.completion() {
            let id = cqe.user_data();
            let (index, generation) = ((id & 0xFF_FFFF) as usize, (id >> 24) as u32);
            let slot = &mut self.slots[index];
            if !matches!(slot, Slot::Live { generation: g, .. } if *g == generation) {
                continue;
            }
            let Slot::Live { op, user_data, .. } =
                std::mem::replace(slot, Slot::Finished { generation })
            else {
                unreachable!("matched above")
            };
            let res = cqe.result();
            let output = match op {
                Op::Nop(_) => Output::None,
                _ => unreachable!("the floor ring runs only Nop"),
            };
            let result = match res {
                0.. => Ok(res as u32),
                _ => Err(io::Error::from_raw_os_error(-res)),
            };
            self.ready.push_back(Done {
                id,
                user_data,
                result,
                more: false,
                output,
            });
        }
        Ok(())
    }

    fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, Done> {
        for done in self.ready.iter().filter(|d| !d.more) {
            let (index, generation) = ((done.id & 0xFF_FFFF) as u32, (done.id >> 24) as u32);
            let slot = &mut self.slots[index as usize];
            if matches!(slot, Slot::Finished { generation: g } if *g == generation) {
                *slot = Slot::Free {
                    generation: generation + 1,
                    next: self.free,
                };
                self.free = index;
            }
        }
        self.ready.drain(..)
    }
}

#[derive(Clone, Copy)]
enum Side {
    Raw,
    Floor,
    Ours,
}

/// Ops per second of `side` submitting batches of `batch` for `time`.
fn run(side: Side, batch: usize, time: Duration) -> io::Result<f64> {
    let entries = (batch as u32 * 2).max(64);
    let start = Instant::now();
    let mut done = 0u64;
    match side {
        Side::Raw => {
            let mut ring = IoUring::new(entries)?;
            let nop = opcode::Nop::new().build();
            while start.elapsed() < time {
                for _ in 0..256 {
                    for _ in 0..batch {
                        // SAFETY: a NOP names no memory; the SQ has room, as above.
                        unsafe { ring.submission().push(&nop) }.expect("room in the SQ");
                    }
                    ring.submit_and_wait(batch)?;
                    done += ring.completion().count() as u64;
                }
            }
        }
        Side::Floor => {
            let mut ring = Floor::new(entries, 16_384)?;
            while start.elapsed() < time {
                for _ in 0..256 {
                    for _ in 0..batch {
                        ring.submit(Op::Nop(Nop), 0);
                    }
                    ring.wait(batch)?;
                    done += ring.drain().count() as u64;
                }
            }
        }
        Side::Ours => {
            let mut ring = Ring::builder()
                .backend(BackendKind::Uring)
                .entries(entries)
                .build()?;
            while start.elapsed() < time {
                for _ in 0..256 {
                    for _ in 0..batch {
                        ring.submit(Nop, 0).map_err(io::Error::from)?;
                    }
                    ring.wait(batch, None)?;
                    done += ring.completions().count() as u64;
                }
            }
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> io::Result<()> {
    if let Err(e) = IoUring::new(8) {
        println!("SKIP: io_uring unavailable here: {e}");
        return Ok(());
    }
    println!(
        "Nop batches on io_uring: {ROUNDS} alternating rounds of 0.2 s per side, medians \
         (M ops/s)"
    );
    println!(
        "{:<7} {:>8} {:>8} {:>8} {:>11} {:>12} {:>12}",
        "batch", "raw", "floor", "ours", "ours ÷ raw", "floor ÷ raw", "ours ÷ floor"
    );
    let round = Duration::from_millis(200);
    for batch in [1, 32] {
        let mut rates = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (i, side) in [Side::Raw, Side::Floor, Side::Ours].into_iter().enumerate() {
                rates[i].push(run(side, batch, round)? / 1e6);
            }
        }
        let [raw, floor, ours] = rates.map(median);
        println!(
            "{:<7} {:>8.2} {:>8.2} {:>8.2} {:>11.2} {:>12.2} {:>12.2}",
            batch,
            raw,
            floor,
            ours,
            ours / raw,
            floor / raw,
            ours / floor
        );
    }
    Ok(())
}
