//! The BFD Control packet (RFC 5880 §4.1) and its Authentication Section
//! (§4.2 simple password, §4.3 keyed MD5, §4.4 keyed SHA1).
//!
//! [`ControlPacket::decode`] applies the checks of §6.8.6 that need nothing
//! but the packet itself, in the RFC's order, and says which one failed;
//! the checks that need a session (discriminators, authentication) are in
//! `session.rs`. Encoding never fails: every field has a fixed width.

use std::fmt;

/// §4.1: "The version number of the protocol. This document defines protocol version 1."
pub const VERSION: u8 = 1;
/// The mandatory section's length.
pub const MIN_LEN: usize = 24;
/// §6.8.6: the least Length with the A bit set (the Auth Type and Auth Len octets).
pub const MIN_LEN_AUTH: usize = 26;
/// The largest packet we build or accept: the mandatory section and a SHA1 section.
pub const MAX_LEN: usize = MIN_LEN + SHA1_SECTION_LEN;
/// §4.3: Auth Len of keyed MD5 sections.
pub const MD5_SECTION_LEN: usize = 24;
/// §4.4: Auth Len of keyed SHA1 sections.
pub const SHA1_SECTION_LEN: usize = 28;

/// §4.1 Sta: the transmitting system's session state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    pub fn from_bits(v: u8) -> Self {
        match v & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
    pub fn to_bits(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// §4.1 Diag: the reason for the transmitting system's last change of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Diag {
    NoDiagnostic,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9–31, reserved when this was written; kept verbatim.
    Other(u8),
}

impl Diag {
    pub fn from_u8(v: u8) -> Self {
        match v & 0x1f {
            0 => Diag::NoDiagnostic,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Other(other),
        }
    }
    pub fn to_u8(self) -> u8 {
        match self {
            Diag::NoDiagnostic => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(v) => v & 0x1f,
        }
    }
    pub fn text(self) -> &'static str {
        match self {
            Diag::NoDiagnostic => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Other(_) => "reserved diagnostic",
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// §4.1 Auth Type values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthType {
    SimplePassword,
    KeyedMd5,
    MeticulousKeyedMd5,
    KeyedSha1,
    MeticulousKeyedSha1,
    Other(u8),
}

impl AuthType {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => AuthType::SimplePassword,
            2 => AuthType::KeyedMd5,
            3 => AuthType::MeticulousKeyedMd5,
            4 => AuthType::KeyedSha1,
            5 => AuthType::MeticulousKeyedSha1,
            other => AuthType::Other(other),
        }
    }
    pub fn to_u8(self) -> u8 {
        match self {
            AuthType::SimplePassword => 1,
            AuthType::KeyedMd5 => 2,
            AuthType::MeticulousKeyedMd5 => 3,
            AuthType::KeyedSha1 => 4,
            AuthType::MeticulousKeyedSha1 => 5,
            AuthType::Other(v) => v,
        }
    }
}

/// The optional Authentication Section (§4.2–§4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthSection {
    /// §4.2: Auth Len = 3 + password length (1 to 16 octets).
    SimplePassword { key_id: u8, password: Vec<u8> },
    /// §4.3 (Auth Type 2 or 3): a 16-octet digest.
    Md5 {
        meticulous: bool,
        key_id: u8,
        sequence: u32,
        digest: [u8; 16],
    },
    /// §4.4 (Auth Type 4 or 5): a 20-octet hash.
    Sha1 {
        meticulous: bool,
        key_id: u8,
        sequence: u32,
        hash: [u8; 20],
    },
    /// An Auth Type this implementation does not know, kept verbatim.
    Other { auth_type: u8, data: Vec<u8> },
}

impl AuthSection {
    pub fn auth_type(&self) -> AuthType {
        match self {
            AuthSection::SimplePassword { .. } => AuthType::SimplePassword,
            AuthSection::Md5 {
                meticulous: false, ..
            } => AuthType::KeyedMd5,
            AuthSection::Md5 {
                meticulous: true, ..
            } => AuthType::MeticulousKeyedMd5,
            AuthSection::Sha1 {
                meticulous: false, ..
            } => AuthType::KeyedSha1,
            AuthSection::Sha1 {
                meticulous: true, ..
            } => AuthType::MeticulousKeyedSha1,
            AuthSection::Other { auth_type, .. } => AuthType::from_u8(*auth_type),
        }
    }

    /// Auth Len: the section's length in octets, its type and length octets included.
    pub fn auth_len(&self) -> usize {
        match self {
            AuthSection::SimplePassword { password, .. } => 3 + password.len(),
            AuthSection::Md5 { .. } => MD5_SECTION_LEN,
            AuthSection::Sha1 { .. } => SHA1_SECTION_LEN,
            AuthSection::Other { data, .. } => 2 + data.len(),
        }
    }

    fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        // The caller checked there are at least the two octets of §6.8.6.
        let (auth_type, auth_len) = (b[0], b[1] as usize);
        if auth_len < 2 || auth_len > b.len() {
            return Err(DecodeError::BadAuthLength);
        }
        let b = &b[..auth_len];
        let fixed = |want: usize| {
            if auth_len == want {
                Ok(())
            } else {
                Err(DecodeError::BadAuthLength)
            }
        };
        Ok(match AuthType::from_u8(auth_type) {
            // §4.2: "The password is 1 to 16 bytes in length".
            AuthType::SimplePassword => {
                if !(4..=19).contains(&auth_len) {
                    return Err(DecodeError::BadAuthLength);
                }
                AuthSection::SimplePassword {
                    key_id: b[2],
                    password: b[3..].to_vec(),
                }
            }
            t @ (AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5) => {
                fixed(MD5_SECTION_LEN)?;
                AuthSection::Md5 {
                    meticulous: t == AuthType::MeticulousKeyedMd5,
                    key_id: b[2],
                    sequence: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    digest: b[8..24].try_into().expect("length checked"),
                }
            }
            t @ (AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1) => {
                fixed(SHA1_SECTION_LEN)?;
                AuthSection::Sha1 {
                    meticulous: t == AuthType::MeticulousKeyedSha1,
                    key_id: b[2],
                    sequence: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    hash: b[8..28].try_into().expect("length checked"),
                }
            }
            AuthType::Other(auth_type) => AuthSection::Other {
                auth_type,
                data: b[2..].to_vec(),
            },
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.auth_type().to_u8());
        out.push(self.auth_len() as u8);
        match self {
            AuthSection::SimplePassword { key_id, password } => {
                out.push(*key_id);
                out.extend_from_slice(password);
            }
            AuthSection::Md5 {
                key_id,
                sequence,
                digest,
                ..
            } => {
                // §4.3: "Reserved: This byte MUST be set to zero on transmit".
                out.extend_from_slice(&[*key_id, 0]);
                out.extend_from_slice(&sequence.to_be_bytes());
                out.extend_from_slice(digest);
            }
            AuthSection::Sha1 {
                key_id,
                sequence,
                hash,
                ..
            } => {
                out.extend_from_slice(&[*key_id, 0]);
                out.extend_from_slice(&sequence.to_be_bytes());
                out.extend_from_slice(hash);
            }
            AuthSection::Other { data, .. } => out.extend_from_slice(data),
        }
    }
}

/// A BFD Control packet (§4.1). Intervals are in microseconds, as on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    pub poll: bool,
    pub final_: bool,
    /// C: the transmitting system's BFD does not share fate with its control plane.
    pub control_plane_independent: bool,
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx: u32,
    pub required_min_rx: u32,
    pub required_min_echo_rx: u32,
    /// Present exactly when the A bit is set.
    pub auth: Option<AuthSection>,
}

/// Why a received packet was discarded by the checks of RFC 5880 §6.8.6
/// that need only the packet, in the RFC's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a BFD Control packet")]
    Truncated,
    #[error("version {0}, not 1")]
    BadVersion(u8),
    #[error("Length {0} below the minimum")]
    LengthTooShort(u8),
    #[error("Length {length} beyond the {payload}-octet payload")]
    LengthBeyondPayload { length: u8, payload: usize },
    #[error("Detect Mult is zero")]
    ZeroDetectMult,
    #[error("the Multipoint bit is set")]
    Multipoint,
    #[error("My Discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("Auth Len does not fit the Auth Type or the packet")]
    BadAuthLength,
}

