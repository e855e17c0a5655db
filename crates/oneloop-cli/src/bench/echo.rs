//! `echo` and `mixed`: TCP ping-pong over loopback, the client in this process on another
//! thread. `echo` sends 64-byte messages back; `mixed` answers each 16-byte request with a
//! 4 KiB read from a file at the offset the request names — network and disk in one loop.
//! Ours: a oneloop-rt server (one task per connection). Baseline: a plain epoll server on one
//! thread (for `mixed`, with a blocking `pread` in the loop).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use oneloop::{BackendKind, EpollEvents};
use oneloop_rt::time::timeout;

use super::randread::{test_file, Offsets};
use super::{raw, Params, Row, Sample};

/// What the server does with each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// Send the bytes back.
    Echo,
    /// Read 4 KiB from the file at the requested offset and send it.
    FileRead,
}

const ECHO_SIZE: usize = 64;
const REQUEST: usize = 16;
const REPLY: usize = 4096;

impl Serve {
    fn sizes(self) -> (usize, usize) {
        match self {
            Serve::Echo => (ECHO_SIZE, ECHO_SIZE),
            Serve::FileRead => (REQUEST, REPLY),
        }
    }
}

/// The rows of one workload at `conns` connections: ours beside the baseline, and for `echo`
/// on io_uring also beside io_uring's own ceiling (`raw.rs`).
pub fn run(kind: BackendKind, conns: usize, serve: Serve, p: &Params) -> Result<Vec<Row>> {
    let file = match serve {
        Serve::FileRead => Some(test_file(p.file_mib)?),
        Serve::Echo => None,
    };
    let evict = |path: &Option<std::path::PathBuf>| -> Result<()> {
        if let (Some(path), true) = (path, p.cold) {
            let f = std::fs::File::open(path)?;
            oneloop::sockets::advise_dontneed(f.as_raw_fd())?;
        }
        Ok(())
    };
    evict(&file)?;
    let ours = session(
        conns,
        serve,
        p,
        file.clone(),
        move |listener, stop, path| ours_server(kind, listener, stop, path, serve),
    )?;
    evict(&file)?;
    let (baseline, baseline_name) = match &p.peer {
        Some(peer) => (
            peer_session(peer, conns, serve, p, file)?,
            "tokio current-thread + tokio::fs",
        ),
        None => {
            let name = if serve == Serve::Echo {
                "plain epoll echo server"
            } else {
                "plain epoll server + pread"
            };
            let server = move |listener, stop, path| epoll_server(listener, stop, path, serve);
            (session(conns, serve, p, file, server)?, name)
        }
    };
    let workload = if serve == Serve::Echo {
        "echo"
    } else {
        "mixed"
    };
    let cold = if serve == Serve::FileRead {
        if p.cold {
            " cold"
        } else {
            " warm"
        }
    } else {
        ""
    };
    // Which read path ours ran with: fed by a multishot receive (io_uring), or readiness.
    let fed = if OURS_FED.load(Ordering::Relaxed) {
        " fed"
    } else {
        ""
    };
    let mut rows = vec![Row {
        workload,
        params: format!("{conns} conns{cold}{fed}"),
        backend: kind.name(),
        unit: "round trips",
        ours,
        baseline_name,
        baseline,
    }];
    if kind == BackendKind::Uring && serve == Serve::Echo {
        if let Err(why) = raw::supported() {
            eprintln!("SKIP echo {conns} conns vs raw uring: {why}");
            return Ok(rows);
        }
        let server = |listener, stop, _| raw::server(listener, stop);
        rows.push(Row {
            workload,
            params: format!("{conns} conns{fed} vs raw"),
            backend: kind.name(),
            unit: "round trips",
            ours,
            baseline_name: "raw io-uring: multishot accept and receive, buffer ring",
            baseline: session(conns, serve, p, None, server)?,
        });
    }
    Ok(rows)
}

/// Starts `server` on a thread, drives it with `conns` clients for the duration, stops it;
/// the sample's CPU time is the server thread's.
fn session(
    conns: usize,
    serve: Serve,
    p: &Params,
    file: Option<std::path::PathBuf>,
    server: impl FnOnce(TcpListener, Arc<AtomicBool>, Option<std::path::PathBuf>) -> Result<Duration>
        + std::marker::Send
        + 'static,
) -> Result<Sample> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || server(listener, stop, file))
    };
    let result = client(addr, conns, serve, p);
    stop.store(true, Ordering::Release);
    let server_cpu = handle
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    let (ops, secs, p99) = result?;
    Ok(Sample {
        ops,
        secs,
        cpu_secs: server_cpu.as_secs_f64(),
        p99_us: Some(p99),
        p50_us: None,
    })
}

