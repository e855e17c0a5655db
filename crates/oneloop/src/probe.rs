//! What this kernel offers each backend, and why a backend cannot run here.
//!
//! [`probe`] opens each backend for real (a small ring, an AIO context, an epoll instance)
//! rather than guessing from version numbers, so its reasons are the machine's own:
//! `io_uring_disabled=2`, `EPERM` from a seccomp profile, `aio-max-nr` used up, ...
#![forbid(unsafe_code)]

use crate::common::BackendKind;
use crate::ring::Ring;

/// One kernel feature and whether it is there (with a note when it is not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The feature's kernel name (`EPOLL_WAIT`, `IOCB_CMD_POLL`, ...).
    pub name: String,
    /// Whether it works here.
    pub available: bool,
    /// Why not, or a detail.
    pub note: String,
}

impl Feature {
    fn new(name: &str, available: bool, note: impl Into<String>) -> Feature {
        Feature {
            name: name.into(),
            available,
            note: note.into(),
        }
    }
}

/// One backend's row.
#[derive(Clone, Debug)]
pub struct BackendReport {
    /// The backend.
    pub backend: BackendKind,
    /// `Ok(description)` if a ring runs on it here, else `Err(reason)`.
    pub status: Result<String, String>,
    /// The kernel features it relies on.
    pub features: Vec<Feature>,
}

/// Everything `oneloop probe` shows.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    /// `uname -r`.
    pub kernel: String,
    /// `kernel.io_uring_disabled` (0 enabled, 1 group-restricted, 2 disabled), if readable.
    pub io_uring_disabled: Option<u64>,
    /// `fs.aio-max-nr`, the system-wide AIO event limit.
    pub aio_max_nr: Option<u64>,
    /// `fs.aio-nr`, AIO events reserved now.
    pub aio_nr: Option<u64>,
    /// `RLIMIT_MEMLOCK` (soft, hard) in bytes; `u64::MAX` is unlimited.
    pub memlock_bytes: Option<(u64, u64)>,
    /// Which backend `Auto` picks here (honouring `ONELOOP_BACKEND`), or why none.
    pub auto: Result<BackendKind, String>,
    /// One row per backend, in `Auto`'s order.
    pub backends: Vec<BackendReport>,
}

/// Probes every backend on this machine.
pub fn probe() -> ProbeReport {
    use crate::sys;
    ProbeReport {
        kernel: sys::kernel_release(),
        io_uring_disabled: sys::read_sysctl("/proc/sys/kernel/io_uring_disabled"),
        aio_max_nr: sys::read_sysctl("/proc/sys/fs/aio-max-nr"),
        aio_nr: sys::read_sysctl("/proc/sys/fs/aio-nr"),
        memlock_bytes: sys::memlock_limit().ok(),
        auto: Ring::builder()
            .entries(8)
            .build()
            .map(|r| r.backend())
            .map_err(|e| e.to_string()),
        backends: vec![probe_uring(), probe_aio(), probe_epoll()],
    }
}

fn probe_uring() -> BackendReport {
    let status = Ring::builder()
        .backend(BackendKind::Uring)
        .entries(8)
        .build()
        .map(|r| r.describe())
        .map_err(|e| e.to_string());
    let mut features = match crate::backend::uring::probe_opcodes() {
        Ok(ops) => ops
            .into_iter()
            .map(|(name, ok)| Feature::new(name, ok, if ok { "" } else { "opcode missing" }))
            .collect(),
        Err(e) => vec![Feature::new("io_uring_setup", false, e.to_string())],
    };
    if status.is_ok() {
        features.extend(probe_uring_kernel_side());
    }
    BackendReport {
        backend: BackendKind::Uring,
        status,
        features,
    }
}

