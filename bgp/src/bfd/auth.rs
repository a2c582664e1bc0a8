//! BFD authentication (RFC 5880 §6.7): simple password (§6.7.2), keyed SHA1
//! and meticulous keyed SHA1 (§6.7.4).
//!
//! [`Auth`] holds one session's authentication variables (§6.8.1
//! bfd.AuthType, bfd.RcvAuthSeq, bfd.XmitAuthSeq, bfd.AuthSeqKnown) and one
//! key. Keyed MD5 (§6.7.3) is decoded by the codec but not offered: SHA1 is
//! what FRR and BIRD both speak, and MD5 would cost a dependency for nothing.
//! The SHA1 itself is ring's, which petreld already links.

use super::packet::{AuthSection, AuthType, ControlPacket, MIN_LEN};
use std::fmt;

/// The authentication types a session can be configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthKind {
    SimplePassword,
    KeyedSha1,
    MeticulousKeyedSha1,
}

impl AuthKind {
    pub fn auth_type(self) -> AuthType {
        match self {
            AuthKind::SimplePassword => AuthType::SimplePassword,
            AuthKind::KeyedSha1 => AuthType::KeyedSha1,
            AuthKind::MeticulousKeyedSha1 => AuthType::MeticulousKeyedSha1,
        }
    }
}

/// A configured key. Its secret never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    pub kind: AuthKind,
    pub key_id: u8,
    pub secret: Vec<u8>,
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKey")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a simple password is 1 to 16 octets (RFC 5880 §4.2), this one {0}")]
    PasswordLength(usize),
    #[error("a SHA1 key is 1 to 20 octets (RFC 5880 §4.4), this one {0}")]
    Sha1KeyLength(usize),
}

impl AuthKey {
    pub fn new(kind: AuthKind, key_id: u8, secret: Vec<u8>) -> Result<Self, KeyError> {
        match kind {
            AuthKind::SimplePassword if !(1..=16).contains(&secret.len()) => {
                Err(KeyError::PasswordLength(secret.len()))
            }
            AuthKind::KeyedSha1 | AuthKind::MeticulousKeyedSha1
                if !(1..=20).contains(&secret.len()) =>
            {
                Err(KeyError::Sha1KeyLength(secret.len()))
            }
            _ => Ok(Self {
                kind,
                key_id,
                secret,
            }),
        }
    }

    /// §4.4: "the shared SHA1 key is stored in this field, padded to a
    /// length of 20 bytes with trailing zero bytes".
    fn padded(&self) -> [u8; 20] {
        let mut k = [0u8; 20];
        let n = self.secret.len().min(20);
        k[..n].copy_from_slice(&self.secret[..n]);
        k
    }
}

/// Why an authenticated packet was discarded (§6.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Auth Type {got:?}, the session uses {expected:?}")]
    TypeMismatch { expected: AuthType, got: AuthType },
    #[error("Auth Key ID {got}, the session's key is {expected}")]
    UnknownKeyId { expected: u8, got: u8 },
    #[error("sequence number {got} outside {from}..={to}")]
    Sequence { got: u32, from: u32, to: u32 },
    #[error("the password does not match")]
    Password,
    #[error("the SHA1 hash does not match")]
    Hash,
}

/// One session's authentication state (§6.8.1).
#[derive(Clone, Debug)]
pub struct Auth {
    key: AuthKey,
    /// bfd.XmitAuthSeq.
    xmit_seq: u32,
    /// bfd.RcvAuthSeq, meaningful while `seq_known`.
    rcv_seq: u32,
    /// bfd.AuthSeqKnown.
    seq_known: bool,
}

impl Auth {
    /// §6.8.1: bfd.XmitAuthSeq "MUST be initialized to a random 32-bit value".
    pub fn new(key: AuthKey, random_seq: u32) -> Self {
        Self {
            key,
            xmit_seq: random_seq,
            rcv_seq: 0,
            seq_known: false,
        }
    }

    pub fn key(&self) -> &AuthKey {
        &self.key
    }

