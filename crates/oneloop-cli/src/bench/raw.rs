//! io_uring's own ceiling, written directly on the `io-uring` crate, for two workloads:
//!
//! * `echo`: what the kernel offers a receive-heavy server — one multishot `ACCEPT`, one
//!   multishot `RECV` per connection into a provided buffer ring (the kernel picks a buffer
//!   only when data arrives), a `SEND` straight from that buffer, the buffer given back to the
//!   ring when the send is done;
//! * `pipes`: one `READ_MULTISHOT` per pipe into a provided buffer ring, each token written on
//!   with `write` — what ours does on the Ring.
//!
//! No abstraction, no timeouts, no cancellation: the rows "... vs raw" show how close the Ring
//! (and its runtime) comes to it.
//!
//! Memory shared with the kernel (the buffer ring and its buffers) is what makes this module
//! `unsafe`: both live in `BufRing`, which each loop drops only after the io_uring.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

/// `echo`'s buffers (a power of two, at most 32,768) and the size of each.
const BUFFERS: u16 = 4096;
const BUFFER_SIZE: usize = 1024;
/// The buffer group the ring is registered as.
const GROUP: u16 = 0;

/// What a CQE answers, in the top bits of its `user_data`; a connection's descriptor below,
/// and for a send its buffer id in bits 32..48.
const ACCEPT: u64 = 1 << 62;
const RECV: u64 = 1 << 61;
const SEND: u64 = 1 << 60;

/// A provided buffer ring: the ring the kernel takes buffer ids from, and the buffers.
struct BufRing {
    /// `count` entries, page-aligned, shared with the kernel.
    entries: *mut BufRingEntry,
    layout: Layout,
    buffers: Vec<u8>,
    count: u16,
    size: usize,
    /// The next tail to publish.
    tail: u16,
}

impl BufRing {
    /// `count` (a power of two) buffers of `size` bytes, every one available.
    fn new(count: u16, size: usize) -> Result<BufRing> {
        let layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        anyhow::ensure!(!entries.is_null(), "cannot allocate the buffer ring");
        let mut ring = BufRing {
            entries,
            layout,
            buffers: vec![0; usize::from(count) * size],
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            ring.give_back(bid);
        }
        Ok(ring)
    }

    /// Where buffer `bid` starts.
    fn buffer(&self, bid: u16) -> *const u8 {
        self.buffers[usize::from(bid) * self.size..].as_ptr()
    }

