//! ADD-PATH send: identifier allocation on its own, then the RIB end to
//! end, a route reflector with clients that receive several paths. Sent
//! messages are decoded as a receiving peer would and printed one line per
//! NLRI, with its Path Identifier as `#id`.

use super::*;
use crate::rib::attrs::AttrSet;
use crate::rib::tests::{
    announce, attrs, describe, peer, rib, sent as plain_sent, session, withdraw, LOCAL_AS,
};
use crate::rib::{NextHopCost, Output, PeerConfig, PeerId, Rib};
use crate::wire::attr::{AsPath, PathAttributes};
use crate::wire::{CodecContext, Message};
use std::net::IpAddr;

/// Peer `peer`'s export: AS_PATH [asn], not sent back to it.
fn adv(t: &mut AttrTable, peer: u16, asn: u32) -> Advertised {
    Advertised {
        attrs: t.intern(AttrSet::new(
            PathAttributes {
                as_path: Some(AsPath::from_sequence(&[asn])),
                ..Default::default()
            },
            None,
        )),
        exclude: Some(PeerId(peer)),
    }
}

/// Runs `reconcile` and describes each recorded change: `+id asn`,
/// `-id`, `=id` (re-exported unchanged).
fn run(sent: &mut Vec<SentPath>, wanted: Vec<Wanted>) -> Vec<String> {
    let mut log = Vec::new();
    *sent = reconcile(std::mem::take(sent), wanted, |id, old, new| {
        log.push(match (old, new) {
            (Some(o), Some(n)) if same(o, n) => format!("={id}"),
            (_, Some(n)) => format!("+{id} {}", n.attrs.attrs.as_path.as_ref().unwrap()),
            (_, None) => format!("-{id}"),
        })
    });
    log.sort();
    log
}

fn want(t: &mut AttrTable, peers: &[(u16, u32)]) -> Vec<Wanted> {
    peers
        .iter()
        .map(|&(p, asn)| Wanted {
            path_id: 0,
            adv: adv(t, p, asn),
        })
        .collect()
}

#[test]
fn paths_keep_their_identifiers_and_new_ones_take_freed_ones() {
    let mut t = AttrTable::new();
    let mut sent = Vec::new();
    assert_eq!(
        run(
            &mut sent,
            want(&mut t, &[(1, 65001), (2, 65002), (3, 65003)])
        ),
        ["+1 65001", "+2 65002", "+3 65003"]
    );
    // Peer 2's path goes, peer 1's changes, peer 4's comes: peer 1
    // keeps 1, peer 3 keeps 3, peer 4 takes 2.
    assert_eq!(
        run(
            &mut sent,
            want(&mut t, &[(3, 65003), (1, 65011), (4, 65004)])
        ),
        ["+1 65011", "+2 65004", "=3"]
    );
    // Only peer 4's is left: 1 and 3 are withdrawn, 2 stays.
    assert_eq!(
        run(&mut sent, want(&mut t, &[(4, 65004)])),
        ["-1", "-3", "=2"]
    );
    // Two new paths fill the gaps, smallest first.
    assert_eq!(
        run(
            &mut sent,
            want(&mut t, &[(4, 65004), (5, 65005), (6, 65006)])
        ),
        ["+1 65005", "+3 65006", "=2"]
    );
    assert_eq!(run(&mut sent, Vec::new()), ["-1", "-2", "-3"]);
    assert!(sent.is_empty());
}

#[test]
fn the_capability_says_what_is_configured_per_family() {
    let c = AddPathConfig {
        receive: vec![Family::IPV4_UNICAST],
        send: vec![
            (Family::IPV4_UNICAST, SendMode::All),
            (Family::IPV6_UNICAST, SendMode::Ecmp),
        ],
    };
    assert_eq!(
        c.capability(&[Family::IPV4_UNICAST, Family::IPV6_UNICAST]),
        Some(Capability::AddPath(vec![
            (Family::IPV4_UNICAST, AddPathMode::Both),
            (Family::IPV6_UNICAST, AddPathMode::Send),
        ]))
    );
    // Only the session's families.
    assert_eq!(
        c.capability(&[Family::IPV6_UNICAST]),
        Some(Capability::AddPath(vec![(
            Family::IPV6_UNICAST,
            AddPathMode::Send
        )]))
    );
    assert_eq!(
        AddPathConfig::default().capability(&[Family::IPV4_UNICAST]),
        None
    );
}

const V4: Family = Family::IPV4_UNICAST;
const P: &str = "10.1.0.0/24";

