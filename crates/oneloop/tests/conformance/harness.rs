//! Runs one case on one backend and reports it; helpers every case shares.

use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use oneloop::{BackendKind, Completion, OpId, Ring, RingBuilder};

/// What a case concluded, when it did not fail.
pub enum Outcome {
    Pass,
    Skip(String),
}

/// Cases that count process-wide resources (fds, allocations) take this lock exclusively;
/// every other case holds it shared, so counts are exact while an exclusive case runs.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// The backend a case runs on, and how to build rings for it.
pub struct Harness {
    pub kind: BackendKind,
    /// io_uring only: multishot ops emulated (`RingBuilder::emulate_multishot`).
    pub emulate_multishot: bool,
    /// io_uring only: buffer rings consumed incrementally where the kernel can
    /// (`RingBuilder::incremental_buffers`, on by default).
    pub incremental: bool,
    /// io_uring only: multishot receives fill several buffers at once where the kernel can
    /// (`RingBuilder::recv_bundles`, off by default, on in the suite's default variant).
    pub bundles: bool,
}

/// Which io_uring paths a case runs on (the other backends have one).
#[derive(Clone, Copy)]
enum Variant {
    Default,
    EmulatedMultishot,
    WholeBuffers,
    OneBufferEach,
}

/// Prints a line on stderr, past the test harness's capture.
pub fn note(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Runs `case` on `kind`, printing its outcome; a failure panics (fails the test).
pub fn run(kind: BackendKind, name: &str, case: fn(&Harness) -> Outcome) {
    run_as(kind, Variant::Default, name, case);
}

/// Runs `case` on io_uring with multishot ops emulated, as on a kernel without them.
pub fn run_emulated_multishot(name: &str, case: fn(&Harness) -> Outcome) {
    run_as(BackendKind::Uring, Variant::EmulatedMultishot, name, case);
}

/// Runs `case` on io_uring with buffer rings taken whole, as on a kernel without incremental
/// consumption (before 6.12).
pub fn run_whole_buffers(name: &str, case: fn(&Harness) -> Outcome) {
    run_as(BackendKind::Uring, Variant::WholeBuffers, name, case);
}

/// Runs `case` on io_uring with buffers taken whole and no bundles (one buffer per receive),
/// as on a kernel before 6.10.
pub fn run_one_buffer_each(name: &str, case: fn(&Harness) -> Outcome) {
    run_as(BackendKind::Uring, Variant::OneBufferEach, name, case);
}

fn run_as(kind: BackendKind, variant: Variant, name: &str, case: fn(&Harness) -> Outcome) {
    let say = |line: String| note(&line);
    let label = match variant {
        Variant::Default => kind.to_string(),
        Variant::EmulatedMultishot => format!("{kind} (multishot emulated)"),
        Variant::WholeBuffers => format!("{kind} (whole buffers)"),
        Variant::OneBufferEach => format!("{kind} (one buffer per receive)"),
    };
    let kind_label = &label;
    match BackendKind::from_env() {
        Ok(Some(forced)) if forced != kind && forced != BackendKind::Auto => {
            say(format!(
                "SKIP {kind_label} {name}: ONELOOP_BACKEND={forced} selects another backend"
            ));
            return;
        }
        _ => {}
    }
    let exclusive = name.contains("drop_ring");
    let _guard_shared;
    let _guard_exclusive;
    if exclusive {
        _guard_exclusive = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    } else {
        _guard_shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    }
    // Probed under the lock too: a probe ring's descriptors must not overlap a counting case.
    if let Err(e) = Ring::builder().backend(kind).entries(4).build() {
        say(format!(
            "SKIP {kind_label} {name}: backend unavailable here: {e}"
        ));
        return;
    }
    let harness = Harness {
        kind,
        emulate_multishot: matches!(variant, Variant::EmulatedMultishot),
        incremental: !matches!(variant, Variant::WholeBuffers | Variant::OneBufferEach),
        bundles: !matches!(variant, Variant::OneBufferEach),
    };
    match case(&harness) {
        Outcome::Pass => say(format!("PASS {kind_label} {name}")),
        Outcome::Skip(why) => say(format!("SKIP {kind_label} {name}: {why}")),
    }
}

impl Harness {
    /// A builder for this backend with the suite's default sizes.
    pub fn builder(&self) -> RingBuilder {
        Ring::builder()
            .backend(self.kind)
            .entries(64)
            .in_flight_max(16_384)
            .emulate_multishot(self.emulate_multishot)
            .incremental_buffers(self.incremental)
            .recv_bundles(self.bundles)
    }

    /// A ring for this backend.
    pub fn ring(&self) -> Ring {
        self.builder().build().expect("build ring")
    }

    /// The ways this backend can run `EpollWait`, each with a builder: every backend has its
    /// default path; uring also has the forced poll + `epoll_wait` emulation.
    pub fn epoll_wait_variants(&self) -> Vec<(&'static str, RingBuilder)> {
        let mut v = vec![("default", self.builder())];
        if self.kind == BackendKind::Uring {
            v.push(("emulated", self.builder().emulate_epoll_wait(true)));
        }
        v
    }
}

/// Waits until `n` completions arrived or `limit` passed; returns what arrived.
pub fn collect(ring: &mut Ring, n: usize, limit: Duration) -> Vec<Completion> {
    let start = Instant::now();
    let mut got: Vec<Completion> = Vec::new();
    while got.len() < n {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        ring.wait(n - got.len(), Some(left)).expect("wait");
        got.extend(ring.completions());
    }
    got
}

/// Collects whatever arrives within `window` (for "nothing else arrives" checks).
pub fn quiet(ring: &mut Ring, window: Duration) -> Vec<Completion> {
    collect(ring, usize::MAX, window)
}

/// Waits for `id`'s final completion; panics if it does not come within 10 s.
pub fn final_of(ring: &mut Ring, id: OpId) -> (Vec<Completion>, Completion) {
    let start = Instant::now();
    let mut mores = Vec::new();
    loop {
        for c in ring.completions() {
            assert_eq!(c.id(), id, "unexpected completion {c:?}");
            if c.is_more() {
                mores.push(c);
            } else {
                return (mores, c);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no final completion for {id:?}"
        );
        ring.wait(1, Some(Duration::from_millis(100)))
            .expect("wait");
    }
}

/// A connected loopback TCP pair: (ours, the peer's).
pub fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    (ours, peer)
}

/// A pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().expect("pipe");
    (OwnedFd::from(r), OwnedFd::from(w))
}

