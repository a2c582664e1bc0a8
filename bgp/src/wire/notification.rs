//! NOTIFICATION messages (RFC 4271 §4.5) and their codes.
//!
//! Every error the codec or the session detects is a [`Notification`]: a typed
//! [`ErrorCode`] (one variant per code, a typed subcode inside) plus the data
//! octets the RFC asks to send back. Decoding and encoding are exact inverses,
//! and unknown codes or subcodes are kept as numbers so that nothing received
//! is lost when it is logged.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// RFC 4271 §4.5 error codes, with typed subcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MessageHeader(HeaderError),
    Open(OpenError),
    Update(UpdateError),
    HoldTimerExpired,
    /// RFC 6608 subcodes.
    Fsm(FsmError),
    /// RFC 4486 subcodes.
    Cease(CeaseError),
    /// RFC 7313 §5.
    RouteRefresh(RouteRefreshError),
    /// A code this implementation does not know (kept verbatim).
    Other {
        code: u8,
        subcode: u8,
    },
}

macro_rules! subcodes {
    ($(#[$m:meta])* $name:ident { $($var:ident = $val:expr => $text:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($var,)*
            /// A subcode not assigned when this was written, kept verbatim.
            Other(u8),
        }
        impl $name {
            pub fn from_u8(v: u8) -> Self {
                match v { $($val => Self::$var,)* other => Self::Other(other) }
            }
            pub fn to_u8(self) -> u8 {
                match self { $(Self::$var => $val,)* Self::Other(v) => v }
            }
            pub fn text(self) -> &'static str {
                match self { $(Self::$var => $text,)* Self::Other(_) => "unassigned subcode" }
            }
        }
    };
}

subcodes!(
    /// RFC 4271 §6.1.
    HeaderError {
        Unspecific = 0 => "unspecific",
        ConnectionNotSynchronized = 1 => "connection not synchronized",
        BadMessageLength = 2 => "bad message length",
        BadMessageType = 3 => "bad message type",
    }
);
subcodes!(
    /// RFC 4271 §6.2, RFC 5492 §5 (7), RFC 9234 (11).
    OpenError {
        Unspecific = 0 => "unspecific",
        UnsupportedVersionNumber = 1 => "unsupported version number",
        BadPeerAs = 2 => "bad peer AS",
        BadBgpIdentifier = 3 => "bad BGP identifier",
        UnsupportedOptionalParameter = 4 => "unsupported optional parameter",
        UnacceptableHoldTime = 6 => "unacceptable hold time",
        UnsupportedCapability = 7 => "unsupported capability",
        RoleMismatch = 11 => "role mismatch",
    }
);
subcodes!(
    /// RFC 4271 §6.3.
    UpdateError {
        Unspecific = 0 => "unspecific",
        MalformedAttributeList = 1 => "malformed attribute list",
        UnrecognizedWellKnownAttribute = 2 => "unrecognized well-known attribute",
        MissingWellKnownAttribute = 3 => "missing well-known attribute",
        AttributeFlagsError = 4 => "attribute flags error",
        AttributeLengthError = 5 => "attribute length error",
        InvalidOriginAttribute = 6 => "invalid ORIGIN attribute",
        InvalidNextHopAttribute = 8 => "invalid NEXT_HOP attribute",
        OptionalAttributeError = 9 => "optional attribute error",
        InvalidNetworkField = 10 => "invalid network field",
        MalformedAsPath = 11 => "malformed AS_PATH",
    }
);
subcodes!(
    /// RFC 6608 §3.
    FsmError {
        Unspecified = 0 => "unspecified",
        UnexpectedMessageInOpenSent = 1 => "unexpected message in OpenSent",
        UnexpectedMessageInOpenConfirm = 2 => "unexpected message in OpenConfirm",
        UnexpectedMessageInEstablished = 3 => "unexpected message in Established",
    }
);
subcodes!(
    /// RFC 4486 §4, RFC 8538 (9).
    CeaseError {
        Unspecific = 0 => "unspecific",
        MaximumNumberOfPrefixesReached = 1 => "maximum number of prefixes reached",
        AdministrativeShutdown = 2 => "administrative shutdown",
        PeerDeconfigured = 3 => "peer de-configured",
        AdministrativeReset = 4 => "administrative reset",
        ConnectionRejected = 5 => "connection rejected",
        OtherConfigurationChange = 6 => "other configuration change",
        ConnectionCollisionResolution = 7 => "connection collision resolution",
        OutOfResources = 8 => "out of resources",
        HardReset = 9 => "hard reset",
        BfdDown = 10 => "BFD down",
    }
);
subcodes!(
    /// RFC 7313 §5.
    RouteRefreshError {
        Reserved = 0 => "reserved",
        InvalidMessageLength = 1 => "invalid message length",
    }
);

