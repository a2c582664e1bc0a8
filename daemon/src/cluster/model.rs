//! The cluster's BGP records in the datastore, and compare-and-swap
//! helpers to change them. Layout (docs/datastore.md):
//!
//! | key | record |
//! |---|---|
//! | `/petrel/bgp/v1/config` | [`BgpConfig`] (absent: the defaults) |
//! | `/petrel/bgp/v1/peers/<name>` | [`BgpPeer`] |
//! | `/petrel/bgp/v1/services/<name>` | [`Service`] |
//! | `/petrel/ipam/v1/nodes/<node>` | [`Node`] (shared with IPAM) |
//! | `/petrel/controller/v1/leader` | petrel-controller's lease (`crate::k8s::election::Lease`) |
//! | `/petrel/controller/v1/status` | [`ControllerStatus`] |
//! | `/petrel/controller/v1/node-labels/<node>` | [`OwnedLabels`] |
//!
//! Every write is conditioned on the revision that was read, like IPAM's,
//! so two operators (or an operator and a node) changing the same record
//! never lose each other's change silently: the loser re-reads and retries.

use ipnet::IpNet;
use petrel_bgp::rib::SendMode;
use petrel_ipam::keys;
pub use petrel_ipam::model::Node;
use petrel_ipam::store::{Store, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const BGP_ROOT: &str = "/petrel/bgp/v1/";
pub const BGP_CONFIG: &str = "/petrel/bgp/v1/config";
pub const PEERS: &str = "/petrel/bgp/v1/peers/";
pub const SERVICES: &str = "/petrel/bgp/v1/services/";

pub const CONTROLLER_ROOT: &str = "/petrel/controller/v1/";
pub const CONTROLLER_LEADER: &str = "/petrel/controller/v1/leader";
pub const CONTROLLER_STATUS: &str = "/petrel/controller/v1/status";
pub const CONTROLLER_NODE_LABELS: &str = "/petrel/controller/v1/node-labels/";

/// How many times a read-modify-write is retried after losing a race.
const CAS_ATTEMPTS: usize = 16;

pub fn peer_key(name: &str) -> String {
    format!("{PEERS}{name}")
}

pub fn service_key(name: &str) -> String {
    format!("{SERVICES}{name}")
}

/// Cluster-wide BGP settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BgpConfig {
    /// The AS of every node that does not set its own.
    pub asn: u32,
    /// The node-to-node full mesh (off when route reflectors are used
    /// with mesh off, or when only external peers should be used).
    pub node_mesh: bool,
    /// The port nodes listen on and dial each other at.
    pub listen_port: u16,
    /// Standard communities added to every route the nodes originate.
    pub communities: Vec<String>,
    /// Service ClusterIP ranges every node advertises.
    pub service_cluster_ips: Vec<IpNet>,
    /// Service external IP ranges every node advertises.
    pub service_external_ips: Vec<IpNet>,
    /// Service load-balancer IP ranges every node advertises.
    pub service_loadbalancer_ips: Vec<IpNet>,
    /// BFD on every node-to-node session (RFC 5882); none: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_mesh_bfd: Option<crate::config::Bfd>,
    /// RFC 7911 ADD-PATH between route reflectors and their clients: the
    /// paths a reflector sends ("best", "ecmp" or "all"; the clients take
    /// several). None: one path, as without ADD-PATH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_reflector_add_path: Option<String>,
    /// The families the mesh's IPv6 sessions carry, named as `families`
    /// in petreld.toml; none: IPv6 only. With "ipv4-unicast" among them,
    /// IPv4 routes go over the IPv6 sessions with IPv6 next hops (RFC 8950,
    /// Calico's and BIRD's "extended next hop"), and two nodes that both
    /// have an IPv6 address make no IPv4 session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_ipv6_families: Option<Vec<String>>,
}

impl Default for BgpConfig {
    fn default() -> Self {
        Self {
            asn: crate::config::DEFAULT_ASN,
            node_mesh: true,
            listen_port: 179,
            communities: Vec::new(),
            service_cluster_ips: Vec::new(),
            service_external_ips: Vec::new(),
            service_loadbalancer_ips: Vec::new(),
            node_mesh_bfd: None,
            route_reflector_add_path: None,
            node_mesh_ipv6_families: None,
        }
    }
}

