//! The peer set of one node, derived from the cluster's records: a pure
//! function, so that every rule (who dials whom, who reflects for whom,
//! which external peers apply) is tested without a datastore or sockets.
//!
//! - **Mesh.** Every pair of nodes peers once per address family both
//!   have, from their first address of that family. Only the node with
//!   the lower address dials; the other is passive. Two nodes dialling
//!   each other at once would go through a connection collision
//!   (RFC 4271 §6.8) on every restart, and during graceful restart the
//!   surviving side would see its held routes raced by a second session.
//! - **Route reflectors.** A node with a cluster id is a reflector: it
//!   peers with every other node, non-reflectors as its clients
//!   (RFC 4456 §6) and other reflectors as ordinary iBGP peers (the
//!   reflectors among themselves are a full mesh). A node without one
//!   peers with the reflectors, and with other plain nodes only when the
//!   mesh is on.
//! - **External peers** apply to every node, to one named node, or to the
//!   nodes whose labels match a selector. A peer whose address is one of
//!   this node's own is skipped.

use super::model::{policy_of, BgpConfig, BgpPeer, Node};
use ipnet::IpNet;
use petrel_bgp::rib::{NextHopMode, SendMode};
use petrel_bgp::speaker::{GracefulRestartSettings, PeerSettings};
use petrel_bgp::wire::family::Family;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// This node, as the derivation needs it.
#[derive(Debug, Clone)]
pub struct LocalNode {
    pub name: String,
    pub addresses: Vec<IpNet>,
    /// The AS this node speaks.
    pub asn: u32,
    pub rr_cluster_id: Option<Ipv4Addr>,
    /// The stored labels (the file's merged with operators').
    pub labels: BTreeMap<String, String>,
    /// Offered to mesh peers and to external peers without their own.
    pub graceful_restart: Option<GracefulRestartSettings>,
}

/// A record that could not be turned into a peer, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub what: String,
    pub why: String,
}

/// The derived peers, by address, and the records skipped.
#[derive(Debug, Default)]
pub struct PeerSet {
    pub peers: BTreeMap<IpAddr, PeerSettings>,
    pub skipped: Vec<Skipped>,
}

fn first_of(addrs: &[IpNet], v6: bool) -> Option<IpAddr> {
    addrs.iter().map(|n| n.addr()).find(|a| a.is_ipv6() == v6)
}

/// A cluster peer before its record or mesh role says more: the speaker's
/// defaults, but the next hop kept (iBGP's rule, RFC 4271 §5.1.3), which
/// the mesh and the records then set for eBGP.
fn base_peer(address: IpAddr, asn: u32) -> PeerSettings {
    PeerSettings {
        next_hop: NextHopMode::Keep,
        ..PeerSettings::new(address, asn)
    }
}

