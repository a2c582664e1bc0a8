//! k8s-bench: petrel-controller against a real kube-apiserver at scale
//! (issue 13, "Scale against the real apiserver"). A benchmark, not a
//! timed test: it prints what it measured and asserts nothing.
//!
//! On the three-node lab (`Cluster::up`) with `KubeLab` (kube-apiserver on
//! the lab's etcd, petrel-controller with its default 3 s hold-down), plus
//! a second load-balancer pool large enough for the Services
//! ([`BENCH_POOL`]; the lab's own is a /24):
//!
//! 1. bulk: `--services` LoadBalancer Services (every tenth
//!    `externalTrafficPolicy: Cluster`, the rest `Local`), each with one
//!    EndpointSlice of 3 ready endpoints on node1..node3, created with one
//!    `kubectl apply --server-side -f -` of multi-document YAML per
//!    `--batch` objects; timed until every Service's /32 is in the ToR's
//!    kernel FIB;
//! 2. latency: `--latency` further Services, one `kubectl apply` each (its
//!    EndpointSlice applied just before): from the apply's return to a new
//!    /32 in the ToR's kernel FIB (`ip -n TOR -4 route show proto bgp`,
//!    polled every ~2 ms), p50/p99;
//! 3. updates: `--rounds` rounds re-applying every bulk EndpointSlice with
//!    exactly one endpoint changed; the round kinds cycle through address
//!    changed / ready→false (serving, terminating) / serving→false /
//!    restored (ready, serving). The controller's
//!    `petrel_controller_record_writes_total` (its `--metrics-listen`)
//!    before and after each round gives datastore writes per endpoint
//!    change; the controller has settled once its watch-event and write
//!    counters have been still for the hold-down + 2 s;
//! 4. rolling update of one Local Service (old endpoint on node2, new on
//!    node3 ready, old serving+terminating, old removed) while the ToR's
//!    FIB for its /32 is sampled every ~2 ms: samples with no route.
//!
//! ```sh
//! k8s-bench [--services 1000] [--latency 100] [--rounds 10] [--batch 250] [--json]
//! ```

use anyhow::{anyhow, bail, Context, Result};
use petrel_tests::lab::cluster::{Cluster, Options};
use petrel_tests::lab::k8s::{KubeLab, KubeOptions, API_ADDR};
use petrel_tests::lab::kube::require_apiserver;
use petrel_tests::lab::{require_lab, Lab};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The load-balancer pool the benchmark adds (4,096 addresses).
const BENCH_POOL: &str = "100.72.0.0/20";
/// Its block size: the load-balancer addresses' pseudo-node is held to
/// `max_blocks_per_host` (20) blocks like any node, and the lab's /24 of
/// /28s already takes 16 of them; with /26 blocks only 512 Services got an
/// address (the rest: "load-balancer pools of family V4 are exhausted"
/// with 3,840 addresses free), so four /22s.
const BENCH_BLOCK: &str = "22";
/// The controller's endpoint hold-down (its default).
const HOLD_DOWN: Duration = Duration::from_secs(3);
const NODES: [&str; 3] = ["node1", "node2", "node3"];

struct Args {
    services: usize,
    latency: usize,
    rounds: usize,
    batch: usize,
    json: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        services: 1000,
        latency: 100,
        rounds: 10,
        batch: 250,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut num = || -> Result<usize> {
            it.next()
                .ok_or_else(|| anyhow!("{f} needs a value"))?
                .parse()
                .with_context(|| f.clone())
        };
        match f.as_str() {
            "--services" => a.services = num()?,
            "--latency" => a.latency = num()?,
            "--rounds" => a.rounds = num()?,
            "--batch" => a.batch = num()?.max(1),
            "--json" => a.json = true,
            other => bail!("unknown argument {other}; see the module doc of k8s-bench"),
        }
    }
    Ok(a)
}

