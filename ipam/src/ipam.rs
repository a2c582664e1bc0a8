//! The allocator driver: reads records, applies the pure operations of
//! [`crate::block`] and [`crate::claim`], and writes back with
//! compare-and-swap, retrying when another node won a race.
//!
//! Write order is chosen so that a client dying between two writes leaves
//! something `check` reports and `gc` (or the next claim) repairs, never a
//! double allocation: the handle record is raised before a block assigns
//! (so release by handle still finds the block), a block is created only
//! under a pending affinity, and a block is deleted only under a
//! pending-deletion affinity and only at the revision seen empty.

use crate::block::Release;
use crate::borrowed;
use crate::check::{self, Report, Snapshot};
use crate::claim;
use crate::gateway;
use crate::keys;
use crate::model::{
    Affinity, AffinityState, Attributes, Block, Family, Handle, IpamConfig, Node, Pool, PoolUse,
};
use crate::selector::{Selector, SelectorError};
use crate::store::{Op, Store, StoreError};
use ipnet::IpNet;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Attempts at one compare-and-swap before giving up; each lost race means
/// another writer made progress, so this bounds only pathological storms.
const CAS_ATTEMPTS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: stored record cannot be decoded ({detail}); run `petrelctl ipam check`")]
    Corrupt { key: String, detail: String },
    #[error("no enabled {family:?} pool for node {node}{}; add one with `petrelctl pool add`", if .pools.is_empty() { String::new() } else { format!(" among {:?}", .pools) })]
    NoPool {
        family: Family,
        node: String,
        pools: Vec<String>,
    },
    #[error("only {got} of {wanted} {family:?} address(es) available to node {node}: pools are full{}; add a pool, release addresses or raise max blocks per host", if *.strict { " (strict affinity, or a gateway per block, forbids borrowing)" } else { "" })]
    Exhausted {
        family: Family,
        wanted: u32,
        got: u32,
        node: String,
        strict: bool,
    },
    #[error("invalid pool: {0}")]
    InvalidPool(String),
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error("pool {0} already exists")]
    PoolExists(String),
    #[error("no pool named {0}; `petrelctl pool list` shows them")]
    NoSuchPool(String),
    #[error("pool {name} still holds {in_use} assigned address(es); release them or disable the pool instead")]
    PoolInUse { name: String, in_use: u32 },
    #[error("{0} is in no pool")]
    NotInPool(IpAddr),
    #[error("{addr} is already assigned (to {handle})")]
    AddressInUse { addr: IpAddr, handle: String },
    #[error("gave up on {key} after {CAS_ATTEMPTS} lost races; the datastore is under unusual contention, retry")]
    Contention { key: String },
}

pub type Result<T, E = IpamError> = std::result::Result<T, E>;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

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

/// A node that is no host: its name starts with '_' (no Kubernetes Node
/// name can). petrel-controller's load-balancer addresses belong to
/// `_load-balancer`; `max_blocks_per_host` does not apply to such nodes.
pub fn is_virtual_node(node: &str) -> bool {
    node.starts_with('_')
}

/// How [`Ipam::migrate_borrowed_index`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationOutcome {
    AlreadyDone,
    /// Another process holds the migration's record (its name, if known).
    InProgressElsewhere(String),
    Migrated {
        added: usize,
        removed: usize,
    },
}

/// What gc did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub released: Vec<IpAddr>,
    pub handles_fixed: usize,
    pub affinities_fixed: usize,
    pub blocks_fixed: usize,
    pub blocks_deleted: usize,
    /// Borrowed-index entries added or removed.
    pub index_fixed: usize,
}

#[derive(Clone)]
pub struct Ipam {
    store: Arc<dyn Store>,
    hints: Arc<Hints>,
}

/// What one process remembers between assignments to save reads. Only
/// hints: every decision is still checked against the store.
#[derive(Default)]
struct Hints {
    inner: std::sync::Mutex<HintState>,
}