/// Derives this node's peers from the cluster's nodes, configuration and
/// peer records.
pub fn derive(me: &LocalNode, nodes: &[Node], cfg: &BgpConfig, records: &[BgpPeer]) -> PeerSet {
    let mut out = PeerSet::default();
    let own: Vec<IpAddr> = me.addresses.iter().map(|n| n.addr()).collect();
    let i_reflect = me.rr_cluster_id.is_some();
    // Validated when written; a record written around the validation is
    // taken as "off".
    let rr_add_path: Option<SendMode> = cfg
        .route_reflector_add_path
        .as_deref()
        .and_then(|m| m.parse().ok());

    // The mesh's key file is read once per derivation, on this node. A key
    // that cannot be read turns BFD off for the mesh (and says so) rather
    // than the mesh itself: one wrong path in the cluster's configuration
    // must not cut every node off from the others. Without BFD nothing
    // goes unauthenticated; failures are found by the hold timer.
    let mesh_bfd = match cfg.node_mesh_bfd.as_ref().map(|b| b.load()) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err((field, m))) => {
            out.skipped.push(Skipped {
                what: "node mesh BFD".into(),
                why: format!("node_mesh_bfd.{field}: {m}; the mesh runs without BFD"),
            });
            None
        }
    };

    // RFC 8950 in the mesh: the IPv6 sessions' families, and whether they
    // carry IPv4 (then no IPv4 session between nodes with IPv6).
    let mesh_v6_families = cfg
        .node_mesh_ipv6_families
        .as_deref()
        .and_then(|f| crate::config::families_by_name(f).ok());
    let v4_over_v6 = mesh_v6_families
        .as_ref()
        .is_some_and(|f| f.contains(&Family::IPV4_UNICAST));

    for n in nodes.iter().filter(|n| n.name != me.name) {
        let it_reflects = n.route_reflector_cluster_id.is_some();
        let connect = i_reflect || it_reflects || cfg.node_mesh;
        if !connect {
            continue;
        }
        let asn = n.asn.unwrap_or(cfg.asn);
        for v6 in [false, true] {
            let (Some(mine), Some(theirs)) =
                (first_of(&me.addresses, v6), first_of(&n.addresses, v6))
            else {
                continue;
            };
            let both_v6 =
                first_of(&me.addresses, true).is_some() && first_of(&n.addresses, true).is_some();
            if !v6 && v4_over_v6 && both_v6 {
                continue;
            }
            if mine == theirs {
                out.skipped.push(Skipped {
                    what: format!("node {}", n.name),
                    why: format!("registers {theirs}, which is this node's own address"),
                });
                continue;
            }
            let mut p = base_peer(theirs, asn);
            p.port = cfg.listen_port;
            p.local_address = Some(mine);
            // One side dials: the lower address.
            p.passive = mine > theirs;
            p.graceful_restart = me.graceful_restart;
            p.bfd = mesh_bfd.clone();
            if let (true, Some(f)) = (v6, &mesh_v6_families) {
                p.families = f.clone();
            }
            // RFC 4456 §6: a reflector's clients are the non-reflectors.
            p.rr_client = i_reflect && !it_reflects && asn == me.asn;
            p.next_hop = if asn == me.asn {
                NextHopMode::Keep
            } else {
                NextHopMode::SelfAddr
            };
            // RFC 7911 between a reflector and its clients: the reflector
            // sends several paths, the client takes them (its FIB gets the
            // ECMP set when bgp.max_paths allows).
            if let Some(mode) = rr_add_path {
                if p.rr_client {
                    p.add_path.send = p.families.iter().map(|f| (*f, mode)).collect();
                } else if it_reflects && !i_reflect && asn == me.asn {
                    p.add_path.receive = p.families.clone();
                }
            }
            out.peers.insert(theirs, p);
        }
    }

    for r in records {
        let applies = match &r.node {
            Some(node) => *node == me.name,
            None => match petrel_ipam::selector::Selector::parse(&r.node_selector) {
                Ok(s) => r.node_selector.trim().is_empty() || s.matches(&me.labels),
                Err(e) => {
                    out.skipped.push(Skipped {
                        what: format!("peer {}", r.name),
                        why: format!("node selector: {e}"),
                    });
                    false
                }
            },
        };
        if !applies {
            continue;
        }
        if own.contains(&r.address) {
            continue;
        }
        let mut p = base_peer(r.address, r.asn);
        if let Some(f) = &r.families {
            match crate::config::families_by_name(f) {
                Ok(f) => p.families = f,
                Err(e) => {
                    out.skipped.push(Skipped {
                        what: format!("peer {}", r.name),
                        why: e,
                    });
                    continue;
                }
            }
        }
        let ibgp = r.asn == me.asn;
        p.port = r.port.unwrap_or(179);
        p.password = r.password.clone();
        p.passive = r.passive;
        p.hold_time = r.hold_time.unwrap_or(90);
        p.keepalive = r.keepalive;
        p.ttl_security = r.ttl_security;
        // As Calico: a node tells an external router its own routes only;
        // re-advertising what it learned from the other nodes would make
        // the router send their traffic through this node.
        p.local_routes_only = !r.advertise_learned;
        p.next_hop = match r.next_hop.as_deref() {
            Some("self") => NextHopMode::SelfAddr,
            Some("keep") => NextHopMode::Keep,
            // RFC 4271 §5.1.3: our address to eBGP, unchanged to iBGP.
            _ if ibgp => NextHopMode::Keep,
            _ => NextHopMode::SelfAddr,
        };
        if let Some(mode) = r
            .add_path
            .as_deref()
            .and_then(|m| m.parse::<SendMode>().ok())
        {
            p.add_path.send = p.families.iter().map(|f| (*f, mode)).collect();
        }
        if r.add_path_receive {
            p.add_path.receive = p.families.clone();
        }
        p.graceful_restart = match r.restart_time {
            Some(t) => Some(GracefulRestartSettings {
                restart_time: t,
                long_lived_stale_time: None,
                notification: !matches!(me.graceful_restart, Some(g) if !g.notification),
            }),
            None => me.graceful_restart,
        };
        if let Some(Err((field, m))) = r.bfd.as_ref().map(|b| b.validate()) {
            out.skipped.push(Skipped {
                what: format!("peer {}", r.name),
                why: format!("bfd.{field}: {m}"),
            });
            continue;
        }
        // As for the mesh: a key file this node cannot read turns BFD off
        // for the peer, not the peer off.
        p.bfd = match r.bfd.as_ref().map(|b| b.load()) {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err((field, m))) => {
                out.skipped.push(Skipped {
                    what: format!("peer {} BFD", r.name),
                    why: format!("bfd.{field}: {m}; the session runs without BFD"),
                });
                None
            }
        };
        match (policy_of(&r.import), policy_of(&r.export)) {
            (Ok(i), Ok(e)) => {
                p.import = i;
                p.export = e;
            }
            (Err(e), _) | (_, Err(e)) => {
                out.skipped.push(Skipped {
                    what: format!("peer {}", r.name),
                    why: format!("policy: {e}"),
                });
                continue;
            }
        }
        if let Some(mesh) = out.peers.get(&r.address) {
            if mesh.local_address.is_some() && r.node.is_none() {
                out.skipped.push(Skipped {
                    what: format!("peer {}", r.name),
                    why: format!("{} is a node of the mesh", r.address),
                });
                continue;
            }
        }
        out.peers.insert(r.address, p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn node(name: &str, addrs: &[&str]) -> Node {
        Node {
            name: name.into(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ..Node::default()
        }
    }

    fn me(name: &str, addrs: &[&str]) -> LocalNode {
        LocalNode {
            name: name.into(),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            asn: 64512,
            rr_cluster_id: None,
            labels: BTreeMap::new(),
            graceful_restart: Some(GracefulRestartSettings {
                restart_time: 120,
                long_lived_stale_time: None,
                notification: true,
            }),
        }
    }

    fn peer(name: &str, addr: &str, asn: u32) -> BgpPeer {
        BgpPeer {
            name: name.into(),
            address: addr.parse().unwrap(),
            asn,
            node: None,
            node_selector: String::new(),
            port: None,
            password: None,
            hold_time: None,
            keepalive: None,
            restart_time: None,
            ttl_security: None,
            next_hop: None,
            passive: false,
            advertise_learned: false,
            add_path: None,
            add_path_receive: false,
            import: vec![],
            export: vec![],
            bfd: None,
            families: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mesh_is_dialled_from_the_lower_address_only() {
        let nodes = [
            node("a", &["10.0.0.1/24", "fd00::1/64"]),
            node("b", &["10.0.0.2/24", "fd00::2/64"]),
            node("c", &["10.0.0.3/24"]),
        ];
        let cfg = BgpConfig::default();
        let set_b = derive(&me("b", &["10.0.0.2/24", "fd00::2/64"]), &nodes, &cfg, &[]);
        let addrs: Vec<_> = set_b.peers.keys().copied().collect();
        assert_eq!(addrs, vec![ip("10.0.0.1"), ip("10.0.0.3"), ip("fd00::1")]);
        assert!(set_b.peers[&ip("10.0.0.1")].passive, "b > a: a dials");
        assert!(!set_b.peers[&ip("10.0.0.3")].passive, "b < c: b dials");
        assert_eq!(
            set_b.peers[&ip("fd00::1")].families,
            vec![Family::IPV6_UNICAST]
        );
        assert_eq!(
            set_b.peers[&ip("10.0.0.3")].local_address,
            Some(ip("10.0.0.2"))
        );
        // Exactly one side of every pair dials.
        let set_a = derive(&me("a", &["10.0.0.1/24", "fd00::1/64"]), &nodes, &cfg, &[]);
        assert!(!set_a.peers[&ip("10.0.0.2")].passive);
        // The mesh peers are internal, with the node's restart time.
        let p = &set_b.peers[&ip("10.0.0.1")];
        assert_eq!((p.asn, p.next_hop), (64512, NextHopMode::Keep));
        assert_eq!(p.graceful_restart.unwrap().restart_time, 120);
    }

    #[test]
    fn bfd_comes_from_the_mesh_setting_and_the_peer_records() {
        let nodes = [node("a", &["10.0.0.1/24"]), node("b", &["10.0.0.2/24"])];
        let mut cfg = BgpConfig::default();
        let me_a = me("a", &["10.0.0.1/24"]);
        let mut tor = peer("tor", "10.0.0.254", 65000);
        let set = derive(&me_a, &nodes, &cfg, std::slice::from_ref(&tor));
        assert_eq!(set.peers[&ip("10.0.0.2")].bfd, None, "off by default");
        cfg.node_mesh_bfd = Some(crate::config::Bfd::default());
        tor.bfd = Some(crate::config::Bfd {
            min_rx_ms: 100,
            ..Default::default()
        });
        let set = derive(&me_a, &nodes, &cfg, std::slice::from_ref(&tor));
        assert_eq!(
            set.peers[&ip("10.0.0.2")].bfd.as_ref().unwrap().min_rx,
            Duration::from_millis(300)
        );
        assert_eq!(
            set.peers[&ip("10.0.0.254")].bfd.as_ref().unwrap().min_rx,
            Duration::from_millis(100)
        );
        // A record with timers out of range is skipped, and says why.
        tor.bfd = Some(crate::config::Bfd {
            multiplier: 0,
            ..Default::default()
        });
        let set = derive(&me_a, &nodes, &cfg, &[tor]);
        assert!(!set.peers.contains_key(&ip("10.0.0.254")));
        assert!(set.skipped[0].why.contains("bfd.multiplier"));
    }

    #[test]
    fn bfd_auth_keys_are_read_on_the_node_and_a_bad_file_turns_bfd_off() {
        use crate::config::{Bfd, BfdAuth, BfdAuthType};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("mesh.key");
        std::fs::write(&key, "mesh-secret\n").unwrap();
        let auth = |file: std::path::PathBuf| {
            Some(Bfd {
                auth: Some(BfdAuth {
                    kind: BfdAuthType::MeticulousKeyedSha1,
                    key_id: 2,
                    secret_file: file,
                }),
                ..Default::default()
            })
        };
        let nodes = [node("a", &["10.0.0.1/24"]), node("b", &["10.0.0.2/24"])];
        let me_a = me("a", &["10.0.0.1/24"]);
        let cfg = BgpConfig {
            node_mesh_bfd: auth(key.clone()),
            ..BgpConfig::default()
        };
        let mut tor = peer("tor", "10.0.0.254", 65000);
        tor.bfd = auth(key.clone());
        let set = derive(&me_a, &nodes, &cfg, std::slice::from_ref(&tor));
        for addr in ["10.0.0.2", "10.0.0.254"] {
            let s = set.peers[&ip(addr)].bfd.as_ref().unwrap();
            let k = s.auth.as_ref().expect("key loaded");
            assert_eq!((k.key_id, k.secret.as_slice()), (2, &b"mesh-secret"[..]));
        }
        // A key file that cannot be read: the sessions run without BFD
        // (one wrong path must not take the mesh down), and the reason
        // names the field and the file.
        let cfg = BgpConfig {
            node_mesh_bfd: auth(dir.path().join("gone")),
            ..BgpConfig::default()
        };
        tor.bfd = auth(dir.path().join("gone"));
        let set = derive(&me_a, &nodes, &cfg, &[tor]);
        for addr in ["10.0.0.2", "10.0.0.254"] {
            assert_eq!(set.peers[&ip(addr)].bfd, None, "{addr}");
        }
        let why: Vec<&str> = set.skipped.iter().map(|s| s.why.as_str()).collect();
        assert!(
            why.iter()
                .any(|w| w.starts_with("node_mesh_bfd.auth.secret_file") && w.contains("gone")),
            "{why:?}"
        );
        assert!(
            why.iter()
                .any(|w| w.starts_with("bfd.auth.secret_file") && w.contains("gone")),
            "{why:?}"
        );
    }

    #[test]
    fn rfc8950_carries_ipv4_over_the_ipv6_mesh_and_peer_records() {
        let nodes = [
            node("a", &["10.0.0.1/24", "fd00::1/64"]),
            node("b", &["10.0.0.2/24", "fd00::2/64"]),
            node("c", &["10.0.0.3/24"]),
        ];
        let both = vec!["ipv4-unicast".to_string(), "ipv6-unicast".to_string()];
        let cfg = BgpConfig {
            node_mesh_ipv6_families: Some(both.clone()),
            ..BgpConfig::default()
        };
        let mut tor6 = peer("tor6", "fd00::fe", 65000);
        tor6.families = Some(both);
        let set = derive(
            &me("a", &["10.0.0.1/24", "fd00::1/64"]),
            &nodes,
            &cfg,
            &[tor6.clone()],
        );
        // b has IPv6: one session, over IPv6, carrying both families.
        assert!(!set.peers.contains_key(&ip("10.0.0.2")));
        assert_eq!(
            set.peers[&ip("fd00::2")].families,
            [Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        );
        // c has none: its IPv4 session stays, IPv4 only.
        assert_eq!(set.peers[&ip("10.0.0.3")].families, [Family::IPV4_UNICAST]);
        assert_eq!(
            set.peers[&ip("fd00::fe")].families,
            [Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        );
        // Without the setting: a session per family, each its own.
        let set = derive(
            &me("a", &["10.0.0.1/24", "fd00::1/64"]),
            &nodes,
            &BgpConfig::default(),
            &[],
        );
        assert_eq!(set.peers[&ip("10.0.0.2")].families, [Family::IPV4_UNICAST]);
        assert_eq!(set.peers[&ip("fd00::2")].families, [Family::IPV6_UNICAST]);
        // A record with an unknown family is skipped, and says why.
        tor6.families = Some(vec!["ipv4-flowspec".into()]);
        let set = derive(&me("a", &["fd00::1/64"]), &nodes, &cfg, &[tor6]);
        assert!(!set.peers.contains_key(&ip("fd00::fe")));
        assert!(
            set.skipped.iter().any(|s| s.why.contains("ipv4-flowspec")),
            "{:?}",
            set.skipped
        );
    }

    #[test]
    fn mesh_off_leaves_only_external_peers() {
        let nodes = [node("a", &["10.0.0.1/24"]), node("b", &["10.0.0.2/24"])];
        let cfg = BgpConfig {
            node_mesh: false,
            ..BgpConfig::default()
        };
        let set = derive(
            &me("a", &["10.0.0.1/24"]),
            &nodes,
            &cfg,
            &[peer("tor", "10.0.0.254", 65000)],
        );
        let addrs: Vec<_> = set.peers.keys().copied().collect();
        assert_eq!(addrs, vec![ip("10.0.0.254")]);
        let tor = &set.peers[&ip("10.0.0.254")];
        assert_eq!(tor.next_hop, NextHopMode::SelfAddr, "eBGP: next hop self");
    }

    #[test]
    fn reflectors_peer_with_everyone_and_clients_only_with_reflectors() {
        let mut rr = node("rr", &["10.0.0.10/24"]);
        rr.route_reflector_cluster_id = Some("1.1.1.1".parse().unwrap());
        let nodes = [rr, node("a", &["10.0.0.1/24"]), node("b", &["10.0.0.2/24"])];
        let cfg = BgpConfig {
            node_mesh: false,
            ..BgpConfig::default()
        };
        let a = derive(&me("a", &["10.0.0.1/24"]), &nodes, &cfg, &[]);
        assert_eq!(
            a.peers.keys().copied().collect::<Vec<_>>(),
            vec![ip("10.0.0.10")]
        );
        assert!(!a.peers[&ip("10.0.0.10")].rr_client);
        let mut m = me("rr", &["10.0.0.10/24"]);
        m.rr_cluster_id = Some("1.1.1.1".parse().unwrap());
        let r = derive(&m, &nodes, &cfg, &[]);
        assert_eq!(r.peers.len(), 2);
        assert!(r.peers.values().all(|p| p.rr_client));
    }

    #[test]
    fn reflector_add_path_sends_to_clients_and_clients_receive() {
        let mut rr = node("rr", &["10.0.0.10/24"]);
        rr.route_reflector_cluster_id = Some("1.1.1.1".parse().unwrap());
        let mut rr2 = node("rr2", &["10.0.0.11/24"]);
        rr2.route_reflector_cluster_id = Some("1.1.1.1".parse().unwrap());
        let nodes = [rr, rr2, node("a", &["10.0.0.1/24"])];
        let cfg = BgpConfig {
            node_mesh: false,
            route_reflector_add_path: Some("all".into()),
            ..BgpConfig::default()
        };
        let v4 = Family::IPV4_UNICAST;
        let a = derive(&me("a", &["10.0.0.1/24"]), &nodes, &cfg, &[]);
        let to_rr = &a.peers[&ip("10.0.0.10")].add_path;
        assert_eq!(
            (to_rr.receive.as_slice(), to_rr.send.as_slice()),
            ([v4].as_slice(), [].as_slice())
        );
        let mut m = me("rr", &["10.0.0.10/24"]);
        m.rr_cluster_id = Some("1.1.1.1".parse().unwrap());
        let r = derive(&m, &nodes, &cfg, &[]);
        assert_eq!(
            r.peers[&ip("10.0.0.1")].add_path.send,
            [(v4, SendMode::All)]
        );
        // Between reflectors: one path, as before.
        assert!(r.peers[&ip("10.0.0.11")].add_path.is_empty());
        // Off: nothing anywhere.
        let cfg = BgpConfig {
            node_mesh: false,
            ..BgpConfig::default()
        };
        let r = derive(&m, &nodes, &cfg, &[]);
        assert!(r.peers.values().all(|p| p.add_path.is_empty()));
        // An external peer record asks for it itself.
        let mut tor = peer("tor", "10.0.0.254", 64512);
        tor.add_path = Some("ecmp".into());
        tor.add_path_receive = true;
        let a = derive(&me("a", &["10.0.0.1/24"]), &nodes, &cfg, &[tor]);
        let t = &a.peers[&ip("10.0.0.254")].add_path;
        assert_eq!(
            (t.send.as_slice(), t.receive.as_slice()),
            ([(v4, SendMode::Ecmp)].as_slice(), [v4].as_slice())
        );
    }

    #[test]
    fn external_peers_by_node_and_selector() {
        let nodes = [node("a", &["10.0.0.1/24"])];
        let cfg = BgpConfig::default();
        let mut only_b = peer("tor-b", "10.0.1.254", 65000);
        only_b.node = Some("b".into());
        let mut rack_a = peer("tor-a", "10.0.0.254", 65000);
        rack_a.node_selector = "rack == 'a'".into();
        rack_a.restart_time = Some(30);
        rack_a.password = Some("pw".into());
        let mut m = me("a", &["10.0.0.1/24"]);
        let none = derive(&m, &nodes, &cfg, &[only_b.clone(), rack_a.clone()]);
        assert!(none.peers.is_empty());
        m.labels.insert("rack".into(), "a".into());
        let set = derive(&m, &nodes, &cfg, &[only_b, rack_a]);
        let tor = &set.peers[&ip("10.0.0.254")];
        assert_eq!(tor.graceful_restart.unwrap().restart_time, 30);
        assert_eq!(tor.password.as_deref(), Some("pw"));
        assert!(
            tor.local_routes_only,
            "external peers get the node's own routes only"
        );
        assert_eq!(set.peers.len(), 1);
    }

    #[test]
    fn own_address_and_bad_records_are_skipped_with_a_reason() {
        let nodes = [node("a", &["10.0.0.1/24"]), node("ghost", &["10.0.0.1/24"])];
        let mut bad = peer("bad", "10.0.0.254", 65000);
        bad.node_selector = "rack ==".into();
        let set = derive(
            &me("a", &["10.0.0.1/24"]),
            &nodes,
            &BgpConfig::default(),
            &[peer("self", "10.0.0.1", 65000), bad],
        );
        assert!(set.peers.is_empty());
        assert_eq!(set.skipped.len(), 2, "{:?}", set.skipped);
    }
}
