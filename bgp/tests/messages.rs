//! Byte-vector tests for each message type and the codec context.

use bytes::{Bytes, BytesMut};
use petrel_bgp::wire::attr::{Aggregator, AsPath, NextHop, Origin, PathAttributes};
use petrel_bgp::wire::capability::{
    AddPathMode, Capability, GracefulRestart, GracefulRestartFamily, LlgrFamily,
};
use petrel_bgp::wire::codec::{CodecContext, MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN};
use petrel_bgp::wire::family::Family;
use petrel_bgp::wire::header::split_message;
use petrel_bgp::wire::nlri::{NlriEntry, Prefix};
use petrel_bgp::wire::notification::{CeaseError, ErrorCode};
use petrel_bgp::wire::{
    Message, Notification, Open, RefreshSubtype, RouteRefresh, Update, UpdatePacker,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn hex(s: &str) -> Bytes {
    Bytes::from(
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>(),
    )
}

fn err(r: Result<Message, Notification>) -> (u8, u8, Vec<u8>) {
    let n = r.expect_err("an error");
    (n.error.code(), n.error.subcode(), n.data.to_vec())
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

/// A Cisco OPEN from BGP_MD5.cap: one capability per optional parameter,
/// including Cisco's pre-standard route refresh (code 128).
#[test]
fn cisco_open_decodes_and_reencodes() {
    let b = hex(&format!(
        "{MARKER}002d0104fe4c00b40a0000011002060104000100010202800002020200"
    ));
    let Message::Open(o) = Message::decode(&CodecContext::default(), &b).unwrap() else {
        panic!()
    };
    assert_eq!(
        (o.version, o.my_as, o.hold_time, o.bgp_id),
        (4, 65100, 180, Ipv4Addr::new(10, 0, 0, 1))
    );
    let caps: Vec<_> = o.capabilities().cloned().collect();
    assert_eq!(
        caps,
        [
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Unknown {
                code: 128,
                value: Bytes::new()
            },
            Capability::RouteRefresh
        ]
    );
    assert_eq!(
        Message::Open(o).to_bytes(&CodecContext::default()).unwrap(),
        b
    );
}

fn frr_like_capabilities() -> Vec<Capability> {
    vec![
        Capability::Multiprotocol(Family::IPV4_UNICAST),
        Capability::Multiprotocol(Family::IPV6_UNICAST),
        Capability::RouteRefresh,
        Capability::EnhancedRouteRefresh,
        Capability::ExtendedMessage,
        Capability::FourOctetAs(4_200_000_001),
        Capability::AddPath(vec![
            (Family::IPV4_UNICAST, AddPathMode::Both),
            (Family::IPV6_UNICAST, AddPathMode::Receive),
        ]),
        Capability::GracefulRestart(GracefulRestart {
            flags: GracefulRestart::RESTART_STATE | GracefulRestart::NOTIFICATION,
            restart_time: 120,
            families: vec![GracefulRestartFamily {
                family: Family::IPV4_UNICAST,
                flags: GracefulRestartFamily::FORWARDING_STATE,
            }],
        }),
        Capability::LongLivedGracefulRestart(vec![LlgrFamily {
            family: Family::IPV4_UNICAST,
            flags: 0x80,
            stale_time: 86400,
        }]),
        Capability::Fqdn {
            hostname: Bytes::from_static(b"node-1"),
            domain: Bytes::from_static(b"cluster.local"),
        },
        Capability::ExtendedNextHop(vec![petrel_bgp::wire::capability::ExtendedNextHop {
            nlri_afi: 1,
            nlri_safi: 1,
            next_hop_afi: 2,
        }]),
        Capability::Unknown {
            code: 200,
            value: Bytes::from_static(&[1, 2, 3]),
        },
    ]
}

#[test]
fn open_with_every_capability_round_trips() {
    let o = Open::new(
        4_200_000_001,
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        frr_like_capabilities(),
    );
    assert_eq!(
        o.my_as, 23456,
        "RFC 6793 §3: AS_TRANS in My Autonomous System"
    );
    assert_eq!(o.asn(), 4_200_000_001);
    let b = Message::Open(o.clone())
        .to_bytes(&CodecContext::default())
        .unwrap();
    assert_eq!(
        Message::decode(&CodecContext::default(), &b).unwrap(),
        Message::Open(o)
    );
    // The GR capability's first word: flags R|N in the top nibble, 120 seconds.
    let gr = b.windows(2).position(|w| w == [64, 6]).unwrap();
    assert_eq!(&b[gr + 2..gr + 4], &[0xc0, 120]);
}

/// RFC 9072: parameters longer than 255 octets use the extended format.
#[test]
fn extended_optional_parameters_rfc9072() {
    let big: Vec<Capability> = (0..4)
        .map(|i| Capability::Unknown {
            code: 200 + i,
            value: Bytes::from(vec![i; 100]),
        })
        .collect();
    let o = Open::new(65001, 180, Ipv4Addr::new(10, 0, 0, 1), big);
    let b = Message::Open(o.clone())
        .to_bytes(&CodecContext::default())
        .unwrap();
    // Non-extended length 255, then type 255, then a 2-octet length.
    assert_eq!(&b[28..30], &[255, 255]);
    assert_eq!(u16::from_be_bytes([b[30], b[31]]) as usize, b.len() - 32);
    assert_eq!(
        Message::decode(&CodecContext::default(), &b).unwrap(),
        Message::Open(o)
    );
    // A small OPEN keeps the RFC 5492 format.
    let small = Open::new(
        65001,
        180,
        Ipv4Addr::new(10, 0, 0, 1),
        vec![Capability::RouteRefresh],
    );
    let b = Message::Open(small)
        .to_bytes(&CodecContext::default())
        .unwrap();
    assert_eq!(b[28], 4);
}

#[test]
fn open_errors_rfc4271_6_2() {
    let ctx = CodecContext::default();
    // Version 3: Unsupported Version Number, data = the version we support.
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}001d0103fde900b40a00000100"))
        )),
        (2, 1, vec![0, 4])
    );
    // Hold time 1: Unacceptable Hold Time.
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}001d0104fde900010a00000100"))
        ))
        .0,
        2
    );
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}001d0104fde900010a00000100"))
        ))
        .1,
        6
    );
    // BGP identifier 0: Bad BGP Identifier (RFC 6286 §2.2).
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}001d0104fde900b40000000000"))
        ))
        .1,
        3
    );
    // Optional parameter type 1 (authentication): Unsupported Optional Parameter.
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}00200104fde900b40a000001030101ff"))
        ))
        .1,
        4
    );
    // A parameter whose length overruns the parameters: OPEN error, unspecific.
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}001f0104fde900b40a00000102020600"))
        ))
        .0,
        1
    );
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}001f0104fde900b40a000001020206"))
        )),
        (2, 0, vec![])
    );
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}00200104fde900b40a000001030209ff"))
        )),
        (2, 0, vec![])
    );
    // A malformed known capability (4-octet AS with 2 octets).
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}00210104fde900b40a00000104020241"))
        ))
        .0,
        1
    );
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}00230104fde900b40a000001060204410200ff"))
        ))
        .0,
        2
    );
}

