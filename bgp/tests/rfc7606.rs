//! RFC 7606 (revised UPDATE error handling), case by case, as byte vectors.
//!
//! Each case is an UPDATE body built from raw attribute octets and the
//! outcome RFC 7606 prescribes: a clean UPDATE, attribute discard,
//! treat-as-withdraw, or a session reset with a given NOTIFICATION.

use bytes::Bytes;
use petrel_bgp::wire::attr::{self, Action, AttrErrorKind};
use petrel_bgp::wire::codec::CodecContext;
use petrel_bgp::wire::family::Family;
use petrel_bgp::wire::{Message, Notification, Update};

const WK: u8 = 0x40; // well-known: transitive
const OT: u8 = 0xc0; // optional transitive
const ON: u8 = 0x80; // optional non-transitive

fn a(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, code, value.len() as u8];
    v.extend_from_slice(value);
    v
}

fn origin() -> Vec<u8> {
    a(WK, attr::ORIGIN, &[0])
}
/// AS_PATH: AS_SEQUENCE 64512 with 4-octet ASes.
fn as_path() -> Vec<u8> {
    a(WK, attr::AS_PATH, &[2, 1, 0, 0, 0xfc, 0])
}
fn next_hop() -> Vec<u8> {
    a(WK, attr::NEXT_HOP, &[192, 0, 2, 1])
}
/// 10.1.0.0/16
const NLRI: &[u8] = &[16, 10, 1];

fn body(withdrawn: &[u8], attrs: &[Vec<u8>], nlri: &[u8]) -> Bytes {
    let attrs: Vec<u8> = attrs.concat();
    let mut b = Vec::new();
    b.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(&attrs);
    b.extend_from_slice(nlri);
    Bytes::from(b)
}

fn decode(b: Bytes) -> Result<Update, Notification> {
    Update::decode(&CodecContext::four_octet(), &b)
}

/// Decodes a valid announcement with `extra` attributes added.
fn with(extra: Vec<u8>) -> Update {
    decode(body(&[], &[origin(), as_path(), next_hop(), extra], NLRI)).expect("no session reset")
}

fn action_for(u: &Update, code: u8) -> Option<(AttrErrorKind, Action)> {
    u.errors
        .iter()
        .find(|e| e.type_code == code)
        .map(|e| (e.kind, e.action))
}

fn reset(r: Result<Update, Notification>) -> (u8, u8) {
    let n = r.expect_err("session reset");
    (n.error.code(), n.error.subcode())
}

#[test]
fn baseline_is_clean() {
    let u = with(Vec::new());
    assert_eq!(u.action(), None);
    assert_eq!(u.announced().count(), 1);
}

// §3 (a): a session reset is a NOTIFICATION with the UPDATE Message Error code.
// §3 (b): Withdrawn Routes Length or Total Path Attribute Length inconsistent
// with the message: Malformed Attribute List.
#[test]
fn s3ab_length_fields_inconsistent_reset_with_malformed_attribute_list() {
    assert_eq!(reset(decode(Bytes::from_static(&[0, 0]))), (3, 1));
    assert_eq!(
        reset(decode(Bytes::from_static(&[0, 9, 8, 10, 0, 0]))),
        (3, 1)
    );
    let mut b = body(&[], &[origin()], &[]).to_vec();
    b[3] += 1; // Total Path Attribute Length one past the end
    assert_eq!(reset(decode(Bytes::from(b))), (3, 1));
}

// §3 (c): Optional/Transitive bits in conflict with the type code.
#[test]
fn s3c_flag_conflicts() {
    // ORIGIN marked optional: treat-as-withdraw.
    let u = decode(body(
        &[],
        &[a(OT, attr::ORIGIN, &[0]), as_path(), next_hop()],
        NLRI,
    ))
    .unwrap();
    assert_eq!(
        action_for(&u, attr::ORIGIN),
        Some((AttrErrorKind::Flags, Action::TreatAsWithdraw))
    );
    assert!(u.treat_as_withdraw());
    // MED marked well-known, COMMUNITIES marked non-transitive: treat-as-withdraw.
    assert!(with(a(WK, attr::MULTI_EXIT_DISC, &[0, 0, 0, 1])).treat_as_withdraw());
    assert!(with(a(ON, attr::COMMUNITIES, &[0, 1, 0, 1])).treat_as_withdraw());
    // MP_REACH_NLRI marked transitive: its NLRI can't be trusted, session reset
    // with Attribute Flags Error.
    let mp = a(
        OT,
        attr::MP_REACH_NLRI,
        &[
            0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 32, 0x20, 1,
            0xd, 0xb8,
        ],
    );
    assert_eq!(
        reset(decode(body(&[], &[mp, origin(), as_path()], &[]))),
        (3, 4)
    );
}

