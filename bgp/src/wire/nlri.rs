//! NLRI (RFC 4271 §4.3): prefixes as (length, significant octets), with the
//! path identifier of RFC 7911 §3 when ADD-PATH is negotiated.
//!
//! Received NLRI stay a slice of the message buffer ([`Nlri`]); they are
//! validated once at decode time (RFC 7606 §5.3) and walked by iterators
//! afterwards, so a million prefixes cost no allocation until the RIB wants
//! them.

use super::family::{Family, AFI_IPV4, AFI_IPV6};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 prefix with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prefix {
    V4 { addr: Ipv4Addr, len: u8 },
    V6 { addr: Ipv6Addr, len: u8 },
}

impl Prefix {
    /// A prefix from an address and length; host bits are cleared. `None`
    /// when the length exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Some(Prefix::V4 {
                    addr: Ipv4Addr::from(u32::from(a) & mask),
                    len,
                })
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                Some(Prefix::V6 {
                    addr: Ipv6Addr::from(u128::from(a) & mask),
                    len,
                })
            }
            _ => None,
        }
    }

    pub fn len(&self) -> u8 {
        match self {
            Prefix::V4 { len, .. } | Prefix::V6 { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            Prefix::V4 { addr, .. } => IpAddr::V4(*addr),
            Prefix::V6 { addr, .. } => IpAddr::V6(*addr),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            Prefix::V4 { .. } => Family::IPV4_UNICAST,
            Prefix::V6 { .. } => Family::IPV6_UNICAST,
        }
    }

    /// Whether `other` lies within this prefix (or equals it).
    pub fn contains(&self, other: &Prefix) -> bool {
        match (self, other) {
            (Prefix::V4 { addr: a, len: l }, Prefix::V4 { addr: b, len: m }) => {
                m >= l && Prefix::new(IpAddr::V4(*b), *l) == Some(Prefix::V4 { addr: *a, len: *l })
            }
            (Prefix::V6 { addr: a, len: l }, Prefix::V6 { addr: b, len: m }) => {
                m >= l && Prefix::new(IpAddr::V6(*b), *l) == Some(Prefix::V6 { addr: *a, len: *l })
            }
            _ => false,
        }
    }

    /// Octets on the wire: the length octet plus the significant octets.
    pub fn wire_len(&self) -> usize {
        1 + (self.len() as usize).div_ceil(8)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let n = (self.len() as usize).div_ceil(8);
        out.put_u8(self.len());
        match self {
            Prefix::V4 { addr, .. } => out.put_slice(&addr.octets()[..n]),
            Prefix::V6 { addr, .. } => out.put_slice(&addr.octets()[..n]),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4 { addr, len } => write!(f, "{addr}/{len}"),
            Prefix::V6 { addr, len } => write!(f, "{addr}/{len}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixParseError {
    #[error("expected ADDRESS/LENGTH")]
    MissingSlash,
    #[error("invalid address: {0}")]
    Address(String),
    #[error("invalid prefix length: {0}")]
    Length(String),
}

impl FromStr for Prefix {
    type Err = PrefixParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s.split_once('/').ok_or(PrefixParseError::MissingSlash)?;
        let addr = IpAddr::from_str(a).map_err(|_| PrefixParseError::Address(a.to_string()))?;
        let len = u8::from_str(l).map_err(|_| PrefixParseError::Length(l.to_string()))?;
        Prefix::new(addr, len).ok_or_else(|| PrefixParseError::Length(l.to_string()))
    }
}

/// One NLRI entry: a prefix and, under ADD-PATH, its path identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NlriEntry {
    pub path_id: Option<u32>,
    pub prefix: Prefix,
}

/// Why an NLRI field failed validation (RFC 7606 §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NlriError {
    #[error("prefix length {0} exceeds the address family's width")]
    LengthTooLong(u8),
    #[error("NLRI truncated at octet {0}")]
    Truncated(usize),
}

/// A run of NLRI of one family, as received or as built for sending.
#[derive(Clone, PartialEq, Eq)]
pub struct Nlri {
    family: Family,
    add_path: bool,
    raw: Bytes,
}

