//! `oneloop probe` as a user runs it: the table, and JSON that parses and says the same.
#![allow(missing_docs)]

use std::process::Command;

fn oneloop(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_oneloop"))
        .args(args)
        .output()
        .expect("run oneloop");
    assert!(
        out.status.success(),
        "oneloop {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn probe_table_lists_every_backend() {
    let table = oneloop(&["probe"]);
    for backend in ["uring", "aio", "epoll"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{backend} ")))
            .unwrap_or_else(|| panic!("no {backend} row:\n{table}"));
        assert!(
            row.contains(" yes ") || row.contains(" no "),
            "row without a verdict: {row}"
        );
    }
    assert!(table.contains("kernel"), "{table}");
}

#[test]
fn probe_json_is_valid_and_complete() {
    let text = oneloop(&["probe", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let backends = v["backends"].as_array().expect("backends array");
    let names: Vec<&str> = backends
        .iter()
        .map(|b| b["backend"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["uring", "aio", "epoll"]);
    for b in backends {
        assert!(b["usable"].is_boolean());
        assert!(
            !b["detail"].as_str().unwrap().is_empty(),
            "a backend without a reason: {b}"
        );
        assert!(b["features"].as_array().is_some_and(|f| !f.is_empty()));
    }
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()));
}
