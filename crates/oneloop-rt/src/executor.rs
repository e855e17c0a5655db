//! The executor: one [`Ring`] per thread, tasks that stay on their thread, and the dispatch of
//! completions to the futures waiting for them.
//!
//! Where it sits: [`block_on`] makes a ring and a run queue for the calling thread; every op
//! future submits to that ring and claims its op there with the task's waker (see
//! [`op`](crate::op)); each turn of the loop runs ready tasks, then waits on the ring, whose
//! completions wake their tasks directly.
//!
//! **Two run queues.** A wake on the executor's own thread (the common case: a completion
//! wakes the task that waits for it) pushes to a thread-local queue, with no lock and no
//! atomic. A wake from another thread pushes to the shared injection queue under its mutex
//! and wakes the ring through its [`oneloop::Waker`], so a blocked `wait` returns; the loop
//! moves injected tasks to the local queue at each turn.
#![forbid(unsafe_code)]

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread;

use async_task::{Runnable, Task};
use oneloop::{BackendKind, Ring, RingBuilder};

/// Tasks run per turn before the ring is checked again, so I/O is never starved.
const BUDGET: usize = 128;

/// Ops a task may finish at their first poll (inside `submit`) per run. Past it, an op's
/// completion takes the queue and the task yields, so a task whose every op finishes at once
/// (a socket that always has data) cannot keep the thread from the others.
pub(crate) const OP_BUDGET: u32 = 32;

/// What wakers on any thread share with the executor: the injection queue.
struct Injector {
    /// Tasks woken on other threads, moved to the local queue at each turn.
    injected: Mutex<VecDeque<Runnable>>,
    /// Whether `injected` may hold tasks (checked without the lock).
    has_injected: AtomicBool,
    ring_waker: oneloop::Waker,
}

impl Injector {
    /// Whether the calling thread runs this executor.
    fn is_home(&self) -> bool {
        HOME.get() == std::ptr::from_ref(self) as usize
    }

    fn schedule(&self, runnable: Runnable) {
        if self.is_home() {
            LOCAL.with(|q| q.borrow_mut().push_back(runnable));
            return;
        }
        self.injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(runnable);
        self.has_injected.store(true, Ordering::Release);
        self.ring_waker.wake();
    }

    /// Moves tasks woken on other threads to the local queue.
    fn take_injected(&self) {
        if !self.has_injected.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut injected = self.injected.lock().unwrap_or_else(|e| e.into_inner());
        LOCAL.with(|q| q.borrow_mut().extend(injected.drain(..)));
    }
}

/// The next task of this thread's local run queue.
fn pop_local() -> Option<Runnable> {
    LOCAL.with(|q| q.borrow_mut().pop_front())
}

fn local_is_empty() -> bool {
    LOCAL.with(|q| q.borrow().is_empty())
}

/// Everything one thread's executor owns.
pub(crate) struct Context {
    /// Reached through [`ring_mut`](Self::ring_mut) (which counts every use that may deliver
    /// completions, see [`ring_epoch`]) or, read-only, [`ring`](Self::ring).
    /// `None` only once teardown has dropped it.
    ring: RefCell<Option<Ring>>,
    /// Futures waiting for room because the ring's in-flight cap was reached.
    pub(crate) room_waiters: RefCell<Vec<Waker>>,
    /// Ops abandoned while the ring was busy; abandoned after the current wait.
    pub(crate) deferred_abandons: RefCell<Vec<oneloop::OpId>>,
    shared: Arc<Injector>,
    /// This executor among all of the process's (op futures remember it with their slot: a
    /// future that outlives its executor must not touch a later one's table).
    pub(crate) id: u64,
    /// The buffer ring stream reads are fed from (io_uring; see `net::Readiness`), if any.
    pub(crate) recv_bufs: Option<oneloop::BufRing>,
}

