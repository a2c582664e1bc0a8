//! The per-session codec context (RustyBGP's `PeerCodec` idea).
//!
//! What a message means on the wire depends on what the two speakers
//! negotiated in their OPENs: AS numbers are 2 or 4 octets (RFC 6793),
//! NLRI carry path identifiers per family and direction (RFC 7911), and the
//! largest message is 4096 or 65535 octets (RFC 8654). The session builds one
//! [`CodecContext`] when it reaches Established and passes it to every decode
//! and encode, so no decision below depends on hidden state.

use super::capability::{AddPathMode, Capability};
use super::family::Family;

/// RFC 4271 §4.1: the maximum message size without RFC 8654.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 8654 §4: the maximum size once extended messages are negotiated.
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// Per-family ADD-PATH state for one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddPathFamilies(Vec<Family>);

impl AddPathFamilies {
    pub fn contains(&self, family: Family) -> bool {
        self.0.contains(&family)
    }
    pub fn insert(&mut self, family: Family) {
        if !self.contains(family) {
            self.0.push(family);
        }
    }
    pub fn families(&self) -> &[Family] {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecContext {
    /// RFC 6793: both sides advertised the 4-octet AS capability.
    pub four_octet_as: bool,
    /// Families in which received NLRI carry a path identifier (RFC 7911 §3).
    pub add_path_rx: AddPathFamilies,
    /// Families in which sent NLRI carry a path identifier.
    pub add_path_tx: AddPathFamilies,
    /// The largest message either side may send (RFC 8654 §4).
    pub max_message_len: usize,
}

impl Default for CodecContext {
    /// The context before OPENs are exchanged: RFC 4271 only.
    fn default() -> Self {
        Self {
            four_octet_as: false,
            add_path_rx: AddPathFamilies::default(),
            add_path_tx: AddPathFamilies::default(),
            max_message_len: MAX_MESSAGE_LEN,
        }
    }
}

impl CodecContext {
    /// A context for modern peers: 4-octet AS, no ADD-PATH, 4096-octet messages.
    pub fn four_octet() -> Self {
        Self {
            four_octet_as: true,
            ..Self::default()
        }
    }

    /// Builds the session's context from the capabilities each side sent.
    pub fn negotiate(local: &[Capability], remote: &[Capability]) -> Self {
        let has = |caps: &[Capability], f: fn(&Capability) -> bool| caps.iter().any(f);
        let four_octet_as = has(local, |c| matches!(c, Capability::FourOctetAs(_)))
            && has(remote, |c| matches!(c, Capability::FourOctetAs(_)));
        let extended = has(local, |c| matches!(c, Capability::ExtendedMessage))
            && has(remote, |c| matches!(c, Capability::ExtendedMessage));
        let mut ctx = Self {
            four_octet_as,
            max_message_len: if extended {
                MAX_EXTENDED_MESSAGE_LEN
            } else {
                MAX_MESSAGE_LEN
            },
            ..Self::default()
        };
        let add_path = |caps: &[Capability]| -> Vec<(Family, AddPathMode)> {
            caps.iter()
                .filter_map(|c| match c {
                    // RFC 7911 §4: a Send/Receive value other than 1..=3
                    // makes the whole capability "not understood": ignored.
                    Capability::AddPath(v)
                        if v.iter().any(|(_, m)| matches!(m, AddPathMode::Other(_))) =>
                    {
                        None
                    }
                    Capability::AddPath(v) => Some(v.clone()),
                    _ => None,
                })
                .flatten()
                .collect()
        };
        let (l, r) = (add_path(local), add_path(remote));
        // RFC 7911 §5: we receive path ids for a family when we said "receive"
        // and the peer said "send"; we send them in the mirror case.
        for (family, mode) in &l {
            let peer = r.iter().find(|(f, _)| f == family).map(|(_, m)| *m);
            if let Some(peer) = peer {
                if mode.receive() && peer.send() {
                    ctx.add_path_rx.insert(*family);
                }
                if mode.send() && peer.receive() {
                    ctx.add_path_tx.insert(*family);
                }
            }
        }
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: Family = Family::IPV4_UNICAST;
    const V6: Family = Family::IPV6_UNICAST;

    fn caps(v: &[(Family, AddPathMode)]) -> Vec<Capability> {
        vec![
            Capability::FourOctetAs(65000),
            Capability::AddPath(v.to_vec()),
        ]
    }

    #[test]
    fn add_path_is_negotiated_per_family_and_direction() {
        use AddPathMode::*;
        // RFC 7911 §5: we send path ids where we said Send and the peer
        // Receive; we receive them where we said Receive and the peer Send.
        let local = caps(&[(V4, Both), (V6, Send)]);
        let remote = caps(&[(V4, Receive), (V6, Send)]);
        let ctx = CodecContext::negotiate(&local, &remote);
        assert_eq!(ctx.add_path_tx.families(), [V4]);
        assert!(ctx.add_path_rx.families().is_empty());
        // The other side's view is the mirror image.
        let theirs = CodecContext::negotiate(&remote, &local);
        assert_eq!(theirs.add_path_rx.families(), [V4]);
        assert!(theirs.add_path_tx.families().is_empty());

        let ctx = CodecContext::negotiate(&caps(&[(V4, Both)]), &caps(&[(V4, Both)]));
        assert_eq!(
            (ctx.add_path_tx.families(), ctx.add_path_rx.families()),
            ([V4].as_slice(), [V4].as_slice())
        );
        // A family only one side names: nothing.
        let ctx = CodecContext::negotiate(&caps(&[(V6, Both)]), &caps(&[(V4, Both)]));
        assert!(ctx.add_path_tx.families().is_empty() && ctx.add_path_rx.families().is_empty());
        // No capability from the peer: nothing.
        let ctx = CodecContext::negotiate(&caps(&[(V4, Both)]), &[Capability::FourOctetAs(1)]);
        assert_eq!(ctx.add_path_tx, AddPathFamilies::default());
    }

    #[test]
    fn a_capability_with_an_unknown_send_receive_value_is_ignored_whole() {
        use AddPathMode::*;
        // RFC 7911 §4: "treated as not understood and ignored", all of it,
        // not only the tuple with the odd value.
        let remote = caps(&[(V4, Receive), (V6, Other(7))]);
        let ctx = CodecContext::negotiate(&caps(&[(V4, Both), (V6, Both)]), &remote);
        assert!(ctx.add_path_tx.families().is_empty());
    }
}
