//! The RIB driven end to end with plain values: UPDATEs in, Loc-RIB changes
//! and encoded UPDATEs out. Sent messages are decoded and printed one line
//! per prefix, so each expectation reads as what a peer would see.

use super::*;
use crate::policy::Policy;
use crate::wire::attr::community::{NO_ADVERTISE, NO_EXPORT, NO_LLGR};
use crate::wire::attr::{Community, RawAttribute, FLAG_OPTIONAL, FLAG_PARTIAL, FLAG_TRANSITIVE};
use crate::wire::nlri::Nlri;
use crate::wire::{Message, Update};

pub(crate) const LOCAL_AS: u32 = 64512;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

pub(crate) fn rib() -> Rib {
    Rib::new(RibConfig::new(LOCAL_AS, ROUTER_ID))
}

pub(crate) fn session(router_id: [u8; 4]) -> Session {
    Session {
        router_id: Ipv4Addr::from(router_id),
        codec: CodecContext::four_octet(),
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        local_v6: Some("2001:db8::1".parse().unwrap()),
        llgr: false,
    }
}

/// Adds a peer at 192.0.2.`n` and brings its session up.
pub(crate) fn peer(rib: &mut Rib, n: u8, asn: u32, f: impl FnOnce(&mut PeerConfig)) -> PeerId {
    let mut cfg = PeerConfig::new(IpAddr::from([192, 0, 2, n]), asn);
    f(&mut cfg);
    let id = rib.add_peer(cfg).unwrap();
    rib.peer_up(id, session([10, 0, 0, n]));
    id
}

pub(crate) fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

pub(crate) fn attrs(path: &[u32], next_hop: [u8; 4]) -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(path)),
        next_hop: Some(Ipv4Addr::from(next_hop)),
        ..Default::default()
    }
}

pub(crate) fn announce(a: PathAttributes, prefixes: &[&str]) -> Update {
    let mut u = Update::new(a);
    let ps: Vec<Prefix> = prefixes.iter().map(|s| p(s)).collect();
    u.nlri = Nlri::from_prefixes(Family::IPV4_UNICAST, &ps);
    u
}

pub(crate) fn withdraw(prefixes: &[&str]) -> Update {
    let mut u = Update::new(PathAttributes::default());
    let ps: Vec<Prefix> = prefixes.iter().map(|s| p(s)).collect();
    u.withdrawn = Nlri::from_prefixes(Family::IPV4_UNICAST, &ps);
    u
}

/// One line per prefix of every UPDATE sent to `to`.
pub(crate) fn sent(out: &Output, to: PeerId) -> Vec<String> {
    let ctx = CodecContext::four_octet();
    let mut lines = Vec::new();
    for (_, m) in out.messages.iter().filter(|(p, _)| *p == to) {
        let Ok(Message::Update(u)) = Message::decode(&ctx, m) else {
            panic!("not an UPDATE: {m:?}");
        };
        if let Some(f) = u.end_of_rib_family() {
            lines.push(format!("eor {f}"));
            continue;
        }
        for (_, e) in u.withdrawals() {
            lines.push(format!("-{}", e.prefix));
        }
        let nh = u
            .mp_reach
            .as_ref()
            .map(|m| m.next_hop.to_string())
            .or(u.attrs.next_hop.map(|n| n.to_string()))
            .unwrap_or_default();
        for (_, e) in u.announced() {
            lines.push(format!("+{} {}", e.prefix, describe(&u.attrs, &nh)));
        }
    }
    lines
}

pub(crate) fn describe(a: &PathAttributes, nh: &str) -> String {
    let mut s = format!(
        "path [{}] nh {nh}",
        a.as_path
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default()
    );
    if let Some(lp) = a.local_pref {
        s += &format!(" lp {lp}");
    }
    if let Some(m) = a.med {
        s += &format!(" med {m}");
    }
    if let Some(c) = &a.communities {
        let c: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        s += &format!(" comm {}", c.join(","));
    }
    if let Some(o) = a.originator_id {
        s += &format!(" originator {o}");
    }
    if let Some(c) = &a.cluster_list {
        let c: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        s += &format!(" cluster {}", c.join(","));
    }
    for o in &a.rare().other {
        s += &format!(" attr{}/{:#x}", o.type_code, o.flags);
    }
    s
}

/// The Loc-RIB changes, one line each.
pub(crate) fn changes(out: &Output) -> Vec<String> {
    out.changes
        .iter()
        .map(|c| match c {
            LocRibChange::Best { prefix, .. } => {
                let via: Vec<String> = c
                    .paths()
                    .iter()
                    .map(|r| format!("{:?}", r.peer.0))
                    .collect();
                format!("{prefix} via {}", via.join(","))
            }
            LocRibChange::Unreachable { prefix } => format!("{prefix} unreachable"),
        })
        .collect()
}

#[test]
fn session_up_sends_table_then_end_of_rib() {
    let mut r = rib();
    r.originate(p("10.1.0.0/24"), PathAttributes::default());
    let id = r
        .add_peer(PeerConfig::new([192, 0, 2, 2].into(), 65001))
        .unwrap();
    let out = r.peer_up(id, session([10, 0, 0, 2]));
    assert_eq!(
        sent(&out, id),
        [
            "+10.1.0.0/24 path [64512] nh 192.0.2.1",
            "eor ipv4-unicast",
            "eor ipv6-unicast",
        ]
    );
}

#[test]
fn ebgp_route_propagates_with_rfc4271_rules() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let i1 = peer(&mut r, 4, LOCAL_AS, |_| {});
    let mut a = attrs(&[65001, 65100], [192, 0, 2, 2]);
    a.med = Some(7);
    a.local_pref = Some(999);
    let out = r.receive(e1, &announce(a, &["10.2.0.0/16"]));
    assert_eq!(changes(&out), ["10.2.0.0/16 via 1"]);
    // eBGP: our AS prepended, next hop self, no LOCAL_PREF, no foreign MED.
    assert_eq!(
        sent(&out, e2),
        ["+10.2.0.0/16 path [64512 65001 65100] nh 192.0.2.1"]
    );
    // iBGP: next hop unchanged, the received LOCAL_PREF replaced by the
    // default (RFC 4271 §5.1.5), MED kept inside the AS.
    assert_eq!(
        sent(&out, i1),
        ["+10.2.0.0/16 path [65001 65100] nh 192.0.2.2 lp 100 med 7"]
    );
    // Split horizon: nothing back to the sender.
    assert_eq!(sent(&out, e1), Vec::<String>::new());
}