#[derive(Default)]
struct HintState {
    /// Last block a node borrowed from successfully.
    borrow_from: BTreeMap<(String, Family), IpNet>,
    /// Until when a node skips claiming (nothing was claimable).
    claims_paused: BTreeMap<(String, Family), std::time::Instant>,
    settings: Option<(std::time::Instant, IpamConfig, Vec<Pool>)>,
    /// A node's confirmed blocks, as last read.
    affine: BTreeMap<String, (std::time::Instant, Vec<IpNet>)>,
    /// Blocks as this process last read or wrote them, for group commits
    /// ([`batch`]): each write is conditioned on the cached revision, so a
    /// stale copy costs one conflict and a re-read, never a wrong answer.
    blocks: BTreeMap<IpNet, (Block, i64)>,
}

/// How long a process trusts its copy of the settings and of a node's
/// affinities. Every assignment still checks the block itself, so a stale
/// copy costs a retry, never a wrong answer.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// What an assignment knows of its handle's record: it guesses "absent"
/// (a new pod) until a conflict says otherwise.
enum HandleSlot {
    Unknown,
    Absent,
    Present(Handle, i64),
}

impl HandleSlot {
    /// The op that adds `delta` to the count for `block`.
    fn add_op(&self, handle: &str, block: &IpNet, delta: i64) -> Op {
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

/// How a claim ended.
enum Claim {
    Claimed(IpNet),
    /// The node holds `max_blocks_per_host` blocks.
    AtLimit,
    /// There were candidates, and other nodes won every one.
    Lost,
    /// No candidate: every block of the pools is taken.
    Full,
}

/// Claim attempts per assignment after lost races.
const CLAIM_ROUNDS: u32 = 5;

/// How long a node borrows without trying to claim after a claim found
/// nothing.
const CLAIM_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Drops this process's copy of the settings when it goes out of scope:
/// after a write of the settings, the next read sees the write.
struct ForgetSettings<'a>(&'a Hints);

impl Drop for ForgetSettings<'_> {
    fn drop(&mut self) {
        self.0.forget_settings();
    }
}

impl Hints {
    fn lock(&self) -> std::sync::MutexGuard<'_, HintState> {
        // Hints are advisory; a poisoned lock still holds usable ones.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn borrow_from(&self, node: &str, f: Family) -> Option<IpNet> {
        self.lock().borrow_from.get(&(node.to_string(), f)).copied()
    }
    fn set_borrow_from(&self, node: &str, f: Family, cidr: IpNet) {
        self.lock().borrow_from.insert((node.to_string(), f), cidr);
    }
    fn claim_paused(&self, node: &str, f: Family) -> bool {
        self.lock()
            .claims_paused
            .get(&(node.to_string(), f))
            .is_some_and(|t| std::time::Instant::now() < *t)
    }
    fn settings(&self) -> Option<(IpamConfig, Vec<Pool>)> {
        let g = self.lock();
        let (t, c, p) = g.settings.as_ref()?;
        (t.elapsed() < CACHE_TTL).then(|| (c.clone(), p.clone()))
    }
    fn set_settings(&self, c: &IpamConfig, p: &[Pool]) {
        self.lock().settings = Some((std::time::Instant::now(), c.clone(), p.to_vec()));
    }
    fn forget_settings(&self) {
        self.lock().settings = None;
    }
    fn affine(&self, node: &str) -> Option<Vec<IpNet>> {
        let g = self.lock();
        let (t, v) = g.affine.get(node)?;
        (t.elapsed() < CACHE_TTL).then(|| v.clone())
    }
    fn set_affine(&self, node: &str, v: &[IpNet]) {
        self.lock()
            .affine
            .insert(node.to_string(), (std::time::Instant::now(), v.to_vec()));
    }
    fn forget_affine(&self, node: &str) {
        self.lock().affine.remove(node);
    }
    fn pause_claims(&self, node: &str, f: Family) {
        self.lock().claims_paused.insert(
            (node.to_string(), f),
            std::time::Instant::now() + CLAIM_PAUSE,
        );
    }
}

fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| IpamError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain records with string map keys cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Ipam {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ipam {
            store,
            hints: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some((decode(key, &kv.value)?, kv.mod_revision))),
        }
    }

    async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(T, i64)>> {
        let l = self.store.list(prefix).await?;
        l.kvs
            .iter()
            .map(|kv| Ok((decode(&kv.key, &kv.value)?, kv.mod_revision)))
            .collect()
    }

    // ---- configuration, pools, nodes -------------------------------------

    pub async fn config(&self) -> Result<IpamConfig> {
        Ok(self
            .read::<IpamConfig>(keys::CONFIG)
            .await?
            .map(|(c, _)| c)
            .unwrap_or_default())
    }

    pub async fn set_config(&self, cfg: &IpamConfig) -> Result<()> {
        let _fresh = ForgetSettings(&self.hints);
        for _ in 0..CAS_ATTEMPTS {
            let r = match self.store.get(keys::CONFIG).await? {
                None => self.store.create(keys::CONFIG, encode(cfg)).await,
                Some(kv) => {
                    self.store
                        .update(keys::CONFIG, encode(cfg), kv.mod_revision)
                        .await
                }
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            key: keys::CONFIG.into(),
        })
    }

    pub async fn pools(&self) -> Result<Vec<Pool>> {
        Ok(self.settings().await?.1)
    }

    /// The config and the pools, in one round trip, or from this
    /// process's copy if it is younger than [`CACHE_TTL`]: changes made
    /// elsewhere reach a long-running process within that time.
    pub async fn settings(&self) -> Result<(IpamConfig, Vec<Pool>)> {
        if let Some(s) = self.hints.settings() {
            return Ok(s);
        }
        let l = self.store.list(keys::SETTINGS).await?;
        let mut cfg = IpamConfig::default();
        let mut pools = Vec::new();
        for kv in &l.kvs {
            if kv.key == keys::CONFIG {
                cfg = decode(&kv.key, &kv.value)?;
            } else if kv.key.starts_with(keys::POOLS) {
                pools.push(decode(&kv.key, &kv.value)?);
            }
        }
        self.hints.set_settings(&cfg, &pools);
        Ok((cfg, pools))
    }

    pub async fn add_pool(&self, pool: &Pool) -> Result<()> {
        let _fresh = ForgetSettings(&self.hints);
        validate_pool(pool)?;
        for other in self.pools().await? {
            if other.cidr.contains(&pool.cidr) || pool.cidr.contains(&other.cidr) {
                return Err(IpamError::InvalidPool(format!(
                    "{} overlaps pool {} ({})",
                    pool.cidr, other.name, other.cidr
                )));
            }
        }
        match self
            .store
            .create(&keys::pool(&pool.name), encode(pool))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Err(IpamError::PoolExists(pool.name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn disable_pool(&self, name: &str, disabled: bool) -> Result<()> {
        let _fresh = ForgetSettings(&self.hints);
        let key = keys::pool(name);
        for _ in 0..CAS_ATTEMPTS {
            let Some((mut p, rev)) = self.read::<Pool>(&key).await? else {
                return Err(IpamError::NoSuchPool(name.into()));
            };
            p.disabled = disabled;
            match self.store.update(&key, encode(&p), rev).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
    }

    /// Delete a pool with no assigned addresses, and its empty blocks and
    /// their affinities. Disable it first so no node claims a block from it
    /// meanwhile.
    pub async fn delete_pool(&self, name: &str) -> Result<()> {
        let _fresh = ForgetSettings(&self.hints);
        let key = keys::pool(name);
        let Some((pool, _)) = self.read::<Pool>(&key).await? else {
            return Err(IpamError::NoSuchPool(name.into()));
        };
        self.disable_pool(name, true).await?;
        let blocks: Vec<(Block, i64)> = self
            .list::<Block>(keys::BLOCKS)
            .await?
            .into_iter()
            .filter(|(b, _)| pool.cidr.contains(&b.cidr))
            .collect();
        let in_use: u32 = blocks
            .iter()
            .flat_map(|(b, _)| b.allocations.values())
            .filter(|a| !gateway::is_gateway_handle(&a.handle))
            .count() as u32;
        if in_use > 0 {
            self.disable_pool(name, pool.disabled).await?;
            return Err(IpamError::PoolInUse {
                name: name.into(),
                in_use,
            });
        }
        for (b, rev) in blocks {
            self.delete_block(&b, rev).await?;
        }
        for _ in 0..CAS_ATTEMPTS {
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(());
            };
            match self.store.delete(&key, kv.mod_revision).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
    }

    pub async fn set_node(&self, node: &Node) -> Result<()> {
        let key = keys::node(&node.name);
        for _ in 0..CAS_ATTEMPTS {
            let r = match self.store.get(&key).await? {
                None => self.store.create(&key, encode(node)).await,
                Some(kv) => self.store.update(&key, encode(node), kv.mod_revision).await,
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
    }

    async fn node_labels(&self, node: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .read::<Node>(&keys::node(node))
            .await?
            .map(|(n, _)| n.labels)
            .unwrap_or_default())
    }

    /// Pools of `family` this request may draw from, in name order.
    async fn eligible_pools(
        &self,
        req: &AssignRequest,
        family: Family,
        all: &[Pool],
    ) -> Result<Vec<Pool>> {
        // Labels cost a round trip: fetch them only if a selector needs them.
        let needs_labels = all
            .iter()
            .any(|p| p.family() == family && !matches!(p.node_selector.trim(), "" | "all()"));
        let labels = if needs_labels {
            self.node_labels(&req.node).await?
        } else {
            BTreeMap::new()
        };
        let mut out = Vec::new();
        for p in all.iter().cloned() {
            let named = req.pools.is_empty()
                || req
                    .pools
                    .iter()
                    .any(|n| *n == p.name || *n == p.cidr.to_string());
            if p.family() != family
                || p.disabled
                || !named
                || !p.allowed_uses.contains(&req.pool_use)
            {
                continue;
            }
            // A stored selector that no longer parses selects nothing rather
            // than everything.
            if Selector::parse(&p.node_selector).is_ok_and(|s| s.matches(&labels)) {
                out.push(p);
            }
        }
        Ok(out)
    }

    // ---- assignment ---------------------------------------------------------

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
    /// younger than [`CACHE_TTL`].
    async fn confirmed_blocks(&self, node: &str) -> Result<Vec<IpNet>> {
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

    async fn block_map(&self) -> Result<BTreeMap<IpNet, (Block, i64)>> {
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

    async fn handle_slot(&self, handle: &str) -> Result<HandleSlot> {
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
    async fn handle_add(&self, handle: &str, block: &IpNet, delta: i64) -> Result<()> {
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
        for _ in 0..CAS_ATTEMPTS {
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
            let r = match (rev, h.blocks.is_empty()) {
                (None, true) => return Ok(()),
                (None, false) => self.store.create(&key, encode(&h)).await.map(|_| ()),
                (Some(rev), true) => self.store.delete(&key, rev).await,
                (Some(rev), false) => self.store.update(&key, encode(&h), rev).await.map(|_| ()),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
    }

    // ---- block claims -------------------------------------------------------

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
    async fn claim_block_with(
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

    async fn set_affinity_state(
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

    async fn delete_if(&self, key: &str, rev: i64) -> Result<()> {
        match self.store.delete(key, rev).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    // ---- release ------------------------------------------------------------

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
        for _ in 0..CAS_ATTEMPTS {
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
            match self.store.commit(ops).await {
                Ok(_) => return Ok(these),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
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
        for _ in 0..CAS_ATTEMPTS {
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
            match self.store.commit(ops).await {
                Ok(_) => return Ok(freed),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention { key })
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

    async fn delete_block(&self, b: &Block, rev: i64) -> Result<()> {
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

    // ---- check and garbage collection --------------------------------------

    pub async fn snapshot(&self) -> Result<Snapshot> {
        let l = self.store.list(keys::ROOT).await?;
        let mut snap = Snapshot::default();
        for kv in &l.kvs {
            let k = kv.key.as_str();
            let bad = |e: serde_json::Error| (k.to_string(), e.to_string());
            let r = if k == keys::CONFIG {
                serde_json::from_slice(&kv.value)
                    .map(|c| snap.config = c)
                    .map_err(bad)
            } else if k.starts_with(keys::POOLS) {
                serde_json::from_slice(&kv.value)
                    .map(|p| snap.pools.push(p))
                    .map_err(bad)
            } else if k.starts_with(keys::BLOCKS) {
                serde_json::from_slice(&kv.value)
                    .map(|b| snap.blocks.push((b, kv.mod_revision)))
                    .map_err(bad)
            } else if k.starts_with(keys::AFFINITIES) {
                serde_json::from_slice(&kv.value)
                    .map(|a| snap.affinities.push((a, kv.mod_revision)))
                    .map_err(bad)
            } else if k.starts_with(keys::HANDLES) {
                serde_json::from_slice(&kv.value)
                    .map(|h| snap.handles.push((h, kv.mod_revision)))
                    .map_err(bad)
            } else if k.starts_with(keys::BORROWED) {
                keys::parse_borrowed(k)
                    .map(|e| snap.borrowed.push(e))
                    .ok_or_else(|| (k.to_string(), "not <node>/<address>".to_string()))
            } else {
                Ok(())
            };
            if let Err(u) = r {
                snap.undecodable.push(u);
            }
        }
        Ok(snap)
    }

    /// Brings the borrowed-address index in line with the blocks: entries
    /// missing (blocks written by a version without the index) are added,
    /// stale ones removed. Each fix is one transaction with a rewrite of
    /// its block at the revision the snapshot saw, so an allocation or
    /// release racing in makes it conflict instead of undoing it (it is
    /// then right already, or the next run fixes it). Returns (added,
    /// removed).
    pub async fn reconcile_borrowed_index(&self) -> Result<(usize, usize)> {
        let (mut added, mut removed) = (0, 0);
        // Two fixes in one block conflict with each other (each rewrites
        // the block): a few rounds, each from a fresh snapshot.
        for _ in 0..4 {
            let (a, r, conflicts) = self.reconcile_borrowed_index_once().await?;
            added += a;
            removed += r;
            if conflicts == 0 {
                break;
            }
        }
        Ok((added, removed))
    }

    async fn reconcile_borrowed_index_once(&self) -> Result<(usize, usize, usize)> {
        let snap = self.snapshot().await?;
        let report = check::check(&snap, now());
        let blocks: BTreeMap<IpNet, &(Block, i64)> =
            snap.blocks.iter().map(|e| (e.0.cidr, e)).collect();
        let (mut added, mut removed, mut conflicts) = (0, 0, 0);
        for p in &report.problems {
            let (ops, is_add) = match p {
                check::Problem::BorrowedIndexMissing { node, addr, block } => {
                    let Some((b, rev)) = blocks.get(block) else {
                        continue;
                    };
                    (
                        vec![
                            Op::Update {
                                key: keys::block(block),
                                value: encode(b),
                                revision: *rev,
                            },
                            Op::Put {
                                key: keys::borrowed(node, addr),
                                value: borrowed::value(b),
                            },
                        ],
                        true,
                    )
                }
                check::Problem::BorrowedIndexStale { node, addr } => {
                    let mut ops = vec![Op::Remove {
                        key: keys::borrowed(node, addr),
                    }];
                    if let Some((b, rev)) = blocks.values().find(|(b, _)| b.cidr.contains(addr)) {
                        ops.push(Op::Update {
                            key: keys::block(&b.cidr),
                            value: encode(b),
                            revision: *rev,
                        });
                    }
                    (ops, false)
                }
                _ => continue,
            };
            match self.store.commit(ops).await {
                Ok(_) if is_add => added += 1,
                Ok(_) => removed += 1,
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok((added, removed, conflicts))
    }

    /// The online migration to the borrowed-address index: run once per
    /// cluster by whichever node gets to it first (a create-if-absent
    /// record is the lock), and marked done. Nodes of older versions may
    /// still write borrowed addresses without entries until they are
    /// upgraded; `petrelctl ipam gc` catches those up.
    pub async fn migrate_borrowed_index(&self, by: &str) -> Result<MigrationOutcome> {
        #[derive(Serialize, serde::Deserialize)]
        struct Marker {
            state: String,
            by: String,
            since: u64,
        }
        let key = keys::MIGRATION_BORROWED_INDEX;
        let started = match self.read::<Marker>(key).await? {
            Some((m, _)) if m.state == "done" => return Ok(MigrationOutcome::AlreadyDone),
            // Another node is at it; a run abandoned for 5 minutes (a
            // crashed node) is taken over.
            Some((m, rev)) if now().saturating_sub(m.since) < 300 => {
                let _ = rev;
                return Ok(MigrationOutcome::InProgressElsewhere(m.by));
            }
            Some((_, rev)) => Some(rev),
            None => None,
        };
        let mine = Marker {
            state: "running".into(),
            by: by.into(),
            since: now(),
        };
        let rev = match started {
            None => self.store.create(key, encode(&mine)).await,
            Some(rev) => self.store.update(key, encode(&mine), rev).await,
        };
        let rev = match rev {
            Ok(r) => r,
            Err(e) if e.is_conflict() => {
                return Ok(MigrationOutcome::InProgressElsewhere(String::new()))
            }
            Err(e) => return Err(e.into()),
        };
        let (added, removed) = self.reconcile_borrowed_index().await?;
        let done = Marker {
            state: "done".into(),
            by: by.into(),
            since: now(),
        };
        match self.store.update(key, encode(&done), rev).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(MigrationOutcome::Migrated { added, removed })
    }

    pub async fn check(&self) -> Result<Report> {
        Ok(check::check(&self.snapshot().await?, now()))
    }

    /// CNI GC: release `node`'s addresses whose handle starts with
    /// `handle_prefix` and is not in `live`; never a gateway.
    pub async fn gc_attachments(
        &self,
        node: &str,
        handle_prefix: &str,
        live: &HashSet<String>,
    ) -> Result<Vec<IpAddr>> {
        let blocks = self.node_blocks(node).await?;
        let mut victims = Vec::new();
        for b in blocks {
            for (ord, a) in &b.allocations {
                if a.attrs.node.as_deref() == Some(node)
                    && a.handle.starts_with(handle_prefix)
                    && !gateway::is_gateway_handle(&a.handle)
                    && !live.contains(&a.handle)
                {
                    // Guarded by the sequence number: if the address is
                    // released and re-assigned before this runs, the new
                    // holder keeps it.
                    victims.push((b.addr(*ord), Some(a.seq)));
                }
            }
        }
        self.release_guarded(&victims).await
    }

    /// The blocks that may hold `node`'s addresses: its own and those its
    /// borrowed index names; never a walk over the cluster's blocks.
    async fn node_blocks(&self, node: &str) -> Result<Vec<Block>> {
        let mut cidrs: BTreeSet<IpNet> = self
            .node_affinities(node)
            .await?
            .into_iter()
            .map(|(a, _)| a.cidr)
            .collect();
        let pools = self.pools().await?;
        for (k, _) in self.store.list_keys(&keys::node_borrowed(node)).await? {
            if let Some(c) = keys::parse_borrowed(&k)
                .and_then(|(_, addr)| pools.iter().find_map(|p| p.block_of(addr)))
            {
                cidrs.insert(c);
            }
        }
        let keys: Vec<String> = cidrs.iter().map(keys::block).collect();
        let mut blocks = Vec::new();
        for kv in self.store.get_many(&keys).await?.into_iter().flatten() {
            blocks.push(serde_json::from_slice::<Block>(&kv.value).map_err(|e| {
                IpamError::Corrupt {
                    key: kv.key.clone(),
                    detail: e.to_string(),
                }
            })?);
        }
        Ok(blocks)
    }

    /// Everything of a node that no longer exists: its addresses, its
    /// empty blocks, its affinities (non-empty blocks become unaffine, to
    /// be claimed by another node once emptied), its node record.
    pub async fn gc_node(&self, node: &str) -> Result<GcReport> {
        let mut report = GcReport::default();
        let blocks = self.node_blocks(node).await?;
        let mut victims = Vec::new();
        for b in blocks {
            for (ord, a) in &b.allocations {
                if a.attrs.node.as_deref() == Some(node) {
                    victims.push((b.addr(*ord), Some(a.seq)));
                }
            }
        }
        report.released = self.release_guarded(&victims).await?;
        for (b, rev) in self.list::<Block>(keys::BLOCKS).await? {
            if b.affinity.as_deref() != Some(node) {
                continue;
            }
            if b.is_empty() {
                self.delete_if(&keys::block(&b.cidr), rev).await?;
                report.blocks_deleted += 1;
            } else {
                let mut nb = b.clone();
                nb.affinity = None;
                nb.changed = now();
                match self.store.commit(borrowed::update_ops(&b, &nb, rev)).await {
                    Ok(_) => report.blocks_fixed += 1,
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for (a, rev) in self.node_affinities(node).await? {
            self.delete_if(&keys::affinity(node, &a.cidr), rev).await?;
            report.affinities_fixed += 1;
        }
        if let Some(kv) = self.store.get(&keys::node(node)).await? {
            self.delete_if(&keys::node(node), kv.mod_revision).await?;
        }
        Ok(report)
    }

    /// Repair what `check` reports, for records older than the grace
    /// period: block free lists, handle records (recomputed from the
    /// blocks, which are the truth), and affinities left by interrupted
    /// claims and releases.
    pub async fn repair(&self) -> Result<GcReport> {
        let snap = self.snapshot().await?;
        let t = now();
        let grace = snap.config.pending_grace_secs;
        let settled = |since: u64| t.saturating_sub(since) >= grace;
        let mut report = GcReport::default();

        // Blocks: internal consistency.
        for (b, rev) in &snap.blocks {
            if !b.verify().is_empty() {
                let mut nb = b.clone();
                nb.repair_free_list();
                match self
                    .store
                    .update(&keys::block(&b.cidr), encode(&nb), *rev)
                    .await
                {
                    Ok(_) => report.blocks_fixed += 1,
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }

        // Handles: the blocks say who holds what.
        let mut actual: BTreeMap<String, BTreeMap<IpNet, u32>> = BTreeMap::new();
        let mut fresh_blocks = BTreeSet::new();
        for (b, _) in &snap.blocks {
            if !settled(b.changed) {
                fresh_blocks.insert(b.cidr);
            }
            for a in b.allocations.values() {
                *actual
                    .entry(a.handle.clone())
                    .or_default()
                    .entry(b.cidr)
                    .or_insert(0) += 1;
            }
        }
        let recorded: BTreeMap<String, (Handle, i64)> = snap
            .handles
            .iter()
            .map(|(h, r)| (h.handle.clone(), (h.clone(), *r)))
            .collect();
        let names: BTreeSet<String> = actual.keys().chain(recorded.keys()).cloned().collect();
        for name in names {
            let want = actual.get(&name).cloned().unwrap_or_default();
            let key = keys::handle(&name);
            let r = match recorded.get(&name) {
                Some((h, rev)) => {
                    if h.blocks == want || !settled(h.updated) {
                        continue;
                    }
                    if want.is_empty() {
                        self.store.delete(&key, *rev).await
                    } else {
                        let nh = Handle {
                            handle: name.clone(),
                            blocks: want,
                            updated: t,
                        };
                        self.store.update(&key, encode(&nh), *rev).await.map(|_| ())
                    }
                }
                None => {
                    if want.keys().any(|c| fresh_blocks.contains(c)) {
                        continue;
                    }
                    let nh = Handle {
                        handle: name.clone(),
                        blocks: want,
                        updated: t,
                    };
                    self.store.create(&key, encode(&nh)).await.map(|_| ())
                }
            };
            match r {
                Ok(()) => report.handles_fixed += 1,
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }

        // Affinities.
        let blocks: BTreeMap<IpNet, &Block> =
            snap.blocks.iter().map(|(b, _)| (b.cidr, b)).collect();
        let mut have: BTreeSet<(String, IpNet)> = BTreeSet::new();
        for (a, rev) in &snap.affinities {
            have.insert((a.node.clone(), a.cidr));
            let key = keys::affinity(&a.node, &a.cidr);
            let ours = blocks
                .get(&a.cidr)
                .is_some_and(|b| b.affinity.as_deref() == Some(&a.node));
            let stale = a.state == AffinityState::Confirmed || settled(a.since);
            if !stale {
                continue;
            }
            let r = if !ours {
                self.store.delete(&key, *rev).await
            } else if a.state != AffinityState::Confirmed {
                let mut na = a.clone();
                na.state = AffinityState::Confirmed;
                na.since = t;
                self.store.update(&key, encode(&na), *rev).await.map(|_| ())
            } else {
                continue;
            };
            match r {
                Ok(()) => report.affinities_fixed += 1,
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        for (b, _) in &snap.blocks {
            let Some(node) = &b.affinity else { continue };
            if have.contains(&(node.clone(), b.cidr)) || !settled(b.changed) {
                continue;
            }
            let a = Affinity {
                node: node.clone(),
                cidr: b.cidr,
                state: AffinityState::Confirmed,
                since: t,
            };
            match self
                .store
                .create(&keys::affinity(node, &b.cidr), encode(&a))
                .await
            {
                Ok(_) => report.affinities_fixed += 1,
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (added, removed) = self.reconcile_borrowed_index().await?;
        report.index_fixed = added + removed;
        Ok(report)
    }
}

pub fn validate_pool(pool: &Pool) -> Result<()> {
    let f = pool.family();
    let (range, _) = f.block_sizes();
    if pool.name.is_empty() || pool.name.contains('/') {
        return Err(IpamError::InvalidPool(format!(
            "name {:?}: must be non-empty without '/'",
            pool.name
        )));
    }
    if !range.contains(&pool.block_size) {
        return Err(IpamError::InvalidPool(format!(
            "block size /{} for {}: must be within /{}../{}",
            pool.block_size,
            pool.cidr,
            range.start(),
            range.end()
        )));
    }
    if pool.cidr.prefix_len() > pool.block_size {
        return Err(IpamError::InvalidPool(format!(
            "{} is smaller than one /{} block",
            pool.cidr, pool.block_size
        )));
    }
    if pool.cidr.trunc() != pool.cidr {
        return Err(IpamError::InvalidPool(format!(
            "{} has host bits set; did you mean {}?",
            pool.cidr,
            pool.cidr.trunc()
        )));
    }
    Selector::parse(&pool.node_selector)?;
    Ok(())
}

pub mod batch;
#[cfg(test)]
mod tests;
