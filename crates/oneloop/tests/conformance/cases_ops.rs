//! Beyond the numbered cases: the socket ops and `OpenAt`/`Close` work end to end.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use oneloop::{Accept, Close, Connect, OpenAt, Recv, Send};

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
