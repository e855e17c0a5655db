//! The registered ring descriptor (`RingBuilder::register_ring_fd`, io_uring 5.18+): every
//! enter goes through the ring's index in its thread's table — submissions, blocking waits,
//! waits with a timeout, wakes from another thread — and each ring gives its place back when
//! dropped (a thread has 16). SKIP where io_uring or the feature is missing.
#![allow(missing_docs)]

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use oneloop::{BackendKind, Nop, Read, Ring, Timeout, Write, CURRENT_POSITION};

fn uring(register: bool) -> Result<Ring, String> {
    Ring::builder()
        .backend(BackendKind::Uring)
        .register_ring_fd(register)
        .build()
        .map_err(|e| format!("io_uring unavailable: {e}"))
}

fn registered(ring: &Ring) -> bool {
    !ring.describe().contains("ring fd not registered")
}

/// A write into a pipe read by a blocking wait, a timer, and a wake from another thread.
fn exercise(ring: &mut Ring) {
    let (r, w) = std::io::pipe().unwrap();
    ring.submit(
        Read::new(r.as_raw_fd(), Vec::with_capacity(8), CURRENT_POSITION),
        1,
    )
    .unwrap();
    ring.submit(
        Write::new(w.as_raw_fd(), b"ping".to_vec(), CURRENT_POSITION),
        2,
    )
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        ring.wait(1, Some(Duration::from_secs(10))).unwrap();
        got.extend(
            ring.completions()
                .map(|c| (c.user_data(), *c.result().as_ref().unwrap())),
        );
    }
    got.sort();
    assert_eq!(got, [(1, 4), (2, 4)]);

    let start = Instant::now();
    ring.submit(Timeout::after(Duration::from_millis(20)), 3)
        .unwrap();
    ring.wait(1, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(ring.completions().next().unwrap().user_data(), 3);
    assert!(start.elapsed() >= Duration::from_millis(19));

    let waker = ring.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.wake();
    });
    let start = Instant::now();
    ring.wait(1, Some(Duration::from_secs(10))).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "the wake ended the wait"
    );
    t.join().unwrap();
}

#[test]
fn a_ring_runs_with_its_descriptor_registered_and_without() {
    for register in [true, false] {
        let mut ring = match uring(register) {
            Ok(r) => r,
            Err(why) => return eprintln!("SKIP registered ring fd: {why}"),
        };
        if register && !registered(&ring) {
            return eprintln!("SKIP registered ring fd: refused here (Linux 5.18+)");
        }
        assert_eq!(registered(&ring), register, "{}", ring.describe());
        exercise(&mut ring);
    }
}

#[test]
fn a_thread_registers_sixteen_rings_and_each_drop_frees_a_place() {
    let first = match uring(true) {
        Ok(r) if registered(&r) => r,
        Ok(_) => return eprintln!("SKIP registered ring fd: refused here (Linux 5.18+)"),
        Err(why) => return eprintln!("SKIP registered ring fd: {why}"),
    };
    // Every test runs on its own thread: this thread's table holds only our rings.
    let mut rings = vec![first];
    for _ in 0..19 {
        rings.push(uring(true).unwrap());
    }
    let held = rings.iter().filter(|r| registered(r)).count();
    assert_eq!(
        held, 16,
        "a thread has 16 places; the rest enter by descriptor"
    );
    // Those past the limit work all the same.
    for ring in &mut rings {
        ring.submit(Nop, 9).unwrap();
        ring.wait(1, Some(Duration::from_secs(10))).unwrap();
        assert_eq!(ring.completions().next().unwrap().user_data(), 9);
    }
    // Dropping them gives the places back: without unregistering, none would be left.
    drop(rings);
    let again: Vec<Ring> = (0..16).map(|_| uring(true).unwrap()).collect();
    assert!(again.iter().all(registered), "every place is free again");
}
