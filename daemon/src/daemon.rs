//! petreld's main loop: configuration to speaker, the control socket, the
//! Loc-RIB stream, and signals (SIGHUP reloads, SIGTERM/SIGINT stop).

use crate::config::{self, Config, MaxPrefixAction, NextHopMode};
use crate::control::{PeerRow, Request, Response, RouteRow, Status};
use petrel_bgp::rib;
use petrel_bgp::speaker::{self, PeerSettings, Speaker, SpeakerConfig};
use petrel_bgp::wire::attr::{Origin, PathAttributes};
use petrel_bgp::wire::Prefix;
use std::collections::HashMap;
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
    p.families = c.families.clone();
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
    p
}

fn originate_attrs(o: &config::Originate) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        communities: (!o.communities.is_empty()).then(|| o.communities.clone()),
        large_communities: (!o.large_communities.is_empty()).then(|| o.large_communities.clone()),
        ..PathAttributes::default()
    }
}

struct State {
    cfg: Config,
    speaker: Speaker,
    started: Instant,
    fib_routes: Arc<AtomicUsize>,
}

/// Runs petreld until SIGTERM or SIGINT.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config_path)?;
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
    };
    let (speaker, mut fib_rx) = Speaker::start(scfg).await?;
    for p in &cfg.bgp.peers {
        speaker.add_peer(peer_settings(p)).await?;
    }
    for o in &cfg.bgp.originate {
        speaker.originate(o.prefix, originate_attrs(o)).await?;
    }
    info!(node = %cfg.node.name, asn = cfg.node.asn, router_id = %cfg.node.router_id, peers = cfg.bgp.peers.len(), "petreld started");

    // The Loc-RIB stream goes to the kernel FIB writer (or is only counted
    // when the FIB is disabled), so the speaker is never blocked by nobody.
    let fib_routes = Arc::new(AtomicUsize::new(0));
    let counter = fib_routes.clone();
    if cfg.fib.enabled {
        let fcfg = crate::fib::FibConfig {
            protocol: cfg.fib.protocol,
            table: cfg.fib.table,
            mtu: cfg.fib.route_mtu,
            ..crate::fib::FibConfig::default()
        };
        if let Err(e) = crate::fib::write_rt_protos_name("petrel", fcfg.protocol) {
            warn!(error = %e, "cannot name petrel's route protocol in /etc/iproute2/rt_protos.d");
        }
        let mut fib = crate::fib::Fib::open(fcfg).map_err(|e| {
            anyhow::anyhow!("cannot open netlink for the kernel FIB (CAP_NET_ADMIN needed): {e}")
        })?;
        let mut monitor = crate::fib::Monitor::open()
            .map_err(|e| anyhow::anyhow!("cannot watch netlink route events: {e}"))?;
        let stale = fib.dump_own().map(|v| v.len()).unwrap_or(0);
        info!(
            stale,
            "kernel routes of a previous run kept until convergence"
        );
        let sweep_after = Duration::from_secs(cfg.fib.sweep_after);
        tokio::spawn(async move {
            let sweep = tokio::time::sleep(sweep_after);
            tokio::pin!(sweep);
            let mut swept = false;
            loop {
                tokio::select! {
                    batch = fib_rx.recv() => {
                        let Some(batch) = batch else { return };
                        match tokio::task::block_in_place(|| fib.apply(&batch)) {
                            Ok(report) => {
                                for e in &report.errors {
                                    warn!(prefix = %e.prefix, errno = e.errno, message = e.message.as_deref().unwrap_or(""), "kernel refused a route");
                                }
                            }
                            Err(e) => error!(error = %e, "netlink socket failed"),
                        }
                        counter.store(fib.len(), Ordering::Relaxed);
                    }
                    ev = monitor.next() => match ev {
                        Ok(events) => {
                            for ev in &events {
                                if let Err(e) = tokio::task::block_in_place(|| fib.on_event(ev)) {
                                    warn!(error = %e, "could not restore a route");
                                }
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "netlink monitor failed; resynchronising");
                            let _ = tokio::task::block_in_place(|| fib.resync());
                        }
                    },
                    _ = &mut sweep, if !swept => {
                        swept = true;
                        match tokio::task::block_in_place(|| fib.sweep_stale()) {
                            Ok(r) => info!(removed = r.removed, "stale kernel routes of a previous run swept"),
                            Err(e) => warn!(error = %e, "sweep of stale kernel routes failed"),
                        }
                    }
                }
            }
        });
    } else {
        tokio::spawn(async move {
            let mut live: HashMap<Prefix, ()> = HashMap::new();
            while let Some(batch) = fib_rx.recv().await {
                for c in batch {
                    match c {
                        rib::LocRibChange::Best { prefix, .. } => {
                            live.insert(prefix, ());
                        }
                        rib::LocRibChange::Unreachable { prefix } => {
                            live.remove(&prefix);
                        }
                    }
                }
                counter.store(live.len(), Ordering::Relaxed);
            }
        });
    }

    let listener = bind_control(&cfg.control_socket)?;
    let state = Arc::new(tokio::sync::Mutex::new(State {
        cfg,
        speaker: speaker.clone(),
        started: Instant::now(),
        fib_routes,
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
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let mut s = state.lock().await;
                if let Err(e) = reload(&mut s, &config_path).await {
                    error!(error = %e, "configuration not reloaded");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("stopping");
    let s = state.lock().await;
    let _ = s.speaker.shutdown(Some("petreld stopping".into())).await;
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
    let new = Config::load(path)?;
    if new.node != s.cfg.node || new.bgp.listen != s.cfg.bgp.listen {
        warn!(
            "node identity and listen addresses change only on restart; other changes are applied"
        );
    }
    let old_peers: HashMap<IpAddr, &config::Peer> =
        s.cfg.bgp.peers.iter().map(|p| (p.address, p)).collect();
    let new_peers: HashMap<IpAddr, &config::Peer> =
        new.bgp.peers.iter().map(|p| (p.address, p)).collect();
    for (addr, p) in &new_peers {
        match old_peers.get(addr) {
            None => s.speaker.add_peer(peer_settings(p)).await?,
            Some(old) if *old != *p => s.speaker.update_peer(peer_settings(p)).await?,
            Some(_) => {}
        }
    }
    for addr in old_peers.keys() {
        if !new_peers.contains_key(addr) {
            s.speaker.remove_peer(*addr).await?;
        }
    }
    let old_o: HashMap<Prefix, &config::Originate> =
        s.cfg.bgp.originate.iter().map(|o| (o.prefix, o)).collect();
    let new_o: HashMap<Prefix, &config::Originate> =
        new.bgp.originate.iter().map(|o| (o.prefix, o)).collect();
    for (prefix, o) in &new_o {
        if old_o.get(prefix) != Some(o) {
            s.speaker.originate(*prefix, originate_attrs(o)).await?;
        }
    }
    for prefix in old_o.keys() {
        if !new_o.contains_key(prefix) {
            s.speaker.withdraw(*prefix).await?;
        }
    }
    info!("configuration reloaded");
    s.cfg = new;
    Ok(())
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
            })
        }
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
    }
}
