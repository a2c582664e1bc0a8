//! failover-bench: how long a dead node's routes stay in the lab, with
//! BFD and without (issue 15).
//!
//! ```text
//! failover-bench [--tor frr|bird] [--repeat K] [--failures sigstop,link-down|none]
//!                [--modes bfd,hold] [--hold-time S] [--kill9 K] [--json]
//! ```
//!
//! Each mode builds the three-node lab (`petrel_tests::lab::cluster`, as
//! `petrel-lab up`): `bfd` with BFD 300 ms × 3 on every session and a BGP
//! hold time of 90 s, `hold` without BFD and a hold time of `--hold-time`
//! (default 9 s, the lab's, on every session: the peers come from
//! petreld.toml in this mode, as the datastore's mesh has no hold time to
//! set). Per failure and repetition, node1 is made
//! dead (its petreld SIGSTOPped, or its uplink down); `ip monitor route`
//! in the ToR's and the other nodes' namespaces stamps the deletion of
//! node1's blocks (both families) as the kernel reports it; the time is
//! from the failure to the last block gone, per place and over all. The
//! failure is undone and the lab converges again before the next run.
//! Each failure type gets a fresh lab: every session a failure ends
//! doubles the idle hold of both its ends (RFC 4271 §8.1.1
//! DampPeerOscillations, 1 s up to 120 s; an Idle session refuses
//! connections meanwhile), so ten failures in a row on one lab would wait
//! two minutes to reconnect. Recovery time is not measured.
//!
//! `--kill9 K` (in `bfd` mode): K times, petreld of node1 killed with
//! SIGKILL, left dead 3 s (beyond BFD's 900 ms), restarted; a continuous
//! ping (every 100 ms) from node2's pod and from the ToR to node1's pod,
//! each family, counts what was lost until the lab has converged again.
//! Needs root.

use anyhow::{bail, Context, Result};
use petrel_tests::lab::cluster::{Cluster, Options, Peering};
use petrel_tests::lab::failover::{victim_routes, Failure, Pinger, RouteMonitor};
use petrel_tests::lab::topo::Kind;
use petrel_tests::lab::{require_lab, wait_until, Lab};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const VICTIM: usize = 0;
const BFD_HOLD: u16 = 90;

struct Args {
    tor: Kind,
    repeat: usize,
    failures: Vec<Failure>,
    modes: Vec<String>,
    hold_time: u16,
    kill9: usize,
    json: bool,
}