/// A route-reflector client that receives several IPv4 paths (the session
/// negotiated ADD-PATH send towards it) in `mode`.
fn receiver(r: &mut Rib, n: u8, mode: SendMode, f: impl FnOnce(&mut PeerConfig)) -> PeerId {
    receiver_up(r, n, mode, f).0
}

/// [`receiver`], with what its session coming up sent.
fn receiver_up(
    r: &mut Rib,
    n: u8,
    mode: SendMode,
    f: impl FnOnce(&mut PeerConfig),
) -> (PeerId, Output) {
    let mut cfg = PeerConfig::new(IpAddr::from([192, 0, 2, n]), LOCAL_AS);
    cfg.rr_client = true;
    cfg.add_path.send = vec![(V4, mode)];
    f(&mut cfg);
    let id = r.add_peer(cfg).unwrap();
    let mut s = session([10, 0, 0, n]);
    s.families = vec![V4];
    s.codec.add_path_tx.insert(V4);
    (id, r.peer_up(id, s))
}

fn client(r: &mut Rib, n: u8) -> PeerId {
    peer(r, n, LOCAL_AS, |c| c.rr_client = true)
}

/// Client `n`'s route for P, its next hop 192.0.2.n.
fn from(n: u8) -> PathAttributes {
    attrs(&[], [192, 0, 2, n])
}

/// One line per NLRI of every UPDATE sent to `to`, decoded as a peer that
/// receives IPv4 paths with identifiers.
fn sent(out: &Output, to: PeerId) -> Vec<String> {
    let mut ctx = CodecContext::four_octet();
    ctx.add_path_rx.insert(V4);
    let mut lines = Vec::new();
    for (_, m) in out.messages.iter().filter(|(p, _)| *p == to) {
        let Ok(Message::Update(u)) = Message::decode(&ctx, m) else {
            panic!("not an UPDATE: {m:?}");
        };
        if let Some(f) = u.end_of_rib_family() {
            lines.push(format!("eor {f}"));
            continue;
        }
        let id =
            |e: &crate::wire::NlriEntry| e.path_id.map(|i| format!(" #{i}")).unwrap_or_default();
        for (_, e) in u.withdrawals() {
            lines.push(format!("-{}{}", e.prefix, id(&e)));
        }
        let nh = u.attrs.next_hop.map(|n| n.to_string()).unwrap_or_default();
        for (_, e) in u.announced() {
            lines.push(format!(
                "+{}{} {}",
                e.prefix,
                id(&e),
                describe(&u.attrs, &nh)
            ));
        }
    }
    lines
}

/// The reflected route of client `n`, as a client sees it.
fn reflected(n: u8, id: u32, extra: &str) -> String {
    format!(
        "+{P} #{id} path [] nh 192.0.2.{n} lp 100{extra} originator 10.0.0.{n} cluster 10.0.0.1"
    )
}

#[test]
fn all_sends_every_path_and_a_best_path_change_sends_nothing() {
    let mut r = rib();
    let rx = receiver(&mut r, 9, SendMode::All, |_| {});
    let plain = client(&mut r, 8);
    let (c2, c3, c4) = (client(&mut r, 2), client(&mut r, 3), client(&mut r, 4));

    let out = r.receive(c2, &announce(from(2), &[P]));
    assert_eq!(sent(&out, rx), [reflected(2, 1, "")]);
    let out = r.receive(c3, &announce(from(3), &[P]));
    assert_eq!(sent(&out, rx), [reflected(3, 2, "")]);
    // A client without ADD-PATH has the best path only (c2: lower router id).
    assert_eq!(plain_sent(&out, plain), Vec::<String>::new());

    // A new best path (higher LOCAL_PREF): the Loc-RIB changes, the client
    // without ADD-PATH gets the new best, the ADD-PATH receiver only the
    // new path: the two it has keep their identifiers.
    let mut a = from(4);
    a.local_pref = Some(200);
    let out = r.receive(c4, &announce(a, &[P]));
    assert_eq!(out.changes.len(), 1);
    assert_eq!(
        sent(&out, rx),
        ["+10.1.0.0/24 #3 path [] nh 192.0.2.4 lp 200 originator 10.0.0.4 cluster 10.0.0.1"]
    );
    assert_eq!(
        plain_sent(&out, plain),
        ["+10.1.0.0/24 path [] nh 192.0.2.4 lp 200 originator 10.0.0.4 cluster 10.0.0.1"]
    );

    // A path that goes is withdrawn by its identifier, the others stay.
    let out = r.receive(c2, &withdraw(&[P]));
    assert!(out.changes.is_empty());
    assert_eq!(sent(&out, rx), ["-10.1.0.0/24 #1"]);
    // A path that changes is replaced under its identifier.
    let mut a = from(3);
    a.med = Some(5);
    let out = r.receive(c3, &announce(a, &[P]));
    assert_eq!(sent(&out, rx), [reflected(3, 2, " med 5")]);
    // A new path takes the smallest free identifier.
    let c5 = client(&mut r, 5);
    let out = r.receive(c5, &announce(from(5), &[P]));
    assert_eq!(sent(&out, rx), [reflected(5, 1, "")]);
    assert_eq!(
        r.adj_rib_out_paths(rx)
            .iter()
            .map(|(e, _)| e.path_id)
            .collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3)]
    );
    // The session goes: its path is withdrawn by its identifier.
    let out = r.peer_down(c4, &[]);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(sent(&out, rx), ["-10.1.0.0/24 #3"]);
}

