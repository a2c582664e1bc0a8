//! One repetition against one DUT, one kernel-limit run, one injector run
//! against a sink: topology, clocks, and what is measured.
//!
//! Topology: namespace `inj` (the injectors, 10.0.0.11+ / fd00::11+) and
//! namespace `mon` (the monitor, 10.1.0.2 / fd01::2), each joined to the
//! DUT's namespace by a veth. Clocks start when every injector session is
//! Established; FIB instants come from the netlink watcher's thread.

use super::dut::{self, Callgrind, Dut, Kind, Layout};
use super::fibwatch::FibWatch;
use super::peer::{self, Injector, Monitor};
use super::scenario::{self, Scenario};
use super::table::Table;
use anyhow::{bail, Context, Result};
use petrel_tests::lab::{bird, Lab, Netns};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a DUT may take for any one phase before the run fails.
const PHASE_LIMIT: Duration = Duration::from_secs(1200);
/// No FIB change and no monitor UPDATE for this long: settled.
const QUIET: Duration = Duration::from_secs(2);

/// What one repetition measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Established to all N prefixes in the kernel FIB.
    pub fib_seconds: f64,
    /// Established to the last FIB change of the load (best-path churn
    /// with several peers goes on after every prefix is present).
    pub fib_settled_seconds: f64,
    /// Established to the monitor holding all N.
    pub monitor_seconds: f64,
    /// Sessions dropped to an empty FIB.
    pub withdraw_seconds: f64,
    pub baseline_rss_bytes: u64,
    /// Resident set with the table loaded and the FIB settled (peak is
    /// VmHWM, which also holds transient buffers of the load).
    pub loaded_rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub rss_per_route: f64,
    pub loaded_rss_per_route: f64,
    /// CPU of the DUT's processes: load, withdrawal.
    pub cpu_seconds: f64,
    /// The user-space part of `cpu_seconds`.
    pub cpu_user_seconds: f64,
    pub withdraw_cpu_seconds: f64,
    pub fib_events: u64,
    /// Routes in the FIB once the load settled.
    pub fib_count: usize,
    pub netlink_overruns: u64,
    /// Churn: CPU over the churn window, FIB changes, and how long after
    /// the last update the FIB settled.
    pub churn: Option<Value>,
    /// With BFD on the injector sessions (`--bfd`): petreld's BFD state
    /// changes (flaps) from Up before the load to the end of the load
    /// (and churn), and its sessions then.
    pub bfd: Option<Value>,
    /// Route reflection (`super::rr`): the first UPDATE sent to the last
    /// client holding every path it should.
    pub clients_seconds: f64,
    /// Route reflection's details: clients, paths, the harness's own CPU.
    pub rr: Option<Value>,
    pub load1: f64,
}

pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(-1.0)
}

fn links(lab: &Lab, sc: &Scenario) -> Result<(Netns, Netns, Netns)> {
    let (dut, inj, mon) = (lab.netns("dut")?, lab.netns("inj")?, lab.netns("mon")?);
    let mut inj_addrs: Vec<String> = (0..sc.peers)
        .flat_map(|k| {
            [
                format!("{}/24", scenario::injector_addr(k, false)),
                format!("{}/64", scenario::injector_addr(k, true)),
            ]
        })
        .collect();
    inj_addrs.push(format!("{}/24", scenario::churn_next_hop(false)));
    inj_addrs.push(format!("{}/64", scenario::churn_next_hop(true)));
    let refs: Vec<&str> = inj_addrs.iter().map(String::as_str).collect();
    lab.link(&dut, &["10.0.0.1/24", "fd00::1/64"], &inj, &refs)?;
    lab.link(
        &dut,
        &["10.1.0.1/24", "fd01::1/64"],
        &mon,
        &["10.1.0.2/24", "fd01::2/64"],
    )?;
    Ok((dut, inj, mon))
}

fn layout(sc: &Scenario, bfd: bool) -> Layout {
    Layout {
        bfd,
        asn: scenario::DUT_AS,
        router_id: "10.0.0.1".into(),
        v6: sc.v6,
        injectors: (0..sc.peers)
            .map(|k| (scenario::injector_addr(k, sc.v6), scenario::injector_as(k)))
            .collect(),
        monitor: Some((
            if sc.v6 { "fd01::2" } else { "10.1.0.2" }.parse().unwrap(),
            scenario::MONITOR_AS,
        )),
        hold: None,
        graceful_restart: None,
        reflector: None,
    }
}

