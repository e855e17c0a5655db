//! Resource exhaustion, each case in a child process of its own: limits are process-wide or
//! system-wide, so a case must not starve the other tests, and whatever it takes it gives
//! back when the child exits. Each answer must be a clear error or backpressure; nothing is
//! lost or leaked, and the ring works again once the resource is back.
//!
//! * `RLIMIT_NOFILE` reached during accepts: `EMFILE` completions, then the listener accepts
//!   the waiting connection once descriptors are freed (every backend);
//! * `RLIMIT_MEMLOCK` of 0 for an io_uring ring: a clear error naming the limit and `Auto`
//!   falling back, or (kernels from 5.12 charge rings to the memory cgroup) a working ring;
//! * `RLIMIT_MEMLOCK` too small for a ring's registered buffers (and `CAP_IPC_LOCK` dropped, as
//!   for an unprivileged user): the ring builds, the pool says why it is not registered, and
//!   reads into its buffers work as ordinary ones;
//! * `aio-max-nr` used up by other rings: the next aio ring fails with `EAGAIN` naming
//!   `aio-nr`/`aio-max-nr`, `Auto` (uring excluded) falls back to epoll and says why, and aio
//!   works again once the other rings are gone;
//! * set-up failures injected for uring and aio: `Auto` walks down to epoll, each reason kept;
//! * a slow consumer: 6,000 completions produced while the consumer takes one at a time, on
//!   every backend: each arrives once (the in-flight cap and a tiny io_uring CQ are the
//!   conformance suite's cases 24 and 25).
#![allow(missing_docs)]

#[path = "support/child.rs"]
mod child;

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oneloop::fault::{Fault, Plan};
use oneloop::{Accept, BackendKind, Nop, Poll, PollMask, Ring, Timeout};

/// One child at a time: `aio-max-nr` is shared by the whole machine.
static ONE_CHILD: Mutex<()> = Mutex::new(());

/// Runs `body` in a child process (this test binary, filtered to the test `name`); the parent
/// passes if the child exits 0, and shows what the child printed either way.
fn in_child(name: &str, body: fn()) {
    run_child(name, body, false);
}

/// As [`in_child`], for a case about `Auto`'s choice: `ONELOOP_BACKEND` (which overrides
/// `Auto`, and which a run of the suite on one backend sets) is cleared in the child.
fn in_child_auto(name: &str, body: fn()) {
    run_child(name, body, true);
}

fn run_child(name: &str, body: fn(), clear_backend: bool) {
    if child::is_child(name) {
        body();
        return;
    }
    let _one = ONE_CHILD.lock().unwrap_or_else(|e| e.into_inner());
    child::run(name, |cmd| {
        if clear_backend {
            cmd.env_remove("ONELOOP_BACKEND");
        }
    });
}

fn backends() -> Vec<BackendKind> {
    let forced = BackendKind::from_env().expect("ONELOOP_BACKEND");
    BackendKind::ALL
        .into_iter()
        .filter(|&k| match forced {
            Some(f) if f != k && f != BackendKind::Auto => {
                eprintln!("SKIP {k}: ONELOOP_BACKEND={f}");
                false
            }
            _ => true,
        })
        .filter(|&k| match Ring::builder().backend(k).entries(8).build() {
            Ok(_) => true,
            Err(e) => {
                eprintln!("SKIP {k}: backend unavailable here: {e}");
                false
            }
        })
        .collect()
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a writable rlimit that outlives the call.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut lim) }, 0);
    let old = lim.rlim_cur;
    lim.rlim_cur = soft.min(lim.rlim_max);
    // SAFETY: as above; only the soft limit changes.
    assert_eq!(unsafe { libc::setrlimit(resource, &lim) }, 0);
    old
}

fn wait_final(ring: &mut Ring) -> oneloop::Completion {
    let start = Instant::now();
    loop {
        if let Some(c) = ring.next_completion() {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no completion within 10 s"
        );
        ring.wait(1, Some(Duration::from_millis(100))).unwrap();
    }
}

