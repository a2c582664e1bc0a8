//! The three-node lab: an etcd, a top-of-rack router and nodes running
//! petreld, each with pods attached by Debian's CNI bridge plugin
//! delegating to petrel-ipam. One implementation serves `petrel-lab up`
//! and the end-to-end suite.
//!
//! Topology (one L2 subnet, 10.99.0.0/24 and fd00:99::/64, on a Linux
//! bridge in the ToR's namespace):
//!
//! ```text
//!   etcd 10.99.0.2 ─┐  (three members: also .32, .33; grpc-proxy .30)
//!   node1 10.99.0.11 fd00:99::11 ─┤ br0 (ToR 10.99.0.1 fd00:99::1,
//!   node2 10.99.0.12 fd00:99::12 ─┤      AS 65000, FRR or BIRD)
//!   node3 10.99.0.13 fd00:99::13 ─┘
//!   nodeN: cni0 bridge (the blocks' gateways) ── podN-1, podN-2
//! ```
//!
//! Dual-stack unless [`Options::ipv6`] is off: an IPv6 pool beside the
//! IPv4 one, every pod with an address of each, and every BGP session
//! twice, once per family over that family's transport (the ToR as two
//! datastore peers, `tor` and `tor6`; the mesh from the nodes' registered
//! addresses, one session per family both nodes have). Etcd stays IPv4.
//!
//! Nodes have no default route: a pod on another node is reachable only
//! through the route petreld put into the node's FIB, so a ping proves it.
//!
//! The bridge plugin runs with `isGateway: true`: petrel-ipam reserves a
//! gateway in the node's block (`"gateway": "block"`, its default) and
//! returns it with every address, so the bridge puts it on `cni0` and no
//! pod gets it. Pods route `default via` the gateway. The gateway address
//! also gives the node the connected route for its block, which wins over
//! petreld's blackhole (metric 65535).

use super::etcd::{Etcd, GrpcProxy};
use super::netns::run;
use super::petreld::{self, Petreld};
use super::topo::{self, Kind, NeighborSpec, PeerSpec, Speaker};
use super::{wait_until, Daemon, Lab, Netns};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;

/// The nodes' AS (petrel's default) and the ToR's.
pub const NODE_AS: u32 = 64512;
pub const TOR_AS: u32 = 65000;
pub const TOR_ADDR: &str = "10.99.0.1";
pub const ETCD_ADDR: &str = "10.99.0.2";
/// The members' addresses when etcd has several ([`Options::etcd_members`]).
pub const ETCD_ADDRS: [&str; 3] = [ETCD_ADDR, "10.99.0.32", "10.99.0.33"];
/// Where `etcd grpc-proxy` listens when [`Options::etcd_proxy`] is on.
pub const ETCD_PROXY_ADDR: &str = "10.99.0.30";
/// A free address on the lab's subnet (an extra router a test may add).
pub const SPARE_ADDR: &str = "10.99.0.3";
pub const SUBNET_LEN: u8 = 24;
pub const POOL: &str = "10.244.0.0/16";
pub const BLOCK_SIZE: u8 = 26;
/// The ToR's IPv6 address on the lab's subnet (ULA, RFC 4193).
pub const TOR_ADDR6: &str = "fd00:99::1";
/// A free IPv6 address on the lab's subnet.
pub const SPARE_ADDR6: &str = "fd00:99::3";
pub const SUBNET6_LEN: u8 = 64;
/// The IPv6 pool, with Calico's default IPv6 block size (/122: 64
/// addresses, as a /26).
pub const POOL6: &str = "fd00:10:244::/56";
pub const BLOCK_SIZE6: u8 = 122;
/// The kernel's name for petrel's route protocol (202), or the number
/// when /etc/iproute2/rt_protos.d does not name it.
pub const PROTOCOLS: [&str; 2] = ["petrel", "202"];
const CNI_BRIDGE: &str = "/usr/lib/cni/bridge";
const NETWORK: &str = "petrel-lab";

/// How the nodes learn their peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peering {
    /// From the datastore: node-to-node mesh and the ToR as a global peer
    /// (`petrelctl bgp config|peer add`), blocks originated by petreld.
    Datastore,
    /// From each petreld.toml (`[[bgp.peers]]`, `[[bgp.originate]]`).
    File,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Options {
    pub tor: Kind,
    pub nodes: usize,
    pub pods_per_node: usize,
    /// Graceful-restart restart time, seconds (petreld and the ToR).
    pub restart_time: u16,
    /// BGP hold time of petreld's sessions, seconds.
    pub hold_time: u16,
    /// The pods' MTU (the bridge plugin's `mtu`); petreld derives the
    /// same for its routes from eth0's 1500 less VXLAN's 50, so a change
    /// here must go with a change of the `[mtu]` section below.
    pub pod_mtu: u32,
    pub peering: Peering,
    /// petreld's log filter.
    pub log_filter: String,
    /// etcd members, each in its own namespace on the ToR's bridge (1 or
    /// up to [`ETCD_ADDRS`]' 3). petreld, petrel-ipam and petrelctl get
    /// every member's endpoint.
    pub etcd_members: usize,
    /// Run `etcd grpc-proxy` at [`ETCD_PROXY_ADDR`] and give petreld and
    /// petrel-ipam only the proxy's endpoint (petrelctl still talks to
    /// the members).
    pub etcd_proxy: bool,
    /// This node (an index into the nodes) is a route reflector: its
    /// petreld.toml sets `bgp.cluster_id` (its address), which it
    /// registers, and the other nodes become its clients.
    pub reflector: Option<usize>,
    /// Every node's `bgp.max_paths` (ECMP).
    pub max_paths: Option<usize>,
    /// Dual-stack (the default): the IPv6 subnet, pool, pod addresses and
    /// sessions beside the IPv4 ones. Off: the IPv4-only lab.
    pub ipv6: bool,
    /// IPv4 over the IPv6 sessions (RFC 8950): no IPv4 session at all;
    /// each IPv6 session carries both families, the IPv4 blocks with the
    /// owner's IPv6 address as next hop, installed `via inet6`. Needs
    /// [`Options::ipv6`]. From the datastore: the ToR's IPv6 record and the
    /// mesh's IPv6 sessions carry both families (`--families`,
    /// `--mesh-ipv6-families`), and there is no IPv4 ToR record.
    pub rfc8950: bool,
    /// BFD (RFC 5880/5882) at [`BFD_MS`] × [`BFD_MULT`] on every session,
    /// both families: the mesh (`node_mesh_bfd` in the cluster's BGP
    /// config, or `bfd` on every file peer), the nodes' ToR peers, and the
    /// ToR's side of them (FRR's bfdd, BIRD's `protocol bfd`).
    pub bfd: bool,
}

