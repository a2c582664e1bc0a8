//! The sessions of one system and the demultiplexing of received packets
//! to them (RFC 5880 §6.3, §6.8.6; RFC 5881 §4-5; RFC 5883 §3), sans-IO.
//!
//! A session is found by Your Discriminator when it is nonzero, and by the
//! source address (and single- or multi-hop, i.e. the port the packet came
//! to) when it is zero. Sessions exist only by configuration: a packet for
//! no configured session is discarded, never answered with a new session
//! (§6.8.6 leaves the choice to us; a BGP speaker knows its peers).

use super::packet::{ControlPacket, DecodeError};
use super::session::{Discard, Session, SessionConfig};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Which session: the remote system's address and the encapsulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub remote: IpAddr,
    /// RFC 5883 multi-hop (UDP 4784) rather than RFC 5881 single-hop (3784).
    pub multihop: bool,
}

impl PeerKey {
    pub fn single_hop(remote: IpAddr) -> Self {
        Self {
            remote: remote.to_canonical(),
            multihop: false,
        }
    }
    pub fn multihop(remote: IpAddr) -> Self {
        Self {
            remote: remote.to_canonical(),
            multihop: true,
        }
    }
}

/// Why a received datagram reached no session, or the session refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// §6.8.6: "If no session is found, the packet MUST be discarded."
    #[error("no session has discriminator {0:#x}")]
    UnknownDiscriminator(u32),
    #[error("no session with {0}")]
    UnknownPeer(IpAddr),
    /// The discriminator belongs to a session with another system.
    #[error("discriminator {discriminator:#x} belongs to {expected}, not {got}")]
    WrongSource {
        discriminator: u32,
        expected: IpAddr,
        got: IpAddr,
    },
    /// RFC 5881 §5 (single-hop: exactly 255) or a multi-hop session's minimum.
    #[error("TTL {got}, at least {min} required")]
    Ttl { got: u8, min: u8 },
    #[error("{0}")]
    Session(#[from] Discard),
}

struct Entry {
    key: PeerKey,
    session: Session,
    /// The least TTL / Hop Limit accepted.
    min_ttl: u8,
}

pub struct Registry {
    /// By bfd.LocalDiscr.
    sessions: HashMap<u32, Entry>,
    by_peer: HashMap<PeerKey, u32>,
    rng: u64,
}

impl Registry {
    /// `seed` should be random: it picks discriminators (§6.8.1: "SHOULD be
    /// random") and seeds each session's jitter and sequence numbers.
    pub fn new(seed: u64) -> Self {
        Self {
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            rng: seed | 1,
        }
    }

    /// Adds a session; `min_ttl` is ignored for single-hop sessions, which
    /// take only 255 (RFC 5881 §5). Replaces a session with the same key.
    pub fn add(&mut self, key: PeerKey, cfg: SessionConfig, min_ttl: u8, now: Instant) -> u32 {
        self.remove(&key);
        let discr = loop {
            let d = self.next_random() as u32;
            // §6.8.1: bfd.LocalDiscr "MUST be unique across all BFD sessions
            // on this system, and nonzero".
            if d != 0 && !self.sessions.contains_key(&d) {
                break d;
            }
        };
        let seed = self.next_random();
        let min_ttl = if key.multihop { min_ttl } else { 255 };
        self.sessions.insert(
            discr,
            Entry {
                key,
                session: Session::new(cfg, discr, seed, now),
                min_ttl,
            },
        );
        self.by_peer.insert(key, discr);
        discr
    }

    pub fn remove(&mut self, key: &PeerKey) -> Option<Session> {
        let d = self.by_peer.remove(key)?;
        self.sessions.remove(&d).map(|e| e.session)
    }

    pub fn get(&self, key: &PeerKey) -> Option<&Session> {
        self.by_peer
            .get(key)
            .and_then(|d| self.sessions.get(d))
            .map(|e| &e.session)
    }

