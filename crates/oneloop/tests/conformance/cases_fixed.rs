//! Registered buffers (`RingBuilder::fixed_buffers`): reads and writes into a pool's buffers
//! on every backend — `READ_FIXED`/`WRITE_FIXED` on io_uring, ordinary buffers elsewhere —
//! with the same bytes and results as any buffer; buffers go back to their pool whatever
//! happens to the op (cancel, the ring dropped with it in flight); a buffer of another ring's
//! pool is an ordinary buffer; bad sizes are refused at `build`.

use std::os::fd::AsRawFd;
use std::time::Duration;

use oneloop::{BackendKind, CancelOutcome, FixedBuf, IoBuf, Read, Ring, Write, CURRENT_POSITION};

use crate::harness::*;

fn run_one(ring: &mut Ring, op: impl Into<oneloop::Submission>) -> oneloop::Completion {
    let id = ring.submit(op, 0).unwrap();
    final_of(ring, id).1
}

fn fixed_of(c: &mut oneloop::Completion) -> FixedBuf {
    FixedBuf::from_buf(c.take_buf().expect("a buffer comes back")).expect("a FixedBuf")
}

/// Whether the pool is registered; on io_uring it must be, unless the memlock limit refused it
/// (then said so, and the rest of the case still holds).
fn registered_here(h: &Harness, ring: &Ring) -> bool {
    let pool = ring.fixed_buffers().expect("asked for");
    match (h.kind, pool.registered()) {
        (BackendKind::Uring, Ok(())) => true,
        (BackendKind::Uring, Err(why)) => {
            assert!(why.contains("RLIMIT_MEMLOCK"), "refused: {why}");
            note(&format!("  note: fixed buffers not registered here: {why}"));
            false
        }
        (_, Ok(())) => panic!("only io_uring registers buffers"),
        (_, Err(_)) => false,
    }
}

/// F1: The pool hands out each buffer once, page-aligned; writes and reads through them at
/// offsets (a short read at end of file, a read after bytes already in the buffer, a pipe)
/// give the same results as any buffer; on io_uring each is a fixed-buffer request
/// (`Stats::fixed_buffer_ops`), elsewhere none is; every buffer returns to the pool.
pub fn f1_fixed_buffers_read_write(h: &Harness) -> Outcome {
    let mut ring = h.builder().fixed_buffers(4, 8192).build().unwrap();
    let pool = ring.fixed_buffers().unwrap().clone();
    assert_eq!((pool.count(), pool.size(), pool.available()), (4, 8192, 4));
    let registered = registered_here(h, &ring);
    assert!(
        ring.describe().contains("fixed buffers 4 x 8192 B"),
        "{}",
        ring.describe()
    );

    let taken: Vec<FixedBuf> = std::iter::from_fn(|| pool.take()).collect();
    assert_eq!(taken.len(), 4, "each buffer once, then none");
    let mut indexes: Vec<u16> = taken.iter().map(|b| b.index()).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2, 3]);
    for b in &taken {
        assert_eq!(b.as_slice().as_ptr() as usize % 4096, 0, "page-aligned");
        assert_eq!((b.len(), b.capacity()), (0, 8192));
    }
    drop(taken);
    assert_eq!(pool.available(), 4, "dropped buffers go back");

    let before = ring.stats().fixed_buffer_ops;
    let file = TempFile::new("fixed", b"");
    let fd = file.fd();
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let mut out = pool.take().unwrap();
    out.extend_from_slice(&pattern);
    let mut c = run_one(&mut ring, Write::new(fd, out, 0));
    assert_eq!(c.result().as_ref().unwrap(), &8192, "{c:?}");
    assert_eq!(
        fixed_of(&mut c).as_slice(),
        &pattern[..],
        "a write gives it back as it was"
    );

    let mut c = run_one(&mut ring, Read::new(fd, pool.take().unwrap(), 0));
    assert_eq!(c.result().as_ref().unwrap(), &8192, "{c:?}");
    assert_eq!(fixed_of(&mut c).as_slice(), &pattern[..]);

    let mut c = run_one(&mut ring, Read::new(fd, pool.take().unwrap(), 8000));
    assert_eq!(c.result().as_ref().unwrap(), &192, "short read at EOF");
    assert_eq!(fixed_of(&mut c).as_slice(), &pattern[8000..]);

    let mut prefixed = pool.take().unwrap();
    prefixed.extend_from_slice(b">>");
    let mut c = run_one(&mut ring, Read::new(fd, prefixed, 0));
    assert_eq!(c.result().as_ref().unwrap(), &8190, "fills len..capacity");
    let got = fixed_of(&mut c);
    assert_eq!(&got.as_slice()[..2], b">>");
    assert_eq!(&got.as_slice()[2..], &pattern[..8190]);
    drop(got);

    let fixed_ops = ring.stats().fixed_buffer_ops - before;
    assert_eq!(
        fixed_ops,
        if registered { 4 } else { 0 },
        "READ_FIXED/WRITE_FIXED exactly where the pool is registered"
    );

    // A stream at its current position.
    let (r, w) = pipe();
    let mut msg = pool.take().unwrap();
    msg.extend_from_slice(b"through a pipe");
    let c = run_one(&mut ring, Write::new(w.as_raw_fd(), msg, CURRENT_POSITION));
    assert_eq!(c.result().as_ref().unwrap(), &14);
    drop(c);
    let mut c = run_one(
        &mut ring,
        Read::new(r.as_raw_fd(), pool.take().unwrap(), CURRENT_POSITION),
    );
    assert_eq!(fixed_of(&mut c).as_slice(), b"through a pipe");
    drop(c);
    assert_eq!(pool.available(), 4, "every buffer is back");
    Outcome::Pass
}

