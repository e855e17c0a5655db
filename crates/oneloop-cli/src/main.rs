//! `oneloop`: the command-line face of oneloop.
//!
//! * `oneloop probe [--json]` — every backend: usable here, or exactly why not; the kernel
//!   features each relies on.
//! * `oneloop bench <workload> [--backend ..] [--duration S] [--json] [--plot FILE.svg]` — the
//!   seeds' workloads, each beside a baseline measured in the same run.
//! * `oneloop serve [DIR] [--listen ADDR] [--threads N] [--backend ..] [--log]` — a static-file
//!   HTTP/1.1 server on one loop per core.
#![deny(unsafe_code)]

mod bench;
mod probe;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use oneloop::BackendKind;

/// One event loop for all Linux I/O: probe this machine's backends, or benchmark them.
#[derive(Parser)]
#[command(name = "oneloop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show each backend (uring, aio, epoll): usable here or why not, and the kernel features seen.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a workload on one or every backend, beside its baseline; print a table.
    Bench(BenchArgs),
    /// Serve a directory over HTTP/1.1 (GET, HEAD, ranges, keep-alive), until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The directory to serve; nothing outside it is ever served.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The address to listen on (port 0: any free port; the banner says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Runtime threads, each with its own ring and listener (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// `auto`, `uring`, `aio` or `epoll`.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Print one line per request to stderr.
    #[arg(long)]
    log: bool,
    /// Seconds from a request's first byte to its whole head before the connection closes.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Seconds a send may wait for a client that does not read.
    #[arg(long, default_value_t = 60.0)]
    send_timeout: f64,
    /// The largest request head, bytes (larger: 431, or 414 for the request line).
    #[arg(long, default_value_t = 8192)]
    max_header_bytes: usize,
    /// The most connections per thread; more wait in the listen backlog.
    #[arg(long, default_value_t = 10_000)]
    max_conns: usize,
    /// Seconds that responses in progress may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Pin runtime thread i to CPU i.
    #[arg(long)]
    pin: bool,
    /// Blocking-pool threads per ring (epoll and aio: how many cold reads and uncached opens
    /// may wait for the disk at once; io_uring waits in the kernel). More is not faster on 2
    /// cores: with 32, epoll's cold-range row fell from 0.96 to 0.67 × nginx (one run each).
    #[arg(long, default_value_t = 4)]
    pool_threads: usize,
    /// MiB of small files (16 KiB or less) each thread keeps in memory, each answering for one
    /// second after it was read before the file is opened again; 0 turns the cache off.
    #[arg(long, default_value_t = 64)]
    cache_mib: usize,
    /// On io_uring, large uncached files (16 KiB and up) read into the ring's registered
    /// buffers and sent zero-copy (SEND_ZC) instead of with sendfile: `auto` to clients on
    /// other hosts (to a loopback client the kernel copies anyway), `on` to every client,
    /// `off` (the default) never. Each connection sends one 128 KiB buffer at a time and its
    /// send ends when the peer has acknowledged it: on a link with a long round trip that
    /// caps a connection's rate, which sendfile does not.
    #[arg(long, value_enum, default_value = "off")]
    send_zc: serve::ZeroCopy,
    /// Serve a file's precompressed sibling (`x.css.br`, `.zst` or `.gz` beside `x.css`, a
    /// regular file beneath the root) to clients whose `Accept-Encoding` takes it: q-values
    /// honoured, br then zstd then gzip at equal weight, `identity;q=0` respected (406 when
    /// nothing acceptable exists). The original's `Content-Type`, the sibling's `ETag`,
    /// `Content-Encoding`, and `Vary: Accept-Encoding` on every answer for a path with a
    /// sibling; ranges and conditionals apply to what is sent. Siblings are looked for once
    /// a second per path. No compression on the fly.
    #[arg(long)]
    precompressed: bool,
    /// Serve the server's counters as Prometheus text at this address (`/metrics`, or any
    /// path): requests by status class, body bytes, open connections, the backend, and the
    /// rings' ops by kind, pool jobs and cancels, summed over threads.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Write a line per answer to FILE (`-`: standard output), appended through the ring; each
    /// thread buffers up to 1 MiB of lines and writes every 100 ms (past that, lines are
    /// dropped and counted, never delaying an answer); SIGUSR1 reopens FILE (rotation: rename
    /// it, then send the signal); shutdown writes what is buffered.
    #[arg(long, value_name = "FILE")]
    access_log: Option<PathBuf>,
    /// The access log's format: nginx's `combined` or one JSON object per line.
    #[arg(long, value_enum, default_value = "combined")]
    log_format: serve::access_log::Format,
}

