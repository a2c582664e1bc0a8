//! petrel's MRT printer beside bgpdump's, for the suites that diff them.

use anyhow::{bail, Context, Result};
use petrel_bgp::mrt::{bgpdump, open, MrtError, PeerIndexTable, Record};
use std::path::Path;
use std::process::Command;

/// A whole dump as petrel prints it in `bgpdump -m` format (as `petrelctl
/// mrt dump` does); a truncated stream ends the output, as it ends
/// bgpdump's.
pub fn petrel_lines(path: &Path) -> Result<Vec<String>> {
    let mut peers: Option<PeerIndexTable> = None;
    let mut text = String::new();
    for item in open(path)? {
        let raw = match item {
            Ok(r) => r,
            Err(MrtError::Truncated { .. } | MrtError::Io { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        match Record::parse(&raw).with_context(|| path.display().to_string())? {
            Record::PeerIndexTable(t) => peers = Some(t),
            rec => bgpdump::format_record(&raw, &rec, peers.as_ref(), &mut text),
        }
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// `bgpdump -m FILE`, one line per route.
pub fn bgpdump_lines(path: &Path) -> Result<Vec<String>> {
    let out = Command::new("bgpdump")
        .arg("-m")
        .arg(path)
        .output()
        .context("running bgpdump (Debian package bgpdump)")?;
    if !out.status.success() {
        bail!(
            "bgpdump -m {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_string)
        .collect())
}

/// The first line where two outputs differ (1-based), shown side by side,
/// or their different lengths; `None` when they are equal.
pub fn first_difference(petrel: &[String], bgpdump: &[String]) -> Option<String> {
    if let Some(i) = petrel.iter().zip(bgpdump).position(|(a, b)| a != b) {
        return Some(format!(
            "line {}:\n petrel:   {}\n bgpdump:  {}",
            i + 1,
            petrel[i],
            bgpdump[i]
        ));
    }
    (petrel.len() != bgpdump.len()).then(|| {
        format!(
            "petrel printed {} lines, bgpdump {}",
            petrel.len(),
            bgpdump.len()
        )
    })
}
