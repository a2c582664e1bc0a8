//! The settings: the cluster's IPAM config, its pools, and the nodes'
//! labels the pools' selectors match.

use super::hints::ForgetSettings;
use super::{decode, encode, retry_on_conflict, AssignRequest, Ipam, IpamError, Result};
use crate::gateway;
use crate::keys;
use crate::model::{Block, Family, IpamConfig, Node, Pool};
use crate::selector::Selector;
use std::collections::BTreeMap;

impl Ipam {
    pub async fn config(&self) -> Result<IpamConfig> {
        Ok(self
            .read::<IpamConfig>(keys::CONFIG)
            .await?
            .map(|(c, _)| c)
            .unwrap_or_default())
    }

    pub async fn set_config(&self, cfg: &IpamConfig) -> Result<()> {
        let _fresh = ForgetSettings(&self.hints);
        self.overwrite(keys::CONFIG, &encode(cfg)).await
    }

    pub async fn pools(&self) -> Result<Vec<Pool>> {
        Ok(self.settings().await?.1)
    }

    /// The config and the pools, in one round trip, or from this
    /// process's copy if it is younger than [`super::CACHE_TTL`]: changes made
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
        retry_on_conflict(&key, || async {
            let Some((mut p, rev)) = self.read::<Pool>(&key).await? else {
                return Err(IpamError::NoSuchPool(name.into()));
            };
            p.disabled = disabled;
            self.store.update(&key, encode(&p), rev).await?;
            Ok(())
        })
        .await
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
        retry_on_conflict(&key, || async {
            if let Some(kv) = self.store.get(&key).await? {
                self.store.delete(&key, kv.mod_revision).await?;
            }
            Ok(())
        })
        .await
    }

    pub async fn set_node(&self, node: &Node) -> Result<()> {
        self.overwrite(&keys::node(&node.name), &encode(node)).await
    }

    async fn node_labels(&self, node: &str) -> Result<BTreeMap<String, String>> {
        Ok(self
            .read::<Node>(&keys::node(node))
            .await?
            .map(|(n, _)| n.labels)
            .unwrap_or_default())
    }

    /// Pools of `family` this request may draw from, in name order.
    pub(super) async fn eligible_pools(
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
