//! Fast external failover: the session of a directly connected peer ends
//! the moment the link it is reached through goes down, instead of at the
//! end of its hold time. FRR does this by default (`bgp
//! fast-external-failover`, doc/user/bgp.rst; `bgp_zebra.c` stops the
//! single-hop peers of an interface that goes down), and so does BIRD
//! (`check link`, doc/bird.sgml: "when link disappears ... the BGP session
//! is immediately shut down"; on by default for direct sessions). It
//! matters more to petreld than to most: routes through kernel nexthop
//! objects vanish with the link's carrier, so until the session ends the
//! Loc-RIB keeps a best path the kernel no longer has and an alternative
//! path is never installed.
//!
//! A peer is *directly connected* when its address lies in a connected
//! network of a local interface (the longest such network decides the
//! link) and its session is single-hop: not declared multi-hop
//! (`ttl_security` above 1 hop, or multi-hop BFD). iBGP peers count too,
//! unlike FRR's default: petrel's mesh peers are the other nodes on the
//! node's own L2 link, their routes' next hops lie on that link, and a
//! loopback-peered iBGP session (the case FRR's default spares) is not on
//! a connected network anyway.
//!
//! A peer's link is *down* when every link holding that network is not
//! usable (administratively down or without carrier); a link that loses
//! its addresses while down (IPv6 forgets them on an administrative down)
//! stays the peer's. While down the peer is held Idle; when the link is
//! back (or gone for good: no connected network holds the peer any more)
//! it starts again. A peer whose network goes away while its link is up
//! (the address removed, the link deleted) has its session dropped once,
//! as BIRD's "neighbor lost", and then retries as usual.
//!
//! [`Watch`] is the sans-IO part (links, addresses, each peer's [`Reach`],
//! what to tell the speaker); [`run`] the driver: a netlink socket of its
//! own on the link and address groups (dumped at start and after an
//! overrun, the kernel's buffer being the only queue), the peers from
//! [`crate::intent::Intent::watch_peers`], and the speaker's link calls,
//! which never wait.

use crate::fib::monitor::{self, Event};
use crate::fib::msg::{AddrInfo, LinkInfo};
use petrel_bgp::speaker::{PeerSettings, Speaker};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How a peer is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// On a connected network of this usable link (by ifindex).
    Up(u32),
    /// On a connected network of this link, which is down.
    Down(u32),
    /// On no connected network.
    NotConnected,
}

/// What the speaker is told about one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// [`Speaker::link_down`]: drop the session, hold it.
    Down,
    /// [`Speaker::link_up`]: let it start again.
    Up,
    /// [`Speaker::link_lost`]: drop the session once.
    Lost,
}

/// Whether fast external failover applies to the peer: a single-hop
/// session (a directly connected address is checked by [`Watch`]).
pub(crate) fn single_hop(p: &PeerSettings) -> bool {
    p.ttl_security.is_none_or(|hops| hops <= 1) && !p.bfd.as_ref().is_some_and(|b| b.multihop)
}

/// The links and addresses of the kernel, and what each watched peer was
/// told last.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    links: HashMap<u32, LinkInfo>,
    addrs: Vec<AddrInfo>,
    reach: BTreeMap<IpAddr, Reach>,
}

impl Watch {
    /// Replaces the links and addresses (a dump).
    pub(crate) fn reset(&mut self, links: Vec<LinkInfo>, addrs: Vec<AddrInfo>) {
        self.links = links.into_iter().map(|l| (l.ifindex, l)).collect();
        self.addrs = addrs;
    }

    /// Applies notifications in order; false on an overrun (dump again).
    pub(crate) fn apply(&mut self, events: &[Event]) -> bool {
        for ev in events {
            match ev {
                Event::Link { deleted, link } => {
                    if *deleted {
                        self.links.remove(&link.ifindex);
                        self.addrs.retain(|a| a.ifindex != link.ifindex);
                    } else {
                        self.links.insert(link.ifindex, link.clone());
                    }
                }
                Event::Addr { deleted, addr } => {
                    self.addrs
                        .retain(|a| !(a.ifindex == addr.ifindex && a.net == addr.net));
                    if !deleted {
                        self.addrs.push(addr.clone());
                    }
                }
                Event::Overrun => return false,
                Event::Route { .. } | Event::Nexthop { .. } => {}
            }
        }
        true
    }

