//! `pipes`: the classic scalability test of async poll. N pipe pairs, T tokens in flight; each
//! token read from one pipe is written to another; counts token passes. Ours on io_uring: one
//! `ReadMulti` per pipe into a buffer ring (the kernel reads, `READ_MULTISHOT`), each token
//! written on with `write`. Ours on epoll and aio (and on io_uring where the kernel lacks
//! `READ_MULTISHOT`): one multishot poll per pipe; a ready pipe
//! is read until a read comes back short (a pipe's read returns what it holds, so short means
//! empty: no extra read to `EAGAIN`), its tokens written with `write`. Baseline: a
//! plain level-triggered `epoll_wait` loop, same pipes, one read per ready pipe (what is left
//! is reported again), as a minimal C loop does.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Result;
use oneloop::{BackendKind, EpollEvents, Output, Poll, PollMask, ReadMulti, Ring};

use super::{measure, raw, Row};

struct Pipes {
    rd: Vec<File>,
    wr: Vec<File>,
}

impl Pipes {
    fn new(n: usize, tokens: usize) -> Result<Pipes> {
        let (mut rd, mut wr) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (r, w) = std::io::pipe()?;
            let (r, w) = (File::from(OwnedFd::from(r)), File::from(OwnedFd::from(w)));
            oneloop::sockets::set_nonblocking(r.as_raw_fd())?;
            rd.push(r);
            wr.push(w);
        }
        let mut pipes = Pipes { rd, wr };
        for t in 0..tokens {
            pipes.wr[(t * 7919) % n].write_all(b"t")?;
        }
        Ok(pipes)
    }

    /// Reads pipe `i` once and passes the tokens read on to other pipes: `(passed, full)`,
    /// `full` if the read filled its buffer (more may wait).
    fn pass_once(&mut self, i: usize) -> Result<(u64, bool)> {
        let n = self.rd.len();
        let mut buf = [0u8; 64];
        match self.rd[i].read(&mut buf) {
            Ok(k) => {
                for j in 0..k {
                    let next = (i * 31 + j + 1) % n;
                    self.wr[next].write_all(b"t")?;
                }
                Ok((k as u64, k == buf.len()))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok((0, false)),
            Err(e) => Err(e.into()),
        }
    }

    /// Passes on `k` tokens the ring read from pipe `i`.
    fn pass_on(&mut self, i: usize, k: usize) -> Result<u64> {
        let n = self.rd.len();
        for j in 0..k {
            let next = (i * 31 + j + 1) % n;
            self.wr[next].write_all(b"t")?;
        }
        Ok(k as u64)
    }

    /// Passes every token waiting in pipe `i` on: reads until one comes back short.
    fn pass_all(&mut self, i: usize) -> Result<u64> {
        let mut passed = 0;
        loop {
            let (k, full) = self.pass_once(i)?;
            passed += k;
            if !full {
                return Ok(passed);
            }
        }
    }
}

pub fn run(kind: BackendKind, n: usize, tokens: usize, duration: Duration) -> Result<Vec<Row>> {
    // ReadMulti where the kernel runs it (io_uring, 6.7+); elsewhere poll + read.
    let multi = kind == BackendKind::Uring
        && Ring::builder()
            .backend(kind)
            .entries(4)
            .build()
            .is_ok_and(|r| r.kernel_multishot());
    let ours = measure(|| ours(kind, multi, n, tokens, duration))?;
    let baseline = measure(|| epoll_loop(n, tokens, duration))?;
    let params = if multi {
        format!("{n} pipes/{tokens} tok ReadMulti")
    } else {
        format!("{n} pipes/{tokens} tok")
    };
    let mut rows = vec![Row {
        workload: "pipes",
        params: params.clone(),
        backend: kind.name(),
        unit: "passes",
        ours,
        baseline_name: "plain epoll_wait loop",
        baseline,
    }];
    if kind == BackendKind::Uring {
        if let Err(why) = raw::supported() {
            eprintln!("SKIP pipes vs raw uring: {why}");
            return Ok(rows);
        }
        let raw_loop = || {
            let pipes = Pipes::new(n, tokens)?;
            raw::pipes(&pipes.rd, &pipes.wr, tokens, duration)
        };
        rows.push(Row {
            workload: "pipes",
            params: format!("{params} vs raw"),
            backend: kind.name(),
            unit: "passes",
            ours,
            baseline_name: "raw io-uring: READ_MULTISHOT into a buffer ring, write",
            baseline: measure(raw_loop)?,
        });
    }
    Ok(rows)
}

