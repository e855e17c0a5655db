//! `oneloop probe`: the library's probe report as a table or as JSON.

use std::io::Write;

use oneloop::probe::{probe, Feature, ProbeReport};
use serde_json::{json, Value};

/// Prints the report.
pub fn run(as_json: bool) -> anyhow::Result<()> {
    let report = probe();
    let mut out = std::io::stdout().lock();
    if as_json {
        serde_json::to_writer_pretty(&mut out, &to_json(&report))?;
        writeln!(out)?;
    } else {
        write_table(&mut out, &report)?;
    }
    Ok(())
}

fn to_json(r: &ProbeReport) -> Value {
    let backends: Vec<Value> = r
        .backends
        .iter()
        .map(|b| {
            json!({
                "backend": b.backend.name(),
                "usable": b.status.is_ok(),
                "detail": match &b.status { Ok(d) => d, Err(e) => e },
                "features": b.features.iter().map(|f| json!({
                    "name": f.name, "available": f.available, "note": f.note,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "kernel": r.kernel,
        "io_uring_disabled": r.io_uring_disabled,
        "aio_max_nr": r.aio_max_nr,
        "aio_nr": r.aio_nr,
        "memlock_bytes": r.memlock_bytes.map(|(soft, hard)| json!({"soft": soft, "hard": hard})),
        "auto": match &r.auto { Ok(k) => json!(k.name()), Err(e) => json!({"error": e}) },
        "backends": backends,
    })
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "unreadable".into(), |v| v.to_string())
}

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        format!("{} KiB", v / 1024)
    }
}

fn write_table(out: &mut impl Write, r: &ProbeReport) -> std::io::Result<()> {
    writeln!(out, "kernel              {}", r.kernel)?;
    writeln!(out, "io_uring_disabled   {}", opt(r.io_uring_disabled))?;
    writeln!(
        out,
        "aio-nr / aio-max-nr {} / {}",
        opt(r.aio_nr),
        opt(r.aio_max_nr)
    )?;
    let memlock = r.memlock_bytes.map_or("unreadable".into(), |(s, h)| {
        format!("{} (hard {})", limit(s), limit(h))
    });
    writeln!(out, "memlock             {memlock}")?;
    match &r.auto {
        Ok(k) => writeln!(out, "auto picks          {k}")?,
        Err(e) => writeln!(out, "auto picks          nothing: {e}")?,
    }
    writeln!(out)?;
    writeln!(out, "{:<8} {:<7} detail", "backend", "usable")?;
    for b in &r.backends {
        let (usable, detail) = match &b.status {
            Ok(d) => ("yes", d.as_str()),
            Err(e) => ("no", e.as_str()),
        };
        writeln!(out, "{:<8} {:<7} {detail}", b.backend.name(), usable)?;
        let (have, lack): (Vec<_>, Vec<_>) = b.features.iter().partition(|f| f.available);
        let (noted, plain): (Vec<&Feature>, Vec<&Feature>) =
            have.iter().partition(|f| !f.note.is_empty());
        if !plain.is_empty() {
            let names: Vec<&str> = plain.iter().map(|f| f.name.as_str()).collect();
            writeln!(out, "{:<16} has: {}", "", names.join(" "))?;
        }
        for f in noted {
            writeln!(out, "{:<16} has {}: {}", "", f.name, f.note)?;
        }
        for f in lack {
            writeln!(out, "{:<16} lacks {}: {}", "", f.name, f.note)?;
        }
    }
    Ok(())
}