// §3 (d): a missing well-known mandatory attribute is treat-as-withdraw.
#[test]
fn s3d_missing_mandatory_is_treat_as_withdraw() {
    for (attrs, missing) in [
        (vec![as_path(), next_hop()], attr::ORIGIN),
        (vec![origin(), next_hop()], attr::AS_PATH),
        (vec![origin(), as_path()], attr::NEXT_HOP),
    ] {
        let u = decode(body(&[], &attrs, NLRI)).unwrap();
        assert_eq!(
            action_for(&u, missing),
            Some((AttrErrorKind::Missing, Action::TreatAsWithdraw)),
            "{missing}"
        );
    }
    // A withdrawal needs no attributes.
    let u = decode(body(NLRI, &[], &[])).unwrap();
    assert_eq!(u.action(), None);
    assert_eq!(u.withdrawals().count(), 1);
    // RFC 4760 §3: with only MP_REACH_NLRI, NEXT_HOP is not required.
    let mp = a(
        ON,
        attr::MP_REACH_NLRI,
        &[
            0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 32, 0x20, 1,
            0xd, 0xb8,
        ],
    );
    let u = decode(body(&[], &[mp, origin(), as_path()], &[])).unwrap();
    assert_eq!(u.action(), None);
    assert_eq!(
        u.announced().next().map(|(f, e)| (f, e.prefix.to_string())),
        Some((Family::IPV6_UNICAST, "2001:db8::/32".into()))
    );
}

// §3 (e): a NEXT_HOP that cannot be used withdraws the routes, never resets.
#[test]
fn s3e_unusable_next_hop_is_not_a_reset() {
    for nh in [[0, 0, 0, 0], [224, 0, 0, 5], [255, 255, 255, 255]] {
        let u = decode(body(
            &[],
            &[origin(), as_path(), a(WK, attr::NEXT_HOP, &nh)],
            NLRI,
        ))
        .unwrap();
        assert_eq!(
            action_for(&u, attr::NEXT_HOP),
            Some((AttrErrorKind::InvalidNextHop, Action::TreatAsWithdraw))
        );
    }
}

// §3 (f): attributes that do not affect route selection are discarded.
#[test]
fn s3f_attribute_discard() {
    let u = with(a(OT, attr::AGGREGATOR, &[0, 0, 0xfc, 0, 192, 0]));
    assert_eq!(
        action_for(&u, attr::AGGREGATOR),
        Some((AttrErrorKind::Length, Action::AttributeDiscard))
    );
    assert!(!u.treat_as_withdraw());
    assert_eq!(u.attrs.rare().aggregator, None);
    assert_eq!(u.announced().count(), 1);
    // ATOMIC_AGGREGATE marked optional: discarded, not treat-as-withdraw.
    let u = with(a(ON, attr::ATOMIC_AGGREGATE, &[]));
    assert_eq!(
        action_for(&u, attr::ATOMIC_AGGREGATE),
        Some((AttrErrorKind::Flags, Action::AttributeDiscard))
    );
}

// §3 (g): repeated attributes: the first kept, the rest discarded; a repeated
// MP_REACH_NLRI or MP_UNREACH_NLRI resets with Malformed Attribute List.
#[test]
fn s3g_duplicates() {
    let c1 = a(OT, attr::COMMUNITIES, &[0, 1, 0, 1]);
    let c2 = a(OT, attr::COMMUNITIES, &[0, 2, 0, 2]);
    let u = decode(body(&[], &[origin(), as_path(), next_hop(), c1, c2], NLRI)).unwrap();
    assert_eq!(
        u.attrs.communities.as_deref().map(|c| c[0].to_string()),
        Some("1:1".into())
    );
    assert_eq!(u.action(), Some(Action::AttributeDiscard));
    let un = a(ON, attr::MP_UNREACH_NLRI, &[0, 2, 1]);
    assert_eq!(reset(decode(body(&[], &[un.clone(), un], &[]))), (3, 1));
}

