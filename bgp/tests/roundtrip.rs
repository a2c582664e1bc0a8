//! decode(encode(m)) == m for generated messages of every type, under 2- and
//! 4-octet AS contexts, with and without ADD-PATH and extended messages.

use bytes::Bytes;
use petrel_bgp::wire::attr::{
    Aggregator, AsPath, Community, ExtCommunity, LargeCommunity, MpReach, MpUnreach, NextHop,
    Origin, PathAttributes, RareAttributes, RawAttribute, SegmentType,
};
use petrel_bgp::wire::capability::{
    AddPathMode, Capability, ExtendedNextHop, GracefulRestart, GracefulRestartFamily, LlgrFamily,
};
use petrel_bgp::wire::codec::{AddPathFamilies, CodecContext, MAX_EXTENDED_MESSAGE_LEN};
use petrel_bgp::wire::family::Family;
use petrel_bgp::wire::nlri::{Nlri, NlriEntry, Prefix};
use petrel_bgp::wire::{
    ErrorCode, Message, Notification, Open, RefreshSubtype, RouteRefresh, Update,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![
        Just(Family::IPV4_UNICAST),
        Just(Family::IPV6_UNICAST),
        (any::<u16>(), any::<u8>()).prop_map(|(a, s)| Family::new(a, s))
    ]
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        family().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::EnhancedRouteRefresh),
        Just(Capability::ExtendedMessage),
        any::<u32>().prop_map(Capability::FourOctetAs),
        vec((any::<u16>(), any::<u16>(), any::<u16>()), 0..4).prop_map(|v| {
            Capability::ExtendedNextHop(
                v.into_iter()
                    .map(|(a, s, n)| ExtendedNextHop {
                        nlri_afi: a,
                        nlri_safi: s,
                        next_hop_afi: n,
                    })
                    .collect(),
            )
        }),
        (0u8..16, 0u16..4096, vec((family(), any::<u8>()), 0..4)).prop_map(|(flags, t, f)| {
            Capability::GracefulRestart(GracefulRestart {
                flags,
                restart_time: t,
                families: f
                    .into_iter()
                    .map(|(family, flags)| GracefulRestartFamily { family, flags })
                    .collect(),
            })
        }),
        vec((family(), 1u8..4), 0..4).prop_map(|v| Capability::AddPath(
            v.into_iter()
                .map(|(f, m)| (f, AddPathMode::from_u8(m)))
                .collect()
        )),
        vec((family(), any::<u8>(), 0u32..(1 << 24)), 0..4).prop_map(|v| {
            Capability::LongLivedGracefulRestart(
                v.into_iter()
                    .map(|(family, flags, stale_time)| LlgrFamily {
                        family,
                        flags,
                        stale_time,
                    })
                    .collect(),
            )
        }),
        ("[a-z0-9-]{0,20}", "[a-z.]{0,20}").prop_map(|(h, d)| Capability::Fqdn {
            hostname: Bytes::from(h.into_bytes()),
            domain: Bytes::from(d.into_bytes())
        }),
        (128u8..=255, vec(any::<u8>(), 0..200))
            .prop_filter("known code", |(c, _)| *c != 128)
            .prop_map(|(code, v)| Capability::Unknown {
                code,
                value: Bytes::from(v)
            }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>(),
        1u32..,
        vec(vec(capability(), 0..5), 0..4),
    )
        .prop_map(|(my_as, hold, id, params)| Open {
            version: 4,
            my_as,
            hold_time: if hold == 1 || hold == 2 { 0 } else { hold },
            bgp_id: Ipv4Addr::from(id),
            params,
        })
}

fn prefix_v4() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32)
        .prop_map(|(a, l)| Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), l).unwrap())
}

fn prefix_v6() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), l).unwrap())
}

fn entries(
    p: impl Strategy<Value = Prefix>,
    add_path: bool,
) -> impl Strategy<Value = Vec<NlriEntry>> {
    vec((any::<u32>(), p), 0..20).prop_map(move |v| {
        v.into_iter()
            .map(|(id, prefix)| NlriEntry {
                path_id: add_path.then_some(id),
                prefix,
            })
            .collect()
    })
}

fn as_path(max_asn: u32) -> impl Strategy<Value = AsPath> {
    vec(
        (
            prop_oneof![
                Just(SegmentType::Sequence),
                Just(SegmentType::Set),
                Just(SegmentType::ConfedSequence),
                Just(SegmentType::ConfedSet)
            ],
            vec(0..=max_asn, 1..8),
        ),
        0..4,
    )
    .prop_map(|segs| {
        let mut p = AsPath::new();
        for (k, asns) in segs {
            p.push_segment(k, &asns);
        }
        p
    })
}

fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..0xe000_0000).prop_map(Ipv4Addr::from)
}