impl Context {
    /// The ring, to submit, take, cancel or wait. Each use counts: completions reach the
    /// ring's claims only inside such a call, so a [`ring_epoch`] unchanged since a future
    /// looked at its claim means nothing arrived for it since.
    #[inline]
    pub(crate) fn ring_mut(&self) -> RefMut<'_, Ring> {
        EPOCH.set(EPOCH.get() + 1);
        RefMut::map(self.ring.borrow_mut(), |r| {
            r.as_mut().expect("the ring lives while its executor runs")
        })
    }

    /// [`ring_mut`](Self::ring_mut), or `None` while the ring is in use further up the stack.
    pub(crate) fn try_ring_mut(&self) -> Option<RefMut<'_, Ring>> {
        EPOCH.set(EPOCH.get() + 1);
        RefMut::filter_map(self.ring.try_borrow_mut().ok()?, Option::as_mut).ok()
    }

    /// The ring, read-only (counters, the backend).
    pub(crate) fn ring(&self) -> Option<Ref<'_, Ring>> {
        Ref::filter_map(self.ring.try_borrow().ok()?, Option::as_ref).ok()
    }
}

/// This thread's executor and how many times its ring may have delivered completions so far
/// (every mutable use of the ring counts, see [`Context::ring_mut`]); `(0, _)` outside one. A
/// future that registered its waker in a claim at epoch `e` and sees `ring_epoch() == e`
/// knows nothing has arrived since: its waker is still the one the ring will wake.
#[inline]
pub(crate) fn ring_epoch() -> (u64, u64) {
    (EXECUTOR.get(), EPOCH.get())
}

/// Each running executor's ring waker, by executor id: how a stream that moved threads
/// reaches the ring its ops run on (a rare path; a lock is fine).
static RINGS: std::sync::Mutex<Vec<(u64, oneloop::Waker)>> = std::sync::Mutex::new(Vec::new());

/// The waker of executor `id`'s ring, while that executor runs.
pub(crate) fn ring_waker_of(id: u64) -> Option<oneloop::Waker> {
    let rings = RINGS.lock().unwrap_or_else(|e| e.into_inner());
    rings.iter().find(|(i, _)| *i == id).map(|(_, w)| w.clone())
}

/// A number for each executor the process starts.
fn next_executor_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Context>>> = const { RefCell::new(None) };
    /// The run queue of the executor on this thread; only this thread touches it.
    static LOCAL: RefCell<VecDeque<Runnable>> = const { RefCell::new(VecDeque::new()) };
    /// The address of the running executor's `Injector` (0: none). A waker compares its own
    /// `Injector` with it; that `Injector` is alive while the waker is, so no other executor can
    /// have its address meanwhile.
    static HOME: Cell<usize> = const { Cell::new(0) };
    /// What is left of the running task's [`OP_BUDGET`].
    static OPS_LEFT: Cell<u32> = const { Cell::new(OP_BUDGET) };
    /// Tasks spawned on this thread's executor so far.
    static SPAWNED: Cell<u64> = const { Cell::new(0) };
    /// See [`ring_epoch`].
    static EPOCH: Cell<u64> = const { Cell::new(0) };
    /// The id of the executor running on this thread (0: none).
    static EXECUTOR: Cell<u64> = const { Cell::new(0) };
    /// Whether the executor on this thread feeds stream reads from a buffer ring (one load on
    /// every read, so that the other backends pay nothing for the feed).
    static FED: Cell<bool> = const { Cell::new(false) };
    /// Every task of this thread's executor not yet ended: a waker of each (see [`Tasks`]).
    static TASKS: RefCell<Tasks> = const { RefCell::new(Tasks { wakers: Vec::new(), free: Vec::new() }) };
}