    pub fn get_mut(&mut self, key: &PeerKey) -> Option<&mut Session> {
        let d = self.by_peer.get(key)?;
        self.sessions.get_mut(d).map(|e| &mut e.session)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerKey, &Session)> {
        self.sessions.values().map(|e| (&e.key, &e.session))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerKey, &mut Session)> {
        self.sessions.values_mut().map(|e| (&e.key, &mut e.session))
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Hands a received datagram to its session. `multihop` says which port
    /// it came to; `ttl` is the received TTL / Hop Limit. Returns the
    /// session's key, for the driver to flush that session's output.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: IpAddr,
        multihop: bool,
        ttl: u8,
        bytes: &[u8],
    ) -> Result<PeerKey, RxError> {
        let from = from.to_canonical();
        let p = ControlPacket::decode(bytes)?;
        let discr = if p.your_discriminator != 0 {
            // §6.8.6: "If the Your Discriminator field is nonzero, it MUST be
            // used to select the session with which this BFD packet is
            // associated."
            let d = p.your_discriminator;
            let e = self
                .sessions
                .get(&d)
                .ok_or(RxError::UnknownDiscriminator(d))?;
            // Not a rule of the RFC: a session is with one system, and a
            // guessed discriminator from elsewhere should not reach it.
            if e.key.remote != from || e.key.multihop != multihop {
                return Err(RxError::WrongSource {
                    discriminator: d,
                    expected: e.key.remote,
                    got: from,
                });
            }
            d
        } else {
            // §6.8.6: "If the Your Discriminator field is zero, the session
            // MUST be selected based on some combination of other fields,
            // possibly including source addressing information"; RFC 5881 §4:
            // "associated with the session bound to the remote system".
            *self
                .by_peer
                .get(&PeerKey {
                    remote: from,
                    multihop,
                })
                .ok_or(RxError::UnknownPeer(from))?
        };
        let e = self.sessions.get_mut(&discr).expect("indexed");
        // RFC 5881 §5: "All received BFD Control packets that are
        // demultiplexed to the session MUST be discarded if the received TTL
        // or Hop Limit is not equal to 255." RFC 5883 §5 leaves multi-hop to
        // a configured minimum. Checked before any hash is computed.
        if ttl < e.min_ttl {
            return Err(RxError::Ttl {
                got: ttl,
                min: e.min_ttl,
            });
        }
        e.session.handle_control(now, &p, bytes)?;
        Ok(e.key)
    }

    /// The earliest deadline of any session.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|e| e.session.poll_timeout())
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for e in self.sessions.values_mut() {
            if e.session.poll_timeout().is_some_and(|t| t <= now) {
                e.session.handle_timeout(now);
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        let s = &mut self.rng;
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bfd::packet::{Diag, State};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn cfg() -> SessionConfig {
        SessionConfig::new(Duration::from_millis(300), Duration::from_millis(300), 3)
    }

    fn packet(state: State, my: u32, your: u32) -> Vec<u8> {
        ControlPacket {
            diag: Diag::NoDiagnostic,
            state,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: my,
            your_discriminator: your,
            desired_min_tx: 1_000_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
            auth: None,
        }
        .encode()
    }

    #[test]
    fn discriminators_are_unique_and_nonzero() {
        let mut r = Registry::new(0);
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            let d = r.add(PeerKey::single_hop(ip), cfg(), 255, now);
            assert!(d != 0 && seen.insert(d));
        }
        assert_eq!(r.len(), 1000);
    }

    #[test]
    fn zero_your_discriminator_selects_by_source_address() {
        let now = Instant::now();
        let mut r = Registry::new(1);
        r.add(PeerKey::single_hop(A), cfg(), 255, now);
        let db = r.add(PeerKey::single_hop(B), cfg(), 255, now);
        let k = r
            .handle_datagram(now, B, false, 255, &packet(State::Down, 77, 0))
            .unwrap();
        assert_eq!(k, PeerKey::single_hop(B));
        let s = r.get(&k).unwrap();
        assert_eq!((s.state(), s.local_discriminator()), (State::Init, db));
        assert_eq!(r.get(&PeerKey::single_hop(A)).unwrap().state(), State::Down);
        // A v4-mapped source is the same system.
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(
            r.handle_datagram(now, mapped, false, 255, &packet(State::Down, 78, 0)),
            Ok(PeerKey::single_hop(A))
        );
        // No session with that system: discarded, no session created.
        let c = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));
        assert_eq!(
            r.handle_datagram(now, c, false, 255, &packet(State::Down, 79, 0)),
            Err(RxError::UnknownPeer(c))
        );
        // Multi-hop packets do not reach a single-hop session.
        assert_eq!(
            r.handle_datagram(now, A, true, 255, &packet(State::Down, 78, 0)),
            Err(RxError::UnknownPeer(A))
        );
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn nonzero_your_discriminator_selects_the_session() {
        // §6.8.6: "If the Your Discriminator field is nonzero, it MUST be used
        // to select the session ... If no session is found, the packet MUST
        // be discarded."
        let now = Instant::now();
        let mut r = Registry::new(2);
        let da = r.add(PeerKey::single_hop(A), cfg(), 255, now);
        assert_eq!(
            r.handle_datagram(now, A, false, 255, &packet(State::Init, 5, da)),
            Ok(PeerKey::single_hop(A))
        );
        assert_eq!(r.get(&PeerKey::single_hop(A)).unwrap().state(), State::Up);
        let wrong = da.wrapping_add(1);
        assert_eq!(
            r.handle_datagram(now, A, false, 255, &packet(State::Up, 5, wrong)),
            Err(RxError::UnknownDiscriminator(wrong))
        );
        assert_eq!(
            r.handle_datagram(now, B, false, 255, &packet(State::Up, 5, da)),
            Err(RxError::WrongSource {
                discriminator: da,
                expected: A,
                got: B
            })
        );
    }

