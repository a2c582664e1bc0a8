//! `petrelctl bgp` and `petrelctl node`: the cluster's BGP records and node
//! records, directly in the datastore. Every running petreld watches them
//! and applies a change to the sessions it concerns only.

use super::ipam::{block_on, DatastoreArgs};
use crate::cluster::model::{self, BgpConfig, BgpPeer, ModelError, Node, Service};
use clap::{Args, Subcommand, ValueEnum};
use ipnet::IpNet;
use petrel_ipam::keys;
use std::net::IpAddr;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BgpCmd {
    /// Show the cluster's BGP configuration, or change the fields given.
    Config(ConfigArgs),
    /// External BGP peers (top-of-rack routers and the like).
    #[command(subcommand)]
    Peer(PeerCmd),
    /// Service addresses the nodes advertise.
    #[command(subcommand)]
    Service(ServiceCmd),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The cluster AS (nodes that do not set their own).
    #[arg(long)]
    asn: Option<u32>,
    /// The node-to-node full mesh.
    #[arg(long)]
    mesh: Option<OnOff>,
    /// The BGP port nodes listen on and dial each other at.
    #[arg(long)]
    listen_port: Option<u16>,
    /// Communities added to every route the nodes originate (replaces the list).
    #[arg(long, value_delimiter = ',')]
    communities: Option<Vec<String>>,
    /// Service ClusterIP ranges to advertise (replaces the list; "" empties it).
    #[arg(long, value_delimiter = ',')]
    service_cluster_ips: Option<Vec<String>>,
    /// Service external IP ranges to advertise (replaces the list).
    #[arg(long, value_delimiter = ',')]
    service_external_ips: Option<Vec<String>>,
    /// Service load-balancer IP ranges to advertise (replaces the list).
    #[arg(long, value_delimiter = ',')]
    service_loadbalancer_ips: Option<Vec<String>>,
    /// BFD on every node-to-node session (RFC 5882); on takes the
    /// --mesh-bfd-* values given, 300 ms × 3 otherwise.
    #[arg(long)]
    mesh_bfd: Option<OnOff>,
    #[command(flatten)]
    mesh_bfd_timers: MeshBfdTimers,
    /// BFD authentication of mesh sessions (RFC 5880 §6.7): "keyed-sha1"
    /// or "meticulous-keyed-sha1" with --mesh-bfd-auth-key-id and
    /// --mesh-bfd-auth-secret-file; "off" removes it.
    #[arg(long, value_name = "TYPE")]
    mesh_bfd_auth: Option<String>,
    #[arg(long, value_name = "N")]
    mesh_bfd_auth_key_id: Option<u8>,
    /// The file holding the key on every node (1 to 20 octets).
    #[arg(long, value_name = "FILE")]
    mesh_bfd_auth_secret_file: Option<std::path::PathBuf>,
    /// The families the mesh's IPv6 sessions carry, e.g.
    /// "ipv4-unicast,ipv6-unicast": IPv4 routes over IPv6 sessions with
    /// IPv6 next hops (RFC 8950, "extended next hop"); "" resets to IPv6
    /// only.
    #[arg(long, value_delimiter = ',', value_name = "FAMILIES")]
    mesh_ipv6_families: Option<Vec<String>>,
    /// ADD-PATH (RFC 7911) from route reflectors to their clients: "best",
    /// "ecmp" or "all" paths per prefix; "off": one path.
    #[arg(long, value_name = "MODE")]
    route_reflector_add_path: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Default)]
pub struct MeshBfdTimers {
    /// BFD Required Min RX Interval of mesh sessions, in milliseconds.
    #[arg(long)]
    mesh_bfd_min_rx_ms: Option<u32>,
    /// BFD Desired Min TX Interval of mesh sessions, in milliseconds.
    #[arg(long)]
    mesh_bfd_min_tx_ms: Option<u32>,
    /// BFD Detect Mult of mesh sessions.
    #[arg(long)]
    mesh_bfd_multiplier: Option<u8>,
}