#[test]
fn header_errors_rfc4271_6_1() {
    let ctx = CodecContext::default();
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex("00ffffffffffffffffffffffffffffff001304")
        )),
        (1, 1, vec![])
    );
    assert_eq!(
        err(Message::decode(&ctx, &hex(&format!("{MARKER}001404ff")))),
        (1, 2, vec![0, 0x14])
    );
    assert_eq!(
        err(Message::decode(&ctx, &hex(&format!("{MARKER}001309")))),
        (1, 3, vec![9])
    );
    // An UPDATE below its minimum length, and one over 4096 without RFC 8654.
    let mut buf = BytesMut::from(&hex(&format!("{MARKER}001502"))[..]);
    assert_eq!(
        split_message(&mut buf, MAX_MESSAGE_LEN)
            .unwrap_err()
            .error
            .subcode(),
        2
    );
    let mut buf = BytesMut::from(&hex(&format!("{MARKER}100102"))[..]);
    assert_eq!(
        split_message(&mut buf, MAX_MESSAGE_LEN)
            .unwrap_err()
            .data
            .to_vec(),
        vec![0x10, 0x01]
    );
    // With extended messages negotiated the same header waits for more octets.
    let mut buf = BytesMut::from(&hex(&format!("{MARKER}100102"))[..]);
    assert!(split_message(&mut buf, MAX_EXTENDED_MESSAGE_LEN)
        .unwrap()
        .is_none());
    // RFC 8654 §4: an OPEN is never longer than 4096 octets.
    let mut buf = BytesMut::from(&hex(&format!("{MARKER}100101"))[..]);
    assert!(split_message(&mut buf, MAX_EXTENDED_MESSAGE_LEN).is_err());
}

