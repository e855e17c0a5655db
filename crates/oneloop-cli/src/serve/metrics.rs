//! `--metrics ADDR`: the server's counters as Prometheus text, on a listener of their own.
//!
//! Each thread counts in a [`ThreadMetrics`] of its own (only it writes there, so counting
//! costs an uncontended atomic add) and publishes its ring's counters there every
//! [`PUBLISH`]; a scrape sums every thread's. What is exported: requests by status class,
//! body bytes answered, open connections, the backend, and the rings' ops by kind, pool jobs
//! and cancels.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oneloop::{BackendKind, Op, Stats};
use oneloop_rt::net::TcpListener;

/// How often each thread publishes its ring's counters.
pub const PUBLISH: Duration = Duration::from_millis(250);

/// One thread's counters.
#[derive(Default)]
pub struct ThreadMetrics {
    /// Answers by status class: 1xx to 5xx.
    requests: [AtomicU64; 5],
    /// Body bytes answered (as each answer's length says).
    bytes: AtomicU64,
    /// Open connections.
    pub connections: AtomicU64,
    /// The ring's counters, as last published.
    ring: Mutex<Stats>,
}

impl ThreadMetrics {
    /// Counts an answer.
    pub fn answered(&self, code: u16, bytes: u64) {
        let class = usize::from(code / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Publishes this thread's ring counters.
    pub fn publish_ring(&self) {
        if let Some(stats) = oneloop_rt::stats() {
            *self.ring.lock().unwrap_or_else(|e| e.into_inner()) = stats.ring;
        }
    }
}

/// Every thread's counters.
pub struct Metrics {
    pub threads: Vec<Arc<ThreadMetrics>>,
    pub backend: BackendKind,
}

impl Metrics {
    pub fn new(threads: usize, backend: BackendKind) -> Metrics {
        Metrics {
            threads: (0..threads).map(|_| Arc::default()).collect(),
            backend,
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of the sums over threads.
    pub fn render(&self) -> String {
        let sum =
            |f: &dyn Fn(&ThreadMetrics) -> u64| self.threads.iter().map(|t| f(t)).sum::<u64>();
        let rings: Vec<Stats> = self
            .threads
            .iter()
            .map(|t| *t.ring.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let mut out = String::new();
        family(
            &mut out,
            "oneloop_serve_requests_total",
            "counter",
            "Answers, by status class.",
        );
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n = sum(&|t| t.requests[i].load(Ordering::Relaxed));
            let _ = writeln!(out, "oneloop_serve_requests_total{{class=\"{class}\"}} {n}");
        }
        let singles = [
            (
                "oneloop_serve_response_bytes_total",
                "counter",
                "Body bytes answered, as each answer's length says.",
                sum(&|t| t.bytes.load(Ordering::Relaxed)),
            ),
            (
                "oneloop_serve_connections",
                "gauge",
                "Open connections.",
                sum(&|t| t.connections.load(Ordering::Relaxed)),
            ),
            (
                "oneloop_serve_threads",
                "gauge",
                "Runtime threads, each with its own ring.",
                self.threads.len() as u64,
            ),
            (
                "oneloop_ring_pool_jobs_total",
                "counter",
                "Ops the rings handed to their blocking pools (epoll, aio).",
                rings.iter().map(|s| s.pool_jobs).sum(),
            ),
            (
                "oneloop_ring_cancels_total",
                "counter",
                "Cancel requests made on the rings.",
                rings.iter().map(|s| s.cancels).sum(),
            ),
        ];
        for (name, kind, help, value) in singles {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        family(
            &mut out,
            "oneloop_serve_backend",
            "gauge",
            "The backend the rings run on.",
        );
        let _ = writeln!(
            out,
            "oneloop_serve_backend{{backend=\"{}\"}} 1",
            self.backend
        );
        family(
            &mut out,
            "oneloop_ring_ops_total",
            "counter",
            "Ops submitted to the rings, by kind.",
        );
        for (kind, name) in Op::NAMES.iter().enumerate() {
            let n: u64 = rings.iter().map(|s| s.submitted[kind]).sum();
            let _ = writeln!(out, "oneloop_ring_ops_total{{kind=\"{name}\"}} {n}");
        }
        out
    }
}

/// A metric family's `HELP` and `TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The most scrapes answered at once; more are closed at once (a flood of them must not take
/// the descriptors the server's clients need).
const SCRAPES_MAX: usize = 8;

/// Answers every connection to `listener` with the metrics (whatever it asked), then closes it.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let open = std::rc::Rc::new(std::cell::Cell::new(0usize));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            oneloop_rt::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if open.get() >= SCRAPES_MAX {
            continue;
        }
        open.set(open.get() + 1);
        let open = std::rc::Rc::clone(&open);
        let metrics = Arc::clone(&metrics);
        drop(oneloop_rt::spawn(async move {
            struct Done(std::rc::Rc<std::cell::Cell<usize>>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.set(self.0.get() - 1);
                }
            }
            let _done = Done(open);
            // The request head (any): read until its end, at most 8 KiB, within 5 s.
            let mut head = Vec::with_capacity(8192);
            let read = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    let room = Vec::with_capacity(8192 - head.len());
                    let (res, got) = stream.read(room).await;
                    match res {
                        Ok(n) if n > 0 => head.extend_from_slice(&got),
                        _ => return false,
                    }
                }
                true
            };
            match oneloop_rt::time::timeout(Duration::from_secs(5), read).await {
                Ok(true) => {}
                _ => return,
            }
            let body = metrics.render();
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = oneloop_rt::time::timeout(
                Duration::from_secs(5),
                stream.write_all(answer.into_bytes()),
            )
            .await;
        }));
    }
}
