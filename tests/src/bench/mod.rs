//! petrel-bench's parts: tables and their UPDATEs, the injector and
//! monitor sessions, the FIB watcher, the DUTs, the kernel-limit writer,
//! and one run of each. See `src/bin/petrel-bench.rs` for the interface
//! and docs/benchmarks.md for results.

pub mod dut;
pub mod encode;
pub mod failover;
pub mod fibwatch;
pub mod kernel;
pub mod peer;
pub mod rr;
pub mod run;
pub mod scenario;
pub mod table;

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// Runs a program (stdin null); stdout, or an error with stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