#[test]
fn withdrawals_fall_back_then_unreachable() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let watcher = peer(&mut r, 9, 65009, |_| {});
    r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.3.0.0/24"]),
    );
    let out = r.receive(
        e2,
        &announce(attrs(&[65002, 1], [192, 0, 2, 3]), &["10.3.0.0/24"]),
    );
    // Longer path: no change, nothing sent.
    assert!(out.changes.is_empty() && out.messages.is_empty());
    let out = r.receive(e1, &withdraw(&["10.3.0.0/24"]));
    assert_eq!(changes(&out), ["10.3.0.0/24 via 2"]);
    assert_eq!(
        sent(&out, watcher),
        ["+10.3.0.0/24 path [64512 65002 1] nh 192.0.2.1"]
    );
    // e1 now gets the route from e2 (it had none before).
    assert_eq!(
        sent(&out, e1),
        ["+10.3.0.0/24 path [64512 65002 1] nh 192.0.2.1"]
    );
    let out = r.receive(e2, &withdraw(&["10.3.0.0/24"]));
    assert_eq!(changes(&out), ["10.3.0.0/24 unreachable"]);
    assert_eq!(sent(&out, watcher), ["-10.3.0.0/24"]);
    // e2 never held it (split horizon): no withdrawal for it.
    assert_eq!(sent(&out, e2), Vec::<String>::new());
    assert!(r.best(&p("10.3.0.0/24")).is_none());
}

/// RFC 4271 §4.3: "the value of trailing bits is irrelevant". A peer's
/// 11.13.0.0/13 (bits set past the length, as some routers send it) is the
/// route 11.8.0.0/13: installed, advertised in canonical form, and
/// withdrawn by any spelling of the same prefix.
#[test]
fn prefix_with_bits_past_its_length_is_the_masked_route() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let ctx = CodecContext::four_octet();
    #[rustfmt::skip]
    let announce = Bytes::from_static(&[
        0, 0,                                   // no withdrawn routes
        0, 20,                                  // attributes:
        0x40, 1, 1, 0,                          //   ORIGIN IGP
        0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9,     //   AS_PATH 65001
        0x40, 3, 4, 192, 0, 2, 2,               //   NEXT_HOP 192.0.2.2
        13, 11, 13,                             // 11.13.0.0/13
    ]);
    let u = Update::decode(&ctx, &announce).unwrap();
    assert_eq!(u.action(), None);
    let out = r.receive(e1, &u);
    assert_eq!(changes(&out), ["11.8.0.0/13 via 1"]);
    assert_eq!(
        sent(&out, e2),
        ["+11.8.0.0/13 path [64512 65001] nh 192.0.2.1"]
    );
    // 11.15.0.0/13 withdraws it.
    let withdraw = Bytes::from_static(&[0, 3, 13, 11, 15, 0, 0]);
    let out = r.receive(e1, &Update::decode(&ctx, &withdraw).unwrap());
    assert_eq!(changes(&out), ["11.8.0.0/13 unreachable"]);
    assert_eq!(sent(&out, e2), ["-11.8.0.0/13"]);
}

#[test]
fn nothing_resent_when_unchanged() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let u = announce(
        attrs(&[65001], [192, 0, 2, 2]),
        &["10.4.0.0/24", "10.4.1.0/24"],
    );
    assert_eq!(r.receive(e1, &u).messages.len(), 1);
    let again = r.receive(e1, &u);
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert!(again.messages.is_empty());
    // A change that export hides (the MED is stripped towards eBGP) changes
    // the Loc-RIB but sends nothing to the eBGP peer: the export of the
    // route it replaced is the same.
    let mut a = attrs(&[65001], [192, 0, 2, 2]);
    a.med = Some(5);
    let out = r.receive(e1, &announce(a, &["10.4.0.0/24"]));
    assert_eq!(out.changes.len(), 1);
    assert!(out.messages.is_empty());
    assert_eq!(r.adj_rib_out(e2).len(), 2);
}

#[test]
fn update_group_encodes_once_for_identical_peers() {
    let mut r = rib();
    let src = peer(&mut r, 2, 65001, |_| {});
    let a = peer(&mut r, 3, 65002, |_| {});
    let b = peer(&mut r, 4, 65002, |_| {});
    let other_policy = peer(&mut r, 5, 65002, |c| {
        c.export = serde_json::from_str(r#"{"rules":[{"set_local_pref":1}]}"#).unwrap();
    });
    let groups = r.groups();
    let with = |id| groups.iter().find(|g| g.members.contains(&id)).unwrap().id;
    assert_eq!(with(a), with(b));
    assert_ne!(with(a), with(other_policy));
    assert_ne!(with(a), with(src));
    let encoded_before = r.groups()[with(a)].messages_encoded;
    let out = r.receive(
        src,
        &announce(
            attrs(&[65001], [192, 0, 2, 2]),
            &["10.5.0.0/24", "10.5.1.0/24"],
        ),
    );
    let to = |id| -> Vec<&Bytes> {
        out.messages
            .iter()
            .filter(|(p, _)| *p == id)
            .map(|(_, m)| m)
            .collect()
    };
    let (ma, mb) = (to(a), to(b));
    assert_eq!(ma.len(), 1, "both prefixes packed in one UPDATE");
    assert_eq!(ma, mb);
    // The same buffer, not an equal copy: encoded once.
    assert_eq!(ma[0].as_ptr(), mb[0].as_ptr());
    assert_eq!(r.groups()[with(a)].messages_encoded, encoded_before + 1);
}

#[test]
fn ibgp_routes_reach_ibgp_peers_only_by_reflection() {
    let mut r = rib();
    let client1 = peer(&mut r, 2, LOCAL_AS, |c| c.rr_client = true);
    let client2 = peer(&mut r, 3, LOCAL_AS, |c| c.rr_client = true);
    let plain1 = peer(&mut r, 4, LOCAL_AS, |_| {});
    let plain2 = peer(&mut r, 5, LOCAL_AS, |_| {});
    let ebgp = peer(&mut r, 6, 65006, |_| {});

    // From a client: to every peer, reflected with ORIGINATOR_ID and our
    // CLUSTER_ID; not back to the client itself.
    let out = r.receive(
        client1,
        &announce(attrs(&[65100], [192, 0, 2, 2]), &["10.6.0.0/24"]),
    );
    let reflected =
        "+10.6.0.0/24 path [65100] nh 192.0.2.2 lp 100 originator 10.0.0.2 cluster 10.0.0.1";
    assert_eq!(sent(&out, client2), [reflected]);
    assert_eq!(sent(&out, plain1), [reflected]);
    assert_eq!(sent(&out, client1), Vec::<String>::new());
    assert_eq!(
        sent(&out, ebgp),
        ["+10.6.0.0/24 path [64512 65100] nh 192.0.2.1"]
    );

    // From a non-client: to clients only (and eBGP).
    let out = r.receive(
        plain1,
        &announce(attrs(&[65200], [192, 0, 2, 4]), &["10.7.0.0/24"]),
    );
    assert_eq!(sent(&out, client1).len(), 1);
    assert_eq!(sent(&out, client2).len(), 1);
    assert_eq!(sent(&out, plain2), Vec::<String>::new());
    assert_eq!(sent(&out, ebgp).len(), 1);
}

#[test]
fn without_clients_ibgp_routes_stay_put() {
    let mut r = rib();
    let i1 = peer(&mut r, 2, LOCAL_AS, |_| {});
    let i2 = peer(&mut r, 3, LOCAL_AS, |_| {});
    let out = r.receive(
        i1,
        &announce(attrs(&[65100], [192, 0, 2, 2]), &["10.8.0.0/24"]),
    );
    assert_eq!(changes(&out), ["10.8.0.0/24 via 1"]);
    assert_eq!(sent(&out, i2), Vec::<String>::new());
}

#[test]
fn loops_are_rejected_on_import() {
    // (what the route carries, allow_own_as, accepted?)
    let cases: Vec<(&str, PathAttributes, u8, Option<adj_in::Rejection>)> = vec![
        ("clean", attrs(&[65001], [192, 0, 2, 2]), 0, None),
        (
            "own AS",
            attrs(&[65001, LOCAL_AS, 65003], [192, 0, 2, 2]),
            0,
            Some(adj_in::Rejection::AsPathLoop),
        ),
        (
            "own AS once, allow 1",
            attrs(&[65001, LOCAL_AS], [192, 0, 2, 2]),
            1,
            None,
        ),
        (
            "own AS twice, allow 1",
            attrs(&[65001, LOCAL_AS, 5, LOCAL_AS], [192, 0, 2, 2]),
            1,
            Some(adj_in::Rejection::AsPathLoop),
        ),
        (
            "our ORIGINATOR_ID",
            PathAttributes {
                originator_id: Some(ROUTER_ID),
                ..attrs(&[65001], [192, 0, 2, 2])
            },
            0,
            Some(adj_in::Rejection::OriginatorLoop),
        ),
        (
            "our CLUSTER_ID",
            PathAttributes {
                cluster_list: Some(vec![Ipv4Addr::new(1, 1, 1, 1), ROUTER_ID]),
                ..attrs(&[65001], [192, 0, 2, 2])
            },
            0,
            Some(adj_in::Rejection::ClusterLoop),
        ),
    ];
    for (name, a, allow, want) in cases {
        let mut r = rib();
        let e = peer(&mut r, 2, 65001, |c| c.allow_own_as = allow);
        let out = r.receive(e, &announce(a, &["10.9.0.0/24"]));
        assert_eq!(r.rejection(e, &p("10.9.0.0/24"), 0), want, "{name}");
        assert_eq!(out.changes.len(), usize::from(want.is_none()), "{name}");
        // Rejected or not, the pre-policy copy is kept.
        assert_eq!(r.adj_rib_in(e).len(), 1, "{name}");
        assert_eq!(
            r.counters(e).unwrap().accepted,
            usize::from(want.is_none()),
            "{name}"
        );
    }
}

#[test]
fn well_known_communities_limit_export() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let i1 = peer(&mut r, 4, LOCAL_AS, |_| {});
    let with = |c: u32| PathAttributes {
        communities: Some(vec![Community(c)]),
        ..attrs(&[65001], [192, 0, 2, 2])
    };
    let out = r.receive(e1, &announce(with(NO_EXPORT), &["10.10.0.0/24"]));
    assert_eq!(sent(&out, e2), Vec::<String>::new());
    assert_eq!(sent(&out, i1).len(), 1);
    let out = r.receive(e1, &announce(with(NO_ADVERTISE), &["10.11.0.0/24"]));
    assert_eq!(out.changes.len(), 1);
    assert!(out.messages.is_empty());
}

