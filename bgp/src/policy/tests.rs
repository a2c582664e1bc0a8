//! Policies as JSON data, routes as small descriptions, verdicts as strings.

use super::*;
use crate::rib::attrs::AttrSet;
use crate::wire::attr::{AsPath, NextHop, PathAttributes};
use std::net::Ipv4Addr;

fn policy(json: &str) -> Policy {
    let p: Policy = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    p.validate().unwrap();
    p
}

fn route(path: &[u32], communities: &[&str]) -> AttrSet {
    AttrSet {
        attrs: PathAttributes {
            as_path: Some(AsPath::from_sequence(path)),
            communities: (!communities.is_empty())
                .then(|| communities.iter().map(|c| c.parse().unwrap()).collect()),
            ..Default::default()
        },
        next_hop: NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
        pre: None,
        facts: Default::default(),
    }
}

/// "reject", "accept" or "accept " plus what changed.
fn run(p: &Policy, prefix: &str, a: &AttrSet, peer: PeerType) -> String {
    let v = p.evaluate(&PolicyInput {
        prefix: prefix.parse().unwrap(),
        attrs: a,
        peer_type: Some(peer),
        local_as: 64512,
    });
    match v {
        Verdict::Reject => "reject".into(),
        Verdict::Accept(None) => "accept".into(),
        Verdict::Accept(Some(m)) => {
            let mut s = String::from("accept");
            if m.attrs.local_pref != a.attrs.local_pref {
                s += &format!(" lp={}", m.attrs.local_pref.unwrap_or(0));
            }
            if m.attrs.communities != a.attrs.communities {
                let c: Vec<String> = m
                    .attrs
                    .communities
                    .iter()
                    .flatten()
                    .map(|c| c.to_string())
                    .collect();
                s += &format!(" comm={}", c.join(","));
            }
            if m.attrs.as_path != a.attrs.as_path {
                s += &format!(
                    " path={}",
                    m.attrs
                        .as_path
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default()
                );
            }
            s
        }
    }
}

#[test]
fn prefix_matches() {
    let within = policy(
        r#"{"rules":[{"match":{"prefix":{"cidr":"10.0.0.0/8","ge":16,"le":24}},"action":"reject"}]}"#,
    );
    let exact = policy(
        r#"{"rules":[{"match":{"prefix":{"cidr":"10.1.0.0/16","op":"exact"}},"action":"reject"}]}"#,
    );
    let not_within = policy(
        r#"{"rules":[{"match":{"prefix":{"cidr":"10.0.0.0/8","op":"not-within"}},"action":"reject"}]}"#,
    );
    let a = route(&[65001], &[]);
    // (policy, prefix, verdict)
    let table = [
        (&within, "10.1.0.0/16", "reject"),
        (&within, "10.1.2.0/24", "reject"),
        (&within, "10.0.0.0/8", "accept"),    // shorter than ge
        (&within, "10.1.2.128/25", "accept"), // longer than le
        (&within, "11.1.0.0/16", "accept"),   // outside
        (&exact, "10.1.0.0/16", "reject"),
        (&exact, "10.1.0.0/17", "accept"),
        (&not_within, "10.9.0.0/16", "accept"),
        (&not_within, "192.168.0.0/16", "reject"),
        (&not_within, "2001:db8::/32", "reject"), // another family is not within
    ];
    for (p, prefix, want) in table {
        assert_eq!(run(p, prefix, &a, PeerType::Ebgp), want, "{prefix}");
    }
}

#[test]
fn community_as_path_and_peer_type_matches() {
    let p = policy(
        r#"{"rules":[
            {"match":{"community":"65000:666"},"action":"reject"},
            {"match":{"as_path_prefix":[65001,65002]},"action":"reject"},
            {"match":{"peer_type":"ibgp"},"set_local_pref":50,"action":"accept"}
        ]}"#,
    );
    let table = [
        (route(&[65003], &["65000:666"]), PeerType::Ebgp, "reject"),
        (route(&[65003], &["65000:1"]), PeerType::Ebgp, "accept"),
        (route(&[65001, 65002, 7], &[]), PeerType::Ebgp, "reject"),
        (route(&[65001, 7, 65002], &[]), PeerType::Ebgp, "accept"),
        (route(&[65001], &[]), PeerType::Ebgp, "accept"),
        (route(&[65001], &[]), PeerType::Ibgp, "accept lp=50"),
    ];
    for (a, peer, want) in table {
        assert_eq!(run(&p, "10.0.0.0/24", &a, peer), want, "{a:?} {peer}");
    }
}