fn seconds(name: &str, secs: f64) -> Result<Duration> {
    if !(secs > 0.0 && secs <= 86_400.0) {
        bail!("--{name} must be between 0 and 86400 seconds, got {secs}");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn serve(args: ServeArgs) -> Result<()> {
    let backend = match args.backend.parse::<BackendKind>() {
        Ok(kind) => kind,
        Err(_) => bail!(
            "unknown backend {:?}: expected auto, uring, aio or epoll",
            args.backend
        ),
    };
    if !(512..=1 << 20).contains(&args.max_header_bytes) {
        bail!("--max-header-bytes must be between 512 and 1048576");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 1024 {
        bail!("--threads must be between 1 and 1024");
    }
    serve::run(serve::Config {
        root: args.dir,
        listen: args.listen,
        threads,
        backend,
        log: args.log,
        limits: serve::Limits {
            header_timeout: seconds("header-timeout", args.header_timeout)?,
            idle_timeout: seconds("idle-timeout", args.idle_timeout)?,
            send_timeout: seconds("send-timeout", args.send_timeout)?,
            max_header_bytes: args.max_header_bytes,
        },
        max_conns: args.max_conns.max(1),
        grace: seconds("grace", args.grace)?,
        pin: args.pin,
        pool_threads: args.pool_threads.clamp(1, 1024),
        send_zc: args.send_zc,
        precompressed: args.precompressed,
        metrics: args.metrics,
        access_log: args.access_log.map(|p| {
            let file = (p.as_os_str() != "-").then_some(p);
            (file, args.log_format)
        }),
        cache_bytes: args
            .cache_mib
            .checked_mul(1 << 20)
            .filter(|_| args.cache_mib <= 1 << 20)
            .context("--cache-mib must be at most 1048576")?,
    })
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The workload (`all` runs every one briefly).
    #[arg(value_enum)]
    workload: bench::Workload,
    /// `auto`, `uring`, `aio`, `epoll`, or `all` (every usable backend).
    #[arg(long, default_value = "all")]
    backend: String,
    /// Seconds per measurement (each side); default 2, or 0.3 for `all`.
    #[arg(long)]
    duration: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write a bar chart of the ratios (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// `pipes`: pipe pairs.
    #[arg(long, default_value_t = 1024)]
    pipes: usize,
    /// `pipes`: tokens in flight.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// `randread`: queue depths (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 32, 128])]
    qd: Vec<usize>,
    /// `randread`: read with `O_DIRECT` (cache bypassed) instead of from a warm page cache.
    #[arg(long)]
    direct: bool,
    /// `echo`, `mixed`: concurrent connections (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 64, 1000])]
    conns: Vec<usize>,
    /// `mixed`: evict the file from the page cache first (disk reads).
    #[arg(long)]
    cold: bool,
    /// `randread`, `mixed`: size of the test file, MiB.
    #[arg(long, default_value_t = 1024)]
    file_mib: u64,
    /// `echo`, `mixed`: measure against a peer instead of the plain epoll server. `tokio` runs
    /// `bench/tokio-peer` (build it first: `cargo build --release --manifest-path
    /// bench/tokio-peer/Cargo.toml`; `ONELOOP_TOKIO_PEER` may name the binary).
    #[arg(long, value_parser = ["tokio"])]
    peer: Option<String>,
    /// `http`: threads of each server (ours, and nginx's workers); the client takes another CPU.
    #[arg(long, default_value_t = 1)]
    serve_threads: usize,
    /// `http`: client connections (keep-alive, one request in flight each).
    #[arg(long, default_value_t = 64)]
    http_conns: usize,
    /// `http`: also hold this many connections that have each sent a 27-byte partial request
    /// head, on freshly started servers, and print each server's resident memory growth per
    /// connection (0: skip).
    #[arg(long, default_value_t = 0)]
    partial_heads: usize,
}

/// Where the tokio peer binary is.
fn tokio_peer() -> Result<PathBuf> {
    let path = match std::env::var_os("ONELOOP_TOKIO_PEER") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../bench/tokio-peer/target/release/tokio-peer"),
    };
    if !path.is_file() {
        bail!(
            "the tokio peer is not built ({}): run `cargo build --release --manifest-path bench/tokio-peer/Cargo.toml`",
            path.display()
        );
    }
    Ok(path)
}

fn backends(choice: &str) -> Result<Vec<BackendKind>> {
    let usable = |k: BackendKind| {
        oneloop::Ring::builder()
            .backend(k)
            .entries(8)
            .build()
            .is_ok()
    };
    Ok(match choice {
        "all" => BackendKind::ALL
            .into_iter()
            .filter(|&k| usable(k))
            .collect(),
        "auto" => vec![oneloop::Ring::builder().entries(8).build()?.backend()],
        name => {
            let Ok(kind) = name.parse::<BackendKind>() else {
                bail!("unknown backend {name:?}: expected auto, uring, aio, epoll or all");
            };
            if let Err(e) = oneloop::Ring::builder().backend(kind).entries(8).build() {
                bail!("backend {kind} cannot run here: {e}");
            }
            vec![kind]
        }
    })
}

fn bench(args: BenchArgs) -> Result<()> {
    let all = args.workload == bench::Workload::All;
    let secs = args.duration.unwrap_or(if all { 0.3 } else { 2.0 });
    if !(secs > 0.0 && secs < 3600.0) {
        bail!("--duration must be between 0 and 3600 seconds, got {secs}");
    }
    let params = bench::Params {
        duration: Duration::from_secs_f64(secs),
        pipes: args.pipes.max(2),
        tokens: args.tokens.max(1),
        qd: args.qd.iter().map(|&q| q.max(1)).collect(),
        direct: args.direct,
        conns: args.conns.iter().map(|&c| c.max(1)).collect(),
        cold: args.cold,
        file_mib: args.file_mib.max(1),
        peer: args.peer.as_ref().map(|_| tokio_peer()).transpose()?,
        serve_threads: args.serve_threads.clamp(1, 1024),
        http_conns: args.http_conns.clamp(1, 20_000),
        partial_heads: args.partial_heads.min(20_000),
    };
    let kinds = backends(&args.backend)?;
    let total = bench::count(args.workload, &kinds, &params);
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("template"),
    );
    let mut rows = Vec::new();
    let outcome = bench::run(args.workload, &kinds, &params, |row| {
        bar.set_message(format!(
            "{} {} {}: {:.2}x",
            row.workload,
            row.params,
            row.backend,
            row.ratio()
        ));
        bar.inc(1);
        rows.push(row);
    });
    bench::remove_test_files();
    outcome?;
    bar.finish_and_clear();
    if let Some(path) = &args.plot {
        std::fs::write(path, bench::svg(&rows))?;
    }
    if args.json {
        let out = serde_json::json!({
            "duration_secs": secs,
            "params": {"pipes": params.pipes, "tokens": params.tokens, "qd": params.qd, "direct": params.direct,
                       "conns": params.conns, "cold": params.cold, "file_mib": params.file_mib, "peer": args.peer},
            "rows": rows.iter().map(bench::Row::to_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", bench::table(&rows));
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe { json } => probe::run(json),
        Command::Bench(args) => bench(args),
        Command::Serve(args) => serve(args),
    }
}