/// F2: A fixed buffer in an op that is cancelled, or whose ring is dropped with it in flight,
/// goes back to its pool (the kernel is done with it first); a buffer of another ring's pool
/// is an ordinary buffer on this ring (no fixed request naming an index it never
/// registered), also after its own ring is gone.
pub fn f2_fixed_buffers_cancel_drop_and_foreign(h: &Harness) -> Outcome {
    let mut ring = h.builder().fixed_buffers(2, 4096).build().unwrap();
    let pool = ring.fixed_buffers().unwrap().clone();
    let (r, w) = pipe();
    let id = ring
        .submit(
            Read::new(r.as_raw_fd(), pool.take().unwrap(), CURRENT_POSITION),
            1,
        )
        .unwrap();
    ring.wait(0, Some(Duration::from_millis(20))).unwrap();
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    let (_, mut c) = final_of(&mut ring, id);
    assert!(c.is_cancelled(), "{c:?}");
    assert!(fixed_of(&mut c).is_empty());
    drop(c);
    assert_eq!(pool.available(), 2);

    // Dropped with a read in flight: the buffer comes back once the ring is gone.
    ring.submit(
        Read::new(r.as_raw_fd(), pool.take().unwrap(), CURRENT_POSITION),
        2,
    )
    .unwrap();
    ring.wait(0, Some(Duration::from_millis(20))).unwrap();
    assert_eq!(pool.available(), 1);
    drop(ring);
    assert_eq!(pool.available(), 2, "the dropped ring gave its buffer back");

    // The old ring's buffer on a new ring (with a pool of its own): an ordinary buffer.
    let mut other = h.builder().fixed_buffers(2, 4096).build().unwrap();
    let before = other.stats().fixed_buffer_ops;
    write_fd(w.as_raw_fd(), b"foreign");
    let mut c = run_one(
        &mut other,
        Read::new(r.as_raw_fd(), pool.take().unwrap(), CURRENT_POSITION),
    );
    assert_eq!(c.result().as_ref().unwrap(), &7, "{c:?}");
    assert_eq!(fixed_of(&mut c).as_slice(), b"foreign");
    assert_eq!(
        other.stats().fixed_buffer_ops,
        before,
        "another pool's buffer is not named as a fixed buffer"
    );
    Outcome::Pass
}

/// F3: Sizes io_uring cannot register are refused at `build` with `InvalidInput`, on every
/// backend alike; a fixed buffer serves `O_DIRECT` (aligned), where the filesystem allows it.
pub fn f3_fixed_buffers_bad_sizes_and_o_direct(h: &Harness) -> Outcome {
    for (count, size) in [(0, 4096), (16_385, 4096), (1, 0), (1, (1 << 30) + 1)] {
        let err = h.builder().fixed_buffers(count, size).build().unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{count} x {size}"
        );
        assert!(err.to_string().contains("fixed buffers"), "{err}");
    }
    let (_file, fd) = match crate::cases_disk::open_direct("fixed-direct") {
        Ok(v) => v,
        Err(why) => return Outcome::Skip(why),
    };
    let mut ring = h.builder().fixed_buffers(2, 8192).build().unwrap();
    let pool = ring.fixed_buffers().unwrap().clone();
    let mut out = pool.take().unwrap();
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 239) as u8).collect();
    out.extend_from_slice(&pattern);
    let c = run_one(&mut ring, Write::new(fd.as_raw_fd(), out, 4096));
    assert_eq!(c.result().as_ref().unwrap(), &4096, "{c:?}");
    drop(c);
    let mut c = run_one(
        &mut ring,
        Read::new(fd.as_raw_fd(), pool.take().unwrap(), 0),
    );
    assert_eq!(c.result().as_ref().unwrap(), &8192, "{c:?}");
    let got = fixed_of(&mut c);
    assert_eq!(&got.as_slice()[..4096], &[7u8; 4096][..]);
    assert_eq!(&got.as_slice()[4096..], &pattern[..]);
    Outcome::Pass
}
