//! Path attributes (RFC 4271 §4.3, §5) and their error handling (RFC 7606).
//!
//! Known attributes are typed fields of [`PathAttributes`]; anything else is
//! a [`RawAttribute`] slice of the received message, so unknown optional
//! transitive attributes travel on untouched (with the Partial bit, RFC 4271
//! §5). Decoding applies RFC 7606: each problem is classified as attribute
//! discard, treat-as-withdraw or session reset ([`Action`]), the first two are
//! recorded on the result and the last becomes a NOTIFICATION. What each
//! type calls for, with its flags and its name, is its row in [`types`].

pub mod as_path;
pub mod community;
pub mod mp;
pub mod types;

pub use as_path::{AsPath, AsPathError, Segment, SegmentType};
pub use community::{Community, ExtCommunity, Ipv6ExtCommunity, LargeCommunity};
pub use mp::{MpError, MpReach, MpUnreach, NextHop};
pub use types::*;

use super::codec::CodecContext;
use super::family::Family;
use super::notification::{ErrorCode, Notification, UpdateError};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
use std::net::Ipv4Addr;
use std::ops::Range;

pub const FLAG_OPTIONAL: u8 = 0x80;
pub const FLAG_TRANSITIVE: u8 = 0x40;
pub const FLAG_PARTIAL: u8 = 0x20;
pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// The attribute's name for logs.
pub fn type_name(code: u8) -> &'static str {
    AttrType::rules(code).name
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Igp => "IGP",
            Origin::Egp => "EGP",
            Origin::Incomplete => "INCOMPLETE",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub addr: Ipv4Addr,
}

/// An attribute petrel does not interpret, kept as received.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Bytes,
}

/// The path attributes of a route, without the NLRI-carrying MP attributes
/// (those belong to the UPDATE, see [`super::update::Update`]).
///
/// The attributes most routes lack live in one boxed [`RareAttributes`]: a
/// full table interns about a hundred thousand distinct sets, and each
/// would otherwise carry some 140 bytes of empty `Option`s. `rare` being
/// `None` and being all empty are the same set (equality and hashing say
/// so), so writers need not tidy up after [`PathAttributes::rare_mut`].
#[derive(Clone, Debug, Default)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub communities: Option<Vec<Community>>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Option<Vec<Ipv4Addr>>,
    /// AGGREGATOR, extended and large communities, AS4_*, unknown
    /// attributes, Partial bits: read with [`PathAttributes::rare`].
    pub rare: Option<Box<RareAttributes>>,
}

/// The less common path attributes (see [`PathAttributes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RareAttributes {
    pub aggregator: Option<Aggregator>,
    pub ext_communities: Option<Vec<ExtCommunity>>,
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<Aggregator>,
    pub ipv6_ext_communities: Option<Vec<Ipv6ExtCommunity>>,
    pub large_communities: Option<Vec<LargeCommunity>>,
    /// Other attributes, in the order received.
    pub other: Vec<RawAttribute>,
    /// Typed optional transitive attributes that arrived with the Partial
    /// bit: bit `n` for type code `n` (all such codes are below 64). RFC 4271
    /// §5: once set, the Partial bit stays set when the attribute is passed on.
    /// Here rather than beside the common attributes: few routes carry one,
    /// and the 8 bytes are the room an interned set's decision facts need.
    pub partial: u64,
}

static NO_RARE: RareAttributes = RareAttributes {
    aggregator: None,
    ext_communities: None,
    as4_path: None,
    as4_aggregator: None,
    ipv6_ext_communities: None,
    large_communities: None,
    other: Vec::new(),
    partial: 0,
};

impl PathAttributes {
    /// The less common attributes (all absent when none arrived).
    pub fn rare(&self) -> &RareAttributes {
        self.rare.as_deref().unwrap_or(&NO_RARE)
    }