/// BFD for one peer: any of these turns it on.
#[derive(Args, Debug, Default)]
pub struct PeerBfdArgs {
    /// BFD protects the session (RFC 5882), 300 ms × 3 unless set below.
    #[arg(long)]
    bfd: bool,
    /// BFD Required Min RX Interval, in milliseconds.
    #[arg(long)]
    bfd_min_rx_ms: Option<u32>,
    /// BFD Desired Min TX Interval, in milliseconds.
    #[arg(long)]
    bfd_min_tx_ms: Option<u32>,
    /// BFD Detect Mult.
    #[arg(long)]
    bfd_multiplier: Option<u8>,
    /// Multi-hop BFD (RFC 5883, UDP 4784) for a peer not on a shared link.
    #[arg(long)]
    bfd_multihop: bool,
    /// BFD authentication (RFC 5880 §6.7): "keyed-sha1" or
    /// "meticulous-keyed-sha1"; needs the two options below.
    #[arg(long, value_name = "TYPE", requires_all = ["bfd_auth_key_id", "bfd_auth_secret_file"])]
    bfd_auth: Option<crate::config::BfdAuthType>,
    /// BFD Auth Key ID, as the peer has it.
    #[arg(long, value_name = "N", requires = "bfd_auth")]
    bfd_auth_key_id: Option<u8>,
    /// The file holding the BFD key (1 to 20 octets) on the nodes that
    /// peer: the record names the file, never the key.
    #[arg(long, value_name = "FILE", requires = "bfd_auth")]
    bfd_auth_secret_file: Option<std::path::PathBuf>,
}

impl PeerBfdArgs {
    fn to_bfd(&self) -> Option<crate::config::Bfd> {
        let on = self.bfd
            || self.bfd_multihop
            || self.bfd_min_rx_ms.is_some()
            || self.bfd_min_tx_ms.is_some()
            || self.bfd_multiplier.is_some()
            || self.bfd_auth.is_some();
        on.then(|| {
            let d = crate::config::Bfd::default();
            crate::config::Bfd {
                min_rx_ms: self.bfd_min_rx_ms.unwrap_or(d.min_rx_ms),
                min_tx_ms: self.bfd_min_tx_ms.unwrap_or(d.min_tx_ms),
                multiplier: self.bfd_multiplier.unwrap_or(d.multiplier),
                multihop: self.bfd_multihop,
                auth: match (
                    self.bfd_auth,
                    self.bfd_auth_key_id,
                    &self.bfd_auth_secret_file,
                ) {
                    (Some(kind), Some(key_id), Some(file)) => Some(crate::config::BfdAuth {
                        kind,
                        key_id,
                        secret_file: file.clone(),
                    }),
                    // clap's `requires` allows no other combination.
                    _ => None,
                },
            }
        })
    }
}

/// `--mesh-bfd-auth`: `None` leaves the mesh's authentication as it is,
/// `Some(None)` removes it.
#[allow(clippy::option_option)]
fn mesh_bfd_auth(a: &ConfigArgs) -> anyhow::Result<Option<Option<crate::config::BfdAuth>>> {
    let Some(t) = a.mesh_bfd_auth.as_deref() else {
        anyhow::ensure!(
            a.mesh_bfd_auth_key_id.is_none() && a.mesh_bfd_auth_secret_file.is_none(),
            "--mesh-bfd-auth-key-id and --mesh-bfd-auth-secret-file go with --mesh-bfd-auth TYPE"
        );
        return Ok(None);
    };
    if t == "off" {
        return Ok(Some(None));
    }
    let kind: crate::config::BfdAuthType = t
        .parse()
        .map_err(|e| anyhow::anyhow!("--mesh-bfd-auth {e}"))?;
    let (Some(key_id), Some(file)) = (a.mesh_bfd_auth_key_id, &a.mesh_bfd_auth_secret_file) else {
        anyhow::bail!(
            "--mesh-bfd-auth {t} needs --mesh-bfd-auth-key-id and --mesh-bfd-auth-secret-file"
        );
    };
    Ok(Some(Some(crate::config::BfdAuth {
        kind,
        key_id,
        secret_file: file.clone(),
    })))
}

