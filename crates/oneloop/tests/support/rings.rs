//! A ring on each backend that runs here; the others print `SKIP` with the reason.

use oneloop::{BackendKind, Ring, RingBuilder};

/// A ring per backend, built by `builder` (given the backend); a backend that cannot run here
/// prints `SKIP <backend>: <why>` and is passed over.
#[allow(dead_code)]
pub fn rings_with(
    builder: impl Fn(BackendKind) -> RingBuilder,
) -> impl Iterator<Item = (BackendKind, Ring)> {
    rings_of(BackendKind::ALL, builder)
}

/// [`rings_with`] over the backends in `kinds` only.
pub fn rings_of(
    kinds: impl IntoIterator<Item = BackendKind>,
    builder: impl Fn(BackendKind) -> RingBuilder,
) -> impl Iterator<Item = (BackendKind, Ring)> {
    kinds
        .into_iter()
        .filter_map(move |kind| match builder(kind).build() {
            Ok(ring) => Some((kind, ring)),
            Err(e) => {
                eprintln!("SKIP {kind}: {e}");
                None
            }
        })
}