/// One endpoint of a slice.
#[derive(Clone, Debug)]
struct Ep {
    addr: String,
    node: &'static str,
    ready: bool,
    serving: bool,
}

impl Ep {
    fn json(&self) -> Value {
        json!({
            "addresses": [self.addr], "nodeName": self.node,
            "conditions": {
                "ready": self.ready, "serving": self.serving,
                "terminating": !self.ready,
            },
        })
    }
}

/// A fictitious pod address: service `i`, endpoint `k`, generation `g`.
fn pod_addr(i: usize, k: usize, g: usize) -> String {
    format!("10.{}.{}.{}", 100 + k + 3 * (g % 40), i / 250, i % 250 + 1)
}

fn service(name: &str, policy: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": policy,
            "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        },
    })
}

fn slice(name: &str, eps: &[Ep]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-1"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": eps.iter().map(Ep::json).collect::<Vec<_>>(),
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    })
}

fn three(i: usize) -> Vec<Ep> {
    (0..3)
        .map(|k| Ep {
            addr: pod_addr(i, k, 0),
            node: NODES[k],
            ready: true,
            serving: true,
        })
        .collect()
}

/// Multi-document YAML (each document JSON, which is YAML's flow style;
/// the leading `---` keeps kubectl from reading the stream as JSON) to one
/// server-side apply per `batch` objects; returns the time spent in kubectl.
fn apply_bulk(k: &KubeLab, objects: &[Value], batch: usize) -> Result<Duration> {
    let t = Instant::now();
    for chunk in objects.chunks(batch) {
        let docs: Vec<String> = chunk.iter().map(Value::to_string).collect();
        k.api
            .kubectl_stdin(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager",
                    "k8s-bench",
                    "-f",
                    "-",
                ],
                &format!("---\n{}\n", docs.join("\n---\n")),
            )
            .context("bulk apply")?;
    }
    Ok(t.elapsed())
}

/// The ToR's BGP /32s in its kernel FIB → nexthop count (one exec of ip).
fn tor_fib(tor: &str) -> Result<BTreeMap<String, usize>> {
    let out = Command::new("ip")
        .args(["-n", tor, "-o", "-4", "route", "show", "proto", "bgp"])
        .output()?;
    if !out.status.success() {
        bail!("ip route: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(dst) = line.split_whitespace().next() else {
            continue;
        };
        if dst.contains('/') {
            continue; // aggregates and blocks
        }
        let hops = line.matches("nexthop").count().max(1);
        m.insert(dst.to_string(), hops);
    }
    Ok(m)
}

/// The gateways of the ToR's kernel route for exactly `prefix`.
fn tor_route(tor: &str, prefix: &str) -> Result<BTreeSet<String>> {
    let out = Command::new("ip")
        .args(["-n", tor, "-o", "-4", "route", "show", "exact", prefix])
        .output()?;
    if !out.status.success() {
        bail!("ip route: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut gw = BTreeSet::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "via" {
            if let Some(g) = words.next() {
                gw.insert(g.to_string());
            }
        }
    }
    if gw.is_empty() && !text.trim().is_empty() {
        gw.insert("?".into());
    }
    Ok(gw)
}

/// The controller's Prometheus counters (one scrape in its namespace).
fn metrics(k: &KubeLab) -> Result<BTreeMap<String, f64>> {
    let body = petrel_tests::lab::metrics::scrape(&k.ns, &format!("{API_ADDR}:9180"))?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("petrel_controller_"))
        .filter_map(|l| {
            let (n, v) = l.split_once(' ')?;
            Some((
                n.trim_start_matches("petrel_controller_").to_string(),
                v.parse().ok()?,
            ))
        })
        .collect())
}

fn m(map: &BTreeMap<String, f64>, name: &str) -> f64 {
    map.get(name).copied().unwrap_or(0.0)
}

