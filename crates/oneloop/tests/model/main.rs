//! The randomized model test: random sequences of every op kind (with and without deadlines,
//! one-shot and multishot, on registered and plain descriptors), cancels by id (answered, and
//! `cancel_nowait`), by stale id, by fd and of all, `PollUpdate`s of live and finished ops,
//! ops claimed by an owner (`set_waker`, multishot polls `watch`ed, taken with `poll_take`)
//! and abandoned ops (`abandon`: nothing of theirs may surface again)
//! (a `SendFile` among the ops; zero-copy sends; reads and writes into registered buffers, whose
//! pools must be whole again at the end), waits with timeouts, wakes from another
//! thread, writes and reads on the other ends, and rings dropped mid-flight — each answer and
//! completion checked against the reference model of the contract (`contract.rs`); at the end
//! of a run, the process's descriptors and the op buffers still alive are back to where they
//! were.
//!
//! Each backend runs twice: plain, and under fault injection (every fault of
//! `oneloop::fault` at a few percent, and a small io_uring CQ so that it overflows).
//!
//! * `ONELOOP_SEED=<n>` replays a run (a failing run prints its seed first);
//! * `ONELOOP_SOAK=<n>` multiplies the number of steps (default 25,000 per run).
#![allow(missing_docs)]

mod contract;
mod world;

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use oneloop::fault::{Fault, Plan};
use oneloop::*;

use contract::{Kind, Model};
use world::World;

/// Buffers the model gives the ring have capacities in this range and nothing else in the
/// process allocates blocks of these sizes, so the allocator can count the live ones.
const TRACKED: std::ops::Range<usize> = 40_961..41_025;

static LIVE_BUFFERS: AtomicIsize = AtomicIsize::new(0);

/// Each ring's registered buffers: a few, of the largest tracked size (a read into one asks
/// for its whole capacity).
const FIXED_COUNT: usize = 8;
const FIXED_SIZE: usize = TRACKED.end - 1;

struct Counting;

// SAFETY: defers every call to `System`, only counting on the side.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if TRACKED.contains(&layout.size()) {
            LIVE_BUFFERS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if TRACKED.contains(&layout.size()) {
            LIVE_BUFFERS.fetch_sub(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        if TRACKED.contains(&layout.size()) {
            LIVE_BUFFERS.fetch_sub(1, Ordering::SeqCst);
        }
        if TRACKED.contains(&size) {
            LIVE_BUFFERS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs are serial: descriptor and buffer counts are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

/// A small, seeded generator (the test's own choices; the injector has its own streams).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_thousand: u64) -> bool {
        self.below(1000) < per_thousand
    }
}

fn note(line: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Prints the seed if the run panics, so it can be replayed.
struct SeedOnPanic(String);

impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            note(&format!(
                "{}: FAILED; replay with {}",
                self.0,
                replay_hint(&self.0)
            ));
        }
    }
}

fn replay_hint(run: &str) -> String {
    let seed = run.split("seed ").nth(1).unwrap_or("?");
    format!("ONELOOP_SEED={seed} cargo test -p oneloop --test model")
}