    /// How `peer` is reached now; `before` is what it was, so that a down
    /// link that dropped its addresses stays the peer's.
    pub(crate) fn reach(&self, peer: IpAddr, before: Option<Reach>) -> Reach {
        let holding = self
            .addrs
            .iter()
            .filter(|a| a.net.contains(&peer) && a.net.addr() != peer);
        let Some(longest) = holding.clone().map(|a| a.net.prefix_len()).max() else {
            return match before {
                Some(Reach::Up(i) | Reach::Down(i))
                    if self.links.get(&i).is_some_and(|l| !l.usable()) =>
                {
                    Reach::Down(i)
                }
                _ => Reach::NotConnected,
            };
        };
        let mut on: Vec<u32> = holding
            .filter(|a| a.net.prefix_len() == longest)
            .map(|a| a.ifindex)
            .collect();
        on.sort_unstable();
        // An address whose link is unknown (not dumped yet) counts as up:
        // a session is never dropped on a guess.
        let usable = |i: &u32| self.links.get(i).is_none_or(|l| l.usable());
        match on.iter().find(|i| usable(i)) {
            Some(i) => Reach::Up(*i),
            None => Reach::Down(on[0]),
        }
    }

    /// What to tell the speaker, given the peers in effect (address →
    /// [`single_hop`]). A peer held down that is no longer watched (removed,
    /// or now multi-hop) is let go.
    pub(crate) fn update(&mut self, peers: &BTreeMap<IpAddr, bool>) -> Vec<(IpAddr, Act)> {
        let mut acts = Vec::new();
        let gone: Vec<IpAddr> = self
            .reach
            .keys()
            .filter(|a| !peers.get(a).copied().unwrap_or(false))
            .copied()
            .collect();
        for a in gone {
            if let Some(Reach::Down(_)) = self.reach.remove(&a) {
                acts.push((a, Act::Up));
            }
        }
        for (addr, _) in peers.iter().filter(|(_, single_hop)| **single_hop) {
            let before = self.reach.get(addr).copied();
            let now = self.reach(*addr, before);
            if let Some(act) = decide(before, now) {
                acts.push((*addr, act));
            }
            self.reach.insert(*addr, now);
        }
        acts
    }

    fn link_name(&self, r: Option<&Reach>) -> String {
        match r {
            Some(Reach::Up(i) | Reach::Down(i)) => self
                .links
                .get(i)
                .map_or_else(|| format!("#{i}"), |l| l.name.clone()),
            _ => "-".into(),
        }
    }
}

/// A peer's change of [`Reach`] as a speaker call (`before` is `None`
/// for a peer seen the first time: a down link then holds it at once).
pub(crate) fn decide(before: Option<Reach>, now: Reach) -> Option<Act> {
    match (before, now) {
        (Some(Reach::Down(_)), Reach::Down(_)) => None,
        (_, Reach::Down(_)) => Some(Act::Down),
        (Some(Reach::Down(_)), _) => Some(Act::Up),
        (Some(Reach::Up(_)), Reach::NotConnected) => Some(Act::Lost),
        _ => None,
    }
}

/// Follows the kernel's links and addresses and the peers in effect, and
/// tells the speaker which peers' links are down. Returns when the peers'
/// sender is gone (petreld stops).
pub(crate) async fn run(
    speaker: Speaker,
    mut peers: watch::Receiver<BTreeMap<IpAddr, PeerSettings>>,
) {
    let mut mon = match monitor::Monitor::open_links() {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "cannot watch links: fast external failover is off");
            return;
        }
    };
    let mut w = Watch::default();
    dump(&mut w);
    loop {
        let eligible: BTreeMap<IpAddr, bool> = peers
            .borrow_and_update()
            .iter()
            .map(|(a, p)| (*a, single_hop(p)))
            .collect();
        for (addr, act) in w.update(&eligible) {
            let link = w.link_name(w.reach.get(&addr));
            match act {
                Act::Down => {
                    warn!(peer = %addr, %link, "link down: holding the session until the link is back (fast external failover)");
                    speaker.link_down(addr);
                }
                Act::Up => {
                    info!(peer = %addr, %link, "link up: the session may start again");
                    speaker.link_up(addr);
                }
                Act::Lost => {
                    warn!(peer = %addr, "the peer left the connected networks: dropping its session (fast external failover)");
                    speaker.link_lost(addr);
                }
            }
        }
        tokio::select! {
            r = mon.next() => match r {
                Ok(events) => {
                    if !w.apply(&events) {
                        warn!("link notifications lost: reading the links again");
                        dump(&mut w);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "link monitor failed: reading the links again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    dump(&mut w);
                }
            },
            r = peers.changed() => if r.is_err() {
                return;
            },
        }
    }
}

