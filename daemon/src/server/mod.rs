//! petreld's wiring: the configuration (and, with a datastore, the
//! cluster's) to the speaker, the cluster driver, the FIB writer, the MTU
//! watch, metrics and the control socket; then the main loop.
//!
//! Parts: [`cluster`] opens the datastore and runs the cluster driver,
//! [`control`] answers petrelctl, [`linkdown`] drops the sessions of
//! directly connected peers whose link went down, [`signals`] is the main
//! loop (reload, watchdog, stop).

mod cluster;
mod control;
mod linkdown;
mod signals;

use crate::config::{self, Config};
use crate::intent::{Intent, Source};
use cluster::ClusterStart;
use petrel_bgp::speaker::{Speaker, SpeakerConfig};
use petrel_bgp::wire::attr::{Origin, PathAttributes, RareAttributes};
use petrel_bgp::wire::Prefix;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info};

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

/// The running daemon's parts that the control socket and a reload use.
struct Running {
    cfg: Config,
    speaker: Speaker,
    started: Instant,
    fib_routes: Arc<AtomicUsize>,
    fib: crate::fib::task::FibTask,
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

/// How often the main loop proves itself alive when systemd's watchdog
/// does not ask for more often.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The speaker's own settings, from the file (and the cluster's AS and
/// port, resolved into `cfg` at start).
fn speaker_config(cfg: &Config) -> SpeakerConfig {
    SpeakerConfig {
        local_as: cfg.node.asn,
        router_id: cfg.node.router_id,
        cluster_id: cfg.bgp.cluster_id,
        listen: cfg.bgp.listen.clone(),
        graceful_restart: cfg.bgp.graceful_restart,
        max_paths: cfg.bgp.max_paths,
        threads: cfg.bgp.threads,
        bfd: Default::default(),
    }
}

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
    let (store, addresses) = cluster::open_at_start(&mut cfg).await?;
    let (speaker, fib_rx) = Speaker::start(speaker_config(&cfg)).await?;
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
    // Read at start: a reload does not turn it on or off.
    if cfg.bgp.fast_external_failover {
        let peers = intent.lock().await.watch_peers();
        tokio::spawn(linkdown::run(speaker.clone(), peers));
    }
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
                nexthop_objects: if cfg.fib.nexthop_objects {
                    crate::fib::NexthopObjects::Auto
                } else {
                    crate::fib::NexthopObjects::Off
                },
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

    let listener = control::bind(&cfg.control_socket)?;
    let state = Arc::new(tokio::sync::Mutex::new(Running {
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
    control::spawn(listener, state.clone());
    signals::MainLoop {
        config_path: &config_path,
        notifier: &notifier,
        speaker,
        fib,
        fib_routes,
        health,
        beat_every,
    }
    .run(state)
    .await
}