#[test]
fn nofile_during_accepts() {
    in_child("nofile_during_accepts", || {
        for kind in backends() {
            let mut ring = Ring::builder().backend(kind).entries(16).build().unwrap();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
            let old = set_limit(libc::RLIMIT_NOFILE, open + 8);
            // Fill the table, keeping one descriptor back for the client.
            let mut hogs: Vec<OwnedFd> = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                hogs.push(f.into());
            }
            hogs.pop();
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            for round in 0..3 {
                ring.submit(Accept::new(listener.as_raw_fd()), round)
                    .unwrap();
                let c = wait_final(&mut ring);
                let errno = c.result().as_ref().err().and_then(|e| e.raw_os_error());
                assert_eq!(errno, Some(libc::EMFILE), "{kind}: {c:?}");
            }
            // Descriptors come back: the connection that waited is accepted and works.
            hogs.truncate(hogs.len().saturating_sub(4));
            ring.submit(Accept::new(listener.as_raw_fd()), 9).unwrap();
            let mut c = wait_final(&mut ring);
            assert!(c.result().is_ok(), "{kind}: {c:?}");
            let mut server = std::net::TcpStream::from(c.take_fd().expect("the accepted socket"));
            client.write_all(b"still here").unwrap();
            let mut got = [0u8; 10];
            server.set_nonblocking(false).unwrap();
            server.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"still here");
            drop(hogs);
            set_limit(libc::RLIMIT_NOFILE, old);
            eprintln!("PASS {kind}: EMFILE three times, then the waiting connection accepted");
        }
    });
}

#[test]
fn memlock_too_small_for_uring() {
    // Whether uring is to be tested is the run's choice (`ONELOOP_BACKEND`); `Auto`'s fallback
    // is part of the case, so the variable is cleared in the child.
    if !backends().contains(&BackendKind::Uring) {
        return;
    }
    in_child_auto("memlock_too_small_for_uring", || {
        // As an unprivileged user: with CAP_IPC_LOCK nothing is charged.
        drop_ipc_lock();
        set_limit(libc::RLIMIT_MEMLOCK, 0);
        match Ring::builder().backend(BackendKind::Uring).build() {
            Err(e) => {
                assert!(
                    e.to_string().contains("memlock"),
                    "the error names the limit: {e}"
                );
                let ring = Ring::new().expect("Auto falls back");
                let skipped = &ring.skipped()[0];
                assert_eq!(skipped.backend, BackendKind::Uring);
                assert!(skipped.reason.contains("memlock"), "{skipped:?}");
                eprintln!("PASS uring refused ({e}); Auto chose {}", ring.backend());
            }
            Ok(mut ring) => {
                // Linux 5.12 to 6.4 charge rings to the memory cgroup, not RLIMIT_MEMLOCK.
                ring.submit(Nop, 1).unwrap();
                assert!(wait_final(&mut ring).result().is_ok());
                eprintln!(
                    "PASS uring ring works with RLIMIT_MEMLOCK 0 (kernel {}: rings are not charged to memlock)",
                    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
                );
            }
        }
    });
}

/// Drops `CAP_IPC_LOCK` from this process (a root test run has it; io_uring charges no memlock
/// to a process that holds it).
fn drop_ipc_lock() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: `header` and two `Data` (version 3) are valid for the kernel to read and write.
    let got = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(got, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above; the kernel only reads them.
    let set = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(set, 0, "capset: {}", std::io::Error::last_os_error());
}

#[test]
fn memlock_too_small_for_fixed_buffers() {
    in_child("memlock_too_small_for_fixed_buffers", || {
        if !backends().contains(&BackendKind::Uring) {
            return;
        }
        drop_ipc_lock();
        // The limit as it is (often 8 MiB; at most 8 MiB here), and twice that in buffers. The
        // ring's own memory is charged too, and the user's other charges, which the kernel
        // frees some time after their rings close: room is left for them.
        let limit = set_limit(libc::RLIMIT_MEMLOCK, 8 << 20).min(8 << 20);
        set_limit(libc::RLIMIT_MEMLOCK, limit);
        let count = (2 * limit as usize / 4096).clamp(64, 16_384);
        let mut ring = Ring::builder()
            .backend(BackendKind::Uring)
            .entries(8)
            .fixed_buffers(count, 4096)
            .build()
            .expect("the ring builds all the same");
        let pool = ring.fixed_buffers().unwrap().clone();
        let why = pool.registered().expect_err("over the limit");
        assert!(
            why.contains("ENOMEM") && why.contains("RLIMIT_MEMLOCK"),
            "{why}"
        );
        assert!(
            ring.describe().contains("not registered"),
            "{}",
            ring.describe()
        );
        let (r, w) = std::io::pipe().unwrap();
        (&w).write_all(b"still works").unwrap();
        let buf = pool.take().unwrap();
        ring.submit(
            oneloop::Read::new(r.as_raw_fd(), buf, oneloop::CURRENT_POSITION),
            1,
        )
        .unwrap();
        let c = wait_final(&mut ring);
        assert_eq!(c.result().as_ref().unwrap(), &11, "{c:?}");
        assert_eq!(ring.stats().fixed_buffer_ops, 0, "no fixed request");
        eprintln!("PASS fixed buffers over RLIMIT_MEMLOCK: {why}");
    });
}

