//! The stored records. Each is one JSON value under one key (see
//! [`crate::keys`] and docs/datastore.md); every change to one of them is a
//! compare-and-swap on that key.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    pub fn of_net(net: &IpNet) -> Family {
        Family::of(&net.addr())
    }
    /// Accepted block sizes (prefix lengths) and the default.
    pub fn block_sizes(self) -> (std::ops::RangeInclusive<u8>, u8) {
        match self {
            Family::V4 => (20..=32, 26),
            Family::V6 => (116..=128, 122),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    #[default]
    None,
    Ipip,
    Vxlan,
    Wireguard,
}

impl Encapsulation {
    /// Bytes of outer headers the encapsulation adds, which the pod MTU
    /// must leave room for.
    pub fn overhead(self, family: Family) -> u32 {
        match (self, family) {
            (Encapsulation::None, _) => 0,
            (Encapsulation::Ipip, _) => 20,
            (Encapsulation::Vxlan, Family::V4) => 50,
            (Encapsulation::Vxlan, Family::V6) => 70,
            (Encapsulation::Wireguard, Family::V4) => 60,
            (Encapsulation::Wireguard, Family::V6) => 80,
        }
    }
}

impl std::str::FromStr for Encapsulation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Encapsulation::None),
            "ipip" => Ok(Encapsulation::Ipip),
            "vxlan" => Ok(Encapsulation::Vxlan),
            "wireguard" => Ok(Encapsulation::Wireguard),
            _ => Err(format!(
                "unknown encapsulation {s:?}: use none, ipip, vxlan or wireguard"
            )),
        }
    }
}

fn default_uses() -> Vec<PoolUse> {
    vec![PoolUse::Workload, PoolUse::Tunnel]
}

/// An IP pool. `cidr` and `block_size` never change after creation: blocks
/// already cut from the pool depend on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub cidr: IpNet,
    pub block_size: u8,
    #[serde(default)]
    pub disabled: bool,
    /// A label expression (see [`crate::selector`]); empty selects all nodes.
    #[serde(default)]
    pub node_selector: String,
    #[serde(default = "default_uses")]
    pub allowed_uses: Vec<PoolUse>,
    #[serde(default)]
    pub encapsulation: Encapsulation,
}

impl Pool {
    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }
    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_size - self.cidr.prefix_len())
    }
    /// The `i`-th block of the pool, for `i < block_count()`.
    pub fn block_at(&self, i: u128) -> IpNet {
        let shift = self.cidr.max_prefix_len() - self.block_size;
        let base = net_base(&self.cidr) + (i << shift);
        make_net(self.family(), base, self.block_size)
    }
    /// The block of this pool that holds `addr`, if the pool holds it.
    pub fn block_of(&self, addr: IpAddr) -> Option<IpNet> {
        if !self.cidr.contains(&addr) {
            return None;
        }
        IpNet::new(addr, self.block_size).ok().map(|n| n.trunc())
    }
}

pub(crate) fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

pub(crate) fn net_base(n: &IpNet) -> u128 {
    addr_to_u128(n.network())
}

pub(crate) fn u128_to_addr(f: Family, v: u128) -> IpAddr {
    match f {
        // Truncation is intended: v4 values come from v4 networks.
        Family::V4 => IpAddr::V4((v as u32).into()),
        Family::V6 => IpAddr::V6(v.into()),
    }
}

pub(crate) fn make_net(f: Family, base: u128, prefix: u8) -> IpNet {
    // `prefix` is within range for the family by construction (pool
    // validation), so this cannot fail; fall back to a host net if it does.
    IpNet::new(u128_to_addr(f, base), prefix).unwrap_or_else(|_| IpNet::from(u128_to_addr(f, base)))
}

/// Cluster-wide IPAM settings, at one key; absent means the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpamConfig {
    /// Never hand out an address from another node's block.
    pub strict_affinity: bool,
    /// Claim new blocks when a node's blocks are full.
    pub auto_allocate_blocks: bool,
    /// Most blocks one node may hold affinity for; 0 means no limit.
    pub max_blocks_per_host: u32,
    /// Seconds a released address rests before it is handed out again.
    pub reuse_cooldown_secs: u64,
    /// An empty block affine to another node may be taken over only after
    /// it has been unchanged this long, so a node that just claimed it and
    /// is about to assign does not lose it.
    pub reclaim_min_age_secs: u64,
    /// A pending affinity younger than this may be a claim in progress;
    /// `check` and `gc` leave it alone.
    pub pending_grace_secs: u64,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 20,
            reuse_cooldown_secs: 0,
            reclaim_min_age_secs: 300,
            pending_grace_secs: 60,
        }
    }
}

/// Who holds an address, besides its handle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub handle: String,
    #[serde(default)]
    pub attrs: Attributes,
    /// The block's sequence number when this address was assigned: a
    /// release that names it frees this assignment and no later one.
    pub seq: u64,
}

/// Stored as `[ord, since]`: a block holds one per free address, and
/// blocks are rewritten on every assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(u32, u64)", into = "(u32, u64)")]
pub struct FreeSlot {
    /// Offset of the address in the block.
    pub ord: u32,
    /// Unix seconds when it was released (0: never used).
    pub since: u64,
}

impl From<(u32, u64)> for FreeSlot {
    fn from((ord, since): (u32, u64)) -> Self {
        FreeSlot { ord, since }
    }
}

impl From<FreeSlot> for (u32, u64) {
    fn from(s: FreeSlot) -> Self {
        (s.ord, s.since)
    }
}

/// A block: a power-of-two slice of a pool, affine to at most one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: IpNet,
    pub pool: String,
    pub affinity: Option<String>,
    /// Unix seconds of the last change of affinity or allocations.
    pub changed: u64,
    /// Bumped on every assignment and release.
    pub seq: u64,
    pub allocations: BTreeMap<u32, Allocation>,
    /// Free offsets, oldest release first: reuse is FIFO, so a released
    /// address is handed out again as late as possible.
    pub free: VecDeque<FreeSlot>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AffinityState {
    /// Claim in progress: the block may not exist yet.
    Pending,
    Confirmed,
    /// Being released: the block is being deleted.
    PendingDeletion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affinity {
    pub node: String,
    pub cidr: IpNet,
    pub state: AffinityState,
    /// Unix seconds of the last state change.
    pub since: u64,
}

/// Index from a handle to the blocks holding its addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub handle: String,
    /// Block CIDR → number of the handle's addresses in it.
    pub blocks: BTreeMap<IpNet, u32>,
    /// Unix seconds of the last change: `gc` leaves recent records alone,
    /// as an assignment may be between its handle and block writes.
    #[serde(default)]
    pub updated: u64,
}

impl Handle {
    pub fn total(&self) -> u32 {
        self.blocks.values().sum()
    }
}

/// A node of the cluster: its labels (for pool and BGP peer node
/// selectors) and what petreld registers for the BGP mesh. One record per
/// node, written by its petreld (addresses, AS) and by operators (labels).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The node's addresses with prefix lengths; the mesh peers with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
    /// The node's AS when it differs from the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// Set on route reflectors: their cluster id (RFC 4456 §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_reflector_cluster_id: Option<std::net::Ipv4Addr>,
}
