//! petrel-bench: a table from the wire into the kernel FIB, petreld beside
//! BIRD, FRR and GoBGP (issue 6).
//!
//! ```text
//! petrel-bench --scenario NAME --prefixes N --dut petreld,bird,frr,gobgp
//!              [--repeat K] [--json] [--no-kernel] [--no-sink] [--bfd]
//!              [--clients C] [--add-path] [--rr-fib] [--rr-churn]
//! ```
//!
//! `--scenario rr64`: the DUT as a route reflector for C (64) iBGP clients,
//! 4 of which send the same N prefixes with different paths; the time is
//! until every client holds every path it should (the best, or with
//! `--add-path` all of them). No kernel FIB, except petreld's with
//! `--rr-fib` (a node that reflects and forwards); see `bench/rr.rs`.
//! `--rr-churn` adds, after the tables, one source's churn (5,000
//! prefixes withdrawn and announced again, 1,000 UPDATEs a second) and
//! reports each change's latency to a client.
//!
//! `--scenario peer-death` and `--scenario restart` measure failover
//! instead of a load (issue 17; see `bench/failover.rs`): per repetition
//! and DUT, a peer's link losing carrier (variants `move` and `gone`), or
//! the DUT crashing and restarting with graceful restart; no kernel-limit
//! or sink run.
//!
//! `--bfd` (petreld only): BFD at 300 ms × 3 on every injector session,
//! with a BIRD in the injectors' namespace as the BFD endpoint; the run
//! reports petreld's BFD state changes during the load (goal: none).
//!
//! `PETREL_BENCH_CALLGRIND=DIR` runs petreld under callgrind and writes
//! one profile per phase into DIR (load, churn, withdraw, the rest at
//! exit): instruction counts, which a busy machine does not change, to
//! compare two builds (`PETREL_BIN_DIR` names the build's directory).
//!
//! Per repetition the DUTs run in turn (the order rotates every
//! repetition), each in a fresh lab: N injector sessions stream
//! pre-encoded UPDATEs into the DUT, which installs its best routes into
//! its namespace's kernel FIB and advertises them to a monitor peer. Also
//! per repetition: the kernel-limit run (the same prefixes by batched
//! netlink, classic and by nexthop id). Once: the injectors alone against
//! a sink. Needs root. `--dut petreld,petreld-classic` compares petreld's
//! two FIB paths (`[fib] nexthop_objects` "auto", the default, and "off").

#[path = "../bench/mod.rs"]
mod bench;

use anyhow::{bail, Context, Result};
use bench::dut::{self, Kind};
use bench::failover;
use bench::run::{self, median_min_max, mib, Measured};
use bench::scenario::{self, Failover, Scenario, SCENARIOS};
use bench::table::Table;
use serde_json::{json, Value};
use std::sync::Arc;

struct Args {
    scenario: String,
    prefixes: u32,
    duts: Vec<Kind>,
    repeat: usize,
    json: bool,
    kernel: bool,
    sink: bool,
    bfd: bool,
    clients: Option<usize>,
    add_path: bool,
    rr_fib: bool,
    rr_churn: bool,
}

fn usage() -> String {
    let mut s = "usage: petrel-bench --scenario NAME --prefixes N --dut petreld,bird,frr,gobgp \
                 [--repeat K] [--json] [--no-kernel] [--no-sink] [--bfd] [--clients C] [--add-path] [--rr-fib] [--rr-churn]\nscenarios:\n"
        .to_string();
    for (n, d) in SCENARIOS {
        s += &format!("  {n:<11} {d}\n");
    }
    s
}

