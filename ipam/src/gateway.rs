//! The per-block gateway: one address of each of a node's blocks, held
//! under a well-known handle so that no pod is ever given it, for
//! bridge-style plugins that put a gateway address on the bridge
//! (`isGateway`).
//!
//! The reservation is an ordinary allocation, so `check`, `gc` and the
//! free lists need no special case beyond three rules: CNI GC of pods
//! skips gateway handles, a block holding only gateways counts as empty
//! when its node gives blocks back, and deleting such a block deletes the
//! gateway's handle record in the same transaction.

use crate::keys;
use crate::model::{Attributes, Block};
use ipnet::IpNet;
use std::net::IpAddr;

/// Starts every gateway handle. A CNI network name cannot contain `:`
/// (libcni allows `[a-zA-Z0-9_.-]`), so no pod handle
/// (`<network>.<container>.<ifname>`) is ever taken for a gateway.
pub const PREFIX: &str = "gateway:";

/// `gateway:<node>:<block address>-<prefix length>`.
pub fn handle(node: &str, block: &IpNet) -> String {
    format!("{PREFIX}{node}:{}", keys::cidr_segment(block))
}

pub fn is_gateway_handle(handle: &str) -> bool {
    handle.starts_with(PREFIX)
}

impl Block {
    /// The address `handle` holds here, if any.
    pub fn held_by(&self, handle: &str) -> Option<IpAddr> {
        self.allocations
            .iter()
            .find(|(_, a)| a.handle == handle)
            .map(|(o, _)| self.addr(*o))
    }

    /// Reserve a gateway for `node` under `handle`: the block's network
    /// address + 1 when it is free (what the bridge plugin would pick
    /// itself, and what people expect), else the next address the block
    /// would hand out. `None` when the block has no room.
    pub fn reserve_gateway(
        &mut self,
        handle: &str,
        node: &str,
        now: u64,
        cooldown: u64,
    ) -> Option<IpAddr> {
        let attrs = Attributes {
            node: Some(node.to_string()),
            ..Default::default()
        };
        let second_free = self
            .free
            .iter()
            .any(|s| s.ord == 1 && (s.since == 0 || s.since.saturating_add(cooldown) <= now));
        if self.size() >= 4 && second_free {
            let a = self.addr(1);
            if self.assign_addr(a, handle, &attrs, now) {
                return Some(a);
            }
        }
        self.assign(1, handle, &attrs, now, cooldown).pop()
    }

    /// Nothing but gateways: the block serves no pod and may be given
    /// back with them.
    pub fn holds_only_gateways(&self) -> bool {
        self.allocations
            .values()
            .all(|a| is_gateway_handle(&a.handle))
    }

    /// The gateway handles held here.
    pub fn gateway_handles(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .allocations
            .values()
            .filter(|a| is_gateway_handle(&a.handle))
            .map(|a| a.handle.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_is_network_plus_one_when_free_else_the_next_address() {
        let cidr: IpNet = "10.0.0.64/26".parse().unwrap();
        let h = handle("n1", &cidr);
        assert_eq!(h, "gateway:n1:10.0.0.64-26");
        assert!(is_gateway_handle(&h) && !is_gateway_handle("net.c1.eth0"));
        let mut b = Block::new(cidr, "p", Some("n1".into()), 0);
        assert_eq!(b.reserve_gateway(&h, "n1", 1, 0), Some(ip("10.0.0.65")));
        assert_eq!(b.held_by(&h), Some(ip("10.0.0.65")));
        assert_eq!(b.allocations[&1].attrs.node.as_deref(), Some("n1"));
        assert!(b.holds_only_gateways());
        // Pods then start at the network address and skip the gateway.
        let pods = b.assign(2, "net.c1.eth0", &Attributes::default(), 1, 0);
        assert_eq!(pods, vec![ip("10.0.0.64"), ip("10.0.0.66")]);
        assert!(!b.holds_only_gateways());
        assert_eq!(b.gateway_handles(), vec![h]);

        // A block whose second address a pod holds already.
        let mut b = Block::new(cidr, "p", Some("n1".into()), 0);
        b.assign(2, "net.c1.eth0", &Attributes::default(), 1, 0);
        assert_eq!(
            b.reserve_gateway("gateway:x", "n1", 1, 0),
            Some(ip("10.0.0.66"))
        );
        assert!(b.verify().is_empty());
    }
}