#[test]
fn best_with_add_path_replaces_the_best_under_one_identifier() {
    let mut r = rib();
    let rx = receiver(&mut r, 9, SendMode::Best, |_| {});
    let (c2, c3) = (client(&mut r, 2), client(&mut r, 3));
    let out = r.receive(c2, &announce(from(2), &[P]));
    assert_eq!(sent(&out, rx), [reflected(2, 1, "")]);
    let out = r.receive(c3, &announce(from(3), &[P]));
    assert_eq!(sent(&out, rx), Vec::<String>::new());
    // RFC 7911 §5: the new best under the old best's identifier replaces
    // it, one announcement as without ADD-PATH.
    let out = r.receive(c2, &withdraw(&[P]));
    assert_eq!(sent(&out, rx), [reflected(3, 1, "")]);
    let out = r.receive(c3, &withdraw(&[P]));
    assert_eq!(sent(&out, rx), ["-10.1.0.0/24 #1"]);
}

#[test]
fn ecmp_sends_the_multipath_set() {
    let mut r = rib();
    r.cfg.decision.max_paths = 4;
    let ecmp = receiver(&mut r, 9, SendMode::Ecmp, |_| {});
    let all = receiver(&mut r, 8, SendMode::All, |_| {});
    let (c2, c3, c4) = (client(&mut r, 2), client(&mut r, 3), client(&mut r, 4));
    r.receive(c2, &announce(from(2), &[P]));
    r.receive(c3, &announce(from(3), &[P]));
    // c4's is worse (lower LOCAL_PREF): not in the multipath set.
    let mut worse = from(4);
    worse.local_pref = Some(50);
    let out = r.receive(c4, &announce(worse, &[P]));
    assert_eq!(sent(&out, ecmp), Vec::<String>::new());
    assert_eq!(sent(&out, all).len(), 1);
    assert_eq!(
        r.adj_rib_out_paths(ecmp).len(),
        2,
        "{:?}",
        r.adj_rib_out_paths(ecmp)
    );
    // One of the set goes: withdrawn by its identifier.
    let out = r.receive(c2, &withdraw(&[P]));
    assert_eq!(sent(&out, ecmp), ["-10.1.0.0/24 #1"]);
    // The last one goes: the worse path becomes the set, under the
    // identifier the leaving path had.
    let out = r.receive(c3, &withdraw(&[P]));
    assert_eq!(
        sent(&out, ecmp),
        ["+10.1.0.0/24 #2 path [] nh 192.0.2.4 lp 50 originator 10.0.0.4 cluster 10.0.0.1"]
    );
}

#[test]
fn ecmp_sends_nothing_when_export_policy_rejects_the_best() {
    let mut r = rib();
    r.cfg.decision.max_paths = 4;
    // RFC 7911 §5: the best SHOULD be among the paths sent. Paths with
    // community 64512:666 are not exported to this receiver.
    let ecmp = receiver(&mut r, 9, SendMode::Ecmp, |c| {
        c.export = serde_json::from_str(
            r#"{"rules":[{"match":{"community":"64512:666"},"action":"reject"}]}"#,
        )
        .unwrap();
    });
    let (c2, c3) = (client(&mut r, 2), client(&mut r, 3));
    let out = r.receive(c3, &announce(from(3), &[P]));
    assert_eq!(sent(&out, ecmp), [reflected(3, 1, "")]);
    // c2's path ties with c3's and wins the tie (lower originator): it is
    // the best, and rejected. c3's, still in the multipath set, is
    // withdrawn rather than left without the best beside it.
    let mut a = from(2);
    a.communities = Some(vec![crate::wire::attr::Community(64512 << 16 | 666)]);
    let out = r.receive(c2, &announce(a, &[P]));
    assert_eq!(sent(&out, ecmp), ["-10.1.0.0/24 #1"]);
    assert!(r.adj_rib_out_paths(ecmp).is_empty());
    // The rejected best goes: c3's is the best again, and is sent.
    let out = r.receive(c2, &withdraw(&[P]));
    assert_eq!(sent(&out, ecmp), [reflected(3, 1, "")]);
}

