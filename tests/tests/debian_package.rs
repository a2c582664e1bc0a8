//! The Debian package (issue 16 §3): `.ci/package` builds it from the
//! release binaries; lintian finds no error in it; `apt-get install` of the
//! file installs it (binaries, CNI plugins in /usr/lib/cni linked into
//! /opt/cni/bin, the unit, the commented configuration, the `petrel`
//! system user); systemd-analyze accepts the installed unit; the packaged
//! petreld runs as the `petrel` user with only the unit's two ambient
//! capabilities (BGP on port 179, its kernel routes); `apt-get purge`
//! leaves nothing of it behind.
//!
//! It installs a package on this machine, so it runs only in CI
//! (`CI=true`) or when asked (`PETREL_TEST_PACKAGE=1`); there, a missing
//! tool or root is a failure. Needs dpkg-deb, lintian, apt-get,
//! systemd-analyze, setpriv and the workspace's release binaries.

use anyhow::{bail, ensure, Context, Result};
use petrel_tests::lab::{require_lab, wait_until, Daemon, Lab};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))
}

fn ok(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let o = run(program, args, env)?;
    if !o.status.success() {
        bail!(
            "{program} {args:?}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

const APT_ENV: &[(&str, &str)] = &[("DEBIAN_FRONTEND", "noninteractive")];

#[test]
fn debian_package_installs_runs_and_purges() -> Result<()> {
    let asked = std::env::var_os("CI").is_some_and(|v| v == "true")
        || std::env::var_os("PETREL_TEST_PACKAGE").is_some();
    if !asked {
        eprintln!("skipped: installs a package on this machine; set PETREL_TEST_PACKAGE=1");
        return Ok(());
    }
    if !require_lab(&[
        "dpkg-deb",
        "dpkg-shlibdeps",
        "lintian",
        "apt-get",
        "systemd-analyze",
        "setpriv",
    ]) || !petrel_tests::have_bin("petreld")
    {
        return Ok(());
    }
    // The release binaries the suite runs with are the package's.
    let release = petrel_tests::bin("petreld")?
        .parent()
        .map(Path::to_path_buf)
        .context("petreld's directory")?;
    let target = release.parent().context("the target directory")?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let deb = ok(
        "bash",
        &[&repo.join(".ci/package").to_string_lossy()],
        &[
            ("PETREL_PACKAGE_NO_BUILD", "1"),
            ("CARGO_TARGET_DIR", &target.to_string_lossy()),
        ],
    )?;
    let deb = PathBuf::from(deb.trim());
    ensure!(deb.is_file(), "no package at {}", deb.display());
    ensure!(
        deb.starts_with(target.join("debian")),
        "{} not under target/debian",
        deb.display()
    );

    // lintian: no error (warnings and notes are reported, not failed on).
    let l = run(
        "lintian",
        &["--tag-display-limit", "0", &deb.to_string_lossy()],
        &[],
    )?;
    let report = String::from_utf8_lossy(&l.stdout).into_owned();
    eprintln!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    ensure!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));

    let _ = run("dpkg", &["--purge", "petrel"], APT_ENV);
    let result = installed_checks(&deb);
    let purge = ok("apt-get", &["purge", "-y", "petrel"], APT_ENV);
    result?;
    purge?;
    // Nothing left: the package, its files, its links, its state.
    let s = run("dpkg", &["-s", "petrel"], &[])?;
    ensure!(
        !s.status.success() || String::from_utf8_lossy(&s.stdout).contains("not-installed"),
        "petrel still installed: {}",
        String::from_utf8_lossy(&s.stdout)
    );
    for p in [
        "/usr/bin/petreld",
        "/usr/lib/cni/petrel-ipam",
        "/opt/cni/bin/petrel-ipam",
        "/lib/systemd/system/petreld.service",
        "/etc/petrel/petreld.toml",
        "/etc/iproute2/rt_protos.d/petrel.conf",
        "/var/lib/petrel",
    ] {
        ensure!(
            std::fs::symlink_metadata(p).is_err(),
            "{p} left after purge"
        );
    }
    Ok(())
}

fn installed_checks(deb: &Path) -> Result<()> {
    ok(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            &deb.to_string_lossy(),
        ],
        APT_ENV,
    )?;
    let files = ok("dpkg", &["-L", "petrel"], &[])?;
    for f in [
        "/usr/bin/petreld",
        "/usr/bin/petrelctl",
        "/usr/bin/petrel-controller",
        "/usr/lib/cni/petrel-ipam",
        "/usr/lib/cni/petrel-ipam-direct",
        "/lib/systemd/system/petreld.service",
        "/etc/petrel/petreld.toml",
        "/usr/share/man/man8/petreld.8.gz",
    ] {
        ensure!(
            files.lines().any(|l| l == f),
            "{f} not in the package:\n{files}"
        );
    }
    // Where kubelet looks, linked to the packaged plugin.
    let link = std::fs::read_link("/opt/cni/bin/petrel-ipam")?;
    ensure!(link == Path::new("/usr/lib/cni/petrel-ipam"), "{link:?}");
    ensure!(
        std::fs::read_to_string("/etc/iproute2/rt_protos.d/petrel.conf")?.contains("202\tpetrel")
    );
    ok("getent", &["passwd", "petrel"], &[])?;

    // The installed unit, as systemd reads it: no warning at all.
    let v = run(
        "systemd-analyze",
        &["verify", "/lib/systemd/system/petreld.service"],
        &[],
    )?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    ensure!(
        v.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let unit = std::fs::read_to_string("/lib/systemd/system/petreld.service")?;
    ensure!(unit.contains("\nUser=petrel\n"), "{unit}");

    // The commented configuration names what is missing.
    let c = run(
        "/usr/bin/petreld",
        &["--check", "--config", "/etc/petrel/petreld.toml"],
        &[],
    )?;
    let err = String::from_utf8_lossy(&c.stderr);
    ensure!(
        !c.status.success() && err.contains("/etc/petrel/petreld.toml") && err.contains("node"),
        "{err}"
    );

    // The packaged petreld as the unit runs it: user petrel, no root, only
    // CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (ambient), in a namespace of
    // its own. It binds port 179, and sweeps a route of its protocol left
    // by "a previous run" (a netlink delete: CAP_NET_ADMIN).
    let lab = Lab::new("debpkg")?;
    let ns = lab.netns("node")?;
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])?;
    ns.ip(&["addr", "add", "10.123.0.1/24", "dev", "d0"])?;
    ns.ip(&["link", "set", "d0", "up"])?;
    ns.ip(&["link", "set", "d1", "up"])?;
    ns.ip(&["route", "add", "10.125.0.0/24", "dev", "d0", "proto", "202"])?;
    let dir = lab.subdir("petreld")?;
    ok("chown", &["petrel:petrel", &dir.to_string_lossy()], &[])?;
    let sock = dir.join("petreld.sock");
    let config = dir.join("petreld.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"pkg-node\"\naddresses = [\"10.123.0.1/24\"]\n\
             [control]\nsocket = \"{}\"\n\
             [bgp]\nlisten = [\"10.123.0.1:179\"]\n\
             [mtu]\nfile = \"{}\"\n\
             [metrics]\nenabled = false\n",
            sock.display(),
            dir.join("pod-mtu").display()
        ),
    )?;
    ok(
        "/usr/bin/petreld",
        &["--check", "--config", &config.to_string_lossy()],
        &[],
    )?;
    let caps = "+net_admin,+net_bind_service";
    let d = Daemon::spawn(
        &lab,
        &ns,
        "petreld-as-petrel",
        &dir.join("petreld.log"),
        "setpriv",
        &[
            "--reuid=petrel",
            "--regid=petrel",
            "--init-groups",
            &format!("--inh-caps=-all,{caps}"),
            &format!("--ambient-caps=-all,{caps}"),
            &format!("--bounding-set=-all,{caps}"),
            "/usr/bin/petreld",
            "--config",
            &config.to_string_lossy(),
        ],
        &[],
    )?;
    let sock_s = sock.to_string_lossy().into_owned();
    wait_until("the packaged petreld to answer as petrel", &[&d], || {
        let o = run("/usr/bin/petrelctl", &["--socket", &sock_s, "status"], &[])?;
        Ok(o.status.success().then_some(()))
    })?;
    // Its uid is petrel's, its effective capabilities the two.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))?;
    let uid = ok("id", &["-u", "petrel"], &[])?;
    ensure!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(uid.trim())),
        "{status}"
    );
    let listening = ns.exec("ss", &["-Htln", "sport = :179"])?;
    ensure!(listening.contains("10.123.0.1:179"), "{listening}");
    wait_until("the stale route of protocol 202 swept", &[&d], || {
        let r = ns.ip(&["route", "show", "10.125.0.0/24"])?;
        Ok(r.trim().is_empty().then_some(()))
    })?;
    d.stop()?;
    Ok(())
}
