//! The message header (RFC 4271 §4.1) and framing of a byte stream.

use super::notification::{ErrorCode, HeaderError, Notification};
use bytes::BytesMut;

pub const HEADER_LEN: usize = 19;
pub const MARKER: [u8; 16] = [0xff; 16];

pub const TYPE_OPEN: u8 = 1;
pub const TYPE_UPDATE: u8 = 2;
pub const TYPE_NOTIFICATION: u8 = 3;
pub const TYPE_KEEPALIVE: u8 = 4;
pub const TYPE_ROUTE_REFRESH: u8 = 5;

/// A validated header: the type and the total length (header included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u8,
    pub length: u16,
}

fn bad_length(length: u16) -> Notification {
    // RFC 4271 §6.1: the data field contains the erroneous Length field.
    Notification::new(
        ErrorCode::MessageHeader(HeaderError::BadMessageLength),
        length.to_be_bytes().to_vec(),
    )
}

impl Header {
    /// Parses and checks the 19 header octets. `max_len` is the negotiated
    /// maximum message size (4096, or 65535 with RFC 8654).
    pub fn parse(h: &[u8; HEADER_LEN], max_len: usize) -> Result<Self, Notification> {
        // RFC 4271 §6.1: the marker must be all ones.
        if h[..16] != MARKER {
            return Err(Notification::bare(ErrorCode::MessageHeader(
                HeaderError::ConnectionNotSynchronized,
            )));
        }
        let length = u16::from_be_bytes([h[16], h[17]]);
        let msg_type = h[18];
        // RFC 4271 §6.1: length below 19 or above the maximum, or wrong for the
        // type's fixed size, is Bad Message Length with the length as data.
        if (length as usize) < HEADER_LEN || length as usize > max_len {
            return Err(bad_length(length));
        }
        let min = match msg_type {
            super::header::TYPE_OPEN => 29,
            TYPE_UPDATE => 23,
            TYPE_NOTIFICATION => 21,
            TYPE_KEEPALIVE => 19,
            // RFC 2918 §3.
            TYPE_ROUTE_REFRESH => 23,
            // RFC 4271 §6.1: unrecognised type; the data is the type octet.
            _ => {
                return Err(Notification::new(
                    ErrorCode::MessageHeader(HeaderError::BadMessageType),
                    vec![msg_type],
                ))
            }
        };
        if (length as usize) < min || (msg_type == TYPE_KEEPALIVE && length != 19) {
            return Err(bad_length(length));
        }
        // RFC 4271 §4.1: OPEN and KEEPALIVE are never longer than 4096 octets
        // even when extended messages are negotiated (RFC 8654 §4).
        if msg_type == TYPE_OPEN && length as usize > super::codec::MAX_MESSAGE_LEN {
            return Err(bad_length(length));
        }
        Ok(Header { msg_type, length })
    }
}

/// Splits one whole message off the front of a receive buffer, without
/// copying. Returns `Ok(None)` while more octets are needed.
pub fn split_message(
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<(Header, BytesMut)>, Notification> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&buf[..HEADER_LEN]);
    let header = Header::parse(&h, max_len)?;
    if buf.len() < header.length as usize {
        return Ok(None);
    }
    Ok(Some((header, buf.split_to(header.length as usize))))
}
