//! The cluster from the datastore: petreld registers its node, derives its
//! BGP peers from the cluster's records and originates its IPAM blocks.
//!
//! [`model`] holds the records and their compare-and-swap helpers,
//! [`state`] the node's local model of the records that concern it,
//! [`peers`] and [`origin`] the pure derivations, and [`Cluster`] the
//! driver: it lists the node's records once (paged), then follows watches,
//! applying each event to the model and deriving again only what the event
//! changed; [`crate::intent::Intent`] applies only differences. A full list
//! happens at start and after a watch is lost or compacted, never on a
//! timer. Another node's pod churn writes only that node's blocks, which
//! this node neither reads nor watches (docs/datastore.md, "What a node
//! reads").
//!
//! A datastore outage changes nothing on the wire: the last applied peers
//! and routes stay, the node reports itself degraded, and the driver
//! retries with backoff until the datastore answers again.

pub mod advertise;
pub mod gauges;
pub mod model;
pub mod peers;
pub mod state;

use crate::config;
use crate::health::Health;
use crate::intent::{Intent, Source};
use ipnet::IpNet;
use model::{BgpConfig, ModelError};
use petrel_bgp::wire::attr::{Community, Origin, PathAttributes};
use petrel_bgp::wire::Prefix;
use petrel_ipam::keys;
use petrel_ipam::model::Block;
use petrel_ipam::store::etcd::EtcdConfig;
use petrel_ipam::store::{KeyValue, Location, Store, StoreError, WatchEvent, WatchReceiver};
use serde::Serialize;
use state::{ClusterState, Dirty};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Opens the configured datastore.
pub async fn open_store(ds: &config::Datastore) -> Result<Arc<dyn Store>, StoreError> {
    let at = match ds {
        config::Datastore::Embedded { path } => Location::Embedded(path.clone()),
        config::Datastore::Etcd {
            endpoints,
            ca,
            cert,
            key,
        } => {
            let mut cfg = EtcdConfig::new(endpoints.clone());
            cfg.ca = ca.clone();
            cfg.cert = cert.clone();
            cfg.key = key.clone();
            Location::Etcd(cfg)
        }
    };
    petrel_ipam::store::open(&at).await
}

pub use crate::control::BlockRow;
pub use gauges::IpamGauges;

/// What the driver last saw and did, for the control socket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    pub datastore_ok: bool,
    pub last_error: Option<String>,
    pub synced: bool,
    pub blocks: Vec<BlockRow>,
    pub advertised: Vec<(String, String)>,
    pub skipped: Vec<String>,
    /// Service addresses and ranges, advertised or not, and why.
    pub services: Vec<advertise::ServiceRow>,
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
    let out = identity_addresses(&addrs, wanted);
    if out.is_empty() {
        anyhow::bail!("the node's interface has no usable address");
    }
    Ok(out)
}

/// The addresses of interface `ifindex` that may name the node to its
/// peers: they are registered, and the mesh dials the first of each
/// family (peers.rs).
fn identity_addresses(addrs: &[crate::fib::msg::AddrInfo], ifindex: u32) -> Vec<IpNet> {
    use crate::fib::msg::{IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TEMPORARY};
    addrs
        .iter()
        .filter(|a| a.ifindex == ifindex)
        // RFC 4941 temporary addresses are replaced by the day, a deprecated
        // one (RFC 4862 §5.5.4) is on its way out, and one that failed DAD
        // (§5.4.5) is not the node's. A tentative one is kept: it is the
        // node's within a second of boot, when petreld may already run.
        .filter(|a| a.flags & (IFA_F_TEMPORARY | IFA_F_DEPRECATED | IFA_F_DADFAILED) == 0)
        .map(|a| a.net)
        // Link-local addresses identify nothing beyond the link.
        .filter(|n| match n.addr() {
            std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
            std::net::IpAddr::V4(v4) => !v4.is_link_local(),
        })
        .collect()
}

/// The driver's inputs that do not come from the datastore.
pub struct Cluster {
    pub store: Arc<dyn Store>,
    pub node: config::Node,
    pub addresses: Vec<IpNet>,
    pub rr_cluster_id: Option<std::net::Ipv4Addr>,
    pub graceful_restart: Option<petrel_bgp::speaker::GracefulRestartSettings>,
    pub health: Arc<Health>,
    pub view: SharedView,
    pub ipam_gauges: Arc<IpamGauges>,
}

/// Capacity of the queue from every watch into the driver: when it is
/// full the watch forwarders wait, and etcd holds the rest of each stream.
const EVENT_QUEUE: usize = 1024;
/// After an event, what else arrives within this window is applied with it
/// and derived once (a claim writes an affinity and a block together).
const SETTLE: Duration = Duration::from_millis(10);