/// io_uring's kernel-side features for receives, each tried for real on a small ring: a note
/// says whether oneloop uses it ("used: ...") or not, and why.
fn probe_uring_kernel_side() -> Vec<Feature> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let ring = || {
        Ring::builder()
            .backend(BackendKind::Uring)
            .entries(8)
            .build()
    };
    let mut out = Vec::new();
    // A provided-buffer ring, then each multishot op receiving into it (or accepting).
    let tried = (|| -> std::io::Result<Vec<Feature>> {
        let mut ring = ring()?;
        if !ring.kernel_multishot() {
            // This kernel lacks READ_MULTISHOT (6.7): the ring emulates all three ops.
            let why = "emulated: a poll, then receives into user-space buffers (no READ_MULTISHOT, Linux 6.7+)";
            return Ok([
                "PBUF_RING",
                "RECV multishot",
                "READ_MULTISHOT",
                "ACCEPT multishot",
            ]
            .into_iter()
            .map(|name| Feature::new(name, false, why))
            .collect());
        }
        let bufs = ring.buf_ring(4, 64)?;
        let mut found = vec![Feature::new(
            "PBUF_RING",
            true,
            "used: RecvMulti and ReadMulti receive into Ring::buf_ring's buffers",
        )];
        let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
        let (pr, pw) = std::io::pipe()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let recv = ring.submit(crate::RecvMulti::new(a.as_raw_fd(), &bufs), 1);
        let read = ring.submit(crate::ReadMulti::new(pr.as_raw_fd(), &bufs), 2);
        let accept = ring.submit(crate::AcceptMulti::new(listener.as_raw_fd()), 3);
        b.write_all(b"probe")?;
        (&pw).write_all(b"probe")?;
        let _client = std::net::TcpStream::connect(addr)?;
        let mut seen = [None, None, None];
        let start = std::time::Instant::now();
        while seen.iter().any(Option::is_none) && start.elapsed().as_secs() < 2 {
            ring.wait(1, Some(std::time::Duration::from_millis(100)))?;
            for c in ring.completions() {
                let i = c.user_data() as usize - 1;
                if seen[i].is_none() {
                    seen[i] = Some(match c.result() {
                        Ok(_) if c.is_more() => Ok(()),
                        Ok(n) => Err(format!("ended at once with {n}")),
                        Err(e) => Err(e.to_string()),
                    });
                }
            }
        }
        let names = [
            (
                "RECV multishot",
                "used: RecvMulti; oneloop-rt feeds stream reads with it",
            ),
            ("READ_MULTISHOT", "used: ReadMulti"),
            ("ACCEPT multishot", "used: AcceptMulti"),
        ];
        let submitted = [recv.is_ok(), read.is_ok(), accept.is_ok()];
        for (i, (name, used)) in names.into_iter().enumerate() {
            found.push(match (&seen[i], submitted[i]) {
                (Some(Ok(())), _) => Feature::new(name, true, used),
                (Some(Err(e)), _) => Feature::new(
                    name,
                    false,
                    format!("{e}: RingBuilder::emulate_multishot runs it in user space"),
                ),
                (None, false) => Feature::new(name, false, "refused at submit (opcode missing)"),
                (None, true) => Feature::new(name, false, "no completion within 2 s"),
            });
        }
        Ok(found)
    })();
    match tried {
        Ok(found) => out.extend(found),
        Err(e) => out.push(Feature::new(
            "PBUF_RING",
            false,
            format!("{e} (Linux 5.19+): oneloop-rt reads the readiness way"),
        )),
    }
    // Incremental consumption (6.12) and bundles (6.10).
    out.push(match crate::sys::buf_ring::KernelRing::probe_flags(2) {
        Ok(()) => Feature::new(
            "PBUF_RING_INC",
            true,
            "used: a receive takes only the bytes it fills from a buffer \
             (RingBuilder::incremental_buffers(false) takes whole buffers)",
        ),
        Err(e) => Feature::new(
            "PBUF_RING_INC",
            false,
            format!("{e} (Linux 6.12+): each receive takes a whole buffer"),
        ),
    });
    let bundle = io_uring::IoUring::new(4).map(|r| r.params().is_feature_recvsend_bundle());
    out.push(match bundle {
        Ok(true) => Feature::new(
            "RECVSEND_BUNDLE",
            true,
            "available, off by default: RingBuilder::recv_bundles(true) lets a RecvMulti fill \
             several buffers in one go (a completion each); one bundle can take the whole ring",
        ),
        Ok(false) => Feature::new(
            "RECVSEND_BUNDLE",
            false,
            "feature bit absent (Linux 6.10+): each receive fills one buffer",
        ),
        Err(e) => Feature::new("RECVSEND_BUNDLE", false, e.to_string()),
    });
    // Registered buffers (5.1; charged to RLIMIT_MEMLOCK without CAP_IPC_LOCK).
    let fixed = io_uring::IoUring::new(2).and_then(|r| {
        let region = crate::sys::fixed::Region::new(1, 4096)?;
        region.register(&r)
    });
    let memlock = match crate::sys::memlock_limit() {
        _ if crate::sys::has_ipc_lock() => {
            "not charged to RLIMIT_MEMLOCK (this process has CAP_IPC_LOCK)".to_string()
        }
        Ok((soft, _)) if soft == libc::RLIM_INFINITY => "RLIMIT_MEMLOCK unlimited".to_string(),
        Ok((soft, _)) => format!(
            "charged to RLIMIT_MEMLOCK ({soft} bytes, the rings' own memory too); a pool past \
             it works unregistered"
        ),
        Err(e) => format!("RLIMIT_MEMLOCK unknown: {e}"),
    };
    out.push(match fixed {
        Ok(()) => Feature::new(
            "REGISTER_BUFFERS",
            true,
            format!(
                "available: RingBuilder::fixed_buffers(count, size) registers a pool \
                 (READ_FIXED/WRITE_FIXED); {memlock}"
            ),
        ),
        Err(e) => Feature::new(
            "REGISTER_BUFFERS",
            false,
            format!("{e} ({memlock}): a pool's buffers work as ordinary memory"),
        ),
    });
    // The ring's descriptor registered with its thread (5.18).
    let ring_fds =
        io_uring::IoUring::new(2).map(|r| crate::sys::uring::RingFd::register(&r).map(drop));
    out.push(match ring_fds {
        Ok(Ok(())) => Feature::new(
            "RING_FDS",
            true,
            "available, on by default: each ring enters the kernel through its registered \
             descriptor (RingBuilder::register_ring_fd(false) turns it off)",
        ),
        Ok(Err(e)) => Feature::new(
            "RING_FDS",
            false,
            format!("{e} (Linux 5.18+): rings enter through their descriptor"),
        ),
        Err(e) => Feature::new("RING_FDS", false, e.to_string()),
    });
    // Batched waits (6.12).
    let min_timeout = io_uring::IoUring::new(4).map(|r| r.params().is_feature_min_timeout());
    out.push(match min_timeout {
        Ok(true) => Feature::new(
            "MIN_TIMEOUT",
            true,
            "available, off by default: RingBuilder::batch_wait(n, min_wait) batches blocking waits",
        ),
        Ok(false) => Feature::new(
            "MIN_TIMEOUT",
            false,
            "feature bit absent (Linux 6.12+): RingBuilder::batch_wait is ignored",
        ),
        Err(e) => Feature::new("MIN_TIMEOUT", false, e.to_string()),
    });
    out
}

