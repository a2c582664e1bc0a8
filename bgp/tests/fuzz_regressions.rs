//! Inputs the fuzz targets in bgp/fuzz flag, kept as byte vectors.
//!
//! Each test replays one input through the property its target checks
//! (see bgp/fuzz/fuzz_targets/roundtrip.rs): decode, encode, decode again,
//! and the two messages and the two encodings agree.

use bytes::Bytes;
use petrel_bgp::wire::codec::CodecContext;
use petrel_bgp::wire::Message;

fn roundtrips(ctx: &CodecContext, octets: &[u8]) -> Message {
    let m1 = Message::decode(ctx, &Bytes::copy_from_slice(octets)).expect("decodes");
    let b1 = m1.to_bytes(ctx).expect("encodes");
    let m2 = Message::decode(ctx, &b1).expect("re-encoding decodes");
    assert_eq!(m1, m2, "decode(encode(m)) != m");
    assert_eq!(m2.to_bytes(ctx).expect("encodes"), b1, "not a fixpoint");
    m1
}

/// An unknown optional transitive attribute (type 99) framed with the
/// Extended Length bit though its value is 3 octets. RFC 4271 §4.3: the bit
/// only says how wide the length field is, so it is not part of the
/// attribute: the roundtrip target reports `flags: 208` (0xD0) against
/// `flags: 192` (0xC0) when the decoder keeps it (fixed in 7df4e67; the
/// target catches it when that fix is reverted).
#[test]
fn raw_attribute_extended_length_bit_is_framing() {
    #[rustfmt::skip]
    let update = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x00, 0x1e, 0x02,       // length 30, UPDATE
        0x00, 0x00,             // no withdrawn routes
        0x00, 0x07,             // 7 octets of attributes
        0xd0, 99, 0x00, 0x03,   // optional transitive, extended length 3
        0x01, 0x02, 0x03,
    ];
    for ctx in [CodecContext::default(), CodecContext::four_octet()] {
        let Message::Update(u) = roundtrips(&ctx, &update) else {
            panic!("not an UPDATE")
        };
        assert_eq!(u.attrs.rare().other.len(), 1);
        assert_eq!(u.attrs.rare().other[0].flags, 0xc0);
    }
}