fn steps() -> u64 {
    let soak: u64 = std::env::var("ONELOOP_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    25_000 * soak
}

fn seed() -> u64 {
    match std::env::var("ONELOOP_SEED") {
        Ok(v) => {
            let v = v.trim_start_matches("0x");
            u64::from_str_radix(v, 16).expect("ONELOOP_SEED is hex")
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// The plan for runs under faults: everything a few percent of the time.
fn fault_plan(seed: u64) -> Plan {
    Plan::new(seed)
        .rate(Fault::WaitInterrupted, 50_000)
        .rate(Fault::SubmitBusy, 20_000)
        .rate(Fault::SubmitPartial, 100_000)
        .rate(Fault::ShortTransfer, 100_000)
        .rate(Fault::SpuriousReadiness, 50_000)
        .rate(Fault::ReapOne, 50_000)
        .rate(Fault::PoolSpawnFails, 300_000)
        .rate(Fault::PoolDelay, 100_000)
}

struct Run {
    kind: BackendKind,
    faults: bool,
    /// io_uring with multishot ops emulated (`RingBuilder::emulate_multishot`).
    emulate_multishot: bool,
    rng: Rng,
    world: World,
    model: Model,
    ring: Option<Ring>,
    wake_tx: mpsc::Sender<Waker>,
    /// Ops claimed in the ring: their completions are taken with `poll_take`, not from the
    /// queue.
    claimed: Vec<OpId>,
    /// The current ring's buffer ring (for multishot receives).
    bufs: Option<BufRing>,
    /// Ops handed over (`Ring::hand_over`): their completions arrive here.
    handovers: Vec<std::sync::Arc<Handover>>,
    /// Every ring's pool of registered buffers, the current ring's last: all buffers must be
    /// back at the end.
    pools: Vec<FixedBufPool>,
}

fn run(kind: BackendKind, faults: bool) {
    run_with(kind, faults, false);
}

fn run_with(kind: BackendKind, faults: bool, emulate_multishot: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(Some(forced)) = BackendKind::from_env() {
        if forced != kind && forced != BackendKind::Auto {
            note(&format!("SKIP model {kind}: ONELOOP_BACKEND={forced}"));
            return;
        }
    }
    if let Err(e) = builder(kind, faults, emulate_multishot).build() {
        note(&format!("SKIP model {kind}: backend unavailable here: {e}"));
        return;
    }
    warm_up(kind);
    let seed = seed();
    let name = format!(
        "model {kind}{}{} seed {seed:x}",
        if emulate_multishot {
            " (multishot emulated)"
        } else {
            ""
        },
        if faults { " under faults" } else { "" }
    );
    note(&format!("{name}: {} steps", steps()));
    let guard = SeedOnPanic(name.clone());
    let fds_before = world::fd_count();
    let buffers_before = LIVE_BUFFERS.load(Ordering::SeqCst);
    let installed = faults.then(|| fault_plan(seed).install());
    let started = Instant::now();
    let (wake_tx, wake_rx) = mpsc::channel::<Waker>();
    let waker_thread = std::thread::spawn(move || {
        while let Ok(waker) = wake_rx.recv() {
            waker.wake();
        }
    });
    let world = World::new(&format!("{kind}-{faults}-{emulate_multishot}"));
    let mut run = Run {
        kind,
        faults,
        emulate_multishot,
        rng: Rng(seed),
        model: Model::new(world.epoll_tags()),
        world,
        ring: None,
        wake_tx,
        claimed: Vec::new(),
        bufs: None,
        handovers: Vec::new(),
        pools: Vec::new(),
    };
    run.model.pool_may_refuse = faults;
    for step in 0..steps() {
        run.model.step = step;
        run.step();
    }
    run.drop_ring();
    let Run {
        model,
        world,
        wake_tx,
        pools,
        ..
    } = run;
    drop(wake_tx);
    waker_thread.join().unwrap();
    drop(world);
    let hits = installed.as_ref().map(|i| {
        Fault::ALL
            .iter()
            .map(|&f| (f, i.hits_of(f), i.chances_of(f)))
            .collect::<Vec<_>>()
    });
    drop(installed);
    let mut violations = model.violations;
    // A pool job still running when its ring was dropped (an fsync, say) keeps its buffers
    // until it returns, then frees them: give such jobs time to end.
    let settle = Instant::now();
    while LIVE_BUFFERS.load(Ordering::SeqCst) != buffers_before
        && settle.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every ring's registered buffers are back in its pool (a pool job holds one until it
    // returns, as above).
    while pools.iter().any(|p| p.available() != p.count())
        && settle.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for (i, pool) in pools.iter().enumerate() {
        if pool.available() != pool.count() {
            violations.push(format!(
                "ring {i}'s fixed buffers: {} of {} back",
                pool.available(),
                pool.count()
            ));
        }
    }
    let fds_after = world::fd_count();
    if fds_after != fds_before {
        violations.push(format!(
            "descriptors: {fds_before} before, {fds_after} after"
        ));
    }
    let buffers_after = LIVE_BUFFERS.load(Ordering::SeqCst);
    if buffers_after != buffers_before {
        violations.push(format!(
            "op buffers alive: {buffers_before} before, {buffers_after} after"
        ));
    }
    let t = &model.tally;
    note(&format!(
        "{name}: {} ops in {:.1?} ({} MORE, {} cancelled, {} too late, {} timed out, {} short, {} stale cancels, {} nowait cancels, {} group cancels, {} poll updates, {} pool refusals, {} rings dropped, {} claimed, {} watched, {} abandoned, {} handed over), {} violations",
        t.submitted, started.elapsed(), t.mores, t.cancelled, t.too_late, t.timed_out, t.short_transfers,
        t.stale_cancels, t.nowait_cancels, t.group_cancels, t.updates, t.pool_refusals, t.rings_dropped,
        t.claimed, t.watched, t.abandoned, t.handed_over,
        violations.len()
    ));
    if let Some(hits) = &hits {
        note(&format!("{name}: faults injected {hits:?}"));
        // Each injection point this backend has must have been reached, and each fault
        // injected wherever ten or more hits were expected (none: less than e^-10 likely).
        let plan = fault_plan(seed);
        for &(fault, hits, chances) in hits {
            let expected = chances as f64 * f64::from(plan.rate_of(fault)) / 1e6;
            if applies(kind, fault) && (chances == 0 || (expected >= 10.0 && hits == 0)) {
                violations.push(format!(
                    "{fault:?} injected {hits} times in {chances} chances"
                ));
            }
        }
    }
    assert!(
        t.finals > 0 && t.cancelled > 0 && t.too_late + t.cancelled > 0,
        "{name}: the run exercised nothing"
    );
    assert!(
        violations.is_empty(),
        "{name}: {} violations (replay: {}):\n{}",
        violations.len(),
        replay_hint(&name),
        violations.join("\n")
    );
    drop(guard);
}

/// Whether a backend has the injection point of `fault`.
fn applies(kind: BackendKind, fault: Fault) -> bool {
    match fault {
        Fault::SubmitPartial => kind == BackendKind::Aio,
        Fault::SubmitBusy | Fault::ReapOne => kind != BackendKind::Epoll,
        Fault::SpuriousReadiness | Fault::PoolSpawnFails | Fault::PoolDelay => {
            kind != BackendKind::Uring
        }
        Fault::SetupFails => false,
        _ => true,
    }
}

fn builder(kind: BackendKind, faults: bool, emulate_multishot: bool) -> RingBuilder {
    let b = Ring::builder()
        .backend(kind)
        .in_flight_max(512)
        .fixed_buffers(FIXED_COUNT, FIXED_SIZE)
        .emulate_multishot(emulate_multishot);
    if faults {
        // A small CQ, so that reaping one at a time makes it overflow.
        b.entries(8).cq_entries(16)
    } else {
        b.entries(64)
    }
}

/// Makes the process-wide things that are made once (the epoll probe descriptor) before the
/// descriptor count is taken.
fn warm_up(kind: BackendKind) {
    let mut ring = Ring::builder().backend(kind).entries(8).build().unwrap();
    let world = World::new("warm-up");
    let id = ring
        .submit(
            EpollWait::new(world.epoll.as_raw_fd(), EpollEvents::with_capacity(1)),
            0,
        )
        .unwrap();
    ring.cancel(id).unwrap();
    while ring.in_flight() > 0 {
        ring.wait(1, Some(Duration::from_millis(10))).unwrap();
    }
}

impl Run {
    fn ring(&mut self) -> &mut Ring {
        if self.ring.is_none() {
            let mut ring = builder(self.kind, self.faults, self.emulate_multishot)
                .build()
                .expect("ring");
            // About half the descriptors are registered (`register_fd`): they outlive the
            // ring, so none needs unregistering.
            for fd in self.world.pollable_fds() {
                if self.rng.below(2) == 0 {
                    if let Err(e) = ring.register_fd(fd) {
                        self.model
                            .violation(format!("register_fd({fd}) failed: {e}"));
                    }
                }
            }
            // Few small buffers: multishot receives run dry (`ENOBUFS`) often.
            self.bufs = Some(ring.buf_ring(4, 64).expect("buffer ring"));
            self.pools
                .push(ring.fixed_buffers().expect("asked for").clone());
            self.ring = Some(ring);
        }
        self.ring.as_mut().unwrap()
    }

    fn step(&mut self) {
        let roll = self.rng.below(1000);
        match roll {
            0..=449 if self.model.live() < 200 => self.submit(),
            0..=449 => self.wait(),
            450..=559 => self.cancel(),
            560..=699 => self.wait(),
            700..=899 => self.poke(),
            900..=997 => self.take(),
            _ => {
                if self.rng.chance(200) {
                    self.drop_ring();
                } else {
                    self.wake();
                }
            }
        }
    }

    /// Takes what the hand-overs received into the model; drops those that are done.
    fn take_handed(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut handovers = std::mem::take(&mut self.handovers);
        handovers.retain(|to| loop {
            match to.poll_next(&mut cx) {
                std::task::Poll::Ready(Some(c)) => self.model.completion(c),
                std::task::Poll::Ready(None) => break false,
                std::task::Poll::Pending => break true,
            }
        });
        self.handovers = handovers;
    }

    /// Takes every ready completion into the model: the queue's, then each claimed op's, then
    /// the hand-overs'.
    fn take(&mut self) {
        self.take_handed();
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let got: Vec<Completion> = ring.completions().collect();
        for c in got {
            self.model.completion(c);
        }
        let waker = std::task::Waker::noop();
        let mut i = 0;
        while i < self.claimed.len() {
            let id = self.claimed[i];
            while let std::task::Poll::Ready(c) = ring.poll_take(id, waker) {
                let more = c.is_more();
                self.model.completion(c);
                if !more {
                    break;
                }
            }
            // Ended (taken here, or from the queue if it finished inside `submit`).
            if self.model.is_live(id) {
                i += 1;
            } else {
                self.claimed.swap_remove(i);
            }
        }
    }

    fn wait(&mut self) {
        let timeout = match self.rng.below(4) {
            0 | 1 => Duration::ZERO,
            2 => Duration::from_micros(self.rng.below(200)),
            _ => Duration::from_micros(self.rng.below(1_000)),
        };
        let min = 1 + self.rng.below(2) as usize;
        if let Err(e) = self.ring().wait(min, Some(timeout)) {
            self.model.violation(format!("wait failed: {e}"));
        }
        self.take();
    }

    /// A wake from another thread ends a wait that would otherwise last 10 s.
    fn wake(&mut self) {
        let waker = self.ring().waker();
        self.wake_tx.send(waker).unwrap();
        let start = Instant::now();
        if let Err(e) = self.ring().wait(usize::MAX, Some(Duration::from_secs(10))) {
            self.model.violation(format!("wait failed: {e}"));
        }
        if start.elapsed() >= Duration::from_secs(10) {
            self.model
                .violation("a wake from another thread was lost".into());
        }
        self.take();
    }

    fn drop_ring(&mut self) {
        self.claimed.clear();
        self.bufs = None;
        if let Some(ring) = self.ring.take() {
            drop(ring);
            // The drop ended the handed-over ops: their finals are in the hand-overs, which
            // are closed now.
            self.take_handed();
            if !self.handovers.is_empty() {
                self.model
                    .violation("a hand-over still open after its ring was dropped".into());
                self.handovers.clear();
            }
            self.model.ring_dropped();
        }
    }

    /// Acts on the other ends: bytes into pipes and sockets, bytes out, connections.
    fn poke(&mut self) {
        let pipes = self.world.pipes.len() as u64;
        let sockets = self.world.sockets.len() as u64;
        let result = match self.rng.below(7) {
            0 | 1 => {
                let (i, n) = (
                    self.rng.below(pipes) as usize,
                    1 + self.rng.below(64) as usize,
                );
                self.world.feed_pipe(i, n);
                Ok(())
            }
            2 => self.world.drain_pipe(self.rng.below(pipes) as usize),
            3 => {
                let (i, n) = (
                    self.rng.below(sockets) as usize,
                    1 + self.rng.below(64) as usize,
                );
                self.world.feed_socket(i, n);
                Ok(())
            }
            4 => self.world.drain_socket(self.rng.below(sockets) as usize),
            5 => self
                .world
                .drain_socket_back(self.rng.below(sockets) as usize),
            _ => {
                if self.world.backlog > 16 {
                    self.world.accept_all();
                } else {
                    self.world.connect();
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            self.model.violation(e);
        }
    }

    fn cancel(&mut self) {
        let pick = self.rng.next();
        match self.rng.below(13) {
            12 => {
                // As a dropped future does: nothing of the op may surface again.
                let Some(id) = self.model.pick_live(pick) else {
                    return;
                };
                if !self.model.may_abandon(id) {
                    return;
                }
                match self.ring().abandon(id) {
                    Ok(()) => {
                        self.model.abandoned(id);
                        self.claimed.retain(|c| *c != id);
                    }
                    Err(e) => self.model.violation(format!("abandon failed: {e}")),
                }
            }
            10 | 11 => self.update(pick),
            0 | 1 if self.rng.chance(300) => {
                // As a consumer that moved threads asks: the op ends as it will, and all it
                // produced, waiting and to come, arrives in the hand-over, once, in order.
                let Some(id) = self.model.pick_live(pick) else {
                    return;
                };
                let to = Handover::new();
                match self.ring().hand_over(id, std::sync::Arc::clone(&to)) {
                    Ok(()) => {
                        self.model.handed_over(id);
                        self.claimed.retain(|c| *c != id);
                        self.handovers.push(to);
                    }
                    Err(e) => self.model.violation(format!("hand_over failed: {e}")),
                }
            }
            0 | 1 => {
                // As a dropped future asks: no answer, the op ends as it will.
                let Some(id) = self.model.pick_live(pick) else {
                    return;
                };
                match self.ring().cancel_nowait(id) {
                    Ok(()) => self.model.cancel_nowait_live(id),
                    Err(e) => self.model.violation(format!("cancel_nowait failed: {e}")),
                }
            }
            2..=5 => {
                let Some(id) = self.model.pick_live(pick) else {
                    return;
                };
                match self.ring().cancel(id) {
                    Ok(answer) => self.model.cancel_live(id, answer),
                    Err(e) => self.model.violation(format!("cancel failed: {e}")),
                }
            }
            6 | 7 => {
                // Taken first: an id whose final completion is ready but not taken is live.
                self.take();
                let Some(id) = self.model.pick_finished(pick) else {
                    return;
                };
                match self.ring().cancel(id) {
                    Ok(answer) => self.model.cancel_stale(answer),
                    Err(e) => self.model.violation(format!("cancel failed: {e}")),
                }
            }
            8 => {
                let fd = self.pick_fd(pick);
                self.take();
                match self.ring().cancel_fd(fd) {
                    Ok(count) => self.model.cancel_group(Some(fd), count),
                    Err(e) => self.model.violation(format!("cancel_fd failed: {e}")),
                }
            }
            _ => {
                if !self.rng.chance(200) {
                    return;
                }
                self.take();
                match self.ring().cancel_all() {
                    Ok(count) => self.model.cancel_group(None, count),
                    Err(e) => self.model.violation(format!("cancel_all failed: {e}")),
                }
            }
        }
    }

    /// A `PollUpdate` of a live op (a poll: `Updated` or `TooLate`; anything else: `EINVAL`
    /// or `TooLate`) or of a finished one (`NotFound`).
    fn update(&mut self, pick: u64) {
        let mask = match self.rng.below(3) {
            0 => PollMask::IN,
            1 => PollMask::OUT,
            _ => PollMask::IN | PollMask::OUT,
        };
        if self.rng.chance(200) {
            self.take();
            if let Some(id) = self.model.pick_finished(pick) {
                let answer = self.ring().update_poll(id, mask);
                self.model.update_stale(answer);
            }
            return;
        }
        let Some(id) = self.model.pick_live(pick) else {
            return;
        };
        let answer = self.ring().update_poll(id, mask);
        self.model.update_live(id, answer, mask.bits());
    }

    fn pick_fd(&self, pick: u64) -> i32 {
        let w = &self.world;
        let mut fds = vec![
            w.read_file.as_raw_fd(),
            w.epoll.as_raw_fd(),
            w.listener.as_raw_fd(),
        ];
        for p in &w.pipes {
            fds.push(p.rd.as_raw_fd());
            fds.push(p.wr.as_raw_fd());
        }
        for (a, b) in &w.sockets {
            fds.push(a.as_raw_fd());
            fds.push(b.as_raw_fd());
        }
        fds[(pick % fds.len() as u64) as usize]
    }

    /// A free registered buffer of the ring's pool, one time in `one_in`.
    fn fixed_buffer(&mut self, one_in: u64) -> Option<FixedBuf> {
        if self.rng.below(one_in) != 0 {
            return None;
        }
        self.pools.last().and_then(FixedBufPool::take)
    }

    fn buffer(&mut self) -> usize {
        TRACKED.start + self.rng.below((TRACKED.end - TRACKED.start) as u64) as usize
    }

    fn submit(&mut self) {
        let (sub, kind, fd, owned) = self.make_op();
        let deadline = self.rng.chance(150);
        let sub = if deadline {
            sub.deadline(Duration::from_micros(self.rng.below(2_000)))
        } else {
            sub
        };
        let user_data = self.rng.next();
        let multishot_poll = matches!(
            kind,
            Kind::Poll {
                multishot: true,
                ..
            }
        );
        let claim = self.rng.chance(300);
        let watch = multishot_poll && self.rng.chance(600);
        match self.ring().submit(sub, user_data) {
            Ok(id) => {
                self.model.submitted(id, kind, fd, deadline, owned);
                if claim || watch {
                    let waker = std::task::Waker::noop();
                    if watch {
                        self.ring().watch(id, waker);
                        self.model.tally.watched += 1;
                    } else {
                        self.ring().set_waker(id, waker);
                        self.model.tally.claimed += 1;
                    }
                    self.claimed.push(id);
                }
            }
            Err(e) => self
                .model
                .violation(format!("submit refused: {}", e.error())),
        }
    }

    /// A random op, what the model checks it against, its descriptor (as `Op::fd` names it),
    /// and a descriptor the test must keep open until it ends.
    fn make_op(&mut self) -> (Submission, Kind, Option<i32>, Option<std::os::fd::OwnedFd>) {
        self.ring();
        let bufs = self.bufs.clone().expect("made with the ring");
        let w = &self.world;
        let pipe = self.rng.below(w.pipes.len() as u64) as usize;
        let sock = self.rng.below(w.sockets.len() as u64) as usize;
        let (prd, pwr) = (w.pipes[pipe].rd.as_raw_fd(), w.pipes[pipe].wr.as_raw_fd());
        let (sa, sb) = (w.sockets[sock].0.as_raw_fd(), w.sockets[sock].1.as_raw_fd());
        let rfd = w.read_file.as_raw_fd();
        let wfd = w.write_file.as_raw_fd();
        let epfd = w.epoll.as_raw_fd();
        let lfd = w.listener.as_raw_fd();
        let offset = self.rng.below(world::FILE_LEN as u64) as usize;
        let n = self.buffer();
        let pick = self.rng.below(100);
        let in_ = PollMask::IN;
        let out = PollMask::OUT;
        match pick {
            0..=4 => (Nop.into(), Kind::Nop, None, None),
            5..=14 => {
                // One read in four into a registered buffer, when one is free.
                let fixed = self.fixed_buffer(4);
                let (op, len) = match fixed {
                    Some(buf) => (Read::new(rfd, buf, offset as u64), FIXED_SIZE),
                    None => (Read::new(rfd, Vec::with_capacity(n), offset as u64), n),
                };
                (op.into(), Kind::ReadFile { offset, len }, Some(rfd), None)
            }
            15..=22 => {
                let op = Read::new(prd, Vec::with_capacity(n), CURRENT_POSITION);
                (op.into(), Kind::ReadPipe { len: n }, Some(prd), None)
            }
            23..=27 => {
                let op = match self.fixed_buffer(4) {
                    Some(mut buf) => {
                        buf.extend_from_slice(&vec![b'w'; n]);
                        Write::new(wfd, buf, offset as u64)
                    }
                    None => Write::new(wfd, vec![b'w'; n], offset as u64),
                };
                (op.into(), Kind::WriteFile { len: n }, Some(wfd), None)
            }
            28..=31 => {
                let len = 1 + self.rng.below(256) as usize;
                let op = Write::new(pwr, vec![b'x'; len], CURRENT_POSITION);
                (op.into(), Kind::WritePipe { len }, Some(pwr), None)
            }
            32..=35 => {
                let lens = vec![n, self.buffer()];
                let bufs = lens.iter().map(|&l| Vec::with_capacity(l)).collect();
                let op = Readv::new(rfd, bufs, offset as u64);
                (op.into(), Kind::Readv { offset, lens }, Some(rfd), None)
            }
            36..=38 => {
                let lens = vec![n, self.buffer()];
                let bufs = lens.iter().map(|&l| vec![b'v'; l]).collect();
                let op = Writev::new(wfd, bufs, offset as u64);
                (op.into(), Kind::Writev { lens }, Some(wfd), None)
            }
            // Fsyncs are slow here (a journal commit each): one op in 200.
            39..=40 if self.rng.chance(250) => {
                let op = if self.rng.chance(500) {
                    Fsync::new(wfd).data_only()
                } else {
                    Fsync::new(wfd)
                };
                (op.into(), Kind::Fsync, Some(wfd), None)
            }
            39..=40 => (Nop.into(), Kind::Nop, None, None),
            52 => {
                let op = RecvMulti::new(sa, &bufs);
                let kind = Kind::RecvMulti {
                    byte: b'y',
                    size: 64,
                };
                (op.into(), kind, Some(sa), None)
            }
            53 => {
                let op = ReadMulti::new(prd, &bufs);
                let kind = Kind::RecvMulti {
                    byte: b'x',
                    size: 64,
                };
                (op.into(), kind, Some(prd), None)
            }
            54 => (
                AcceptMulti::new(lfd).into(),
                Kind::AcceptMulti,
                Some(lfd),
                None,
            ),
            41..=51 => {
                let (fd, mask) = match self.rng.below(3) {
                    0 => (prd, in_),
                    1 => (pwr, out),
                    _ => (sa, in_ | PollMask::RDHUP),
                };
                let op = Poll::new(fd, mask);
                let kind = Kind::Poll {
                    mask: mask.bits(),
                    multishot: false,
                };
                (op.into(), kind, Some(fd), None)
            }
            55..=60 => {
                let op = Poll::new(prd, in_).multishot();
                let kind = Kind::Poll {
                    mask: in_.bits(),
                    multishot: true,
                };
                (op.into(), kind, Some(prd), None)
            }
            61..=66 => {
                let capacity = 1 + self.rng.below(4) as usize;
                let op = EpollWait::new(epfd, EpollEvents::with_capacity(capacity));
                (op.into(), Kind::EpollWait { capacity }, Some(epfd), None)
            }
            67..=74 => {
                let delay = if self.rng.chance(300) {
                    Duration::from_secs(3600)
                } else {
                    Duration::from_micros(self.rng.below(3_000))
                };
                let not_before = Instant::now() + delay;
                (
                    Timeout::after(delay).into(),
                    Kind::Timeout { not_before },
                    None,
                    None,
                )
            }
            75..=78 => (Accept::new(lfd).into(), Kind::Accept, Some(lfd), None),
            79..=81 => {
                let socket = World::tcp_socket();
                let fd = socket.as_raw_fd();
                self.world.backlog += 1;
                let op = Connect::new(fd, self.world.listen_addr);
                (op.into(), Kind::Connect, Some(fd), Some(socket))
            }
            82..=86 => {
                let op = Recv::new(sa, Vec::with_capacity(n));
                (op.into(), Kind::Recv { len: n }, Some(sa), None)
            }
            87..=88 => {
                let op = SendFile::new(sa, rfd, offset as u64, n);
                (op.into(), Kind::SendFile { offset, len: n }, Some(sa), None)
            }
            89..=93 => {
                let len = 1 + self.rng.below(512) as usize;
                // One send in three zero-copy: the same contract, the buffer held longer.
                let op: Submission = if self.rng.below(3) == 0 {
                    SendZc::new(sb, vec![b'y'; len]).into()
                } else {
                    Send::new(sb, vec![b'y'; len]).into()
                };
                (op, Kind::Send { len }, Some(sb), None)
            }
            94..=95 => {
                let fd = World::closable();
                let raw = fd.as_raw_fd();
                (Close::new(fd).into(), Kind::Close, Some(raw), None)
            }
            _ => {
                let path = self.world.read_path.as_os_str().as_encoded_bytes().to_vec();
                let op =
                    OpenAt::new(libc::AT_FDCWD, path, libc::O_RDONLY | libc::O_CLOEXEC).unwrap();
                (op.into(), Kind::OpenAt, Some(libc::AT_FDCWD), None)
            }
        }
    }
}

#[test]
fn model_uring() {
    run(BackendKind::Uring, false);
}

#[test]
fn model_uring_under_faults() {
    run(BackendKind::Uring, true);
}

/// The multishot ops as a kernel without them runs them: a poll, then rounds in user space.
#[test]
fn model_uring_multishot_emulated_under_faults() {
    run_with(BackendKind::Uring, true, true);
}

#[test]
fn model_aio() {
    run(BackendKind::Aio, false);
}

#[test]
fn model_aio_under_faults() {
    run(BackendKind::Aio, true);
}

#[test]
fn model_epoll() {
    run(BackendKind::Epoll, false);
}

#[test]
fn model_epoll_under_faults() {
    run(BackendKind::Epoll, true);
}
