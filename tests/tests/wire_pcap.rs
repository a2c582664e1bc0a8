//! Every BGP message captured from real routers (../shared/data/pcap) decodes
//! without error, per-type counts match the reference, and every message
//! whose encoding is canonical re-encodes to the same octets.

use bytes::Bytes;
use petrel_bgp::wire::capability::Capability;
use petrel_bgp::wire::codec::{CodecContext, MAX_EXTENDED_MESSAGE_LEN};
use petrel_bgp::wire::family::Family;
use petrel_bgp::wire::Message;
use petrel_tests::{data, unhex};
use std::collections::BTreeMap;

struct Row {
    file: String,
    stream: String,
    direction: String,
    msg_type: u8,
    hex: String,
}

fn rows() -> Option<Vec<Row>> {
    let d = data()?;
    let text =
        std::fs::read_to_string(d.join("pcap/bgp_messages_from_pcaps.tsv")).expect("read tsv");
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("file"))
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                Row {
                    file: f[0].into(),
                    stream: f[1].into(),
                    direction: f[2].into(),
                    msg_type: f[4].parse().unwrap(),
                    hex: f[6].into(),
                }
            })
            .collect(),
    )
}

/// The context each direction of each TCP stream negotiated: built from the
/// OPENs seen in that stream, as a session would.
fn contexts(rows: &[Row]) -> BTreeMap<(String, String), CodecContext> {
    // (file, stream) -> the OPENs seen, by direction.
    type Opens = BTreeMap<(String, String), Vec<(String, Vec<Capability>)>>;
    let mut opens: Opens = BTreeMap::new();
    for r in rows.iter().filter(|r| r.msg_type == 1) {
        let m = Message::decode(&CodecContext::default(), &Bytes::from(unhex(&r.hex)))
            .expect("OPEN decodes");
        let Message::Open(o) = m else { unreachable!() };
        opens
            .entry((r.file.clone(), r.stream.clone()))
            .or_default()
            .push((r.direction.clone(), o.capabilities().cloned().collect()));
    }
    let mut out = BTreeMap::new();
    for (k, v) in opens {
        for (dir, caps) in &v {
            // The receiver of `dir`'s messages is the other side: its context
            // is negotiate(local = other, remote = sender).
            let other = v
                .iter()
                .find(|(d, _)| d != dir)
                .map(|(_, c)| c.clone())
                .unwrap_or_else(|| caps.clone());
            out.insert(
                (k.0.clone(), format!("{}|{}", k.1, dir)),
                CodecContext::negotiate(&other, caps),
            );
        }
    }
    out
}

#[test]
fn every_captured_message_decodes_and_counts_match() {
    let Some(rows) = rows() else { return };
    assert_eq!(rows.len(), 232);
    let ctxs = contexts(&rows);
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    let mut canonical = 0;
    let mut prefixes = 0;
    for r in &rows {
        let bytes = Bytes::from(unhex(&r.hex));
        let mut ctx = ctxs
            .get(&(r.file.clone(), format!("{}|{}", r.stream, r.direction)))
            .cloned()
            .unwrap_or_else(|| {
                // Captures that start mid-session carry no OPEN: 4-octet AS
                // is told apart by trying it (as Wireshark does).
                let four = CodecContext::four_octet();
                match Message::decode(&four, &bytes) {
                    Ok(Message::Update(u)) if u.errors.is_empty() => four,
                    _ => CodecContext::default(),
                }
            });
        ctx.max_message_len = MAX_EXTENDED_MESSAGE_LEN;
        let m = Message::decode(&ctx, &bytes)
            .unwrap_or_else(|e| panic!("{} stream {}: {e}", r.file, r.stream));
        assert_eq!(m.type_code(), r.msg_type);
        if let Message::Update(u) = &m {
            assert!(u.errors.is_empty(), "{}: {:?}", r.file, u.errors);
            prefixes += u.announced().count() + u.withdrawals().count();
            for (f, _) in u.announced() {
                assert!(f == Family::IPV4_UNICAST || f == Family::IPV6_UNICAST);
            }
        }
        *by_type.entry(m.type_name()).or_default() += 1;
        let again = m.to_bytes(&ctx).expect("encodes");
        if again == bytes {
            canonical += 1;
        }
        // Whatever the original's encoding, ours must decode to the same message.
        assert_eq!(
            Message::decode(&ctx, &again).expect("re-decodes"),
            m,
            "{}",
            r.file
        );
    }
    let expect: BTreeMap<&str, usize> = [
        ("OPEN", 28),
        ("UPDATE", 101),
        ("NOTIFICATION", 2),
        ("KEEPALIVE", 98),
        ("ROUTE-REFRESH", 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_type, expect);
    eprintln!(
        "{canonical} of {} messages re-encode byte for byte; {prefixes} IP prefixes",
        rows.len()
    );
    assert!(canonical >= 200, "only {canonical} canonical");
}