#[test]
fn export_policy_and_reflection_rules_apply_per_path() {
    let mut r = rib();
    // Paths with community 64512:666 are not exported to this receiver.
    let rx = receiver(&mut r, 9, SendMode::All, |c| {
        c.export = serde_json::from_str(
            r#"{"rules":[{"match":{"community":"64512:666"},"action":"reject"}]}"#,
        )
        .unwrap();
    });
    // A receiver that is not a client: non-client paths stay away from
    // it (RFC 4456 §6), client paths reach it.
    let nonclient_rx = receiver(&mut r, 7, SendMode::All, |c| c.rr_client = false);
    let (c2, c3) = (client(&mut r, 2), client(&mut r, 3));
    let n4 = peer(&mut r, 4, LOCAL_AS, |_| {});

    // The best path (c2, higher LOCAL_PREF) is rejected by policy: the
    // others still go.
    let mut a = from(2);
    a.local_pref = Some(200);
    a.communities = Some(vec![crate::wire::attr::Community(64512 << 16 | 666)]);
    let out = r.receive(c2, &announce(a, &[P]));
    assert_eq!(sent(&out, rx), Vec::<String>::new());
    assert_eq!(sent(&out, nonclient_rx).len(), 1);
    let out = r.receive(c3, &announce(from(3), &[P]));
    assert_eq!(sent(&out, rx), [reflected(3, 1, "")]);
    let out = r.receive(n4, &announce(from(4), &[P]));
    assert_eq!(
        sent(&out, rx),
        ["+10.1.0.0/24 #2 path [] nh 192.0.2.4 lp 100 originator 10.0.0.4 cluster 10.0.0.1"]
    );
    assert_eq!(sent(&out, nonclient_rx), Vec::<String>::new());
    assert_eq!(r.adj_rib_out_paths(nonclient_rx).len(), 2);
}

#[test]
fn a_path_is_never_sent_back_to_its_peer() {
    let mut r = rib();
    let a = receiver(&mut r, 9, SendMode::All, |_| {});
    let b = receiver(&mut r, 8, SendMode::All, |_| {});
    let c2 = client(&mut r, 2);
    let out = r.receive(a, &announce(from(9), &[P]));
    assert_eq!(sent(&out, a), Vec::<String>::new());
    assert_eq!(sent(&out, b), [reflected(9, 1, "")]);
    let out = r.receive(c2, &announce(from(2), &[P]));
    assert_eq!(sent(&out, a), [reflected(2, 2, "")]);
    assert_eq!(sent(&out, b), [reflected(2, 2, "")]);
    // a's path goes and c2's changes in one pass... here: a withdraws; b
    // loses #1, a never had it.
    let out = r.receive(a, &withdraw(&[P]));
    assert_eq!(sent(&out, a), Vec::<String>::new());
    assert_eq!(sent(&out, b), ["-10.1.0.0/24 #1"]);
    // b's own path takes #1: everyone else gets it, b does not, and b
    // held no #1 any more, so no withdrawal for it either.
    let out = r.receive(b, &announce(from(8), &[P]));
    assert_eq!(sent(&out, a), [reflected(8, 1, "")]);
    assert_eq!(sent(&out, b), Vec::<String>::new());
}

#[test]
fn a_peer_that_does_not_receive_paths_gets_the_best_without_identifiers() {
    let mut r = rib();
    // Configured to send all, but the peer did not say it receives (the
    // session's codec has no ADD-PATH send): RFC 4271 rules, RFC 7911 §5.
    let mut cfg = PeerConfig::new(IpAddr::from([192, 0, 2, 9]), LOCAL_AS);
    cfg.rr_client = true;
    cfg.add_path.send = vec![(V4, SendMode::All)];
    let rx = r.add_peer(cfg).unwrap();
    let mut s = session([10, 0, 0, 9]);
    s.families = vec![V4];
    r.peer_up(rx, s);
    let (c2, c3) = (client(&mut r, 2), client(&mut r, 3));
    r.receive(c2, &announce(from(2), &[P]));
    let out = r.receive(c3, &announce(from(3), &[P]));
    assert!(out.messages.is_empty());
    let out = r.receive(c2, &withdraw(&[P]));
    assert_eq!(
        plain_sent(&out, rx),
        ["+10.1.0.0/24 path [] nh 192.0.2.3 lp 100 originator 10.0.0.3 cluster 10.0.0.1"]
    );
}

