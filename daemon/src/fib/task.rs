//! The FIB writer's task in petreld: the one owner of the [`Fib`]. It takes
//! the speaker's Loc-RIB batches, the node's blackhole set, commands (show,
//! MTU change, liveness ping) and netlink route events, one at a time, so
//! the Fib needs no lock.
//!
//! The Fib blocks in netlink system calls, so the task runs on a thread of
//! its own (a single-threaded runtime that runs nothing else). Every
//! channel is bounded: a full command channel makes the sender wait, which
//! is the back-pressure the speaker's Loc-RIB stream already has.

use super::msg::LinkInfo;
use super::{Event, Fib, FibConfig, FibCounters, Held, Monitor};
use crate::control::FibRow;
use crate::health::Health;
use petrel_bgp::rib::{FibChange, Via};
use petrel_bgp::speaker::FibStream;
use petrel_bgp::wire::Prefix;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

/// Requests to the FIB task.
#[derive(Debug)]
pub enum Command {
    /// The routes held, for `petrelctl show fib`.
    Show(oneshot::Sender<Vec<FibRow>>),
    /// A new route MTU: every route is re-installed with it.
    SetMtu(Option<u32>),
    /// Answers at once: proves the task is not stuck (watchdog).
    Ping(oneshot::Sender<()>),
    /// BGP has converged (End-of-RIB from the graceful-restart peers, after
    /// the cluster's first sync): sweep the routes of a previous run now
    /// rather than at the `sweep_after` timeout.
    Converged,
}

/// Commands waiting for the task; senders wait when it is full.
const COMMANDS: usize = 16;
/// Loc-RIB changes taken from the queue for one `Fib::apply` at most.
const COALESCE: usize = 4096;
/// Loc-RIB batches taken from the queue per receive at most (the
/// speaker's queue holds 64).
const COALESCE_BATCHES: usize = 64;
/// Deletes the Fib holds back (a peer's routes going, to be removed with
/// their nexthop object: `Fib::apply`) are sent one by one once no batch
/// came for this long: the burst is over without every route of the next
/// hop gone. Not shorter: on a loaded machine the speaker's sweep of a
/// dead peer's table paused up to ~100 ms between batches, and 20 ms let
/// two thirds of a full table go one by one (docs/benchmarks/history.md).
const HOLD_IDLE: Duration = Duration::from_millis(250);
/// ... or once the oldest has waited this long: a withdrawal that never
/// ends (routes of a next hop flapping without a pause, or a full feed's
/// steady churn, which can keep a hold going) still reaches the kernel
/// soon. This bounds how long a withdrawn route may stay in the kernel
/// behind the RIB. Above a full table's sweep by the speaker on a quiet
/// machine (1M routes: about a second); on a loaded one (3 s and more)
/// part of the table goes route by route, as before the hold existed.
const HOLD_MAX: Duration = Duration::from_secs(2);
/// ... except while the speaker marks a dead peer's sweep as under way
/// (`FibStream::sweeping`): its end is then known, not guessed from a
/// pause, and is waited for up to this long. On a loaded machine the
/// sweep of a full table paused longer than `HOLD_IDLE`, or outlasted
/// `HOLD_MAX`, in three of six runs, and the rest of the table went route
/// by route (1M IPv4: ~6 s instead of ~2, docs/benchmarks/history.md,
/// ninth round). The bound only guards against a mark that never comes.
const HOLD_SWEEP_MAX: Duration = Duration::from_secs(10);
/// Held deletes sent per turn of the loop once released: commands (the
/// watchdog's ping) are answered between turns.
const RELEASE_CHUNK: usize = 16384;

/// The daemon's side of the FIB task: the channels to it and its counters.
#[derive(Clone)]
pub struct FibTask {
    tx: mpsc::Sender<Command>,
    pub counters: Arc<FibCounters>,
    /// Routes in the FIB (or in the Loc-RIB when the FIB is disabled).
    pub routes: Arc<AtomicUsize>,
}

impl FibTask {
    pub async fn show(&self) -> Option<Vec<FibRow>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Show(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn set_mtu(&self, mtu: Option<u32>) {
        let _ = self.tx.send(Command::SetMtu(mtu)).await;
    }

    /// See [`Command::Converged`].
    pub async fn converged(&self) {
        let _ = self.tx.send(Command::Converged).await;
    }

    /// Whether the task answered.
    pub async fn ping(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Ping(tx)).await.is_ok() && rx.await.is_ok()
    }
}