/// An external BGP peer (a top-of-rack router, say): for every node, for
/// one node, or for the nodes a selector picks.
///
/// This is the record as stored, not a second peer-settings type: it says
/// which nodes it applies to, names rather than values (`next_hop`,
/// `families`, `add_path`), a key *file* for BFD, and leaves out what the
/// node decides; `peers::derive` resolves it into the speaker's
/// `PeerSettings` on each node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpPeer {
    pub name: String,
    pub address: IpAddr,
    pub asn: u32,
    /// Only this node peers with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only the nodes whose labels match (see petrel_ipam::selector);
    /// empty: every node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u16>,
    /// Graceful restart time offered to this peer (RFC 4724); none: the
    /// node's own setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_time: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    /// "self" or "keep"; none: self for eBGP, keep for iBGP (RFC 4271 §5.1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    #[serde(default)]
    pub passive: bool,
    /// Also advertise the routes learned from the other nodes (default:
    /// only this node's own blocks, services and borrowed addresses).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub advertise_learned: bool,
    /// RFC 7911: send the peer several paths per prefix ("best", "ecmp" or
    /// "all"), where it says it receives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_path: Option<String>,
    /// RFC 7911: take several paths per prefix from the peer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub add_path_receive: bool,
    /// Import and export policies: lists of rules in the configuration
    /// file's form (docs/config.md), kept as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export: Vec<serde_json::Value>,
    /// BFD for this peer (RFC 5882); none: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<crate::config::Bfd>,
    /// The families the session carries, as `families` in petreld.toml;
    /// none: the family of `address`. "ipv4-unicast" on an IPv6 peer is
    /// RFC 8950 (IPv4 routes with IPv6 next hops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub families: Option<Vec<String>>,
}

/// Addresses of a Kubernetes service to advertise. A `local_only` one
/// (externalTrafficPolicy: Local) is advertised, as host routes, only by
/// the nodes that have an endpoint of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub addresses: Vec<IpNet>,
    #[serde(default)]
    pub local_only: bool,
    /// Nodes with a local endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_nodes: Vec<String>,
}

/// What petrel-controller reports about itself, for `petrelctl controller
/// status`. Written by the leader every few seconds when it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerStatus {
    /// The controller that wrote this (the leader).
    pub leader: String,
    /// Unix milliseconds when it became leader.
    pub leader_since_ms: u64,
    /// Unix milliseconds of the last complete sync of the Kubernetes caches
    /// into the datastore (a pass with nothing left to do).
    pub last_sync_ms: u64,
    /// Objects in the caches.
    pub services: u64,
    pub endpoint_slices: u64,
    pub nodes: u64,
    pub pods: u64,
    /// LoadBalancer Services holding an address, and those that cannot get one.
    pub lb_allocated: u64,
    pub lb_failed: u64,
    /// Service records under `/petrel/bgp/v1/services/k8s.*`.
    pub service_records: u64,
    /// Addresses of pods that no longer exist released so far (by this
    /// leader), and the latest of them.
    pub leaks_reclaimed: u64,
    pub recent_reclaimed: Vec<String>,
    /// Nodes garbage-collected after their Kubernetes Node went away.
    pub nodes_collected: Vec<String>,
    /// The latest errors, newest last (at most a few).
    pub errors: Vec<String>,
}

/// The labels petrel-controller copied from a Kubernetes Node into the
/// node's record, so that it removes or changes only its own: a label set
/// by the node's petreld.toml or by `petrelctl node label` with another
/// value is left alone (the file's labels win). Its presence also marks the
/// node as one Kubernetes knew, which is what makes it a candidate for
/// garbage collection once the Node is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OwnedLabels {
    pub node: String,
    pub labels: BTreeMap<String, String>,
}

