//! The reference model: what the Ring contract says each answer and completion may be, given
//! what the test did. Every check that fails records a violation; nothing here panics.
//!
//! Per op: exactly one final completion, `MORE` only on a multishot poll, nothing after the
//! final one; buffers (and events, and produced descriptors) handed back in the final
//! completion; a result that fits the op (bytes read match the file, a mask is non-empty and
//! within what was asked plus ERR/HUP/RDHUP/NVAL, ...). Per cancel: `NotFound` never for an op
//! whose final completion has not been taken (and always for one whose has); once a cancel
//! has answered, every later one answers `TooLate`; `Cancelled` ⇒ `ECANCELED`; a first
//! `TooLate` ⇒ not `ECANCELED`; a cancel by fd or of all counts exactly the ops it reached,
//! and as many of the undecided ones end `ECANCELED` as it said it cancelled.

use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Instant;

use oneloop::{CancelCount, CancelOutcome, Completion, OpId, Output, UpdateOutcome};

use crate::world::{pattern, FILE_LEN};

/// What an op was, with what its result is checked against.
#[derive(Clone, Debug)]
pub enum Kind {
    Nop,
    ReadFile {
        offset: usize,
        len: usize,
    },
    ReadPipe {
        len: usize,
    },
    WriteFile {
        len: usize,
    },
    WritePipe {
        len: usize,
    },
    Readv {
        offset: usize,
        lens: Vec<usize>,
    },
    Writev {
        lens: Vec<usize>,
    },
    Fsync,
    Poll {
        mask: u32,
        multishot: bool,
    },
    EpollWait {
        capacity: usize,
    },
    Timeout {
        not_before: Instant,
    },
    Accept,
    Connect,
    Recv {
        len: usize,
    },
    Send {
        len: usize,
    },
    Close,
    OpenAt,
    SendFile {
        offset: usize,
        len: usize,
    },
    /// A multishot receive on a socket (`b'y'` bytes) or read on a pipe (`b'x'`), into a
    /// buffer ring of buffers of `size` bytes.
    RecvMulti {
        byte: u8,
        size: usize,
    },
    AcceptMulti,
}

impl Kind {
    fn has_buffers(&self) -> bool {
        matches!(
            self,
            Kind::ReadFile { .. }
                | Kind::ReadPipe { .. }
                | Kind::WriteFile { .. }
                | Kind::WritePipe { .. }
                | Kind::Readv { .. }
                | Kind::Writev { .. }
                | Kind::Recv { .. }
                | Kind::Send { .. }
        )
    }

    /// Ops the epoll and aio backends may run on the blocking pool.
    fn may_use_pool(&self) -> bool {
        matches!(
            self,
            Kind::ReadFile { .. }
                | Kind::WriteFile { .. }
                | Kind::Readv { .. }
                | Kind::Writev { .. }
                | Kind::Fsync
                | Kind::OpenAt
                | Kind::SendFile { .. }
        )
    }
}

/// What a cancel decided for an op, once one has answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decided {
    Cancelled,
    TooLate,
    /// Reached by the group cancel with this index (which op it cancelled is not said).
    Group(usize),
    /// `cancel_nowait` asked first: the op may end either way, exactly once.
    Nowait,
}

struct Live {
    kind: Kind,
    fd: Option<RawFd>,
    deadline: bool,
    decided: Option<Decided>,
    /// A descriptor the op uses that the test owns until the op ends (a `Connect`'s socket).
    _owned: Option<OwnedFd>,
    step: u64,
    /// Handed over (`Ring::hand_over`): its completions arrive in a `Handover`, and its slot
    /// may leave the ring before the test takes its final one — the ring then says
    /// `NotFound`, so nothing else is asked of it.
    handed: bool,
}

/// A cancel by fd or of all: how many it said it cancelled, and what its undecided members did.
struct Group {
    cancelled: usize,
    open: usize,
    ended_cancelled: usize,
    step: u64,
    what: String,
}