#[test]
fn unknown_attributes_follow_rfc4271_section5() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let mut a = attrs(&[65001], [192, 0, 2, 2]);
    a.rare_mut().other = vec![
        RawAttribute {
            flags: FLAG_OPTIONAL | FLAG_TRANSITIVE,
            type_code: 99,
            value: Bytes::from_static(&[1, 2]),
        },
        RawAttribute {
            flags: FLAG_OPTIONAL,
            type_code: 100,
            value: Bytes::from_static(&[3]),
        },
    ];
    let out = r.receive(e1, &announce(a, &["10.12.0.0/24"]));
    let flags = FLAG_OPTIONAL | FLAG_TRANSITIVE | FLAG_PARTIAL;
    assert_eq!(
        sent(&out, e2),
        [format!(
            "+10.12.0.0/24 path [64512 65001] nh 192.0.2.1 attr99/{flags:#x}"
        )]
    );
}

#[test]
fn local_as_override_and_next_hop_modes() {
    let mut r = rib();
    let src = peer(&mut r, 2, 65001, |_| {});
    let over = peer(&mut r, 3, 65002, |c| c.local_as = Some(64999));
    let keep = peer(&mut r, 4, 65003, |c| c.next_hop = NextHopMode::Keep);
    let ibgp_self = peer(&mut r, 5, LOCAL_AS, |c| c.next_hop = NextHopMode::SelfAddr);
    let out = r.receive(
        src,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.13.0.0/24"]),
    );
    assert_eq!(
        sent(&out, over),
        ["+10.13.0.0/24 path [64999 65001] nh 192.0.2.1"]
    );
    assert_eq!(
        sent(&out, keep),
        ["+10.13.0.0/24 path [64512 65001] nh 192.0.2.2"]
    );
    assert_eq!(
        sent(&out, ibgp_self),
        ["+10.13.0.0/24 path [65001] nh 192.0.2.1 lp 100"]
    );
}

/// A RIB with ECMP (4 paths) and two eBGP peers of AS 65001.
fn ecmp_rib() -> (Rib, PeerId, PeerId) {
    let mut r = Rib::new(RibConfig {
        decision: DecisionConfig {
            max_paths: 4,
            ..Default::default()
        },
        ..RibConfig::new(LOCAL_AS, ROUTER_ID)
    });
    let a = peer(&mut r, 2, 65001, |_| {});
    let b = peer(&mut r, 3, 65001, |_| {});
    (r, a, b)
}

#[test]
fn ecmp_multipath_set_in_changes() {
    let (mut r, a, b) = ecmp_rib();
    let c = peer(&mut r, 4, 65002, |_| {});
    r.receive(
        a,
        &announce(attrs(&[65001, 9], [192, 0, 2, 2]), &["10.14.0.0/24"]),
    );
    let out = r.receive(
        b,
        &announce(attrs(&[65001, 8], [192, 0, 2, 3]), &["10.14.0.0/24"]),
    );
    assert_eq!(changes(&out), ["10.14.0.0/24 via 1,2"]);
    // Best unchanged: nothing re-advertised.
    assert!(out.messages.is_empty());
    // Another neighbour AS does not join an eBGP multipath set.
    let out = r.receive(
        c,
        &announce(attrs(&[65002, 7], [192, 0, 2, 4]), &["10.14.0.0/24"]),
    );
    assert!(out.changes.is_empty());
}

