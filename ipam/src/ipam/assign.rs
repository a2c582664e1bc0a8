//! Assignment: an attachment's addresses from the node's own blocks, then
//! from blocks it claims while allowed, then (unless strict affinity or a
//! gateway forbids it) borrowed from other nodes' blocks. The block and
//! the handle record change in one transaction.

use super::claims::{Claim, CLAIM_ROUNDS};
use super::{decode, encode, now, Ipam, IpamError, Result, CAS_ATTEMPTS};
use crate::borrowed;
use crate::claim;
use crate::gateway;
use crate::keys;
use crate::model::{AffinityState, Attributes, Block, Family, Handle, IpamConfig, Pool, PoolUse};
use crate::store::{Op, StoreError};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct AssignRequest {
    pub handle: String,
    pub node: String,
    pub attrs: Attributes,
    pub num_v4: u32,
    pub num_v6: u32,
    /// Restrict to these pools (names or CIDRs); empty means any.
    pub pools: Vec<String>,
    pub pool_use: PoolUse,
    /// Reserve a gateway in each of the node's blocks the addresses come
    /// from ([`crate::gateway`]), and borrow from no other node's block:
    /// a gateway on the bridge must be on the pod's subnet.
    pub gateway: bool,
}

impl AssignRequest {
    pub fn new(handle: &str, node: &str, num_v4: u32, num_v6: u32) -> Self {
        AssignRequest {
            handle: handle.to_string(),
            node: node.to_string(),
            attrs: Attributes {
                node: Some(node.to_string()),
                ..Default::default()
            },
            num_v4,
            num_v6,
            pools: Vec::new(),
            pool_use: PoolUse::Workload,
            gateway: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assigned {
    pub addr: IpAddr,
    /// The block it came from.
    pub block: IpNet,
    pub pool: String,
    /// From another node's block (or an unaffine one): the daemon
    /// advertises it as a host route.
    pub borrowed: bool,
    /// The block's gateway for the node, when the request asked for one.
    pub gateway: Option<IpAddr>,
}

/// What one block gave an assignment.
struct Took {
    addrs: Vec<IpAddr>,
    /// The block's affinity at the time.
    affinity: Option<String>,
    gateway: Option<IpAddr>,
}

/// What an assignment knows of its handle's record: it guesses "absent"
/// (a new pod) until a conflict says otherwise.
pub(super) enum HandleSlot {
    Unknown,
    Absent,
    Present(Handle, i64),
}

impl HandleSlot {
    /// The op that adds `delta` to the count for `block`.
    pub(super) fn add_op(&self, handle: &str, block: &IpNet, delta: i64) -> Op {
        let key = keys::handle(handle);
        let (mut h, rev) = match self {
            HandleSlot::Present(h, rev) => (h.clone(), Some(*rev)),
            _ => (
                Handle {
                    handle: handle.into(),
                    ..Default::default()
                },
                None,
            ),
        };
        let n = h.blocks.get(block).copied().unwrap_or(0) as i64 + delta;
        if n > 0 {
            h.blocks.insert(*block, n as u32);
        } else {
            h.blocks.remove(block);
        }
        h.updated = now();
        match rev {
            None => Op::Create {
                key,
                value: encode(&h),
            },
            Some(revision) if h.blocks.is_empty() => Op::Delete { key, revision },
            Some(revision) => Op::Update {
                key,
                value: encode(&h),
                revision,
            },
        }
    }
}

impl Ipam {
    /// Assign `num_v4` + `num_v6` addresses to the request's handle. All or
    /// nothing: on failure what this call took is released again.
    pub async fn assign(&self, req: &AssignRequest) -> Result<Vec<Assigned>> {
        let (cfg, all_pools) = self.settings().await?;
        let mut out: Vec<Assigned> = Vec::new();
        for (family, n) in [(Family::V4, req.num_v4), (Family::V6, req.num_v6)] {
            if n == 0 {
                continue;
            }
            let result = async {
                let pools = self.eligible_pools(req, family, &all_pools).await?;
                if pools.is_empty() {
                    return Err(IpamError::NoPool {
                        family,
                        node: req.node.clone(),
                        pools: req.pools.clone(),
                    });
                }
                self.assign_family(req, &cfg, &pools, n, &mut out).await?;
                let got = out.iter().filter(|a| Family::of(&a.addr) == family).count() as u32;
                if got < n {
                    return Err(IpamError::Exhausted {
                        family,
                        wanted: n,
                        got,
                        node: req.node.clone(),
                        strict: cfg.strict_affinity || req.gateway,
                    });
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                if !out.is_empty() {
                    let addrs: Vec<IpAddr> = out.iter().map(|a| a.addr).collect();
                    if let Err(undo) = self.release_addrs(&addrs).await {
                        tracing::warn!(error = %undo, "could not undo a partial assignment; gc will");
                    }
                }
                return Err(e);
            }
        }
        Ok(out)
    }

    async fn assign_family(
        &self,
        req: &AssignRequest,
        cfg: &IpamConfig,
        pools: &[Pool],
        n: u32,
        out: &mut Vec<Assigned>,
    ) -> Result<()> {
        let family = pools[0].family();
        let need = |out: &Vec<Assigned>| {
            n - (out.iter().filter(|a| Family::of(&a.addr) == family).count() as u32).min(n)
        };
        // The blocks listing is the expensive read: fetched at most once per
        // call, by the claim or the borrow, whichever needs it first.
        let mut listing: Option<BTreeMap<IpNet, (Block, i64)>> = None;
        let mut lost = 0;
        // 1. The node's own blocks, then claim more while allowed.
        loop {
            let affs = self.confirmed_blocks(&req.node).await?;
            // All the node's blocks in one round trip; only those with room
            // are tried, so full blocks cost nothing.
            let mine: Vec<&IpNet> = affs
                .iter()
                .filter(|c| pools.iter().any(|p| p.cidr.contains(*c)))
                .collect();
            let fetched = self
                .store
                .get_many(&mine.iter().map(|c| keys::block(c)).collect::<Vec<_>>())
                .await?;
            let t = now();
            for (cidr, kv) in mine.into_iter().zip(fetched) {
                if need(out) == 0 {
                    return Ok(());
                }
                let Some(pool) = pools.iter().find(|p| p.cidr.contains(cidr)) else {
                    continue;
                };
                let Some(kv) = kv else {
                    self.hints.forget_affine(&req.node);
                    continue;
                };
                let block: Block = decode(&kv.key, &kv.value)?;
                if block.available(t, cfg.reuse_cooldown_secs) == 0 {
                    continue;
                }
                let got = self
                    .assign_from_block_at(
                        cidr,
                        Some((block, kv.mod_revision)),
                        need(out),
                        req,
                        cfg,
                        Some(&req.node),
                    )
                    .await?;
                out.extend(got.addrs.into_iter().map(|addr| Assigned {
                    addr,
                    block: *cidr,
                    pool: pool.name.clone(),
                    borrowed: false,
                    gateway: got.gateway,
                }));
            }
            if need(out) == 0
                || !cfg.auto_allocate_blocks
                || self.hints.claim_paused(&req.node, family)
            {
                break;
            }
            listing = None;
            self.hints.forget_affine(&req.node);
            match self
                .claim_block_with(&req.node, pools, cfg, &mut listing)
                .await?
            {
                Claim::Claimed(_) => continue,
                // Other nodes won the blocks we tried: the pool may still
                // have room, look again.
                Claim::Lost if lost < CLAIM_ROUNDS => {
                    lost += 1;
                    continue;
                }
                Claim::Lost | Claim::AtLimit => break,
                Claim::Full => {
                    // Nothing claimable: do not list every block again on
                    // each assignment for a while; borrow instead.
                    if !cfg.strict_affinity {
                        self.hints.pause_claims(&req.node, family);
                    }
                    break;
                }
            }
        }
        if need(out) == 0 || cfg.strict_affinity || req.gateway {
            return Ok(());
        }
        // 2. Borrow. First from the block this node last borrowed from.
        if let Some(cidr) = self.hints.borrow_from(&req.node, family) {
            if let Some(pool) = pools.iter().find(|p| p.cidr.contains(&cidr)) {
                let got = self
                    .assign_from_block(&cidr, need(out), req, cfg, None)
                    .await?;
                let borrowed = got.affinity.as_deref() != Some(req.node.as_str());
                out.extend(got.addrs.into_iter().map(|addr| Assigned {
                    addr,
                    block: cidr,
                    pool: pool.name.clone(),
                    borrowed,
                    gateway: got.gateway,
                }));
            }
        }
        if need(out) == 0 {
            return Ok(());
        }
        // Then any block with room, starting at a point derived from the
        // node name so borrowers spread over the blocks. The claim's listing
        // may be stale (blocks made since by other nodes): if it yields
        // nothing, list afresh once.
        for fresh in [listing.take(), None] {
            if need(out) == 0 {
                break;
            }
            let blocks = match fresh {
                Some(l) => l,
                None => self.block_map().await?,
            };
            self.borrow_from_listing(req, cfg, pools, &blocks, need(out), out)
                .await?;
        }
        Ok(())
    }

    async fn borrow_from_listing(
        &self,
        req: &AssignRequest,
        cfg: &IpamConfig,
        pools: &[Pool],
        blocks: &BTreeMap<IpNet, (Block, i64)>,
        mut need: u32,
        out: &mut Vec<Assigned>,
    ) -> Result<()> {
        let now = now();
        let mut candidates: Vec<(u32, &Block)> = blocks
            .values()
            .map(|(b, _)| b)
            .filter(|b| {
                pools
                    .iter()
                    .any(|p| p.name == b.pool && p.cidr.contains(&b.cidr))
            })
            .filter(|b| b.affinity.as_deref() != Some(req.node.as_str()))
            .map(|b| (b.available(now, cfg.reuse_cooldown_secs), b))
            .filter(|(room, _)| *room > 0)
            .collect();
        // Emptiest blocks first, so borrowers spread instead of piling onto
        // the same few; among the emptiest few, a start derived from the
        // node name, so borrowers at the same moment pick different ones.
        candidates.sort_by_key(|(room, _)| std::cmp::Reverse(*room));
        let candidates: Vec<&Block> = candidates.into_iter().map(|(_, b)| b).collect();
        let spread = candidates.len().min(8);
        let start = if spread == 0 {
            0
        } else {
            (claim::node_hash(&req.node) % spread as u64) as usize
        };
        for i in 0..candidates.len() {
            if need == 0 {
                break;
            }
            let b = candidates[(start + i) % candidates.len()];
            let got = self
                .assign_from_block(&b.cidr, need, req, cfg, None)
                .await?;
            if !got.addrs.is_empty() {
                self.hints.set_borrow_from(&req.node, b.family(), b.cidr);
            }
            need -= (got.addrs.len() as u32).min(need);
            let borrowed = got.affinity.as_deref() != Some(req.node.as_str());
            out.extend(got.addrs.into_iter().map(|addr| Assigned {
                addr,
                block: b.cidr,
                pool: b.pool.clone(),
                borrowed,
                gateway: got.gateway,
            }));
        }
        Ok(())
    }

    /// The node's confirmed blocks, from this process's copy when it is
    /// younger than [`super::CACHE_TTL`].
    pub(super) async fn confirmed_blocks(&self, node: &str) -> Result<Vec<IpNet>> {
        if let Some(a) = self.hints.affine(node) {
            return Ok(a);
        }
        let a: Vec<IpNet> = self
            .node_affinities(node)
            .await?
            .into_iter()
            .filter(|(a, _)| a.state == AffinityState::Confirmed)
            .map(|(a, _)| a.cidr)
            .collect();
        self.hints.set_affine(node, &a);
        Ok(a)
    }

    pub(super) async fn block_map(&self) -> Result<BTreeMap<IpNet, (Block, i64)>> {
        Ok(self
            .list::<Block>(keys::BLOCKS)
            .await?
            .into_iter()
            .map(|(b, r)| (b.cidr, (b, r)))
            .collect())
    }

    /// Take up to `n` addresses from one block; with `affine_to`, only if
    /// the block is still affine to that node. The block and the handle
    /// record change in one transaction, and so does the node's gateway
    /// reservation when the request wants one and the block has none yet.
    async fn assign_from_block(
        &self,
        cidr: &IpNet,
        n: u32,
        req: &AssignRequest,
        cfg: &IpamConfig,
        affine_to: Option<&str>,
    ) -> Result<Took> {
        self.assign_from_block_at(cidr, None, n, req, cfg, affine_to)
            .await
    }

    /// [`Self::assign_from_block`], starting from a block already read.
    async fn assign_from_block_at(
        &self,
        cidr: &IpNet,
        mut prefetched: Option<(Block, i64)>,
        n: u32,
        req: &AssignRequest,
        cfg: &IpamConfig,
        affine_to: Option<&str>,
    ) -> Result<Took> {
        let key = keys::block(cidr);
        let nothing = Took {
            addrs: Vec::new(),
            affinity: None,
            gateway: None,
        };
        let mut handle = HandleSlot::Unknown;
        let gw_handle = gateway::handle(&req.node, cidr);
        let gw_key = keys::handle(&gw_handle);
        let mut gw_slot = HandleSlot::Unknown;
        for _ in 0..CAS_ATTEMPTS {
            let current = match prefetched.take() {
                Some(b) => Some(b),
                None => self.read::<Block>(&key).await?,
            };
            let Some((mut block, rev)) = current else {
                self.hints.forget_affine(&req.node);
                return Ok(nothing);
            };
            if affine_to.is_some() && block.affinity.as_deref() != affine_to {
                self.hints.forget_affine(&req.node);
                return Ok(nothing);
            }
            let t = now();
            let mut gw = None;
            let mut gw_new = false;
            if req.gateway && block.affinity.as_deref() == Some(req.node.as_str()) {
                gw = block.held_by(&gw_handle);
                if gw.is_none() {
                    // Reserved before the pods take theirs, so it gets the
                    // address the bridge would pick; no room for it means
                    // no room.
                    gw = block.reserve_gateway(&gw_handle, &req.node, t, cfg.reuse_cooldown_secs);
                    if gw.is_none() {
                        return Ok(nothing);
                    }
                    gw_new = true;
                }
            }
            let before = block.clone();
            let ips = block.assign(n, &req.handle, &req.attrs, t, cfg.reuse_cooldown_secs);
            if ips.is_empty() {
                return Ok(nothing);
            }
            let mut ops = borrowed::update_ops(&before, &block, rev);
            ops.push(handle.add_op(&req.handle, cidr, ips.len() as i64));
            if gw_new {
                ops.push(gw_slot.add_op(&gw_handle, cidr, 1));
            }
            match self.store.commit(ops).await {
                Ok(_) => {
                    return Ok(Took {
                        addrs: ips,
                        affinity: block.affinity,
                        gateway: gw,
                    })
                }
                Err(StoreError::Conflict { key: k }) => {
                    if k == gw_key {
                        gw_slot = self.handle_slot(&gw_handle).await?;
                    } else if k != key {
                        handle = self.handle_slot(&req.handle).await?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
    }

    pub(super) async fn handle_slot(&self, handle: &str) -> Result<HandleSlot> {
        Ok(match self.read::<Handle>(&keys::handle(handle)).await? {
            Some((h, rev)) => HandleSlot::Present(h, rev),
            None => HandleSlot::Absent,
        })
    }

    /// Assign one specific address to the request's handle.
    pub async fn assign_addr(&self, req: &AssignRequest, addr: IpAddr) -> Result<Assigned> {
        let pool = self
            .pools()
            .await?
            .into_iter()
            .find(|p| p.cidr.contains(&addr))
            .ok_or(IpamError::NotInPool(addr))?;
        let cidr = pool.block_of(addr).ok_or(IpamError::NotInPool(addr))?;
        let key = keys::block(&cidr);
        let mut handle = HandleSlot::Unknown;
        for _ in 0..CAS_ATTEMPTS {
            let (mut block, rev) = match self.read::<Block>(&key).await? {
                Some(b) => b,
                None => {
                    // An address in a block nobody claimed: create the block
                    // unaffine, so any node may claim it later.
                    let b = Block::new(cidr, &pool.name, None, now());
                    match self.store.create(&key, encode(&b)).await {
                        Ok(_) | Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if let Some(a) = block.ord(addr).and_then(|o| block.allocations.get(&o)) {
                return Err(IpamError::AddressInUse {
                    addr,
                    handle: a.handle.clone(),
                });
            }
            let before = block.clone();
            if !block.assign_addr(addr, &req.handle, &req.attrs, now()) {
                return Err(IpamError::Corrupt {
                    key,
                    detail: format!("{addr} is neither assigned nor free; run `petrelctl ipam gc`"),
                });
            }
            let mut ops = borrowed::update_ops(&before, &block, rev);
            ops.push(handle.add_op(&req.handle, &cidr, 1));
            match self.store.commit(ops).await {
                Ok(_) => {
                    return Ok(Assigned {
                        addr,
                        block: cidr,
                        pool: pool.name.clone(),
                        borrowed: block.affinity.as_deref() != Some(req.node.as_str()),
                        gateway: None,
                    })
                }
                Err(StoreError::Conflict { key: k }) => {
                    if k != key {
                        handle = self.handle_slot(&req.handle).await?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
    }

    /// Add `delta` to the handle's count for `block`; the record goes away
    /// when it counts nothing. Only for tests that fake a torn write: the
    /// allocator changes handles together with their blocks.
    #[cfg(test)]
    pub(super) async fn handle_add(&self, handle: &str, block: &IpNet, delta: i64) -> Result<()> {
        if delta == 0 {
            return Ok(());
        }
        let key = keys::handle(handle);
        if delta > 0 {
            // Usually a new handle (a new pod): try the create first and
            // save a read.
            let mut h = Handle {
                handle: handle.into(),
                updated: now(),
                ..Default::default()
            };
            h.blocks.insert(*block, delta as u32);
            match self.store.create(&key, encode(&h)).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        super::retry_on_conflict(&key, || async {
            let current = self.read::<Handle>(&key).await?;
            let (mut h, rev) = match current {
                Some((h, rev)) => (h, Some(rev)),
                None => (
                    Handle {
                        handle: handle.into(),
                        ..Default::default()
                    },
                    None,
                ),
            };
            let n = h.blocks.get(block).copied().unwrap_or(0) as i64 + delta;
            if n > 0 {
                h.blocks.insert(*block, n as u32);
            } else {
                h.blocks.remove(block);
            }
            h.updated = now();
            match (rev, h.blocks.is_empty()) {
                (None, true) => {}
                (None, false) => {
                    self.store.create(&key, encode(&h)).await?;
                }
                (Some(rev), true) => self.store.delete(&key, rev).await?,
                (Some(rev), false) => {
                    self.store.update(&key, encode(&h), rev).await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// The gateway `node` holds in block `cidr`, reserved now if it holds
    /// none: for a repeated ADD of an attachment made before its network
    /// asked for gateways. Idempotent and race-safe (one compare-and-swap
    /// over the block and the gateway's handle record). `None` when the
    /// block is gone, not the node's, or full.
    pub async fn ensure_gateway(&self, node: &str, cidr: &IpNet) -> Result<Option<IpAddr>> {
        let key = keys::block(cidr);
        let gw_handle = gateway::handle(node, cidr);
        let cooldown = self.settings().await?.0.reuse_cooldown_secs;
        let mut slot = HandleSlot::Unknown;
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut block, rev)) = self.read::<Block>(&key).await? else {
                return Ok(None);
            };
            if block.affinity.as_deref() != Some(node) {
                return Ok(None);
            }
            if let Some(gw) = block.held_by(&gw_handle) {
                return Ok(Some(gw));
            }
            let Some(gw) = block.reserve_gateway(&gw_handle, node, now(), cooldown) else {
                return Ok(None);
            };
            let ops = vec![
                Op::Update {
                    key: key.clone(),
                    value: encode(&block),
                    revision: rev,
                },
                slot.add_op(&gw_handle, cidr, 1),
            ];
            match self.store.commit(ops).await {
                Ok(_) => return Ok(Some(gw)),
                Err(StoreError::Conflict { key: k }) => {
                    if k != key {
                        slot = self.handle_slot(&gw_handle).await?;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
    }
}