/// Writes bytes to a raw fd (blocking).
pub fn write_fd(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is readable for its length during the call.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(
        n,
        bytes.len() as isize,
        "write: {}",
        std::io::Error::last_os_error()
    );
}

/// Reads what is there from a raw fd (must not block: call only when data is known to be there).
pub fn read_fd(fd: RawFd, max: usize) -> Vec<u8> {
    let mut buf = vec![0u8; max];
    // SAFETY: `buf` is writable for `max` bytes during the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), max) };
    assert!(n >= 0, "read: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

/// A fresh path in a directory on a real filesystem (the system temp dir).
pub fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("oneloop-{}-{tag}-{n}", std::process::id()))
}

/// A temp file with `contents`, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
    pub file: std::fs::File,
}

impl TempFile {
    pub fn new(tag: &str, contents: &[u8]) -> TempFile {
        let path = temp_path(tag);
        std::fs::write(&path, contents).expect("write temp file");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        TempFile { path, file }
    }
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A new epoll instance.
pub fn epoll_create() -> OwnedFd {
    // SAFETY: no pointers.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` was just created above and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Adds `fd` to `epfd` for `events`, tagged `data`.
pub fn epoll_add(epfd: RawFd, fd: RawFd, events: u32, data: u64) {
    let mut ev = libc::epoll_event { events, u64: data };
    assert_eq!(
        // SAFETY: `ev` is a valid epoll_event that outlives the call.
        unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) },
        0
    );
}

/// The number of open descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// How many rounds a race case runs: its default, times `ONELOOP_SOAK` if set.
pub fn rounds(default: usize) -> usize {
    let factor = std::env::var("ONELOOP_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    default * factor
}

/// A raw errno of a completion's error, if any.
pub fn errno(c: &Completion) -> Option<i32> {
    c.result().as_ref().err().and_then(|e| e.raw_os_error())
}
