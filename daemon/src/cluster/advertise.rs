//! What one node advertises, derived from IPAM's blocks and the cluster's
//! BGP records: a pure function, like the peer set.
//!
//! - Each block affine to this node with a confirmed affinity, as one
//!   aggregate, with a local blackhole: a packet for an address of the
//!   block that no pod holds is dropped here instead of bouncing back to
//!   the router that sent it (a loop until the TTL runs out).
//! - Nothing more specific inside the node's own blocks.
//! - Addresses this node borrowed from blocks of other nodes (or of none),
//!   as host routes: the block's owner advertises the aggregate, the
//!   longest match brings the borrowed address here.
//! - Service ranges every node advertises, and the addresses of
//!   local-only services while this node has an endpoint of them.

use super::model::{BgpConfig, Service};
use ipnet::IpNet;
use petrel_bgp::wire::Prefix;
use petrel_ipam::model::{Affinity, AffinityState, Block};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Why a prefix is advertised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// One of the node's blocks: also blackholed locally.
    Block,
    /// A host route for a borrowed address.
    Borrowed,
    /// A service address or range.
    Service,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Block => "block",
            Reason::Borrowed => "borrowed",
            Reason::Service => "service",
        }
    }
}

pub fn prefix_of(n: &IpNet) -> Option<Prefix> {
    Prefix::new(n.network(), n.prefix_len())
}

/// The prefixes this node originates, each with why.
///
/// `blocks` needs only the node's own blocks and `borrowed` is the node's
/// borrowed-address index; other blocks may be passed (their allocations of
/// this node count as borrowed too, as before the index).
pub fn derive(
    node: &str,
    blocks: &[Block],
    affinities: &[Affinity],
    borrowed: &[IpAddr],
    cfg: &BgpConfig,
    services: &[Service],
) -> BTreeMap<Prefix, Reason> {
    let mut out = BTreeMap::new();
    let own: Vec<IpNet> = blocks
        .iter()
        .filter(|b| {
            b.affinity.as_deref() == Some(node)
                && affinities.iter().any(|a| {
                    a.node == node && a.cidr == b.cidr && a.state == AffinityState::Confirmed
                })
        })
        .map(|b| b.cidr)
        .collect();
    for addr in borrowed {
        // Inside one of the node's own blocks the aggregate covers it (a
        // block claimed after the address was borrowed from it unaffine).
        if own.iter().any(|c| c.contains(addr)) {
            continue;
        }
        if let Some(p) = Prefix::new(*addr, if addr.is_ipv4() { 32 } else { 128 }) {
            out.insert(p, Reason::Borrowed);
        }
    }
    for b in blocks {
        let mine = b.affinity.as_deref() == Some(node);
        let confirmed = affinities
            .iter()
            .any(|a| a.node == node && a.cidr == b.cidr && a.state == AffinityState::Confirmed);
        if mine && confirmed {
            if let Some(p) = prefix_of(&b.cidr) {
                out.insert(p, Reason::Block);
            }
            continue;
        }
        if mine {
            // Pending or being released: the claim or release is not
            // through; the node's own allocations from it are not
            // advertised either, which is right while it is settling.
            continue;
        }
        for (ord, a) in &b.allocations {
            if a.attrs.node.as_deref() == Some(node) {
                let addr = b.addr(*ord);
                if let Some(p) = Prefix::new(addr, if addr.is_ipv4() { 32 } else { 128 }) {
                    out.insert(p, Reason::Borrowed);
                }
            }
        }
    }
    for n in cfg
        .service_cluster_ips
        .iter()
        .chain(&cfg.service_external_ips)
        .chain(&cfg.service_loadbalancer_ips)
    {
        if let Some(p) = prefix_of(n) {
            out.entry(p).or_insert(Reason::Service);
        }
    }
    for s in services {
        if s.local_only && !s.endpoint_nodes.iter().any(|n| n == node) {
            continue;
        }
        for n in &s.addresses {
            if let Some(p) = prefix_of(n) {
                out.entry(p).or_insert(Reason::Service);
            }
        }
    }
    out
}

pub use crate::control::ServiceRow;

