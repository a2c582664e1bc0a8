//! Release: addresses (each block with its handles' counts in one
//! transaction), whole handles, and a node's empty blocks, which go only
//! under a pending-deletion affinity and at the revision seen empty.

use super::assign::HandleSlot;
use super::{encode, now, retry_on_conflict, Ipam, Result};
use crate::block::Release;
use crate::borrowed;
use crate::keys;
use crate::model::{AffinityState, Block, Handle};
use crate::store::Op;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

impl Ipam {
    /// Release addresses; returns those that were assigned and are now free.
    pub async fn release_addrs(&self, addrs: &[IpAddr]) -> Result<Vec<IpAddr>> {
        let with_seq: Vec<(IpAddr, Option<u64>)> = addrs.iter().map(|a| (*a, None)).collect();
        self.release_guarded(&with_seq).await
    }

    /// Release addresses, each only if its assignment still has the given
    /// sequence number (when given): an address re-assigned since the
    /// caller looked stays with its new holder.
    pub async fn release_guarded(&self, addrs: &[(IpAddr, Option<u64>)]) -> Result<Vec<IpAddr>> {
        let pools = self.pools().await?;
        let mut by_block: BTreeMap<IpNet, Vec<(IpAddr, Option<u64>)>> = BTreeMap::new();
        for (a, s) in addrs {
            // An address in no pool (any more) may still sit in a block;
            // without its pool the block size is unknown, so try the blocks
            // listing instead.
            let cidr = match pools.iter().find_map(|p| p.block_of(*a)) {
                Some(c) => c,
                None => match self.find_block(*a).await? {
                    Some(c) => c,
                    None => continue,
                },
            };
            by_block.entry(cidr).or_default().push((*a, *s));
        }
        let mut freed = Vec::new();
        for (cidr, list) in by_block {
            freed.extend(self.release_in_block(&cidr, &list).await?);
        }
        Ok(freed)
    }

    /// Release addresses of one block, with their handles' counts, in one
    /// transaction.
    async fn release_in_block(
        &self,
        cidr: &IpNet,
        list: &[(IpAddr, Option<u64>)],
    ) -> Result<Vec<IpAddr>> {
        let key = keys::block(cidr);
        retry_on_conflict(&key, || async {
            let Some((mut block, rev)) = self.read::<Block>(&key).await? else {
                return Ok(Vec::new());
            };
            let t = now();
            let before = block.clone();
            let mut handles: BTreeMap<String, i64> = BTreeMap::new();
            let mut these = Vec::new();
            for (a, s) in list {
                if let Release::Freed { handle } = block.release(*a, *s, t) {
                    *handles.entry(handle).or_insert(0) -= 1;
                    these.push(*a);
                }
            }
            if these.is_empty() {
                return Ok(these);
            }
            let mut ops = borrowed::update_ops(&before, &block, rev);
            for (h, delta) in handles {
                // A handle without a record (a torn write of an older
                // version, or corruption) has nothing to decrement.
                if let HandleSlot::Present(rec, hrev) = self.handle_slot(&h).await? {
                    ops.push(HandleSlot::Present(rec, hrev).add_op(&h, cidr, delta));
                }
            }
            self.store.commit(ops).await?;
            Ok(these)
        })
        .await
    }

    async fn find_block(&self, addr: IpAddr) -> Result<Option<IpNet>> {
        Ok(self
            .list::<Block>(keys::BLOCKS)
            .await?
            .into_iter()
            .map(|(b, _)| b.cidr)
            .find(|c| c.contains(&addr)))
    }

