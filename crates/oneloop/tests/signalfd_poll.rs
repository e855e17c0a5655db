//! A poll of a `signalfd` completes when a signal it watches is pending, on every backend.
//! (The AIO backend's `IOCB_CMD_POLL` re-checks readiness from a kernel worker, which never
//! has the signal pending: such a poll must take the epoll path there.)
//!
//! One test in this binary: it blocks SIGUSR1 in its thread and raises it there.
#![allow(missing_docs)]
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use oneloop::{Poll, PollMask, Ring};

#[path = "support/rings.rs"]
mod support_rings;
use support_rings::rings_with;

#[test]
fn a_pending_signal_makes_its_signalfd_readable() {
    // SAFETY: `set` is a local sigset initialised by `sigemptyset`; the pointers are valid.
    let fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
            0
        );
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    assert!(fd >= 0, "signalfd: {}", std::io::Error::last_os_error());
    // SAFETY: `signalfd` just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    for (kind, mut ring) in rings_with(|kind| Ring::builder().backend(kind)) {
        ring.submit(Poll::new(fd.as_raw_fd(), PollMask::IN), 1)
            .unwrap();
        ring.wait(0, Some(Duration::ZERO)).unwrap();
        assert_eq!(ring.ready(), 0, "{kind}: readable before any signal");
        // SAFETY: raising a signal this thread blocks only makes it pending.
        unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
        ring.wait(1, Some(Duration::from_secs(5))).unwrap();
        let c = ring
            .next_completion()
            .unwrap_or_else(|| panic!("{kind}: the poll missed the pending signal"));
        assert!(
            c.result().as_ref().unwrap() & libc::POLLIN as u32 != 0,
            "{c:?}"
        );
        // Take the signal, so the next backend starts with none pending.
        let mut info = [0u8; 128];
        // SAFETY: `info` is a writable buffer of the size passed.
        let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        assert_eq!(n, 128, "{kind}: one signalfd_siginfo");
        eprintln!("PASS {kind}");
    }
}
