//! The workspace's stated `rust-version` is checked, not just claimed: the libraries (with
//! every feature) and the binary build with that toolchain. The toolchain is installed with
//! `rustup` when it is missing; without `rustup`, or when the install fails (no network),
//! the test prints SKIP with the reason. (Tests and dev-dependencies are not covered: some
//! dev-dependencies, e.g. loom's, need a newer compiler.)
#![allow(missing_docs)]

use std::path::Path;
use std::process::Command;

fn rust_version(workspace: &Path) -> String {
    let manifest = std::fs::read_to_string(workspace.join("Cargo.toml")).unwrap();
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("the workspace states a rust-version")
}

#[test]
fn the_stated_rust_version_builds_the_crates() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let version = rust_version(&workspace);
    let toolchain = format!("+{version}");
    let have = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output();
    if have(&["rustup", "--version"]).is_err() {
        eprintln!("SKIP msrv {version}: rustup is not installed");
        return;
    }
    let installed = have(&["cargo", &toolchain, "--version"]).is_ok_and(|o| o.status.success());
    if !installed {
        let out = have(&[
            "rustup",
            "toolchain",
            "install",
            &version,
            "--profile",
            "minimal",
        ])
        .unwrap();
        if !out.status.success() {
            eprintln!(
                "SKIP msrv {version}: cannot install the toolchain: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            return;
        }
    }
    let target = std::env::temp_dir().join("oneloop-msrv-target");
    for args in [
        &[
            "check",
            "-p",
            "oneloop",
            "-p",
            "oneloop-rt",
            "--all-features",
            "--lib",
        ][..],
        &["check", "-p", "oneloop-cli", "--bin", "oneloop"][..],
    ] {
        let out = Command::new("cargo")
            .arg(&toolchain)
            .args(args)
            .current_dir(&workspace)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {toolchain} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("PASS msrv {version}: libraries (all features) and the binary build");
}

/// The two library crates package as crates.io would take them (`cargo package`, which also
/// builds each from its packaged sources). SKIP when the crates.io index cannot be reached.
#[test]
fn the_libraries_package() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // A target directory of this run's own: cargo caches what it unpacks from the packaging
    // registry by that registry's path, and an older package of the same version would be
    // built instead of this one. The process id alone is not enough: a later run that gets
    // the same id found the cache of an earlier one (oneloop-rt then failed to build against
    // an old oneloop's sources).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let target =
        std::env::temp_dir().join(format!("oneloop-package-{}-{nanos}", std::process::id()));
    let out = Command::new(env!("CARGO"))
        .args([
            "package",
            "-p",
            "oneloop",
            "-p",
            "oneloop-rt",
            "--allow-dirty",
        ])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("failed to get") && stderr.contains("index") {
        eprintln!("SKIP package: the crates.io index is not reachable");
        return;
    }
    let _ = std::fs::remove_dir_all(&target);
    assert!(out.status.success(), "cargo package: {stderr}");
    assert!(stderr.contains("Verifying oneloop-rt"), "{stderr}");
    eprintln!("PASS package: oneloop and oneloop-rt package and build from their sources");
}