    /// The less common attributes, for writing.
    pub fn rare_mut(&mut self) -> &mut RareAttributes {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drops AS4_PATH and AS4_AGGREGATOR.
    pub fn drop_as4(&mut self) {
        if let Some(r) = self.rare.as_deref_mut() {
            r.as4_path = None;
            r.as4_aggregator = None;
        }
        self.shrink();
    }

    /// Drops an empty `rare` box (it compares equal either way; this only
    /// gives back its memory).
    pub fn shrink(&mut self) {
        if self.rare.as_deref().is_some_and(|r| *r == NO_RARE) {
            self.rare = None;
        }
    }
}

impl PartialEq for PathAttributes {
    fn eq(&self, o: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let PathAttributes {
            origin,
            as_path,
            next_hop,
            med,
            local_pref,
            atomic_aggregate,
            communities,
            originator_id,
            cluster_list,
            rare: _,
        } = self;
        *origin == o.origin
            && *as_path == o.as_path
            && *next_hop == o.next_hop
            && *med == o.med
            && *local_pref == o.local_pref
            && *atomic_aggregate == o.atomic_aggregate
            && *communities == o.communities
            && *originator_id == o.originator_id
            && *cluster_list == o.cluster_list
            && self.rare() == o.rare()
    }
}

impl Eq for PathAttributes {}

impl std::hash::Hash for PathAttributes {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let PathAttributes {
            origin,
            as_path,
            next_hop,
            med,
            local_pref,
            atomic_aggregate,
            communities,
            originator_id,
            cluster_list,
            rare: _,
        } = self;
        origin.hash(h);
        as_path.hash(h);
        next_hop.hash(h);
        med.hash(h);
        local_pref.hash(h);
        atomic_aggregate.hash(h);
        communities.hash(h);
        originator_id.hash(h);
        cluster_list.hash(h);
        self.rare().hash(h);
    }
}

/// RFC 7606 §2 error-handling approaches, weakest first, so that `max`
/// picks the one to apply when several errors occur (RFC 7606 §3 (h)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    AttributeDiscard,
    TreatAsWithdraw,
    SessionReset,
}

/// What was wrong with an attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrErrorKind {
    /// Optional/Transitive bits conflict with the type code (RFC 7606 §3 (c)).
    Flags,
    /// The length is wrong for the attribute.
    Length,
    /// ORIGIN value other than 0, 1, 2 (RFC 7606 §7.1).
    InvalidOrigin,
    AsPath(AsPathError),
    /// A repeated attribute, all but the first discarded (RFC 7606 §3 (g)).
    Duplicate,
    /// The attribute runs past the Total Path Attribute Length (RFC 7606 §4).
    Overrun,
    /// A well-known mandatory attribute is absent (RFC 7606 §3 (d)).
    Missing,
    /// A NEXT_HOP no router can forward to: 0.0.0.0, multicast or broadcast.
    InvalidNextHop,
}

impl fmt::Display for AttrErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flags => f.write_str("attribute flags conflict with the type code"),
            Self::Length => f.write_str("invalid attribute length"),
            Self::InvalidOrigin => f.write_str("invalid ORIGIN value"),
            Self::AsPath(e) => write!(f, "malformed path: {e}"),
            Self::Duplicate => f.write_str("attribute repeated"),
            Self::Overrun => f.write_str("attribute overruns the path attributes"),
            Self::Missing => f.write_str("well-known mandatory attribute missing"),
            Self::InvalidNextHop => f.write_str("NEXT_HOP is not a unicast address"),
        }
    }
}

/// One attribute error that did not reset the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttrError {
    pub type_code: u8,
    pub kind: AttrErrorKind,
    pub action: Action,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            Action::AttributeDiscard => "attribute discarded",
            Action::TreatAsWithdraw => "treated as withdraw",
            Action::SessionReset => "session reset",
        };
        write!(
            f,
            "{} ({}): {}, {}",
            type_name(self.type_code),
            self.type_code,
            self.kind,
            action
        )
    }
}

/// How the attributes are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrContext {
    /// In an UPDATE message.
    Update,
    /// In an MRT TABLE_DUMP_V2 RIB entry for this family (RFC 6396 §4.3.4):
    /// MP_REACH_NLRI may be abbreviated and no attribute is mandatory.
    MrtRib(Family),
}

/// The result of decoding a path attribute block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedAttributes {
    pub attrs: PathAttributes,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub errors: Vec<AttrError>,
}

fn reset(sub: UpdateError, data: Bytes) -> Notification {
    Notification::new(ErrorCode::Update(sub), data)
}

/// The NOTIFICATION subcode when a malformed attribute resets the session:
/// RFC 4271 §6.3, Optional Attribute Error for an optional attribute (RFC
/// 4760 §7 for the MP attributes, the only ones the table resets for),
/// Malformed Attribute List otherwise.
fn reset_subcode(category: Category) -> UpdateError {
    match category {
        Category::OptionalTransitive | Category::OptionalNonTransitive => {
            UpdateError::OptionalAttributeError
        }
        Category::WellKnown | Category::Unchecked => UpdateError::MalformedAttributeList,
    }
}