/// Reads every link and address (a blocking netlink dump, short).
fn dump(w: &mut Watch) {
    match tokio::task::block_in_place(monitor::links_and_addrs) {
        Ok((links, addrs)) => w.reset(links, addrs),
        Err(e) => {
            warn!(error = %e, "cannot read the links; fast external failover works from what it knew")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ifindex: u32, name: &str, up: bool, carrier: bool) -> LinkInfo {
        LinkInfo {
            ifindex,
            name: name.into(),
            mtu: 1500,
            up,
            carrier,
        }
    }

    fn addr(ifindex: u32, net: &str) -> AddrInfo {
        AddrInfo {
            ifindex,
            net: net.parse().unwrap(),
            flags: 0,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The node of the peer-death scenario: eth0 (10.0.0.1/24, peer A
    /// 10.0.0.11), eth1 (10.0.1.1/24, peer B 10.0.1.12, and fd00:1::1/64),
    /// lo; a loopback-peered iBGP peer 192.0.2.9 on no connected network.
    fn node() -> Watch {
        let mut w = Watch::default();
        w.reset(
            vec![
                link(1, "lo", true, true),
                link(2, "eth0", true, true),
                link(3, "eth1", true, true),
            ],
            vec![
                addr(1, "127.0.0.1/8"),
                addr(2, "10.0.0.1/24"),
                addr(3, "10.0.1.1/24"),
                addr(3, "fd00:1::1/64"),
            ],
        );
        w
    }

    fn peers(list: &[(&str, bool)]) -> BTreeMap<IpAddr, bool> {
        list.iter().map(|(a, s)| (ip(a), *s)).collect()
    }

    fn link_ev(l: LinkInfo) -> Event {
        Event::Link {
            deleted: false,
            link: l,
        }
    }

    #[test]
    fn single_hop_unless_declared_multi_hop() {
        let mut p = PeerSettings::new(ip("10.0.0.11"), 65001);
        assert!(single_hop(&p));
        p.ttl_security = Some(1);
        assert!(single_hop(&p));
        p.ttl_security = Some(2);
        assert!(!single_hop(&p));
        p.ttl_security = None;
        p.bfd = Some(petrel_bgp::speaker::BfdSettings {
            min_rx: Duration::from_millis(300),
            min_tx: Duration::from_millis(300),
            multiplier: 3,
            multihop: true,
            auth: None,
        });
        assert!(!single_hop(&p));
    }

    /// Carrier lost on eth0: only A, directly connected and single-hop, is
    /// dropped; B (another link), the loopback peer and a multi-hop peer
    /// on eth0's network are not. Nothing is said while nothing changes.
    /// The carrier back: A is let go again.
    #[test]
    fn carrier_loss_drops_the_peers_on_that_link_only() {
        let mut w = node();
        let ps = peers(&[
            ("10.0.0.11", true),
            ("10.0.0.12", false),
            ("10.0.1.12", true),
            ("fd00:1::2", true),
            ("192.0.2.9", true),
        ]);
        assert_eq!(w.update(&ps), vec![]);
        assert!(w.apply(&[link_ev(link(2, "eth0", true, false))]));
        assert_eq!(w.update(&ps), vec![(ip("10.0.0.11"), Act::Down)]);
        assert_eq!(w.update(&ps), vec![], "said once");
        assert!(w.apply(&[link_ev(link(2, "eth0", true, true))]));
        assert_eq!(w.update(&ps), vec![(ip("10.0.0.11"), Act::Up)]);
    }

    /// Administratively down counts as down; IPv6 forgets its addresses
    /// then, and the peer stays held on that link until it is back up; a
    /// static address not restored leaves the peer on no connected
    /// network, and it is let go to retry as usual.
    #[test]
    fn admin_down_holds_through_lost_addresses() {
        let mut w = node();
        let ps = peers(&[("fd00:1::2", true), ("10.0.1.12", true)]);
        assert_eq!(w.update(&ps), vec![]);
        assert!(w.apply(&[
            link_ev(link(3, "eth1", false, false)),
            Event::Addr {
                deleted: true,
                addr: addr(3, "fd00:1::1/64"),
            },
        ]));
        let mut acts = w.update(&ps);
        acts.sort_by_key(|a| a.0);
        assert_eq!(
            acts,
            vec![(ip("10.0.1.12"), Act::Down), (ip("fd00:1::2"), Act::Down)]
        );
        assert!(w.apply(&[link_ev(link(3, "eth1", true, true))]));
        let mut acts = w.update(&ps);
        acts.sort_by_key(|a| a.0);
        assert_eq!(
            acts,
            vec![(ip("10.0.1.12"), Act::Up), (ip("fd00:1::2"), Act::Up)]
        );
        assert_eq!(w.reach.get(&ip("fd00:1::2")), Some(&Reach::NotConnected));
    }

    /// The peer's network removed while its link is up (address deleted,
    /// or the link deleted): dropped once, not held.
    #[test]
    fn a_peer_leaving_the_connected_networks_is_dropped_once() {
        let mut w = node();
        let ps = peers(&[("10.0.0.11", true), ("10.0.1.12", true)]);
        w.update(&ps);
        assert!(w.apply(&[Event::Addr {
            deleted: true,
            addr: addr(2, "10.0.0.1/24"),
        }]));
        assert_eq!(w.update(&ps), vec![(ip("10.0.0.11"), Act::Lost)]);
        assert_eq!(w.update(&ps), vec![]);
        assert!(w.apply(&[Event::Link {
            deleted: true,
            link: link(3, "eth1", true, true),
        }]));
        assert_eq!(w.update(&ps), vec![(ip("10.0.1.12"), Act::Lost)]);
    }

    /// The longest connected network decides the link; the same network
    /// on two links is down only when both are.
    #[test]
    fn longest_network_and_shared_networks() {
        let mut w = node();
        // A /16 on eth1 also holds 10.0.0.11; eth0's /24 is longer.
        w.addrs.push(addr(3, "10.0.0.2/16"));
        // 10.0.5.0/24 on both eth0 and eth1.
        w.addrs.push(addr(2, "10.0.5.1/24"));
        w.addrs.push(addr(3, "10.0.5.2/24"));
        assert_eq!(w.reach(ip("10.0.0.11"), None), Reach::Up(2));
        assert_eq!(w.reach(ip("10.0.5.9"), None), Reach::Up(2));
        w.apply(&[link_ev(link(2, "eth0", true, false))]);
        assert_eq!(w.reach(ip("10.0.0.11"), None), Reach::Down(2));
        assert_eq!(w.reach(ip("10.0.5.9"), None), Reach::Up(3));
        // Our own address is no peer's network.
        assert_eq!(w.reach(ip("fd00:1::1"), None), Reach::NotConnected);
    }

    /// A peer whose link is down when it is first seen (petreld starting,
    /// or the peer added) is held at once; one removed, or turned
    /// multi-hop, while held is let go.
    #[test]
    fn held_from_the_start_and_let_go_when_no_longer_watched() {
        let mut w = node();
        w.apply(&[link_ev(link(2, "eth0", true, false))]);
        let ps = peers(&[("10.0.0.11", true)]);
        assert_eq!(w.update(&ps), vec![(ip("10.0.0.11"), Act::Down)]);
        assert_eq!(
            w.update(&peers(&[("10.0.0.11", false)])),
            vec![(ip("10.0.0.11"), Act::Up)]
        );
        assert_eq!(w.update(&ps), vec![(ip("10.0.0.11"), Act::Down)]);
        assert_eq!(w.update(&peers(&[])), vec![(ip("10.0.0.11"), Act::Up)]);
    }

    #[test]
    fn an_overrun_asks_for_a_dump() {
        let mut w = node();
        assert!(!w.apply(&[Event::Overrun]));
    }
}