impl fmt::Debug for Nlri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        if self.family.is_unicast_ip() {
            for e in self.iter() {
                l.entry(&format_args!(
                    "{}{}",
                    e.prefix,
                    e.path_id.map(|p| format!(" id {p}")).unwrap_or_default()
                ));
            }
        } else {
            l.entry(&format_args!(
                "{} raw {} octets",
                self.family,
                self.raw.len()
            ));
        }
        l.finish()
    }
}

impl Nlri {
    pub fn empty(family: Family) -> Self {
        Self {
            family,
            add_path: false,
            raw: Bytes::new(),
        }
    }

    /// Validates `raw` as NLRI of `family` (RFC 7606 §5.3 checks: every
    /// length within the family's width, no entry running past the end).
    /// Families other than IPv4/IPv6 unicast and multicast are kept opaque.
    pub fn parse(family: Family, add_path: bool, raw: Bytes) -> Result<Self, NlriError> {
        if let Some(max) = ip_width(family) {
            validate(&raw, add_path, max)?;
        }
        Ok(Self {
            family,
            add_path,
            raw,
        })
    }

    /// Builds NLRI from entries (path ids are written when `add_path`).
    pub fn from_entries<'a>(
        family: Family,
        add_path: bool,
        entries: impl IntoIterator<Item = &'a NlriEntry>,
    ) -> Self {
        let entries = entries.into_iter();
        // Room for IPv4 /24s (the common case) without regrowing.
        let per = if add_path { 8 } else { 4 };
        let mut b = BytesMut::with_capacity(entries.size_hint().0 * per);
        for e in entries {
            if add_path {
                b.put_u32(e.path_id.unwrap_or(0));
            }
            e.prefix.encode(&mut b);
        }
        Self {
            family,
            add_path,
            raw: b.freeze(),
        }
    }

    pub fn from_prefixes(family: Family, prefixes: &[Prefix]) -> Self {
        let mut b = BytesMut::with_capacity(prefixes.iter().map(Prefix::wire_len).sum());
        for p in prefixes {
            p.encode(&mut b);
        }
        Self {
            family,
            add_path: false,
            raw: b.freeze(),
        }
    }

    /// Opaque NLRI of a family petrel does not decode.
    pub fn opaque(family: Family, raw: Bytes) -> Self {
        Self {
            family,
            add_path: false,
            raw,
        }
    }

    pub fn family(&self) -> Family {
        self.family
    }
    pub fn add_path(&self) -> bool {
        self.add_path
    }
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Whether entries can be iterated as IP prefixes.
    pub fn is_ip(&self) -> bool {
        ip_width(self.family).is_some()
    }

    /// Iterates the entries. Only meaningful for IP families (`is_ip`); for
    /// opaque NLRI it yields nothing.
    pub fn iter(&self) -> NlriIter<'_> {
        NlriIter {
            buf: if self.is_ip() { &self.raw } else { &[] },
            v6: self.family.afi == AFI_IPV6,
            add_path: self.add_path,
        }
    }

    pub fn count(&self) -> usize {
        self.iter().count()
    }
}

fn ip_width(family: Family) -> Option<u8> {
    // Unicast (1) and multicast (2) NLRI are plain prefixes (RFC 4760 §5).
    if family.safi != 1 && family.safi != 2 {
        return None;
    }
    match family.afi {
        AFI_IPV4 => Some(32),
        AFI_IPV6 => Some(128),
        _ => None,
    }
}

fn validate(raw: &[u8], add_path: bool, max: u8) -> Result<(), NlriError> {
    let mut p = 0;
    let step = if add_path { 4 } else { 0 };
    while p < raw.len() {
        p += step;
        let Some(&len) = raw.get(p) else {
            return Err(NlriError::Truncated(p));
        };
        if len > max {
            return Err(NlriError::LengthTooLong(len));
        }
        p += 1 + (len as usize).div_ceil(8);
        if p > raw.len() {
            return Err(NlriError::Truncated(raw.len()));
        }
    }
    Ok(())
}

#[derive(Default)]
pub struct NlriIter<'a> {
    buf: &'a [u8],
    v6: bool,
    add_path: bool,
}

