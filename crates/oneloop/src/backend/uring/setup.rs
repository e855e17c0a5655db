//! Setting io_uring up: the ring with the most capable flags this kernel takes, the probe of
//! its opcodes, and errors that say why io_uring cannot be used here.
#![forbid(unsafe_code)]

use std::io;
use std::sync::Arc;

use io_uring::opcode;
use io_uring::{IoUring, Probe};

use super::files::Files;
use super::inflight::InFlight;
use super::Uring;
use crate::backend::by_fd::ByFd;
use crate::backend::timers::Timers;
use crate::common::{Settings, WakeFd};
use crate::fault::{self, Fault};
use crate::op::Op;
use crate::slab::Slab;
use crate::sys::buf_ring::KernelRing;
use crate::sys::uring::RingFd;

/// Setup flag sets tried in order, most capable first, with their names.
const SETUP_ATTEMPTS: [(&str, u8); 3] = [
    ("SINGLE_ISSUER|DEFER_TASKRUN|COOP_TASKRUN", 2),
    ("COOP_TASKRUN", 1),
    ("none", 0),
];

impl Uring {
    /// Opens a ring per `config`; errors say why io_uring cannot be used here.
    pub fn open(config: &Settings, wake: Arc<WakeFd>) -> io::Result<Uring> {
        if fault::hit(Fault::SetupFails) {
            // Injected: the answer a ring over the memlock limit gets.
            return Err(describe_setup_error(io::Error::from_raw_os_error(
                libc::ENOMEM,
            )));
        }
        let (ring, setup) = build_ring(config)?;
        let params = ring.params();
        if !params.is_feature_nodrop() || !params.is_feature_ext_arg() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring lacks FEAT_NODROP or FEAT_EXT_ARG (kernel older than 5.11)",
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let native_epoll_wait =
            !config.emulate_epoll_wait && probe.is_supported(opcode::EpollWait::CODE);
        // READ_MULTISHOT (6.7) comes after multishot RECV and ACCEPT and provided-buffer
        // rings: with it, all of them are there.
        let native_multishot =
            !config.emulate_multishot && probe.is_supported(opcode::ReadMulti::CODE);
        // Incremental consumption (6.12): asked of a group that is registered and dropped again.
        let incremental = native_multishot
            && config.incremental_buffers
            && KernelRing::probe_flags_on(
                &ring.submitter(),
                io_uring::types::IOU_PBUF_RING_INC as u16,
            )
            .is_ok();
        // Bundles (6.10): a feature bit.
        let recv_bundles =
            native_multishot && config.recv_bundles && params.is_feature_recvsend_bundle();
        // Batched waits (6.12): a feature bit.
        let batch_wait = config
            .batch_wait
            .filter(|_| params.is_feature_min_timeout())
            .map(|(n, wait)| {
                let usec = u32::try_from(wait.as_micros()).unwrap_or(u32::MAX).max(1);
                (n.max(1) as usize, usec)
            });
        let native_send_zc = probe.is_supported(opcode::SendZc::CODE);
        let cq = ring.params().cq_entries() as usize;
        let files = Files::open(&ring);
        // Past a thread's 16, or before 5.18: through the descriptor.
        let ring_fd = config
            .register_ring_fd
            .then(|| RingFd::register(&ring))
            .and_then(|r| {
                r.map_err(|e| tracing::debug!("ring descriptor not registered: {e}"))
                    .ok()
            });
        let mut uring = Uring {
            ring_fd,
            table: InFlight {
                ring,
                slots: Slab::with_capacity(config.in_flight_max),
                fixed_ops: 0,
            },
            refused: refused_kinds(&probe, native_epoll_wait, native_multishot),
            plain: crate::op::Op::uring_plain_kinds(native_epoll_wait),
            probe,
            native_epoll_wait,
            native_multishot,
            wake,
            woken: false,
            cqes: Vec::with_capacity(cq.max(64)),
            cancel_results: Vec::with_capacity(64),
            rearms: Vec::with_capacity(64),
            timers: Timers::new(config.in_flight_max.min(65_536)),
            cancel_scratch: (Vec::with_capacity(64), Vec::with_capacity(64)),
            by_fd: ByFd::default(),
            files,
            broken: None,
            setup,
            groups: Vec::new(),
            incremental,
            recv_bundles,
            batch_wait,
            fixed_pool: 0,
            zero_copy_sends: 0,
            native_send_zc,
        };
        uring.arm_wake(&mut crate::sink::Sink::new(0, 0))?;
        Ok(uring)
    }