// §3 (h): with several errors the strongest action applies.
#[test]
fn s3h_strongest_action_wins() {
    let bad_origin = a(WK, attr::ORIGIN, &[7]);
    let bad_aggr = a(OT, attr::AGGREGATOR, &[1]);
    let u = decode(body(
        &[],
        &[bad_origin.clone(), as_path(), next_hop(), bad_aggr],
        NLRI,
    ))
    .unwrap();
    assert_eq!(u.errors.len(), 2);
    assert_eq!(u.action(), Some(Action::TreatAsWithdraw));
    let bad_mp = a(ON, attr::MP_REACH_NLRI, &[0, 2, 1, 40]);
    assert_eq!(
        reset(decode(body(
            &[],
            &[bad_origin, as_path(), next_hop(), bad_mp],
            NLRI
        ))),
        (3, 9)
    );
}

// §3 (i): the Withdrawn Routes field is checked like the NLRI field (§5.3).
// §3 (j): treat-as-withdraw needs the NLRI parsed; if they can't be, reset.
#[test]
fn s3ij_unparseable_nlri_reset() {
    assert_eq!(reset(decode(body(&[24, 10, 0], &[], &[]))), (3, 10));
    assert_eq!(
        reset(decode(body(
            &[],
            &[origin(), as_path(), next_hop()],
            &[24, 10, 0]
        ))),
        (3, 10)
    );
    // §5.3: a prefix length beyond the address family's width.
    assert_eq!(
        reset(decode(body(
            &[],
            &[origin(), as_path(), next_hop()],
            &[33, 1, 2, 3, 4, 5]
        ))),
        (3, 10)
    );
    // Even when an attribute already called for treat-as-withdraw.
    assert_eq!(
        reset(decode(body(
            &[],
            &[a(WK, attr::ORIGIN, &[9]), as_path(), next_hop()],
            &[40]
        ))),
        (3, 10)
    );
}

// §4: an attribute whose length overruns the attributes field, or a tail too
// short for an attribute header: treat-as-withdraw, the Total Path Attribute
// Length still locating the NLRI.
#[test]
fn s4_attribute_length_overruns() {
    let mut long = next_hop();
    long[2] = 9; // claims 9 octets where 4 remain
    let u = decode(body(&[], &[origin(), as_path(), long], NLRI)).unwrap();
    assert!(u.treat_as_withdraw());
    assert_eq!(
        u.nlri.iter().next().map(|e| e.prefix.to_string()),
        Some("10.1.0.0/16".into())
    );
    let u = decode(body(
        &[],
        &[origin(), as_path(), next_hop(), vec![0x40, 5]],
        NLRI,
    ))
    .unwrap();
    assert_eq!(action_for(&u, 5).map(|x| x.0), Some(AttrErrorKind::Overrun));
    assert!(u.treat_as_withdraw());
}

// §5.1: MP_REACH_NLRI / MP_UNREACH_NLRI are encoded first.
#[test]
fn s5_1_mp_attributes_encoded_first() {
    let mp = a(
        ON,
        attr::MP_REACH_NLRI,
        &[
            0, 2, 1, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 32, 0x20, 1,
            0xd, 0xb8,
        ],
    );
    let u = decode(body(&[], &[origin(), as_path(), mp], &[])).unwrap();
    let bytes = Message::Update(u)
        .to_bytes(&CodecContext::four_octet())
        .unwrap();
    assert_eq!(bytes[19 + 4 + 1], attr::MP_REACH_NLRI);
}