impl Iterator for NlriIter<'_> {
    type Item = NlriEntry;

    #[inline]
    fn next(&mut self) -> Option<NlriEntry> {
        let mut b = self.buf;
        if b.is_empty() {
            return None;
        }
        let path_id = if self.add_path {
            let id = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
            b = &b[4..];
            Some(id)
        } else {
            None
        };
        let len = *b.first()?;
        let n = (len as usize).div_ceil(8);
        let octets = b.get(1..1 + n)?;
        self.buf = &b[1 + n..];
        // RFC 4271 §4.3: "the value of trailing bits is irrelevant": a
        // prefix with bits set past its length (11.13.0.0/13) is accepted
        // and masked (11.8.0.0/13), from a live peer as from a dump.
        // Octets are shifted in rather than copied into an array: a
        // variable-length copy is a memcpy call per prefix.
        let prefix = if self.v6 {
            let a = octets
                .iter()
                .take(16)
                .enumerate()
                .fold(0u128, |a, (i, &o)| a | u128::from(o) << (120 - 8 * i));
            let len = len.min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            Prefix::V6 {
                addr: Ipv6Addr::from(a & mask),
                len,
            }
        } else {
            let a = octets
                .iter()
                .take(4)
                .enumerate()
                .fold(0u32, |a, (i, &o)| a | u32::from(o) << (24 - 8 * i));
            // As `Prefix::new`, without the dispatch on an `IpAddr`.
            let len = len.min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Prefix::V4 {
                addr: Ipv4Addr::from(a & mask),
                len,
            }
        };
        Some(NlriEntry { path_id, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_iterate_v4() {
        // 10.0.0.0/8, 192.168.1.0/24, 0.0.0.0/0
        let raw = Bytes::from_static(&[8, 10, 24, 192, 168, 1, 0]);
        let n = Nlri::parse(Family::IPV4_UNICAST, false, raw).unwrap();
        let v: Vec<String> = n.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(v, ["10.0.0.0/8", "192.168.1.0/24", "0.0.0.0/0"]);
    }

    /// RFC 4271 §4.3: trailing bits are irrelevant: announced and
    /// withdrawn prefixes with bits past their length are kept, masked.
    #[test]
    fn bits_past_the_prefix_length_are_masked() {
        // 11.13.0.0/13, 10.1.3.0/23, 0.0.0.0/1 written as 127.0.0.0/1
        let raw = Bytes::from_static(&[13, 11, 13, 23, 10, 1, 3, 1, 127]);
        let n = Nlri::parse(Family::IPV4_UNICAST, false, raw).unwrap();
        let v: Vec<String> = n.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(v, ["11.8.0.0/13", "10.1.2.0/23", "0.0.0.0/1"]);
        // 2001:db8:1:ff00::/52
        let raw = Bytes::from_static(&[52, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0xff]);
        let n = Nlri::parse(Family::IPV6_UNICAST, false, raw).unwrap();
        let v: Vec<String> = n.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(v, ["2001:db8:1:f000::/52"]);
    }

    #[test]
    fn rejects_overlong_and_truncated() {
        assert_eq!(
            Nlri::parse(
                Family::IPV4_UNICAST,
                false,
                Bytes::from_static(&[33, 1, 2, 3, 4, 5])
            ),
            Err(NlriError::LengthTooLong(33))
        );
        assert!(matches!(
            Nlri::parse(
                Family::IPV4_UNICAST,
                false,
                Bytes::from_static(&[24, 10, 0])
            ),
            Err(NlriError::Truncated(_))
        ));
        assert!(Nlri::parse(Family::IPV6_UNICAST, false, Bytes::from_static(&[129])).is_err());
    }

    #[test]
    fn add_path_ids() {
        let raw = Bytes::from_static(&[0, 0, 0, 7, 16, 10, 1]);
        let n = Nlri::parse(Family::IPV4_UNICAST, true, raw).unwrap();
        let e: Vec<_> = n.iter().collect();
        assert_eq!(
            e,
            [NlriEntry {
                path_id: Some(7),
                prefix: "10.1.0.0/16".parse().unwrap()
            }]
        );
        assert!(Nlri::parse(Family::IPV4_UNICAST, true, Bytes::from_static(&[0, 0, 7])).is_err());
    }

    #[test]
    fn host_bits_are_cleared() {
        let p: Prefix = "10.1.2.3/8".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        let q: Prefix = "2001:db8::1/32".parse().unwrap();
        assert_eq!(q.to_string(), "2001:db8::/32");
        assert!(p.contains(&"10.9.0.0/16".parse().unwrap()));
        assert!(!p.contains(&"11.0.0.0/16".parse().unwrap()));
    }
}