#[test]
fn framing_splits_a_stream_without_copying() {
    let ka = hex(&format!("{MARKER}001304"));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&ka);
    buf.extend_from_slice(&ka[..10]);
    let (h, m) = split_message(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
    assert_eq!((h.msg_type, h.length, m.len()), (4, 19, 19));
    assert!(split_message(&mut buf, MAX_MESSAGE_LEN).unwrap().is_none());
    buf.extend_from_slice(&ka[10..]);
    assert!(split_message(&mut buf, MAX_MESSAGE_LEN).unwrap().is_some());
    assert!(buf.is_empty());
}

#[test]
fn negotiation_builds_the_codec_context() {
    let local = frr_like_capabilities();
    let remote = vec![
        Capability::FourOctetAs(65002),
        Capability::ExtendedMessage,
        Capability::AddPath(vec![
            (Family::IPV4_UNICAST, AddPathMode::Send),
            (Family::IPV6_UNICAST, AddPathMode::Both),
        ]),
    ];
    let ctx = CodecContext::negotiate(&local, &remote);
    assert!(ctx.four_octet_as);
    assert_eq!(ctx.max_message_len, MAX_EXTENDED_MESSAGE_LEN);
    // RFC 7911 §5: we receive path ids where we said receive and they said send.
    assert!(ctx.add_path_rx.contains(Family::IPV4_UNICAST));
    assert!(ctx.add_path_rx.contains(Family::IPV6_UNICAST));
    // We send them only for IPv4 (we said Both, they said Send for IPv4 and
    // Both for IPv6, but we said only Receive for IPv6).
    assert!(!ctx.add_path_tx.contains(Family::IPV4_UNICAST));
    assert!(!ctx.add_path_tx.contains(Family::IPV6_UNICAST));
    // One side without 4-octet AS or extended message: neither applies.
    let ctx = CodecContext::negotiate(&local, &[Capability::RouteRefresh]);
    assert!(!ctx.four_octet_as);
    assert_eq!(ctx.max_message_len, MAX_MESSAGE_LEN);
    assert!(ctx.add_path_rx.families().is_empty());
}

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::from_sequence(&[64512, 4_200_000_000])),
        local_pref: Some(100),
        communities: Some(vec!["64512:1".parse().unwrap()]),
        ..PathAttributes::default()
    }
}

fn v4_entries(n: u32, add_path: bool) -> Vec<NlriEntry> {
    (0..n)
        .map(|i| NlriEntry {
            path_id: add_path.then_some(i % 3),
            prefix: Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24).unwrap(),
        })
        .collect()
}

/// Checks the packer's output: every message within the size, decodable,
/// the NLRI preserved in order, and no message that could have taken the
/// next one's first prefix (fewest messages for a greedy packing in order).
fn check_packing(ctx: &CodecContext, msgs: &[Bytes], entries: &[NlriEntry], withdraw: bool) {
    let mut got = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        assert!(
            m.len() <= ctx.max_message_len,
            "message {i} is {} octets",
            m.len()
        );
        let Message::Update(u) = Message::decode(ctx, m).unwrap() else {
            panic!()
        };
        assert_eq!(u.action(), None);
        let these: Vec<NlriEntry> = if withdraw {
            u.withdrawals().map(|x| x.1).collect()
        } else {
            u.announced().map(|x| x.1).collect()
        };
        if let Some(next) = msgs.get(i + 1) {
            let Message::Update(n) = Message::decode(ctx, next).unwrap() else {
                panic!()
            };
            let first = if withdraw {
                n.withdrawals().next()
            } else {
                n.announced().next()
            }
            .unwrap()
            .1;
            let extra = first.prefix.wire_len() + if first.path_id.is_some() { 4 } else { 0 };
            assert!(
                m.len() + extra > ctx.max_message_len,
                "message {i} had room for the next prefix"
            );
        }
        got.extend(these);
    }
    // The NLRI as sent, path ids as the context says.
    let want: Vec<NlriEntry> = entries.to_vec();
    assert_eq!(got, want);
}