/// The tasks of this thread's executor, so that teardown can drop each one — also a task
/// parked on a waker nothing outside it can reach (a wait list it holds itself): dropping its
/// handle detached it, and without this list the cycle task → wait list → waker → task would
/// keep it, and what it owns (sockets), alive for the life of the process.
///
/// Slot `i` holds a waker of the task spawned into it; the task's future empties its slot when
/// it ends or is dropped ([`Tracked`]). Teardown wakes every waker left, and drops the
/// runnables that wakes queue: async-task drops a task's future with its last runnable.
struct Tasks {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Tasks {
    fn insert(&mut self, waker: Waker) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.wakers[i] = Some(waker);
                i
            }
            None => {
                self.wakers.push(Some(waker));
                // Room for every slot in the free list, made here (a spawn allocates anyway):
                // a task's end then frees its slot without allocating.
                self.free.reserve(self.wakers.len() - self.free.len());
                self.wakers.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) {
        if let Some(slot) = self.wakers.get_mut(i).filter(|w| w.is_some()) {
            *slot = None;
            self.free.push(i);
        }
    }
}

pin_project_lite::pin_project! {
    /// A spawned future that empties its task's slot in [`TASKS`] when it is dropped (it is
    /// dropped when it ends, or with its task). A struct rather than an `async` block around
    /// the future: such a block would hold the future twice, doubling every task's memory.
    struct Tracked<F> {
        #[pin]
        future: F,
        slot: usize,
        executor: u64,
    }

    impl<F> PinnedDrop for Tracked<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            untrack(*this.slot, *this.executor);
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

/// Empties slot `slot` of executor `executor`'s task list, if that executor runs here (a
/// future dropped after its executor's teardown finds the list already empty).
fn untrack(slot: usize, executor: u64) {
    if EXECUTOR.get() == executor {
        TASKS.with(|t| {
            if let Ok(mut t) = t.try_borrow_mut() {
                t.remove(slot);
            }
        });
    }
}

/// Whether the executor on this thread feeds stream reads (see `net::Readiness`).
#[inline]
pub(crate) fn reads_fed() -> bool {
    FED.get()
}

/// A snapshot of this thread's runtime: its backend, its ring's counters (ops by kind, pool
/// jobs, cancels) and its tasks — plain numbers, cheap to take, for an application to export.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeStats {
    /// The backend of this thread's ring.
    pub backend: BackendKind,
    /// The ring's counters.
    pub ring: oneloop::Stats,
    /// Ops in flight on the ring now.
    pub in_flight: usize,
    /// Tasks spawned on this executor since it started.
    pub tasks_spawned: u64,
}

/// This thread's runtime counters; `None` outside [`block_on`] (or while the ring is busy,
/// which it never is between polls).
///
/// # Examples
/// ```
/// oneloop_rt::block_on(async {
///     oneloop_rt::time::sleep(std::time::Duration::from_millis(1)).await;
///     let stats = oneloop_rt::stats().unwrap();
///     let timeouts = stats.ring.submitted[oneloop::Op::NAMES.iter().position(|n| *n == "Timeout").unwrap()];
///     assert!(timeouts >= 1);
///     println!("{:?}: {} ops, {} cancels", stats.backend, stats.ring.submitted.iter().sum::<u64>(), stats.ring.cancels);
/// });
/// ```
pub fn stats() -> Option<RuntimeStats> {
    try_with_context(|ctx| {
        let ring = ctx.ring()?;
        Some(RuntimeStats {
            backend: ring.backend(),
            ring: ring.stats(),
            in_flight: ring.in_flight(),
            tasks_spawned: SPAWNED.get(),
        })
    })
    .flatten()
}

/// This thread's ring's pool of registered buffers ([`Builder::fixed_buffers`]); `None`
/// without one, or outside a runtime.
///
/// # Examples
/// ```
/// use oneloop_rt::Runtime;
/// let rt = Runtime::builder().fixed_buffers(4, 4096).build();
/// rt.block_on(async {
///     let pool = oneloop_rt::fixed_buffers().expect("asked for");
///     let buf = pool.take().expect("a free buffer");
///     assert_eq!(buf.capacity(), 4096);
/// })
/// .unwrap();
/// ```
pub fn fixed_buffers() -> Option<oneloop::FixedBufPool> {
    try_with_context(|ctx| ctx.ring()?.fixed_buffers().cloned()).flatten()
}

