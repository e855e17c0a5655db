//! The descriptors the model test's ops work on, and the test's own hands on their other ends.
//!
//! Every descriptor here outlives every ring of a run (an fd with ops pending is never closed
//! under them). The test's own reads and writes go through separate non-blocking open file
//! descriptions of the same pipes (`/proc/self/fd/N`), so the ring's ops, racing in the kernel,
//! can never make the test block.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The size of the file reads work on.
pub const FILE_LEN: usize = 64 * 1024;

/// The byte at `offset` of the read file.
pub fn pattern(offset: usize) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8)) as u8
}

pub struct Pipe {
    /// The ends the ring's ops use (blocking, as a caller would have them).
    pub rd: OwnedFd,
    pub wr: OwnedFd,
    /// The test's own non-blocking handles on the same pipe.
    test_rd: File,
    test_wr: File,
}

pub struct World {
    dir: PathBuf,
    pub read_path: PathBuf,
    pub read_file: File,
    pub write_file: File,
    pub pipes: Vec<Pipe>,
    /// `(a, b)`: `Recv` ops on `a`, `Send` ops on `b` (whose bytes arrive at `a`).
    pub sockets: Vec<(UnixStream, UnixStream)>,
    pub epoll: OwnedFd,
    pub listener: TcpListener,
    pub listen_addr: SocketAddr,
    /// Connections the test made to the listener (kept open a while, then dropped).
    clients: Vec<TcpStream>,
    /// Connections accepted by the test itself, to keep the backlog short.
    pub backlog: usize,
}

fn reopen(fd: RawFd, write: bool) -> File {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))
        .expect("reopen a pipe end")
}

impl World {
    /// The ring's pipe ends, socket ends and listener: what `register_fd` may name.
    pub fn pollable_fds(&self) -> Vec<RawFd> {
        let pipes = self
            .pipes
            .iter()
            .flat_map(|p| [p.rd.as_raw_fd(), p.wr.as_raw_fd()]);
        let sockets = self
            .sockets
            .iter()
            .flat_map(|(a, b)| [a.as_raw_fd(), b.as_raw_fd()]);
        pipes
            .chain(sockets)
            .chain([self.listener.as_raw_fd()])
            .collect()
    }

    pub fn new(tag: &str) -> World {
        let dir = std::env::temp_dir().join(format!("oneloop-model-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("model dir");
        let read_path = dir.join("read");
        let bytes: Vec<u8> = (0..FILE_LEN).map(pattern).collect();
        std::fs::write(&read_path, bytes).expect("write the read file");
        let read_file = File::open(&read_path).expect("open the read file");
        let write_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("write"))
            .expect("open the write file");
        let pipes = (0..3)
            .map(|_| {
                let (r, w) = std::io::pipe().expect("pipe");
                let (rd, wr) = (OwnedFd::from(r), OwnedFd::from(w));
                let test_rd = reopen(rd.as_raw_fd(), false);
                let test_wr = reopen(wr.as_raw_fd(), true);
                Pipe {
                    rd,
                    wr,
                    test_rd,
                    test_wr,
                }
            })
            .collect::<Vec<_>>();
        let sockets = (0..2)
            .map(|_| {
                let (a, b) = UnixStream::pair().expect("socketpair");
                a.set_nonblocking(true).unwrap();
                b.set_nonblocking(true).unwrap();
                (a, b)
            })
            .collect();
        // SAFETY: no pointers.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0);
        // SAFETY: just created; nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        for (i, p) in pipes.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 100 + i as u64,
            };
            // SAFETY: `ev` outlives the call.
            let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p.rd.as_raw_fd(), &mut ev) };
            assert_eq!(r, 0);
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        listener.set_nonblocking(true).unwrap();
        let listen_addr = listener.local_addr().unwrap();
        World {
            dir,
            read_path,
            read_file,
            write_file,
            pipes,
            sockets,
            epoll,
            listener,
            listen_addr,
            clients: Vec::new(),
            backlog: 0,
        }
    }

    /// The tags `EpollWait` events may carry.
    pub fn epoll_tags(&self) -> std::ops::Range<u64> {
        100..100 + self.pipes.len() as u64
    }

    /// Writes `n` bytes of `b'x'` into pipe `i` (fewer if it is full).
    pub fn feed_pipe(&mut self, i: usize, n: usize) {
        let _ = self.pipes[i].test_wr.write(&vec![b'x'; n]);
    }

    /// Takes what is in pipe `i`; every byte must be `b'x'`.
    pub fn drain_pipe(&mut self, i: usize) -> Result<(), String> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.pipes[i].test_rd.read(&mut buf) {
                Ok(0) => return Err(format!("pipe {i}: EOF")),
                Ok(n) if buf[..n].iter().all(|&b| b == b'x') => continue,
                Ok(_) => return Err(format!("pipe {i}: a byte that nobody wrote")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("pipe {i}: {e}")),
            }
        }
    }

    /// Sends `n` bytes of `b'y'` into socket pair `i` (towards `a`).
    pub fn feed_socket(&mut self, i: usize, n: usize) {
        let _ = (&self.sockets[i].1).write(&vec![b'y'; n]);
    }

    /// Takes what waits at `a` of pair `i`; every byte must be `b'y'`.
    pub fn drain_socket(&mut self, i: usize) -> Result<(), String> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match (&self.sockets[i].0).read(&mut buf) {
                Ok(0) => return Err(format!("socket {i}: EOF")),
                Ok(n) if buf[..n].iter().all(|&b| b == b'y') => continue,
                Ok(_) => return Err(format!("socket {i}: a byte that nobody sent")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("socket {i}: {e}")),
            }
        }
    }

    /// Takes what waits at `b` of pair `i` (what `SendFile`s sent from `a`): bytes of the file.
    pub fn drain_socket_back(&mut self, i: usize) -> Result<(), String> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match (&self.sockets[i].1).read(&mut buf) {
                Ok(0) => return Err(format!("socket {i}: EOF at b")),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("socket {i} at b: {e}")),
            }
        }
    }

    /// Connects to the listener from the test (loopback: completes at once while the backlog
    /// has room; the caller keeps it short).
    pub fn connect(&mut self) {
        if let Ok(s) = TcpStream::connect(self.listen_addr) {
            self.clients.push(s);
            self.backlog += 1;
        }
        if self.clients.len() > 64 {
            self.clients.drain(..32);
        }
    }

    /// Accepts (and closes) what waits in the listener's backlog.
    pub fn accept_all(&mut self) {
        while let Ok((s, _)) = self.listener.accept() {
            drop(s);
        }
        self.backlog = 0;
    }

    /// A fresh TCP socket for a `Connect` op.
    pub fn tcp_socket() -> OwnedFd {
        // SAFETY: no pointers.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: just created; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    /// A fresh descriptor for a `Close` op to close.
    pub fn closable() -> OwnedFd {
        // SAFETY: no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: just created; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The number of open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}
