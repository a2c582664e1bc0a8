//! The node's local model of the cluster: what the derivations need, kept
//! up to date by applying watch events, never by re-reading the cluster.
//!
//! Sans-IO: [`ClusterState::apply`] takes one datastore event and says what
//! it invalidated ([`Dirty`]); the driver in [`super`] owns the watches.
//! Only records that concern this node are held, so its reads and its work
//! are proportional to what changes for it (issue 14):
//!
//! | records | held | why |
//! |---|---|---|
//! | `/petrel/bgp/v1/` | all | config, external peers, services |
//! | `nodes/` | all | the mesh, route reflectors, labels for selectors |
//! | `affinities/<me>/` | own | which blocks are this node's |
//! | `blocks/<cidr>` | own blocks only | confirmation state, rows for `show blocks` |
//! | `borrowed/<me>/` | own | host routes for addresses outside its blocks |
//!
//! Another node's pod ADD or DEL writes only that node's block: nothing
//! here watches it, so it costs this node nothing.

use super::model::{self, BgpConfig, BgpPeer, ModelError, Node, Service};
use ipnet::IpNet;
use petrel_ipam::keys;
use petrel_ipam::model::{Affinity, Block};
use petrel_ipam::store::{KeyValue, WatchEvent};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What an event invalidated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dirty {
    /// The peer set must be derived again (config, peers, nodes).
    pub peers: bool,
    /// The originated routes must be derived again.
    pub origins: bool,
    /// The set of own blocks changed: block watches to add or drop.
    pub blocks: bool,
}

impl Dirty {
    pub fn any(self) -> bool {
        self.peers || self.origins || self.blocks
    }
    pub fn merge(&mut self, o: Dirty) {
        self.peers |= o.peers;
        self.origins |= o.origins;
        self.blocks |= o.blocks;
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    node: String,
    pub cfg: BgpConfig,
    pub peers: BTreeMap<String, BgpPeer>,
    pub services: BTreeMap<String, Service>,
    pub nodes: BTreeMap<String, Node>,
    /// This node's affinities, by block.
    pub affinities: BTreeMap<IpNet, Affinity>,
    /// Contents of this node's blocks (those it has an affinity for).
    pub blocks: BTreeMap<IpNet, Block>,
    /// Addresses this node holds outside its blocks, with their block.
    pub borrowed: BTreeMap<IpAddr, IpNet>,
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, ModelError> {
    serde_json::from_slice(&kv.value).map_err(|e| ModelError::Corrupt {
        key: kv.key.clone(),
        detail: e.to_string(),
    })
}

impl ClusterState {
    pub fn new(node: &str) -> Self {
        ClusterState {
            node: node.to_string(),
            ..ClusterState::default()
        }
    }

    /// The prefixes whose every record the model holds, watched as such.
    pub fn prefixes(&self) -> [String; 4] {
        [
            model::BGP_ROOT.to_string(),
            keys::NODES.to_string(),
            keys::node_affinities(&self.node),
            keys::node_borrowed(&self.node),
        ]
    }

    /// The blocks whose contents the model should hold: those this node
    /// has an affinity for, in any state.
    pub fn wanted_blocks(&self) -> BTreeSet<IpNet> {
        self.affinities.keys().copied().collect()
    }

    /// A record read by a list or carried by a watch event. A record that
    /// does not decode is an error naming its key; the model keeps what it
    /// had for it (the last good value), as the old full reload did not.
    pub fn put(&mut self, kv: &KeyValue) -> Result<Dirty, ModelError> {
        let k = kv.key.as_str();
        let d = if k == model::BGP_CONFIG {
            self.cfg = decode(kv)?;
            Dirty {
                peers: true,
                origins: true,
                blocks: false,
            }
        } else if let Some(name) = k.strip_prefix(model::PEERS) {
            self.peers.insert(name.to_string(), decode(kv)?);
            peers_only()
        } else if let Some(name) = k.strip_prefix(model::SERVICES) {
            self.services.insert(name.to_string(), decode(kv)?);
            origins_only()
        } else if let Some(name) = k.strip_prefix(keys::NODES) {
            let n: Node = decode(kv)?;
            self.nodes.insert(name.to_string(), n);
            // Node records feed the peer set only.
            peers_only()
        } else if k.starts_with(&keys::node_affinities(&self.node)) {
            let a: Affinity = decode(kv)?;
            let new = !self.affinities.contains_key(&a.cidr);
            self.affinities.insert(a.cidr, a);
            Dirty {
                peers: false,
                origins: true,
                blocks: new,
            }
        } else if let Some(cidr) = keys::parse_block(k) {
            if !self.affinities.contains_key(&cidr) {
                // A late event of a block no longer ours.
                return Ok(Dirty::default());
            }
            self.blocks.insert(cidr, decode(kv)?);
            origins_only()
        } else if k.starts_with(&keys::node_borrowed(&self.node)) {
            let Some((_, addr)) = keys::parse_borrowed(k) else {
                return Err(ModelError::Corrupt {
                    key: k.to_string(),
                    detail: "not a borrowed-index key".into(),
                });
            };
            let block = std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| IpNet::from(addr));
            self.borrowed.insert(addr, block);
            origins_only()
        } else {
            Dirty::default()
        };
        Ok(d)
    }

    /// A record deleted.
    pub fn delete(&mut self, key: &str) -> Dirty {
        if key == model::BGP_CONFIG {
            self.cfg = BgpConfig::default();
            return Dirty {
                peers: true,
                origins: true,
                blocks: false,
            };
        }
        if let Some(name) = key.strip_prefix(model::PEERS) {
            return if self.peers.remove(name).is_some() {
                peers_only()
            } else {
                Dirty::default()
            };
        }
        if let Some(name) = key.strip_prefix(model::SERVICES) {
            return if self.services.remove(name).is_some() {
                origins_only()
            } else {
                Dirty::default()
            };
        }
        if let Some(name) = key.strip_prefix(keys::NODES) {
            return if self.nodes.remove(name).is_some() {
                peers_only()
            } else {
                Dirty::default()
            };
        }
        if key.starts_with(&keys::node_affinities(&self.node)) {
            let cidr = key
                .rsplit('/')
                .next()
                .and_then(|seg| keys::parse_block(&format!("{}{seg}", keys::BLOCKS)));
            if let Some(c) = cidr {
                if self.affinities.remove(&c).is_some() {
                    self.blocks.remove(&c);
                    return Dirty {
                        peers: false,
                        origins: true,
                        blocks: true,
                    };
                }
            }
            return Dirty::default();
        }
        if let Some(cidr) = keys::parse_block(key) {
            return if self.blocks.remove(&cidr).is_some() {
                origins_only()
            } else {
                Dirty::default()
            };
        }
        if let Some((_, addr)) = keys::parse_borrowed(key) {
            return if self.borrowed.remove(&addr).is_some() {
                origins_only()
            } else {
                Dirty::default()
            };
        }
        Dirty::default()
    }

    pub fn apply(&mut self, ev: &WatchEvent) -> Result<Dirty, ModelError> {
        match ev {
            WatchEvent::Put(kv) => self.put(kv),
            WatchEvent::Delete { key, .. } => Ok(self.delete(key)),
        }
    }

    pub fn node_list(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }
    pub fn peer_list(&self) -> Vec<BgpPeer> {
        self.peers.values().cloned().collect()
    }
    pub fn service_list(&self) -> Vec<Service> {
        self.services.values().cloned().collect()
    }
    pub fn block_list(&self) -> Vec<Block> {
        self.blocks.values().cloned().collect()
    }
    pub fn affinity_list(&self) -> Vec<Affinity> {
        self.affinities.values().cloned().collect()
    }
}

fn peers_only() -> Dirty {
    Dirty {
        peers: true,
        origins: false,
        blocks: false,
    }
}

fn origins_only() -> Dirty {
    Dirty {
        peers: false,
        origins: true,
        blocks: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_ipam::model::AffinityState;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: 1,
        }
    }