/// The lab's BFD timers with [`Options::bfd`]: 300 ms × 3 (FRR's and
/// petreld's defaults), a 900 ms detection time.
pub const BFD_MS: u32 = 300;
pub const BFD_MULT: u8 = 3;

impl Default for Options {
    fn default() -> Self {
        Options {
            tor: Kind::Frr,
            nodes: 3,
            pods_per_node: 2,
            restart_time: 30,
            hold_time: 9,
            pod_mtu: 1450,
            peering: Peering::Datastore,
            log_filter: "info".into(),
            etcd_members: 1,
            etcd_proxy: false,
            reflector: None,
            max_paths: None,
            ipv6: true,
            rfc8950: false,
            bfd: false,
        }
    }
}

/// One pod: a namespace with `eth0` on its node's `cni0`.
pub struct Pod {
    pub ns: Netns,
    pub address: String,
    /// Its IPv6 address, in a dual-stack lab.
    pub address6: Option<String>,
    pub container_id: String,
}

impl Pod {
    /// Its addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<&str> {
        std::iter::once(self.address.as_str())
            .chain(self.address6.as_deref())
            .collect()
    }
}

/// One node: a namespace running petreld, with `eth0` on the ToR's bridge.
pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub address: String,
    pub petreld: Petreld,
    /// The node's affine block (`10.244.x.y/26`).
    pub block: String,
    /// The block's gateway, reserved by petrel-ipam, on `cni0`.
    pub gateway: String,
    /// In a dual-stack lab: the node's IPv6 address on the lab's subnet,
    /// its affine IPv6 block (`fd00:10:244:…/122`) and that block's
    /// gateway, also on `cni0`.
    pub address6: Option<String>,
    pub block6: Option<String>,
    pub gateway6: Option<String>,
    pub pods: Vec<Pod>,
    cni_dir: PathBuf,
    /// [`Options::rfc8950`].
    rfc8950: bool,
}

/// A running lab. Fields drop in order: the daemons before the [`Lab`],
/// which then removes the namespaces.
pub struct Cluster {
    pub options: Options,
    pub tor_ns: Netns,
    pub tor: Box<dyn Speaker>,
    pub nodes: Vec<Node>,
    pub etcd_proxy: Option<GrpcProxy>,
    pub etcd: Etcd,
    pub lab: Lab,
}

/// Session uptimes at one moment (see [`Cluster::no_reset`]).
#[derive(Clone, Debug)]
pub struct Uptimes {
    pub at: std::time::Instant,
    /// (node, peer address) → seconds Established.
    pub up: std::collections::BTreeMap<(String, String), u64>,
}

/// One ping of the matrix.
#[derive(Clone, Debug)]
pub struct PingResult {
    pub from: String,
    pub to: String,
    pub ok: bool,
}

impl Cluster {
    /// Builds the whole lab in `lab` and waits until it has converged
    /// (every session Established, every block in every FIB, every pod
    /// reaching every other pod).
    pub fn up(lab: Lab, options: Options) -> Result<Cluster> {
        let c = Cluster::build(lab, options)?;
        c.wait_converged()?;
        Ok(c)
    }