/// Decodes the Path Attributes field of an UPDATE (or an MRT RIB entry).
/// Returns `Err` only for errors that require a session reset.
pub fn decode_attributes(
    ctx: &CodecContext,
    buf: &Bytes,
    actx: AttrContext,
) -> Result<DecodedAttributes, Notification> {
    let mut d = DecodedAttributes::default();
    decode_attributes_in(
        ctx,
        buf,
        0..buf.len(),
        actx,
        AttrSink {
            attrs: &mut d.attrs,
            mp_reach: &mut d.mp_reach,
            mp_unreach: &mut d.mp_unreach,
            errors: &mut d.errors,
        },
    )?;
    Ok(d)
}

/// Where [`decode_attributes_in`] puts what it decodes: the fields of a
/// [`DecodedAttributes`], or those of the UPDATE being decoded, so that the
/// UPDATE is built in place rather than assembled from moved parts (moving
/// these large structs was a fifth of the decoder's time).
pub(crate) struct AttrSink<'a> {
    pub attrs: &'a mut PathAttributes,
    pub mp_reach: &'a mut Option<MpReach>,
    pub mp_unreach: &'a mut Option<MpUnreach>,
    pub errors: &'a mut Vec<AttrError>,
}

/// [`decode_attributes`] over `buf[within]`, so an UPDATE's attributes are
/// decoded in place: values become slices of `buf` only where they are kept
/// (each `Bytes` slice costs an atomic reference count: a third of the
/// decoder's time when every value was sliced).
pub(crate) fn decode_attributes_in(
    ctx: &CodecContext,
    buf: &Bytes,
    within: Range<usize>,
    actx: AttrContext,
    mut out: AttrSink<'_>,
) -> Result<(), Notification> {
    let mut seen = [0u64; 4];
    let mut p = 0;
    let base = within.start;
    let v = &buf[within];
    while p < v.len() {
        // RFC 7606 §4: fewer octets than an attribute header is an overrun;
        // treat-as-withdraw, the Total Path Attribute Length locating the NLRI.
        let ext = v[p] & FLAG_EXTENDED_LENGTH != 0;
        let hdr = if ext { 4 } else { 3 };
        if p + hdr > v.len() {
            out.errors.push(AttrError {
                type_code: v.get(p + 1).copied().unwrap_or(0),
                kind: AttrErrorKind::Overrun,
                action: Action::TreatAsWithdraw,
            });
            break;
        }
        let flags = v[p];
        let code = v[p + 1];
        let len = if ext {
            u16::from_be_bytes([v[p + 2], v[p + 3]]) as usize
        } else {
            v[p + 2] as usize
        };
        // Every decision below reads the type's row.
        let t = Rules::by_code(code);
        let start = p + hdr;
        if start + len > v.len() {
            // RFC 7606 §4: the last attribute overruns the attributes field:
            // treat-as-withdraw, unless the attribute's malformation resets
            // the session: MP attributes can't be trusted then (§5.3, §7.11).
            if t.malformed == Action::SessionReset {
                return Err(reset(
                    reset_subcode(t.category),
                    buf.slice(base + p..base + v.len()),
                ));
            }
            out.errors.push(AttrError {
                type_code: code,
                kind: AttrErrorKind::Overrun,
                action: Action::TreatAsWithdraw,
            });
            break;
        }
        let (attr_start, end) = (base + p, base + start + len);
        let whole = || buf.slice(attr_start..end);
        p = start + len;

        let bit = 1u64 << (code % 64);
        let slot = &mut seen[(code / 64) as usize];
        if *slot & bit != 0 {
            // RFC 7606 §3 (g): a repeated MP_REACH_NLRI or MP_UNREACH_NLRI is
            // Malformed Attribute List; any other repeat is discarded.
            if t.repeated == Action::SessionReset {
                return Err(reset(UpdateError::MalformedAttributeList, Bytes::new()));
            }
            out.errors.push(AttrError {
                type_code: code,
                kind: AttrErrorKind::Duplicate,
                action: t.repeated,
            });
            continue;
        }
        *slot |= bit;

        // The flag checks guard a session. An MRT dump has none to protect,
        // and its writers get flags wrong (BIRD 2 writes NEXT_HOP and
        // LOCAL_PREF with a zero flags octet in TABLE_DUMP_V2 RIB entries):
        // there, attributes are decoded by type code alone, as bgpdump does.
        let from_peer = actx == AttrContext::Update;
        match t.flags {
            // RFC 7606 §3 (c): Optional/Transitive bits in conflict with the
            // type code make the attribute malformed: the row's action,
            // treat-as-withdraw "unless the specification for the attribute
            // mandates different handling".
            Some(expected)
                if from_peer && flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != expected =>
            {
                if t.malformed == Action::SessionReset {
                    return Err(reset(UpdateError::AttributeFlagsError, whole()));
                }
                out.errors.push(AttrError {
                    type_code: code,
                    kind: AttrErrorKind::Flags,
                    action: t.malformed,
                });
                continue;
            }
            // RFC 4271 §6.3: an unrecognized well-known attribute; RFC 7606
            // does not relax this, the data is the attribute.
            None if from_peer && flags & FLAG_OPTIONAL == 0 => {
                return Err(reset(UpdateError::UnrecognizedWellKnownAttribute, whole()));
            }
            _ => {}
        }

        // RFC 4271 §5: remember a Partial bit on typed optional transitive
        // attributes so that it is sent on as received.
        if flags & FLAG_PARTIAL != 0 && code < 64 && t.category == Category::OptionalTransitive {
            out.attrs.rare_mut().partial |= 1 << code;
        }
        if let Err(kind) = decode_one(ctx, actx, flags, code, buf, base + start..end, &mut out) {
            if let Some(r) = out.attrs.rare.as_deref_mut().filter(|_| code < 64) {
                r.partial &= !(1 << code);
            }
            if t.malformed == Action::SessionReset {
                return Err(reset(reset_subcode(t.category), whole()));
            }
            out.errors.push(AttrError {
                type_code: code,
                kind,
                action: t.malformed,
            });
        }
    }

    Ok(())
}

