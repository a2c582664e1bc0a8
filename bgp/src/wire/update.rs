//! UPDATE (RFC 4271 §4.3): decoding with RFC 7606 error handling, End-of-RIB
//! recognition (RFC 4724 §2), and an encoder that packs NLRI sharing one
//! attribute set into as few messages as the negotiated size allows.

use super::attr::{
    self, Action, AttrContext, AttrError, AttrSink, MpReach, MpUnreach, NextHop, PathAttributes,
};
use super::codec::CodecContext;
use super::family::Family;
use super::header::{HEADER_LEN, TYPE_UPDATE};
use super::nlri::{Nlri, NlriEntry, NlriIter};
use super::notification::{ErrorCode, Notification, UpdateError};
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// Withdrawn Routes field: IPv4 unicast.
    pub withdrawn: Nlri,
    pub attrs: PathAttributes,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    /// NLRI field: IPv4 unicast.
    pub nlri: Nlri,
    /// RFC 7606 outcomes short of a session reset.
    pub errors: Vec<AttrError>,
}

/// An UPDATE that cannot be encoded within the negotiated message size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("UPDATE of {len} octets exceeds the maximum message size of {max}")]
pub struct TooLarge {
    pub len: usize,
    pub max: usize,
}

fn malformed_list() -> Notification {
    Notification::bare(ErrorCode::Update(UpdateError::MalformedAttributeList))
}

impl Update {
    pub fn new(attrs: PathAttributes) -> Self {
        Self {
            withdrawn: Nlri::empty(Family::IPV4_UNICAST),
            attrs,
            mp_reach: None,
            mp_unreach: None,
            nlri: Nlri::empty(Family::IPV4_UNICAST),
            errors: Vec::new(),
        }
    }

