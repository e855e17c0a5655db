//! Batched waits (`RingBuilder::batch_wait`, io_uring with `IORING_FEAT_MIN_TIMEOUT`, 6.12): a
//! wait that blocks asks the kernel for several completions and holds up to the batch's
//! minimum wait for them; a full batch, a timer or a wake from another thread still end it.
//! SKIP where io_uring or the feature is missing (the setting is then ignored).
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use oneloop::{BackendKind, Nop, Ring};

const WINDOW: Duration = Duration::from_millis(60);

/// A ring with batched waits, or why there is none here.
fn batched() -> Result<Ring, String> {
    let ring = Ring::builder()
        .backend(BackendKind::Uring)
        .batch_wait(8, WINDOW)
        .build()
        .map_err(|e| format!("io_uring unavailable: {e}"))?;
    if !ring.describe().contains("waits batched") {
        return Err("this kernel lacks IORING_FEAT_MIN_TIMEOUT (6.12+)".into());
    }
    Ok(ring)
}

#[test]
fn a_lone_completion_waits_for_the_batch_a_full_batch_does_not() {
    let mut ring = match batched() {
        Ok(r) => r,
        Err(why) => return eprintln!("SKIP batched waits: {why}"),
    };
    // One completion of the eight asked for: the kernel holds the wait for the window.
    let start = Instant::now();
    ring.submit(Nop, 1).unwrap();
    ring.wait(1, None).unwrap();
    let lone = start.elapsed();
    assert_eq!(ring.completions().count(), 1);
    assert!(
        lone >= WINDOW - Duration::from_millis(5),
        "a lone completion came back after {lone:?}, inside the {WINDOW:?} window"
    );
    // Eight at once: all of them in that one wait.
    for i in 0..8 {
        ring.submit(Nop, i).unwrap();
    }
    ring.wait(1, None).unwrap();
    assert_eq!(ring.completions().count(), 8, "the batch in one wait");
    eprintln!("batched wait: a lone completion after {lone:?} (window {WINDOW:?})");

    // Switched off (the default), the same lone completion is not held: with no batch the
    // wait asks for one; the settings say so.
    let plain = Ring::builder().backend(BackendKind::Uring).build().unwrap();
    assert!(
        !plain.describe().contains("waits batched"),
        "off by default"
    );
}

#[test]
fn a_wake_and_a_timer_still_end_a_batched_wait() {
    let mut ring = match batched() {
        Ok(r) => r,
        Err(why) => return eprintln!("SKIP batched waits: {why}"),
    };
    let waker = ring.waker();
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        waker.wake();
    });
    ring.wait(1, None).unwrap();
    t.join().unwrap();
    // Liveness, not speed: a lost wake would leave this wait blocked for ever.
    assert!(start.elapsed() < Duration::from_secs(30), "a wake ends it");
    assert_eq!(ring.completions().count(), 0, "a wake is no completion");
    // A timer inside the window fires, and its completion comes (at most a window late).
    let id = ring
        .submit(oneloop::Timeout::after(Duration::from_millis(5)), 9)
        .unwrap();
    ring.wait(1, Some(Duration::from_secs(30))).unwrap();
    let done = ring.next_completion().expect("the timer's completion");
    assert_eq!(done.id(), id);
}