/// Whether the running task may still take an op's completion at its first poll (when not,
/// the completion takes the queue and the task yields).
pub(crate) fn op_budget_left() -> bool {
    OPS_LEFT.get() > 0
}

/// Spends one op of the running task's budget.
pub(crate) fn spend_op_budget() {
    OPS_LEFT.set(OPS_LEFT.get().saturating_sub(1));
}

/// Runs `f` with this thread's executor.
///
/// # Panics
/// Outside [`block_on`] (or a [`Runtime`] thread): there is no ring to use.
pub(crate) fn with_context<R>(f: impl FnOnce(&Context) -> R) -> R {
    try_with_context(f).unwrap_or_else(|| {
        panic!("oneloop-rt: no runtime on this thread; call this inside block_on")
    })
}

/// Like [`with_context`], but `None` when there is no executor (during teardown).
pub(crate) fn try_with_context<R>(f: impl FnOnce(&Context) -> R) -> Option<R> {
    // A shared borrow for the call (no reference-count traffic); only `block_on`'s set-up and
    // teardown borrow it mutably, never while a task runs.
    CURRENT.with(|c| c.borrow().as_deref().map(f))
}

impl Context {
    /// Waits for completions (blocking only if `block`); each wakes its task from the ring.
    fn turn(&self, block: bool) -> io::Result<()> {
        let mut ring = self.ring_mut();
        ring.wait(usize::from(block), None)?;
        if ring.ready() > 0 {
            // Every op of this runtime is claimed by its future: nothing is queued for
            // anyone. Should something be, it is dropped (buffers freed, fds closed).
            ring.completions().for_each(drop);
        }
        drop(ring);
        self.after_wait();
        Ok(())
    }

    /// Sends abandons that came while the ring was busy, and lets futures waiting for room
    /// retry.
    fn after_wait(&self) {
        let (mut abandons, mut room) = (
            self.deferred_abandons.borrow_mut(),
            self.room_waiters.borrow_mut(),
        );
        if abandons.is_empty() && room.is_empty() {
            return;
        }
        let mut ring = self.ring_mut();
        for id in abandons.drain(..) {
            // Fails only on a broken ring, which the next wait reports.
            let _ = ring.abandon(id);
        }
        drop(ring);
        let wakers: Vec<Waker> = room.drain(..).collect();
        drop((abandons, room));
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// The backend of `ctx`'s ring, for the start-up line.
fn backend_of(ctx: &Context) -> String {
    ctx.ring()
        .map_or_else(|| "none".into(), |r| r.backend().to_string())
}

/// Wakes the `block_on` future itself.
struct MainWake {
    woken: AtomicBool,
    shared: Arc<Injector>,
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if !self.shared.is_home() {
            self.shared.ring_waker.wake();
        }
    }
}

/// Configures a runtime: the backend and sizes of each thread's ring.
#[derive(Clone, Debug)]
pub struct Builder {
    ring: RingBuilderConfig,
    threads: Option<usize>,
    pin: bool,
    recv_buffers: Option<(u32, u32)>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            ring: RingBuilderConfig::default(),
            threads: None,
            pin: false,
            recv_buffers: Some(RECV_BUFFERS),
        }
    }
}

/// Each io_uring executor's buffer ring for stream reads, by default: 1,024 buffers of 4 KiB
/// (4 MiB of address space, resident as connections use them).
const RECV_BUFFERS: (u32, u32) = (1024, 4096);

#[derive(Clone, Debug, Default)]
struct RingBuilderConfig {
    backend: Option<BackendKind>,
    entries: Option<u32>,
    in_flight_max: Option<usize>,
    pool_threads: Option<usize>,
    fixed_buffers: Option<(usize, usize)>,
}