/// RFC 7606 §3 (d): a missing well-known mandatory attribute is
/// treat-as-withdraw. Only meaningful when the UPDATE announces something,
/// so the UPDATE decoder calls it once it knows the NLRI.
pub(crate) fn missing_mandatory(
    attrs: &PathAttributes,
    mp_reach: Option<&MpReach>,
    errors: &[AttrError],
    has_v4_nlri: bool,
) -> Option<AttrError> {
    let has_mp_nlri = mp_reach.is_some_and(|m| !m.nlri.is_empty());
    if !has_v4_nlri && !has_mp_nlri {
        return None;
    }
    // RFC 4271 §5, per the rows' `required`; the first missing one.
    REQUIRED
        .iter()
        .find(|t| {
            let needed = match t.required {
                Required::Always => true,
                Required::WithIpv4Nlri => has_v4_nlri,
                Required::Never => false,
            };
            needed && !present(attrs, t.code) && !errors.iter().any(|e| e.type_code == t.code)
        })
        .map(|t| AttrError {
            type_code: t.code,
            kind: AttrErrorKind::Missing,
            action: Action::TreatAsWithdraw,
        })
}

/// Whether a type an UPDATE may have to carry arrived. A required row
/// without an arm here counts as missing, which its tests catch.
fn present(attrs: &PathAttributes, code: u8) -> bool {
    match code {
        ORIGIN => attrs.origin.is_some(),
        AS_PATH => attrs.as_path.is_some(),
        NEXT_HOP => attrs.next_hop.is_some(),
        _ => false,
    }
}

/// What was wrong with a value; the row says what that calls for.
type AttrResult = Result<(), AttrErrorKind>;

fn u32_of(v: &[u8]) -> u32 {
    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
}

fn ipv4_of(v: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(v[0], v[1], v[2], v[3])
}