impl ErrorCode {
    pub fn from_parts(code: u8, subcode: u8) -> Self {
        match code {
            1 => Self::MessageHeader(HeaderError::from_u8(subcode)),
            2 => Self::Open(OpenError::from_u8(subcode)),
            3 => Self::Update(UpdateError::from_u8(subcode)),
            4 if subcode == 0 => Self::HoldTimerExpired,
            5 => Self::Fsm(FsmError::from_u8(subcode)),
            6 => Self::Cease(CeaseError::from_u8(subcode)),
            7 => Self::RouteRefresh(RouteRefreshError::from_u8(subcode)),
            _ => Self::Other { code, subcode },
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::MessageHeader(_) => 1,
            Self::Open(_) => 2,
            Self::Update(_) => 3,
            Self::HoldTimerExpired => 4,
            Self::Fsm(_) => 5,
            Self::Cease(_) => 6,
            Self::RouteRefresh(_) => 7,
            Self::Other { code, .. } => code,
        }
    }

    pub fn subcode(self) -> u8 {
        match self {
            Self::MessageHeader(s) => s.to_u8(),
            Self::Open(s) => s.to_u8(),
            Self::Update(s) => s.to_u8(),
            Self::HoldTimerExpired => 0,
            Self::Fsm(s) => s.to_u8(),
            Self::Cease(s) => s.to_u8(),
            Self::RouteRefresh(s) => s.to_u8(),
            Self::Other { subcode, .. } => subcode,
        }
    }

    fn code_text(self) -> &'static str {
        match self {
            Self::MessageHeader(_) => "message header error",
            Self::Open(_) => "OPEN message error",
            Self::Update(_) => "UPDATE message error",
            Self::HoldTimerExpired => "hold timer expired",
            Self::Fsm(_) => "finite state machine error",
            Self::Cease(_) => "cease",
            Self::RouteRefresh(_) => "ROUTE-REFRESH message error",
            Self::Other { .. } => "unknown error code",
        }
    }

    fn subcode_text(self) -> Option<&'static str> {
        match self {
            Self::MessageHeader(s) => Some(s.text()),
            Self::Open(s) => Some(s.text()),
            Self::Update(s) => Some(s.text()),
            Self::Fsm(s) => Some(s.text()),
            Self::Cease(s) => Some(s.text()),
            Self::RouteRefresh(s) => Some(s.text()),
            Self::HoldTimerExpired | Self::Other { .. } => None,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subcode_text() {
            Some(s) => write!(
                f,
                "{} / {} ({}/{})",
                self.code_text(),
                s,
                self.code(),
                self.subcode()
            ),
            None => write!(
                f,
                "{} ({}/{})",
                self.code_text(),
                self.code(),
                self.subcode()
            ),
        }
    }
}

/// A NOTIFICATION: the error and its data octets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub error: ErrorCode,
    pub data: Bytes,
}

/// RFC 9003 §2: the shutdown communication is at most 255 octets of UTF-8.
pub const MAX_SHUTDOWN_COMMUNICATION: usize = 255;

impl Notification {
    pub fn new(error: ErrorCode, data: impl Into<Bytes>) -> Self {
        Self {
            error,
            data: data.into(),
        }
    }

    pub fn bare(error: ErrorCode) -> Self {
        Self {
            error,
            data: Bytes::new(),
        }
    }

