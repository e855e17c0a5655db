//! A seccomp filter like a container runtime's default profile: the io_uring system calls
//! (and, on request, the Linux AIO ones) fail with `EPERM`, everything else is allowed. Applied
//! to a child process between `fork` and `exec` (`Command::pre_exec`), so no container runtime
//! is needed and the test process itself keeps every call.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// What the filter refuses.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub enum Refuse {
    /// `io_uring_setup`, `io_uring_enter`, `io_uring_register` (Docker's default profile).
    Uring,
    /// Those and `io_setup`, `io_destroy`, `io_submit`, `io_cancel`, `io_getevents`,
    /// `io_pgetevents`.
    UringAndAio,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `seccomp_data`: `nr` at 0, `arch` at 4.
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;

/// Why the filter cannot be used here, or `None`.
pub fn unavailable() -> Option<String> {
    (!cfg!(target_arch = "x86_64"))
        .then(|| "the test's seccomp filter is written for x86_64 system call numbers".into())
}

/// The filter's program: on x86_64, the refused calls return `EPERM`; all else is allowed.
fn program(refuse: Refuse) -> Vec<SockFilter> {
    let mut calls = vec![
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ];
    if matches!(refuse, Refuse::UringAndAio) {
        calls.extend([
            libc::SYS_io_setup,
            libc::SYS_io_destroy,
            libc::SYS_io_submit,
            libc::SYS_io_cancel,
            libc::SYS_io_getevents,
            // io_pgetevents (not in the libc crate's x86_64 list).
            333,
        ]);
    }
    let n = calls.len() as u8;
    let stmt = |code, k| SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, OFFSET_ARCH),
        // Another architecture's numbers mean other calls: allow (jump past the checks).
        SockFilter {
            code: BPF_JEQ_K,
            jt: 0,
            jf: n + 1,
            k: AUDIT_ARCH_X86_64,
        },
        stmt(BPF_LD_W_ABS, OFFSET_NR),
    ];
    for (i, &nr) in calls.iter().enumerate() {
        // Equal: jump to the EPERM return after the checks and the allow.
        prog.push(SockFilter {
            code: BPF_JEQ_K,
            jt: n - i as u8,
            jf: 0,
            k: nr as u32,
        });
    }
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
    prog.push(stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32));
    prog
}

/// Makes `cmd`'s process run under the filter (set between `fork` and `exec`).
pub fn apply(cmd: &mut Command, refuse: Refuse) {
    let prog = program(refuse);
    // SAFETY: the closure runs in the forked child before `exec`; it makes two `prctl` calls
    // (async-signal-safe) on memory the child inherited (`prog`, moved in and never freed
    // before `exec`), and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fprog = SockFprog {
                len: prog.len() as u16,
                filter: prog.as_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const SockFprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
