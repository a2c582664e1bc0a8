//! Group commit: several new attachments of one node assigned from the
//! node's own blocks in a single transaction.
//!
//! A node-local service receives ADDs faster than one-at-a-time
//! assignment (three round trips each) can serve them. When the requests
//! queued at one moment all ask the same thing of the same node, one read
//! of the node's blocks and one transaction (every touched block at its
//! read revision, and a create-if-absent for every handle) serve them all.
//! Anything unusual — a handle that already exists (a repeated ADD), a
//! block changed since read, blocks without room (a claim or a borrow is
//! needed) — makes this path step aside with nothing written, and the
//! caller takes the ordinary path one request at a time.

use super::{encode, now, AssignRequest, Assigned, Ipam, Result};
use crate::gateway;
use crate::keys;
use crate::model::{Block, Family, Handle};
use crate::store::{Op, StoreError};
use ipnet::IpNet;
use std::collections::BTreeMap;

/// Most requests in one transaction: etcd refuses transactions of more
/// than 128 operations by default (`--max-txn-ops`), and a batch writes
/// one handle per request plus the blocks it touched.
pub const MAX_BATCH: usize = 64;

/// Why a batch stepped aside; for the caller's logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declined {
    /// Requests differ in node, pools, use or counts, or there are too many.
    NotUniform,
    /// The node's blocks lack room: a claim or a borrow is needed.
    NoRoom,
    /// A handle exists already, or a block changed since it was read.
    Conflict,
}