    /// §6.8.1: bfd.AuthSeqKnown "MUST be set to zero after no packets have
    /// been received on this session for at least twice the Detection Time".
    pub fn forget_sequence(&mut self) {
        self.seq_known = false;
    }

    pub fn sequence_known(&self) -> bool {
        self.seq_known
    }

    /// Encodes `p` with an Authentication Section for this key.
    pub fn seal(&mut self, p: &mut ControlPacket) -> Vec<u8> {
        let key_id = self.key.key_id;
        match self.key.kind {
            AuthKind::SimplePassword => {
                // §6.7.2: the password travels in the clear.
                p.auth = Some(AuthSection::SimplePassword {
                    key_id,
                    password: self.key.secret.clone(),
                });
                p.encode()
            }
            kind => {
                // §6.7.4: meticulous "MUST be incremented" per packet; keyed "MAY
                // be": we do it for both, which either kind of receiver accepts.
                self.xmit_seq = self.xmit_seq.wrapping_add(1);
                p.auth = Some(AuthSection::Sha1 {
                    meticulous: kind == AuthKind::MeticulousKeyedSha1,
                    key_id,
                    sequence: self.xmit_seq,
                    hash: self.key.padded(),
                });
                let mut b = p.encode();
                // §6.7.4: the hash over the whole packet with the key in the hash field.
                let hash = sha1(&b);
                b[MIN_LEN + 8..MIN_LEN + 28].copy_from_slice(&hash);
                b
            }
        }
    }

    /// Authenticates a received packet (§6.7.2, §6.7.4). `raw` is the packet
    /// as received, at least `p.length()` octets.
    pub fn verify(&mut self, p: &ControlPacket, raw: &[u8]) -> Result<(), AuthError> {
        let expected = self.key.kind.auth_type();
        let section = match &p.auth {
            Some(s) if s.auth_type() == expected => s,
            Some(s) => {
                return Err(AuthError::TypeMismatch {
                    expected,
                    got: s.auth_type(),
                })
            }
            // The session checks the A bit before it calls this.
            None => {
                return Err(AuthError::TypeMismatch {
                    expected,
                    got: AuthType::Other(0),
                })
            }
        };
        match section {
            AuthSection::SimplePassword { key_id, password } => {
                // §6.7.2: "If the Auth Key ID field does not match the ID of a
                // configured password, the received packet MUST be discarded."
                self.check_key_id(*key_id)?;
                // §6.7.2: "If the Password field does not match the password
                // with the given ID, the received packet MUST be discarded."
                if !constant_time_eq(password, &self.key.secret) {
                    return Err(AuthError::Password);
                }
                Ok(())
            }
            AuthSection::Sha1 {
                meticulous,
                key_id,
                sequence,
                hash,
            } => {
                // §6.7.4: "If the Auth Key ID field does not match the ID of a
                // configured authentication key, the received packet MUST be
                // discarded."
                self.check_key_id(*key_id)?;
                if self.seq_known {
                    // §6.7.4: keyed SHA1 accepts bfd.RcvAuthSeq to
                    // bfd.RcvAuthSeq+(3*Detect Mult) inclusive, meticulous
                    // from bfd.RcvAuthSeq+1, in circular arithmetic.
                    let span = 3 * p.detect_mult as u32;
                    let from = self.rcv_seq.wrapping_add(*meticulous as u32);
                    let to = self.rcv_seq.wrapping_add(span);
                    if sequence.wrapping_sub(from) > to.wrapping_sub(from) {
                        return Err(AuthError::Sequence {
                            got: *sequence,
                            from,
                            to,
                        });
                    }
                }
                // §6.7.4: "replace the contents of the Auth Key/Hash field with
                // the authentication key ... calculate SHA1 ... compare".
                let len = p.length();
                let mut buf = [0u8; super::packet::MAX_LEN];
                buf[..len].copy_from_slice(&raw[..len]);
                buf[MIN_LEN + 8..MIN_LEN + 28].copy_from_slice(&self.key.padded());
                if !constant_time_eq(&sha1(&buf[..len]), hash) {
                    return Err(AuthError::Hash);
                }
                // §6.7.4: "the packet MUST be accepted, bfd.RcvAuthSeq MUST be
                // set to the value of the received Sequence Number, and
                // bfd.AuthSeqKnown MUST be set to 1."
                self.rcv_seq = *sequence;
                self.seq_known = true;
                Ok(())
            }
            // Only reached for the types we do not offer, matched above.
            AuthSection::Md5 { .. } | AuthSection::Other { .. } => Err(AuthError::TypeMismatch {
                expected,
                got: section.auth_type(),
            }),
        }
    }

