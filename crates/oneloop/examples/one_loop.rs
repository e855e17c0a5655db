//! One ring, every kind of I/O: a file read, a multishot pipe poll, an `EpollWait` on an epoll
//! set holding a socket, a timeout and a cancel, printed as they complete.
//!
//! Run it with `cargo run -p oneloop --example one_loop` (add `ONELOOP_BACKEND=uring` etc.).

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use oneloop::{EpollEvents, EpollWait, Poll, PollMask, Read, Ring, Timeout};

const FILE_READ: u64 = 1;
const PIPE_POLL: u64 = 2;
const EPOLL_WAIT: u64 = 3;
const TIMER: u64 = 4;
const NEVER: u64 = 5;

fn main() -> std::io::Result<()> {
    let start = Instant::now();
    let mut ring = Ring::new()?;
    println!("backend: {}", ring.describe());
    for s in ring.skipped() {
        println!("  skipped {}: {}", s.backend, s.reason);
    }

    // Disk: a file to read.
    let path = std::env::temp_dir().join(format!("one_loop-{}.txt", std::process::id()));
    std::fs::write(&path, b"hello from the disk")?;
    let file = std::fs::File::open(&path)?;
    ring.submit(
        Read::new(file.as_raw_fd(), Vec::with_capacity(64), 0),
        FILE_READ,
    )?;

    // A pipe, polled multishot: one completion per burst of writes.
    let (pipe_rd, mut pipe_wr) = std::io::pipe()?;
    let pipe_poll = ring.submit(
        Poll::new(pipe_rd.as_raw_fd(), PollMask::IN).multishot(),
        PIPE_POLL,
    )?;

    // An existing epoll set holding a socket, awaited as one op.
    let (sock_rx, sock_tx) = UnixDatagram::pair()?;
    let epfd = epoll_with(&sock_rx)?;
    ring.submit(
        EpollWait::new(epfd.as_raw_fd(), EpollEvents::with_capacity(8)),
        EPOLL_WAIT,
    )?;

    // A timer, and a long timer that we cancel.
    ring.submit(Timeout::after(Duration::from_millis(60)), TIMER)?;
    let never = ring.submit(Timeout::after(Duration::from_secs(3600)), NEVER)?;

    // Another thread plays the outside world.
    let outside = std::thread::spawn(move || -> std::io::Result<()> {
        for i in 0..3 {
            std::thread::sleep(Duration::from_millis(15));
            writeln!(pipe_wr, "burst {i}")?;
        }
        sock_tx.send(b"datagram")?;
        Ok(())
    });

    let (mut finals, mut pipe_events) = (0, 0);
    while finals < 5 {
        ring.wait(1, Some(Duration::from_secs(1)))?;
        for mut c in ring.completions().collect::<Vec<_>>() {
            let at = start.elapsed().as_secs_f64() * 1000.0;
            let what = match c.user_data() {
                FILE_READ => {
                    let bytes = c.take_buf().and_then(|b| b.into_vec()).unwrap_or_default();
                    format!("file read: {:?}", String::from_utf8_lossy(&bytes))
                }
                PIPE_POLL if c.is_more() => {
                    pipe_events += 1;
                    format!("pipe readable: {:?} (more to come)", c.poll_mask().unwrap())
                }
                PIPE_POLL => format!("pipe poll ended: {:?}", c.result()),
                EPOLL_WAIT => {
                    let events: Vec<_> = c
                        .take_events()
                        .map(|e| e.iter().collect())
                        .unwrap_or_default();
                    format!("epoll set ready: {events:?} (data 7 is the socket)")
                }
                TIMER => format!("timer: {:?}", c.result().as_ref().map_err(|e| e.kind())),
                NEVER => format!("long timer cancelled: {}", c.is_cancelled()),
                other => format!("unexpected user_data {other}"),
            };
            println!("{at:7.2} ms  {what}");
            if !c.is_more() {
                finals += 1;
            }
        }
        if pipe_events >= 3 && ring.in_flight() > 0 {
            // Enough pipe events, and the timer has fired: cancel the stream and the long timer.
            if start.elapsed() > Duration::from_millis(60) {
                println!("          cancel pipe poll: {:?}", ring.cancel(pipe_poll)?);
                println!("          cancel long timer: {:?}", ring.cancel(never)?);
                pipe_events = 0;
            }
        }
    }
    outside.join().expect("outside thread")?;
    std::fs::remove_file(&path)?;
    println!(
        "done in {:.1} ms, {} ops in flight",
        start.elapsed().as_secs_f64() * 1000.0,
        ring.in_flight()
    );
    Ok(())
}

/// A new epoll instance with `sock` registered for input under data 7.
fn epoll_with(sock: &UnixDatagram) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: no pointers; the result is checked before use.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor owned by nothing else.
    let epfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 7,
    };
    // SAFETY: both descriptors are open and `ev` outlives the call.
    if unsafe { libc::epoll_ctl(fd, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(epfd)
}