    /// Builds the lab without waiting for it to converge.
    pub fn build(lab: Lab, options: Options) -> Result<Cluster> {
        if options.rfc8950 && !options.ipv6 {
            bail!("rfc8950 carries IPv4 over IPv6 sessions: it needs ipv6");
        }
        let tor_ns = lab.netns("tor")?;
        tor_ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        tor_ns.add_addr("br0", &format!("{TOR_ADDR}/{SUBNET_LEN}"))?;
        if options.ipv6 {
            tor_ns.add_addr("br0", &format!("{TOR_ADDR6}/{SUBNET6_LEN}"))?;
        }
        tor_ns.ip(&["link", "set", "br0", "up"])?;

        let etcd = match options.etcd_members {
            1 => {
                let etcd_ns = lab.netns("etcd")?;
                attach(&tor_ns, "etcd", &etcd_ns, ETCD_ADDR)?;
                Etcd::start(&lab, &etcd_ns, ETCD_ADDR)?
            }
            n if (2..=ETCD_ADDRS.len()).contains(&n) => {
                let mut members = Vec::new();
                for (i, addr) in ETCD_ADDRS.iter().take(n).enumerate() {
                    let name = format!("etcd{}", i + 1);
                    let ns = lab.netns(&name)?;
                    attach(&tor_ns, &name, &ns, addr)?;
                    members.push((ns, addr.to_string()));
                }
                Etcd::start_cluster(&lab, &members, &tor_ns)?
            }
            n => bail!("etcd_members: 1 to {}, not {n}", ETCD_ADDRS.len()),
        };
        let etcd_proxy = if options.etcd_proxy {
            let ns = lab.netns("etcd-proxy")?;
            attach(&tor_ns, "etcd-proxy", &ns, ETCD_PROXY_ADDR)?;
            Some(GrpcProxy::start(
                &lab,
                &ns,
                ETCD_PROXY_ADDR,
                &etcd.endpoints(),
            )?)
        } else {
            None
        };
        // What petreld and petrel-ipam are given.
        let endpoints = match &etcd_proxy {
            Some(p) => vec![p.endpoint().to_string()],
            None => etcd.endpoints(),
        };
        let ctl = |args: &[&str]| petrelctl(&tor_ns, &etcd, args);
        ctl(&[
            "pool",
            "add",
            POOL,
            "--block-size",
            &BLOCK_SIZE.to_string(),
            "--name",
            "lab",
        ])?;
        if options.ipv6 {
            ctl(&[
                "pool",
                "add",
                POOL6,
                "--block-size",
                &BLOCK_SIZE6.to_string(),
                "--name",
                "lab6",
            ])?;
        }
        let node_addrs: Vec<String> = (0..options.nodes)
            .map(|i| format!("10.99.0.{}", 11 + i))
            .collect();
        // The same last digits as the IPv4 address, read as hex: easy to
        // pair up by eye.
        let node_addrs6: Vec<Option<String>> = (0..options.nodes)
            .map(|i| options.ipv6.then(|| format!("fd00:99::{}", 11 + i)))
            .collect();
        let restart = options.restart_time.to_string();
        let hold = options.hold_time.to_string();
        let (bfd_ms, bfd_mult) = (BFD_MS.to_string(), BFD_MULT.to_string());
        if options.peering == Peering::Datastore {
            let asn = NODE_AS.to_string();
            let mut config = vec!["bgp", "config", "--asn", &asn, "--mesh", "on"];
            if options.rfc8950 {
                config.extend(["--mesh-ipv6-families", "ipv4-unicast,ipv6-unicast"]);
            }
            if options.bfd {
                config.extend([
                    "--mesh-bfd",
                    "on",
                    "--mesh-bfd-min-rx-ms",
                    &bfd_ms,
                    "--mesh-bfd-min-tx-ms",
                    &bfd_ms,
                    "--mesh-bfd-multiplier",
                    &bfd_mult,
                ]);
            }
            ctl(&config)?;
            // A peer record is one session, carrying its transport's family
            // unless `--families` says more (daemon/src/cluster/peers.rs):
            // the ToR's IPv6 address is a second record, or with RFC 8950
            // the only one.
            let tor_as = TOR_AS.to_string();
            let tors = (!options.rfc8950)
                .then_some(("tor", TOR_ADDR))
                .into_iter()
                .chain(options.ipv6.then_some(("tor6", TOR_ADDR6)));
            for (name, addr) in tors {
                let mut add = vec![
                    "bgp",
                    "peer",
                    "add",
                    name,
                    "--address",
                    addr,
                    "--asn",
                    &tor_as,
                    "--hold-time",
                    &hold,
                    "--restart-time",
                    &restart,
                ];
                if options.rfc8950 {
                    add.extend(["--families", "ipv4-unicast,ipv6-unicast"]);
                }
                if options.bfd {
                    add.extend([
                        "--bfd-min-rx-ms",
                        &bfd_ms,
                        "--bfd-min-tx-ms",
                        &bfd_ms,
                        "--bfd-multiplier",
                        &bfd_mult,
                    ]);
                }
                ctl(&add)?;
            }
        }

        let mut spec = PeerSpec::new(TOR_ADDR, TOR_AS);
        spec.graceful_restart = Some(options.restart_time.into());
        // The ToR's own FIB holds the blocks too (BIRD exports to it).
        spec.kernel = true;
        let v4_sessions = if options.rfc8950 { 0 } else { node_addrs.len() };
        let sessions = node_addrs
            .iter()
            .take(v4_sessions)
            .map(|a| (a.as_str(), TOR_ADDR))
            .chain(
                node_addrs6
                    .iter()
                    .flatten()
                    .map(|a| (a.as_str(), TOR_ADDR6)),
            );
        for (a, local) in sessions {
            let mut n = NeighborSpec::new(a, NODE_AS, local);
            if options.rfc8950 {
                n.ipv4 = true;
                n.extended_nexthop = true;
            }
            n.graceful_restart = Some(options.restart_time.into());
            n.bfd = options.bfd;
            // The nodes dial: one side per session keeps a restart simple.
            n.passive = true;
            spec.neighbors.push(n);
        }
        let tor = topo::start(options.tor, &lab, &tor_ns, &spec)?;

        // Namespaces and uplinks first, so that every petreld finds the
        // others' addresses there.
        let mut setups = Vec::new();
        for (i, address) in node_addrs.iter().enumerate() {
            let name = format!("node{}", i + 1);
            let ns = lab.netns(&name)?;
            attach(&tor_ns, &name, &ns, address)?;
            if let Some(a6) = &node_addrs6[i] {
                ns.add_addr("eth0", &format!("{a6}/{SUBNET6_LEN}"))?;
            }
            setups.push(NodeSetup {
                name: name.clone(),
                ns,
                cni_dir: lab.subdir(&format!("cni-{name}"))?,
                endpoints: endpoints.clone(),
                ipv6: options.ipv6,
            });
        }
        // With peers from files the blocks must be known before petreld
        // starts; from the datastore petreld picks them up as they come.
        let mut gateways: Vec<Option<Claimed>> = Vec::new();
        if options.peering == Peering::File {
            for s in &mut setups {
                gateways.push(Some(s.claim_block(options.pod_mtu)?));
            }
        } else {
            gateways.resize(setups.len(), None);
        }
        // In the mesh the lower address dials and the other only listens:
        // starting the highest first means every first dial finds its
        // peer listening (a refused one waits out ConnectRetry, 30 s).
        let mut daemons: Vec<Option<Petreld>> = (0..setups.len()).map(|_| None).collect();
        for i in (0..setups.len()).rev() {
            let (s, address, address6) = (&setups[i], &node_addrs[i], &node_addrs6[i]);
            let mut config = petreld::Config::new(address, NODE_AS);
            config.name = s.name.clone();
            config.log_filter = options.log_filter.clone();
            config.graceful_restart = Some(options.restart_time.into());
            config.listen(address);
            if options.reflector == Some(i) {
                config.cluster_id = Some(address.clone());
            }
            config.max_paths = options.max_paths;
            if let Some(a6) = address6 {
                config.listen(a6);
            }
            // The pod MTU as petreld derives it: eth0's 1500 less VXLAN's
            // 50, written where this node's petrel-ipam reads it.
            // One host, several petrelds: each serves petrel-ipam on its
            // own socket (the default /run/petrel/ipam.sock is one per host).
            config.extra = format!(
                "\n[mtu]\nmode = \"auto\"\nencapsulation = \"vxlan\"\ninterface = \"eth0\"\nfile = {:?}\n\n[ipam]\nsocket = {:?}\n",
                s.cni_dir.join("pod-mtu"),
                s.cni_dir.join("ipam.sock")
            );
            match options.peering {
                Peering::Datastore => {
                    // Registered in the node's record: the other nodes
                    // make one mesh session per family from them.
                    config.addresses = vec![format!("{address}/{SUBNET_LEN}")];
                    if let Some(a6) = address6 {
                        config.addresses.push(format!("{a6}/{SUBNET6_LEN}"));
                    }
                    config.etcd_endpoints = endpoints.clone();
                }
                Peering::File => {
                    // Per transport: (the ToR's address, this node's, the
                    // others', the families the sessions carry).
                    let mut transports = Vec::new();
                    if !options.rfc8950 {
                        transports.push((
                            TOR_ADDR,
                            address.as_str(),
                            node_addrs.iter().map(String::as_str).collect::<Vec<_>>(),
                            &["ipv4-unicast"][..],
                        ));
                    }
                    if let Some(a6) = address6 {
                        transports.push((
                            TOR_ADDR6,
                            a6.as_str(),
                            node_addrs6.iter().flatten().map(String::as_str).collect(),
                            if options.rfc8950 {
                                &["ipv4-unicast", "ipv6-unicast"][..]
                            } else {
                                &["ipv6-unicast"][..]
                            },
                        ));
                    }
                    let bfd = |p: petreld::Peer| {
                        if options.bfd {
                            p.bfd(BFD_MS, BFD_MS, BFD_MULT)
                        } else {
                            p
                        }
                    };
                    for (tor, local, nodes, families) in transports {
                        // As the datastore's peers (and Calico): the ToR
                        // hears each block from its owner only, not also
                        // from the other nodes with themselves as next hop.
                        config.peer(bfd(petreld::Peer::new(tor, TOR_AS)
                            .local_address(local)
                            .families(families)
                            .hold_time(options.hold_time)
                            .local_routes_only()));
                        for (j, other) in nodes.iter().enumerate() {
                            if j == i {
                                continue;
                            }
                            let mut p = petreld::Peer::new(other, NODE_AS)
                                .local_address(local)
                                .families(families)
                                .hold_time(options.hold_time);
                            if j < i {
                                p = p.passive();
                            }
                            config.peer(bfd(p));
                        }
                    }
                    if let Some(claimed) = &gateways[i] {
                        config.originate(&claimed.block, &[], &[]);
                        if let Some(b6) = &claimed.block6 {
                            config.originate(b6, &[], &[]);
                        }
                    }
                }
            }
            daemons[i] = Some(Petreld::start(&lab, &s.ns, &config)?);
        }
        let mut nodes = Vec::new();
        for ((mut s, gw), (petreld, (address, address6))) in setups
            .into_iter()
            .zip(gateways)
            .zip(daemons.into_iter().zip(node_addrs.iter().zip(&node_addrs6)))
        {
            let claimed = match gw {
                Some(g) => g,
                None => s.claim_block(options.pod_mtu)?,
            };
            let mut pods = Vec::new();
            for p in 0..options.pods_per_node {
                let cid = format!("{}-pod{}", s.name, p + 1);
                let pod_ns = lab.netns(&cid)?;
                let (address, address6) = s.add_pod(&pod_ns, &cid, options.pod_mtu)?;
                pods.push(Pod {
                    ns: pod_ns,
                    address,
                    address6,
                    container_id: cid,
                });
            }
            nodes.push(Node {
                name: s.name,
                ns: s.ns,
                address: address.clone(),
                petreld: petreld.ok_or_else(|| anyhow!("petreld not started"))?,
                block: claimed.block,
                gateway: claimed.gateway,
                address6: address6.clone(),
                block6: claimed.block6,
                gateway6: claimed.gateway6,
                pods,
                cni_dir: s.cni_dir,
                rfc8950: options.rfc8950,
            });
        }
        Ok(Cluster {
            options,
            tor_ns,
            tor,
            nodes,
            etcd_proxy,
            etcd,
            lab,
        })
    }