    /// A Cease with a shutdown communication (RFC 9003 §2): only for the
    /// Administrative Shutdown and Administrative Reset subcodes. The text is
    /// truncated at a character boundary to 255 octets.
    pub fn shutdown(subcode: CeaseError, message: &str) -> Self {
        let mut end = message.len().min(MAX_SHUTDOWN_COMMUNICATION);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message.as_bytes()[..end];
        let mut data = BytesMut::with_capacity(1 + text.len());
        data.put_u8(text.len() as u8);
        data.put_slice(text);
        Self {
            error: ErrorCode::Cease(subcode),
            data: data.freeze(),
        }
    }

    /// The RFC 9003 shutdown communication carried in the data, if this is a
    /// Cease / Administrative Shutdown or Reset and the data is well-formed.
    pub fn shutdown_communication(&self) -> Option<Result<&str, ShutdownCommunicationError>> {
        match self.error {
            ErrorCode::Cease(CeaseError::AdministrativeShutdown)
            | ErrorCode::Cease(CeaseError::AdministrativeReset) => {}
            _ => return None,
        }
        if self.data.is_empty() {
            return None;
        }
        let len = self.data[0] as usize;
        // RFC 9003 §3: a length that overruns the data is an error; log the raw data.
        if len + 1 > self.data.len() {
            return Some(Err(ShutdownCommunicationError::LengthOverrun));
        }
        Some(
            std::str::from_utf8(&self.data[1..1 + len])
                .map_err(|_| ShutdownCommunicationError::InvalidUtf8),
        )
    }

