//! Ops that never touch a descriptor: `Nop` and `Timeout` (a timer in the ring's own heap on
//! every backend).
#![forbid(unsafe_code)]

use std::os::fd::{OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::opcode;

use super::plan::{
    aio_takes_readiness, no_target, one_request, one_shot_on, pool_is_final, AioNext, AioPlan,
    AioStart, Lowered, Next, OpBase, ReadyCx, ReadyPlan, UringCx, UringPlan,
};
use super::{Deadline, Output};
use crate::sys::Done;

/// Does nothing and completes with `Ok(0)`: measures the ring's own cost.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nop;

/// A timer: completes with `TimedOut` when it expires, `ECANCELED` when cancelled.
///
/// # Backends
/// `uring`: `TIMEOUT`. `epoll`: a heap of timers feeding `epoll_pwait2`'s nanosecond timeout
/// (cancelled timers are dropped lazily; 100,000 pending timers are cheap). `aio`: the same
/// heap, feeding `io_getevents`' timeout.
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    pub(crate) when: Deadline,
}

impl Timeout {
    /// Expires `delay` after submission.
    pub fn after(delay: Duration) -> Timeout {
        Timeout {
            when: Deadline::After(delay),
        }
    }
    /// Expires at `at`.
    pub fn at(at: Instant) -> Timeout {
        Timeout {
            when: Deadline::At(at),
        }
    }
}

impl OpBase for Nop {
    no_target!();
    one_shot_on!();
    fn finish(self, _: Done) -> Output {
        Output::None
    }
}

impl UringPlan for Nop {
    one_request!();
    const OPCODES: &'static [(&'static str, u8)] = &[("NOP", opcode::Nop::CODE)];
    fn opcode(_: bool) -> Option<u8> {
        Some(opcode::Nop::CODE)
    }
    fn lower(&mut self, _: &mut UringCx<'_>) -> Lowered {
        Lowered::Sqe(opcode::Nop::new().build())
    }
}

impl ReadyPlan for Nop {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        true
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        Next::Done(0)
    }
    fn again(&mut self, _: bool) -> Next {
        unreachable!("Nop is done at once")
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("Nop is done at once")
    }
}

impl AioPlan for Nop {
    aio_takes_readiness!();
}

impl OpBase for Timeout {
    no_target!();
    one_shot_on!();
    fn finish(self, _: Done) -> Output {
        Output::None
    }
}

impl UringPlan for Timeout {
    // A timer in the ring's heap, read against the clock.
    one_request!(plain = |_native| false);
    const OPCODES: &'static [(&'static str, u8)] = &[];
    fn opcode(_: bool) -> Option<u8> {
        None
    }
    fn lower(&mut self, cx: &mut UringCx<'_>) -> Lowered {
        Lowered::Timer(self.when.instant(cx.now.unwrap_or_else(Instant::now)))
    }
}

impl ReadyPlan for Timeout {
    pool_is_final!();
    fn direction(&self) -> Option<(RawFd, u32)> {
        None
    }
    fn tried_inline(&self, _: bool) -> bool {
        false
    }
    fn first(&mut self, _: &ReadyCx) -> Next {
        Next::Timer(self.when)
    }
    fn again(&mut self, _: bool) -> Next {
        unreachable!("a timer is not readiness-driven")
    }
    fn blocking(&mut self, _: &mut Option<OwnedFd>) -> i32 {
        unreachable!("a timer never goes to the pool")
    }
}

impl AioPlan for Timeout {
    aio_takes_readiness!();
}
