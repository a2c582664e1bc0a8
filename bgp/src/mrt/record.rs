//! Record bodies: TABLE_DUMP (RFC 6396 §4.2), TABLE_DUMP_V2 (§4.3, with the
//! RFC 8050 ADD-PATH subtypes) and BGP4MP / BGP4MP_ET (§4.4).

use super::reader::{MrtError, RawRecord, BGP4MP, BGP4MP_ET, TABLE_DUMP, TABLE_DUMP_V2};
use crate::wire::attr::{decode_attributes, AttrContext, DecodedAttributes};
use crate::wire::codec::{AddPathFamilies, CodecContext, MAX_EXTENDED_MESSAGE_LEN};
use crate::wire::family::{Family, AFI_IPV4, AFI_IPV6, SAFI_MULTICAST, SAFI_UNICAST};
use crate::wire::nlri::{Nlri, Prefix};
use crate::wire::{Message, Notification};
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// TABLE_DUMP_V2 subtypes (RFC 6396 §4.3, RFC 8050 §4).
pub const PEER_INDEX_TABLE: u16 = 1;
pub const RIB_IPV4_UNICAST: u16 = 2;
pub const RIB_IPV4_MULTICAST: u16 = 3;
pub const RIB_IPV6_UNICAST: u16 = 4;
pub const RIB_IPV6_MULTICAST: u16 = 5;
pub const RIB_GENERIC: u16 = 6;
pub const RIB_IPV4_UNICAST_ADDPATH: u16 = 8;
pub const RIB_IPV4_MULTICAST_ADDPATH: u16 = 9;
pub const RIB_IPV6_UNICAST_ADDPATH: u16 = 10;
pub const RIB_IPV6_MULTICAST_ADDPATH: u16 = 11;
pub const RIB_GENERIC_ADDPATH: u16 = 12;

// BGP4MP subtypes (RFC 6396 §4.4, RFC 8050 §3).
pub const BGP4MP_STATE_CHANGE: u16 = 0;
pub const BGP4MP_MESSAGE: u16 = 1;
pub const BGP4MP_MESSAGE_AS4: u16 = 4;
pub const BGP4MP_STATE_CHANGE_AS4: u16 = 5;
pub const BGP4MP_MESSAGE_LOCAL: u16 = 6;
pub const BGP4MP_MESSAGE_AS4_LOCAL: u16 = 7;
pub const BGP4MP_MESSAGE_ADDPATH: u16 = 8;
pub const BGP4MP_MESSAGE_AS4_ADDPATH: u16 = 9;
pub const BGP4MP_MESSAGE_LOCAL_ADDPATH: u16 = 10;
pub const BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH: u16 = 11;

/// Whether the record is of an RFC 8050 ADD-PATH subtype: its routes carry
/// path identifiers.
pub fn is_add_path(raw: &RawRecord) -> bool {
    match raw.mrt_type {
        TABLE_DUMP_V2 => (RIB_IPV4_UNICAST_ADDPATH..=RIB_GENERIC_ADDPATH).contains(&raw.subtype),
        BGP4MP | BGP4MP_ET => {
            (BGP4MP_MESSAGE_ADDPATH..=BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH).contains(&raw.subtype)
        }
        _ => false,
    }
}

/// Whether a BGP4MP subtype holds a message the collector sent (RFC 6396
/// §4.4.5–§4.4.6, RFC 8050 §3) rather than one it received.
pub fn is_local(bgp4mp_subtype: u16) -> bool {
    matches!(
        bgp4mp_subtype,
        BGP4MP_MESSAGE_LOCAL
            | BGP4MP_MESSAGE_AS4_LOCAL
            | BGP4MP_MESSAGE_LOCAL_ADDPATH
            | BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH
    )
}

