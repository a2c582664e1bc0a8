//! Shared helpers for petrel's integration suites and benchmark binaries.
//!
//! Suites that need something the machine may lack (the real data in
//! `../shared/data`, root, network namespaces, a daemon binary) call
//! [`require`]: outside CI a missing capability skips the test with a printed
//! reason; with `CI=true` it fails, so CI never passes by not running.

use std::path::PathBuf;

/// Whether we run under CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Returns `true` when the test may proceed. When `ok` is false: panics in
/// CI, prints the reason and returns `false` elsewhere.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("required for this test and missing in CI: {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}

/// The real BGP data folder: `$PETREL_DATA`, or `../shared/data` beside the
/// workspace.
pub fn data_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PETREL_DATA") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// The data folder if present (see [`require`]).
pub fn data() -> Option<PathBuf> {
    let d = data_dir();
    require(
        d.join("SHA256SUMS").exists(),
        &format!("real BGP data at {}", d.display()),
    )
    .then_some(d)
}

/// Decodes a hex string.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

pub mod lab;
pub mod mrt;

/// A binary of the workspace (`petreld`, `petrelctl`): in `$PETREL_BIN_DIR`
/// when set, else beside the test binary's `deps/` folder
/// (`target/<profile>/NAME`). Errors say how to build it.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("PETREL_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()?;
            let mut d = exe.parent().map(PathBuf::from).unwrap_or_default();
            if d.file_name().is_some_and(|n| n == "deps") {
                d.pop();
            }
            d
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{name} not found at {}: build it first (cargo build -p petrel-daemon --bins, \
             same profile and CARGO_TARGET_DIR as the tests) or set PETREL_BIN_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// Whether a workspace binary is there (see [`bin`], [`require`]).
pub fn have_bin(name: &str) -> bool {
    match bin(name) {
        Ok(_) => true,
        Err(e) => require(false, &e.to_string()),
    }
}