// §7.1–§7.16 and the attributes defined after RFC 7606.
#[test]
fn s7_per_attribute_rules() {
    use Action::*;
    use AttrErrorKind::*;
    let cases: Vec<(&str, Vec<u8>, u8, AttrErrorKind, Action)> = vec![
        (
            "7.1 ORIGIN length",
            a(WK, attr::ORIGIN, &[0, 0]),
            attr::ORIGIN,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.1 ORIGIN value",
            a(WK, attr::ORIGIN, &[3]),
            attr::ORIGIN,
            InvalidOrigin,
            TreatAsWithdraw,
        ),
        (
            "7.2 AS_PATH zero segment",
            a(WK, attr::AS_PATH, &[2, 0]),
            attr::AS_PATH,
            AsPath(attr::AsPathError::ZeroLength),
            TreatAsWithdraw,
        ),
        (
            "7.2 AS_PATH overrun",
            a(WK, attr::AS_PATH, &[2, 2, 0, 0, 0, 1]),
            attr::AS_PATH,
            AsPath(attr::AsPathError::Overrun),
            TreatAsWithdraw,
        ),
        (
            "7.2 AS_PATH segment type",
            a(WK, attr::AS_PATH, &[9, 1, 0, 0, 0, 1]),
            attr::AS_PATH,
            AsPath(attr::AsPathError::BadSegmentType(9)),
            TreatAsWithdraw,
        ),
        (
            "7.3 NEXT_HOP length",
            a(WK, attr::NEXT_HOP, &[1, 2, 3, 4, 5]),
            attr::NEXT_HOP,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.4 MED length",
            a(ON, attr::MULTI_EXIT_DISC, &[0, 0, 1]),
            attr::MULTI_EXIT_DISC,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.5 LOCAL_PREF length",
            a(WK, attr::LOCAL_PREF, &[0, 100]),
            attr::LOCAL_PREF,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.6 ATOMIC_AGGREGATE length",
            a(WK, attr::ATOMIC_AGGREGATE, &[1]),
            attr::ATOMIC_AGGREGATE,
            Length,
            AttributeDiscard,
        ),
        (
            "7.7 AGGREGATOR 6 octets under 4-octet AS",
            a(OT, attr::AGGREGATOR, &[0xfc, 0, 192, 0, 2, 1]),
            attr::AGGREGATOR,
            Length,
            AttributeDiscard,
        ),
        (
            "7.8 COMMUNITIES length",
            a(OT, attr::COMMUNITIES, &[0, 1, 0, 1, 9]),
            attr::COMMUNITIES,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.8 COMMUNITIES empty",
            a(OT, attr::COMMUNITIES, &[]),
            attr::COMMUNITIES,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.9 ORIGINATOR_ID length",
            a(ON, attr::ORIGINATOR_ID, &[1, 2, 3]),
            attr::ORIGINATOR_ID,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.10 CLUSTER_LIST length",
            a(ON, attr::CLUSTER_LIST, &[1, 2, 3, 4, 5, 6]),
            attr::CLUSTER_LIST,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.14 EXTENDED_COMMUNITIES length",
            a(OT, attr::EXTENDED_COMMUNITIES, &[0; 7]),
            attr::EXTENDED_COMMUNITIES,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.15 IPv6 extended communities length",
            a(OT, attr::IPV6_EXT_COMMUNITIES, &[0; 19]),
            attr::IPV6_EXT_COMMUNITIES,
            Length,
            TreatAsWithdraw,
        ),
        (
            "7.16 ATTR_SET length",
            a(OT, attr::ATTR_SET, &[0, 0, 1]),
            attr::ATTR_SET,
            Length,
            TreatAsWithdraw,
        ),
        (
            "RFC 8092 §6 LARGE_COMMUNITY length",
            a(OT, attr::LARGE_COMMUNITY, &[0; 13]),
            attr::LARGE_COMMUNITY,
            Length,
            TreatAsWithdraw,
        ),
        (
            "RFC 6793 §6 AS4_PATH malformed",
            a(OT, attr::AS4_PATH, &[2, 3, 0, 0, 0, 1]),
            attr::AS4_PATH,
            AsPath(attr::AsPathError::Overrun),
            AttributeDiscard,
        ),
        (
            "RFC 6793 §6 AS4_AGGREGATOR length",
            a(OT, attr::AS4_AGGREGATOR, &[0; 6]),
            attr::AS4_AGGREGATOR,
            Length,
            AttributeDiscard,
        ),
        (
            "RFC 9234 §5 OTC length",
            a(OT, attr::OTC, &[0; 3]),
            attr::OTC,
            Length,
            TreatAsWithdraw,
        ),
    ];
    for (name, extra, code, kind, action) in cases {
        // Replace the valid attribute of the same code, if the baseline has one.
        let mut attrs: Vec<Vec<u8>> = vec![origin(), as_path(), next_hop()]
            .into_iter()
            .filter(|x| x[1] != code)
            .collect();
        attrs.push(extra);
        let u = decode(body(&[], &attrs, NLRI))
            .unwrap_or_else(|n| panic!("{name}: unexpected reset {n}"));
        assert_eq!(action_for(&u, code), Some((kind, action)), "{name}");
        assert_eq!(u.action(), Some(action), "{name}");
    }
    // §7.11 / §7.12: malformed MP attributes reset the session (Optional
    // Attribute Error, RFC 4760 §7); we do not implement AFI/SAFI disable.
    for (name, mp) in [
        (
            "7.11 next hop length 5 for IPv6",
            a(ON, attr::MP_REACH_NLRI, &[0, 2, 1, 5, 1, 2, 3, 4, 5, 0]),
        ),
        (
            "7.11 next hop overrun",
            a(ON, attr::MP_REACH_NLRI, &[0, 2, 1, 16, 1, 2]),
        ),
        (
            "7.11 NLRI overrun",
            a(
                ON,
                attr::MP_REACH_NLRI,
                &[0, 1, 1, 4, 192, 0, 2, 1, 0, 24, 10],
            ),
        ),
        (
            "7.12 MP_UNREACH too short",
            a(ON, attr::MP_UNREACH_NLRI, &[0, 2]),
        ),
        (
            "7.12 MP_UNREACH prefix too long",
            a(ON, attr::MP_UNREACH_NLRI, &[0, 2, 1, 129]),
        ),
    ] {
        assert_eq!(
            reset(decode(body(&[], &[mp, origin(), as_path()], &[]))),
            (3, 9),
            "{name}"
        );
    }
}

