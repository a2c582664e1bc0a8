//! OPEN (RFC 4271 §4.2) with optional parameters (RFC 5492) in the normal
//! or the extended length format (RFC 9072).

use super::capability::Capability;
use super::notification::{ErrorCode, Notification, OpenError};
use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u16, be_u32, be_u8};
use std::net::Ipv4Addr;

/// RFC 6793 §9: AS_TRANS, the 2-octet stand-in for a 4-octet AS.
pub const AS_TRANS: u16 = 23456;
/// RFC 5492 §4: optional parameter type 2 carries capabilities.
pub const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: the non-extended length octet set to 255 and the first
/// parameter type set to 255 announce the extended format.
const PARAM_EXTENDED: u8 = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// The 2-octet My Autonomous System field (AS_TRANS for 4-octet ASes).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    /// Capabilities grouped as they were in optional parameters: some speakers
    /// send one capability per parameter, others all in one.
    pub params: Vec<Vec<Capability>>,
}

fn open_err(sub: OpenError, data: Vec<u8>) -> Notification {
    Notification::new(ErrorCode::Open(sub), data)
}

impl Open {
    /// An OPEN for a speaker of `asn` with the given capabilities in one
    /// optional parameter. A 4-octet AS goes in the capability and AS_TRANS in
    /// My Autonomous System (RFC 6793 §3).
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
        Self {
            version: 4,
            my_as,
            hold_time,
            bgp_id,
            params: vec![capabilities],
        }
    }

    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flatten()
    }

    /// The speaker's AS: from the 4-octet AS capability if present.
    pub fn asn(&self) -> u32 {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(self.my_as as u32)
    }

    pub fn decode(body: &Bytes) -> Result<Self, Notification> {
        let i = &body[..];
        let fixed = || -> nom::IResult<&[u8], (u8, u16, u16, u32, u8)> {
            let (i, version) = be_u8(i)?;
            let (i, my_as) = be_u16(i)?;
            let (i, hold_time) = be_u16(i)?;
            let (i, id) = be_u32(i)?;
            let (i, plen) = be_u8(i)?;
            Ok((i, (version, my_as, hold_time, id, plen)))
        };
        let (rest, (version, my_as, hold_time, id, plen)) =
            fixed().map_err(|_| open_err(OpenError::Unspecific, Vec::new()))?;
        // RFC 4271 §6.2: unsupported version; data is the largest we support.
        if version != 4 {
            return Err(open_err(OpenError::UnsupportedVersionNumber, vec![0, 4]));
        }
        // RFC 4271 §6.2: hold time of one or two seconds is unacceptable.
        if hold_time == 1 || hold_time == 2 {
            return Err(open_err(OpenError::UnacceptableHoldTime, Vec::new()));
        }
        // RFC 6286 §2.2: the BGP identifier must be non-zero.
        if id == 0 {
            return Err(open_err(OpenError::BadBgpIdentifier, Vec::new()));
        }
        let off = body.len() - rest.len();
        // RFC 9072 §2: extended optional parameters format.
        let (extended, params_start, params_len) =
            if plen == PARAM_EXTENDED && rest.first() == Some(&PARAM_EXTENDED) {
                if rest.len() < 3 {
                    return Err(open_err(OpenError::Unspecific, Vec::new()));
                }
                (
                    true,
                    off + 3,
                    u16::from_be_bytes([rest[1], rest[2]]) as usize,
                )
            } else {
                (false, off, plen as usize)
            };
        // RFC 4271 §6.2 / RFC 9072 §2: the parameters must fill the message exactly.
        if params_start + params_len != body.len() {
            return Err(open_err(OpenError::Unspecific, Vec::new()));
        }
        let mut params = Vec::new();
        let mut p = params_start;
        let end = params_start + params_len;
        let hdr = if extended { 3 } else { 2 };
        while p < end {
            if p + hdr > end {
                return Err(open_err(OpenError::Unspecific, Vec::new()));
            }
            let ptype = body[p];
            let plen = if extended {
                u16::from_be_bytes([body[p + 1], body[p + 2]]) as usize
            } else {
                body[p + 1] as usize
            };
            let vstart = p + hdr;
            if vstart + plen > end {
                return Err(open_err(OpenError::Unspecific, Vec::new()));
            }
            // RFC 5492 §4 / RFC 4271 §6.2: only capabilities are supported.
            if ptype != PARAM_CAPABILITIES {
                return Err(open_err(
                    OpenError::UnsupportedOptionalParameter,
                    Vec::new(),
                ));
            }
            params.push(decode_capabilities(&body.slice(vstart..vstart + plen))?);
            p = vstart + plen;
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            params,
        })
    }

    fn params_len(&self, extended: bool) -> usize {
        let hdr = if extended { 3 } else { 2 };
        self.params
            .iter()
            .map(|caps| hdr + caps.iter().map(|c| 2 + c.value_len()).sum::<usize>())
            .sum()
    }

    /// Whether the parameters need the RFC 9072 format.
    fn needs_extended(&self) -> bool {
        self.params_len(false) > 254
            || self
                .params
                .iter()
                .any(|caps| caps.iter().map(|c| 2 + c.value_len()).sum::<usize>() > 255)
    }

    pub(crate) fn encoded_len(&self) -> usize {
        let ext = self.needs_extended();
        10 + if ext { 3 } else { 0 } + self.params_len(ext)
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(self.version);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_u32(u32::from(self.bgp_id));
        let ext = self.needs_extended();
        if ext {
            out.put_u8(PARAM_EXTENDED);
            out.put_u8(PARAM_EXTENDED);
            out.put_u16(self.params_len(true) as u16);
        } else {
            out.put_u8(self.params_len(false) as u8);
        }
        for caps in &self.params {
            let len = caps.iter().map(|c| 2 + c.value_len()).sum::<usize>();
            out.put_u8(PARAM_CAPABILITIES);
            if ext {
                out.put_u16(len as u16);
            } else {
                out.put_u8(len as u8);
            }
            for c in caps {
                out.put_u8(c.code());
                out.put_u8(c.value_len() as u8);
                c.encode_value(out);
            }
        }
    }
}

fn decode_capabilities(v: &Bytes) -> Result<Vec<Capability>, Notification> {
    let mut caps = Vec::new();
    let mut p = 0;
    while p < v.len() {
        if p + 2 > v.len() {
            return Err(open_err(OpenError::Unspecific, Vec::new()));
        }
        let (code, len) = (v[p], v[p + 1] as usize);
        if p + 2 + len > v.len() {
            return Err(open_err(OpenError::Unspecific, Vec::new()));
        }
        caps.push(Capability::decode(code, &v.slice(p + 2..p + 2 + len))?);
        p += 2 + len;
    }
    Ok(caps)
}
