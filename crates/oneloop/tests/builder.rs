//! Backend selection: `ONELOOP_BACKEND`, explicit choices, and the errors that name reasons.
//! One test, so that changing the environment races with nothing else in this binary.
#![allow(missing_docs)]

use std::io::ErrorKind;

use oneloop::{BackendKind, Ring};

fn with_env<T>(value: Option<&str>, f: impl FnOnce() -> T) -> T {
    let saved = std::env::var("ONELOOP_BACKEND").ok();
    match value {
        Some(v) => std::env::set_var("ONELOOP_BACKEND", v),
        None => std::env::remove_var("ONELOOP_BACKEND"),
    }
    let out = f();
    match saved {
        Some(v) => std::env::set_var("ONELOOP_BACKEND", v),
        None => std::env::remove_var("ONELOOP_BACKEND"),
    }
    out
}

#[test]
fn backend_selection() {
    let err = with_env(Some("bogus"), Ring::new).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("bogus"), "{err}");

    for kind in BackendKind::ALL {
        let forced = with_env(Some(kind.name()), Ring::new);
        let explicit = Ring::builder().backend(kind).build();
        match (forced, explicit) {
            (Ok(a), Ok(b)) => {
                assert_eq!((a.backend(), b.backend()), (kind, kind));
                assert!(a.skipped().is_empty(), "a forced backend skips nothing");
            }
            (Err(a), Err(b)) => {
                // Unusable here: both say so, and the reason names the backend.
                assert_eq!(a.to_string(), b.to_string());
                eprintln!("{kind} unusable here: {a}");
            }
            (a, b) => panic!("ONELOOP_BACKEND and the builder disagree on {kind}: {a:?} / {b:?}"),
        }
    }

    // An explicit choice is not overridden by the variable: only Auto is.
    let ring = with_env(Some("epoll"), || {
        Ring::builder().backend(BackendKind::Uring).build()
    });
    if let Ok(ring) = ring {
        assert_eq!(ring.backend(), BackendKind::Uring);
    }

    // Fallback: with uring made to fail (excluded), Auto moves on and says why.
    let ring = with_env(None, || Ring::builder().exclude(BackendKind::Uring).build()).unwrap();
    assert_ne!(ring.backend(), BackendKind::Uring);
    let skipped = ring.skipped();
    assert_eq!(skipped[0].backend, BackendKind::Uring);
    assert!(skipped[0].reason.contains("excluded"), "{skipped:?}");
    if ring.backend() == BackendKind::Epoll {
        assert_eq!(
            skipped.len(),
            2,
            "aio was tried, and its reason kept: {skipped:?}"
        );
        assert_eq!(skipped[1].backend, BackendKind::Aio);
        assert!(!skipped[1].reason.is_empty());
    }
    eprintln!(
        "with uring excluded: {} (skipped {skipped:?})",
        ring.describe()
    );
    // Excluding everything: the error names every backend.
    let none = with_env(None, || {
        let mut b = Ring::builder();
        for k in BackendKind::ALL {
            b = b.exclude(k);
        }
        b.build()
    });
    let e = none.unwrap_err();
    for kind in BackendKind::ALL {
        assert!(e.to_string().contains(&format!("{kind}: excluded")), "{e}");
    }

    // Auto picks the first usable backend and records why earlier ones were skipped.
    match with_env(None, Ring::new) {
        Ok(ring) => {
            let first = ring.backend();
            let position = BackendKind::ALL.iter().position(|k| *k == first).unwrap();
            assert_eq!(ring.skipped().len(), position, "{:?}", ring.skipped());
            for s in ring.skipped() {
                assert!(!s.reason.is_empty());
            }
        }
        Err(e) => {
            // No backend at all: the error names every one.
            for kind in BackendKind::ALL {
                assert!(e.to_string().contains(kind.name()), "{e}");
            }
        }
    }
}
