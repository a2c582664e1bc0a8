//! `petrelctl mrt` against the real dumps and against Debian's `bgpdump`,
//! run live: `petrelctl mrt dump FILE` must equal `bgpdump -m FILE` line for
//! line on every MRT file in ../shared/data (on the truncated ones, up to the
//! truncation), and `petrelctl mrt summary --json` must report no errors.

use petrel_tests::{data, require};
use std::process::Command;

const PETRELCTL: &str = env!("CARGO_BIN_EXE_petrelctl");

fn mrt_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("gz" | "bz2"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dump_equals_live_bgpdump() {
    let Some(dir) = data() else { return };
    let has_bgpdump = Command::new("bgpdump").arg("-h").output().is_ok();
    if !require(has_bgpdump, "the bgpdump binary (Debian package bgpdump)") {
        return;
    }
    let files = mrt_files(&dir);
    assert!(
        files.len() >= 7,
        "expected the seven MRT dumps, found {files:?}"
    );
    for f in files {
        let ours = Command::new(PETRELCTL)
            .args(["mrt", "dump"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            ours.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&ours.stderr)
        );
        let theirs = Command::new("bgpdump").arg("-m").arg(&f).output().unwrap();
        let (a, b) = (
            String::from_utf8(ours.stdout).unwrap(),
            String::from_utf8(theirs.stdout).unwrap(),
        );
        let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!(
                "{} line {}:\n petrelctl: {}\n bgpdump:   {}",
                f.display(),
                i + 1,
                a[i],
                b[i]
            );
        }
        assert_eq!(
            a.len(),
            b.len(),
            "{}: petrelctl {} lines, bgpdump {}",
            f.display(),
            a.len(),
            b.len()
        );
        // A truncated stream is reported on stderr, not fatal.
        if f.to_string_lossy().ends_with("firstMB.bz2") {
            assert!(
                String::from_utf8_lossy(&ours.stderr).contains("ends early"),
                "{}",
                f.display()
            );
        }
    }
}

#[test]
fn summary_json_reports_clean_decodes() {
    let Some(dir) = data() else { return };
    let files = mrt_files(&dir);
    let out = Command::new(PETRELCTL)
        .args(["mrt", "summary", "--json"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), files.len());
    for s in &lines {
        assert_eq!(s["errors"].as_object().unwrap().len(), 0, "{s}");
        assert!(s["records"].as_u64().unwrap() > 0);
    }
    let pch = lines
        .iter()
        .find(|s| s["file"].as_str().unwrap().starts_with("pch."))
        .unwrap();
    assert_eq!(pch["announced_ipv4"], 577_737);
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("petrel-mrt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.mrt");
    let out = Command::new(PETRELCTL)
        .args(["mrt", "summary"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.mrt"));
    // A record header promising more than the file holds: reported, not fatal.
    let short = dir.join("short.mrt");
    std::fs::write(&short, [0, 0, 0, 1, 0, 16, 0, 4, 0, 0, 0, 200, 1, 2, 3]).unwrap();
    let out = Command::new(PETRELCTL)
        .args(["mrt", "dump"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated record at offset 0"));
    std::fs::remove_dir_all(&dir).ok();
}