    fn check_key_id(&self, got: u8) -> Result<(), AuthError> {
        if got == self.key.key_id {
            Ok(())
        } else {
            Err(AuthError::UnknownKeyId {
                expected: self.key.key_id,
                got,
            })
        }
    }
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    d.as_ref().try_into().expect("SHA1 is 20 octets")
}

/// Compares without an early exit, so a forger learns nothing from timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::super::packet::{Diag, State};
    use super::*;

    fn packet() -> ControlPacket {
        ControlPacket {
            diag: Diag::NoDiagnostic,
            state: State::Down,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 1,
            your_discriminator: 0,
            desired_min_tx: 1_000_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    fn key(kind: AuthKind) -> AuthKey {
        AuthKey::new(kind, 5, b"petrel".to_vec()).unwrap()
    }

    #[test]
    fn sha1_is_sha1() {
        // RFC 3174 §7.3 test 1.
        assert_eq!(
            sha1(b"abc"),
            [
                0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a, 0xba, 0x3e, 0x25, 0x71, 0x78, 0x50,
                0xc2, 0x6c, 0x9c, 0xd0, 0xd8, 0x9d
            ]
        );
    }

    #[test]
    fn keyed_sha1_hashes_the_packet_with_the_padded_key_in_place() {
        let mut tx = Auth::new(key(AuthKind::KeyedSha1), 41);
        let mut p = packet();
        let b = tx.seal(&mut p);
        assert_eq!(&b[24..32], &[4, 28, 5, 0, 0, 0, 0, 42]);
        // Recompute by hand: the key, zero padded, where the hash goes.
        let mut m = b.clone();
        m[32..52].fill(0);
        m[32..38].copy_from_slice(b"petrel");
        assert_eq!(&b[32..52], &sha1(&m));
        let mut rx = Auth::new(key(AuthKind::KeyedSha1), 0);
        let d = ControlPacket::decode(&b).unwrap();
        assert_eq!(rx.verify(&d, &b), Ok(()));
        assert!(rx.sequence_known());
    }

    #[test]
    fn a_changed_bit_or_another_key_fails_the_hash() {
        let mut tx = Auth::new(key(AuthKind::MeticulousKeyedSha1), 0);
        let b = tx.seal(&mut packet());
        let mut forged = b.clone();
        forged[16] ^= 1; // Required Min RX
        let d = ControlPacket::decode(&forged).unwrap();
        let mut rx = Auth::new(key(AuthKind::MeticulousKeyedSha1), 0);
        assert_eq!(rx.verify(&d, &forged), Err(AuthError::Hash));
        let other = AuthKey::new(AuthKind::MeticulousKeyedSha1, 5, b"other".to_vec()).unwrap();
        let d = ControlPacket::decode(&b).unwrap();
        assert_eq!(Auth::new(other, 0).verify(&d, &b), Err(AuthError::Hash));
        // A failed packet teaches nothing about the sequence.
        assert!(!rx.sequence_known());
    }

    #[test]
    fn key_id_and_type_must_match() {
        let mut tx = Auth::new(key(AuthKind::KeyedSha1), 0);
        let b = tx.seal(&mut packet());
        let d = ControlPacket::decode(&b).unwrap();
        let k9 = AuthKey::new(AuthKind::KeyedSha1, 9, b"petrel".to_vec()).unwrap();
        assert_eq!(
            Auth::new(k9, 0).verify(&d, &b),
            Err(AuthError::UnknownKeyId {
                expected: 9,
                got: 5
            })
        );
        assert_eq!(
            Auth::new(key(AuthKind::MeticulousKeyedSha1), 0).verify(&d, &b),
            Err(AuthError::TypeMismatch {
                expected: AuthType::MeticulousKeyedSha1,
                got: AuthType::KeyedSha1
            })
        );
    }

    /// Seals packets numbered from `first` (the sequence number of the first).
    fn sealed(kind: AuthKind, first: u32) -> impl FnMut() -> (ControlPacket, Vec<u8>) {
        let mut tx = Auth::new(key(kind), first.wrapping_sub(1));
        move || {
            let b = tx.seal(&mut packet());
            (ControlPacket::decode(&b).unwrap(), b)
        }
    }

    #[test]
    fn meticulous_needs_a_newer_sequence_within_three_detect_mults() {
        let mut next = sealed(AuthKind::MeticulousKeyedSha1, u32::MAX - 1);
        let mut rx = Auth::new(key(AuthKind::MeticulousKeyedSha1), 0);
        let (d, b) = next();
        assert_eq!(rx.verify(&d, &b), Ok(()), "any sequence while unknown");
        // "bfd.RcvAuthSeq+1 to bfd.RcvAuthSeq+(3*Detect Mult) inclusive":
        // the same packet again is a replay.
        assert!(matches!(rx.verify(&d, &b), Err(AuthError::Sequence { .. })));
        // Across the wrap of the 32-bit counter.
        let (d2, b2) = next();
        assert_eq!(rx.verify(&d2, &b2), Ok(()));
        for _ in 0..8 {
            next();
        }
        // 9 ahead of the last accepted (u32::MAX): the end of the window.
        let (d, b) = next();
        assert_eq!(rx.verify(&d, &b), Ok(()));
        for _ in 0..9 {
            next();
        }
        // 10 ahead: outside.
        let (d, b) = next();
        assert!(matches!(rx.verify(&d, &b), Err(AuthError::Sequence { .. })));
        // Once the sequence is forgotten (twice the detection time without a
        // packet), any sequence is taken again.
        rx.forget_sequence();
        assert_eq!(rx.verify(&d, &b), Ok(()));
    }

    #[test]
    fn keyed_sha1_accepts_the_same_sequence_again() {
        let mut next = sealed(AuthKind::KeyedSha1, 100);
        let mut rx = Auth::new(key(AuthKind::KeyedSha1), 0);
        let (d, b) = next();
        assert_eq!(rx.verify(&d, &b), Ok(()));
        // "bfd.RcvAuthSeq to bfd.RcvAuthSeq+(3*Detect Mult)": the lower end is inclusive.
        assert_eq!(rx.verify(&d, &b), Ok(()));
        let mut old = sealed(AuthKind::KeyedSha1, 99);
        let (d, b) = old();
        assert!(matches!(
            rx.verify(&d, &b),
            Err(AuthError::Sequence {
                got: 99,
                from: 100,
                to: 109
            })
        ));
    }

    #[test]
    fn simple_password() {
        let mut tx = Auth::new(key(AuthKind::SimplePassword), 0);
        let b = tx.seal(&mut packet());
        assert_eq!(&b[24..27], &[1, 9, 5]);
        assert_eq!(&b[27..], b"petrel");
        let d = ControlPacket::decode(&b).unwrap();
        let mut rx = Auth::new(key(AuthKind::SimplePassword), 0);
        assert_eq!(rx.verify(&d, &b), Ok(()));
        let wrong = AuthKey::new(AuthKind::SimplePassword, 5, b"petrol".to_vec()).unwrap();
        assert_eq!(Auth::new(wrong, 0).verify(&d, &b), Err(AuthError::Password));
    }

    #[test]
    fn key_lengths() {
        assert_eq!(
            AuthKey::new(AuthKind::SimplePassword, 1, vec![b'x'; 17]),
            Err(KeyError::PasswordLength(17))
        );
        assert_eq!(
            AuthKey::new(AuthKind::KeyedSha1, 1, vec![b'x'; 21]),
            Err(KeyError::Sha1KeyLength(21))
        );
        assert!(AuthKey::new(AuthKind::KeyedSha1, 1, vec![b'x'; 20]).is_ok());
        assert!(!format!("{:?}", key(AuthKind::KeyedSha1)).contains("petrel"));
    }
}
