//! petreld's main loop: configuration to speaker, the control socket, the
//! Loc-RIB stream, and signals (SIGHUP reloads, SIGTERM/SIGINT stop).

use crate::config::{self, Config, MaxPrefixAction, NextHopMode};
use crate::control::{PeerRow, Request, Response, RouteRow, Status};
use crate::intent::{Intent, Source};
use petrel_bgp::rib;
use petrel_bgp::speaker::{self, PeerSettings, Speaker, SpeakerConfig};
use petrel_bgp::wire::attr::{Origin, PathAttributes, RareAttributes};
use petrel_bgp::wire::Prefix;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

pub fn peer_settings(c: &config::Peer) -> PeerSettings {
    let mut p = PeerSettings::new(c.address, c.asn);
    p.port = c.port;
    p.local_address = c.local_address;
    p.local_port = c.local_port;
    p.local_as = c.local_as;
    p.allow_own_as = c.allow_own_as;
    p.password = c.password.clone();
    p.passive = c.passive;
    p.hold_time = c.hold_time;
    p.keepalive = c.keepalive;
    p.ttl_security = c.ttl_security;
    p.next_hop = match c.next_hop {
        NextHopMode::SelfAddr => rib::NextHopMode::SelfAddr,
        NextHopMode::Keep => rib::NextHopMode::Keep,
    };
    p.rr_client = c.route_reflector_client;
    p.local_routes_only = c.local_routes_only;
    p.families = c.families.clone();
    p.add_path = c.add_path.clone();
    p.graceful_restart = c
        .graceful_restart
        .map(|g| speaker::GracefulRestartSettings {
            restart_time: g.restart_time,
            long_lived_stale_time: g.long_lived_stale_time,
        });
    p.max_prefix = c.max_prefix.map(|m| {
        (
            m.limit,
            match m.action {
                MaxPrefixAction::Warn => speaker::MaxPrefixAction::Warn,
                MaxPrefixAction::Restart { after_secs } => {
                    speaker::MaxPrefixAction::Restart(Duration::from_secs(after_secs))
                }
            },
        )
    });
    p.import = c.import.clone();
    p.export = c.export.clone();
    p.bfd = c.bfd.as_ref().map(config::Bfd::settings);
    p
}

fn originate_attrs(o: &config::Originate) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        communities: (!o.communities.is_empty()).then(|| o.communities.clone()),
        rare: (!o.large_communities.is_empty()).then(|| {
            Box::new(RareAttributes {
                large_communities: Some(o.large_communities.clone()),
                ..RareAttributes::default()
            })
        }),
        ..PathAttributes::default()
    }
}

struct State {
    cfg: Config,
    speaker: Speaker,
    started: Instant,
    fib_routes: Arc<AtomicUsize>,
    fib: crate::fib::task::Handle,
    mtu: Arc<std::sync::Mutex<crate::fib::mtu::MtuStatus>>,
    health: Arc<crate::health::Health>,
    intent: Arc<tokio::sync::Mutex<Intent>>,
    cluster_view: crate::cluster::SharedView,
}

/// The file's originations with their attributes.
fn file_origins(cfg: &Config) -> BTreeMap<Prefix, PathAttributes> {
    cfg.bgp
        .originate
        .iter()
        .map(|o| (o.prefix, originate_attrs(o)))
        .collect()
}

/// How long a starting petreld waits for the cluster's BGP configuration
/// before going on with the defaults.
const CLUSTER_CONFIG_WAIT: Duration = Duration::from_secs(20);

