//! What both targets share: the codec contexts a session can negotiate, and
//! a repair of the header so the fuzzer's mutations reach the bodies.

use bytes::Bytes;
use petrel_bgp::wire::codec::{AddPathFamilies, CodecContext, MAX_EXTENDED_MESSAGE_LEN};
use petrel_bgp::wire::{Family, HEADER_LEN};
use std::sync::OnceLock;

/// The contexts every input is tried under: RFC 4271 only, 4-octet AS
/// (RFC 6793), ADD-PATH for IPv4 and IPv6 unicast (RFC 7911), and extended
/// messages (RFC 8654), alone and together. ADD-PATH is the same in both
/// directions so that what is decoded can be encoded back.
pub fn contexts() -> &'static [CodecContext] {
    static CTX: OnceLock<Vec<CodecContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let mut add_path = AddPathFamilies::default();
        add_path.insert(Family::IPV4_UNICAST);
        add_path.insert(Family::IPV6_UNICAST);
        let with_add_path = |mut c: CodecContext| {
            c.add_path_rx = add_path.clone();
            c.add_path_tx = add_path.clone();
            c
        };
        let extended = |mut c: CodecContext| {
            c.max_message_len = MAX_EXTENDED_MESSAGE_LEN;
            c
        };
        vec![
            CodecContext::default(),
            CodecContext::four_octet(),
            with_add_path(CodecContext::four_octet()),
            extended(with_add_path(CodecContext::default())),
            extended(CodecContext::four_octet()),
        ]
    })
}

/// The input with a valid marker and a Length field equal to its size, so
/// mutations of the body are not all rejected by the header check. `None`
/// when it is too short for a header or too long for any Length field.
pub fn with_fixed_header(data: &[u8]) -> Option<Bytes> {
    if data.len() < HEADER_LEN || data.len() > u16::MAX as usize {
        return None;
    }
    let mut v = data.to_vec();
    v[..16].fill(0xff);
    v[16..18].copy_from_slice(&(data.len() as u16).to_be_bytes());
    Some(Bytes::from(v))
}
