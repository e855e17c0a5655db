//! `oneloop serve` as a user runs it: the binary, started on each backend, asked by a real
//! HTTP client (`ureq`) and, for what no well-behaved client sends, by raw bytes on a socket.
//! A backend this machine cannot run prints SKIP.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BACKENDS: [&str; 3] = ["uring", "aio", "epoll"];

fn usable(backend: &str) -> bool {
    let kind = backend.parse().unwrap();
    match oneloop::Ring::builder().backend(kind).entries(8).build() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {backend}: {e}");
            false
        }
    }
}

/// A served directory: an index, files of known bytes, a subdirectory, a name that needs
/// escaping, a symlink inside the root and one leaving it, a FIFO.
fn site(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oneloop-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join("listed")).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>home</h1>\n").unwrap();
    std::fs::write(dir.join("1k.bin"), pattern(1024)).unwrap();
    std::fs::write(dir.join("big.bin"), pattern(3 << 20)).unwrap();
    std::fs::write(dir.join("style.css"), "body{}").unwrap();
    std::fs::write(dir.join("sub/a.txt"), "sub a\n").unwrap();
    std::fs::write(dir.join("listed/<b>&'q'.txt"), "x").unwrap();
    std::fs::write(dir.join("listed/javascript:alert(1)"), "x").unwrap();
    std::os::unix::fs::symlink("sub/a.txt", dir.join("inside")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", dir.join("up")).unwrap();
    let fifo =
        std::ffi::CString::new(dir.join("fifo").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
    assert_eq!(rc, 0);
    dir
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// Runs `body` on each usable backend with a fresh served directory (see [`site`]), removed
/// afterwards; the body's server stops when it returns.
fn on_every_backend(tag: &str, body: impl Fn(&str, &Path)) {
    for backend in BACKENDS.into_iter().filter(|b| usable(b)) {
        let dir = site(&format!("{tag}-{backend}"));
        body(backend, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Asks for `/sub/a.txt` on a kept-alive connection and reads until its body has come.
fn ask_sub(s: &mut TcpStream) {
    s.write_all(b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = String::new();
    while !got.ends_with("sub a\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

struct Server {
    child: Child,
    port: u16,
    /// The banner's metrics address (`--metrics`).
    metrics: Option<String>,
}

/// Starts `serve` with its stderr (the `--log` lines) captured, for [`Server::stop_and_log`].
fn start_logged(backend: &str, dir: &Path, extra: &[&str]) -> Server {
    Server::start_full(backend, dir, extra, None, Stdio::piped())
}

impl Server {
    fn start(backend: &str, dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(backend, dir, extra, None)
    }

    /// Starts the binary (through `sh -c "ulimit -n N; exec ..."` when `fd_limit` is given)
    /// and reads the port from its banner.
    fn start_with(backend: &str, dir: &Path, extra: &[&str], fd_limit: Option<u32>) -> Server {
        Server::start_full(backend, dir, extra, fd_limit, Stdio::inherit())
    }

    fn start_full(
        backend: &str,
        dir: &Path,
        extra: &[&str],
        fd_limit: Option<u32>,
        stderr: Stdio,
    ) -> Server {
        let bin = env!("CARGO_BIN_EXE_oneloop");
        let mut args: Vec<String> = vec![
            "serve".into(),
            dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--backend".into(),
            backend.into(),
            "--threads".into(),
            "1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match fd_limit {
            None => {
                let mut c = Command::new(bin);
                c.args(&args);
                c
            }
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin)
                    .args(&args);
                c
            }
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut banner = String::new();
        let mut out = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while !banner.ends_with('\n') {
            assert_eq!(out.read(&mut byte).unwrap(), 1, "serve exited: {banner}");
            banner.push(byte[0] as char);
        }
        assert!(banner.contains(&format!("backend {backend}")), "{banner}");
        let port = banner
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {banner:?}"));
        let metrics = banner
            .split("metrics at ")
            .nth(1)
            .map(|s| s.trim_end().trim_end_matches(')').to_string());
        Server {
            child,
            port,
            metrics,
        }
    }

    fn metrics_url(&self) -> String {
        self.metrics.clone().expect("started with --metrics")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Sends raw bytes, reads until the server closes (or 10 s), returns what came.
    fn raw(&self, request: &[u8]) -> String {
        let mut s = self.connect();
        s.write_all(request).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Stops the server (SIGTERM: it writes its access log's last lines) and returns `file`.
    fn stop_and_log_file(mut self, file: &Path) -> String {
        let status = self.terminate();
        assert!(status.success(), "{status}");
        std::fs::read_to_string(file).unwrap()
    }

    /// Stops the server (SIGTERM) and returns what it wrote to stderr (see [`start_logged`]).
    fn stop_and_log(mut self) -> String {
        let status = self.terminate();
        assert!(status.success(), "{status}");
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            err.read_to_string(&mut log).unwrap();
        }
        log
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending SIGTERM to our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build()
}

/// Status, the response, and its body, for any status.
fn fetch(req: ureq::Request) -> (u16, ureq::Response) {
    match req.call() {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("{e}"),
    }
}

fn body(r: ureq::Response) -> Vec<u8> {
    let mut v = Vec::new();
    r.into_reader().read_to_end(&mut v).unwrap();
    v
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"))
}

#[test]
fn every_status_with_a_real_client() {
    on_every_backend("statuses", |backend, dir| {
        let server = Server::start(backend, dir, &[]);
        let a = agent();

        let (code, r) = fetch(a.get(&server.url("/")));
        assert_eq!((code, r.content_type()), (200, "text/html"));
        assert_eq!(body(r), b"<h1>home</h1>\n");

        let (code, r) = fetch(a.get(&server.url("/1k.bin")));
        assert_eq!(code, 200);
        assert_eq!(r.header("Content-Length"), Some("1024"));
        assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
        let etag = r.header("ETag").unwrap().to_string();
        let modified = r.header("Last-Modified").unwrap().to_string();
        assert_eq!(body(r), pattern(1024));

        let (code, r) = fetch(a.get(&server.url("/style.css")));
        assert_eq!(
            (code, r.header("Content-Type")),
            (200, Some("text/css; charset=utf-8"))
        );

        let (code, r) = fetch(a.get(&server.url("/big.bin")));
        assert_eq!(code, 200);
        assert!(body(r) == pattern(3 << 20), "{backend}: big file differs");

        let (code, r) = fetch(a.head(&server.url("/1k.bin")));
        assert_eq!((code, r.header("Content-Length")), (200, Some("1024")));
        assert!(body(r).is_empty());

        // Ranges: one part (206), suffix, and past the end (416).
        let (code, r) = fetch(a.get(&server.url("/1k.bin")).set("Range", "bytes=100-199"));
        assert_eq!(code, 206);
        assert_eq!(r.header("Content-Range"), Some("bytes 100-199/1024"));
        assert_eq!(body(r), &pattern(1024)[100..200]);
        let (code, r) = fetch(a.get(&server.url("/big.bin")).set("Range", "bytes=-10"));
        assert_eq!(code, 206);
        assert_eq!(body(r), &pattern(3 << 20)[(3 << 20) - 10..]);
        let (code, r) = fetch(a.get(&server.url("/1k.bin")).set("Range", "bytes=5000-"));
        assert_eq!(
            (code, r.header("Content-Range")),
            (416, Some("bytes */1024"))
        );
        // If-Range with another validator: the whole file.
        let (code, _) = fetch(
            a.get(&server.url("/1k.bin"))
                .set("Range", "bytes=0-9")
                .set("If-Range", "\"other\""),
        );
        assert_eq!(code, 200);

        // Conditionals: 304 by ETag and by date; a changed tag gets the body.
        let (code, r) = fetch(a.get(&server.url("/1k.bin")).set("If-None-Match", &etag));
        assert_eq!((code, r.header("ETag")), (304, Some(etag.as_str())));
        assert!(body(r).is_empty());
        let (code, _) = fetch(
            a.get(&server.url("/1k.bin"))
                .set("If-Modified-Since", &modified),
        );
        assert_eq!(code, 304);
        let (code, _) = fetch(a.get(&server.url("/1k.bin")).set("If-None-Match", "\"x\""));
        assert_eq!(code, 200);

        // Directories: redirect to the slash, index.html, or an escaped listing.
        let (code, r) = fetch(a.get(&server.url("/sub")));
        assert_eq!((code, r.header("Location")), (301, Some("/sub/")));
        // The redirect is built from the checked path: `//sub` stays on this host.
        let got = server.raw(b"GET //sub HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(got.contains("\r\nLocation: /sub/\r\n"), "{backend}: {got}");
        let (code, r) = fetch(a.get(&server.url("/listed/")));
        assert_eq!(code, 200);
        let html = String::from_utf8(body(r)).unwrap();
        assert!(html.contains("&lt;b&gt;&amp;&#39;q&#39;.txt"), "{html}");
        // No name can become a script link.
        assert!(!html.contains("href=\"javascript:"), "{html}");
        assert!(html.contains("href=\"./javascript%3Aalert(1)\""), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        let (code, r) = fetch(a.get(&server.url("/inside")));
        assert_eq!(code, 200);
        assert_eq!(body(r), b"sub a\n");

        // Errors a client can ask for.
        let (code, _) = fetch(a.get(&server.url("/missing")));
        assert_eq!(code, 404);
        let (code, r) = fetch(a.post(&server.url("/1k.bin")));
        assert_eq!((code, r.header("Allow")), (405, Some("GET, HEAD")));
        let (code, _) = fetch(a.request("BREW", &server.url("/")));
        assert_eq!(code, 501);
        let (code, _) = fetch(a.get(&server.url("/fifo")));
        assert_eq!(
            code, 403,
            "{backend}: a FIFO is not served (and does not hang)"
        );
        eprintln!("PASS {backend}: statuses");
    });
}

#[test]
fn malformed_requests_and_traversal_attempts() {
    on_every_backend("malformed", |backend, dir| {
        let server = Server::start(backend, dir, &[]);
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
            (
                b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                405,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
                413,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (
                b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
                400,
            ),
            (
                b"GET /sub%2f..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: x\r\n\r\n",
                400,
            ),
            (b"GET /1k.bin%00.html HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (
                b"GET /escape HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                404,
            ),
            (
                b"GET /up/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                404,
            ),
            (
                b"GET /proc/self/root/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                404,
            ),
            (
                b"GET http://x/sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                200,
            ),
            (b"garbage\r\n\r\n", 400),
        ];
        for (request, want) in cases {
            let got = server.raw(request);
            assert_eq!(
                status_of(&got),
                *want,
                "{backend}: {:?} got {got:?}",
                String::from_utf8_lossy(request)
            );
            assert!(!got.contains("root:"), "{backend}: served outside the root");
        }
        // A refused HEAD gets the status and headers, no body.
        let got = server.raw(b"HEAD / HTTP/1.1\r\n\r\n");
        assert_eq!(status_of(&got), 400);
        assert!(
            got.ends_with("\r\n\r\n"),
            "{backend}: a body after a refused HEAD: {got:?}"
        );
        // Conflicting lengths are refused, not guessed at (and the next request is not eaten).
        let got = server.raw(
            b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(status_of(&got), 400, "{backend}: {got:?}");
        // A request line longer than the head limit: 414; a long header: 431.
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        assert_eq!(status_of(&server.raw(long_line.as_bytes())), 414);
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
        assert_eq!(status_of(&server.raw(long_target.as_bytes())), 414);
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(9000)
        );
        assert_eq!(status_of(&server.raw(big_header.as_bytes())), 431);
        // A head longer than the buffer a connection starts with, within the limit, arriving
        // in pieces: answered (the buffer grows while the head is partial).
        let padded = format!(
            "GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "p".repeat(6000)
        );
        let mut s = server.connect();
        for piece in padded.as_bytes().chunks(700) {
            s.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let got = String::from_utf8_lossy(&got);
        assert_eq!(status_of(&got), 200, "{backend}: {got:?}");
        eprintln!("PASS {backend}: malformed and traversal");
    });
}

#[test]
fn keep_alive_pipelining_and_close() {
    on_every_backend("pipeline", |backend, dir| {
        let server = Server::start(backend, dir, &[]);
        // Three pipelined requests in one write, the last asking to close: three answers
        // in order, then the server closes.
        let got = server.raw(
            b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n\
              HEAD /1k.bin HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        let a = got.find("sub a\n").expect("first answer");
        let b = got.find("Content-Length: 1024").expect("second answer");
        let c = got.find("<h1>home</h1>").expect("third answer");
        assert!(a < b && b < c, "{backend}: out of order: {got}");
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 3, "{got}");
        assert!(got.contains("Connection: close"));
        // HTTP/1.0 closes unless asked to keep alive.
        let got = server.raw(b"GET /sub/a.txt HTTP/1.0\r\n\r\n");
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("sub a\n"),
            "{got}"
        );
        // A request with a small body: the body is skipped, the next request still parsed.
        let got = server.raw(
            b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
              GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(got.matches("sub a\n").count(), 2, "{got}");
        // Keep-alive: two requests on one connection, one at a time.
        let mut s = server.connect();
        for _ in 0..2 {
            ask_sub(&mut s);
        }
        eprintln!("PASS {backend}: pipelining");
    });
}

#[test]
fn small_files_are_kept_for_a_second_then_read_again() {
    on_every_backend("cache", |backend, dir| {
        let server = Server::start(backend, dir, &[]);
        let uncached = Server::start(backend, dir, &["--cache-mib", "0"]);
        let a = agent();
        let get = |server: &Server, path: &str| {
            let (code, r) = fetch(a.get(&server.url(path)));
            (code, body(r))
        };
        assert_eq!(get(&server, "/sub/a.txt"), (200, b"sub a\n".to_vec()));
        assert_eq!(get(&server, "/inside"), (200, b"sub a\n".to_vec()));
        // Changed on disk: a new body (and length), a removal, a symlink now pointing out of
        // the root. Without the cache each shows at once; with it, within a second.
        std::fs::write(dir.join("sub/a.txt"), "changed, and longer\n").unwrap();
        std::fs::remove_file(dir.join("style.css")).unwrap();
        std::fs::remove_file(dir.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("inside")).unwrap();
        assert_eq!(
            get(&uncached, "/sub/a.txt"),
            (200, b"changed, and longer\n".to_vec())
        );
        assert_eq!(get(&uncached, "/style.css").0, 404);
        assert_eq!(get(&uncached, "/inside").0, 404);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            get(&server, "/sub/a.txt"),
            (200, b"changed, and longer\n".to_vec()),
            "{backend}: a changed file is read again after a second"
        );
        assert_eq!(get(&server, "/style.css").0, 404, "{backend}: removed");
        assert_eq!(
            get(&server, "/inside").0,
            404,
            "{backend}: a symlink turned to point outside is refused, cached or not"
        );
        eprintln!("PASS {backend}: cache");
    });
}

#[test]
fn slow_senders_and_idle_connections_are_closed() {
    on_every_backend("slow", |backend, dir| {
        let server = Server::start(
            backend,
            dir,
            &["--header-timeout", "0.5", "--idle-timeout", "1"],
        );
        // A head that trickles in, a byte at a time, never ends.
        let mut s = server.connect();
        let start = Instant::now();
        let mut closed = false;
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if s.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 16];
            let r = s.read(&mut buf);
            s.set_nonblocking(false).unwrap();
            if matches!(r, Ok(0)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "{backend}: a slow sender was not closed");
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{backend}: closed too late"
        );
        // An idle keep-alive connection is closed after the idle timeout.
        let mut s = server.connect();
        let mut buf = [0u8; 16];
        let start = Instant::now();
        assert_eq!(s.read(&mut buf).unwrap(), 0);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "{backend}: idle closed at {waited:?}"
        );
        eprintln!("PASS {backend}: slow sender closed, idle closed after {waited:?}");
    });
}

#[test]
fn vanished_clients_leave_nothing_behind() {
    on_every_backend("vanish", |backend, dir| {
        let server = Server::start(backend, dir, &[]);
        let a = agent();
        let (code, _) = fetch(a.get(&server.url("/sub/a.txt")));
        assert_eq!(code, 200);
        drop(a);
        std::thread::sleep(Duration::from_millis(200));
        let before = server.fds();
        for round in 0..40 {
            let mut s = server.connect();
            s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = vec![0u8; 1000 + round * 100];
            s.read_exact(&mut buf).unwrap();
            // Gone mid-response: a reset if unread data is left.
            drop(s);
        }
        // Every connection's socket and file close once the server notices.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.fds() > before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(server.fds(), before, "{backend}: descriptors leaked");
        let (code, _) = fetch(agent().get(&server.url("/sub/a.txt")));
        assert_eq!(code, 200, "{backend}: the server still answers");
        eprintln!("PASS {backend}: 40 vanished clients, {before} fds before and after");
    });
}

#[test]
fn sigterm_finishes_responses_in_progress_and_exits_zero() {
    on_every_backend("shutdown", |backend, dir| {
        let mut server = Server::start(backend, dir, &["--grace", "20"]);
        let idle = server.connect();
        let mut slow = server.connect();
        slow.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut first = vec![0u8; 4096];
        slow.read_exact(&mut first).unwrap();
        // The download is in progress (the rest waits in socket buffers and the server).
        let status = std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut rest = Vec::new();
                std::thread::sleep(Duration::from_millis(300));
                slow.read_to_end(&mut rest).unwrap();
                first.extend_from_slice(&rest);
                first
            });
            let status = server.terminate();
            let all = reader.join().unwrap();
            let body_at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert!(
                all[body_at..] == pattern(3 << 20)[..],
                "{backend}: the response in progress was cut ({} body bytes)",
                all.len() - body_at
            );
            status
        });
        assert!(status.success(), "{backend}: exit {status:?}");
        drop(idle);
        assert!(
            TcpStream::connect(("127.0.0.1", server.port)).is_err(),
            "{backend}: still accepting after shutdown"
        );
        eprintln!("PASS {backend}: shutdown");
    });
}

#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    on_every_backend("emfile", |backend, dir| {
        let server = Server::start_with(backend, dir, &[], Some(48));
        // More connections than descriptors: the excess waits in the backlog.
        let conns: Vec<TcpStream> = (0..80).map(|_| server.connect()).collect();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            server.child.id() > 0
                && std::fs::metadata(format!("/proc/{}", server.child.id())).is_ok()
        );
        drop(conns);
        // Once they are gone, new clients are served.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got =
                server.raw(b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            if got.ends_with("sub a\n") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backend}: did not recover: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("PASS {backend}: EMFILE survived");
    });
}

#[test]
fn the_connection_cap_holds_new_clients_in_the_backlog() {
    on_every_backend("cap", |backend, dir| {
        let server = Server::start(backend, dir, &["--max-conns", "2"]);
        let mut first = server.connect();
        let mut second = server.connect();
        ask_sub(&mut first);
        ask_sub(&mut second);
        // A third client is connected by the kernel but not taken while two are open.
        let mut third = server.connect();
        third
            .write_all(b"GET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        third
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(
            third.read(&mut buf).is_err(),
            "{backend}: served past the cap"
        );
        // One leaves: the third is served.
        drop(first);
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let n = third.read(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "{backend}"
        );
        drop(second);
        eprintln!("PASS {backend}: connection cap");
    });
}

#[test]
fn large_bodies_go_zero_copy_when_asked() {
    on_every_backend("zc", |backend, dir| {
        let big = pattern(3 << 20);
        for mode in ["on", "off", "auto"] {
            let server = start_logged(backend, dir, &["--send-zc", mode, "--log"]);
            let a = agent();
            let (code, r) = fetch(a.get(&server.url("/big.bin")));
            assert_eq!(code, 200);
            assert!(body(r) == big, "{backend} --send-zc {mode}: the whole body");
            let (code, r) = fetch(
                a.get(&server.url("/big.bin"))
                    .set("Range", "bytes=100000-2000000"),
            );
            assert_eq!(code, 206);
            assert!(
                body(r) == big[100_000..=2_000_000],
                "{backend} --send-zc {mode}: a range"
            );
            // Small bodies never go this way.
            let (code, r) = fetch(a.get(&server.url("/1k.bin")));
            assert_eq!((code, body(r)), (200, pattern(1024)));
            let log = server.stop_and_log();
            let zc = log.lines().filter(|l| l.contains("zero-copy")).count();
            // Only io_uring sends zero-copy (elsewhere sendfile copies less); `auto` only to
            // other hosts: this client is on loopback.
            let expected = if mode == "on" && backend == "uring" {
                2
            } else {
                0
            };
            assert_eq!(zc, expected, "{backend} --send-zc {mode}:\n{log}");
        }
        eprintln!("PASS {backend}: zero-copy bodies");
    });
}

/// Splits a `multipart/byteranges` body into its parts: each part's `Content-Range` and bytes.
fn multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {content_type}"));
    let delimiter = format!("\r\n--{boundary}");
    let text = body;
    let find = |from: usize, what: &[u8]| {
        text[from..]
            .windows(what.len())
            .position(|w| w == what)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut at = find(0, delimiter.as_bytes()).expect("a first delimiter");
    assert_eq!(at, 0, "the body starts with the delimiter");
    loop {
        at += delimiter.len();
        if text[at..].starts_with(b"--\r\n") {
            assert_eq!(at + 4, text.len(), "nothing after the closing delimiter");
            return parts;
        }
        let head_end = find(at, b"\r\n\r\n").expect("a part's head");
        let head = String::from_utf8_lossy(&text[at..head_end]).into_owned();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Range: "))
            .expect("Content-Range")
            .to_string();
        assert!(
            head.contains("Content-Type: application/octet-stream"),
            "{head}"
        );
        let next = find(head_end + 4, delimiter.as_bytes()).expect("the next delimiter");
        parts.push((range, text[head_end + 4..next].to_vec()));
        at = next;
    }
}

#[test]
fn several_ranges_come_as_multipart_parts() {
    on_every_backend("ranges", |backend, dir| {
        let server = Server::start(backend, dir, &[]);
        let a = agent();
        // A file read whole (the cache) and a big one (parts sent with SendFile).
        for (path, data) in [("/1k.bin", pattern(1024)), ("/big.bin", pattern(3 << 20))] {
            let len = data.len();
            let ask = |range: &str| {
                let (code, r) = fetch(a.get(&server.url(path)).set("Range", range));
                let ct = r.header("Content-Type").unwrap_or("").to_string();
                let cr = r.header("Content-Range").map(str::to_string);
                (code, ct, cr, body(r))
            };
            // Three ranges, out of order, one overlapping another: two parts, in order.
            let (code, ct, _, got) = ask("bytes=900-999, 0-99, 50-199");
            assert_eq!(code, 206, "{backend} {path}");
            let parts = multipart(&ct, &got);
            assert_eq!(parts.len(), 2, "{backend} {path}");
            assert_eq!(parts[0].0, format!("bytes 0-199/{len}"));
            assert!(parts[0].1 == data[..200]);
            assert_eq!(parts[1].0, format!("bytes 900-999/{len}"));
            assert!(parts[1].1 == data[900..1000]);
            if len > 1 << 20 {
                // Parts large enough for SendFile, and the file's end.
                let (code, ct, _, got) = ask("bytes=0-99999,1000000-1199999,-50000");
                assert_eq!(code, 206);
                let parts = multipart(&ct, &got);
                let want = [(0, 99_999), (1_000_000, 1_199_999), (len - 50_000, len - 1)];
                assert_eq!(parts.len(), 3);
                for ((range, bytes), (s, e)) in parts.iter().zip(want) {
                    assert_eq!(range, &format!("bytes {s}-{e}/{len}"), "{backend}");
                    assert!(bytes[..] == data[s..=e], "{backend}: bytes of {range}");
                }
            }
            // Adjacent ranges merge into one part: a plain 206.
            let (code, ct, cr, got) = ask("bytes=0-9,10-19");
            assert_eq!(
                (code, cr.as_deref()),
                (206, Some(format!("bytes 0-19/{len}").as_str()))
            );
            assert_eq!(ct, "application/octet-stream");
            assert!(got == data[..20]);
            // More than 16 ranges, or more bytes than the file: the whole file.
            let many: Vec<String> = (0..17)
                .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
                .collect();
            let (code, _, _, got) = ask(&format!("bytes={}", many.join(",")));
            assert_eq!(code, 200);
            assert!(got == data);
            let (code, _, _, got) = ask(&format!("bytes=0-{},0-{}", len - 1, len - 1));
            assert_eq!(code, 200);
            assert!(got == data);
            // None satisfiable: 416.
            let (code, _, cr, _) = ask(&format!("bytes={len}-,{}-{}", len + 5, len + 9));
            assert_eq!(code, 416);
            assert_eq!(cr, Some(format!("bytes */{len}")));
            // A HEAD of several ranges: the same head, no body.
            let r = a
                .head(&server.url(path))
                .set("Range", "bytes=0-0,5-5")
                .call()
                .unwrap();
            assert_eq!(r.status(), 206);
            let n: usize = r.header("Content-Length").unwrap().parse().unwrap();
            let (_, ct, _, got) = ask("bytes=0-0,5-5");
            assert_eq!(n, got.len(), "{backend}: HEAD's length is GET's");
            assert_eq!(multipart(&ct, &got).len(), 2);
        }
        eprintln!("PASS {backend}: multipart ranges");
    });
}

#[test]
fn precompressed_siblings_by_accept_encoding() {
    on_every_backend("precompressed", |backend, dir| {
        std::fs::write(dir.join("app.css"), "body { color: red }\n").unwrap();
        std::fs::write(dir.join("app.css.gz"), "gz-bytes-of-app").unwrap();
        std::fs::write(dir.join("app.css.br"), "br-bytes").unwrap();
        std::fs::write(dir.join("plain.txt"), "no siblings").unwrap();
        std::fs::write(dir.join("odd.txt"), "a directory beside").unwrap();
        std::fs::create_dir(dir.join("odd.txt.gz")).unwrap();
        let server = Server::start(backend, dir, &["--precompressed"]);
        let plain = Server::start(backend, dir, &[]);
        let a = agent();
        let get = |server: &Server, path: &str, headers: &[(&str, &str)]| {
            let mut req = a.get(&server.url(path));
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let (code, r) = fetch(req);
            let h = |name: &str| r.header(name).map(str::to_string);
            let (ce, vary, ct, etag) = (
                h("Content-Encoding"),
                h("Vary"),
                h("Content-Type"),
                h("ETag"),
            );
            (code, ce, vary, ct, etag, body(r))
        };
        let vary = Some("Accept-Encoding".to_string());
        let css = Some("text/css; charset=utf-8".to_string());
        // No Accept-Encoding: the file, and Vary (the path has siblings).
        let (code, ce, v, ct, identity_tag, b) = get(&server, "/app.css", &[]);
        assert_eq!((code, ce, &v, &ct), (200, None, &vary, &css), "{backend}");
        assert_eq!(b, b"body { color: red }\n");
        // br preferred at equal weight; the original's type, the sibling's own ETag.
        let (code, ce, v, ct, br_tag, b) = get(
            &server,
            "/app.css",
            &[("Accept-Encoding", "gzip, deflate, br")],
        );
        assert_eq!(
            (code, ce.as_deref(), &v, &ct),
            (200, Some("br"), &vary, &css)
        );
        assert_eq!(b, b"br-bytes");
        assert_ne!(br_tag, identity_tag, "each representation its own ETag");
        // Weights honoured.
        let (_, ce, _, _, _, b) = get(
            &server,
            "/app.css",
            &[("Accept-Encoding", "br;q=0.5, gzip")],
        );
        assert_eq!(
            (ce.as_deref(), b.as_slice()),
            (Some("gzip"), &b"gz-bytes-of-app"[..])
        );
        // No sibling in an accepted coding: the file.
        let (_, ce, v, _, _, b) = get(&server, "/app.css", &[("Accept-Encoding", "zstd")]);
        assert_eq!((ce, &v, b.len()), (None, &vary, 20));
        // Conditionals and ranges apply to the representation sent.
        let tag = br_tag.clone().unwrap();
        let (code, ce, v, ..) = get(
            &server,
            "/app.css",
            &[("Accept-Encoding", "br"), ("If-None-Match", &tag)],
        );
        assert_eq!((code, ce.as_deref(), &v), (304, Some("br"), &vary));
        let (code, ..) = get(
            &server,
            "/app.css",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", &tag)],
        );
        assert_eq!(
            code, 200,
            "the br ETag does not match the gzip representation"
        );
        let (code, ce, _, _, _, b) = get(
            &server,
            "/app.css",
            &[("Accept-Encoding", "gzip"), ("Range", "bytes=0-1")],
        );
        assert_eq!(
            (code, ce.as_deref(), b.as_slice()),
            (206, Some("gzip"), &b"gz"[..])
        );
        // identity refused and nothing else there: 406.
        let (code, ..) = get(
            &server,
            "/plain.txt",
            &[("Accept-Encoding", "br, identity;q=0")],
        );
        assert_eq!(code, 406, "{backend}");
        // No siblings (a directory is not one): the file, no Vary.
        for path in ["/plain.txt", "/odd.txt"] {
            let (code, ce, v, ..) = get(&server, path, &[("Accept-Encoding", "gzip")]);
            assert_eq!((code, ce, v), (200, None, None), "{backend} {path}");
        }
        // A sibling asked for by its own name is its own file (its own type, no coding), and
        // the cache never mixes it up with the path answered in that coding.
        let (code, ce, _, ct, _, b) = get(&server, "/app.css.br", &[]);
        assert_eq!(
            (code, ce, ct.as_deref()),
            (200, None, Some("application/octet-stream"))
        );
        assert_eq!(b, b"br-bytes");
        let (_, ce, _, ct, _, _) = get(&server, "/app.css", &[("Accept-Encoding", "br")]);
        assert_eq!(
            (ce.as_deref(), &ct),
            (Some("br"), &css),
            "{backend}: after the direct one"
        );
        // A directory with a file named like its sibling: the directory's own answer.
        std::fs::write(dir.join("sub.gz"), "not the directory").unwrap();
        let (code, ce, ..) = get(&server, "/sub/", &[("Accept-Encoding", "gzip")]);
        assert_eq!(
            (code, ce),
            (200, None),
            "{backend}: a directory has no siblings"
        );
        // A sibling removed while its existence is remembered (no body cache here): the file
        // itself, not a 404.
        let nocache = Server::start(backend, dir, &["--precompressed", "--cache-mib", "0"]);
        std::fs::write(dir.join("b.css"), "b {}\n").unwrap();
        std::fs::write(dir.join("b.css.gz"), "gz of b").unwrap();
        let (_, ce, ..) = get(&nocache, "/b.css", &[("Accept-Encoding", "gzip")]);
        assert_eq!(ce.as_deref(), Some("gzip"));
        std::fs::remove_file(dir.join("b.css.gz")).unwrap();
        let (code, ce, _, _, _, b) = get(&nocache, "/b.css", &[("Accept-Encoding", "gzip")]);
        assert_eq!(
            (code, ce, b.as_slice()),
            (200, None, &b"b {}\n"[..]),
            "{backend}: removed"
        );
        // Without --precompressed: the file itself, whatever is accepted.
        let (code, ce, v, _, _, b) = get(&plain, "/app.css", &[("Accept-Encoding", "br, gzip")]);
        assert_eq!((code, ce, v, b.len()), (200, None, None, 20));
        eprintln!("PASS {backend}: precompressed siblings");
    });
}

#[test]
fn metrics_count_answers_connections_and_ring_ops() {
    on_every_backend("metrics", |backend, dir| {
        let server = Server::start(backend, dir, &["--metrics", "127.0.0.1:0"]);
        let a = agent();
        for _ in 0..5 {
            let (code, r) = fetch(a.get(&server.url("/1k.bin")));
            assert_eq!((code, body(r).len()), (200, 1024));
        }
        for _ in 0..3 {
            assert_eq!(fetch(a.get(&server.url("/nope"))).0, 404);
        }
        // An open connection the gauge counts.
        let idle = server.connect();
        std::thread::sleep(Duration::from_millis(600));
        let (code, r) = fetch(a.get(&server.metrics_url()));
        assert_eq!(code, 200);
        assert!(
            r.content_type().starts_with("text/plain"),
            "{}",
            r.content_type()
        );
        let text = String::from_utf8(body(r)).unwrap();
        let value = |metric: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{backend}: no {metric} in\n{text}"))
        };
        assert_eq!(
            value("oneloop_serve_requests_total{class=\"2xx\"}"),
            5,
            "{backend}"
        );
        assert_eq!(value("oneloop_serve_requests_total{class=\"4xx\"}"), 3);
        assert_eq!(value("oneloop_serve_requests_total{class=\"5xx\"}"), 0);
        assert!(value("oneloop_serve_response_bytes_total") >= 5 * 1024);
        assert!(
            value("oneloop_serve_connections") >= 1,
            "the idle one at least"
        );
        assert_eq!(
            value(&format!("oneloop_serve_backend{{backend=\"{backend}\"}}")),
            1
        );
        assert!(
            value("oneloop_ring_ops_total{kind=\"Accept\"}") >= 2,
            "{text}"
        );
        assert!(text.contains("# TYPE oneloop_ring_ops_total counter"));
        drop(idle);
        eprintln!("PASS {backend}: metrics");
    });
}

#[test]
fn access_log_has_every_line_and_reopens_on_sigusr1() {
    on_every_backend("access-log", |backend, dir| {
        let log = dir.join("access.log");
        let server = Server::start(backend, dir, &["--access-log", log.to_str().unwrap()]);
        // Under load: 4 clients, 100 requests each, one in four a 404.
        let url = server.url("");
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let a = agent();
                    for i in 0..100 {
                        let path = if i % 4 == 3 { "/nope" } else { "/1k.bin" };
                        let req = a
                            .get(&format!("{url}{path}"))
                            .set("User-Agent", &format!("client-{c}"));
                        let _ = fetch(req);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        // Rotation: rename, signal, more requests; they go to a new file.
        let rotated = dir.join("access.log.1");
        std::thread::sleep(Duration::from_millis(300));
        std::fs::rename(&log, &rotated).unwrap();
        // SAFETY: a signal to our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(server.child.id() as i32, libc::SIGUSR1)
        };
        std::thread::sleep(Duration::from_millis(300));
        let a = agent();
        for _ in 0..10 {
            let req = a
                .get(&server.url("/sub/a.txt"))
                .set("Referer", "http://x/\"q\"");
            assert_eq!(fetch(req).0, 200);
        }
        let log_text = server.stop_and_log_file(&log);
        let before = std::fs::read_to_string(&rotated).unwrap();
        let lines: Vec<&str> = before.lines().collect();
        assert_eq!(
            lines.len(),
            400,
            "{backend}: every answer before the rotation"
        );
        let ok = lines
            .iter()
            .filter(|l| l.contains("\"GET /1k.bin HTTP/1.1\" 200 1024 \"-\" \"client-"))
            .count();
        let missing = lines
            .iter()
            .filter(|l| l.contains("\"GET /nope HTTP/1.1\" 404 "))
            .count();
        assert_eq!(
            (ok, missing),
            (300, 100),
            "{backend}:\n{}",
            lines[..3].join("\n")
        );
        assert!(lines
            .iter()
            .all(|l| l.starts_with("127.0.0.1 - - [") && l.contains(" +0000] ")));
        let after: Vec<&str> = log_text.lines().collect();
        assert_eq!(
            after.len(),
            10,
            "{backend}: the lines after the rotation, in the new file"
        );
        assert!(
            after[0].contains("\"GET /sub/a.txt HTTP/1.1\" 200 6 \"http://x/\\\"q\\\"\""),
            "{}",
            after[0]
        );
        eprintln!("PASS {backend}: access log");
    });
}

#[test]
fn access_log_in_json() {
    let backend = BACKENDS.into_iter().find(|b| usable(b)).expect("a backend");
    let dir = site("access-json");
    let log = dir.join("a.json");
    let server = Server::start(
        backend,
        &dir,
        &[
            "--access-log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    let req = agent()
        .get(&server.url("/1k.bin"))
        .set("User-Agent", "say \"hi\"");
    assert_eq!(fetch(req).0, 200);
    let text = server.stop_and_log_file(&log);
    assert_eq!(text.lines().count(), 1);
    let line = text.lines().next().unwrap();
    for part in [
        "{\"remote_addr\":\"127.0.0.1\",\"time\":\"",
        "\"method\":\"GET\",\"path\":\"/1k.bin\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":1024,\"referer\":null,\"user_agent\":\"say \\\"hi\\\"\"}",
    ] {
        assert!(line.contains(part), "{line}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