/// A change whose set is the best alone carries no multipath vector (no
/// allocation per change); a set of two carries both, best first.
#[test]
fn a_lone_best_path_has_no_multipath_vector() {
    let (mut r, a, b) = ecmp_rib();
    let out = r.receive(
        a,
        &announce(attrs(&[65001, 9], [192, 0, 2, 2]), &["10.15.0.0/24"]),
    );
    let [c @ LocRibChange::Best {
        best, multipath, ..
    }] = &out.changes[..]
    else {
        panic!("one best path: {:?}", out.changes);
    };
    assert!(multipath.is_empty() && multipath.capacity() == 0);
    assert_eq!(c.paths(), std::slice::from_ref(best));
    let out = r.receive(
        b,
        &announce(attrs(&[65001, 8], [192, 0, 2, 3]), &["10.15.0.0/24"]),
    );
    let [c @ LocRibChange::Best {
        best, multipath, ..
    }] = &out.changes[..]
    else {
        panic!("one change: {:?}", out.changes);
    };
    assert_eq!(multipath.len(), 2);
    assert_eq!(&c.paths()[0], best);
    assert_eq!(c.paths(), &multipath[..]);
}

/// The FIB's form of a change keeps the next hops of the set, best first,
/// and nothing else; our own best path installs nothing, our own path in
/// an ECMP set is left out of it.
#[test]
fn a_fib_change_carries_the_next_hops_of_the_set() {
    use super::loc::{FibChange, Via};
    let (mut r, a, b) = ecmp_rib();
    let one = r.receive(
        a,
        &announce(attrs(&[65001, 9], [192, 0, 2, 2]), &["10.16.0.0/24"]),
    );
    let [c] = &one.changes[..] else {
        panic!("{:?}", one.changes)
    };
    let f = FibChange::from(c.clone());
    assert_eq!(f.prefix, p("10.16.0.0/24"));
    assert!(
        matches!(&f.via, Via::One(a) if a.next_hop == crate::wire::attr::mp::NextHop::V4([192, 0, 2, 2].into()))
    );
    let two = r.receive(
        b,
        &announce(attrs(&[65001, 8], [192, 0, 2, 3]), &["10.16.0.0/24"]),
    );
    let [c] = &two.changes[..] else {
        panic!("{:?}", two.changes)
    };
    let f = FibChange::from(c.clone());
    let hops: Vec<_> = f.paths().iter().map(|a| a.next_hop.clone()).collect();
    assert_eq!(hops.len(), 2);
    assert!(matches!(f.via, Via::Many(_)));
    assert_eq!(hops[0], c.best().unwrap().attrs.next_hop);
    // Ours as the best: nothing to install; ours in a set: left out.
    let ours = |peer: PeerId, nh: [u8; 4]| Route {
        prefix: p("10.16.0.0/24"),
        peer,
        path_id: 0,
        attrs: std::sync::Arc::new(AttrSet::new(attrs(&[], nh), None)),
        llgr_stale: false,
    };
    let local = ours(PeerId::LOCAL, [0, 0, 0, 0]);
    let f = FibChange::from(LocRibChange::Best {
        prefix: local.prefix,
        best: local.clone(),
        multipath: vec![local.clone(), ours(a, [192, 0, 2, 2])],
    });
    assert_eq!(f.via, Via::Local);
    let theirs = ours(a, [192, 0, 2, 2]);
    let f = FibChange::from(LocRibChange::Best {
        prefix: local.prefix,
        best: theirs.clone(),
        multipath: vec![theirs.clone(), local],
    });
    assert_eq!(f.via, Via::One(theirs.attrs));
    let f = FibChange::from(LocRibChange::Unreachable {
        prefix: p("10.16.0.0/24"),
    });
    assert_eq!((f.paths().len(), f.via), (0, Via::Unreachable));
}

#[test]
fn undecided_prefixes_are_decided_once_on_all_paths() {
    let mut r = rib();
    let a = peer(&mut r, 2, 65001, |_| {});
    let b = peer(&mut r, 3, 65002, |_| {});
    let watcher = peer(&mut r, 9, 65009, |_| {});
    let mut undecided = Undecided::default();
    let out = r.receive_undecided(
        a,
        &announce(
            attrs(&[65001, 1, 2], [192, 0, 2, 2]),
            &["10.16.0.0/24", "10.16.1.0/24"],
        ),
        &mut undecided,
    );
    assert!(out.changes.is_empty() && out.messages.is_empty());
    let out = r.receive_undecided(
        b,
        &announce(attrs(&[65002], [192, 0, 2, 3]), &["10.16.0.0/24"]),
        &mut undecided,
    );
    assert!(out.changes.is_empty() && out.messages.is_empty());
    assert_eq!(undecided.queued(), 3);
    // Nothing decided yet: the Loc-RIB is as before.
    assert!(r.best(&p("10.16.0.0/24")).is_none());
    let mut all = Output::default();
    while let Some(o) = r.decide_undecided(&mut undecided, 1) {
        all.changes.extend(o.changes);
        all.messages.extend(o.messages);
    }
    assert!(undecided.is_empty());
    // One change per prefix, each decided on every path it had: the shorter
    // path of b wins 10.16.0.0/24 at once; a's longer one never shows.
    assert_eq!(changes(&all), ["10.16.0.0/24 via 2", "10.16.1.0/24 via 1"]);
    assert_eq!(
        sent(&all, watcher),
        [
            "+10.16.0.0/24 path [64512 65002] nh 192.0.2.1",
            "+10.16.1.0/24 path [64512 65001 1 2] nh 192.0.2.1"
        ]
    );
    // End-of-RIB is acted on at once, not left undecided.
    let _ = r.receive_undecided(a, &Update::end_of_rib(Family::IPV4_UNICAST), &mut undecided);
    assert!(undecided.is_empty());
}

#[test]
fn unreachable_next_hop_is_excluded() {
    let mut r = rib();
    let a = peer(&mut r, 2, 65001, |_| {});
    let b = peer(&mut r, 3, 65002, |_| {});
    r.receive(
        a,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.15.0.0/24"]),
    );
    r.receive(
        b,
        &announce(attrs(&[65002, 1, 2], [192, 0, 2, 3]), &["10.15.0.0/24"]),
    );
    let dead: IpAddr = [192, 0, 2, 2].into();
    let out = r.set_next_hop_cost(Box::new(move |nh: IpAddr| (nh != dead).then_some(10)));
    assert_eq!(changes(&out), ["10.15.0.0/24 via 2"]);
}

#[test]
fn graceful_restart_keeps_stale_routes_until_end_of_rib() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let watcher = peer(&mut r, 9, 65009, |_| {});
    r.receive(
        e1,
        &announce(
            attrs(&[65001], [192, 0, 2, 2]),
            &["10.16.0.0/24", "10.16.1.0/24"],
        ),
    );
    // Session lost, GR negotiated for IPv4: nothing changes, nothing sent.
    let out = r.peer_down(e1, &[Family::IPV4_UNICAST]);
    assert!(out.changes.is_empty() && out.messages.is_empty());
    assert!(r.adj_rib_in(e1).iter().all(|a| a.stale));
    // The peer is back and refreshes one of the two routes.
    r.peer_up(e1, session([10, 0, 0, 2]));
    let out = r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.16.0.0/24"]),
    );
    assert!(
        out.changes.is_empty() && out.messages.is_empty(),
        "{:?}",
        changes(&out)
    );
    // End-of-RIB for IPv6 sweeps nothing of IPv4.
    assert!(r.end_of_rib(e1, Family::IPV6_UNICAST).changes.is_empty());
    let out = r.receive(e1, &Update::end_of_rib(Family::IPV4_UNICAST));
    assert_eq!(changes(&out), ["10.16.1.0/24 unreachable"]);
    assert_eq!(sent(&out, watcher), ["-10.16.1.0/24"]);
    assert_eq!(r.counters(e1).unwrap().received, 1);
}