#[test]
fn modifications_apply_before_the_terminal_rule_and_accumulate() {
    let p = policy(
        r#"{"rules":[
            {"add_communities":["64512:1"]},
            {"match":{"prefix":{"cidr":"10.0.0.0/8"}},"prepend":{"times":2},"set_local_pref":300},
            {"match":{"community":"64512:1"},"add_communities":["64512:2","64512:1"],"action":"accept"},
            {"set_local_pref":1}
        ]}"#,
    );
    // Rule 3 matches on the community rule 1 added; rule 4 never runs.
    assert_eq!(
        run(&p, "10.0.0.0/24", &route(&[65001], &[]), PeerType::Ebgp),
        "accept lp=300 comm=64512:1,64512:2 path=64512 64512 65001"
    );
    assert_eq!(
        run(&p, "192.0.2.0/24", &route(&[65001], &[]), PeerType::Ebgp),
        "accept comm=64512:1,64512:2"
    );
    // Modifications before a reject do not matter; the verdict does.
    let r = policy(r#"{"rules":[{"set_local_pref":5},{"action":"reject"}]}"#);
    assert_eq!(
        run(&r, "10.0.0.0/24", &route(&[1], &[]), PeerType::Ebgp),
        "reject"
    );
    // A prepend of another AS.
    let q = policy(r#"{"rules":[{"prepend":{"times":1,"asn":65999}}]}"#);
    assert_eq!(
        run(&q, "10.0.0.0/24", &route(&[1], &[]), PeerType::Ebgp),
        "accept path=65999 1"
    );
}

#[test]
fn empty_policy_accepts_unchanged() {
    assert_eq!(
        run(
            &Policy::default(),
            "10.0.0.0/24",
            &route(&[1], &[]),
            PeerType::Ibgp
        ),
        "accept"
    );
}

#[test]
fn errors_name_the_field() {
    let bad = [
        (
            r#"{"rules":[{"match":{"prefix":{"cidr":"10.0.0.0/33"}}}]}"#,
            "match.prefix.cidr",
        ),
        (
            r#"{"rules":[{"match":{"community":"70000:1"}}]}"#,
            "match.community",
        ),
        (
            r#"{"rules":[{"add_communities":["x"]}]}"#,
            "add_communities",
        ),
        (r#"{"rules":[{"action":"drop"}]}"#, "unknown variant `drop`"),
        (
            r#"{"rules":[{"match":{"prefx":{}}}]}"#,
            "unknown field `prefx`",
        ),
        (
            r#"{"rules":[{"match":{"peer_type":"confed"}}]}"#,
            "unknown variant `confed`",
        ),
    ];
    for (json, want) in bad {
        let e = serde_json::from_str::<Policy>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{json}: {e}");
    }
    let invalid = [
        (
            r#"{"rules":[{"match":{"prefix":{"cidr":"10.0.0.0/16","ge":8}}}]}"#,
            "rules[0].match.prefix.ge",
        ),
        (
            r#"{"rules":[{},{"match":{"prefix":{"cidr":"10.0.0.0/16","ge":24,"le":20}}}]}"#,
            "rules[1].match.prefix.le",
        ),
        (
            r#"{"rules":[{"match":{"prefix":{"cidr":"10.0.0.0/16","le":40}}}]}"#,
            "rules[0].match.prefix.le",
        ),
        (
            r#"{"rules":[{"match":{"prefix":{"cidr":"10.0.0.0/16","op":"exact","le":24}}}]}"#,
            "rules[0].match.prefix",
        ),
        (
            r#"{"rules":[{"prepend":{"times":0}}]}"#,
            "rules[0].prepend.times",
        ),
        (
            r#"{"rules":[{"prepend":{"times":17}}]}"#,
            "rules[0].prepend.times",
        ),
    ];
    for (json, want) in invalid {
        let p: Policy = serde_json::from_str(json).unwrap();
        let e = p.validate().unwrap_err().to_string();
        assert!(e.starts_with(want), "{json}: {e}");
    }
}
