//! Block claims: a node takes a block nobody has (pending affinity, create
//! the block, confirm), or an unaffine or long-empty one of another node;
//! an interrupted claim is finished or undone by the next one.

use super::{encode, now, Ipam, Result};
use crate::borrowed;
use crate::claim;
use crate::keys;
use crate::model::{Affinity, AffinityState, Block, IpamConfig, Pool};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// A node that is no host: its name starts with '_' (no Kubernetes Node
/// name can). petrel-controller's load-balancer addresses belong to
/// `_load-balancer`; `max_blocks_per_host` does not apply to such nodes.
pub fn is_virtual_node(node: &str) -> bool {
    node.starts_with('_')
}

/// How a claim ended.
pub(super) enum Claim {
    Claimed(IpNet),
    /// The node holds `max_blocks_per_host` blocks.
    AtLimit,
    /// There were candidates, and other nodes won every one.
    Lost,
    /// No candidate: every block of the pools is taken.
    Full,
}

/// Claim attempts per assignment after lost races.
pub(super) const CLAIM_ROUNDS: u32 = 5;

impl Ipam {
    pub async fn node_affinities(&self, node: &str) -> Result<Vec<(Affinity, i64)>> {
        self.list::<Affinity>(&keys::node_affinities(node)).await
    }

    /// Claim one more block for `node` from `pools`. `None` when the node
    /// is at its limit or every block is taken.
    pub async fn claim_block(
        &self,
        node: &str,
        pools: &[Pool],
        cfg: &IpamConfig,
    ) -> Result<Option<IpNet>> {
        match self.claim_block_with(node, pools, cfg, &mut None).await? {
            Claim::Claimed(c) => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// [`Self::claim_block`], leaving the blocks listing it read (if it
    /// read one) in `listing` for the caller.
    pub(super) async fn claim_block_with(
        &self,
        node: &str,
        pools: &[Pool],
        cfg: &IpamConfig,
        listing: &mut Option<BTreeMap<IpNet, (Block, i64)>>,
    ) -> Result<Claim> {
        let affs = self.node_affinities(node).await?;
        // Finish a claim this node started and did not complete (a crash
        // between the pending affinity and the confirm).
        for (a, rev) in affs
            .iter()
            .filter(|(a, _)| a.state == AffinityState::Pending)
        {
            if let Some(pool) = pools.iter().find(|p| p.cidr.contains(&a.cidr)) {
                if let Some(c) = self.resume_claim(node, pool, a, *rev).await? {
                    return Ok(Claim::Claimed(c));
                }
            }
        }
        let held = affs
            .iter()
            .filter(|(a, _)| a.state == AffinityState::Confirmed)
            .count() as u32;
        // The cap is per host; a virtual node (a name starting with '_',
        // which no Kubernetes Node can have, such as the controller's
        // `_load-balancer`) is no host and holds as many blocks as its
        // addresses need.
        if cfg.max_blocks_per_host > 0 && held >= cfg.max_blocks_per_host && !is_virtual_node(node)
        {
            return Ok(Claim::AtLimit);
        }
        // First pass: blocks that do not exist yet, found from the keys
        // alone (a listing of every block's contents grows with the
        // cluster). Only a pool with no fresh block left needs the contents,
        // to find unaffine or reclaimable ones.
        let existing: BTreeSet<IpNet> = self
            .store
            .list_keys(keys::BLOCKS)
            .await?
            .iter()
            .filter_map(|(k, _)| keys::parse_block(k))
            .collect();
        let mut tried = false;
        for pool in pools {
            for cidr in claim::fresh_candidates(pool, node, &existing) {
                tried = true;
                if self.claim_fresh(node, pool, cidr).await? {
                    tracing::debug!(%node, block = %cidr, "claimed block");
                    return Ok(Claim::Claimed(cidr));
                }
            }
        }
        if tried {
            return Ok(Claim::Lost);
        }
        let blocks = listing.insert(self.block_map().await?);
        let now = now();
        for pool in pools {
            for cidr in claim::candidates(pool, node, blocks, now, cfg) {
                tried = true;
                let taken = match blocks.get(&cidr) {
                    None => self.claim_fresh(node, pool, cidr).await?,
                    Some((b, rev)) => self.take_over(node, b, *rev).await?,
                };
                if taken {
                    tracing::debug!(%node, block = %cidr, "claimed block");
                    return Ok(Claim::Claimed(cidr));
                }
            }
        }
        Ok(if tried { Claim::Lost } else { Claim::Full })
    }

    async fn resume_claim(
        &self,
        node: &str,
        pool: &Pool,
        a: &Affinity,
        rev: i64,
    ) -> Result<Option<IpNet>> {
        let akey = keys::affinity(node, &a.cidr);
        let bkey = keys::block(&a.cidr);
        let ours = match self.read::<Block>(&bkey).await? {
            Some((b, _)) => b.affinity.as_deref() == Some(node),
            None => {
                let b = Block::new(a.cidr, &pool.name, Some(node.into()), now());
                match self.store.create(&bkey, encode(&b)).await {
                    Ok(_) => true,
                    Err(e) if e.is_conflict() => false,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if ours {
            self.set_affinity_state(&akey, a, rev, AffinityState::Confirmed)
                .await?;
            Ok(Some(a.cidr))
        } else {
            self.delete_if(&akey, rev).await?;
            Ok(None)
        }
    }

    /// Two-phase claim of a block nobody has: pending affinity, create the
    /// block (the race is decided here), confirm. The loser removes its
    /// pending affinity.
    async fn claim_fresh(&self, node: &str, pool: &Pool, cidr: IpNet) -> Result<bool> {
        let akey = keys::affinity(node, &cidr);
        let aff = Affinity {
            node: node.into(),
            cidr,
            state: AffinityState::Pending,
            since: now(),
        };
        let arev = match self.store.create(&akey, encode(&aff)).await {
            Ok(r) => r,
            Err(e) if e.is_conflict() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let block = Block::new(cidr, &pool.name, Some(node.into()), now());
        match self.store.create(&keys::block(&cidr), encode(&block)).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {
                // Someone else's block now, unless an earlier attempt of ours
                // created it and lost the answer.
                let mine = self
                    .read::<Block>(&keys::block(&cidr))
                    .await?
                    .is_some_and(|(b, _)| b.affinity.as_deref() == Some(node));
                if !mine {
                    self.delete_if(&akey, arev).await?;
                    return Ok(false);
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.set_affinity_state(&akey, &aff, arev, AffinityState::Confirmed)
            .await?;
        Ok(true)
    }

    /// Take an existing block: unaffine, or another node's empty block old
    /// enough (the candidates only offer those).
    async fn take_over(&self, node: &str, b: &Block, rev: i64) -> Result<bool> {
        let akey = keys::affinity(node, &b.cidr);
        let aff = Affinity {
            node: node.into(),
            cidr: b.cidr,
            state: AffinityState::Pending,
            since: now(),
        };
        let arev = match self.store.create(&akey, encode(&aff)).await {
            Ok(r) => r,
            Err(e) if e.is_conflict() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let previous = b.affinity.clone();
        let mut nb = b.clone();
        nb.affinity = Some(node.into());
        nb.changed = now();
        match self.store.commit(borrowed::update_ops(b, &nb, rev)).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {
                self.delete_if(&akey, arev).await?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        self.set_affinity_state(&akey, &aff, arev, AffinityState::Confirmed)
            .await?;
        if let Some(prev) = previous {
            let pkey = keys::affinity(&prev, &b.cidr);
            if let Some(kv) = self.store.get(&pkey).await? {
                // Losing this race means the previous owner changed its own
                // record meanwhile; gc settles it.
                let _ = self.store.delete(&pkey, kv.mod_revision).await;
            }
        }
        Ok(true)
    }

    pub(super) async fn set_affinity_state(
        &self,
        key: &str,
        a: &Affinity,
        rev: i64,
        state: AffinityState,
    ) -> Result<()> {
        let mut na = a.clone();
        na.state = state;
        na.since = now();
        match self.store.update(key, encode(&na), rev).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => {
                // Removed meanwhile: by gc (write it again if the block is
                // still ours), or by a node that took the block over (then
                // it is not ours and must not come back).
                let ours = self
                    .read::<Block>(&keys::block(&a.cidr))
                    .await?
                    .is_some_and(|(b, _)| b.affinity.as_deref() == Some(a.node.as_str()));
                if !ours || state != AffinityState::Confirmed {
                    return Ok(());
                }
                match self.store.create(key, encode(&na)).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_conflict() => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}