#[test]
fn session_loss_without_graceful_restart_withdraws() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let watcher = peer(&mut r, 9, 65009, |_| {});
    r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.17.0.0/24"]),
    );
    let out = r.peer_down(e1, &[]);
    assert_eq!(changes(&out), ["10.17.0.0/24 unreachable"]);
    assert_eq!(sent(&out, watcher), ["-10.17.0.0/24"]);
    assert_eq!(r.counters(e1).unwrap(), PeerCounters::default());
}

#[test]
fn restart_timer_sweeps_stale_routes() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.18.0.0/24"]),
    );
    r.peer_down(e1, &[Family::IPV4_UNICAST]);
    let out = r.restart_timer_expired(e1, &[]);
    assert_eq!(changes(&out), ["10.18.0.0/24 unreachable"]);
}

#[test]
fn llgr_demotes_stale_routes_and_honours_no_llgr() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let i_llgr = {
        let id = r
            .add_peer(PeerConfig::new([192, 0, 2, 4].into(), LOCAL_AS))
            .unwrap();
        r.peer_up(
            id,
            Session {
                llgr: true,
                ..session([10, 0, 0, 4])
            },
        );
        id
    };
    let no_llgr = PathAttributes {
        communities: Some(vec![Community(NO_LLGR)]),
        ..attrs(&[65001], [192, 0, 2, 2])
    };
    r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.19.0.0/24"]),
    );
    r.receive(e1, &announce(no_llgr, &["10.19.1.0/24"]));
    // A worse path from e2 for the first prefix.
    r.receive(
        e2,
        &announce(attrs(&[65002, 1, 2], [192, 0, 2, 3]), &["10.19.0.0/24"]),
    );
    r.peer_down(e1, &[Family::IPV4_UNICAST]);
    let out = r.restart_timer_expired(e1, &[Family::IPV4_UNICAST]);
    // LLGR_STALE is least preferred: e2's longer path wins; the NO_LLGR
    // route is gone.
    let mut got = changes(&out);
    got.sort();
    assert_eq!(got, ["10.19.0.0/24 via 2", "10.19.1.0/24 unreachable"]);
    let kept = r.adj_rib_in(e1);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].llgr_stale);
    let comms = kept[0].pre.attrs.communities.clone().unwrap_or_default();
    assert!(comms.contains(&Community(crate::wire::attr::community::LLGR_STALE)));
    // Without e2's path the LLGR-stale route is used, and only the LLGR
    // peer is told about it.
    let out = r.receive(e2, &withdraw(&["10.19.0.0/24"]));
    assert_eq!(changes(&out), ["10.19.0.0/24 via 1"]);
    assert_eq!(
        sent(&out, i_llgr),
        ["+10.19.0.0/24 path [65001] nh 192.0.2.2 lp 100 comm 65535:6"]
    );
    let out = r.llgr_timer_expired(e1, Family::IPV4_UNICAST);
    assert_eq!(changes(&out), ["10.19.0.0/24 unreachable"]);
}

#[test]
fn soft_reconfiguration_reapplies_import_policy() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let watcher = peer(&mut r, 9, 65009, |_| {});
    r.receive(
        e1,
        &announce(
            attrs(&[65001], [192, 0, 2, 2]),
            &["10.20.0.0/24", "10.21.0.0/24"],
        ),
    );
    let mut cfg = PeerConfig::new([192, 0, 2, 2].into(), 65001);
    cfg.import = serde_json::from_str(
        r#"{"rules":[{"match":{"prefix":{"cidr":"10.21.0.0/16"}},"action":"reject"}]}"#,
    )
    .unwrap();
    let out = r.set_peer_config(e1, (&cfg).into()).unwrap();
    assert_eq!(changes(&out), ["10.21.0.0/24 unreachable"]);
    assert_eq!(sent(&out, watcher), ["-10.21.0.0/24"]);
    assert_eq!(r.adj_rib_in(e1).len(), 2);
    cfg.import = Policy::default();
    let out = r.set_peer_config(e1, (&cfg).into()).unwrap();
    assert_eq!(changes(&out), ["10.21.0.0/24 via 1"]);
}

#[test]
fn export_policy_change_sends_only_the_difference() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    r.receive(
        e1,
        &announce(
            attrs(&[65001], [192, 0, 2, 2]),
            &["10.22.0.0/24", "10.23.0.0/24"],
        ),
    );
    let mut cfg = PeerConfig::new([192, 0, 2, 3].into(), 65002);
    cfg.export = serde_json::from_str(
        r#"{"rules":[{"match":{"prefix":{"cidr":"10.23.0.0/24","op":"exact"}},"action":"reject"}]}"#,
    )
    .unwrap();
    let out = r.set_peer_config(e2, (&cfg).into()).unwrap();
    assert_eq!(sent(&out, e2), ["-10.23.0.0/24"]);
    assert!(out.changes.is_empty());
}

#[test]
fn route_refresh_resends_the_family() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.24.0.0/24"]),
    );
    let out = r.refresh(e2, Family::IPV4_UNICAST);
    assert_eq!(
        sent(&out, e2),
        ["+10.24.0.0/24 path [64512 65001] nh 192.0.2.1"]
    );
    assert!(r.refresh(e2, Family::IPV6_UNICAST).messages.is_empty());
}

#[test]
fn add_path_ids_are_distinct_paths() {
    let mut r = rib();
    let e1 = r
        .add_peer(PeerConfig::new([192, 0, 2, 2].into(), 65001))
        .unwrap();
    let mut s = session([10, 0, 0, 2]);
    s.codec.add_path_rx.insert(Family::IPV4_UNICAST);
    r.peer_up(e1, s);
    let mut u = Update::new(attrs(&[65001, 1], [192, 0, 2, 2]));
    let e = |id| crate::wire::NlriEntry {
        path_id: Some(id),
        prefix: p("10.25.0.0/24"),
    };
    u.nlri = Nlri::from_entries(Family::IPV4_UNICAST, true, &[e(1)]);
    r.receive(e1, &u);
    let mut u = Update::new(attrs(&[65001], [192, 0, 2, 2]));
    u.nlri = Nlri::from_entries(Family::IPV4_UNICAST, true, &[e(2)]);
    let out = r.receive(e1, &u);
    assert_eq!(r.adj_rib_in(e1).len(), 2);
    assert_eq!(out.changes[0].best().map(|b| b.path_id), Some(2));
    let mut w = Update::new(PathAttributes::default());
    w.withdrawn = Nlri::from_entries(Family::IPV4_UNICAST, true, &[e(2)]);
    let out = r.receive(e1, &w);
    assert_eq!(out.changes[0].best().map(|b| b.path_id), Some(1));
}

