//! Capabilities advertisement (RFC 5492) and the capabilities petrel knows.
//!
//! Each known capability is typed; anything else is kept as
//! [`Capability::Unknown`] with its raw value, so that an OPEN re-encodes to
//! the octets it came from and unknown capabilities can be logged.

use super::family::Family;
use super::notification::{ErrorCode, Notification, OpenError};
use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u16, be_u32, be_u8};

pub const CAP_MULTIPROTOCOL: u8 = 1;
pub const CAP_ROUTE_REFRESH: u8 = 2;
pub const CAP_EXTENDED_NEXT_HOP: u8 = 5;
pub const CAP_EXTENDED_MESSAGE: u8 = 6;
pub const CAP_GRACEFUL_RESTART: u8 = 64;
pub const CAP_FOUR_OCTET_AS: u8 = 65;
pub const CAP_ADD_PATH: u8 = 69;
pub const CAP_ENHANCED_ROUTE_REFRESH: u8 = 70;
pub const CAP_LONG_LIVED_GRACEFUL_RESTART: u8 = 71;
pub const CAP_FQDN: u8 = 73;

/// RFC 7911 §4 Send/Receive field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddPathMode {
    Receive,
    Send,
    Both,
    /// A value outside 1..=3, kept so the capability re-encodes as received.
    Other(u8),
}

impl AddPathMode {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Receive,
            2 => Self::Send,
            3 => Self::Both,
            v => Self::Other(v),
        }
    }
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Receive => 1,
            Self::Send => 2,
            Self::Both => 3,
            Self::Other(v) => v,
        }
    }
    pub fn receive(self) -> bool {
        matches!(self, Self::Receive | Self::Both)
    }
    pub fn send(self) -> bool {
        matches!(self, Self::Send | Self::Both)
    }
}

/// RFC 4724 §3 per-family entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestartFamily {
    pub family: Family,
    /// The forwarding state has been preserved (the F bit, 0x80 of the flags).
    pub flags: u8,
}

impl GracefulRestartFamily {
    pub const FORWARDING_STATE: u8 = 0x80;
    pub fn forwarding_preserved(&self) -> bool {
        self.flags & Self::FORWARDING_STATE != 0
    }
}

/// RFC 4724 §3, with the N bit of RFC 8538 §2.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GracefulRestart {
    /// The four flag bits: 0x8 Restart State (R), 0x4 Notification (N).
    pub flags: u8,
    /// Restart time in seconds (12 bits).
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

impl GracefulRestart {
    pub const RESTART_STATE: u8 = 0x8;
    pub const NOTIFICATION: u8 = 0x4;
    pub fn restarting(&self) -> bool {
        self.flags & Self::RESTART_STATE != 0
    }
}

/// RFC 9494 §2 per-family entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LlgrFamily {
    pub family: Family,
    /// 0x80: forwarding state preserved.
    pub flags: u8,
    /// Long-lived stale time, seconds (24 bits).
    pub stale_time: u32,
}

/// RFC 8950 §3 entry: NLRI of (afi, safi) may carry a next hop of `next_hop_afi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExtendedNextHop {
    pub nlri_afi: u16,
    pub nlri_safi: u16,
    pub next_hop_afi: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// RFC 4760 §8.
    Multiprotocol(Family),
    /// RFC 2918 §2.
    RouteRefresh,
    /// RFC 7313 §3.
    EnhancedRouteRefresh,
    /// RFC 8950 §3.
    ExtendedNextHop(Vec<ExtendedNextHop>),
    /// RFC 8654 §3.
    ExtendedMessage,
    /// RFC 4724 §3.
    GracefulRestart(GracefulRestart),
    /// RFC 6793 §3.
    FourOctetAs(u32),
    /// RFC 7911 §4.
    AddPath(Vec<(Family, AddPathMode)>),
    /// RFC 9494 §2.
    LongLivedGracefulRestart(Vec<LlgrFamily>),
    /// draft-walton-bgp-hostname-capability, as FRR sends it.
    Fqdn {
        hostname: Bytes,
        domain: Bytes,
    },
    Unknown {
        code: u8,
        value: Bytes,
    },
}

