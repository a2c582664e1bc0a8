//! The BGP-4 wire codec: every message of RFC 4271 and the extensions petrel
//! speaks, decoded from [`bytes::Bytes`] without copying NLRI or unknown
//! attributes, and encoded into [`bytes::BytesMut`].
//!
//! Layout follows the RFCs: [`header`] frames the stream, [`open`] and
//! [`capability`] carry the OPEN, [`update`] with [`attr`] and [`nlri`] the
//! UPDATE, [`notification`] every error the session can send, and
//! [`route_refresh`] ROUTE-REFRESH. A [`CodecContext`] built from the
//! negotiated capabilities is passed to every call; there is no hidden state.
//!
//! Errors are data: decoding returns a [`Notification`] for anything that must
//! reset the session, and records the RFC 7606 outcomes short of that on the
//! [`Update`] itself.

pub mod attr;
pub mod capability;
pub mod codec;
pub mod family;
pub mod header;
pub mod nlri;
pub mod notification;
pub mod open;
pub mod route_refresh;
pub mod update;

pub use attr::{Action, AsPath, AttrError, PathAttributes};
pub use capability::Capability;
pub use codec::CodecContext;
pub use family::Family;
pub use header::{split_message, Header, HEADER_LEN};
pub use nlri::{Nlri, NlriEntry, Prefix};
pub use notification::{ErrorCode, Notification};
pub use open::Open;
pub use route_refresh::{RefreshSubtype, RouteRefresh};
pub use update::{TooLarge, Update, UpdatePacker};

use bytes::{BufMut, Bytes, BytesMut};
use header::*;

/// One BGP message. Messages are transient (decoded, handed on, dropped), so
/// the UPDATE variant stays inline: boxing it would cost an allocation per
/// UPDATE on the receive path to save stack space nobody holds on to.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => TYPE_OPEN,
            Message::Update(_) => TYPE_UPDATE,
            Message::Notification(_) => TYPE_NOTIFICATION,
            Message::Keepalive => TYPE_KEEPALIVE,
            Message::RouteRefresh(_) => TYPE_ROUTE_REFRESH,
        }
    }

    pub fn type_name(&self) -> &'static str {
        type_name(self.type_code())
    }

    /// Decodes one whole message (header included). The header is checked
    /// against `ctx.max_message_len`; nothing here can panic on any input.
    pub fn decode(ctx: &CodecContext, msg: &Bytes) -> Result<Message, Notification> {
        if msg.len() < HEADER_LEN {
            return Err(Notification::new(
                ErrorCode::MessageHeader(notification::HeaderError::BadMessageLength),
                (msg.len() as u16).to_be_bytes().to_vec(),
            ));
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&msg[..HEADER_LEN]);
        let header = Header::parse(&h, ctx.max_message_len)?;
        if header.length as usize != msg.len() {
            return Err(Notification::new(
                ErrorCode::MessageHeader(notification::HeaderError::BadMessageLength),
                header.length.to_be_bytes().to_vec(),
            ));
        }
        if header.msg_type != TYPE_UPDATE {
            return Self::decode_body(ctx, header.msg_type, &msg.slice(HEADER_LEN..));
        }
        // The hot path: the UPDATE is decoded where it is returned, without
        // slicing off the body or moving the decoded struct (one return
        // value, so the compiler builds it in the caller's slot).
        let mut r = Ok(Message::Update(Update::new(PathAttributes::default())));
        if let Ok(Message::Update(u)) = &mut r {
            if let Err(n) = u.decode_into(ctx, msg, HEADER_LEN) {
                r = Err(n);
            }
        }
        r
    }

    /// Decodes a body whose header was already checked.
    pub fn decode_body(
        ctx: &CodecContext,
        msg_type: u8,
        body: &Bytes,
    ) -> Result<Message, Notification> {
        Ok(match msg_type {
            TYPE_OPEN => Message::Open(Open::decode(body)?),
            TYPE_UPDATE => Message::Update(Update::decode(ctx, body)?),
            TYPE_NOTIFICATION => Message::Notification(Notification::decode(body)?),
            TYPE_KEEPALIVE => Message::Keepalive,
            TYPE_ROUTE_REFRESH => Message::RouteRefresh(RouteRefresh::decode(body)?),
            t => {
                return Err(Notification::new(
                    ErrorCode::MessageHeader(notification::HeaderError::BadMessageType),
                    vec![t],
                ))
            }
        })
    }

    /// Encodes the message, header included. Fails if it would exceed the
    /// negotiated maximum size (never emitted oversize).
    pub fn encode(&self, ctx: &CodecContext, out: &mut BytesMut) -> Result<(), TooLarge> {
        let body_len = match self {
            Message::Open(o) => o.encoded_len(),
            Message::Update(u) => u.body_len(ctx),
            Message::Notification(n) => n.encoded_len(),
            Message::Keepalive => 0,
            Message::RouteRefresh(_) => 4,
        };
        let len = HEADER_LEN + body_len;
        // RFC 8654 §4: OPEN and KEEPALIVE stay within 4096 octets.
        let max = match self {
            Message::Update(_) | Message::Notification(_) | Message::RouteRefresh(_) => {
                ctx.max_message_len
            }
            _ => codec::MAX_MESSAGE_LEN,
        };
        if len > max {
            return Err(TooLarge { len, max });
        }
        out.reserve(len);
        header_into(out, self.type_code(), len);
        match self {
            Message::Open(o) => o.encode_body(out),
            Message::Update(u) => u.encode_body(ctx, out),
            Message::Notification(n) => n.encode_body(out),
            Message::Keepalive => {}
            Message::RouteRefresh(r) => r.encode_body(out),
        }
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, ctx: &CodecContext) -> Result<Bytes, TooLarge> {
        let mut b = BytesMut::new();
        self.encode(ctx, &mut b)?;
        Ok(b.freeze())
    }
}

pub(crate) fn header_into(out: &mut BytesMut, msg_type: u8, len: usize) {
    out.put_slice(&MARKER);
    out.put_u16(len as u16);
    out.put_u8(msg_type);
}

pub fn type_name(t: u8) -> &'static str {
    match t {
        TYPE_OPEN => "OPEN",
        TYPE_UPDATE => "UPDATE",
        TYPE_NOTIFICATION => "NOTIFICATION",
        TYPE_KEEPALIVE => "KEEPALIVE",
        TYPE_ROUTE_REFRESH => "ROUTE-REFRESH",
        _ => "UNKNOWN",
    }
}
