//! The route-reflection run (issue 17, scenario `rr64`): the DUT is an
//! iBGP route reflector (RFC 4456) for C clients in its own AS, all in
//! namespace `inj` (10.0.0.11+). Clients 0..4 are also the sources: each
//! announces the same N IPv4 prefixes with a path of its own (see
//! [`scenario::rr_best`]), so the reflector holds 4 paths per prefix.
//!
//! What each client should end with, per prefix:
//! - without ADD-PATH, the best path (named by its source's next hop);
//! - with ADD-PATH (RFC 7911, clients receive, the DUT sends all), every
//!   source's path.
//!
//! except, at a source, its own path. RFC 4456 §6 reflects a client's
//! route to every client, and §8 has the originator ignore it (its BGP
//! Identifier in ORIGINATOR_ID); the daemons do not send a route back to
//! the peer it came from at all. So a source's own path is not required:
//! holding it or not both count as right, and a copy reflected back is
//! counted (`reflected_back`). A source whose own path is best ends with
//! nothing for that prefix (a path it held before its own won must have
//! been withdrawn).
//!
//! Clients count from the raw UPDATE octets into one byte per prefix (the
//! source held, or a bit per source with ADD-PATH, plus the path ids for
//! withdrawals), and a running count of prefixes already as they should
//! end; a reader thread per client, no maps. The clock starts when every
//! session is Established and the sources begin to stream; it stops when
//! the last client holds exactly what it should. The DUT installs nothing
//! into the kernel here (reflectors in clusters often do not; the same for
//! every DUT: petreld `fib.enabled = false`, BIRD without a kernel
//! protocol, FRR's bgpd with `-n`).