impl Ipam {
    /// Assign to every request (all for one node, with the same pools, use
    /// and counts, each with a handle not yet stored) from the node's
    /// confirmed blocks, in one transaction. All or nothing: on
    /// `Err(Declined)` or a store error nothing was written by this call —
    /// except that a store error may hide a transaction that did land, as
    /// for any write; the handles then exist and a repeated request finds
    /// them.
    pub async fn assign_new_batch(
        &self,
        reqs: &[AssignRequest],
    ) -> Result<std::result::Result<Vec<Vec<Assigned>>, Declined>> {
        let Some(first) = reqs.first() else {
            return Ok(Ok(Vec::new()));
        };
        let uniform = reqs.iter().all(|r| {
            r.node == first.node
                && r.pools == first.pools
                && r.pool_use == first.pool_use
                && r.num_v4 == first.num_v4
                && r.num_v6 == first.num_v6
                && r.gateway == first.gateway
        });
        if !uniform || reqs.len() > MAX_BATCH {
            return Ok(Err(Declined::NotUniform));
        }
        let (cfg, all_pools) = self.settings().await?;
        let mut pools = Vec::new();
        for (family, n) in [(Family::V4, first.num_v4), (Family::V6, first.num_v6)] {
            if n > 0 {
                let p = self.eligible_pools(first, family, &all_pools).await?;
                if p.is_empty() {
                    // The ordinary path reports which pool is missing.
                    return Ok(Err(Declined::NoRoom));
                }
                pools.extend(p);
            }
        }
        let mine: Vec<IpNet> = self
            .confirmed_blocks(&first.node)
            .await?
            .into_iter()
            .filter(|c| pools.iter().any(|p| p.cidr.contains(c)))
            .collect();
        // Blocks this process holds a copy of cost no round trip; the rest
        // are read together.
        let known = self.hints.blocks(&mine);
        let missing: Vec<String> = mine
            .iter()
            .zip(&known)
            .filter(|(_, k)| matches!(k, Cached::Unknown))
            .map(|(c, _)| keys::block(c))
            .collect();
        let mut fetched = if missing.is_empty() {
            Vec::new()
        } else {
            let fetched = self.store.get_many(&missing).await;
            fetched.inspect_err(|_| self.hints.forget_blocks())?
        }
        .into_iter();
        let mut usable = Vec::with_capacity(known.len());
        for k in known {
            match k {
                Cached::Copy(b, rev) => usable.push((b, rev)),
                Cached::Full => {}
                Cached::Unknown => {
                    if let Some(kv) = fetched.next().flatten() {
                        usable.push((super::decode(&kv.key, &kv.value)?, kv.mod_revision));
                    }
                }
            }
        }
        // Blocks still affine to the node, with their revisions.
        let mut blocks: Vec<(Block, i64, bool)> = usable
            .into_iter()
            .filter(|(b, _)| b.affinity.as_deref() == Some(first.node.as_str()))
            .map(|(b, rev)| (b, rev, false))
            .collect();
        let t = now();
        let mut results = Vec::with_capacity(reqs.len());
        let mut ops = Vec::new();
        // Gateways first, in the same transaction: a block without one gets
        // it here, and a racing reservation makes the create conflict.
        let mut gateways: BTreeMap<IpNet, std::net::IpAddr> = BTreeMap::new();
        for (block, _, touched) in blocks.iter_mut().filter(|_| first.gateway) {
            let h = gateway::handle(&first.node, &block.cidr);
            if let Some(gw) = block.held_by(&h) {
                gateways.insert(block.cidr, gw);
            } else if let Some(gw) =
                block.reserve_gateway(&h, &first.node, t, cfg.reuse_cooldown_secs)
            {
                *touched = true;
                gateways.insert(block.cidr, gw);
                let mut counts = BTreeMap::new();
                counts.insert(block.cidr, 1);
                ops.push(Op::Create {
                    key: keys::handle(&h),
                    value: encode(&Handle {
                        handle: h,
                        blocks: counts,
                        updated: t,
                    }),
                });
            }
        }
        for req in reqs {
            let mut got: Vec<Assigned> = Vec::new();
            let mut counts: BTreeMap<IpNet, u32> = BTreeMap::new();
            for (family, n) in [(Family::V4, req.num_v4), (Family::V6, req.num_v6)] {
                let mut need = n;
                for (block, _, touched) in
                    blocks.iter_mut().filter(|(b, _, _)| b.family() == family)
                {
                    if need == 0 {
                        break;
                    }
                    let ips =
                        block.assign(need, &req.handle, &req.attrs, t, cfg.reuse_cooldown_secs);
                    if ips.is_empty() {
                        continue;
                    }
                    *touched = true;
                    need -= ips.len() as u32;
                    *counts.entry(block.cidr).or_default() += ips.len() as u32;
                    got.extend(ips.into_iter().map(|addr| Assigned {
                        addr,
                        block: block.cidr,
                        pool: block.pool.clone(),
                        borrowed: false,
                        gateway: gateways.get(&block.cidr).copied(),
                    }));
                }
                if need > 0 {
                    // Perhaps only the copies are out of room: the ordinary
                    // path reads afresh. Copies of full blocks stay (see
                    // `forget_block_copies_with_room`), so the batch after
                    // a claim reads the new block, not every block again.
                    self.hints.forget_blocks_with_room();
                    return Ok(Err(Declined::NoRoom));
                }
            }
            // The handle record goes in the same transaction as the blocks:
            // create-if-absent, so a repeated ADD conflicts instead of
            // gaining a second address.
            ops.push(Op::Create {
                key: keys::handle(&req.handle),
                value: encode(&Handle {
                    handle: req.handle.clone(),
                    blocks: counts,
                    updated: t,
                }),
            });
            results.push(got);
        }
        for (block, revision, touched) in &blocks {
            if *touched {
                ops.push(Op::Update {
                    key: keys::block(&block.cidr),
                    value: encode(block),
                    revision: *revision,
                });
            }
        }
        match self.store.commit(ops).await {
            Ok(rev) => {
                // Every write of the transaction landed at `rev`.
                self.hints
                    .keep_blocks(blocks.into_iter().map(|(b, r, touched)| {
                        let r = if touched { rev } else { r };
                        (b, r)
                    }));
                Ok(Ok(results))
            }
            Err(StoreError::Conflict { key }) => {
                self.hints.forget_blocks();
                if key.starts_with(keys::BLOCKS) {
                    self.hints.forget_affine(&first.node);
                }
                Ok(Err(Declined::Conflict))
            }
            Err(e) => {
                self.hints.forget_blocks();
                Err(e.into())
            }
        }
    }