    /// The End-of-RIB marker for a family (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Self {
        let mut u = Self::new(PathAttributes::default());
        if family != Family::IPV4_UNICAST {
            u.mp_unreach = Some(MpUnreach {
                family,
                withdrawn: Nlri::empty(family),
            });
        }
        u
    }

    /// Decodes an UPDATE body (the octets after the header).
    pub fn decode(ctx: &CodecContext, body: &Bytes) -> Result<Self, Notification> {
        let mut u = Update::new(PathAttributes::default());
        u.decode_into(ctx, body, 0)?;
        Ok(u)
    }

    /// Decodes the UPDATE body that is `msg[at..]` into `self`, a fresh
    /// [`Update::new`], slicing `msg` only for the fields kept (see
    /// [`attr::decode_attributes_in`]). Filling the caller's value rather
    /// than returning one spares copies of this large struct.
    pub(crate) fn decode_into(
        &mut self,
        ctx: &CodecContext,
        msg: &Bytes,
        at: usize,
    ) -> Result<(), Notification> {
        let v = msg.get(at..).unwrap_or_default();
        // RFC 4271 §6.3 / RFC 7606 §3 (a): Withdrawn Routes Length or Total
        // Path Attribute Length too large for the message: Malformed
        // Attribute List, session reset.
        if v.len() < 4 {
            return Err(malformed_list());
        }
        let wlen = u16::from_be_bytes([v[0], v[1]]) as usize;
        if 2 + wlen + 2 > v.len() {
            return Err(malformed_list());
        }
        let alen = u16::from_be_bytes([v[2 + wlen], v[3 + wlen]]) as usize;
        let astart = 4 + wlen;
        if astart + alen > v.len() {
            return Err(malformed_list());
        }
        let v4_add_path = ctx.add_path_rx.contains(Family::IPV4_UNICAST);
        // RFC 7606 §5.3 and §3 (i): syntactically incorrect Withdrawn Routes
        // or NLRI fields cannot be trusted to delimit anything: session reset.
        self.withdrawn = Nlri::parse(
            Family::IPV4_UNICAST,
            v4_add_path,
            msg.slice(at + 2..at + 2 + wlen),
        )
        .map_err(|_| Notification::bare(ErrorCode::Update(UpdateError::InvalidNetworkField)))?;
        self.nlri = Nlri::parse(
            Family::IPV4_UNICAST,
            v4_add_path,
            msg.slice(at + astart + alen..),
        )
        .map_err(|_| Notification::bare(ErrorCode::Update(UpdateError::InvalidNetworkField)))?;
        attr::decode_attributes_in(
            ctx,
            msg,
            at + astart..at + astart + alen,
            AttrContext::Update,
            AttrSink {
                attrs: &mut self.attrs,
                mp_reach: &mut self.mp_reach,
                mp_unreach: &mut self.mp_unreach,
                errors: &mut self.errors,
            },
        )?;
        if let Some(e) = attr::missing_mandatory(
            &self.attrs,
            self.mp_reach.as_ref(),
            &self.errors,
            !self.nlri.is_empty(),
        ) {
            self.errors.push(e);
        }
        Ok(())
    }

    /// The RFC 7606 action to apply: the strongest of the recorded errors
    /// (RFC 7606 §3 (h)). `None` when the UPDATE is clean.
    pub fn action(&self) -> Option<Action> {
        self.errors.iter().map(|e| e.action).max()
    }

    /// RFC 7606 §2: every NLRI of this UPDATE, announced or not, is to be
    /// handled as withdrawn.
    pub fn treat_as_withdraw(&self) -> bool {
        self.action() == Some(Action::TreatAsWithdraw)
    }

    /// RFC 4724 §2: an UPDATE with nothing in it is the IPv4 unicast
    /// End-of-RIB; one whose only attribute is an empty MP_UNREACH_NLRI is
    /// the End-of-RIB of that family.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty()
            || !self.nlri.is_empty()
            || self.mp_reach.is_some()
            || self.attrs != PathAttributes::default()
        {
            return None;
        }
        match &self.mp_unreach {
            None => Some(Family::IPV4_UNICAST),
            Some(mp) if mp.withdrawn.is_empty() => Some(mp.family),
            Some(_) => None,
        }
    }

    /// All announced NLRI, IPv4 field and MP_REACH_NLRI together.
    pub fn announced(&self) -> impl Iterator<Item = (Family, NlriEntry)> + '_ {
        let v4 = self.nlri.iter().map(|e| (Family::IPV4_UNICAST, e));
        // Two plain iterators chained, not a flat_map over the Option: this
        // walk is the inner loop of every consumer of an UPDATE.
        let (family, mp) = self.mp_reach.as_ref().map_or_else(
            || (Family::IPV4_UNICAST, NlriIter::default()),
            |m| (m.family, m.nlri.iter()),
        );
        v4.chain(mp.map(move |e| (family, e)))
    }

    /// All withdrawn NLRI, IPv4 field and MP_UNREACH_NLRI together.
    pub fn withdrawals(&self) -> impl Iterator<Item = (Family, NlriEntry)> + '_ {
        let v4 = self.withdrawn.iter().map(|e| (Family::IPV4_UNICAST, e));
        let (family, mp) = self.mp_unreach.as_ref().map_or_else(
            || (Family::IPV4_UNICAST, NlriIter::default()),
            |m| (m.family, m.withdrawn.iter()),
        );
        v4.chain(mp.map(move |e| (family, e)))
    }

    /// Octets of the body once encoded.
    pub fn body_len(&self, ctx: &CodecContext) -> usize {
        let mp = self.mp_reach.as_ref().map_or(0, attr::mp_reach_len)
            + self.mp_unreach.as_ref().map_or(0, attr::mp_unreach_len);
        4 + self.withdrawn.raw().len() + mp + self.attrs.encoded_len(ctx) + self.nlri.raw().len()
    }

    /// Encodes the body. RFC 7606 §5.1: MP_REACH_NLRI / MP_UNREACH_NLRI go
    /// first among the attributes, so a receiver can find the NLRI even if a
    /// later attribute is malformed.
    pub fn encode_body(&self, ctx: &CodecContext, out: &mut BytesMut) {
        out.put_u16(self.withdrawn.raw().len() as u16);
        out.put_slice(self.withdrawn.raw());
        let len_at = out.len();
        out.put_u16(0);
        let start = out.len();
        if let Some(mp) = &self.mp_reach {
            attr::encode_mp_reach(mp, out);
        }
        if let Some(mp) = &self.mp_unreach {
            attr::encode_mp_unreach(mp, out);
        }
        self.attrs.encode(ctx, out);
        let alen = (out.len() - start) as u16;
        out[len_at..len_at + 2].copy_from_slice(&alen.to_be_bytes());
        out.put_slice(self.nlri.raw());
    }

    /// Encodes a whole message, refusing to exceed the negotiated size.
    pub fn encode(&self, ctx: &CodecContext, out: &mut BytesMut) -> Result<(), TooLarge> {
        let len = HEADER_LEN + self.body_len(ctx);
        if len > ctx.max_message_len {
            return Err(TooLarge {
                len,
                max: ctx.max_message_len,
            });
        }
        super::header_into(out, TYPE_UPDATE, len);
        self.encode_body(ctx, out);
        Ok(())
    }
}

/// Room first given to an attribute set's encoding: a typical table's sets
/// (an AS path of a few ASNs, some communities) fit without regrowing.
const ATTRS_GUESS: usize = 128;

