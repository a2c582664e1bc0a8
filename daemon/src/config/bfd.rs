//! `bfd = { ... }`: BFD settings of a peer or of the mesh.

use super::BfdAuth;
use petrel_bgp::speaker::BfdSettings;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// BFD for a peer (RFC 5880, RFC 5882): `bfd = { min_rx_ms = 300,
/// min_tx_ms = 300, multiplier = 3 }`; fields left out take those values,
/// and `auth` (see [`BfdAuth`]) is off unless given.
/// The same form is stored in datastore peer records and the cluster's
/// BGP configuration (for the node mesh).
///
/// The speaker's [`BfdSettings`] is the other form of the same idea, and
/// both stay: this one is what is written (milliseconds, and a key *file*,
/// so a record in etcd never holds a secret), that one what runs (timers
/// and the key itself), made by [`Bfd::load`] on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bfd {
    /// bfd.RequiredMinRxInterval: the fastest we take the peer's packets.
    pub min_rx_ms: u32,
    /// bfd.DesiredMinTxInterval: the fastest we send (once Up).
    pub min_tx_ms: u32,
    /// bfd.DetectMult: the peer's packets missed before Down.
    pub multiplier: u8,
    /// RFC 5883 multi-hop (UDP 4784) for a peer not on a shared link.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub multihop: bool,
    /// RFC 5880 §6.7: authentication; none: packets without the A bit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<BfdAuth>,
}

impl Default for Bfd {
    fn default() -> Self {
        Self {
            min_rx_ms: 300,
            min_tx_ms: 300,
            multiplier: 3,
            multihop: false,
            auth: None,
        }
    }
}

impl Bfd {
    /// The accepted ranges, as `(field, message)` on error.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [("min_rx_ms", self.min_rx_ms), ("min_tx_ms", self.min_tx_ms)] {
            // Below 10 ms a user-space daemon on a busy node flaps; above a
            // minute BFD detects nothing BGP's hold timer would not.
            if !(10..=60_000).contains(&v) {
                return Err((field, format!("{v} is outside 10..=60000")));
            }
        }
        if self.multiplier == 0 {
            return Err(("multiplier", "must be at least 1".into()));
        }
        if let Some(a) = &self.auth {
            a.validate()?;
        }
        Ok(())
    }

    /// [`Bfd::validate`], then the speaker's settings, with the
    /// authentication key read from its file: what every configured peer
    /// goes through before it reaches the speaker. The key is read here,
    /// on the node, each time the peer is configured.
    pub fn load(&self) -> Result<BfdSettings, (&'static str, String)> {
        self.validate()?;
        Ok(BfdSettings {
            min_rx: Duration::from_millis(self.min_rx_ms as u64),
            min_tx: Duration::from_millis(self.min_tx_ms as u64),
            multiplier: self.multiplier,
            multihop: self.multihop,
            auth: self.auth.as_ref().map(BfdAuth::load).transpose()?,
        })
    }
}
