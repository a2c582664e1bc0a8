//! COMMUNITIES (RFC 1997), EXTENDED COMMUNITIES (RFC 4360), IPv6
//! address-specific extended communities (RFC 5701) and LARGE_COMMUNITY
//! (RFC 8092).

use std::fmt;

/// RFC 1997 well-known communities.
pub const NO_EXPORT: u32 = 0xFFFF_FF01;
pub const NO_ADVERTISE: u32 = 0xFFFF_FF02;
pub const NO_EXPORT_SUBCONFED: u32 = 0xFFFF_FF03;
/// RFC 8326.
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;
/// RFC 9494 §4.
pub const LLGR_STALE: u32 = 0xFFFF_0006;
pub const NO_LLGR: u32 = 0xFFFF_0007;
/// RFC 7999.
pub const BLACKHOLE: u32 = 0xFFFF_029A;

/// A standard community `ASN:VALUE`, as a 32-bit value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    pub fn new(asn: u16, value: u16) -> Self {
        Self((asn as u32) << 16 | value as u32)
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid community {0:?}: expected ASN:VALUE with both parts 0..=65535, or a well-known name"
)]
pub struct CommunityParseError(pub String);

impl std::str::FromStr for Community {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no-export" => return Ok(Self(NO_EXPORT)),
            "no-advertise" => return Ok(Self(NO_ADVERTISE)),
            "no-export-subconfed" | "local-as" => return Ok(Self(NO_EXPORT_SUBCONFED)),
            "graceful-shutdown" => return Ok(Self(GRACEFUL_SHUTDOWN)),
            "blackhole" => return Ok(Self(BLACKHOLE)),
            _ => {}
        }
        let err = || CommunityParseError(s.to_string());
        let (a, v) = s.split_once(':').ok_or_else(err)?;
        Ok(Self::new(
            a.parse().map_err(|_| err())?,
            v.parse().map_err(|_| err())?,
        ))
    }
}

/// An 8-octet extended community (RFC 4360 §2), kept as its wire value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtCommunity(pub [u8; 8]);

impl ExtCommunity {
    /// The type octet's transitive bit is 0 for transitive (RFC 4360 §2).
    pub fn is_transitive(&self) -> bool {
        self.0[0] & 0x40 == 0
    }
}

impl fmt::Display for ExtCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.0;
        let kind = match v[1] {
            2 => "rt",
            3 => "soo",
            _ => "",
        };
        match (v[0] & 0x3f, kind) {
            // Two-octet AS specific (RFC 4360 §3.1).
            (0x00, k) if !k.is_empty() => {
                write!(
                    f,
                    "{k} {}:{}",
                    u16::from_be_bytes([v[2], v[3]]),
                    u32::from_be_bytes([v[4], v[5], v[6], v[7]])
                )
            }
            // IPv4 address specific (RFC 4360 §3.2).
            (0x01, k) if !k.is_empty() => {
                write!(
                    f,
                    "{k} {}.{}.{}.{}:{}",
                    v[2],
                    v[3],
                    v[4],
                    v[5],
                    u16::from_be_bytes([v[6], v[7]])
                )
            }
            // Four-octet AS specific (RFC 5668).
            (0x02, k) if !k.is_empty() => {
                write!(
                    f,
                    "{k} {}:{}",
                    u32::from_be_bytes([v[2], v[3], v[4], v[5]]),
                    u16::from_be_bytes([v[6], v[7]])
                )
            }
            _ => {
                write!(f, "0x")?;
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// A 20-octet IPv6 address specific extended community (RFC 5701 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6ExtCommunity(pub [u8; 20]);

/// A large community `GLOBAL:LOCAL1:LOCAL2` (RFC 8092 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.local1, self.local2)
    }
}

impl std::str::FromStr for LargeCommunity {
    type Err = CommunityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CommunityParseError(s.to_string());
        let mut it = s.split(':').map(|p| p.parse::<u32>().map_err(|_| err()));
        let (Some(g), Some(l1), Some(l2), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(err());
        };
        Ok(Self {
            global: g?,
            local1: l1?,
            local2: l2?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let c: Community = "64512:100".parse().unwrap();
        assert_eq!(c.to_string(), "64512:100");
        assert_eq!("no-export".parse::<Community>().unwrap().0, NO_EXPORT);
        assert!("70000:1".parse::<Community>().is_err());
        let l: LargeCommunity = "4200000000:1:2".parse().unwrap();
        assert_eq!(l.to_string(), "4200000000:1:2");
        assert!("1:2".parse::<LargeCommunity>().is_err());
        let rt = ExtCommunity([0, 2, 0xfd, 0xe8, 0, 0, 0, 100]);
        assert_eq!(rt.to_string(), "rt 65000:100");
    }
}
