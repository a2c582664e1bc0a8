//! The shipped systemd unit: `systemd-analyze verify` accepts it without a
//! single warning (it exits 0 on warnings, so its output is checked too),
//! and it grants petreld exactly the two capabilities it needs.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../dist/petreld.service");

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let have = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !petrel_tests::require(have, "systemd-analyze (Debian package systemd)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's binary exists: point it at this build.
    let unit = UNIT.replace("/usr/bin/petreld", env!("CARGO_BIN_EXE_petreld"));
    let path = dir.path().join("petreld.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&*path.to_string_lossy()) || l.contains("petreld.service"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze complains:\n{}",
        ours.join("\n")
    );
    assert!(Path::new(&path).exists());
}

#[test]
fn the_unit_grants_only_net_admin_and_bind_service() {
    let value = |key: &str| -> Vec<String> {
        UNIT.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect()
    };
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        assert_eq!(
            value(key),
            ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"],
            "{key}"
        );
    }
    for (key, want) in [
        ("Type", "notify"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(value(key), [want], "{key}");
    }
    assert!(!value("WatchdogSec").is_empty());
}