    /// Release every address of `handle`: its blocks and the removal of
    /// its record in one transaction. Idempotent: an unknown handle
    /// releases nothing.
    pub async fn release_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        let key = keys::handle(handle);
        retry_on_conflict(&key, || async {
            let Some((h, hrev)) = self.read::<Handle>(&key).await? else {
                return Ok(Vec::new());
            };
            let mut ops = Vec::new();
            let mut freed = Vec::new();
            let t = now();
            for cidr in h.blocks.keys() {
                let bkey = keys::block(cidr);
                let Some((mut block, rev)) = self.read::<Block>(&bkey).await? else {
                    continue;
                };
                let before = block.clone();
                let ips = block.release_handle(handle, t);
                if !ips.is_empty() {
                    freed.extend(ips);
                    ops.extend(borrowed::update_ops(&before, &block, rev));
                }
            }
            ops.push(Op::Delete {
                key: key.clone(),
                revision: hrev,
            });
            self.store.commit(ops).await?;
            Ok(freed)
        })
        .await
    }

    /// Addresses held by `handle`, from its record and the blocks.
    pub async fn addrs_of_handle(&self, handle: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .handle_blocks(handle)
            .await?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }

    /// Addresses held by `handle`, each with its block.
    pub async fn handle_blocks(&self, handle: &str) -> Result<Vec<(IpAddr, IpNet)>> {
        let Some((h, _)) = self.read::<Handle>(&keys::handle(handle)).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr in h.blocks.keys() {
            if let Some((b, _)) = self.read::<Block>(&keys::block(cidr)).await? {
                out.extend(
                    b.allocations
                        .iter()
                        .filter(|(_, a)| a.handle == handle)
                        .map(|(o, _)| (b.addr(*o), b.cidr)),
                );
            }
        }
        Ok(out)
    }

    /// Give back `node`'s empty blocks (a gateway alone leaves a block
    /// empty: it goes with the block), keeping at least one.
    /// Only blocks unchanged for `reclaim_min_age_secs` go: one emptied a
    /// moment ago is likely to be wanted again.
    pub async fn release_empty_blocks(&self, node: &str) -> Result<usize> {
        self.hints.forget_affine(node);
        let min_age = self.config().await?.reclaim_min_age_secs;
        let t = now();
        let affs = self.node_affinities(node).await?;
        let mut blocks = Vec::new();
        for (a, arev) in affs
            .iter()
            .filter(|(a, _)| a.state == AffinityState::Confirmed)
        {
            if let Some((b, brev)) = self.read::<Block>(&keys::block(&a.cidr)).await? {
                if b.affinity.as_deref() == Some(node) {
                    blocks.push((a.clone(), *arev, b, brev));
                }
            }
        }
        let mut keep = blocks.len().saturating_sub(1);
        let mut released = 0;
        // Never the node's last block: it would only claim one again.
        for (a, arev, b, brev) in blocks {
            if keep == 0 {
                break;
            }
            if !b.holds_only_gateways() || t.saturating_sub(b.changed) < min_age {
                continue;
            }
            let akey = keys::affinity(node, &a.cidr);
            let mut pd = a.clone();
            pd.state = AffinityState::PendingDeletion;
            pd.since = now();
            let pdrev = match self.store.update(&akey, encode(&pd), arev).await {
                Ok(r) => r,
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            };
            // Deleted only at the revision seen empty: an assignment that
            // raced in makes this fail and the block stays.
            let ops = self.block_delete_ops(&b, brev).await?;
            match self.store.commit(ops).await {
                Ok(_) => {
                    self.delete_if(&akey, pdrev).await?;
                    released += 1;
                    keep -= 1;
                }
                Err(e) if e.is_conflict() => {
                    self.set_affinity_state(&akey, &pd, pdrev, AffinityState::Confirmed)
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(released)
    }

    /// [`Self::release_empty_blocks`] for every node holding blocks.
    pub async fn release_all_empty_blocks(&self) -> Result<usize> {
        let nodes: BTreeSet<String> = self
            .store
            .list_keys(keys::AFFINITIES)
            .await?
            .into_iter()
            .filter_map(|(k, _)| {
                let rest = k.strip_prefix(keys::AFFINITIES)?;
                Some(rest.split_once('/')?.0.to_string())
            })
            .collect();
        let mut n = 0;
        for node in nodes {
            n += self.release_empty_blocks(&node).await?;
        }
        Ok(n)
    }

    pub(super) async fn delete_block(&self, b: &Block, rev: i64) -> Result<()> {
        if let Some(node) = &b.affinity {
            let akey = keys::affinity(node, &b.cidr);
            if let Some(kv) = self.store.get(&akey).await? {
                self.delete_if(&akey, kv.mod_revision).await?;
            }
        }
        let ops = self.block_delete_ops(b, rev).await?;
        match self.store.commit(ops).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Delete a block at `rev`, with the handle records of the gateways
    /// it holds: they go with the block, in one transaction.
    async fn block_delete_ops(&self, b: &Block, rev: i64) -> Result<Vec<Op>> {
        let mut ops = vec![Op::Delete {
            key: keys::block(&b.cidr),
            revision: rev,
        }];
        for h in b.gateway_handles() {
            let key = keys::handle(&h);
            if let Some(kv) = self.store.get(&key).await? {
                ops.push(Op::Delete {
                    key,
                    revision: kv.mod_revision,
                });
            }
        }
        Ok(ops)
    }
}