// RFC 4271 §6.3: an unrecognized well-known attribute resets (RFC 7606 keeps it).
#[test]
fn unrecognized_well_known_resets() {
    let n = decode(body(
        &[],
        &[origin(), as_path(), next_hop(), a(WK, 99, &[1])],
        NLRI,
    ))
    .unwrap_err();
    assert_eq!((n.error.code(), n.error.subcode()), (3, 2));
    assert_eq!(&n.data[..], &[WK, 99, 1, 1]); // the data is the attribute
}

// RFC 4271 §5: unknown optional transitive attributes are kept and passed on
// with the Partial bit; unknown non-transitive ones are not passed on.
#[test]
fn unknown_optional_attributes_preserved_and_propagated() {
    let u = decode(body(
        &[],
        &[
            origin(),
            as_path(),
            next_hop(),
            a(OT, 250, &[1, 2, 3]),
            a(ON, 251, &[4]),
        ],
        NLRI,
    ))
    .unwrap();
    assert_eq!(u.action(), None);
    assert_eq!(u.attrs.rare().other.len(), 2);
    let out = u.attrs.for_propagation();
    assert_eq!(out.rare().other.len(), 1);
    assert_eq!(out.rare().other[0].type_code, 250);
    assert_eq!(out.rare().other[0].flags, OT | attr::FLAG_PARTIAL);
    assert_eq!(&out.rare().other[0].value[..], &[1, 2, 3]);
}

// RFC 4271 §5: a Partial bit on a recognised optional transitive attribute
// stays set when the attribute is passed on.
#[test]
fn partial_bit_on_known_attributes_is_kept() {
    let u = with(a(OT | attr::FLAG_PARTIAL, attr::COMMUNITIES, &[0, 1, 0, 2]));
    assert_eq!(u.action(), None);
    let bytes = Message::Update(u)
        .to_bytes(&CodecContext::four_octet())
        .unwrap();
    let at = bytes
        .windows(2)
        .position(|w| w[1] == attr::COMMUNITIES && w[0] & 0xc0 == 0xc0)
        .unwrap();
    assert_eq!(bytes[at], OT | attr::FLAG_PARTIAL);
    let u = with(a(OT, attr::COMMUNITIES, &[0, 1, 0, 2]));
    let bytes = Message::Update(u)
        .to_bytes(&CodecContext::four_octet())
        .unwrap();
    let at = bytes
        .windows(2)
        .position(|w| w[1] == attr::COMMUNITIES && w[0] & 0xc0 == 0xc0)
        .unwrap();
    assert_eq!(bytes[at], OT);
}