/// Bits a poll may report without asking.
const UNMASKED: u32 =
    (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) as u32 | libc::EPOLLRDHUP as u32;

#[derive(Default)]
pub struct Tally {
    pub submitted: u64,
    pub finals: u64,
    pub mores: u64,
    pub cancelled: u64,
    pub too_late: u64,
    pub timed_out: u64,
    pub stale_cancels: u64,
    /// `cancel_nowait` calls on live ops.
    pub nowait_cancels: u64,
    pub group_cancels: u64,
    pub short_transfers: u64,
    pub pool_refusals: u64,
    pub rings_dropped: u64,
    /// `PollUpdate`s of live ops.
    pub updates: u64,
    /// Ops claimed with `set_waker`, multishot polls claimed with `watch`, ops abandoned.
    pub claimed: u64,
    pub watched: u64,
    pub abandoned: u64,
    /// Ops handed over (`Ring::hand_over`).
    pub handed_over: u64,
}

pub struct Model {
    live: HashMap<OpId, Live>,
    /// Recently finished ids of the current ring.
    finished: Vec<OpId>,
    /// Recently abandoned ops of the current ring, with their descriptors: nothing of theirs
    /// may surface, but one may still be in flight (a group cancel then counts it, too late:
    /// its end was decided when it was abandoned).
    abandoned: Vec<(OpId, Option<RawFd>)>,
    groups: Vec<Group>,
    pub violations: Vec<String>,
    pub tally: Tally,
    /// Whether the pool may fail to start (injected): pool ops may then end `EAGAIN`.
    pub pool_may_refuse: bool,
    pub epoll_tags: std::ops::Range<u64>,
    pub step: u64,
}

impl Model {
    pub fn new(epoll_tags: std::ops::Range<u64>) -> Model {
        Model {
            live: HashMap::new(),
            finished: Vec::new(),
            abandoned: Vec::new(),
            groups: Vec::new(),
            violations: Vec::new(),
            tally: Tally::default(),
            pool_may_refuse: false,
            epoll_tags,
            step: 0,
        }
    }

