//! The conformance suite: the Ring's contract (`ring.rs`), case by case — each case's doc
//! comment says what it checks — written once and stamped out for every backend. Each run
//! prints `PASS <backend> <case>` or `SKIP <backend> <case>: <reason>` on stderr
//! (uncaptured), so the list of what ran is visible in any `cargo test`.
//!
//! Adding a backend is one line at the bottom: `all_cases!(stamp(name, BackendKind::Name));`.
#![allow(missing_docs)]

mod alloc_count;
mod cases_cancel;
mod cases_disk;
mod cases_epoll;
mod cases_fixed;
mod cases_input;
mod cases_multi;
mod cases_ops;
mod cases_poll;
mod cases_queue;
mod cases_sendfile;
mod cases_timeout;
mod cases_update;
mod cases_zc;
mod harness;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

/// Calls `$stamp!($($args)*; case, case, ...)` with the full list of cases.
macro_rules! all_cases {
    ($stamp:ident ( $($args:tt)* )) => {
        $stamp! { $($args)*;
            // Polls
            cases_poll::c01_poll_pipe_write,
            cases_poll::c02_poll_ready_at_arm,
            cases_poll::c03_poll_regular_file,
            cases_poll::c04_poll_peer_close_hup,
            cases_poll::c05_multishot_edges_then_cancel,
            cases_poll::c06_multishot_no_busy_spin,
            cases_poll::c07_multishot_send_shutdown,
            cases_poll::c08_two_polls_one_fd,
            cases_poll::c09_poll_rearmed_with_matching_mask,
            // Cancellation
            cases_cancel::c10_cancel_pending_and_stale,
            cases_cancel::c11_cancel_ten_thousand_polls,
            cases_cancel::c12_cancel_by_fd_and_all,
            cases_cancel::c13_cancel_races_completion,
            cases_cancel::c13b_cancel_after_wakeup,
            cases_cancel::c13c_cancel_running_writes,
            cases_cancel::c13d_cancel_nowait,
            cases_cancel::c14_cancel_uncancellable_read,
            cases_cancel::c15_drop_ring_with_ops_in_flight,
            // Timeouts and deadlines
            cases_timeout::c16_timeouts_expire_cancel_order,
            cases_timeout::c17_poll_deadline_race,
            cases_timeout::c18_wait_timeout_loses_nothing,
            // EpollWait
            cases_epoll::c19_epoll_wait_member_ready,
            cases_epoll::c20_epoll_wait_member_removed_or_closed,
            cases_epoll::c21_epoll_wait_deadline,
            // Disk
            cases_disk::c22_disk_read_write_vectored_sync,
            cases_disk::c22_disk_o_direct,
            cases_disk::c23_disk_bad_input,
            // Queue limits and teardown
            cases_queue::c24_backpressure_and_in_flight_cap,
            cases_queue::c25_cq_overflow_loses_nothing,
            cases_queue::c26_wake_from_another_thread,
            cases_queue::c27_signal_during_wait,
            // Every op end to end
            cases_ops::x1_accept_connect_send_recv_close,
            cases_ops::x2_openat_resolve,
            cases_ops::x3_registered_fd_reuse,
            cases_ops::x4_registered_fd_edges,
            // Bad input
            cases_input::b1_duration_max,
            cases_input::b2_poll_empty_mask_then_normal,
            cases_input::b3_epoll_wait_not_an_epoll_fd,
            // Wave 3: PollUpdate
            cases_update::c29_update_one_shot_to_ready,
            cases_update::c29_update_as_an_op,
            cases_update::c29_update_multishot_keeps_stream,
            cases_update::c29_update_too_late_unknown_not_a_poll,
            cases_update::c29_two_updates_in_a_row,
            // Wave 3: SendFile
            cases_sendfile::c30_sendfile_cached_and_uncached,
            cases_sendfile::c30_sendfile_stalled_peer_and_cancel,
            // Wave 3: buffer rings and multishot receive, read, accept
            cases_multi::m1_recv_multi_stream_and_end,
            cases_multi::m2_recv_multi_empty_ring_enobufs,
            cases_multi::m3_cancel_leases_outlive_op_and_ring,
            cases_multi::m4_buffer_given_back_is_reused,
            cases_multi::m5_accept_multi,
            cases_multi::m6_read_multi_pipe_and_file,
            cases_multi::m7_buf_ring_bad_input,
            cases_multi::m8_drop_ring_with_multishot_in_flight,
            cases_multi::m9_incremental_pieces_share_a_buffer,
            cases_multi::m10_many_streams_share_one_ring,
            cases_multi::m11_bundles_span_buffers,
            cases_multi::m12_empty_ring_waits_for_data,
            // Registered buffers
            cases_fixed::f1_fixed_buffers_read_write,
            cases_fixed::f2_fixed_buffers_cancel_drop_and_foreign,
            cases_fixed::f3_fixed_buffers_bad_sizes_and_o_direct,
            // Zero-copy sends
            cases_zc::z1_send_zc_counts_bytes_once,
            cases_zc::z2_send_zc_cancel_and_deadline,
            cases_zc::z3_send_zc_peer_reset,
            cases_zc::z4_send_zc_drop_and_cancel_while_bytes_wait,
        }
    };
}