#[test]
fn packer_fills_messages_and_never_exceeds_the_size() {
    for (four, add_path, extended) in [
        (true, false, false),
        (true, true, false),
        (false, false, true),
        (true, true, true),
    ] {
        let mut ctx = if four {
            CodecContext::four_octet()
        } else {
            CodecContext::default()
        };
        if add_path {
            ctx.add_path_rx.insert(Family::IPV4_UNICAST);
            ctx.add_path_tx.insert(Family::IPV4_UNICAST);
            ctx.add_path_rx.insert(Family::IPV6_UNICAST);
            ctx.add_path_tx.insert(Family::IPV6_UNICAST);
        }
        if extended {
            ctx.max_message_len = MAX_EXTENDED_MESSAGE_LEN;
        }
        let entries = v4_entries(20_000, add_path);
        let packer = UpdatePacker::new(&ctx);
        let msgs = packer
            .announce(
                Family::IPV4_UNICAST,
                &attrs(),
                &NextHop::V4(Ipv4Addr::new(192, 0, 2, 1)),
                &entries,
            )
            .unwrap();
        check_packing(&ctx, &msgs, &entries, false);
        let msgs = packer.withdraw(Family::IPV4_UNICAST, &entries).unwrap();
        check_packing(&ctx, &msgs, &entries, true);
        // IPv6 in MP_REACH_NLRI, and IPv4 over an IPv6 next hop (RFC 8950).
        let v6: Vec<NlriEntry> = (0..5000u128)
            .map(|i| NlriEntry {
                path_id: add_path.then_some(7),
                prefix: Prefix::new(
                    IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64))),
                    64,
                )
                .unwrap(),
            })
            .collect();
        let nh = NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
        };
        check_packing(
            &ctx,
            &packer
                .announce(Family::IPV6_UNICAST, &attrs(), &nh, &v6)
                .unwrap(),
            &v6,
            false,
        );
        check_packing(
            &ctx,
            &packer.withdraw(Family::IPV6_UNICAST, &v6).unwrap(),
            &v6,
            true,
        );
        let msgs = packer
            .announce(Family::IPV4_UNICAST, &attrs(), &nh, &entries[..3000])
            .unwrap();
        check_packing(&ctx, &msgs, &entries[..3000], false);
        let Message::Update(u) = Message::decode(&ctx, &msgs[0]).unwrap() else {
            panic!()
        };
        assert_eq!(u.mp_reach.unwrap().next_hop, nh);
    }
}

#[test]
fn packer_refuses_attributes_too_big_for_any_prefix() {
    let mut a = attrs();
    a.communities = Some((0..1100).map(petrel_bgp::wire::attr::Community).collect());
    let ctx = CodecContext::four_octet();
    let r = UpdatePacker::new(&ctx).announce(
        Family::IPV4_UNICAST,
        &a,
        &NextHop::V4(Ipv4Addr::LOCALHOST),
        &v4_entries(3, false),
    );
    let e = r.unwrap_err();
    assert!(e.len > e.max && e.max == MAX_MESSAGE_LEN);
}

#[test]
fn end_of_rib_markers_rfc4724_2() {
    let ctx = CodecContext::four_octet();
    let v4 = Message::Update(Update::end_of_rib(Family::IPV4_UNICAST))
        .to_bytes(&ctx)
        .unwrap();
    assert_eq!(v4, hex(&format!("{MARKER}00170200000000")));
    let v6 = Message::Update(Update::end_of_rib(Family::IPV6_UNICAST))
        .to_bytes(&ctx)
        .unwrap();
    assert_eq!(v6, hex(&format!("{MARKER}001d0200000006800f03000201")));
    for (b, f) in [(v4, Family::IPV4_UNICAST), (v6, Family::IPV6_UNICAST)] {
        let Message::Update(u) = Message::decode(&ctx, &b).unwrap() else {
            panic!()
        };
        assert_eq!(u.end_of_rib_family(), Some(f));
    }
    // Labeled unicast End-of-RIB from bgplu.cap (MP_UNREACH_NLRI with the extended-length bit).
    let Message::Update(u) =
        Message::decode(&ctx, &hex(&format!("{MARKER}001e0200000007900f0003000104"))).unwrap()
    else {
        panic!()
    };
    assert_eq!(u.end_of_rib_family(), Some(Family::new(1, 4)));
    // An UPDATE that withdraws something is no End-of-RIB.
    let Message::Update(u) =
        Message::decode(&ctx, &hex(&format!("{MARKER}001a0200030810000000"))).unwrap()
    else {
        panic!()
    };
    assert_eq!(u.end_of_rib_family(), None);
}

