//! Beyond the numbered cases: the socket ops and `OpenAt`/`Close` work end to end.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use oneloop::{Accept, CancelOutcome, Close, Connect, OpenAt, Recv, Ring, Send};

use crate::harness::*;

fn tcp_socket() -> OwnedFd {
    // SAFETY: no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Accept, Connect, Send and Recv over loopback TCP; Close ends the stream (the peer sees EOF).
pub fn x1_accept_connect_send_recv_close(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = ring.submit(Accept::new(listener.as_raw_fd()), 1).unwrap();
    let client = tcp_socket();
    let connect = ring
        .submit(Connect::new(client.as_raw_fd(), addr), 2)
        .unwrap();
    let mut both = collect(&mut ring, 2, std::time::Duration::from_secs(10));
    both.sort_by_key(|c| c.user_data());
    let [mut a, c] = <[_; 2]>::try_from(both).expect("accept and connect complete");
    assert_eq!((a.id(), c.id()), (accept, connect));
    assert_eq!(c.result().as_ref().unwrap(), &0, "{c:?}");
    let server = a.take_fd().expect("Accept hands over the new socket");
    assert_eq!(*a.result().as_ref().unwrap() as i32, server.as_raw_fd());

    let sent = ring
        .submit(Send::new(client.as_raw_fd(), b"ping".to_vec()), 3)
        .unwrap();
    let (_, mut s) = final_of(&mut ring, sent);
    assert_eq!(s.result().as_ref().unwrap(), &4);
    assert_eq!(s.take_buf().unwrap().as_slice(), b"ping");
    let recv = ring
        .submit(Recv::new(server.as_raw_fd(), Vec::with_capacity(16)), 4)
        .unwrap();
    let (_, mut r) = final_of(&mut ring, recv);
    assert_eq!(r.take_buf().unwrap().as_slice(), b"ping");

    let closed = ring.submit(Close::new(client), 5).unwrap();
    let (_, c) = final_of(&mut ring, closed);
    assert_eq!(c.result().as_ref().unwrap(), &0, "{c:?}");
    let mut server = std::net::TcpStream::from(server);
    let mut rest = Vec::new();
    assert_eq!(server.read_to_end(&mut rest).unwrap(), 0, "EOF after Close");

    // Connect to a port nobody listens on: a clear error completion.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let sock = tcp_socket();
    let id = ring
        .submit(Connect::new(sock.as_raw_fd(), dead_addr), 6)
        .unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert_eq!(errno(&c), Some(libc::ECONNREFUSED), "{c:?}");
    Outcome::Pass
}

/// OpenAt creates and opens files relative to a directory; `RESOLVE_BENEATH` refuses escapes;
/// a path with a NUL byte is refused before submission.
pub fn x2_openat_resolve(h: &Harness) -> Outcome {
    let mut ring = h.ring();
    let dir_path = temp_path("openat-dir");
    std::fs::create_dir(&dir_path).unwrap();
    let dir = std::fs::File::open(&dir_path).unwrap();
    let create = OpenAt::new(dir.as_raw_fd(), "made.txt", libc::O_CREAT | libc::O_RDWR)
        .unwrap()
        .mode(0o600);
    let id = ring.submit(create, 1).unwrap();
    let (_, mut c) = final_of(&mut ring, id);
    let mut file = std::fs::File::from(c.take_fd().expect("OpenAt hands over the file"));
    file.write_all(b"made by OpenAt").unwrap();
    assert_eq!(
        std::fs::read(dir_path.join("made.txt")).unwrap(),
        b"made by OpenAt"
    );

    let escape = OpenAt::new(dir.as_raw_fd(), "../", libc::O_RDONLY | libc::O_DIRECTORY)
        .unwrap()
        .resolve(libc::RESOLVE_BENEATH);
    let id = ring.submit(escape, 2).unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert_eq!(
        errno(&c),
        Some(libc::EXDEV),
        "RESOLVE_BENEATH lets '..' escape: {c:?}"
    );
    assert!(matches!(c.output(), oneloop::Output::None));

    let missing = OpenAt::new(dir.as_raw_fd(), "absent", libc::O_RDONLY).unwrap();
    let id = ring.submit(missing, 3).unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert_eq!(errno(&c), Some(libc::ENOENT));

    let nul = OpenAt::new(dir.as_raw_fd(), &b"a\0b"[..], libc::O_RDONLY).unwrap_err();
    assert_eq!(nul.kind(), ErrorKind::InvalidInput);
    std::fs::remove_dir_all(&dir_path).unwrap();
    Outcome::Pass
}

/// `register_fd` / `unregister_fd`: a registered socket's (Unix and TCP) receives and sends
/// complete as on any fd — after a partial read the rest is read without a new edge, a
/// receive that waits without trying (after `EAGAIN`, or a short TCP read) still hears the
/// next arrival, a blocked send completes when the peer reads — and after `unregister_fd` (on the ring, or through a `Waker` from another thread) and a
/// close, a new socket that reuses the number works, registered or not.
pub fn x3_registered_fd_reuse(h: &Harness) -> Outcome {
    use std::os::unix::net::UnixStream;
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
    let mut ring = h.ring();
    let recv_one = |ring: &mut Ring, fd: i32, cap: usize, tag: u64| {
        ring.submit(Recv::new(fd, Vec::with_capacity(cap)), tag)
            .unwrap()
    };
    let (a, mut peer) = UnixStream::pair().unwrap();
    let number = a.as_raw_fd();
    ring.register_fd(number).unwrap();
    peer.set_nonblocking(true).unwrap();
    registered_data_path(&mut ring, number, &mut peer);
    // The same over TCP, where short transfers count as evidence too.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut tcp_peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (tcp, _) = listener.accept().unwrap();
    tcp_peer.set_nonblocking(true).unwrap();
    ring.register_fd(tcp.as_raw_fd()).unwrap();
    registered_data_path(&mut ring, tcp.as_raw_fd(), &mut tcp_peer);
    ring.unregister_fd(tcp.as_raw_fd());
    // The number is reused: `dup2` puts a new socket at it, closing the old one (its epoll
    // registration goes with it) without a moment where another thread could take the number.
    let reuse = |ring: &mut Ring, register: bool| {
        let (b, mut peer) = UnixStream::pair().unwrap();
        // SAFETY: both descriptors are open; `number` is owned by `a`, which now names the
        // new socket (the old one is closed by this call).
        assert!(unsafe { libc::dup2(b.as_raw_fd(), number) } >= 0);
        drop(b);
        if register {
            ring.register_fd(number).unwrap();
        }
        let id = recv_one(ring, number, 64, 6);
        ring.wait(0, None).unwrap();
        peer.write_all(b"reuse").unwrap();
        let c = collect(ring, 1, LIMIT)
            .pop()
            .expect("a receive on the reused number never ended");
        assert_eq!(c.id(), id);
        assert_eq!(c.result().as_ref().ok(), Some(&5), "{c:?}");
        peer
    };
    ring.unregister_fd(number);
    let peer = reuse(&mut ring, false);
    drop(peer);
    let peer = reuse(&mut ring, true);
    // Unregistered from another thread, through the waker, before the number is reused.
    let waker = ring.waker();
    std::thread::spawn(move || waker.unregister_fd(number))
        .join()
        .unwrap();
    drop(peer);
    let peer = reuse(&mut ring, false);
    drop(peer);
    let peer = reuse(&mut ring, true);
    ring.unregister_fd(number);
    drop((a, peer));
    // A regular file may be registered; nothing changes for it.
    let file = TempFile::new("x3", b"data");
    ring.register_fd(file.fd()).unwrap();
    ring.unregister_fd(file.fd());
    assert_eq!(ring.in_flight(), 0);
    Outcome::Pass
}

/// `x3`'s checks of the data path on a registered socket `fd`, whose other end is `peer`
/// (non-blocking).
fn registered_data_path<P: std::io::Read + std::io::Write>(
    ring: &mut Ring,
    number: i32,
    peer: &mut P,
) {
    let recv_one = |ring: &mut Ring, fd: i32, cap: usize, tag: u64| {
        ring.submit(Recv::new(fd, Vec::with_capacity(cap)), tag)
            .unwrap()
    };
    // A receive that waits, then data.
    let id = recv_one(ring, number, 64, 1);
    assert!(quiet(ring, std::time::Duration::from_millis(20)).is_empty());
    write_spin(peer, b"first");
    let (_, c) = final_of(ring, id);
    assert_eq!(c.result().as_ref().ok(), Some(&5), "{c:?}");
    // A partial read: the rest comes without any new arrival.
    write_spin(peer, &[7u8; 100]);
    let mut got = 0;
    while got < 100 {
        let id = recv_one(ring, number, 10, 2);
        let (_, c) = final_of(ring, id);
        got += *c.result().as_ref().unwrap() as usize;
    }
    assert_eq!(got, 100);
    // A receive that saw EAGAIN is cancelled; the next one waits without trying, and hears
    // the next arrival.
    let id = recv_one(ring, number, 64, 3);
    ring.wait(0, None).unwrap();
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    assert!(final_of(ring, id).1.is_cancelled());
    let id = recv_one(ring, number, 64, 4);
    ring.wait(0, None).unwrap();
    write_spin(peer, b"again");
    let (_, c) = final_of(ring, id);
    assert_eq!(c.result().as_ref().ok(), Some(&5), "{c:?}");
    // A send that blocks completes once the peer reads.
    let mut sent = 0usize;
    let blocked = loop {
        let id = ring.submit(Send::new(number, vec![1u8; 65536]), 5).unwrap();
        match collect(ring, 1, std::time::Duration::from_millis(50)).pop() {
            Some(c) => sent += *c.result().as_ref().unwrap() as usize,
            None => break id,
        }
        assert!(sent < 64 << 20, "the socket never filled");
    };
    let mut sink = vec![0u8; 1 << 20];
    let c = loop {
        match peer.read(&mut sink) {
            Ok(n) => assert!(n > 0),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        ring.wait(0, Some(std::time::Duration::from_millis(1)))
            .unwrap();
        if let Some(c) = ring.completions().next() {
            assert_eq!(c.id(), blocked);
            break c;
        }
    };
    assert!(*c.result().as_ref().unwrap() > 0, "{c:?}");
    // A short receive, then one that (on TCP) waits without trying: the next arrival ends it.
    write_spin(peer, b"abc");
    let id = recv_one(ring, number, 64, 7);
    assert_eq!(final_of(ring, id).1.result().as_ref().ok(), Some(&3));
    write_spin(peer, b"defg");
    let id = recv_one(ring, number, 64, 8);
    assert_eq!(final_of(ring, id).1.result().as_ref().ok(), Some(&4));
}

/// Writes all of `bytes` to a non-blocking `peer`.
fn write_spin<P: std::io::Write>(peer: &mut P, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match peer.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Registered descriptors at the edges: (1) an op queued on a registered fd still reaches
/// that fd's file after `unregister_fd`, even when the next `register_fd` takes the same
/// table slot; (2) a pty, whose reads cannot say `EAGAIN` (`RWF_NOWAIT` unsupported), with
/// data already there, is read; (3) an error that arrives as the only readiness (a UDP
/// socket's ICMP refusal) is not hidden by the readiness cache.
pub fn x4_registered_fd_edges(h: &Harness) -> Outcome {
    use std::os::unix::net::UnixStream;
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut ring = h.ring();
    // (1) A queued send, its fd unregistered, another fd registered in its place.
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (b, mut b_peer) = UnixStream::pair().unwrap();
    ring.register_fd(a.as_raw_fd()).unwrap();
    let id = ring
        .submit(Send::new(a.as_raw_fd(), b"for-a".to_vec()), 1)
        .unwrap();
    ring.unregister_fd(a.as_raw_fd());
    ring.register_fd(b.as_raw_fd()).unwrap();
    let (_, c) = final_of(&mut ring, id);
    assert_eq!(c.result().as_ref().ok(), Some(&5), "{c:?}");
    a_peer.set_nonblocking(true).unwrap();
    b_peer.set_nonblocking(true).unwrap();
    let mut got = [0u8; 16];
    assert_eq!(
        a_peer.read(&mut got).ok(),
        Some(5),
        "a's peer lacks its bytes"
    );
    assert_eq!(&got[..5], b"for-a");
    assert!(
        b_peer.read(&mut got).is_err(),
        "the send reached the socket registered after it"
    );
    ring.unregister_fd(b.as_raw_fd());
    drop((a, b));
    // (2) A pty with data waiting before the read is submitted.
    // SAFETY: plain calls; every result is checked before use.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    assert!(
        master >= 0,
        "posix_openpt: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: as above; `master` is ours, and it is closed through `OwnedFd` below.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: `master` is an open pty master.
    assert_eq!(unsafe { libc::grantpt(master.as_raw_fd()) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::unlockpt(master.as_raw_fd()) }, 0);
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` is writable for its length.
    let named = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    assert_eq!(named, 0);
    // SAFETY: ptsname_r wrote a NUL-terminated path.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .unwrap()
        .to_string();
    let mut slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .unwrap();
    ring.register_fd(master.as_raw_fd()).unwrap();
    slave.write_all(b"pty\n").unwrap();
    // Whatever edge that made is consumed with nobody waiting.
    std::thread::sleep(std::time::Duration::from_millis(10));
    ring.wait(0, Some(std::time::Duration::from_millis(10)))
        .unwrap();
    let id = ring
        .submit(
            oneloop::Read::new(
                master.as_raw_fd(),
                Vec::with_capacity(64),
                oneloop::CURRENT_POSITION,
            ),
            2,
        )
        .unwrap();
    let c = collect(&mut ring, 1, LIMIT)
        .pop()
        .expect("a read of a pty with data waiting never ended");
    assert_eq!(c.id(), id);
    assert!(c.result().as_ref().is_ok_and(|&n| n > 0), "pty read: {c:?}");
    ring.unregister_fd(master.as_raw_fd());
    drop((slave, master));
    // (3) An error as the only readiness.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nobody = closed.local_addr().unwrap();
    drop(closed);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(nobody).unwrap();
    udp.set_nonblocking(true).unwrap();
    ring.register_fd(udp.as_raw_fd()).unwrap();
    let id = ring
        .submit(Recv::new(udp.as_raw_fd(), Vec::with_capacity(64)), 3)
        .unwrap();
    ring.wait(0, None).unwrap();
    assert_eq!(ring.cancel(id).unwrap(), CancelOutcome::Cancelled);
    assert!(final_of(&mut ring, id).1.is_cancelled());
    udp.send(b"x").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    ring.wait(0, Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let id = ring
        .submit(Recv::new(udp.as_raw_fd(), Vec::with_capacity(64)), 4)
        .unwrap();
    let c = collect(&mut ring, 1, LIMIT)
        .pop()
        .expect("the socket's error was never reported");
    assert_eq!(c.id(), id);
    assert_eq!(errno(&c), Some(libc::ECONNREFUSED), "{c:?}");
    ring.unregister_fd(udp.as_raw_fd());
    assert_eq!(ring.in_flight(), 0);
    Outcome::Pass
}
