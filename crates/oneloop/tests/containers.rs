//! Where a container's seccomp profile refuses io_uring (Docker's default does), or io_uring
//! and Linux AIO both, `Auto` picks the next backend, says why it passed over each, and the
//! ring works. Each case runs in a child process (this test binary, filtered to the case)
//! under a filter installed between `fork` and `exec` — no container runtime needed.
#![allow(missing_docs)]

#[path = "support/child.rs"]
mod child;
#[path = "support/seccomp.rs"]
mod seccomp;

use std::os::fd::AsRawFd;
use std::time::Duration;

use oneloop::{BackendKind, Nop, Read, Ring, Timeout, Write, CURRENT_POSITION};
use seccomp::Refuse;

/// Runs `body` in a child under `refuse`'s filter, with `ONELOOP_BACKEND` cleared (the case
/// is about `Auto`'s choice); the parent passes if the child does.
fn under_filter(name: &str, refuse: Refuse, body: fn()) {
    if child::is_child(name) {
        body();
        return;
    }
    if let Some(why) = seccomp::unavailable() {
        return eprintln!("SKIP {name}: {why}");
    }
    child::run(name, |cmd| {
        cmd.env_remove("ONELOOP_BACKEND");
        seccomp::apply(cmd, refuse);
    });
}

/// Ops on the ring `Auto` built: a no-op, a pipe written and read, a timer.
fn exercise(ring: &mut Ring) {
    let (r, w) = std::io::pipe().unwrap();
    ring.submit(Nop, 1).unwrap();
    ring.submit(
        Read::new(r.as_raw_fd(), Vec::with_capacity(8), CURRENT_POSITION),
        2,
    )
    .unwrap();
    ring.submit(
        Write::new(w.as_raw_fd(), b"inside".to_vec(), CURRENT_POSITION),
        3,
    )
    .unwrap();
    ring.submit(Timeout::after(Duration::from_millis(5)), 4)
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        ring.wait(1, Some(Duration::from_secs(10))).unwrap();
        for c in ring.completions() {
            let ok = c.result().is_ok() || c.is_timed_out();
            assert!(ok, "{c:?}");
            seen.push(c.user_data());
        }
    }
    seen.sort();
    assert_eq!(seen, [1, 2, 3, 4]);
}

fn uring_refused(reason: &str) {
    assert!(
        reason.contains("EPERM") && reason.contains("seccomp"),
        "the reason names the refusal: {reason}"
    );
}

#[test]
fn io_uring_refused_auto_picks_aio() {
    under_filter("io_uring_refused_auto_picks_aio", Refuse::Uring, || {
        let err = Ring::builder()
            .backend(BackendKind::Uring)
            .build()
            .expect_err("io_uring is refused");
        uring_refused(&err.to_string());
        let mut ring = Ring::new().expect("Auto falls back");
        assert_eq!(ring.backend(), BackendKind::Aio, "{:?}", ring.skipped());
        assert_eq!(ring.skipped()[0].backend, BackendKind::Uring);
        uring_refused(&ring.skipped()[0].reason);
        exercise(&mut ring);
        eprintln!(
            "PASS io_uring refused: Auto chose aio ({})",
            ring.skipped()[0].reason
        );
    });
}

#[test]
fn io_uring_and_aio_refused_auto_picks_epoll() {
    under_filter(
        "io_uring_and_aio_refused_auto_picks_epoll",
        Refuse::UringAndAio,
        || {
            let mut ring = Ring::new().expect("Auto falls back");
            assert_eq!(ring.backend(), BackendKind::Epoll, "{:?}", ring.skipped());
            let skipped = ring.skipped().to_vec();
            assert_eq!(
                skipped.iter().map(|s| s.backend).collect::<Vec<_>>(),
                [BackendKind::Uring, BackendKind::Aio]
            );
            uring_refused(&skipped[0].reason);
            assert!(skipped[1].reason.contains("EPERM"), "{:?}", skipped[1]);
            exercise(&mut ring);
            eprintln!("PASS io_uring and aio refused: Auto chose epoll ({skipped:?})");
        },
    );
}