fn decode_one(
    ctx: &CodecContext,
    actx: AttrContext,
    flags: u8,
    code: u8,
    buf: &Bytes,
    range: Range<usize>,
    out: &mut AttrSink<'_>,
) -> AttrResult {
    use AttrErrorKind::*;
    let v = &buf[range.clone()];
    let value = || buf.slice(range.clone());
    let a = &mut *out.attrs;
    match code {
        ORIGIN => {
            // RFC 7606 §7.1: wrong length or undefined value.
            if v.len() != 1 {
                return Err(Length);
            }
            a.origin = Some(match v[0] {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                _ => return Err(InvalidOrigin),
            });
        }
        AS_PATH => {
            // RFC 7606 §7.2: a syntactically malformed AS_PATH.
            a.as_path = Some(as_path::AsPath::decode(v, ctx.four_octet_as).map_err(AsPath)?);
        }
        NEXT_HOP => {
            // RFC 7606 §7.3: length other than 4.
            if v.len() != 4 {
                return Err(Length);
            }
            let nh = ipv4_of(v);
            // RFC 4271 §6.3 and RFC 7606 §3 (e): a NEXT_HOP that cannot be a
            // unicast neighbour makes the routes unusable, but must not reset
            // the session. (Whether it is one of our own
            // addresses is the session's check.)
            if nh.is_unspecified() || nh.is_multicast() || nh.is_broadcast() {
                return Err(InvalidNextHop);
            }
            a.next_hop = Some(nh);
        }
        MULTI_EXIT_DISC => {
            // RFC 7606 §7.4: length other than 4.
            if v.len() != 4 {
                return Err(Length);
            }
            a.med = Some(u32_of(v));
        }
        LOCAL_PREF => {
            // RFC 7606 §7.5: length other than 4. (Discarding it from
            // external peers is the session's job: the codec can't tell.)
            if v.len() != 4 {
                return Err(Length);
            }
            a.local_pref = Some(u32_of(v));
        }
        ATOMIC_AGGREGATE => {
            // RFC 7606 §7.6: length other than 0.
            if !v.is_empty() {
                return Err(Length);
            }
            a.atomic_aggregate = true;
        }
        AGGREGATOR => {
            // RFC 7606 §7.7: length other than 6 (or 8 with 4-octet AS).
            a.rare_mut().aggregator = Some(match (v.len(), ctx.four_octet_as) {
                (6, false) => Aggregator {
                    asn: u16::from_be_bytes([v[0], v[1]]) as u32,
                    addr: ipv4_of(&v[2..]),
                },
                (8, true) => Aggregator {
                    asn: u32_of(v),
                    addr: ipv4_of(&v[4..]),
                },
                _ => return Err(Length),
            });
        }
        COMMUNITIES => {
            // RFC 7606 §7.8: length zero or not a multiple of 4.
            if v.is_empty() || !v.len().is_multiple_of(4) {
                return Err(Length);
            }
            a.communities = Some(v.chunks_exact(4).map(|c| Community(u32_of(c))).collect());
        }
        ORIGINATOR_ID => {
            // RFC 7606 §7.9: length other than 4.
            if v.len() != 4 {
                return Err(Length);
            }
            a.originator_id = Some(ipv4_of(v));
        }
        CLUSTER_LIST => {
            // RFC 7606 §7.10: length zero or not a multiple of 4.
            if v.is_empty() || !v.len().is_multiple_of(4) {
                return Err(Length);
            }
            a.cluster_list = Some(v.chunks_exact(4).map(ipv4_of).collect());
        }
        MP_REACH_NLRI => {
            // RFC 7606 §7.11: a malformed MP_REACH_NLRI.
            let mp = match actx {
                AttrContext::Update => MpReach::decode(&value(), |f| ctx.add_path_rx.contains(f)),
                AttrContext::MrtRib(family) => MpReach::decode_rib(&value(), family),
            };
            *out.mp_reach = Some(mp.map_err(|_| Length)?);
        }
        MP_UNREACH_NLRI => {
            // RFC 7606 §7.12: a malformed MP_UNREACH_NLRI.
            *out.mp_unreach = Some(
                MpUnreach::decode(&value(), |f| ctx.add_path_rx.contains(f)).map_err(|_| Length)?,
            );
        }
        EXTENDED_COMMUNITIES => {
            // RFC 7606 §7.14: length not a multiple of 8.
            if v.is_empty() || !v.len().is_multiple_of(8) {
                return Err(Length);
            }
            a.rare_mut().ext_communities = Some(
                v.chunks_exact(8)
                    .map(|c| ExtCommunity(c.try_into().unwrap_or([0; 8])))
                    .collect(),
            );
        }
        AS4_PATH => {
            // RFC 6793 §6: a malformed AS4_PATH, or one carrying
            // confederation segments.
            let path = as_path::AsPath::decode(v, true).map_err(AsPath)?;
            if path.segments().any(|s| s.kind.is_confed()) {
                return Err(AsPath(AsPathError::BadSegmentType(3)));
            }
            a.rare_mut().as4_path = Some(path);
        }
        AS4_AGGREGATOR => {
            // RFC 6793 §6: length other than 8.
            if v.len() != 8 {
                return Err(Length);
            }
            a.rare_mut().as4_aggregator = Some(Aggregator {
                asn: u32_of(v),
                addr: ipv4_of(&v[4..]),
            });
        }
        IPV6_EXT_COMMUNITIES => {
            // RFC 7606 §7.15: length not a multiple of 20.
            if v.is_empty() || !v.len().is_multiple_of(20) {
                return Err(Length);
            }
            a.rare_mut().ipv6_ext_communities = Some(
                v.chunks_exact(20)
                    .map(|c| Ipv6ExtCommunity(c.try_into().unwrap_or([0; 20])))
                    .collect(),
            );
        }
        LARGE_COMMUNITY => {
            // RFC 8092 §6: length zero or not a multiple of 12.
            if v.is_empty() || !v.len().is_multiple_of(12) {
                return Err(Length);
            }
            a.rare_mut().large_communities = Some(
                v.chunks_exact(12)
                    .map(|c| LargeCommunity {
                        global: u32_of(c),
                        local1: u32_of(&c[4..]),
                        local2: u32_of(&c[8..]),
                    })
                    .collect(),
            );
        }
        OTC if v.len() != 4 => {
            // RFC 9234 §5: an OTC attribute of length other than 4.
            return Err(Length);
        }
        ATTR_SET if v.len() < 4 => {
            // RFC 7606 §7.16 / RFC 6368 §5: ATTR_SET shorter than its origin AS.
            return Err(Length);
        }
        AIGP if v.len() < 3 => {
            // RFC 7311 §3.2: a malformed AIGP.
            return Err(Length);
        }
        // The Extended Length bit is framing, derived again on encode.
        _ => a.rare_mut().other.push(RawAttribute {
            flags: flags & !FLAG_EXTENDED_LENGTH,
            type_code: code,
            value: value(),
        }),
    }
    Ok(())
}