fn parse_args(argv: &[String]) -> Result<Args> {
    let mut a = Args {
        scenario: "v4".into(),
        prefixes: 100_000,
        duts: vec![Kind::Petreld],
        repeat: 3,
        json: false,
        kernel: true,
        sink: true,
        bfd: false,
        clients: None,
        add_path: false,
        rr_fib: false,
        rr_churn: false,
    };
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut val = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--scenario" => a.scenario = val()?.clone(),
            "--prefixes" => a.prefixes = val()?.parse()?,
            "--dut" => a.duts = val()?.split(',').map(Kind::parse).collect::<Result<_>>()?,
            "--repeat" => a.repeat = val()?.parse()?,
            "--json" => a.json = true,
            "--no-kernel" => a.kernel = false,
            "--no-sink" => a.sink = false,
            "--bfd" => a.bfd = true,
            "--clients" => a.clients = Some(val()?.parse()?),
            "--add-path" => a.add_path = true,
            "--rr-fib" => a.rr_fib = true,
            "--rr-churn" => a.rr_churn = true,
            _ => bail!("{}", usage()),
        }
    }
    if a.prefixes == 0 || a.prefixes > 1 << 22 {
        bail!("--prefixes must be 1..=4194304");
    }
    if a.bfd && a.duts.iter().any(|d| !d.is_petreld()) {
        bail!("--bfd: petreld only (BFD on its injector sessions, BIRD as the endpoint)");
    }
    let rr = a.scenario == "rr64";
    if (a.clients.is_some() || a.add_path || a.rr_fib || a.rr_churn) && !rr {
        bail!("--clients, --add-path, --rr-fib and --rr-churn are for --scenario rr64");
    }
    if a.clients
        .is_some_and(|c| !(scenario::RR_SOURCES..=240).contains(&c))
    {
        bail!("--clients must be {}..=240", scenario::RR_SOURCES);
    }
    if rr && (a.bfd || a.duts.contains(&Kind::Gobgp)) {
        bail!("--scenario rr64: petreld, bird or frr, without --bfd");
    }
    if a.repeat == 0 || a.duts.is_empty() {
        bail!("--repeat and --dut need at least one");
    }
    Ok(a)
}

