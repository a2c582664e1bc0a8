//! What petreld wants the speaker and the kernel to have, from two
//! sources: the configuration file (changed by SIGHUP) and the cluster's
//! datastore (changed by its watch). Each source replaces its own part;
//! [`Intent`] merges them and applies only the difference, so a change in
//! one peer touches that peer's session and nothing else.
//!
//! On a conflict the file wins: a peer or prefix configured on the node
//! itself is the operator's local override of the cluster's records.

use crate::config;
use petrel_bgp::speaker::{PeerSettings, Speaker, SpeakerError};
use petrel_bgp::wire::attr::PathAttributes;
use petrel_bgp::wire::Prefix;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Where a part of the intent comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    Cluster,
}

/// The node's own blocks to blackhole in the kernel: the whole set, each
/// time it changes (the FIB task diffs it against what it installed).
pub type BlackholeSender = mpsc::Sender<BTreeSet<Prefix>>;

pub struct Intent {
    speaker: Speaker,
    file_peers: BTreeMap<IpAddr, PeerSettings>,
    cluster_peers: BTreeMap<IpAddr, PeerSettings>,
    peers: BTreeMap<IpAddr, PeerSettings>,
    file_origins: BTreeMap<Prefix, PathAttributes>,
    cluster_origins: BTreeMap<Prefix, PathAttributes>,
    origins: BTreeMap<Prefix, PathAttributes>,
    blackholes: BTreeSet<Prefix>,
    blackhole_tx: Option<BlackholeSender>,
    /// The peers in effect, for whoever follows them (the link watch of
    /// fast external failover): a `watch`, the newest set wins.
    peers_tx: watch::Sender<BTreeMap<IpAddr, PeerSettings>>,
}

impl Intent {
    pub fn new(speaker: Speaker, blackhole_tx: Option<BlackholeSender>) -> Self {
        Self {
            speaker,
            file_peers: BTreeMap::new(),
            cluster_peers: BTreeMap::new(),
            peers: BTreeMap::new(),
            file_origins: BTreeMap::new(),
            cluster_origins: BTreeMap::new(),
            origins: BTreeMap::new(),
            blackholes: BTreeSet::new(),
            blackhole_tx,
            peers_tx: watch::channel(BTreeMap::new()).0,
        }
    }

    /// Follows the peers in effect (given to the speaker), each change
    /// after it is applied.
    pub fn watch_peers(&self) -> watch::Receiver<BTreeMap<IpAddr, PeerSettings>> {
        self.peers_tx.subscribe()
    }

    pub fn speaker(&self) -> &Speaker {
        &self.speaker
    }

    /// The peers in effect, by address.
    pub fn peers(&self) -> &BTreeMap<IpAddr, PeerSettings> {
        &self.peers
    }

    /// Where a peer in effect comes from.
    pub fn source_of(&self, addr: &IpAddr) -> Option<Source> {
        if self.file_peers.contains_key(addr) {
            Some(Source::File)
        } else if self.cluster_peers.contains_key(addr) {
            Some(Source::Cluster)
        } else {
            None
        }
    }

    pub fn origins(&self) -> &BTreeMap<Prefix, PathAttributes> {
        &self.origins
    }

    pub fn blackholes(&self) -> &BTreeSet<Prefix> {
        &self.blackholes
    }

    /// Replaces one source's peers and applies the difference.
    pub async fn set_peers(
        &mut self,
        source: Source,
        peers: BTreeMap<IpAddr, PeerSettings>,
    ) -> Result<(), SpeakerError> {
        let r = self.apply_peers(source, peers).await;
        // What was applied, even when a step failed.
        let applied = &self.peers;
        self.peers_tx.send_if_modified(|v| {
            let changed = v != applied;
            if changed {
                *v = applied.clone();
            }
            changed
        });
        r
    }

    async fn apply_peers(
        &mut self,
        source: Source,
        peers: BTreeMap<IpAddr, PeerSettings>,
    ) -> Result<(), SpeakerError> {
        match source {
            Source::File => self.file_peers = peers,
            Source::Cluster => self.cluster_peers = peers,
        }
        let mut want = self.cluster_peers.clone();
        for (a, p) in &self.file_peers {
            if let Some(c) = want.get(a) {
                if c != p {
                    warn!(peer = %a, "peer in both the file and the datastore: the file's settings win");
                }
            }
            want.insert(*a, p.clone());
        }
        for (a, p) in &want {
            match self.peers.get(a) {
                None => {
                    info!(peer = %a, asn = p.asn, passive = p.passive, "peer added");
                    self.speaker.add_peer(p.clone()).await?;
                }
                // The speaker decides whether the change needs a new
                // session (`PeerSettings` says which fields do).
                Some(old) if old != p => {
                    info!(peer = %a, "peer settings changed");
                    self.speaker.update_peer(p.clone()).await?;
                }
                Some(_) => {}
            }
            self.peers.insert(*a, p.clone());
        }
        let gone: Vec<IpAddr> = self
            .peers
            .keys()
            .filter(|a| !want.contains_key(a))
            .copied()
            .collect();
        for a in gone {
            info!(peer = %a, "peer removed");
            self.speaker.remove_peer(a).await?;
            self.peers.remove(&a);
        }
        Ok(())
    }

    /// Replaces one source's originations (and, for the cluster, the set
    /// of blocks to blackhole) and applies the difference.
    pub async fn set_origins(
        &mut self,
        source: Source,
        origins: BTreeMap<Prefix, PathAttributes>,
        blackholes: Option<BTreeSet<Prefix>>,
    ) -> Result<(), SpeakerError> {
        match source {
            Source::File => self.file_origins = origins,
            Source::Cluster => self.cluster_origins = origins,
        }
        let mut want = self.cluster_origins.clone();
        want.extend(self.file_origins.iter().map(|(p, a)| (*p, a.clone())));
        for (p, a) in &want {
            if self.origins.get(p) != Some(a) {
                self.speaker.originate(*p, a.clone()).await?;
                self.origins.insert(*p, a.clone());
            }
        }
        let gone: Vec<Prefix> = self
            .origins
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            self.speaker.withdraw(p).await?;
            self.origins.remove(&p);
        }
        if let Some(b) = blackholes {
            if b != self.blackholes {
                self.blackholes = b.clone();
                if let Some(tx) = &self.blackhole_tx {
                    // Bounded; the FIB task takes the newest set.
                    let _ = tx.send(b).await;
                }
            }
        }
        Ok(())
    }
}

/// The file's peers by address.
pub fn file_peers(cfg: &config::Config) -> BTreeMap<IpAddr, PeerSettings> {
    cfg.bgp
        .peers
        .iter()
        .map(|p| (p.address, p.clone()))
        .collect()
}