/// One `#[test]` per case for one backend, in a module named after the backend.
macro_rules! stamp {
    ($backend:ident, $kind:expr; $($module:ident :: $case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $case() {
                    crate::harness::run($kind, stringify!($case), crate::$module::$case);
                }
            )*
        }
    };
}

all_cases!(stamp(uring, oneloop::BackendKind::Uring));
all_cases!(stamp(aio, oneloop::BackendKind::Aio));
all_cases!(stamp(epoll, oneloop::BackendKind::Epoll));

/// One `#[test]` per buffer-ring case, in module `$module`, run through `$run` (a
/// `harness` function that builds the io_uring variant).
macro_rules! variant {
    ($module:ident, $run:ident; $($case:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    crate::harness::$run(stringify!($case), crate::cases_multi::$case);
                }
            )*
        }
    };
}

// The multishot cases once more on io_uring with those ops emulated — the path a kernel
// without multishot receive, read and accept (before 6.7) takes: the same completions.
variant!(uring_multishot_emulated, run_emulated_multishot;
    m1_recv_multi_stream_and_end,
    m2_recv_multi_empty_ring_enobufs,
    m3_cancel_leases_outlive_op_and_ring,
    m4_buffer_given_back_is_reused,
    m5_accept_multi,
    m6_read_multi_pipe_and_file,
    m7_buf_ring_bad_input,
    m8_drop_ring_with_multishot_in_flight,
    m10_many_streams_share_one_ring,
    m11_bundles_span_buffers,
    m12_empty_ring_waits_for_data,
);

// The buffer-ring cases once more on io_uring with buffers taken whole — the path a kernel
// without incremental consumption (before 6.12) takes: the same completions.
variant!(uring_whole_buffers, run_whole_buffers;
    m1_recv_multi_stream_and_end,
    m2_recv_multi_empty_ring_enobufs,
    m3_cancel_leases_outlive_op_and_ring,
    m4_buffer_given_back_is_reused,
    m6_read_multi_pipe_and_file,
    m8_drop_ring_with_multishot_in_flight,
    m9_incremental_pieces_share_a_buffer,
    m10_many_streams_share_one_ring,
    m11_bundles_span_buffers,
    m12_empty_ring_waits_for_data,
);

// The buffer-ring cases once more on io_uring with one whole buffer per receive (no
// incremental consumption, no bundles) — the path of a kernel from 6.7 to 6.9.
variant!(uring_one_buffer_each, run_one_buffer_each;
    m1_recv_multi_stream_and_end,
    m2_recv_multi_empty_ring_enobufs,
    m3_cancel_leases_outlive_op_and_ring,
    m4_buffer_given_back_is_reused,
    m8_drop_ring_with_multishot_in_flight,
    m10_many_streams_share_one_ring,
    m11_bundles_span_buffers,
    m12_empty_ring_waits_for_data,
);