type IResult<'a, T> = nom::IResult<&'a [u8], T>;

fn malformed(code: u8) -> Notification {
    // RFC 5492 names no subcode for a malformed capability value; like other
    // implementations we answer OPEN error / unspecific, quoting the code.
    Notification::new(ErrorCode::Open(OpenError::Unspecific), vec![code])
}

fn family16(i: &[u8]) -> IResult<'_, Family> {
    let (i, afi) = be_u16(i)?;
    let (i, safi) = be_u8(i)?;
    Ok((i, Family::new(afi, safi)))
}

fn all<'a, T>(mut i: &'a [u8], f: impl Fn(&'a [u8]) -> IResult<'a, T>) -> Option<Vec<T>> {
    let mut out = Vec::new();
    while !i.is_empty() {
        let (rest, v) = f(i).ok()?;
        out.push(v);
        i = rest;
    }
    Some(out)
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Self::Multiprotocol(_) => CAP_MULTIPROTOCOL,
            Self::RouteRefresh => CAP_ROUTE_REFRESH,
            Self::EnhancedRouteRefresh => CAP_ENHANCED_ROUTE_REFRESH,
            Self::ExtendedNextHop(_) => CAP_EXTENDED_NEXT_HOP,
            Self::ExtendedMessage => CAP_EXTENDED_MESSAGE,
            Self::GracefulRestart(_) => CAP_GRACEFUL_RESTART,
            Self::FourOctetAs(_) => CAP_FOUR_OCTET_AS,
            Self::AddPath(_) => CAP_ADD_PATH,
            Self::LongLivedGracefulRestart(_) => CAP_LONG_LIVED_GRACEFUL_RESTART,
            Self::Fqdn { .. } => CAP_FQDN,
            Self::Unknown { code, .. } => *code,
        }
    }

    /// Decodes one capability value (the octets after code and length).
    pub fn decode(code: u8, value: &Bytes) -> Result<Self, Notification> {
        let v = &value[..];
        let cap = match code {
            CAP_MULTIPROTOCOL => {
                if v.len() != 4 {
                    return Err(malformed(code));
                }
                // RFC 4760 §8: AFI(2), reserved(1), SAFI(1).
                Self::Multiprotocol(Family::new(u16::from_be_bytes([v[0], v[1]]), v[3]))
            }
            CAP_ROUTE_REFRESH | CAP_ENHANCED_ROUTE_REFRESH | CAP_EXTENDED_MESSAGE
                if !v.is_empty() =>
            {
                return Err(malformed(code));
            }
            CAP_ROUTE_REFRESH => Self::RouteRefresh,
            CAP_ENHANCED_ROUTE_REFRESH => Self::EnhancedRouteRefresh,
            CAP_EXTENDED_MESSAGE => Self::ExtendedMessage,
            CAP_EXTENDED_NEXT_HOP => Self::ExtendedNextHop(
                all(v, |i| {
                    let (i, nlri_afi) = be_u16(i)?;
                    let (i, nlri_safi) = be_u16(i)?;
                    let (i, next_hop_afi) = be_u16(i)?;
                    Ok((
                        i,
                        ExtendedNextHop {
                            nlri_afi,
                            nlri_safi,
                            next_hop_afi,
                        },
                    ))
                })
                .ok_or_else(|| malformed(code))?,
            ),
            CAP_GRACEFUL_RESTART => {
                if v.len() < 2 || !(v.len() - 2).is_multiple_of(4) {
                    return Err(malformed(code));
                }
                let word = u16::from_be_bytes([v[0], v[1]]);
                let families = all(&v[2..], |i| {
                    let (i, family) = family16(i)?;
                    let (i, flags) = be_u8(i)?;
                    Ok((i, GracefulRestartFamily { family, flags }))
                })
                .ok_or_else(|| malformed(code))?;
                Self::GracefulRestart(GracefulRestart {
                    flags: (word >> 12) as u8,
                    restart_time: word & 0x0fff,
                    families,
                })
            }
            CAP_FOUR_OCTET_AS => {
                let (_, asn) =
                    be_u32::<_, nom::error::Error<&[u8]>>(v).map_err(|_| malformed(code))?;
                if v.len() != 4 {
                    return Err(malformed(code));
                }
                Self::FourOctetAs(asn)
            }
            CAP_ADD_PATH => Self::AddPath(
                all(v, |i| {
                    let (i, family) = family16(i)?;
                    let (i, mode) = be_u8(i)?;
                    Ok((i, (family, AddPathMode::from_u8(mode))))
                })
                .ok_or_else(|| malformed(code))?,
            ),
            CAP_LONG_LIVED_GRACEFUL_RESTART => Self::LongLivedGracefulRestart(
                all(v, |i| {
                    let (i, family) = family16(i)?;
                    let (i, flags) = be_u8(i)?;
                    let (i, hi) = be_u8(i)?;
                    let (i, lo) = be_u16(i)?;
                    Ok((
                        i,
                        LlgrFamily {
                            family,
                            flags,
                            stale_time: (hi as u32) << 16 | lo as u32,
                        },
                    ))
                })
                .ok_or_else(|| malformed(code))?,
            ),
            CAP_FQDN => {
                let h = *v.first().ok_or_else(|| malformed(code))? as usize;
                let d = *v.get(1 + h).ok_or_else(|| malformed(code))? as usize;
                if v.len() != 2 + h + d {
                    return Err(malformed(code));
                }
                Self::Fqdn {
                    hostname: value.slice(1..1 + h),
                    domain: value.slice(2 + h..2 + h + d),
                }
            }
            _ => Self::Unknown {
                code,
                value: value.clone(),
            },
        };
        Ok(cap)
    }

    pub fn encode_value(&self, out: &mut BytesMut) {
        match self {
            Self::Multiprotocol(f) => {
                out.put_u16(f.afi);
                out.put_u8(0);
                out.put_u8(f.safi);
            }
            Self::RouteRefresh | Self::EnhancedRouteRefresh | Self::ExtendedMessage => {}
            Self::ExtendedNextHop(v) => {
                for e in v {
                    out.put_u16(e.nlri_afi);
                    out.put_u16(e.nlri_safi);
                    out.put_u16(e.next_hop_afi);
                }
            }
            Self::GracefulRestart(gr) => {
                out.put_u16(((gr.flags as u16 & 0xf) << 12) | (gr.restart_time & 0x0fff));
                for f in &gr.families {
                    out.put_u16(f.family.afi);
                    out.put_u8(f.family.safi);
                    out.put_u8(f.flags);
                }
            }
            Self::FourOctetAs(asn) => out.put_u32(*asn),
            Self::AddPath(v) => {
                for (f, mode) in v {
                    out.put_u16(f.afi);
                    out.put_u8(f.safi);
                    out.put_u8(mode.to_u8());
                }
            }
            Self::LongLivedGracefulRestart(v) => {
                for f in v {
                    out.put_u16(f.family.afi);
                    out.put_u8(f.family.safi);
                    out.put_u8(f.flags);
                    out.put_u8((f.stale_time >> 16) as u8);
                    out.put_u16(f.stale_time as u16);
                }
            }
            Self::Fqdn { hostname, domain } => {
                out.put_u8(hostname.len() as u8);
                out.put_slice(hostname);
                out.put_u8(domain.len() as u8);
                out.put_slice(domain);
            }
            Self::Unknown { value, .. } => out.put_slice(value),
        }
    }

    pub fn value_len(&self) -> usize {
        match self {
            Self::Multiprotocol(_) => 4,
            Self::RouteRefresh | Self::EnhancedRouteRefresh | Self::ExtendedMessage => 0,
            Self::ExtendedNextHop(v) => 6 * v.len(),
            Self::GracefulRestart(gr) => 2 + 4 * gr.families.len(),
            Self::FourOctetAs(_) => 4,
            Self::AddPath(v) => 4 * v.len(),
            Self::LongLivedGracefulRestart(v) => 7 * v.len(),
            Self::Fqdn { hostname, domain } => 2 + hostname.len() + domain.len(),
            Self::Unknown { value, .. } => value.len(),
        }
    }
}