#[test]
fn route_refresh_and_enhanced_route_refresh() {
    let ctx = CodecContext::default();
    for (sub, octet) in [
        (RefreshSubtype::Request, 0),
        (RefreshSubtype::BeginningOfRefresh, 1),
        (RefreshSubtype::EndOfRefresh, 2),
    ] {
        let m = Message::RouteRefresh(RouteRefresh {
            family: Family::IPV6_UNICAST,
            subtype: sub,
        });
        let b = m.to_bytes(&ctx).unwrap();
        assert_eq!(&b[19..], &[0, 2, octet, 1]);
        assert_eq!(Message::decode(&ctx, &b).unwrap(), m);
    }
    // RFC 7313 §5: wrong length is ROUTE-REFRESH Message Error / Invalid Message Length.
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}0018050001000100"))
        ))
        .0,
        7
    );
    assert_eq!(
        err(Message::decode(
            &ctx,
            &hex(&format!("{MARKER}0018050001000100"))
        ))
        .1,
        1
    );
}

#[test]
fn notification_with_shutdown_communication() {
    let ctx = CodecContext::default();
    let n = Notification::shutdown(CeaseError::AdministrativeShutdown, "upgrade to petrel 0.2");
    let b = Message::Notification(n.clone()).to_bytes(&ctx).unwrap();
    let Message::Notification(back) = Message::decode(&ctx, &b).unwrap() else {
        panic!()
    };
    assert_eq!(back, n);
    assert_eq!(
        back.shutdown_communication(),
        Some(Ok("upgrade to petrel 0.2"))
    );
    assert!(back.to_string().contains("administrative shutdown"));
    // From BGP_notification.cap: Cease / other configuration change? decode and name it.
    let m = Message::decode(&ctx, &hex(&format!("{MARKER}0015030603"))).unwrap();
    let Message::Notification(n) = m else {
        panic!()
    };
    assert_eq!(n.error, ErrorCode::Cease(CeaseError::PeerDeconfigured));
}

/// RFC 6793 §4.2.2: towards a 2-octet speaker, ASes above 65535 become
/// AS_TRANS and the real path travels in AS4_PATH (and AS4_AGGREGATOR);
/// §4.2.3 rebuilds it on receipt.
#[test]
fn as4_path_generation_and_reconstruction() {
    let two = CodecContext::default();
    let mut a = attrs();
    a.next_hop = Some(Ipv4Addr::new(192, 0, 2, 1));
    a.rare_mut().aggregator = Some(Aggregator {
        asn: 4_200_000_000,
        addr: Ipv4Addr::new(192, 0, 2, 9),
    });
    let mut u = Update::new(a.clone());
    u.nlri = petrel_bgp::wire::Nlri::from_prefixes(
        Family::IPV4_UNICAST,
        &["10.0.0.0/8".parse().unwrap()],
    );
    let b = Message::Update(u).to_bytes(&two).unwrap();
    let Message::Update(got) = Message::decode(&two, &b).unwrap() else {
        panic!()
    };
    assert_eq!(
        got.attrs.as_path.as_ref().unwrap().to_string(),
        "64512 23456"
    );
    assert_eq!(
        got.attrs.rare().as4_path.as_ref().unwrap().to_string(),
        "64512 4200000000"
    );
    assert_eq!(got.attrs.rare().aggregator.unwrap().asn, 23456);
    let mut n = got.attrs.clone();
    n.normalize_as4();
    assert_eq!(n.as_path, a.as_path);
    assert_eq!(n.rare().aggregator, a.rare().aggregator);
    assert_eq!(n.rare().as4_path, None);
}
