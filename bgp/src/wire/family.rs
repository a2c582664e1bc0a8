//! Address families (RFC 4760 §3): AFI and SAFI numbers.

use std::fmt;

/// An (AFI, SAFI) pair. Unknown values are kept: capabilities and MP
/// attributes of families petrel does not route are carried, not rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
pub const SAFI_UNICAST: u8 = 1;
pub const SAFI_MULTICAST: u8 = 2;
pub const SAFI_LABELED_UNICAST: u8 = 4;
pub const SAFI_FLOWSPEC: u8 = 133;

impl Family {
    pub const IPV4_UNICAST: Family = Family {
        afi: AFI_IPV4,
        safi: SAFI_UNICAST,
    };
    pub const IPV6_UNICAST: Family = Family {
        afi: AFI_IPV6,
        safi: SAFI_UNICAST,
    };

    pub const fn new(afi: u16, safi: u8) -> Self {
        Self { afi, safi }
    }

    /// The families whose NLRI petrel decodes as plain prefixes.
    pub fn is_unicast_ip(self) -> bool {
        self == Self::IPV4_UNICAST || self == Self::IPV6_UNICAST
    }

    /// Maximum prefix length in bits for the AFI, if it is IP.
    pub fn max_prefix_len(self) -> Option<u8> {
        match self.afi {
            AFI_IPV4 => Some(32),
            AFI_IPV6 => Some(128),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let afi = match self.afi {
            AFI_IPV4 => "ipv4",
            AFI_IPV6 => "ipv6",
            25 => "l2vpn",
            _ => return write!(f, "afi{}-safi{}", self.afi, self.safi),
        };
        let safi = match self.safi {
            SAFI_UNICAST => "unicast",
            SAFI_MULTICAST => "multicast",
            SAFI_LABELED_UNICAST => "labeled-unicast",
            128 => "vpn",
            SAFI_FLOWSPEC => "flowspec",
            70 => "evpn",
            s => return write!(f, "{afi}-safi{s}"),
        };
        write!(f, "{afi}-{safi}")
    }
}
