//! The control socket: petrelctl talks to petreld over a unix stream socket
//! (root-only by default: mode 0600), one JSON request per line, one JSON
//! response per line. Requests and responses are plain serde types, so that
//! scripts can speak the protocol too.
//!
//! A leaf of the crate: petreld's parts produce these rows and petrelctl
//! reads them, so nothing here depends on either.

use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    ShowPeers,
    ShowRoutes {
        prefix: Option<String>,
    },
    PeerEnable {
        address: String,
    },
    PeerDisable {
        address: String,
        message: Option<String>,
    },
    PeerRefresh {
        address: String,
    },
    ShowFib,
    ShowMtu,
    ShowBlocks,
    ShowServices,
    ShowPeer {
        address: String,
    },
    ShowBfd,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    Peers { peers: Vec<PeerRow> },
    Routes { routes: Vec<RouteRow> },
    Fib { routes: Vec<FibRow> },
    Mtu(MtuStatus),
    Blocks(Blocks),
    Services(Services),
    Peer(PeerDetail),
    Bfd { sessions: Vec<BfdRow> },
    Ok,
    Error { message: String },
}

/// What `petrelctl show mtu` and the metrics report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtuStatus {
    pub host_mtu: Option<u32>,
    pub interface: Option<String>,
    pub encapsulation: String,
    pub overhead: u32,
    pub pod_mtu: Option<u32>,
    /// "auto" or "fixed".
    pub source: String,
    pub file: String,
    /// Why there is no pod MTU, when there is none.
    pub error: Option<String>,
}

/// One of this node's blocks, for `petrelctl show blocks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockRow {
    pub cidr: String,
    pub pool: String,
    /// "block" (affine, advertised and blackholed) or "borrowed" (host
    /// routes for this node's addresses in another node's block).
    pub kind: String,
    pub total: u32,
    pub in_use: u32,
    /// Addresses of this node in the block (borrowed ones for "borrowed").
    pub mine: u32,
    pub affinity: String,
}

/// One service address and whether this node advertises it, with why:
/// `petrelctl show services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    /// The service record (`k8s.<namespace>.<name>.external` for the
    /// controller's) or the configured range's kind.
    pub service: String,
    pub address: String,
    pub advertised: bool,
    pub why: String,
}

/// One peer: its session and the settings in effect. The settings are
/// the speaker's `PeerSettings` as petrelctl shows them (strings, no
/// secrets: `md5` says whether a password is set), kept apart because this
/// is the control socket's JSON, which petrelctl of another version reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerDetail {
    pub session: PeerRow,
    /// "file" or "cluster": where the settings come from.
    pub source: String,
    pub port: u16,
    pub local_address: Option<String>,
    pub passive: bool,
    pub hold_time: u16,
    pub keepalive: Option<u16>,
    pub md5: bool,
    pub ttl_security: Option<u8>,
    pub next_hop: String,
    pub route_reflector_client: bool,
    pub families: Vec<String>,
    pub graceful_restart_time: Option<u16>,
    /// RFC 7911 settings, as `config::describe_add_path` words them.
    #[serde(default)]
    pub add_path: String,
}

/// The node's blocks and what it advertises from the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Blocks {
    /// False when petreld runs without a datastore.
    pub cluster: bool,
    pub datastore_ok: bool,
    pub last_error: Option<String>,
    pub blocks: Vec<BlockRow>,
    /// (prefix, reason: block, borrowed or service)
    pub advertised: Vec<(String, String)>,
}

/// Service addresses this node advertises or not, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Services {
    /// False when petreld runs without a datastore.
    pub cluster: bool,
    pub datastore_ok: bool,
    pub last_error: Option<String>,
    pub services: Vec<ServiceRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub node: String,
    pub router_id: String,
    pub asn: u32,
    pub version: String,
    pub uptime_seconds: u64,
    pub peers_total: usize,
    pub peers_established: usize,
    pub routes: usize,
    /// The first full sync is done (systemd's READY=1, /readyz).
    #[serde(default)]
    pub ready: bool,
    /// What is wrong, if anything (empty when healthy).
    #[serde(default)]
    pub degraded: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerRow {
    pub address: String,
    pub asn: u32,
    pub state: String,
    pub uptime_seconds: u64,
    pub received: u64,
    pub accepted: u64,
    pub advertised: u64,
    pub last_error: Option<String>,
}