#[test]
fn ipv6_routes_use_mp_reach_and_the_v6_next_hop() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let mut u = Update::new(PathAttributes {
        next_hop: None,
        ..attrs(&[65001], [0, 0, 0, 0])
    });
    u.mp_reach = Some(crate::wire::attr::MpReach {
        family: Family::IPV6_UNICAST,
        next_hop: NextHop::V6 {
            global: "2001:db8::2".parse().unwrap(),
            link_local: None,
        },
        nlri: Nlri::from_prefixes(Family::IPV6_UNICAST, &[p("2001:db8:1::/48")]),
    });
    let out = r.receive(e1, &u);
    assert_eq!(changes(&out), ["2001:db8:1::/48 via 1"]);
    assert_eq!(
        sent(&out, e2),
        ["+2001:db8:1::/48 path [64512 65001] nh 2001:db8::1"]
    );
}

#[test]
fn remove_peer_forgets_its_routes() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let watcher = peer(&mut r, 9, 65009, |_| {});
    r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.26.0.0/24"]),
    );
    let out = r.remove_peer(e1).unwrap();
    assert_eq!(sent(&out, watcher), ["-10.26.0.0/24"]);
    assert_eq!(r.remove_peer(e1).unwrap_err(), RibError::NoSuchPeer(e1));
    // The slot is reused.
    assert_eq!(
        r.add_peer(PeerConfig::new([192, 0, 2, 7].into(), 1))
            .unwrap(),
        e1
    );
    assert_eq!(
        r.add_peer(PeerConfig::new([192, 0, 2, 9].into(), 1))
            .unwrap_err(),
        RibError::DuplicatePeer([192, 0, 2, 9].into())
    );
}

#[test]
fn received_llgr_stale_community_is_least_preferred() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let stale = PathAttributes {
        communities: Some(vec![Community(crate::wire::attr::community::LLGR_STALE)]),
        ..attrs(&[65001], [192, 0, 2, 2])
    };
    r.receive(e1, &announce(stale, &["10.27.0.0/24"]));
    let out = r.receive(
        e2,
        &announce(attrs(&[65002, 1, 2, 3], [192, 0, 2, 3]), &["10.27.0.0/24"]),
    );
    assert_eq!(changes(&out), ["10.27.0.0/24 via 2"]);
}

#[test]
fn peer_joining_an_existing_group_gets_its_table() {
    let mut r = rib();
    let src = peer(&mut r, 2, 65001, |_| {});
    let a = peer(&mut r, 3, 65002, |_| {});
    r.receive(
        src,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.28.0.0/24"]),
    );
    let b = r
        .add_peer(PeerConfig::new([192, 0, 2, 4].into(), 65002))
        .unwrap();
    let out = r.peer_up(b, session([10, 0, 0, 4]));
    assert_eq!(
        sent(&out, b),
        [
            "+10.28.0.0/24 path [64512 65001] nh 192.0.2.1",
            "eor ipv4-unicast",
            "eor ipv6-unicast"
        ]
    );
    // Nothing for the member already in the group.
    assert_eq!(sent(&out, a), Vec::<String>::new());
    let groups = r.groups();
    let g = groups.iter().find(|g| g.members.contains(&a)).unwrap();
    assert!(g.members.contains(&b));
    // The source peer gets everything but its own route.
    let out = r.refresh(src, Family::IPV4_UNICAST);
    assert!(out.messages.is_empty());
}

mod order_independence {
    use super::*;
    use proptest::prelude::*;

    /// (peer index, prefix index, path, MED, local pref) of one announcement.
    type Ann = (usize, u8, Vec<u32>, Option<u32>, Option<u32>);

    /// The Loc-RIB (multipath sets) and what each peer was sent.
    type State = (
        Vec<(Prefix, Vec<(PeerId, u32)>)>,
        Vec<Vec<(Prefix, AttrSet)>>,
    );

    fn run(anns: &[Ann]) -> State {
        let mut r = Rib::new(RibConfig {
            decision: DecisionConfig {
                max_paths: 2,
                ..Default::default()
            },
            ..RibConfig::new(LOCAL_AS, ROUTER_ID)
        });
        // Two eBGP peers in one AS, one in another, two iBGP.
        let asns = [65001, 65001, 65002, LOCAL_AS, LOCAL_AS];
        let ids: Vec<PeerId> = asns
            .iter()
            .enumerate()
            .map(|(i, &asn)| peer(&mut r, 2 + i as u8, asn, |_| {}))
            .collect();
        for (who, px, path, med, lp) in anns {
            let mut full = vec![asns[*who]];
            full.extend(path);
            if asns[*who] == LOCAL_AS {
                full.remove(0);
            }
            let mut a = attrs(&full, [192, 0, 2, 2 + *who as u8]);
            a.med = *med;
            a.local_pref = *lp;
            r.receive(ids[*who], &announce(a, &[&format!("10.{px}.0.0/16")]));
        }
        let best = r
            .best_routes()
            .map(|(p, set)| (p, set.iter().map(|x| (x.peer, x.path_id)).collect()))
            .collect();
        let out = ids
            .iter()
            .map(|&id| {
                r.adj_rib_out(id)
                    .into_iter()
                    .map(|(p, a)| (p, (*a).clone()))
                    .collect()
            })
            .collect();
        (best, out)
    }