    /// Drop this process's copies of blocks. Not needed for safety (every
    /// write is conditioned on the copy's revision) but it saves the
    /// conflict after this process changed blocks another way.
    pub fn forget_block_copies(&self) {
        self.hints.forget_blocks();
    }

    /// Drop the copies of blocks that have a free address, before ADDs go
    /// the ordinary way: those never write a block without one (nothing
    /// to assign, no room for a gateway), so the copies of full blocks
    /// stay true to this process's writes. Anything else (DEL, GC, a
    /// conflict) drops every copy. A full block freed by another process
    /// meanwhile only stays out of group commits until then; the ordinary
    /// path reads blocks afresh and finds its room.
    pub fn forget_block_copies_with_room(&self) {
        self.hints.forget_blocks_with_room();
    }
}

/// A node's block as this process knows it.
enum Cached {
    /// No copy: read it.
    Unknown,
    /// The copy has no free address, so it can neither give one nor take
    /// a gateway: left out, uncopied. Copying every allocation of every
    /// full block was most of a batch's CPU on a node with many blocks.
    Full,
    Copy(Block, i64),
}

impl super::Hints {
    fn blocks(&self, cidrs: &[IpNet]) -> Vec<Cached> {
        let g = self.lock();
        cidrs
            .iter()
            .map(|c| match g.blocks.get(c) {
                None => Cached::Unknown,
                Some((b, _)) if b.free.is_empty() => Cached::Full,
                Some((b, rev)) => Cached::Copy(b.clone(), *rev),
            })
            .collect()
    }
    fn keep_blocks(&self, blocks: impl Iterator<Item = (Block, i64)>) {
        let mut g = self.lock();
        for (b, rev) in blocks {
            g.blocks.insert(b.cidr, (b, rev));
        }
    }
    fn forget_blocks(&self) {
        self.lock().blocks.clear();
    }
    fn forget_blocks_with_room(&self) {
        self.lock().blocks.retain(|_, (b, _)| b.free.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Encapsulation, Pool, PoolUse};
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    fn pool(name: &str, cidr: &str, bs: u8) -> Pool {
        Pool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size: bs,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: vec![PoolUse::Workload],
            encapsulation: Encapsulation::None,
        }
    }

    fn reqs(n: usize, v6: u32) -> Vec<AssignRequest> {
        (0..n)
            .map(|i| AssignRequest::new(&format!("net.c{i}.eth0"), "n1", 1, v6))
            .collect()
    }