    /// Runs petrelctl in the ToR's namespace with every etcd member's
    /// endpoint.
    pub fn petrelctl(&self, args: &[&str]) -> Result<String> {
        petrelctl(&self.tor_ns, &self.etcd, args)
    }

    /// The endpoints petreld and petrel-ipam were given: every member's,
    /// or the grpc-proxy's.
    pub fn client_endpoints(&self) -> Vec<String> {
        match &self.etcd_proxy {
            Some(p) => vec![p.endpoint().to_string()],
            None => self.etcd.endpoints(),
        }
    }

    /// Every process of the lab, for waits that must notice a crash.
    pub fn daemons(&self) -> Vec<&Daemon> {
        let mut d = vec![self.tor.daemon()];
        d.extend(self.etcd.daemons());
        d.extend(self.etcd_proxy.as_ref().map(GrpcProxy::daemon));
        for n in &self.nodes {
            if let Some(x) = n.petreld_daemon() {
                d.push(x);
            }
        }
        d
    }

    /// Waits until every session is Established, every node's block is in
    /// the ToR's table and in every other node's FIB, and every pod reaches
    /// every other pod.
    pub fn wait_converged(&self) -> Result<()> {
        let daemons = self.daemons();
        wait_until("every session Established", &daemons, || {
            self.sessions_down().map(|d| d.is_empty().then_some(()))
        })?;
        wait_until(
            "every block in the ToR's table and every FIB",
            &daemons,
            || self.missing_routes().map(|m| m.is_empty().then_some(())),
        )?;
        if self.options.bfd {
            wait_until("every BFD session Up", &daemons, || {
                self.bfd_down().map(|d| d.is_empty().then_some(()))
            })?;
        }
        wait_until("every pod reaching every other pod", &daemons, || {
            Ok(self.ping_matrix()?.iter().all(|p| p.ok).then_some(()))
        })
    }