/// What the watches feed the driver, tagged with the generation of the
/// watches that sent it (events of watches from before a resync are
/// dropped).
enum Feed {
    Event(WatchEvent),
    /// A watch ended or failed (compacted, unreachable): list again.
    Lost(String),
}

/// The running watches: one per prefix of the model, one per own block.
#[derive(Default)]
struct Watches {
    prefixes: Vec<tokio::task::JoinHandle<()>>,
    blocks: BTreeMap<IpNet, tokio::task::JoinHandle<()>>,
}

impl Watches {
    fn stop(&mut self) {
        for w in self.prefixes.drain(..) {
            w.abort();
        }
        for (_, w) in std::mem::take(&mut self.blocks) {
            w.abort();
        }
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Forwards one watch into the driver's queue.
fn forward(
    mut rx: WatchReceiver,
    tx: mpsc::Sender<(u64, Feed)>,
    generation: u64,
    what: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let feed = match ev {
                Ok(ev) => Feed::Event(ev),
                Err(e) => Feed::Lost(format!("watch of {what}: {e}")),
            };
            let lost = matches!(feed, Feed::Lost(_));
            if tx.send((generation, feed)).await.is_err() || lost {
                return;
            }
        }
        let _ = tx
            .send((generation, Feed::Lost(format!("watch of {what} ended"))))
            .await;
    })
}

impl Cluster {
    /// One record, and the revision it was read at (to watch from).
    async fn read_one(&self, key: &str) -> Result<(Option<KeyValue>, i64), ModelError> {
        let page = self.store.list_page(key, None, 1, 0, false).await?;
        let kv = page.kvs.into_iter().find(|kv| kv.key == key);
        Ok((kv, page.revision))
    }

    /// The full read: every prefix of the model (paged), then the contents
    /// of the node's own blocks. Returns the model and, per watch to start,
    /// the revision its read was at. A record that does not decode is
    /// reported and left out; the rest of the cluster still applies.
    async fn sync(&self) -> Result<(ClusterState, Vec<(String, i64)>), ModelError> {
        let mut state = ClusterState::new(&self.node.name);
        let mut from = Vec::new();
        for prefix in state.prefixes() {
            let l = self.store.list(&prefix).await?;
            for kv in &l.kvs {
                if let Err(e) = state.put(kv) {
                    warn!(error = %e, "record skipped");
                }
            }
            from.push((prefix, l.revision));
        }
        for cidr in state.wanted_blocks() {
            let key = keys::block(&cidr);
            let (kv, rev) = self.read_one(&key).await?;
            if let Some(kv) = kv {
                if let Err(e) = state.put(&kv) {
                    warn!(error = %e, "record skipped");
                }
            }
            from.push((key, rev));
        }
        self.ipam_gauges.full_syncs.fetch_add(1, Ordering::Relaxed);
        Ok((state, from))
    }

    /// Starts watching the blocks the model wants and does not watch yet,
    /// and stops watching those it no longer wants. A new block is read
    /// first, and watched from the revision of that read.
    async fn follow_blocks(
        &self,
        state: &mut ClusterState,
        watches: &mut Watches,
        tx: &mpsc::Sender<(u64, Feed)>,
        generation: u64,
    ) -> Result<(), ModelError> {
        let wanted = state.wanted_blocks();
        let gone: Vec<IpNet> = watches
            .blocks
            .keys()
            .filter(|c| !wanted.contains(c))
            .copied()
            .collect();
        for c in gone {
            if let Some(w) = watches.blocks.remove(&c) {
                w.abort();
            }
        }
        for cidr in wanted {
            if watches.blocks.contains_key(&cidr) {
                continue;
            }
            let key = keys::block(&cidr);
            let (kv, rev) = self.read_one(&key).await?;
            if let Some(kv) = kv {
                if let Err(e) = state.put(&kv) {
                    warn!(error = %e, "record skipped");
                }
            }
            let rx = self.store.watch(&key, rev + 1).await?;
            watches
                .blocks
                .insert(cidr, forward(rx, tx.clone(), generation, key));
        }
        Ok(())
    }