    #[tokio::test]
    async fn a_batch_lands_in_one_transaction_and_check_is_clean() {
        let ipam = Ipam::new(Arc::new(MemoryStore::new()));
        ipam.add_pool(&pool("v4", "10.9.0.0/24", 28)).await.unwrap();
        ipam.add_pool(&pool("v6", "fd09::/120", 124)).await.unwrap();
        // No block yet: the batch needs a claim, so it steps aside.
        assert_eq!(
            ipam.assign_new_batch(&reqs(3, 1)).await.unwrap(),
            Err(Declined::NoRoom)
        );
        // The ordinary path claims one block per family.
        ipam.assign(&AssignRequest::new("net.first.eth0", "n1", 1, 1))
            .await
            .unwrap();
        let out = ipam.assign_new_batch(&reqs(5, 1)).await.unwrap().unwrap();
        assert_eq!(out.len(), 5);
        let mut all: Vec<_> = out.iter().flatten().map(|a| a.addr).collect();
        assert!(out.iter().all(|g| g.len() == 2 && !g[0].borrowed));
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 10, "distinct addresses");
        for (i, g) in out.iter().enumerate() {
            let mut have = ipam
                .addrs_of_handle(&format!("net.c{i}.eth0"))
                .await
                .unwrap();
            have.sort();
            let mut want: Vec<_> = g.iter().map(|a| a.addr).collect();
            want.sort();
            assert_eq!(have, want);
        }
        // The next batch writes over the copies kept from this one: no
        // read, and no conflict, as nothing else changed the blocks.
        let more: Vec<_> = (0..3)
            .map(|i| AssignRequest::new(&format!("net.d{i}.eth0"), "n1", 1, 1))
            .collect();
        assert_eq!(
            ipam.assign_new_batch(&more).await.unwrap().unwrap().len(),
            3
        );
        let r = ipam.check().await.unwrap();
        assert!(r.clean, "{}", r.human());
        assert_eq!(r.addresses_in_use, 18);
    }

    #[tokio::test]
    async fn an_existing_handle_or_a_full_block_writes_nothing() {
        let ipam = Ipam::new(Arc::new(MemoryStore::new()));
        ipam.add_pool(&pool("v4", "10.9.0.0/28", 28)).await.unwrap();
        ipam.assign(&AssignRequest::new("net.c1.eth0", "n1", 1, 0))
            .await
            .unwrap();
        // c1 exists: a repeated ADD must not gain a second address.
        assert_eq!(
            ipam.assign_new_batch(&reqs(3, 0)).await.unwrap(),
            Err(Declined::Conflict)
        );
        assert_eq!(ipam.check().await.unwrap().addresses_in_use, 1);
        // 16 addresses, some taken: 16 more do not fit.
        let many: Vec<_> = (0..16)
            .map(|i| AssignRequest::new(&format!("net.m{i}.eth0"), "n1", 1, 0))
            .collect();
        assert_eq!(
            ipam.assign_new_batch(&many).await.unwrap(),
            Err(Declined::NoRoom)
        );
        assert_eq!(ipam.check().await.unwrap().addresses_in_use, 1);
        // A copy kept from the last batch, then a change elsewhere: the
        // next batch conflicts, writes nothing, and the one after reads
        // afresh.
        let ipam2 = Ipam::new(ipam.store().clone());
        let one = |h: &str| vec![AssignRequest::new(h, "n1", 1, 0)];
        ipam.assign_new_batch(&one("net.x1.eth0"))
            .await
            .unwrap()
            .unwrap();
        ipam2.assign(&one("net.x2.eth0")[0]).await.unwrap();
        assert_eq!(
            ipam.assign_new_batch(&one("net.x3.eth0")).await.unwrap(),
            Err(Declined::Conflict)
        );
        ipam.assign_new_batch(&one("net.x3.eth0"))
            .await
            .unwrap()
            .unwrap();
        let r = ipam.check().await.unwrap();
        assert!(r.clean, "{}", r.human());
        assert_eq!(r.addresses_in_use, 4);
        // Mixed requests are not batched.
        let mut mixed = reqs(2, 0);
        mixed[1].node = "n2".into();
        assert_eq!(
            ipam.assign_new_batch(&mixed).await.unwrap(),
            Err(Declined::NotUniform)
        );
    }

    async fn revision(ipam: &Ipam, block: &IpNet) -> i64 {
        let kv = ipam.store().get(&keys::block(block)).await.unwrap();
        kv.unwrap().mod_revision
    }

    #[tokio::test]
    async fn full_blocks_are_left_out_and_not_written() {
        let ipam = Ipam::new(Arc::new(MemoryStore::new()));
        ipam.add_pool(&pool("v4", "10.9.0.0/24", 28)).await.unwrap();
        ipam.assign(&AssignRequest::new("net.first.eth0", "n1", 1, 0))
            .await
            .unwrap();
        // The rest of the first block, kept as a copy with nothing free.
        let fill: Vec<_> = (0..15)
            .map(|i| AssignRequest::new(&format!("net.f{i}.eth0"), "n1", 1, 0))
            .collect();
        ipam.assign_new_batch(&fill).await.unwrap().unwrap();
        assert_eq!(
            ipam.assign_new_batch(&reqs(1, 0)).await.unwrap(),
            Err(Declined::NoRoom),
            "only a full block"
        );
        // The ordinary path claims the next block; the full block's copy
        // is kept through both, so the next batch reads only the new one.
        ipam.forget_block_copies_with_room();
        ipam.assign(&AssignRequest::new("net.second.eth0", "n1", 1, 0))
            .await
            .unwrap();
        let copies = |ipam: &Ipam| ipam.hints.lock().blocks.len();
        assert_eq!(copies(&ipam), 1, "the full block's copy");
        let blocks = ipam.node_affinities("n1").await.unwrap();
        assert_eq!(blocks.len(), 2);
        let first = blocks
            .iter()
            .map(|(a, _)| a.cidr)
            .find(|c| c.contains(&"10.9.0.1".parse::<std::net::IpAddr>().unwrap()))
            .unwrap();
        let before = revision(&ipam, &first).await;
        // Twice: the second batch has a kept copy of each block.
        for round in 0..2 {
            let more: Vec<_> = (0..3)
                .map(|i| AssignRequest::new(&format!("net.r{round}x{i}.eth0"), "n1", 1, 0))
                .collect();
            let out = ipam.assign_new_batch(&more).await.unwrap().unwrap();
            assert!(out.iter().flatten().all(|a| !first.contains(&a.addr)));
        }
        assert_eq!(
            revision(&ipam, &first).await,
            before,
            "the full block is not rewritten"
        );
        assert_eq!(copies(&ipam), 2);
        // A DEL (any write outside group commits) drops every copy.
        ipam.release_handle("net.f3.eth0").await.unwrap();
        ipam.forget_block_copies();
        assert_eq!(copies(&ipam), 0);
        let out = ipam.assign_new_batch(&reqs(1, 0)).await.unwrap().unwrap();
        assert!(first.contains(&out[0][0].addr), "the freed address again");
        let r = ipam.check().await.unwrap();
        assert!(r.clean, "{}", r.human());
        assert_eq!(r.addresses_in_use, 16 + 1 + 6);
    }

    #[tokio::test]
    async fn kept_copies_of_full_blocks_stay_out_of_the_way_when_stale() {
        // Another process frees an address in a block this one keeps as
        // full: batches go on without it, the ordinary path finds it.
        let ipam = Ipam::new(Arc::new(MemoryStore::new()));
        ipam.add_pool(&pool("v4", "10.9.0.0/28", 28)).await.unwrap();
        ipam.assign(&AssignRequest::new("net.first.eth0", "n1", 1, 0))
            .await
            .unwrap();
        let fill: Vec<_> = (0..15)
            .map(|i| AssignRequest::new(&format!("net.f{i}.eth0"), "n1", 1, 0))
            .collect();
        ipam.assign_new_batch(&fill).await.unwrap().unwrap();
        let other = Ipam::new(ipam.store().clone());
        other.release_handle("net.f7.eth0").await.unwrap();
        assert_eq!(
            ipam.assign_new_batch(&reqs(1, 0)).await.unwrap(),
            Err(Declined::NoRoom)
        );
        ipam.forget_block_copies_with_room();
        let got = ipam
            .assign(&AssignRequest::new("net.c0.eth0", "n1", 1, 0))
            .await
            .unwrap();
        assert_eq!(
            got.len(),
            1,
            "the pool has only this block: its freed address"
        );
        let r = ipam.check().await.unwrap();
        assert!(r.clean, "{}", r.human());
        assert_eq!(r.addresses_in_use, 16);
    }
}
