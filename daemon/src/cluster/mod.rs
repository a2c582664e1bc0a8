//! The cluster from the datastore: petreld registers its node, derives its
//! BGP peers from the cluster's records and originates its IPAM blocks.
//!
//! [`model`] holds the records and their compare-and-swap helpers,
//! [`peers`] and [`origin`] the pure derivations, and [`Cluster`] the
//! driver: it loads a snapshot, derives, hands the result to
//! [`crate::intent::Intent`] (which applies only differences), then waits
//! for a watch event or the periodic resync and does it again.
//!
//! A datastore outage changes nothing on the wire: the last applied peers
//! and routes stay, the node reports itself degraded, and the driver
//! retries with backoff until the datastore answers again.

pub mod model;
pub mod origin;
pub mod peers;

use crate::config;
use crate::health::Health;
use crate::intent::{Intent, Source};
use ipnet::IpNet;
use model::{BgpConfig, ModelError};
use petrel_bgp::wire::attr::{Community, Origin, PathAttributes};
use petrel_bgp::wire::Prefix;
use petrel_ipam::cni::DatastoreConfig;
use petrel_ipam::keys;
use petrel_ipam::model::{Affinity, Block};
use petrel_ipam::store::{Store, StoreError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// A full reload even without watch events: the safety net for a watch
/// that silently stopped.
const RESYNC: Duration = Duration::from_secs(60);
/// Events within this window are taken together.
const DEBOUNCE: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Opens the configured datastore, as petrel-ipam opens its own.
pub async fn open_store(ds: &config::Datastore) -> Result<Arc<dyn Store>, StoreError> {
    let c = match ds {
        config::Datastore::Embedded { path } => DatastoreConfig {
            etcd_endpoints: Vec::new(),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            path: Some(path.clone()),
        },
        config::Datastore::Etcd {
            endpoints,
            ca,
            cert,
            key,
        } => DatastoreConfig {
            etcd_endpoints: endpoints.clone(),
            etcd_ca: ca.clone(),
            etcd_cert: cert.clone(),
            etcd_key: key.clone(),
            path: None,
        },
    };
    petrel_ipam::cni::open_store(&c).await
}

/// One of this node's blocks, for `petrelctl show blocks`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
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

/// What the driver last saw and did, for the control socket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    pub datastore_ok: bool,
    pub last_error: Option<String>,
    pub synced: bool,
    pub blocks: Vec<BlockRow>,
    pub advertised: Vec<(String, String)>,
    pub skipped: Vec<String>,
}

pub type SharedView = Arc<Mutex<View>>;

/// The node's addresses: the file's, or those of its interface (the
/// configured one, the one holding the router id, or the default route's).
pub fn node_addresses(node: &config::Node) -> anyhow::Result<Vec<IpNet>> {
    if !node.addresses.is_empty() {
        return Ok(node.addresses.clone());
    }
    let (links, addrs) = crate::fib::monitor::links_and_addrs()?;
    let wanted = match &node.interface {
        Some(name) => links
            .iter()
            .find(|l| l.name == *name)
            .map(|l| l.ifindex)
            .ok_or_else(|| anyhow::anyhow!("node.interface: no interface {name:?} here"))?,
        // Default: the interface holding the router id, else the default
        // route's.
        None => match addrs
            .iter()
            .find(|a| a.net.addr() == std::net::IpAddr::V4(node.router_id))
            .map(|a| a.ifindex)
        {
            Some(i) => i,
            None => crate::fib::monitor::default_route_ifindex()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "node.addresses is not set, no interface holds the router id {} and there is no default route; set node.addresses or node.interface",
                    node.router_id
                )
            })?,
        },
    };
    let out: Vec<IpNet> = addrs
        .iter()
        .filter(|a| a.ifindex == wanted)
        .map(|a| a.net)
        // Link-local addresses identify nothing beyond the link.
        .filter(|n| match n.addr() {
            std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            std::net::IpAddr::V4(v4) => !v4.is_link_local(),
        })
        .collect();
    if out.is_empty() {
        anyhow::bail!("the node's interface has no usable address");
    }
    Ok(out)
}