/// Parsed once per petrelctl run: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum PeerCmd {
    /// Add a peer, or replace the one of that name.
    Add(Box<PeerAdd>),
    List {
        #[arg(long)]
        json: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct PeerAdd {
    name: String,
    #[arg(long)]
    address: IpAddr,
    #[arg(long)]
    asn: u32,
    /// Only this node peers with it.
    #[arg(long, conflicts_with = "node_selector")]
    node: Option<String>,
    /// Only nodes whose labels match, e.g. "rack == 'a'".
    #[arg(long)]
    node_selector: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// TCP MD5 key (RFC 2385).
    #[arg(long)]
    password: Option<String>,
    #[arg(long)]
    hold_time: Option<u16>,
    #[arg(long)]
    keepalive: Option<u16>,
    /// Graceful restart time offered to this peer (RFC 4724).
    #[arg(long)]
    restart_time: Option<u16>,
    /// GTSM (RFC 5082): the peer's distance in hops.
    #[arg(long)]
    ttl_security: Option<u8>,
    /// "self" or "keep".
    #[arg(long)]
    next_hop: Option<String>,
    #[arg(long)]
    passive: bool,
    /// Also advertise routes learned from the other nodes (default: only
    /// the node's own).
    #[arg(long)]
    advertise_learned: bool,
    /// ADD-PATH (RFC 7911): send the peer "best", "ecmp" or "all" paths per
    /// prefix, where it says it receives several.
    #[arg(long, value_name = "MODE")]
    add_path: Option<String>,
    /// ADD-PATH (RFC 7911): take several paths per prefix from the peer.
    #[arg(long)]
    add_path_receive: bool,
    /// Import policy: a JSON file holding a list of rules, in the form of
    /// petreld.toml's `[[bgp.peers.import]]` (docs/config.md).
    #[arg(long, value_name = "FILE")]
    import_policy: Option<std::path::PathBuf>,
    /// Export policy: as --import-policy.
    #[arg(long, value_name = "FILE")]
    export_policy: Option<std::path::PathBuf>,
    #[command(flatten)]
    bfd: PeerBfdArgs,
    /// The families the session carries (default: the address's own);
    /// "ipv4-unicast,ipv6-unicast" on an IPv6 peer carries IPv4 routes with
    /// IPv6 next hops (RFC 8950, "extended next hop").
    #[arg(long, value_delimiter = ',', value_name = "FAMILIES")]
    families: Option<Vec<String>>,
}

/// The rules of a policy file: a JSON list (or one rule).
fn policy_rules(path: &Option<std::path::PathBuf>) -> anyhow::Result<Vec<serde_json::Value>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
    Ok(match v {
        serde_json::Value::Array(rules) => rules,
        rule => vec![rule],
    })
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Add a service's addresses, or replace the service of that name.
    Add {
        name: String,
        #[arg(long, value_delimiter = ',', required = true)]
        address: Vec<IpNet>,
        /// Advertised only by nodes with a local endpoint.
        #[arg(long)]
        local_only: bool,
        /// Nodes with a local endpoint.
        #[arg(long, value_delimiter = ',')]
        endpoint_node: Vec<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// The registered nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set labels (KEY=VALUE) or remove them (KEY-) on a node.
    Label {
        node: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
}

pub fn bgp(cmd: BgpCmd, ds: DatastoreArgs) -> anyhow::Result<ExitCode> {
    block_on(bgp_async(cmd, ds))?
}

pub fn node(cmd: NodeCmd, ds: DatastoreArgs) -> anyhow::Result<ExitCode> {
    block_on(node_async(cmd, ds))?
}

async fn bgp_async(cmd: BgpCmd, ds: DatastoreArgs) -> anyhow::Result<ExitCode> {
    let store = ds.open_store().await?;
    let s = &*store;
    match cmd {
        BgpCmd::Config(a) => {
            let changes = a.asn.is_some()
                || a.mesh.is_some()
                || a.listen_port.is_some()
                || a.communities.is_some()
                || a.service_cluster_ips.is_some()
                || a.service_external_ips.is_some()
                || a.service_loadbalancer_ips.is_some()
                || a.mesh_bfd.is_some()
                || a.mesh_bfd_timers.mesh_bfd_min_rx_ms.is_some()
                || a.mesh_bfd_timers.mesh_bfd_min_tx_ms.is_some()
                || a.mesh_bfd_timers.mesh_bfd_multiplier.is_some()
                || a.mesh_bfd_auth.is_some()
                || a.mesh_ipv6_families.is_some()
                || a.route_reflector_add_path.is_some();
            let mesh_auth = mesh_bfd_auth(&a)?;
            let cfg = if changes {
                model::modify::<BgpConfig, _>(s, model::BGP_CONFIG, |cur| {
                    let mut c = cur.unwrap_or_default();
                    if let Some(v) = a.asn {
                        c.asn = v;
                    }
                    if let Some(m) = a.mesh {
                        c.node_mesh = matches!(m, OnOff::On);
                    }
                    if let Some(v) = a.listen_port {
                        c.listen_port = v;
                    }
                    if let Some(v) = &a.communities {
                        c.communities = v.clone();
                    }
                    if let Some(v) = &a.service_cluster_ips {
                        c.service_cluster_ips = nets(v)?;
                    }
                    if let Some(v) = &a.service_external_ips {
                        c.service_external_ips = nets(v)?;
                    }
                    if let Some(v) = &a.service_loadbalancer_ips {
                        c.service_loadbalancer_ips = nets(v)?;
                    }
                    if let Some(m) = a.mesh_bfd {
                        c.node_mesh_bfd = matches!(m, OnOff::On).then(Default::default);
                    }
                    let t = &a.mesh_bfd_timers;
                    if t.mesh_bfd_min_rx_ms.is_some()
                        || t.mesh_bfd_min_tx_ms.is_some()
                        || t.mesh_bfd_multiplier.is_some()
                    {
                        // Timers turn it on unless --mesh-bfd off was given.
                        if !matches!(a.mesh_bfd, Some(OnOff::Off)) {
                            let b = c.node_mesh_bfd.get_or_insert_with(Default::default);
                            if let Some(v) = t.mesh_bfd_min_rx_ms {
                                b.min_rx_ms = v;
                            }
                            if let Some(v) = t.mesh_bfd_min_tx_ms {
                                b.min_tx_ms = v;
                            }
                            if let Some(v) = t.mesh_bfd_multiplier {
                                b.multiplier = v;
                            }
                        }
                    }
                    if let Some(auth) = &mesh_auth {
                        if !matches!(a.mesh_bfd, Some(OnOff::Off)) {
                            let b = c.node_mesh_bfd.get_or_insert_with(Default::default);
                            b.auth = auth.clone();
                        }
                    }
                    if let Some(m) = &a.route_reflector_add_path {
                        c.route_reflector_add_path = (m != "off").then(|| m.clone());
                    }
                    if let Some(f) = &a.mesh_ipv6_families {
                        // `--mesh-ipv6-families ""` parses as one empty name.
                        let f: Vec<String> = f.iter().filter(|s| !s.is_empty()).cloned().collect();
                        c.node_mesh_ipv6_families = (!f.is_empty()).then_some(f);
                    }
                    model::validate_config(&c)?;
                    Ok(Some(c))
                })
                .await?
                .unwrap_or_default()
            } else {
                model::bgp_config(s).await?
            };
            if a.json {
                println!("{}", serde_json::to_string(&cfg)?);
            } else {
                let list = |v: &[IpNet]| {
                    if v.is_empty() {
                        "-".to_string()
                    } else {
                        v.iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                };
                println!("asn                       {}", cfg.asn);
                println!(
                    "node mesh                 {}",
                    if cfg.node_mesh { "on" } else { "off" }
                );
                println!("listen port               {}", cfg.listen_port);
                println!(
                    "node mesh BFD             {}",
                    match &cfg.node_mesh_bfd {
                        Some(b) => format!(
                            "rx {} ms, tx {} ms, multiplier {}{}",
                            b.min_rx_ms,
                            b.min_tx_ms,
                            b.multiplier,
                            match &b.auth {
                                Some(a) => format!(
                                    ", {} key {} from {}",
                                    a.kind.name(),
                                    a.key_id,
                                    a.secret_file.display()
                                ),
                                None => String::new(),
                            }
                        ),
                        None => "off".into(),
                    }
                );
                println!(
                    "communities               {}",
                    if cfg.communities.is_empty() {
                        "-".into()
                    } else {
                        cfg.communities.join(",")
                    }
                );
                println!(
                    "service cluster IPs       {}",
                    list(&cfg.service_cluster_ips)
                );
                println!(
                    "service external IPs      {}",
                    list(&cfg.service_external_ips)
                );
                println!(
                    "service load-balancer IPs {}",
                    list(&cfg.service_loadbalancer_ips)
                );
                println!(
                    "route reflector add-path  {}",
                    cfg.route_reflector_add_path.as_deref().unwrap_or("off")
                );
                println!(
                    "mesh IPv6 families        {}",
                    cfg.node_mesh_ipv6_families
                        .as_ref()
                        .map_or("ipv6-unicast".into(), |f| f.join(","))
                );
            }
        }
        BgpCmd::Peer(PeerCmd::Add(a)) => {
            let p = BgpPeer {
                name: a.name,
                address: a.address,
                asn: a.asn,
                node: a.node,
                node_selector: a.node_selector.unwrap_or_default(),
                port: a.port,
                password: a.password,
                hold_time: a.hold_time,
                keepalive: a.keepalive,
                restart_time: a.restart_time,
                ttl_security: a.ttl_security,
                next_hop: a.next_hop,
                passive: a.passive,
                advertise_learned: a.advertise_learned,
                add_path: a.add_path,
                add_path_receive: a.add_path_receive,
                import: policy_rules(&a.import_policy)?,
                export: policy_rules(&a.export_policy)?,
                bfd: a.bfd.to_bfd(),
                families: a.families,
            };
            model::validate_peer(&p)?;
            let mut existed = false;
            model::modify::<BgpPeer, _>(s, &model::peer_key(&p.name), |cur| {
                existed = cur.is_some();
                Ok(Some(p.clone()))
            })
            .await?;
            println!(
                "peer {} {}",
                p.name,
                if existed { "replaced" } else { "added" }
            );
        }
        BgpCmd::Peer(PeerCmd::List { json }) => {
            let peers = model::peers(s).await?;
            if json {
                println!("{}", serde_json::to_string(&peers)?);
            } else {
                println!(
                    "{:<16} {:<28} {:>10}  {:<24} OPTIONS",
                    "NAME", "ADDRESS", "ASN", "NODES"
                );
                for p in &peers {
                    let nodes = match (&p.node, p.node_selector.as_str()) {
                        (Some(n), _) => format!("node {n}"),
                        (None, "") => "all".into(),
                        (None, sel) => sel.to_string(),
                    };
                    let mut opts = Vec::new();
                    if p.password.is_some() {
                        opts.push("md5".to_string());
                    }
                    if p.passive {
                        opts.push("passive".into());
                    }
                    if let Some(t) = p.restart_time {
                        opts.push(format!("restart-time={t}"));
                    }
                    if let Some(t) = p.hold_time {
                        opts.push(format!("hold-time={t}"));
                    }
                    if let Some(t) = p.ttl_security {
                        opts.push(format!("ttl-security={t}"));
                    }
                    if let Some(b) = &p.bfd {
                        opts.push(format!(
                            "bfd={}x{}ms{}{}",
                            b.multiplier,
                            b.min_rx_ms,
                            if b.multihop { ",multihop" } else { "" },
                            match &b.auth {
                                Some(a) => format!(",{}/{}", a.kind.name(), a.key_id),
                                None => String::new(),
                            }
                        ));
                    }
                    if let Some(m) = &p.add_path {
                        opts.push(format!("add-path={m}"));
                    }
                    if p.add_path_receive {
                        opts.push("add-path-receive".into());
                    }
                    if let Some(f) = &p.families {
                        opts.push(format!("families={}", f.join(",")));
                    }
                    println!(
                        "{:<16} {:<28} {:>10}  {:<24} {}",
                        p.name,
                        p.address,
                        p.asn,
                        nodes,
                        opts.join(" ")
                    );
                }
            }
        }
        BgpCmd::Peer(PeerCmd::Delete { name }) => {
            delete(s, &model::peer_key(&name), "peer", &name).await?;
        }
        BgpCmd::Service(ServiceCmd::Add {
            name,
            address,
            local_only,
            endpoint_node,
        }) => {
            let svc = Service {
                name,
                addresses: address,
                local_only,
                endpoint_nodes: endpoint_node,
            };
            model::validate_service(&svc)?;
            model::modify::<Service, _>(s, &model::service_key(&svc.name), |_| {
                Ok(Some(svc.clone()))
            })
            .await?;
            println!("service {} set", svc.name);
        }
        BgpCmd::Service(ServiceCmd::List { json }) => {
            let v = model::services(s).await?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("{:<20} {:<40} ENDPOINT NODES", "NAME", "ADDRESSES");
                for svc in &v {
                    let addrs: Vec<String> = svc.addresses.iter().map(|a| a.to_string()).collect();
                    let nodes = if svc.local_only {
                        svc.endpoint_nodes.join(",")
                    } else {
                        "all".into()
                    };
                    println!("{:<20} {:<40} {}", svc.name, addrs.join(","), nodes);
                }
            }
        }
        BgpCmd::Service(ServiceCmd::Delete { name }) => {
            delete(s, &model::service_key(&name), "service", &name).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// CIDRs of a comma-separated flag; an empty value is the empty list.
fn nets(v: &[String]) -> Result<Vec<IpNet>, ModelError> {
    v.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<IpNet>()
                .map_err(|_| ModelError::Invalid(format!("{s:?} is not a CIDR")))
        })
        .collect()
}

async fn delete(
    s: &dyn petrel_ipam::store::Store,
    key: &str,
    what: &str,
    name: &str,
) -> anyhow::Result<()> {
    let mut found = false;
    model::modify::<serde_json::Value, _>(s, key, |cur| {
        found = cur.is_some();
        Ok(None)
    })
    .await?;
    if !found {
        anyhow::bail!("no {what} named {name:?}");
    }
    println!("{what} {name} deleted");
    Ok(())
}

async fn node_async(cmd: NodeCmd, ds: DatastoreArgs) -> anyhow::Result<ExitCode> {
    let store = ds.open_store().await?;
    let s = &*store;
    match cmd {
        NodeCmd::List { json } => {
            let nodes = model::nodes(s).await?;
            if json {
                println!("{}", serde_json::to_string(&nodes)?);
            } else {
                println!(
                    "{:<20} {:<36} {:>10}  {:<16} LABELS",
                    "NAME", "ADDRESSES", "ASN", "RR CLUSTER"
                );
                for n in &nodes {
                    let addrs: Vec<String> = n.addresses.iter().map(|a| a.to_string()).collect();
                    let labels: Vec<String> =
                        n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{:<20} {:<36} {:>10}  {:<16} {}",
                        n.name,
                        if addrs.is_empty() {
                            "-".into()
                        } else {
                            addrs.join(",")
                        },
                        n.asn.map_or("-".into(), |a| a.to_string()),
                        n.route_reflector_cluster_id
                            .map_or("-".into(), |c| c.to_string()),
                        labels.join(",")
                    );
                }
            }
        }
        NodeCmd::Label { node, labels } => {
            let mut set = Vec::new();
            let mut unset = Vec::new();
            for l in &labels {
                if let Some((k, v)) = l.split_once('=') {
                    if k.is_empty() {
                        anyhow::bail!("{l:?}: empty label key");
                    }
                    set.push((k.to_string(), v.to_string()));
                } else if let Some(k) = l.strip_suffix('-') {
                    unset.push(k.to_string());
                } else {
                    anyhow::bail!("{l:?}: expected KEY=VALUE to set or KEY- to remove");
                }
            }
            model::modify::<Node, _>(s, &keys::node(&node), |cur| {
                let mut n = cur.unwrap_or_else(|| Node {
                    name: node.clone(),
                    ..Node::default()
                });
                for (k, v) in &set {
                    n.labels.insert(k.clone(), v.clone());
                }
                for k in &unset {
                    n.labels.remove(k);
                }
                Ok::<_, ModelError>(Some(n))
            })
            .await?;
            println!("node {node} labelled");
        }
    }
    Ok(ExitCode::SUCCESS)
}
