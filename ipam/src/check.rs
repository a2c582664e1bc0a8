//! `check`: a consistency report over one snapshot of the datastore. Pure:
//! the driver loads the snapshot, this decides what is wrong.

use crate::model::{Affinity, AffinityState, Block, Handle, IpamConfig, Pool};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Everything under the IPAM prefix, each record with its mod revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub config: IpamConfig,
    pub pools: Vec<Pool>,
    pub blocks: Vec<(Block, i64)>,
    pub affinities: Vec<(Affinity, i64)>,
    pub handles: Vec<(Handle, i64)>,
    /// The borrowed-address index ([`crate::borrowed`]): (node, address).
    pub borrowed: Vec<(String, IpAddr)>,
    /// Keys whose value could not be decoded, with the reason.
    pub undecodable: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// An address whose handle record does not count it.
    AllocationMissingFromHandle {
        addr: IpAddr,
        handle: String,
        block: IpNet,
    },
    /// A handle record counting more addresses in a block than it holds
    /// (pointing at nothing when the block holds none).
    HandleCountsMissingAddresses {
        handle: String,
        block: IpNet,
        recorded: u32,
        actual: u32,
    },
    AffinityWithoutBlock {
        node: String,
        block: IpNet,
        state: AffinityState,
    },
    /// A block affine to a node that has no affinity record for it.
    BlockWithoutAffinity {
        node: String,
        block: IpNet,
    },
    /// An affinity whose block is affine to another node (or none).
    AffinityMismatch {
        node: String,
        block: IpNet,
        block_affinity: Option<String>,
    },
    /// A claim or release that never finished.
    StaleAffinityState {
        node: String,
        block: IpNet,
        state: AffinityState,
        since: u64,
    },
    BlockOutsidePools {
        block: IpNet,
    },
    /// An address inside two blocks: two owners are possible.
    AddressWithTwoOwners {
        addr: IpAddr,
        blocks: Vec<IpNet>,
    },
    BlockInconsistent {
        block: IpNet,
        detail: String,
    },
    Undecodable {
        key: String,
        detail: String,
    },
    /// A borrowed address without its index entry: the node does not
    /// advertise it (written by a version without the index).
    BorrowedIndexMissing {
        node: String,
        addr: IpAddr,
        block: IpNet,
    },
    /// An index entry for an address the node does not hold (borrowed).
    BorrowedIndexStale {
        node: String,
        addr: IpAddr,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use Problem::*;
        match self {
            AllocationMissingFromHandle { addr, handle, block } => write!(f, "{addr} in block {block} is held by handle {handle}, whose record does not count it"),
            HandleCountsMissingAddresses { handle, block, recorded, actual } => write!(f, "handle {handle} records {recorded} address(es) in block {block}, which holds {actual} for it"),
            AffinityWithoutBlock { node, block, state } => write!(f, "node {node} has a {state:?} affinity for block {block}, which does not exist"),
            BlockWithoutAffinity { node, block } => write!(f, "block {block} is affine to node {node}, which has no affinity record for it"),
            AffinityMismatch { node, block, block_affinity } => write!(f, "node {node} has an affinity for block {block}, but the block is affine to {}", block_affinity.as_deref().unwrap_or("no node")),
            StaleAffinityState { node, block, state, since } => write!(f, "node {node}'s affinity for block {block} has been {state:?} since {since} (an interrupted claim or release)"),
            BlockOutsidePools { block } => write!(f, "block {block} lies outside every pool"),
            AddressWithTwoOwners { addr, blocks } => write!(f, "{addr} lies in {} blocks: {blocks:?}", blocks.len()),
            BlockInconsistent { block, detail } => write!(f, "block {block}: {detail}"),
            Undecodable { key, detail } => write!(f, "{key}: cannot decode: {detail}"),
            BorrowedIndexMissing { node, addr, block } => write!(f, "node {node} holds {addr} in block {block}, not its own, and the borrowed index lacks it (the node does not advertise it)"),
            BorrowedIndexStale { node, addr } => write!(f, "the borrowed index says node {node} holds {addr} outside its blocks, but it does not"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub clean: bool,
    pub blocks: usize,
    pub addresses_in_use: usize,
    pub handles: usize,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn human(&self) -> String {
        let mut s = format!(
            "{} blocks, {} addresses in use, {} handles: ",
            self.blocks, self.addresses_in_use, self.handles
        );
        if self.clean {
            s.push_str("consistent\n");
        } else {
            s.push_str(&format!("{} problem(s)\n", self.problems.len()));
            for p in &self.problems {
                s.push_str(&format!("  - {p}\n"));
            }
            s.push_str("run `petrelctl ipam gc` to repair\n");
        }
        s
    }
}

/// Records changed within the grace period may belong to an operation in
/// progress; they are not reported.
fn settled(since: u64, now: u64, grace: u64) -> bool {
    now.saturating_sub(since) >= grace
}

pub fn check(snap: &Snapshot, now: u64) -> Report {
    let grace = snap.config.pending_grace_secs;
    let mut problems = Vec::new();
    for (key, detail) in &snap.undecodable {
        problems.push(Problem::Undecodable {
            key: key.clone(),
            detail: detail.clone(),
        });
    }
    let blocks: BTreeMap<IpNet, &Block> = snap.blocks.iter().map(|(b, _)| (b.cidr, b)).collect();
    let affinities: BTreeMap<(String, IpNet), &Affinity> = snap
        .affinities
        .iter()
        .map(|(a, _)| ((a.node.clone(), a.cidr), a))
        .collect();

    // The borrowed index against the blocks (one snapshot: exact).
    let mut implied: BTreeMap<(String, IpAddr), IpNet> = BTreeMap::new();
    for b in blocks.values() {
        for (k, ()) in crate::borrowed::entries(b) {
            implied.insert(k, b.cidr);
        }
    }
    let indexed: std::collections::BTreeSet<(String, IpAddr)> =
        snap.borrowed.iter().cloned().collect();
    for ((node, addr), block) in &implied {
        if !indexed.contains(&(node.clone(), *addr)) {
            problems.push(Problem::BorrowedIndexMissing {
                node: node.clone(),
                addr: *addr,
                block: *block,
            });
        }
    }
    for (node, addr) in &indexed {
        if !implied.contains_key(&(node.clone(), *addr)) {
            problems.push(Problem::BorrowedIndexStale {
                node: node.clone(),
                addr: *addr,
            });
        }
    }

    // Per block: internal consistency, pool membership, handle counts.
    let mut actual: BTreeMap<(String, IpNet), u32> = BTreeMap::new();
    let mut in_use = 0;
    for b in blocks.values() {
        for d in b.verify() {
            problems.push(Problem::BlockInconsistent {
                block: b.cidr,
                detail: d,
            });
        }
        if !snap
            .pools
            .iter()
            .any(|p| p.cidr.contains(&b.cidr) && p.block_size == b.cidr.prefix_len())
        {
            problems.push(Problem::BlockOutsidePools { block: b.cidr });
        }
        in_use += b.allocations.len();
        for a in b.allocations.values() {
            *actual.entry((a.handle.clone(), b.cidr)).or_insert(0) += 1;
        }
        if let Some(node) = &b.affinity {
            if !affinities.contains_key(&(node.clone(), b.cidr)) && settled(b.changed, now, grace) {
                problems.push(Problem::BlockWithoutAffinity {
                    node: node.clone(),
                    block: b.cidr,
                });
            }
        }
    }
    // Overlapping blocks: sorted by network, a block overlaps the previous
    // one if it starts inside it.
    let mut prev: Option<&Block> = None;
    for b in blocks.values() {
        if let Some(p) = prev {
            if p.cidr.contains(&b.cidr.network()) || b.cidr.contains(&p.cidr.network()) {
                problems.push(Problem::AddressWithTwoOwners {
                    addr: b.cidr.network(),
                    blocks: vec![p.cidr, b.cidr],
                });
            }
        }
        prev = Some(b);
    }

    let recorded: BTreeMap<(String, IpNet), (u32, u64)> = snap
        .handles
        .iter()
        .flat_map(|(h, _)| {
            h.blocks
                .iter()
                .map(move |(c, n)| ((h.handle.clone(), *c), (*n, h.updated)))
        })
        .collect();
    for ((handle, block), n) in &actual {
        let (rec, _) = recorded
            .get(&(handle.clone(), *block))
            .copied()
            .unwrap_or((0, 0));
        let b = blocks.get(block);
        if rec < *n && b.is_some_and(|b| settled(b.changed, now, grace)) {
            if let Some(b) = b {
                for (ord, a) in &b.allocations {
                    if &a.handle == handle {
                        problems.push(Problem::AllocationMissingFromHandle {
                            addr: b.addr(*ord),
                            handle: handle.clone(),
                            block: *block,
                        });
                    }
                }
            }
        }
    }
    for ((handle, block), (rec, updated)) in &recorded {
        let n = actual.get(&(handle.clone(), *block)).copied().unwrap_or(0);
        if *rec > n && settled(*updated, now, grace) {
            problems.push(Problem::HandleCountsMissingAddresses {
                handle: handle.clone(),
                block: *block,
                recorded: *rec,
                actual: n,
            });
        }
    }

    for a in affinities.values() {
        match blocks.get(&a.cidr) {
            None => {
                if a.state == AffinityState::Confirmed || settled(a.since, now, grace) {
                    problems.push(Problem::AffinityWithoutBlock {
                        node: a.node.clone(),
                        block: a.cidr,
                        state: a.state,
                    });
                }
            }
            Some(b) if b.affinity.as_deref() != Some(&a.node) => {
                if a.state == AffinityState::Confirmed || settled(a.since, now, grace) {
                    problems.push(Problem::AffinityMismatch {
                        node: a.node.clone(),
                        block: a.cidr,
                        block_affinity: b.affinity.clone(),
                    });
                }
            }
            Some(_) => {
                if a.state != AffinityState::Confirmed && settled(a.since, now, grace) {
                    problems.push(Problem::StaleAffinityState {
                        node: a.node.clone(),
                        block: a.cidr,
                        state: a.state,
                        since: a.since,
                    });
                }
            }
        }
    }

    Report {
        clean: problems.is_empty(),
        blocks: blocks.len(),
        addresses_in_use: in_use,
        handles: snap.handles.len(),
        problems,
    }
}
