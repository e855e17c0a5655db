//! The binary where a container's seccomp profile refuses io_uring (as Docker's default does),
//! or io_uring and Linux AIO both: `oneloop probe` says why and what `auto` picks; `oneloop
//! serve` starts on the next backend, its banner says why, and it serves files. The filter is
//! installed in the child between `fork` and `exec` (no container runtime needed).
#![allow(missing_docs)]

#[path = "../../oneloop/tests/support/seccomp.rs"]
mod seccomp;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use seccomp::Refuse;

fn oneloop(args: &[&str], refuse: Refuse) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oneloop"));
    cmd.args(args).env_remove("ONELOOP_BACKEND");
    seccomp::apply(&mut cmd, refuse);
    cmd
}

#[test]
fn probe_and_serve_under_a_seccomp_profile() {
    if let Some(why) = seccomp::unavailable() {
        return eprintln!("SKIP: {why}");
    }
    let dir = std::env::temp_dir().join(format!("oneloop-containers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("f.bin"), &body).unwrap();
    for (refuse, picks) in [(Refuse::Uring, "aio"), (Refuse::UringAndAio, "epoll")] {
        let out = oneloop(&["probe"], refuse).output().unwrap();
        assert!(out.status.success());
        let probe = String::from_utf8_lossy(&out.stdout);
        assert!(
            probe
                .lines()
                .any(|l| l.starts_with("auto picks") && l.ends_with(picks)),
            "{refuse:?}: {probe}"
        );
        assert!(
            probe.contains("EPERM, refused by a seccomp profile"),
            "{probe}"
        );

        let mut child = oneloop(
            &[
                "serve",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--threads",
                "1",
            ],
            refuse,
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
        let mut banner = String::new();
        let mut stdout = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while !banner.ends_with('\n') {
            assert_eq!(stdout.read(&mut byte).unwrap(), 1, "serve exited: {banner}");
            banner.push(byte[0] as char);
        }
        assert!(banner.contains(&format!("backend {picks}")), "{banner}");
        assert!(
            banner.contains("uring not used: io_uring_setup: EPERM, refused by a seccomp"),
            "the banner says why: {banner}"
        );
        let port: u16 = banner
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {banner:?}"));
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let r = agent
            .get(&format!("http://127.0.0.1:{port}/f.bin"))
            .call()
            .unwrap();
        let mut got = Vec::new();
        r.into_reader().read_to_end(&mut got).unwrap();
        assert!(got == body, "{picks}: the file's bytes");
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("PASS {refuse:?}: probe and serve chose {picks} and said why");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