    /// With [`Options::bfd`]: BFD sessions not Up, on petreld's side
    /// (every running node, with the ToR and every other node, at the
    /// lab's 300 ms × 3, as "node1 -> 10.99.0.12 (Init)") and on the
    /// ToR's.
    pub fn bfd_down(&self) -> Result<Vec<String>> {
        let detect = u64::from(BFD_MS) * 1000 * u64::from(BFD_MULT);
        let mut down = Vec::new();
        for n in self.nodes.iter().filter(|n| n.petreld.running().is_some()) {
            let sessions = n.petreld.bfd()?;
            let mut want: Vec<&str> = self.tor_addresses();
            want.extend(
                self.nodes
                    .iter()
                    .filter(|o| o.name != n.name)
                    .flat_map(|o| o.session_addresses()),
            );
            for w in want {
                match sessions.iter().find(|s| s["peer"] == w) {
                    // Right after Up the peer may still advertise its 1 s
                    // rate until its Poll (RFC 5880 §6.8.3).
                    Some(s) if s["state"] == "Up" && s["detection_time_us"] == detect => {}
                    Some(s) => down.push(format!(
                        "{} -> {w} ({}, detection {} us)",
                        n.name, s["state"], s["detection_time_us"]
                    )),
                    None => down.push(format!("{} -> {w} (no BFD session)", n.name)),
                }
            }
            for a in n.session_addresses() {
                match self.tor.bfd_state(a)?.as_deref() {
                    Some("up") => {}
                    other => down.push(format!("tor -> {a} ({other:?})")),
                }
            }
        }
        Ok(down)
    }

    /// Sessions not Established, as "node1 -> 10.99.0.12 (Connect)".
    /// Every running node's Established sessions and their uptimes, and
    /// when they were read.
    pub fn uptimes(&self) -> Result<Uptimes> {
        let mut up = std::collections::BTreeMap::new();
        for n in &self.nodes {
            if n.petreld.running().is_none() {
                continue;
            }
            for p in n.petreld.peers()? {
                if p.state == "Established" {
                    up.insert((n.name.clone(), p.address), p.uptime_seconds);
                }
            }
        }
        Ok(Uptimes {
            at: std::time::Instant::now(),
            up,
        })
    }

    /// Every session of `before` is still Established and was not reset
    /// since, except those `except` names as (node, peer address). A
    /// session that went on has an uptime grown by the time elapsed (less
    /// a second of rounding); one reset since has a smaller one.
    pub fn no_reset(&self, before: &Uptimes, except: &[(&str, &str)]) -> Result<()> {
        let now = self.uptimes()?;
        let elapsed = now.at.duration_since(before.at).as_secs();
        for ((node, peer), up) in &before.up {
            if except.iter().any(|(n, p)| n == node && p == peer) {
                continue;
            }
            match now.up.get(&(node.clone(), peer.clone())) {
                Some(u) if u + 1 >= up + elapsed => {}
                other => bail!(
                    "{node}'s session with {peer} reset or down: uptime {up} s, {elapsed} s later {other:?}"
                ),
            }
        }
        Ok(())
    }

    /// The ToR's addresses the nodes peer with, IPv4 first.
    pub fn tor_addresses(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.options.rfc8950 {
            v.push(TOR_ADDR);
        }
        if self.options.ipv6 {
            v.push(TOR_ADDR6);
        }
        v
    }

    pub fn sessions_down(&self) -> Result<Vec<String>> {
        let mut down = Vec::new();
        for n in &self.nodes {
            let peers = n.petreld.peers()?;
            let mut want: Vec<&str> = self.tor_addresses();
            want.extend(
                self.nodes
                    .iter()
                    .filter(|o| o.name != n.name)
                    .flat_map(|o| o.session_addresses()),
            );
            for w in want {
                match peers.iter().find(|p| p.address == w) {
                    Some(p) if p.state == "Established" => {}
                    Some(p) => down.push(format!("{} -> {w} ({})", n.name, p.state)),
                    None => down.push(format!("{} -> {w} (no such peer)", n.name)),
                }
            }
            for a in n.session_addresses() {
                if !self.tor.established(a)? {
                    down.push(format!("tor -> {a}"));
                }
            }
        }
        Ok(down)
    }