const USAGE: &str =
    "usage: failover-bench [--tor frr|bird] [--repeat K] [--failures sigstop,link-down|none] \
                     [--modes bfd,hold] [--hold-time S] [--kill9 K] [--json]";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        tor: Kind::Frr,
        repeat: 5,
        failures: vec![Failure::Stop, Failure::LinkDown],
        modes: vec!["bfd".into(), "hold".into()],
        hold_time: 9,
        kill9: 5,
        json: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--tor" => {
                a.tor = match val()?.as_str() {
                    "frr" => Kind::Frr,
                    "bird" => Kind::Bird,
                    o => bail!("--tor frr|bird, not {o}"),
                }
            }
            "--repeat" => a.repeat = val()?.parse()?,
            "--failures" => {
                a.failures = val()?
                    .split(',')
                    .filter(|f| *f != "none")
                    .map(|f| match f {
                        "sigstop" => Ok(Failure::Stop),
                        "link-down" => Ok(Failure::LinkDown),
                        o => bail!("failure sigstop|link-down, not {o}"),
                    })
                    .collect::<Result<_>>()?
            }
            "--modes" => {
                a.modes = val()?.split(',').map(str::to_string).collect();
                if let Some(m) = a
                    .modes
                    .iter()
                    .find(|m| !matches!(m.as_str(), "bfd" | "hold"))
                {
                    bail!("mode bfd|hold, not {m}");
                }
            }
            "--hold-time" => a.hold_time = val()?.parse()?,
            "--kill9" => a.kill9 = val()?.parse()?,
            "--json" => a.json = true,
            _ => bail!("{USAGE}"),
        }
    }
    if a.repeat == 0 {
        bail!("--repeat needs at least 1");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let mut programs = vec!["etcd", "etcdctl", "ping", "/usr/lib/cni/bridge"];
    programs.extend(a.tor.programs());
    if a.tor == Kind::Frr {
        programs.push("/usr/lib/frr/bfdd");
    }
    if !require_lab(&programs) {
        bail!("this machine cannot run the lab");
    }
    if std::env::var_os("PETREL_BIN_DIR").is_none() {
        if let Some(dir) = std::env::current_exe()?.parent() {
            std::env::set_var("PETREL_BIN_DIR", dir);
        }
    }
    if std::env::var_os("PETREL_LAB_DEADLINE").is_none() {
        // Room for the damped idle hold of the last runs (see above).
        std::env::set_var("PETREL_LAB_DEADLINE", "180");
    }
    let mut modes = serde_json::Map::new();
    for mode in &a.modes {
        let bfd = mode == "bfd";
        let options = Options {
            tor: a.tor,
            bfd,
            hold_time: if bfd { BFD_HOLD } else { a.hold_time },
            // Without BFD the peers come from petreld.toml, so that the
            // hold time applies to the mesh too (the datastore's mesh has
            // none to set: 90 s).
            peering: if bfd {
                Peering::Datastore
            } else {
                Peering::File
            },
            restart_time: 30,
            log_filter: "warn".into(),
            ..Options::default()
        };
        let hold = options.hold_time;
        let mut m = json!({ "bfd": bfd, "hold_time_seconds": hold });
        for f in &a.failures {
            eprintln!(
                "failover-bench: {mode} (hold time {hold} s), {}: a fresh lab",
                f.name()
            );
            let c = Cluster::up(Lab::new(&format!("fo-{mode}"))?, options.clone())?;
            let runs = (0..a.repeat)
                .map(|i| {
                    let r = failure_run(&c, *f, Duration::from_secs(u64::from(hold) + 30));
                    if let Ok(r) = &r {
                        eprintln!("{mode} {} #{}: {r}", f.name(), i + 1);
                    }
                    r
                })
                .collect::<Result<Vec<_>>>()?;
            m[f.name()] = summarize(runs);
        }
        if bfd && a.kill9 > 0 {
            eprintln!("failover-bench: {mode}, kill -9: a fresh lab");
            let mut c = Cluster::up(Lab::new(&format!("fo-{mode}"))?, options.clone())?;
            let runs = (0..a.kill9)
                .map(|i| {
                    let r = kill9_run(&mut c);
                    if let Ok(r) = &r {
                        eprintln!("{mode} kill-9 #{}: {r}", i + 1);
                    }
                    r
                })
                .collect::<Result<Vec<_>>>()?;
            m["kill9_restart"] = json!(runs);
        }
        modes.insert(mode.clone(), m);
    }
    let out = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "tor": format!("{:?}", a.tor),
        "machine": machine(),
        "modes": modes,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&out));
    }
    Ok(())
}

/// One failure of node1: milliseconds from the failure to its last block
/// deleted from each place's FIB.
fn failure_run(c: &Cluster, f: Failure, limit: Duration) -> Result<Value> {
    c.wait_converged()?;
    let v = &c.nodes[VICTIM];
    let mut places = vec![("tor".to_string(), RouteMonitor::start(&c.tor_ns)?)];
    for n in c.nodes.iter().filter(|n| n.name != v.name) {
        places.push((n.name.clone(), RouteMonitor::start(&n.ns)?));
    }
    let blocks: Vec<String> = v.blocks().iter().map(|(b, _)| b.to_string()).collect();
    let t0 = Instant::now();
    f.apply(c, VICTIM)?;
    let gone = wait_gone(c, limit);
    f.undo(c, VICTIM)?;
    gone?;
    let mut r = json!({});
    let mut all: f64 = 0.0;
    for (name, mon) in &places {
        let mut worst: f64 = 0.0;
        for b in &blocks {
            let t = mon
                .deleted(b)
                .with_context(|| format!("{name}: no deletion of {b} seen"))?;
            worst = worst.max(t.saturating_duration_since(t0).as_secs_f64() * 1e3);
        }
        r[name] = json!(worst.round());
        all = all.max(worst);
    }
    r["all"] = json!(all.round());
    Ok(r)
}