    /// A line for `Ring::describe`.
    pub fn describe(&self) -> String {
        let p = self.table.ring.params();
        format!(
            "uring (setup {}, sq {}, cq {}, {}, EpollWait {}, multishot {}, {}{})",
            self.setup,
            p.sq_entries(),
            p.cq_entries(),
            if self.ring_fd.is_some() {
                "ring fd registered"
            } else {
                "ring fd not registered"
            },
            if self.native_epoll_wait {
                "native"
            } else {
                "poll + epoll_wait"
            },
            match (self.native_multishot, self.incremental, self.recv_bundles) {
                (true, true, true) => "native, buffers incremental, receive bundles",
                (true, true, false) => "native, buffers incremental",
                (true, false, true) => "native, whole buffers, receive bundles",
                (true, false, false) => "native, whole buffers",
                (false, _, _) => "emulated (poll + rounds)",
            },
            self.files.describe(),
            self.batch_wait.map_or(String::new(), |(n, us)| {
                format!(", waits batched: up to {n} completions in {us} us")
            })
        )
    }
}

/// Creates the io_uring with the most capable setup flags this kernel takes.
fn build_ring(config: &Settings) -> io::Result<(IoUring, &'static str)> {
    let sq = config.entries.next_power_of_two().min(32_768);
    let cq = config
        .cq_entries
        .unwrap_or(sq * 2)
        .next_power_of_two()
        .max(sq);
    let mut last_error = None;
    for (name, level) in SETUP_ATTEMPTS {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_clamp();
        if level >= 1 {
            builder.setup_coop_taskrun().setup_taskrun_flag();
        }
        if level >= 2 {
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        match builder.build(sq) {
            Ok(ring) => return Ok((ring, name)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_error = Some(e),
            Err(e) => return Err(describe_setup_error(e)),
        }
    }
    Err(describe_setup_error(
        last_error.expect("at least one attempt"),
    ))
}

/// Says why `io_uring_setup` failed, in the machine's terms.
pub(crate) fn describe_setup_error(e: io::Error) -> io::Error {
    let disabled = crate::sys::read_sysctl("/proc/sys/kernel/io_uring_disabled");
    let why = match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring_setup: ENOSYS, kernel built without io_uring".to_string(),
        Some(libc::EPERM) if disabled == Some(2) => {
            "io_uring_setup: EPERM, io_uring_disabled=2 (sysctl kernel.io_uring_disabled)"
                .to_string()
        }
        Some(libc::EPERM) if disabled == Some(1) => {
            "io_uring_setup: EPERM, io_uring_disabled=1 and this process is not in io_uring_group"
                .to_string()
        }
        Some(libc::EPERM) => {
            "io_uring_setup: EPERM, refused by a seccomp profile or LSM".to_string()
        }
        Some(libc::ENOMEM) => format!(
            "io_uring_setup: ENOMEM, ring memory exceeds the memlock limit ({})",
            crate::sys::memlock_limit()
                .map_or("unknown".into(), |(soft, _)| format!("{soft} bytes"))
        ),
        _ => format!("io_uring_setup: {e}"),
    };
    io::Error::new(e.kind(), why)
}

/// Bit `k` set for each op kind `k` whose opcode `probe` lacks (see `Uring::refused`); the
/// multishot ops need only a poll where they are emulated.
fn refused_kinds(probe: &Probe, native_epoll_wait: bool, native_multishot: bool) -> u64 {
    const _: () = assert!(Op::COUNT <= 64, "one bit per op kind");
    Op::uring_opcodes(native_epoll_wait)
        .iter()
        .enumerate()
        .filter(|(kind, _)| {
            native_multishot
                || !matches!(Op::NAMES[*kind], "RecvMulti" | "ReadMulti" | "AcceptMulti")
        })
        .filter(|(_, code)| code.is_some_and(|c| !probe.is_supported(c)))
        .fold(0, |bits, (kind, _)| bits | 1 << kind)
}

/// The opcodes oneloop uses and whether this kernel has them, for `oneloop probe`.
pub(crate) fn probe_opcodes() -> io::Result<Vec<(&'static str, bool)>> {
    let ring = IoUring::new(2).map_err(describe_setup_error)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    // The driver's own requests, then every op's.
    let own: &[(&str, u8)] = &[
        ("LINK_TIMEOUT", opcode::LinkTimeout::CODE),
        ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ];
    let mut ops: Vec<(&str, u8)> = own.to_vec();
    for &(name, code) in Op::URING_OPCODES.iter().copied().flatten() {
        if !ops.iter().any(|&(n, _)| n == name) {
            ops.push((name, code));
        }
    }
    Ok(ops
        .iter()
        .map(|&(name, code)| (name, probe.is_supported(code)))
        .collect())
}
