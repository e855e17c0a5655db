//! `pipes`: the classic scalability test of async poll. N pipe pairs, T tokens in flight; each
//! token read from one pipe is written to another; counts token passes. Ours: one multishot
//! poll per pipe on the ring. Baseline: a plain level-triggered `epoll_wait` loop, same pipes.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Result;
use oneloop::{BackendKind, EpollEvents, Poll, PollMask, Ring};

use super::{measure, Row};

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

    /// Passes every token waiting in pipe `i` on to the next pipe; returns how many.
    fn pass(&mut self, i: usize) -> Result<u64> {
        let n = self.rd.len();
        let mut buf = [0u8; 64];
        let mut passed = 0;
        loop {
            match self.rd[i].read(&mut buf) {
                Ok(0) => return Ok(passed),
                Ok(k) => {
                    for j in 0..k {
                        let next = (i * 31 + j + 1) % n;
                        self.wr[next].write_all(b"t")?;
                    }
                    passed += k as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(passed),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub fn run(kind: BackendKind, n: usize, tokens: usize, duration: Duration) -> Result<Row> {
    let ours = measure(|| ours(kind, n, tokens, duration))?;
    let baseline = measure(|| epoll_loop(n, tokens, duration))?;
    Ok(Row {
        workload: "pipes",
        params: format!("{n} pipes/{tokens} tok"),
        backend: kind.name(),
        unit: "passes",
        ours,
        baseline_name: "plain epoll_wait loop",
        baseline,
    })
}

fn ours(kind: BackendKind, n: usize, tokens: usize, duration: Duration) -> Result<u64> {
    let mut pipes = Pipes::new(n, tokens)?;
    let mut ring = Ring::builder()
        .backend(kind)
        .entries(1024)
        .in_flight_max(n + 16)
        .build()?;
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
            let i = c.user_data() as usize;
            if !c.is_more() {
                // The backend ended this multishot poll (allowed): arm it again.
                ready.push((i, true));
            } else {
                ready.push((i, false));
            }
        }
        for &(i, rearm) in &ready {
            passes += pipes.pass(i)?;
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
            passes += pipes.pass(i)?;
        }
    }
    Ok(passes)
}