fn put_header(out: &mut BytesMut, flags: u8, code: u8, len: usize) {
    if len > 255 {
        out.put_u8(flags | FLAG_EXTENDED_LENGTH);
        out.put_u8(code);
        out.put_u16(len as u16);
    } else {
        out.put_u8(flags & !FLAG_EXTENDED_LENGTH);
        out.put_u8(code);
        out.put_u8(len as u8);
    }
}

fn header_len(len: usize) -> usize {
    if len > 255 {
        4
    } else {
        3
    }
}

impl PathAttributes {
    fn partial_flag(&self, code: u8) -> u8 {
        if code < 64 && self.rare().partial & (1 << code) != 0 {
            FLAG_PARTIAL
        } else {
            0
        }
    }

    /// Whether the 2-octet encoding needs AS4_PATH / AS4_AGGREGATOR
    /// generated (RFC 6793 §4.2.2): we hold 4-octet ASes and none were received.
    fn as4_path_needed(&self, ctx: &CodecContext) -> Option<&AsPath> {
        if ctx.four_octet_as || self.rare().as4_path.is_some() {
            return None;
        }
        self.as_path.as_ref().filter(|p| p.has_four_octet_asns())
    }

    fn as4_aggregator_needed(&self, ctx: &CodecContext) -> Option<Aggregator> {
        if ctx.four_octet_as || self.rare().as4_aggregator.is_some() {
            return None;
        }
        self.rare().aggregator.filter(|a| a.asn > 0xffff)
    }

    /// The encoded length of these attributes, MP attributes excluded.
    pub fn encoded_len(&self, ctx: &CodecContext) -> usize {
        let mut b = BytesMut::with_capacity(128);
        self.encode(ctx, &mut b);
        b.len()
    }