/// Every bench Service's ingress address, by name.
fn ingresses(k: &KubeLab) -> Result<BTreeMap<String, String>> {
    let v = k.api.get_json(&["services", "-n", "default"])?;
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["metadata"]["name"].as_str()?.to_string(),
                s["status"]["loadBalancer"]["ingress"][0]["ip"]
                    .as_str()?
                    .to_string(),
            ))
        })
        .collect())
}

fn wait<T>(
    what: &str,
    limit: Duration,
    pause: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if t.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(pause);
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let a = args()?;
    let mut programs = vec!["etcd", "etcdctl", "/usr/lib/cni/bridge"];
    programs.extend(petrel_tests::lab::topo::Kind::Frr.programs());
    if !require_lab(&programs) || !require_apiserver() {
        bail!("k8s-bench needs root, etcd, FRR, kubectl and the kube-apiserver (bash .ci/setup)");
    }
    let started = Instant::now();
    let load_start = loadavg();
    eprintln!("k8s-bench: lab up (load {load_start})");
    let c = Cluster::up(Lab::new("k8sbench")?, Options::default())?;
    let k = KubeLab::start(&c, KubeOptions::default())?;
    k.petrelctl(&[
        "pool",
        "add",
        BENCH_POOL,
        "--name",
        "lb-bench",
        "--block-size",
        BENCH_BLOCK,
        "--allowed-uses",
        "load-balancer",
    ])?;
    let tor = c.tor_ns.name().to_string();
    let node_of: BTreeMap<String, String> = c
        .nodes
        .iter()
        .map(|n| (n.address.clone(), n.name.clone()))
        .collect();
    let mut out = json!({
        "args": {"services": a.services, "latency": a.latency, "rounds": a.rounds, "batch": a.batch},
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                    "loadavg_start": load_start},
    });

    // 1. bulk.
    let names: Vec<String> = (0..a.services).map(|i| format!("bench-{i}")).collect();
    let mut objects = Vec::new();
    for (i, n) in names.iter().enumerate() {
        objects.push(slice(n, &three(i)));
        objects.push(service(n, if i % 10 == 9 { "Cluster" } else { "Local" }));
    }
    eprintln!("bulk: {} Services + EndpointSlices", a.services);
    let t0 = Instant::now();
    let t_apply = apply_bulk(&k, &objects, a.batch)?;
    let ing = wait(
        "every bench Service's ingress",
        Duration::from_secs(600),
        Duration::from_secs(1),
        || {
            let i = ingresses(&k)?;
            let n = names.iter().filter(|n| i.contains_key(*n)).count();
            Ok((n == names.len()).then_some(i))
        },
    )?;
    let t_ingress = t0.elapsed();
    let want: BTreeSet<String> = names.iter().map(|n| ing[n].clone()).collect();
    wait(
        "every bench /32 in the ToR's FIB with 3 nexthops",
        Duration::from_secs(600),
        Duration::from_millis(200),
        || {
            let f = tor_fib(&tor)?;
            Ok(want.iter().all(|ip| f.get(ip) == Some(&3)).then_some(()))
        },
    )?;
    let t_fib = t0.elapsed();
    let m0 = metrics(&k)?;
    eprintln!(
        "bulk: kubectl {:.1} s, all ingress {:.1} s, all in the ToR's FIB (3 nexthops) {:.1} s",
        t_apply.as_secs_f64(),
        t_ingress.as_secs_f64(),
        t_fib.as_secs_f64()
    );
    out["bulk"] = json!({
        "services": a.services, "objects": objects.len(),
        "kubectl_s": t_apply.as_secs_f64(), "all_ingress_s": t_ingress.as_secs_f64(),
        "all_in_tor_fib_s": t_fib.as_secs_f64(),
        "record_writes": m(&m0, "record_writes_total"),
        "controller_errors": m(&m0, "errors_total"),
    });

    // 2. latency: apply -> a new /32 in the ToR's FIB.
    let mut known: BTreeSet<String> = tor_fib(&tor)?.into_keys().collect();
    let mut lat = Vec::new();
    let mut polls = 0u64;
    for j in 0..a.latency {
        let n = format!("lat-{j}");
        let i = a.services + j;
        k.apply(&slice(&n, &three(i)).to_string())?;
        let policy = if j % 10 == 9 { "Cluster" } else { "Local" };
        k.apply(&service(&n, policy).to_string())?;
        let t = Instant::now();
        let new = wait(
            &format!("{n}'s /32 in the ToR's FIB"),
            Duration::from_secs(30),
            Duration::from_millis(2),
            || {
                polls += 1;
                let f = tor_fib(&tor)?;
                Ok(f.into_keys().find(|ip| !known.contains(ip)))
            },
        )?;
        let d = t.elapsed().as_secs_f64();
        known.insert(new);
        lat.push(d);
    }
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        pct(&sorted, 50.0),
        pct(&sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN),
    );
    eprintln!(
        "latency: {} Services, apply -> /32 in the ToR's FIB p50 {:.0} ms p99 {:.0} ms max {:.0} ms ({polls} polls)",
        lat.len(),
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
    out["latency"] = json!({
        "services": lat.len(), "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3, "max_ms": max * 1e3,
        "fib_polls": polls,
    });

    // 3. EndpointSlice updates.
    let mut state: Vec<Vec<Ep>> = (0..a.services).map(three).collect();
    let mut gens = vec![[0usize; 3]; a.services];
    let kinds = [
        "address",
        "ready=false (serving, terminating)",
        "serving=false",
        "restored",
    ];
    let mut rounds = Vec::new();
    let (mut changes, mut writes_total) = (0usize, 0f64);
    for r in 0..a.rounds {
        let kind = r % 4;
        let ep = (r / 4) % 3;
        for (i, eps) in state.iter_mut().enumerate() {
            let e = &mut eps[ep];
            match kind {
                0 => {
                    gens[i][ep] += 1;
                    e.addr = pod_addr(i, ep, gens[i][ep]);
                }
                1 => e.ready = false,
                2 => e.serving = false,
                _ => {
                    e.ready = true;
                    e.serving = true;
                }
            }
        }
        let objs: Vec<Value> = names
            .iter()
            .zip(&state)
            .map(|(n, eps)| slice(n, eps))
            .collect();
        let before = metrics(&k)?;
        let t = Instant::now();
        let t_apply = apply_bulk(&k, &objs, a.batch)?;
        let applied = t.elapsed();
        // Settled: watch events and writes still for the hold-down + 2 s.
        let quiet = HOLD_DOWN + Duration::from_secs(2);
        let mut last = (
            m(&before, "watch_events_total"),
            m(&before, "record_writes_total"),
        );
        let mut last_change = Instant::now();
        // The ToR's FIB as the slices say: Cluster via 3, Local via the
        // nodes with a serving endpoint.
        let expect: BTreeMap<&str, usize> = names
            .iter()
            .zip(&state)
            .enumerate()
            .map(|(i, (n, eps))| {
                let hops = if i % 10 == 9 {
                    3
                } else {
                    eps.iter().filter(|e| e.serving).count()
                };
                (ing[n].as_str(), hops)
            })
            .collect();
        let fib_ok = || -> Result<bool> {
            let f = tor_fib(&tor)?;
            Ok(expect.iter().all(|(ip, h)| f.get(*ip) == Some(h)))
        };
        let mut fib_since: Option<Instant> = None;
        let after = loop {
            std::thread::sleep(Duration::from_millis(100));
            if fib_ok()? {
                fib_since.get_or_insert_with(Instant::now);
            } else {
                fib_since = None;
            }
            let now = metrics(&k)?;
            let cur = (
                m(&now, "watch_events_total"),
                m(&now, "record_writes_total"),
            );
            if cur != last {
                last = cur;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                break now;
            }
            if t.elapsed() > Duration::from_secs(900) {
                bail!("the controller did not settle in round {r}");
            }
        };
        let settle = last_change.duration_since(t).saturating_sub(applied);
        let fib_settle = match fib_since {
            Some(f) => Some(f.duration_since(t).saturating_sub(applied).as_secs_f64()),
            None => wait(
                "the ToR's FIB",
                Duration::from_secs(60),
                Duration::from_millis(100),
                || Ok(fib_ok()?.then(|| t.elapsed().saturating_sub(applied).as_secs_f64())),
            )
            .ok(),
        };
        let writes = m(&after, "record_writes_total") - m(&before, "record_writes_total");
        let events = m(&after, "watch_events_total") - m(&before, "watch_events_total");
        changes += objs.len();
        writes_total += writes;
        eprintln!(
            "round {r}: endpoint {} of {} slices {}: kubectl {:.1} s, settled {:.1} s after it, \
             ToR FIB as expected {:?} s after it, {events} watch events, {writes} record writes \
             ({:.3}/change), lag {:.3} s",
            NODES[ep],
            objs.len(),
            kinds[kind],
            t_apply.as_secs_f64(),
            settle.as_secs_f64(),
            fib_settle,
            writes / objs.len() as f64,
            m(&after, "sync_lag_seconds"),
        );
        rounds.push(json!({
            "round": r, "kind": kinds[kind], "endpoint_node": NODES[ep], "slices": objs.len(),
            "kubectl_s": t_apply.as_secs_f64(), "settle_after_apply_s": settle.as_secs_f64(),
            "tor_fib_as_expected_after_apply_s": fib_settle,
            "watch_events": events, "record_writes": writes,
            "writes_per_change": writes / objs.len() as f64,
            "errors": m(&after, "errors_total") - m(&before, "errors_total"),
        }));
    }
    out["updates"] = json!({
        "endpoint_changes": changes, "record_writes": writes_total,
        "writes_per_change": if changes > 0 { writes_total / changes as f64 } else { 0.0 },
        "rounds": rounds,
    });

    // 4. rolling update of one Local Service, the ToR's FIB sampled.
    let n = "roll";
    let old = Ep {
        addr: "10.90.0.2".into(),
        node: "node2",
        ready: true,
        serving: true,
    };
    let new = Ep {
        addr: "10.90.0.3".into(),
        node: "node3",
        ready: true,
        serving: true,
    };
    k.apply(&slice(n, std::slice::from_ref(&old)).to_string())?;
    k.apply(&service(n, "Local").to_string())?;
    let ip = wait(
        "roll's ingress",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || Ok(ingresses(&k)?.remove(n)),
    )?;
    let host = format!("{ip}/32");
    let node2 = c.node("node2")?.address.clone();
    let node3 = c.node("node3")?.address.clone();
    wait(
        "roll via node2 in the ToR's FIB",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || Ok((tor_route(&tor, &host)? == BTreeSet::from([node2.clone()])).then_some(())),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, tor, host) = (stop.clone(), tor.clone(), host.clone());
        std::thread::spawn(move || -> Result<Vec<(f64, BTreeSet<String>)>> {
            let t = Instant::now();
            let mut s = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                s.push((t.elapsed().as_secs_f64(), tor_route(&tor, &host)?));
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(s)
        })
    };
    let t_roll = Instant::now();
    // The new pod ready on node3.
    k.apply(&slice(n, &[old.clone(), new.clone()]).to_string())?;
    wait(
        "roll via node2 and node3",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            Ok(
                (tor_route(&tor, &host)? == BTreeSet::from([node2.clone(), node3.clone()]))
                    .then_some(()),
            )
        },
    )?;
    // The old one terminating: serving, not ready.
    let mut term = old.clone();
    term.ready = false;
    k.apply(&slice(n, &[term, new.clone()]).to_string())?;
    std::thread::sleep(HOLD_DOWN * 2);
    // The old one gone.
    k.apply(&slice(n, std::slice::from_ref(&new)).to_string())?;
    wait(
        "roll via node3 only",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || Ok((tor_route(&tor, &host)? == BTreeSet::from([node3.clone()])).then_some(())),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| anyhow!("sampler panicked"))??;
    let roll_s = t_roll.elapsed().as_secs_f64();
    let empty = samples.iter().filter(|(_, g)| g.is_empty()).count();
    let mut changes_seen = Vec::new();
    let mut prev: Option<&BTreeSet<String>> = None;
    for (t, g) in &samples {
        if prev != Some(g) {
            let via: Vec<&str> = g
                .iter()
                .map(|a| node_of.get(a).map(String::as_str).unwrap_or(a))
                .collect();
            changes_seen.push(json!({"at_s": (t * 1000.0).round() / 1000.0, "via": via}));
            prev = Some(g);
        }
    }
    let gaps = samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0f64, f64::max);
    eprintln!(
        "rolling update: {} samples over {roll_s:.1} s (largest gap between samples {:.1} ms), \
         {empty} with no route; FIB states: {}",
        samples.len(),
        gaps * 1e3,
        Value::Array(changes_seen.clone())
    );
    out["rolling_update"] = json!({
        "samples": samples.len(), "seconds": roll_s, "max_sample_gap_ms": gaps * 1e3,
        "samples_without_route": empty, "fib_states": changes_seen,
    });
    let end = metrics(&k)?;
    out["controller"] = json!({
        "errors_total": m(&end, "errors_total"),
        "record_writes_total": m(&end, "record_writes_total"),
        "watch_events_total": m(&end, "watch_events_total"),
        "passes_total": m(&end, "passes_total"),
        "apiserver_rss_kib": k.api.rss_kib().ok(),
    });
    out["machine"]["loadavg_end"] = json!(loadavg());
    out["total_s"] = json!(started.elapsed().as_secs_f64());

    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let u = &out["updates"];
        let r = &out["rolling_update"];
        println!("| measure | value |\n|---|---|");
        println!(
            "| bulk: {} Services + slices, kubectl (batches of {}) | {:.1} s |",
            a.services,
            a.batch,
            out["bulk"]["kubectl_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "| bulk: all ingress / all /32s in the ToR's FIB (3 nexthops) | {:.1} s / {:.1} s |",
            out["bulk"]["all_ingress_s"].as_f64().unwrap_or(0.0),
            out["bulk"]["all_in_tor_fib_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "| apply -> /32 in the ToR's FIB, {} Services: p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
            lat.len(),
            p50 * 1e3,
            p99 * 1e3,
            max * 1e3
        );
        println!(
            "| EndpointSlice updates ({} rounds) | {} |",
            a.rounds, u["endpoint_changes"]
        );
        println!(
            "| datastore record writes / per endpoint change | {} / {:.4} |",
            u["record_writes"],
            u["writes_per_change"].as_f64().unwrap_or(0.0)
        );
        for x in u["rounds"].as_array().into_iter().flatten() {
            println!(
                "| round {} ({}, {}): kubectl / controller settled after / ToR FIB after / writes | {:.1} s / {:.1} s / {:.1} s / {} |",
                x["round"],
                x["kind"].as_str().unwrap_or_default(),
                x["endpoint_node"].as_str().unwrap_or_default(),
                x["kubectl_s"].as_f64().unwrap_or(0.0),
                x["settle_after_apply_s"].as_f64().unwrap_or(0.0),
                x["tor_fib_as_expected_after_apply_s"].as_f64().unwrap_or(f64::NAN),
                x["record_writes"]
            );
        }
        println!(
            "| rolling update: FIB samples / without route | {} / {} |",
            r["samples"], r["samples_without_route"]
        );
        println!(
            "| load average start / end | {} / {} |",
            out["machine"]["loadavg_start"].as_str().unwrap_or_default(),
            out["machine"]["loadavg_end"].as_str().unwrap_or_default()
        );
    }
    drop(k);
    Ok(())
}
