//! A library leaves no descriptor behind once its rings are dropped: every backend, with an
//! emulated `EpollWait` (whose check that its fd is an epoll instance needs a probe
//! descriptor), and a native one where the kernel has it. One test in its own binary: the
//! count is process-wide.
#![allow(missing_docs)]

use std::os::fd::AsRawFd;
use std::time::Duration;

use oneloop::{BackendKind, EpollEvents, EpollWait, Ring};

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn dropped_rings_leave_no_descriptor() {
    // An epoll set of the caller's, made before counting.
    // SAFETY: plain system call; the result is checked.
    #[allow(unsafe_code)]
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: `raw` is a new descriptor nobody else owns.
    #[allow(unsafe_code)]
    let epfd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let before = fd_count();
    for kind in BackendKind::ALL {
        for emulate in [true, false] {
            let mut ring = match Ring::builder()
                .backend(kind)
                .entries(8)
                .emulate_epoll_wait(emulate)
                .build()
            {
                Ok(ring) => ring,
                Err(e) => {
                    eprintln!("SKIP {kind}: {e}");
                    continue;
                }
            };
            let wait = EpollWait::new(epfd.as_raw_fd(), EpollEvents::with_capacity(4));
            ring.submit(wait.deadline(Duration::from_millis(5)), 1)
                .unwrap();
            ring.wait(1, Some(Duration::from_secs(5))).unwrap();
            let c = ring.next_completion().expect("the deadline ends it");
            assert!(c.is_timed_out(), "{kind}: {c:?}");
            // A descriptor that is not an epoll instance is refused by the same check.
            let wrong = EpollWait::new(0, EpollEvents::with_capacity(1));
            ring.submit(wrong, 2).unwrap();
            ring.wait(1, Some(Duration::from_secs(5))).unwrap();
            let c = ring.next_completion().expect("refused at once");
            assert!(c.result().is_err(), "{kind}: {c:?}");
            drop(ring);
            assert_eq!(
                fd_count(),
                before,
                "{kind} (emulated EpollWait: {emulate}): descriptors left after the ring"
            );
        }
    }
}