    fn local(&self, state: &ClusterState) -> peers::LocalNode {
        let stored = state.nodes.get(&self.node.name);
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
    fn record_current(&self, state: &ClusterState) -> bool {
        state.nodes.get(&self.node.name).is_some_and(|n| {
            n.addresses == self.addresses
                && n.asn == self.node.asn_from_file.then_some(self.node.asn)
                && n.route_reflector_cluster_id == self.rr_cluster_id
                && self
                    .node
                    .labels
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
        })
    }

    /// Derives what `dirty` says changed and applies it.
    async fn apply(&self, state: &ClusterState, dirty: Dirty, intent: &tokio::sync::Mutex<Intent>) {
        self.ipam_gauges.derivations.fetch_add(1, Ordering::Relaxed);
        if dirty.peers {
            if !self.node.asn_from_file && state.cfg.asn != self.node.asn {
                warn!(
                    cluster_asn = state.cfg.asn,
                    running_asn = self.node.asn,
                    "the cluster's AS changed; restart petreld to speak it"
                );
            }
            let me = self.local(state);
            let set = peers::derive(&me, &state.node_list(), &state.cfg, &state.peer_list());
            for s in &set.skipped {
                warn!(record = %s.what, reason = %s.why, "cluster record skipped");
            }
            if let Err(e) = intent
                .lock()
                .await
                .set_peers(Source::Cluster, set.peers)
                .await
            {
                warn!(error = %e, "could not apply the cluster's peers");
            }
            let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
            v.skipped = set
                .skipped
                .iter()
                .map(|s| format!("{}: {}", s.what, s.why))
                .collect();
        }
        if dirty.origins || dirty.blocks {
            let blocks = state.block_list();
            let borrowed: Vec<std::net::IpAddr> = state.borrowed.keys().copied().collect();
            let origins = advertise::derive(
                &self.node.name,
                &blocks,
                &state.affinity_list(),
                &borrowed,
                &state.cfg,
                &state.service_list(),
            );
            let communities: Vec<Community> = state
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
                .filter(|(_, r)| **r == advertise::Reason::Block)
                .map(|(p, _)| *p)
                .collect();
            let routes: BTreeMap<Prefix, PathAttributes> =
                origins.keys().map(|p| (*p, attrs.clone())).collect();
            if let Err(e) = intent
                .lock()
                .await
                .set_origins(Source::Cluster, routes, Some(blackholes))
                .await
            {
                warn!(error = %e, "could not apply the cluster's routes");
            }
            let rows = block_rows(&self.node.name, &blocks, &state.borrowed, &origins);
            self.ipam_gauges.set(
                rows.iter().filter(|r| r.kind == "block").count() as u64,
                rows.iter().map(|r| r.mine as u64).sum(),
            );
            let services =
                advertise::service_rows(&self.node.name, &state.cfg, &state.service_list());
            let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
            v.services = services;
            v.blocks = rows;
            v.advertised = origins
                .iter()
                .map(|(p, r)| (p.to_string(), r.name().to_string()))
                .collect();
        }
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

    /// Runs until the process ends: register, then (again after any lost
    /// watch) list the node's records, derive, and follow the watches,
    /// applying each event to the model and deriving only what it changed.
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
        // The layout migration to the borrowed index, once per cluster, by
        // whichever node comes first; the others go on meanwhile.
        {
            let ipam = petrel_ipam::Ipam::new(self.store.clone());
            let me = self.node.name.clone();
            tokio::spawn(async move {
                match ipam.migrate_borrowed_index(&me).await {
                    Ok(petrel_ipam::MigrationOutcome::Migrated { added, removed }) => {
                        info!(added, removed, "borrowed-address index built")
                    }
                    Ok(o) => debug!(outcome = ?o, "borrowed-address index migration"),
                    Err(e) => {
                        warn!(error = %e, "borrowed-address index migration failed; `petrelctl ipam gc` runs it too")
                    }
                }
            });
        }
        backoff = BACKOFF_MIN;
        let (tx, mut rx) = mpsc::channel::<(u64, Feed)>(EVENT_QUEUE);
        let mut generation = 0u64;
        loop {
            generation += 1;
            let mut watches = Watches::default();
            let started = async {
                let (mut state, from) = self.sync().await?;
                for (what, rev) in from {
                    let rx = self.store.watch(&what, rev + 1).await?;
                    let w = forward(rx, tx.clone(), generation, what.clone());
                    match keys::parse_block(&what) {
                        Some(cidr) => {
                            watches.blocks.insert(cidr, w);
                        }
                        None => watches.prefixes.push(w),
                    }
                }
                // Blocks whose affinity came between the lists.
                self.follow_blocks(&mut state, &mut watches, &tx, generation)
                    .await?;
                Ok::<_, ModelError>(state)
            }
            .await;
            let mut state = match started {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "cannot read the cluster from the datastore; keeping sessions and routes as they are");
                    self.set_ok(false, Some(e.to_string()));
                    drop(watches);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let was_down = self
                .view
                .lock()
                .map(|v| v.synced && !v.datastore_ok)
                .unwrap_or(false);
            self.set_ok(true, None);
            backoff = BACKOFF_MIN;
            if was_down {
                info!("datastore reachable again; caught up");
            }
            if !self.record_current(&state) {
                // A record lost (a restore from backup, say) or edited must
                // not leave this node unknown; our own write comes back as
                // an event.
                match self.register().await {
                    Ok(()) => info!("node record was missing or changed; registered again"),
                    Err(e) => warn!(error = %e, "cannot re-register the node"),
                }
            }
            self.apply(
                &state,
                Dirty {
                    peers: true,
                    origins: true,
                    blocks: true,
                },
                &intent,
            )
            .await;
            if !self.view.lock().map(|v| v.synced).unwrap_or(false) {
                self.view.lock().unwrap_or_else(|e| e.into_inner()).synced = true;
                self.health.set_cluster_synced();
                info!("first cluster sync done");
            }
            // Follow the watches until one is lost.
            let lost = loop {
                let Some(first) = rx.recv().await else {
                    break "the watch queue closed".to_string();
                };
                let mut batch = vec![first];
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                loop {
                    tokio::select! {
                        biased;
                        m = rx.recv() => match m {
                            Some(m) => batch.push(m),
                            None => break,
                        },
                        _ = &mut settle => break,
                    }
                }
                let mut dirty = Dirty::default();
                let mut lost = None;
                let mut own_record = false;
                for (g, feed) in batch {
                    if g != generation {
                        continue;
                    }
                    match feed {
                        Feed::Lost(why) => lost = Some(why),
                        Feed::Event(ev) => {
                            debug!(key = ev.key(), "datastore change");
                            self.ipam_gauges.events.fetch_add(1, Ordering::Relaxed);
                            own_record |= ev.key() == keys::node(&self.node.name);
                            match state.apply(&ev) {
                                Ok(d) => dirty.merge(d),
                                Err(e) => warn!(error = %e, "record skipped"),
                            }
                        }
                    }
                }
                if let Some(why) = lost {
                    break why;
                }
                if dirty.blocks {
                    if let Err(e) = self
                        .follow_blocks(&mut state, &mut watches, &tx, generation)
                        .await
                    {
                        break format!("cannot follow the node's blocks: {e}");
                    }
                }
                if own_record && !self.record_current(&state) {
                    match self.register().await {
                        Ok(()) => info!("node record was deleted or changed; registered again"),
                        Err(e) => warn!(error = %e, "cannot re-register the node"),
                    }
                }
                if dirty.any() {
                    self.apply(&state, dirty, &intent).await;
                }
            };
            warn!(reason = %lost, "lost a datastore watch; reading the node's records again");
            watches.stop();
            // Events of the old watches still queued are dropped by their
            // generation.
        }
    }
}

fn block_rows(
    node: &str,
    blocks: &[Block],
    borrowed: &BTreeMap<std::net::IpAddr, IpNet>,
    origins: &BTreeMap<Prefix, advertise::Reason>,
) -> Vec<BlockRow> {
    let mut rows = Vec::new();
    for b in blocks {
        let own = advertise::prefix_of(&b.cidr)
            .is_some_and(|p| origins.get(&p) == Some(&advertise::Reason::Block));
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
    // Borrowed addresses, by block: the node does not read those blocks
    // (another node's), so their totals are not known here.
    let mut by_block: BTreeMap<IpNet, u32> = BTreeMap::new();
    for (addr, block) in borrowed {
        if blocks.iter().any(|b| b.cidr.contains(addr)) {
            continue;
        }
        *by_block.entry(*block).or_default() += 1;
    }
    for (cidr, mine) in by_block {
        rows.push(BlockRow {
            cidr: cidr.to_string(),
            pool: "-".into(),
            kind: "borrowed".into(),
            total: 0,
            in_use: 0,
            mine,
            affinity: "?".into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fib::msg::IFA_F_TENTATIVE;
    use crate::fib::msg::{AddrInfo, IFA_F_DADFAILED, IFA_F_DEPRECATED, IFA_F_TEMPORARY};

    #[test]
    fn a_node_registers_stable_addresses_of_both_families() {
        let a = |ifindex, net: &str, flags| AddrInfo {
            ifindex,
            net: net.parse().unwrap(),
            flags,
        };
        let addrs = [
            a(2, "10.99.0.11/24", 0),
            a(2, "fd00:99::5c3a:1b2f:9e01:7d44/64", IFA_F_TEMPORARY),
            a(2, "2001:db8::11/64", IFA_F_DEPRECATED),
            a(2, "2001:db8:1::11/64", IFA_F_DADFAILED),
            a(2, "fd00:99::11/64", IFA_F_TENTATIVE),
            a(2, "fe80::1/64", 0),
            a(3, "192.0.2.1/24", 0),
        ];
        let got: Vec<String> = identity_addresses(&addrs, 2)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(got, ["10.99.0.11/24", "fd00:99::11/64"]);
    }
}
