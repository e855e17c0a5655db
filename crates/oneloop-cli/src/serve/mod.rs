//! `oneloop serve`: a static-file HTTP/1.1 server, one runtime thread per core.
//!
//! Each thread has its own ring and its own `SO_REUSEPORT` listener on the one port; every
//! connection is a task on its thread; every file open and read is an op on that thread's
//! ring (so a read of a cold file never blocks the loop: io_uring waits in the kernel, epoll
//! and aio hand it to the ring's pool). The request side is in `http.rs`, the path-to-file
//! rules (nothing outside the root, ever) in `files.rs`, a connection's life in `conn.rs`.
//!
//! **Limits that keep it up:** per-connection timeouts (`conn.rs`); at most `max_conns`
//! connections per thread (the accept loop waits for one to end); `EMFILE`/`ENFILE` on accept
//! back off and retry, so the server recovers when descriptors free up.
//!
//! **Shutdown:** SIGINT and SIGTERM are blocked in every thread and read from a `signalfd`
//! that each thread polls on its ring like any fd. When it turns readable, every thread stops
//! accepting, answers the requests in progress (each with `Connection: close`) for up to the
//! grace period, drops its idle connections and returns; the process exits 0.

pub mod access_log;
mod cache;
mod conn;
mod files;
pub mod http;
mod metrics;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use oneloop::{BackendKind, Ring};
use oneloop_rt::net::TcpListener;
use oneloop_rt::time::sleep;

pub use conn::Limits;

/// Everything `oneloop serve` is told.
#[derive(Clone, Debug)]
pub struct Config {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub threads: usize,
    pub backend: BackendKind,
    pub log: bool,
    pub limits: Limits,
    pub max_conns: usize,
    pub grace: Duration,
    pub pin: bool,
    /// Blocking-pool threads per ring (epoll, aio): cold reads waiting on the disk at once.
    pub pool_threads: usize,
    /// Bytes of small files each thread keeps in memory (`cache.rs`); 0: none.
    pub cache_bytes: usize,
    /// When large uncached bodies go out zero-copy from registered buffers.
    pub send_zc: ZeroCopy,
    /// Serve `x.br`, `x.zst`, `x.gz` beside `x` by `Accept-Encoding`.
    pub precompressed: bool,
    /// Where to serve the metrics (Prometheus text), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The access log: a file (`None` inside: standard output) and its format.
    pub access_log: Option<(Option<PathBuf>, access_log::Format)>,
}

/// When `serve` sends large uncached bodies zero-copy (`--send-zc`; io_uring only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroCopy {
    /// Never: `SendFile` (the default).
    Off,
    /// To clients on other hosts (loopback clients get `SendFile`).
    Auto,
    /// To every client.
    On,
}

/// Each thread's registered buffers for zero-copy sends (`--send-zc`): 16 of 128 KiB, 2 MiB
/// per thread — within the usual 8 MiB `RLIMIT_MEMLOCK` for a few threads; past it a ring's
/// buffers work unregistered.
const ZC_BUFFERS: (usize, usize) = (16, 128 << 10);

/// What every thread gets.
struct Shared {
    root: Arc<OwnedFd>,
    listeners: Mutex<Vec<Option<std::net::TcpListener>>>,
    signals: OwnedFd,
    config: Config,
    backend: BackendKind,
    /// Every thread's counters, when `--metrics` asks for them.
    metrics: Option<Arc<metrics::Metrics>>,
    /// The metrics listener, taken by thread 0.
    metrics_listener: Mutex<Option<std::net::TcpListener>>,
    /// The access log's file, format and rotation generation.
    access: Option<Arc<access_log::Shared>>,
    /// `SIGUSR1` (reopen the access log), read by thread 0.
    reopen_signal: Option<OwnedFd>,
}

/// Runs the server until SIGINT or SIGTERM.
/// Each thread's buffer ring for requests (io_uring): 1,024 buffers of 512 bytes. A request
/// head is a few hundred bytes; a longer one arrives in several buffers. 512 KiB per thread,
/// touched as connections send (the runtime's default is 4 KiB buffers, for streams of bulk
/// data); memory per waiting connection is what `bench http --partial-heads` measures.
const RECV_BUFFERS: (u32, u32) = (1024, 512);