/// How often the main loop proves itself alive when systemd's watchdog
/// does not ask for more often.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Runs petreld until SIGTERM or SIGINT, telling systemd through
/// `notifier` (see [`crate::systemd`]).
pub async fn run(config_path: PathBuf, notifier: crate::systemd::Notifier) -> anyhow::Result<()> {
    let mut cfg = Config::load(&config_path)?;
    let health = Arc::new(crate::health::Health::new());
    // Filled by the datastore wrapper (crate::metrics::InstrumentedStore)
    // and the cluster code; read by the metrics endpoint.
    let store_metrics = Arc::new(crate::metrics::StoreMetrics::default());
    let ipam_gauges = Arc::new(crate::metrics::IpamGauges::default());
    // With a datastore: the node's addresses, and the cluster's AS and
    // port, are needed before the speaker's first OPEN.
    let mut store = None;
    let mut addresses = Vec::new();
    if let Some(ds) = cfg.datastore.clone() {
        addresses = crate::cluster::node_addresses(&cfg.node)
            .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.file.display()))?;
        let opened = tokio::time::timeout(CLUSTER_CONFIG_WAIT, async {
            let s = crate::cluster::open_store(&ds).await?;
            let c = crate::cluster::initial_bgp_config(&*s, CLUSTER_CONFIG_WAIT).await;
            Ok::<_, petrel_ipam::store::StoreError>((s, c))
        })
        .await;
        match opened {
            Ok(Ok((s, c))) => {
                if let Some(c) = c {
                    if !cfg.node.asn_from_file {
                        cfg.node.asn = c.asn;
                    }
                    if c.listen_port != 179 {
                        for l in cfg.bgp.listen.iter_mut().filter(|l| l.port() == 179) {
                            l.set_port(c.listen_port);
                        }
                    }
                }
                store = Some(s);
            }
            Ok(Err(e)) => {
                warn!(error = %e, "datastore not reachable at start; retrying in the background")
            }
            Err(_) => warn!("datastore not reachable at start; retrying in the background"),
        }
    }
    let scfg = SpeakerConfig {
        local_as: cfg.node.asn,
        router_id: cfg.node.router_id,
        cluster_id: cfg.bgp.cluster_id,
        listen: cfg.bgp.listen.clone(),
        graceful_restart: cfg
            .bgp
            .graceful_restart
            .map(|g| speaker::GracefulRestartSettings {
                restart_time: g.restart_time,
                long_lived_stale_time: g.long_lived_stale_time,
            }),
        max_paths: cfg.bgp.max_paths,
        bfd: Default::default(),
    };
    let (speaker, fib_rx) = Speaker::start(scfg).await?;
    health.set_speaker_started();
    // Blackholes for the node's own blocks: the newest whole set wins.
    let (blackhole_tx, blackhole_rx) = tokio::sync::mpsc::channel::<BTreeSet<Prefix>>(4);
    let intent = Arc::new(tokio::sync::Mutex::new(Intent::new(
        speaker.clone(),
        Some(blackhole_tx),
    )));
    {
        let mut i = intent.lock().await;
        i.set_peers(Source::File, crate::intent::file_peers(&cfg))
            .await?;
        i.set_origins(Source::File, file_origins(&cfg), None)
            .await?;
    }
    health.set_peers_configured();
    let cluster_view = crate::cluster::SharedView::default();
    if let Some(ds) = cfg.datastore.clone() {
        let c = ClusterStart {
            ds,
            store,
            store_metrics: store_metrics.clone(),
            ipam_gauges: ipam_gauges.clone(),
            ipam_socket: cfg.ipam_socket.clone(),
            node: cfg.node.clone(),
            addresses,
            rr_cluster_id: cfg.bgp.cluster_id,
            graceful_restart: cfg.bgp.graceful_restart,
            health: health.clone(),
            view: cluster_view.clone(),
        };
        tokio::spawn(c.run(intent.clone()));
    }
    info!(node = %cfg.node.name, asn = cfg.node.asn, router_id = %cfg.node.router_id, peers = cfg.bgp.peers.len(), "petreld started");

    // The pod MTU, detected (or fixed) and written before the first route
    // goes in, so that routes carry it from the start; `[fib] route_mtu`
    // overrides it on routes.
    let node_address = cfg
        .node
        .addresses
        .first()
        .map(|n| n.addr())
        .unwrap_or(IpAddr::V4(cfg.node.router_id));
    let mtu_settings = cfg.mtu.settings(Some(node_address));
    let mtu_status = Arc::new(std::sync::Mutex::new(crate::fib::mtu::MtuStatus::default()));
    crate::fib::mtu::refresh(&mtu_settings, &mtu_status, &health, true);
    let pod_mtu = mtu_status.lock().unwrap_or_else(|e| e.into_inner()).pod_mtu;

    // The Loc-RIB stream and the blackholes go to the kernel FIB writer (or
    // are only counted when the FIB is disabled), so the speaker is never
    // blocked by nobody.
    let fib = crate::fib::task::spawn(
        crate::fib::task::Settings {
            fib: cfg.fib.enabled.then(|| crate::fib::FibConfig {
                protocol: cfg.fib.protocol,
                table: cfg.fib.table,
                mtu: cfg.fib.route_mtu.or(pod_mtu),
                ..crate::fib::FibConfig::default()
            }),
            sweep_after: Duration::from_secs(cfg.fib.sweep_after),
        },
        fib_rx,
        Some(blackhole_rx),
        health.clone(),
    )?;
    let fib_routes = fib.routes.clone();
    // Sweep the routes of a previous run once BGP has converged: selection
    // deferral over (RFC 4724 §4.1) and, with a datastore, the cluster's
    // peers known (else End-of-RIB from the file's peers alone could end
    // deferral before the mesh is even configured).
    {
        let (fib, health) = (fib.clone(), health.clone());
        let mut converged = speaker.converged();
        let cluster = cfg.datastore.is_some();
        tokio::spawn(async move {
            if converged.wait_for(|c| *c).await.is_err() {
                return;
            }
            // Polled: Health's change notification has one waiter, the
            // main loop.
            while cluster && !health.cluster_synced() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            fib.converged().await;
        });
    }
    if mtu_settings.mode == crate::fib::mtu::Mode::Auto {
        let (h, route_mtu) = (fib.clone(), cfg.fib.route_mtu);
        tokio::spawn(crate::fib::mtu::watch(
            mtu_settings,
            mtu_status.clone(),
            health.clone(),
            move |m| {
                let h = h.clone();
                async move {
                    if route_mtu.is_none() {
                        h.set_mtu(m).await
                    }
                }
            },
        ));
    }

    // The heartbeat proves the main loop, the speaker and the FIB task
    // alive; /healthz fails when it is this old.
    let beat_every = notifier
        .watchdog_interval()
        .unwrap_or(HEARTBEAT)
        .min(HEARTBEAT);
    if let Some(addr) = cfg.metrics.address {
        let m = crate::metrics::Metrics {
            health: health.clone(),
            fib: fib.counters.clone(),
            mtu: mtu_status.clone(),
            store: store_metrics.clone(),
            ipam: ipam_gauges.clone(),
            node: cfg.node.name.clone(),
        };
        match crate::metrics::bind(addr).await {
            Ok(l) => {
                info!(%addr, "metrics, /healthz and /readyz served");
                tokio::spawn(crate::metrics::serve(l, m, speaker.clone(), beat_every * 3));
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot serve metrics");
                health.set_reason(
                    "metrics",
                    Some(format!("metrics: cannot listen on {addr}: {e}")),
                );
            }
        }
    }

    let listener = bind_control(&cfg.control_socket)?;
    let state = Arc::new(tokio::sync::Mutex::new(State {
        cfg,
        speaker: speaker.clone(),
        started: Instant::now(),
        fib_routes: fib_routes.clone(),
        fib: fib.clone(),
        mtu: mtu_status,
        health: health.clone(),
        intent,
        cluster_view,
    }));
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let st = st.clone();
                    tokio::spawn(async move {
                        let (r, mut w) = stream.into_split();
                        let mut lines = BufReader::new(r).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            let resp = match serde_json::from_str::<Request>(&line) {
                                Ok(req) => handle(&st, req).await,
                                Err(e) => Response::Error {
                                    message: format!("bad request: {e}"),
                                },
                            };
                            let mut out =
                                serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
                            out.push('\n');
                            if w.write_all(out.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut beat = tokio::time::interval(beat_every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready_sent = false;
    let notify = |r: std::io::Result<()>| {
        if let Err(e) = r {
            warn!(error = %e, "cannot notify systemd");
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                notify(notifier.reloading());
                let mut s = state.lock().await;
                if let Err(e) = reload(&mut s, &config_path).await {
                    error!(error = %e, "configuration not reloaded");
                }
                // Ends the RELOADING=1 state whatever the outcome.
                ready_sent = false;
            }
            _ = beat.tick() => {
                // Only when the speaker and the FIB task both answer: a stuck
                // one stops the watchdog and systemd restarts petreld.
                let alive = tokio::time::timeout(beat_every, async {
                    let peers = speaker.peers().await.ok()?;
                    fib.ping().await.then_some(peers)
                })
                .await;
                match alive {
                    Ok(Some(peers)) => {
                        health.beat();
                        notify(notifier.watchdog());
                        let line = crate::systemd::status_line(&peers, fib_routes.load(Ordering::Relaxed), &health);
                        notify(notifier.status(&line));
                    }
                    _ => warn!("speaker or FIB task did not answer within {beat_every:?}; watchdog not fed"),
                }
            }
            _ = health.changed() => {}
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if !ready_sent && health.is_ready() {
            ready_sent = true;
            let peers = speaker.peers().await.unwrap_or_default();
            let line =
                crate::systemd::status_line(&peers, fib_routes.load(Ordering::Relaxed), &health);
            info!(status = %line, "ready");
            notify(notifier.ready(&line));
        }
    }
    notify(notifier.stopping());
    let s = state.lock().await;
    if s.cfg.bgp.graceful_restart.is_some() {
        // RFC 4724 §4.2: a session that ends without a NOTIFICATION keeps
        // our routes at every GR-capable peer for the restart time, and
        // the kernel keeps ours: a restart (an upgrade, systemctl restart)
        // does not disturb forwarding. A node stopped for good is
        // withdrawn when the restart time runs out.
        info!("stopping gracefully: sessions closed without NOTIFICATION, routes kept for the restart time");
        // BFD says AdminDown first: RFC 5882 §3.2, the peers must not take
        // it for a forwarding failure and end the sessions they keep our
        // routes by (the kernel's routes stay: forwarding goes on).
        let _ = s.speaker.stop_bfd().await;
    } else {
        info!("stopping");
        let _ = s.speaker.shutdown(Some("petreld stopping".into())).await;
    }
    let _ = std::fs::remove_file(&s.cfg.control_socket);
    Ok(())
}

fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a crashed petreld: nobody answers on it, replace it.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "{}: another petreld is running on this control socket",
                path.display()
            );
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot bind the control socket: {e}", path.display()))?;
    // Root-only by default: the socket controls routing.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// SIGHUP: applies peer and origination changes; sessions not concerned are untouched.
async fn reload(s: &mut State, path: &Path) -> anyhow::Result<()> {
    let mut new = Config::load(path)?;
    // What was resolved at start stays: the node's AS may come from the
    // cluster, and identity changes need a restart anyway.
    if new.node.name != s.cfg.node.name
        || new.node.router_id != s.cfg.node.router_id
        || new.node.asn_from_file != s.cfg.node.asn_from_file
        || (new.node.asn_from_file && new.node.asn != s.cfg.node.asn)
        || new.node.addresses != s.cfg.node.addresses
        || new.bgp.listen != s.cfg.bgp.listen
        || new.datastore != s.cfg.datastore
    {
        warn!(
            "node identity, listen addresses and the datastore change only on restart; other changes are applied"
        );
    }
    new.node = s.cfg.node.clone();
    new.datastore = s.cfg.datastore.clone();
    {
        let mut i = s.intent.lock().await;
        i.set_peers(Source::File, crate::intent::file_peers(&new))
            .await?;
        i.set_origins(Source::File, file_origins(&new), None)
            .await?;
    }
    info!("configuration reloaded");
    s.cfg = new;
    Ok(())
}

/// Opens the datastore (retrying while it is down) and runs the cluster
/// driver.
struct ClusterStart {
    ds: config::Datastore,
    store: Option<Arc<dyn petrel_ipam::store::Store>>,
    store_metrics: Arc<crate::metrics::StoreMetrics>,
    ipam_gauges: Arc<crate::metrics::IpamGauges>,
    ipam_socket: Option<PathBuf>,
    node: config::Node,
    addresses: Vec<ipnet::IpNet>,
    rr_cluster_id: Option<std::net::Ipv4Addr>,
    graceful_restart: Option<config::GracefulRestart>,
    health: Arc<crate::health::Health>,
    view: crate::cluster::SharedView,
}

impl ClusterStart {
    async fn run(self, intent: Arc<tokio::sync::Mutex<Intent>>) {
        self.health.expect_datastore();
        let mut backoff = Duration::from_millis(500);
        let store = match self.store {
            Some(s) => s,
            None => loop {
                match crate::cluster::open_store(&self.ds).await {
                    Ok(s) => break s,
                    Err(e) => {
                        self.health.set_datastore_ok(false);
                        warn!(error = %e, retry_in = ?backoff, "cannot open the datastore");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            },
        };
        let store: Arc<dyn petrel_ipam::store::Store> =
            Arc::new(crate::metrics::InstrumentedStore::new(
                store,
                self.store_metrics,
                Some(self.health.clone()),
            ));
        // The IPAM service: petrel-ipam forwards CNI calls here and gets
        // this warm allocator (and, with the embedded store, the only
        // process that may open the file).
        if let Some(path) = &self.ipam_socket {
            let ipam = Arc::new(petrel_ipam::Ipam::new(store.clone()));
            match petrel_ipam::service::Service::bind(path, ipam, Default::default()) {
                Ok(svc) => {
                    info!(socket = %path.display(), "IPAM service for petrel-ipam");
                    tokio::spawn(svc.run());
                }
                Err(e) => {
                    error!(error = %e, "IPAM service not started; petrel-ipam goes to the datastore itself");
                    self.health
                        .set_reason("ipam", Some(format!("ipam service: {e}")));
                }
            }
        }
        crate::cluster::Cluster {
            store,
            ipam_gauges: self.ipam_gauges,
            node: self.node,
            addresses: self.addresses,
            rr_cluster_id: self.rr_cluster_id,
            graceful_restart: self.graceful_restart,
            health: self.health,
            view: self.view,
        }
        .run(intent)
        .await
    }
}

async fn handle(st: &tokio::sync::Mutex<State>, req: Request) -> Response {
    let s = st.lock().await;
    let err = |e: &dyn std::fmt::Display| Response::Error {
        message: e.to_string(),
    };
    let addr = |a: &str| {
        a.parse::<IpAddr>()
            .map_err(|_| format!("{a:?} is not an IP address"))
    };
    match req {
        Request::Status => {
            let peers = s.speaker.peers().await.unwrap_or_default();
            Response::Status(Status {
                node: s.cfg.node.name.clone(),
                router_id: s.cfg.node.router_id.to_string(),
                asn: s.cfg.node.asn,
                version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_seconds: s.started.elapsed().as_secs(),
                peers_total: peers.len(),
                peers_established: peers
                    .iter()
                    .filter(|p| p.state == petrel_bgp::fsm::State::Established)
                    .count(),
                routes: s.fib_routes.load(Ordering::Relaxed),
                ready: s.health.is_ready(),
                degraded: s.health.degraded_reasons(),
            })
        }
        Request::ShowFib => match s.fib.show().await {
            Some(routes) => Response::Fib { routes },
            None => err(&"the FIB task has stopped"),
        },
        Request::ShowMtu => Response::Mtu(s.mtu.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        Request::ShowBfd => match s.speaker.bfd_sessions().await {
            Ok(v) => Response::Bfd {
                sessions: v
                    .iter()
                    .map(crate::control::BfdRow::from_snapshot)
                    .collect(),
            },
            Err(e) => err(&e),
        },
        Request::ShowPeers => match s.speaker.peers().await {
            Ok(v) => Response::Peers {
                peers: v
                    .into_iter()
                    .map(|p| PeerRow {
                        address: p.address.to_string(),
                        asn: p.asn,
                        state: p.state.name().to_string(),
                        uptime_seconds: p.uptime.as_secs(),
                        received: p.received,
                        accepted: p.accepted,
                        advertised: p.advertised,
                        last_error: p.last_error,
                    })
                    .collect(),
            },
            Err(e) => err(&e),
        },
        Request::ShowRoutes { prefix } => {
            let prefix = match prefix.map(|p| p.parse::<Prefix>()) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => return err(&e),
            };
            match s.speaker.routes(prefix).await {
                Ok(v) => Response::Routes {
                    routes: v.into_iter().map(route_row).collect(),
                },
                Err(e) => err(&e),
            }
        }
        Request::ShowPeer { address } => {
            let a = match addr(&address) {
                Ok(a) => a,
                Err(e) => return err(&e),
            };
            let rows = match s.speaker.peers().await {
                Ok(v) => v,
                Err(e) => return err(&e),
            };
            let Some(p) = rows.into_iter().find(|p| p.address == a) else {
                return err(&format!("no peer {a}"));
            };
            let i = s.intent.lock().await;
            let Some(c) = i.peers().get(&a) else {
                return err(&format!("no configured peer {a}"));
            };
            Response::Peer(crate::control::PeerDetail {
                session: PeerRow {
                    address: p.address.to_string(),
                    asn: p.asn,
                    state: p.state.name().to_string(),
                    uptime_seconds: p.uptime.as_secs(),
                    received: p.received,
                    accepted: p.accepted,
                    advertised: p.advertised,
                    last_error: p.last_error,
                },
                source: match i.source_of(&a) {
                    Some(Source::File) => "file",
                    _ => "cluster",
                }
                .into(),
                port: c.port,
                local_address: c.local_address.map(|l| l.to_string()),
                passive: c.passive,
                hold_time: c.hold_time,
                keepalive: c.keepalive,
                md5: c.password.is_some(),
                ttl_security: c.ttl_security,
                next_hop: match c.next_hop {
                    NextHopMode::SelfAddr => "self",
                    NextHopMode::Keep => "keep",
                }
                .into(),
                route_reflector_client: c.route_reflector_client,
                families: c.families.iter().map(|f| f.to_string()).collect(),
                graceful_restart_time: c.graceful_restart.map(|g| g.restart_time),
                add_path: config::describe_add_path(&c.add_path),
            })
        }
        Request::ShowBlocks => {
            let v = s
                .cluster_view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Response::Blocks(crate::control::Blocks {
                cluster: s.cfg.datastore.is_some(),
                datastore_ok: v.datastore_ok,
                last_error: v.last_error,
                blocks: v.blocks,
                advertised: v.advertised,
            })
        }
        Request::ShowServices => {
            let v = s
                .cluster_view
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Response::Services(crate::control::Services {
                cluster: s.cfg.datastore.is_some(),
                datastore_ok: v.datastore_ok,
                last_error: v.last_error,
                services: v.services,
            })
        }
        Request::PeerEnable { address } => match addr(&address) {
            Ok(a) => s
                .speaker
                .enable_peer(a)
                .await
                .map_or_else(|e| err(&e), |_| Response::Ok),
            Err(e) => err(&e),
        },
        Request::PeerDisable { address, message } => match addr(&address) {
            Ok(a) => s
                .speaker
                .disable_peer(a, message)
                .await
                .map_or_else(|e| err(&e), |_| Response::Ok),
            Err(e) => err(&e),
        },
        Request::PeerRefresh { address } => match addr(&address) {
            Ok(a) => s
                .speaker
                .refresh_peer(a)
                .await
                .map_or_else(|e| err(&e), |_| Response::Ok),
            Err(e) => err(&e),
        },
    }
}

fn route_row(r: speaker::RouteSnapshot) -> RouteRow {
    let a = &r.route.attrs.attrs;
    RouteRow {
        prefix: r.route.prefix.to_string(),
        next_hop: r
            .route
            .attrs
            .next_hop
            .addr()
            .filter(|a| !a.is_unspecified())
            .map(|a| a.to_string())
            .unwrap_or_default(),
        as_path: a
            .as_path
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        origin: a
            .origin
            .map(|o| o.to_string())
            .unwrap_or_else(|| "INCOMPLETE".into()),
        local_pref: a.local_pref,
        med: a.med,
        communities: a
            .communities
            .iter()
            .flatten()
            .map(|c| c.to_string())
            .collect(),
        large_communities: a
            .rare()
            .large_communities
            .iter()
            .flatten()
            .map(|c| c.to_string())
            .collect(),
        originator_id: a.originator_id.map(|o| o.to_string()),
        cluster_list: a
            .cluster_list
            .iter()
            .flatten()
            .map(|c| c.to_string())
            .collect(),
        best: r.best,
        peer: r
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "local".into()),
        stale: r.stale,
        path_id: r.route.path_id,
    }
}
