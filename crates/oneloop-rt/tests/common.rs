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
        if let Err(e) = oneloop::Ring::builder().backend(kind).entries(4).build() {
            eprintln!("SKIP {kind} {name}: backend unavailable here: {e}");
            continue;
        }
        let rt = Runtime::builder().backend(kind).build();
        rt.block_on(body(kind))
            .unwrap_or_else(|e| panic!("{kind} {name}: the runtime failed: {e}"));
        eprintln!("PASS {kind} {name}");
    }
}