    pub fn violation(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(format!("step {}: {what}", self.step));
        }
    }

    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Whether op `id` is live (its final completion not yet taken).
    pub fn is_live(&self, id: OpId) -> bool {
        self.live.contains_key(&id)
    }

    /// Whether op `id` may be abandoned here: not one a group cancel still counts on.
    pub fn may_abandon(&self, id: OpId) -> bool {
        self.live
            .get(&id)
            .is_some_and(|l| !l.handed && !matches!(l.decided, Some(Decided::Group(_))))
    }

    /// Op `id` was handed over: it ends as it will (a cancel was asked), its completions come
    /// through the hand-over.
    pub fn handed_over(&mut self, id: OpId) {
        self.tally.handed_over += 1;
        if let Some(live) = self.live.get_mut(&id) {
            live.decided.get_or_insert(Decided::Nowait);
            live.handed = true;
        }
    }

    /// Op `id` was abandoned: it is no longer live, and nothing of it may surface again.
    pub fn abandoned(&mut self, id: OpId) {
        self.tally.abandoned += 1;
        let fd = self.live.remove(&id).and_then(|l| l.fd);
        self.abandoned.push((id, fd));
        if self.abandoned.len() > 256 {
            self.abandoned.remove(0);
        }
    }

    /// A live op's id, chosen by `pick`.
    pub fn pick_live(&self, pick: u64) -> Option<OpId> {
        if self.live.is_empty() {
            return None;
        }
        // HashMap order is not stable across runs: choose by the sorted order of ids.
        let mut ids: Vec<OpId> = self
            .live
            .iter()
            .filter(|(_, l)| !l.handed)
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return None;
        }
        ids.sort_by_key(|id| id.as_u64());
        Some(ids[(pick % ids.len() as u64) as usize])
    }

    pub fn pick_finished(&self, pick: u64) -> Option<OpId> {
        if self.finished.is_empty() {
            return None;
        }
        Some(self.finished[(pick % self.finished.len() as u64) as usize])
    }

    /// Records an accepted submission.
    pub fn submitted(
        &mut self,
        id: OpId,
        kind: Kind,
        fd: Option<RawFd>,
        deadline: bool,
        owned: Option<OwnedFd>,
    ) {
        self.tally.submitted += 1;
        let live = Live {
            kind,
            fd,
            deadline,
            decided: None,
            _owned: owned,
            step: self.step,
            handed: false,
        };
        if self.live.insert(id, live).is_some() {
            self.violation(format!("{id:?} given to two live ops"));
        }
        if let Some(pos) = self.finished.iter().position(|f| *f == id) {
            self.finished.swap_remove(pos);
        }
    }

    /// Checks one completion taken from the ring.
    pub fn completion(&mut self, mut c: Completion) {
        let id = c.id();
        let Some(live) = self.live.get(&id) else {
            let when = if self.abandoned.iter().any(|(a, _)| *a == id) {
                "of an abandoned op"
            } else if self.finished.contains(&id) {
                "after its final completion"
            } else {
                "for an id never given out"
            };
            self.violation(format!("completion {when}: {c:?}"));
            return;
        };
        if c.is_more() {
            self.tally.mores += 1;
            match live.kind {
                Kind::RecvMulti { byte, size } => {
                    if let Err(msg) = check_lease(&c, byte, size) {
                        self.violation(format!("multishot receive MORE: {msg}: {c:?}"));
                    }
                }
                Kind::AcceptMulti => {
                    if let Err(msg) = check_fd(&mut c) {
                        self.violation(format!("multishot accept MORE: {msg}: {c:?}"));
                    }
                }
                Kind::Poll {
                    mask,
                    multishot: true,
                } => {
                    let ok = c
                        .result()
                        .as_ref()
                        .is_ok_and(|&m| m != 0 && m & !(mask | UNMASKED) == 0);
                    if !ok {
                        self.violation(format!("multishot MORE with a bad mask: {c:?}"));
                    }
                }
                _ => self.violation(format!("MORE on a one-shot {:?}: {c:?}", live.kind)),
            }
            return;
        }
        let live = self.live.remove(&id).expect("looked up above");
        self.tally.finals += 1;
        self.finished.push(id);
        if self.finished.len() > 64 {
            self.finished.remove(0);
        }
        self.check_final(&live, &mut c);
    }

    fn check_final(&mut self, live: &Live, c: &mut Completion) {
        let cancelled = c.is_cancelled();
        if cancelled {
            self.tally.cancelled += 1;
        }
        if c.is_timed_out() {
            self.tally.timed_out += 1;
        }
        match live.decided {
            Some(Decided::Cancelled) if !cancelled => {
                self.violation(format!("answered Cancelled, ended {c:?} ({:?})", live.kind))
            }
            Some(Decided::TooLate) if cancelled => self.violation(format!(
                "answered TooLate, ended ECANCELED ({:?}, submitted at step {})",
                live.kind, live.step
            )),
            None if cancelled => {
                self.violation(format!("ECANCELED without a cancel: {:?}", live.kind))
            }
            Some(Decided::Group(g)) => {
                let group = &mut self.groups[g];
                group.open -= 1;
                group.ended_cancelled += usize::from(cancelled);
                if group.open == 0 && group.ended_cancelled != group.cancelled {
                    let (what, step, said, saw) = (
                        group.what.clone(),
                        group.step,
                        group.cancelled,
                        group.ended_cancelled,
                    );
                    self.violation(format!(
                        "{what} at step {step} said {said} cancelled; {saw} of its undecided ops ended ECANCELED"
                    ));
                }
            }
            _ => {}
        }
        if live.kind.has_buffers() && !matches!(c.output(), Output::Buf(_) | Output::Bufs(_)) {
            self.violation(format!("buffers not handed back: {c:?} ({:?})", live.kind));
        }
        if matches!(live.kind, Kind::EpollWait { .. }) && !matches!(c.output(), Output::Events(_)) {
            self.violation(format!("events not handed back: {c:?}"));
        }
        if cancelled {
            return;
        }
        if c.is_timed_out() {
            let allowed = live.deadline || matches!(live.kind, Kind::Timeout { .. });
            if !allowed {
                self.violation(format!(
                    "TimedOut without a deadline: {:?} {c:?}",
                    live.kind
                ));
            }
            if let Kind::Timeout { not_before } = live.kind {
                // (Its own deadline may end a Timeout sooner.)
                if !live.deadline && Instant::now() < not_before {
                    self.violation("a Timeout expired early".into());
                }
            }
            return;
        }
        if let Err(msg) = self.check_result(&live.kind, c) {
            self.violation(format!("{msg}: {:?} {c:?}", live.kind));
        }
    }

    /// Whether a completion that is neither cancelled nor timed out fits its op.
    fn check_result(&mut self, kind: &Kind, c: &mut Completion) -> Result<(), String> {
        // A multishot receive ends when its buffer ring runs dry (`ENOBUFS`), or with a last
        // result of its own (the backend could not go on).
        match kind {
            Kind::RecvMulti { .. } if errno(c) == Some(libc::ENOBUFS) => {
                return expect(matches!(c.output(), Output::None), "ENOBUFS with output")
            }
            Kind::RecvMulti { byte, size } => return check_lease(c, *byte, *size),
            Kind::AcceptMulti => return check_fd(c),
            _ => {}
        }
        let res = match c.result() {
            Ok(n) => *n as usize,
            Err(e)
                if e.raw_os_error() == Some(libc::EAGAIN)
                    && self.pool_may_refuse
                    && kind.may_use_pool() =>
            {
                self.tally.pool_refusals += 1;
                return Ok(());
            }
            Err(e) => return Err(format!("unexpected error {e}")),
        };
        match kind {
            Kind::Nop | Kind::Fsync | Kind::Connect | Kind::Close => {
                expect(res == 0, "result not 0")
            }
            Kind::ReadFile { offset, len } => {
                let want = (*len).min(FILE_LEN - offset);
                self.short(res, want);
                let buf = c.take_buf().ok_or("no buffer")?;
                expect(res <= want && (res > 0 || want == 0), "read length")?;
                let expected: Vec<u8> = (*offset..offset + res).map(pattern).collect();
                expect(
                    buf.as_slice() == expected,
                    "bytes read differ from the file",
                )
            }
            Kind::ReadPipe { len } | Kind::Recv { len } => {
                let byte = if matches!(kind, Kind::Recv { .. }) {
                    b'y'
                } else {
                    b'x'
                };
                self.short(res, *len);
                let buf = c.take_buf().ok_or("no buffer")?;
                expect((1..=*len).contains(&res) && buf.len() == res, "read length")?;
                expect(
                    buf.as_slice().iter().all(|&b| b == byte),
                    "bytes nobody wrote",
                )
            }
            Kind::WriteFile { len } | Kind::WritePipe { len } | Kind::Send { len } => {
                self.short(res, *len);
                let buf = c.take_buf().ok_or("no buffer")?;
                expect(
                    (1..=*len).contains(&res) && buf.len() == *len,
                    "write length",
                )
            }
            Kind::Readv { offset, lens } => {
                let want = lens.iter().sum::<usize>().min(FILE_LEN - offset);
                let Output::Bufs(bufs) = c.output() else {
                    return Err("no buffers".into());
                };
                expect(res <= want && (res > 0 || want == 0), "readv length")?;
                let got: Vec<u8> = bufs
                    .iter()
                    .flat_map(|b| b.as_slice().iter().copied())
                    .collect();
                let expected: Vec<u8> = (*offset..offset + res).map(pattern).collect();
                expect(got == expected, "bytes read differ from the file")
            }
            Kind::Writev { lens } => {
                let Output::Bufs(bufs) = c.output() else {
                    return Err("no buffers".into());
                };
                expect(bufs.len() == lens.len(), "buffers lost")?;
                expect((1..=lens.iter().sum()).contains(&res), "writev length")
            }
            Kind::Poll { mask, .. } => {
                let m = res as u32;
                expect(m != 0 && m & !(mask | UNMASKED) == 0, "poll mask")
            }
            Kind::EpollWait { capacity } => {
                let events = c.take_events().ok_or("no events")?;
                expect(
                    (1..=*capacity).contains(&res) && events.len() == res,
                    "event count",
                )?;
                let tags = self.epoll_tags.clone();
                let known = events.iter().all(|(_, tag)| tags.contains(&tag));
                expect(known, "an event with a tag nobody set")
            }
            Kind::Accept | Kind::OpenAt => {
                let fd = c.take_fd().ok_or("no descriptor")?;
                expect(
                    std::os::fd::AsRawFd::as_raw_fd(&fd) == res as RawFd,
                    "descriptor differs from result",
                )
            }
            Kind::Timeout { .. } => Err("a Timeout ended with success".into()),
            Kind::SendFile { offset, len } => {
                let want = (*len).min(FILE_LEN - offset);
                self.short(res, want);
                expect((1..=want).contains(&res), "sendfile length")
            }
            Kind::RecvMulti { .. } | Kind::AcceptMulti => unreachable!("checked above"),
        }
    }

    fn short(&mut self, res: usize, want: usize) {
        if res < want {
            self.tally.short_transfers += 1;
        }
    }

    /// Checks the answer to `cancel(id)` of a live op.
    pub fn cancel_live(&mut self, id: OpId, answer: CancelOutcome) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        let decided = live.decided;
        let kind = live.kind.clone();
        match (answer, decided) {
            (CancelOutcome::NotFound, _) => self.violation(format!(
                "NotFound for a live op ({kind:?}, final not taken)"
            )),
            (CancelOutcome::TooLate, Some(_)) => self.tally.too_late += 1,
            (CancelOutcome::Cancelled, Some(d)) => self.violation(format!(
                "Cancelled after the op was already decided ({d:?}): {kind:?}"
            )),
            (CancelOutcome::Cancelled, None) => live.decided = Some(Decided::Cancelled),
            (CancelOutcome::TooLate, None) => {
                self.tally.too_late += 1;
                live.decided = Some(Decided::TooLate);
            }
        }
    }

    /// Records `cancel_nowait(id)` of a live op: no answer, but later cancels are too late.
    pub fn cancel_nowait_live(&mut self, id: OpId) {
        self.tally.nowait_cancels += 1;
        if let Some(live) = self.live.get_mut(&id) {
            live.decided.get_or_insert(Decided::Nowait);
        }
    }

    /// Checks the answer to `cancel(id)` of an op whose final completion was taken.
    /// Checks a `PollUpdate` of the live op `id` to `mask`: a poll is `Updated` (its mask now
    /// includes `mask`: completions reaped before the update may still carry the old one) or
    /// `TooLate`; any other op `EINVAL`, or `TooLate` when it is finishing. Never `NotFound`.
    pub fn update_live(&mut self, id: OpId, answer: std::io::Result<UpdateOutcome>, mask: u32) {
        self.tally.updates += 1;
        let Some(live) = self.live.get_mut(&id) else {
            return self.violation(format!("update of {id:?}, which is not live"));
        };
        let kind = format!("{:?}", live.kind);
        match (&mut live.kind, answer) {
            (Kind::Poll { mask: m, .. }, Ok(UpdateOutcome::Updated)) => *m |= mask,
            (_, Ok(UpdateOutcome::TooLate)) => {}
            (Kind::Poll { .. }, Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.violation(format!("update of a poll ({kind}) said EINVAL"))
            }
            (_, Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {}
            (_, other) => self.violation(format!("update of live {kind}: {other:?}")),
        }
    }

    /// Checks a `PollUpdate` of an op whose final completion was taken: `NotFound`.
    pub fn update_stale(&mut self, answer: std::io::Result<UpdateOutcome>) {
        if !matches!(answer, Ok(UpdateOutcome::NotFound)) {
            self.violation(format!("update of a finished op: {answer:?}"));
        }
    }

    pub fn cancel_stale(&mut self, answer: CancelOutcome) {
        self.tally.stale_cancels += 1;
        if answer != CancelOutcome::NotFound {
            self.violation(format!("{answer:?} for a finished op (expected NotFound)"));
        }
    }

    /// Checks a cancel by fd (`Some`) or of all (`None`); the caller took every completion
    /// that was ready just before.
    pub fn cancel_group(&mut self, fd: Option<RawFd>, count: CancelCount) {
        self.tally.group_cancels += 1;
        let members: Vec<OpId> = self
            .live
            .iter()
            .filter(|(_, l)| !l.handed && (fd.is_none() || l.fd == fd))
            .map(|(id, _)| *id)
            .collect();
        // Handed-over ops still in flight are reached too (too late: their end is decided).
        let handed = self
            .live
            .values()
            .filter(|l| l.handed && (fd.is_none() || l.fd == fd))
            .count();
        let what = match fd {
            Some(fd) => format!("cancel_fd({fd})"),
            None => "cancel_all".to_string(),
        };
        // Abandoned ops still in flight are reached too, each too late.
        let abandoned = self
            .abandoned
            .iter()
            .filter(|(_, f)| fd.is_none() || *f == fd)
            .count()
            + handed;
        let extra = count.total().checked_sub(members.len());
        if extra.is_none_or(|extra| extra > abandoned.min(count.too_late)) {
            self.violation(format!(
                "{what} reached {} ops ({count:?}); {} were in flight",
                count.total(),
                members.len()
            ));
        }
        let index = self.groups.len();
        let mut undecided = 0;
        for id in &members {
            let live = self.live.get_mut(id).expect("member");
            if live.decided.is_none() {
                live.decided = Some(Decided::Group(index));
                undecided += 1;
            }
        }
        if count.cancelled > undecided {
            self.violation(format!(
                "{what} cancelled {} but only {undecided} were undecided",
                count.cancelled
            ));
        }
        self.groups.push(Group {
            cancelled: count.cancelled,
            open: undecided,
            ended_cancelled: 0,
            step: self.step,
            what,
        });
        if undecided == 0 && count.cancelled != 0 {
            self.violation("a group cancel cancelled ops that were already decided".into());
        }
    }

    /// The ring was dropped: its ops are gone (no completion may come for them).
    pub fn ring_dropped(&mut self) {
        self.tally.rings_dropped += 1;
        self.live.clear();
        self.finished.clear();
        self.abandoned.clear();
        self.groups.clear();
    }
}