    fn ann() -> impl Strategy<Value = Ann> {
        (
            0usize..5,
            0u8..4,
            prop::collection::vec(prop::sample::select(vec![1u32, 2, 3]), 0..3),
            prop::option::of(0u32..3),
            prop::option::of(prop::sample::select(vec![100u32, 200])),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The same announcements in any order leave the same Loc-RIB and
        /// the same Adj-RIB-Out for every peer.
        #[test]
        fn final_state_does_not_depend_on_arrival_order(
            anns in prop::collection::vec(ann(), 1..12),
            seed in any::<u64>(),
        ) {
            // One announcement per (peer, prefix): the last would win otherwise.
            let mut anns = anns;
            let mut seen = std::collections::HashSet::new();
            anns.retain(|a| seen.insert((a.0, a.1)));
            let mut shuffled = anns.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(run(&anns), run(&shuffled));
        }
    }
}

#[test]
fn restarting_speaker_defers_advertisements() {
    let mut r = rib();
    r.defer_advertisements();
    r.originate(p("10.29.0.0/24"), PathAttributes::default());
    let e1 = r
        .add_peer(PeerConfig::new([192, 0, 2, 2].into(), 65001))
        .unwrap();
    let out = r.peer_up(e1, session([10, 0, 0, 2]));
    assert!(out.messages.is_empty());
    let e2 = peer(&mut r, 3, 65002, |_| {});
    let out = r.receive(
        e2,
        &announce(attrs(&[65002], [192, 0, 2, 3]), &["10.30.0.0/24"]),
    );
    // Selection runs (the FIB stream sees it); nothing is sent yet.
    assert_eq!(changes(&out), ["10.30.0.0/24 via 2"]);
    assert!(out.messages.is_empty());
    let out = r.end_deferral();
    assert_eq!(
        sent(&out, e1),
        [
            "+10.29.0.0/24 path [64512] nh 192.0.2.1",
            "+10.30.0.0/24 path [64512 65002] nh 192.0.2.1",
            "eor ipv4-unicast",
            "eor ipv6-unicast",
        ]
    );
    assert_eq!(
        sent(&out, e2),
        [
            "+10.29.0.0/24 path [64512] nh 192.0.2.1",
            "eor ipv4-unicast",
            "eor ipv6-unicast"
        ]
    );
    assert!(r.end_deferral().messages.is_empty());
}

#[test]
fn originated_routes_follow_the_same_rules() {
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let i1 = peer(&mut r, 3, LOCAL_AS, |_| {});
    let a = PathAttributes {
        med: Some(20),
        communities: Some(vec!["64512:7".parse().unwrap()]),
        ..Default::default()
    };
    let out = r.originate(p("10.31.0.0/24"), a);
    assert_eq!(changes(&out), ["10.31.0.0/24 via 0"]);
    // Our own MED goes to eBGP (RFC 4271 §5.1.4 only stops foreign ones).
    assert_eq!(
        sent(&out, e1),
        ["+10.31.0.0/24 path [64512] nh 192.0.2.1 med 20 comm 64512:7"]
    );
    assert_eq!(
        sent(&out, i1),
        ["+10.31.0.0/24 path [] nh 192.0.2.1 lp 100 med 20 comm 64512:7"]
    );
    let no_export = PathAttributes {
        communities: Some(vec![Community(NO_EXPORT)]),
        ..Default::default()
    };
    let out = r.originate(p("10.31.0.0/24"), no_export);
    assert_eq!(sent(&out, e1), ["-10.31.0.0/24"]);
    assert_eq!(
        sent(&out, i1),
        ["+10.31.0.0/24 path [] nh 192.0.2.1 lp 100 comm 65535:65281"]
    );
    let out = r.withdraw(p("10.31.0.0/24"));
    assert_eq!(changes(&out), ["10.31.0.0/24 unreachable"]);
    assert_eq!(sent(&out, i1), ["-10.31.0.0/24"]);
    assert!(r.withdraw(p("10.31.0.0/24")).changes.is_empty());
}

#[test]
fn split_horizon_inside_an_update_group() {
    let mut r = rib();
    // Three eBGP peers in one AS with one policy: one update group.
    let a = peer(&mut r, 2, 65002, |_| {});
    let b = peer(&mut r, 3, 65002, |_| {});
    let c = peer(&mut r, 4, 65002, |_| {});
    assert_eq!(r.groups().len(), 1);
    let out = r.receive(
        a,
        &announce(attrs(&[65002, 9, 9], [192, 0, 2, 2]), &["10.32.0.0/24"]),
    );
    assert_eq!(sent(&out, a), Vec::<String>::new());
    assert_eq!(
        sent(&out, b),
        ["+10.32.0.0/24 path [64512 65002 9 9] nh 192.0.2.1"]
    );
    let (mb, mc) = (&out.messages[0], &out.messages[1]);
    assert_eq!((mb.0, mc.0), (b, c));
    assert_eq!(mb.1.as_ptr(), mc.1.as_ptr());
    // b now has the better route: a and c get it (one buffer), and b takes
    // back the copy of a's route it held.
    let out = r.receive(
        b,
        &announce(attrs(&[65002, 9], [192, 0, 2, 3]), &["10.32.0.0/24"]),
    );
    assert_eq!(
        sent(&out, a),
        ["+10.32.0.0/24 path [64512 65002 9] nh 192.0.2.1"]
    );
    assert_eq!(
        sent(&out, c),
        ["+10.32.0.0/24 path [64512 65002 9] nh 192.0.2.1"]
    );
    assert_eq!(sent(&out, b), ["-10.32.0.0/24"]);
    // b withdraws: back to a's route; b gets it, a is told to withdraw.
    let out = r.receive(b, &withdraw(&["10.32.0.0/24"]));
    assert_eq!(
        sent(&out, b),
        ["+10.32.0.0/24 path [64512 65002 9 9] nh 192.0.2.1"]
    );
    assert_eq!(sent(&out, a), ["-10.32.0.0/24"]);
    // a withdraws too: only b and c held something.
    let out = r.receive(a, &withdraw(&["10.32.0.0/24"]));
    assert_eq!(sent(&out, a), Vec::<String>::new());
    assert_eq!(sent(&out, b), ["-10.32.0.0/24"]);
    assert_eq!(sent(&out, c), ["-10.32.0.0/24"]);
}

#[test]
fn treat_as_withdraw_removes_the_announced_routes() {
    use crate::wire::attr::{Action, AttrError, AttrErrorKind};
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.33.0.0/24"]),
    );
    // RFC 7606 §2: the same NLRI again, with an attribute error calling for
    // treat-as-withdraw.
    let mut u = announce(attrs(&[65001], [192, 0, 2, 2]), &["10.33.0.0/24"]);
    u.errors.push(AttrError {
        type_code: crate::wire::attr::COMMUNITIES,
        kind: AttrErrorKind::Length,
        action: Action::TreatAsWithdraw,
    });
    let out = r.receive(e1, &u);
    assert_eq!(changes(&out), ["10.33.0.0/24 unreachable"]);
    assert!(r.adj_rib_in(e1).is_empty());
}

#[test]
fn enhanced_route_refresh_sweeps_what_was_not_refreshed() {
    // RFC 7313 §4: BoRR marks the family stale, EoRR removes what the
    // refresh did not re-announce; the rest never changes.
    let mut r = rib();
    let e1 = peer(&mut r, 2, 65001, |_| {});
    let watcher = peer(&mut r, 9, 65009, |_| {});
    r.receive(
        e1,
        &announce(
            attrs(&[65001], [192, 0, 2, 2]),
            &["10.30.0.0/24", "10.30.1.0/24"],
        ),
    );
    let out = r.begin_refresh(e1, Family::IPV4_UNICAST);
    assert!(out.changes.is_empty() && out.messages.is_empty());
    assert!(r.adj_rib_in(e1).iter().all(|a| a.stale));
    let out = r.receive(
        e1,
        &announce(attrs(&[65001], [192, 0, 2, 2]), &["10.30.0.0/24"]),
    );
    assert!(out.changes.is_empty(), "{:?}", changes(&out));
    // EoRR for IPv6 leaves IPv4 alone.
    assert!(r.end_refresh(e1, Family::IPV6_UNICAST).changes.is_empty());
    let out = r.end_refresh(e1, Family::IPV4_UNICAST);
    assert_eq!(changes(&out), ["10.30.1.0/24 unreachable"]);
    assert_eq!(sent(&out, watcher), ["-10.30.1.0/24"]);
    assert!(r.adj_rib_in(e1).iter().all(|a| !a.stale));
}