fn wait_gone(c: &Cluster, limit: Duration) -> Result<()> {
    let t = Instant::now();
    while !victim_routes(c, VICTIM)?.is_empty() {
        if t.elapsed() > limit {
            bail!("node1's blocks still in {:?}", victim_routes(c, VICTIM)?);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// kill -9 of node1's petreld, 3 s dead, restart: pings lost per pinger.
fn kill9_run(c: &mut Cluster) -> Result<Value> {
    c.wait_converged()?;
    let dsts: Vec<String> = c.nodes[VICTIM].pods[0]
        .addresses()
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut pingers = Vec::new();
    for d in &dsts {
        pingers.push(("node2-pod", Pinger::start(&c.nodes[1].pods[0].ns, d)?));
        pingers.push(("tor", Pinger::start(&c.tor_ns, d)?));
    }
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    c.nodes[VICTIM].petreld.kill9();
    std::thread::sleep(Duration::from_secs(3));
    {
        let Cluster { nodes, lab, .. } = &mut *c;
        nodes[VICTIM].petreld.restart(lab)?;
    }
    let daemons = c.daemons();
    wait_until("the lab converged after the restart", &daemons, || {
        Ok((c.sessions_down()?.is_empty()
            && c.missing_routes()?.is_empty()
            && c.bfd_down()?.is_empty())
        .then_some(()))
    })?;
    let back = t0.elapsed().as_secs_f64();
    let mut r = json!({ "converged_after_seconds": (back * 10.0).round() / 10.0 });
    for (from, p) in pingers {
        let dst = p.dst.clone();
        let l = p.finish()?;
        r[format!("{from} -> {dst}")] =
            json!({ "sent": l.sent, "lost": l.lost, "missing": l.missing });
    }
    Ok(r)
}

/// min / median / max of each place over the runs, and the runs.
fn summarize(runs: Vec<Value>) -> Value {
    let mut s = json!({ "runs": runs.clone() });
    let places: Vec<String> = runs
        .first()
        .and_then(|r| r.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    for p in places {
        let mut v: Vec<f64> = runs.iter().filter_map(|r| r[&p].as_f64()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            continue;
        }
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        s[format!("{p}_ms")] = json!({ "min": v[0], "median": median, "max": v[v.len() - 1] });
    }
    s
}

fn machine() -> Value {
    let sh = |cmd: &str| {
        std::process::Command::new("sh")
            .args(["-c", cmd])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    json!({
        "kernel": sh("uname -r"),
        "cpus": sh("nproc"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        "load1_at_end": sh("cut -d' ' -f1 /proc/loadavg"),
        "frr": sh("/usr/lib/frr/bgpd --version 2>/dev/null | head -1"),
        "bird": sh("bird --version 2>&1"),
    })
}

fn table(out: &Value) -> String {
    let mut s = format!("{}\n", out["command"].as_str().unwrap_or_default());
    for (mode, m) in out["modes"].as_object().into_iter().flatten() {
        for (k, v) in m.as_object().into_iter().flatten() {
            if let Some(o) = v.as_object() {
                for (p, x) in o.iter().filter(|(p, _)| p.ends_with("_ms")) {
                    s += &format!(
                        "{mode:<5} {k:<10} {p:<10} min {:>6} median {:>6} max {:>6} ms\n",
                        x["min"], x["median"], x["max"]
                    );
                }
            }
        }
        if let Some(k) = m["kill9_restart"].as_array() {
            for r in k {
                s += &format!("{mode:<5} kill-9     {r}\n");
            }
        }
    }
    s
}
