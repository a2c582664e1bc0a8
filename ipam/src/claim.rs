//! Which blocks a node tries to claim, in which order. Pure.
//!
//! The walk over a pool starts at a point derived from a hash of the node
//! name, so that nodes claiming at once mostly try different blocks instead
//! of all racing for the first free one; it then goes round the pool.

use crate::model::{Block, IpamConfig, Pool};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};

/// FNV-1a: stable across processes and releases, unlike std's hasher.
pub fn node_hash(node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Blocks of `pool` that do not exist yet, in walk order from the node's
/// start point: the first few, in case the first are lost to races.
/// Bounded by the number of existing blocks, since each can push the walk
/// on by one step at most.
pub fn fresh_candidates(pool: &Pool, node: &str, existing: &BTreeSet<IpNet>) -> Vec<IpNet> {
    let count = pool.block_count();
    let start = node_hash(node) as u128 % count;
    let mut out = Vec::new();
    for i in 0..count {
        let cidr = pool.block_at((start + i) % count);
        if !existing.contains(&cidr) {
            out.push(cidr);
            if out.len() == 4 {
                break;
            }
        }
    }
    out
}

/// Blocks of `pool` that `node` may claim, in walk order: ones that do not
/// exist yet, unaffine ones, and empty ones of other nodes unchanged for
/// the minimum age. Stops after the first never-created block, which the
/// claim either wins or loses to a node that made it exist, and after
/// enough candidates to get past every existing block.
pub fn candidates(
    pool: &Pool,
    node: &str,
    blocks: &BTreeMap<IpNet, (Block, i64)>,
    now: u64,
    cfg: &IpamConfig,
) -> Vec<IpNet> {
    let count = pool.block_count();
    let start = node_hash(node) as u128 % count;
    let mut out = Vec::new();
    let mut fresh = 0;
    for i in 0..count {
        let cidr = pool.block_at((start + i) % count);
        match blocks.get(&cidr) {
            None => {
                out.push(cidr);
                fresh += 1;
                // A few fresh ones in case the first are lost to races.
                if fresh == 4 {
                    break;
                }
            }
            Some((b, _)) => {
                let claimable = match &b.affinity {
                    None => true,
                    Some(other) => {
                        other != node
                            && b.is_empty()
                            && now.saturating_sub(b.changed) >= cfg.reclaim_min_age_secs
                    }
                };
                if claimable {
                    out.push(cidr);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Pool {
        Pool {
            name: "p".into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            block_size: 26,
            disabled: false,
            node_selector: String::new(),
            allowed_uses: vec![crate::model::PoolUse::Workload],
            encapsulation: Default::default(),
        }
    }

    #[test]
    fn walk_starts_at_the_node_hash_and_wraps() {
        let p = pool();
        let cfg = IpamConfig::default();
        let c = candidates(&p, "node-a", &BTreeMap::new(), 0, &cfg);
        let start = (node_hash("node-a") % 4) as u128;
        assert_eq!(c[0], p.block_at(start));
        assert_eq!(c.len(), 4);
        let mut sorted = c.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "every block once");
    }

    #[test]
    fn skips_taken_blocks_and_reclaims_old_empty_ones() {
        let p = pool();
        let cfg = IpamConfig {
            reclaim_min_age_secs: 100,
            ..Default::default()
        };
        let mut blocks = BTreeMap::new();
        let mut full = Block::new(p.block_at(0), "p", Some("other".into()), 0);
        full.assign(1, "h", &Default::default(), 0, 0);
        blocks.insert(p.block_at(0), (full, 1));
        blocks.insert(
            p.block_at(1),
            (Block::new(p.block_at(1), "p", Some("other".into()), 50), 2),
        );
        blocks.insert(
            p.block_at(2),
            (Block::new(p.block_at(2), "p", Some("other".into()), 0), 3),
        );
        blocks.insert(p.block_at(3), (Block::new(p.block_at(3), "p", None, 0), 4));
        let mut c = candidates(&p, "me", &blocks, 120, &cfg);
        c.sort();
        // Not the one in use, not the one changed 70 s ago.
        assert_eq!(c, vec![p.block_at(2), p.block_at(3)]);
    }
}
