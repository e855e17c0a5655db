//! `bench http`: `oneloop serve` beside nginx, under one load generator, in the same run.
//!
//! Both servers serve the same directory with the same number of threads (nginx: one worker
//! per thread, `access_log off`, `sendfile on`; with `--cold`, `aio threads`), pinned to the
//! first CPUs; the client runs on the last CPU, on a oneloop-rt ring (keep-alive, one request
//! in flight per connection). Each row: requests/s of each server, the server's CPU seconds
//! per million requests (all its threads, from `/proc`), and the client's p99 latency. When
//! the client's own thread is busy more than 95 % of the time, the row says `client-bound`:
//! the figure is then the client's limit, not the servers'. Each side's time is taken in five
//! alternating rounds, so that the shared machine's drift falls on both alike.
//!
//! **Connections are made before a measurement, never during one**, at most 128 at a time
//! so no listen backlog overflows, and each is warmed up. When the client may hold both
//! servers' connections at once, they are made once per load and kept across every round (a
//! connection waits at a gate while the other server is measured); otherwise (10,000
//! connections under a 20,000-descriptor limit) each round makes its server's connections
//! afresh and closes them with a reset, so no `TIME_WAIT` piles up and ephemeral ports last.
//! Before starting the servers the bench raises its `RLIMIT_NOFILE` soft limit to the hard one
//! (the servers inherit it) and gives `oneloop serve` a `--max-conns` above the count; a count
//! that needs more descriptors than the limit allows is refused with the limit in the message.
//!
//! Workloads: one 1 KiB, 64 KiB or 1 MiB file again and again; random GETs over 10,000
//! distinct 4 KiB files; and with `--cold`, 64 KiB ranges at random offsets of a 1 GiB file
//! evicted from the page cache before each side. (Over a run the random reads bring much of
//! the file back into the cache, the same for both servers: the row measures a cache that
//! starts cold and warms, not a disk that never hits.)

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use oneloop::BackendKind;
use oneloop_rt::net::TcpStream;

use super::{Params, Row, Sample};

/// The install line printed when nginx is missing.
pub const NGINX_INSTALL: &str = "apt-get install nginx";

/// One kind of load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    File1K,
    File64K,
    File1M,
    Small10K,
    ColdRanges,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::File1K => "1KiB",
            Load::File64K => "64KiB",
            Load::File1M => "1MiB",
            Load::Small10K => "10k-4KiB",
            Load::ColdRanges => "cold-ranges",
        }
    }

    /// The loads a run measures.
    pub fn list(cold: bool) -> Vec<Load> {
        let mut loads = vec![Load::File1K, Load::File64K, Load::File1M, Load::Small10K];
        if cold {
            loads.push(Load::ColdRanges);
        }
        loads
    }
}

const SMALL_FILES: usize = 10_000;
/// Each side's time is split into this many rounds, taken in turn (ours, nginx, ours, ...).
const ROUNDS: u32 = 5;
const BIG_FILE: u64 = 1 << 30;
const RANGE: u64 = 64 * 1024;

/// The served directory, made once per run.
pub struct Site {
    dir: PathBuf,
}