pub fn run(config: Config) -> Result<()> {
    let root = std::fs::File::open(&config.root)
        .with_context(|| format!("cannot open {}", config.root.display()))?;
    if !root.metadata()?.is_dir() {
        bail!("{} is not a directory", config.root.display());
    }
    // Resolve `auto` once, so every thread runs (and the banner names) the same backend.
    let probe = Ring::builder()
        .backend(config.backend)
        .build()
        .context("no usable backend")?;
    let backend = probe.backend();
    // Where `auto` passed over a backend (a container's seccomp profile refusing io_uring,
    // say), the banner says why.
    let passed_over: String = probe
        .skipped()
        .iter()
        .map(|s| format!("; {} not used: {}", s.backend, s.reason))
        .collect();
    drop(probe);
    let signals = oneloop::sockets::signal_fd(&[libc::SIGINT, libc::SIGTERM])
        .context("cannot set up signal handling")?;
    // Before any thread starts: the signal is blocked in all of them and read here.
    let reopen_signal = match config.access_log {
        Some(_) => Some(
            oneloop::sockets::signal_fd(&[libc::SIGUSR1])
                .context("cannot set up SIGUSR1 for the access log")?,
        ),
        None => None,
    };
    if let Some((Some(path), _)) = &config.access_log {
        // A clear error at start for a log that cannot be opened.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open the access log {}", path.display()))?;
    }
    let threads = config.threads.max(1);
    let first = oneloop::sockets::tcp_listener_reuse_port(&config.listen, 1024)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = first.local_addr()?;
    let mut listeners = vec![Some(first)];
    for _ in 1..threads {
        listeners.push(Some(oneloop::sockets::tcp_listener_reuse_port(
            &addr, 1024,
        )?));
    }
    let metrics_listener = match config.metrics {
        Some(at) => Some(
            std::net::TcpListener::bind(at)
                .with_context(|| format!("cannot listen for metrics on {at}"))?,
        ),
        None => None,
    };
    let metrics_at = match &metrics_listener {
        Some(l) => format!("; metrics at http://{}/metrics", l.local_addr()?),
        None => String::new(),
    };
    println!(
        "oneloop serve: http://{addr}/ from {} (backend {backend}, {threads} thread{}{passed_over}{metrics_at})",
        config.root.display(),
        if threads == 1 { "" } else { "s" }
    );
    let shared = Arc::new(Shared {
        root: Arc::new(OwnedFd::from(root)),
        listeners: Mutex::new(listeners),
        signals,
        config: config.clone(),
        backend,
        metrics: metrics_listener
            .is_some()
            .then(|| Arc::new(metrics::Metrics::new(threads, backend))),
        metrics_listener: Mutex::new(metrics_listener),
        access: config.access_log.as_ref().map(|(path, format)| {
            Arc::new(access_log::Shared {
                path: path.clone(),
                format: *format,
                generation: std::sync::atomic::AtomicU64::new(0),
            })
        }),
        reopen_signal,
    });
    let rt = oneloop_rt::Runtime::builder()
        .backend(backend)
        .threads(threads)
        .pin_to_cores(config.pin)
        .pool_threads(config.pool_threads)
        .in_flight_max(ops_in_flight(config.max_conns))
        .recv_buffers(Some(RECV_BUFFERS));
    let rt = match config.send_zc {
        ZeroCopy::Off => rt,
        ZeroCopy::Auto | ZeroCopy::On => rt.fixed_buffers(ZC_BUFFERS.0, ZC_BUFFERS.1),
    }
    .build();
    let outcomes = rt.run(move |i| {
        let shared = Arc::clone(&shared);
        async move { thread_main(i, &shared).await }
    })?;
    for outcome in outcomes {
        outcome?;
    }
    Ok(())
}