fn ours(
    kind: BackendKind,
    multi: bool,
    n: usize,
    tokens: usize,
    duration: Duration,
) -> Result<u64> {
    let mut pipes = Pipes::new(n, tokens)?;
    let mut ring = Ring::builder()
        .backend(kind)
        .entries(1024)
        .in_flight_max(n + 16)
        .build()?;
    if !multi {
        return ours_readiness(ring, pipes, duration);
    }
    // At most `tokens` bytes are in flight, so a few buffers per token are plenty.
    let bufs = ring.buf_ring(
        (tokens * 4).next_power_of_two().clamp(64, 32_768) as u32,
        64,
    )?;
    for (i, rd) in pipes.rd.iter().enumerate() {
        ring.submit(ReadMulti::new(rd.as_raw_fd(), &bufs), i as u64)?;
    }
    let start = Instant::now();
    let mut passes = 0;
    // (pipe, tokens read, whether its read ended and must be submitted again)
    let mut ready: Vec<(usize, usize, bool)> = Vec::with_capacity(1024);
    while start.elapsed() < duration {
        ring.wait(1, Some(Duration::from_millis(100)))?;
        ready.clear();
        for c in ring.completions() {
            let i = c.user_data() as usize;
            let more = c.is_more();
            // The lease goes back to the ring here: only the count matters.
            let read = match c.output() {
                Output::Lease(lease) => lease.len(),
                _ => 0,
            };
            // A read that ended (the ring ran dry, or the kernel stopped it) is armed again.
            ready.push((i, read, !more));
        }
        for &(i, read, rearm) in &ready {
            passes += pipes.pass_on(i, read)?;
            if rearm {
                ring.submit(ReadMulti::new(pipes.rd[i].as_raw_fd(), &bufs), i as u64)?;
            }
        }
    }
    Ok(passes)
}

/// Ours on the readiness backends: a multishot poll per pipe; a ready pipe is read (and its
/// tokens written on) until a read comes back short.
fn ours_readiness(mut ring: Ring, mut pipes: Pipes, duration: Duration) -> Result<u64> {
    for (i, rd) in pipes.rd.iter().enumerate() {
        ring.submit(
            Poll::new(rd.as_raw_fd(), PollMask::IN).multishot(),
            i as u64,
        )?;
    }
    let start = Instant::now();
    let mut passes = 0;
    let mut ready = Vec::with_capacity(1024);
    while start.elapsed() < duration {
        ring.wait(1, Some(Duration::from_millis(100)))?;
        ready.clear();
        for c in ring.completions() {
            // A poll the backend ended (allowed) is armed again.
            ready.push((c.user_data() as usize, !c.is_more()));
        }
        for &(i, rearm) in &ready {
            passes += pipes.pass_all(i)?;
            if rearm {
                ring.submit(
                    Poll::new(pipes.rd[i].as_raw_fd(), PollMask::IN).multishot(),
                    i as u64,
                )?;
            }
        }
    }
    Ok(passes)
}

fn epoll_loop(n: usize, tokens: usize, duration: Duration) -> Result<u64> {
    let mut pipes = Pipes::new(n, tokens)?;
    let epfd = oneloop::epoll_set::create()?;
    for (i, rd) in pipes.rd.iter().enumerate() {
        oneloop::epoll_set::add(&epfd, rd.as_raw_fd(), libc::EPOLLIN as u32, i as u64)?;
    }
    let mut events = EpollEvents::with_capacity(1024);
    let start = Instant::now();
    let mut passes = 0;
    while start.elapsed() < duration {
        oneloop::epoll_set::wait(&epfd, &mut events, Some(Duration::from_millis(100)))?;
        let ready: Vec<usize> = events.iter().map(|(_, d)| d as usize).collect();
        for i in ready {
            passes += pipes.pass_once(i)?.0;
        }
    }
    Ok(passes)
}