fn attrs(four_octet: bool) -> impl Strategy<Value = PathAttributes> {
    let max_asn = if four_octet { u32::MAX } else { 0xffff };
    (
        (
            prop_oneof![
                Just(Origin::Igp),
                Just(Origin::Egp),
                Just(Origin::Incomplete)
            ],
            as_path(max_asn),
            unicast_v4(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
            proptest::option::of((0..=max_asn, any::<u32>())),
        ),
        (
            proptest::option::of(vec(any::<u32>(), 1..10)),
            proptest::option::of(any::<u32>()),
            proptest::option::of(vec(any::<u32>(), 1..5)),
            proptest::option::of(vec(any::<[u8; 8]>(), 1..5)),
            proptest::option::of(vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..5)),
            btree_map(
                129u8..=254,
                (any::<bool>(), any::<bool>(), vec(any::<u8>(), 0..300)),
                0..3,
            ),
        ),
        any::<bool>(),
    )
        .prop_map(
            move |(
                (origin, path, nh, med, lp, atomic, aggr),
                (comm, orig, cl, ext, large, other),
                communities_partial,
            )| {
                // Partial bits only on typed optional transitive attributes present.
                let partial = if communities_partial && comm.is_some() {
                    1 << 8
                } else {
                    0
                };
                PathAttributes {
                    origin: Some(origin),
                    as_path: Some(path),
                    next_hop: Some(nh),
                    med,
                    local_pref: lp,
                    atomic_aggregate: atomic,
                    communities: comm.map(|v| v.into_iter().map(Community).collect()),
                    originator_id: orig.map(Ipv4Addr::from),
                    cluster_list: cl.map(|v| v.into_iter().map(Ipv4Addr::from).collect()),
                    rare: Some(Box::new(RareAttributes {
                        aggregator: aggr.map(|(asn, a)| Aggregator {
                            asn,
                            addr: Ipv4Addr::from(a),
                        }),
                        ext_communities: ext.map(|v| v.into_iter().map(ExtCommunity).collect()),
                        as4_path: None,
                        as4_aggregator: None,
                        ipv6_ext_communities: None,
                        large_communities: large.map(|v| {
                            v.into_iter()
                                .map(|(global, local1, local2)| LargeCommunity {
                                    global,
                                    local1,
                                    local2,
                                })
                                .collect()
                        }),
                        other: other
                            .into_iter()
                            .filter(|(code, _)| ![petrel_bgp::wire::attr::ATTR_SET].contains(code))
                            .map(|(code, (t, p, v))| RawAttribute {
                                flags: 0x80
                                    | if t { 0x40 } else { 0 }
                                    | if p && t { 0x20 } else { 0 },
                                type_code: code,
                                value: Bytes::from(v),
                            })
                            .collect(),
                        partial,
                    })),
                }
            },
        )
}

fn ctx_strategy() -> impl Strategy<Value = CodecContext> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(four, add_path, extended)| {
        let mut ctx = if four {
            CodecContext::four_octet()
        } else {
            CodecContext::default()
        };
        if add_path {
            let mut f = AddPathFamilies::default();
            f.insert(Family::IPV4_UNICAST);
            f.insert(Family::IPV6_UNICAST);
            ctx.add_path_rx = f.clone();
            ctx.add_path_tx = f;
        }
        if extended {
            ctx.max_message_len = MAX_EXTENDED_MESSAGE_LEN;
        }
        ctx
    })
}

fn update(ctx: CodecContext) -> impl Strategy<Value = Update> {
    let ap4 = ctx.add_path_rx.contains(Family::IPV4_UNICAST);
    let ap6 = ctx.add_path_rx.contains(Family::IPV6_UNICAST);
    (
        attrs(ctx.four_octet_as),
        entries(prefix_v4(), ap4),
        entries(prefix_v4(), ap4),
        proptest::option::of((
            entries(prefix_v6(), ap6),
            any::<u128>(),
            proptest::option::of(any::<u128>()),
        )),
        proptest::option::of(entries(prefix_v6(), ap6)),
    )
        .prop_map(move |(attrs, withdrawn, nlri, reach, unreach)| {
            let mut u = Update::new(attrs);
            u.withdrawn = Nlri::from_entries(Family::IPV4_UNICAST, ap4, &withdrawn);
            u.nlri = Nlri::from_entries(Family::IPV4_UNICAST, ap4, &nlri);
            u.mp_reach = reach.map(|(e, g, ll)| MpReach {
                family: Family::IPV6_UNICAST,
                next_hop: NextHop::V6 {
                    global: Ipv6Addr::from(g),
                    link_local: ll.map(Ipv6Addr::from),
                },
                nlri: Nlri::from_entries(Family::IPV6_UNICAST, ap6, &e),
            });
            u.mp_unreach = unreach.map(|e| MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: Nlri::from_entries(Family::IPV6_UNICAST, ap6, &e),
            });
            u
        })
}

fn message() -> impl Strategy<Value = (CodecContext, Message)> {
    ctx_strategy().prop_flat_map(|ctx| {
        let m = prop_oneof![
            open().prop_map(Message::Open),
            update(ctx.clone()).prop_map(Message::Update),
            (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..100)).prop_map(|(c, s, d)| {
                Message::Notification(Notification::new(ErrorCode::from_parts(c, s), d))
            }),
            Just(Message::Keepalive),
            (family(), 0u8..4).prop_map(|(family, s)| Message::RouteRefresh(RouteRefresh {
                family,
                subtype: match s {
                    0 => RefreshSubtype::Request,
                    1 => RefreshSubtype::BeginningOfRefresh,
                    2 => RefreshSubtype::EndOfRefresh,
                    _ => RefreshSubtype::Reserved(77),
                }
            })),
        ];
        (Just(ctx), m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encode_is_identity((ctx, m) in message()) {
        match m.to_bytes(&ctx) {
            Ok(bytes) => {
                prop_assert!(bytes.len() <= ctx.max_message_len.max(4096));
                let back = Message::decode(&ctx, &bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(back, m);
            }
            // Generated messages can be too big for the context: refusing to
            // encode them is the required behaviour, never a truncated message.
            Err(e) => prop_assert!(e.len > e.max),
        }
    }
}