/// How the task runs.
pub struct Settings {
    /// `None`: the FIB is disabled; Loc-RIB batches are only counted.
    pub fib: Option<FibConfig>,
    /// Routes of a previous run are swept after this long.
    pub sweep_after: Duration,
}

/// Opens the Fib (and its event monitor), dumps the routes of a previous
/// run, marks [`Health::set_fib_ok`], and spawns the task.
pub fn spawn(
    settings: Settings,
    loc_rib: FibStream,
    blackholes: Option<mpsc::Receiver<BTreeSet<Prefix>>>,
    health: Arc<Health>,
) -> anyhow::Result<FibTask> {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let routes = Arc::new(AtomicUsize::new(0));
    let Some(fcfg) = settings.fib else {
        let h = FibTask {
            tx,
            counters: Arc::default(),
            routes: routes.clone(),
        };
        loc_rib.unpaced();
        tokio::spawn(count_only(loc_rib, rx, blackholes, routes));
        health.set_fib_ok();
        return Ok(h);
    };
    if let Err(e) = super::write_rt_protos_name("petrel", fcfg.protocol) {
        warn!(error = %e, "cannot name petrel's route protocol in /etc/iproute2/rt_protos.d");
    }
    let mut fib = Fib::open(fcfg).map_err(|e| {
        anyhow::anyhow!("cannot open netlink for the kernel FIB (CAP_NET_ADMIN needed): {e}")
    })?;
    // Before the dump: no change is missed in between.
    let monitor =
        Monitor::open().map_err(|e| anyhow::anyhow!("cannot watch netlink route events: {e}"))?;
    if let Err(e) = monitor.ignore_sender(fib.port()) {
        warn!(error = %e, "cannot filter our own route notifications; reading them all");
    }
    // Again now that the monitor listens: a link change since the open is
    // either in this dump or in the monitor's stream.
    fib.refresh_links()
        .map_err(|e| anyhow::anyhow!("cannot read the links and addresses: {e}"))?;
    let stale = fib
        .dump_own()
        .map_err(|e| anyhow::anyhow!("cannot dump petrel's kernel routes: {e}"))?
        .len();
    info!(
        stale,
        nexthop_objects = fib.nexthop_objects(),
        "kernel routes of a previous run kept until convergence"
    );
    health.set_fib_ok();
    let h = FibTask {
        tx,
        counters: fib.counters(),
        routes: routes.clone(),
    };
    // The writer gets a thread of its own: its netlink calls are the
    // longest CPU-bound work in petreld (the kernel installs routes inside
    // them), and on a thread of the shared runtime each one would hand the
    // worker's other tasks (the speaker) to another thread and back.
    let sweep_after = settings.sweep_after;
    std::thread::Builder::new()
        .name("petrel-fib".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the FIB writer's runtime");
                    return;
                }
            };
            rt.block_on(run(
                fib,
                monitor,
                sweep_after,
                loc_rib,
                rx,
                blackholes,
                routes,
            ));
        })
        .map_err(|e| anyhow::anyhow!("cannot start the FIB writer thread: {e}"))?;
    Ok(h)
}

fn log_report(r: &super::Report) {
    for e in &r.errors {
        warn!(prefix = %e.prefix, errno = e.errno, message = e.message.as_deref().unwrap_or(""), "kernel refused a route");
    }
}

