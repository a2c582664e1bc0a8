//! `bfd = { ... }`: BFD settings of a peer or of the mesh.

use super::BfdAuth;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// BFD for a peer (RFC 5880, RFC 5882): `bfd = { min_rx_ms = 300,
/// min_tx_ms = 300, multiplier = 3 }`; fields left out take those values,
/// and `auth` (see [`BfdAuth`]) is off unless given.
/// The same form is stored in datastore peer records and the cluster's
/// BGP configuration (for the node mesh).
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

    /// [`Bfd::validate`], then reads the authentication key from its file:
    /// what every configured peer goes through before it reaches the
    /// speaker, so [`Bfd::settings`] finds the key loaded.
    pub fn load(&mut self) -> Result<(), (&'static str, String)> {
        self.validate()?;
        match &mut self.auth {
            Some(a) => a.load(),
            None => Ok(()),
        }
    }

    /// The speaker's settings. An `auth` whose key was not [`Bfd::load`]ed
    /// runs without authentication, which the peer refuses (it expects the
    /// A bit): a misuse shows as a session that never comes Up, not as a
    /// silently unprotected one.
    pub fn settings(&self) -> petrel_bgp::speaker::BfdSettings {
        petrel_bgp::speaker::BfdSettings {
            min_rx: Duration::from_millis(self.min_rx_ms as u64),
            min_tx: Duration::from_millis(self.min_tx_ms as u64),
            multiplier: self.multiplier,
            multihop: self.multihop,
            auth: self.auth.as_ref().and_then(|a| a.key.clone()),
        }
    }
}
