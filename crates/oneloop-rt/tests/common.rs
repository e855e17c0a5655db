//! Shared by the runtime's tests: run a body on every backend this machine (and
//! `ONELOOP_BACKEND`) allows, saying SKIP with the reason for the others.
#![allow(dead_code)]

use std::future::Future;

use oneloop::BackendKind;
use oneloop_rt::Runtime;

/// Runs `body()` inside `block_on` once per usable backend.
pub fn on_every_backend<F, Fut>(name: &str, body: F)
where
    F: Fn(BackendKind) -> Fut,
    Fut: Future<Output = ()>,
{
    let forced = BackendKind::from_env().expect("ONELOOP_BACKEND");
    for kind in BackendKind::ALL {
        if matches!(forced, Some(f) if f != kind && f != BackendKind::Auto) {
            continue;
        }
        if !usable(kind, name) {
            continue;
        }
        let rt = Runtime::builder().backend(kind).build();
        rt.block_on(body(kind))
            .unwrap_or_else(|e| panic!("{kind} {name}: the runtime failed: {e}"));
        eprintln!("PASS {kind} {name}");
        if kind == BackendKind::Uring {
            // Both read paths: fed by a multishot receive (the default), and the readiness
            // way the other backends take.
            let rt = Runtime::builder().backend(kind).recv_buffers(None).build();
            rt.block_on(body(kind)).unwrap_or_else(|e| {
                panic!("{kind} (reads not fed) {name}: the runtime failed: {e}")
            });
            eprintln!("PASS {kind} (reads not fed) {name}");
        }
    }
}

/// Whether a ring of `kind` can be built here; says SKIP for `name` with the reason if not.
pub fn usable(kind: BackendKind, name: &str) -> bool {
    match oneloop::Ring::builder().backend(kind).entries(4).build() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {kind} {name}: backend unavailable here: {e}");
            false
        }
    }
}

/// What one read of `peer` returns (a signal's `EINTR` is retried): `Ok(0)` at end of stream.
pub fn read_once(peer: &mut std::os::unix::net::UnixStream) -> Result<usize, std::io::ErrorKind> {
    use std::io::Read as _;
    let mut byte = [0u8; 1];
    loop {
        match peer.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.map_err(|e| e.kind()),
        }
    }
}