    #[test]
    fn single_hop_takes_only_ttl_255() {
        // RFC 5881 §5: "MUST be discarded if the received TTL or Hop Limit is
        // not equal to 255".
        let now = Instant::now();
        let mut r = Registry::new(3);
        r.add(PeerKey::single_hop(A), cfg(), 1, now);
        assert_eq!(
            r.handle_datagram(now, A, false, 254, &packet(State::Down, 5, 0)),
            Err(RxError::Ttl { got: 254, min: 255 })
        );
        assert_eq!(r.get(&PeerKey::single_hop(A)).unwrap().state(), State::Down);
        // Multi-hop takes what its configured minimum allows.
        r.add(PeerKey::multihop(B), cfg(), 250, now);
        assert!(r
            .handle_datagram(now, B, true, 251, &packet(State::Down, 6, 0))
            .is_ok());
        assert_eq!(
            r.handle_datagram(now, B, true, 249, &packet(State::Down, 6, 0)),
            Err(RxError::Ttl { got: 249, min: 250 })
        );
    }

    #[test]
    fn a_packet_failing_the_session_rules_is_reported_as_such() {
        let now = Instant::now();
        let mut r = Registry::new(4);
        r.add(PeerKey::single_hop(A), cfg(), 255, now);
        assert_eq!(
            r.handle_datagram(now, A, false, 255, &packet(State::Up, 5, 0)),
            Err(RxError::Session(Discard::ZeroYourDiscriminator(State::Up)))
        );
        assert_eq!(
            r.handle_datagram(now, A, false, 255, &[0x20, 0, 3, 24]),
            Err(RxError::Decode(DecodeError::LengthBeyondPayload {
                length: 24,
                payload: 4
            }))
        );
    }

    #[test]
    fn timeouts_reach_only_due_sessions() {
        let now = Instant::now();
        let mut r = Registry::new(5);
        r.add(PeerKey::single_hop(A), cfg(), 255, now);
        r.add(PeerKey::single_hop(B), cfg(), 255, now);
        let da = r
            .get(&PeerKey::single_hop(A))
            .unwrap()
            .local_discriminator();
        r.handle_datagram(now, A, false, 255, &packet(State::Init, 5, da))
            .unwrap();
        assert!(r.poll_timeout().unwrap() <= now);
        for (_, s) in r.iter_mut() {
            while s.poll_transmit(now).is_some() {}
        }
        r.handle_timeout(now + Duration::from_secs(3));
        let a = r.get(&PeerKey::single_hop(A)).unwrap();
        assert_eq!(
            (a.state(), a.local_diag()),
            (State::Down, Diag::ControlDetectionTimeExpired)
        );
    }
}
