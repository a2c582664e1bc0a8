//! The control socket's server side: petrelctl's requests answered from
//! the running daemon (the protocol is [`crate::control`]).

use super::Running;
use crate::config;
use crate::control::{self, PeerRow, Request, Response, RouteRow, Status};
use crate::intent::Source;
use petrel_bgp::rib::NextHopMode;
use petrel_bgp::speaker::{self, PeerSnapshot};
use petrel_bgp::wire::Prefix;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tracing::warn;

/// Binds the control socket, replacing one a crashed petreld left.
pub(super) fn bind(path: &Path) -> anyhow::Result<UnixListener> {
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

/// Answers each connection's requests, one JSON line each, until it closes.
pub(super) fn spawn(listener: UnixListener, st: Arc<tokio::sync::Mutex<Running>>) {
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
}

async fn handle(st: &tokio::sync::Mutex<Running>, req: Request) -> Response {
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
                sessions: v.iter().map(control::BfdRow::from_snapshot).collect(),
            },
            Err(e) => err(&e),
        },
        Request::ShowPeers => match s.speaker.peers().await {
            Ok(v) => Response::Peers {
                peers: v.into_iter().map(peer_row).collect(),
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
            Response::Peer(control::PeerDetail {
                session: peer_row(p),
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
                    // Configured peers have theirs resolved at parse.
                    NextHopMode::Auto => "auto",
                }
                .into(),
                route_reflector_client: c.rr_client,
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
            Response::Blocks(control::Blocks {
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
            Response::Services(control::Services {
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

fn peer_row(p: PeerSnapshot) -> PeerRow {
    PeerRow {
        address: p.address.to_string(),
        asn: p.asn,
        state: p.state.name().to_string(),
        uptime_seconds: p.uptime.as_secs(),
        received: p.received,
        accepted: p.accepted,
        advertised: p.advertised,
        last_error: p.last_error,
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
