//! `oneloop bench all` for a fraction of a second per measurement: every workload runs on every
//! usable backend, and every row counted work on both sides. (Figures are never asserted.)
#![allow(missing_docs)]

use std::process::Command;

#[test]
fn bench_all_counts_work_on_every_backend() {
    let out = Command::new(env!("CARGO_BIN_EXE_oneloop"))
        .args([
            "bench",
            "all",
            "--duration",
            "0.05",
            "--json",
            "--file-mib",
            "8",
            "--qd",
            "4",
        ])
        .args(["--conns", "2", "--pipes", "16", "--tokens", "4"])
        .output()
        .expect("run oneloop bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let rows = v["rows"].as_array().expect("rows");
    let usable: Vec<&str> = ["uring", "aio", "epoll"]
        .into_iter()
        .filter(|b| {
            oneloop::Ring::builder()
                .backend(b.parse().unwrap())
                .entries(8)
                .build()
                .is_ok()
        })
        .collect();
    // nop runs two batch sizes; the others one setting each here; uring's randread has a
    // second row against a raw io-uring loop, and so have its echo and pipes where the kernel
    // has buffer rings and multishot receives (the bench says SKIP otherwise, for both).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let echo_raw_skipped = stderr.contains("SKIP echo 2 conns vs raw uring");
    assert_eq!(
        echo_raw_skipped,
        stderr.contains("SKIP pipes vs raw uring"),
        "echo and pipes skip their raw rows for the same reason"
    );
    let uring = usable.contains(&"uring");
    let expected = usable.len() * 6 + usize::from(uring) * (3 - 2 * usize::from(echo_raw_skipped));
    assert_eq!(rows.len(), expected, "{rows:#?}");
    if uring && !echo_raw_skipped {
        assert!(
            rows.iter().any(|r| r["workload"] == "echo"
                && r["params"].as_str().unwrap().ends_with("vs raw")
                && r["baseline"]["name"]
                    .as_str()
                    .unwrap()
                    .contains("buffer ring")),
            "echo lacks its raw io-uring row"
        );
        assert!(
            rows.iter()
                .any(|r| r["workload"] == "pipes"
                    && r["params"].as_str().unwrap().ends_with("vs raw")),
            "pipes lacks its raw io-uring row"
        );
    }
    if usable.contains(&"uring") {
        assert!(
            rows.iter().any(|r| r["workload"] == "randread"
                && r["baseline"]["name"]
                    .as_str()
                    .unwrap()
                    .contains("raw io-uring")),
            "randread lacks its raw io-uring row"
        );
    }
    for row in rows {
        for side in [&row["ours"], &row["baseline"]["measured"]] {
            assert!(side["ops"].as_u64().unwrap() > 0, "no work counted: {row}");
            assert!(side["secs"].as_f64().unwrap() > 0.0);
            assert!(side["cpu_secs_per_million_ops"].as_f64().is_some());
        }
        assert!(row["ratio"].as_f64().unwrap() > 0.0);
        assert!(!row["baseline"]["name"].as_str().unwrap().is_empty());
    }
    for w in ["nop", "pipes", "randread", "echo", "mixed"] {
        assert!(rows.iter().any(|r| r["workload"] == w), "{w} missing");
    }
    assert!(v["params"]["qd"].is_array());
}