fn dut_addr(v6: bool, monitor: bool) -> std::net::IpAddr {
    match (v6, monitor) {
        (false, false) => "10.0.0.1",
        (true, false) => "fd00::1",
        (false, true) => "10.1.0.1",
        (true, true) => "fd01::1",
    }
    .parse()
    .unwrap()
}

/// Polls `done` every 5 ms (in-memory state only) until it holds; fails
/// if the DUT dies or the phase limit passes.
pub fn wait(dut: &Dut, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(());
        }
        dut.check_alive()?;
        if start.elapsed() > PHASE_LIMIT {
            bail!(
                "{}: {what} not reached within {PHASE_LIMIT:?}",
                dut.kind.name()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until neither the FIB nor the monitor changed for [`QUIET`].
fn settle(dut: &Dut, fib: &FibWatch, mon: &Monitor) -> Result<()> {
    wait(dut, "quiet", || {
        let f = fib.state.lock().unwrap().last_event;
        let m = mon.state.lock().unwrap().last_update;
        Ok([f, m].iter().flatten().all(|t| t.elapsed() >= QUIET))
    })
}

pub fn dut_run(
    kind: Kind,
    sc: &Scenario,
    table: &Table,
    streams: &[Arc<Vec<u8>>],
    churn: &[scenario::Churn],
    bfd: bool,
) -> Result<Measured> {
    let n = table.len();
    let lab = Lab::new(&format!("bench-{}", kind.name()))?;
    let (dut_ns, inj_ns, mon_ns) = links(&lab, sc)?;
    let fib = FibWatch::start(&dut_ns)?;
    if fib.state.lock().unwrap().count != 0 {
        bail!("the DUT's FIB is not empty before the run");
    }
    let l = layout(sc, bfd);
    let dut = Dut::start(kind, &lab, &dut_ns, &l)?;
    // The injectors' BFD endpoint, sessions Up at 300 ms × 3 before the
    // clock starts.
    let bfd_endpoint = if bfd {
        let b = bird::Bird::start(
            &lab,
            &inj_ns,
            &dut::bfd_endpoint_conf(&l, dut_addr(sc.v6, false)),
        )?;
        wait(&dut, "petreld's BFD sessions Up at 900 ms", || {
            let s = dut.bfd_sessions()?;
            Ok(s.len() == l.injectors.len()
                && s.iter()
                    .all(|s| s["state"] == "Up" && s["detection_time_us"] == 900_000))
        })?;
        Some(b)
    } else {
        None
    };
    let flaps = |dut: &Dut| -> Result<u64> {
        Ok(dut
            .bfd_sessions()?
            .iter()
            .filter_map(|s| s["flaps"].as_u64())
            .sum())
    };
    let flaps0 = if bfd { flaps(&dut)? } else { 0 };
    let mon = Monitor::start(peer::establish(
        &mon_ns,
        if sc.v6 { "fd01::2" } else { "10.1.0.2" }.parse()?,
        dut_addr(sc.v6, true),
        scenario::MONITOR_AS,
    )?)?;
    let mut injectors = Vec::new();
    for (k, (addr, asn)) in l.injectors.iter().enumerate() {
        let s = peer::establish(&inj_ns, *addr, dut_addr(sc.v6, false), *asn)
            .with_context(|| format!("injector {k}"))?;
        injectors.push(Injector::new(s)?);
    }
    // Let the DUT finish its own session start-up work (End-of-RIB, timers).
    std::thread::sleep(Duration::from_millis(500));
    let before = dut.stats()?;
    dut.callgrind(Callgrind::Zero)?;
    // A real table loses a few routes to the DUTs' sanity checks (AS
    // loops, martians): 99.9% of it counts as all of it; `fib_count` says
    // how many arrived.
    let goal = if sc.mrt.is_some() { n - n / 1000 } else { n };
    fib.state.lock().unwrap().arm(goal);
    mon.state.lock().unwrap().target = goal;
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for (inj, bytes) in injectors.iter_mut().zip(streams) {
        writers.push(inj.stream(bytes.clone())?);
    }
    wait(&dut, "all prefixes in FIB and monitor", || {
        let f = fib.state.lock().unwrap();
        let m = mon.state.lock().unwrap();
        if let Some(e) = f.error.as_ref().or(m.error.as_ref()) {
            bail!("{e}");
        }
        Ok(f.reached_at.is_some() && m.full_at.is_some())
    })?;
    for w in writers {
        w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    settle(&dut, &fib, &mon)?;
    let loaded = dut.stats()?;
    dut.callgrind(Callgrind::Dump("load"))?;
    let mut m = Measured {
        load1: load1(),
        clients_seconds: f64::NAN,
        ..Measured::default()
    };
    {
        let f = fib.state.lock().unwrap();
        let mo = mon.state.lock().unwrap();
        let since = |t: Option<Instant>| t.map(|t| (t - t0).as_secs_f64()).unwrap_or(f64::NAN);
        m.fib_seconds = since(f.reached_at);
        m.fib_settled_seconds = since(f.last_event);
        m.monitor_seconds = since(mo.full_at);
        m.fib_events = f.events;
        m.fib_count = f.count;
    }
    m.baseline_rss_bytes = before.rss_bytes;
    m.loaded_rss_bytes = loaded.rss_bytes;
    m.loaded_rss_per_route = (loaded.rss_bytes as f64 - before.rss_bytes as f64) / n as f64;
    m.cpu_seconds = loaded.cpu_seconds - before.cpu_seconds;
    m.cpu_user_seconds = loaded.user_seconds - before.user_seconds;

    if !churn.is_empty() {
        let (rate, secs) = sc.churn.unwrap_or((10_000, 60));
        let ev0 = {
            let mut f = fib.state.lock().unwrap();
            f.trace = Some(Vec::new());
            f.events
        };
        let c0 = dut.stats()?;
        // Every injector churns at once, each on a thread of its own.
        let sent: Vec<Vec<Instant>> = std::thread::scope(|s| {
            let runs: Vec<_> = injectors
                .iter_mut()
                .zip(churn)
                .map(|(inj, c)| s.spawn(move || inj.paced(&c.msgs, rate)))
                .collect();
            runs.into_iter()
                .map(|r| {
                    r.join()
                        .map_err(|_| anyhow::anyhow!("churn writer panicked"))?
                })
                .collect::<Result<_>>()
        })?;
        let last = sent.iter().flatten().max().copied().unwrap_or(t0);
        let c_sent = dut.stats()?;
        settle(&dut, &fib, &mon)?;
        let c1 = dut.stats()?;
        dut.callgrind(Callgrind::Dump("churn"))?;
        let mut f = fib.state.lock().unwrap();
        let changes = f.trace.take().unwrap_or_default();
        let probes: Vec<(u128, Instant)> = churn
            .iter()
            .zip(&sent)
            .flat_map(|(c, at)| {
                c.probes
                    .iter()
                    .zip(at)
                    .filter_map(|(p, t)| p.map(|k| (k, *t)))
            })
            .collect();
        let lat = scenario::latencies(&probes, &changes);
        scenario::dump_latencies(&probes, &changes);
        let lag = f
            .last_event
            .map(|t| t.saturating_duration_since(last).as_secs_f64())
            .unwrap_or(f64::NAN);
        m.churn = Some(json!({
            "updates": sent.iter().map(Vec::len).sum::<usize>(), "rate_per_peer": rate,
            "peers": churn.len(), "seconds": secs,
            "cpu_seconds_during": c_sent.cpu_seconds - c0.cpu_seconds,
            "cpu_seconds_total": c1.cpu_seconds - c0.cpu_seconds,
            "cpu_fraction_of_one_core": (c_sent.cpu_seconds - c0.cpu_seconds) / secs as f64,
            "fib_changes": f.events - ev0,
            "fib_lag_after_last_update_seconds": lag,
            "fib_count_after": f.count,
            "latency_probes": probes.len(),
            "latency_matched": lat.len(),
            "latency_ms": scenario::latency_ms(lat),
        }));
    }

    if let Some(b) = &bfd_endpoint {
        let sessions = dut.bfd_sessions()?;
        m.bfd = Some(json!({
            "flaps_during_load": flaps(&dut)? - flaps0,
            "petreld_sessions": sessions,
            "endpoint_sessions": b.birdc("show bfd sessions")?,
        }));
    }

    // Withdrawal: drop every injector session at once.
    let w0 = dut.stats()?;
    fib.state.lock().unwrap().arm(0);
    let t1 = Instant::now();
    for i in injectors {
        i.close();
    }
    wait(&dut, "an empty FIB", || {
        Ok(fib.state.lock().unwrap().reached_at.is_some())
    })?;
    m.withdraw_seconds = fib
        .state
        .lock()
        .unwrap()
        .reached_at
        .map(|t| (t - t1).as_secs_f64())
        .unwrap_or(f64::NAN);
    settle(&dut, &fib, &mon)?;
    let end = dut.stats()?;
    dut.callgrind(Callgrind::Dump("withdraw"))?;
    m.withdraw_cpu_seconds = end.cpu_seconds - w0.cpu_seconds;
    m.peak_rss_bytes = end.hwm_bytes.max(loaded.hwm_bytes);
    m.rss_per_route = (m.peak_rss_bytes as f64 - before.rss_bytes as f64) / n as f64;
    m.netlink_overruns = fib.state.lock().unwrap().overruns;
    mon.close();
    dut.stop();
    drop(fib);
    drop(lab);
    Ok(m)
}

/// Peak of the DUT's processes for a report line.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// The kernel-limit runs, classic then by nexthop id, in one namespace
/// with one route-notification listener.
pub fn kernel_run(sc: &Scenario, table: &Table) -> Result<KernelLimit> {
    let lab = Lab::new("bench-kernel")?;
    let ns = lab.netns("k")?;
    let peer = lab.netns("kp")?;
    let link = lab.link(
        &ns,
        &["10.0.0.1/24", "fd00::1/64"],
        &peer,
        &["10.0.0.11/24", "fd00::11/64"],
    )?;
    let gw = scenario::injector_addr(0, sc.v6);
    let p = Arc::new(table.prefixes.clone());
    // The same route-notification reader as in every DUT's run: the kernel
    // builds and queues a notification per route for each listener (15-25%
    // of the install time in fib-bench --listener), so a limit measured
    // without one is a ceiling no DUT in this harness could reach.
    let watch = FibWatch::start(&ns)?;
    let mut out = KernelLimit::default();
    for nh in [false, true] {
        let (p1, p2) = (p.clone(), p.clone());
        let ifname = link.a.clone();
        let id = nh.then_some(super::kernel::NEXTHOP_ID);
        if nh {
            ns.enter(move || {
                let name = std::ffi::CString::new(ifname)?;
                // SAFETY: a NUL-terminated name.
                let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
                super::kernel::nexthop(gw, ifindex, false)
            })?;
        }
        let (ins, e1) = ns.enter(move || super::kernel::write_all(&p1, gw, false, id))?;
        let (del, e2) = ns.enter(move || super::kernel::write_all(&p2, gw, true, id))?;
        if nh {
            ns.enter(move || super::kernel::nexthop(gw, 0, true))?;
            (out.install_nh_seconds, out.delete_nh_seconds) = (ins, del);
        } else {
            (out.install_seconds, out.delete_seconds) = (ins, del);
        }
        out.errors += e1 + e2;
    }
    drop(watch);
    Ok(out)
}

/// The kernel's limits of one repetition ([`kernel_run`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelLimit {
    /// Routes carrying their next hop.
    pub install_seconds: f64,
    pub delete_seconds: f64,
    /// Routes by the id of one nexthop object.
    pub install_nh_seconds: f64,
    pub delete_nh_seconds: f64,
    pub errors: usize,
}

/// The injectors alone against a sink: seconds from Established until the
/// sink has read every octet of every stream (streams sent one after the
/// other on one session).
pub fn sink_run(streams: &[Arc<Vec<u8>>]) -> Result<f64> {
    let lab = Lab::new("bench-sink")?;
    let (a, b) = (lab.netns("inj")?, lab.netns("sink")?);
    lab.link(&a, &["10.0.0.11/24"], &b, &["10.0.0.1/24"])?;
    let all: Arc<Vec<u8>> = Arc::new(streams.iter().flat_map(|s| s.iter().copied()).collect());
    let h = peer::sink(&b, "10.0.0.1".parse()?, scenario::DUT_AS, all.len())?;
    let s = peer::establish(
        &a,
        "10.0.0.11".parse()?,
        "10.0.0.1".parse()?,
        scenario::injector_as(0),
    )?;
    let mut inj = Injector::new(s)?;
    let t0 = Instant::now();
    let w = inj.stream(all)?;
    let done = h.join().map_err(|_| anyhow::anyhow!("sink panicked"))??;
    w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    inj.close();
    Ok((done - t0).as_secs_f64())
}

/// Summary helpers: (median, min, max) of finite values.
pub fn median_min_max(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    let med = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    Some((med, v[0], v[v.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_failed_runs() {
        assert_eq!(median_min_max(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(
            median_min_max(&[4.0, f64::NAN, 1.0, 2.0, 3.0]),
            Some((2.5, 1.0, 4.0))
        );
        assert_eq!(median_min_max(&[f64::NAN]), None);
    }
}