impl Builder {
    /// The backend every thread's ring uses (default: `Auto`, or `ONELOOP_BACKEND`).
    pub fn backend(mut self, backend: BackendKind) -> Self {
        self.ring.backend = Some(backend);
        self
    }
    /// The ring's submission batch size (see [`RingBuilder::entries`]).
    pub fn entries(mut self, entries: u32) -> Self {
        self.ring.entries = Some(entries);
        self
    }
    /// The most ops in flight per ring (see [`RingBuilder::in_flight_max`]).
    pub fn in_flight_max(mut self, max: usize) -> Self {
        self.ring.in_flight_max = Some(max);
        self
    }
    /// The most threads each ring's blocking pool may run (see
    /// [`RingBuilder::pool_threads`]; epoll and aio only): how many reads of cold files can
    /// wait for the disk at once.
    pub fn pool_threads(mut self, threads: usize) -> Self {
        self.ring.pool_threads = Some(threads);
        self
    }
    /// The buffer ring each io_uring executor feeds stream reads from: `count` buffers (a
    /// power of two) of `size` bytes (default 1,024 × 4 KiB); `None` switches the feed off,
    /// and reads go the readiness way, as on epoll and aio — as they do where the kernel runs
    /// no multishot receive ([`Ring::kernel_multishot`](oneloop::Ring::kernel_multishot)).
    /// See [`net`](crate::net) for what the feed does.
    pub fn recv_buffers(mut self, buffers: Option<(u32, u32)>) -> Self {
        self.recv_buffers = buffers;
        self
    }
    /// Gives each thread's ring a pool of `count` registered buffers of `size` bytes (see
    /// [`RingBuilder::fixed_buffers`](oneloop::RingBuilder::fixed_buffers); none by
    /// default), which [`fixed_buffers`] hands out on that thread: file reads into them are
    /// `READ_FIXED` on io_uring, zero-copy sends from them name the buffer by index.
    pub fn fixed_buffers(mut self, count: usize, size: usize) -> Self {
        self.ring.fixed_buffers = Some((count, size));
        self
    }
    /// How many executor threads [`Runtime::run`] starts (default: one per CPU).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }
    /// Pins executor thread `i` to CPU `i % cpus` in [`Runtime::run`].
    pub fn pin_to_cores(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }
    /// The runtime.
    pub fn build(self) -> Runtime {
        Runtime { config: self }
    }

    fn ring(&self) -> RingBuilder {
        let mut b = Ring::builder();
        if let Some(k) = self.ring.backend {
            b = b.backend(k);
        }
        if let Some(e) = self.ring.entries {
            b = b.entries(e);
        }
        if let Some(m) = self.ring.in_flight_max {
            b = b.in_flight_max(m);
        }
        if let Some(t) = self.ring.pool_threads {
            b = b.pool_threads(t);
        }
        if let Some((count, size)) = self.ring.fixed_buffers {
            b = b.fixed_buffers(count, size);
        }
        b
    }
}

/// A runtime: how to build each thread's executor.
///
/// # Examples
/// ```
/// let rt = oneloop_rt::Runtime::builder().build();
/// assert_eq!(rt.block_on(async { 6 * 7 }).unwrap(), 42);
/// ```
#[derive(Clone, Debug)]
pub struct Runtime {
    config: Builder,
}

