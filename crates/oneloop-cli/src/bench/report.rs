//! Results: one row per workload, parameters and backend; a table, JSON, and an SVG plot.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::Sample;

/// One measurement: ours beside the baseline.
#[derive(Clone, Debug)]
pub struct Row {
    pub workload: &'static str,
    pub params: String,
    pub backend: &'static str,
    pub unit: &'static str,
    pub ours: Sample,
    pub baseline_name: &'static str,
    pub baseline: Sample,
}

impl Row {
    /// Ours ÷ baseline, by rate.
    pub fn ratio(&self) -> f64 {
        self.ours.rate() / self.baseline.rate().max(1e-9)
    }

    pub fn to_json(&self) -> Value {
        let side = |s: &Sample| {
            json!({
                "ops": s.ops, "secs": s.secs, "rate_per_sec": s.rate(), "cpu_secs": s.cpu_secs,
                "cpu_secs_per_million_ops": s.cpu_per_mop(), "latency_us_p99": s.p99_us,
                "latency_us_p50": s.p50_us,
            })
        };
        json!({
            "workload": self.workload, "params": self.params, "backend": self.backend,
            "unit": self.unit, "ours": side(&self.ours),
            "baseline": { "name": self.baseline_name, "measured": side(&self.baseline) },
            "ratio": self.ratio(),
        })
    }
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// The table printed at the end of a run.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<18} {:<7} {:>12} {:>12} {:>6}  {:>9} {:>9}  {:>9} {:>9}  baseline",
        "workload",
        "params",
        "backend",
        "ours",
        "baseline",
        "ratio",
        "cpu ours",
        "cpu base",
        "p99 ours",
        "p99 base"
    );
    let p99 = |s: &super::Sample| s.p99_us.map_or("-".to_string(), |v| format!("{v:.0} us"));
    for r in rows {
        let _ = writeln!(
            out,
            "{:<9} {:<18} {:<7} {:>10}/s {:>10}/s {:>6.2}  {:>9.3} {:>9.3}  {:>9} {:>9}  {}",
            r.workload,
            r.params,
            r.backend,
            human(r.ours.rate()),
            human(r.baseline.rate()),
            r.ratio(),
            r.ours.cpu_per_mop(),
            r.baseline.cpu_per_mop(),
            p99(&r.ours),
            p99(&r.baseline),
            r.baseline_name
        );
    }
    out.push_str("(rates per second: ops, token passes, reads or round trips; cpu = CPU seconds per million ops of the measured threads)
");
    // The kernel features each backend's rows ran with (a ring's own description).
    let mut seen: Vec<&str> = Vec::new();
    for r in rows {
        if seen.contains(&r.backend) {
            continue;
        }
        seen.push(r.backend);
        if let Ok(kind) = r.backend.parse::<oneloop::BackendKind>() {
            if let Ok(ring) = oneloop::Ring::builder().backend(kind).entries(8).build() {
                let _ = writeln!(out, "({} rows ran on: {})", r.backend, ring.describe());
            }
        }
    }
    out
}

/// A horizontal bar chart of ratios (ours ÷ baseline), one bar per row, with the 1.0 line.
pub fn svg(rows: &[Row]) -> String {
    let (w, bar, left) = (760.0, 22.0, 330.0);
    let h = 40.0 + bar * rows.len() as f64;
    let max = rows.iter().map(Row::ratio).fold(1.5f64, f64::max);
    let x = |r: f64| left + (w - left - 20.0) * r / max;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"monospace\" font-size=\"12\">\n");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"16\">oneloop ÷ baseline (same run)</text>"
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 28.0 + bar * i as f64;
        let fill = if r.ratio() >= 1.0 { "#3a7" } else { "#c63" };
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\">{} {} {}</text>",
            y + 14.0,
            r.workload,
            r.params,
            r.backend
        );
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{fill}\"/>",
            x(r.ratio()) - left,
            bar - 4.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{:.2}</text>",
            x(r.ratio()) + 4.0,
            y + 14.0,
            r.ratio()
        );
    }
    let one = x(1.0);
    let _ = writeln!(s, "<line x1=\"{one:.1}\" y1=\"24\" x2=\"{one:.1}\" y2=\"{h}\" stroke=\"#000\" stroke-dasharray=\"4\"/>");
    s.push_str("</svg>\n");
    s
}