    /// RFC 8538 §3: Cease / Hard Reset, carrying `inner` (its code, subcode
    /// and data) as its own data.
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = BytesMut::with_capacity(2 + inner.data.len());
        inner.encode_body(&mut data);
        Self {
            error: ErrorCode::Cease(CeaseError::HardReset),
            data: data.freeze(),
        }
    }

    pub fn is_hard_reset(&self) -> bool {
        self.error == ErrorCode::Cease(CeaseError::HardReset)
    }

    /// The NOTIFICATION a Hard Reset carries (RFC 8538 §3), when this is
    /// one and its data holds at least a code and a subcode.
    pub fn hard_reset_cause(&self) -> Option<Notification> {
        if !self.is_hard_reset() || self.data.len() < 2 {
            return None;
        }
        Some(Self {
            error: ErrorCode::from_parts(self.data[0], self.data[1]),
            data: self.data.slice(2..),
        })
    }

    /// RFC 8538 §5.1: with the N bit negotiated, these Cease subcodes are
    /// sent as a Hard Reset (the session and its routes end for good);
    /// every other NOTIFICATION keeps the graceful-restart procedures.
    /// Administrative Reset is "Provisional" there (the implementation
    /// decides): petrel resets gracefully, which is what an operator's
    /// `petrelctl peer reset` wants. BFD Down (RFC 9384) is hard: the
    /// forwarding path is gone, so stale routes over it would blackhole.
    pub fn requires_hard_reset(&self) -> bool {
        matches!(
            self.error,
            ErrorCode::Cease(
                CeaseError::MaximumNumberOfPrefixesReached
                    | CeaseError::AdministrativeShutdown
                    | CeaseError::PeerDeconfigured
                    | CeaseError::HardReset
                    | CeaseError::BfdDown
            )
        )
    }

    pub(crate) fn decode(body: &Bytes) -> Result<Self, Notification> {
        if body.len() < 2 {
            // RFC 4271 §6.1: the minimum NOTIFICATION length is 21 octets.
            return Err(Notification::new(
                ErrorCode::MessageHeader(HeaderError::BadMessageLength),
                ((body.len() + super::header::HEADER_LEN) as u16)
                    .to_be_bytes()
                    .to_vec(),
            ));
        }
        Ok(Self {
            error: ErrorCode::from_parts(body[0], body[1]),
            data: body.slice(2..),
        })
    }

    pub(crate) fn encoded_len(&self) -> usize {
        2 + self.data.len()
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(self.error.code());
        out.put_u8(self.error.subcode());
        out.put_slice(&self.data);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShutdownCommunicationError {
    #[error("shutdown communication length exceeds the NOTIFICATION data")]
    LengthOverrun,
    #[error("shutdown communication is not valid UTF-8")]
    InvalidUtf8,
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(cause) = self.hard_reset_cause() {
            return write!(f, " ({cause})");
        }
        match self.shutdown_communication() {
            Some(Ok(text)) => write!(f, ", shutdown communication: {text:?}"),
            Some(Err(e)) => write!(f, ", {e}"),
            None if !self.data.is_empty() => {
                write!(f, ", data ")?;
                for b in self.data.iter().take(64) {
                    write!(f, "{b:02x}")?;
                }
                if self.data.len() > 64 {
                    write!(f, "…")?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl std::error::Error for Notification {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=9u8 {
            for sub in 0..=12u8 {
                let e = ErrorCode::from_parts(code, sub);
                assert_eq!((e.code(), e.subcode()), (code, sub), "{e:?}");
            }
        }
    }

    #[test]
    fn hard_reset_carries_its_cause() {
        // RFC 8538 §3: the data is the encapsulated code, subcode and data.
        let inner = Notification::new(
            ErrorCode::Cease(CeaseError::MaximumNumberOfPrefixesReached),
            vec![0, 2, 1, 0, 0, 0, 10],
        );
        let hr = Notification::hard_reset(&inner);
        assert_eq!(hr.error, ErrorCode::Cease(CeaseError::HardReset));
        assert_eq!(&hr.data[..], &[6, 1, 0, 2, 1, 0, 0, 0, 10]);
        assert_eq!(hr.hard_reset_cause(), Some(inner.clone()));
        assert!(
            hr.to_string().contains("maximum number of prefixes"),
            "{hr}"
        );
        assert_eq!(inner.hard_reset_cause(), None);
        // A Hard Reset whose data is too short still is one.
        let short = Notification::new(ErrorCode::Cease(CeaseError::HardReset), vec![6]);
        assert!(short.is_hard_reset());
        assert_eq!(short.hard_reset_cause(), None);
    }

    #[test]
    fn which_notifications_are_hard() {
        let hard = |e| Notification::bare(e).requires_hard_reset();
        assert!(hard(ErrorCode::Cease(CeaseError::AdministrativeShutdown)));
        assert!(hard(ErrorCode::Cease(
            CeaseError::MaximumNumberOfPrefixesReached
        )));
        assert!(hard(ErrorCode::Cease(CeaseError::PeerDeconfigured)));
        assert!(hard(ErrorCode::Cease(CeaseError::BfdDown)));
        assert!(!hard(ErrorCode::Cease(CeaseError::AdministrativeReset)));
        assert!(!hard(ErrorCode::Cease(
            CeaseError::OtherConfigurationChange
        )));
        assert!(!hard(ErrorCode::HoldTimerExpired));
        assert!(!hard(ErrorCode::Update(
            UpdateError::MalformedAttributeList
        )));
    }

    #[test]
    fn shutdown_communication_rfc9003() {
        let n = Notification::shutdown(
            CeaseError::AdministrativeShutdown,
            "maintenance, back at 10:00",
        );
        assert_eq!(n.data[0] as usize, n.data.len() - 1);
        assert_eq!(
            n.shutdown_communication(),
            Some(Ok("maintenance, back at 10:00"))
        );
        let long = "é".repeat(200);
        let n = Notification::shutdown(CeaseError::AdministrativeReset, &long);
        assert!(n.data.len() - 1 <= 255);
        assert!(n.shutdown_communication().unwrap().is_ok());
        let bad = Notification::new(
            ErrorCode::Cease(CeaseError::AdministrativeShutdown),
            vec![10, b'a'],
        );
        assert_eq!(
            bad.shutdown_communication(),
            Some(Err(ShutdownCommunicationError::LengthOverrun))
        );
        assert!(bad.to_string().contains("exceeds"));
    }

    #[test]
    fn display_names_code_and_subcode() {
        let n = Notification::bare(ErrorCode::Open(OpenError::UnsupportedCapability));
        assert_eq!(
            n.to_string(),
            "OPEN message error / unsupported capability (2/7)"
        );
    }
}