async fn thread_main(index: usize, shared: &Shared) -> std::io::Result<()> {
    let listener = shared.listeners.lock().unwrap_or_else(|e| e.into_inner())[index]
        .take()
        .expect("one listener per thread");
    let listener = TcpListener::from_std(listener);
    let config = &shared.config;
    let t = Rc::new(conn::Thread::new(
        Arc::clone(&shared.root),
        config,
        shared.backend == BackendKind::Uring,
        shared
            .metrics
            .as_ref()
            .map(|m| Arc::clone(&m.threads[index])),
        shared
            .access
            .as_ref()
            .map(|a| Rc::new(access_log::ThreadLog::new(Arc::clone(a)))),
    ));
    let log_stop = Rc::new(std::cell::Cell::new(false));
    let log_writer = t
        .access
        .as_ref()
        .map(|log| oneloop_rt::spawn(access_log::writer(Rc::clone(log), Rc::clone(&log_stop))));
    let mut metric_tasks = Vec::new();
    if let Some(m) = &shared.metrics {
        let mine = Arc::clone(&m.threads[index]);
        metric_tasks.push(oneloop_rt::spawn(async move {
            loop {
                mine.publish_ring();
                sleep(metrics::PUBLISH).await;
            }
        }));
        // Thread 0 answers the scrapes.
        let listener = (index == 0)
            .then(|| {
                shared
                    .metrics_listener
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
            })
            .flatten();
        if let Some(listener) = listener {
            let listener = TcpListener::from_std(listener);
            metric_tasks.push(oneloop_rt::spawn(metrics::serve(listener, Arc::clone(m))));
        }
    }
    if let (0, Some(fd), Some(access)) = (index, &shared.reopen_signal, &shared.access) {
        metric_tasks.push(oneloop_rt::spawn(reopen_on_signal(
            fd.try_clone()?,
            Arc::clone(access),
        )));
    }
    let acceptor = oneloop_rt::spawn(accept_loop(listener, Rc::clone(&t), config.max_conns));
    oneloop_rt::poll::readable(&shared.signals.as_fd()).await?;
    // Stop accepting (the listener closes with the task), finish what is in progress.
    t.stopping.set(true);
    acceptor.abort();
    for task in metric_tasks {
        task.abort();
    }
    let deadline = Instant::now() + config.grace;
    while t.busy.get() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(5)).await;
    }
    if t.busy.get() > 0 {
        eprintln!(
            "oneloop serve: thread {index}: {} response(s) cut off after the {:?} grace period",
            t.busy.get(),
            config.grace
        );
    }
    // The access log's last lines.
    log_stop.set(true);
    if let Some(writer) = log_writer {
        let _ = writer.await;
    }
    // Returning drops the remaining (idle) connections' tasks: their sockets close.
    Ok(())
}

/// Each `SIGUSR1` moves the access log's generation on: every thread reopens the file.
async fn reopen_on_signal(fd: OwnedFd, access: Arc<access_log::Shared>) {
    loop {
        if oneloop_rt::poll::readable(&fd.as_fd()).await.is_err() {
            return;
        }
        // Take the signal (a `signalfd_siginfo`), then say so.
        let mut info = [0u8; 128];
        if rustix::io::read(&fd, &mut info).is_ok() {
            access
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// Room in each thread's ring for `max_conns` connections: one waiting on its read watch,
/// another on its idle or header deadline, a third on a send or file op, and a margin for
/// the acceptor and file opens. A full ring makes new ops wait for room, so a ring sized below
/// its connections would stall them all while they idle (found at 8,192 idle connections
/// under the default cap of 16,384 ops).
fn ops_in_flight(max_conns: usize) -> usize {
    max_conns.saturating_mul(3).saturating_add(1024)
}

async fn accept_loop(listener: TcpListener, t: Rc<conn::Thread>, max_conns: usize) {
    let mut last_warning: Option<Instant> = None;
    loop {
        if t.conns.get() >= max_conns {
            // At the cap: new connections wait in the listen backlog.
            sleep(Duration::from_millis(10)).await;
            continue;
        }
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let open = conn::Open::new(&t);
                drop(oneloop_rt::spawn(conn::serve(stream, peer, open)));
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                // Out of descriptors or memory: back off (no busy loop) and try again; the
                // connection waits in the backlog meanwhile.
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
                    eprintln!("oneloop serve: accept: {e}; backing off");
                    last_warning = Some(Instant::now());
                }
                sleep(Duration::from_millis(50)).await;
            }
            // The peer gave up before we took it (ECONNABORTED), and the like.
            Err(_) => {}
        }
    }
}
