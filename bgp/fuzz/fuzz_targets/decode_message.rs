//! Arbitrary octets through `Message::decode` under every codec context:
//! decoding, and everything a session does with a decoded message, must
//! never panic (issue 2: "Nothing from the wire can panic").

#![no_main]

mod common;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use petrel_bgp::wire::{split_message, Message};
use std::hint::black_box;

fn exercise(m: &Message) {
    // Debug walks every NLRI and attribute.
    black_box(format!("{m:?}"));
    if let Message::Update(u) = m {
        for (family, e) in u.announced().chain(u.withdrawals()) {
            black_box((family, e.prefix.to_string(), e.path_id));
        }
        black_box((u.action(), u.treat_as_withdraw(), u.end_of_rib_family()));
        black_box(u.attrs.effective_as_path().map(|p| p.to_string()));
        black_box(u.attrs.effective_aggregator());
        black_box(u.attrs.for_propagation());
        let mut a = u.attrs.clone();
        a.normalize_as4();
        black_box(a);
        for e in &u.errors {
            black_box(e.to_string());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let raw = Bytes::copy_from_slice(data);
    let fixed = common::with_fixed_header(data);
    for ctx in common::contexts() {
        for input in std::iter::once(&raw).chain(fixed.as_ref()) {
            match Message::decode(ctx, input) {
                Ok(m) => exercise(&m),
                Err(n) => {
                    black_box(n.to_string());
                }
            }
        }
        // The same octets as a stream: framing must not panic either.
        let mut buf = BytesMut::from(data);
        while let Ok(Some((h, msg))) = split_message(&mut buf, ctx.max_message_len) {
            let _ = Message::decode_body(
                ctx,
                h.msg_type,
                &msg.freeze().slice(petrel_bgp::wire::HEADER_LEN..),
            );
        }
    }
});