impl Runtime {
    /// Starts configuring a runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Runs `future` to completion on this thread, with a ring of its own, driving every task
    /// spawned meanwhile. Tasks still pending when `future` finishes are dropped (their ops
    /// cancelled).
    ///
    /// # Errors
    /// If no ring can be built here (see [`RingBuilder::build`]), or the ring breaks.
    ///
    /// # Panics
    /// If called inside another `block_on` on the same thread.
    pub fn block_on<F: Future>(&self, future: F) -> io::Result<F::Output> {
        let mut ring = self.config.ring().build()?;
        let recv_bufs = match self.config.recv_buffers {
            // Fed only where the kernel receives: an emulated receive is a poll and a recv per
            // round, what the readiness way does with less (on epoll and aio it measured
            // slower).
            Some((count, size))
                if ring.backend() == BackendKind::Uring && ring.kernel_multishot() =>
            {
                match ring.buf_ring(count, size) {
                    Ok(bufs) => Some(bufs),
                    // A kernel without provided-buffer rings (before 5.19), or a bad size:
                    // reads go the readiness way, as on the other backends.
                    Err(e) => {
                        tracing::warn!(error = %e, "oneloop-rt: no buffer ring, stream reads not fed");
                        None
                    }
                }
            }
            _ => None,
        };
        let ring_waker = ring.waker();
        let shared = Arc::new(Injector {
            injected: Mutex::new(VecDeque::new()),
            has_injected: AtomicBool::new(false),
            ring_waker,
        });
        let ctx = Rc::new(Context {
            ring: RefCell::new(Some(ring)),
            room_waiters: RefCell::new(Vec::new()),
            deferred_abandons: RefCell::new(Vec::new()),
            shared,
            id: next_executor_id(),
            recv_bufs,
        });
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            assert!(
                c.is_none(),
                "oneloop-rt: block_on inside block_on on one thread"
            );
            *c = Some(Rc::clone(&ctx));
        });
        HOME.set(Arc::as_ptr(&ctx.shared) as usize);
        EXECUTOR.set(ctx.id);
        FED.set(ctx.recv_bufs.is_some());
        RINGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((ctx.id, ctx.shared.ring_waker.clone()));
        SPAWNED.set(0);
        tracing::debug!(backend = %backend_of(&ctx), "oneloop-rt: executor started");
        let _teardown = Teardown(Rc::clone(&ctx));
        let main = Arc::new(MainWake {
            woken: AtomicBool::new(true),
            shared: Arc::clone(&ctx.shared),
        });
        let waker = Waker::from(Arc::clone(&main));
        let mut cx = TaskContext::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if main.woken.swap(false, Ordering::AcqRel) {
                OPS_LEFT.set(OP_BUDGET);
                if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                    return Ok(value);
                }
            }
            ctx.shared.take_injected();
            for _ in 0..BUDGET {
                match pop_local() {
                    Some(runnable) => {
                        OPS_LEFT.set(OP_BUDGET);
                        runnable.run();
                    }
                    None => break,
                }
            }
            let idle = !main.woken.load(Ordering::Acquire)
                && local_is_empty()
                && !ctx.shared.has_injected.load(Ordering::Acquire);
            ctx.turn(idle)?;
        }
    }
}

impl Runtime {
    /// Runs one executor per thread (see [`Builder::threads`]), each with its own ring,
    /// running `f(thread_index)`; returns every thread's output in index order. Bind listeners
    /// inside `f` with `TcpListener::bind_reuse_port` so each thread accepts on the same port.
    ///
    /// # Errors
    /// The first thread's error building its ring, or a panic in a thread (as `Other`).
    ///
    /// # Examples
    /// ```
    /// let rt = oneloop_rt::Runtime::builder().threads(2).build();
    /// let out = rt.run(|i| async move { i * 10 }).unwrap();
    /// assert_eq!(out, [0, 10]);
    /// ```
    pub fn run<F, Fut>(&self, f: F) -> io::Result<Vec<Fut::Output>>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        let threads = self
            .config
            .threads
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let f = Arc::new(f);
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (rt, f, pin) = (self.clone(), Arc::clone(&f), self.config.pin);
                thread::Builder::new()
                    .name(format!("oneloop-rt-{i}"))
                    .spawn(move || {
                        if pin {
                            oneloop::sockets::pin_current_thread(i % cpus)?;
                        }
                        rt.block_on(f(i))
                    })
            })
            .collect::<io::Result<_>>()?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("an executor thread panicked")))
            })
            .collect()
    }
}

