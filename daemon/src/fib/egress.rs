//! Which link a next hop leaves by, and that link's MTU: what decides
//! whether a route needs RTAX_MTU at all.
//!
//! The kernel takes the MTU of a route without RTA_METRICS from its
//! egress device (`ipv4_mtu`/`ip6_mtu`: the RTAX_MTU metric when set,
//! else `dev->mtu`). So a route MTU equal to the egress link's MTU changes
//! nothing the kernel does, while the metric costs it an allocation per
//! route (and an RCU free at delete): 10–15% of its work installing a full
//! table (docs/benchmarks/history.md). [`Links::redundant`] tells when the metric
//! can be left out; where the egress link is not known for certain (a next
//! hop outside every connected network) the metric is always written.
//!
//! Sans-IO: fed the link and address dumps and the monitor's events.

use super::msg::{AddrInfo, Hop, LinkInfo};
use super::Event;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// Links (MTU, up) and the connected networks of their addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Links {
    /// ifindex → MTU.
    mtu: HashMap<u32, u32>,
    /// The networks of the interfaces' addresses, their link, and how many
    /// of the link's addresses are in each: a next hop without an
    /// interface is resolved by the kernel through these connected routes.
    nets: Vec<(IpNet, u32, u32)>,
}

impl Links {
    pub fn new(links: &[LinkInfo], addrs: &[AddrInfo]) -> Self {
        let mut l = Self::default();
        for link in links {
            l.mtu.insert(link.ifindex, link.mtu);
        }
        for a in addrs {
            l.add_net(a);
        }
        l
    }

    /// True when the network is new.
    fn add_net(&mut self, a: &AddrInfo) -> bool {
        let net = a.net.trunc();
        match self
            .nets
            .iter_mut()
            .find(|(n, i, _)| *n == net && *i == a.ifindex)
        {
            Some((_, _, count)) => {
                *count += 1;
                false
            }
            None => {
                self.nets.push((net, a.ifindex, 1));
                true
            }
        }
    }

    /// True when the network went with its last address.
    fn remove_net(&mut self, a: &AddrInfo) -> bool {
        let net = a.net.trunc();
        let Some(k) = self
            .nets
            .iter()
            .position(|(n, i, _)| *n == net && *i == a.ifindex)
        else {
            return false;
        };
        self.nets[k].2 -= 1;
        if self.nets[k].2 > 0 {
            return false;
        }
        self.nets.swap_remove(k);
        true
    }

    /// Takes a monitor event; true when the egress MTU of some next hop may
    /// have changed (a link's MTU, a link gone, a connected network added
    /// or removed), so that routes decided before must be decided again.
    pub fn on_event(&mut self, ev: &Event) -> bool {
        match ev {
            Event::Link {
                deleted: false,
                link,
            } => self.mtu.insert(link.ifindex, link.mtu) != Some(link.mtu),
            Event::Link {
                deleted: true,
                link,
            } => {
                self.nets.retain(|(_, i, _)| *i != link.ifindex);
                self.mtu.remove(&link.ifindex).is_some()
            }
            Event::Addr {
                deleted: false,
                addr,
            } => self.add_net(addr),
            Event::Addr {
                deleted: true,
                addr,
            } => self.remove_net(addr),
            _ => false,
        }
    }

    /// The link a hop leaves by: its own interface, else the link of the
    /// longest connected network holding the gateway (the kernel resolves
    /// an interface-less gateway only through connected routes).
    pub fn egress(&self, hop: &Hop) -> Option<u32> {
        if hop.ifindex != 0 {
            return Some(hop.ifindex);
        }
        let gw: IpAddr = hop.gateway;
        let mut best: Option<(u8, u32, bool)> = None;
        for (net, ifindex, _) in &self.nets {
            if !net.contains(&gw) {
                continue;
            }
            match best {
                // Two links holding the same longest network: which one the
                // kernel picks is its business; unknown here.
                Some((len, i, _)) if len == net.prefix_len() && i != *ifindex => {
                    best = Some((len, i, true));
                }
                Some((len, _, _)) if len >= net.prefix_len() => {}
                _ => best = Some((net.prefix_len(), *ifindex, false)),
            }
        }
        match best {
            Some((_, i, false)) => Some(i),
            _ => None,
        }
    }