impl Site {
    pub fn create(cold: bool) -> Result<Site> {
        let dir = std::env::temp_dir().join(format!("oneloop-bench-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("small"))?;
        let fill = |len: usize| (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        std::fs::write(dir.join("1k.bin"), fill(1024))?;
        std::fs::write(dir.join("64k.bin"), fill(64 * 1024))?;
        std::fs::write(dir.join("1m.bin"), fill(1 << 20))?;
        let four = fill(4096);
        for i in 0..SMALL_FILES {
            std::fs::write(dir.join(format!("small/{i:05}.bin")), &four)?;
        }
        if cold {
            let mut f = std::fs::File::create(dir.join("big.bin"))?;
            let chunk = fill(1 << 20);
            for _ in 0..(BIG_FILE >> 20) {
                f.write_all(&chunk)?;
            }
            f.sync_all()?;
        }
        Ok(Site { dir })
    }

    fn evict_big(&self) -> Result<()> {
        let f = std::fs::File::open(self.dir.join("big.bin"))?;
        oneloop::sockets::advise_dontneed(std::os::fd::AsRawFd::as_raw_fd(&f))?;
        Ok(())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// nginx's prefix directory (config, pid, temp paths).
    scratch: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first (std's kill is SIGKILL), so nginx removes its pid file and sockets.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// CPUs `0..threads` as a `taskset` list (the client takes the last CPU).
fn server_cpus(threads: usize) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let last = threads.min(cpus.saturating_sub(1).max(1)) - 1;
    format!("0-{last}")
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `oneloop serve` (this binary) on `kind`.
fn start_ours(site: &Site, kind: BackendKind, threads: usize, conns: usize) -> Result<Server> {
    let exe = std::env::current_exe()?;
    let mut cmd = if have("taskset") {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(server_cpus(threads)).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let mut child = cmd
        .arg("serve")
        .arg(&site.dir)
        .args(["--listen", "127.0.0.1:0", "--backend", kind.name()])
        .args(["--threads", &threads.to_string()])
        .args(["--max-conns", &(conns + 64).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting oneloop serve")?;
    let mut out = child.stdout.take().expect("piped");
    let mut banner = Vec::new();
    let mut byte = [0u8; 1];
    while banner.last() != Some(&b'\n') {
        if std::io::Read::read(&mut out, &mut byte)? == 0 {
            bail!("oneloop serve exited: {}", String::from_utf8_lossy(&banner));
        }
        banner.push(byte[0]);
    }
    let banner = String::from_utf8_lossy(&banner);
    let addr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {banner:?}"))?;
    Ok(Server {
        child,
        addr,
        scratch: None,
    })
}

/// Starts nginx on `site` with `threads` workers (`aio threads` if `cold`).
fn start_nginx(site: &Site, threads: usize, cold: bool) -> Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let scratch =
        std::env::temp_dir().join(format!("oneloop-bench-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let master = if threads > 1 { "on" } else { "off" };
    let aio = if cold { "aio threads;" } else { "" };
    let conf = format!(
        "daemon off;\nmaster_process {master};\nworker_processes {threads};\n\
         pid {s}/nginx.pid;\nerror_log {s}/error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
           keepalive_requests 100000000;\n  keepalive_timeout 60s;\n\
           client_body_temp_path {s}/body;\n  proxy_temp_path {s}/proxy;\n\
           fastcgi_temp_path {s}/fastcgi;\n  uwsgi_temp_path {s}/uwsgi;\n  scgi_temp_path {s}/scgi;\n\
           types {{ application/octet-stream bin; }}\n\
           server {{\n    listen 127.0.0.1:{port} reuseport;\n    root {root};\n    location / {{ {aio} }}\n  }}\n}}\n",
        s = scratch.display(),
        root = site.dir.display(),
    );
    let conf_path = scratch.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = if have("taskset") {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(server_cpus(threads)).arg("nginx");
        c
    } else {
        Command::new("nginx")
    };
    let child = cmd
        .arg("-p")
        .arg(&scratch)
        .arg("-e")
        .arg(scratch.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut server = Server {
        child,
        addr,
        scratch: Some(scratch),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            let log =
                std::fs::read_to_string(conf_path.with_file_name("error.log")).unwrap_or_default();
            bail!("nginx exited ({status}): {log}");
        }
        if Instant::now() > deadline {
            bail!("nginx did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// CPU seconds used so far by process `pid` and its children (nginx's workers).
fn process_cpu(pid: u32) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let one = |pid: &str| -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        // Fields after the command name (which may hold spaces): state is field 3.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime) = (
            f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
            f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0),
        );
        (utime + stime) / ticks
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    one(&pid.to_string()) + children.split_whitespace().map(one).sum::<f64>()
}

/// What the client measured against one server.
#[derive(Default)]
struct Measured {
    requests: u64,
    secs: f64,
    /// Every request's latency, µs.
    latencies: Vec<u32>,
    /// CPU seconds of the client's thread.
    client_cpu: f64,
    /// CPU seconds of the server (all its threads).
    server_cpu: f64,
}

impl Measured {
    fn add(&mut self, mut other: Measured) {
        self.requests += other.requests;
        self.secs += other.secs;
        self.latencies.append(&mut other.latencies);
        self.client_cpu += other.client_cpu;
        self.server_cpu += other.server_cpu;
    }

    fn client_busy(&self) -> f64 {
        self.client_cpu / self.secs.max(1e-9)
    }

    fn sample(mut self) -> Sample {
        self.latencies.sort_unstable();
        let at = |q: usize| {
            self.latencies
                .get(self.latencies.len().saturating_sub(1) * q / 100)
                .copied()
                .unwrap_or(0) as f64
        };
        Sample {
            ops: self.requests,
            secs: self.secs,
            cpu_secs: self.server_cpu,
            p99_us: Some(at(99)),
            p50_us: Some(at(50)),
        }
    }
}

/// The request of a connection's `n`th turn.
fn request(load: Load, rng: &mut u64) -> Vec<u8> {
    let mut next = || {
        // xorshift64: cheap, and the same sequence for both servers.
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let (path, range) = match load {
        Load::File1K => ("/1k.bin".to_string(), String::new()),
        Load::File64K => ("/64k.bin".to_string(), String::new()),
        Load::File1M => ("/1m.bin".to_string(), String::new()),
        Load::Small10K => (
            format!("/small/{:05}.bin", next() % SMALL_FILES as u64),
            String::new(),
        ),
        Load::ColdRanges => {
            let start = (next() % (BIG_FILE / RANGE)) * RANGE;
            (
                "/big.bin".to_string(),
                format!("Range: bytes={start}-{}\r\n", start + RANGE - 1),
            )
        }
    };
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{range}\r\n").into_bytes()
}

/// Where a pool's connections wait between measurements.
#[derive(Default)]
struct Gate {
    open: Cell<bool>,
    stop: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Gate {
    fn set(&self, open: bool) {
        self.open.set(open);
        if open {
            self.wake_all();
        }
    }

    fn stop(&self) {
        self.stop.set(true);
        self.wake_all();
    }

    fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Waits until the gate opens (`true`) or the pool stops (`false`).
    async fn pass(&self) -> bool {
        std::future::poll_fn(|cx| {
            if self.stop.get() {
                Poll::Ready(false)
            } else if self.open.get() {
                Poll::Ready(true)
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// What a pool's connections record while its gate is open.
#[derive(Default)]
struct Tally {
    requests: u64,
    latencies: Vec<u32>,
    /// Requests in flight (a measurement ends when they are done).
    busy: usize,
    /// Connections being made.
    connecting: usize,
    /// Connections made.
    connected: usize,
    error: Option<String>,
}

/// `conns` keep-alive connections to one server, kept across measurements.
struct Pool {
    /// Which server, for messages.
    name: &'static str,
    gate: Rc<Gate>,
    tally: Rc<RefCell<Tally>>,
    tasks: Vec<oneloop_rt::JoinHandle<()>>,
}

/// Connections made at once: more could overflow a listen backlog.
const CONNECTING_MAX: usize = 128;

impl Pool {
    /// Connects `conns` connections to `addr` (at most [`CONNECTING_MAX`] at a time).
    async fn connect(
        name: &'static str,
        addr: SocketAddr,
        load: Load,
        conns: usize,
    ) -> Result<Pool> {
        let gate = Rc::new(Gate::default());
        let tally = Rc::new(RefCell::new(Tally::default()));
        let mut tasks = Vec::with_capacity(conns);
        for i in 0..conns {
            while tally.borrow().connecting >= CONNECTING_MAX {
                oneloop_rt::time::sleep(Duration::from_millis(1)).await;
            }
            tally.borrow_mut().connecting += 1;
            let (gate, tally) = (Rc::clone(&gate), Rc::clone(&tally));
            tasks.push(oneloop_rt::spawn(async move {
                if let Err(e) = connection(addr, load, i as u64, &gate, &tally).await {
                    tally.borrow_mut().error.get_or_insert(format!("{e:#}"));
                }
            }));
        }
        loop {
            let (error, connected) = {
                let t = tally.borrow();
                (t.error.clone(), t.connected)
            };
            if let Some(e) = error {
                bail!("connecting to {name}: {e}");
            }
            if connected == conns {
                break;
            }
            oneloop_rt::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(Pool {
            name,
            gate,
            tally,
            tasks,
        })
    }

    /// Lets the connections run for `duration`, then waits for the requests in flight.
    async fn measure(&self, duration: Duration) -> Result<Measured> {
        {
            let mut t = self.tally.borrow_mut();
            t.requests = 0;
            t.latencies.clear();
        }
        let cpu0 = oneloop::probe::thread_cpu_time()?;
        let start = Instant::now();
        self.gate.set(true);
        oneloop_rt::time::sleep(duration).await;
        self.gate.set(false);
        let secs = start.elapsed().as_secs_f64();
        let cpu = (oneloop::probe::thread_cpu_time()? - cpu0).as_secs_f64();
        while self.tally.borrow().busy > 0 {
            oneloop_rt::time::sleep(Duration::from_millis(1)).await;
        }
        let mut t = self.tally.borrow_mut();
        if let Some(e) = &t.error {
            bail!("a connection to {} failed: {e}", self.name);
        }
        Ok(Measured {
            requests: t.requests,
            secs,
            latencies: std::mem::take(&mut t.latencies),
            client_cpu: cpu,
            server_cpu: 0.0,
        })
    }

    /// Closes every connection.
    async fn close(self) {
        self.gate.stop();
        for task in self.tasks {
            task.await;
        }
    }
}

/// One keep-alive connection: a request and its whole response, again and again while the
/// gate is open, until the pool stops.
async fn connection(
    addr: SocketAddr,
    load: Load,
    seed: u64,
    gate: &Gate,
    tally: &RefCell<Tally>,
) -> Result<()> {
    let connected = TcpStream::connect(addr).await;
    tally.borrow_mut().connecting -= 1;
    let stream = connected?;
    stream.set_nodelay(true)?;
    tally.borrow_mut().connected += 1;
    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    // Closed with a reset when the pool stops: no `TIME_WAIT` is left behind.
    rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO))?;
    while gate.pass().await {
        let sent = Instant::now();
        tally.borrow_mut().busy += 1;
        let res = exchange(&stream, load, &mut rng, &mut buf).await;
        let mut t = tally.borrow_mut();
        t.busy -= 1;
        res?;
        if gate.open.get() {
            t.requests += 1;
            t.latencies
                .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }
    Ok(())
}

/// Sends one request and reads its whole response: the head, then as many body bytes as it
/// announces.
async fn exchange(stream: &TcpStream, load: Load, rng: &mut u64, buf: &mut Vec<u8>) -> Result<()> {
    let (res, _) = stream.write_all(request(load, rng)).await;
    res?;
    let mut b = std::mem::take(buf);
    b.clear();
    let (head_len, body_len, status) = loop {
        let (res, back) = read_or_stall(stream, b).await?;
        b = back;
        if res? == 0 {
            bail!("the server closed the connection");
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(&b)? {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .context("no Content-Length")?;
            break (n, len, resp.code.unwrap_or(0));
        }
        if b.len() == b.capacity() {
            bail!("response head too large");
        }
    };
    if !(200..300).contains(&status) {
        bail!("status {status}");
    }
    let mut left = body_len.saturating_sub(b.len() - head_len);
    while left > 0 {
        b.clear();
        let (res, back) = read_or_stall(stream, b).await?;
        b = back;
        match res? {
            0 => bail!("the server closed mid-body"),
            n => left = left.saturating_sub(n),
        }
    }
    *buf = b;
    Ok(())
}

/// How long a read may wait for the server's next bytes before the connection counts as lost.
const READ_STALL: Duration = Duration::from_secs(20);

/// A read of the response that fails after [`READ_STALL`] without bytes. A server's reset can
/// be lost on loopback — when thousands of connections close at once, the kernel's per-CPU
/// backlog (`net.core.netdev_max_backlog`) drops packets, and a reset is never sent again —
/// leaving a connection open here whose server side is gone: without this bound the
/// measurement would wait for it forever.
async fn read_or_stall(
    stream: &TcpStream,
    buf: Vec<u8>,
) -> Result<(std::io::Result<usize>, Vec<u8>)> {
    oneloop_rt::time::timeout(READ_STALL, stream.read(buf))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no bytes from the server in {} s (its reset lost? see net.core.netdev_max_backlog)",
                READ_STALL.as_secs()
            )
        })
}

/// Raises this process's `RLIMIT_NOFILE` soft limit to its hard limit (the servers it starts
/// inherit it) and checks that `conns` connections fit: the client holds one descriptor per
/// connection, and each server as many.
/// Returns the limit.
fn fit_descriptors(conns: usize) -> Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).context("raising RLIMIT_NOFILE")?;
    }
    let have = limit.current.unwrap_or(u64::MAX);
    let need = conns as u64 + 256;
    if have < need {
        bail!(
            "{conns} connections need {need} descriptors per process; RLIMIT_NOFILE allows {have} (raise the hard limit: ulimit -Hn)"
        );
    }
    Ok(have)
}

/// A request head cut short: 27 bytes, no blank line, so a server must keep the connection
/// and what it read until the rest comes (or its header timeout).
const PARTIAL_HEAD: &[u8; 27] = b"GET /1k.bin HTTP/1.1\r\nHost:";

/// Resident memory of process `pid` and its children (nginx's workers), bytes.
fn resident(pid: u32) -> Result<u64> {
    let one = |pid: &str| -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no VmRSS for process {pid}"))?;
        Ok(kib * 1024)
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut total = one(&pid.to_string())?;
    for child in children.split_whitespace() {
        total += one(child)?;
    }
    Ok(total)
}

/// How much `server`'s resident memory grows per connection while `n` connections each hold
/// a [`PARTIAL_HEAD`] (bytes per connection; negative growth counts as 0).
fn growth_per_partial_head(server: &Server, n: usize) -> Result<f64> {
    use std::io::Write;
    let pid = server.child.id();
    let before = resident(pid)?;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = std::net::TcpStream::connect(server.addr)
            .with_context(|| format!("connection {i} of {n}"))?;
        s.write_all(PARTIAL_HEAD)?;
        held.push(s);
    }
    // Let the server accept and read every one (well within its header timeout).
    std::thread::sleep(Duration::from_secs(2));
    let after = resident(pid)?;
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// `--partial-heads N`: fresh servers (ours on `kind`, nginx), `N` connections holding a
/// partial request head each; prints each server's memory growth per connection.
fn partial_heads(kind: BackendKind, p: &Params, site: &Site) -> Result<()> {
    let n = p.partial_heads;
    fit_descriptors(n)?;
    let ours = start_ours(site, kind, p.serve_threads, n)?;
    let per_ours = growth_per_partial_head(&ours, n)?;
    drop(ours);
    let nginx = start_nginx(site, p.serve_threads, false)?;
    let per_nginx = growth_per_partial_head(&nginx, n)?;
    drop(nginx);
    println!(
        "memory  {n} partial heads  {kind}: oneloop serve +{:.0} bytes per connection, nginx +{:.0} \
         (resident memory, /proc/PID/status VmRSS, before and 2 s after connecting)",
        per_ours, per_nginx
    );
    Ok(())
}

/// Runs every load on `kind` beside nginx (or says why nginx is skipped).
pub fn run(kind: BackendKind, p: &Params, site: &Site, mut done: impl FnMut(Row)) -> Result<()> {
    if !have("nginx") {
        println!("SKIP http {kind}: nginx is not installed ({NGINX_INSTALL}); no baseline, no row");
        return Ok(());
    }
    if p.partial_heads > 0 {
        partial_heads(kind, p, site)?;
    }
    let (threads, conns) = (p.serve_threads, p.http_conns);
    // Whether the client may hold both servers' connections at once.
    let keep = fit_descriptors(conns)? >= 2 * conns as u64 + 256;
    let ours = start_ours(site, kind, threads, conns)?;
    let nginx = start_nginx(site, threads, false)?;
    let nginx_cold = if p.cold {
        Some(start_nginx(site, threads, true)?)
    } else {
        None
    };
    // The client's ring: io_uring where it works, else epoll.
    let client = [BackendKind::Uring, BackendKind::Epoll]
        .into_iter()
        .find(|&k| {
            oneloop::Ring::builder()
                .backend(k)
                .entries(8)
                .build()
                .is_ok()
        })
        .unwrap_or(BackendKind::Auto);
    let rt = oneloop_rt::Runtime::builder()
        .backend(client)
        .in_flight_max(4 * conns + 1024)
        .build();
    for load in Load::list(p.cold) {
        let base = if load == Load::ColdRanges {
            nginx_cold.as_ref().expect("started with --cold")
        } else {
            &nginx
        };
        // Alternating rounds, so a drift of the shared machine falls on both sides alike.
        let round = p.duration / ROUNDS;
        let measured = rt.block_on(async {
            let sides = [(&ours, "oneloop serve"), (base, "nginx")];
            let mut kept = Vec::new();
            if keep {
                for (server, name) in sides {
                    kept.push(Pool::connect(name, server.addr, load, conns).await?);
                }
            }
            let mut measured = [Measured::default(), Measured::default()];
            for warm_up in [true, false, false, false, false] {
                for (i, (server, name)) in sides.iter().enumerate() {
                    let fresh = match keep {
                        true => None,
                        false => Some(Pool::connect(name, server.addr, load, conns).await?),
                    };
                    let pool = fresh.as_ref().unwrap_or_else(|| &kept[i]);
                    if warm_up || fresh.is_some() {
                        pool.measure(Duration::from_millis(200)).await?;
                    }
                    if !warm_up {
                        if load == Load::ColdRanges {
                            site.evict_big()?;
                        }
                        let cpu0 = process_cpu(server.child.id());
                        let mut m = pool.measure(round).await?;
                        m.server_cpu = process_cpu(server.child.id()) - cpu0;
                        measured[i].add(m);
                    }
                    if let Some(pool) = fresh {
                        pool.close().await;
                    }
                }
            }
            for pool in kept {
                pool.close().await;
            }
            let [a, b] = measured;
            Ok::<_, anyhow::Error>((a, b))
        })?;
        let (m_ours, m_base) = match measured {
            Ok(m) => m,
            // A load this machine cannot carry at this count (descriptors, say): the row says
            // why instead of ending the run.
            Err(e) => {
                println!("SKIP http {} c{conns} {kind}: {e:#}", load.name());
                continue;
            }
        };
        let busy = m_ours.client_busy().max(m_base.client_busy());
        let mut params = format!("{} c{conns} t{threads}", load.name());
        if busy > 0.95 {
            params.push_str(" client-bound");
        }
        done(Row {
            workload: "http",
            params,
            backend: kind.name(),
            unit: "requests",
            ours: m_ours.sample(),
            baseline_name: if load == Load::ColdRanges {
                "nginx aio threads"
            } else {
                "nginx"
            },
            baseline: m_base.sample(),
        });
    }
    Ok(())
}