    /// Encodes the attributes in ascending type-code order (RFC 4271 §5
    /// recommends it), each with the extended-length bit only when needed.
    pub fn encode(&self, ctx: &CodecContext, out: &mut BytesMut) {
        // Each type's flags from its row, at compile time.
        macro_rules! flags {
            ($code:expr) => {
                const { AttrType::flags_of($code) }
            };
        }
        let four = ctx.four_octet_as;
        let mut others = self.rare().other.iter().peekable();
        let mut flush_others_below = |code: u8, out: &mut BytesMut| {
            while let Some(o) = others.next_if(|o| o.type_code < code) {
                put_header(out, o.flags, o.type_code, o.value.len());
                out.put_slice(&o.value);
            }
        };
        if let Some(o) = self.origin {
            put_header(out, flags!(ORIGIN), ORIGIN, 1);
            out.put_u8(o as u8);
        }
        if let Some(p) = &self.as_path {
            put_header(out, flags!(AS_PATH), AS_PATH, p.encoded_len(four));
            p.encode(four, out);
        }
        if let Some(nh) = self.next_hop {
            put_header(out, flags!(NEXT_HOP), NEXT_HOP, 4);
            out.put_slice(&nh.octets());
        }
        if let Some(m) = self.med {
            put_header(out, flags!(MULTI_EXIT_DISC), MULTI_EXIT_DISC, 4);
            out.put_u32(m);
        }
        if let Some(l) = self.local_pref {
            put_header(out, flags!(LOCAL_PREF), LOCAL_PREF, 4);
            out.put_u32(l);
        }
        if self.atomic_aggregate {
            put_header(out, flags!(ATOMIC_AGGREGATE), ATOMIC_AGGREGATE, 0);
        }
        if let Some(a) = self.rare().aggregator {
            if four {
                put_header(
                    out,
                    flags!(AGGREGATOR) | self.partial_flag(AGGREGATOR),
                    AGGREGATOR,
                    8,
                );
                out.put_u32(a.asn);
            } else {
                put_header(
                    out,
                    flags!(AGGREGATOR) | self.partial_flag(AGGREGATOR),
                    AGGREGATOR,
                    6,
                );
                out.put_u16(u16::try_from(a.asn).unwrap_or(super::open::AS_TRANS));
            }
            out.put_slice(&a.addr.octets());
        }
        if let Some(c) = &self.communities {
            put_header(
                out,
                flags!(COMMUNITIES) | self.partial_flag(COMMUNITIES),
                COMMUNITIES,
                4 * c.len(),
            );
            for x in c {
                out.put_u32(x.0);
            }
        }
        if let Some(o) = self.originator_id {
            put_header(out, flags!(ORIGINATOR_ID), ORIGINATOR_ID, 4);
            out.put_slice(&o.octets());
        }
        if let Some(c) = &self.cluster_list {
            put_header(out, flags!(CLUSTER_LIST), CLUSTER_LIST, 4 * c.len());
            for x in c {
                out.put_slice(&x.octets());
            }
        }
        flush_others_below(EXTENDED_COMMUNITIES, out);
        if let Some(c) = &self.rare().ext_communities {
            put_header(
                out,
                flags!(EXTENDED_COMMUNITIES) | self.partial_flag(EXTENDED_COMMUNITIES),
                EXTENDED_COMMUNITIES,
                8 * c.len(),
            );
            for x in c {
                out.put_slice(&x.0);
            }
        }
        let as4 = self.rare().as4_path.as_ref().or(self.as4_path_needed(ctx));
        if let Some(p) = as4 {
            put_header(
                out,
                flags!(AS4_PATH) | self.partial_flag(AS4_PATH),
                AS4_PATH,
                p.encoded_len(true),
            );
            p.encode(true, out);
        }
        if let Some(a) = self
            .rare()
            .as4_aggregator
            .or(self.as4_aggregator_needed(ctx))
        {
            put_header(
                out,
                flags!(AS4_AGGREGATOR) | self.partial_flag(AS4_AGGREGATOR),
                AS4_AGGREGATOR,
                8,
            );
            out.put_u32(a.asn);
            out.put_slice(&a.addr.octets());
        }
        flush_others_below(IPV6_EXT_COMMUNITIES, out);
        if let Some(c) = &self.rare().ipv6_ext_communities {
            put_header(
                out,
                flags!(IPV6_EXT_COMMUNITIES) | self.partial_flag(IPV6_EXT_COMMUNITIES),
                IPV6_EXT_COMMUNITIES,
                20 * c.len(),
            );
            for x in c {
                out.put_slice(&x.0);
            }
        }
        flush_others_below(LARGE_COMMUNITY, out);
        if let Some(c) = &self.rare().large_communities {
            put_header(
                out,
                flags!(LARGE_COMMUNITY) | self.partial_flag(LARGE_COMMUNITY),
                LARGE_COMMUNITY,
                12 * c.len(),
            );
            for x in c {
                out.put_u32(x.global);
                out.put_u32(x.local1);
                out.put_u32(x.local2);
            }
        }
        flush_others_below(255, out);
        for o in others {
            put_header(out, o.flags, o.type_code, o.value.len());
            out.put_slice(&o.value);
        }
    }

    /// The AS path as an OLD/NEW-aware speaker sees it: AS_PATH merged with
    /// AS4_PATH (RFC 6793 §4.2.3). If AGGREGATOR carries an AS other than
    /// AS_TRANS while AS4_AGGREGATOR is present, AS4_PATH is ignored.
    pub fn effective_as_path(&self) -> Option<AsPath> {
        let path = self.as_path.as_ref()?;
        let Some(as4) = &self.rare().as4_path else {
            return Some(path.clone());
        };
        if self.rare().as4_aggregator.is_some()
            && self
                .rare()
                .aggregator
                .is_some_and(|a| a.asn != super::open::AS_TRANS as u32)
        {
            return Some(path.clone());
        }
        Some(path.merge_as4(as4))
    }

