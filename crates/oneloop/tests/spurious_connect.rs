//! Readiness is a hint: a `Connect` still in progress, told (falsely) that its socket is
//! writable, keeps waiting instead of reporting success; it ends `Ok` only once it is
//! connected (epoll and aio, the backends with a readiness step; spurious readiness injected
//! on every wait).
#![allow(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use oneloop::fault::{Fault, Plan};
use oneloop::{BackendKind, Connect, Ring};

#[path = "support/rings.rs"]
mod support_rings;
use support_rings::rings_of;

fn socket() -> OwnedFd {
    // SAFETY: no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    assert!(fd >= 0);
    // SAFETY: just created; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn sockaddr(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A loopback listener with a backlog of 0, and its port.
fn tiny_listener() -> (OwnedFd, u16) {
    let fd = socket();
    let mut addr = sockaddr(0);
    let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_in of `size` bytes, writable for getsockname.
    unsafe {
        assert_eq!(
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                size
            ),
            0
        );
        assert_eq!(libc::listen(fd.as_raw_fd(), 0), 0);
        let mut len = size;
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        );
    }
    (fd, u16::from_be(addr.sin_port))
}

fn connect_now(port: u16) -> (OwnedFd, i32) {
    let fd = socket();
    let addr = sockaddr(port);
    let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_in of `size` bytes.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            size,
        )
    };
    let errno = if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    };
    (fd, errno)
}

fn connected(fd: &OwnedFd) -> bool {
    let mut addr = sockaddr(0);
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `addr` and `len` are writable and sized as the call expects.
    unsafe {
        libc::getpeername(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        ) == 0
    }
}

#[test]
fn connect_in_progress_ignores_spurious_readiness() {
    let _plan = Plan::new(5)
        .rate(Fault::SpuriousReadiness, 1_000_000)
        .install();
    let rings = rings_of([BackendKind::Epoll, BackendKind::Aio], |kind| {
        Ring::builder().backend(kind).entries(8)
    });
    for (kind, mut ring) in rings {
        let (listener, port) = tiny_listener();
        // Fill the backlog until a connect stays in progress.
        let mut fillers = Vec::new();
        loop {
            let (fd, errno) = connect_now(port);
            fillers.push(fd);
            if errno == libc::EINPROGRESS {
                break;
            }
            assert!(fillers.len() < 64, "the backlog never filled");
        }
        let fd = socket();
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let id = ring.submit(Connect::new(fd.as_raw_fd(), addr), 1).unwrap();
        // For a while the connect cannot finish; any completion must be a real connection.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            ring.wait(1, Some(Duration::from_millis(10))).unwrap();
            if let Some(c) = ring.next_completion() {
                assert!(
                    c.result().is_err() || connected(&fd),
                    "{kind}: Connect said {c:?} while not connected"
                );
                eprintln!("{kind}: connect ended early, really connected: {c:?}");
            }
        }
        // Room in the backlog: the connect goes through (the kernel retries its SYN).
        while ring.in_flight() > 0 {
            // SAFETY: accepting with no address wanted.
            let a = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if a >= 0 {
                // SAFETY: just accepted; nothing else owns it.
                drop(unsafe { OwnedFd::from_raw_fd(a) });
            }
            ring.wait(1, Some(Duration::from_millis(20))).unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{kind}: the connect never finished"
            );
        }
        let c = ring.next_completion().expect("the connect's completion");
        assert_eq!(c.id(), id);
        assert!(c.result().is_ok() && connected(&fd), "{kind}: {c:?}");
        eprintln!("PASS {kind}: the connect waited through spurious readiness and ended connected");
    }
}