/// The name of a type/subtype pair, as mrtparse and bgpdump spell them.
pub fn type_name(mrt_type: u16, subtype: u16) -> String {
    let (t, s) = match mrt_type {
        TABLE_DUMP => (
            "TABLE_DUMP",
            match subtype {
                1 => "AFI_IPv4",
                2 => "AFI_IPv6",
                _ => "",
            },
        ),
        TABLE_DUMP_V2 => (
            "TABLE_DUMP_V2",
            match subtype {
                PEER_INDEX_TABLE => "PEER_INDEX_TABLE",
                RIB_IPV4_UNICAST => "RIB_IPV4_UNICAST",
                RIB_IPV4_MULTICAST => "RIB_IPV4_MULTICAST",
                RIB_IPV6_UNICAST => "RIB_IPV6_UNICAST",
                RIB_IPV6_MULTICAST => "RIB_IPV6_MULTICAST",
                RIB_GENERIC => "RIB_GENERIC",
                RIB_IPV4_UNICAST_ADDPATH => "RIB_IPV4_UNICAST_ADDPATH",
                RIB_IPV4_MULTICAST_ADDPATH => "RIB_IPV4_MULTICAST_ADDPATH",
                RIB_IPV6_UNICAST_ADDPATH => "RIB_IPV6_UNICAST_ADDPATH",
                RIB_IPV6_MULTICAST_ADDPATH => "RIB_IPV6_MULTICAST_ADDPATH",
                RIB_GENERIC_ADDPATH => "RIB_GENERIC_ADDPATH",
                _ => "",
            },
        ),
        BGP4MP | BGP4MP_ET => (
            if mrt_type == BGP4MP {
                "BGP4MP"
            } else {
                "BGP4MP_ET"
            },
            match subtype {
                BGP4MP_STATE_CHANGE => "BGP4MP_STATE_CHANGE",
                BGP4MP_MESSAGE => "BGP4MP_MESSAGE",
                BGP4MP_MESSAGE_AS4 => "BGP4MP_MESSAGE_AS4",
                BGP4MP_STATE_CHANGE_AS4 => "BGP4MP_STATE_CHANGE_AS4",
                BGP4MP_MESSAGE_LOCAL => "BGP4MP_MESSAGE_LOCAL",
                BGP4MP_MESSAGE_AS4_LOCAL => "BGP4MP_MESSAGE_AS4_LOCAL",
                BGP4MP_MESSAGE_ADDPATH => "BGP4MP_MESSAGE_ADDPATH",
                BGP4MP_MESSAGE_AS4_ADDPATH => "BGP4MP_MESSAGE_AS4_ADDPATH",
                BGP4MP_MESSAGE_LOCAL_ADDPATH => "BGP4MP_MESSAGE_LOCAL_ADDPATH",
                BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH => "BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH",
                _ => "",
            },
        ),
        _ => ("", ""),
    };
    match (t, s) {
        ("", _) => format!("{mrt_type}/{subtype}"),
        (t, "") => format!("{t}/{subtype}"),
        (t, s) => format!("{t}/{s}"),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    pub bgp_id: Ipv4Addr,
    pub addr: IpAddr,
    pub asn: u32,
}

/// RFC 6396 §4.3.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIndexTable {
    pub collector_id: Ipv4Addr,
    pub view_name: Bytes,
    pub peers: Vec<PeerEntry>,
}

/// One route of a RIB record (RFC 6396 §4.3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibEntry {
    pub peer_index: u16,
    pub originated: u32,
    /// RFC 8050 §4: the path identifier of ADD-PATH RIB subtypes.
    pub path_id: Option<u32>,
    pub attrs: Result<DecodedAttributes, Notification>,
}