#[test]
fn aio_max_nr_used_up() {
    in_child_auto("aio_max_nr_used_up", || {
        if !backends().contains(&BackendKind::Aio) {
            return;
        }
        // Other rings take every AIO event the system has.
        let mut hogs = Vec::new();
        let first_error = loop {
            match Ring::builder()
                .backend(BackendKind::Aio)
                .entries(1024)
                .in_flight_max(4096)
                .build()
            {
                Ok(ring) => hogs.push(ring),
                Err(e) => break e,
            }
            assert!(hogs.len() < 10_000, "aio-max-nr never ran out");
        };
        // Smaller requests may still fit: take those too.
        while let Ok(ring) = Ring::builder()
            .backend(BackendKind::Aio)
            .entries(1)
            .in_flight_max(1)
            .build()
        {
            hogs.push(ring);
        }
        eprintln!(
            "{} aio rings took the system's AIO events: {first_error}",
            hogs.len()
        );
        let e = Ring::builder()
            .backend(BackendKind::Aio)
            .entries(1)
            .in_flight_max(1)
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "EAGAIN: {e}");
        assert!(
            e.to_string().contains("aio-max-nr"),
            "the error names the limit: {e}"
        );
        let ring = Ring::builder()
            .exclude(BackendKind::Uring)
            .build()
            .expect("Auto falls back");
        assert_eq!(ring.backend(), BackendKind::Epoll);
        let aio = ring
            .skipped()
            .iter()
            .find(|s| s.backend == BackendKind::Aio)
            .unwrap();
        assert!(aio.reason.contains("aio-max-nr"), "Auto says why: {aio:?}");
        drop(ring);
        // The hogs go: aio works again.
        drop(hogs);
        let mut ring = Ring::builder()
            .backend(BackendKind::Aio)
            .build()
            .expect("aio is back");
        ring.submit(Nop, 1).unwrap();
        assert!(wait_final(&mut ring).result().is_ok());
        eprintln!(
            "PASS aio refused with a clear reason, Auto fell back to epoll, aio back afterwards"
        );
    });
}

#[test]
fn setup_failures_fall_back() {
    in_child_auto("setup_failures_fall_back", || {
        let _plan = Plan::new(1).rate(Fault::SetupFails, 1_000_000).install();
        let mut ring = Ring::new().expect("epoll is never injected");
        assert_eq!(ring.backend(), BackendKind::Epoll);
        let reasons: Vec<_> = ring
            .skipped()
            .iter()
            .map(|s| (s.backend, s.reason.clone()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].0 == BackendKind::Uring && reasons[0].1.contains("ENOMEM"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].0 == BackendKind::Aio && reasons[1].1.contains("aio-max-nr"),
            "{reasons:?}"
        );
        ring.submit(Nop, 1).unwrap();
        assert!(wait_final(&mut ring).result().is_ok());
        eprintln!("PASS Auto fell back to epoll: {reasons:?}");
    });
}

#[test]
fn slow_consumer_loses_nothing() {
    in_child("slow_consumer_loses_nothing", || {
        const N: u64 = 3_000;
        for kind in backends() {
            let mut ring = Ring::builder()
                .backend(kind)
                .entries(8)
                .cq_entries(16)
                .in_flight_max(2 * N as usize)
                .build()
                .unwrap();
            let (rd, mut wr) = std::io::pipe().unwrap();
            wr.write_all(b"ready").unwrap();
            let at = Instant::now() + Duration::from_millis(20);
            for i in 0..N {
                ring.submit(Poll::new(rd.as_raw_fd(), PollMask::IN), i)
                    .unwrap();
                ring.submit(Timeout::at(at), N + i).unwrap();
            }
            // The consumer is slow: it takes one completion, then dawdles.
            let mut seen = HashSet::new();
            let start = Instant::now();
            while seen.len() < 2 * N as usize {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{kind}: stalled at {}",
                    seen.len()
                );
                ring.wait(1, Some(Duration::from_millis(100))).unwrap();
                if let Some(c) = ring.next_completion() {
                    assert!(
                        seen.insert(c.user_data()),
                        "{kind}: {} twice",
                        c.user_data()
                    );
                    if seen.len() < 50 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            assert_eq!(ring.in_flight(), 0);
            eprintln!(
                "PASS {kind}: {} completions taken one at a time, each once",
                seen.len()
            );
        }
    });
}