    /// Puts buffer `bid` back at the ring's tail, for the kernel to pick again.
    fn give_back(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot` < count, inside the allocation; the kernel reads only entries
        // between its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(self.buffer(bid) as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lies in the first entry of the live allocation; an atomic
        // store with release order publishes the entry written above.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the owner unregisters the ring from the
        // kernel (or drops the io_uring) before dropping it.
        unsafe { dealloc(self.entries.cast(), self.layout) };
    }
}

/// Whether this kernel runs the server: an io_uring with the setup flags it uses and a
/// registered buffer ring (Linux 5.19+; multishot receive needs 6.0). `Err` says why not.
pub fn supported() -> Result<(), String> {
    let ring = setup().map_err(|e| format!("{e:#}"))?;
    let bufs = BufRing::new(8, 64).map_err(|e| format!("{e:#}"))?;
    register(&ring, &bufs).map_err(|e| format!("{e:#}"))?;
    let probe = {
        let mut p = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut p)
            .map_err(|e| format!("io_uring probe: {e}"))?;
        p
    };
    for (name, code) in [
        ("RECV", opcode::RecvMulti::CODE),
        ("SEND", opcode::Send::CODE),
        ("READ_MULTISHOT", opcode::ReadMulti::CODE),
    ] {
        if !probe.is_supported(code) {
            return Err(format!("this kernel's io_uring lacks {name}"));
        }
    }
    drop(ring);
    drop(bufs);
    Ok(())
}

fn setup() -> Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(8192)
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(512)
        .context("io_uring setup (with DEFER_TASKRUN, Linux 6.1+)")
}

fn register(ring: &IoUring, bufs: &BufRing) -> Result<()> {
    // SAFETY: the entries stay allocated until `bufs` drops, which its owner does only after
    // the io_uring.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.entries as u64, bufs.count, GROUP, 0)
    }
    .context("register a provided buffer ring (Linux 5.19+)")
}

/// The server: runs until `stop`; returns its thread's CPU time.
pub fn server(listener: TcpListener, stop: Arc<AtomicBool>) -> Result<Duration> {
    let cpu0 = oneloop::probe::thread_cpu_time()?;
    let mut ring = setup()?;
    let mut bufs = BufRing::new(BUFFERS, BUFFER_SIZE)?;
    register(&ring, &bufs)?;
    // What each buffer holds while it is being sent back: (length, bytes sent).
    let mut held = vec![(0u32, 0u32); usize::from(BUFFERS)];
    let lfd = listener.as_raw_fd();
    push(
        &mut ring,
        opcode::AcceptMulti::new(Fd(lfd)).build().user_data(ACCEPT),
    )?;
    let ts = Timespec::new().nsec(20_000_000);
    let mut cqes = Vec::with_capacity(1024);
    while !stop.load(Ordering::Acquire) {
        enter_and_reap(&mut ring, &ts, &mut cqes)?;
        for &(ud, res, flags) in &cqes {
            let fd = (ud & 0xFFFF_FFFF) as i32;
            if ud & ACCEPT != 0 {
                if res >= 0 {
                    let one: libc::c_int = 1;
                    // SAFETY: a valid option value for the new socket the kernel returned.
                    unsafe {
                        libc::setsockopt(
                            res,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            (&one as *const libc::c_int).cast(),
                            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                        )
                    };
                    push(&mut ring, recv(res))?;
                }
                if !cqueue::more(flags) {
                    push(
                        &mut ring,
                        opcode::AcceptMulti::new(Fd(lfd)).build().user_data(ACCEPT),
                    )?;
                }
            } else if ud & RECV != 0 {
                if res > 0 {
                    let bid = cqueue::buffer_select(flags).context("a receive without a buffer")?;
                    held[usize::from(bid)] = (res as u32, 0);
                    push(&mut ring, send(fd, bufs.buffer(bid), res as u32, bid))?;
                } else if let Some(bid) = cqueue::buffer_select(flags) {
                    bufs.give_back(bid);
                }
                if !cqueue::more(flags) {
                    match res {
                        // Out of buffers: they come back as sends finish.
                        _ if res > 0 || res == -libc::ENOBUFS => push(&mut ring, recv(fd))?,
                        // End of stream or an error: the client is gone.
                        // SAFETY: the descriptor the accept gave this connection.
                        _ => unsafe {
                            libc::close(fd);
                        },
                    }
                }
            } else if ud & SEND != 0 {
                let bid = ((ud >> 32) & 0xFFFF) as u16;
                let (len, sent) = &mut held[usize::from(bid)];
                if res > 0 {
                    *sent += res as u32;
                }
                if res > 0 && *sent < *len {
                    // SAFETY: `sent` < `len` <= BUFFER_SIZE: inside buffer `bid`.
                    let rest = unsafe { bufs.buffer(bid).add(*sent as usize) };
                    push(&mut ring, send(fd, rest, *len - *sent, bid))?;
                } else {
                    bufs.give_back(bid);
                }
            }
        }
    }
    // Buffers the kernel may still hold are freed only after the ring is gone.
    drop(ring);
    drop(bufs);
    Ok(oneloop::probe::thread_cpu_time()? - cpu0)
}

fn recv(fd: i32) -> squeue::Entry {
    opcode::RecvMulti::new(Fd(fd), GROUP)
        .build()
        .user_data(RECV | fd as u32 as u64)
}

fn send(fd: i32, at: *const u8, len: u32, bid: u16) -> squeue::Entry {
    opcode::Send::new(Fd(fd), at, len)
        .build()
        .user_data(SEND | (u64::from(bid) << 32) | fd as u32 as u64)
}

/// Submits what is queued and waits up to `ts` for a completion (an interruption, the
/// timeout or backpressure is a normal return), then takes every completion into `cqes` as
/// `(user_data, result, flags)`.
fn enter_and_reap(
    ring: &mut IoUring,
    ts: &Timespec,
    cqes: &mut Vec<(u64, i32, u32)>,
) -> Result<()> {
    match ring
        .submitter()
        .submit_with_args(1, &SubmitArgs::new().timespec(ts))
    {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            ) => {}
        Err(e) => return Err(e).context("io_uring_enter"),
    }
    cqes.clear();
    cqes.extend(
        ring.completion()
            .map(|c| (c.user_data(), c.result(), c.flags())),
    );
    Ok(())
}

/// Queues `entry`, submitting what is queued first if the SQ is full.
fn push(ring: &mut IoUring, entry: squeue::Entry) -> Result<()> {
    loop {
        // SAFETY: every entry names only a descriptor or a buffer of the buffer ring, which
        // outlives the io_uring (see `server`).
        if unsafe { ring.submission().push(&entry) }.is_ok() {
            return Ok(());
        }
        ring.submit().context("io_uring_enter")?;
    }
}

/// `pipes`' ceiling: `n` pipes with `tokens` in flight, one `READ_MULTISHOT` per pipe into a
/// provided buffer ring, each token read written on to another pipe with `write` (the same
/// pipes and passing rule as ours). Runs for `duration`; returns the passes.
pub fn pipes(
    rd: &[std::fs::File],
    wr: &[std::fs::File],
    tokens: usize,
    duration: Duration,
) -> Result<u64> {
    let n = rd.len();
    let mut ring = setup()?;
    let count = (tokens * 4).next_power_of_two().clamp(64, 32_768) as u16;
    let mut bufs = BufRing::new(count, 64)?;
    register(&ring, &bufs)?;
    let read = |i: usize| {
        opcode::ReadMulti::new(Fd(rd[i].as_raw_fd()), 0, GROUP)
            .build()
            .user_data(i as u64)
    };
    for i in 0..n {
        push(&mut ring, read(i))?;
    }
    let ts = Timespec::new().nsec(100_000_000);
    let mut cqes = Vec::with_capacity(1024);
    let start = std::time::Instant::now();
    let mut passes = 0;
    while start.elapsed() < duration {
        enter_and_reap(&mut ring, &ts, &mut cqes)?;
        for &(ud, res, flags) in &cqes {
            let i = ud as usize;
            if let Some(bid) = cqueue::buffer_select(flags) {
                for j in 0..res.max(0) as usize {
                    let next = (i * 31 + j + 1) % n;
                    std::io::Write::write_all(&mut &wr[next], b"t")?;
                }
                passes += res.max(0) as u64;
                bufs.give_back(bid);
            }
            if !cqueue::more(flags) {
                push(&mut ring, read(i))?;
            }
        }
    }
    // Buffers the kernel may still hold are freed only after the ring is gone.
    drop(ring);
    drop(bufs);
    Ok(passes)
}