/// Builds the UPDATE messages that announce or withdraw many NLRI.
///
/// The attributes are encoded once; NLRI are then packed into each message
/// until the next one would not fit (RFC 4271 §4.3: one attribute set per
/// UPDATE; RFC 8654 raises the size to 65535 when negotiated). IPv4 unicast
/// with an IPv4 next hop uses the NLRI fields; every other family, and IPv4
/// over an IPv6 next hop (RFC 8950), goes in MP_REACH_NLRI / MP_UNREACH_NLRI.
pub struct UpdatePacker<'a> {
    ctx: &'a CodecContext,
}

impl<'a> UpdatePacker<'a> {
    pub fn new(ctx: &'a CodecContext) -> Self {
        Self { ctx }
    }

    fn add_path(&self, family: Family) -> bool {
        self.ctx.add_path_tx.contains(family)
    }

    /// Withdraws `entries` of `family`; returns whole messages, headers included.
    pub fn withdraw(&self, family: Family, entries: &[NlriEntry]) -> Result<Vec<Bytes>, TooLarge> {
        let add_path = self.add_path(family);
        let entry_len = |e: &NlriEntry| e.prefix.wire_len() + if add_path { 4 } else { 0 };
        let classic = family == Family::IPV4_UNICAST;
        // Header, both length fields, and for MP the attribute header (4 with
        // extended length) plus AFI/SAFI.
        let fixed = HEADER_LEN + 4 + if classic { 0 } else { 4 + 3 };
        let mut out = Vec::new();
        for chunk in chunks(entries, self.ctx.max_message_len - fixed, entry_len) {
            let nlri = Nlri::from_entries(family, add_path, chunk);
            let mut u = Update::new(PathAttributes::default());
            if classic {
                u.withdrawn = nlri;
            } else {
                u.mp_unreach = Some(MpUnreach {
                    family,
                    withdrawn: nlri,
                });
            }
            out.push(self.finish(&u)?);
        }
        Ok(out)
    }

    /// Announces `entries` of `family` with `attrs` and `next_hop`. Fails
    /// only when the attributes leave no room for even one prefix.
    pub fn announce(
        &self,
        family: Family,
        attrs: &PathAttributes,
        next_hop: &NextHop,
        entries: &[NlriEntry],
    ) -> Result<Vec<Bytes>, TooLarge> {
        let add_path = self.add_path(family);
        let entry_len = |e: &NlriEntry| e.prefix.wire_len() + if add_path { 4 } else { 0 };
        let classic = family == Family::IPV4_UNICAST && matches!(next_hop, NextHop::V4(_));
        let mut attrs = attrs.clone();
        if classic {
            if let NextHop::V4(a) = next_hop {
                attrs.next_hop = Some(*a);
            }
        } else {
            attrs.next_hop = None;
        }
        // The attributes are encoded once here and copied into each message
        // (a full table's export encoded them four times per UPDATE, each
        // time into a buffer growing from empty).
        let mut abuf = BytesMut::with_capacity(ATTRS_GUESS);
        attrs.encode(self.ctx, &mut abuf);
        let fixed = HEADER_LEN
            + 4
            + abuf.len()
            + if classic {
                0
            } else {
                4 + 5 + next_hop.encoded_len()
            };
        let mut out = Vec::new();
        let room = self.ctx.max_message_len.saturating_sub(fixed);
        for chunk in chunks(entries, room, entry_len) {
            let nlri = Nlri::from_entries(family, add_path, chunk);
            out.push(if classic {
                self.finish_encoded(None, &abuf, nlri.raw())?
            } else {
                let mp = MpReach {
                    family,
                    next_hop: next_hop.clone(),
                    nlri,
                };
                self.finish_encoded(Some(&mp), &abuf, &[])?
            });
        }
        Ok(out)
    }

    /// An announcing UPDATE whose other attributes are already encoded
    /// (`attrs`), laid out as [`Update::encode`] does: no withdrawn routes,
    /// MP_REACH_NLRI first (RFC 7606 §5.1), then `attrs`, then `nlri`.
    fn finish_encoded(
        &self,
        mp: Option<&MpReach>,
        attrs: &[u8],
        nlri: &[u8],
    ) -> Result<Bytes, TooLarge> {
        let alen = mp.map_or(0, attr::mp_reach_len) + attrs.len();
        let len = HEADER_LEN + 4 + alen + nlri.len();
        if len > self.ctx.max_message_len {
            return Err(TooLarge {
                len,
                max: self.ctx.max_message_len,
            });
        }
        let mut b = BytesMut::with_capacity(len);
        super::header_into(&mut b, TYPE_UPDATE, len);
        b.put_u16(0);
        b.put_u16(alen as u16);
        if let Some(mp) = mp {
            attr::encode_mp_reach(mp, &mut b);
        }
        b.put_slice(attrs);
        b.put_slice(nlri);
        Ok(b.freeze())
    }