use super::dut::{Dut, Kind, Layout};
use super::encode;
use super::peer::{self, read_message};
use super::run::{load1, Measured};
use super::scenario::{self, Scenario};
use super::table::Table;
use anyhow::{bail, Context, Result};
use petrel_tests::lab::Lab;
use serde_json::json;
use std::io::Write;
use std::net::{IpAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the DUT may take to reflect everything before the run fails.
const LIMIT: Duration = Duration::from_secs(1200);
/// No UPDATE at any client for this long: settled.
const QUIET: Duration = Duration::from_secs(2);
/// No path held for a prefix (without ADD-PATH).
const NONE: u8 = 0xff;
/// Reflected churn (`--rr-churn`): prefixes source 0 withdraws and then
/// announces again, and the one-prefix UPDATEs a second it sends them at
/// (10 s in all).
const CHURN_PREFIXES: usize = 5000;
const CHURN_RATE: u32 = 1000;

/// What a client should hold, shared by all.
pub struct Expect {
    /// Per prefix, the source of the best path.
    pub best: Vec<u8>,
    pub sources: usize,
    pub add_path: bool,
}

impl Expect {
    /// Whether client `c` holds prefix `i` as it should at the end; `v` is
    /// the source held (or [`NONE`]), with ADD-PATH a bit per source.
    fn ok(&self, c: usize, i: usize, v: u8) -> bool {
        let own = if c < self.sources { 1u8 << c } else { 0 };
        if self.add_path {
            let all = ((1u16 << self.sources) - 1) as u8;
            v | own == all
        } else {
            let b = self.best[i];
            // Its own best: nothing (or its own path, which `v == b` takes).
            v == b || (b as usize == c && v == NONE)
        }
    }
}

/// One client's progress, read by the main thread.
#[derive(Default)]
pub struct Progress {
    /// Prefixes held as they should end.
    pub good: AtomicUsize,
    pub updates: AtomicU64,
    /// NLRI announced to this client (paths, with ADD-PATH).
    pub paths: AtomicU64,
    /// Paths of its own reflected back to a source client (NLRI).
    pub reflected_back: AtomicU64,
    /// The last instant `good` reached N (it may drop again while the DUT
    /// converges, so the last time counts).
    pub complete_at: Mutex<Option<Instant>>,
    pub last_update: Mutex<Option<Instant>>,
    pub error: Mutex<Option<String>>,
    /// While set, the reader stamps each prefix whose path it holds
    /// changes (`trace`: prefix index, read instant): the reflected churn.
    pub tracing: AtomicBool,
    pub trace: Mutex<Vec<(u128, Instant)>>,
}

/// Per-client state of the reader: what it holds per prefix.
struct Held {
    c: usize,
    v: Vec<u8>,
    /// With ADD-PATH: the path id of each source's path per prefix.
    ids: Vec<[u32; 4]>,
    good: usize,
    /// Prefixes whose value changed, while tracing.
    tracing: bool,
    changed: Vec<usize>,
}

impl Held {
    fn new(c: usize, e: &Expect) -> Held {
        let n = e.best.len();
        let init = if e.add_path { 0 } else { NONE };
        let v = vec![init; n];
        let good = (0..n).filter(|&i| e.ok(c, i, init)).count();
        Held {
            c,
            v,
            ids: if e.add_path {
                vec![[0; 4]; n]
            } else {
                Vec::new()
            },
            good,
            tracing: false,
            changed: Vec::new(),
        }
    }

    fn set(&mut self, e: &Expect, i: usize, v: u8) {
        let was = e.ok(self.c, i, self.v[i]);
        if self.tracing && self.v[i] != v {
            self.changed.push(i);
        }
        self.v[i] = v;
        let is = e.ok(self.c, i, v);
        self.good = self.good + is as usize - was as usize;
    }

    /// An announcement of prefix `i` from source `s` (path id `id`).
    fn announce(&mut self, e: &Expect, i: usize, s: usize, id: u32) {
        if e.add_path {
            let mut m = self.v[i];
            // RFC 7911 §3: the same (prefix, path id) replaces that path.
            for t in 0..e.sources {
                if m & (1 << t) != 0 && self.ids[i][t] == id {
                    m &= !(1 << t);
                }
            }
            self.ids[i][s] = id;
            self.set(e, i, m | 1 << s);
        } else {
            self.set(e, i, s as u8);
        }
    }

    fn withdraw(&mut self, e: &Expect, i: usize, id: u32) {
        if e.add_path {
            let mut m = self.v[i];
            for t in 0..e.sources {
                if m & (1 << t) != 0 && self.ids[i][t] == id {
                    m &= !(1 << t);
                }
            }
            self.set(e, i, m);
        } else {
            self.set(e, i, NONE);
        }
    }
}

/// The index of a synthetic IPv4 prefix ([`super::table::v4_prefix`]:
/// /24s from 16.0.0.0) from its NLRI octets.
fn prefix_index(len: u8, octets: &[u8], n: usize) -> Option<usize> {
    if len != 24 || octets.len() != 3 {
        return None;
    }
    let a = u32::from_be_bytes([octets[0], octets[1], octets[2], 0]);
    let i = (a.checked_sub(16 << 24)? >> 8) as usize;
    (i < n).then_some(i)
}

/// Walks an IPv4 NLRI field (with 4-octet path ids under ADD-PATH, RFC
/// 7911 §3), calling `f(index, path id)`.
fn walk(
    mut nlri: &[u8],
    add_path: bool,
    n: usize,
    mut f: impl FnMut(usize, u32),
) -> Result<(), String> {
    while !nlri.is_empty() {
        let mut id = 0;
        if add_path {
            let b = nlri.get(..4).ok_or("truncated path id")?;
            id = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            nlri = &nlri[4..];
        }
        let (&len, rest) = nlri.split_first().ok_or("truncated NLRI")?;
        let k = (len as usize).div_ceil(8);
        let octets = rest.get(..k).ok_or("truncated prefix")?;
        let i = prefix_index(len, octets, n)
            .ok_or_else(|| format!("unexpected prefix /{len} {octets:?}"))?;
        f(i, id);
        nlri = &rest[k..];
    }
    Ok(())
}

/// Applies one UPDATE body to `h`; returns the NLRI announced.
fn apply(h: &mut Held, e: &Expect, body: &[u8], back: &mut u64) -> Result<u64, String> {
    let n = e.best.len();
    let g = |r: std::ops::Range<usize>| body.get(r).ok_or("truncated UPDATE");
    let wl = u16::from_be_bytes(g(0..2)?.try_into().unwrap_or_default()) as usize;
    walk(g(2..2 + wl)?, e.add_path, n, |i, id| h.withdraw(e, i, id))?;
    let p = 2 + wl;
    let al = u16::from_be_bytes(g(p..p + 2)?.try_into().unwrap_or_default()) as usize;
    let mut attrs = g(p + 2..p + 2 + al)?;
    let nlri = &body[p + 2 + al..];
    if nlri.is_empty() {
        return Ok(0);
    }
    let mut source = None;
    while let [flags, code, rest @ ..] = attrs {
        let (len, rest) = if flags & 0x10 != 0 {
            let l = rest.get(..2).ok_or("truncated attribute")?;
            (u16::from_be_bytes([l[0], l[1]]) as usize, &rest[2..])
        } else {
            let (&l, r) = rest.split_first().ok_or("truncated attribute")?;
            (l as usize, r)
        };
        let v = rest.get(..len).ok_or("truncated attribute")?;
        match *code {
            // The reflector keeps the source's NEXT_HOP (iBGP, RFC 4456
            // §10 does not change it): it names the path.
            3 if v.len() == 4 => {
                let k = (v[3] as usize).wrapping_sub(11);
                if v[..3] != [10, 0, 0] || k >= e.sources {
                    return Err(format!("next hop {v:?} is no source's"));
                }
                source = Some(k);
            }
            14 | 15 => return Err("MP_REACH/MP_UNREACH on an IPv4 session".into()),
            _ => {}
        }
        attrs = &rest[len..];
    }
    let s = source.ok_or("an announcement without NEXT_HOP")?;
    let mut count = 0;
    walk(nlri, e.add_path, n, |i, id| {
        h.announce(e, i, s, id);
        count += 1;
    })?;
    if s == h.c {
        *back += count;
    }
    Ok(count)
}

/// One established client: its counting reader, keepalives, and (for a
/// source) its stream.
pub struct Client {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    pub progress: Arc<Progress>,
    reader: JoinHandle<()>,
}

impl Client {
    /// A source's keepalives start when its stream is written (see
    /// [`Client::send`]): two writers on one socket would interleave.
    pub fn start(c: usize, stream: TcpStream, e: Arc<Expect>, source: bool) -> Result<Client> {
        let stop = Arc::new(AtomicBool::new(false));
        if !source {
            drop(peer::keepalives(stream.try_clone()?, stop.clone()));
        }
        let progress = Arc::new(Progress::default());
        let (p, s) = (progress.clone(), stream.try_clone()?);
        let reader = std::thread::spawn(move || read_loop(c, s, &e, &p));
        Ok(Client {
            stream,
            stop,
            progress,
            reader,
        })
    }

    /// Writes `bytes` on a thread; the handle gives the instant the last
    /// one was accepted by the kernel.
    pub fn send(&self, bytes: Arc<Vec<u8>>) -> Result<JoinHandle<Result<Instant>>> {
        let mut s = self.stream.try_clone()?;
        let ka = self.stream.try_clone()?;
        let stop = self.stop.clone();
        Ok(std::thread::spawn(move || {
            s.write_all(&bytes).context("source write")?;
            let done = Instant::now();
            // Detached: ends with `stop` or with the socket.
            drop(peer::keepalives(ka, stop));
            Ok(done)
        }))
    }

    /// Writes `msgs` paced ([`peer::write_paced`]) beside the keepalives
    /// [`Client::send`] left running: each is one `write` of a burst or
    /// a KEEPALIVE, which the kernel queues whole on a socket with room.
    pub fn paced(&self, msgs: &[Vec<u8>], per_second: u32) -> Result<Vec<Instant>> {
        peer::write_paced(&mut self.stream.try_clone()?, msgs, per_second)
    }

    pub fn close(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.reader.join();
    }
}

fn read_loop(c: usize, s: TcpStream, e: &Expect, p: &Progress) {
    let fail = |m: String| {
        p.error.lock().unwrap().get_or_insert(m);
    };
    let n = e.best.len();
    let mut h = Held::new(c, e);
    p.good.store(h.good, Ordering::Relaxed);
    let mut r = std::io::BufReader::with_capacity(1 << 18, s);
    loop {
        let (kind, body) = match read_message(&mut r) {
            Ok(m) => m,
            Err(err) => return fail(format!("client {c}: read: {err:#}")),
        };
        match kind {
            2 => {}
            3 => {
                return fail(format!(
                    "client {c}: NOTIFICATION code {} subcode {}",
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0)
                ))
            }
            _ => continue,
        }
        let was_complete = h.good == n;
        h.tracing = p.tracing.load(Ordering::Relaxed);
        let mut back = 0;
        match apply(&mut h, e, &body, &mut back) {
            Ok(k) => {
                p.paths.fetch_add(k, Ordering::Relaxed);
            }
            Err(m) => return fail(format!("client {c}: {m}")),
        }
        let now = Instant::now();
        if !h.changed.is_empty() {
            let mut t = p.trace.lock().unwrap();
            t.extend(h.changed.iter().map(|&i| (i as u128, now)));
            h.changed.clear();
        }
        p.reflected_back.fetch_add(back, Ordering::Relaxed);
        p.updates.fetch_add(1, Ordering::Relaxed);
        p.good.store(h.good, Ordering::Relaxed);
        *p.last_update.lock().unwrap() = Some(now);
        if h.good == n && !was_complete {
            *p.complete_at.lock().unwrap() = Some(now);
        }
    }
}

