//! The cluster driver's own gauges and counters, read by the metrics
//! endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

/// This node's IPAM gauges, set by the cluster code, and the cluster
/// driver's counters (the scale harness reads them).
#[derive(Debug, Default)]
pub struct IpamGauges {
    pub(crate) blocks: AtomicU64,
    pub(crate) addresses: AtomicU64,
    /// Full lists of the node's records (start, and after a lost watch).
    pub full_syncs: AtomicU64,
    /// Watch events applied to the local model.
    pub events: AtomicU64,
    /// Times the peers or the routes were derived again.
    pub derivations: AtomicU64,
}

impl IpamGauges {
    /// Affine blocks and allocated addresses of this node.
    pub fn set(&self, blocks: u64, addresses: u64) {
        self.blocks.store(blocks, Ordering::Relaxed);
        self.addresses.store(addresses, Ordering::Relaxed);
    }
}