async fn run(
    mut fib: Fib,
    mut monitor: Monitor,
    sweep_after: Duration,
    mut loc_rib: FibStream,
    mut commands: mpsc::Receiver<Command>,
    mut blackholes: Option<mpsc::Receiver<BTreeSet<Prefix>>>,
    routes: Arc<AtomicUsize>,
) {
    let counters = fib.counters();
    let sweep = tokio::time::sleep(sweep_after);
    tokio::pin!(sweep);
    let mut swept = false;
    let mut own_blackholes: BTreeSet<Prefix> = BTreeSet::new();
    // Link up/down by ifindex, to tell a link coming back from a new one
    // (every pod's veth is a new link; it needs no re-install).
    let mut links_up: HashMap<u32, bool> = HashMap::new();
    // When the Fib began holding deletes, and when the last batch came.
    let mut held_since: Option<tokio::time::Instant> = None;
    let mut last_batch = tokio::time::Instant::now();
    let mut queued: Vec<Vec<FibChange>> = Vec::with_capacity(COALESCE_BATCHES);
    loop {
        let release_at = release_at(held_since, last_batch, loc_rib.sweeping());
        tokio::select! {
            _ = tokio::time::sleep_until(release_at.unwrap_or(last_batch)), if release_at.is_some() => {
                match fib.release_held(RELEASE_CHUNK) {
                    Ok(r) => log_report(&r),
                    Err(e) => error!(error = %e, "netlink socket failed"),
                }
            }
            n = loc_rib.recv_many(&mut queued, COALESCE_BATCHES) => {
                if n == 0 {
                    return;
                }
                last_batch = tokio::time::Instant::now();
                // The speaker sends a batch per UPDATE (a handful of
                // prefixes): take what else is queued too, so a netlink
                // datagram carries hundreds of routes instead of one
                // UPDATE's worth (`apply` keeps the last change per prefix).
                // Many batches per receive: the queue's room comes back in
                // one release, so a speaker waiting for it is woken once,
                // not once per batch (in A/B runs within the noise; it
                // costs nothing: docs/benchmarks/history.md, sixth round).
                let mut batch = Vec::with_capacity(queued.iter().map(Vec::len).sum());
                queued.drain(..).for_each(|b| batch.extend(b));
                while batch.len() < COALESCE && !loc_rib.is_empty() {
                    loc_rib.recv_many(&mut queued, COALESCE_BATCHES).await;
                    queued.drain(..).for_each(|b| batch.extend(b));
                }
                // No hold for more: a burst of rewrites (several peers
                // racing for the best path) is coalesced by the speaker
                // before it gets here (`speaker::pace`), and holding a
                // batch of churn for 5 ms only delayed it (one peer's
                // 10k updates/s: p50 9.6 -> 3.3-4.3 ms;
                // docs/benchmarks/history.md, twelfth round).
                match fib.apply(&batch) {
                    Ok(report) => log_report(&report),
                    Err(e) => error!(error = %e, "netlink socket failed"),
                }
            }
            set = recv_opt(&mut blackholes) => match set {
                Some(set) => {
                    for p in own_blackholes.difference(&set) {
                        match fib.remove(*p) {
                            Ok(r) => log_report(&r),
                            Err(e) => error!(error = %e, prefix = %p, "netlink socket failed"),
                        }
                    }
                    for p in set.difference(&own_blackholes) {
                        match fib.install_blackhole(*p) {
                            Ok(r) => log_report(&r),
                            Err(e) => error!(error = %e, prefix = %p, "netlink socket failed"),
                        }
                    }
                    own_blackholes = set;
                }
                None => blackholes = None,
            },
            cmd = commands.recv() => match cmd {
                Some(Command::Show(reply)) => {
                    let _ = reply.send(rows(&fib));
                }
                Some(Command::SetMtu(m)) => {
                    info!(mtu = ?m, routes = fib.len(), "route MTU changed; re-installing routes");
                    match fib.set_mtu(m) {
                        Ok(r) => log_report(&r),
                        Err(e) => error!(error = %e, "netlink socket failed"),
                    }
                }
                Some(Command::Ping(reply)) => {
                    let _ = reply.send(());
                }
                Some(Command::Converged) if !swept => {
                    swept = true;
                    // The speaker sends its Loc-RIB batches before it reports
                    // convergence, so all of them are queued by now; applied
                    // first, or `select!` may sweep re-learned routes still
                    // waiting here as stale, and they go missing from the
                    // kernel until re-installed (petrel-bench --scenario
                    // restart saw 3,494 of 90k).
                    let mut pending = Vec::new();
                    while let Ok(more) = loc_rib.try_recv() {
                        pending.extend(more);
                    }
                    if !pending.is_empty() {
                        match fib.apply(&pending) {
                            Ok(report) => log_report(&report),
                            Err(e) => error!(error = %e, "netlink socket failed"),
                        }
                    }
                    match fib.sweep_stale() {
                        Ok(r) => info!(removed = r.removed, "converged: stale kernel routes of a previous run swept"),
                        Err(e) => warn!(error = %e, "sweep of stale kernel routes failed"),
                    }
                }
                Some(Command::Converged) => {}
                // The daemon is stopping; the routes stay (graceful restart).
                None => return,
            },
            ev = monitor.next() => match ev {
                Ok(events) => {
                    let (mut relink, mut retry) = (false, false);
                    for ev in &events {
                        match ev {
                            // A known link coming (back) up, or getting its
                            // carrier back (nexthop objects go with the
                            // carrier), or a new address where our next
                            // hops are: routes the kernel flushed come
                            // back. Any new address may make a refused next
                            // hop reachable. (Not a full re-install per
                            // address: each new pod's veth brings an IPv6
                            // link-local one.)
                            Event::Link { deleted: false, link } => {
                                relink |= link_came_back(&mut links_up, link);
                            }
                            Event::Link { deleted: true, link } => {
                                links_up.remove(&link.ifindex);
                            }
                            Event::Addr { deleted: false, addr } => {
                                relink |= fib.next_hops_in(addr);
                                retry = true;
                            }
                            _ => {}
                        }
                        if let Err(e) = fib.on_event(ev) {
                            warn!(error = %e, "could not restore a route");
                        }
                        // A link's MTU or the connected networks changed:
                        // routes whose RTAX_MTU is now needed (or no longer)
                        // are re-installed.
                        match fib.on_link_event(ev) {
                            Ok(Some(r)) if r.installed > 0 => {
                                info!(installed = r.installed, "egress link MTU changed: routes re-installed");
                                log_report(&r);
                            }
                            Ok(_) => {}
                            Err(e) => error!(error = %e, "netlink socket failed"),
                        }
                    }
                    if retry && !relink && fib.unresolved_count() > 0 {
                        match fib.retry_unresolved() {
                            Ok(r) => log_report(&r),
                            Err(e) => error!(error = %e, "netlink socket failed"),
                        }
                    }
                    if relink {
                        match fib.relink() {
                            Ok(r) => {
                                info!(installed = r.installed, unresolved = fib.unresolved_count(), "link or address up: routes re-installed");
                                log_report(&r);
                            }
                            Err(e) => error!(error = %e, "netlink socket failed"),
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "netlink monitor failed; resynchronising");
                    let _ = fib.resync();
                }
            },
            _ = &mut sweep, if !swept => {
                swept = true;
                match fib.sweep_stale() {
                    Ok(r) => info!(removed = r.removed, "stale kernel routes of a previous run swept"),
                    Err(e) => warn!(error = %e, "sweep of stale kernel routes failed"),
                }
            }
        }
        routes.store(fib.len(), Ordering::Relaxed);
        counters.routes.store(fib.len() as u64, Ordering::Relaxed);
        held_since = match (fib.held_deletes(), held_since) {
            (0, _) => None,
            (_, None) => Some(tokio::time::Instant::now()),
            (_, t) => t,
        };
    }
}

/// When deletes held since `held_since` (the last batch came at
/// `last_batch`) are to be sent as plain deletes; `None` when none are
/// held. `sweeping`: the speaker marks a dead peer's sweep as under way.
fn release_at(
    held_since: Option<tokio::time::Instant>,
    last_batch: tokio::time::Instant,
    sweeping: bool,
) -> Option<tokio::time::Instant> {
    let t = held_since?;
    Some(if sweeping {
        t + HOLD_SWEEP_MAX
    } else {
        (last_batch + HOLD_IDLE).min(t + HOLD_MAX)
    })
}

/// A receiver that may be absent: pends forever when it is.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn rows(fib: &Fib) -> Vec<FibRow> {
    let names: HashMap<u32, String> = super::monitor::links_and_addrs()
        .map(|(l, _)| l.into_iter().map(|l| (l.ifindex, l.name)).collect())
        .unwrap_or_default();
    let mtu = fib.mtu();
    let mut out: Vec<FibRow> = fib
        .held()
        .map(|(prefix, h)| {
            let (kind, next_hops) = match h {
                Held::Blackhole => ("blackhole", Vec::new()),
                Held::Stale => ("stale", Vec::new()),
                Held::Unicast(hops) => (
                    "unicast",
                    hops.iter()
                        .map(|h| {
                            let mut s = h.gateway.to_string();
                            if h.ifindex != 0 {
                                let name = names
                                    .get(&h.ifindex)
                                    .cloned()
                                    .unwrap_or_else(|| format!("if{}", h.ifindex));
                                s += &format!(" dev {name}");
                            }
                            if h.onlink {
                                s += " onlink";
                            }
                            s
                        })
                        .collect(),
                ),
            };
            FibRow {
                prefix: prefix.to_string(),
                kind: kind.into(),
                next_hops,
                mtu: if matches!(h, Held::Stale) { None } else { mtu },
                stale: matches!(h, Held::Stale),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |r: &FibRow| r.prefix.parse::<Prefix>().ok();
        key(a).cmp(&key(b)).then_with(|| a.prefix.cmp(&b.prefix))
    });
    out
}

/// The FIB disabled: the Loc-RIB is only counted, so the speaker is never
/// blocked by nobody reading its stream.
async fn count_only(
    mut loc_rib: FibStream,
    mut commands: mpsc::Receiver<Command>,
    mut blackholes: Option<mpsc::Receiver<BTreeSet<Prefix>>>,
    routes: Arc<AtomicUsize>,
) {
    let mut live: HashSet<Prefix> = HashSet::new();
    let mut batches = Vec::new();
    loop {
        tokio::select! {
            n = loc_rib.recv_many(&mut batches, COALESCE_BATCHES) => {
                if n == 0 {
                    return;
                }
                for c in batches.drain(..).flatten() {
                    match c.via {
                        Via::Unreachable => {
                            live.remove(&c.prefix);
                        }
                        Via::Local | Via::One(_) | Via::Many(_) => {
                            live.insert(c.prefix);
                        }
                    }
                }
                routes.store(live.len(), Ordering::Relaxed);
            }
            set = recv_opt(&mut blackholes) => if set.is_none() { blackholes = None },
            cmd = commands.recv() => match cmd {
                Some(Command::Show(reply)) => { let _ = reply.send(Vec::new()); }
                Some(Command::SetMtu(_)) | Some(Command::Converged) => {}
                Some(Command::Ping(reply)) => { let _ = reply.send(()); }
                None => return,
            },
        }
    }
}

/// Records `link`'s state; true when it became usable (up with carrier)
/// after being seen unusable: the kernel flushed what went over it.
fn link_came_back(links: &mut HashMap<u32, bool>, link: &LinkInfo) -> bool {
    let was = links.insert(link.ifindex, link.usable());
    link.usable() && was == Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_comes_back_with_its_carrier_or_its_admin_state() {
        let link = |up, carrier| LinkInfo {
            ifindex: 7,
            name: "eth0".into(),
            mtu: 1500,
            up,
            carrier,
        };
        let mut m = HashMap::new();
        assert!(!link_came_back(&mut m, &link(true, true)), "first sight");
        assert!(!link_came_back(&mut m, &link(true, false)), "carrier lost");
        assert!(link_came_back(&mut m, &link(true, true)), "carrier back");
        assert!(!link_came_back(&mut m, &link(false, true)), "set down");
        assert!(link_came_back(&mut m, &link(true, true)), "set up");
        assert!(!link_came_back(&mut m, &link(true, true)), "no change");
    }

    /// Held deletes go at a pause or after `HOLD_MAX`, except during a
    /// dead peer's sweep, whose end is waited for (up to its own bound):
    /// a sweep that pauses or runs long keeps its deletes held.
    #[test]
    fn a_sweep_keeps_its_deletes_held_until_it_ends() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(release_at(None, t0, false), None);
        assert_eq!(release_at(None, t0, true), None);
        // A burst: released at the first pause ...
        assert_eq!(
            release_at(Some(t0), t0 + ms(100), false),
            Some(t0 + ms(100) + HOLD_IDLE)
        );
        // ... or once it has lasted HOLD_MAX.
        let late = t0 + HOLD_MAX;
        assert_eq!(release_at(Some(t0), late, false), Some(t0 + HOLD_MAX));
        // A sweep: neither; only its own bound.
        for last in [t0 + ms(100), late] {
            let at = release_at(Some(t0), last, true).unwrap();
            assert_eq!(at, t0 + HOLD_SWEEP_MAX);
            assert!(at > last + HOLD_IDLE && at > t0 + HOLD_MAX);
        }
    }

    /// With the FIB disabled (a route reflector) the speaker must not make
    /// its decisions as if a writer were waiting for them: the count-only
    /// consumer says so, and the speaker then coalesces (its rule is tested
    /// in the speaker; this is the daemon's half of it).
    #[tokio::test]
    async fn a_disabled_fib_leaves_decisions_unpaced() {
        use petrel_bgp::speaker::{Speaker, SpeakerConfig};
        let cfg = SpeakerConfig {
            local_as: 64512,
            router_id: std::net::Ipv4Addr::new(192, 0, 2, 1),
            cluster_id: None,
            listen: Vec::new(),
            graceful_restart: None,
            max_paths: 1,
            threads: 1,
            bfd: Default::default(),
        };
        let (speaker, loc_rib) = Speaker::start(cfg).await.unwrap();
        assert!(speaker.fib_paced(), "a FIB writer paces by default");
        let settings = Settings {
            fib: None,
            sweep_after: Duration::from_secs(60),
        };
        let task = spawn(settings, loc_rib, None, Arc::new(Health::new())).unwrap();
        assert!(!speaker.fib_paced());
        assert!(task.ping().await, "the count-only task answers");
    }
}