    /// Blocks missing from the ToR's table or FIB, or from a node's FIB
    /// (with petrel's protocol, via the owning node's address of the
    /// block's family), both families.
    pub fn missing_routes(&self) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for owner in &self.nodes {
            for (block, via) in owner.blocks() {
                let at_tor = self.tor.routes_from(via)?;
                if !at_tor.iter().any(|r| r.prefix == block) {
                    missing.push(format!("{block} in the ToR's table"));
                }
                if !kernel_routes(&self.tor_ns, block)?
                    .iter()
                    .any(|r| r.kind == "unicast" && r.gateways == [via])
                {
                    missing.push(format!("{block} via {via} in the ToR's FIB"));
                }
                for n in self.nodes.iter().filter(|n| n.name != owner.name) {
                    match kernel_route(&n.ns, block)? {
                        Some(r) if r.is_petrel() && r.gateways == [via] => {}
                        other => missing.push(format!("{block} in {}'s FIB: {other:?}", n.name)),
                    }
                }
            }
        }
        Ok(missing)
    }

    /// Every pod pings every other pod once, at each of its addresses
    /// (IPv4 to IPv4, IPv6 to IPv6).
    pub fn ping_matrix(&self) -> Result<Vec<PingResult>> {
        let pods: Vec<&Pod> = self.nodes.iter().flat_map(|n| &n.pods).collect();
        let mut out = Vec::new();
        for a in &pods {
            for b in &pods {
                if a.address == b.address {
                    continue;
                }
                for (from, to) in a.addresses().into_iter().zip(b.addresses()) {
                    out.push(PingResult {
                        from: from.to_string(),
                        to: to.to_string(),
                        ok: ping(&a.ns, to, None)?,
                    });
                }
            }
        }
        Ok(out)
    }

    /// `{"tor": {"netns", "address"}, "nodes": [{"name", "netns",
    /// "address", "pods": [{"netns", "address"}]}]}`.
    pub fn to_json(&self) -> Value {
        // IPv6 fields only in a dual-stack lab (absent, not null, in an
        // IPv4-only one).
        let mut tor = json!({ "netns": self.tor_ns.name(), "address": TOR_ADDR });
        if self.options.ipv6 {
            tor["address6"] = json!(TOR_ADDR6);
        }
        let with6 = |mut v: Value, fields: &[(&str, &Option<String>)]| {
            for (k, x) in fields {
                if let Some(x) = x {
                    v[*k] = json!(x);
                }
            }
            v
        };
        json!({
            "tor": tor,
            "etcd_endpoints": self.etcd.endpoints(),
            "client_endpoints": self.client_endpoints(),
            "nodes": self.nodes.iter().map(|n| with6(json!({
                "name": n.name,
                "netns": n.ns.name(),
                "address": n.address,
                "block": n.block,
                "pods": n.pods.iter().map(|p| with6(json!({
                    "netns": p.ns.name(),
                    "address": p.address,
                }), &[("address6", &p.address6)])).collect::<Vec<_>>(),
            }), &[("address6", &n.address6), ("block6", &n.block6)])).collect::<Vec<_>>(),
        })
    }

    /// What `petrel-lab up` prints: peers, routes, the ping matrix.
    pub fn report(&self) -> Result<String> {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ToR {} (AS {TOR_AS}, {:?}, netns {}), etcd {}{}",
            self.tor_addresses().join(" "),
            self.tor.kind(),
            self.tor_ns.name(),
            self.etcd.endpoints().join(","),
            match &self.etcd_proxy {
                Some(p) => format!(" (nodes through grpc-proxy {})", p.endpoint()),
                None => String::new(),
            }
        );
        for n in &self.nodes {
            let _ = writeln!(
                s,
                "\n== {} {} (netns {}), blocks {}, pods {}",
                n.name,
                n.addresses().join(" "),
                n.ns.name(),
                n.blocks()
                    .iter()
                    .map(|(b, _)| *b)
                    .collect::<Vec<_>>()
                    .join(" "),
                n.pods
                    .iter()
                    .map(|p| p.addresses().join(" "))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            s += &n.petreld.ctl(&["show", "peers"])?;
            if self.options.bfd {
                s += &n.petreld.ctl(&["show", "bfd"])?;
            }
            let _ = writeln!(s, "kernel routes of petrel:");
            // By name when /etc/iproute2 knows it, else by number.
            for family in ["-4", "-6"] {
                let routes = PROTOCOLS
                    .iter()
                    .find_map(|p| n.ns.ip(&[family, "route", "show", "proto", p]).ok())
                    .unwrap_or_default();
                s += &routes;
            }
        }
        let _ = writeln!(s, "\n== the ToR's table");
        for n in &self.nodes {
            for a in n.session_addresses() {
                for r in self.tor.routes_from(a)? {
                    let _ = writeln!(
                        s,
                        "{:<26} via {:<12} as-path {}{}",
                        r.prefix,
                        r.next_hop,
                        r.as_path,
                        if r.best { "  best" } else { "" }
                    );
                }
            }
        }
        let matrix = self.ping_matrix()?;
        let all: Vec<&Pod> = self.nodes.iter().flat_map(|n| &n.pods).collect();
        let families: [(&str, Vec<&str>); 2] = [
            ("IPv4", all.iter().map(|p| p.address.as_str()).collect()),
            (
                "IPv6",
                all.iter().filter_map(|p| p.address6.as_deref()).collect(),
            ),
        ];
        for (family, pods) in families {
            if pods.is_empty() {
                continue;
            }
            let w = pods.iter().map(|p| p.len()).max().unwrap_or(0) + 2;
            let _ = writeln!(s, "\n== {family} ping matrix (from row to column)");
            let _ = write!(s, "{:<w$}", "");
            for p in &pods {
                let _ = write!(s, "{p:<w$}");
            }
            s += "\n";
            for a in &pods {
                let _ = write!(s, "{a:<w$}");
                for b in &pods {
                    let cell = if a == b {
                        "-"
                    } else if matrix.iter().any(|m| m.from == *a && m.to == *b && m.ok) {
                        "ok"
                    } else {
                        "FAIL"
                    };
                    let _ = write!(s, "{cell:<w$}");
                }
                s += "\n";
            }
        }
        Ok(s)
    }

    /// Puts a new namespace on the lab's subnet (`eth0` with `addr`).
    pub fn attach(&self, ns: &Netns, name: &str, addr: &str) -> Result<()> {
        attach(&self.tor_ns, name, ns, addr)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node {name}"))
    }

    /// The node called `name`, mutably (to stop or restart its petreld).
    pub fn node_mut(&mut self, name: &str) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node {name}"))
    }
}

impl Node {
    /// petreld's process, unless it was killed or stopped.
    pub fn petreld_daemon(&self) -> Option<&Daemon> {
        self.petreld.running()
    }

    /// Its addresses on the lab's subnet, IPv4 first.
    pub fn addresses(&self) -> Vec<&str> {
        std::iter::once(self.address.as_str())
            .chain(self.address6.as_deref())
            .collect()
    }