impl ControlPacket {
    /// Decodes a packet from a UDP payload. Octets after Length are ignored.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < 4 {
            return Err(DecodeError::Truncated);
        }
        let version = b[0] >> 5;
        let flags = b[1];
        let (detect_mult, length) = (b[2], b[3]);
        let auth_present = flags & 0x04 != 0;
        // §6.8.6: "If the version number is not correct (1), the packet MUST be discarded."
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        // §6.8.6: "less than the minimum correct value (24 if the A bit is clear, or 26 if the A bit is set)".
        let min = if auth_present { MIN_LEN_AUTH } else { MIN_LEN };
        if (length as usize) < min {
            return Err(DecodeError::LengthTooShort(length));
        }
        // §6.8.6: "greater than the payload of the encapsulating protocol".
        if length as usize > b.len() {
            return Err(DecodeError::LengthBeyondPayload {
                length,
                payload: b.len(),
            });
        }
        // §6.8.6: "If the Detect Mult field is zero, the packet MUST be discarded."
        if detect_mult == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        // §6.8.6: "If the Multipoint (M) bit is nonzero, the packet MUST be discarded."
        if flags & 0x01 != 0 {
            return Err(DecodeError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let my_discriminator = word(4);
        // §6.8.6: "If the My Discriminator field is zero, the packet MUST be discarded."
        if my_discriminator == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        let auth = if auth_present {
            let section = &b[MIN_LEN..length as usize];
            let auth = AuthSection::decode(section)?;
            if auth.auth_len() != section.len() {
                return Err(DecodeError::BadAuthLength);
            }
            Some(auth)
        } else {
            None
        };
        Ok(ControlPacket {
            diag: Diag::from_u8(b[0]),
            state: State::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            control_plane_independent: flags & 0x08 != 0,
            demand: flags & 0x02 != 0,
            detect_mult,
            my_discriminator,
            your_discriminator: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
            auth,
        })
    }

    /// The Length field: the mandatory section and the Authentication Section.
    pub fn length(&self) -> usize {
        MIN_LEN + self.auth.as_ref().map_or(0, AuthSection::auth_len)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.length());
        out.push(VERSION << 5 | self.diag.to_u8());
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        // M is never set: §4.1 "this bit MUST be zero on transmit".
        out.push(
            self.state.to_bits() << 6
                | bit(self.poll, 0x20)
                | bit(self.final_, 0x10)
                | bit(self.control_plane_independent, 0x08)
                | bit(self.auth.is_some(), 0x04)
                | bit(self.demand, 0x02),
        );
        out.push(self.detect_mult);
        out.push(self.length() as u8);
        for w in [
            self.my_discriminator,
            self.your_discriminator,
            self.desired_min_tx,
            self.required_min_rx,
            self.required_min_echo_rx,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
        if let Some(a) = &self.auth {
            a.encode(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> ControlPacket {
        ControlPacket {
            diag: Diag::NoDiagnostic,
            state: State::Up,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 0x0a0b_0c0d,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    /// An Up packet as FRR's bfdd sends it (300 ms, multiplier 3, no echo).
    const UP: [u8; 24] = [
        0x20, 0xc0, 0x03, 0x18, // v1, diag 0, Up, no flags, mult 3, length 24
        0x01, 0x02, 0x03, 0x04, // My Discriminator
        0x0a, 0x0b, 0x0c, 0x0d, // Your Discriminator
        0x00, 0x04, 0x93, 0xe0, // Desired Min TX 300000 µs
        0x00, 0x04, 0x93, 0xe0, // Required Min RX 300000 µs
        0x00, 0x00, 0x00, 0x00, // Required Min Echo RX 0
    ];

    #[test]
    fn mandatory_section_round_trips() {
        assert_eq!(packet().encode(), UP);
        assert_eq!(ControlPacket::decode(&UP), Ok(packet()));
    }

    #[test]
    fn flags_are_where_section_4_1_puts_them() {
        let mut p = packet();
        p.diag = Diag::AdministrativelyDown;
        p.state = State::AdminDown;
        p.poll = true;
        p.control_plane_independent = true;
        p.demand = true;
        let b = p.encode();
        // Vers 001, Diag 00111; Sta 00, P 1, F 0, C 1, A 0, D 1, M 0.
        assert_eq!(&b[..2], &[0b0010_0111, 0b0010_1010]);
        assert_eq!(ControlPacket::decode(&b), Ok(p.clone()));
        p.poll = false;
        p.final_ = true;
        assert_eq!(p.encode()[1], 0b0001_1010);
    }

    #[test]
    fn sha1_section_round_trips() {
        let mut p = packet();
        p.auth = Some(AuthSection::Sha1 {
            meticulous: true,
            key_id: 7,
            sequence: 0xdead_beef,
            hash: [0x55; 20],
        });
        let b = p.encode();
        assert_eq!(b.len(), 52);
        assert_eq!(b[1] & 0x04, 0x04, "A bit");
        assert_eq!(b[3], 52, "Length");
        // §4.4: Auth Type 5, Auth Len 28, Key ID, Reserved 0, Sequence Number.
        assert_eq!(&b[24..32], &[5, 28, 7, 0, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(ControlPacket::decode(&b), Ok(p));
    }

    #[test]
    fn md5_and_password_sections_round_trip() {
        let mut p = packet();
        p.auth = Some(AuthSection::Md5 {
            meticulous: false,
            key_id: 1,
            sequence: 9,
            digest: [1; 16],
        });
        let b = p.encode();
        assert_eq!((b.len(), b[24], b[25]), (48, 2, 24));
        assert_eq!(ControlPacket::decode(&b), Ok(p.clone()));
        p.auth = Some(AuthSection::SimplePassword {
            key_id: 2,
            password: b"secret".to_vec(),
        });
        let b = p.encode();
        // §4.2: Auth Len = 3 + the password's length.
        assert_eq!((b.len(), b[24], b[25], b[26]), (33, 1, 9, 2));
        assert_eq!(ControlPacket::decode(&b), Ok(p));
    }

    #[test]
    fn octets_beyond_length_are_ignored() {
        let mut b = UP.to_vec();
        b.extend_from_slice(&[0xff; 8]);
        assert_eq!(ControlPacket::decode(&b), Ok(packet()));
    }

    fn with(f: impl FnOnce(&mut Vec<u8>)) -> Result<ControlPacket, DecodeError> {
        let mut b = UP.to_vec();
        f(&mut b);
        ControlPacket::decode(&b)
    }

    #[test]
    fn discard_rules_of_section_6_8_6_that_need_only_the_packet() {
        // "If the version number is not correct (1), the packet MUST be discarded."
        assert_eq!(with(|b| b[0] = 0x40), Err(DecodeError::BadVersion(2)));
        assert_eq!(with(|b| b[0] = 0x00), Err(DecodeError::BadVersion(0)));
        // "If the Length field is less than the minimum correct value (24 if
        // the A bit is clear, or 26 if the A bit is set)".
        assert_eq!(with(|b| b[3] = 23), Err(DecodeError::LengthTooShort(23)));
        assert_eq!(
            with(|b| {
                b[1] |= 0x04;
                b[3] = 25;
                b.extend_from_slice(&[4, 28]);
            }),
            Err(DecodeError::LengthTooShort(25))
        );
        // "If the Length field is greater than the payload of the encapsulating protocol".
        assert_eq!(
            with(|b| b[3] = 25),
            Err(DecodeError::LengthBeyondPayload {
                length: 25,
                payload: 24
            })
        );
        assert_eq!(
            ControlPacket::decode(&UP[..20]),
            Err(DecodeError::LengthBeyondPayload {
                length: 24,
                payload: 20
            })
        );
        assert_eq!(ControlPacket::decode(&UP[..3]), Err(DecodeError::Truncated));
        // "If the Detect Mult field is zero, the packet MUST be discarded."
        assert_eq!(with(|b| b[2] = 0), Err(DecodeError::ZeroDetectMult));
        // "If the Multipoint (M) bit is nonzero, the packet MUST be discarded."
        assert_eq!(with(|b| b[1] |= 0x01), Err(DecodeError::Multipoint));
        // "If the My Discriminator field is zero, the packet MUST be discarded."
        assert_eq!(
            with(|b| b[4..8].fill(0)),
            Err(DecodeError::ZeroMyDiscriminator)
        );
    }

    #[test]
    fn the_first_failing_rule_is_reported() {
        // Version wins over everything after it.
        assert_eq!(
            with(|b| {
                b[0] = 0x40;
                b[2] = 0;
                b[1] |= 1;
            }),
            Err(DecodeError::BadVersion(2))
        );
        // Detect Mult is checked before the M bit.
        assert_eq!(
            with(|b| {
                b[2] = 0;
                b[1] |= 1;
            }),
            Err(DecodeError::ZeroDetectMult)
        );
    }

    #[test]
    fn auth_sections_must_fit_their_type_and_the_packet() {
        let sha1 = |auth_len: u8, extra: usize| {
            with(|b| {
                b[1] |= 0x04;
                b.extend_from_slice(&[4, auth_len, 1, 0]);
                b.extend_from_slice(&vec![0; extra]);
                b[3] = b.len() as u8;
            })
        };
        assert!(sha1(28, 24).is_ok());
        // A SHA1 section is 28 octets, no more, no less.
        assert_eq!(sha1(24, 20), Err(DecodeError::BadAuthLength));
        // Auth Len must match what Length leaves for it.
        assert_eq!(sha1(28, 28), Err(DecodeError::BadAuthLength));
        assert_eq!(sha1(40, 24), Err(DecodeError::BadAuthLength));
        // §4.2: a password of 17 octets is too long.
        let pw = |n: usize| {
            with(|b| {
                b[1] |= 0x04;
                b.extend_from_slice(&[1, 3 + n as u8, 1]);
                b.extend_from_slice(&vec![b'x'; n]);
                b[3] = b.len() as u8;
            })
        };
        assert!(pw(16).is_ok());
        assert_eq!(pw(17), Err(DecodeError::BadAuthLength));
        assert_eq!(pw(0), Err(DecodeError::BadAuthLength));
        // An unknown Auth Type decodes, to be refused by the session.
        let other = with(|b| {
            b[1] |= 0x04;
            b.extend_from_slice(&[99, 4, 1, 2]);
            b[3] = b.len() as u8;
        })
        .unwrap();
        assert_eq!(
            other.auth,
            Some(AuthSection::Other {
                auth_type: 99,
                data: vec![1, 2]
            })
        );
    }
}