    /// True when RTAX_MTU `mtu` on a route over `hops` changes nothing: every
    /// hop's egress link is known and has exactly that MTU. (A larger metric
    /// than the link's is not redundant: the kernel takes the metric as it
    /// is, not the smaller of the two.)
    pub fn redundant(&self, mtu: u32, hops: &[Hop]) -> bool {
        !hops.is_empty()
            && hops.iter().all(|h| {
                self.egress(h)
                    .and_then(|i| self.mtu.get(&i))
                    .is_some_and(|m| *m == mtu)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ifindex: u32, mtu: u32) -> LinkInfo {
        LinkInfo {
            ifindex,
            name: format!("if{ifindex}"),
            mtu,
            up: true,
            carrier: true,
        }
    }

    fn addr(ifindex: u32, net: &str) -> AddrInfo {
        AddrInfo {
            ifindex,
            net: net.parse().unwrap(),
            flags: 0,
        }
    }

    fn hop(gw: &str, ifindex: u32) -> Hop {
        Hop {
            gateway: gw.parse().unwrap(),
            ifindex,
            onlink: false,
        }
    }

    fn links() -> Links {
        Links::new(
            &[link(2, 1500), link(3, 9000), link(4, 1500)],
            &[
                addr(2, "192.0.2.1/24"),
                addr(2, "2001:db8::1/64"),
                addr(3, "198.51.100.1/24"),
                addr(3, "10.0.0.1/8"),
                addr(4, "10.1.0.1/16"),
            ],
        )
    }

    #[test]
    fn egress_by_interface_or_longest_connected_network() {
        let l = links();
        assert_eq!(l.egress(&hop("192.0.2.9", 0)), Some(2));
        assert_eq!(l.egress(&hop("2001:db8::9", 0)), Some(2));
        assert_eq!(
            l.egress(&hop("10.1.2.3", 0)),
            Some(4),
            "the /16 beats the /8"
        );
        assert_eq!(l.egress(&hop("10.2.2.3", 0)), Some(3));
        assert_eq!(l.egress(&hop("203.0.113.1", 0)), None, "not connected");
        assert_eq!(l.egress(&hop("203.0.113.1", 7)), Some(7), "its own link");
    }

    #[test]
    fn redundant_only_when_every_hop_leaves_by_a_link_of_that_mtu() {
        let l = links();
        assert!(l.redundant(1500, &[hop("192.0.2.9", 0)]));
        assert!(
            !l.redundant(1450, &[hop("192.0.2.9", 0)]),
            "smaller: needed"
        );
        assert!(!l.redundant(1500, &[hop("198.51.100.9", 0)]), "link 9000");
        assert!(!l.redundant(9000, &[hop("192.0.2.9", 0)]), "larger: needed");
        assert!(l.redundant(1500, &[hop("192.0.2.9", 0), hop("10.1.0.2", 0)]));
        assert!(!l.redundant(1500, &[hop("192.0.2.9", 0), hop("10.2.0.2", 0)]));
        assert!(!l.redundant(1500, &[hop("203.0.113.1", 0)]), "unknown");
        assert!(!l.redundant(1500, &[hop("203.0.113.1", 7)]), "unknown MTU");
        assert!(!l.redundant(1500, &[]), "blackhole");
    }

    #[test]
    fn same_network_on_two_links_is_unknown() {
        let mut l = links();
        assert!(l.on_event(&Event::Addr {
            deleted: false,
            addr: addr(4, "192.0.2.200/24"),
        }));
        assert_eq!(l.egress(&hop("192.0.2.9", 0)), None);
        assert!(!l.redundant(1500, &[hop("192.0.2.9", 0)]));
    }

    #[test]
    fn events_change_the_answer() {
        let mut l = links();
        let h = [hop("192.0.2.9", 0)];
        assert!(
            !l.on_event(&Event::Link {
                deleted: false,
                link: link(2, 1500),
            }),
            "same MTU: nothing to redo"
        );
        assert!(l.on_event(&Event::Link {
            deleted: false,
            link: link(2, 1400),
        }));
        assert!(!l.redundant(1500, &h));
        assert!(l.redundant(1400, &h));
        assert!(
            !l.on_event(&Event::Addr {
                deleted: false,
                addr: addr(2, "192.0.2.77/24"),
            }),
            "known network"
        );
        assert!(
            !l.on_event(&Event::Addr {
                deleted: true,
                addr: addr(2, "192.0.2.1/24"),
            }),
            "192.0.2.77 keeps the network"
        );
        assert_eq!(l.egress(&h[0]), Some(2));
        assert!(l.on_event(&Event::Addr {
            deleted: true,
            addr: addr(2, "192.0.2.77/24"),
        }));
        assert_eq!(l.egress(&h[0]), None);
        assert!(l.on_event(&Event::Addr {
            deleted: false,
            addr: addr(2, "192.0.2.1/24"),
        }));
        assert!(l.on_event(&Event::Link {
            deleted: true,
            link: link(2, 1400),
        }));
        assert_eq!(l.egress(&h[0]), None, "its networks went with it");
    }
}