/// One BFD session (RFC 5880). Intervals in microseconds, as on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BfdRow {
    pub peer: String,
    pub multihop: bool,
    pub local_address: Option<String>,
    pub source_port: u16,
    pub state: String,
    pub remote_state: String,
    /// Why the session last changed state, ours and the peer's (§4.1 Diag).
    pub local_diag: String,
    pub remote_diag: String,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// Configured: Desired Min TX, Required Min RX, Detect Mult.
    pub min_tx_us: u64,
    pub min_rx_us: u64,
    pub multiplier: u8,
    /// Negotiated: our transmit interval (§6.8.7) and the peer's values.
    pub tx_interval_us: u64,
    pub remote_min_tx_us: u64,
    pub remote_min_rx_us: u64,
    pub remote_multiplier: u8,
    /// §6.8.4; none before the first packet.
    pub detection_time_us: Option<u64>,
    pub uptime_seconds: Option<u64>,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_discarded: u64,
    /// Of the discarded: those refused for their authentication (RFC 5880
    /// §6.7), a key or type unlike the peer's.
    #[serde(default)]
    pub auth_failures: u64,
    pub flaps: u64,
    /// The authentication type (RFC 5880 §6.7) as petreld.toml names it;
    /// the key is never shown.
    pub auth: Option<String>,
    /// The C bit we send: false, BFD shares fate with petreld.
    pub control_plane_independent: bool,
}

impl BfdRow {
    pub fn from_snapshot(s: &petrel_bgp::bfd::SessionSnapshot) -> Self {
        let us = |d: std::time::Duration| d.as_micros() as u64;
        BfdRow {
            peer: s.key.remote.to_string(),
            multihop: s.key.multihop,
            local_address: s.local.map(|a| a.to_string()),
            source_port: s.source_port,
            state: s.state.name().into(),
            remote_state: s.remote_state.name().into(),
            local_diag: s.local_diag.text().into(),
            remote_diag: s.remote_diag.text().into(),
            local_discriminator: s.local_discriminator,
            remote_discriminator: s.remote_discriminator,
            min_tx_us: us(s.desired_min_tx),
            min_rx_us: us(s.required_min_rx),
            multiplier: s.detect_mult,
            tx_interval_us: us(s.tx_interval),
            remote_min_tx_us: us(s.remote_desired_min_tx),
            remote_min_rx_us: us(s.remote_min_rx),
            remote_multiplier: s.remote_detect_mult,
            detection_time_us: s.detection_time.map(us),
            uptime_seconds: s.uptime.map(|u| u.as_secs()),
            packets_sent: s.stats.tx,
            packets_received: s.stats.rx,
            packets_discarded: s.stats.discarded,
            auth_failures: s.stats.auth_failures,
            flaps: s.stats.flaps,
            auth: s.auth.map(|a| {
                match a {
                    petrel_bgp::bfd::AuthKind::SimplePassword => "simple-password",
                    petrel_bgp::bfd::AuthKind::KeyedSha1 => "keyed-sha1",
                    petrel_bgp::bfd::AuthKind::MeticulousKeyedSha1 => "meticulous-keyed-sha1",
                }
                .into()
            }),
            control_plane_independent: s.control_plane_independent,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteRow {
    pub prefix: String,
    pub next_hop: String,
    pub as_path: String,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<String>,
    pub large_communities: Vec<String>,
    pub originator_id: Option<String>,
    pub cluster_list: Vec<String>,
    pub best: bool,
    pub peer: String,
    pub stale: bool,
    /// RFC 7911: the Path Identifier the peer gave the path (0 without
    /// ADD-PATH).
    #[serde(default)]
    pub path_id: u32,
}

/// One of petrel's kernel routes, as the FIB writer holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FibRow {
    pub prefix: String,
    /// "unicast", "blackhole", or "stale" (a route of a previous run, kept
    /// until BGP converges, then swept).
    pub kind: String,
    /// "GATEWAY [dev IFNAME] [onlink]", one per ECMP next hop.
    pub next_hops: Vec<String>,
    pub mtu: Option<u32>,
    pub stale: bool,
}

/// Sends one request and reads one response.
pub async fn call(socket: &Path, req: &Request) -> anyhow::Result<Response> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach petreld at {}: {e} (is petreld running? is --socket right? the socket is root-only)",
            socket.display()
        )
    })?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut reader = BufReader::new(r);
    let mut resp = String::new();
    reader.read_line(&mut resp).await?;
    if resp.is_empty() {
        anyhow::bail!("petreld closed the control connection without answering");
    }
    Ok(serde_json::from_str(&resp)?)
}
