//! Every MRT dump in ../shared/data decodes with zero errors, its counts
//! match those of two independent decoders (bgpdump and mrtparse, recorded in
//! reference/counts.mrtparse-2.2.0.jsonl), and petrel's bgpdump-format output
//! equals the recorded `bgpdump -m` output line for line. (The live
//! comparison against Debian's bgpdump binary is in daemon/tests/mrt_cli.rs.)

use flate2::read::GzDecoder;
use petrel_bgp::mrt::summary::summarize;
use petrel_bgp::mrt::{open, Record};
use petrel_tests::data;
use petrel_tests::mrt::{first_difference, petrel_lines};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;

const FILES: &[&str] = &[
    "ris-rrc21.updates.20160811.1600.gz",
    "pch.updates-et.20151023.0201.gz",
    "routeviews-jinx.updates.20150401.0000.bz2",
    "routeviews2.rib.20140523.0600.firstMB.bz2",
    "routeviews2.rib.20140523.0600.firstMB.complete-records.mrt.bz2",
    "routeviews6.rib6.20151101.0600.firstMB.bz2",
    "routeviews6.rib6.20151101.0600.firstMB.complete-records.mrt.bz2",
];

fn reference_counts(dir: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(dir.join("reference/counts.mrtparse-2.2.0.jsonl")).expect("counts");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[test]
fn counts_match_the_reference_decoders() {
    let Some(dir) = data() else { return };
    for r in reference_counts(&dir) {
        let file = r["file"].as_str().unwrap();
        let s = summarize(file, open(&dir.join(file)).unwrap());
        assert_eq!(s.error_count(), 0, "{file}: {:?}", s.errors);
        assert!(s.rfc7606.is_empty(), "{file}: {:?}", s.rfc7606);
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        assert_eq!(s.records, n("records"), "{file} records");
        assert_eq!(s.announced_v4, n("announced_v4"), "{file} announced_v4");
        assert_eq!(s.announced_mp, n("announced_mp"), "{file} announced_mp");
        assert_eq!(s.withdrawn_v4, n("withdrawn_v4"), "{file} withdrawn_v4");
        assert_eq!(s.withdrawn_mp, n("withdrawn_mp"), "{file} withdrawn_mp");
        assert_eq!(s.rib_entries, n("rib_entries"), "{file} rib_entries");
        assert_eq!(s.rib_prefix_records, n("rib_prefix_records"), "{file}");
        assert_eq!(s.peer_index_peers, n("peer_index_peers"), "{file}");
        for (k, key) in [
            ("distinct_announced_prefixes", s.distinct_announced_prefixes),
            ("distinct_withdrawn_prefixes", s.distinct_withdrawn_prefixes),
            ("distinct_rib_prefixes", s.distinct_rib_prefixes),
        ] {
            if r.get(k).is_some() {
                assert_eq!(key, n(k), "{file} {k}");
            }
        }
        let types: std::collections::BTreeMap<String, u64> = r["mrt_types"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(s.mrt_types, types, "{file}");
        if let Some(m) = r.get("bgp_msg_types").and_then(Value::as_object) {
            let m: std::collections::BTreeMap<String, u64> = m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect();
            assert_eq!(s.bgp_msg_types, m, "{file}");
        }
        // The truncated streams are reported, never fatal.
        assert_eq!(
            s.truncated.is_some(),
            r.get("truncated_stream").is_some(),
            "{file}: {:?}",
            s.truncated
        );
    }
}

#[test]
fn bgpdump_format_equals_recorded_bgpdump_output() {
    let Some(dir) = data() else { return };
    for file in FILES {
        let reference = dir.join(format!(
            "reference/{}.bgpdump-m.txt.gz",
            file.replace(".complete-records.mrt", "")
        ));
        let expected: Vec<String> =
            BufReader::new(GzDecoder::new(std::fs::File::open(&reference).unwrap()))
                .lines()
                .map(Result::unwrap)
                .collect();
        let ours = petrel_lines(&dir.join(file)).unwrap();
        if let Some(d) = first_difference(&ours, &expected) {
            panic!("{file} {d}");
        }
    }
}

/// Whether an UPDATE's octets are in the canonical form petrel's encoder
/// writes: MP_REACH_NLRI / MP_UNREACH_NLRI first (RFC 7606 §5.1), the other
/// attributes in ascending type-code order (RFC 4271 §5), the Extended Length
/// bit only on values over 255 octets, the Partial bit only on attributes
/// kept raw, a zero MP_REACH_NLRI reserved octet, and prefixes without host
/// bits. Decided from the octets alone, independently of the encoder.
fn is_canonical(msg: &[u8]) -> bool {
    let b = &msg[19..];
    let wl = u16::from_be_bytes([b[0], b[1]]) as usize;
    let al = u16::from_be_bytes([b[2 + wl], b[3 + wl]]) as usize;
    let (mut p, end) = (4 + wl, 4 + wl + al);
    let mut last: Option<u8> = None;
    let mut seen_other = false;
    let mut prefixes_ok = nlri_canonical(&b[2..2 + wl], 32) && nlri_canonical(&b[end..], 32);
    while p < end {
        let (flags, code) = (b[p], b[p + 1]);
        let ext = flags & 0x10 != 0;
        let len = if ext {
            u16::from_be_bytes([b[p + 2], b[p + 3]]) as usize
        } else {
            b[p + 2] as usize
        };
        let v = &b[p + if ext { 4 } else { 3 }..p + if ext { 4 } else { 3 } + len];
        let typed = matches!(code, 1..=6 | 9 | 10 | 14 | 15);
        if ext != (len > 255) || (typed && flags & 0x20 != 0) {
            return false;
        }
        if code == 14 || code == 15 {
            if seen_other || last.is_some_and(|l| l >= code) {
                return false;
            }
            let max = if u16::from_be_bytes([v[0], v[1]]) == 2 {
                128
            } else {
                32
            };
            if code == 14 {
                let nh = v[3] as usize;
                prefixes_ok &= v[4 + nh] == 0 && nlri_canonical(&v[5 + nh..], max);
            } else {
                prefixes_ok &= nlri_canonical(&v[3..], max);
            }
        } else {
            if seen_other && last.is_some_and(|l| l >= code) {
                return false;
            }
            seen_other = true;
        }
        last = Some(code);
        p += if ext { 4 } else { 3 } + len;
    }
    prefixes_ok
}

fn nlri_canonical(mut v: &[u8], max: u8) -> bool {
    while let Some((&len, rest)) = v.split_first() {
        let n = (len as usize).div_ceil(8);
        if len > max || n > rest.len() {
            return false;
        }
        if len % 8 != 0 && rest[n - 1] & (0xff >> (len % 8)) != 0 {
            return false;
        }
        v = &rest[n..];
    }
    true
}

/// encode(decode(bytes)) == bytes for every real UPDATE whose encoding is
/// canonical (see `is_canonical`); every other one must re-encode to octets
/// that decode to the same message.
#[test]
fn real_updates_reencode_byte_for_byte_when_canonical() {
    let Some(dir) = data() else { return };
    let (mut total, mut canonical) = (0u64, 0u64);
    for file in &FILES[..3] {
        for item in open(&dir.join(file)).unwrap() {
            let raw = item.unwrap();
            let Ok(Record::Message(m)) = Record::parse(&raw) else {
                continue;
            };
            let Ok(msg @ petrel_bgp::wire::Message::Update(_)) = &m.message else {
                continue;
            };
            total += 1;
            let again = msg
                .to_bytes(&m.ctx)
                .expect("re-encodes within the size it came in");
            if is_canonical(&m.raw) {
                canonical += 1;
                assert_eq!(
                    again, m.raw,
                    "{file}: canonical UPDATE at offset {} re-encoded differently",
                    raw.offset
                );
            } else {
                let back = petrel_bgp::wire::Message::decode(&m.ctx, &again)
                    .expect("our encoding decodes");
                assert_eq!(&back, msg, "{file} at offset {}", raw.offset);
                assert!(
                    is_canonical(&again),
                    "{file}: our encoding at offset {} is not canonical",
                    raw.offset
                );
            }
        }
    }
    eprintln!("{canonical} of {total} real UPDATEs are canonical and re-encode byte for byte");
    assert_eq!(total, 17_216 + 89_679 + 1_756);
    assert!(
        canonical > 10_000,
        "only {canonical} canonical UPDATEs: the checker is suspect"
    );
}