/// A large session drop walks the table from many cursors at once, so the
/// FIB gets its deletes spread over the table instead of in address order
/// (the kernel's slow case); every prefix is still decided exactly once,
/// and the RIB ends as a walk in order leaves it.
#[test]
fn a_large_session_drop_is_walked_spread_over_the_table() {
    let prefixes: Vec<String> = (0..2000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let mut r = rib();
    let a = peer(&mut r, 2, 65002, |_| {});
    let b = peer(&mut r, 3, 65003, |_| {});
    for chunk in refs.chunks(100) {
        r.receive(a, &announce(attrs(&[65002], [192, 0, 2, 2]), chunk));
    }
    // b backs up every fourth prefix with a longer path.
    let backed: Vec<&str> = refs.iter().copied().step_by(4).collect();
    for chunk in backed.chunks(100) {
        r.receive(b, &announce(attrs(&[65003, 65100], [192, 0, 2, 3]), chunk));
    }
    let mut undecided = r.peer_down_in_steps(a, &[]);
    let mut steps: Vec<Vec<Prefix>> = Vec::new();
    while let Some(out) = r.decide_undecided(&mut undecided, 50) {
        assert!(out.changes.len() <= 50);
        steps.push(out.changes.iter().map(|c| c.prefix()).collect());
    }
    let all: Vec<Prefix> = steps.iter().flatten().copied().collect();
    let distinct: std::collections::BTreeSet<Prefix> = all.iter().copied().collect();
    assert_eq!(all.len(), 2000, "each prefix decided once");
    assert_eq!(distinct.len(), 2000);
    // The first step already reaches from the table's first quarter to its
    // last: not the first 50 prefixes in order.
    let first = &steps[0];
    let (lo, hi) = (first.iter().min().unwrap(), first.iter().max().unwrap());
    assert!(*lo < "10.1.0.0/24".parse().unwrap(), "{first:?}");
    assert!(*hi > "10.6.0.0/24".parse().unwrap(), "{first:?}");
    assert_eq!(r.best_routes().count(), 500);
    assert_eq!(r.counters(a).unwrap().received, 0);
    assert!(r.best_routes().all(|(_, set)| set[0].peer == b));
}

/// The IPv6 part of a dropped table is walked in address order (Linux's
/// IPv6 FIB deletes fastest that way), after IPv4's spread walk.
#[test]
fn a_dropped_ipv6_table_is_walked_in_address_order() {
    let v4: Vec<String> = (0..1000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let v6: Vec<Prefix> = (0..1000)
        .map(|i| p(&format!("2001:db8:{:x}::/48", i)))
        .collect();
    let mut r = rib();
    let a = peer(&mut r, 2, 65002, |_| {});
    let refs: Vec<&str> = v4.iter().map(String::as_str).collect();
    for chunk in refs.chunks(100) {
        r.receive(a, &announce(attrs(&[65002], [192, 0, 2, 2]), chunk));
    }
    for chunk in v6.chunks(100) {
        let mut u = Update::new(PathAttributes {
            next_hop: None,
            ..attrs(&[65002], [0, 0, 0, 0])
        });
        u.mp_reach = Some(crate::wire::attr::MpReach {
            family: Family::IPV6_UNICAST,
            next_hop: NextHop::V6 {
                global: "2001:db8::2".parse().unwrap(),
                link_local: None,
            },
            nlri: Nlri::from_prefixes(Family::IPV6_UNICAST, chunk),
        });
        r.receive(a, &u);
    }
    assert_eq!(r.best_routes().count(), 2000);
    let mut undecided = r.peer_down_in_steps(a, &[]);
    let mut order: Vec<Prefix> = Vec::new();
    while let Some(out) = r.decide_undecided(&mut undecided, 50) {
        order.extend(out.changes.iter().map(|c| c.prefix()));
    }
    assert_eq!(order.len(), 2000);
    let gone6: Vec<Prefix> = order
        .iter()
        .copied()
        .filter(|p| matches!(p, Prefix::V6 { .. }))
        .collect();
    assert_eq!(gone6, v6, "IPv6 in address order");
    let gone4: Vec<Prefix> = order
        .iter()
        .copied()
        .filter(|p| matches!(p, Prefix::V4 { .. }))
        .collect();
    assert_eq!(gone4.len(), 1000);
    assert!(!gone4.is_sorted(), "IPv4 spread");
    assert_eq!(r.best_routes().count(), 0);
}

/// A session drop decided in steps gives the same changes and UPDATEs as in
/// one go, each step bounded, and leaves the RIB as `peer_down` does: the
/// other peer's route takes over where it had one, the rest is unreachable.
#[test]
fn peer_down_in_steps_matches_peer_down() {
    let prefixes: Vec<String> = (0..40).map(|i| format!("10.{i}.0.0/16")).collect();
    let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    let setup = || {
        let mut r = rib();
        let a = peer(&mut r, 2, 65002, |_| {});
        let b = peer(&mut r, 3, 65003, |_| {});
        let watcher = peer(&mut r, 4, 65004, |_| {});
        r.receive(a, &announce(attrs(&[65002], [192, 0, 2, 2]), &refs));
        // b backs up every fourth prefix with a longer path.
        let backed: Vec<&str> = refs.iter().copied().step_by(4).collect();
        r.receive(
            b,
            &announce(attrs(&[65003, 65100], [192, 0, 2, 3]), &backed),
        );
        (r, a, watcher)
    };
    let (mut whole, a, watcher) = setup();
    let all = whole.peer_down(a, &[]);

    let (mut stepped, a2, watcher2) = setup();
    let mut undecided = stepped.peer_down_in_steps(a2, &[]);
    assert!(!undecided.is_empty());
    let mut changes = Vec::new();
    let mut lines = Vec::new();
    let mut steps = 0;
    while let Some(out) = stepped.decide_undecided(&mut undecided, 7) {
        assert!(out.changes.len() <= 7);
        lines.extend(sent(&out, watcher2));
        changes.extend(out.changes);
        steps += 1;
    }
    assert_eq!(steps, 6);
    assert!(undecided.is_empty());
    assert_eq!(changes, all.changes);
    let mut whole_lines = sent(&all, watcher);
    whole_lines.sort();
    lines.sort();
    assert_eq!(lines, whole_lines);
    let unreachable = changes
        .iter()
        .filter(|c| matches!(c, LocRibChange::Unreachable { .. }))
        .count();
    assert_eq!(unreachable, 30);
    assert_eq!(stepped.best_routes().count(), 10);
    assert_eq!(stepped.counters(a2).unwrap().received, 0);
    assert_eq!(
        stepped.best_routes().collect::<Vec<_>>(),
        whole.best_routes().collect::<Vec<_>>()
    );
}