/// The driver's inputs that do not come from the datastore.
pub struct Cluster {
    pub store: Arc<dyn Store>,
    pub node: config::Node,
    pub addresses: Vec<IpNet>,
    pub rr_cluster_id: Option<std::net::Ipv4Addr>,
    pub graceful_restart: Option<config::GracefulRestart>,
    pub health: Arc<Health>,
    pub view: SharedView,
    pub ipam_gauges: Arc<crate::metrics::IpamGauges>,
}

/// One consistent-enough read of everything the derivations need.
struct Snapshot {
    cfg: BgpConfig,
    nodes: Vec<model::Node>,
    peers: Vec<model::BgpPeer>,
    services: Vec<model::Service>,
    blocks: Vec<Block>,
    affinities: Vec<Affinity>,
    revision: i64,
}

impl Cluster {
    async fn load(&self) -> Result<Snapshot, ModelError> {
        let s = &*self.store;
        // The BGP records' listing gives the revision to watch from; the
        // other reads are later, so a change between them is seen twice at
        // worst, never missed.
        let bgp = s.list(model::BGP_ROOT).await?;
        let revision = bgp.revision;
        let mut cfg = BgpConfig::default();
        let mut peers = Vec::new();
        let mut services = Vec::new();
        for kv in &bgp.kvs {
            let bad = |e: serde_json::Error| ModelError::Corrupt {
                key: kv.key.clone(),
                detail: e.to_string(),
            };
            if kv.key == model::BGP_CONFIG {
                cfg = serde_json::from_slice(&kv.value).map_err(bad)?;
            } else if kv.key.starts_with(model::PEERS) {
                peers.push(serde_json::from_slice(&kv.value).map_err(bad)?);
            } else if kv.key.starts_with(model::SERVICES) {
                services.push(serde_json::from_slice(&kv.value).map_err(bad)?);
            }
        }
        Ok(Snapshot {
            cfg,
            nodes: model::nodes(s).await?,
            peers,
            services,
            blocks: model::list(s, keys::BLOCKS).await?,
            affinities: model::list(s, &keys::node_affinities(&self.node.name)).await?,
            revision,
        })
    }

    fn local(&self, snap: &Snapshot) -> peers::LocalNode {
        let stored = snap.nodes.iter().find(|n| n.name == self.node.name);
        peers::LocalNode {
            name: self.node.name.clone(),
            addresses: self.addresses.clone(),
            asn: self.node.asn,
            rr_cluster_id: self.rr_cluster_id,
            labels: stored
                .map(|n| n.labels.clone())
                .unwrap_or_else(|| self.node.labels.clone()),
            graceful_restart: self.graceful_restart,
        }
    }

    /// Whether the stored node record says what this node registers
    /// (someone deleted or edited it, or a datastore restored from backup).
    fn record_current(&self, snap: &Snapshot) -> bool {
        snap.nodes.iter().any(|n| {
            n.name == self.node.name
                && n.addresses == self.addresses
                && n.asn == self.node.asn_from_file.then_some(self.node.asn)
                && n.route_reflector_cluster_id == self.rr_cluster_id
                && self
                    .node
                    .labels
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
        })
    }

