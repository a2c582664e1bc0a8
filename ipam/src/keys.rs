//! The key layout under `/petrel/` (documented in docs/datastore.md). One
//! record per key, so that every change is a single compare-and-swap.

use ipnet::IpNet;

pub const ROOT: &str = "/petrel/ipam/v1/";
/// Settings that every assignment reads: the IPAM config and the pools,
/// under one prefix so that one list fetches both.
pub const SETTINGS: &str = "/petrel/ipam/v1/config/";
pub const CONFIG: &str = "/petrel/ipam/v1/config/ipam";
pub const POOLS: &str = "/petrel/ipam/v1/config/pools/";
pub const BLOCKS: &str = "/petrel/ipam/v1/blocks/";
pub const AFFINITIES: &str = "/petrel/ipam/v1/affinities/";
pub const HANDLES: &str = "/petrel/ipam/v1/handles/";
pub const NODES: &str = "/petrel/ipam/v1/nodes/";
/// The borrowed-address index: `borrowed/<node>/<addr>` exists while
/// `<node>` holds `<addr>` in a block not affine to it, so a node finds its
/// borrowed addresses without reading every block (docs/datastore.md).
pub const BORROWED: &str = "/petrel/ipam/v1/borrowed/";
/// Migrations of the layout: one record each, written when done.
pub const MIGRATIONS: &str = "/petrel/ipam/v1/migrations/";
pub const MIGRATION_BORROWED_INDEX: &str = "/petrel/ipam/v1/migrations/borrowed-index";

/// `10.0.0.0/26` → `10.0.0.0-26`: keys stay one path segment.
pub fn cidr_segment(cidr: &IpNet) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix_len())
}

pub fn pool(name: &str) -> String {
    format!("{POOLS}{name}")
}

pub fn block(cidr: &IpNet) -> String {
    format!("{BLOCKS}{}", cidr_segment(cidr))
}

pub fn node_affinities(node: &str) -> String {
    format!("{AFFINITIES}{node}/")
}

pub fn affinity(node: &str, cidr: &IpNet) -> String {
    format!("{AFFINITIES}{node}/{}", cidr_segment(cidr))
}

pub fn handle(handle: &str) -> String {
    format!("{HANDLES}{handle}")
}

pub fn node(name: &str) -> String {
    format!("{NODES}{name}")
}

pub fn node_borrowed(node: &str) -> String {
    format!("{BORROWED}{node}/")
}

pub fn borrowed(node: &str, addr: &std::net::IpAddr) -> String {
    format!("{BORROWED}{node}/{addr}")
}

/// The address of a borrowed-index key.
pub fn parse_borrowed(key: &str) -> Option<(String, std::net::IpAddr)> {
    let (node, addr) = key.strip_prefix(BORROWED)?.rsplit_once('/')?;
    Some((node.to_string(), addr.parse().ok()?))
}

/// The block CIDR of a block key, if it is one.
pub fn parse_block(key: &str) -> Option<IpNet> {
    let seg = key.strip_prefix(BLOCKS)?;
    let (addr, len) = seg.rsplit_once('-')?;
    IpNet::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn block_keys_round_trip() {
        for c in ["10.0.0.64/26", "fd00::40/122"] {
            let n: ipnet::IpNet = c.parse().unwrap();
            assert_eq!(super::parse_block(&super::block(&n)), Some(n));
        }
        assert_eq!(super::parse_block("/petrel/ipam/v1/blocks/nonsense"), None);
    }
}