    fn finish(&self, u: &Update) -> Result<Bytes, TooLarge> {
        let mut b = BytesMut::with_capacity(HEADER_LEN + u.body_len(self.ctx));
        u.encode(self.ctx, &mut b)?;
        Ok(b.freeze())
    }
}

/// Splits `entries` into runs whose encoded size stays within `room`.
fn chunks(
    entries: &[NlriEntry],
    room: usize,
    len: impl Fn(&NlriEntry) -> usize,
) -> Vec<&[NlriEntry]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, e) in entries.iter().enumerate() {
        let l = len(e);
        if used + l > room && i > start {
            out.push(&entries[start..i]);
            start = i;
            used = 0;
        }
        used += l;
    }
    if start < entries.len() {
        out.push(&entries[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::attr::{AsPath, Origin};
    use crate::wire::Message;
    use std::net::Ipv4Addr;

    fn ctx(tx: &[Family], rx: &[Family]) -> CodecContext {
        let mut c = CodecContext::four_octet();
        for f in tx {
            c.add_path_tx.insert(*f);
        }
        for f in rx {
            c.add_path_rx.insert(*f);
        }
        c
    }

    fn e(id: u32, p: &str) -> NlriEntry {
        NlriEntry {
            path_id: Some(id),
            prefix: p.parse().unwrap(),
        }
    }

    fn attrs() -> PathAttributes {
        PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::new()),
            ..Default::default()
        }
    }

    #[test]
    fn path_ids_go_before_each_prefix_where_add_path_is_sent() {
        // RFC 7911 §3: Path Identifier (4 octets), then length and prefix.
        let v4 = Family::IPV4_UNICAST;
        let tx = ctx(&[v4], &[]);
        let nh = NextHop::V4(Ipv4Addr::new(192, 0, 2, 1));
        let same = [e(1, "10.0.0.0/24"), e(7, "10.0.0.0/24")];
        let m = UpdatePacker::new(&tx)
            .announce(v4, &attrs(), &nh, &same)
            .unwrap();
        assert_eq!(m.len(), 1);
        assert!(
            m[0].ends_with(&[0, 0, 0, 1, 24, 10, 0, 0, 0, 0, 0, 7, 24, 10, 0, 0]),
            "{:?}",
            &m[0][..]
        );
        // A receiver that negotiated receive sees two paths of one prefix.
        let Ok(Message::Update(u)) = Message::decode(&ctx(&[], &[v4]), &m[0]) else {
            panic!("not an UPDATE");
        };
        let got: Vec<NlriEntry> = u.announced().map(|(_, e)| e).collect();
        assert_eq!(got, same);

        // Withdrawn by identifier: withdrawn length 8, the entry, no
        // attributes.
        let w = UpdatePacker::new(&tx)
            .withdraw(v4, &[e(7, "10.0.0.0/24")])
            .unwrap();
        assert_eq!(&w[0][HEADER_LEN..], &[0, 8, 0, 0, 0, 7, 24, 10, 0, 0, 0, 0]);

        // Where it was not negotiated (IPv6 here) no identifier is written
        // (the entries' own are ignored).
        let v6 = Family::IPV6_UNICAST;
        let w = UpdatePacker::new(&tx)
            .withdraw(v6, &[e(7, "2001:db8::/32")])
            .unwrap();
        // MP_UNREACH_NLRI: flags, type 15, length 8, AFI 2, SAFI 1, /32.
        assert!(
            w[0].ends_with(&[0x80, 15, 8, 0, 2, 1, 32, 0x20, 0x01, 0x0d, 0xb8]),
            "{:?}",
            &w[0][..]
        );
    }

    #[test]
    fn mp_reach_carries_path_ids_too() {
        let v6 = Family::IPV6_UNICAST;
        let tx = ctx(&[v6], &[]);
        let nh = NextHop::V6 {
            global: "2001:db8::1".parse().unwrap(),
            link_local: None,
        };
        let m = UpdatePacker::new(&tx)
            .announce(v6, &attrs(), &nh, &[e(3, "2001:db8:1::/48")])
            .unwrap();
        let Ok(Message::Update(u)) = Message::decode(&ctx(&[], &[v6]), &m[0]) else {
            panic!("not an UPDATE");
        };
        let mp = u.mp_reach.as_ref().unwrap();
        assert!(mp.nlri.add_path());
        assert_eq!(
            u.announced().map(|(_, e)| e).collect::<Vec<_>>(),
            [e(3, "2001:db8:1::/48")]
        );
        // In MP_REACH_NLRI (first among the attributes), after the next
        // hop and the reserved octet.
        let nlri = [0, 0, 0, 3, 48, 0x20, 0x01, 0x0d, 0xb8, 0, 1];
        assert!(
            m[0].windows(nlri.len()).any(|w| w == nlri),
            "{:?}",
            &m[0][..]
        );
    }
}