#[test]
fn members_joining_refreshing_or_waiting_for_deferral_get_every_path() {
    let mut r = rib();
    r.defer_advertisements();
    let a = receiver(&mut r, 9, SendMode::All, |_| {});
    let (c2, c3) = (client(&mut r, 2), client(&mut r, 3));
    assert!(r.receive(c2, &announce(from(2), &[P])).messages.is_empty());
    assert!(r.receive(c3, &announce(from(3), &[P])).messages.is_empty());
    let out = r.end_deferral();
    assert_eq!(
        sent(&out, a),
        [
            reflected(2, 1, ""),
            reflected(3, 2, ""),
            "eor ipv4-unicast".into()
        ]
    );
    // A second member of the same group: the same identifiers.
    let (b, out) = receiver_up(&mut r, 8, SendMode::All, |_| {});
    assert_eq!(r.groups().len(), 2, "a and b together, the clients");
    assert_eq!(
        sent(&out, b),
        [
            reflected(2, 1, ""),
            reflected(3, 2, ""),
            "eor ipv4-unicast".into()
        ]
    );
    // ROUTE-REFRESH: everything again.
    let out = r.refresh(a, V4);
    assert_eq!(sent(&out, a), [reflected(2, 1, ""), reflected(3, 2, "")]);
}

#[test]
fn paths_whose_next_hop_does_not_resolve_are_not_sent() {
    let mut r = rib();
    let rx = receiver(&mut r, 9, SendMode::All, |_| {});
    let (c2, c3) = (client(&mut r, 2), client(&mut r, 3));
    r.set_next_hop_cost(
        Box::new(|nh: IpAddr| (nh != IpAddr::from([192, 0, 2, 3])).then_some(1u32))
            as Box<dyn NextHopCost>,
    );
    r.receive(c2, &announce(from(2), &[P]));
    let out = r.receive(c3, &announce(from(3), &[P]));
    assert_eq!(sent(&out, rx), Vec::<String>::new());
    let out = r.set_next_hop_cost(Box::new(|_: IpAddr| Some(1u32)));
    assert_eq!(sent(&out, rx), [reflected(3, 2, "")]);
}

#[test]
fn a_policy_change_moves_the_receiver_with_the_difference_only() {
    let mut r = rib();
    let rx = receiver(&mut r, 9, SendMode::All, |_| {});
    let (c2, c3) = (client(&mut r, 2), client(&mut r, 3));
    r.receive(c2, &announce(from(2), &[P]));
    r.receive(c3, &announce(from(3), &[P]));
    let mut cfg = crate::rib::adj_out::PeerConfigUpdate::from(r.peer_config(rx).unwrap());
    // The same export under another name: nothing to send.
    cfg.export = serde_json::from_str(r#"{"rules":[{"action":"accept"}]}"#).unwrap();
    let out = r.set_peer_config(rx, cfg.clone()).unwrap();
    assert_eq!(sent(&out, rx), Vec::<String>::new());
    // A real change: both paths again, by identifier, no withdrawal.
    cfg.export = serde_json::from_str(r#"{"rules":[{"set_local_pref":7}]}"#).unwrap();
    let out = r.set_peer_config(rx, cfg).unwrap();
    let got = sent(&out, rx);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|l| l.starts_with("+10.1.0.0/24 #") && l.contains("lp 7")),
        "{got:?}"
    );
}

#[test]
fn an_identifier_passed_to_the_path_of_a_peer_that_held_it_is_withdrawn_from_that_peer() {
    let mut r = rib();
    let a = receiver(&mut r, 9, SendMode::All, |_| {});
    let b = receiver(&mut r, 8, SendMode::All, |_| {});
    r.receive(a, &announce(from(9), &[P]));
    // In one pass (decisions left undecided, as the speaker does under load): a's
    // path #1 goes, b's comes and takes #1. Everyone but b gets it as a
    // replacement; b, which held #1 (a's) and must not get its own path
    // back, gets a withdrawal.
    let mut undecided = crate::rib::Undecided::default();
    let mut out = r.receive_undecided(a, &withdraw(&[P]), &mut undecided);
    out.messages.extend(
        r.receive_undecided(b, &announce(from(8), &[P]), &mut undecided)
            .messages,
    );
    while let Some(o) = r.decide_undecided(&mut undecided, 64) {
        out.messages.extend(o.messages);
    }
    assert_eq!(sent(&out, a), [reflected(8, 1, "")]);
    assert_eq!(sent(&out, b), ["-10.1.0.0/24 #1"]);
}