    fn aff(node: &str, cidr: &str) -> String {
        serde_json::to_string(&Affinity {
            node: node.into(),
            cidr: cidr.parse().unwrap(),
            state: AffinityState::Confirmed,
            since: 0,
        })
        .unwrap()
    }

    #[test]
    fn events_mark_only_what_they_invalidate() {
        let mut s = ClusterState::new("a");
        let peer = r#"{"name":"tor","address":"10.0.0.1","asn":65000}"#;
        assert_eq!(
            s.put(&kv("/petrel/bgp/v1/peers/tor", peer)).unwrap(),
            peers_only()
        );
        let svc = r#"{"name":"s","addresses":["192.0.2.1/32"]}"#;
        assert_eq!(
            s.put(&kv("/petrel/bgp/v1/services/s", svc)).unwrap(),
            origins_only()
        );
        // A new own affinity: a block to watch.
        let d = s
            .put(&kv(
                &keys::affinity("a", &"10.1.0.0/26".parse().unwrap()),
                &aff("a", "10.1.0.0/26"),
            ))
            .unwrap();
        assert!(d.blocks && d.origins && !d.peers);
        assert_eq!(s.wanted_blocks().len(), 1);
        // Its block's contents are taken; another block's are not.
        let b = Block::new("10.1.0.0/26".parse().unwrap(), "p", Some("a".into()), 0);
        let other = Block::new("10.1.0.64/26".parse().unwrap(), "p", Some("b".into()), 0);
        let bkv = |b: &Block| kv(&keys::block(&b.cidr), &serde_json::to_string(b).unwrap());
        assert_eq!(s.put(&bkv(&b)).unwrap(), origins_only());
        assert_eq!(s.put(&bkv(&other)).unwrap(), Dirty::default());
        assert_eq!(s.blocks.len(), 1);
        // Borrowed index entries.
        let addr: IpAddr = "10.1.0.70".parse().unwrap();
        assert_eq!(
            s.put(&kv(&keys::borrowed("a", &addr), "10.1.0.64/26"))
                .unwrap(),
            origins_only()
        );
        assert_eq!(
            s.borrowed.get(&addr),
            Some(&"10.1.0.64/26".parse().unwrap())
        );
        // Deletes.
        assert_eq!(s.delete(&keys::borrowed("a", &addr)), origins_only());
        let d = s.delete(&keys::affinity("a", &"10.1.0.0/26".parse().unwrap()));
        assert!(d.blocks && d.origins);
        assert!(s.blocks.is_empty(), "the block goes with the affinity");
        assert_eq!(s.delete("/petrel/bgp/v1/peers/nobody"), Dirty::default());
    }

    #[test]
    fn a_corrupt_record_names_its_key_and_keeps_the_last_good_value() {
        let mut s = ClusterState::new("a");
        let peer = r#"{"name":"tor","address":"10.0.0.1","asn":65000}"#;
        s.put(&kv("/petrel/bgp/v1/peers/tor", peer)).unwrap();
        let e = s.put(&kv("/petrel/bgp/v1/peers/tor", "{")).unwrap_err();
        assert!(e.to_string().contains("/petrel/bgp/v1/peers/tor"), "{e}");
        assert_eq!(s.peers["tor"].asn, 65000);
    }
}