    /// Derives from a snapshot and applies it.
    async fn apply(&self, snap: &Snapshot, intent: &tokio::sync::Mutex<Intent>) {
        if !self.node.asn_from_file && snap.cfg.asn != self.node.asn {
            warn!(
                cluster_asn = snap.cfg.asn,
                running_asn = self.node.asn,
                "the cluster's AS changed; restart petreld to speak it"
            );
        }
        let me = self.local(snap);
        let set = peers::derive(&me, &snap.nodes, &snap.cfg, &snap.peers);
        for s in &set.skipped {
            warn!(record = %s.what, reason = %s.why, "cluster record skipped");
        }
        let origins = origin::derive(
            &self.node.name,
            &snap.blocks,
            &snap.affinities,
            &snap.cfg,
            &snap.services,
        );
        let communities: Vec<Community> = snap
            .cfg
            .communities
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            communities: (!communities.is_empty()).then_some(communities),
            ..PathAttributes::default()
        };
        let blackholes: BTreeSet<Prefix> = origins
            .iter()
            .filter(|(_, r)| **r == origin::Reason::Block)
            .map(|(p, _)| *p)
            .collect();
        let routes: BTreeMap<Prefix, PathAttributes> =
            origins.keys().map(|p| (*p, attrs.clone())).collect();
        {
            let mut i = intent.lock().await;
            if let Err(e) = i.set_peers(Source::Cluster, set.peers).await {
                warn!(error = %e, "could not apply the cluster's peers");
            }
            if let Err(e) = i
                .set_origins(Source::Cluster, routes, Some(blackholes))
                .await
            {
                warn!(error = %e, "could not apply the cluster's routes");
            }
        }
        let rows = block_rows(&self.node.name, &snap.blocks, &origins);
        self.ipam_gauges.set(
            rows.iter().filter(|r| r.kind == "block").count() as u64,
            rows.iter().map(|r| r.mine as u64).sum(),
        );
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        v.blocks = rows;
        v.advertised = origins
            .iter()
            .map(|(p, r)| (p.to_string(), r.name().to_string()))
            .collect();
        v.skipped = set
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.what, s.why))
            .collect();
    }

    fn set_ok(&self, ok: bool, err: Option<String>) {
        self.health.set_datastore_ok(ok);
        self.health
            .set_reason("datastore", err.as_ref().map(|e| format!("datastore: {e}")));
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        v.datastore_ok = ok;
        v.last_error = err;
    }

    async fn register(&self) -> Result<(), ModelError> {
        model::register_node(
            &*self.store,
            &self.node.name,
            &self.addresses,
            self.node.asn_from_file.then_some(self.node.asn),
            self.rr_cluster_id,
            &self.node.labels,
        )
        .await
        .map(|_| ())
    }

    /// Runs until the process ends.
    pub async fn run(self, intent: Arc<tokio::sync::Mutex<Intent>>) {
        self.health.expect_datastore();
        let mut backoff = BACKOFF_MIN;
        // Registration first: other nodes find this one by its record.
        loop {
            match self.register().await {
                Ok(()) => {
                    info!(node = %self.node.name, addresses = ?self.addresses, "node registered");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot register the node; retrying");
                    self.set_ok(false, Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        backoff = BACKOFF_MIN;
        let (dirty_tx, mut dirty_rx) = mpsc::channel::<()>(1);
        let mut watching_from: Option<i64> = None;
        let mut watches: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        loop {
            match self.load().await {
                Ok(snap) => {
                    let was_down = !self.view.lock().map(|v| v.datastore_ok).unwrap_or(true);
                    self.set_ok(true, None);
                    if was_down {
                        info!("datastore reachable again; catching up");
                        // A record lost while it was down (a restore from
                        // backup, say) must not leave this node unknown.
                        if let Err(e) = self.register().await {
                            warn!(error = %e, "re-registration failed");
                        }
                    }
                    if !self.record_current(&snap) {
                        // Keep the record current: the next event (our own
                        // write) brings a snapshot that has it.
                        match self.register().await {
                            Ok(()) => info!("node record was missing or changed; registered again"),
                            Err(e) => warn!(error = %e, "cannot re-register the node"),
                        }
                    }
                    self.apply(&snap, &intent).await;
                    if !self.view.lock().map(|v| v.synced).unwrap_or(false) {
                        self.view.lock().unwrap_or_else(|e| e.into_inner()).synced = true;
                        self.health.set_cluster_synced();
                        info!("first cluster sync done");
                    }
                    backoff = BACKOFF_MIN;
                    let alive = watches.iter().all(|w| !w.is_finished());
                    if watching_from.is_none() || !alive {
                        for w in watches.drain(..) {
                            w.abort();
                        }
                        watches = self.watch(snap.revision + 1, &dirty_tx).await;
                        watching_from = Some(snap.revision + 1);
                    }
                    // Wait for a change (or the safety-net resync).
                    let _ = tokio::time::timeout(RESYNC, dirty_rx.recv()).await;
                    tokio::time::sleep(DEBOUNCE).await;
                    while dirty_rx.try_recv().is_ok() {}
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot read the cluster from the datastore; keeping sessions and routes as they are");
                    self.set_ok(false, Some(e.to_string()));
                    for w in watches.drain(..) {
                        w.abort();
                    }
                    watching_from = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Watches every prefix the derivations read; any event marks dirty.
    async fn watch(&self, from: i64, dirty: &mpsc::Sender<()>) -> Vec<tokio::task::JoinHandle<()>> {
        let prefixes = [
            model::BGP_ROOT.to_string(),
            keys::NODES.to_string(),
            keys::BLOCKS.to_string(),
            keys::node_affinities(&self.node.name),
        ];
        let mut out = Vec::new();
        for prefix in prefixes {
            match self.store.watch(&prefix, from).await {
                Ok(mut rx) => {
                    let dirty = dirty.clone();
                    out.push(tokio::spawn(async move {
                        while let Some(ev) = rx.recv().await {
                            match ev {
                                Ok(ev) => debug!(key = ev.key(), "datastore change"),
                                Err(e) => {
                                    warn!(error = %e, prefix, "watch failed; reloading");
                                    let _ = dirty.try_send(());
                                    return;
                                }
                            }
                            // Coalesce: one pending reload is enough.
                            let _ = dirty.try_send(());
                        }
                        let _ = dirty.try_send(());
                    }));
                }
                Err(e) => {
                    warn!(error = %e, prefix, "cannot watch; relying on the periodic resync");
                }
            }
        }
        out
    }
}

fn block_rows(
    node: &str,
    blocks: &[Block],
    origins: &BTreeMap<Prefix, origin::Reason>,
) -> Vec<BlockRow> {
    let mut rows = Vec::new();
    for b in blocks {
        let own = origin::prefix_of(&b.cidr)
            .is_some_and(|p| origins.get(&p) == Some(&origin::Reason::Block));
        let mine = b
            .allocations
            .values()
            .filter(|a| a.attrs.node.as_deref() == Some(node))
            .count() as u32;
        if !own && mine == 0 {
            continue;
        }
        rows.push(BlockRow {
            cidr: b.cidr.to_string(),
            pool: b.pool.clone(),
            kind: if own { "block" } else { "borrowed" }.into(),
            total: b.size(),
            in_use: b.in_use(),
            mine,
            affinity: b.affinity.clone().unwrap_or_else(|| "-".into()),
        });
    }
    rows
}

/// Loads the cluster's BGP configuration before the speaker starts (its AS
/// and listen port matter from the first OPEN); gives up after `wait` and
/// goes on with the defaults, so that a node restarting during a datastore
/// outage still comes up and keeps forwarding.
pub async fn initial_bgp_config(store: &dyn Store, wait: Duration) -> Option<BgpConfig> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = BACKOFF_MIN;
    loop {
        match model::get::<BgpConfig>(store, model::BGP_CONFIG).await {
            Ok(c) => return Some(c.map(|(c, _)| c).unwrap_or_default()),
            Err(e) => {
                if tokio::time::Instant::now() + backoff > deadline {
                    warn!(error = %e, "no cluster BGP configuration; starting with the defaults");
                    return None;
                }
                warn!(error = %e, "cannot read the cluster BGP configuration yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