/// A completion's errno, if it failed.
fn errno(c: &Completion) -> Option<i32> {
    c.result().as_ref().err().and_then(|e| e.raw_os_error())
}

/// A multishot receive's result: `n > 0` bytes, all `byte`, in a lease of a `size`-byte buffer.
fn check_lease(c: &Completion, byte: u8, size: usize) -> Result<(), String> {
    let n = *c
        .result()
        .as_ref()
        .map_err(|e| format!("unexpected error {e}"))? as usize;
    let Output::Lease(lease) = c.output() else {
        return Err("no lease".into());
    };
    expect(
        n > 0 && lease.len() == n,
        "lease length differs from the result",
    )?;
    // A piece of an incrementally consumed buffer begins past its start; the buffer is
    // still `size` bytes.
    expect(
        lease.offset() + lease.capacity() == size,
        "a lease of another ring",
    )?;
    expect(lease.iter().all(|&b| b == byte), "bytes nobody wrote")
}

/// An accept's result: the descriptor number of the socket handed over.
fn check_fd(c: &mut Completion) -> Result<(), String> {
    let n = *c
        .result()
        .as_ref()
        .map_err(|e| format!("unexpected error {e}"))?;
    let fd = c.take_fd().ok_or("no descriptor")?;
    expect(
        std::os::fd::AsRawFd::as_raw_fd(&fd) == n as RawFd,
        "descriptor differs from result",
    )
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what.to_string())
    }
}
