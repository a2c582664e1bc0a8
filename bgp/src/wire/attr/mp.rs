//! MP_REACH_NLRI and MP_UNREACH_NLRI (RFC 4760 §3–§4), including IPv4 NLRI
//! over an IPv6 next hop (RFC 8950 §3) and the abbreviated MP_REACH_NLRI of
//! MRT RIB entries (RFC 6396 §4.3.4).

use super::super::family::{Family, AFI_IPV4, AFI_IPV6, SAFI_MULTICAST, SAFI_UNICAST};
use super::super::nlri::{Nlri, NlriError};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The next hop of an MP_REACH_NLRI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    V4(Ipv4Addr),
    /// RFC 2545 §3: a global address and optionally a link-local one.
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
    /// Next hops of other families (VPN route distinguishers, ...), as sent.
    Other(Bytes),
}

impl NextHop {
    pub fn encoded_len(&self) -> usize {
        match self {
            NextHop::V4(_) => 4,
            NextHop::V6 {
                link_local: None, ..
            } => 16,
            NextHop::V6 {
                link_local: Some(_),
                ..
            } => 32,
            NextHop::Other(b) => b.len(),
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            NextHop::V4(a) => out.put_slice(&a.octets()),
            NextHop::V6 { global, link_local } => {
                out.put_slice(&global.octets());
                if let Some(ll) = link_local {
                    out.put_slice(&ll.octets());
                }
            }
            NextHop::Other(b) => out.put_slice(b),
        }
    }

    /// The address to forward to: the global one for IPv6.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            NextHop::V4(a) => Some(IpAddr::V4(*a)),
            NextHop::V6 { global, .. } => Some(IpAddr::V6(*global)),
            NextHop::Other(_) => None,
        }
    }

    fn decode(family: Family, v: &Bytes) -> Option<NextHop> {
        let ip = family.safi == SAFI_UNICAST || family.safi == SAFI_MULTICAST;
        match (family.afi, v.len()) {
            (AFI_IPV4, 4) if ip => Some(NextHop::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
            // RFC 8950 §3: IPv4 NLRI with an IPv6 next hop of 16 or 32 octets.
            (AFI_IPV4 | AFI_IPV6, 16) if ip => Some(NextHop::V6 {
                global: v6(&v[..16]),
                link_local: None,
            }),
            (AFI_IPV4 | AFI_IPV6, 32) if ip => Some(NextHop::V6 {
                global: v6(&v[..16]),
                link_local: Some(v6(&v[16..32])),
            }),
            // RFC 7606 §7.11: a next hop length inconsistent with the AFI/SAFI.
            (AFI_IPV4 | AFI_IPV6, _) if ip => None,
            _ => Some(NextHop::Other(v.clone())),
        }
    }
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::V4(a) => write!(f, "{a}"),
            NextHop::V6 {
                global,
                link_local: None,
            } => write!(f, "{global}"),
            NextHop::V6 {
                global,
                link_local: Some(ll),
            } => write!(f, "{global} {ll}"),
            NextHop::Other(b) => write!(f, "raw:{}", b.len()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: NextHop,
    pub nlri: Nlri,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Nlri,
}

/// Why an MP attribute is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MpError {
    #[error("attribute too short for AFI, SAFI and next hop length")]
    TooShort,
    #[error("next hop length {0} overruns the attribute")]
    NextHopOverrun(usize),
    #[error("next hop length {0} is invalid for the address family")]
    NextHopLength(usize),
    #[error("NLRI: {0}")]
    Nlri(NlriError),
}

impl MpReach {
    /// Decodes a full MP_REACH_NLRI value. `add_path` says whether NLRI of the
    /// family carry path ids (RFC 7911).
    pub fn decode(v: &Bytes, add_path: impl Fn(Family) -> bool) -> Result<Self, MpError> {
        // RFC 4760 §3: AFI(2) SAFI(1) NH-len(1) NH reserved(1) NLRI.
        if v.len() < 5 {
            return Err(MpError::TooShort);
        }
        let family = Family::new(u16::from_be_bytes([v[0], v[1]]), v[2]);
        let nh_len = v[3] as usize;
        if 4 + nh_len + 1 > v.len() {
            return Err(MpError::NextHopOverrun(nh_len));
        }
        let next_hop = NextHop::decode(family, &v.slice(4..4 + nh_len))
            .ok_or(MpError::NextHopLength(nh_len))?;
        // RFC 4760 §3: the Reserved octet is ignored on receipt.
        let raw = v.slice(4 + nh_len + 1..);
        let nlri = Nlri::parse(family, add_path(family), raw).map_err(MpError::Nlri)?;
        Ok(Self {
            family,
            next_hop,
            nlri,
        })
    }

    /// Decodes the MP_REACH_NLRI of an MRT RIB entry: RFC 6396 §4.3.4 keeps
    /// only the next hop length and next hop, the family coming from the
    /// record. Some collectors write the full attribute; both are accepted.
    pub fn decode_rib(v: &Bytes, family: Family) -> Result<Self, MpError> {
        if !v.is_empty() && v[0] as usize + 1 == v.len() {
            let next_hop = NextHop::decode(family, &v.slice(1..))
                .ok_or(MpError::NextHopLength(v[0] as usize))?;
            return Ok(Self {
                family,
                next_hop,
                nlri: Nlri::empty(family),
            });
        }
        Self::decode(v, |_| false)
    }

    pub fn encoded_len(&self) -> usize {
        5 + self.next_hop.encoded_len() + self.nlri.raw().len()
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.family.afi);
        out.put_u8(self.family.safi);
        out.put_u8(self.next_hop.encoded_len() as u8);
        self.next_hop.encode(out);
        out.put_u8(0);
        out.put_slice(self.nlri.raw());
    }
}

impl MpUnreach {
    pub fn decode(v: &Bytes, add_path: impl Fn(Family) -> bool) -> Result<Self, MpError> {
        // RFC 4760 §4: AFI(2) SAFI(1) withdrawn routes.
        if v.len() < 3 {
            return Err(MpError::TooShort);
        }
        let family = Family::new(u16::from_be_bytes([v[0], v[1]]), v[2]);
        let withdrawn =
            Nlri::parse(family, add_path(family), v.slice(3..)).map_err(MpError::Nlri)?;
        Ok(Self { family, withdrawn })
    }

    pub fn encoded_len(&self) -> usize {
        3 + self.withdrawn.raw().len()
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.family.afi);
        out.put_u8(self.family.safi);
        out.put_slice(self.withdrawn.raw());
    }
}