/// Runs the peer server binary (`tokio-peer`), drives it like ours, and reads the CPU time it
/// reports when its standard input closes.
fn peer_session(
    peer: &std::path::Path,
    conns: usize,
    serve: Serve,
    p: &Params,
    file: Option<std::path::PathBuf>,
) -> Result<Sample> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mode = if serve == Serve::Echo {
        "echo"
    } else {
        "mixed"
    };
    let mut cmd = Command::new(peer);
    cmd.arg(mode).stdin(Stdio::piped()).stdout(Stdio::piped());
    if let Some(f) = &file {
        cmd.arg(f);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start the peer {}", peer.display()))?;
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    out.read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("LISTEN ")
        .context("the peer did not say where it listens")?
        .parse()?;
    let result = client(addr, conns, serve, p);
    drop(child.stdin.take());
    line.clear();
    out.read_line(&mut line)?;
    child.wait()?;
    let cpu: f64 = line
        .trim()
        .strip_prefix("CPU ")
        .context("the peer did not report its CPU time")?
        .parse()?;
    let (ops, secs, p99) = result?;
    Ok(Sample {
        ops,
        secs,
        cpu_secs: cpu,
        p99_us: Some(p99),
        p50_us: None,
    })
}

/// The load: `conns` connections, one request outstanding each, for the duration.
fn client(addr: SocketAddr, conns: usize, serve: Serve, p: &Params) -> Result<(u64, f64, f64)> {
    let (req_size, reply_size) = serve.sizes();
    let epfd = oneloop::epoll_set::create()?;
    let mut streams = Vec::with_capacity(conns);
    let mut offsets = Offsets::new(p.file_mib);
    for i in 0..conns {
        let s = TcpStream::connect(addr).context("connect")?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        oneloop::epoll_set::add(&epfd, s.as_raw_fd(), libc::EPOLLIN as u32, i as u64)?;
        streams.push(s);
    }
    let request = |offsets: &mut Offsets| -> Vec<u8> {
        let mut r = vec![0u8; req_size];
        r[..8].copy_from_slice(&offsets.next().to_le_bytes());
        r
    };
    let mut got = vec![0usize; conns];
    let mut sent_at = vec![Instant::now(); conns];
    for (i, s) in streams.iter_mut().enumerate() {
        s.write_all(&request(&mut offsets))?;
        sent_at[i] = Instant::now();
    }
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut events = EpollEvents::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let mut trips = 0u64;
    while start.elapsed() < p.duration {
        oneloop::epoll_set::wait(&epfd, &mut events, Some(Duration::from_millis(100)))?;
        let ready: Vec<usize> = events.iter().map(|(_, d)| d as usize).collect();
        for i in ready {
            loop {
                match streams[i].read(&mut buf) {
                    Ok(0) => anyhow::bail!("server closed connection {i}"),
                    Ok(n) => {
                        got[i] += n;
                        while got[i] >= reply_size {
                            got[i] -= reply_size;
                            trips += 1;
                            latencies.push(sent_at[i].elapsed().as_micros().min(u32::MAX as u128) as u32);
                            streams[i].write_all(&request(&mut offsets))?;
                            sent_at[i] = Instant::now();
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0) as f64;
    Ok((trips, secs, p99))
}

/// Whether ours' last server fed its stream reads from a buffer ring (see `ours_server`).
static OURS_FED: AtomicBool = AtomicBool::new(false);

/// Ours: a oneloop-rt server, one task per connection.
fn ours_server(
    kind: BackendKind,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    path: Option<std::path::PathBuf>,
    serve: Serve,
) -> Result<Duration> {
    let cpu0 = oneloop::probe::thread_cpu_time()?;
    let rt = oneloop_rt::Runtime::builder().backend(kind).build();
    rt.block_on(async move {
        OURS_FED.store(oneloop_rt::net::reads_fed(), Ordering::Relaxed);
        let listener = oneloop_rt::net::TcpListener::from_std(listener);
        let file = match path {
            Some(p) => Some(Rc::new(oneloop_rt::fs::File::open(p).await?)),
            None => None,
        };
        let mut tasks = Vec::new();
        while !stop.load(Ordering::Acquire) {
            let Ok(accepted) = timeout(Duration::from_millis(20), listener.accept()).await else {
                continue;
            };
            let (stream, _) = accepted?;
            stream.set_nodelay(true)?;
            let file = file.clone();
            tasks.push(oneloop_rt::spawn(async move {
                connection(stream, file, serve).await
            }));
        }
        for t in tasks {
            t.abort();
        }
        Ok::<_, std::io::Error>(())
    })??;
    Ok(oneloop::probe::thread_cpu_time()? - cpu0)
}

async fn connection(
    stream: oneloop_rt::net::TcpStream,
    file: Option<Rc<oneloop_rt::fs::File>>,
    serve: Serve,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut pending = Vec::with_capacity(64);
    let mut reply = Some(Vec::with_capacity(REPLY));
    loop {
        buf.clear();
        let (res, back) = stream.read(buf).await;
        buf = back;
        if res? == 0 {
            return Ok(());
        }
        match serve {
            Serve::Echo => {
                let (res, back) = stream.write_all(buf).await;
                buf = back;
                res?;
            }
            Serve::FileRead => {
                pending.extend_from_slice(&buf);
                while pending.len() >= REQUEST {
                    let offset = u64::from_le_bytes(pending[..8].try_into().expect("8 bytes"));
                    pending.drain(..REQUEST);
                    let file = file.as_ref().expect("mixed has a file");
                    let mut out = reply.take().expect("reply buffer");
                    out.clear();
                    let (res, back) = file.read_at(out, offset).await;
                    res?;
                    let (res, back) = stream.write_all(back).await;
                    res?;
                    reply = Some(back);
                }
            }
        }
    }
}

/// Reads what `s` has and answers it; `Ok(false)` when the peer closed.
fn serve_ready(
    s: &mut TcpStream,
    pending: &mut Vec<u8>,
    buf: &mut [u8],
    reply: &mut [u8],
    file: Option<&std::fs::File>,
    serve: Serve,
) -> std::io::Result<bool> {
    loop {
        match s.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => match serve {
                Serve::Echo => s.write_all(&buf[..n])?,
                Serve::FileRead => {
                    pending.extend_from_slice(&buf[..n]);
                    while pending.len() >= REQUEST {
                        let offset = u64::from_le_bytes(pending[..8].try_into().expect("8 bytes"));
                        pending.drain(..REQUEST);
                        file.expect("mixed has a file")
                            .read_exact_at(reply, offset)?;
                        s.write_all(reply)?;
                    }
                }
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Baseline: a plain epoll server on one thread (`pread` in the loop for `mixed`).
fn epoll_server(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    path: Option<std::path::PathBuf>,
    serve: Serve,
) -> Result<Duration> {
    let cpu0 = oneloop::probe::thread_cpu_time()?;
    let file = path.map(std::fs::File::open).transpose()?;
    listener.set_nonblocking(true)?;
    let epfd = oneloop::epoll_set::create()?;
    const LISTENER: u64 = u64::MAX;
    oneloop::epoll_set::add(&epfd, listener.as_raw_fd(), libc::EPOLLIN as u32, LISTENER)?;
    let mut conns: HashMap<u64, (TcpStream, Vec<u8>)> = HashMap::new();
    let mut next = 0u64;
    let mut events = EpollEvents::with_capacity(256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = vec![0u8; REPLY];
    while !stop.load(Ordering::Acquire) {
        oneloop::epoll_set::wait(&epfd, &mut events, Some(Duration::from_millis(20)))?;
        let ready: Vec<u64> = events.iter().map(|(_, d)| d).collect();
        for id in ready {
            if id == LISTENER {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true)?;
                    s.set_nodelay(true)?;
                    oneloop::epoll_set::add(&epfd, s.as_raw_fd(), libc::EPOLLIN as u32, next)?;
                    conns.insert(next, (s, Vec::new()));
                    next += 1;
                }
                continue;
            }
            let Some((s, pending)) = conns.get_mut(&id) else {
                continue;
            };
            // A connection that errors (the client hung up mid-reply) is closed, not fatal.
            match serve_ready(s, pending, &mut buf, &mut reply, file.as_ref(), serve) {
                Ok(true) => {}
                Ok(false) | Err(_) => {
                    conns.remove(&id);
                }
            }
        }
    }
    Ok(oneloop::probe::thread_cpu_time()? - cpu0)
}