/// What this node does with every service address and range, and why; the
/// same rules as [`derive`].
pub fn service_rows(node: &str, cfg: &BgpConfig, services: &[Service]) -> Vec<ServiceRow> {
    let mut rows = Vec::new();
    for (kind, nets) in [
        ("cluster-ip range", &cfg.service_cluster_ips),
        ("external-ip range", &cfg.service_external_ips),
        ("load-balancer range", &cfg.service_loadbalancer_ips),
    ] {
        for n in nets {
            rows.push(ServiceRow {
                service: format!("({kind})"),
                address: n.to_string(),
                advertised: true,
                why: "configured range: every node advertises it".into(),
            });
        }
    }
    for s in services {
        let local = s.endpoint_nodes.iter().any(|n| n == node);
        let (advertised, why) = match (s.local_only, local) {
            (false, _) => (true, "traffic policy Cluster: every node".to_string()),
            (true, true) => (
                true,
                "traffic policy Local: this node has a ready or serving endpoint".to_string(),
            ),
            (true, false) => (
                false,
                format!(
                    "traffic policy Local: no endpoint on this node (endpoints on {})",
                    if s.endpoint_nodes.is_empty() {
                        "no node".to_string()
                    } else {
                        s.endpoint_nodes.join(", ")
                    }
                ),
            ),
        };
        for a in &s.addresses {
            rows.push(ServiceRow {
                service: s.name.clone(),
                address: a.to_string(),
                advertised,
                why: why.clone(),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_ipam::model::{Allocation, Attributes};

    fn block(cidr: &str, affinity: Option<&str>) -> Block {
        Block::new(cidr.parse().unwrap(), "pool", affinity.map(String::from), 0)
    }

    fn aff(node: &str, cidr: &str, state: AffinityState) -> Affinity {
        Affinity {
            node: node.into(),
            cidr: cidr.parse().unwrap(),
            state,
            since: 0,
        }
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn confirmed_blocks_and_borrowed_addresses() {
        let mut other = block("10.244.0.64/26", Some("b"));
        other.allocations.insert(
            5,
            Allocation {
                handle: "h".into(),
                attrs: Attributes {
                    node: Some("a".into()),
                    ..Attributes::default()
                },
                seq: 1,
            },
        );
        other.allocations.insert(
            6,
            Allocation {
                handle: "h2".into(),
                attrs: Attributes {
                    node: Some("b".into()),
                    ..Attributes::default()
                },
                seq: 2,
            },
        );
        let blocks = [
            block("10.244.0.0/26", Some("a")),
            block("10.244.0.128/26", Some("a")),
            block("fd00:244::/122", Some("a")),
            other,
        ];
        let affs = [
            aff("a", "10.244.0.0/26", AffinityState::Confirmed),
            aff("a", "10.244.0.128/26", AffinityState::Pending),
            aff("a", "fd00:244::/122", AffinityState::Confirmed),
            aff("b", "10.244.0.64/26", AffinityState::Confirmed),
        ];
        let out = derive("a", &blocks, &affs, &[], &BgpConfig::default(), &[]);
        let want: BTreeMap<Prefix, Reason> = [
            (p("10.244.0.0/26"), Reason::Block),
            (p("fd00:244::/122"), Reason::Block),
            (p("10.244.0.69/32"), Reason::Borrowed),
        ]
        .into();
        assert_eq!(out, want);
    }

    #[test]
    fn services_ranges_and_local_only() {
        let cfg = BgpConfig {
            service_cluster_ips: vec!["10.96.0.0/12".parse().unwrap()],
            ..BgpConfig::default()
        };
        let services = [
            Service {
                name: "lb".into(),
                addresses: vec!["192.0.2.10/32".parse().unwrap()],
                local_only: true,
                endpoint_nodes: vec!["b".into()],
            },
            Service {
                name: "ext".into(),
                addresses: vec!["192.0.2.20/32".parse().unwrap()],
                local_only: false,
                endpoint_nodes: vec![],
            },
        ];
        let a = derive("a", &[], &[], &[], &cfg, &services);
        assert_eq!(
            a.keys().copied().collect::<Vec<_>>(),
            vec![p("10.96.0.0/12"), p("192.0.2.20/32")]
        );
        let b = derive("b", &[], &[], &[], &cfg, &services);
        assert!(b.contains_key(&p("192.0.2.10/32")));
    }

    #[test]
    fn borrowed_index_addresses_are_host_routes_unless_an_own_block_covers_them() {
        let blocks = [block("10.244.0.0/26", Some("a"))];
        let affs = [aff("a", "10.244.0.0/26", AffinityState::Confirmed)];
        let borrowed: Vec<IpAddr> = ["10.244.0.70", "10.244.0.5", "fd00::7"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let out = derive("a", &blocks, &affs, &borrowed, &BgpConfig::default(), &[]);
        let want: BTreeMap<Prefix, Reason> = [
            (p("10.244.0.0/26"), Reason::Block),
            (p("10.244.0.70/32"), Reason::Borrowed),
            (p("fd00::7/128"), Reason::Borrowed),
        ]
        .into();
        assert_eq!(out, want);
    }

    #[test]
    fn service_rows_say_what_is_advertised_and_why() {
        let cfg = BgpConfig {
            service_cluster_ips: vec!["10.96.0.0/12".parse().unwrap()],
            ..BgpConfig::default()
        };
        let services = [
            Service {
                name: "k8s.default.web.external".into(),
                addresses: vec!["198.51.100.1/32".parse().unwrap()],
                local_only: true,
                endpoint_nodes: vec!["b".into()],
            },
            Service {
                name: "k8s.default.api.external".into(),
                addresses: vec!["198.51.100.2/32".parse().unwrap()],
                local_only: false,
                endpoint_nodes: vec![],
            },
        ];
        let rows = service_rows("a", &cfg, &services);
        let adv: Vec<(&str, bool)> = rows
            .iter()
            .map(|r| (r.address.as_str(), r.advertised))
            .collect();
        assert_eq!(
            adv,
            [
                ("10.96.0.0/12", true),
                ("198.51.100.1/32", false),
                ("198.51.100.2/32", true)
            ]
        );
        assert!(rows[1].why.contains("endpoints on b"), "{}", rows[1].why);
        // The rows agree with what derive advertises.
        let origins = derive("a", &[], &[], &[], &cfg, &services);
        for r in &rows {
            let p: Prefix = r.address.parse().unwrap();
            assert_eq!(origins.contains_key(&p), r.advertised, "{r:?}");
        }
        assert!(service_rows("b", &cfg, &services)[1].advertised);
    }
}