    /// The aggregator per RFC 6793 §4.2.3: AS4_AGGREGATOR when AGGREGATOR
    /// holds AS_TRANS.
    pub fn effective_aggregator(&self) -> Option<Aggregator> {
        let a = self.rare().aggregator?;
        match self.rare().as4_aggregator {
            Some(a4) if a.asn == super::open::AS_TRANS as u32 => Some(a4),
            _ => Some(a),
        }
    }

    /// Folds AS4_PATH / AS4_AGGREGATOR into AS_PATH / AGGREGATOR (RFC 6793
    /// §4.2.3) and drops them: what a NEW speaker keeps after receiving from
    /// an OLD one.
    pub fn normalize_as4(&mut self) {
        self.as_path = self.effective_as_path();
        let aggregator = self.effective_aggregator();
        let rare = self.rare_mut();
        rare.aggregator = aggregator;
        rare.as4_path = None;
        rare.as4_aggregator = None;
        self.shrink();
    }

    /// The attributes as they may be passed on to another peer: unknown
    /// optional non-transitive attributes dropped, unknown optional transitive
    /// ones kept with the Partial bit set (RFC 4271 §5).
    pub fn for_propagation(&self) -> PathAttributes {
        let mut out = self.clone();
        let other: Vec<RawAttribute> = self
            .rare()
            .other
            .iter()
            .filter(|o| o.flags & FLAG_TRANSITIVE != 0)
            .map(|o| RawAttribute {
                flags: o.flags | FLAG_PARTIAL,
                ..o.clone()
            })
            .collect();
        if !other.is_empty() || out.rare.is_some() {
            out.rare_mut().other = other;
            out.shrink();
        }
        out
    }

    pub fn raw(&self, code: u8) -> Option<&RawAttribute> {
        self.rare().other.iter().find(|o| o.type_code == code)
    }
}

pub(crate) fn mp_reach_len(mp: &MpReach) -> usize {
    let l = mp.encoded_len();
    header_len(l) + l
}

pub(crate) fn mp_unreach_len(mp: &MpUnreach) -> usize {
    let l = mp.encoded_len();
    header_len(l) + l
}

pub(crate) fn encode_mp_reach(mp: &MpReach, out: &mut BytesMut) {
    put_header(
        out,
        const { AttrType::flags_of(MP_REACH_NLRI) },
        MP_REACH_NLRI,
        mp.encoded_len(),
    );
    mp.encode(out);
}

pub(crate) fn encode_mp_unreach(mp: &MpUnreach, out: &mut BytesMut) {
    put_header(
        out,
        const { AttrType::flags_of(MP_UNREACH_NLRI) },
        MP_UNREACH_NLRI,
        mp.encoded_len(),
    );
    mp.encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;
    use std::hash::{Hash, Hasher};

    fn hash(a: &PathAttributes) -> u64 {
        let mut h = DefaultHasher::new();
        a.hash(&mut h);
        h.finish()
    }

    /// Every row an announcement may need has a presence check: with all
    /// of them there, none is missing; without one, that one is (RFC 7606
    /// §3 (d)), in table order.
    #[test]
    fn missing_mandatory_reads_every_required_row() {
        let full = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::decode(&[], true).unwrap()),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..Default::default()
        };
        assert_eq!(missing_mandatory(&full, None, &[], true), None);
        for t in &REQUIRED {
            let mut a = full.clone();
            match t.code {
                ORIGIN => a.origin = None,
                AS_PATH => a.as_path = None,
                NEXT_HOP => a.next_hop = None,
                c => panic!("required type {c} has no field in this test"),
            }
            let e = missing_mandatory(&a, None, &[], true).map(|e| (e.type_code, e.kind));
            assert_eq!(e, Some((t.code, AttrErrorKind::Missing)), "{}", t.name);
        }
    }

    /// No rare attributes and an empty box are the same set: interning and
    /// export comparisons must not tell them apart.
    #[test]
    fn empty_rare_box_equals_none() {
        let plain = PathAttributes {
            med: Some(7),
            ..Default::default()
        };
        let mut boxed = plain.clone();
        boxed.rare_mut();
        assert!(boxed.rare.is_some());
        assert_eq!(plain, boxed);
        assert_eq!(hash(&plain), hash(&boxed));
        boxed.shrink();
        assert!(boxed.rare.is_none());
        let mut large = plain.clone();
        large.rare_mut().large_communities = Some(vec![LargeCommunity {
            global: 1,
            local1: 2,
            local2: 3,
        }]);
        assert_ne!(plain, large);
        large.drop_as4();
        assert!(large.rare.is_some(), "a large community keeps the box");
        assert_eq!(
            large.rare().large_communities.as_ref().map(Vec::len),
            Some(1)
        );
    }
}