    /// The addresses its BGP sessions run from: both, or with RFC 8950
    /// the IPv6 one only.
    pub fn session_addresses(&self) -> Vec<&str> {
        match (&self.address6, self.rfc8950) {
            (Some(a6), true) => vec![a6.as_str()],
            _ => self.addresses(),
        }
    }

    /// Its blocks, each with the address other routers reach it by:
    /// (block, next hop), IPv4 first. With RFC 8950 that is the IPv6
    /// address for both, and it is also the session the ToR hears both
    /// from.
    pub fn blocks(&self) -> Vec<(&str, &str)> {
        let v4_via = match (&self.address6, self.rfc8950) {
            (Some(a6), true) => a6.as_str(),
            _ => self.address.as_str(),
        };
        let mut v = vec![(self.block.as_str(), v4_via)];
        if let (Some(b), Some(a)) = (&self.block6, &self.address6) {
            v.push((b, a));
        }
        v
    }

    fn setup(&self, endpoints: &[String]) -> NodeSetup {
        NodeSetup {
            name: self.name.clone(),
            ns: self.ns.clone(),
            cni_dir: self.cni_dir.clone(),
            endpoints: endpoints.to_vec(),
            ipv6: self.block6.is_some(),
        }
    }

    /// Runs the bridge plugin (petrel-ipam behind it) for a pod: `ADD`
    /// returns the CNI result; a failure is an error holding the plugin's
    /// error object.
    pub fn cni_pod(
        &self,
        command: &str,
        pod_ns: &Netns,
        container_id: &str,
        endpoint: &str,
        mtu: u32,
    ) -> Result<Value> {
        self.cni_pod_endpoints(command, pod_ns, container_id, &[endpoint.to_string()], mtu)
    }

    /// petrel-ipam alone (no bridge, no pod namespace) with forwarding
    /// off (`"daemon_socket": ""`): it execs petrel-ipam-direct, which
    /// opens the datastore at `endpoints` itself. The CNI result of an ADD.
    pub fn ipam_direct(
        &self,
        command: &str,
        container_id: &str,
        endpoints: &[String],
    ) -> Result<Value> {
        let setup = self.setup(endpoints);
        let mut ipam = setup.conf("petrel-ipam", 1450)["ipam"].clone();
        ipam["daemon_socket"] = json!("");
        let conf = json!({ "cniVersion": "1.0.0", "name": NETWORK, "ipam": ipam });
        let bin = crate::bin("petrel-ipam")?;
        cni(
            &self.ns,
            &bin.to_string_lossy(),
            command,
            container_id,
            "/dev/null",
            "eth0",
            &conf,
        )
    }

    /// [`Node::cni_pod`] with several etcd endpoints in the CNI config.
    pub fn cni_pod_endpoints(
        &self,
        command: &str,
        pod_ns: &Netns,
        container_id: &str,
        endpoints: &[String],
        mtu: u32,
    ) -> Result<Value> {
        self.setup(endpoints)
            .run_bridge(command, pod_ns, container_id, mtu)
    }
}

/// What attaching pods to a node needs.
struct NodeSetup {
    name: String,
    ns: Netns,
    cni_dir: PathBuf,
    endpoints: Vec<String>,
    /// Ask petrel-ipam for an IPv6 address too.
    ipv6: bool,
}

/// What a node's first CNI ADD claimed: its block and the block's gateway,
/// per family.
#[derive(Clone, Debug)]
struct Claimed {
    block: String,
    gateway: String,
    block6: Option<String>,
    gateway6: Option<String>,
}

impl NodeSetup {
    fn conf(&self, plugin: &str, mtu: u32) -> Value {
        let mut conf = self.conf_v4(plugin, mtu);
        if self.ipv6 {
            // One address of each family from the pools of that family;
            // `"gateway": "block"` (the default) reserves a gateway in
            // the IPv6 block too, which the bridge plugin (isGateway)
            // puts on cni0 beside the IPv4 one.
            conf["ipam"]["assign_ipv6"] = json!(true);
        }
        conf
    }

    fn conf_v4(&self, plugin: &str, mtu: u32) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": plugin,
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "mtu": mtu,
            "ipam": {
                "type": "petrel-ipam",
                "datastore": { "etcd_endpoints": self.endpoints },
                "node_name": self.name,
                "mtu_file": self.cni_dir.join("pod-mtu"),
                "lock_file": self.cni_dir.join("ipam.lock"),
                "daemon_socket": self.cni_dir.join("ipam.sock"),
            }
        })
    }

    /// Claims the node's block and its gateway through petrel-ipam, with
    /// an ADD and a DEL of a probe attachment (the gateway stays), before
    /// any pod: with peers from files petreld must know the block when it
    /// starts. The bridge plugin puts the gateways on `cni0` with the first
    /// pod.
    fn claim_block(&mut self, mtu: u32) -> Result<Claimed> {
        let conf = self.conf("petrel-ipam", mtu)["ipam"].clone();
        let conf = json!({ "cniVersion": "1.0.0", "name": NETWORK, "ipam": conf });
        let ipam = crate::bin("petrel-ipam")?;
        let probe = format!("{}-probe", self.name);
        let ipam = ipam.to_string_lossy();
        let res = cni(&self.ns, &ipam, "ADD", &probe, "/dev/null", "eth0", &conf)?;
        cni(&self.ns, &ipam, "DEL", &probe, "/dev/null", "eth0", &conf)?;
        let block_of = |v6: bool| -> Result<Option<(String, String)>> {
            let Some(ip) = ip_of(&res, v6) else {
                return Ok(None);
            };
            let cidr = ip["address"].as_str().unwrap_or_default();
            let (addr, len) = cidr
                .split_once('/')
                .ok_or_else(|| anyhow!("no prefix length in {cidr}"))?;
            let block = network_of(addr, len.parse()?)?;
            let gateway = ip["gateway"]
                .as_str()
                .ok_or_else(|| anyhow!("no gateway for {cidr} in the CNI result {res}"))?;
            Ok(Some((block, gateway.to_string())))
        };
        let (block, gateway) =
            block_of(false)?.ok_or_else(|| anyhow!("no IPv4 address in the CNI result {res}"))?;
        let v6 = block_of(true)?;
        if self.ipv6 && v6.is_none() {
            bail!("no IPv6 address in the CNI result {res}");
        }
        let (block6, gateway6) = v6.unzip();
        Ok(Claimed {
            block,
            gateway,
            block6,
            gateway6,
        })
    }

    /// CNI ADD through the bridge plugin for a pod namespace: the pod's
    /// IPv4 address, and its IPv6 one in a dual-stack lab.
    fn add_pod(
        &self,
        pod_ns: &Netns,
        container_id: &str,
        mtu: u32,
    ) -> Result<(String, Option<String>)> {
        let res = self.run_bridge("ADD", pod_ns, container_id, mtu)?;
        let addr = |v6: bool| {
            ip_of(&res, v6).and_then(|ip| {
                let a = ip["address"].as_str()?;
                Some(a.split('/').next().unwrap_or_default().to_string())
            })
        };
        let v4 = addr(false).ok_or_else(|| anyhow!("no IPv4 address in the CNI result {res}"))?;
        let v6 = addr(true);
        if self.ipv6 && v6.is_none() {
            bail!("no IPv6 address in the CNI result {res}");
        }
        Ok((v4, v6))
    }

    fn run_bridge(
        &self,
        command: &str,
        pod_ns: &Netns,
        container_id: &str,
        mtu: u32,
    ) -> Result<Value> {
        cni(
            &self.ns,
            CNI_BRIDGE,
            command,
            container_id,
            &format!("/run/netns/{}", pod_ns.name()),
            "eth0",
            &self.conf("bridge", mtu),
        )
    }
}

