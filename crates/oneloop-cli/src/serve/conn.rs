//! One connection: read request heads, answer each in order, close when it must.
//!
//! * **Every wait is bounded.** Waiting for a request's first byte: the keep-alive idle
//!   timeout. From its first byte to its whole head: the header timeout (a slow sender is
//!   closed however it trickles). Each send: the send timeout (a client that stops reading).
//! * **Pipelined requests are answered in order**, and small answers to requests already in
//!   the buffer go out in one send.
//! * **Nothing outlives the connection.** Returning from [`serve`] drops the socket and the
//!   buffers; an op still in flight (a read into a buffer, a send) is cancelled, and the ring
//!   frees its buffer at the op's final completion. Dropping the task does the same, which is
//!   what shutdown does to idle connections.
//! * **Closing after an error lingers:** the write side is shut and what the client still
//!   sends is read and dropped for a moment, so the error answer is not lost to a reset.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oneloop_rt::fs::File;
use oneloop_rt::net::TcpStream;
use oneloop_rt::time::timeout;

use super::access_log;
use super::cache::{self, Cache, Cached};
use super::files::{self, About, Kind};
use super::http::{self, Coding, Parsed, Range, Representation, Request, Status};

/// A file this size or smaller is read into the response buffer beside its head and sent
/// with it; larger ones go out in chunks of [`CHUNK`].
const SMALL: u64 = 128 * 1024;
/// A connection's head buffer at first (it grows to `max_header_bytes` when a head needs it).
const HEAD_START: usize = 1024;
/// A connection's response buffer, allocated when its first answer is written.
const OUT_START: usize = 16 * 1024;
const CHUNK: usize = 256 * 1024;
/// A body this size or larger goes out with the ring's `SendFile` (no copy through user space;
/// on epoll and aio a range not in the page cache is read on the pool, on io_uring by the
/// kernel's workers).
const SENDFILE_MIN: u64 = 16 * 1024;
/// Pipelined answers are gathered up to this size before a send.
const BATCH: usize = 64 * 1024;
/// How long a connection closed after an error reads and drops what still comes.
const LINGER: Duration = Duration::from_secs(1);

/// The connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_header_bytes: usize,
}

/// What one thread's connections share.
pub struct Thread {
    pub root: Arc<OwnedFd>,
    pub limits: Limits,
    pub log: bool,
    /// The ring is io_uring (whose reads honour a file's `O_NONBLOCK`).
    pub uring: bool,
    /// Shutdown has begun: answer what is asked, then close.
    pub stopping: Cell<bool>,
    /// Connections open on this thread.
    pub conns: Cell<usize>,
    /// Connections with a request being answered (shutdown waits for them).
    pub busy: Cell<usize>,
    /// Chunk buffers for large files, reused.
    chunks: RefCell<Vec<Vec<u8>>>,
    /// Small files recently read (`cache.rs`).
    cache: RefCell<Cache>,
    /// When large uncached bodies go out zero-copy (`--send-zc`).
    send_zc: super::ZeroCopy,
    /// Whether precompressed siblings are served (`--precompressed`).
    precompressed: bool,
    /// Which siblings each path had when last looked at, and when (`--precompressed`).
    siblings: RefCell<HashMap<String, (Instant, u8)>>,
    /// Bytes of the names in `siblings`.
    sibling_bytes: Cell<usize>,
    /// This thread's counters (`--metrics`).
    metrics: Option<Arc<super::metrics::ThreadMetrics>>,
    /// This thread's access log (`--access-log`).
    pub access: Option<Rc<access_log::ThreadLog>>,
}

impl Thread {
    /// A thread's share of `config`, on a ring that is io_uring if `uring`.
    pub fn new(
        root: Arc<OwnedFd>,
        config: &super::Config,
        uring: bool,
        metrics: Option<Arc<super::metrics::ThreadMetrics>>,
        access: Option<Rc<access_log::ThreadLog>>,
    ) -> Thread {
        Thread {
            root,
            limits: config.limits,
            log: config.log,
            uring,
            stopping: Cell::new(false),
            conns: Cell::new(0),
            busy: Cell::new(0),
            chunks: RefCell::new(Vec::new()),
            cache: RefCell::new(Cache::new(config.cache_bytes)),
            send_zc: config.send_zc,
            precompressed: config.precompressed,
            siblings: RefCell::new(HashMap::new()),
            sibling_bytes: Cell::new(0),
            metrics,
            access,
        }
    }
}

