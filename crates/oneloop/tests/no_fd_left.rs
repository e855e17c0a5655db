//! A library leaves no descriptor behind once its rings are dropped: every backend, with an
//! emulated `EpollWait` (whose check that its fd is an epoll instance needs a probe
//! descriptor), and a native one where the kernel has it; a `SendFile` cancelled mid-way
//! (its pipe, on io_uring). One test in its own binary: the count is process-wide.
#![allow(missing_docs)]

use std::os::fd::AsRawFd;
use std::time::Duration;

use oneloop::{EpollEvents, EpollWait, Ring, SendFile};

#[path = "support/rings.rs"]
mod support_rings;
use support_rings::rings_with;

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
    for emulate in [true, false] {
        let builder = |kind| {
            Ring::builder()
                .backend(kind)
                .entries(8)
                .emulate_epoll_wait(emulate)
        };
        for (kind, mut ring) in rings_with(builder) {
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
            // A SendFile cancelled while its socket is full: its pipe (io_uring) goes with it.
            send_file_cancelled(&mut ring);
            drop(ring);
            assert_eq!(
                fd_count(),
                before,
                "{kind} (emulated EpollWait: {emulate}): descriptors left after the ring"
            );
        }
    }
}

fn send_file_cancelled(ring: &mut Ring) {
    use std::io::Write as _;
    let path = std::env::temp_dir().join(format!("oneloop-no-fd-{}", std::process::id()));
    std::fs::write(&path, vec![1u8; 4 << 20]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut sock = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_peer, _) = listener.accept().unwrap();
    sock.set_nonblocking(true).unwrap();
    while sock.write(&[0; 65536]).is_ok_and(|n| n > 0) {}
    let op = SendFile::new(sock.as_raw_fd(), file.as_raw_fd(), 0, 4 << 20);
    let id = ring.submit(op, 3).unwrap();
    ring.wait(1, Some(Duration::from_millis(20))).unwrap();
    let _ = ring.cancel(id).unwrap();
    while ring.in_flight() > 0 {
        ring.wait(1, Some(Duration::from_secs(5))).unwrap();
    }
    drop(ring.completions());
    std::fs::remove_file(path).unwrap();
}
