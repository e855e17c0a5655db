//! No heap allocation per op in steady state: `Nop`, `Read`, `Write` and `Poll`, submit and
//! reap, with the caller's buffers recycled. A counting allocator counts every allocation made
//! by this test's thread while the measured loop runs.
#![allow(missing_docs)]

use std::os::fd::AsRawFd;

use oneloop::{BackendKind, Nop, Poll, PollMask, Read, Ring, Write};

#[path = "support/counting.rs"]
mod counting;

const WARMUP: usize = 1_000;
const MEASURED: usize = 10_000;

/// Runs `step` WARMUP times, then counts this thread's allocations over MEASURED more.
fn allocations_per_op(name: &str, mut step: impl FnMut()) -> usize {
    for _ in 0..WARMUP {
        step();
    }
    counting::start();
    for _ in 0..MEASURED {
        step();
    }
    let n = counting::stop();
    eprintln!("{name}: {n} allocations over {MEASURED} ops");
    n
}

fn one(ring: &mut Ring) -> oneloop::Completion {
    ring.wait(1, None).unwrap();
    let c = ring.next_completion().unwrap();
    assert!(c.result().is_ok(), "{c:?}");
    c
}

fn steady_state(kind: BackendKind) {
    let mut ring = match Ring::builder().backend(kind).build() {
        Ok(r) => r,
        Err(e) => return eprintln!("SKIP {kind} alloc_steady: {e}"),
    };
    let path = std::env::temp_dir().join(format!("oneloop-alloc-{}-{kind}", std::process::id()));
    std::fs::write(&path, vec![1u8; 4096]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let fd = file.as_raw_fd();
    let (rd, wr) = std::io::pipe().unwrap();
    std::io::Write::write_all(&mut &wr, b"always readable").unwrap();

    // The counter itself works: one allocation per step is seen as exactly that.
    let control = allocations_per_op("control (allocates once per step)", || {
        std::hint::black_box(Vec::<u8>::with_capacity(1));
    });
    assert_eq!(
        control, MEASURED,
        "the counting allocator misses allocations"
    );
    let nop = allocations_per_op("Nop", || {
        ring.submit(Nop, 0).unwrap();
        one(&mut ring);
    });
    let mut buf = Some(Vec::with_capacity(4096));
    let read = allocations_per_op("Read", || {
        ring.submit(Read::new(fd, buf.take().unwrap(), 0), 1)
            .unwrap();
        let mut v = one(&mut ring).take_buf().unwrap().into_vec().unwrap();
        assert_eq!(v.len(), 4096);
        v.clear();
        buf = Some(v);
    });
    let mut data = Some(vec![2u8; 4096]);
    let write = allocations_per_op("Write", || {
        ring.submit(Write::new(fd, data.take().unwrap(), 0), 2)
            .unwrap();
        data = Some(one(&mut ring).take_buf().unwrap().into_vec().unwrap());
    });
    let poll = allocations_per_op("Poll", || {
        ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), 3)
            .unwrap();
        assert!(one(&mut ring).poll_mask().unwrap().contains(PollMask::IN));
    });
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        (nop, read, write, poll),
        (0, 0, 0, 0),
        "allocations in steady state ({kind})"
    );
}

#[test]
fn no_allocation_per_op_in_steady_state() {
    for kind in oneloop::BackendKind::ALL {
        match BackendKind::from_env().unwrap() {
            Some(forced) if forced != kind && forced != BackendKind::Auto => continue,
            _ => steady_state(kind),
        }
    }
}
