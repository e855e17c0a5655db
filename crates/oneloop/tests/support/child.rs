//! Running a test case in a child process: this test binary again, filtered to the case, for
//! cases that change process-wide state (limits, capabilities, a seccomp filter).

use std::process::Command;

const CHILD: &str = "ONELOOP_TEST_CHILD";

/// Whether this process is the child started to run case `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var(CHILD).as_deref() == Ok(name)
}

/// Runs case `name` in a child (its command set up further by `prepare`), shows what it
/// printed, and fails unless it succeeded.
pub fn run(name: &str, prepare: impl FnOnce(&mut Command)) {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name);
    prepare(&mut child);
    let out = child.output().expect("start the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("  [{name}] {line}");
    }
    assert!(
        out.status.success(),
        "{name}: the child failed ({})",
        out.status
    );
}