/// A RIB record: one prefix and its routes (TABLE_DUMP_V2), or one route
/// (TABLE_DUMP, whose peer is carried inline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibRecord {
    pub sequence: u32,
    pub family: Family,
    /// `None` for RIB_GENERIC records of families that are not IP prefixes.
    pub prefix: Option<Prefix>,
    pub entries: Vec<RibEntry>,
    /// TABLE_DUMP (v1) only: the peer of the single entry.
    pub v1_peer: Option<(IpAddr, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bgp4mpMessage {
    pub peer_as: u32,
    pub local_as: u32,
    pub if_index: u16,
    pub peer_ip: IpAddr,
    pub local_ip: IpAddr,
    /// The codec context the message was recorded under.
    pub ctx: CodecContext,
    pub message: Result<Message, Notification>,
    /// The raw BGP message, header included.
    pub raw: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bgp4mpStateChange {
    pub peer_as: u32,
    pub local_as: u32,
    pub peer_ip: IpAddr,
    pub local_ip: IpAddr,
    pub old_state: u16,
    pub new_state: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    PeerIndexTable(PeerIndexTable),
    Rib(RibRecord),
    Message(Box<Bgp4mpMessage>),
    StateChange(Bgp4mpStateChange),
    /// A type or subtype this reader does not interpret.
    Other,
}

struct Cursor<'a> {
    b: &'a Bytes,
    p: usize,
    offset: u64,
}

impl<'a> Cursor<'a> {
    fn short(&self, what: &'static str) -> MrtError {
        MrtError::Short {
            offset: self.offset,
            what,
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MrtError> {
        let s = self
            .b
            .get(self.p..self.p + n)
            .ok_or_else(|| self.short(what))?;
        self.p += n;
        Ok(s)
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, MrtError> {
        if self.p + n > self.b.len() {
            return Err(self.short(what));
        }
        let s = self.b.slice(self.p..self.p + n);
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, MrtError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, MrtError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, MrtError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn ip(&mut self, v6: bool, what: &'static str) -> Result<IpAddr, MrtError> {
        Ok(if v6 {
            let s = self.take(16, what)?;
            let mut a = [0u8; 16];
            a.copy_from_slice(s);
            IpAddr::V6(Ipv6Addr::from(a))
        } else {
            let s = self.take(4, what)?;
            IpAddr::V4(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
        })
    }
    fn rest(&mut self) -> Bytes {
        let s = self.b.slice(self.p.min(self.b.len())..);
        self.p = self.b.len();
        s
    }
}

fn afi_is_v6(afi: u16) -> bool {
    afi == AFI_IPV6
}

impl Record {
    /// Parses a record body. Malformed BGP content inside a well-framed
    /// record is returned as a decode error inside the record, not as `Err`.
    pub fn parse(raw: &RawRecord) -> Result<Record, MrtError> {
        let mut c = Cursor {
            b: &raw.body,
            p: 0,
            offset: raw.offset,
        };
        match (raw.mrt_type, raw.subtype) {
            (TABLE_DUMP_V2, PEER_INDEX_TABLE) => parse_peer_index(&mut c),
            (
                TABLE_DUMP_V2,
                st @ (RIB_IPV4_UNICAST..=RIB_IPV6_MULTICAST
                | RIB_IPV4_UNICAST_ADDPATH..=RIB_IPV6_MULTICAST_ADDPATH),
            ) => {
                let add_path = st >= RIB_IPV4_UNICAST_ADDPATH;
                let base = if add_path { st - 6 } else { st };
                let family = match base {
                    RIB_IPV4_UNICAST => Family::new(AFI_IPV4, SAFI_UNICAST),
                    RIB_IPV4_MULTICAST => Family::new(AFI_IPV4, SAFI_MULTICAST),
                    RIB_IPV6_UNICAST => Family::new(AFI_IPV6, SAFI_UNICAST),
                    _ => Family::new(AFI_IPV6, SAFI_MULTICAST),
                };
                parse_rib(&mut c, Some(family), add_path)
            }
            (TABLE_DUMP_V2, st @ (RIB_GENERIC | RIB_GENERIC_ADDPATH)) => {
                parse_rib(&mut c, None, st == RIB_GENERIC_ADDPATH)
            }
            (TABLE_DUMP, st @ (1 | 2)) => parse_table_dump_v1(&mut c, st == 2),
            (BGP4MP | BGP4MP_ET, BGP4MP_STATE_CHANGE | BGP4MP_STATE_CHANGE_AS4) => {
                let as4 = raw.subtype == BGP4MP_STATE_CHANGE_AS4;
                let (peer_as, local_as, _, peer_ip, local_ip) = bgp4mp_common(&mut c, as4)?;
                let old_state = c.u16("old state")?;
                let new_state = c.u16("new state")?;
                Ok(Record::StateChange(Bgp4mpStateChange {
                    peer_as,
                    local_as,
                    peer_ip,
                    local_ip,
                    old_state,
                    new_state,
                }))
            }
            (
                BGP4MP | BGP4MP_ET,
                st @ (BGP4MP_MESSAGE
                | BGP4MP_MESSAGE_AS4
                | BGP4MP_MESSAGE_LOCAL..=BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH),
            ) => {
                let as4 = matches!(
                    st,
                    BGP4MP_MESSAGE_AS4
                        | BGP4MP_MESSAGE_AS4_LOCAL
                        | BGP4MP_MESSAGE_AS4_ADDPATH
                        | BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH
                );
                let add_path = st >= BGP4MP_MESSAGE_ADDPATH;
                let (peer_as, local_as, if_index, peer_ip, local_ip) = bgp4mp_common(&mut c, as4)?;
                let raw_msg = c.rest();
                let mut ctx = CodecContext {
                    four_octet_as: as4,
                    max_message_len: MAX_EXTENDED_MESSAGE_LEN,
                    ..CodecContext::default()
                };
                if add_path {
                    // RFC 8050 §3: every NLRI of the message carries a path id.
                    let mut f = AddPathFamilies::default();
                    for fam in [
                        Family::IPV4_UNICAST,
                        Family::IPV6_UNICAST,
                        Family::new(1, 2),
                        Family::new(2, 2),
                    ] {
                        f.insert(fam);
                    }
                    ctx.add_path_rx = f;
                }
                let message = Message::decode(&ctx, &raw_msg);
                Ok(Record::Message(Box::new(Bgp4mpMessage {
                    peer_as,
                    local_as,
                    if_index,
                    peer_ip,
                    local_ip,
                    ctx,
                    message,
                    raw: raw_msg,
                })))
            }
            _ => Ok(Record::Other),
        }
    }
}

fn bgp4mp_common(
    c: &mut Cursor<'_>,
    as4: bool,
) -> Result<(u32, u32, u16, IpAddr, IpAddr), MrtError> {
    let (peer_as, local_as) = if as4 {
        (c.u32("peer AS")?, c.u32("local AS")?)
    } else {
        (c.u16("peer AS")? as u32, c.u16("local AS")? as u32)
    };
    let if_index = c.u16("interface index")?;
    let afi = c.u16("address family")?;
    let v6 = afi_is_v6(afi);
    let peer_ip = c.ip(v6, "peer address")?;
    let local_ip = c.ip(v6, "local address")?;
    Ok((peer_as, local_as, if_index, peer_ip, local_ip))
}

fn parse_peer_index(c: &mut Cursor<'_>) -> Result<Record, MrtError> {
    let id = c.u32("collector id")?;
    let vlen = c.u16("view name length")? as usize;
    let view_name = c.bytes(vlen, "view name")?;
    let count = c.u16("peer count")? as usize;
    let mut peers = Vec::with_capacity(count);
    for _ in 0..count {
        // RFC 6396 §4.3.1: bit 0 of the peer type is IPv6, bit 1 a 4-octet AS.
        let t = c.u8("peer type")?;
        let bgp_id = Ipv4Addr::from(c.u32("peer BGP id")?);
        let addr = c.ip(t & 1 != 0, "peer address")?;
        let asn = if t & 2 != 0 {
            c.u32("peer AS")?
        } else {
            c.u16("peer AS")? as u32
        };
        peers.push(PeerEntry { bgp_id, addr, asn });
    }
    Ok(Record::PeerIndexTable(PeerIndexTable {
        collector_id: Ipv4Addr::from(id),
        view_name,
        peers,
    }))
}

fn parse_prefix(c: &mut Cursor<'_>, family: Family) -> Result<Prefix, MrtError> {
    let len = c.u8("prefix length")?;
    let max = if family.afi == AFI_IPV6 { 128 } else { 32 };
    if len > max {
        return Err(c.short("prefix length within the family"));
    }
    let octets = c.take((len as usize).div_ceil(8), "prefix")?;
    let mut a = [0u8; 16];
    a[..octets.len()].copy_from_slice(octets);
    let addr = if family.afi == AFI_IPV6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    };
    // RFC 4271 §4.3: trailing bits are irrelevant; `Prefix::new` masks them.
    Prefix::new(addr, len).ok_or_else(|| c.short("prefix"))
}

fn parse_rib(
    c: &mut Cursor<'_>,
    family: Option<Family>,
    add_path: bool,
) -> Result<Record, MrtError> {
    let sequence = c.u32("sequence number")?;
    let (family, prefix) = match family {
        Some(f) => (f, Some(parse_prefix(c, f)?)),
        None => {
            // RFC 6396 §4.3.3: AFI, SAFI and one NLRI in the family's encoding.
            let afi = c.u16("AFI")?;
            let safi = c.u8("SAFI")?;
            let f = Family::new(afi, safi);
            if Nlri::parse(f, false, Bytes::new())
                .map(|n| n.is_ip())
                .unwrap_or(false)
            {
                (f, Some(parse_prefix(c, f)?))
            } else {
                // The NLRI of other families cannot be delimited without
                // knowing their encoding: skip the record's routes.
                return Ok(Record::Rib(RibRecord {
                    sequence,
                    family: f,
                    prefix: None,
                    entries: Vec::new(),
                    v1_peer: None,
                }));
            }
        }
    };
    let count = c.u16("entry count")? as usize;
    let ctx = CodecContext::four_octet();
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let peer_index = c.u16("peer index")?;
        let originated = c.u32("originated time")?;
        let path_id = if add_path {
            Some(c.u32("path identifier")?)
        } else {
            None
        };
        let alen = c.u16("attribute length")? as usize;
        let attrs = c.bytes(alen, "attributes")?;
        // RFC 6396 §4.3.4: attributes use 4-octet AS numbers.
        let attrs = decode_attributes(&ctx, &attrs, AttrContext::MrtRib(family));
        entries.push(RibEntry {
            peer_index,
            originated,
            path_id,
            attrs,
        });
    }
    Ok(Record::Rib(RibRecord {
        sequence,
        family,
        prefix,
        entries,
        v1_peer: None,
    }))
}

fn parse_table_dump_v1(c: &mut Cursor<'_>, v6: bool) -> Result<Record, MrtError> {
    let family = if v6 {
        Family::IPV6_UNICAST
    } else {
        Family::IPV4_UNICAST
    };
    let _view = c.u16("view number")?;
    let sequence = c.u16("sequence number")? as u32;
    let addr = c.ip(v6, "prefix")?;
    let len = c.u8("prefix length")?;
    let prefix =
        Prefix::new(addr, len).ok_or_else(|| c.short("prefix length within the family"))?;
    let _status = c.u8("status")?;
    let originated = c.u32("originated time")?;
    let peer_ip = c.ip(v6, "peer address")?;
    let peer_as = c.u16("peer AS")? as u32;
    let alen = c.u16("attribute length")? as usize;
    let attrs = c.bytes(alen, "attributes")?;
    // RFC 6396 §4.2: TABLE_DUMP carries 2-octet AS numbers.
    let attrs = decode_attributes(
        &CodecContext::default(),
        &attrs,
        AttrContext::MrtRib(family),
    );
    Ok(Record::Rib(RibRecord {
        sequence,
        family,
        prefix: Some(prefix),
        entries: vec![RibEntry {
            peer_index: 0,
            originated,
            path_id: None,
            attrs,
        }],
        v1_peer: Some((peer_ip, peer_as)),
    }))
}