/// Clears this thread's executor when `block_on` returns or unwinds: queued tasks are dropped
/// while the ring still exists to cancel their ops; then the executor leaves the thread, and
/// the ring, dropped last, drains what is in flight and drops the wakers of the tasks that
/// waited (dropping those tasks, whose futures then find no executor here).
struct Teardown(Rc<Context>);

impl Drop for Teardown {
    fn drop(&mut self) {
        // One at a time, outside the queue's borrow: dropping a task may wake others.
        let drain = || {
            self.0.shared.take_injected();
            while let Some(runnable) = pop_local() {
                drop(runnable);
                self.0.shared.take_injected();
            }
        };
        drain();
        let room = std::mem::take(&mut *self.0.room_waiters.borrow_mut());
        drop(room);
        drain();
        // Every task left, wherever it is parked: woken into the queue, and dropped there.
        let tasks = TASKS.with(|t| std::mem::take(&mut t.borrow_mut().wakers));
        TASKS.with(|t| t.borrow_mut().free.clear());
        for waker in tasks.into_iter().flatten() {
            waker.wake();
        }
        drain();
        HOME.set(0);
        EXECUTOR.set(0);
        FED.set(false);
        RINGS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.0.id);
        tracing::debug!(tasks = SPAWNED.get(), "oneloop-rt: executor stopped");
        // Taken out first, dropped outside the borrow: what the drop runs may look here.
        let current = CURRENT.with(|c| c.borrow_mut().take());
        drop(current);
        // Then the ring, which lets go of the wakers of tasks parked in its claims: a detached
        // task whose last waker goes is scheduled once more so that it can be dropped — into
        // the injection queue, this thread no longer being its home. Dropped here; left there,
        // each would keep the queue (and itself) alive, its sockets never closed.
        let ring = self.0.ring.borrow_mut().take();
        drop(ring);
        drain();
    }
}

/// Runs `future` on a new executor for this thread (backend `Auto`, or `ONELOOP_BACKEND`).
///
/// # Panics
/// If no ring can be built on this machine, or inside another `block_on`.
///
/// # Examples
/// ```
/// let answer = oneloop_rt::block_on(async {
///     let task = oneloop_rt::spawn(async { 40 + 2 });
///     task.await
/// });
/// assert_eq!(answer, 42);
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    Runtime::builder()
        .build()
        .block_on(future)
        .expect("oneloop-rt: cannot run a ring on this thread")
}

/// Spawns a task on this thread's executor. The task stays on this thread, so `!Send`
/// futures are fine.
///
/// # Panics
/// Outside [`block_on`].
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let shared = with_context(|ctx| Arc::clone(&ctx.shared));
    SPAWNED.set(SPAWNED.get() + 1);
    // The slot is taken before the task exists and filled right after.
    let slot = TASKS.with(|t| t.borrow_mut().insert(Waker::noop().clone()));
    let future = Tracked {
        future,
        slot,
        executor: EXECUTOR.get(),
    };
    let (runnable, task) = async_task::spawn_local(future, move |r| shared.schedule(r));
    TASKS.with(|t| t.borrow_mut().wakers[slot] = Some(runnable.waker()));
    runnable.schedule();
    JoinHandle { task: Some(task) }
}

/// A spawned task: await it for its output, or [`abort`](JoinHandle::abort) it. Dropping the
/// handle lets the task run on, detached.
pub struct JoinHandle<T> {
    task: Option<Task<T>>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped (cancelling its ops) at once.
    pub fn abort(mut self) {
        drop(self.task.take());
    }

    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(Task::is_finished)
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        let task = self.task.as_mut().expect("polled after completion");
        Pin::new(task).poll(cx)
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.detach();
        }
    }
}