/// The DUT's layout for route reflection: every client an iBGP peer.
pub fn layout(clients: usize, add_path: bool, fib: bool) -> Layout {
    Layout {
        asn: scenario::DUT_AS,
        router_id: "10.0.0.1".into(),
        v6: false,
        injectors: (0..clients)
            .map(|k| (scenario::injector_addr(k, false), scenario::DUT_AS))
            .collect(),
        // None: the clients are the monitors.
        monitor: None,
        hold: None,
        graceful_restart: None,
        bfd: false,
        reflector: Some(super::dut::Reflector { add_path, fib }),
    }
}

/// CPU seconds (user + system) of this process: the harness's own cost.
fn own_cpu() -> f64 {
    super::dut::proc_stats(std::process::id())
        .map(|s| s.cpu_seconds)
        .unwrap_or(f64::NAN)
}

/// One repetition of the route-reflection scenario against `kind`.
pub fn rr_run(
    kind: Kind,
    sc: &Scenario,
    table: &Table,
    streams: &[Arc<Vec<u8>>],
    add_path: bool,
    fib: bool,
    churn: bool,
) -> Result<Measured> {
    let clients = sc.rr_clients.context("not a route-reflection scenario")?;
    // A bit per source in a byte, a path id slot per source.
    if sc.peers > 4 {
        bail!("route reflection counts at most 4 sources");
    }
    let n = table.len();
    let lab = Lab::new(&format!("bench-rr-{}", kind.name()))?;
    let (dut_ns, inj_ns) = (lab.netns("dut")?, lab.netns("inj")?);
    let addrs: Vec<String> = (0..clients)
        .map(|k| format!("{}/24", scenario::injector_addr(k, false)))
        .collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    lab.link(&dut_ns, &["10.0.0.1/24"], &inj_ns, &refs)?;
    let l = layout(clients, add_path, fib);
    let dut = Dut::start(kind, &lab, &dut_ns, &l)?;
    let e = Arc::new(Expect {
        best: scenario::rr_best(table, sc.peers),
        sources: sc.peers,
        add_path,
    });
    let dut_addr: IpAddr = "10.0.0.1".parse()?;
    let mut cs = Vec::new();
    let opts = encode::OpenOpts {
        add_path_receive: add_path,
        ..encode::OpenOpts::default()
    };
    for (k, (addr, asn)) in l.injectors.iter().enumerate() {
        let (s, open) = peer::establish_with(&inj_ns, *addr, dut_addr, *asn, opts)
            .with_context(|| format!("client {k}"))?;
        if add_path && encode::open_sends_add_path_v4(&open) != Some(true) {
            bail!(
                "{}: its OPEN to client {k} offers no ADD-PATH send",
                kind.name()
            );
        }
        cs.push(Client::start(k, s, e.clone(), k < sc.peers)?);
    }
    // Let the DUT finish its own session start-up work (End-of-RIB, timers).
    std::thread::sleep(Duration::from_millis(500));
    let before = dut.stats()?;
    let cpu0 = own_cpu();
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for (c, bytes) in cs.iter().zip(streams) {
        writers.push(c.send(bytes.clone())?);
    }
    let check = |cs: &[Client]| -> Result<bool> {
        for c in cs {
            if let Some(err) = c.progress.error.lock().unwrap().as_ref() {
                bail!("{err}");
            }
        }
        Ok(cs
            .iter()
            .all(|c| c.progress.good.load(Ordering::Relaxed) == n))
    };
    let wait = |what: &str, done: &mut dyn FnMut() -> Result<bool>| -> Result<()> {
        loop {
            if done()? {
                return Ok(());
            }
            dut.check_alive()?;
            if t0.elapsed() > LIMIT {
                let short: Vec<String> = cs
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.progress.good.load(Ordering::Relaxed) != n)
                    .take(8)
                    .map(|(k, c)| {
                        format!("client {k}: {}", c.progress.good.load(Ordering::Relaxed))
                    })
                    .collect();
                bail!(
                    "{}: {what} not reached within {LIMIT:?} (of {n}: {})",
                    kind.name(),
                    short.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait("every client complete", &mut || check(&cs))?;
    let mut sent_at = Vec::new();
    for w in writers {
        sent_at.push(w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??);
    }
    let quiet = || {
        Ok(cs.iter().all(|c| {
            c.progress
                .last_update
                .lock()
                .unwrap()
                .is_none_or(|t| t.elapsed() >= QUIET)
        }))
    };
    wait("quiet", &mut || quiet())?;
    let cpu1 = own_cpu();
    // Still complete once quiet: the last completion instant is the time.
    if !check(&cs)? {
        bail!("{}: a client lost paths after completing", kind.name());
    }
    let loaded = dut.stats()?;
    let since = |t: Instant| (t - t0).as_secs_f64();
    let done: Vec<f64> = cs
        .iter()
        .map(|c| {
            c.progress
                .complete_at
                .lock()
                .unwrap()
                .map(since)
                .unwrap_or(0.0)
        })
        .collect();
    let sum = |f: &dyn Fn(&Progress) -> u64| -> u64 { cs.iter().map(|c| f(&c.progress)).sum() };
    let per_client = if add_path { sc.peers } else { 1 };
    let mut m = Measured {
        load1: load1(),
        fib_seconds: f64::NAN,
        fib_settled_seconds: f64::NAN,
        monitor_seconds: f64::NAN,
        withdraw_seconds: f64::NAN,
        withdraw_cpu_seconds: f64::NAN,
        clients_seconds: done.iter().copied().fold(0.0, f64::max),
        ..Measured::default()
    };
    m.baseline_rss_bytes = before.rss_bytes;
    m.loaded_rss_bytes = loaded.rss_bytes;
    m.peak_rss_bytes = loaded.hwm_bytes;
    let paths_held = (n * (clients * per_client)) as f64;
    m.rss_per_route = (m.peak_rss_bytes as f64 - before.rss_bytes as f64) / paths_held;
    m.loaded_rss_per_route = (loaded.rss_bytes as f64 - before.rss_bytes as f64) / paths_held;
    m.cpu_seconds = loaded.cpu_seconds - before.cpu_seconds;
    m.cpu_user_seconds = loaded.user_seconds - before.user_seconds;
    m.rr = Some(json!({
        "clients": clients,
        "sources": sc.peers,
        "add_path": add_path,
        "first_client_seconds": done.iter().copied().fold(f64::INFINITY, f64::min),
        "sources_sent_seconds": sent_at.iter().map(|t| since(*t)).fold(0.0, f64::max),
        "paths_received": sum(&|p| p.paths.load(Ordering::Relaxed)),
        "updates_received": sum(&|p| p.updates.load(Ordering::Relaxed)),
        "reflected_back": sum(&|p| p.reflected_back.load(Ordering::Relaxed)),
        "harness_cpu_seconds": cpu1 - cpu0,
    }));
    if churn {
        let report = reflected_churn(
            &cs,
            &e,
            table,
            sc,
            &dut,
            &mut |what, done| wait(what, done),
            &quiet,
        )?;
        if let Some(r) = m.rr.as_mut() {
            r["churn"] = report;
        }
    }
    for c in cs {
        c.close();
    }
    dut.stop();
    drop(lab);
    Ok(m)
}

/// Reflected churn, after the tables: source 0 withdraws
/// [`CHURN_PREFIXES`] prefixes whose best path is its own, then announces
/// them again, one prefix per UPDATE at [`CHURN_RATE`] a second. Each
/// UPDATE moves the prefix's best path at every client (RFC 4456 §6: a
/// client's route is reflected to all clients). Latency: from the write
/// of an UPDATE's 10 ms burst to the last client's (not a source) read of
/// that prefix's change; what a node behind a reflector waits for a
/// change another node makes.
#[allow(clippy::type_complexity)]
fn reflected_churn(
    cs: &[Client],
    e: &Expect,
    table: &Table,
    sc: &Scenario,
    dut: &Dut,
    wait: &mut dyn FnMut(&str, &mut dyn FnMut() -> Result<bool>) -> Result<()>,
    quiet: &dyn Fn() -> Result<bool>,
) -> Result<serde_json::Value> {
    let n = table.len();
    let picked: Vec<usize> = (0..n)
        .filter(|&i| e.best[i] == 0)
        .take(CHURN_PREFIXES)
        .collect();
    let pre = scenario::prepend(sc.peers, 0);
    let view = encode::PeerView {
        asn: scenario::injector_as(0),
        local_pref: Some(scenario::RR_LOCAL_PREF),
        next_hop: scenario::injector_addr(0, false),
        prepend: &pre,
    };
    let mut msgs: Vec<Vec<u8>> = picked
        .iter()
        .map(|&i| encode::withdraw_one_v4(&table.prefixes[i]))
        .collect();
    msgs.extend(picked.iter().map(|&i| {
        let id = table.attr_of[i];
        encode::announce_one(&table.prefixes[i], &table.attrs[id as usize], &view, id)
    }));
    let watch = &cs.last().context("no client")?.progress;
    watch.tracing.store(true, Ordering::Relaxed);
    let c0 = dut.stats()?;
    let sent = cs[0].paced(&msgs, CHURN_RATE)?;
    wait("quiet after the churn", &mut || quiet())?;
    let c1 = dut.stats()?;
    watch.tracing.store(false, Ordering::Relaxed);
    let all = cs
        .iter()
        .all(|c| c.progress.good.load(Ordering::Relaxed) == n);
    if !all {
        bail!("a client does not hold the tables again after the churn");
    }
    let trace = std::mem::take(&mut *watch.trace.lock().unwrap());
    let keys = picked.iter().chain(&picked).map(|&i| i as u128);
    let probes: Vec<(u128, Instant)> = keys.zip(sent).collect();
    let lat = scenario::latencies(&probes, &trace);
    scenario::dump_latencies(&probes, &trace);
    Ok(json!({
        "source": 0,
        "updates": msgs.len(),
        "rate": CHURN_RATE,
        "changes_seen": trace.len(),
        "latency_probes": probes.len(),
        "latency_matched": lat.len(),
        "latency_ms": scenario::latency_ms(lat),
        "cpu_seconds": c1.cpu_seconds - c0.cpu_seconds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(add_path: bool) -> Expect {
        // Prefix 0's best from source 1, prefix 1's from source 0.
        Expect {
            best: vec![1, 0],
            sources: 4,
            add_path,
        }
    }

    /// An UPDATE body: withdrawn NLRI, NEXT_HOP 10.0.0.(11 + source), NLRI.
    fn body(withdrawn: &[u8], source: u8, nlri: &[u8]) -> Vec<u8> {
        let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(withdrawn);
        let attrs = [0x40, 1, 1, 0, 0x40, 3, 4, 10, 0, 0, 11 + source];
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(&attrs);
        b.extend_from_slice(nlri);
        b
    }

    const P0: [u8; 4] = [24, 16, 0, 0];
    const P1: [u8; 4] = [24, 16, 0, 1];

    #[test]
    fn best_path_counting_per_client() {
        let e = expect(false);
        let mut back = 0;
        // Client 9 (no source) needs both prefixes from their best source.
        let mut h = Held::new(9, &e);
        assert_eq!(h.good, 0);
        apply(&mut h, &e, &body(&[], 0, &[P0, P1].concat()), &mut back).unwrap();
        assert_eq!(h.good, 1, "prefix 0 from source 0 is not its best");
        apply(&mut h, &e, &body(&[], 1, &P0), &mut back).unwrap();
        assert_eq!(h.good, 2);
        apply(&mut h, &e, &body(&P1, 1, &[]), &mut back).unwrap();
        assert_eq!(h.good, 1, "withdrawn");
        // Source 0 wins prefix 1: holding nothing for it is right, and so
        // is its own path reflected back (counted).
        let mut h = Held::new(0, &e);
        assert_eq!(h.good, 1);
        apply(&mut h, &e, &body(&[], 0, &[P0, P1].concat()), &mut back).unwrap();
        assert_eq!((h.good, back), (1, 2), "two paths of its own back");
        apply(&mut h, &e, &body(&[], 1, &P0), &mut back).unwrap();
        assert_eq!(h.good, 2);
    }

    #[test]
    fn add_path_counting_with_ids_and_replacement() {
        let e = expect(true);
        let mut back = 0;
        let with_id = |id: u32, p: [u8; 4]| [&id.to_be_bytes()[..], &p[..]].concat();
        let mut h = Held::new(2, &e);
        for s in [0, 1, 3] {
            apply(
                &mut h,
                &e,
                &body(&[], s, &with_id(s as u32 + 7, P0)),
                &mut back,
            )
            .unwrap();
        }
        assert_eq!(h.good, 1, "all but its own for prefix 0");
        // Path id 8 (source 1's) now names source 3's path: 1 is gone.
        apply(&mut h, &e, &body(&[], 3, &with_id(8, P0)), &mut back).unwrap();
        assert_eq!((h.good, h.v[0]), (0, 0b1001));
        apply(&mut h, &e, &body(&[], 1, &with_id(9, P0)), &mut back).unwrap();
        assert_eq!(h.good, 1);
        apply(&mut h, &e, &body(&with_id(7, P0), 0, &[]), &mut back).unwrap();
        assert_eq!((h.good, h.v[0]), (0, 0b1010));
        assert_eq!(back, 0);
    }

    #[test]
    fn foreign_prefixes_and_next_hops_are_errors() {
        let e = expect(false);
        let mut h = Held::new(9, &e);
        let mut back = 0;
        assert!(apply(&mut h, &e, &body(&[], 0, &[24, 16, 0, 2]), &mut back).is_err());
        assert!(apply(&mut h, &e, &body(&[], 4, &P0), &mut back).is_err());
        assert!(apply(&mut h, &e, &body(&[], 0, &[16, 16, 0]), &mut back).is_err());
    }
}