/// Where an answer's body comes from.
#[derive(Clone, Copy)]
enum Body<'a> {
    File(&'a File),
    /// A cached file's bytes, whole.
    Bytes(&'a [u8]),
}

/// Which representation of a file an answer sends: the file, or a precompressed sibling
/// (`Content-Encoding`); `vary`: the path has siblings, so every answer says `Vary`.
#[derive(Clone, Copy, Default)]
struct Rep {
    coding: Option<Coding>,
    vary: bool,
}

impl Rep {
    fn headers(self, out: &mut Vec<u8>) {
        if let Some(c) = self.coding {
            http::header_text(out, "Content-Encoding", c.token());
        }
        if self.vary {
            http::header_text(out, "Vary", "Accept-Encoding");
        }
    }
}

/// The most paths whose siblings a thread remembers, and the most bytes of their names (then
/// it forgets them all).
const SIBLINGS_MAX: usize = 65_536;
const SIBLINGS_BYTES_MAX: usize = 4 << 20;

/// Counts one unit in a counter while alive.
struct Counted<'a>(&'a Cell<usize>);

impl<'a> Counted<'a> {
    fn new(cell: &'a Cell<usize>) -> Counted<'a> {
        cell.set(cell.get() + 1);
        Counted(cell)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Why a connection ends early.
struct Closed;

/// One open connection, counted in its thread's `conns` from its accept to its end.
pub struct Open(Rc<Thread>);

impl Open {
    /// Counts a connection just accepted (before its task first runs, so that the accept
    /// loop sees the cap at once).
    pub fn new(t: &Rc<Thread>) -> Open {
        t.conns.set(t.conns.get() + 1);
        if let Some(m) = &t.metrics {
            m.connections.fetch_add(1, Ordering::Relaxed);
        }
        Open(Rc::clone(t))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.conns.set(self.0.conns.get() - 1);
        if let Some(m) = &self.0.metrics {
            m.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Serves one connection until it closes, fails or times out.
pub async fn serve(stream: TcpStream, peer: SocketAddr, open: Open) {
    let t = Rc::clone(&open.0);
    // Non-blocking: a `SendFile` to a full socket then waits on the ring (io_uring would
    // otherwise hold a kernel worker in a blocking splice), and the head's `MSG_MORE` send
    // never blocks.
    if rustix::fs::fcntl_setfl(&stream, rustix::fs::OFlags::NONBLOCK).is_err() {
        return;
    }
    let mut conn = Conn {
        stream,
        peer,
        t: &t,
        // Allocated when the first answer is written (see `out_mut`): a connection that only
        // waits holds no output buffer.
        out: Some(Vec::new()),
    };
    let _ = conn.run().await;
}

struct Conn<'a> {
    stream: TcpStream,
    peer: SocketAddr,
    t: &'a Thread,
    /// The response bytes not yet sent (`None` only while a send has it).
    out: Option<Vec<u8>>,
}

impl Conn<'_> {
    async fn run(&mut self) -> Result<(), Closed> {
        let limits = self.t.limits;
        // The head buffer starts small and grows to `max_header_bytes` only for a head that
        // needs it: a connection that waits with a few bytes holds little.
        let head_start = HEAD_START.min(limits.max_header_bytes);
        let mut inbuf: Vec<u8> = Vec::with_capacity(head_start);
        let mut busy: Option<Counted<'_>> = None;
        let mut head_deadline: Option<Instant> = None;
        loop {
            if !inbuf.is_empty() {
                let keep = http::Keep {
                    log_fields: self.t.access.is_some(),
                    encodings: self.t.precompressed,
                };
                match http::parse(&inbuf, inbuf.len() >= limits.max_header_bytes, keep) {
                    Parsed::Request(req, len) => {
                        busy.get_or_insert_with(|| Counted::new(&self.t.busy));
                        head_deadline = None;
                        inbuf.drain(..len);
                        self.skip_body(&req, &mut inbuf).await?;
                        let keep = self.respond(&req).await?;
                        if !keep {
                            self.flush().await?;
                            return self.linger().await;
                        }
                        if self.pending() < BATCH {
                            continue;
                        }
                        self.flush().await?;
                        continue;
                    }
                    Parsed::Refuse(status) => {
                        let _busy = busy.get_or_insert_with(|| Counted::new(&self.t.busy));
                        self.log(None, status, 0);
                        let head_only = inbuf.starts_with(b"HEAD ");
                        http::error_response(self.out_mut(), status, false, false, head_only);
                        self.flush().await?;
                        return self.linger().await;
                    }
                    Parsed::Partial => {}
                }
            }
            // Nothing more to answer from the buffer: send what is gathered, then read.
            self.flush().await?;
            busy = None;
            // An idle connection keeps a small buffer, whatever its last answer needed.
            if let Some(out) = self.out.as_mut().filter(|o| o.capacity() > 64 * 1024) {
                out.shrink_to(OUT_START);
            }
            if self.t.stopping.get() && inbuf.is_empty() {
                return Ok(());
            }
            let wait = if inbuf.is_empty() {
                limits.idle_timeout
            } else {
                let deadline =
                    *head_deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
                deadline.saturating_duration_since(Instant::now())
            };
            // An idle connection gives back a buffer a big head grew (heads of a few KiB, a
            // browser's, keep theirs: no reallocation per request).
            if inbuf.is_empty() && inbuf.capacity() > 4 * head_start {
                inbuf.shrink_to(head_start);
            } else if inbuf.len() == inbuf.capacity() {
                // A partial head filled the buffer (and is shorter than the limit, or it
                // would have been refused): room for more, up to the limit.
                let grown = (inbuf.capacity() * 2).min(limits.max_header_bytes);
                inbuf.reserve_exact(grown - inbuf.len());
            }
            let (res, buf) = timeout(wait, self.stream.read(inbuf))
                .await
                .map_err(|_| Closed)?;
            inbuf = buf;
            match res {
                Ok(0) | Err(_) => return Err(Closed),
                Ok(_) => {
                    if head_deadline.is_none() {
                        head_deadline = Some(Instant::now() + limits.header_timeout);
                    }
                }
            }
        }
    }

    /// The response buffer, allocated on first use.
    fn out_mut(&mut self) -> &mut Vec<u8> {
        let out = self.out.as_mut().expect("the response buffer is home");
        if out.capacity() == 0 {
            out.reserve(OUT_START);
        }
        out
    }

    fn pending(&self) -> usize {
        self.out.as_ref().map_or(0, Vec::len)
    }

    /// Sends what is gathered (within the send timeout).
    async fn flush(&mut self) -> Result<(), Closed> {
        if self.pending() == 0 {
            return Ok(());
        }
        let out = self.out.take().expect("the response buffer is home");
        let (res, mut out) = timeout(self.t.limits.send_timeout, self.stream.write_all(out))
            .await
            .map_err(|_| Closed)?;
        res.map_err(|_| Closed)?;
        out.clear();
        self.out = Some(out);
        Ok(())
    }

    /// Sends `buf` whole (within the send timeout) and gives it back.
    async fn send(&self, buf: Vec<u8>) -> Result<Vec<u8>, Closed> {
        let (res, buf) = timeout(self.t.limits.send_timeout, self.stream.write_all(buf))
            .await
            .map_err(|_| Closed)?;
        res.map_err(|_| Closed)?;
        Ok(buf)
    }

    /// Reads and drops a request body (its size was checked against the limit).
    async fn skip_body(&mut self, req: &Request, inbuf: &mut Vec<u8>) -> Result<(), Closed> {
        let mut left = req.body;
        let here = (inbuf.len() as u64).min(left);
        inbuf.drain(..here as usize);
        left -= here;
        let deadline = Instant::now() + self.t.limits.header_timeout;
        while left > 0 {
            let scratch = Vec::with_capacity(left.min(16 * 1024) as usize);
            let wait = deadline.saturating_duration_since(Instant::now());
            let (res, _) = timeout(wait, self.stream.read(scratch))
                .await
                .map_err(|_| Closed)?;
            match res {
                Ok(0) | Err(_) => return Err(Closed),
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
        Ok(())
    }

    /// Closes after a final answer: shuts the write side, then reads and drops what the client
    /// still sends (until it closes, or for a moment), so that unread input — in our buffer or
    /// still in the kernel's — never turns the close into a reset that discards the answer.
    async fn linger(&mut self) -> Result<(), Closed> {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match timeout(wait, self.stream.read(Vec::with_capacity(4096))).await {
                Ok((Ok(n), _)) if n > 0 => continue,
                _ => return Ok(()),
            }
        }
    }

    /// Counts and logs an answer to `req` (`None`: a head that could not be parsed).
    fn log(&self, req: Option<&Request>, status: Status, bytes: u64) {
        // A HEAD sends no body.
        let bytes = if req.is_some_and(|r| r.head) {
            0
        } else {
            bytes
        };
        if let Some(m) = &self.t.metrics {
            m.answered(status.code(), bytes);
        }
        let (method, path) = match req {
            Some(r) => (if r.head { "HEAD" } else { "GET" }, r.path.as_str()),
            None => ("-", "-"),
        };
        if let Some(access) = &self.t.access {
            access.line(&access_log::Entry {
                peer: self.peer,
                method,
                path,
                http10: req.is_some_and(|r| r.http10),
                status: status.code(),
                bytes,
                referer: req.and_then(|r| r.for_log.as_ref()?.referer.as_deref()),
                agent: req.and_then(|r| r.for_log.as_ref()?.user_agent.as_deref()),
            });
        }
        if self.t.log {
            eprintln!("{} {method} {path} {} {bytes}", self.peer, status.code());
        }
    }

    /// Answers one request; `false` if the connection must close after it.
    async fn respond(&mut self, req: &Request) -> Result<bool, Closed> {
        let keep = req.keep_alive && !self.t.stopping.get();
        let target = match files::target(&req.path) {
            Ok(target) => target,
            Err(status) => return Ok(self.refuse(req, status, keep)),
        };
        // A directory (or the root) has no siblings: its index or listing is what it serves.
        let (mut rep, mut coded) =
            if self.t.precompressed && !target.trailing_slash && target.rel != "." {
                let siblings = match self.known_siblings(&target.rel) {
                    Some(mask) => mask,
                    None => Box::pin(self.look_for_siblings(&target.rel)).await,
                };
                let vary = siblings != 0;
                match http::representation(req.accept_encoding.as_deref(), siblings) {
                    Representation::NotAcceptable => {
                        return Ok(self.refuse(req, Status::NotAcceptable, keep))
                    }
                    Representation::Coded(c) => (
                        Rep {
                            coding: Some(c),
                            vary,
                        },
                        // Opened by its own name; kept in the cache under a key no URL has
                        // (a NUL), so `GET /x.css.br` and `x.css` sent as br never share one.
                        Some((
                            format!("{}{}", target.rel, c.suffix()),
                            format!("{}{}\0", target.rel, c.suffix()),
                        )),
                    ),
                    Representation::Identity => (Rep { coding: None, vary }, None),
                }
            } else {
                (Rep::default(), None)
            };
        let root = Arc::clone(&self.t.root);
        let (file, meta, key) = loop {
            // The file sent: the path's own, or its sibling (its type is the path's).
            let (name, key) = match &coded {
                Some((name, key)) => (name.as_str(), key.as_str()),
                None => (target.rel.as_str(), target.rel.as_str()),
            };
            let hit = self.t.cache.borrow().get(key, Instant::now());
            if let Some(hit) = hit {
                return self.send_cached(req, &hit, rep, keep).await;
            }
            let opened = files::open_beneath(&root, name, self.t.uring).await;
            match opened {
                Ok((file, meta)) if coded.is_none() || meta.kind == Kind::File => {
                    break (file, meta, key.to_string());
                }
                // A sibling gone, or no longer a regular file, since it was looked at: the
                // path's own file instead, and the siblings looked at again next time.
                _ if coded.is_some() => {
                    self.t.cache.borrow_mut().forget(key);
                    self.t.siblings.borrow_mut().remove(&target.rel);
                    coded = None;
                    rep.coding = None;
                }
                Ok(_) => unreachable!("the path's own file is taken whatever it is"),
                Err(status) => {
                    self.t.cache.borrow_mut().forget(key);
                    return Ok(self.refuse(req, status, keep));
                }
            }
        };
        let rel = key.as_str();
        if meta.kind == Kind::File && meta.len <= cache::BODY_MAX && self.t.cache.borrow().enabled()
        {
            // Read whole, kept, and answered from the copy kept.
            let read_at = Instant::now();
            if let Ok(body) = read_exactly(&file, Vec::new(), 0, meta.len as usize).await {
                let entry = Rc::new(Cached::new(meta, body, &target.rel, read_at));
                self.t.cache.borrow_mut().put(rel, Rc::clone(&entry));
                return self.send_cached(req, &entry, rep, keep).await;
            }
            // Not read whole (it shrank, say): answered as an uncached file is — a HEAD or a
            // 304 without reading, a GET closing if the body cannot be sent whole.
        }
        self.t.cache.borrow_mut().forget(rel);
        if meta.kind != Kind::Dir {
            let about = About::of(meta, &target.rel);
            return self
                .send_file(req, Body::File(&file), &about, rep, keep)
                .await;
        }
        if !target.trailing_slash {
            // A directory's own URL ends in `/`, so its relative links resolve. Built from the
            // checked path (never the raw one: `//host` would redirect off-site).
            let location = files::url_of_dir(&target.rel);
            let out = self.out_mut();
            http::start_head(out, Status::MovedPermanently);
            http::header(out, "Location", &location);
            http::header(out, "Content-Length", 0);
            http::end_head(out, keep, req.http10);
            self.log(Some(req), Status::MovedPermanently, 0);
            return Ok(keep);
        }
        // The index resolves beneath the root, as the directory did (a symlink to a sibling
        // directory's page is fine; one out of the root is not).
        let index = if target.rel == "." {
            "index.html".to_string()
        } else {
            format!("{}/index.html", target.rel)
        };
        match files::open_beneath(&root, &index, self.t.uring).await {
            Ok((index, meta)) if meta.kind == Kind::File => {
                let about = About::of(meta, "index.html");
                let rep = Rep::default();
                return self
                    .send_file(req, Body::File(&index), &about, rep, keep)
                    .await;
            }
            Ok(_) | Err(Status::NotFound) => {}
            Err(status) => return Ok(self.refuse(req, status, keep)),
        }
        let Ok(html) = files::listing(&file, &req.path) else {
            return Ok(self.refuse(req, Status::Internal, keep));
        };
        let out = self.out_mut();
        http::start_head(out, Status::Ok);
        http::header(out, "Content-Type", "text/html; charset=utf-8");
        http::header(out, "Content-Length", html.len());
        http::end_head(out, keep, req.http10);
        if !req.head {
            out.extend_from_slice(html.as_bytes());
        }
        self.log(Some(req), Status::Ok, html.len() as u64);
        Ok(keep)
    }

    /// Queues an error answer; whether the connection stays open.
    fn refuse(&mut self, req: &Request, status: Status, keep: bool) -> bool {
        let keep = keep && !status.closes();
        http::error_response(self.out_mut(), status, keep, req.http10, req.head);
        self.log(Some(req), status, 0);
        keep
    }

    /// Answers with a cached file.
    async fn send_cached(
        &mut self,
        req: &Request,
        hit: &Cached,
        rep: Rep,
        keep: bool,
    ) -> Result<bool, Closed> {
        self.send_file(req, Body::Bytes(&hit.body), &hit.about, rep, keep)
            .await
    }

    /// The siblings `rel` had when last looked at, if that was within the cache's freshness.
    fn known_siblings(&self, rel: &str) -> Option<u8> {
        let siblings = self.t.siblings.borrow();
        let &(at, mask) = siblings.get(rel)?;
        (Instant::now().saturating_duration_since(at) < cache::FRESH).then_some(mask)
    }

    /// Which precompressed siblings of `rel` are regular files beneath the root (each opened
    /// as any file is), remembered for the cache's freshness.
    async fn look_for_siblings(&self, rel: &str) -> u8 {
        let now = Instant::now();
        let mut mask = 0;
        for c in Coding::ALL {
            let name = format!("{rel}{}", c.suffix());
            if let Ok((_, meta)) = files::open_beneath(&self.t.root, &name, self.t.uring).await {
                if meta.kind == Kind::File {
                    mask |= c.bit();
                }
            }
        }
        let mut siblings = self.t.siblings.borrow_mut();
        // Bounded in entries and in bytes (paths may be long): past either, forget them all.
        let bytes = self.t.sibling_bytes.get() + rel.len();
        if siblings.len() >= SIBLINGS_MAX || bytes > SIBLINGS_BYTES_MAX {
            siblings.clear();
            self.t.sibling_bytes.set(rel.len());
        } else {
            self.t.sibling_bytes.set(bytes);
        }
        siblings.insert(rel.to_string(), (now, mask));
        mask
    }

    /// Answers with a regular file: conditional (304), range (206/416) or whole (200).
    async fn send_file(
        &mut self,
        req: &Request,
        body: Body<'_>,
        about: &About,
        rep: Rep,
        keep: bool,
    ) -> Result<bool, Closed> {
        let (meta, etag, modified) = (about.meta, about.etag.as_str(), about.modified.as_str());
        let not_modified = match (&req.if_none_match, req.if_modified_since) {
            (Some(tags), _) => tags
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == etag),
            (None, Some(since)) => {
                // HTTP dates have whole seconds.
                let secs = |t: std::time::SystemTime| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                };
                secs(meta.mtime) <= secs(since)
            }
            (None, None) => false,
        };
        if not_modified {
            let out = self.out_mut();
            http::start_head(out, Status::NotModified);
            http::header(out, "ETag", etag);
            http::header(out, "Last-Modified", modified);
            rep.headers(out);
            http::end_head(out, keep, req.http10);
            self.log(Some(req), Status::NotModified, 0);
            return Ok(keep);
        }
        let range_applies = req
            .if_range
            .as_deref()
            .is_none_or(|v| v == etag || v == modified);
        let range = if range_applies {
            http::range(req.range.as_deref(), meta.len)
        } else {
            Range::Whole
        };
        let (status, start, count) = match range {
            Range::Whole => (Status::Ok, 0, meta.len),
            Range::Part { start, end } => (Status::PartialContent, start, end - start + 1),
            // Boxed: its state would otherwise grow every connection's task.
            Range::Parts(parts) => {
                return Box::pin(self.send_parts(req, body, about, &parts, rep, keep)).await
            }
            Range::Unsatisfiable => {
                let out = self.out_mut();
                http::start_head(out, Status::RangeNotSatisfiable);
                http::header(out, "Content-Range", format_args!("bytes */{}", meta.len));
                http::header(out, "Content-Length", 0);
                rep.headers(out);
                http::end_head(out, keep, req.http10);
                self.log(Some(req), Status::RangeNotSatisfiable, 0);
                return Ok(keep);
            }
        };
        let out = self.out_mut();
        http::start_head(out, status);
        http::header_text(out, "Content-Type", about.content_type);
        http::header_len(out, count);
        http::header_text(out, "Last-Modified", modified);
        http::header_text(out, "ETag", etag);
        http::header_text(out, "Accept-Ranges", "bytes");
        rep.headers(out);
        if status == Status::PartialContent {
            http::header(
                out,
                "Content-Range",
                format_args!("bytes {start}-{}/{}", start + count - 1, meta.len),
            );
        }
        http::end_head(out, keep, req.http10);
        self.log(Some(req), status, count);
        if req.head || count == 0 {
            return Ok(keep);
        }
        match body {
            // A kept body: copied beside its head, no wait.
            Body::Bytes(bytes) => self
                .out_mut()
                .extend_from_slice(&bytes[start as usize..(start + count) as usize]),
            // Boxed: the file paths' state would otherwise grow every connection's task (an
            // allocation beside an open, a read or a `SendFile`).
            Body::File(_) => Box::pin(self.send_body(body, start, count)).await?,
        }
        Ok(keep)
    }

    /// Answers a request for several parts of a file: 206 with a `multipart/byteranges` body
    /// (RFC 9110 §14.6), each part with its own `Content-Type` and `Content-Range`, in order.
    async fn send_parts(
        &mut self,
        req: &Request,
        body: Body<'_>,
        about: &About,
        parts: &[(u64, u64)],
        rep: Rep,
        keep: bool,
    ) -> Result<bool, Closed> {
        let len = about.meta.len;
        let boundary = boundary();
        let part_head = |(start, end): (u64, u64)| {
            format!(
                "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {start}-{end}/{len}\r\n\r\n",
                about.content_type
            )
        };
        let closing = format!("\r\n--{boundary}--\r\n");
        let total = parts
            .iter()
            .map(|&(start, end)| part_head((start, end)).len() as u64 + (end - start + 1))
            .sum::<u64>()
            + closing.len() as u64;
        let out = self.out_mut();
        http::start_head(out, Status::PartialContent);
        http::header(
            out,
            "Content-Type",
            format_args!("multipart/byteranges; boundary={boundary}"),
        );
        http::header_len(out, total);
        http::header_text(out, "Last-Modified", about.modified.as_str());
        http::header_text(out, "ETag", about.etag.as_str());
        http::header_text(out, "Accept-Ranges", "bytes");
        rep.headers(out);
        http::end_head(out, keep, req.http10);
        self.log(Some(req), Status::PartialContent, total);
        if req.head {
            return Ok(keep);
        }
        for &(start, end) in parts {
            let head = part_head((start, end));
            self.out_mut().extend_from_slice(head.as_bytes());
            self.send_body(body, start, end - start + 1).await?;
        }
        self.out_mut().extend_from_slice(closing.as_bytes());
        Ok(keep)
    }

    /// Sends `count` bytes of `body` from `start` after what the response buffer holds: a
    /// cached body's bytes into the buffer; a file's small range read into it, a large one
    /// sent with `SendFile` (or zero-copy, `--send-zc`) or in chunks.
    async fn send_body(&mut self, body: Body<'_>, start: u64, count: u64) -> Result<(), Closed> {
        let file = match body {
            Body::File(file) => file,
            Body::Bytes(bytes) => {
                self.out_mut()
                    .extend_from_slice(&bytes[start as usize..(start + count) as usize]);
                return Ok(());
            }
        };
        if count >= SENDFILE_MIN {
            if let Some(buf) = self.zero_copy_buffer() {
                self.flush().await?;
                // Boxed: its state would otherwise grow every connection's task, used or not.
                Box::pin(self.send_zero_copy(buf, file, start, count)).await?;
                return Ok(());
            }
            self.send_head_more();
            self.flush().await?;
            self.sendfile(file, start, count).await?;
            return Ok(());
        }
        if count <= SMALL {
            let out = self.out.take().expect("the response buffer is home");
            let out = read_exactly(file, out, start, count as usize).await;
            self.out = Some(out?);
            return Ok(());
        }
        // Large: the head goes with the first chunk, the rest chunk by chunk.
        self.flush().await?;
        let mut chunk = self.t.chunks.borrow_mut().pop().unwrap_or_default();
        let (mut pos, end) = (start, start + count);
        while pos < end {
            chunk.clear();
            let want = ((end - pos) as usize).min(CHUNK);
            chunk = read_exactly(file, chunk, pos, want).await?;
            pos += want as u64;
            chunk = self.send(chunk).await?;
        }
        chunk.clear();
        self.t.chunks.borrow_mut().push(chunk);
        Ok(())
    }
}

impl Conn<'_> {
    /// Sends what is gathered (the head of a `sendfile` body) at once with `MSG_MORE`, so it
    /// leaves in one segment with the body's start; what the socket does not take now goes
    /// through the ring as usual.
    fn send_head_more(&mut self) {
        let flags = rustix::net::SendFlags::MORE | rustix::net::SendFlags::DONTWAIT;
        let out = self.out.as_mut().expect("the response buffer is home");
        if let Ok(n) = rustix::net::send(&self.stream, out, flags) {
            out.drain(..n);
        }
    }

    /// A registered buffer for a zero-copy body, if this client gets them (`--send-zc`, on
    /// io_uring: elsewhere a zero-copy send is an ordinary one, and `SendFile` copies less)
    /// and one is free.
    fn zero_copy_buffer(&self) -> Option<oneloop::FixedBuf> {
        let wanted = self.t.uring
            && match self.t.send_zc {
                super::ZeroCopy::Off => false,
                super::ZeroCopy::Auto => !self.peer.ip().to_canonical().is_loopback(),
                super::ZeroCopy::On => true,
            };
        wanted.then(oneloop_rt::fixed_buffers)??.take()
    }

    /// Sends `count` bytes of `file` at `start` through registered buffer `buf`: each piece
    /// read into it (`READ_FIXED` on io_uring) and sent from it zero-copy (`SEND_ZC`, naming
    /// it by index), each send within the send timeout. The buffer goes back to the pool.
    async fn send_zero_copy(
        &self,
        mut buf: oneloop::FixedBuf,
        file: &File,
        start: u64,
        count: u64,
    ) -> Result<(), Closed> {
        if self.t.log {
            eprintln!(
                "{} body of {count} bytes zero-copy through registered buffer {}",
                self.peer,
                buf.index()
            );
        }
        let (mut pos, end) = (start, start + count);
        while pos < end {
            buf.clear();
            let want = ((end - pos) as usize).min(buf.capacity());
            let (res, back) = file.read_at(buf, pos).await;
            buf = back;
            match res {
                Ok(0) | Err(_) => return Err(Closed), // the file shrank
                Ok(n) => {
                    buf.set_len(n.min(want));
                    pos += buf.len() as u64;
                }
            }
            while !buf.is_empty() {
                let (res, back) = timeout(self.t.limits.send_timeout, self.stream.send_zc(buf))
                    .await
                    .map_err(|_| Closed)?;
                buf = back;
                match res {
                    Ok(0) | Err(_) => return Err(Closed),
                    // A short send: the rest moves to the front and goes next.
                    Ok(n) => {
                        let len = buf.len();
                        buf.as_mut_slice().copy_within(n.., 0);
                        buf.set_len(len - n);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `count` bytes of `file` at `start` through the ring's `SendFile`, each op
    /// within the send timeout (an op may send less than asked: the rest follows).
    async fn sendfile(&self, file: &File, start: u64, count: u64) -> Result<(), Closed> {
        let mut offset = start;
        let end = start + count;
        while offset < end {
            let want = ((end - offset) as usize).min(1 << 20);
            let sent = timeout(
                self.t.limits.send_timeout,
                self.stream.send_file(file, offset, want),
            )
            .await
            .map_err(|_| Closed)?;
            match sent {
                Ok(0) | Err(_) => return Err(Closed), // the file shrank, or the peer went
                Ok(n) => offset += n as u64,
            }
        }
        Ok(())
    }
}

/// A `multipart/byteranges` boundary: unpredictable (a client cannot plant it in a file's
/// bytes), different for each answer.
fn boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static KEYS: std::collections::hash_map::RandomState = std::collections::hash_map::RandomState::new();
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }
    let n = COUNT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let mut h = KEYS.with(|k| k.build_hasher());
    h.write_u64(n);
    format!("oneloop-{:016x}{n:016x}", h.finish())
}

/// Appends exactly `count` bytes of `file` at `pos` to `buf` (a read may fetch more, into the
/// buffer's spare room; the extra is cut off). A file that shrank since its length went out in
/// the head cannot be answered whole: the connection closes.
async fn read_exactly(
    file: &File,
    mut buf: Vec<u8>,
    mut pos: u64,
    count: usize,
) -> Result<Vec<u8>, Closed> {
    let target = buf.len() + count;
    buf.reserve(count);
    while buf.len() < target {
        let (res, back) = file.read_at(buf, pos).await;
        buf = back;
        match res {
            Ok(0) | Err(_) => return Err(Closed),
            Ok(n) => pos += n as u64,
        }
    }
    buf.truncate(target);
    Ok(buf)
}
