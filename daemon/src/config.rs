//! petreld's configuration file (TOML).
//!
//! Parsing happens in two steps: serde reads the file into plain structures
//! (rejecting unknown fields, so a typo is an error, not a silently ignored
//! setting), then [`Config::load`] validates values and converts them into
//! typed settings. Every error names the file, the field and what is allowed.

use petrel_bgp::policy::{Policy, Rule};
use petrel_bgp::wire::attr::{Community, LargeCommunity};
use petrel_bgp::wire::family::Family;
use petrel_bgp::wire::Prefix;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_PATH: &str = "/etc/petrel/petreld.toml";
pub const DEFAULT_SOCKET: &str = "/run/petrel/petreld.sock";
pub const DEFAULT_ASN: u32 = 64512;

mod add_path;
mod ops;
mod peer;

/// The default `[metrics] address`: loopback only, so that nothing is
/// exposed until an operator chooses to.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9179";
pub use add_path::describe as describe_add_path;
pub use ops::{Log, LogFormat, Metrics, Mtu, DEFAULT_MTU_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    bgp: RawBgp,
    #[serde(default)]
    fib: RawFib,
    datastore: Option<RawDatastore>,
    #[serde(default)]
    mtu: ops::RawMtu,
    #[serde(default)]
    metrics: ops::RawMetrics,
    #[serde(default)]
    log: ops::RawLog,
    ipam: Option<RawIpam>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIpam {
    socket: Option<PathBuf>,
    enabled: Option<bool>,
}

/// The node-local IPAM service petrel-ipam forwards CNI calls to.
pub const DEFAULT_IPAM_SOCKET: &str = "/run/petrel/ipam.sock";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatastore {
    #[serde(default)]
    etcd_endpoints: Vec<String>,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFib {
    enabled: Option<bool>,
    protocol: Option<u8>,
    table: Option<u32>,
    route_mtu: Option<u32>,
    sweep_after: Option<u64>,
    nexthop_objects: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    router_id: Option<String>,
    asn: Option<u32>,
    #[serde(default)]
    addresses: Vec<String>,
    interface: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgp {
    listen: Option<Vec<String>>,
    cluster_id: Option<String>,
    graceful_restart: Option<RawGr>,
    #[serde(default)]
    max_paths: Option<usize>,
    #[serde(default)]
    peers: Vec<RawPeer>,
    #[serde(default)]
    originate: Vec<RawOriginate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGr {
    restart_time: u16,
    #[serde(default)]
    long_lived_stale_time: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaxPrefix {
    limit: u32,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    restart_after: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: String,
    asn: u32,
    port: Option<u16>,
    local_address: Option<String>,
    local_port: Option<u16>,
    local_as: Option<u32>,
    allow_own_as: Option<u8>,
    password: Option<String>,
    #[serde(default)]
    passive: bool,
    hold_time: Option<u16>,
    keepalive: Option<u16>,
    ttl_security: Option<u8>,
    next_hop: Option<String>,
    #[serde(default)]
    route_reflector_client: bool,
    #[serde(default)]
    local_routes_only: bool,
    families: Option<Vec<String>>,
    add_path: Option<add_path::RawAddPath>,
    graceful_restart: Option<RawGr>,
    max_prefix: Option<RawMaxPrefix>,
    bfd: Option<Bfd>,
    #[serde(default)]
    import: Vec<toml::Value>,
    #[serde(default)]
    export: Vec<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOriginate {
    prefix: String,
    #[serde(default)]
    communities: Vec<String>,
    #[serde(default)]
    large_communities: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: PathBuf,
    pub node: Node,
    pub control_socket: PathBuf,
    pub bgp: Bgp,
    pub fib: Fib,
    /// The cluster datastore; without it petreld runs from this file alone.
    pub datastore: Option<Datastore>,
    /// The IPAM service's socket; `None` when off. Served only with a
    /// datastore.
    pub ipam_socket: Option<PathBuf>,
    pub mtu: Mtu,
    pub metrics: Metrics,
    pub log: Log,
}

/// Where the cluster's records (nodes, BGP configuration and peers, IPAM)
/// are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datastore {
    Etcd {
        endpoints: Vec<String>,
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    },
    /// The embedded single-node store file.
    Embedded { path: PathBuf },
}

/// Kernel route installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fib {
    pub enabled: bool,
    /// The route protocol number petrel's routes carry (named "petrel" in
    /// /etc/iproute2/rt_protos.d).
    pub protocol: u8,
    pub table: u32,
    /// RTAX_MTU on installed routes; unset: none.
    pub route_mtu: Option<u32>,
    /// After a start, routes of ours from before are removed if not
    /// re-learned within this many seconds.
    pub sweep_after: u64,
    /// `nexthop_objects = "auto"`: routes point at kernel nexthop objects
    /// where the kernel has them (Linux 5.3); `"off"` (the default): each
    /// route carries its next hops.
    pub nexthop_objects: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub router_id: Ipv4Addr,
    /// The AS in effect: the file's, else [`DEFAULT_ASN`] until the
    /// cluster's BGP configuration says otherwise.
    pub asn: u32,
    /// Whether the file set `asn` (then it wins over the cluster's).
    pub asn_from_file: bool,
    /// The node's addresses with their prefix lengths: registered in the
    /// datastore and used for the node-to-node mesh.
    pub addresses: Vec<ipnet::IpNet>,
    /// Take the addresses from this interface instead.
    pub interface: Option<String>,
    /// Labels registered for pool and peer node selectors.
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bgp {
    pub listen: Vec<SocketAddr>,
    pub cluster_id: Option<Ipv4Addr>,
    pub graceful_restart: Option<GracefulRestart>,
    pub max_paths: usize,
    pub peers: Vec<Peer>,
    pub originate: Vec<Originate>,
}

/// BFD for a peer (RFC 5880, RFC 5882): `bfd = { min_rx_ms = 300,
/// min_tx_ms = 300, multiplier = 3 }`; fields left out take those values.
/// The same form is stored in datastore peer records and the cluster's
/// BGP configuration (for the node mesh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bfd {
    /// bfd.RequiredMinRxInterval: the fastest we take the peer's packets.
    pub min_rx_ms: u32,
    /// bfd.DesiredMinTxInterval: the fastest we send (once Up).
    pub min_tx_ms: u32,
    /// bfd.DetectMult: the peer's packets missed before Down.
    pub multiplier: u8,
    /// RFC 5883 multi-hop (UDP 4784) for a peer not on a shared link.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub multihop: bool,
}

impl Default for Bfd {
    fn default() -> Self {
        Self {
            min_rx_ms: 300,
            min_tx_ms: 300,
            multiplier: 3,
            multihop: false,
        }
    }
}

impl Bfd {
    /// The accepted ranges, as `(field, message)` on error.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [("min_rx_ms", self.min_rx_ms), ("min_tx_ms", self.min_tx_ms)] {
            // Below 10 ms a user-space daemon on a busy node flaps; above a
            // minute BFD detects nothing BGP's hold timer would not.
            if !(10..=60_000).contains(&v) {
                return Err((field, format!("{v} is outside 10..=60000")));
            }
        }
        if self.multiplier == 0 {
            return Err(("multiplier", "must be at least 1".into()));
        }
        Ok(())
    }

    pub fn settings(&self) -> petrel_bgp::speaker::BfdSettings {
        petrel_bgp::speaker::BfdSettings {
            min_rx: Duration::from_millis(self.min_rx_ms as u64),
            min_tx: Duration::from_millis(self.min_tx_ms as u64),
            multiplier: self.multiplier,
            multihop: self.multihop,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestart {
    pub restart_time: u16,
    pub long_lived_stale_time: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHopMode {
    /// Our own address on the session.
    SelfAddr,
    /// The next hop as received.
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxPrefixAction {
    /// Send Cease / Maximum Number of Prefixes Reached and restart later.
    Restart { after_secs: u64 },
    /// Log and keep going.
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPrefix {
    pub limit: u32,
    pub action: MaxPrefixAction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub address: IpAddr,
    pub asn: u32,
    pub port: u16,
    pub local_address: Option<IpAddr>,
    /// Source port of our connections; 0 lets the kernel choose.
    pub local_port: u16,
    /// The AS this session speaks as, instead of node.asn.
    pub local_as: Option<u32>,
    /// Accept routes whose AS path holds our AS up to this many times.
    pub allow_own_as: u8,
    pub password: Option<String>,
    pub passive: bool,
    pub hold_time: u16,
    pub keepalive: Option<u16>,
    pub ttl_security: Option<u8>,
    pub next_hop: NextHopMode,
    pub route_reflector_client: bool,
    /// Advertise only routes this node originates.
    pub local_routes_only: bool,
    pub families: Vec<Family>,
    /// RFC 7911: several paths per prefix, per family.
    pub add_path: petrel_bgp::rib::AddPathConfig,
    pub graceful_restart: Option<GracefulRestart>,
    pub max_prefix: Option<MaxPrefix>,
    pub import: Policy,
    pub export: Policy,
    pub bfd: Option<Bfd>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Originate {
    pub prefix: Prefix,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses configuration text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let bad = |field: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            field,
            message,
        };

        if raw.node.name.trim().is_empty() {
            return Err(bad("node.name".into(), "must not be empty".into()));
        }
        let addresses = raw
            .node
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse::<ipnet::IpNet>().map_err(|_| {
                    bad(
                        format!("node.addresses[{i}]"),
                        format!("{a:?} is not ADDRESS/PREFIXLEN (e.g. \"10.0.0.5/24\")"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !addresses.is_empty() && raw.node.interface.is_some() {
            return Err(bad(
                "node.interface".into(),
                "give either node.addresses or node.interface, not both".into(),
            ));
        }
        let router_id: Ipv4Addr = match &raw.node.router_id {
            Some(r) => r.parse().map_err(|_| {
                bad(
                    "node.router_id".into(),
                    format!("{r:?} is not an IPv4 address"),
                )
            })?,
            None => addresses
                .iter()
                .find_map(|a| match a.addr() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .ok_or_else(|| {
                    bad(
                        "node.router_id".into(),
                        "required unless node.addresses has an IPv4 address to take it from".into(),
                    )
                })?,
        };
        let node_asn = raw.node.asn.unwrap_or(DEFAULT_ASN);
        if router_id.is_unspecified() {
            return Err(bad(
                "node.router_id".into(),
                "0.0.0.0 is not allowed (RFC 6286: non-zero)".into(),
            ));
        }
        if node_asn == 0 || node_asn == 23456 {
            return Err(bad(
                "node.asn".into(),
                format!("{node_asn} is reserved (RFC 7607, RFC 6793)"),
            ));
        }
        let listen = match raw.bgp.listen {
            None => vec![
                "0.0.0.0:179".parse().unwrap_or_else(|_| unreachable!()),
                "[::]:179".parse().unwrap_or_else(|_| unreachable!()),
            ],
            Some(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<SocketAddr>().map_err(|_| {
                        bad(
                            format!("bgp.listen[{i}]"),
                            format!("{s:?} is not ADDRESS:PORT (IPv6 as [ADDRESS]:PORT)"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let cluster_id = raw
            .bgp
            .cluster_id
            .map(|s| {
                s.parse::<Ipv4Addr>().map_err(|_| {
                    bad(
                        "bgp.cluster_id".into(),
                        format!("{s:?} is not an IPv4 address"),
                    )
                })
            })
            .transpose()?;
        let gr = |g: Option<RawGr>, field: &str| -> Result<Option<GracefulRestart>, ConfigError> {
            match g {
                None => Ok(None),
                // RFC 4724 §3: the restart time is 12 bits.
                Some(g) if g.restart_time > 4095 => Err(bad(
                    format!("{field}.restart_time"),
                    format!("{} exceeds 4095 seconds (RFC 4724 §3)", g.restart_time),
                )),
                Some(g) if g.long_lived_stale_time.is_some_and(|t| t > 0xff_ffff) => Err(bad(
                    format!("{field}.long_lived_stale_time"),
                    "exceeds 16777215 seconds (RFC 9494 §2)".into(),
                )),
                Some(g) => Ok(Some(GracefulRestart {
                    restart_time: g.restart_time,
                    long_lived_stale_time: g.long_lived_stale_time,
                })),
            }
        };
        let graceful_restart = gr(raw.bgp.graceful_restart, "bgp.graceful_restart")?;
        let max_paths = raw.bgp.max_paths.unwrap_or(1);
        if !(1..=64).contains(&max_paths) {
            return Err(bad(
                "bgp.max_paths".into(),
                format!("{max_paths} is outside 1..=64"),
            ));
        }

        let mut peers = Vec::new();
        for (i, p) in raw.bgp.peers.into_iter().enumerate() {
            let f = |name: &str| format!("bgp.peers[{i}].{name}");
            let address: IpAddr = p.address.parse().map_err(|_| {
                bad(
                    f("address"),
                    format!("{:?} is not an IP address", p.address),
                )
            })?;
            if peers.iter().any(|q: &Peer| q.address == address) {
                return Err(bad(f("address"), format!("{address} is configured twice")));
            }
            if p.asn == 0 || p.asn == 23456 {
                return Err(bad(
                    f("asn"),
                    format!("{} is reserved (RFC 7607, RFC 6793)", p.asn),
                ));
            }
            let local_address = p
                .local_address
                .map(|s| {
                    s.parse::<IpAddr>()
                        .map_err(|_| bad(f("local_address"), format!("{s:?} is not an IP address")))
                })
                .transpose()?;
            if let Some(pw) = &p.password {
                if pw.is_empty() || pw.len() > 80 {
                    return Err(bad(
                        f("password"),
                        "must be 1 to 80 octets (TCP MD5 key, RFC 2385)".into(),
                    ));
                }
            }
            let hold_time = p.hold_time.unwrap_or(90);
            // RFC 4271 §4.2: zero or at least three seconds.
            if hold_time == 1 || hold_time == 2 {
                return Err(bad(
                    f("hold_time"),
                    "must be 0 or at least 3 seconds (RFC 4271 §4.2)".into(),
                ));
            }
            if let Some(k) = p.keepalive {
                if hold_time > 0 && (k == 0 || k > hold_time / 3) {
                    return Err(bad(
                        f("keepalive"),
                        format!(
                            "must be between 1 and a third of hold_time ({})",
                            hold_time / 3
                        ),
                    ));
                }
            }
            if let Some(t) = p.ttl_security {
                if t == 0 {
                    return Err(bad(
                        f("ttl_security"),
                        "is a hop count: 1 for directly connected peers, up to 254".into(),
                    ));
                }
            }
            if let Some(l) = p.local_as {
                if l == 0 || l == 23456 {
                    return Err(bad(
                        f("local_as"),
                        format!("{l} is reserved (RFC 7607, RFC 6793)"),
                    ));
                }
            }
            let allow_own_as = p.allow_own_as.unwrap_or(0);
            if allow_own_as > 10 {
                return Err(bad(
                    f("allow_own_as"),
                    format!("{allow_own_as}: allowed values are 0..=10"),
                ));
            }
            let ibgp = p.asn == p.local_as.unwrap_or(node_asn);
            let next_hop = match p.next_hop.as_deref() {
                Some("self") => NextHopMode::SelfAddr,
                Some("keep") => NextHopMode::Keep,
                // RFC 4271 §5.1.3: eBGP sets our address; iBGP leaves it.
                None if ibgp => NextHopMode::Keep,
                None => NextHopMode::SelfAddr,
                Some(other) => {
                    return Err(bad(
                        f("next_hop"),
                        format!("{other:?}: allowed values are \"self\" and \"keep\""),
                    ))
                }
            };
            if p.route_reflector_client && !ibgp {
                return Err(bad(
                    f("route_reflector_client"),
                    "only internal peers (same asn as node.asn) can be clients".into(),
                ));
            }
            let families = match p.families {
                None => {
                    if address.is_ipv4() {
                        vec![Family::IPV4_UNICAST]
                    } else {
                        vec![Family::IPV6_UNICAST]
                    }
                }
                Some(v) => v
                    .iter()
                    .enumerate()
                    .map(|(j, s)| match s.as_str() {
                        "ipv4-unicast" => Ok(Family::IPV4_UNICAST),
                        "ipv6-unicast" => Ok(Family::IPV6_UNICAST),
                        _ => Err(bad(
                            format!("bgp.peers[{i}].families[{j}]"),
                            format!(
                                "{s:?}: allowed values are \"ipv4-unicast\" and \"ipv6-unicast\""
                            ),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            };
            let add_path = match p.add_path {
                None => Default::default(),
                Some(raw) => add_path::parse(raw, &families)
                    .map_err(|(field, message)| bad(f(&format!("add_path.{field}")), message))?,
            };
            let max_prefix = match p.max_prefix {
                None => None,
                Some(m) => {
                    let action = match m.action.as_deref() {
                        None | Some("restart") => MaxPrefixAction::Restart {
                            after_secs: m.restart_after.unwrap_or(60),
                        },
                        Some("warn") => MaxPrefixAction::Warn,
                        Some(o) => {
                            return Err(bad(
                                f("max_prefix.action"),
                                format!("{o:?}: allowed values are \"restart\" and \"warn\""),
                            ))
                        }
                    };
                    if m.limit == 0 {
                        return Err(bad(f("max_prefix.limit"), "must be at least 1".into()));
                    }
                    Some(MaxPrefix {
                        limit: m.limit,
                        action,
                    })
                }
            };
            let policy = |v: Vec<toml::Value>, name: &str| -> Result<Policy, ConfigError> {
                let rules: Vec<Rule> = toml::Value::Array(v)
                    .try_into()
                    .map_err(|e: toml::de::Error| bad(f(name), e.message().to_string()))?;
                let p = Policy { rules };
                p.validate().map_err(|e| bad(f(name), e.to_string()))?;
                Ok(p)
            };
            let import = policy(p.import, "import")?;
            let export = policy(p.export, "export")?;
            if let Some(b) = &p.bfd {
                b.validate()
                    .map_err(|(field, m)| bad(f(&format!("bfd.{field}")), m))?;
            }
            peers.push(Peer {
                address,
                asn: p.asn,
                port: p.port.unwrap_or(179),
                local_address,
                local_port: p.local_port.unwrap_or(0),
                local_as: p.local_as,
                allow_own_as,
                password: p.password,
                passive: p.passive,
                hold_time,
                keepalive: p.keepalive,
                ttl_security: p.ttl_security,
                next_hop,
                route_reflector_client: p.route_reflector_client,
                local_routes_only: p.local_routes_only,
                families,
                add_path,
                graceful_restart: gr(p.graceful_restart, &f("graceful_restart"))?,
                max_prefix,
                import,
                export,
                bfd: p.bfd,
            });
        }

        let mut originate = Vec::new();
        for (i, o) in raw.bgp.originate.into_iter().enumerate() {
            let prefix: Prefix = o.prefix.parse().map_err(|e| {
                bad(
                    format!("bgp.originate[{i}].prefix"),
                    format!("{:?}: {e}", o.prefix),
                )
            })?;
            let communities = o
                .communities
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    c.parse::<Community>().map_err(|e| {
                        bad(
                            format!("bgp.originate[{i}].communities[{j}]"),
                            e.to_string(),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            let large_communities = o
                .large_communities
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    c.parse::<LargeCommunity>().map_err(|e| {
                        bad(
                            format!("bgp.originate[{i}].large_communities[{j}]"),
                            e.to_string(),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            originate.push(Originate {
                prefix,
                communities,
                large_communities,
            });
        }

        let fib = {
            let f = raw.fib;
            let protocol = f.protocol.unwrap_or(202);
            // RFC-less but kernel-defined: 0–4 are reserved for the kernel itself.
            if protocol <= 4 || protocol == 255 {
                return Err(bad("fib.protocol".into(), format!("{protocol} is reserved by the kernel; use 5..=254 (petrel's default is 202)")));
            }
            if let Some(m) = f.route_mtu {
                if !(68..=65535).contains(&m) {
                    return Err(bad(
                        "fib.route_mtu".into(),
                        format!("{m} is outside 68..=65535"),
                    ));
                }
            }
            let nexthop_objects = match f.nexthop_objects.as_deref() {
                None | Some("off") => false,
                Some("auto") => true,
                Some(v) => {
                    return Err(bad(
                        "fib.nexthop_objects".into(),
                        format!("{v:?}: use \"auto\" or \"off\""),
                    ))
                }
            };
            Fib {
                nexthop_objects,
                enabled: f.enabled.unwrap_or(true),
                protocol,
                table: f.table.unwrap_or(254),
                route_mtu: f.route_mtu,
                sweep_after: f
                    .sweep_after
                    .unwrap_or_else(|| graceful_restart.map_or(120, |g| g.restart_time as u64)),
            }
        };
        let datastore = match raw.datastore {
            None => None,
            Some(d) => Some(match (d.path, d.etcd_endpoints.is_empty()) {
                (Some(path), true) => {
                    if d.etcd_ca.is_some() || d.etcd_cert.is_some() || d.etcd_key.is_some() {
                        return Err(bad(
                            "datastore.path".into(),
                            "etcd TLS files given with the embedded store; remove them or use etcd_endpoints".into(),
                        ));
                    }
                    Datastore::Embedded { path }
                }
                (None, false) => {
                    for (i, e) in d.etcd_endpoints.iter().enumerate() {
                        if !(e.starts_with("http://") || e.starts_with("https://")) {
                            return Err(bad(
                                format!("datastore.etcd_endpoints[{i}]"),
                                format!("{e:?} is not a URL: use http://HOST:PORT or https://HOST:PORT"),
                            ));
                        }
                    }
                    if d.etcd_cert.is_some() != d.etcd_key.is_some() {
                        return Err(bad(
                            "datastore.etcd_cert".into(),
                            "etcd_cert and etcd_key go together".into(),
                        ));
                    }
                    Datastore::Etcd {
                        endpoints: d.etcd_endpoints,
                        ca: d.etcd_ca,
                        cert: d.etcd_cert,
                        key: d.etcd_key,
                    }
                }
                (Some(_), false) => {
                    return Err(bad(
                        "datastore".into(),
                        "give either etcd_endpoints or path, not both".into(),
                    ))
                }
                (None, true) => {
                    return Err(bad(
                        "datastore".into(),
                        "give etcd_endpoints = [\"http://HOST:2379\", ...] or path = \"/var/lib/petrel/petrel.db\"".into(),
                    ))
                }
            }),
        };
        let ops = ops::parse(file, raw.mtu, raw.metrics, raw.log)?;
        Ok(Config {
            file: PathBuf::from(file),
            fib,
            mtu: ops.mtu,
            metrics: ops.metrics,
            log: ops.log,
            node: Node {
                name: raw.node.name,
                router_id,
                asn: node_asn,
                asn_from_file: raw.node.asn.is_some(),
                addresses,
                interface: raw.node.interface,
                labels: raw.node.labels,
            },
            datastore,
            ipam_socket: match raw.ipam {
                None => Some(PathBuf::from(DEFAULT_IPAM_SOCKET)),
                Some(i) if i.enabled == Some(false) => None,
                Some(i) => Some(
                    i.socket
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_IPAM_SOCKET)),
                ),
            },
            control_socket: raw
                .control
                .socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            bgp: Bgp {
                listen,
                cluster_id,
                graceful_restart,
                max_paths,
                peers,
                originate,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "petrel-a"
router_id = "10.99.1.1"
asn = 4200000001
[control]
socket = "/tmp/petreld.sock"
[bgp]
listen = ["10.99.1.1:179", "[fd00:99:1::1]:179"]
cluster_id = "10.99.1.1"
graceful_restart = { restart_time = 120 }
[[bgp.peers]]
address = "10.99.1.2"
asn = 65001
password = "secret"
local_port = 10179
allow_own_as = 1
hold_time = 30
ttl_security = 1
families = ["ipv4-unicast", "ipv6-unicast"]
graceful_restart = { restart_time = 120 }
max_prefix = { limit = 1000, action = "restart", restart_after = 30 }
[[bgp.peers]]
address = "fd00:99:1::3"
asn = 4200000001
route_reflector_client = true
add_path = { send = "ecmp", receive = true }
[[bgp.originate]]
prefix = "10.10.1.0/24"
communities = ["64512:100", "no-export"]
large_communities = ["4200000001:1:2"]
"#;

    #[test]
    fn bfd_per_peer_with_defaults_and_ranges() {
        let with = |bfd: &str| {
            Config::parse(
                "petreld.toml",
                &GOOD.replace(
                    "route_reflector_client = true",
                    &format!("route_reflector_client = true\nbfd = {bfd}"),
                ),
            )
        };
        let c = with("{ min_rx_ms = 100 }").unwrap();
        assert_eq!(c.bgp.peers[0].bfd, None);
        let b = c.bgp.peers[1].bfd.unwrap();
        assert_eq!(
            (b.min_rx_ms, b.min_tx_ms, b.multiplier, b.multihop),
            (100, 300, 3, false)
        );
        let s = b.settings();
        assert_eq!(s.min_rx, Duration::from_millis(100));
        let e = with("{ min_tx_ms = 5 }").unwrap_err().to_string();
        assert!(
            e.contains("bgp.peers[1].bfd.min_tx_ms") && e.contains("10..=60000"),
            "{e}"
        );
        let e = with("{ multiplier = 0 }").unwrap_err().to_string();
        assert!(e.contains("bfd.multiplier"), "{e}");
        let e = with("{ interval = 5 }").unwrap_err().to_string();
        assert!(e.contains("interval"), "{e}");
    }

    #[test]
    fn parses_a_complete_file() {
        let c = Config::parse("petreld.toml", GOOD).unwrap();
        assert_eq!(c.node.asn, 4_200_000_001);
        assert_eq!(c.bgp.listen.len(), 2);
        assert_eq!(c.bgp.peers[0].next_hop, NextHopMode::SelfAddr);
        assert_eq!(c.bgp.peers[1].next_hop, NextHopMode::Keep);
        assert_eq!(
            (
                c.bgp.peers[0].local_port,
                c.bgp.peers[0].allow_own_as,
                c.bgp.peers[0].local_as
            ),
            (10179, 1, None)
        );
        assert_eq!(c.bgp.peers[1].families, [Family::IPV6_UNICAST]);
        assert_eq!(
            c.bgp.peers[1].add_path.send,
            [(Family::IPV6_UNICAST, petrel_bgp::rib::SendMode::Ecmp)]
        );
        assert!(c.bgp.peers[0].add_path.is_empty());
        assert_eq!(
            c.bgp.peers[0].max_prefix,
            Some(MaxPrefix {
                limit: 1000,
                action: MaxPrefixAction::Restart { after_secs: 30 }
            })
        );
        assert_eq!(c.bgp.originate[0].prefix.to_string(), "10.10.1.0/24");
    }

    fn err(text: &str) -> String {
        Config::parse("/etc/petrel/petreld.toml", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_field_and_allowed_values() {
        let e = err("[node]\nname = \"a\"\nrouter_id = \"1.2.3\"\n");
        assert_eq!(
            e,
            "/etc/petrel/petreld.toml: node.router_id: \"1.2.3\" is not an IPv4 address"
        );
        let e = err(&GOOD.replace(
            "families = [\"ipv4-unicast\", \"ipv6-unicast\"]",
            "families = [\"ipv4-flowspec\"]",
        ));
        assert!(
            e.contains("bgp.peers[0].families[0]") && e.contains("\"ipv4-unicast\""),
            "{e}"
        );
        let e = err(&GOOD.replace("hold_time = 30", "hold_time = 2"));
        assert!(
            e.contains("bgp.peers[0].hold_time: must be 0 or at least 3"),
            "{e}"
        );
        let e = err(&GOOD.replace("prefix = \"10.10.1.0/24\"", "prefix = \"10.10.1.0/33\""));
        assert!(e.contains("bgp.originate[0].prefix"), "{e}");
        let e = err(&GOOD.replace(
            "restart_time = 120 }\n[[bgp.peers]]",
            "restart_time = 5000 }\n[[bgp.peers]]",
        ));
        assert!(
            e.contains("graceful_restart.restart_time") && e.contains("4095"),
            "{e}"
        );
        // Unknown fields are errors, with the line.
        let e = err(&GOOD
            .replace("passive", "pasive")
            .replace("ttl_security = 1", "ttl_securty = 1"));
        assert!(
            e.starts_with("/etc/petrel/petreld.toml: ") && e.contains("ttl_securty"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "route_reflector_client = true",
            "route_reflector_client = true\nnext_hop = \"selff\"",
        ));
        assert!(e.contains("\"self\" and \"keep\""), "{e}");
        let e = err(&GOOD.replace("send = \"ecmp\"", "send = { \"ipv4-unicast\" = \"all\" }"));
        assert!(
            e.contains("bgp.peers[1].add_path.send.ipv4-unicast: not one of the peer's families"),
            "{e}"
        );
    }

    #[test]
    fn fib_settings_and_defaults() {
        let c = Config::parse("f.toml", GOOD).unwrap();
        assert_eq!(
            c.fib,
            Fib {
                enabled: true,
                protocol: 202,
                table: 254,
                route_mtu: None,
                sweep_after: 120,
                nexthop_objects: false,
            }
        );
        let c = Config::parse(
            "f.toml",
            &format!("{GOOD}\n[fib]\nprotocol = 99\nroute_mtu = 1450\nenabled = false\n"),
        )
        .unwrap();
        assert_eq!(
            (c.fib.protocol, c.fib.route_mtu, c.fib.enabled),
            (99, Some(1450), false)
        );
        let e = Config::parse("f.toml", &format!("{GOOD}\n[fib]\nprotocol = 2\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml: fib.protocol: 2 is reserved"), "{e}");
        let c = Config::parse(
            "f.toml",
            &format!("{GOOD}\n[fib]\nnexthop_objects = \"auto\"\n"),
        )
        .unwrap();
        assert!(c.fib.nexthop_objects);
        let e = Config::parse(
            "f.toml",
            &format!("{GOOD}\n[fib]\nnexthop_objects = \"on\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("f.toml: fib.nexthop_objects: \"on\""), "{e}");
    }

    #[test]
    fn peer_policies_parse_and_errors_name_the_field() {
        let with = GOOD.replace(
            "[[bgp.originate]]",
            "[[bgp.peers.import]]\nmatch = { prefix = { cidr = \"10.0.0.0/8\", op = \"within\" } }\naction = \"reject\"\n[[bgp.originate]]",
        );
        let c = Config::parse("f.toml", &with).unwrap();
        assert_eq!(c.bgp.peers[1].import.rules.len(), 1);
        let bad = with.replace("op = \"within\"", "op = \"inside\"");
        let e = Config::parse("f.toml", &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("f.toml: bgp.peers[1].import: ") && e.contains("inside"),
            "{e}"
        );
    }
}