pub fn controller_node_labels_key(node: &str) -> String {
    format!("{CONTROLLER_NODE_LABELS}{node}")
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: stored record does not parse: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("{key}: still changing under us after {CAS_ATTEMPTS} attempts")]
    Contention { key: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ModelError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data structures: serialisation cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

pub async fn get<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<(T, i64)>> {
    match store.get(key).await? {
        None => Ok(None),
        Some(kv) => Ok(Some((decode(key, &kv.value)?, kv.mod_revision))),
    }
}

/// Every record under `prefix`; a record that does not parse is an error
/// naming its key (rather than a silently smaller cluster).
pub async fn list<T: DeserializeOwned>(store: &dyn Store, prefix: &str) -> Result<Vec<T>> {
    let l = store.list(prefix).await?;
    l.kvs.iter().map(|kv| decode(&kv.key, &kv.value)).collect()
}

/// Read-modify-write of one record under compare-and-swap: `f` gets the
/// current value (or `None`) and returns the new one (`None`: delete).
pub async fn modify<T, F>(store: &dyn Store, key: &str, mut f: F) -> Result<Option<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<T>) -> Result<Option<T>>,
{
    for _ in 0..CAS_ATTEMPTS {
        let cur = get::<T>(store, key).await?;
        let (value, rev) = match cur {
            Some((v, r)) => (Some(v), Some(r)),
            None => (None, None),
        };
        let new = f(value)?;
        let r = match (&new, rev) {
            (Some(v), None) => store.create(key, encode(v)).await.map(|_| ()),
            (Some(v), Some(rev)) => store.update(key, encode(v), rev).await.map(|_| ()),
            (None, Some(rev)) => store.delete(key, rev).await,
            (None, None) => Ok(()),
        };
        match r {
            Ok(()) => return Ok(new),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ModelError::Contention {
        key: key.to_string(),
    })
}

pub async fn bgp_config(store: &dyn Store) -> Result<BgpConfig> {
    Ok(get::<BgpConfig>(store, BGP_CONFIG)
        .await?
        .map(|(c, _)| c)
        .unwrap_or_default())
}

pub async fn nodes(store: &dyn Store) -> Result<Vec<Node>> {
    list(store, keys::NODES).await
}

pub async fn peers(store: &dyn Store) -> Result<Vec<BgpPeer>> {
    list(store, PEERS).await
}

pub async fn services(store: &dyn Store) -> Result<Vec<Service>> {
    list(store, SERVICES).await
}

/// What a node registers about itself; labels are merged into those
/// already stored (operators may have added some with `petrelctl node
/// label`), the rest is replaced.
pub async fn register_node(
    store: &dyn Store,
    name: &str,
    addresses: &[IpNet],
    asn: Option<u32>,
    rr_cluster_id: Option<std::net::Ipv4Addr>,
    labels: &BTreeMap<String, String>,
) -> Result<Node> {
    let key = keys::node(name);
    let n = modify::<Node, _>(store, &key, |cur| {
        let mut n = cur.unwrap_or_else(|| Node {
            name: name.to_string(),
            ..Node::default()
        });
        n.addresses = addresses.to_vec();
        n.asn = asn;
        n.route_reflector_cluster_id = rr_cluster_id;
        for (k, v) in labels {
            n.labels.insert(k.clone(), v.clone());
        }
        Ok(Some(n))
    })
    .await?;
    n.ok_or_else(|| ModelError::Invalid(format!("{key}: vanished while registering")))
}

pub fn validate_peer(p: &BgpPeer) -> Result<()> {
    let bad = |m: String| Err(ModelError::Invalid(format!("peer {}: {m}", p.name)));
    if p.name.is_empty() || p.name.contains('/') {
        return bad("the name must be non-empty and contain no '/'".into());
    }
    if p.asn == 0 || p.asn == 23456 {
        return bad(format!("asn {} is reserved (RFC 7607, RFC 6793)", p.asn));
    }
    if p.node.is_some() && !p.node_selector.is_empty() {
        return bad("give either a node or a node selector, not both".into());
    }
    if !p.node_selector.is_empty() {
        if let Err(e) = petrel_ipam::selector::Selector::parse(&p.node_selector) {
            return bad(format!("node selector: {e}"));
        }
    }
    if let Some(pw) = &p.password {
        if pw.is_empty() || pw.len() > 80 {
            return bad("the password must be 1 to 80 octets (TCP MD5 key, RFC 2385)".into());
        }
    }
    if let Some(h) = p.hold_time {
        // RFC 4271 §4.2: zero or at least three seconds.
        if h == 1 || h == 2 {
            return bad("hold time must be 0 or at least 3 seconds (RFC 4271 §4.2)".into());
        }
    }
    if let Some(t) = p.restart_time {
        // RFC 4724 §3: twelve bits.
        if t > 4095 {
            return bad(format!("restart time {t} exceeds 4095 (RFC 4724 §3)"));
        }
    }
    if let Some(Err((field, m))) = p.bfd.as_ref().map(|b| b.validate()) {
        return bad(format!("bfd {field}: {m}"));
    }
    for (what, rules) in [("import", &p.import), ("export", &p.export)] {
        if let Err(e) = policy_of(rules) {
            return bad(format!("{what} policy: {e}"));
        }
    }
    if let Some(nh) = &p.next_hop {
        if nh != "self" && nh != "keep" {
            return bad(format!(
                "next hop {nh:?}: allowed values are \"self\" and \"keep\""
            ));
        }
    }
    if let Some(m) = &p.add_path {
        if let Err(e) = m.parse::<SendMode>() {
            return bad(format!("add path {e}"));
        }
    }
    if let Some(Err(e)) = p.families.as_deref().map(crate::config::families_by_name) {
        return bad(e);
    }
    Ok(())
}

/// A policy from its stored JSON rules.
pub fn policy_of(
    rules: &[serde_json::Value],
) -> std::result::Result<petrel_bgp::policy::Policy, String> {
    let rules: Vec<petrel_bgp::policy::Rule> =
        serde_json::from_value(serde_json::Value::Array(rules.to_vec()))
            .map_err(|e| e.to_string())?;
    let p = petrel_bgp::policy::Policy { rules };
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

pub fn validate_config(c: &BgpConfig) -> Result<()> {
    if c.asn == 0 || c.asn == 23456 {
        return Err(ModelError::Invalid(format!(
            "asn {} is reserved (RFC 7607, RFC 6793)",
            c.asn
        )));
    }
    if c.listen_port == 0 {
        return Err(ModelError::Invalid("listen port 0 is not a port".into()));
    }
    if let Some(Err((field, m))) = c.node_mesh_bfd.as_ref().map(|b| b.validate()) {
        return Err(ModelError::Invalid(format!("node mesh bfd {field}: {m}")));
    }
    if let Some(m) = &c.route_reflector_add_path {
        if let Err(e) = m.parse::<SendMode>() {
            return Err(ModelError::Invalid(format!("route reflector add path {e}")));
        }
    }
    if let Some(Err(e)) = c
        .node_mesh_ipv6_families
        .as_deref()
        .map(crate::config::families_by_name)
    {
        return Err(ModelError::Invalid(format!("node mesh ipv6 {e}")));
    }
    for s in &c.communities {
        if s.parse::<petrel_bgp::wire::attr::Community>().is_err() {
            return Err(ModelError::Invalid(format!(
                "community {s:?}: expected ASN:VALUE or a well-known name"
            )));
        }
    }
    Ok(())
}

pub fn validate_service(s: &Service) -> Result<()> {
    if s.name.is_empty() || s.name.contains('/') {
        return Err(ModelError::Invalid(
            "service name must be non-empty and contain no '/'".into(),
        ));
    }
    if s.addresses.is_empty() {
        return Err(ModelError::Invalid(format!(
            "service {}: no addresses",
            s.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_ipam::store::memory::MemoryStore;

    #[tokio::test]
    async fn register_merges_labels_and_replaces_addresses() {
        let store = MemoryStore::new();
        let key = keys::node("n1");
        modify::<Node, _>(&store, &key, |_| {
            Ok(Some(Node {
                name: "n1".into(),
                labels: [("rack".to_string(), "r1".to_string())].into(),
                addresses: vec!["10.0.0.9/24".parse().unwrap()],
                ..Node::default()
            }))
        })
        .await
        .unwrap();
        let n = register_node(
            &store,
            "n1",
            &["10.0.0.1/24".parse().unwrap()],
            None,
            None,
            &[("zone".to_string(), "a".to_string())].into(),
        )
        .await
        .unwrap();
        assert_eq!(n.addresses, vec!["10.0.0.1/24".parse::<IpNet>().unwrap()]);
        assert_eq!(n.labels.len(), 2);
        assert_eq!(nodes(&store).await.unwrap(), vec![n]);
    }

    #[tokio::test]
    async fn config_defaults_when_absent_and_round_trips() {
        let store = MemoryStore::new();
        assert_eq!(bgp_config(&store).await.unwrap(), BgpConfig::default());
        modify::<BgpConfig, _>(&store, BGP_CONFIG, |c| {
            let mut c = c.unwrap_or_default();
            c.asn = 65010;
            c.node_mesh = false;
            Ok(Some(c))
        })
        .await
        .unwrap();
        let c = bgp_config(&store).await.unwrap();
        assert_eq!((c.asn, c.node_mesh, c.listen_port), (65010, false, 179));
    }

    #[test]
    fn peer_validation_names_the_problem() {
        let mut p = BgpPeer {
            name: "tor".into(),
            address: "10.0.0.254".parse().unwrap(),
            asn: 65000,
            node: Some("n1".into()),
            node_selector: "rack == 'a'".into(),
            port: None,
            password: None,
            hold_time: None,
            keepalive: None,
            restart_time: None,
            ttl_security: None,
            next_hop: None,
            passive: false,
            advertise_learned: false,
            add_path: None,
            add_path_receive: false,
            import: vec![],
            export: vec![],
            bfd: None,
            families: None,
        };
        let e = validate_peer(&p).unwrap_err().to_string();
        assert!(e.contains("either a node or a node selector"), "{e}");
        p.node = None;
        p.hold_time = Some(2);
        let e = validate_peer(&p).unwrap_err().to_string();
        assert!(e.contains("RFC 4271 §4.2"), "{e}");
        p.hold_time = Some(9);
        validate_peer(&p).unwrap();
        p.add_path = Some("every".into());
        let e = validate_peer(&p).unwrap_err().to_string();
        assert!(e.contains("\"best\", \"ecmp\" and \"all\""), "{e}");
        p.add_path = Some("all".into());
        validate_peer(&p).unwrap();
    }

    #[tokio::test]
    async fn corrupt_record_is_named() {
        let store = MemoryStore::new();
        store.create(&peer_key("x"), b"{".to_vec()).await.unwrap();
        let e = peers(&store).await.unwrap_err().to_string();
        assert!(e.contains("/petrel/bgp/v1/peers/x"), "{e}");
    }
}