/// petrelctl in `ns` with every member of `etcd`.
fn petrelctl(ns: &Netns, etcd: &Etcd, args: &[&str]) -> Result<String> {
    let bin = crate::bin("petrelctl")?;
    let endpoints = etcd.endpoints().join(",");
    let mut a = vec!["--etcd-endpoints", &endpoints];
    a.extend_from_slice(args);
    ns.exec(&bin.to_string_lossy(), &a)
}

/// Runs a CNI plugin inside the node's namespace, as a runtime does:
/// CNI_* in the environment, the network config on stdin. The result, or
/// an error with the plugin's error object.
fn cni(
    node_ns: &Netns,
    plugin: &str,
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
) -> Result<Value> {
    let ipam = crate::bin("petrel-ipam")?;
    let dir = ipam
        .parent()
        .ok_or_else(|| anyhow!("petrel-ipam has no folder"))?;
    let mut child = node_ns
        .command(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", format!("{}:/usr/lib/cni", dir.display()))
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {plugin}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "CNI {command} ({plugin}) for {container_id} failed ({}): {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).with_context(|| format!("CNI result: {stdout}"))
}

/// The CNI result's `ips` entry of one family, if any.
fn ip_of(result: &Value, v6: bool) -> Option<&Value> {
    result["ips"].as_array()?.iter().find(|ip| {
        ip["address"]
            .as_str()
            .is_some_and(|a| a.contains(':') == v6)
    })
}

/// The CNI result's address of one family, without its prefix length.
pub fn result_address(result: &Value, v6: bool) -> Option<String> {
    let a = ip_of(result, v6)?["address"].as_str()?;
    Some(a.split('/').next().unwrap_or_default().to_string())
}

/// `10.244.3.65`, 26 → `10.244.3.64/26`; `fd00:10:244::49`, 122 →
/// `fd00:10:244::40/122`.
fn network_of(addr: &str, len: u8) -> Result<String> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let a: IpAddr = addr.parse()?;
    let net = match a {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
        _ => bail!("prefix length {len} too long for {addr}"),
    };
    Ok(format!("{net}/{len}"))
}

/// Puts `ns` on the ToR's bridge: a veth `eth0` in `ns` with `addr`, its
/// peer `p-<name>` a port of `br0`.
pub fn attach(tor: &Netns, name: &str, ns: &Netns, addr: &str) -> Result<()> {
    let port = format!("p-{name}");
    run(
        "ip",
        &[
            "link",
            "add",
            &port,
            "netns",
            tor.name(),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ],
    )?;
    tor.ip(&["link", "set", &port, "master", "br0", "up"])?;
    ns.add_addr("eth0", &format!("{addr}/{SUBNET_LEN}"))?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

pub use super::fib::KernelRoute;

/// The main-table routes for exactly `prefix` ([`super::fib::exact`]).
pub fn kernel_routes(ns: &Netns, prefix: &str) -> Result<Vec<KernelRoute>> {
    super::fib::exact(ns, prefix)
}

/// The unicast route petreld installed for `prefix`, if any.
pub fn kernel_route(ns: &Netns, prefix: &str) -> Result<Option<KernelRoute>> {
    Ok(kernel_routes(ns, prefix)?
        .into_iter()
        .find(|r| r.kind == "unicast" && r.is_petrel()))
}

/// One ping (`-c 1 -W 2`) from `ns`, with DF and `size` payload bytes when
/// given: whether a reply came.
pub fn ping(ns: &Netns, dst: &str, size: Option<u32>) -> Result<bool> {
    let size = size.map(|s| s.to_string());
    let mut args = vec!["-n", "-q", "-c", "1", "-W", "2"];
    if let Some(s) = &size {
        args.extend(["-M", "do", "-s", s]);
    }
    args.push(dst);
    let out = ns.command("ping").args(&args).output()?;
    Ok(out.status.success())
}

/// The output of a failed DF ping (why it was refused), or `None` when a
/// reply came.
pub fn ping_refusal(ns: &Netns, dst: &str, size: u32) -> Result<Option<String>> {
    let s = size.to_string();
    let out = ns
        .command("ping")
        .args(["-n", "-c", "1", "-W", "2", "-M", "do", "-s", &s, dst])
        .output()?;
    if out.status.success() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}