fn probe_aio() -> BackendReport {
    let setup = crate::sys::aio::io_setup(1).map(|ctx| {
        let _ = crate::sys::aio::io_destroy(ctx);
    });
    let setup_note = setup.as_ref().err().map_or(String::new(), |e| {
        crate::sys::aio::describe_setup_error(e, 1)
    });
    let mut features = vec![Feature::new("io_setup", setup.is_ok(), setup_note)];
    let poll = if setup.is_ok() {
        crate::sys::aio::probe_poll()
    } else {
        Err("io_setup failed".into())
    };
    features.push(Feature::new(
        "IOCB_CMD_POLL",
        poll.is_ok(),
        poll.as_ref().err().cloned().unwrap_or_default(),
    ));
    let status = Ring::builder()
        .backend(BackendKind::Aio)
        .entries(8)
        .build()
        .map(|r| r.describe())
        .map_err(|e| e.to_string());
    BackendReport {
        backend: BackendKind::Aio,
        status,
        features,
    }
}

fn probe_epoll() -> BackendReport {
    let epoll = crate::sys::epoll_create();
    let eventfd = crate::sys::eventfd();
    let note = |r: &std::io::Result<std::os::fd::OwnedFd>| {
        r.as_ref().err().map_or(String::new(), |e| e.to_string())
    };
    let features = vec![
        Feature::new("epoll_create1", epoll.is_ok(), note(&epoll)),
        Feature::new("eventfd", eventfd.is_ok(), note(&eventfd)),
        probe_nowait(),
    ];
    let status = Ring::builder()
        .backend(BackendKind::Epoll)
        .entries(8)
        .build()
        .map(|r| r.describe())
        .map_err(|e| e.to_string());
    BackendReport {
        backend: BackendKind::Epoll,
        status,
        features,
    }
}

/// Whether `preadv2(RWF_NOWAIT)` works on a file in the temp dir (page-cache hits inline).
fn probe_nowait() -> Feature {
    let path = std::env::temp_dir().join(format!("oneloop-probe-{}", std::process::id()));
    let result = std::fs::write(&path, b"probe")
        .and_then(|()| std::fs::File::open(&path))
        .and_then(|f| {
            let mut buf = crate::Buf::Vec(Vec::with_capacity(8));
            crate::sys::posix::read_at(std::os::fd::AsRawFd::as_raw_fd(&f), &mut buf, 0, true)
        });
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(_) => Feature::new("RWF_NOWAIT", true, ""),
        Err(e) => Feature::new(
            "RWF_NOWAIT",
            false,
            format!("{e}: every file read goes to the pool"),
        ),
    }
}

/// CPU time this process has used (user + system), from `getrusage(RUSAGE_SELF)`.
pub fn cpu_time() -> std::io::Result<std::time::Duration> {
    crate::sys::posix::cpu_time()
}

/// CPU time the calling thread has used (user + system), from `getrusage(RUSAGE_THREAD)`.
pub fn thread_cpu_time() -> std::io::Result<std::time::Duration> {
    crate::sys::posix::thread_cpu_time()
}
