//! `oneloop bench`: the seeds' workloads on every backend, each beside a baseline measured in
//! the same run (ratios hold on a noisy shared machine; absolute numbers don't).
//!
//! Every workload reports its rate (ours, the baseline, their ratio) and its CPU cost: CPU
//! seconds per million ops, from `getrusage` of the thread(s) doing the work, since on a
//! shared machine speed drifts but cost per op is steadier.

mod echo;
mod http;
mod nop;
mod pipes;
mod randread;
mod raw;
mod report;

use std::time::{Duration, Instant};

use anyhow::Result;
use oneloop::BackendKind;

pub use randread::remove_test_files;
pub use report::{svg, table, Row};

/// One side of a measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Operations done.
    pub ops: u64,
    /// Wall-clock seconds.
    pub secs: f64,
    /// CPU seconds of the measured thread(s).
    pub cpu_secs: f64,
    /// 99th-percentile latency, where the workload has one.
    pub p99_us: Option<f64>,
    /// Median latency, where the workload reports it.
    pub p50_us: Option<f64>,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
    /// CPU seconds per million operations.
    pub fn cpu_per_mop(&self) -> f64 {
        self.cpu_secs * 1e6 / (self.ops.max(1) as f64)
    }
    /// Adds another round of the same side (latencies are not summed: neither may have one).
    pub fn absorb(&mut self, round: Sample) {
        debug_assert!(round.p99_us.is_none() && self.p99_us.is_none());
        self.ops += round.ops;
        self.secs += round.secs;
        self.cpu_secs += round.cpu_secs;
    }
}

/// Measures `body` on this thread: wall time and this thread's CPU time around it.
pub fn measure(body: impl FnOnce() -> Result<u64>) -> Result<Sample> {
    let cpu0 = oneloop::probe::thread_cpu_time()?;
    let t0 = Instant::now();
    let ops = body()?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_secs = (oneloop::probe::thread_cpu_time()? - cpu0).as_secs_f64();
    Ok(Sample {
        ops,
        secs,
        cpu_secs,
        p99_us: None,
        p50_us: None,
    })
}

/// Which workloads `bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Submit and reap no-op ops (batches of 1 and 32) vs a raw io-uring loop (uring) or a
    /// user-space queue (aio, epoll, where a no-op never leaves user space).
    Nop,
    /// Token passing over many pipes vs a plain epoll loop (and, on uring, a raw io-uring loop
    /// with READ_MULTISHOT into a buffer ring).
    Pipes,
    /// 4 KiB random reads of a file at a queue depth vs a synchronous pread loop (and, on
    /// uring, a raw io-uring loop with the file and buffers registered).
    Randread,
    /// TCP ping-pong over loopback vs a plain epoll echo server.
    Echo,
    /// Network and disk in one loop: each request answered with a 4 KiB file read.
    Mixed,
    /// `oneloop serve` beside nginx (same threads, same client on the ring): 1 KiB, 64 KiB
    /// and 1 MiB files, 10,000 small files, and with `--cold` ranges of a 1 GiB file.
    /// Not part of `all` (it needs nginx and writes ~40 MB of files, 1 GiB with `--cold`).
    Http,
    /// Every workload but `http`, briefly.
    All,
}

/// Parameters for a run.
#[derive(Clone, Debug)]
pub struct Params {
    pub duration: Duration,
    pub pipes: usize,
    pub tokens: usize,
    pub qd: Vec<usize>,
    pub direct: bool,
    pub conns: Vec<usize>,
    pub cold: bool,
    pub file_mib: u64,
    /// The peer server binary for `echo`/`mixed` baselines (`--peer tokio`).
    pub peer: Option<std::path::PathBuf>,
    /// `http`: server threads (ours and nginx's workers).
    pub serve_threads: usize,
    /// `http`: client connections.
    pub http_conns: usize,
    /// `http`: connections holding a partial request head, for the memory measurement (0: none).
    pub partial_heads: usize,
}

/// Runs `workload` on each of `backends`, calling `done` after each measurement.
pub fn run(
    workload: Workload,
    backends: &[BackendKind],
    p: &Params,
    mut done: impl FnMut(Row),
) -> Result<()> {
    let list: &[Workload] = match workload {
        Workload::All => &[
            Workload::Nop,
            Workload::Pipes,
            Workload::Randread,
            Workload::Echo,
            Workload::Mixed,
        ],
        one => std::slice::from_ref(match one {
            Workload::Nop => &Workload::Nop,
            Workload::Pipes => &Workload::Pipes,
            Workload::Randread => &Workload::Randread,
            Workload::Echo => &Workload::Echo,
            Workload::Mixed => &Workload::Mixed,
            Workload::Http => &Workload::Http,
            Workload::All => unreachable!(),
        }),
    };
    let site = if list.contains(&Workload::Http) {
        Some(http::Site::create(p.cold)?)
    } else {
        None
    };
    for &w in list {
        for &kind in backends {
            match w {
                Workload::Nop => {
                    for batch in [1, 32] {
                        done(nop::run(kind, batch, p.duration)?);
                    }
                }
                Workload::Pipes => {
                    for row in pipes::run(kind, p.pipes, p.tokens, p.duration)? {
                        done(row);
                    }
                }
                Workload::Randread => {
                    for &qd in &p.qd {
                        for row in randread::run(kind, qd, p.direct, p.file_mib, p.duration)? {
                            done(row);
                        }
                    }
                }
                Workload::Echo => {
                    for &conns in &p.conns {
                        for row in echo::run(kind, conns, echo::Serve::Echo, p)? {
                            done(row);
                        }
                    }
                }
                Workload::Mixed => {
                    for &conns in &p.conns {
                        for row in echo::run(kind, conns, echo::Serve::FileRead, p)? {
                            done(row);
                        }
                    }
                }
                Workload::Http => {
                    let site = site.as_ref().expect("made above");
                    http::run(kind, p, site, &mut done)?;
                }
                Workload::All => unreachable!(),
            }
        }
    }
    Ok(())
}

/// How many rows `run` will report (for the progress bar).
pub fn count(workload: Workload, backends: &[BackendKind], p: &Params) -> usize {
    let uring = backends.contains(&BackendKind::Uring);
    let per = |w: Workload| match w {
        Workload::Nop => 2 * backends.len(),
        Workload::Pipes => backends.len(),
        // uring's rows come twice: against pread, and against a raw io-uring loop.
        Workload::Randread => p.qd.len() * (backends.len() + usize::from(uring)),
        Workload::Echo | Workload::Mixed => p.conns.len() * backends.len(),
        Workload::Http => http::Load::list(p.cold).len() * backends.len(),
        Workload::All => 0,
    };
    let total = match workload {
        Workload::All => [
            Workload::Nop,
            Workload::Pipes,
            Workload::Randread,
            Workload::Echo,
            Workload::Mixed,
        ]
        .iter()
        .map(|&w| per(w))
        .sum(),
        w => per(w),
    };
    total
}
