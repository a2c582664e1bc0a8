//! decode → encode → decode under every codec context.
//!
//! What must hold for every input the decoder accepts (`m1`):
//! - encoding succeeds. The decoder has already checked the Length against
//!   the same maximum the encoder enforces (RFC 4271 §4.1, RFC 8654 §4), and
//!   encoding never grows a message (attributes are re-framed with the
//!   shortest length field, discarded attributes are dropped), so `TooLarge`
//!   is only acceptable if the input itself was over that maximum — which the
//!   decoder must not have accepted in the first place.
//! - the octets (`b1`) are within the negotiated size and decode again
//!   (`m2`).
//! - `m2 == m1` when `m1` had no RFC 7606 errors. When it had, the
//!   attributes it discarded are gone from the encoding, so the two agree
//!   once the error lists are set aside, and the only errors `m2` may show
//!   are "missing" ones for attributes `m1` had already flagged.
//! - encoding `m2` gives `b1` again: one round reaches the canonical form.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use petrel_bgp::wire::attr::AttrErrorKind;
use petrel_bgp::wire::{Message, Update};

fn without_errors(m: &Message) -> Message {
    match m {
        Message::Update(u) => Message::Update(Update {
            errors: Vec::new(),
            ..u.clone()
        }),
        m => m.clone(),
    }
}

fn errors(m: &Message) -> &[petrel_bgp::wire::AttrError] {
    match m {
        Message::Update(u) => &u.errors,
        _ => &[],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::with_fixed_header(data) else {
        return;
    };
    for ctx in common::contexts() {
        let Ok(m1) = Message::decode(ctx, &input) else {
            continue;
        };
        let b1 = match m1.to_bytes(ctx) {
            Ok(b) => b,
            Err(e) => {
                assert!(
                    input.len() > e.max,
                    "{e}: encoding grew an accepted {}-octet message\nctx {ctx:?}\n{m1:?}",
                    input.len()
                );
                continue;
            }
        };
        assert!(b1.len() <= ctx.max_message_len, "oversize encoding");
        let m2 = match Message::decode(ctx, &b1) {
            Ok(m) => m,
            Err(n) => panic!("re-encoded message rejected: {n}\nctx {ctx:?}\n{m1:?}\n{b1:02x?}"),
        };
        if errors(&m1).is_empty() {
            assert_eq!(m1, m2, "decode(encode(m)) != m\nctx {ctx:?}");
        } else {
            assert_eq!(
                without_errors(&m1),
                without_errors(&m2),
                "decode(encode(m)) != m, errors aside\nctx {ctx:?}\nm1 errors {:?}",
                errors(&m1)
            );
            for e in errors(&m2) {
                assert!(
                    e.kind == AttrErrorKind::Missing
                        && errors(&m1).iter().any(|f| f.type_code == e.type_code),
                    "new error {e:?} after re-encoding\nctx {ctx:?}\nm1 errors {:?}",
                    errors(&m1)
                );
            }
        }
        let b2 = m2.to_bytes(ctx).expect("m2 encodes");
        assert_eq!(b1, b2, "encoding is not a fixpoint\nctx {ctx:?}");
    }
});
