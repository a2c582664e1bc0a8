//! ROUTE-REFRESH (RFC 2918 §3) with the message subtypes of enhanced route
//! refresh (RFC 7313 §3.2): normal request, Beginning and End of RIB
//! refresh.

use super::family::Family;
use super::notification::{ErrorCode, Notification, RouteRefreshError};
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefreshSubtype {
    Request,
    /// BoRR, RFC 7313 §3.2.
    BeginningOfRefresh,
    /// EoRR, RFC 7313 §3.2.
    EndOfRefresh,
    Reserved(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: RefreshSubtype,
}

impl RouteRefresh {
    pub fn request(family: Family) -> Self {
        Self {
            family,
            subtype: RefreshSubtype::Request,
        }
    }

    pub fn decode(body: &Bytes) -> Result<Self, Notification> {
        // RFC 7313 §5: a ROUTE-REFRESH whose length is not 23 octets is an
        // error (subcode Invalid Message Length) with the message as data.
        if body.len() != 4 {
            return Err(Notification::new(
                ErrorCode::RouteRefresh(RouteRefreshError::InvalidMessageLength),
                body.clone(),
            ));
        }
        let subtype = match body[2] {
            0 => RefreshSubtype::Request,
            1 => RefreshSubtype::BeginningOfRefresh,
            2 => RefreshSubtype::EndOfRefresh,
            // RFC 7313 §5: other subtypes are ignored by the session, kept here.
            s => RefreshSubtype::Reserved(s),
        };
        Ok(Self {
            family: Family::new(u16::from_be_bytes([body[0], body[1]]), body[3]),
            subtype,
        })
    }

    pub fn encode_body(&self, out: &mut BytesMut) {
        out.put_u16(self.family.afi);
        out.put_u8(match self.subtype {
            RefreshSubtype::Request => 0,
            RefreshSubtype::BeginningOfRefresh => 1,
            RefreshSubtype::EndOfRefresh => 2,
            RefreshSubtype::Reserved(s) => s,
        });
        out.put_u8(self.family.safi);
    }
}