fn measured_json(m: &Measured) -> Value {
    json!({
        "fib_seconds": m.fib_seconds,
        "fib_settled_seconds": m.fib_settled_seconds,
        "monitor_seconds": m.monitor_seconds,
        "withdraw_seconds": m.withdraw_seconds,
        "peak_rss_bytes": m.peak_rss_bytes,
        "baseline_rss_bytes": m.baseline_rss_bytes,
        "loaded_rss_bytes": m.loaded_rss_bytes,
        "loaded_rss_per_route_bytes": m.loaded_rss_per_route,
        "rss_per_route_bytes": m.rss_per_route,
        "cpu_seconds": m.cpu_seconds,
        "cpu_user_seconds": m.cpu_user_seconds,
        "withdraw_cpu_seconds": m.withdraw_cpu_seconds,
        "fib_events": m.fib_events,
        "fib_count": m.fib_count,
        "netlink_overruns": m.netlink_overruns,
        "churn": m.churn,
        "bfd": m.bfd,
        "clients_seconds": m.clients_seconds,
        "rr": m.rr,
        "load1": m.load1,
    })
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = parse_args(&argv)?;
    let mut programs: Vec<&str> = a
        .duts
        .iter()
        .flat_map(|k| k.programs().iter().copied())
        .collect();
    programs.dedup();
    if let Err(what) = petrel_tests::lab::can_run(&programs) {
        bail!("petrel-bench needs {what}");
    }
    let mut sc = Scenario::parse(&a.scenario, &petrel_tests::data_dir())?;
    if let (Some(c), Some(_)) = (a.clients, sc.rr_clients) {
        sc.rr_clients = Some(c);
    }
    // A reflector installs nothing: no kernel-limit run to compare with.
    let kernel_limit = a.kernel && sc.rr_clients.is_none();
    let table = sc.table(a.prefixes)?;
    if let Some(f) = sc.failover {
        if a.bfd {
            bail!("--bfd: not with the failover scenarios (they measure without BFD)");
        }
        return failover_main(&a, &sc, f, &table);
    }
    let n = table.len();
    let streams: Vec<Arc<Vec<u8>>> = scenario::streams(&sc, &table)
        .into_iter()
        .map(Arc::new)
        .collect();
    let churn = match sc.churn {
        Some((rate, secs)) => scenario::churn_messages(&sc, &table, rate, secs),
        None => Vec::new(),
    };
    let (paths, comms) = table.diversity();
    let bytes: usize = streams.iter().map(|s| s.len()).sum();
    let log = |s: String| {
        if !a.json {
            println!("{s}");
        } else {
            eprintln!("{s}");
        }
    };
    log(format!(
        "scenario {} ({} peer(s)), {n} prefixes, {} attribute sets, {paths} distinct AS paths, \
         {comms} distinct community sets, {:.1} MB of UPDATEs; load {:.2}",
        sc.name,
        sc.peers,
        table.attrs.len(),
        bytes as f64 / 1e6,
        run::load1()
    ));
    let sink = if a.sink {
        let s = run::sink_run(&streams)?;
        log(format!(
            "injector alone -> sink: {:.1} ms, {:.0} prefixes/s",
            s * 1e3,
            (n * sc.peers) as f64 / s
        ));
        Some(s)
    } else {
        None
    };
    let mut runs: Vec<(usize, Kind, Result<Measured>)> = Vec::new();
    let mut kernel = Vec::new();
    for rep in 0..a.repeat {
        if kernel_limit {
            let k = run::kernel_run(&sc, &table)?;
            log(format!(
                "rep {rep} kernel-limit: classic install {:.3} s ({:.0}/s), delete {:.3} s; \
                 by nexthop id install {:.3} s ({:.0}/s), delete {:.3} s; {} errors, load {:.2}",
                k.install_seconds,
                n as f64 / k.install_seconds,
                k.delete_seconds,
                k.install_nh_seconds,
                n as f64 / k.install_nh_seconds,
                k.delete_nh_seconds,
                k.errors,
                run::load1()
            ));
            kernel.push(json!({"repeat": rep,
                "install_seconds": k.install_seconds, "delete_seconds": k.delete_seconds,
                "install_nh_seconds": k.install_nh_seconds, "delete_nh_seconds": k.delete_nh_seconds,
                "errors": k.errors, "load1": run::load1()}));
        }
        let k = a.duts.len();
        for j in 0..k {
            let kind = a.duts[(j + rep) % k];
            let r = if sc.rr_clients.is_some() {
                bench::rr::rr_run(
                    kind, &sc, &table, &streams, a.add_path, a.rr_fib, a.rr_churn,
                )
            } else {
                run::dut_run(kind, &sc, &table, &streams, &churn, a.bfd)
            };
            match &r {
                Ok(m) if m.rr.is_some() => log(format!(
                    "rep {rep} {:<8} all clients {:8.3} s  peak RSS {:7.1} MiB  cpu {:7.2} s (user {:.2})  \
                     harness cpu {:.2} s  load {:.2}\n    {}",
                    kind.name(),
                    m.clients_seconds,
                    mib(m.peak_rss_bytes),
                    m.cpu_seconds,
                    m.cpu_user_seconds,
                    m.rr.as_ref().and_then(|r| r["harness_cpu_seconds"].as_f64()).unwrap_or(f64::NAN),
                    m.load1,
                    m.rr.as_ref().map(|r| r.to_string()).unwrap_or_default()
                )),
                Ok(m) => log(format!(
                    "rep {rep} {:<8} fib {:8.3} s  settled {:8.3} s  monitor {:8.3} s  withdraw {:8.3} s  \
                     peak RSS {:7.1} MiB ({:6.1} B/route)  cpu {:7.2} s (user {:.2}; +{:.2} s withdraw)  load {:.2}{}{}",
                    kind.name(),
                    m.fib_seconds,
                    m.fib_settled_seconds,
                    m.monitor_seconds,
                    m.withdraw_seconds,
                    mib(m.peak_rss_bytes),
                    m.rss_per_route,
                    m.cpu_seconds,
                    m.cpu_user_seconds,
                    m.withdraw_cpu_seconds,
                    m.load1,
                    if m.netlink_overruns > 0 {
                        format!("  ({} netlink overruns, recounted)", m.netlink_overruns)
                    } else {
                        String::new()
                    },
                    m.churn
                        .as_ref()
                        .map(|c| format!("\n    churn: {c}"))
                        .unwrap_or_default()
                ) + &m
                    .bfd
                    .as_ref()
                    .map(|b| format!(
                        "\n    BFD flaps during the load: {}\n{}",
                        b["flaps_during_load"],
                        b["endpoint_sessions"].as_str().unwrap_or_default()
                    ))
                    .unwrap_or_default()),
                Err(e) => log(format!("rep {rep} {:<8} FAILED: {e:#}", kind.name())),
            }
            runs.push((rep, kind, r));
        }
    }
    // Summary: medians and ranges per DUT, ratios against petreld.
    let metric = |kind: Kind, f: &dyn Fn(&Measured) -> f64| -> Option<(f64, f64, f64)> {
        let v: Vec<f64> = runs
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .filter_map(|(_, _, r)| r.as_ref().ok().map(f))
            .collect();
        median_min_max(&v)
    };
    type Getter = fn(&Measured) -> f64;
    let metrics: [(&str, Getter); 9] = [
        ("fib_seconds", |m| m.fib_seconds),
        ("fib_settled_seconds", |m| m.fib_settled_seconds),
        ("monitor_seconds", |m| m.monitor_seconds),
        ("withdraw_seconds", |m| m.withdraw_seconds),
        ("peak_rss_bytes", |m| m.peak_rss_bytes as f64),
        ("rss_per_route_bytes", |m| m.rss_per_route),
        ("cpu_seconds", |m| m.cpu_seconds),
        ("clients_seconds", |m| m.clients_seconds),
        ("peak_rss_mib", |m| mib(m.peak_rss_bytes)),
    ];
    let mut summary = serde_json::Map::new();
    let mut duts = a.duts.clone();
    duts.dedup();
    for kind in &duts {
        let mut s = serde_json::Map::new();
        for (name, f) in &metrics {
            if let Some((med, lo, hi)) = metric(*kind, f) {
                s.insert(
                    name.to_string(),
                    json!({"median": med, "min": lo, "max": hi}),
                );
                if *kind != Kind::Petreld {
                    if let Some((p, _, _)) = metric(Kind::Petreld, f) {
                        s.insert(format!("{name}_petrel_ratio"), json!(p / med));
                    }
                }
            }
        }
        summary.insert(kind.name().into(), Value::Object(s));
    }
    if !a.json {
        println!("\nmedian [min-max] over {} repetition(s):", a.repeat);
        for kind in &duts {
            let f = |g: Getter| {
                metric(*kind, &g)
                    .map(|(m, l, h)| format!("{m:.3} [{l:.3}-{h:.3}]"))
                    .unwrap_or_else(|| "-".into())
            };
            if sc.rr_clients.is_some() {
                println!(
                    "  {:<8} all clients {}  cpu {}  peak RSS MiB {}",
                    kind.name(),
                    f(metrics[7].1),
                    f(metrics[6].1),
                    f(metrics[8].1)
                );
                continue;
            }
            println!(
                "  {:<8} fib {}  settled {}  monitor {}  withdraw {}  B/route {}  cpu {}",
                kind.name(),
                f(metrics[0].1),
                f(metrics[1].1),
                f(metrics[2].1),
                f(metrics[3].1),
                f(metrics[5].1),
                f(metrics[6].1)
            );
        }
        let kernel_median = |key: &str| {
            median_min_max(
                &kernel
                    .iter()
                    .filter_map(|k| k[key].as_f64())
                    .collect::<Vec<_>>(),
            )
            .map(|(m, _, _)| m)
        };
        let classic = kernel_median("install_seconds");
        let by_id = kernel_median("install_nh_seconds");
        for (what, med) in [("classic", classic), ("by nexthop id", by_id)] {
            if let Some(med) = med {
                println!(
                    "  kernel   install {med:.3} s = {:.0} routes/s ({what})",
                    n as f64 / med
                );
            }
        }
        // Against the faster of the two limits.
        if let Some(med) = [classic, by_id].into_iter().flatten().reduce(f64::min) {
            if let Some((p, _, _)) = metric(Kind::Petreld, &metrics[0].1) {
                println!(
                    "  petreld reaches {:.1}% of the faster kernel-limit rate (Established to FIB vs raw install)",
                    100.0 * med / p
                );
            }
        }
    } else {
        let rows: Vec<Value> = runs
            .iter()
            .map(|(rep, k, r)| {
                let mut v = match r {
                    Ok(m) => measured_json(m),
                    Err(e) => json!({"error": format!("{e:#}")}),
                };
                v["repeat"] = json!(rep);
                v["dut"] = json!(k.name());
                v
            })
            .collect();
        let out = json!({
            "scenario": sc.name, "peers": sc.peers, "prefixes": n, "v6": sc.v6,
            "clients": sc.rr_clients, "add_path": a.add_path, "rr_fib": a.rr_fib, "rr_churn": a.rr_churn,
            "table": {"attribute_sets": table.attrs.len(), "distinct_as_paths": paths,
                      "distinct_community_sets": comms, "update_bytes": bytes},
            "machine": {"cpus": std::thread::available_parallelism().map(|x| x.get()).unwrap_or(0),
                        "kernel": bench::run("uname", &["-r"]).unwrap_or_default().trim(),
                        "load1_end": run::load1()},
            "versions": duts.iter().map(|k| (k.name().to_string(), json!(dut::version(*k))))
                            .collect::<serde_json::Map<_, _>>(),
            "injector_sink_seconds": sink,
            "kernel_limit": kernel,
            "runs": rows,
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if runs.iter().any(|(_, _, r)| r.is_err()) {
        bail!("some runs failed (see above)");
    }
    Ok(())
}

/// The failover scenarios: every variant for every DUT, DUTs alternating.
fn failover_main(a: &Args, sc: &Scenario, f: Failover, table: &Table) -> Result<()> {
    let log = |s: String| {
        if a.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    log(format!(
        "scenario {}, {} prefixes; hold time {} s{}; load {:.2}",
        sc.name,
        table.len(),
        failover::HOLD,
        if f == Failover::Restart {
            format!(", graceful restart time {} s", failover::RESTART_TIME)
        } else {
            String::new()
        },
        run::load1()
    ));
    let mut runs: Vec<(usize, Kind, &str, Result<failover::Outcome>)> = Vec::new();
    for rep in 0..a.repeat {
        let k = a.duts.len();
        for j in 0..k {
            let kind = a.duts[(j + rep) % k];
            for variant in failover::variants(f) {
                let r = failover::run(kind, f, variant, table);
                match &r {
                    Ok(o) => log(format!(
                        "rep {rep} {:<8} {variant:<8} {:8.3} s  max missing {:7}  {}",
                        kind.name(),
                        o.seconds,
                        o.max_missing,
                        o.detail
                    )),
                    Err(e) => log(format!(
                        "rep {rep} {:<8} {variant:<8} FAILED: {e:#}",
                        kind.name()
                    )),
                }
                runs.push((rep, kind, variant, r));
            }
        }
    }
    let mut duts = a.duts.clone();
    duts.dedup();
    let mut summary = serde_json::Map::new();
    for kind in &duts {
        let mut s = serde_json::Map::new();
        for variant in failover::variants(f) {
            let ok: Vec<&failover::Outcome> = runs
                .iter()
                .filter(|r| r.1 == *kind && r.2 == *variant)
                .filter_map(|r| r.3.as_ref().ok())
                .collect();
            let secs: Vec<f64> = ok.iter().map(|o| o.seconds).collect();
            let missing: Vec<f64> = ok.iter().map(|o| o.max_missing as f64).collect();
            let m = |v: &[f64]| {
                median_min_max(v).map(|(m, l, h)| json!({"median": m, "min": l, "max": h}))
            };
            s.insert(
                variant.to_string(),
                json!({"seconds": m(&secs), "max_missing": m(&missing), "runs": ok.len()}),
            );
            if !a.json {
                if let (Some((m, l, h)), Some((mm, ml, mh))) =
                    (median_min_max(&secs), median_min_max(&missing))
                {
                    println!(
                        "  {:<8} {variant:<8} {m:.3} s [{l:.3}-{h:.3}]  max missing {mm:.0} [{ml:.0}-{mh:.0}]",
                        kind.name()
                    );
                }
            }
        }
        summary.insert(kind.name().into(), Value::Object(s));
    }
    if a.json {
        let rows: Vec<Value> = runs
            .iter()
            .map(|(rep, k, variant, r)| {
                let mut v = match r {
                    Ok(o) => o.json(),
                    Err(e) => json!({"variant": variant, "error": format!("{e:#}")}),
                };
                v["repeat"] = json!(rep);
                v["dut"] = json!(k.name());
                v
            })
            .collect();
        let out = json!({
            "scenario": sc.name, "prefixes": table.len(),
            "hold_time": failover::HOLD,
            "graceful_restart_time": (f == Failover::Restart).then_some(failover::RESTART_TIME),
            "machine": {"cpus": std::thread::available_parallelism().map(|x| x.get()).unwrap_or(0),
                        "kernel": bench::run("uname", &["-r"]).unwrap_or_default().trim(),
                        "load1_end": run::load1()},
            "versions": duts.iter().map(|k| (k.name().to_string(), json!(dut::version(*k))))
                            .collect::<serde_json::Map<_, _>>(),
            "runs": rows,
            "summary": summary,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if runs.iter().any(|r| r.3.is_err()) {
        bail!("some runs failed (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let a = parse_args(&v(
            "--scenario v6 --prefixes 5000 --dut petreld,bird --repeat 2 --json",
        ))
        .unwrap();
        assert_eq!(
            (a.scenario.as_str(), a.prefixes, a.repeat, a.json),
            ("v6", 5000, 2, true)
        );
        assert_eq!(a.duts, vec![Kind::Petreld, Kind::Bird]);
        assert!(parse_args(&v("--dut quagga")).is_err());
        assert!(parse_args(&v("--prefixes 0")).is_err());
        assert!(parse_args(&v("--bogus")).is_err());
        let a = parse_args(&v("--scenario rr64 --clients 8 --add-path --dut bird")).unwrap();
        assert_eq!((a.clients, a.add_path), (Some(8), true));
        assert!(parse_args(&v("--scenario v4 --add-path")).is_err());
        assert!(parse_args(&v("--scenario rr64 --clients 2")).is_err());
        assert!(parse_args(&v("--scenario rr64 --dut gobgp")).is_err());
    }
}
