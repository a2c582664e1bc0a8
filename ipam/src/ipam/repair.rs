//! Check and repair: a snapshot of every record for `check`, gc of
//! attachments and of departed nodes, repair of what interrupted writers
//! left, and the borrowed-address index's reconciliation and migration.

use super::{encode, now, Ipam, IpamError, Result};
use crate::borrowed;
use crate::check::{self, Report, Snapshot};
use crate::gateway;
use crate::keys;
use crate::model::{Affinity, AffinityState, Block, Handle};
use crate::store::{Op, StoreError};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

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

impl Ipam {
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
